//! Draining a topic: plan what to read from the stored offsets and the log's marks, then read it
//! on a blocking thread, within the run's message and byte bounds.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use crate::error::{Context, Result};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::metadata::metadata_timeout;
use super::{base_config, group};
use crate::config::Kafka;
use crate::retry::{self, NotReady, Service};

/// One consumed message with its position.
#[derive(Debug, Clone)]
pub struct Polled {
    pub partition: i32,
    pub offset: i64,
    /// Broker timestamp in milliseconds since the epoch, when the broker gives one.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// What one run drained: messages in partition/offset order and the offset range per partition.
pub struct Drained {
    pub topic: String,
    pub messages: Vec<Polled>,
    /// partition → (first offset, next offset to read) of what was consumed. A range may hold
    /// fewer messages than offsets: transaction markers and aborted messages are skipped.
    pub ranges: BTreeMap<i32, (i64, i64)>,
    /// Offsets retention deleted before this job read them (recorded with the batch).
    pub gaps: Vec<Gap>,
    /// The consumer that read them, when they came from Kafka.
    consumer: Option<BaseConsumer>,
}

/// Messages the broker no longer holds although the job never read them: the log's start moved
/// past the stored offset (retention, or `kafka-delete-records`). Offsets `from..to` are lost to
/// the warehouse unless an archive or the source still has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub partition: i32,
    pub from: i64,
    pub to: i64,
}

/// The stored offsets of some partitions lie beyond the end of the log: the topic was deleted and
/// created again under the same name (or the cluster replaced). Never retried: reading on would
/// skip the new log silently, so the run stops and says how to proceed.
#[derive(Debug)]
pub struct AheadOfLog {
    pub job: String,
    pub topic: String,
    /// (partition, stored next offset, the log's end)
    pub partitions: Vec<(i32, i64, i64)>,
}

impl fmt::Display for AheadOfLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .partitions
            .iter()
            .map(|(p, stored, end)| format!("partition {p}: stored {stored}, log ends at {end}"))
            .collect();
        write!(
            f,
            "the offsets stored for {job} in topic {topic} are beyond the end of its log ({}): \
             the topic was deleted and recreated, or the cluster replaced; nothing was read. \
             See `dwh offsets {job}`; to read the new log from its start: `dwh offsets {job} \
             --reset earliest` (first `dwh backfill --from-archive` what the old log held, if \
             it was archived)",
            parts.join("; "),
            job = self.job,
            topic = self.topic,
        )
    }
}

impl std::error::Error for AheadOfLog {}

impl Drained {
    /// A batch of messages that did not come from a live consumer (e.g. read from an archive);
    /// the ranges are taken from the messages' own positions.
    pub fn from_messages(topic: &str, mut messages: Vec<Polled>) -> Drained {
        messages.sort_by_key(|m| (m.partition, m.offset));
        let mut ranges: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
        for m in &messages {
            let range = ranges
                .entry(m.partition)
                .or_insert((m.offset, m.offset + 1));
            range.0 = range.0.min(m.offset);
            range.1 = range.1.max(m.offset + 1);
        }
        Drained {
            topic: topic.to_owned(),
            messages,
            ranges,
            gaps: Vec::new(),
            consumer: None,
        }
    }

    /// Tell Kafka's consumer group how far this job is (monitoring only; failures are logged).
    pub fn commit_group_offsets(&self) {
        let mut tpl = TopicPartitionList::new();
        for (partition, (_, next)) in &self.ranges {
            let _ = tpl.add_partition_offset(&self.topic, *partition, Offset::Offset(*next));
        }
        if let (Some(consumer), true) = (&self.consumer, tpl.count() > 0) {
            if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                tracing::warn!("could not commit group offsets for monitoring: {e}");
            }
        }
    }
}

