-- Rows per table of every layer (exact counts).
SELECT 'stg' AS layer, 'stg.order_events' AS "table", count(*) AS "rows" FROM stg.order_events
UNION ALL SELECT 'stg', 'stg.users', count(*) FROM stg.users
UNION ALL SELECT 'stg', 'stg.restaurants', count(*) FROM stg.restaurants
UNION ALL SELECT 'dds', 'dds.h_user', count(*) FROM dds.h_user
UNION ALL SELECT 'dds', 'dds.h_product', count(*) FROM dds.h_product
UNION ALL SELECT 'dds', 'dds.h_category', count(*) FROM dds.h_category
UNION ALL SELECT 'dds', 'dds.h_restaurant', count(*) FROM dds.h_restaurant
UNION ALL SELECT 'dds', 'dds.h_order', count(*) FROM dds.h_order
UNION ALL SELECT 'dds', 'dds.l_order_user', count(*) FROM dds.l_order_user
UNION ALL SELECT 'dds', 'dds.l_order_product', count(*) FROM dds.l_order_product
UNION ALL SELECT 'dds', 'dds.l_product_restaurant', count(*) FROM dds.l_product_restaurant
UNION ALL SELECT 'dds', 'dds.l_product_category', count(*) FROM dds.l_product_category
UNION ALL SELECT 'dds', 'dds.s_user_names', count(*) FROM dds.s_user_names
UNION ALL SELECT 'dds', 'dds.s_product_names', count(*) FROM dds.s_product_names
UNION ALL SELECT 'dds', 'dds.s_restaurant_names', count(*) FROM dds.s_restaurant_names
UNION ALL SELECT 'dds', 'dds.s_order_cost', count(*) FROM dds.s_order_cost
UNION ALL SELECT 'dds', 'dds.s_order_status', count(*) FROM dds.s_order_status
UNION ALL SELECT 'dds', 'dds.s_order_basket', count(*) FROM dds.s_order_basket
UNION ALL SELECT 'dds', 'dds.es_product_category', count(*) FROM dds.es_product_category
UNION ALL SELECT 'dds', 'dds.x_order_versions', count(*) FROM dds.x_order_versions
UNION ALL SELECT 'dds', 'dds.x_user_versions', count(*) FROM dds.x_user_versions
UNION ALL SELECT 'dds', 'dds.x_restaurant_versions', count(*) FROM dds.x_restaurant_versions
UNION ALL SELECT 'dds', 'dds.x_product_versions', count(*) FROM dds.x_product_versions
UNION ALL SELECT 'dds', 'dds.pending_fanout', count(*) FROM dds.pending_fanout
UNION ALL SELECT 'cdm', 'cdm.user_product_counters', count(*) FROM cdm.user_product_counters
UNION ALL SELECT 'cdm', 'cdm.user_category_counters', count(*) FROM cdm.user_category_counters
UNION ALL SELECT 'cdm', 'cdm.user_tags', count(*) FROM cdm.user_tags
