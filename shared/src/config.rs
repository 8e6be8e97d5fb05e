//! Connection settings and batch bounds, declared once as clap `Args` and flattened into each job.
//!
//! Every setting is a flag with an environment variable, and every default points at 127.0.0.1,
//! so a local run needs no flags and a Kubernetes pod needs only env vars. Each group of settings
//! is a struct with a help heading of its own, flattened only into the commands that use it, so
//! `dwh <command> --help` lists what that command reads, grouped by what it configures. Value
//! names are UPPER_CASE words saying what the value is (`<URL>`, `<SECS>`, `<N>`).
//!
//! A size, count or bound parses with [`positive`] (0 and negatives are bad flags, exit 2) or,
//! where 0 means "none" (`--retry-max-secs 0`, `--lock-wait-secs 0`), with [`non_negative`].

/// Where the warehouse lives.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "PostgreSQL")]
pub struct Postgres {
    /// PostgreSQL connection string (password is never printed)
    #[arg(
        id = "pg_url",
        long = "pg-url",
        env = "DWH_PG_URL",
        value_name = "URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/dwh"
    )]
    pub url: String,
    /// CA certificate (PEM) the server's certificate must chain to; the TLS mode is the URL's
    /// `sslmode=` (disable, prefer, require, verify-ca, verify-full)
    #[arg(
        id = "pg_ca_file",
        long = "pg-ca-file",
        env = "DWH_PG_CA_FILE",
        value_name = "FILE"
    )]
    pub ca_file: Option<std::path::PathBuf>,
    /// `work_mem` of the run's sessions: what each sort and hash of a merge may hold before it
    /// spills to disk (a 64 MiB batch's merge sorts ~80 MB)
    #[arg(
        id = "pg_work_mem",
        long = "pg-work-mem",
        env = "DWH_PG_WORK_MEM",
        value_name = "SIZE",
        default_value = "128MB"
    )]
    pub work_mem: String,
}

/// Where the dictionaries (users, restaurants) live.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Redis")]
pub struct Redis {
    /// Redis URL of the dictionaries (password is never printed)
    #[arg(
        id = "redis_url",
        long = "redis-url",
        env = "DWH_REDIS_URL",
        value_name = "URL",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379"
    )]
    pub url: String,
    /// CA certificate (PEM) the server's certificate must chain to (needs a rediss:// URL)
    #[arg(
        id = "redis_ca_file",
        long = "redis-ca-file",
        env = "DWH_REDIS_CA_FILE",
        value_name = "FILE"
    )]
    pub ca_file: Option<std::path::PathBuf>,
}

/// The Kafka cluster and how to talk to it (the topics are [`Topics`]).
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Kafka")]
pub struct Kafka {
    /// Kafka bootstrap servers, comma separated
    #[arg(
        long = "kafka-brokers",
        env = "DWH_KAFKA_BROKERS",
        value_name = "BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,
    /// How to talk to the brokers: plaintext, ssl, sasl_plaintext or sasl_ssl
    #[arg(
        long = "kafka-security-protocol",
        env = "DWH_KAFKA_SECURITY_PROTOCOL",
        value_name = "PROTOCOL",
        default_value = "plaintext",
        ignore_case = true,
        value_parser = ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"]
    )]
    pub security_protocol: String,
    /// SASL mechanism for sasl_* protocols: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
    #[arg(
        long = "kafka-sasl-mechanism",
        env = "DWH_KAFKA_SASL_MECHANISM",
        value_name = "MECHANISM",
        ignore_case = true,
        value_parser = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
    )]
    pub sasl_mechanism: Option<String>,
    /// SASL user name
    #[arg(
        long = "kafka-sasl-username",
        env = "DWH_KAFKA_SASL_USERNAME",
        value_name = "USER"
    )]
    pub sasl_username: Option<String>,
    /// SASL password (never printed)
    #[arg(
        long = "kafka-sasl-password",
        env = "DWH_KAFKA_SASL_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub sasl_password: Option<String>,
    /// CA certificate (PEM) the brokers' certificates must chain to (ssl and sasl_ssl)
    #[arg(
        id = "kafka_ca_file",
        long = "kafka-ca-file",
        env = "DWH_KAFKA_CA_FILE",
        value_name = "FILE"
    )]
    pub ca_file: Option<std::path::PathBuf>,
}

/// The topic the order service writes orders to (read by `stg`).
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Topics")]
pub struct OrdersTopic {
    /// Topic the order service writes orders to
    #[arg(
        id = "orders_topic",
        long = "orders-topic",
        env = "DWH_ORDERS_TOPIC",
        value_name = "TOPIC",
        default_value = "order-service_orders"
    )]
    pub name: String,
}

