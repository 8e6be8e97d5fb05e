-- Rows per table of every layer as PostgreSQL's statistics estimate them (reltuples, kept by
-- autovacuum/ANALYZE): instant on any size; -1 (never analysed) shows as 0.
SELECT n.nspname::text AS layer, n.nspname || '.' || c.relname AS "table",
       greatest(c.reltuples, 0)::int8 AS "rows"
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname IN ('stg', 'dds', 'cdm') AND c.relkind IN ('r', 'p') AND c.relname <> 'tag_rules'
ORDER BY array_position(ARRAY['stg', 'dds', 'cdm'], n.nspname::text), c.relname
