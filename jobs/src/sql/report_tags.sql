-- Users per tag, every rule listed (a tag nobody earned shows 0). A user holding several tags
-- counts under each; the report's "tagged users" counts each user once.
SELECT r.tag, count(t.user_id) AS users
FROM cdm.tag_rules r LEFT JOIN cdm.user_tags t USING (tag)
GROUP BY r.tag
ORDER BY 2 DESC, 1
