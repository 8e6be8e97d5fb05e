//! Riding out a service that is briefly away, and naming the one that stays away.
//!
//! [`run`] repeats a step whose error is transient — the service refused or dropped the
//! connection, timed out, or is starting up — with bounded exponential backoff (backon's
//! `ExponentialBuilder`: 250 ms doubling up to 10 s, with jitter), for at most `--retry-max-secs`
//! and `--retries` ([`crate::config::Retry`], set once per process by [`configure`]). The bound
//! is the bound: no single attempt waits longer for its service than what is left of it
//! ([`attempt_timeout`], which the steps ask for their connect and metadata timeouts). Any other
//! error — a wrong password, a certificate that does not verify, a missing topic — ends the step at
//! once. Only steps that are safe to repeat go through it: connecting, reading Kafka and Redis,
//! creating topics. A statement of the load transaction never does: a failed transaction ends the
//! run, and the next run loads the same batch again (the batch protocol makes that idempotent).
//!
//! [`name_service`] puts the service and its masked address in front of an error that does not
//! name it yet, so a run that ends on an outage says in one line what was away.
//!
//! A service that answers and refuses the run is [`Refused`]: never retried. Kafka says why only
//! to librdkafka's error callback (a call waiting for a broker just times out, as in an outage);
//! [`kafka_refusal`] reads those reports: SASL authentication failed, a certificate that did not
//! verify, a TLS handshake that failed.

use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use redis::{ErrorKind, RedisError, ServerErrorKind};
use tokio_postgres::error::SqlState;

use crate::config::{Kafka, Postgres, Redis, Retry};
use crate::{chain_line, error_line, mask_url, Error};

const FIRST_DELAY: Duration = Duration::from_millis(250);
const LONGEST_DELAY: Duration = Duration::from_secs(10);
/// Not worth another attempt when less than this is left of the bound.
const MIN_LAST_DELAY: Duration = Duration::from_millis(50);
/// The least an attempt may wait for its service, also when the bound is (nearly) spent: the
/// last attempt starts at the bound's end and must still be able to succeed.
pub const SHORTEST_ATTEMPT: Duration = Duration::from_secs(1);

static POLICY: OnceLock<Retry> = OnceLock::new();

tokio::task_local! {
    /// When the bound of the step in hand ends, set by [`Retry::run`] around each attempt.
    static BOUND_ENDS: Instant;
}

/// How long one attempt may wait for its service: `natural` (the client's own timeout), or what
/// is left of the retry bound when that is less, but at least [`SHORTEST_ATTEMPT`] (so
/// `--retry-max-secs 0`, one attempt, waits that long). Inside [`run`] the bound is the step's;
/// elsewhere it counts from now.
///
/// Call it in the step's async code: a step that waits on a blocking thread computes its timeout
/// before it spawns the thread.
pub fn attempt_timeout(natural: Duration) -> Duration {
    let ends = BOUND_ENDS
        .try_with(|ends| *ends)
        .unwrap_or_else(|_| Instant::now() + Duration::from_secs(policy().max_secs));
    let left = ends.saturating_duration_since(Instant::now());
    natural.min(left.max(SHORTEST_ATTEMPT))
}

/// Set this process's retry bounds (the binary does, from its flags); the first call wins.
pub fn configure(retry: &Retry) {
    let _ = POLICY.set(retry.clone());
}

/// This process's retry bounds: what [`configure`] set, else the defaults.
pub fn policy() -> Retry {
    POLICY.get().cloned().unwrap_or_default()
}

/// The services a run depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Postgres,
    Redis,
    Kafka,
}

impl Service {
    /// The name a user knows the service by.
    pub fn name(self) -> &'static str {
        match self {
            Service::Postgres => "PostgreSQL",
            Service::Redis => "Redis",
            Service::Kafka => "Kafka",
        }
    }
}

