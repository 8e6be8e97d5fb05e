//! Service outages, against private instances on spare ports (a throw-away PostgreSQL cluster, a
//! redis-server, a tansu broker), so stopping one disturbs nothing else.
//!
//! For each service: a short outage that the run's retries ride out, and one that outlasts the
//! retry bound or hits the load transaction, which ends the run with one plain line naming the
//! service and leaves nothing half-written. After each, the next runs complete and the showcases
//! equal the oracle. "Mid-run" is made exact with a pause point (`DWH_PAUSE`): the run stops at a
//! named step and waits while the test takes the service away.

mod harness;

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use harness::instances::{Broker, PgCluster, RedisServer, Scratch};
use harness::oracle::Oracle;
use harness::showcases::assert_matches;
use harness::{count, Env, Services};

const PG_PASSWORD: &str = "outage-pg-s3cret";
/// Default logging, plus each retry (logged at info) so the test sees when a run is retrying.
const LOG_RETRIES: (&str, &str) = (
    "DWH_LOG",
    "warn,dwh_shared::retry=info,librdkafka=off,rdkafka=off",
);

/// Wait until `done` holds, or fail after `limit`.
fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A pause point: the run creates the file when it reaches the step and waits until it is gone.
struct Pause {
    file: PathBuf,
    point: String,
}

impl Pause {
    fn at(env: &Env, point: &str) -> Pause {
        let file =
            std::env::temp_dir().join(format!("{}-pause-{}", env.name, point.replace(':', "-")));
        let _ = std::fs::remove_file(&file);
        Pause {
            file,
            point: point.to_owned(),
        }
    }

    fn env(&self) -> [(&str, &str); 2] {
        [
            ("DWH_PAUSE", self.point.as_str()),
            ("DWH_PAUSE_FILE", self.file.to_str().unwrap()),
        ]
    }

    fn reached(&self) {
        wait_until(Duration::from_secs(60), &self.point, || self.file.exists());
    }

    fn release(&self) {
        std::fs::remove_file(&self.file).unwrap();
    }
}

/// A `dwh` run in the background, its stderr read as it comes (retries are logged at info).
struct Background {
    child: Child,
    stderr: Arc<Mutex<String>>,
    reader: JoinHandle<()>,
    started: Instant,
}

struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    seconds: f64,
}

impl Background {
    fn start(mut cmd: Command) -> Background {
        let started = Instant::now();
        let mut child = cmd.spawn().expect("the dwh binary runs");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut all = sink.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        Background {
            child,
            stderr,
            reader,
            started,
        }
    }

