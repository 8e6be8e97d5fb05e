-- CDM: the showcases. Recomputed per affected user, never incremented; a counter that falls to
-- zero has no row (a user whose only order became CANCELLED has no rows at all).
CREATE SCHEMA IF NOT EXISTS cdm;

CREATE TABLE cdm.user_product_counters (
    user_id      uuid NOT NULL,
    product_id   uuid NOT NULL,
    product_name text NOT NULL,
    order_cnt    int8 NOT NULL CHECK (order_cnt > 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, product_id)
);

CREATE TABLE cdm.user_category_counters (
    user_id       uuid NOT NULL,
    category_id   uuid NOT NULL,
    category_name text NOT NULL,
    order_cnt     int8 NOT NULL CHECK (order_cnt > 0),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, category_id)
);

-- A tag is earned with `threshold` or more distinct CLOSED orders that contain a dish of
-- `category_name`, or a dish whose name matches `dish_pattern` (a case-insensitive regex).
CREATE TABLE cdm.tag_rules (
    tag           text PRIMARY KEY,
    category_name text,
    dish_pattern  text,
    threshold     int8 NOT NULL CHECK (threshold > 0),
    CHECK ((category_name IS NULL) <> (dish_pattern IS NULL))
);
INSERT INTO cdm.tag_rules (tag, category_name, dish_pattern, threshold) VALUES
    ('Pizza Lover', NULL, 'пицц|pizza', 10),
    ('Soup Fan', 'Супы', NULL, 5),
    ('Sweet Tooth', 'Десерты', NULL, 3),
    ('Tea Drinker', 'Чай', NULL, 3),
    ('Pastry Regular', 'Выпечка', NULL, 10);

CREATE TABLE cdm.user_tags (
    user_id    uuid NOT NULL,
    tag        text NOT NULL,
    order_cnt  int8 NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, tag)
);
