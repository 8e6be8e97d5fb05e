-- A batch whose messages follow from what it stored (STG's enriched orders) does not write them to
-- the outbox: the run builds them in memory and sends them after the commit. The batch queues one
-- rebuild row instead (key and value empty, rebuild true), deleted once the broker acknowledged
-- every message; while it is there the batch stays unpublished, and the next run of the job
-- rebuilds the messages from the batch's rows and sends them first.
ALTER TABLE dwh.outbox ADD COLUMN rebuild boolean NOT NULL DEFAULT false;
