//! Kafka: draining a topic from the offsets stored in PostgreSQL, publishing, creating topics.
//!
//! A job never subscribes: it assigns itself every partition at the offset PostgreSQL holds for it
//! and reads up to the high watermark it saw when it started (or up to its bound). PostgreSQL is
//! the source of truth for offsets; the group offsets committed to Kafka are for monitoring only.
//! Reading metadata, offsets and messages, and creating topics, are retried while the brokers are
//! away (see [`crate::retry`]): each attempt is a new client, so nothing of a failed one is
//! reused. A broker that refuses the client (SASL, a certificate) is not away: the metadata
//! lookup says so at once.
//!
//! One file per job: [`drain`] (what to read and reading it), [`producer`] (publishing),
//! [`topics`] (creating them), [`offsets`] (the log's watermarks and the consumer group's
//! offsets, for monitoring), `metadata` (the partitions of a topic, and telling a broker that
//! refuses the client from one that is away) and [`security`] (TLS and SASL settings).

use crate::error::Result;
use rdkafka::ClientConfig;

use crate::config::Kafka;

pub mod drain;
mod metadata;
pub mod offsets;
pub mod producer;
pub mod security;
pub mod topics;

pub use drain::{drain, AheadOfLog, DrainPlan, Drained, Gap, Polled};
pub use metadata::topic_partitions;
pub use offsets::{commit_group, group, group_offsets, watermarks};
pub use producer::{flush, producer, send, Sending, TooLarge, MAX_PUBLISHED_BYTES};
pub use security::security_properties;
pub use topics::create_topics;

/// The settings every client starts from: the brokers, a socket timeout, and TLS/SASL.
fn base_config(kafka: &Kafka) -> Result<ClientConfig> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("socket.timeout.ms", "10000")
        .set("log_level", "3");
    for (key, value) in security_properties(kafka)? {
        config.set(key, value);
    }
    Ok(config)
}
