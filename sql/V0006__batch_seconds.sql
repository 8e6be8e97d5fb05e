-- How long each batch took, from the run's start (lock taken) to the commit; read by `dwh status`
-- and the report. NULL for batches committed before this migration.
ALTER TABLE dwh.batches ADD COLUMN seconds float8;
