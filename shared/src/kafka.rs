//! Kafka: draining a topic from the offsets stored in PostgreSQL, publishing, creating topics.
//!
//! A job never subscribes: it assigns itself every partition at the offset PostgreSQL holds for it
//! and reads up to the high watermark it saw when it started (or up to its bound). PostgreSQL is
//! the source of truth for offsets; the group offsets committed to Kafka are for monitoring only.
//! Reading metadata, offsets and messages, and creating topics, are retried while the brokers are
//! away (see [`retry`]): each attempt is a new client, so nothing of a failed one is reused. A
//! broker that refuses the client (SASL, a certificate) is not away: [`metadata`] says so at once.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::metadata::Metadata;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::config::Kafka;
use crate::retry::{self, KafkaRefusal, KafkaRefusalKind, NotReady, Refused, Service};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest message a job publishes, in bytes. An enriched STG order carries its payload (up
/// to `model::MAX_ORDER_BYTES`), a category per line and the user's and restaurant's names (each
/// document up to `model::MAX_DOCUMENT_BYTES`): about 3.3 MiB at worst, past librdkafka's default
/// of 1,000,000 bytes. Topics must take it too: [`create_topics`] sets Kafka's
/// `max.message.bytes` (the broker's default is 1 MiB). A topic made elsewhere with a smaller
/// limit refuses such a message: the run stops with [`TooLarge`], naming it and the fix.
pub const MAX_PUBLISHED_BYTES: usize = 5 << 20;

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

/// The librdkafka properties for TLS and SASL. Certificates are verified (chain and host name,
/// librdkafka's defaults) against the CA file, or the system's CAs without one.
pub fn security_properties(kafka: &Kafka) -> Result<Vec<(&'static str, String)>> {
    let protocol = kafka.security_protocol.to_ascii_lowercase();
    let mut props = vec![("security.protocol", protocol.clone())];
    if protocol.starts_with("sasl_") {
        let (Some(mechanism), Some(username), Some(password)) = (
            &kafka.sasl_mechanism,
            &kafka.sasl_username,
            &kafka.sasl_password,
        ) else {
            bail!(
                "Kafka security protocol {protocol} needs a SASL mechanism, user name and \
                 password (DWH_KAFKA_SASL_MECHANISM, DWH_KAFKA_SASL_USERNAME, \
                 DWH_KAFKA_SASL_PASSWORD)"
            );
        };
        props.push(("sasl.mechanism", mechanism.to_ascii_uppercase()));
        props.push(("sasl.username", username.clone()));
        props.push(("sasl.password", password.clone()));
    } else if kafka.sasl_mechanism.is_some() || kafka.sasl_username.is_some() {
        bail!(
            "Kafka SASL settings need security protocol sasl_ssl or sasl_plaintext, not {protocol}"
        );
    }
    if let Some(ca) = &kafka.ca_file {
        if !protocol.ends_with("ssl") {
            bail!("a Kafka CA file needs security protocol ssl or sasl_ssl, not {protocol}");
        }
        props.push(("ssl.ca.location", ca.display().to_string()));
    }
    if protocol.ends_with("ssl") {
        props.push(("enable.ssl.certificate.verification", "true".to_owned()));
        props.push(("ssl.endpoint.identification.algorithm", "https".to_owned()));
    }
    Ok(props)
}

/// The context of the clients that look up metadata: it keeps the first report of librdkafka's
/// error callback that a broker refused the client ([`retry::kafka_refusal`]: SASL, TLS), the only
/// place librdkafka says so, for [`metadata`] to end its wait with.
struct Watch {
    kafka: Kafka,
    refusal: Mutex<Option<KafkaRefusal>>,
}

impl Watch {
    fn new(kafka: &Kafka) -> Watch {
        Watch {
            kafka: kafka.clone(),
            refusal: Mutex::new(None),
        }
    }

    fn refusal(&self) -> Option<KafkaRefusal> {
        self.refusal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ClientContext for Watch {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(target: "librdkafka", "{error}: {reason}");
        let refusal = error
            .rdkafka_error_code()
            .and_then(|code| retry::kafka_refusal(code, reason));
        if let Some(refusal) = refusal {
            let mut kept = self.refusal.lock().unwrap_or_else(PoisonError::into_inner);
            kept.get_or_insert(refusal);
        }
    }
}

impl ConsumerContext for Watch {}

/// A consumer for metadata and offsets whose context hears refusals (see [`metadata`]).
fn watched(config: &ClientConfig, kafka: &Kafka) -> Result<BaseConsumer<Watch>> {
    let brokers = &kafka.brokers;
    config
        .create_with_context(Watch::new(kafka))
        .with_context(|| format!("creating a Kafka client for {brokers}"))
}

/// The first wait of [`metadata`]; each next one is twice as long.
const FIRST_WAIT: Duration = Duration::from_millis(250);

/// Metadata of `topic` (of every topic with `None`). librdkafka waits for a usable broker until
/// its timeout and then says only that there was none, also when a broker refused the client
/// (wrong password, a certificate that does not verify): so this waits in slices, doubling from
/// 250 ms up to `timeout` in all (see [`metadata_timeout`]), serving the client's events in
/// between, and a refusal its context heard ends the wait at once as [`Refused`], never retried.
fn metadata(
    consumer: &BaseConsumer<Watch>,
    topic: Option<&str>,
    timeout: Duration,
) -> Result<Metadata> {
    let watch = consumer.context();
    let deadline = Instant::now() + timeout;
    let mut wait = FIRST_WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let error = match consumer.fetch_metadata(topic, wait.min(left)) {
            Ok(metadata) => return Ok(metadata),
            Err(error) => error,
        };
        // Events are served by polling: errors reach the context, log lines the log.
        for _ in 0..100 {
            let _ = consumer.poll(Duration::ZERO);
        }
        if let Some(refusal) = watch.refusal() {
            return Err(refused(&watch.kafka, refusal).into());
        }
        if wait >= left {
            let brokers = &watch.kafka.brokers;
            return Err(error).with_context(|| format!("Kafka at {brokers} is unreachable"));
        }
        wait *= 2;
    }
}

/// How long one wait for metadata or offsets may take: [`METADATA_TIMEOUT`], or what is left of
/// the retry bound when that is less ([`retry::attempt_timeout`]; asked before the blocking
/// thread starts).
fn metadata_timeout() -> Duration {
    retry::attempt_timeout(METADATA_TIMEOUT)
}

/// Whether the brokers let this client in: a metadata lookup that ends at once on a refusal.
async fn admitted(kafka: &Kafka) -> Result<()> {
    let kafka = kafka.clone();
    let timeout = metadata_timeout();
    tokio::task::spawn_blocking(move || {
        metadata(&watched(&base_config(&kafka)?, &kafka)?, None, timeout)
    })
    .await
    .context("metadata thread failed")?
    .map(drop)
}

/// The one line a refusal ends the run with: what failed, at which broker. For a certificate,
/// whether no trusted CA signed it or it names other hosts ([`verify_error`]: librdkafka says
/// "certificate verify failed" for both).
fn refused(kafka: &Kafka, refusal: KafkaRefusal) -> Refused {
    let broker = refusal.broker.unwrap_or_else(|| kafka.brokers.clone());
    let detail = refusal.detail;
    let what = match refusal.kind {
        KafkaRefusalKind::Sasl => format!(
            "SASL authentication failed for user {}: {}",
            kafka.sasl_username.as_deref().unwrap_or_default(),
            detail.trim_start_matches("SASL authentication error: ")
        ),
        KafkaRefusalKind::Certificate => match verify_error(kafka, &broker) {
            Some(VerifyError::Mismatch { host, why }) => {
                format!("host name mismatch: the broker's certificate does not name {host} ({why})")
            }
            Some(VerifyError::Untrusted { why }) => {
                let trusted = match &kafka.ca_file {
                    Some(ca) => format!("the CA file {}", ca.display()),
                    None => "the system's CAs".to_owned(),
                };
                format!("certificate not trusted: {why}, checked against {trusted}")
            }
            None => format!("certificate not trusted: {detail}"),
        },
        KafkaRefusalKind::Tls => format!("TLS handshake failed: {detail}"),
    };
    Refused {
        service: Service::Kafka,
        reason: format!("Kafka at {broker}: {what}"),
    }
}

/// Why a broker's certificate does not verify.
#[derive(Debug, PartialEq, Eq)]
enum VerifyError {
    /// It does not name the host connected to.
    Mismatch { host: String, why: String },
    /// No trusted CA signed it (or it expired, or …).
    Untrusted { why: String },
}

/// OpenSSL's verify results for a certificate that names other hosts (x509_vfy.h).
const X509_V_ERR_HOSTNAME_MISMATCH: i32 = 62;
const X509_V_ERR_IP_ADDRESS_MISMATCH: i32 = 64;

/// Why the certificate of the broker at `address` (`host:port`) does not verify, asked with
/// OpenSSL directly, trusting what librdkafka trusts (the CA file alone, else the system's CAs)
/// and checking the host name as it does. `None` when that handshake verifies or cannot be made.
fn verify_error(kafka: &Kafka, address: &str) -> Option<VerifyError> {
    use openssl::ssl::{HandshakeError, SslConnector, SslMethod};
    use openssl::x509::{store::X509StoreBuilder, X509VerifyResult, X509};
    use std::net::{TcpStream, ToSocketAddrs};

    const TIMEOUT: Duration = Duration::from_secs(5);
    let (host, _) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let socket = address.to_socket_addrs().ok()?.next()?;
    let stream = TcpStream::connect_timeout(&socket, TIMEOUT).ok()?;
    stream.set_read_timeout(Some(TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(TIMEOUT)).ok()?;
    let mut builder = SslConnector::builder(SslMethod::tls_client()).ok()?;
    if let Some(ca) = &kafka.ca_file {
        let mut store = X509StoreBuilder::new().ok()?;
        for cert in X509::stack_from_pem(&std::fs::read(ca).ok()?).ok()? {
            store.add_cert(cert).ok()?;
        }
        builder.set_cert_store(store.build());
    }
    let connector = builder.build();
    let Err(HandshakeError::Failure(failed)) = connector.configure().ok()?.connect(host, stream)
    else {
        return None;
    };
    let result = failed.ssl().verify_result();
    if result == X509VerifyResult::OK {
        return None;
    }
    let why = format!("certificate verify failed: {}", result.error_string());
    if [X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH].contains(&result.as_raw()) {
        Some(VerifyError::Mismatch {
            host: host.to_owned(),
            why,
        })
    } else {
        Some(VerifyError::Untrusted { why })
    }
}

/// The partitions of `topic`, or an error saying to run `dwh migrate` when it does not exist.
pub async fn topic_partitions(kafka: &Kafka, topic: &str) -> Result<Vec<i32>> {
    retry::run(Service::Kafka, async || {
        let (kafka, topic) = (kafka.clone(), topic.to_owned());
        let timeout = metadata_timeout();
        tokio::task::spawn_blocking(move || {
            let consumer = watched(&base_config(&kafka)?, &kafka)?;
            partitions(&consumer, &kafka.brokers, &topic, timeout)
        })
        .await
        .context("metadata thread failed")?
    })
    .await
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
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*start))?;
        }
        consumer.assign(&tpl)?;
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
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
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

