//! The library's error: one enum, each variant saying what failed and where, with its cause.
//!
//! The library returns [`Error`]; `jobs/` (with anyhow) adds context at the edge. Which service
//! an error came from, and whether trying again may help, is a `match` on it
//! ([`Error::diagnose`], what [`crate::retry`] asks). Messages are one line each: the context
//! (with any password masked) first, then the cause, as [`crate::error_line`] prints them.

use rdkafka::error::KafkaError;
use redis::RedisError;

use crate::kafka::{AheadOfLog, TooLarge};
use crate::retry::{self, NotReady, Refused, Service};

/// What a library call failed with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// PostgreSQL failed a connection or a statement.
    #[error("{context}")]
    Postgres {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },
    /// Kafka (librdkafka) failed a client, a read or a write.
    #[error("{context}")]
    Kafka {
        context: String,
        #[source]
        source: KafkaError,
    },
    /// Redis failed a connection or a command.
    #[error("{context}")]
    Redis {
        context: String,
        #[source]
        source: RedisError,
    },
    /// A service answered but cannot serve the run yet: retried like an outage.
    #[error(transparent)]
    NotReady(#[from] NotReady),
    /// A service answered and refused the run (credentials, a certificate): never retried.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// A setting, URL, file or name that cannot work as given (a missing topic, a bad URL, SASL
    /// settings without a password…): the message says what to change.
    #[error("{0}")]
    Invalid(String),
    /// The folder or bucket of the archive or an export failed.
    #[error("{context}")]
    ObjectStore {
        context: String,
        #[source]
        source: object_store::Error,
    },
    /// A local file or folder failed.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A blocking thread (librdkafka's calls run on one) panicked or was cancelled.
    #[error("{context}")]
    Thread {
        context: String,
        #[source]
        source: tokio::task::JoinError,
    },
    /// An Arrow batch could not be built or read.
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    /// A Parquet file (the archive) could not be written or read.
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Polars failed a frame (building one from a batch, or computing on it).
    #[error(transparent)]
    Polars(#[from] polars::error::PolarsError),
    /// A value could not be written or read as JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The Pushgateway could not be reached or refused the metrics.
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    /// The metrics could not be encoded.
    #[error(transparent)]
    Metrics(#[from] prometheus::Error),
    /// OpenSSL refused a certificate, key or setting of PostgreSQL's TLS.
    #[error(transparent)]
    Tls(#[from] openssl::error::ErrorStack),
    /// Applying the warehouse's migrations failed.
    #[error(transparent)]
    Migration(#[from] refinery::Error),
    /// A job's own step failed (the batch protocol runs the binary's code, which says what).
    #[error(transparent)]
    Job(Box<dyn std::error::Error + Send + Sync>),
    /// One of the above, under what the library was doing.
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<Error>,
    },
    /// The offsets stored for a job lie beyond the end of the topic's log.
    #[error(transparent)]
    AheadOfLog(#[from] AheadOfLog),
    /// A message larger than its topic takes.
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
    /// A step retried until its bound, with its last error.
    #[error("{} (gave up after {attempts} attempt{} in {seconds:.1} s)",
        crate::chain_line(last.as_ref()), if *attempts == 1 { "" } else { "s" })]
    GaveUp {
        attempts: usize,
        seconds: f64,
        #[source]
        last: Box<Error>,
    },
}

/// Return an [`Error::Invalid`] made with `format!`: `bail!("no topic {topic}")`.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::Error::Invalid(format!($($arg)*)))
    };
}
pub(crate) use bail;

/// What the library's calls return.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Which service the error came from, and whether trying again may help (the service was
    /// away, not wrong); `None` for an error of no service.
    pub fn diagnose(&self) -> Option<(Service, bool)> {
        match self {
            Error::Postgres { source, .. } => {
                Some((Service::Postgres, retry::postgres_transient(source)))
            }
            Error::Kafka { source, .. } => Some((Service::Kafka, retry::kafka_transient(source))),
            Error::Redis { source, .. } => Some((Service::Redis, retry::redis_transient(source))),
            Error::NotReady(e) => Some((e.service, true)),
            Error::Refused(e) => Some((e.service, false)),
            Error::GaveUp { last, .. } => last.diagnose(),
            Error::Context { source, .. } => source.diagnose(),
            Error::Job(source) => retry::diagnose_chain(source.as_ref()),
            Error::Invalid(_)
            | Error::ObjectStore { .. }
            | Error::Io { .. }
            | Error::Thread { .. }
            | Error::AheadOfLog(_)
            | Error::TooLarge(_)
            | Error::Arrow(_)
            | Error::Parquet(_)
            | Error::Polars(_)
            | Error::Json(_)
            | Error::Http(_)
            | Error::Metrics(_)
            | Error::Tls(_)
            | Error::Migration(_) => None,
        }
    }

    /// An [`Error::Invalid`] saying `what`.
    pub fn invalid(what: impl Into<String>) -> Error {
        Error::Invalid(what.into())
    }
}

