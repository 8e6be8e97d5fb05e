//! The test harness: a private warehouse per test, on the real services.
//!
//! Every test gets its own PostgreSQL database (`dwh_test_<random>`), its own three topic names and
//! its own redis-server (a private one on a spare port: Redis has no room per test that another
//! test could not flush), so tests run in parallel and never see each other's data. Jobs
//! run as the real `dwh` binary, exactly as a user or a CronJob runs them, so crashes are real
//! process deaths (`DWH_FAULT`) and errors are checked as printed. The database is dropped when
//! the test ends.
//!
//! Jobs run with least privilege, as in production: `dwh migrate` runs as the owner, and `stg`
//! (also `snapshot`, `backfill`), `dds` and `cdm` each log in as a user that is a member of its
//! job role (`dwh_stg`, `dwh_dds`, `dwh_cdm`, made by the migrations), so every test also proves
//! that the roles grant enough. By default PostgreSQL and Kafka are the machine's (5432, 9092);
//! the outage and failover tests point an [`Env`] at private [`instances`] of them instead, and
//! hold or watch runs in the background with [`runs`].

#![allow(dead_code)]

pub mod hostile;
pub mod instances;
pub mod oracle;
pub mod runs;
pub mod showcases;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use tokio_postgres::{Client, NoTls};

pub const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const BROKERS: &str = "127.0.0.1:9092";

/// The jobs that run under a role of their own, and the login user of each in the tests.
pub const JOBS: [&str; 3] = ["stg", "dds", "cdm"];
/// The password of the tests' job users (a private cluster with password auth checks it).
pub const ROLE_PASSWORD: &str = "dwh-test-role-pw";

/// The env vars of dwh's Kafka security settings: an [`Env`] passes its own to every dwh run and
/// none of this process's.
pub const KAFKA_SECURITY_VARS: [&str; 5] = [
    "DWH_KAFKA_SECURITY_PROTOCOL",
    "DWH_KAFKA_SASL_MECHANISM",
    "DWH_KAFKA_SASL_USERNAME",
    "DWH_KAFKA_SASL_PASSWORD",
    "DWH_KAFKA_CA_FILE",
];

/// The login user a job runs as in the tests.
pub fn job_user(job: &str) -> String {
    format!("dwh_test_{job}")
}

/// The repository's root (where `testdata/` is).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The bundled testdata files.
pub fn testdata() -> PathBuf {
    repo().join("testdata")
}

/// Where a test's services are.
#[derive(Debug, Clone)]
pub struct Services {
    /// A superuser's URL of the `postgres` database.
    pub pg_admin: String,
    /// Bootstrap servers.
    pub brokers: String,
    /// A Redis URL without a database number; `None` for a redis-server of the test's own.
    pub redis: Option<String>,
    /// Kafka security settings as env vars (of [`KAFKA_SECURITY_VARS`]); none: plaintext.
    pub kafka_security: Vec<(String, String)>,
}

impl Default for Services {
    /// The machine's services.
    fn default() -> Services {
        Services {
            pg_admin: PG_ADMIN.to_owned(),
            brokers: BROKERS.to_owned(),
            redis: None,
            kafka_security: Vec::new(),
        }
    }
}

impl Services {
    /// These services with a private PostgreSQL cluster.
    pub fn with_pg(mut self, cluster: &instances::PgCluster) -> Services {
        self.pg_admin = cluster.url("postgres");
        self
    }

    /// These services with the local broker's SASL_SSL listener (SCRAM-SHA-512, its own CA): the
    /// settings `scripts/services env sasl_ssl` prints.
    pub fn with_sasl_ssl(mut self) -> Services {
        let out = Command::new(repo().join("scripts/services"))
            .args(["env", "sasl_ssl"])
            .stdin(Stdio::null())
            .output()
            .expect("scripts/services runs");
        assert!(
            out.status.success(),
            "scripts/services env sasl_ssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.kafka_security.clear();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some((key, value)) = line.strip_prefix("export ").and_then(|l| l.split_once('='))
            else {
                continue;
            };
            if key == "DWH_KAFKA_BROKERS" {
                self.brokers = value.to_owned();
            } else {
                assert!(KAFKA_SECURITY_VARS.contains(&key), "{line}");
                self.kafka_security.push((key.to_owned(), value.to_owned()));
            }
        }
        let keys: Vec<&str> = self
            .kafka_security
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys.len(), KAFKA_SECURITY_VARS.len(), "{keys:?}");
        self
    }

    /// These services with a private Redis.
    pub fn with_redis(mut self, server: &instances::RedisServer) -> Services {
        self.redis = Some(format!("redis://127.0.0.1:{}", server.port));
        self
    }

    /// These services with a private Kafka cluster (every node in the bootstrap list).
    pub fn with_broker(mut self, cluster: &instances::KafkaCluster) -> Services {
        self.brokers = cluster.address();
        self
    }
}

