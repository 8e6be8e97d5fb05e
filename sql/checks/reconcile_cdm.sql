-- Reconciliation: recount distinct CLOSED orders per user×dish and user×category straight from
-- the Data Vault's hubs, links and satellites, and list every row where CDM differs.
-- No rows means the showcases are right. Run: psql "$DWH_PG_URL" -f sql/checks/reconcile_cdm.sql
WITH closed AS (
    SELECT lou.h_user_pk, lou.h_order_pk
    FROM dds.l_order_user lou
    WHERE (SELECT s.status FROM dds.s_order_status s WHERE s.h_order_pk = lou.h_order_pk
           ORDER BY s.effective_dt DESC LIMIT 1) = 'CLOSED'
), products AS (
    SELECT c.h_user_pk AS user_id, lop.h_product_pk AS id, count(DISTINCT c.h_order_pk) AS order_cnt
    FROM closed c JOIN dds.l_order_product lop USING (h_order_pk)
    GROUP BY 1, 2
), categories AS (
    SELECT c.h_user_pk AS user_id, lpc.h_category_pk AS id, count(DISTINCT c.h_order_pk) AS order_cnt
    FROM closed c
    JOIN dds.l_order_product lop USING (h_order_pk)
    JOIN dds.l_product_category lpc USING (h_product_pk)
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
