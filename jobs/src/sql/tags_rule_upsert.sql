-- Add a tag rule or replace the rule of its tag.
-- $1 tag, $2 category name, $3 dish pattern (one of the two), $4 threshold.
INSERT INTO cdm.tag_rules (tag, category_name, dish_pattern, threshold)
VALUES ($1, $2, $3, $4)
ON CONFLICT (tag) DO UPDATE
SET category_name = EXCLUDED.category_name, dish_pattern = EXCLUDED.dish_pattern,
    threshold = EXCLUDED.threshold