/// One test's private warehouse and topics.
pub struct Env {
    pub name: String,
    /// The owner's URL of this test's database (migrations, checks).
    pub pg_url: String,
    pub redis_url: String,
    pub brokers: String,
    pub orders_topic: String,
    pub stg_topic: String,
    pub dds_topic: String,
    /// The topic `cdm` publishes tag events to.
    pub tags_topic: String,
    /// The services' Kafka security settings, given to every dwh run ([`Env::topic_len`] reads
    /// over plaintext only).
    pub kafka_security: Vec<(String, String)>,
    pg_admin: String,
    /// The test's own redis-server, unless the services named one.
    _redis: Option<instances::RedisServer>,
}

impl Env {
    /// A fresh database (migrated) and topics (created, one partition each) with no data yet.
    pub async fn new() -> Env {
        Env::with_partitions(1).await
    }

    /// Like [`Env::new`], with `partitions` partitions per topic.
    pub async fn with_partitions(partitions: u32) -> Env {
        Env::on(Services::default(), partitions).await
    }

    /// Like [`Env::new`], on `services`.
    pub async fn on(services: Services, partitions: u32) -> Env {
        let id: u64 = rand::rng().random();
        let name = format!("dwh_test_{id:016x}");
        let own_redis = services.redis.is_none().then(instances::RedisServer::start);
        let redis_url = match (&services.redis, &own_redis) {
            (Some(base), _) => format!("{base}/0"),
            (None, Some(own)) => own.url(0),
            (None, None) => unreachable!("started above"),
        };
        let env = Env {
            pg_url: with_database(&services.pg_admin, &name),
            redis_url,
            brokers: services.brokers.clone(),
            orders_topic: format!("{name}-orders"),
            stg_topic: format!("{name}-stg"),
            dds_topic: format!("{name}-dds"),
            tags_topic: format!("{name}-tags"),
            kafka_security: services.kafka_security.clone(),
            name,
            pg_admin: services.pg_admin,
            _redis: own_redis,
        };
        env.dwh_ok(&["migrate", "--partitions", &partitions.to_string()]);
        ensure_job_users(&env.pg_admin).await;
        env
    }

    /// The URL job `job` logs in with: its user, a member of `dwh_<job>`.
    pub fn job_url(&self, job: &str) -> String {
        let mut url = url::Url::parse(&self.pg_url).expect("a PostgreSQL URL");
        url.set_username(&job_user(job)).unwrap();
        url.set_password(Some(ROLE_PASSWORD)).unwrap();
        url.to_string()
    }

    /// The URL a `dwh <args>` runs with: the job's own for a job, the owner's for the rest.
    fn url_for(&self, args: &[&str]) -> String {
        match args.first().copied() {
            Some("stg" | "snapshot" | "backfill") => self.job_url("stg"),
            Some(job @ ("dds" | "cdm")) => self.job_url(job),
            _ => self.pg_url.clone(),
        }
    }

    /// `dwh <args>` with this environment, waited for.
    pub fn dwh(&self, args: &[&str]) -> Output {
        self.command(args, &[])
            .output()
            .expect("the dwh binary runs")
    }

    /// `dwh <args>` that must succeed; returns its stdout.
    pub fn dwh_ok(&self, args: &[&str]) -> String {
        self.dwh_ok_with(args, &[])
    }

