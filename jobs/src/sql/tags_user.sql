-- The tags user $1 holds, with the orders behind each and when they were last recomputed (UTC).
SELECT tag, order_cnt,
       to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS updated_at
FROM cdm.user_tags
WHERE user_id = $1
ORDER BY tag
