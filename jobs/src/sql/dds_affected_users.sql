-- Queue one message per user of this batch's order versions for the CDM job. (The users of dishes
-- a menu renamed or moved are queued after the commit: dds_fanout.sql.)
-- $1 batch id, $2 DDS topic.
INSERT INTO dwh.outbox (job, batch_id, topic, key, value)
SELECT 'dds', $1, $2, h_user_pk::text,
       json_build_object('user_pk', h_user_pk, 'batch_id', $1::uuid)::text
FROM (SELECT DISTINCT h_user_pk FROM pg_temp.stage_orders) u
ORDER BY h_user_pk
