-- Record a committed batch (again, unpublished, when a replay loads the same range).
-- $1 batch id, $2 job, $3 topic, $4 ranges, $5 consumed, $6 loaded, $7 dead-lettered, $8 seconds.
INSERT INTO dwh.batches (batch_id, job, topic, ranges, consumed, loaded, dead_lettered,
                         committed_at, seconds)
VALUES ($1, $2, $3, $4, $5, $6, $7, now(), $8)
ON CONFLICT (batch_id) DO UPDATE
SET consumed = EXCLUDED.consumed, loaded = EXCLUDED.loaded,
    dead_lettered = EXCLUDED.dead_lettered, committed_at = now(), published_at = NULL,
    seconds = EXCLUDED.seconds