    /// [`Env::dwh_ok`] with extra env vars.
    pub fn dwh_ok_with(&self, args: &[&str], extra_env: &[(&str, &str)]) -> String {
        let out = self
            .command(args, extra_env)
            .output()
            .expect("the dwh binary runs");
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
            .env("DWH_PG_URL", self.url_for(args))
            .env("DWH_REDIS_URL", &self.redis_url)
            .env("DWH_KAFKA_BROKERS", &self.brokers)
            .env("DWH_ORDERS_TOPIC", &self.orders_topic)
            .env("DWH_STG_TOPIC", &self.stg_topic)
            .env("DWH_DDS_TOPIC", &self.dds_topic)
            .env("DWH_TAGS_TOPIC", &self.tags_topic)
            .env_remove("DWH_FAULT")
            .env_remove("DWH_PAUSE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in KAFKA_SECURITY_VARS {
            cmd.env_remove(var);
        }
        for (k, v) in &self.kafka_security {
            cmd.env(k, v);
        }
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

    /// Replay the testdata's users and restaurants, and write its orders as `n` slices of about
    /// equal size into files of a scratch folder (removed with it): the crash tests load one slice
    /// per fault point.
    pub fn testdata_slices(&self, n: usize) -> (instances::Scratch, Vec<PathBuf>) {
        let dir = testdata();
        self.dwh_ok(&[
            "replay",
            dir.join("users.jsonl").to_str().unwrap(),
            dir.join("restaurants.jsonl").to_str().unwrap(),
        ]);
        let orders = std::fs::read_to_string(dir.join("orders.jsonl")).unwrap();
        let lines: Vec<&str> = orders.lines().collect();
        let scratch = instances::Scratch::new("slices");
        let files = lines
            .chunks(lines.len().div_ceil(n))
            .enumerate()
            .map(|(i, slice)| {
                let file = scratch.0.join(format!("{i}.jsonl"));
                std::fs::write(&file, slice.join("\n")).unwrap();
                file
            })
            .collect();
        (scratch, files)
    }

    /// `dwh <args>` with `DWH_FAULT=<args[0]>:<point>`: it must die, at that point.
    pub fn crash_at(&self, args: &[&str], point: &str) {
        let fault = format!("{}:{point}", args[0]);
        let out = self
            .command(args, &[("DWH_FAULT", &fault)])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{fault}: the run must die");
        assert!(
            stderr.contains(&format!("injected crash at {point}")),
            "{fault}: the point was never reached: {stderr}"
        );
    }

    /// Run stg, dds and cdm once each.
    pub fn pipeline(&self) {
        for job in ["stg", "dds", "cdm"] {
            self.dwh_ok(&[job]);
        }
    }

    /// A client of this test's database, as its owner.
    pub async fn pg(&self) -> Client {
        connect(&self.pg_url).await
    }

    /// A client of this test's database, as job `job`'s user.
    pub async fn pg_as(&self, job: &str) -> Client {
        connect(&self.job_url(job)).await
    }

    /// Messages currently in `topic` (sum over partitions of high − low watermark).
    pub fn topic_len(&self, topic: &str) -> i64 {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
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
        let (name, admin) = (self.name.clone(), self.pg_admin.clone());
        // The test's topics go too (a private cluster may be gone already; a SASL_SSL one keeps
        // them: the settings for it are the dwh binary's business, not the harness's).
        let topics = [
            &self.orders_topic,
            &self.stg_topic,
            &self.dds_topic,
            &self.tags_topic,
        ]
        .map(|t| t.clone());
        let brokers = self.kafka_security.is_empty().then(|| self.brokers.clone());
        // Drop runs inside the test's runtime: clean up on a thread with a runtime of its own.
        // A private cluster may be gone already; then there is nothing to clean.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                if let Some(brokers) = brokers {
                    let kafka: Option<AdminClient<DefaultClientContext>> = ClientConfig::new()
                        .set("bootstrap.servers", &brokers)
                        .create()
                        .ok();
                    if let Some(kafka) = kafka {
                        let topics = topics.each_ref().map(String::as_str);
                        let options =
                            AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)));
                        let _ = kafka.delete_topics(&topics, &options).await;
                    }
                }
                let (client, connection) = tokio_postgres::connect(&admin, NoTls).await.ok()?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// `url` with its database replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let mut url = url::Url::parse(url).expect("a PostgreSQL URL");
    url.set_path(&format!("/{database}"));
    url.to_string()
}

/// The tests' login users of the job roles, made once per cluster (roles belong to the cluster;
/// parallel tests may race to make them, and the loser's attempt is ignored).
async fn ensure_job_users(admin: &str) {
    let client = connect(admin).await;
    for job in JOBS {
        let user = job_user(job);
        let sql = format!(
            "DO $$ BEGIN
                 IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{user}') THEN
                     CREATE ROLE {user} LOGIN PASSWORD '{ROLE_PASSWORD}' IN ROLE dwh_{job};
                 END IF;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
             END $$"
        );
        client
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("making {user}: {e}"));
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

/// The stderr of a run that must have failed with exactly one plain line: that line.
pub fn one_line_failure(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected a failure: {out:?}");
    let line = stderr.trim_end();
    assert_eq!(line.lines().count(), 1, "one plain line, got: {stderr}");
    line.to_owned()
}

/// The `key=N` figure of a run's summary line (`consumed=3082 loaded=2980 …`).
pub fn figure(summary: &str, key: &str) -> Option<i64> {
    summary
        .split_whitespace()
        .find_map(|part| part.strip_prefix(key)?.strip_prefix('='))
        .and_then(|n| n.parse().ok())
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

/// A two-column query as a map from the first column to the second.
pub async fn pairs<K, V>(client: &Client, sql: &str) -> std::collections::BTreeMap<K, V>
where
    K: Ord + for<'a> tokio_postgres::types::FromSql<'a>,
    V: for<'a> tokio_postgres::types::FromSql<'a>,
{
    client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
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
