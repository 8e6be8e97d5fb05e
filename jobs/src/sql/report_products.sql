-- Every dish (by its current name: the same dish sold by two restaurants is one dish to a user)
-- with its distinct CLOSED orders (the sum over its users: an order has one user and one
-- restaurant) and its distinct users, from the product showcase.
SELECT product_name AS name, sum(order_cnt)::int8 AS orders, count(DISTINCT user_id) AS users
FROM cdm.user_product_counters
GROUP BY product_name
