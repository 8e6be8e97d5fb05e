-- Tag events (README "Tag events"): every grant and revocation of a user tag is queued in
-- dwh.outbox by the CDM transaction that computes it, and published to the tags topic after the
-- commit, as stg and dds publish theirs. dwh_cdm now queues messages and deletes them once the
-- broker acknowledged them; row-level security (V0008) keeps it to the rows of job 'cdm'.
GRANT INSERT, DELETE ON dwh.outbox TO dwh_cdm;
GRANT USAGE ON SEQUENCE dwh.outbox_id_seq TO dwh_cdm;
DO $$
BEGIN
    IF current_setting('server_version_num')::int >= 170000 THEN
        EXECUTE 'GRANT MAINTAIN ON dwh.outbox TO dwh_cdm';
    END IF;
END $$;

-- The rules are changed with `dwh tags rules set|remove` (as the owner: dwh_cdm only reads them).
-- A rule's dish pattern is a case-insensitive regular expression in the syntax of Rust's regex
-- crate; a row edited by hand whose pattern does not compile is skipped with a warning (its
-- users keep the tag as it was) until it is fixed.
COMMENT ON TABLE cdm.tag_rules IS
    'Tag rules: change them with dwh tags rules set|remove, which recomputes the users concerned '
    'and publishes the resulting tag events';