/// A service that answers but cannot serve the run yet (Redis empty after a restart, Kafka not
/// delivering what it reported): retried like an outage.
#[derive(Debug)]
pub struct NotReady {
    pub service: Service,
    pub reason: String,
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for NotReady {}

/// A service that answered and refused the run — wrong credentials, a certificate that does not
/// verify: trying again cannot help, so it ends the step at once. The reason names the service
/// and where it is.
#[derive(Debug)]
pub struct Refused {
    pub service: Service,
    pub reason: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Refused {}

/// The last error of a step that was retried until a bound, with how long it was tried.
#[derive(Debug)]
struct GaveUp {
    attempts: usize,
    seconds: f64,
    last: anyhow::Error,
}

impl fmt::Display for GaveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.attempts == 1 { "" } else { "s" };
        write!(
            f,
            "{} (gave up after {} attempt{plural} in {:.1} s)",
            error_line(&self.last),
            self.attempts,
            self.seconds
        )
    }
}

impl std::error::Error for GaveUp {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.last.as_ref())
    }
}

/// An error a step may be retried on: the library's [`Error`], or an `anyhow::Error` of the
/// binary (its steps add context to the library's errors).
pub trait Failure: Sized {
    /// Which service failed, and whether trying again may help.
    fn diagnose(&self) -> Option<(Service, bool)>;
    /// The error on one line, for the log.
    fn line(&self) -> String;
    /// The error of a step that was tried `attempts` times over `seconds`, this the last.
    fn gave_up(self, attempts: usize, seconds: f64) -> Self;
}

impl Failure for Error {
    fn diagnose(&self) -> Option<(Service, bool)> {
        Error::diagnose(self)
    }

    fn line(&self) -> String {
        chain_line(self)
    }

    fn gave_up(self, attempts: usize, seconds: f64) -> Self {
        Error::GaveUp {
            attempts,
            seconds,
            last: Box::new(self),
        }
    }
}

impl Failure for anyhow::Error {
    fn diagnose(&self) -> Option<(Service, bool)> {
        diagnose(self)
    }

    fn line(&self) -> String {
        error_line(self)
    }

    fn gave_up(self, attempts: usize, seconds: f64) -> Self {
        GaveUp {
            attempts,
            seconds,
            last: self,
        }
        .into()
    }
}

/// Run `step`, which talks to `service`, with this process's bounds (see [`Retry::run`]).
pub async fn run<T, E: Failure>(
    service: Service,
    step: impl AsyncFnMut() -> Result<T, E>,
) -> Result<T, E> {
    policy().run(service, step).await
}

impl Retry {
    /// Run `step` until it succeeds, fails with an error that is not a passing outage of
    /// `service` (another service's error ends it too), or a bound is reached; the error then
    /// says how many attempts were made over how long.
    pub async fn run<T, E: Failure>(
        &self,
        service: Service,
        mut step: impl AsyncFnMut() -> Result<T, E>,
    ) -> Result<T, E> {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(self.max_secs);
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(FIRST_DELAY)
            .with_max_delay(LONGEST_DELAY)
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(self.retries)
            .build();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let error = match BOUND_ENDS.scope(deadline, step()).await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            if error.diagnose() != Some((service, true)) {
                return Err(error);
            }
            // The last wait is cut short so the last attempt still starts within the bound.
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(delay) = delays
                .next()
                .filter(|_| left >= MIN_LAST_DELAY)
                .map(|delay| delay.min(left))
            else {
                if self.max_secs == 0 || self.retries == 0 {
                    return Err(error);
                }
                let seconds = started.elapsed().as_secs_f64();
                return Err(error.gave_up(attempts, seconds));
            };
            tracing::info!(
                attempt = attempts,
                "{}; retrying in {:.1} s",
                error.line(),
                delay.as_secs_f64()
            );
            tokio::time::sleep(delay).await;
        }
    }
}

/// Which service an error came from, and whether trying again may help: the library's
/// [`Error`] the binary's context wraps says it ([`Error::diagnose`]).
pub fn diagnose(error: &anyhow::Error) -> Option<(Service, bool)> {
    diagnose_chain(error.as_ref())
}

