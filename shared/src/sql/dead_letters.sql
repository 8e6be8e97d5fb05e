-- Keep unusable messages with their position and reason; a replay adds nothing twice.
-- $1 job, $2 topic, $3 batch id, $4 partitions, $5 offsets, $6 raw bytes, $7 reasons.
INSERT INTO dwh.dead_letters (job, topic, partition, "offset", raw, reason, batch_id)
SELECT $1, $2, p, o, r, why, $3
FROM unnest($4::int4[], $5::int8[], $6::bytea[], $7::text[]) AS u(p, o, r, why)
ON CONFLICT (job, topic, partition, "offset") DO NOTHING