/// The topic `stg` publishes enriched orders to (read by `dds`).
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Topics")]
pub struct StgTopic {
    /// Topic `dwh stg` publishes enriched orders to
    #[arg(
        id = "stg_topic",
        long = "stg-topic",
        env = "DWH_STG_TOPIC",
        value_name = "TOPIC",
        default_value = "stg-service-orders"
    )]
    pub name: String,
}

/// The topic `dds` publishes affected users to (read by `cdm`).
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Topics")]
pub struct DdsTopic {
    /// Topic `dwh dds` publishes affected users to
    #[arg(
        id = "dds_topic",
        long = "dds-topic",
        env = "DWH_DDS_TOPIC",
        value_name = "TOPIC",
        default_value = "dds-service-orders"
    )]
    pub name: String,
}

/// The topic `cdm` publishes tag events to (read by the application, not by a job).
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Topics")]
pub struct TagsTopic {
    /// Topic `dwh cdm` publishes every grant and revocation of a user tag to
    #[arg(
        id = "tags_topic",
        long = "tags-topic",
        env = "DWH_TAGS_TOPIC",
        value_name = "TOPIC",
        default_value = "cdm-user-tags"
    )]
    pub name: String,
}

/// All three topics of the pipeline, for the commands that look at every job.
#[derive(clap::Args, Debug, Clone)]
pub struct Topics {
    #[command(flatten)]
    pub orders: OrdersTopic,
    #[command(flatten)]
    pub stg: StgTopic,
    #[command(flatten)]
    pub dds: DdsTopic,
}

/// How much one run may take before it commits and exits.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Batch bounds")]
pub struct Bounds {
    /// Most messages one run consumes before it commits and exits (the byte bound below is what
    /// usually ends a backfill's run: ~74,000 orders for stg, ~500,000 affected users for cdm)
    #[arg(
        long,
        env = "DWH_MAX_MESSAGES",
        value_name = "N",
        default_value_t = 1_000_000,
        value_parser = positive::<usize>,
        allow_negative_numbers = true
    )]
    pub max_messages: usize,
    /// Most message bytes (keys and values) one run holds: with messages of any size, a run's
    /// memory follows this bound, not the backlog (a run always takes at least one message)
    #[arg(
        long,
        env = "DWH_MAX_BATCH_BYTES",
        value_name = "BYTES",
        default_value_t = 64 << 20,
        value_parser = positive::<u64>,
        allow_negative_numbers = true
    )]
    pub max_batch_bytes: u64,
    /// Seconds to wait for the broker to deliver what it reported as waiting
    #[arg(
        long,
        env = "DWH_FETCH_TIMEOUT_SECS",
        value_name = "SECS",
        default_value_t = 60,
        value_parser = positive::<u64>,
        allow_negative_numbers = true
    )]
    pub fetch_timeout_secs: u64,
}

/// How long a command waits for the partition locks another run of the job holds.
#[derive(clap::Args, Debug, Clone, Copy)]
#[command(next_help_heading = "Locks and workers")]
pub struct LockWait {
    /// Seconds to wait for another run of the same job to let go of its locks before giving up
    /// (a job exits 0 then; 0: do not wait)
    #[arg(
        long,
        env = "DWH_LOCK_WAIT_SECS",
        value_name = "SECS",
        default_value_t = 10,
        value_parser = non_negative::<u64>,
        allow_negative_numbers = true
    )]
    pub lock_wait_secs: u64,
}

impl LockWait {
    pub fn duration(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lock_wait_secs)
    }
}

/// Which partitions a run takes and how long it waits for their locks.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Locks and workers")]
pub struct Share {
    #[command(flatten)]
    pub lock: LockWait,
    /// This run's share of the topic's partitions, `i/K`: the partitions p with p % K == i
    /// (for a Kubernetes Indexed Job: `--worker $(JOB_COMPLETION_INDEX)/K`)
    #[arg(long, env = "DWH_WORKER", value_name = "I/K", default_value = "0/1")]
    pub worker: Worker,
}

/// The retry flags as given (`--retry-max-secs` has no fixed default: see [`RetryArgs::policy`]).
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
#[command(next_help_heading = "Retries")]
pub struct RetryArgs {
    /// Seconds a step keeps retrying a service that is unreachable or dropped the connection; no
    /// attempt waits longer than what is left of them (but 1 s). 0: one attempt, no retries.
    /// Also how long a published message may wait for the broker (at least 10 s) [default: 60;
    /// 5 for status, report, export, offsets and tags, which a person waits for]
    #[arg(
        id = "retry_max_secs",
        long = "retry-max-secs",
        env = "DWH_RETRY_MAX_SECS",
        value_name = "SECS",
        value_parser = non_negative::<u64>,
        allow_negative_numbers = true,
        global = true
    )]
    pub max_secs: Option<u64>,
    /// Most retries of one step within --retry-max-secs (0: no retries)
    #[arg(
        id = "retries",
        long = "retries",
        env = "DWH_RETRIES",
        value_name = "N",
        default_value_t = 10,
        value_parser = non_negative::<usize>,
        allow_negative_numbers = true,
        global = true
    )]
    pub retries: usize,
}

