//! Service outages, against private instances on spare ports (a throw-away PostgreSQL cluster, a
//! redis-server, a one-node Apache Kafka cluster), so stopping one disturbs nothing else.
//!
//! For each service: a short outage that the run's retries ride out, and one that outlasts the
//! retry bound or hits the load transaction, which ends the run with one plain line naming the
//! service and leaves nothing half-written. After each, the next runs complete and the showcases
//! equal the oracle. "Mid-run" is made exact with a pause point (`DWH_PAUSE`): the run stops at a
//! named step and waits while the test takes the service away.

mod harness;

use std::path::PathBuf;

use harness::instances::{KafkaCluster, PgCluster, RedisServer, Scratch};
use harness::oracle::Oracle;
use harness::runs::{Background, Pause};
use harness::showcases::assert_matches;
use harness::{count, Env, Services};

const PG_PASSWORD: &str = "outage-pg-s3cret";
/// Default logging, plus each retry (logged at info) so the test sees when a run is retrying.
const LOG_RETRIES: (&str, &str) = (
    "DWH_LOG",
    "warn,dwh_shared::retry=info,librdkafka=off,rdkafka=off",
);

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
    let mut run = Background::start(env.command(&["stg", "--retry-max-secs", "5"], &pause.env()));
    pause.reached(&mut run);
    cluster.restart();
    pause.release();
    let line = run.finish();
    let line = line.failed_naming("PostgreSQL", &[PG_PASSWORD]);
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
    // stg.order_events holds every order version (README "The model").
    assert_eq!(
        written(&env).await[0],
        oracle.version_count() as i64,
        "every order version once"
    );

    // Down for longer than the bound: dds gives up after about 2 s, naming PostgreSQL.
    cluster.stop();
    let done = Background::start(env.command(&["dds", "--retry-max-secs", "2"], &[])).finish();
    let line = done.failed_naming("PostgreSQL", &[PG_PASSWORD]);
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
    // One node: killed, Kafka is gone altogether. It keeps its data on disk, so its topics and
    // messages are back when it is.
    let mut kafka = KafkaCluster::start(1);
    let env = Env::on(Services::default().with_broker(&kafka), 1).await;
    let oracle = Oracle::testdata();
    env.replay_testdata();

    // Killed while stg holds its locks and is about to drain; back while the drain retries.
    let pause = Pause::at(&env, "stg:before-drain");
    let mut run = Background::start(env.command(
        &["stg", "--retry-max-secs", "60"],
        &[pause.env()[0], pause.env()[1], LOG_RETRIES],
    ));
    pause.reached(&mut run);
    kafka.kill(1);
    pause.release();
    run.logged("retrying in");
    kafka.start_again(1);
    let done = run.finish();
    let line = done.succeeded();
    assert!(
        line.contains(&format!("published={}", oracle.stg_messages())),
        "{line}"
    );
    eprintln!(
        "stg rode out the broker killed mid-run: {:.1} s",
        done.seconds
    );

    // Killed between dds's commit and its publish, for longer than the bound: the run ends naming
    // Kafka; the batch is committed with its outbox, which the next run publishes.
    let pause = Pause::at(&env, "dds:after-commit");
    let mut run = Background::start(env.command(&["dds", "--retry-max-secs", "2"], &pause.env()));
    pause.reached(&mut run);
    kafka.kill(1);
    pause.release();
    let done = run.finish();
    done.failed_naming("Kafka", &[]);
    let pg = env.pg().await;
    let unpublished = count(
        &pg,
        "SELECT count(*) FROM dwh.batches WHERE job = 'dds' AND published_at IS NULL",
    )
    .await;
    assert_eq!(unpublished, 1, "committed, not published");
    let queued = count(&pg, "SELECT count(*) FROM dwh.outbox WHERE job = 'dds'").await;
    assert!(queued > 0);

    kafka.start_again(1);
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
    let mut run = Background::start(env.command(
        &["stg", "--retry-max-secs", "60"],
        &[pause.env()[0], pause.env()[1], LOG_RETRIES],
    ));
    pause.reached(&mut run);
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
    let mut run = Background::start(env.command(&["stg", "--retry-max-secs", "2"], &pause.env()));
    pause.reached(&mut run);
    redis.stop();
    pause.release();
    let done = run.finish();
    done.failed_naming("Redis", &[]);
    assert_eq!(written(&env).await, second, "nothing half-written");

    // Back, but empty: still no run loads orders without their dictionaries.
    redis.start_again();
    let done = Background::start(env.command(&["stg", "--retry-max-secs", "1"], &[])).finish();
    let line = done.failed_naming("Redis", &[]);
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
