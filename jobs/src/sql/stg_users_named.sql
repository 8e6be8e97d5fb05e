-- What the STG topic's messages say of each user in $1 (ids): its newest version STG holds — the
-- greatest update_ts (a version without one counts from when it was loaded), then the last loaded.
SELECT DISTINCT ON (id) id, doc ->> 'name', doc ->> 'login', doc ->> 'update_ts_utc'
FROM stg.users
WHERE id = ANY($1)
ORDER BY id, coalesce(update_ts, load_dt AT TIME ZONE 'UTC') DESC, seq DESC