fn partitions(
    consumer: &BaseConsumer<Watch>,
    brokers: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>> {
    let metadata = metadata(consumer, Some(topic), timeout)?;
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
/// the same message would be refused again. It stays in the outbox, so nothing is lost.
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
             (its max.message.bytes); it stays in the outbox, nothing is lost. Raise the \
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
            match delivery.await.context("the producer was dropped")? {
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
                    return Err(error.context(format!(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(protocol: &str) -> Kafka {
        Kafka {
            brokers: "127.0.0.1:1".to_owned(),
            security_protocol: protocol.to_owned(),
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ca_file: None,
        }
    }

    /// A self-signed CA certificate in PEM, written to a temp file librdkafka can load.
    fn ca_file() -> std::path::PathBuf {
        use openssl::{asn1::Asn1Time, ec, hash::MessageDigest, nid::Nid, pkey::PKey, x509};
        let group = ec::EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(ec::EcKey::generate(&group).unwrap()).unwrap();
        let mut name = x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "dwh test CA").unwrap();
        let name = name.build();
        let mut cert = x509::X509Builder::new().unwrap();
        cert.set_version(2).unwrap();
        cert.set_subject_name(&name).unwrap();
        cert.set_issuer_name(&name).unwrap();
        cert.set_pubkey(&key).unwrap();
        cert.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        cert.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        cert.sign(&key, MessageDigest::sha256()).unwrap();
        let path = std::env::temp_dir().join(format!("dwh-kafka-ca-{}.pem", std::process::id()));
        std::fs::write(&path, cert.build().to_pem().unwrap()).unwrap();
        path
    }

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

    #[test]
    fn plaintext_sets_only_the_protocol() {
        let props = security_properties(&settings("plaintext")).unwrap();
        assert_eq!(props, vec![("security.protocol", "plaintext".to_owned())]);
    }

    #[test]
    fn sasl_ssl_with_scram_and_a_ca_sets_what_librdkafka_needs_and_it_accepts_them() {
        let ca = ca_file();
        let mut kafka = settings("SASL_SSL");
        kafka.sasl_mechanism = Some("scram-sha-512".to_owned());
        kafka.sasl_username = Some("dwh".to_owned());
        kafka.sasl_password = Some("s3cret".to_owned());
        kafka.ca_file = Some(ca.clone());
        let props = security_properties(&kafka).unwrap();
        let expected = [
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "dwh"),
            ("sasl.password", "s3cret"),
            ("ssl.ca.location", ca.to_str().unwrap()),
            ("enable.ssl.certificate.verification", "true"),
            ("ssl.endpoint.identification.algorithm", "https"),
        ];
        let expected: Vec<(&str, String)> =
            expected.iter().map(|(k, v)| (*k, v.to_string())).collect();
        assert_eq!(props, expected);
        // librdkafka checks the properties (and loads the CA) when the client is created: this
        // fails when it was built without OpenSSL or SASL SCRAM.
        let _producer =
            producer(&kafka).expect("librdkafka accepts SASL_SSL with SCRAM-SHA-512 and a CA");
        kafka.ca_file = Some(ca.with_extension("missing"));
        let error = producer(&kafka).err().expect("a missing CA file fails");
        assert!(
            format!("{error:#}").contains("ssl.ca.location"),
            "{error:#}"
        );
        std::fs::remove_file(ca).unwrap();
    }

    #[test]
    fn incomplete_or_contradictory_settings_are_refused() {
        let mut kafka = settings("sasl_ssl");
        kafka.sasl_mechanism = Some("PLAIN".to_owned());
        let error = security_properties(&kafka).unwrap_err().to_string();
        assert!(error.contains("DWH_KAFKA_SASL_PASSWORD"), "{error}");
        let mut kafka = settings("plaintext");
        kafka.sasl_username = Some("dwh".to_owned());
        assert!(security_properties(&kafka).is_err());
        let mut kafka = settings("sasl_plaintext");
        kafka.ca_file = Some("/ca.pem".into());
        assert!(security_properties(&kafka).is_err());
    }
}
