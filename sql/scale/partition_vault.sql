-- Hash-partition the Data Vault's order-grained tables, the ones that grow with every order
-- (see README "Scaling"). Apply once, in a maintenance window, on a migrated warehouse:
--   psql "$DWH_PG_URL" -v ON_ERROR_STOP=1 -v partitions=16 -f sql/scale/partition_vault.sql
-- It is one transaction: each table is rebuilt as a partitioned table with the same columns,
-- keys, indexes and privileges, its rows copied, the old table dropped. dwh's merges need no
-- change (their `ON CONFLICT DO NOTHING` holds on partitioned tables: every unique key includes
-- the partition key).
--   s_order_status, s_order_cost, l_order_product  by hash(h_order_pk)
--   l_order_user                                   by hash(h_user_pk) (CDM reads one user at a time)
\if :{?partitions}
\else
\set partitions 16
\endif
SET client_min_messages = warning;
BEGIN;

CREATE FUNCTION pg_temp.partition_by_hash(tab text, part_key text, pk text, modulus int)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    idx record;
    g record;
    v record;
BEGIN
    EXECUTE format('CREATE TABLE dds.%1$I_new (LIKE dds.%1$I INCLUDING DEFAULTS) PARTITION BY HASH (%2$I)',
                   tab, part_key);
    FOR i IN 0 .. modulus - 1 LOOP
        EXECUTE format('CREATE TABLE dds.%1$I_p%2$s PARTITION OF dds.%1$I_new FOR VALUES WITH (MODULUS %3$s, REMAINDER %2$s)',
                       tab, i, modulus);
    END LOOP;
    EXECUTE format('INSERT INTO dds.%1$I_new SELECT * FROM dds.%1$I', tab);
    -- Foreign keys of the old table, to re-create on the new one.
    CREATE TEMP TABLE IF NOT EXISTS fks (tab text, def text, name text);
    INSERT INTO fks SELECT tab, pg_get_constraintdef(c.oid), c.conname
    FROM pg_constraint c WHERE c.conrelid = format('dds.%I', tab)::regclass AND c.contype = 'f';
    -- Secondary indexes of the old table (all but the primary key), to re-create likewise.
    CREATE TEMP TABLE IF NOT EXISTS idxs (tab text, def text);
    INSERT INTO idxs SELECT tab, pg_get_indexdef(i.indexrelid)
    FROM pg_index i WHERE i.indrelid = format('dds.%I', tab)::regclass AND NOT i.indisprimary;
    -- Privileges the old table granted (the job roles': dwh_dds may delete satellite rows a late
    -- version made repeats, V0010), to grant likewise; default privileges give only some.
    CREATE TEMP TABLE IF NOT EXISTS grants (tab text, grantee text, privilege text);
    INSERT INTO grants
    SELECT tab, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,
           a.privilege_type
    FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
    WHERE c.oid = format('dds.%I', tab)::regclass AND a.grantee <> c.relowner;
    -- Views that read the old table (dds.current_order_status reads s_order_status, V0013), with
    -- their comments and privileges: dropped with it, made again on the new one.
    CREATE TEMP TABLE IF NOT EXISTS views (tab text, name text, def text, note text);
    CREATE TEMP TABLE IF NOT EXISTS view_grants (name text, grantee text, privilege text);
    INSERT INTO views
    SELECT DISTINCT tab, vw.oid::regclass::text, pg_get_viewdef(vw.oid),
           obj_description(vw.oid, 'pg_class')
    FROM pg_depend d
    JOIN pg_rewrite r ON r.oid = d.objid
    JOIN pg_class vw ON vw.oid = r.ev_class
    WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = format('dds.%I', tab)::regclass
      AND vw.oid <> d.refobjid;
    INSERT INTO view_grants
    SELECT w.name, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,
           a.privilege_type
    FROM views w
    JOIN pg_class c ON c.oid = w.name::regclass
    CROSS JOIN LATERAL aclexplode(c.relacl) a
    WHERE w.tab = partition_by_hash.tab AND a.grantee <> c.relowner;
    FOR v IN SELECT name FROM views WHERE views.tab = partition_by_hash.tab LOOP
        EXECUTE format('DROP VIEW %s', v.name);
    END LOOP;
    EXECUTE format('DROP TABLE dds.%I', tab);
    EXECUTE format('ALTER TABLE dds.%1$I_new RENAME TO %1$I', tab);
    EXECUTE format('ALTER TABLE dds.%I ADD CONSTRAINT %I PRIMARY KEY (%s)', tab, tab || '_pkey', pk);
    FOR idx IN SELECT def FROM idxs WHERE idxs.tab = partition_by_hash.tab LOOP
        -- A unique index must hold the partition key: add it where missing.
        IF idx.def LIKE 'CREATE UNIQUE%' AND idx.def NOT LIKE '%' || part_key || '%' THEN
            EXECUTE regexp_replace(idx.def, '\)$', ', ' || part_key || ')');
        ELSE
            EXECUTE idx.def;
        END IF;
    END LOOP;
    FOR idx IN SELECT def, name FROM fks WHERE fks.tab = partition_by_hash.tab LOOP
        EXECUTE format('ALTER TABLE dds.%I ADD CONSTRAINT %I %s', tab, idx.name, idx.def);
    END LOOP;
    FOR g IN SELECT grantee, privilege FROM grants WHERE grants.tab = partition_by_hash.tab LOOP
        EXECUTE format('GRANT %s ON dds.%I TO %s', g.privilege, tab, g.grantee);
    END LOOP;
    FOR v IN SELECT name, def, note FROM views WHERE views.tab = partition_by_hash.tab LOOP
        EXECUTE format('CREATE VIEW %s AS %s', v.name, v.def);
        EXECUTE format('COMMENT ON VIEW %s IS %L', v.name, v.note);
        FOR g IN SELECT grantee, privilege FROM view_grants WHERE view_grants.name = v.name LOOP
            EXECUTE format('GRANT %s ON %s TO %s', g.privilege, v.name, g.grantee);
        END LOOP;
    END LOOP;
END $$;

SELECT pg_temp.partition_by_hash('s_order_status', 'h_order_pk', 'h_order_pk, effective_dt', :partitions);
SELECT pg_temp.partition_by_hash('s_order_cost', 'h_order_pk', 'h_order_pk, effective_dt', :partitions);
SELECT pg_temp.partition_by_hash('l_order_product', 'h_order_pk', 'hk_order_product_pk, h_order_pk', :partitions);
SELECT pg_temp.partition_by_hash('l_order_user', 'h_user_pk', 'hk_order_user_pk, h_user_pk', :partitions);

COMMIT;
