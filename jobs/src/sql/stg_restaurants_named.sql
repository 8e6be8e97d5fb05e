-- What the STG topic's messages say of each restaurant in $1 (ids), from its newest version STG
-- holds (as for users): its name, and each dish of its menu with the dish's category, one row per
-- listing in menu order (a restaurant whose menu is empty or not a list: one row, no dish).
WITH newest AS (
    SELECT DISTINCT ON (id) id, doc
    FROM stg.restaurants
    WHERE id = ANY($1)
    ORDER BY id, coalesce(update_ts, load_dt AT TIME ZONE 'UTC') DESC, seq DESC
)
SELECT r.id, r.doc ->> 'name', r.doc ->> 'update_ts_utc', m.item ->> '_id', m.item ->> 'category'
FROM newest r
LEFT JOIN LATERAL jsonb_array_elements(
    CASE WHEN jsonb_typeof(r.doc -> 'menu') = 'array' THEN r.doc -> 'menu' ELSE '[]' END)
    WITH ORDINALITY AS m(item, n) ON true
ORDER BY r.id, m.n
