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
JOIN dds.l_order_product lop ON lop.h_order_pk = lou.h_order_pk
LEFT JOIN LATERAL (
    SELECT s.name FROM dds.s_product_names s
    WHERE s.h_product_pk = lop.h_product_pk
    ORDER BY s.effective_dt DESC LIMIT 1
) pn ON true
LEFT JOIN dds.l_product_category lpc ON lpc.h_product_pk = lop.h_product_pk
LEFT JOIN dds.h_category hc ON hc.h_category_pk = lpc.h_category_pk
WHERE lou.h_user_pk = ANY($1)
