-- Per job ($1: job names): its newest batch, its dead letters (count, newest reason) and the
-- offsets retention deleted before it read them.
-- Ages are measured by PostgreSQL's clock, the one that stamped committed_at.
SELECT j.job,
       b.batch_id,
       b.committed_at,
       extract(epoch FROM now() - b.committed_at)::float8 AS age_secs,
       b.consumed,
       b.loaded,
       b.dead_lettered,
       b.seconds,
       b.published_at IS NOT NULL AS published,
       (SELECT count(*) FROM dwh.dead_letters d WHERE d.job = j.job) AS dead_letters,
       dl.reason AS newest_reason,
       dl.created_at AS newest_at,
       g.gaps,
       g.gap_offsets,
       g.newest_gap_at
FROM unnest($1::text[]) WITH ORDINALITY AS j(job, n)
LEFT JOIN LATERAL (
    -- Of the job's topic: not stg's batches that publish dictionary versions (topic 'redis',
    -- stg_publish_dictionaries.sql), which follow its batches of orders and consume no topic.
    SELECT * FROM dwh.batches b WHERE b.job = j.job AND b.topic <> 'redis'
    ORDER BY b.committed_at DESC LIMIT 1
) b ON true
LEFT JOIN LATERAL (
    SELECT reason, created_at FROM dwh.dead_letters d
    WHERE d.job = j.job ORDER BY d.created_at DESC, d.partition DESC, d."offset" DESC LIMIT 1
) dl ON true
LEFT JOIN LATERAL (
    SELECT count(*) AS gaps, coalesce(sum(to_offset - from_offset), 0)::int8 AS gap_offsets,
           max(detected_at) AS newest_gap_at
    FROM dwh.offset_gaps g WHERE g.job = j.job
) g ON true
ORDER BY j.n
