-- Queue tag events for the tags topic in the outbox of job cdm, in the order given (the outbox
-- is published in id order, so a user's events go out in the order they were computed).
-- $1 batch id, $2 tags topic, $3 keys (the users' source ids), $4 values (the events' JSON).
INSERT INTO dwh.outbox (job, batch_id, topic, key, value)
SELECT 'cdm', $1, $2, k, v
FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS u(k, v, n)
ORDER BY n
