-- Queue one message per affected user for the CDM job: the users of this batch's orders, and
-- every user who ever ordered a product whose category link or name this batch added.
-- $1 batch id, $2 DDS topic.
WITH changed_products AS (
    SELECT h_product_pk FROM dds.l_product_category WHERE batch_id = $1
    UNION
    SELECT h_product_pk FROM dds.s_product_names WHERE batch_id = $1
), users AS (
    SELECT h_user_pk FROM stage_orders
    UNION
    SELECT lou.h_user_pk
    FROM changed_products cp
    JOIN dds.l_order_product lop ON lop.h_product_pk = cp.h_product_pk
    JOIN dds.l_order_user lou ON lou.h_order_pk = lop.h_order_pk
)
INSERT INTO dwh.outbox (job, batch_id, topic, key, value)
SELECT 'dds', $1, $2, h_user_pk::text,
       json_build_object('user_pk', h_user_pk, 'batch_id', $1::uuid)::text
FROM users
ORDER BY h_user_pk
