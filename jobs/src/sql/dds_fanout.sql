-- After a batch's commit: queue for CDM every user who ordered a dish whose name or category the
-- batch changed (dds.pending_fanout, written with the batch), under that batch, and take the
-- dishes off the list, in one statement. The batch is marked unpublished again so the messages
-- go out with the rest of its outbox. Only batches of the partitions this run holds ($1, text keys
-- of dwh.batches.ranges): a parallel worker does its own.
-- $1 partitions, $2 DDS topic.
WITH done AS (
    DELETE FROM dds.pending_fanout f
    WHERE f.batch_id IN (SELECT b.batch_id FROM dwh.batches b
                         WHERE b.job = 'dds' AND b.ranges ?| $1)
    RETURNING f.batch_id, f.h_product_pk
), users AS (
    SELECT d.batch_id, lou.h_user_pk::text AS key
    FROM done d
    JOIN dds.l_order_product lop ON lop.h_product_pk = d.h_product_pk
    JOIN dds.l_order_user lou ON lou.h_order_pk = lop.h_order_pk
    -- A user the batch queued already (for an order of theirs) is recomputed after this commit
    -- anyway: the first load, orders and menus in one batch, queues each user once. (A set
    -- difference: hashed once, not a probe of the outbox per order line.)
    EXCEPT
    SELECT o.batch_id, o.key FROM dwh.outbox o WHERE o.batch_id IN (SELECT batch_id FROM done)
), queued AS (
    INSERT INTO dwh.outbox (job, batch_id, topic, key, value)
    SELECT 'dds', batch_id, $2, key,
           json_build_object('user_pk', key::uuid, 'batch_id', batch_id)::text
    FROM users
    ORDER BY batch_id, key
)
UPDATE dwh.batches b SET published_at = NULL
WHERE b.batch_id IN (SELECT batch_id FROM done)
