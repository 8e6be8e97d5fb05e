-- A batch of cdm that no drain made (a `dwh cdm --full` chunk, a rule change), recorded so that
-- the tag events it queued are published like any other batch's outbox: ranges name the
-- partitions of the DDS topic the run holds (every one), so whichever run of cdm holds one of
-- them next publishes what this run could not.
-- $1 batch id, $2 what made it, $3 ranges, $4 users recomputed, $5 rows written, $6 seconds.
INSERT INTO dwh.batches (batch_id, job, topic, ranges, consumed, loaded, dead_lettered,
                         committed_at, seconds)
VALUES ($1, 'cdm', $2, $3, $4, $5, 0, now(), $6)
