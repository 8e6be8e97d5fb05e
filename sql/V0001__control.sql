-- The batch protocol's own tables: stored offsets, batch records, dead letters and the outbox.
CREATE SCHEMA IF NOT EXISTS dwh;

-- Next offset to read per job/topic/partition; written in the same transaction as the data.
CREATE TABLE dwh.offsets (
    job         text        NOT NULL,
    topic       text        NOT NULL,
    partition   int4        NOT NULL,
    next_offset int8        NOT NULL,
    batch_id    uuid        NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (job, topic, partition)
);

-- One row per committed batch; published_at stays NULL until its outbox reached Kafka.
CREATE TABLE dwh.batches (
    batch_id      uuid PRIMARY KEY,
    job           text        NOT NULL,
    topic         text        NOT NULL,
    ranges        jsonb       NOT NULL,
    consumed      int8        NOT NULL,
    loaded        int8        NOT NULL,
    dead_lettered int8        NOT NULL,
    committed_at  timestamptz NOT NULL,
    published_at  timestamptz
);
CREATE INDEX batches_job_committed ON dwh.batches (job, committed_at DESC);

-- Messages that could not be used: raw bytes, position and reason. A replay adds nothing twice.
CREATE TABLE dwh.dead_letters (
    job        text        NOT NULL,
    topic      text        NOT NULL,
    partition  int4        NOT NULL,
    "offset"   int8        NOT NULL,
    raw        bytea       NOT NULL,
    reason     text        NOT NULL,
    batch_id   uuid        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job, topic, partition, "offset")
);

-- Messages for downstream, written with the data and deleted once the broker acknowledged them.
CREATE TABLE dwh.outbox (
    id       bigserial PRIMARY KEY,
    job      text NOT NULL,
    batch_id uuid NOT NULL,
    topic    text NOT NULL,
    key      text NOT NULL,
    value    text NOT NULL
);
CREATE INDEX outbox_job ON dwh.outbox (job, id);
