-- DDS without enforced foreign keys (Data Vault practice for load speed). The loader guarantees
-- them: every link and satellite row is written in the same transaction as its hubs, from the same
-- staged rows, hubs first. Checking them cost PostgreSQL one index probe per row and key: 2.1 s of
-- the 3.7 s it took to insert 118,228 l_order_product rows (50,000 orders). Numbered 0050 to stay
-- clear of the numbers other branches add.
ALTER TABLE dds.l_order_user
    DROP CONSTRAINT IF EXISTS l_order_user_h_order_pk_fkey,
    DROP CONSTRAINT IF EXISTS l_order_user_h_user_pk_fkey;
ALTER TABLE dds.l_order_product
    DROP CONSTRAINT IF EXISTS l_order_product_h_order_pk_fkey,
    DROP CONSTRAINT IF EXISTS l_order_product_h_product_pk_fkey;
ALTER TABLE dds.l_product_restaurant
    DROP CONSTRAINT IF EXISTS l_product_restaurant_h_product_pk_fkey,
    DROP CONSTRAINT IF EXISTS l_product_restaurant_h_restaurant_pk_fkey;
ALTER TABLE dds.l_product_category
    DROP CONSTRAINT IF EXISTS l_product_category_h_product_pk_fkey,
    DROP CONSTRAINT IF EXISTS l_product_category_h_category_pk_fkey;
ALTER TABLE dds.s_user_names DROP CONSTRAINT IF EXISTS s_user_names_h_user_pk_fkey;
ALTER TABLE dds.s_product_names DROP CONSTRAINT IF EXISTS s_product_names_h_product_pk_fkey;
ALTER TABLE dds.s_restaurant_names DROP CONSTRAINT IF EXISTS s_restaurant_names_h_restaurant_pk_fkey;
ALTER TABLE dds.s_order_cost DROP CONSTRAINT IF EXISTS s_order_cost_h_order_pk_fkey;
ALTER TABLE dds.s_order_status DROP CONSTRAINT IF EXISTS s_order_status_h_order_pk_fkey;
