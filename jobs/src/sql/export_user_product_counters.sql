-- cdm.user_product_counters for `dwh export`: hub keys as canonical text, with the user's source
-- id, current name and login next to them (ordered by the table's unique key, so no sort).
WITH names AS (
    SELECT DISTINCT ON (h_user_pk) h_user_pk, username, userlogin
    FROM dds.s_user_names
    ORDER BY h_user_pk, effective_dt DESC
)
SELECT c.user_id::text AS user_id, u.user_id AS user_source_id, n.username, n.userlogin,
       c.product_id::text AS product_id, p.product_id AS product_source_id, c.product_name,
       c.order_cnt, c.updated_at
FROM cdm.user_product_counters c
LEFT JOIN dds.h_user u ON u.h_user_pk = c.user_id
LEFT JOIN names n ON n.h_user_pk = c.user_id
LEFT JOIN dds.h_product p ON p.h_product_pk = c.product_id
ORDER BY c.user_id, c.product_id
