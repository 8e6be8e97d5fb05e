//! Creating topics (`dwh migrate`), and waiting until every broker shows them.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use super::base_config;
use super::metadata::{admitted, metadata_timeout, partitions, watched, METADATA_TIMEOUT};
use super::MAX_PUBLISHED_BYTES;
use crate::config::Kafka;
use crate::error::{bail, Cause, Context, Result};
use crate::retry::{self, Service};

/// Create `topics` with `partitions` partitions and `replicas` copies of each (`None`: the
/// cluster's `default.replication.factor`), taking messages up to [`MAX_PUBLISHED_BYTES`];
/// existing topics are left as they are.
pub async fn create_topics(
    kafka: &Kafka,
    topics: &[&str],
    partitions: i32,
    replicas: Option<i32>,
) -> Result<Vec<String>> {
    retry::run(Service::Kafka, async || {
        create_topics_once(kafka, topics, partitions, replicas).await
    })
    .await
}

async fn create_topics_once(
    kafka: &Kafka,
    topics: &[&str],
    partitions: i32,
    replicas: Option<i32>,
) -> Result<Vec<String>> {
    // The admin client's wait for the controller just times out on a broker that refuses it.
    admitted(kafka).await?;
    let brokers = &kafka.brokers;
    let admin: AdminClient<DefaultClientContext> = base_config(kafka)?
        .create()
        .with_context(|| format!("creating a Kafka admin client for {brokers}"))?;
    let max_bytes = MAX_PUBLISHED_BYTES.to_string();
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| {
            // -1: the broker's default (CreateTopics v4, Kafka 2.4 and later).
            NewTopic::new(
                t,
                partitions,
                TopicReplication::Fixed(replicas.unwrap_or(-1)),
            )
            .set("max.message.bytes", &max_bytes)
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(metadata_timeout()));
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
    visible(kafka, &created).await?;
    Ok(created)
}

/// Wait until every broker asked knows `topics`: the controller made them, and the others' metadata
/// learns of them a moment later (on a cluster of several nodes, the next request may go to one
/// that does not yet).
async fn visible(kafka: &Kafka, topics: &[String]) -> Result<()> {
    let (kafka, topics) = (kafka.clone(), topics.to_vec());
    let timeout = metadata_timeout();
    tokio::task::spawn_blocking(move || {
        let brokers = &kafka.brokers;
        let consumer = watched(&base_config(&kafka)?, &kafka)?;
        let deadline = Instant::now() + METADATA_TIMEOUT;
        for topic in &topics {
            while let Err(error) = partitions(&consumer, brokers, topic, timeout) {
                if Instant::now() >= deadline {
                    return Err(error.within(format!(
                        "topic {topic} was created but the brokers do not show it within \
                         {METADATA_TIMEOUT:?}"
                    )));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    })
    .await
    .context("metadata thread failed")?
}