/// What to drain: the partitions, where each starts (`stored` next offsets) and how much.
#[derive(Debug, Clone)]
pub struct DrainPlan {
    pub partitions: Vec<i32>,
    pub stored: BTreeMap<i32, i64>,
    pub max: usize,
    /// Most key and value bytes to hold; the message that crosses it is the last one taken.
    pub max_bytes: u64,
    pub timeout: Duration,
}

/// Drain `plan.partitions` of `topic` from their stored offsets, at most `plan.max` messages.
///
/// Runs on a blocking thread: librdkafka's consumer is a blocking API. A broker that goes away
/// mid-drain is retried from the start with a new consumer (nothing was written yet: the load
/// comes after).
pub async fn drain(kafka: &Kafka, job: &str, topic: &str, plan: DrainPlan) -> Result<Drained> {
    retry::run(Service::Kafka, async || {
        let (kafka, job, topic, plan) = (
            kafka.clone(),
            job.to_owned(),
            topic.to_owned(),
            plan.clone(),
        );
        let marks_timeout = metadata_timeout();
        tokio::task::spawn_blocking(move || {
            drain_blocking(&kafka, &job, &topic, plan, marks_timeout)
        })
        .await
        .context("drain thread failed")?
    })
    .await
}

fn drain_blocking(
    kafka: &Kafka,
    job: &str,
    topic: &str,
    plan: DrainPlan,
    marks_timeout: Duration,
) -> Result<Drained> {
    let DrainPlan {
        partitions,
        stored,
        max,
        max_bytes,
        timeout,
    } = plan;
    // What librdkafka fetches ahead and queues is memory too: a quarter of the bound.
    let fetch_bytes = (max_bytes / 4).clamp(1 << 20, 50 << 20).to_string();
    let queued_kbytes = (max_bytes / 4 / 1024).clamp(1 << 10, 64 << 10).to_string();
    let brokers = &kafka.brokers;
    let consumer: BaseConsumer = base_config(kafka)?
        .set("group.id", group(job))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // Upstream producers may be transactional: read committed data only. The high watermark
        // this consumer sees is then the last stable offset.
        .set("isolation.level", "read_committed")
        // Reaching the end is an event: the last offsets before it may be transaction markers,
        // which are never delivered.
        .set("enable.partition.eof", "true")
        .set("fetch.max.bytes", &fetch_bytes)
        // One partition is all a run usually reads: let a fetch bring as much as the whole one
        // (librdkafka's default, 1 MB, meant ~1,000 orders a round trip).
        .set("max.partition.fetch.bytes", &fetch_bytes)
        .set("queued.max.messages.kbytes", &queued_kbytes)
        // A partition whose fetched queue reached that bound is fetched again this long after
        // (librdkafka's default, 1 s, stalled every full batch's drain for a second).
        .set("fetch.queue.backoff.ms", "10")
        .set("fetch.wait.max.ms", "20")
        .create()
        .with_context(|| format!("creating a Kafka consumer for {brokers}"))?;

    // Where to start and where to stop, per partition.
    let mut marks = BTreeMap::new();
    for partition in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, *partition, marks_timeout)
            .with_context(|| format!("reading offsets of {topic}/{partition} at {brokers}"))?;
        marks.insert(*partition, (low, high));
    }
    let Planned {
        targets,
        gaps,
        ahead,
    } = plan_reads(&marks, &stored, max);
    if !ahead.is_empty() {
        return Err(AheadOfLog {
            job: job.to_owned(),
            topic: topic.to_owned(),
            partitions: ahead,
        }
        .into());
    }
    for gap in &gaps {
        tracing::warn!(
            topic,
            partition = gap.partition,
            "retention deleted offsets {}..{} before they were read: recorded in dwh.offset_gaps",
            gap.from,
            gap.to
        );
    }
    let mut messages = Vec::new();
    let mut ranges = BTreeMap::new();
    if !targets.is_empty() {
        let mut tpl = TopicPartitionList::new();
        for (partition, (start, _)) in &targets {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*start))
                .context("listing the partitions to read")?;
        }
        consumer
            .assign(&tpl)
            .with_context(|| format!("assigning partitions of {topic}"))?;
        let next = poll_until(
            &consumer,
            topic,
            &targets,
            &mut messages,
            max_bytes,
            timeout,
        )?;
        // Where the byte bound stopped the run early, a partition's range ends at what was read.
        for (partition, (start, _)) in &targets {
            if next[partition] > *start {
                ranges.insert(*partition, (*start, next[partition]));
            }
        }
    }
    messages.sort_by_key(|m| (m.partition, m.offset));
    Ok(Drained {
        topic: topic.to_owned(),
        messages,
        ranges,
        gaps,
        consumer: Some(consumer),
    })
}

