-- Parallel runs publish the outbox of their own partitions' batches: find unpublished batches
-- and their outbox rows without scanning history.
CREATE INDEX batches_unpublished ON dwh.batches (job) WHERE published_at IS NULL;
CREATE INDEX outbox_batch ON dwh.outbox (batch_id);