/// [`diagnose`] of any error and its sources.
pub(crate) fn diagnose_chain(error: &(dyn std::error::Error + 'static)) -> Option<(Service, bool)> {
    let mut next = Some(error);
    while let Some(cause) = next {
        next = cause.source();
        if let Some(e) = cause.downcast_ref::<Error>() {
            return e.diagnose();
        }
        if let Some(found) = unwrapped(cause) {
            return Some(found);
        }
    }
    None
}

/// A service's error without the library's [`Error`] around it: the binary's own steps (the
/// jobs' loads, the commands) call the clients with anyhow.
fn unwrapped(cause: &(dyn std::error::Error + 'static)) -> Option<(Service, bool)> {
    if let Some(e) = cause.downcast_ref::<tokio_postgres::Error>() {
        return Some((Service::Postgres, postgres_transient(e)));
    }
    if let Some(e) = cause.downcast_ref::<RedisError>() {
        return Some((Service::Redis, redis_transient(e)));
    }
    if let Some(e) = cause.downcast_ref::<KafkaError>() {
        return Some((Service::Kafka, kafka_transient(e)));
    }
    if let Some(e) = cause.downcast_ref::<NotReady>() {
        return Some((e.service, true));
    }
    if let Some(e) = cause.downcast_ref::<Refused>() {
        return Some((e.service, false));
    }
    None
}

/// Whether trying again may help: the service was away, not wrong.
pub fn is_transient(error: &anyhow::Error) -> bool {
    diagnose(error).is_some_and(|(_, transient)| transient)
}

pub(crate) fn postgres_transient(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    if let Some(code) = error.code() {
        return [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::CONNECTION_EXCEPTION,
            SqlState::CONNECTION_FAILURE,
            SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
        ]
        .contains(code);
    }
    io_transient(error)
}

pub(crate) fn redis_transient(error: &RedisError) -> bool {
    error.is_connection_refusal()
        || error.is_connection_dropped()
        || error.is_timeout()
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ClusterDown
            )
        )
}

/// Whether a Kafka error is the cluster being away or moving (a leader election), not wrong.
pub fn kafka_transient(error: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        error.rdkafka_error_code(),
        Some(
            BrokerTransportFailure
                | AllBrokersDown
                | OperationTimedOut
                | TimedOutQueue
                | MessageTimedOut
                | RequestTimedOut
                | NetworkException
                | LeaderNotAvailable
                | NotLeaderForPartition
                | BrokerNotAvailable
                | CoordinatorLoadInProgress
                | CoordinatorNotAvailable
                | NotCoordinator
                // A broker that left the cluster's metadata while a request to it was pending.
                | DestroyBroker
        )
    )
}

/// What a broker refused a Kafka client for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaRefusalKind {
    /// SASL: wrong user name or password, or a mechanism the broker does not take.
    Sasl,
    /// The broker's certificate did not verify: no trusted CA signed it, or it names other hosts.
    Certificate,
    /// Another TLS failure: a protocol or cipher the broker does not speak, no certificate.
    Tls,
}

/// A refusal librdkafka reported through its error callback, as [`kafka_refusal`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRefusal {
    pub kind: KafkaRefusalKind,
    /// The broker that refused (`host:port`), when the report names it.
    pub broker: Option<String>,
    /// librdkafka's words without its broker prefix and its `(after 5ms in state …)` suffix.
    pub detail: String,
}

