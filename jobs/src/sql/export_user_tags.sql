-- cdm.user_tags for `dwh export`: the user's hub key as canonical text, with the user's source
-- id, current name and login next to it.
WITH names AS (
    SELECT DISTINCT ON (h_user_pk) h_user_pk, username, userlogin
    FROM dds.s_user_names
    ORDER BY h_user_pk, effective_dt DESC
)
SELECT t.user_id::text AS user_id, u.user_id AS user_source_id, n.username, n.userlogin,
       t.tag, t.order_cnt, t.updated_at
FROM cdm.user_tags t
LEFT JOIN dds.h_user u ON u.h_user_pk = t.user_id
LEFT JOIN names n ON n.h_user_pk = t.user_id
ORDER BY t.user_id, t.tag
