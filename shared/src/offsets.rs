//! Where each job stands in the topic it reads: the offsets PostgreSQL stores for it against what
//! the broker holds, for `dwh offsets`, `dwh status` and the lag metrics; and moving them by hand.
//!
//! The stored offsets are the truth (DESIGN §4); the broker's marks say whether they still make
//! sense. A stored offset before the log's start means retention deleted messages the job never
//! read (the next run records them in `dwh.offset_gaps` and goes on); one beyond the log's end
//! means the topic was deleted and recreated, or the cluster replaced, and the job stops until an
//! operator decides with [`reset`]. A reset holds every partition lock of the job, as a run does.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{bail, Context, Result};
use serde::Serialize;
use tokio_postgres::{Client, GenericClient};

use crate::config::Kafka;
use crate::{batch, kafka};

/// How a stored offset relates to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Within the log (or nothing stored yet: the job starts at the log's start).
    Ok,
    /// Before the log's start: retention deleted messages the job never read.
    BehindLogStart,
    /// Beyond the log's end: the topic was recreated or the cluster replaced.
    AheadOfLog,
}

impl State {
    /// The word `dwh offsets` and `dwh status` print.
    pub fn word(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::BehindLogStart => "GAP",
            State::AheadOfLog => "AHEAD",
        }
    }
}

/// One partition of a job's topic.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionOffsets {
    pub partition: i32,
    /// The next offset PostgreSQL stores for the job (none before its first batch).
    pub stored: Option<i64>,
    /// The log's first offset the broker still holds.
    pub log_start: i64,
    /// The log's end the job can read to (the last stable offset).
    pub log_end: i64,
    /// The offset the job's consumer group committed to Kafka (monitoring).
    pub group: Option<i64>,
    /// Messages waiting for the job.
    pub lag: i64,
    pub state: State,
}

/// Classify a stored offset against the log's marks: (state, lag).
pub fn classify(stored: Option<i64>, log_start: i64, log_end: i64) -> (State, i64) {
    match stored {
        Some(next) if next > log_end => (State::AheadOfLog, 0),
        Some(next) if next < log_start => (State::BehindLogStart, log_end - log_start),
        Some(next) => (State::Ok, log_end - next),
        None => (State::Ok, log_end - log_start),
    }
}

/// Every partition of `topic` for `job`: stored offset, log marks, group offset, lag and state.
/// `with_group` also asks Kafka for the consumer group's committed offsets.
pub async fn describe<C: GenericClient>(
    client: &C,
    kafka: &Kafka,
    job: &str,
    topic: &str,
    with_group: bool,
) -> Result<Vec<PartitionOffsets>> {
    let stored = batch::stored_offsets(client, job, topic)
        .await
        .with_context(|| format!("reading stored offsets of job {job}"))?;
    let marks = kafka::watermarks(kafka, topic).await?;
    let group = if with_group {
        kafka::group_offsets(kafka, &kafka::group(job), topic).await?
    } else {
        BTreeMap::new()
    };
    Ok(marks
        .into_iter()
        .map(|(partition, (log_start, log_end))| {
            let stored = stored.get(&partition).copied();
            let (state, lag) = classify(stored, log_start, log_end);
            PartitionOffsets {
                partition,
                stored,
                log_start,
                log_end,
                group: group.get(&partition).copied(),
                lag,
                state,
            }
        })
        .collect())
}

/// Where [`reset`] moves a job's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The log's start: read everything the broker holds.
    Earliest,
    /// The log's end: skip everything waiting now.
    Latest,
    /// This offset (within the log).
    Offset(i64),
}

impl std::str::FromStr for ResetTo {
    type Err = String;

    fn from_str(s: &str) -> Result<ResetTo, String> {
        match s {
            "earliest" => Ok(ResetTo::Earliest),
            "latest" => Ok(ResetTo::Latest),
            _ => match s.parse::<i64>() {
                Ok(offset) if offset >= 0 => Ok(ResetTo::Offset(offset)),
                _ => Err(format!(
                    "`{s}` is not earliest, latest or an offset (a whole number ≥ 0)"
                )),
            },
        }
    }
}

