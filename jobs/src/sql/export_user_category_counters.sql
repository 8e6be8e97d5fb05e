-- cdm.user_category_counters for `dwh export`: hub keys as canonical text, with the user's source
-- id, current name and login next to them.
WITH names AS (
    SELECT DISTINCT ON (h_user_pk) h_user_pk, username, userlogin
    FROM dds.s_user_names
    ORDER BY h_user_pk, effective_dt DESC
)
SELECT c.user_id::text AS user_id, u.user_id AS user_source_id, n.username, n.userlogin,
       c.category_id::text AS category_id, c.category_name, c.order_cnt, c.updated_at
FROM cdm.user_category_counters c
LEFT JOIN dds.h_user u ON u.h_user_pk = c.user_id
LEFT JOIN names n ON n.h_user_pk = c.user_id
ORDER BY c.user_id, c.category_id
