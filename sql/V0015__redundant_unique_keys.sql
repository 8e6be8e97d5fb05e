-- A Data Vault key is a function of what it identifies (uuid v5, `vault::hub_key`/`link_key`): a
-- hub's key of its business key, a link's of its hub keys. So the primary key on the hash key
-- already makes the business key, or the link's pair of hub keys, unique; a second unique index
-- on it checks the same thing again, and each of these is a random-order B-tree written for
-- every order or order line. Measured on a 200,000-order warehouse (INSERT … SELECT of the table
-- into an empty copy, README "Performance"): l_order_product 3.38 s with its pair index, 1.43 s
-- without; l_order_user 2.17 → 1.42 s; h_order 0.80 → 0.39 s. The ones dropped:
--   l_order_product (h_order_pk, h_product_pk): read by nothing (the dishes of a product are
--     found through l_order_product_product, an order's dishes through its basket satellite);
--   l_order_user (h_order_pk, h_user_pk): read only by the fan-out after a dish changed (the
--     users of that dish's orders), which hashes the link instead; CDM reads a user's orders
--     through l_order_user_user;
--   h_order (order_id): read by nothing in dwh. An order is found by its key, which SQL can
--     compute: uuid_generate_v5('7f288a2e-0ad0-4039-8e59-6c9838d87307', '<order_id>') (uuid-ossp).
-- The small hubs (users, restaurants, dishes, categories) keep their business keys' indexes: they
-- cost nothing worth measuring and serve lookups by source id.
-- After sql/scale/partition_vault.sql the pairs are plain unique indexes, not constraints: each
-- is found by the columns it covers and dropped as whichever it is.
DO $$
DECLARE
    redundant record;
BEGIN
    FOR redundant IN
        SELECT i.indexrelid::regclass AS index, c.conname, c.conrelid::regclass AS tab
        FROM pg_index i
        LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.contype = 'u'
        WHERE i.indrelid IN ('dds.l_order_product'::regclass, 'dds.l_order_user'::regclass,
                             'dds.h_order'::regclass)
          AND i.indisunique AND NOT i.indisprimary
          AND array_to_string(ARRAY(
                  SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(attnum, n)
                  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                  ORDER BY k.n), ',')
              IN ('h_order_pk,h_product_pk', 'h_order_pk,h_user_pk', 'order_id')
    LOOP
        IF redundant.conname IS NOT NULL THEN
            EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', redundant.tab, redundant.conname);
        ELSE
            EXECUTE format('DROP INDEX %s', redundant.index);
        END IF;
    END LOOP;
END $$;
