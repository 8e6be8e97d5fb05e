-- The tags the users in $1 hold before a recompute, leaving out $2: the tags of rules that
-- cannot be evaluated (a bad pattern), which a recompute neither grants nor revokes.
SELECT user_id, tag, order_cnt FROM cdm.user_tags
WHERE user_id = ANY($1) AND tag <> ALL($2)
