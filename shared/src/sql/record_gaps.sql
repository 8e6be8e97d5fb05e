-- $1 job, $2 topic, $3 partitions, $4 first lost offsets, $5 the log's start: each gap once, and
-- the stored offset moved to the log's start (never backwards) even when nothing was read after.
WITH gap AS (
    SELECT p, f, t FROM unnest($3::int4[], $4::int8[], $5::int8[]) AS g(p, f, t)
), recorded AS (
    INSERT INTO dwh.offset_gaps (job, topic, partition, from_offset, to_offset)
    SELECT $1, $2, p, f, t FROM gap
    ON CONFLICT DO NOTHING
)
UPDATE dwh.offsets o SET next_offset = greatest(o.next_offset, gap.t), updated_at = now()
FROM gap
WHERE o.job = $1 AND o.topic = $2 AND o.partition = gap.p
