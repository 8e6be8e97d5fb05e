//! Offsets Kafka holds: each partition's watermarks (what the log keeps) and the consumer group's
//! committed offsets (monitoring only: PostgreSQL holds the offsets a job resumes from).

use std::collections::BTreeMap;

use crate::error::{Context, Result};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::base_config;
use super::metadata::{metadata_timeout, partitions, watched};
use crate::config::Kafka;
use crate::retry::{self, Service};

/// The low and high watermark of every partition of `topic` (partition → (low, high)): what the
/// broker holds. Monitoring (`dwh status`, metrics) compares them with the offsets PostgreSQL stores.
pub async fn watermarks(kafka: &Kafka, topic: &str) -> Result<BTreeMap<i32, (i64, i64)>> {
    retry::run(Service::Kafka, async || watermarks_once(kafka, topic).await).await
}

async fn watermarks_once(kafka: &Kafka, topic: &str) -> Result<BTreeMap<i32, (i64, i64)>> {
    let (kafka, topic) = (kafka.clone(), topic.to_owned());
    let timeout = metadata_timeout();
    tokio::task::spawn_blocking(move || {
        let brokers = &kafka.brokers;
        // The end a job can read to: the last stable offset, as its drain sees it.
        let consumer = watched(
            base_config(&kafka)?.set("isolation.level", "read_committed"),
            &kafka,
        )?;
        partitions(&consumer, brokers, &topic, timeout)?
            .into_iter()
            .map(|partition| {
                let marks = consumer
                    .fetch_watermarks(&topic, partition, timeout)
                    .with_context(|| {
                        format!("reading offsets of {topic}/{partition} at {brokers}")
                    })?;
                Ok((partition, marks))
            })
            .collect()
    })
    .await
    .context("watermark thread failed")?
}

/// The consumer group a job commits its offsets to, for monitoring (`kafka-consumer-groups
/// --describe --group dwh-stg` shows its lag).
pub fn group(job: &str) -> String {
    format!("dwh-{job}")
}

/// The offsets `group` committed in `topic` (partition → next offset), as Kafka's own tooling
/// shows them; partitions without a commit are left out.
pub async fn group_offsets(kafka: &Kafka, group: &str, topic: &str) -> Result<BTreeMap<i32, i64>> {
    let (kafka, group, topic) = (kafka.clone(), group.to_owned(), topic.to_owned());
    let timeout = metadata_timeout();
    tokio::task::spawn_blocking(move || {
        let brokers = &kafka.brokers;
        let consumer = watched(base_config(&kafka)?.set("group.id", &group), &kafka)?;
        let mut tpl = TopicPartitionList::new();
        for partition in partitions(&consumer, brokers, &topic, timeout)? {
            tpl.add_partition(&topic, partition);
        }
        let committed = consumer
            .committed_offsets(tpl, timeout)
            .with_context(|| format!("reading the offsets of group {group} at {brokers}"))?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| Some((e.partition(), e.offset().to_raw().filter(|o| *o >= 0)?)))
            .collect())
    })
    .await
    .context("group offsets thread failed")?
}

/// Commit `offsets` (partition → next offset) of `topic` for `group`: monitoring only.
pub async fn commit_group(
    kafka: &Kafka,
    group: &str,
    topic: &str,
    offsets: &BTreeMap<i32, i64>,
) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    for (partition, next) in offsets {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))
            .context("listing the offsets to commit")?;
    }
    let (kafka, group) = (kafka.clone(), group.to_owned());
    tokio::task::spawn_blocking(move || {
        let brokers = &kafka.brokers;
        let consumer: BaseConsumer = base_config(&kafka)?
            .set("group.id", &group)
            .create()
            .with_context(|| format!("creating a Kafka consumer for {brokers}"))?;
        consumer
            .commit(&tpl, CommitMode::Sync)
            .with_context(|| format!("committing the offsets of group {group} at {brokers}"))
    })
    .await
    .context("group commit thread failed")?
}
