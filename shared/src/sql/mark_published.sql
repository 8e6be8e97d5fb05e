-- Mark published the job's batches of the partitions this run holds ($2, text keys of
-- dwh.batches.ranges) whose outbox is empty. $1 job.
UPDATE dwh.batches b SET published_at = now()
WHERE b.job = $1 AND b.published_at IS NULL AND b.ranges ?| $2
  AND NOT EXISTS (SELECT 1 FROM dwh.outbox o WHERE o.batch_id = b.batch_id)
