-- The users whose tag $3 a rule counting the dishes $1 with threshold $2 can change: those who
-- hold it, and those whose counters of those dishes add up to the threshold (the sum is at
-- least the distinct orders holding one of them).
SELECT user_id FROM cdm.user_product_counters
WHERE product_id = ANY($1)
GROUP BY user_id
HAVING sum(order_cnt) >= $2::int8
UNION
SELECT user_id FROM cdm.user_tags WHERE tag = $3
ORDER BY 1
