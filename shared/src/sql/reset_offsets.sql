-- $1 job, $2 topic, $3 partitions, $4 next offsets: set by `dwh offsets --reset`, which may move
-- them backwards (a run only ever moves them forwards). The batch id of a reset is nil: no batch.
INSERT INTO dwh.offsets (job, topic, partition, next_offset, batch_id, updated_at)
SELECT $1, $2, p, o, '00000000-0000-0000-0000-000000000000', now()
FROM unnest($3::int4[], $4::int8[]) AS u(p, o)
ON CONFLICT (job, topic, partition) DO UPDATE
SET next_offset = EXCLUDED.next_offset, batch_id = EXCLUDED.batch_id, updated_at = now()
