//! The test harness: a private warehouse per test, on the real services.
//!
//! Every test gets its own PostgreSQL database (`dwh_test_<random>`), its own three topic names and
//! its own Redis database number, so tests run in parallel and never see each other's data. Jobs
//! run as the real `dwh` binary, exactly as a user or a CronJob runs them, so crashes are real
//! process deaths (`DWH_FAULT`) and errors are checked as printed. The database is dropped when
//! the test ends.

#![allow(dead_code)]

pub mod oracle;
pub mod showcases;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use tokio_postgres::{Client, NoTls};

pub const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const BROKERS: &str = "127.0.0.1:9092";

/// The repository's root (where `testdata/` is).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The bundled testdata files.
pub fn testdata() -> PathBuf {
    repo().join("testdata")
}

/// One test's private warehouse and topics.
pub struct Env {
    pub name: String,
    pub pg_url: String,
    pub redis_url: String,
    pub orders_topic: String,
    pub stg_topic: String,
    pub dds_topic: String,
}

impl Env {
    /// A fresh database (migrated) and topics (created, one partition each) with no data yet.
    pub async fn new() -> Env {
        Env::with_partitions(1).await
    }

    /// Like [`Env::new`], with `partitions` partitions per topic.
    pub async fn with_partitions(partitions: u32) -> Env {
        let id: u64 = rand::rng().random();
        let name = format!("dwh_test_{id:016x}");
        let redis_db = redis_db().await;
        let env = Env {
            pg_url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
            redis_url: format!("redis://127.0.0.1:6379/{redis_db}"),
            orders_topic: format!("{name}-orders"),
            stg_topic: format!("{name}-stg"),
            dds_topic: format!("{name}-dds"),
            name,
        };
        env.dwh_ok(&["migrate", "--partitions", &partitions.to_string()]);
        env
    }

    /// `dwh <args>` with this environment, waited for.
    pub fn dwh(&self, args: &[&str]) -> Output {
        self.command(args, &[])
            .output()
            .expect("the dwh binary runs")
    }

    /// `dwh <args>` that must succeed; returns its stdout.
    pub fn dwh_ok(&self, args: &[&str]) -> String {
        let out = self.dwh(args);
        assert!(
            out.status.success(),
            "dwh {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A `dwh` command with this environment and extra env vars, not started yet.
    pub fn command(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dwh"));
        cmd.args(args)
            .env("DWH_PG_URL", &self.pg_url)
            .env("DWH_REDIS_URL", &self.redis_url)
            .env("DWH_KAFKA_BROKERS", BROKERS)
            .env("DWH_ORDERS_TOPIC", &self.orders_topic)
            .env("DWH_STG_TOPIC", &self.stg_topic)
            .env("DWH_DDS_TOPIC", &self.dds_topic)
            .env_remove("DWH_FAULT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Replay the bundled testdata (orders to Kafka, dictionaries to Redis).
    pub fn replay_testdata(&self) {
        let dir = testdata();
        self.dwh_ok(&["replay", dir.to_str().expect("a UTF-8 path")]);
    }

    /// Run stg, dds and cdm once each.
    pub fn pipeline(&self) {
        for job in ["stg", "dds", "cdm"] {
            self.dwh_ok(&[job]);
        }
    }

    /// A client of this test's database.
    pub async fn pg(&self) -> Client {
        connect(&self.pg_url).await
    }

    /// Messages currently in `topic` (sum over partitions of high − low watermark).
    pub fn topic_len(&self, topic: &str) -> i64 {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", BROKERS)
            .create()
            .expect("a consumer");
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("topic metadata");
        metadata.topics()[0]
            .partitions()
            .iter()
            .map(|p| {
                let (low, high) = consumer
                    .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                    .expect("watermarks");
                high - low
            })
            .sum()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime: clean up on a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let client = connect(PG_ADMIN).await;
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// Connect to PostgreSQL or fail the test with the reason.
pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// A Redis database number for this test (1..=14, rotating; 0 is left to the demo, 15 holds the
/// rotation counter).
async fn redis_db() -> u32 {
    let client = redis::Client::open("redis://127.0.0.1:6379/15").expect("a Redis URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis at 127.0.0.1:6379");
    let n: u64 = redis::cmd("INCR")
        .arg("dwh:tests:next-db")
        .query_async(&mut conn)
        .await
        .expect("INCR");
    let db = 1 + (n % 14) as u32;
    let client = redis::Client::open(format!("redis://127.0.0.1:6379/{db}")).expect("a Redis URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis");
    redis::cmd("FLUSHDB")
        .query_async::<()>(&mut conn)
        .await
        .expect("FLUSHDB");
    db
}

/// Poll `check` until it returns `Some`, or fail after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The number of rows of a query's first column as i64 (`SELECT count(*) …`).
pub async fn count(client: &Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// A fingerprint of a whole table's content, to show that a replay changed nothing.
pub async fn fingerprint(client: &Client, table: &str) -> String {
    let sql = format!(
        "SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {table} t"
    );
    client
        .query_one(&sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}