    /// Wait until the run logs a line containing `needle`.
    fn logged(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.stderr.lock().unwrap().contains(needle) {
            let so_far = self.stderr.lock().unwrap().clone();
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log: {so_far}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(mut self) -> Finished {
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let status = self.child.wait().unwrap();
        let seconds = self.started.elapsed().as_secs_f64();
        self.reader.join().unwrap();
        let stderr = self.stderr.lock().unwrap().clone();
        Finished {
            status,
            stdout,
            stderr,
            seconds,
        }
    }
}

impl Finished {
    fn succeeded(&self) -> &str {
        assert!(self.status.success(), "{}", self.stderr);
        &self.stdout
    }

    /// The run failed with one line naming `service`, and printed no password.
    fn failed_naming(&self, service: &str) -> &str {
        assert_eq!(
            self.status.code(),
            Some(1),
            "{}{}",
            self.stdout,
            self.stderr
        );
        let line = self.stderr.trim_end();
        assert_eq!(line.lines().count(), 1, "one line: {line}");
        assert!(line.contains(&format!("{service} at ")), "{line}");
        for secret in [PG_PASSWORD, harness::ROLE_PASSWORD] {
            assert!(!line.contains(secret), "password printed: {line}");
        }
        eprintln!("as expected after {:.1} s: {line}", self.seconds);
        line
    }
}

/// The bundled order lines in `parts` files of about equal size, written into `dir`.
fn split_orders(dir: &Scratch, parts: usize) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(harness::testdata().join("orders.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let size = lines.len().div_ceil(parts);
    let dir = &dir.0;
    lines
        .chunks(size)
        .enumerate()
        .map(|(i, chunk)| {
            let file = dir.join(format!("orders-{i}.jsonl"));
            std::fs::write(&file, chunk.join("\n")).unwrap();
            file
        })
        .collect()
}

fn replay(env: &Env, files: &[PathBuf]) {
    let mut args = vec!["replay"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    env.dwh_ok(&args);
}

fn dictionaries() -> [PathBuf; 2] {
    [
        harness::testdata().join("users.jsonl"),
        harness::testdata().join("restaurants.jsonl"),
    ]
}

/// Rows that tell whether anything of a failed run was written.
async fn written(env: &Env) -> [i64; 5] {
    let pg = env.pg().await;
    let mut out = [0; 5];
    for (slot, table) in out.iter_mut().zip([
        "stg.order_events",
        "dwh.offsets",
        "dwh.batches",
        "dwh.outbox",
        "dwh.dead_letters",
    ]) {
        *slot = count(&pg, &format!("SELECT count(*) FROM {table}")).await;
    }
    out
}

#[tokio::test]
async fn postgres_restarted_mid_run_stopped_briefly_and_for_long() {
    let cluster = PgCluster::with_password(PG_PASSWORD);
    let env = Env::on(Services::default().with_pg(&cluster), 1).await;
    let oracle = Oracle::testdata();
    env.replay_testdata();

    // Restarted while the run is inside its load transaction: the run ends, nothing is written.
    let pause = Pause::at(&env, "stg:after-copy");
    let run = Background::start(env.command(&["stg", "--retry-max-secs", "5"], &pause.env()));
    pause.reached();
    cluster.restart();
    pause.release();
    let line = run.finish();
    let line = line.failed_naming("PostgreSQL");
    assert!(
        line.contains("postgres://dwh_test_stg:****@127.0.0.1:"),
        "{line}"
    );
    assert_eq!(written(&env).await, [0; 5], "nothing half-written");
    assert_eq!(env.topic_len(&env.stg_topic), 0);

    // Down when the next run starts, back while it retries: the run rides it out.
    cluster.stop();
    let run = Background::start(env.command(&["stg", "--retry-max-secs", "60"], &[LOG_RETRIES]));
    run.logged("is unreachable");
    cluster.start_again();
    let done = run.finish();
    assert!(
        done.succeeded().starts_with("stg: batch="),
        "{}",
        done.stdout
    );
    eprintln!(
        "stg rode out PostgreSQL down at its start: {:.1} s",
        done.seconds
    );
    assert_eq!(
        written(&env).await[0],
        oracle.orders.len() as i64,
        "every order once"
    );

    // Down for longer than the bound: dds gives up after about 2 s, naming PostgreSQL.
    cluster.stop();
    let done = Background::start(env.command(&["dds", "--retry-max-secs", "2"], &[])).finish();
    let line = done.failed_naming("PostgreSQL");
    assert!(
        line.contains("is unreachable") && line.contains("gave up after"),
        "{line}"
    );
    assert!((1.5..10.0).contains(&done.seconds), "{:.1} s", done.seconds);

    cluster.start_again();
    env.dwh_ok(&["dds"]);
    env.dwh_ok(&["cdm"]);
    assert_matches(&env, &oracle, "after PostgreSQL came back").await;
}

#[tokio::test]
async fn the_broker_killed_and_brought_back() {
    let mut broker = Broker::start();
    let env = Env::on(Services::default().with_broker(&broker), 1).await;
    let oracle = Oracle::testdata();
    env.replay_testdata();

    // Killed while stg holds its locks and is about to drain; back while the drain retries.
    let pause = Pause::at(&env, "stg:before-drain");
    let run = Background::start(env.command(
        &["stg", "--retry-max-secs", "60"],
        &[pause.env()[0], pause.env()[1], LOG_RETRIES],
    ));
    pause.reached();
    broker.kill();
    pause.release();
    run.logged("retrying in");
    broker.start_again();
    let done = run.finish();
    let line = done.succeeded();
    assert!(
        line.contains(&format!("published={}", oracle.orders.len())),
        "{line}"
    );
    eprintln!(
        "stg rode out the broker killed mid-run: {:.1} s",
        done.seconds
    );

    // Killed between dds's commit and its publish, for longer than the bound: the run ends naming
    // Kafka; the batch is committed with its outbox, which the next run publishes.
    let pause = Pause::at(&env, "dds:after-commit");
    let run = Background::start(env.command(&["dds", "--retry-max-secs", "2"], &pause.env()));
    pause.reached();
    broker.kill();
    pause.release();
    let done = run.finish();
    done.failed_naming("Kafka");
    let pg = env.pg().await;
    let unpublished = count(
        &pg,
        "SELECT count(*) FROM dwh.batches WHERE job = 'dds' AND published_at IS NULL",
    )
    .await;
    assert_eq!(unpublished, 1, "committed, not published");
    let queued = count(&pg, "SELECT count(*) FROM dwh.outbox WHERE job = 'dds'").await;
    assert!(queued > 0);

    broker.start_again();
    let line = env.dwh_ok(&["dds"]);
    assert!(line.contains(&format!("published={queued}")), "{line}");
    env.dwh_ok(&["cdm"]);
    assert_matches(&env, &oracle, "after the broker came back").await;
}

#[tokio::test]
async fn redis_restarted_comes_back_empty_until_the_dictionaries_are_reloaded() {
    let mut redis = RedisServer::start();
    let env = Env::on(Services::default().with_redis(&redis), 1).await;
    let oracle = Oracle::testdata();
    let scratch = Scratch::new("outage-orders");
    let parts = split_orders(&scratch, 3);
    replay(&env, &dictionaries());
    replay(&env, &parts[..1]);
    env.dwh_ok(&["stg"]);
    let first = written(&env).await;

    // Restarted (empty) while stg runs; the dictionaries come back while it retries: it waits
    // for them instead of loading orders without names and categories.
    replay(&env, &parts[1..2]);
    let pause = Pause::at(&env, "stg:before-drain");
    let run = Background::start(env.command(
        &["stg", "--retry-max-secs", "60"],
        &[pause.env()[0], pause.env()[1], LOG_RETRIES],
    ));
    pause.reached();
    redis.restart();
    pause.release();
    run.logged("it lost its data");
    replay(&env, &dictionaries());
    let done = run.finish();
    assert!(done.succeeded().contains("loaded="), "{}", done.stdout);
    eprintln!(
        "stg rode out Redis restarted mid-run: {:.1} s",
        done.seconds
    );
    let second = written(&env).await;

    // Down for longer than the bound: the run ends naming Redis, nothing is written.
    replay(&env, &parts[2..]);
    let pause = Pause::at(&env, "stg:before-drain");
    let run = Background::start(env.command(&["stg", "--retry-max-secs", "2"], &pause.env()));
    pause.reached();
    redis.stop();
    pause.release();
    let done = run.finish();
    done.failed_naming("Redis");
    assert_eq!(written(&env).await, second, "nothing half-written");

    // Back, but empty: still no run loads orders without their dictionaries.
    redis.start_again();
    let done = Background::start(env.command(&["stg", "--retry-max-secs", "1"], &[])).finish();
    let line = done.failed_naming("Redis");
    assert!(line.contains("it lost its data"), "{line}");
    assert_eq!(written(&env).await, second, "nothing half-written");

    // The dictionaries reloaded: everything completes and matches.
    replay(&env, &dictionaries());
    env.dwh_ok(&["stg"]);
    assert!(written(&env).await[0] > first[0]);
    env.dwh_ok(&["dds"]);
    env.dwh_ok(&["cdm"]);
    assert_matches(&env, &oracle, "after Redis came back").await;
}
