-- Reconciliation: recount distinct CLOSED orders per user×dish and user×category straight from
-- the Data Vault's hubs, links and satellites, under the current-truth rules (README "The
-- model"): an order counts when its current status (dds.current_order_status, its newest
-- s_order_status row) is CLOSED, with the dishes of its newest basket; a dish counts in the
-- category of its newest es_product_category row. Lists every row where CDM differs; no rows
-- means the showcases are right.
-- Run: psql "$DWH_PG_URL" -f sql/checks/reconcile_cdm.sql
WITH closed AS (
    SELECT lou.h_user_pk, lou.h_order_pk
    FROM dds.l_order_user lou
    JOIN dds.current_order_status st ON st.h_order_pk = lou.h_order_pk
    WHERE st.status = 'CLOSED'
), lines AS (
    SELECT DISTINCT c.h_user_pk, c.h_order_pk, (e ->> 'product_pk')::uuid AS h_product_pk
    FROM closed c
    CROSS JOIN LATERAL (SELECT s.items FROM dds.s_order_basket s
                        WHERE s.h_order_pk = c.h_order_pk
                        ORDER BY s.effective_dt DESC LIMIT 1) b
    CROSS JOIN LATERAL jsonb_array_elements(b.items) e
), products AS (
    SELECT h_user_pk AS user_id, h_product_pk AS id, count(DISTINCT h_order_pk) AS order_cnt
    FROM lines
    GROUP BY 1, 2
), categories AS (
    SELECT l.h_user_pk AS user_id, pc.h_category_pk AS id,
           count(DISTINCT l.h_order_pk) AS order_cnt
    FROM lines l
    JOIN LATERAL (SELECT s.h_category_pk FROM dds.es_product_category s
                  WHERE s.h_product_pk = l.h_product_pk
                  ORDER BY s.effective_dt DESC LIMIT 1) pc ON pc.h_category_pk IS NOT NULL
    GROUP BY 1, 2
)
SELECT 'user_product_counters' AS showcase, coalesce(v.user_id, s.user_id) AS user_id,
       coalesce(v.id, s.product_id) AS id, v.order_cnt AS expected, s.order_cnt AS actual
FROM products v FULL JOIN cdm.user_product_counters s
  ON s.user_id = v.user_id AND s.product_id = v.id
WHERE v.order_cnt IS DISTINCT FROM s.order_cnt
UNION ALL
SELECT 'user_category_counters', coalesce(v.user_id, s.user_id), coalesce(v.id, s.category_id),
       v.order_cnt, s.order_cnt
FROM categories v FULL JOIN cdm.user_category_counters s
  ON s.user_id = v.user_id AND s.category_id = v.id
WHERE v.order_cnt IS DISTINCT FROM s.order_cnt