/// Whether an error librdkafka reported to its error callback (`code`, `reason`) says a broker
/// refused the client rather than being away, and what for. Such a report is the only place the
/// reason shows: the call that waited for a usable broker just times out.
///
/// `reason` reads like `sasl_ssl://127.0.0.1:9093/bootstrap: SASL authentication error:
/// Authentication failed … (after 9ms in state AUTH_REQ)`. A TLS error is a refusal unless it is
/// the connection failing under the handshake (`SSL transport error: …`, a passing outage);
/// librdkafka reports a disconnect during the handshake as a transport error, not as TLS.
pub fn kafka_refusal(code: RDKafkaErrorCode, reason: &str) -> Option<KafkaRefusal> {
    use RDKafkaErrorCode::*;
    let (broker, detail) = split_broker_report(reason);
    let kind = match code {
        Authentication | SaslAuthenticationFailed | UnsupportedSASLMechanism | IllegalSASLState => {
            KafkaRefusalKind::Sasl
        }
        SSL if detail.contains("SSL transport error") => return None,
        SSL if ["certificate verify failed", "verify broker certificate"]
            .iter()
            .any(|needle| detail.contains(needle)) =>
        {
            KafkaRefusalKind::Certificate
        }
        SSL => KafkaRefusalKind::Tls,
        _ => return None,
    };
    Some(KafkaRefusal {
        kind,
        broker,
        detail,
    })
}

/// `proto://host:port/id: what (after Nms in state S)` → (`host:port`, `what`).
fn split_broker_report(reason: &str) -> (Option<String>, String) {
    let mut detail = reason.trim();
    let mut broker = None;
    if let Some((name, rest)) = detail.split_once(": ") {
        if let Some((_, address)) = name.split_once("://") {
            broker = address.split('/').next().map(str::to_owned);
            detail = rest;
        }
    }
    if let Some(at) = detail.rfind(" (after ") {
        if detail.ends_with(')') && detail[at..].contains(" in state ") {
            detail = &detail[..at];
        }
    }
    // A listener without SASL lists no mechanisms.
    let detail = detail.trim_end();
    let detail = detail
        .strip_suffix(": broker's supported mechanisms:")
        .unwrap_or(detail);
    (broker.filter(|b| !b.is_empty()), detail.to_owned())
}

/// An `io::Error` among the causes that a reconnect may cure.
fn io_transient(error: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind::*;
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | NotConnected
                    | BrokenPipe
                    | TimedOut
                    | UnexpectedEof
                    | AddrNotAvailable
                    | HostUnreachable
                    | NetworkUnreachable
                    | Interrupted
            );
        }
        cause = e.source();
    }
    false
}

/// The settings of the services one command talks to, to name them in its errors.
#[derive(Debug, Default, Clone, Copy)]
pub struct Endpoints<'a> {
    pub postgres: Option<&'a Postgres>,
    pub redis: Option<&'a Redis>,
    pub kafka: Option<&'a Kafka>,
}