/// What a drain reads, decided from the log's marks and the stored offsets before reading.
#[derive(Debug, PartialEq, Eq)]
struct Planned {
    /// partition → (first offset to read, offset to stop before)
    targets: BTreeMap<i32, (i64, i64)>,
    gaps: Vec<Gap>,
    /// (partition, stored, log end) where the stored offset is beyond the log
    ahead: Vec<(i32, i64, i64)>,
}

/// Plan a drain: each partition from its stored offset (the log's start when none is stored or
/// retention passed it, which is a [`Gap`]) to its end (the last stable offset), at most `max`
/// messages in all, partitions in order. A stored offset beyond the end is reported, not read.
fn plan_reads(
    marks: &BTreeMap<i32, (i64, i64)>,
    stored: &BTreeMap<i32, i64>,
    max: usize,
) -> Planned {
    let mut planned = Planned {
        targets: BTreeMap::new(),
        gaps: Vec::new(),
        ahead: Vec::new(),
    };
    let mut budget = max as i64;
    for (&partition, &(low, high)) in marks {
        let mut start = stored.get(&partition).copied().unwrap_or(low);
        if start > high {
            planned.ahead.push((partition, start, high));
            continue;
        }
        if start < low {
            planned.gaps.push(Gap {
                partition,
                from: start,
                to: low,
            });
            start = low;
        }
        let end = high.min(start + budget.max(0));
        if end > start {
            budget -= end - start;
            planned.targets.insert(partition, (start, end));
        }
    }
    planned
}

fn poll_until(
    consumer: &BaseConsumer,
    topic: &str,
    targets: &BTreeMap<i32, (i64, i64)>,
    out: &mut Vec<Polled>,
    max_bytes: u64,
    timeout: Duration,
) -> Result<BTreeMap<i32, i64>> {
    let mut next: BTreeMap<i32, i64> = targets.iter().map(|(p, (s, _))| (*p, *s)).collect();
    let mut last_progress = Instant::now();
    let mut bytes = 0u64;
    let done = |next: &BTreeMap<i32, i64>| targets.iter().all(|(p, (_, end))| next[p] >= *end);
    while !done(&next) && bytes < max_bytes {
        if last_progress.elapsed() > timeout {
            let stalled: Vec<String> = targets
                .iter()
                .filter(|(p, (_, end))| next[p] < *end)
                .map(|(p, (_, end))| format!("partition {p} at offset {} of {end}", next[p]))
                .collect();
            return Err(NotReady {
                service: Service::Kafka,
                reason: format!(
                    "Kafka did not deliver {topic} up to the offsets it reported within \
                     {timeout:?} ({})",
                    stalled.join(", ")
                ),
            }
            .into());
        }
        let Some(result) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = match result {
            Ok(message) => message,
            // The end of what is readable: whatever lies between the last message delivered and
            // here are transaction markers or aborted messages, which never come.
            Err(KafkaError::PartitionEOF(partition)) => {
                if let Some((_, end)) = targets.get(&partition) {
                    let at = position(consumer, topic, partition)?.min(*end);
                    if at > next[&partition] {
                        next.insert(partition, at);
                        last_progress = Instant::now();
                    }
                }
                continue;
            }
            // librdkafka reconnects and follows a partition's new leader by itself: a broker
            // that went away is an event to wait through (up to `timeout` without progress).
            Err(e) if retry::kafka_transient(&e) => {
                tracing::info!("consuming {topic}: {e}; waiting for the cluster");
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("consuming {topic}")),
        };
        let partition = message.partition();
        let Some((_, end)) = targets.get(&partition) else {
            continue;
        };
        if message.offset() >= *end {
            // Past the target: everything before it was delivered or skipped.
            next.insert(partition, *end);
            continue;
        }
        if message.offset() < next[&partition] {
            continue;
        }
        let polled = Polled {
            partition,
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        };
        bytes += (polled.payload.len() + polled.key.as_ref().map_or(0, Vec::len)) as u64;
        out.push(polled);
        next.insert(partition, message.offset() + 1);
        last_progress = Instant::now();
    }
    Ok(next)
}

