//! Kafka: draining a topic from the offsets stored in PostgreSQL, publishing, creating topics.
//!
//! A job never subscribes: it assigns itself every partition at the offset PostgreSQL holds for it
//! and reads up to the high watermark it saw when it started (or up to its bound). PostgreSQL is
//! the source of truth for offsets; the group offsets committed to Kafka are for monitoring only.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// partition → (first offset, next offset to read) of what was consumed.
    pub ranges: BTreeMap<i32, (i64, i64)>,
    /// The consumer that read them, when they came from Kafka.
    consumer: Option<BaseConsumer>,
}

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

fn base_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("socket.timeout.ms", "10000")
        .set("log_level", "3");
    config
}

/// Drain `topic` from the `stored` next offsets (partition → offset), at most `max` messages.
///
/// Runs on a blocking thread: librdkafka's consumer is a blocking API.
pub async fn drain(
    brokers: &str,
    group: &str,
    topic: &str,
    stored: BTreeMap<i32, i64>,
    max: usize,
    timeout: Duration,
) -> Result<Drained> {
    let (brokers, group, topic) = (brokers.to_owned(), group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        drain_blocking(&brokers, &group, &topic, stored, max, timeout)
    })
    .await
    .context("drain thread failed")?
}

fn drain_blocking(
    brokers: &str,
    group: &str,
    topic: &str,
    stored: BTreeMap<i32, i64>,
    max: usize,
    timeout: Duration,
) -> Result<Drained> {
    let consumer: BaseConsumer = base_config(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.max.bytes", "52428800")
        // One partition is all a run usually reads: let a fetch bring as much as the whole one
        // (librdkafka's default, 1 MB, meant ~1,000 orders a round trip).
        .set("max.partition.fetch.bytes", "52428800")
        .set("fetch.wait.max.ms", "20")
        .create()
        .with_context(|| format!("creating a Kafka consumer for {brokers}"))?;
    let partitions = partitions(&consumer, brokers, topic)?;

    // Where to start and where to stop, per partition.
    let mut targets: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    let mut budget = max as i64;
    let mut tpl = TopicPartitionList::new();
    for partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
            .with_context(|| format!("reading offsets of {topic}/{partition} at {brokers}"))?;
        let mut start = stored.get(&partition).copied().unwrap_or(low);
        if start < low {
            tracing::warn!(
                topic,
                partition,
                start,
                low,
                "stored offset is below the log start (retention): resuming at {low}"
            );
            start = low;
        }
        let end = high.min(start + budget.max(0));
        if end > start {
            budget -= end - start;
            targets.insert(partition, (start, end));
            tpl.add_partition_offset(topic, partition, Offset::Offset(start))?;
        }
    }
    let mut messages = Vec::new();
    if !targets.is_empty() {
        consumer.assign(&tpl)?;
        poll_until(&consumer, topic, &targets, &mut messages, timeout)?;
    }
    messages.sort_by_key(|m| (m.partition, m.offset));
    let ranges = targets
        .iter()
        .map(|(p, (start, end))| (*p, (*start, *end)))
        .collect();
    Ok(Drained {
        topic: topic.to_owned(),
        messages,
        ranges,
        consumer: Some(consumer),
    })
}

fn partitions(consumer: &BaseConsumer, brokers: &str, topic: &str) -> Result<Vec<i32>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .with_context(|| format!("Kafka at {brokers} is unreachable"))?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        bail!("topic {topic} does not exist at {brokers}: run `dwh migrate`");
    };
    if found.error().is_some() || found.partitions().is_empty() {
        bail!("topic {topic} does not exist at {brokers}: run `dwh migrate`");
    }
    Ok(found.partitions().iter().map(|p| p.id()).collect())
}

fn poll_until(
    consumer: &BaseConsumer,
    topic: &str,
    targets: &BTreeMap<i32, (i64, i64)>,
    out: &mut Vec<Polled>,
    timeout: Duration,
) -> Result<()> {
    let mut next: BTreeMap<i32, i64> = targets.iter().map(|(p, (s, _))| (*p, *s)).collect();
    let mut last_progress = Instant::now();
    let done = |next: &BTreeMap<i32, i64>| targets.iter().all(|(p, (_, end))| next[p] >= *end);
    while !done(&next) {
        if last_progress.elapsed() > timeout {
            bail!("Kafka did not deliver {topic} up to the offsets it reported within {timeout:?}");
        }
        let Some(result) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = result.with_context(|| format!("consuming {topic}"))?;
        let partition = message.partition();
        let Some((_, end)) = targets.get(&partition) else {
            continue;
        };
        if message.offset() >= *end || message.offset() < next[&partition] {
            continue;
        }
        out.push(Polled {
            partition,
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        });
        next.insert(partition, message.offset() + 1);
        last_progress = Instant::now();
    }
    Ok(())
}

/// A producer tuned for micro-batches: large queue, small linger, every replica acknowledges.
pub fn producer(brokers: &str) -> Result<FutureProducer> {
    base_config(brokers)
        .set("acks", "all")
        .set("linger.ms", "10")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "60000")
        .create()
        .with_context(|| format!("creating a Kafka producer for {brokers}"))
}

/// Send every `(key, value)` to `topic` and wait until the broker acknowledged all of them.
pub async fn publish(
    producer: &FutureProducer,
    topic: &str,
    records: &[(String, String)],
) -> Result<()> {
    let deliveries: Vec<_> = records
        .iter()
        .map(|(key, value)| {
            let record = FutureRecord::to(topic)
                .key(key.as_str())
                .payload(value.as_str());
            producer.send_result(record).map_err(|(e, _)| e)
        })
        .collect::<Result<_, KafkaError>>()
        .with_context(|| format!("queueing messages for {topic}"))?;
    for delivery in deliveries {
        delivery
            .await
            .context("the producer was dropped")?
            .map_err(|(e, _)| e)
            .with_context(|| format!("publishing to {topic}"))?;
    }
    Ok(())
}

/// Flush whatever the producer still holds.
pub fn flush(producer: &FutureProducer) -> Result<()> {
    producer
        .flush(Duration::from_secs(30))
        .context("flushing the Kafka producer")
}

/// Create `topics` with `partitions` partitions; existing topics are left as they are.
pub async fn create_topics(brokers: &str, topics: &[&str], partitions: i32) -> Result<Vec<String>> {
    let admin: AdminClient<DefaultClientContext> = base_config(brokers)
        .create()
        .with_context(|| format!("creating a Kafka admin client for {brokers}"))?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT));
    let results = admin
        .create_topics(&new, &options)
        .await
        .with_context(|| format!("Kafka at {brokers} is unreachable"))?;
    let mut created = Vec::new();
    for result in results {
        match result {
            Ok(topic) => created.push(topic),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => bail!("creating topic {topic} at {brokers}: {code}"),
        }
    }
    Ok(created)
}
