-- The batches of a job ($1) from the partitions this run holds ($2, text keys of
-- dwh.batches.ranges) whose messages were sent from memory and not all acknowledged: their rebuild
-- rows, oldest first.
SELECT o.batch_id
FROM dwh.outbox o
WHERE o.job = $1
  AND o.rebuild
  AND o.batch_id IN (SELECT b.batch_id FROM dwh.batches b
                     WHERE b.job = $1 AND b.published_at IS NULL AND b.ranges ?| $2)
ORDER BY o.id