impl RetryArgs {
    /// The bounds of this process: `--retry-max-secs` when given, else `default_max_secs`.
    pub fn policy(&self, default_max_secs: u64) -> Retry {
        Retry {
            max_secs: self.max_secs.unwrap_or(default_max_secs),
            retries: self.retries,
        }
    }
}

/// How long a run rides out a service that is away: connecting to PostgreSQL, Redis and Kafka,
/// and reading from Kafka and Redis, are retried with exponential backoff (250 ms doubling up to
/// 10 s, with jitter) until either bound is reached; then the run ends naming the service. No
/// single attempt waits longer than the time left (`retry::attempt_timeout`). Nothing
/// inside the load transaction is retried: a failed transaction ends the run, and the next run
/// loads the same batch again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Seconds a step keeps retrying (0: one attempt, no retries); no attempt waits longer than
    /// what is left of them, but at least `retry::SHORTEST_ATTEMPT`.
    pub max_secs: u64,
    /// Most retries of one step.
    pub retries: usize,
}

impl Retry {
    /// The default bound of the jobs (CronJobs ride out a minute's outage).
    pub const JOB_MAX_SECS: u64 = 60;
    /// The default bound of the commands a person runs and waits for (status, report, export,
    /// offsets, tags): an answer within seconds.
    pub const BY_HAND_MAX_SECS: u64 = 5;
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            max_secs: Retry::JOB_MAX_SECS,
            retries: 10,
        }
    }
}

/// A count, size or bound given as a flag: a whole number of at least 1 (a clap `value_parser`).
pub fn positive<T: TryFrom<i128>>(raw: &str) -> Result<T, String> {
    whole(raw, 1)
}

/// A whole number of at least 0, for the bounds where 0 means "none" (a clap `value_parser`).
pub fn non_negative<T: TryFrom<i128>>(raw: &str) -> Result<T, String> {
    whole(raw, 0)
}

fn whole<T: TryFrom<i128>>(raw: &str, least: i128) -> Result<T, String> {
    let n: i128 = raw
        .trim()
        .parse()
        .map_err(|_| "not a whole number".to_owned())?;
    if n < least {
        return Err(format!("must be {least} or more"));
    }
    T::try_from(n).map_err(|_| "too large".to_owned())
}

/// One of K parallel runs of a job, owning the partitions `p % K == index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Worker {
    pub index: u32,
    pub count: u32,
}

impl Worker {
    /// The single worker that owns every partition.
    pub const ALL: Worker = Worker { index: 0, count: 1 };

    /// Whether this worker owns `partition`.
    pub fn owns(&self, partition: i32) -> bool {
        partition.rem_euclid(self.count as i32) as u32 == self.index
    }
}

impl std::str::FromStr for Worker {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let parse = |s: &str| s.trim().parse::<u32>().ok();
        match raw.split_once('/').map(|(i, k)| (parse(i), parse(k))) {
            Some((Some(index), Some(count))) if count > 0 && index < count => {
                Ok(Worker { index, count })
            }
            _ => Err(format!("expected i/K with 0 <= i < K, got {raw:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{non_negative, positive, Worker};

    #[test]
    fn sizes_and_bounds_are_whole_numbers_of_at_least_one() {
        assert_eq!(positive::<u64>("5"), Ok(5));
        assert_eq!(positive::<i64>(" 7 "), Ok(7));
        assert_eq!(positive::<u64>("0"), Err("must be 1 or more".to_owned()));
        assert_eq!(positive::<usize>("-3"), Err("must be 1 or more".to_owned()));
        assert_eq!(positive::<i32>("3000000000"), Err("too large".to_owned()));
        assert_eq!(
            positive::<u64>("lots"),
            Err("not a whole number".to_owned())
        );
        assert_eq!(non_negative::<u64>("0"), Ok(0));
        assert_eq!(
            non_negative::<u64>("-1"),
            Err("must be 0 or more".to_owned())
        );
    }

    #[test]
    fn workers_split_the_partitions() {
        let workers: Vec<Worker> = (0..4).map(|i| format!("{i}/4").parse().unwrap()).collect();
        for partition in 0..8 {
            assert_eq!(workers.iter().filter(|w| w.owns(partition)).count(), 1);
        }
        assert!(Worker::ALL.owns(7));
        for bad in ["4/4", "1/0", "x/2", "3"] {
            assert!(bad.parse::<Worker>().is_err(), "{bad}");
        }
    }
}