/// One partition a reset moved: (partition, stored before, stored now).
pub type Moved = (i32, Option<i64>, i64);

/// Move `job`'s stored offsets in `topic` (the partitions given, or all) to `to`, holding every
/// partition lock of the job in `topic` (waiting at most `lock_wait`), then tell the consumer
/// group the same. Offsets may move backwards here: that is what a reset is for. Returns what
/// moved; fails, changing nothing, when a run holds a lock or an offset lies outside the log.
pub async fn reset(
    client: &Client,
    kafka: &Kafka,
    (job, topic): (&str, &str),
    only: &[i32],
    to: ResetTo,
    lock_wait: Duration,
) -> Result<Vec<Moved>> {
    let marks = kafka::watermarks(kafka, topic).await?;
    let all: Vec<i32> = marks.keys().copied().collect();
    if let Some(p) = only.iter().find(|p| !all.contains(p)) {
        bail!("topic {topic} has no partition {p} (it has {})", all.len());
    }
    let held = batch::lock_partitions(client, job, topic, &all, lock_wait).await?;
    if let Some(partition) = all.iter().find(|p| !held.contains(p)) {
        bail!(
            "another run of {job} holds the lock of {topic}/{partition}; nothing done \
             (suspend its CronJob and try again)"
        );
    }
    let mut moves = Vec::new();
    for (partition, (log_start, log_end)) in marks {
        if !only.is_empty() && !only.contains(&partition) {
            continue;
        }
        let next = match to {
            ResetTo::Earliest => log_start,
            ResetTo::Latest => log_end,
            ResetTo::Offset(o) if (log_start..=log_end).contains(&o) => o,
            ResetTo::Offset(o) => bail!(
                "offset {o} is outside the log of {topic}/{partition} \
                 ({log_start}..{log_end}); nothing done"
            ),
        };
        moves.push((partition, next));
    }
    let before = batch::stored_offsets(client, job, topic).await?;
    let (partitions, next): (Vec<i32>, Vec<i64>) = moves.iter().copied().unzip();
    client
        .execute(
            include_str!("sql/reset_offsets.sql"),
            &[&job, &topic, &partitions, &next],
        )
        .await
        .context("storing the reset offsets")?;
    let group: BTreeMap<i32, i64> = moves.iter().copied().collect();
    if let Err(e) = kafka::commit_group(kafka, &kafka::group(job), topic, &group).await {
        tracing::warn!(
            "offsets reset; could not tell consumer group {}: {}",
            kafka::group(job),
            crate::chain_line(&e)
        );
    }
    Ok(moves
        .into_iter()
        .map(|(p, next)| (p, before.get(&p).copied(), next))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_offset_is_placed_against_the_log() {
        assert_eq!(classify(None, 5, 9), (State::Ok, 4));
        assert_eq!(classify(Some(7), 5, 9), (State::Ok, 2));
        assert_eq!(classify(Some(9), 5, 9), (State::Ok, 0));
        assert_eq!(classify(Some(3), 5, 9), (State::BehindLogStart, 4));
        assert_eq!(classify(Some(12), 0, 0), (State::AheadOfLog, 0));
    }

    #[test]
    fn reset_targets_parse_and_bad_ones_say_what_is_expected() {
        assert_eq!("earliest".parse(), Ok(ResetTo::Earliest));
        assert_eq!("latest".parse(), Ok(ResetTo::Latest));
        assert_eq!("42".parse(), Ok(ResetTo::Offset(42)));
        for bad in ["-1", "first", ""] {
            let error = bad.parse::<ResetTo>().unwrap_err();
            assert!(error.contains("earliest, latest or an offset"), "{error}");
        }
    }
}
