-- One role per job, with exactly what the job does (least privilege). The roles are NOLOGIN
-- groups: a deployment logs in as a user that is a member of one of them, e.g.
--   CREATE ROLE dwh_stg_login LOGIN PASSWORD '…' IN ROLE dwh_stg;
--
--   dwh_stg  writes stg (orders, users, restaurants), reads nothing else
--   dwh_dds  writes dds (it reads STG through the stg-service-orders topic, not the stg schema)
--   dwh_cdm  reads dds, writes the showcases in cdm (not cdm.tag_rules, its configuration)
--   all three: their own rows of the control tables in schema dwh (offsets, batches, dead letters,
--   outbox); row-level security keeps each job to the rows of its own name (reading is open to
--   all, for `dwh status` and the lag).
-- `dwh migrate` itself runs as the owner of the schema (it creates and alters tables) and is no
-- job role. Roles belong to the cluster, so several warehouses on one cluster share them: they
-- are created once (two migrations at once may race: the loser's CREATE ROLE is ignored) and
-- granted per database.
DO $$
DECLARE
    job_role text;
BEGIN
    FOREACH job_role IN ARRAY ARRAY['dwh_stg', 'dwh_dds', 'dwh_cdm'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = job_role) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', job_role);
            EXCEPTION
                WHEN duplicate_object OR unique_violation THEN NULL;
                WHEN insufficient_privilege THEN
                    RAISE EXCEPTION 'dwh migrate may not create role %', job_role
                        USING HINT = 'Create the NOLOGIN roles dwh_stg, dwh_dds and dwh_cdm as an '
                                     'administrator (CREATE ROLE dwh_stg NOLOGIN; …), then rerun '
                                     'dwh migrate.';
            END;
        END IF;
    END LOOP;
    -- Temporary tables: stg and dds stage every batch in them; cdm writes its tables directly.
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO dwh_stg, dwh_dds, dwh_cdm', current_database());
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO dwh_stg, dwh_dds', current_database());
END $$;

-- The control tables: each job reads them and writes its own rows.
GRANT USAGE ON SCHEMA dwh TO dwh_stg, dwh_dds, dwh_cdm;
GRANT SELECT, INSERT, UPDATE ON dwh.offsets, dwh.batches TO dwh_stg, dwh_dds, dwh_cdm;
GRANT SELECT, INSERT ON dwh.dead_letters TO dwh_stg, dwh_dds, dwh_cdm;
-- stg and dds queue messages for downstream and delete them once published; cdm queues nothing.
GRANT SELECT ON dwh.outbox TO dwh_stg, dwh_dds, dwh_cdm;
GRANT INSERT, DELETE ON dwh.outbox TO dwh_stg, dwh_dds;
GRANT USAGE ON SEQUENCE dwh.outbox_id_seq TO dwh_stg, dwh_dds;
DO $$
BEGIN
    -- VACUUM after a large publish (PostgreSQL 17 has a privilege for it; before, only the
    -- owner may, and the jobs leave it to autovacuum).
    IF current_setting('server_version_num')::int >= 170000 THEN
        EXECUTE 'GRANT MAINTAIN ON dwh.outbox TO dwh_stg, dwh_dds';
    END IF;
END $$;

-- The jobs a role may write control rows for: dwh_<job> for each job it is a member of.
CREATE FUNCTION dwh.current_jobs() RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(job), '{}')
    FROM unnest(ARRAY['stg', 'dds', 'cdm']) AS job
    WHERE pg_has_role('dwh_' || job, 'USAGE')
$$;

DO $$
DECLARE
    control text;
    -- (A scalar subquery, cast to an array: evaluated once per statement, not once per row.)
    own text := 'job = ANY ((SELECT dwh.current_jobs())::text[])';
BEGIN
    FOREACH control IN ARRAY ARRAY['offsets', 'batches', 'dead_letters', 'outbox'] LOOP
        EXECUTE format('ALTER TABLE dwh.%I ENABLE ROW LEVEL SECURITY', control);
        EXECUTE format('CREATE POLICY everyone_reads ON dwh.%I FOR SELECT USING (true)', control);
        EXECUTE format('CREATE POLICY own_job_inserts ON dwh.%I FOR INSERT WITH CHECK (%s)',
                       control, own);
        EXECUTE format('CREATE POLICY own_job_updates ON dwh.%I FOR UPDATE USING (%s) WITH CHECK (%s)',
                       control, own, own);
        EXECUTE format('CREATE POLICY own_job_deletes ON dwh.%I FOR DELETE USING (%s)',
                       control, own);
    END LOOP;
END $$;

-- STG: dwh_stg merges orders (a newer version updates the row) and adds dictionary versions.
GRANT USAGE ON SCHEMA stg TO dwh_stg;
GRANT SELECT, INSERT, UPDATE ON stg.order_events TO dwh_stg;
GRANT SELECT, INSERT ON stg.users, stg.restaurants TO dwh_stg;

-- DDS: insert-only for dwh_dds (hubs, links and satellites are never updated); dwh_cdm reads it.
GRANT USAGE ON SCHEMA dds TO dwh_dds, dwh_cdm;
GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA dds TO dwh_dds;
GRANT SELECT ON ALL TABLES IN SCHEMA dds TO dwh_cdm;

-- CDM: dwh_cdm replaces the showcase rows of the users it recomputes; the tag rules are read only.
GRANT USAGE ON SCHEMA cdm TO dwh_cdm;
GRANT SELECT, INSERT, DELETE ON cdm.user_product_counters, cdm.user_category_counters, cdm.user_tags
    TO dwh_cdm;
GRANT SELECT ON cdm.tag_rules TO dwh_cdm;

-- Tables that later migrations (or sql/scale/partition_vault.sql, run as the same owner) create
-- get the same kind of access; a migration that wants less revokes it.
ALTER DEFAULT PRIVILEGES IN SCHEMA stg GRANT SELECT, INSERT ON TABLES TO dwh_stg;
ALTER DEFAULT PRIVILEGES IN SCHEMA dds GRANT SELECT, INSERT ON TABLES TO dwh_dds;
ALTER DEFAULT PRIVILEGES IN SCHEMA dds GRANT SELECT ON TABLES TO dwh_cdm;
ALTER DEFAULT PRIVILEGES IN SCHEMA cdm GRANT SELECT ON TABLES TO dwh_cdm;