/// A cause the library wraps with what it was doing: the variant follows from its type.
pub trait Cause {
    /// This cause under `context`.
    fn within(self, context: String) -> Error;
}

macro_rules! causes {
    ($($source:ty => $variant:ident),+ $(,)?) => {
        $(impl Cause for $source {
            fn within(self, context: String) -> Error {
                Error::$variant { context, source: self }
            }
        })+
    };
}

/// The library's own errors, and the ones it takes with `?`, go under a context as they are.
macro_rules! within_context {
    ($($source:ty),+ $(,)?) => {
        $(impl Cause for $source {
            fn within(self, context: String) -> Error {
                Error::Context { context, source: Box::new(self.into()) }
            }
        })+
    };
}

within_context! {
    Error,
    arrow::error::ArrowError,
    parquet::errors::ParquetError,
    polars::error::PolarsError,
    serde_json::Error,
    reqwest::Error,
    openssl::error::ErrorStack,
    refinery::Error,
    anyhow::Error,
}

impl From<anyhow::Error> for Error {
    /// A job's error, returned through the batch protocol.
    fn from(error: anyhow::Error) -> Error {
        Error::Job(error.into())
    }
}

causes! {
    tokio_postgres::Error => Postgres,
    KafkaError => Kafka,
    RedisError => Redis,
    object_store::Error => ObjectStore,
    std::io::Error => Io,
    tokio::task::JoinError => Thread,
}

/// `.context(…)` / `.with_context(|| …)` for the library's causes, as anyhow's read.
pub trait Context<T> {
    /// The error, if any, under `context`.
    fn context(self, context: impl Into<String>) -> Result<T>;
    /// The error, if any, under the context `f` makes (only when there is an error).
    fn with_context(self, f: impl FnOnce() -> String) -> Result<T>;
}

impl<T, C: Cause> Context<T> for std::result::Result<T, C> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|e| e.within(context.into()))
    }

    fn with_context(self, f: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| e.within(f()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_line;

    fn refused_io() -> std::io::Error {
        std::io::Error::from(std::io::ErrorKind::ConnectionRefused)
    }

    #[test]
    fn each_service_error_is_told_by_its_variant() {
        let redis = RedisError::from(refused_io()).within("Redis at redis://x".into());
        assert_eq!(redis.diagnose(), Some((Service::Redis, true)));
        let kafka = KafkaError::MetadataFetch(rdkafka::error::RDKafkaErrorCode::AllBrokersDown)
            .within("Kafka at b:9092 is unreachable".into());
        assert_eq!(kafka.diagnose(), Some((Service::Kafka, true)));
        let wrong = KafkaError::MetadataFetch(rdkafka::error::RDKafkaErrorCode::UnknownTopic)
            .within("reading metadata".into());
        assert_eq!(wrong.diagnose(), Some((Service::Kafka, false)));
        let refused = Error::from(Refused {
            service: Service::Kafka,
            reason: "Kafka at b:9093: SASL authentication failed".into(),
        });
        assert_eq!(refused.diagnose(), Some((Service::Kafka, false)));
        let waiting = Error::from(NotReady {
            service: Service::Redis,
            reason: "empty".into(),
        });
        assert_eq!(waiting.diagnose(), Some((Service::Redis, true)));
        assert_eq!(Error::invalid("no topic").diagnose(), None);
        assert_eq!(
            refused_io().within("reading the CA".into()).diagnose(),
            None
        );
    }

    #[test]
    fn the_context_comes_first_and_a_retried_error_keeps_its_service() {
        let error =
            RedisError::from(refused_io()).within("Redis at redis://x is unreachable".into());
        let gave_up = Error::GaveUp {
            attempts: 3,
            seconds: 1.31,
            last: Box::new(error),
        };
        assert_eq!(gave_up.diagnose(), Some((Service::Redis, true)));
        let line = error_line(&anyhow::Error::new(gave_up));
        assert!(
            line.starts_with("Redis at redis://x is unreachable: "),
            "{line}"
        );
        assert!(
            line.ends_with(" (gave up after 3 attempts in 1.3 s)"),
            "{line}"
        );
        assert_eq!(line.matches("unreachable").count(), 1, "{line}");
    }
}
