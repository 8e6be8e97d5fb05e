-- The users whose tag $3 a rule counting category $1 with threshold $2 can change: those who
-- hold it, and those whose counter of the category reaches the threshold.
SELECT user_id FROM cdm.user_category_counters
WHERE category_name = $1 AND order_cnt >= $2
UNION
SELECT user_id FROM cdm.user_tags WHERE tag = $3
ORDER BY 1
