//! Publishing: an idempotent producer, messages handed to it without waiting, and their acks.

use std::fmt;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use super::base_config;
use crate::config::Kafka;
use crate::error::{Context, Error, Result};
use crate::retry;

/// The largest message a job publishes, in bytes. An enriched STG order carries its payload (up
/// to `model::MAX_ORDER_BYTES`), a category per line and the user's and restaurant's names (each
/// document up to `model::MAX_DOCUMENT_BYTES`): about 3.3 MiB at worst, past librdkafka's default
/// of 1,000,000 bytes. Topics must take it too: [`super::create_topics`] sets Kafka's
/// `max.message.bytes` (the broker's default is 1 MiB). A topic made elsewhere with a smaller
/// limit refuses such a message: the run stops with [`TooLarge`], naming it and the fix.
pub const MAX_PUBLISHED_BYTES: usize = 5 << 20;

/// A producer tuned for micro-batches: large queue, small linger, every in-sync replica
/// acknowledges, and idempotent, so a retry after a leader failover writes nothing twice.
pub fn producer(kafka: &Kafka) -> Result<FutureProducer> {
    let brokers = &kafka.brokers;
    base_config(kafka)?
        .set("acks", "all")
        .set("enable.idempotence", "true")
        // Unkeyed messages (the order service's) go to a random partition each, not in runs.
        .set("sticky.partitioning.linger.ms", "0")
        .set("linger.ms", "10")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        // How long a message may wait for a broker that is away: the retry bound, at least 10 s.
        .set("message.timeout.ms", message_timeout_ms().to_string())
        .set("message.max.bytes", MAX_PUBLISHED_BYTES.to_string())
        .create()
        .with_context(|| format!("creating a Kafka producer for {brokers}"))
}

fn message_timeout_ms() -> u64 {
    retry::policy().max_secs.max(10) * 1000
}

/// Messages handed to the producer whose acknowledgements are still to come.
pub struct Sending {
    topic: String,
    /// Each message's key and size, with its delivery.
    deliveries: Vec<(String, usize, DeliveryFuture)>,
}

/// The broker (or the producer) refused a message as larger than the topic takes. Not retried:
/// the same message would be refused again. Its batch stays unpublished (its outbox rows, or its
/// rebuild row, are kept), so nothing is lost: the next run sends it again.
#[derive(Debug)]
pub struct TooLarge {
    pub topic: String,
    pub key: String,
    pub bytes: usize,
}

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Room for the record's overhead, rounded up to a whole KiB.
        let needed = (self.bytes + 1024).div_ceil(1024) * 1024;
        write!(
            f,
            "the message keyed {key} ({bytes} bytes) is larger than topic {topic} takes \
             (its max.message.bytes); its batch stays unpublished, nothing is lost. Raise the \
             topic's limit, e.g. `kafka-configs.sh --bootstrap-server … --alter --entity-type \
             topics --entity-name {topic} --add-config max.message.bytes={needed}`, and run \
             again",
            key = self.key,
            bytes = self.bytes,
            topic = self.topic,
        )?;
        if self.bytes > MAX_PUBLISHED_BYTES {
            write!(f, " (dwh publishes at most {MAX_PUBLISHED_BYTES} bytes)")?;
        }
        Ok(())
    }
}

impl std::error::Error for TooLarge {}

fn too_large(error: &KafkaError) -> bool {
    error.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge)
}

/// Hand every `(key, value)` to the producer for `topic` without waiting for the broker: what
/// the caller does next overlaps with the sending. [`Sending::acknowledged`] waits for the acks.
pub fn send(
    producer: &FutureProducer,
    topic: &str,
    records: &[(String, String)],
) -> Result<Sending> {
    let mut deliveries = Vec::with_capacity(records.len());
    for (key, value) in records {
        let record = FutureRecord::to(topic)
            .key(key.as_str())
            .payload(value.as_str());
        let bytes = key.len() + value.len();
        match producer.send_result(record) {
            Ok(delivery) => deliveries.push((key.clone(), bytes, delivery)),
            Err((e, _)) if too_large(&e) => {
                return Err(TooLarge {
                    topic: topic.to_owned(),
                    key: key.clone(),
                    bytes,
                }
                .into())
            }
            Err((e, _)) => {
                return Err(e).with_context(|| format!("queueing messages for {topic}"));
            }
        }
    }
    Ok(Sending {
        topic: topic.to_owned(),
        deliveries,
    })
}

impl Sending {
    /// Wait until the broker acknowledged every message; the first failure is the error.
    pub async fn acknowledged(self) -> Result<()> {
        let topic = &self.topic;
        for (key, bytes, delivery) in self.deliveries {
            let Ok(delivery) = delivery.await else {
                return Err(Error::invalid(
                    "the producer was dropped before it delivered",
                ));
            };
            match delivery {
                Ok(_) => {}
                Err((e, _)) if too_large(&e) => {
                    return Err(TooLarge {
                        topic: topic.clone(),
                        key,
                        bytes,
                    }
                    .into())
                }
                Err((e, _)) => return Err(e).with_context(|| format!("publishing to {topic}")),
            }
        }
        Ok(())
    }
}

/// Flush whatever the producer still holds.
pub fn flush(producer: &FutureProducer) -> Result<()> {
    producer
        .flush(Duration::from_secs(30))
        .context("flushing the Kafka producer")
}