/// The consumer's position in `partition`: the next offset it will deliver.
fn position(consumer: &BaseConsumer, topic: &str, partition: i32) -> Result<i64> {
    let positions = consumer
        .position()
        .with_context(|| format!("reading the position in {topic}"))?;
    Ok(positions
        .find_partition(topic, partition)
        .and_then(|p| p.offset().to_raw())
        .unwrap_or(-1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks(list: &[(i32, i64, i64)]) -> BTreeMap<i32, (i64, i64)> {
        list.iter()
            .map(|(p, low, high)| (*p, (*low, *high)))
            .collect()
    }

    #[test]
    fn a_drain_reads_from_the_stored_offsets_to_the_end_within_the_budget() {
        let planned = plan_reads(
            &marks(&[(0, 0, 10), (1, 0, 10), (2, 0, 10)]),
            &BTreeMap::from([(0, 4), (1, 10)]),
            8,
        );
        // 0: 4..10 (6 messages); 1: nothing new; 2: never read, from the start, 2 left of 8.
        assert_eq!(planned.targets, BTreeMap::from([(0, (4, 10)), (2, (0, 2))]));
        assert!(planned.gaps.is_empty() && planned.ahead.is_empty());
    }

    #[test]
    fn the_budget_goes_to_partitions_in_order_and_empty_ones_are_not_read() {
        let planned = plan_reads(
            &marks(&[(0, 5, 5), (1, 0, 10), (2, 3, 10), (3, 0, 10)]),
            &BTreeMap::from([(2, 7)]),
            15,
        );
        // 0 is empty (retention took everything it had, nothing was stored: no gap); 1 takes
        // 10 of the 15; 2 takes the 3 it has past its stored offset; 3 gets the last 2.
        assert_eq!(
            planned.targets,
            BTreeMap::from([(1, (0, 10)), (2, (7, 10)), (3, (0, 2))])
        );
        assert!(planned.gaps.is_empty());
        let none = plan_reads(&marks(&[(0, 0, 10)]), &BTreeMap::new(), 0);
        assert!(none.targets.is_empty(), "a budget of 0 reads nothing");
    }

    #[test]
    fn retention_past_the_stored_offset_is_a_gap_and_the_drain_starts_at_the_log() {
        let planned = plan_reads(&marks(&[(0, 50, 60)]), &BTreeMap::from([(0, 20)]), 100);
        assert_eq!(
            planned.gaps,
            vec![Gap {
                partition: 0,
                from: 20,
                to: 50
            }]
        );
        assert_eq!(planned.targets, BTreeMap::from([(0, (50, 60))]));
    }

    #[test]
    fn a_stored_offset_beyond_the_log_is_reported_not_read() {
        // A recreated topic: the new log is shorter than what the job had read of the old one.
        let planned = plan_reads(
            &marks(&[(0, 0, 3), (1, 0, 9)]),
            &BTreeMap::from([(0, 120), (1, 9)]),
            100,
        );
        assert_eq!(planned.ahead, vec![(0, 120, 3)]);
        assert!(planned.targets.is_empty());
    }
}
