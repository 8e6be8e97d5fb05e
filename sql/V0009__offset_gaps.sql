-- Offsets the broker deleted (retention, kafka-delete-records) before a job read them: the log's
-- start had moved past the offset stored for the job. Recorded once per gap, in the transaction
-- that moves the job's offset past it, for `dwh status` and the operator (rebuild from the
-- archive, or ask the source to resend).
CREATE TABLE dwh.offset_gaps (
    job         text        NOT NULL,
    topic       text        NOT NULL,
    partition   int4        NOT NULL,
    from_offset int8        NOT NULL,
    to_offset   int8        NOT NULL,
    detected_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job, topic, partition, from_offset),
    CHECK (to_offset > from_offset)
);

GRANT SELECT, INSERT ON dwh.offset_gaps TO dwh_stg, dwh_dds, dwh_cdm;
ALTER TABLE dwh.offset_gaps ENABLE ROW LEVEL SECURITY;
CREATE POLICY everyone_reads ON dwh.offset_gaps FOR SELECT USING (true);
CREATE POLICY own_job_inserts ON dwh.offset_gaps FOR INSERT
    WITH CHECK (job = ANY ((SELECT dwh.current_jobs())::text[]));
