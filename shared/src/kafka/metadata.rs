//! Metadata: the partitions of a topic, read by a client whose context hears a broker refuse it
//! (SASL, a certificate), so a refusal ends the wait at once instead of looking like an outage.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::error::{bail, Context, Result};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;
use rdkafka::ClientConfig;

use super::base_config;
use crate::config::Kafka;
use crate::retry::{self, KafkaRefusal, KafkaRefusalKind, Refused, Service};

pub(super) const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// The context of the clients that look up metadata: it keeps the first report of librdkafka's
/// error callback that a broker refused the client ([`retry::kafka_refusal`]: SASL, TLS), the only
/// place librdkafka says so, for [`metadata`] to end its wait with.
pub(super) struct Watch {
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
pub(super) fn watched(config: &ClientConfig, kafka: &Kafka) -> Result<BaseConsumer<Watch>> {
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
pub(super) fn metadata_timeout() -> Duration {
    retry::attempt_timeout(METADATA_TIMEOUT)
}

/// Whether the brokers let this client in: a metadata lookup that ends at once on a refusal.
pub(super) async fn admitted(kafka: &Kafka) -> Result<()> {
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

/// The partitions of `topic` as `consumer` sees them; an error saying to run `dwh migrate` when
/// the topic does not exist.
pub(super) fn partitions(
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
