-- Keep each distinct version of a dictionary document once ({table}: stg.users or
-- stg.restaurants, staged in {stage}). A new version gets the next `seq` (STG's load order, the
-- tie-breaker of equal update_ts) and waits, unpublished, for the next stg run to publish it.
-- $1 batch id.
INSERT INTO {table} (id, version, update_ts, doc, batch_id, load_dt)
SELECT DISTINCT ON (id, version) id, version, update_ts, doc::jsonb, $1, now()
FROM {stage} ORDER BY id, version
ON CONFLICT (id, version) DO NOTHING
