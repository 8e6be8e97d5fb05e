-- Store the next offset to read per partition, in the batch's transaction. Offsets never move
-- backwards: loading an older range again (a backfill) leaves them where they are.
-- $1 job, $2 topic, $3 batch id, $4 partitions, $5 next offsets.
INSERT INTO dwh.offsets (job, topic, partition, next_offset, batch_id, updated_at)
SELECT $1, $2, p, o, $3, now() FROM unnest($4::int4[], $5::int8[]) AS u(p, o)
ON CONFLICT (job, topic, partition) DO UPDATE
SET next_offset = greatest(dwh.offsets.next_offset, EXCLUDED.next_offset),
    batch_id = EXCLUDED.batch_id, updated_at = EXCLUDED.updated_at
