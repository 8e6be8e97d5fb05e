-- The facts behind the showcases of the users in $1: one row per user, CLOSED order and dish of
-- the order's current basket, with the dish's current name and category. Current = the newest
-- row of a satellite (its rows are the changes, in the order of the source's timestamps): an
-- order counts when its status is CLOSED, with the dishes of its newest basket; a dish has the
-- name and category of the newest menu that lists it (the name the order gives it when no menu
-- does; the category NULL then). `order_ts` (the time of the order's newest version) picks that
-- fallback name from the user's newest order: read only for a dish no menu names (NULL else, where
-- every row of the dish has the same name), which saves a probe of dds.x_order_versions per order.
SELECT lou.h_user_pk, lou.h_order_pk, b.product_pk, coalesce(pn.name, b.name) AS name,
       pc.h_category_pk, hc.category_name,
       CASE WHEN pn.name IS NULL THEN (
           SELECT max(x.effective_dt) FROM dds.x_order_versions x
           WHERE x.h_order_pk = lou.h_order_pk
       ) END AS order_ts
FROM dds.l_order_user lou
JOIN LATERAL (
    SELECT s.status FROM dds.s_order_status s
    WHERE s.h_order_pk = lou.h_order_pk
    ORDER BY s.effective_dt DESC LIMIT 1
) st ON st.status = 'CLOSED'
JOIN LATERAL (
    SELECT s.items FROM dds.s_order_basket s
    WHERE s.h_order_pk = lou.h_order_pk
    ORDER BY s.effective_dt DESC LIMIT 1
) bk ON true
CROSS JOIN LATERAL jsonb_to_recordset(bk.items) AS b(product_pk uuid, name text)
LEFT JOIN LATERAL (
    SELECT s.name FROM dds.s_product_names s
    WHERE s.h_product_pk = b.product_pk
    ORDER BY s.effective_dt DESC LIMIT 1
) pn ON true
LEFT JOIN LATERAL (
    SELECT s.h_category_pk FROM dds.es_product_category s
    WHERE s.h_product_pk = b.product_pk
    ORDER BY s.effective_dt DESC LIMIT 1
) pc ON true
LEFT JOIN dds.h_category hc ON hc.h_category_pk = pc.h_category_pk
WHERE lou.h_user_pk = ANY($1)
