-- The facts behind the showcases of the users in $1: one row per user, CLOSED order and product,
-- with the product's current name and its category (NULL while the category is unknown).
-- An order counts when its current status (newest effective_dt) is CLOSED.
SELECT lou.h_user_pk, lou.h_order_pk, lop.h_product_pk, pn.name, lpc.h_category_pk, hc.category_name
FROM dds.l_order_user lou
JOIN LATERAL (
    SELECT s.status FROM dds.s_order_status s
    WHERE s.h_order_pk = lou.h_order_pk
    ORDER BY s.effective_dt DESC LIMIT 1
) st ON st.status = 'CLOSED'
-- LATERAL … OFFSET 0 (not flattened): always an index probe per order. A plain join let the
-- planner merge-join the whole l_order_product index (every order ever: 0.45 s for 5 users at 50k
-- orders) when its statistics were stale after a backfill.
JOIN LATERAL (
    SELECT l.h_product_pk FROM dds.l_order_product l WHERE l.h_order_pk = lou.h_order_pk OFFSET 0
) lop ON true
LEFT JOIN LATERAL (
    SELECT s.name FROM dds.s_product_names s
    WHERE s.h_product_pk = lop.h_product_pk
    ORDER BY s.effective_dt DESC LIMIT 1
) pn ON true
LEFT JOIN dds.l_product_category lpc ON lpc.h_product_pk = lop.h_product_pk
LEFT JOIN dds.h_category hc ON hc.h_category_pk = lpc.h_category_pk
WHERE lou.h_user_pk = ANY($1)
