-- The next chunk of a job's outbox to publish: rows of its unpublished batches that consumed from
-- the partitions this run holds ($2, as text keys of dwh.batches.ranges), oldest first. (Not
-- filtered by topic: a backfill loads batches archived under another topic name.) A rebuild row
-- is no message: it keeps its batch unpublished until the job has rebuilt and sent its messages.
-- $1 job, $2 partitions, $3 chunk size, $4 the last id of the chunk before (still being sent).
SELECT o.id, o.topic, o.key, o.value
FROM dwh.outbox o
WHERE o.job = $1
  AND NOT o.rebuild
  AND o.id > $4
  AND o.batch_id IN (SELECT b.batch_id FROM dwh.batches b
                     WHERE b.job = $1 AND b.published_at IS NULL AND b.ranges ?| $2)
ORDER BY o.id
LIMIT $3
