-- The order versions a batch ($1) stored, to rebuild their messages: where each was read and the
-- message's fields (the payload as jsonb prints it).
SELECT src_partition, src_offset, object_id, object_type, sent_dttm, payload::text
FROM stg.order_events
WHERE batch_id = $1
