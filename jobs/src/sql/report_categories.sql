-- Every category with its distinct CLOSED orders and distinct users, from the category showcase.
SELECT max(category_name) AS name, sum(order_cnt)::int8 AS orders, count(*) AS users
FROM cdm.user_category_counters
GROUP BY category_id