/// Put `<Service> at <masked address>: ` in front of an error from that service when its text
/// does not name the service yet (a statement that failed because PostgreSQL restarted says only
/// "connection closed").
pub fn name_service(error: anyhow::Error, endpoints: &Endpoints) -> anyhow::Error {
    let Some((service, _)) = diagnose(&error) else {
        return error;
    };
    let address = match service {
        Service::Postgres => endpoints.postgres.map(|p| mask_url(&p.url)),
        Service::Redis => endpoints.redis.map(|r| mask_url(&r.url)),
        Service::Kafka => endpoints.kafka.map(|k| k.brokers.clone()),
    };
    let line = error_line(&error);
    let named = format!("{} at ", service.name());
    if line.contains(&named) || address.as_ref().is_some_and(|a| line.contains(a.as_str())) {
        return error;
    }
    match address {
        Some(address) => error.context(format!("{named}{address}")),
        None => error.context(service.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick(retries: usize) -> Retry {
        Retry {
            max_secs: 5,
            retries,
        }
    }

    fn refused() -> anyhow::Error {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        anyhow::Error::new(RedisError::from(io)).context("Redis at redis://x is unreachable")
    }

    #[tokio::test]
    async fn a_transient_error_is_retried_until_the_step_succeeds() {
        let mut calls = 0;
        let value = quick(5)
            .run(Service::Redis, async || {
                calls += 1;
                if calls < 3 {
                    Err(refused())
                } else {
                    Ok(calls)
                }
            })
            .await
            .unwrap();
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn an_attempt_waits_no_longer_than_what_is_left_of_the_bound() {
        let natural = Duration::from_secs(10);
        let mut timeouts = Vec::new();
        let two_secs = Retry {
            max_secs: 2,
            retries: 10,
        };
        let _ = two_secs
            .run(Service::Redis, async || -> anyhow::Result<()> {
                timeouts.push((
                    attempt_timeout(natural),
                    attempt_timeout(Duration::from_millis(300)),
                ));
                Err(refused())
            })
            .await;
        let (first, short) = timeouts[0];
        assert!(first <= Duration::from_secs(2), "{first:?}");
        assert!(first > Duration::from_millis(1_900), "{first:?}");
        assert_eq!(
            short,
            Duration::from_millis(300),
            "a shorter timeout is kept"
        );
        assert!(timeouts.len() > 2, "{timeouts:?}");
        for (timeout, _) in &timeouts {
            assert!(*timeout >= SHORTEST_ATTEMPT && *timeout <= Duration::from_secs(2));
        }
        let last = timeouts.last().unwrap().0;
        assert_eq!(
            last, SHORTEST_ATTEMPT,
            "the last attempt starts at the bound's end"
        );

        // --retry-max-secs 0: one attempt, as long as the shortest.
        let mut once = None;
        let no_retries = Retry {
            max_secs: 0,
            retries: 10,
        };
        let _ = no_retries
            .run(Service::Redis, async || -> anyhow::Result<()> {
                once = Some(attempt_timeout(natural));
                Err(refused())
            })
            .await;
        assert_eq!(once, Some(SHORTEST_ATTEMPT));
    }

    #[tokio::test]
    async fn retries_stop_at_the_bound_and_say_so_once() {
        let mut calls = 0;
        let error = quick(2)
            .run(Service::Redis, async || -> anyhow::Result<()> {
                calls += 1;
                Err(refused())
            })
            .await
            .unwrap_err();
        assert_eq!(calls, 3, "one attempt and two retries");
        let line = error_line(&error);
        assert!(
            line.starts_with("Redis at redis://x is unreachable"),
            "{line}"
        );
        assert!(line.contains("(gave up after 3 attempts in"), "{line}");
        assert_eq!(line.matches("unreachable").count(), 1, "{line}");
        assert!(is_transient(&error), "still the same outage underneath");
    }

    #[tokio::test]
    async fn a_permanent_error_is_not_retried() {
        let mut calls = 0;
        let error = quick(5)
            .run(Service::Redis, async || -> anyhow::Result<()> {
                calls += 1;
                Err(anyhow::anyhow!("password authentication failed"))
            })
            .await
            .unwrap_err();
        assert_eq!(calls, 1);
        assert_eq!(error.to_string(), "password authentication failed");
        let no_time = Retry {
            max_secs: 0,
            retries: 5,
        };
        let mut calls = 0;
        let _ = no_time
            .run(Service::Redis, async || -> anyhow::Result<()> {
                calls += 1;
                Err(refused())
            })
            .await;
        assert_eq!(calls, 1, "--retry-max-secs 0 retries nothing");
    }

    #[tokio::test]
    async fn a_refusal_is_not_retried() {
        let mut calls = 0;
        let error = quick(5)
            .run(Service::Kafka, async || -> anyhow::Result<()> {
                calls += 1;
                Err(Refused {
                    service: Service::Kafka,
                    reason: "Kafka at b:9093: SASL authentication failed".to_owned(),
                }
                .into())
            })
            .await
            .unwrap_err();
        assert_eq!(calls, 1);
        assert_eq!(diagnose(&error), Some((Service::Kafka, false)));
        // It names the service already: nothing is put in front.
        let kafka = Kafka {
            brokers: "b:9093".to_owned(),
            security_protocol: "sasl_ssl".to_owned(),
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ca_file: None,
        };
        let endpoints = Endpoints {
            kafka: Some(&kafka),
            ..Endpoints::default()
        };
        assert_eq!(
            error_line(&name_service(error, &endpoints)),
            "Kafka at b:9093: SASL authentication failed"
        );
    }

    #[test]
    fn librdkafka_reports_of_refusals_are_told_from_outages() {
        use RDKafkaErrorCode::*;
        let sasl = kafka_refusal(
            SaslAuthenticationFailed,
            "sasl_ssl://127.0.0.1:9093/bootstrap: SASL authentication error: Authentication \
             failed during authentication due to invalid credentials with SASL mechanism \
             SCRAM-SHA-512 (after 12ms in state AUTH_REQ)",
        )
        .unwrap();
        assert_eq!(sasl.kind, KafkaRefusalKind::Sasl);
        assert_eq!(sasl.broker.as_deref(), Some("127.0.0.1:9093"));
        assert_eq!(
            sasl.detail,
            "SASL authentication error: Authentication failed during authentication due to \
             invalid credentials with SASL mechanism SCRAM-SHA-512"
        );
        let certificate = kafka_refusal(
            SSL,
            "sasl_ssl://[::1]:9093/1: SSL handshake failed: error:0A000086:SSL \
             routines::certificate verify failed: broker certificate could not be verified \
             (after 3ms in state SSL_HANDSHAKE)",
        )
        .unwrap();
        assert_eq!(certificate.kind, KafkaRefusalKind::Certificate);
        assert_eq!(certificate.broker.as_deref(), Some("[::1]:9093"));
        let tls = kafka_refusal(
            SSL,
            "ssl://b:9093/bootstrap: SSL handshake failed: error:0A00010B:SSL routines::wrong \
             version number (after 1ms in state SSL_HANDSHAKE)",
        )
        .unwrap();
        assert_eq!(tls.kind, KafkaRefusalKind::Tls);
        assert_eq!(
            tls.detail,
            "SSL handshake failed: error:0A00010B:SSL routines::wrong version number"
        );
        let no_sasl = kafka_refusal(
            Authentication,
            "sasl_plaintext://b:9092/bootstrap: SASL PLAIN mechanism handshake failed: Broker: \
             Request not valid in current SASL state: broker's supported mechanisms:  (after \
             2ms in state AUTH_HANDSHAKE)",
        )
        .unwrap();
        assert_eq!(
            no_sasl.detail,
            "SASL PLAIN mechanism handshake failed: Broker: Request not valid in current SASL state"
        );
        // Outages: the connection failing, under TLS or not.
        for (code, reason) in [
            (
                SSL,
                "ssl://b:9093/bootstrap: SSL handshake failed: SSL transport error: Connection \
                 timed out (after 9ms in state SSL_HANDSHAKE)",
            ),
            (
                BrokerTransportFailure,
                "sasl_ssl://b:9093/bootstrap: Connect to ipv4#127.0.0.1:9093 failed: \
                 Connection refused (after 0ms in state CONNECT)",
            ),
            (AllBrokersDown, "1/1 brokers are down"),
        ] {
            assert_eq!(kafka_refusal(code, reason), None, "{reason}");
        }
    }

    #[test]
    fn errors_name_their_service_once() {
        let pg = Postgres {
            url: "postgres://dwh:s3cret@db/dwh".to_owned(),
            ca_file: None,
            work_mem: "4MB".to_owned(),
        };
        let endpoints = Endpoints {
            postgres: Some(&pg),
            ..Endpoints::default()
        };
        let lost = anyhow::Error::new(NotReady {
            service: Service::Postgres,
            reason: "connection closed".to_owned(),
        })
        .context("committing the batch");
        let line = error_line(&name_service(lost, &endpoints));
        assert_eq!(
            line,
            "PostgreSQL at postgres://dwh:****@db/dwh: committing the batch: connection closed"
        );
        let plain = anyhow::anyhow!("no such flag");
        assert_eq!(error_line(&name_service(plain, &endpoints)), "no such flag");
    }
}
