//! Connection settings and batch bounds, declared once as clap `Args` and flattened into each job.
//!
//! Every setting is a flag with an environment variable, and every default points at 127.0.0.1,
//! so a local run needs no flags and a Kubernetes pod needs only env vars.

/// Where the warehouse lives.
#[derive(clap::Args, Debug, Clone)]
pub struct Postgres {
    /// PostgreSQL connection string (password is never printed)
    #[arg(
        id = "pg_url",
        long = "pg-url",
        env = "DWH_PG_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/dwh"
    )]
    pub url: String,
    /// CA certificate (PEM) the server's certificate must chain to; the TLS mode is the URL's
    /// `sslmode=` (disable, prefer, require, verify-ca, verify-full)
    #[arg(id = "pg_ca_file", long = "pg-ca-file", env = "DWH_PG_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// `work_mem` of the run's sessions: what each sort and hash of a merge may hold before it
    /// spills to disk (a 64 MiB batch's merge sorts ~80 MB)
    #[arg(
        id = "pg_work_mem",
        long = "pg-work-mem",
        env = "DWH_PG_WORK_MEM",
        default_value = "128MB"
    )]
    pub work_mem: String,
}

/// Where the dictionaries (users, restaurants) live.
#[derive(clap::Args, Debug, Clone)]
pub struct Redis {
    /// Redis URL of the dictionaries (password is never printed)
    #[arg(
        id = "redis_url",
        long = "redis-url",
        env = "DWH_REDIS_URL",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379"
    )]
    pub url: String,
    /// CA certificate (PEM) the server's certificate must chain to (needs a rediss:// URL)
    #[arg(
        id = "redis_ca_file",
        long = "redis-ca-file",
        env = "DWH_REDIS_CA_FILE"
    )]
    pub ca_file: Option<std::path::PathBuf>,
}

/// The Kafka cluster and the three topics of the pipeline.
#[derive(clap::Args, Debug, Clone)]
pub struct Kafka {
    /// Kafka bootstrap servers, comma separated
    #[arg(
        long = "kafka-brokers",
        env = "DWH_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,
    /// Topic the order service writes orders to
    #[arg(
        long = "orders-topic",
        env = "DWH_ORDERS_TOPIC",
        default_value = "order-service_orders"
    )]
    pub orders_topic: String,
    /// Topic `dwh stg` publishes enriched orders to
    #[arg(
        long = "stg-topic",
        env = "DWH_STG_TOPIC",
        default_value = "stg-service-orders"
    )]
    pub stg_topic: String,
    /// Topic `dwh dds` publishes affected users to
    #[arg(
        long = "dds-topic",
        env = "DWH_DDS_TOPIC",
        default_value = "dds-service-orders"
    )]
    pub dds_topic: String,
    /// How to talk to the brokers: plaintext, ssl, sasl_plaintext or sasl_ssl
    #[arg(
        long = "kafka-security-protocol",
        env = "DWH_KAFKA_SECURITY_PROTOCOL",
        default_value = "plaintext",
        ignore_case = true,
        value_parser = ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"]
    )]
    pub security_protocol: String,
    /// SASL mechanism for sasl_* protocols: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
    #[arg(
        long = "kafka-sasl-mechanism",
        env = "DWH_KAFKA_SASL_MECHANISM",
        ignore_case = true,
        value_parser = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
    )]
    pub sasl_mechanism: Option<String>,
    /// SASL user name
    #[arg(long = "kafka-sasl-username", env = "DWH_KAFKA_SASL_USERNAME")]
    pub sasl_username: Option<String>,
    /// SASL password (never printed)
    #[arg(
        long = "kafka-sasl-password",
        env = "DWH_KAFKA_SASL_PASSWORD",
        hide_env_values = true
    )]
    pub sasl_password: Option<String>,
    /// CA certificate (PEM) the brokers' certificates must chain to (ssl and sasl_ssl)
    #[arg(
        id = "kafka_ca_file",
        long = "kafka-ca-file",
        env = "DWH_KAFKA_CA_FILE"
    )]
    pub ca_file: Option<std::path::PathBuf>,
}

/// How much one run may take before it commits and exits.
#[derive(clap::Args, Debug, Clone)]
pub struct Bounds {
    /// Most messages one run consumes before it commits and exits
    #[arg(long, env = "DWH_MAX_MESSAGES", default_value_t = 200_000)]
    pub max_messages: usize,
    /// Most message bytes (keys and values) one run holds: with messages of any size, a run's
    /// memory follows this bound, not the backlog (a run always takes at least one message)
    #[arg(long, env = "DWH_MAX_BATCH_BYTES", default_value_t = 64 << 20)]
    pub max_batch_bytes: u64,
    /// Seconds to wait for the broker to deliver what it reported as waiting
    #[arg(long, env = "DWH_FETCH_TIMEOUT_SECS", default_value_t = 60)]
    pub fetch_timeout_secs: u64,
    /// Seconds to wait for another run of the same job to finish before giving up (exit 0)
    #[arg(long, env = "DWH_LOCK_WAIT_SECS", default_value_t = 10)]
    pub lock_wait_secs: u64,
    /// This run's share of the topic's partitions, `i/K`: the partitions p with p % K == i
    /// (for a Kubernetes Indexed Job: `--worker $(JOB_COMPLETION_INDEX)/K`)
    #[arg(long, env = "DWH_WORKER", default_value = "0/1")]
    pub worker: Worker,
}

/// How long a run rides out a service that is away: connecting to PostgreSQL, Redis and Kafka,
/// and reading from Kafka and Redis, are retried with exponential backoff (250 ms doubling up to
/// 10 s, with jitter) until either bound is reached; then the run ends naming the service. Nothing
/// inside the load transaction is retried: a failed transaction ends the run, and the next run
/// loads the same batch again.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Seconds a run keeps retrying a service that is unreachable or dropped the connection
    /// (0: fail at once); also how long a published message may wait for the broker
    #[arg(
        id = "retry_max_secs",
        long = "retry-max-secs",
        env = "DWH_RETRY_MAX_SECS",
        default_value_t = 60,
        global = true
    )]
    pub max_secs: u64,
    /// Most retries of one step within --retry-max-secs
    #[arg(
        id = "retries",
        long = "retries",
        env = "DWH_RETRIES",
        default_value_t = 10,
        global = true
    )]
    pub retries: usize,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            max_secs: 60,
            retries: 10,
        }
    }
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
    use super::Worker;

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
