-- STG: the sources as they are. One row per order (its newest version), every dictionary version.
CREATE SCHEMA IF NOT EXISTS stg;

CREATE TABLE stg.order_events (
    object_id     int8        PRIMARY KEY,
    object_type   text        NOT NULL,
    sent_dttm     timestamp   NOT NULL,
    update_ts     timestamp   NOT NULL,
    payload       jsonb       NOT NULL,
    src_topic     text        NOT NULL,
    src_partition int4        NOT NULL,
    src_offset    int8        NOT NULL,
    batch_id      uuid        NOT NULL,
    load_dt       timestamptz NOT NULL
);

-- Each distinct version of a document once; `version` is a hash of its canonical content.
CREATE TABLE stg.users (
    id        text        NOT NULL,
    version   uuid        NOT NULL,
    update_ts timestamp,
    doc       jsonb       NOT NULL,
    batch_id  uuid        NOT NULL,
    load_dt   timestamptz NOT NULL,
    PRIMARY KEY (id, version)
);
CREATE INDEX users_current ON stg.users (id, update_ts DESC NULLS LAST);

CREATE TABLE stg.restaurants (
    id        text        NOT NULL,
    version   uuid        NOT NULL,
    update_ts timestamp,
    doc       jsonb       NOT NULL,
    batch_id  uuid        NOT NULL,
    load_dt   timestamptz NOT NULL,
    PRIMARY KEY (id, version)
);
CREATE INDEX restaurants_current ON stg.restaurants (id, update_ts DESC NULLS LAST);
