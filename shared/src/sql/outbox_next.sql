-- The next chunk of a job's outbox to publish: rows of its unpublished batches that consumed from
-- the partitions this run holds ($3, as text keys of dwh.batches.ranges), oldest first.
-- $1 job, $2 consumed topic, $3 partitions, $4 chunk size.
SELECT o.id, o.topic, o.key, o.value
FROM dwh.outbox o
WHERE o.job = $1
  AND o.batch_id IN (SELECT b.batch_id FROM dwh.batches b
                     WHERE b.job = $1 AND b.topic = $2 AND b.published_at IS NULL
                       AND b.ranges ?| $3)
ORDER BY o.id
LIMIT $4
