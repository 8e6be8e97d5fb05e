-- Merge the staged order messages into stg.order_events, which keeps every distinct version of an
-- order (one row per order, update_ts and content; the content id is the md5 of the payload as
-- jsonb, so an escaped and a raw UTF-8 copy are one version) with the position it was first read
-- at. Returns the positions of the versions new to STG: their enriched messages are built in
-- memory and queued for the STG topic. A message read again (a replay, a redelivery, an exact
-- duplicate) changes nothing and goes out no more.
-- $1 batch id, $2 source topic.
-- Each payload is parsed as jsonb once: OFFSET 0 keeps the planner from flattening the subquery,
-- which would copy the cast into the md5 and the inserted column (two parses per message).
WITH staged AS (
    SELECT DISTINCT ON (object_id, update_ts, version) *
    FROM (SELECT s.*, md5(s.doc::text)::uuid AS version
          FROM (SELECT s.*, s.payload::jsonb AS doc FROM stage_orders s OFFSET 0) s) s
    ORDER BY object_id, update_ts, version, partition, kafka_offset
)
INSERT INTO stg.order_events (object_id, object_type, sent_dttm, update_ts, version, payload,
                              src_topic, src_partition, src_offset, batch_id, load_dt)
SELECT object_id, object_type, sent_dttm, update_ts, version, doc,
       $2, partition, kafka_offset, $1, now()
FROM staged
ON CONFLICT (object_id, update_ts, version) DO NOTHING
RETURNING src_partition, src_offset
