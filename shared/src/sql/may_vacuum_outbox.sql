-- Whether the current role may VACUUM dwh.outbox: it owns the table (or is a member of its owner),
-- or, from PostgreSQL 17 on, holds the MAINTAIN privilege on it. (CASE keeps PostgreSQL 15 and 16
-- from evaluating a privilege name they do not know.)
SELECT pg_has_role(c.relowner, 'USAGE')
    OR CASE WHEN current_setting('server_version_num')::int >= 170000
            THEN has_table_privilege(c.oid, 'MAINTAIN') ELSE false END
FROM pg_class c
WHERE c.oid = 'dwh.outbox'::regclass
