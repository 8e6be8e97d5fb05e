-- Every tag rule with the users holding its tag, for `dwh tags rules`.
SELECT r.tag, r.category_name, r.dish_pattern, r.threshold, count(t.user_id) AS users
FROM cdm.tag_rules r LEFT JOIN cdm.user_tags t USING (tag)
GROUP BY r.tag, r.category_name, r.dish_pattern, r.threshold
ORDER BY r.tag
