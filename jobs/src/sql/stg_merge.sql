-- Merge the staged order messages into stg.order_events, which keeps every distinct version of an
-- order (one row per order, update_ts and content; the content id is the md5 of the payload as
-- jsonb, so an escaped and a raw UTF-8 copy are one version) with the position it was first read
-- at, and queue every version new to STG for the STG topic, enriched with the newest known user
-- and restaurant names and each item's category from the restaurant's menu. A message read again
-- (a replay, a redelivery, an exact duplicate) changes nothing and goes out no more. The message is
-- built as `json` (text appended as it goes), not `jsonb`: no binary tree built, sorted and
-- printed again for every order.
-- $1 batch id, $2 source topic, $3 STG topic.
WITH staged AS (
    SELECT DISTINCT ON (object_id, update_ts, version) *
    FROM (SELECT s.*, md5(s.doc::text)::uuid AS version
          FROM (SELECT s.*, s.payload::jsonb AS doc FROM stage_orders s) s) s
    ORDER BY object_id, update_ts, version, partition, kafka_offset
), merged AS (
    INSERT INTO stg.order_events (object_id, object_type, sent_dttm, update_ts, version, payload,
                                  src_topic, src_partition, src_offset, batch_id, load_dt)
    SELECT object_id, object_type, sent_dttm, update_ts, version, doc,
           $2, partition, kafka_offset, $1, now()
    FROM staged
    ON CONFLICT (object_id, update_ts, version) DO NOTHING
    RETURNING object_id, payload, src_partition, src_offset
), users AS (
    SELECT DISTINCT ON (id) id, doc
    FROM stg.users
    WHERE id IN (SELECT payload -> 'user' ->> 'id' FROM merged)
    ORDER BY id, coalesce(update_ts, load_dt AT TIME ZONE 'UTC') DESC, seq DESC
), restaurants AS (
    SELECT DISTINCT ON (id) id, doc
    FROM stg.restaurants
    WHERE id IN (SELECT payload -> 'restaurant' ->> 'id' FROM merged)
    ORDER BY id, coalesce(update_ts, load_dt AT TIME ZONE 'UTC') DESC, seq DESC
), menu AS (
    SELECT DISTINCT ON (r.id, item ->> '_id') r.id AS restaurant_id, item ->> '_id' AS dish_id,
           item ->> 'category' AS category
    FROM restaurants r
    CROSS JOIN LATERAL jsonb_array_elements(
        CASE WHEN jsonb_typeof(r.doc -> 'menu') = 'array' THEN r.doc -> 'menu' ELSE '[]' END) item
    ORDER BY r.id, item ->> '_id'
), items AS (
    -- Every item of every changed order joined to its menu entry once, set-based (a subquery per
    -- order re-expanded the menus for each order: 75% of the merge at 50k orders).
    SELECT m.object_id, m.src_partition, m.src_offset, json_agg(json_build_object(
               'id', i.item ->> 'id', 'name', i.item ->> 'name', 'price', i.item -> 'price',
               'quantity', i.item -> 'quantity', 'category', mn.category) ORDER BY i.n) AS items
    FROM merged m
    CROSS JOIN LATERAL jsonb_array_elements(m.payload -> 'order_items') WITH ORDINALITY AS i(item, n)
    LEFT JOIN menu mn ON mn.restaurant_id = m.payload -> 'restaurant' ->> 'id'
                     AND mn.dish_id = i.item ->> 'id'
    GROUP BY m.object_id, m.src_partition, m.src_offset
)
INSERT INTO dwh.outbox (job, batch_id, topic, key, value)
SELECT 'stg', $1, $3, m.object_id::text, json_build_object(
    'order_id', m.object_id,
    'seq', (m.src_partition::int8 << 40) + m.src_offset,
    'order_dt', m.payload ->> 'date',
    'update_ts', m.payload ->> 'update_ts',
    'final_status', m.payload ->> 'final_status',
    'cost', m.payload -> 'cost',
    'payment', m.payload -> 'payment',
    'user', json_build_object(
        'id', m.payload -> 'user' ->> 'id', 'name', u.doc ->> 'name',
        'login', u.doc ->> 'login', 'update_ts', u.doc ->> 'update_ts_utc'),
    'restaurant', json_build_object(
        'id', m.payload -> 'restaurant' ->> 'id', 'name', r.doc ->> 'name',
        'update_ts', r.doc ->> 'update_ts_utc'),
    'items', coalesce(it.items, '[]'::json)
)::text
FROM merged m
LEFT JOIN users u ON u.id = m.payload -> 'user' ->> 'id'
LEFT JOIN restaurants r ON r.id = m.payload -> 'restaurant' ->> 'id'
LEFT JOIN items it ON it.object_id = m.object_id AND it.src_partition = m.src_partition
                  AND it.src_offset = m.src_offset
ORDER BY m.object_id, m.src_partition, m.src_offset
