-- DDS: Data Vault 2.0. Keys are uuid v5 computed by dwh; business keys are unique.
-- Satellites are versioned by the source's own timestamp (effective_dt): the current row of a
-- key is the one with the newest effective_dt, so late-arriving old versions change nothing.
CREATE SCHEMA IF NOT EXISTS dds;

CREATE TABLE dds.h_user (
    h_user_pk uuid PRIMARY KEY, user_id text NOT NULL UNIQUE,
    load_dt timestamptz NOT NULL, load_src text NOT NULL, batch_id uuid NOT NULL);
CREATE TABLE dds.h_product (
    h_product_pk uuid PRIMARY KEY, product_id text NOT NULL UNIQUE,
    load_dt timestamptz NOT NULL, load_src text NOT NULL, batch_id uuid NOT NULL);
CREATE TABLE dds.h_category (
    h_category_pk uuid PRIMARY KEY, category_name text NOT NULL UNIQUE,
    load_dt timestamptz NOT NULL, load_src text NOT NULL, batch_id uuid NOT NULL);
CREATE TABLE dds.h_restaurant (
    h_restaurant_pk uuid PRIMARY KEY, restaurant_id text NOT NULL UNIQUE,
    load_dt timestamptz NOT NULL, load_src text NOT NULL, batch_id uuid NOT NULL);
CREATE TABLE dds.h_order (
    h_order_pk uuid PRIMARY KEY, order_id int8 NOT NULL UNIQUE, order_dt timestamp NOT NULL,
    load_dt timestamptz NOT NULL, load_src text NOT NULL, batch_id uuid NOT NULL);

CREATE TABLE dds.l_order_user (
    hk_order_user_pk uuid PRIMARY KEY,
    h_order_pk uuid NOT NULL REFERENCES dds.h_order, h_user_pk uuid NOT NULL REFERENCES dds.h_user,
    load_dt timestamptz NOT NULL, load_src text NOT NULL, batch_id uuid NOT NULL,
    UNIQUE (h_order_pk, h_user_pk));
-- CDM reads a user's orders.
CREATE INDEX l_order_user_user ON dds.l_order_user (h_user_pk, h_order_pk);

CREATE TABLE dds.l_order_product (
    hk_order_product_pk uuid PRIMARY KEY,
    h_order_pk uuid NOT NULL REFERENCES dds.h_order, h_product_pk uuid NOT NULL REFERENCES dds.h_product,
    load_dt timestamptz NOT NULL, load_src text NOT NULL, batch_id uuid NOT NULL,
    UNIQUE (h_order_pk, h_product_pk));
-- DDS finds the users of a product whose category or name changed.
CREATE INDEX l_order_product_product ON dds.l_order_product (h_product_pk);

CREATE TABLE dds.l_product_restaurant (
    hk_product_restaurant_pk uuid PRIMARY KEY,
    h_product_pk uuid NOT NULL REFERENCES dds.h_product,
    h_restaurant_pk uuid NOT NULL REFERENCES dds.h_restaurant,
    load_dt timestamptz NOT NULL, load_src text NOT NULL, batch_id uuid NOT NULL,
    UNIQUE (h_product_pk, h_restaurant_pk));

CREATE TABLE dds.l_product_category (
    hk_product_category_pk uuid PRIMARY KEY,
    h_product_pk uuid NOT NULL REFERENCES dds.h_product,
    h_category_pk uuid NOT NULL REFERENCES dds.h_category,
    load_dt timestamptz NOT NULL, load_src text NOT NULL, batch_id uuid NOT NULL,
    UNIQUE (h_product_pk, h_category_pk));
CREATE INDEX l_product_category_batch ON dds.l_product_category (batch_id);

CREATE TABLE dds.s_user_names (
    h_user_pk uuid NOT NULL REFERENCES dds.h_user, effective_dt timestamp NOT NULL,
    hashdiff uuid NOT NULL, username text, userlogin text,
    load_dt timestamptz NOT NULL, load_src text NOT NULL, batch_id uuid NOT NULL,
    PRIMARY KEY (h_user_pk, effective_dt));
CREATE TABLE dds.s_product_names (
    h_product_pk uuid NOT NULL REFERENCES dds.h_product, effective_dt timestamp NOT NULL,
    hashdiff uuid NOT NULL, name text,
    load_dt timestamptz NOT NULL, load_src text NOT NULL, batch_id uuid NOT NULL,
    PRIMARY KEY (h_product_pk, effective_dt));
CREATE INDEX s_product_names_batch ON dds.s_product_names (batch_id);
CREATE TABLE dds.s_restaurant_names (
    h_restaurant_pk uuid NOT NULL REFERENCES dds.h_restaurant, effective_dt timestamp NOT NULL,
    hashdiff uuid NOT NULL, name text,
    load_dt timestamptz NOT NULL, load_src text NOT NULL, batch_id uuid NOT NULL,
    PRIMARY KEY (h_restaurant_pk, effective_dt));
CREATE TABLE dds.s_order_cost (
    h_order_pk uuid NOT NULL REFERENCES dds.h_order, effective_dt timestamp NOT NULL,
    hashdiff uuid NOT NULL, cost int8, payment int8,
    load_dt timestamptz NOT NULL, load_src text NOT NULL, batch_id uuid NOT NULL,
    PRIMARY KEY (h_order_pk, effective_dt));
CREATE TABLE dds.s_order_status (
    h_order_pk uuid NOT NULL REFERENCES dds.h_order, effective_dt timestamp NOT NULL,
    hashdiff uuid NOT NULL, status text,
    load_dt timestamptz NOT NULL, load_src text NOT NULL, batch_id uuid NOT NULL,
    PRIMARY KEY (h_order_pk, effective_dt));
