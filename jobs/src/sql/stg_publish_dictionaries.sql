-- Claim every dictionary version STG has not published yet and queue it for the STG topic (key =
-- its id), as one batch of the job recorded with the run's partitions ($3) so that its outbox is
-- published like any other; no batch when there is nothing to claim. A version's timestamp is its
-- document's update_ts_utc, or when it has none the time STG stored it; `seq` (STG's load order)
-- breaks ties. A restaurant's menu goes as its dishes' id, name and category.
-- $1 batch id, $2 STG topic, $3 ranges (the run's partitions).
WITH users AS (
    UPDATE stg.users SET published_batch = $1 WHERE published_batch IS NULL
    RETURNING id, seq, coalesce(update_ts, load_dt AT TIME ZONE 'UTC') AS effective, doc
), restaurants AS (
    UPDATE stg.restaurants SET published_batch = $1 WHERE published_batch IS NULL
    RETURNING id, seq, coalesce(update_ts, load_dt AT TIME ZONE 'UTC') AS effective, doc
), queued AS (
    INSERT INTO dwh.outbox (job, batch_id, topic, key, value)
    SELECT 'stg', $1, $2, id, json_build_object(
        'kind', 'user', 'id', id, 'name', doc ->> 'name', 'login', doc ->> 'login',
        'update_ts', to_char(effective, 'YYYY-MM-DD HH24:MI:SS'), 'seq', seq)::text
    FROM users
    UNION ALL
    SELECT 'stg', $1, $2, id, json_build_object(
        'kind', 'restaurant', 'id', id, 'name', doc ->> 'name',
        'update_ts', to_char(effective, 'YYYY-MM-DD HH24:MI:SS'), 'seq', seq,
        'menu', (SELECT coalesce(json_agg(json_build_object(
                            'id', item ->> '_id', 'name', item ->> 'name',
                            'category', item ->> 'category') ORDER BY n), '[]'::json)
                 FROM jsonb_array_elements(CASE WHEN jsonb_typeof(doc -> 'menu') = 'array'
                                                THEN doc -> 'menu' ELSE '[]' END)
                      WITH ORDINALITY AS m(item, n)))::text
    FROM restaurants
    RETURNING 1
), counted AS (
    SELECT count(*) AS n FROM queued
)
INSERT INTO dwh.batches (batch_id, job, topic, ranges, consumed, loaded, dead_lettered,
                         committed_at, seconds)
SELECT $1, 'stg', 'redis', $3, n, n, 0, now(), 0 FROM counted WHERE n > 0
RETURNING consumed
