//! Parallel runs: 8 partitions, 4 runs of each job at once (`--worker i/4`), over the testdata
//! with its status changes and duplicates; the showcases equal the oracle and every order is once
//! in DDS — also when one run is killed mid-batch and the others go on.
//!
//! And runs that find the lock held: a run held at a pause point (`DWH_PAUSE`) keeps its
//! partition locks, so a second run started meanwhile meets them for certain. It says so and does
//! nothing; `dwh cdm --full` and `dwh backfill`, which need every partition, do nothing when
//! another run holds any one of them.

mod harness;

use std::process::Child;

use harness::oracle::Oracle;
use harness::runs::{Background, Pause};
use harness::showcases::assert_matches;
use harness::{count, figure, Env};

const WORKERS: usize = 4;

/// Start the 4 runs of `job` at once; the run `killed` (if any) crashes at `fault`.
fn spawn_all(env: &Env, job: &str, killed: Option<(usize, &str)>) -> Vec<(usize, Child)> {
    (0..WORKERS)
        .map(|i| {
            let worker = format!("{i}/{WORKERS}");
            let fault = match killed {
                Some((k, fault)) if k == i => vec![("DWH_FAULT", fault)],
                _ => vec![],
            };
            let child = env
                .command(&[job, "--worker", &worker], &fault)
                .spawn()
                .expect("dwh starts");
            (i, child)
        })
        .collect()
}

/// Run every job with 4 workers until a full round consumes nothing.
fn drain_in_parallel(env: &Env, mut killed: Option<(usize, &str)>) {
    for round in 0.. {
        assert!(round < 10, "the pipeline did not drain in 10 rounds");
        let mut consumed = 0;
        for job in ["stg", "dds", "cdm"] {
            for (i, child) in spawn_all(env, job, killed.filter(|_| job == "dds")) {
                let out = child.wait_with_output().unwrap();
                let stdout = String::from_utf8_lossy(&out.stdout);
                if killed.is_some_and(|(k, _)| k == i) && job == "dds" {
                    assert!(!out.status.success(), "the injected crash kills worker {i}");
                    continue;
                }
                assert!(
                    out.status.success(),
                    "{job} {i}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                consumed += stdout
                    .split_whitespace()
                    .find_map(|f| f.strip_prefix("consumed="))
                    .map_or(0, |n| n.parse::<usize>().unwrap());
            }
            if job == "dds" {
                killed = None;
            }
        }
        if consumed == 0 {
            return;
        }
    }
}

async fn assert_each_order_once_in_dds(env: &Env, oracle: &Oracle) {
    let pg = env.pg().await;
    let orders = oracle.orders.len() as i64;
    for table in ["dds.h_order", "dds.l_order_user", "stg.orders_current"] {
        let sql = format!("SELECT count(*) FROM {table}");
        assert_eq!(count(&pg, &sql).await, orders, "{table}");
    }
    // And each order version once (README "The model": STG and DDS's log keep every version;
    // the log one per update_ts).
    let logged: usize = oracle
        .orders
        .keys()
        .map(|id| oracle.dds_versions(*id).len())
        .sum();
    for (table, versions) in [
        ("stg.order_events", oracle.version_count()),
        ("dds.x_order_versions", logged),
    ] {
        let sql = format!("SELECT count(*) FROM {table}");
        assert_eq!(count(&pg, &sql).await, versions as i64, "{table}");
    }
    assert_eq!(count(&pg, "SELECT count(*) FROM dwh.outbox").await, 0);
}

async fn assert_each_order_once(env: &Env, oracle: &Oracle) {
    assert_each_order_once_in_dds(env, oracle).await;
    let pg = env.pg().await;
    let sql = "SELECT count(DISTINCT partition) FROM dwh.offsets WHERE job = 'stg'";
    assert_eq!(count(&pg, sql).await, 8, "offsets are stored per partition");
}

#[tokio::test]
async fn four_runs_of_each_job_share_eight_partitions() {
    let env = Env::with_partitions(8).await;
    let oracle = Oracle::testdata();
    env.replay_testdata();
    drain_in_parallel(&env, None);
    assert_each_order_once(&env, &oracle).await;
    assert_matches(&env, &oracle, "after 4 parallel runs per job").await;

    // `dwh status` shows the lag of every partition: all drained.
    let status: serde_json::Value =
        serde_json::from_str(&env.dwh_ok(&["status", "--json"])).unwrap();
    for job in status["jobs"].as_array().unwrap() {
        let lags = job["lag_per_partition"].as_object().unwrap();
        assert_eq!(lags.len(), 8, "{job}");
        assert!(lags.values().all(|lag| lag == 0), "{job}");
    }
}

#[tokio::test]
async fn a_killed_run_releases_its_partitions_to_the_next() {
    let env = Env::with_partitions(8).await;
    let oracle = Oracle::testdata();
    env.replay_testdata();
    // Worker 2 of dds dies mid-batch (after its merges, before its commit); the others go on,
    // and the next round's worker 2 takes its partitions over.
    drain_in_parallel(&env, Some((2, "dds:after-merge")));
    assert_each_order_once(&env, &oracle).await;
    assert_matches(&env, &oracle, "after a killed run").await;
}

#[tokio::test]
async fn the_hash_partitioned_vault_gives_the_same_showcases() {
    let env = Env::new().await;
    let oracle = Oracle::testdata();
    let ddl = harness::repo().join("sql/scale/partition_vault.sql");
    let out = std::process::Command::new("psql")
        .arg(&env.pg_url)
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            "partitions=4",
            "-f",
        ])
        .arg(&ddl)
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pg = env.pg().await;
    assert_eq!(
        count(&pg, "SELECT count(*) FROM pg_partitioned_table pt JOIN pg_class c ON c.oid = pt.partrelid WHERE c.relnamespace = 'dds'::regnamespace").await,
        4,
        "four order-grained tables are partitioned"
    );
    env.replay_testdata();
    env.pipeline();
    // Replays go through the same ON CONFLICT paths on partitioned tables.
    pg.execute("DELETE FROM dwh.offsets", &[]).await.unwrap();
    env.pipeline();
    assert_each_order_once_in_dds(&env, &oracle).await;
    assert_matches(&env, &oracle, "on a partitioned vault").await;
}

#[tokio::test]
async fn migrate_says_when_existing_topics_have_other_partitions() {
    let env = Env::with_partitions(8).await;
    let line = env.dwh_ok(&["migrate", "--partitions", "2"]);
    assert!(line.contains("created 0 topic(s)"), "{line}");
    assert!(
        line.contains(&format!(
            "topic {} has 8 partition(s), not 2",
            env.orders_topic
        )),
        "{line}"
    );
}

/// `dwh <args>` that must end at once (exit 0) with the line of a run that found the lock held.
fn assert_skipped(env: &Env, args: &[&str], line: &str) {
    let out = env.dwh(args);
    assert!(
        out.status.success(),
        "dwh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), line);
}

/// The summary line of a run that read all `messages` and loaded rows from them.
fn assert_loaded(line: &str, messages: i64) {
    assert_eq!(figure(line, "consumed"), Some(messages), "{line}");
    assert!(
        figure(line, "loaded").is_some_and(|rows| rows > 0),
        "{line}"
    );
}

/// A `dwh <args>` held at `point` (holding its partition locks there), and the pause holding it.
fn held_at(env: &Env, point: &str, args: &[&str]) -> (Pause, Background) {
    let pause = Pause::at(env, point);
    let mut run = Background::start(env.command(args, &pause.env()));
    pause.reached(&mut run);
    (pause, run)
}

#[tokio::test]
async fn a_second_stg_run_finds_the_lock_held_and_does_nothing() {
    let env = Env::new().await;
    env.replay_testdata();
    let messages = env.topic_len(&env.orders_topic);
    let (pause, first) = held_at(&env, "stg:before-drain", &["stg"]);

    assert_skipped(
        &env,
        &["stg", "--lock-wait-secs", "0"],
        "stg: another run holds the lock; nothing done",
    );
    let pg = env.pg().await;
    for table in ["stg.order_events", "dwh.batches", "dwh.offsets"] {
        let sql = format!("SELECT count(*) FROM {table}");
        assert_eq!(count(&pg, &sql).await, 0, "{table}");
    }
    assert_eq!(env.topic_len(&env.stg_topic), 0);

    pause.release();
    let done = first.finish();
    assert_loaded(done.succeeded(), messages);
    assert!(count(&pg, "SELECT count(*) FROM stg.order_events").await > 0);
    assert!(env.topic_len(&env.stg_topic) > 0);
}

#[tokio::test]
async fn cdm_full_does_nothing_while_a_worker_holds_one_partition() {
    let env = Env::with_partitions(2).await;
    let oracle = Oracle::testdata();
    env.replay_testdata();
    env.pipeline();
    // Showcases a recompute would fill again: empty ones show that none ran.
    let pg = env.pg().await;
    pg.batch_execute(
        "TRUNCATE cdm.user_product_counters, cdm.user_category_counters, cdm.user_tags",
    )
    .await
    .unwrap();
    let (pause, worker) = held_at(&env, "cdm:before-drain", &["cdm", "--worker", "0/2"]);

    assert_skipped(
        &env,
        &["cdm", "--full", "--lock-wait-secs", "0"],
        "cdm: another run holds the lock; nothing done",
    );
    for table in [
        "user_product_counters",
        "user_category_counters",
        "user_tags",
    ] {
        let sql = format!("SELECT count(*) FROM cdm.{table}");
        assert_eq!(count(&pg, &sql).await, 0, "cdm.{table}");
    }
    // The partition it did lock is free again: the other worker takes it at once.
    let line = env.dwh_ok(&["cdm", "--worker", "1/2", "--lock-wait-secs", "0"]);
    assert!(line.contains("consumed=0 "), "{line}");

    pause.release();
    worker.finish().succeeded();
    env.dwh_ok(&["cdm", "--full", "--lock-wait-secs", "0"]);
    assert_matches(&env, &oracle, "after cdm --full with every partition").await;
}

#[tokio::test]
async fn a_backfill_does_nothing_while_stg_holds_one_partition() {
    let dir = std::env::temp_dir().join(format!("dwh-archive-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let archive = dir.to_str().unwrap();
    let first = Env::with_partitions(2).await;
    first.replay_testdata();
    let messages = first.topic_len(&first.orders_topic);
    first.dwh_ok_with(&["stg"], &[("DWH_ARCHIVE", archive)]);
    drop(first);

    // A new warehouse; stg's worker 1/2 holds partition 1 of its (empty) orders topic.
    let env = Env::with_partitions(2).await;
    let (pause, worker) = held_at(&env, "stg:before-drain", &["stg", "--worker", "1/2"]);
    let backfill = [
        "backfill",
        "--from-archive",
        archive,
        "--lock-wait-secs",
        "0",
    ];
    assert_skipped(
        &env,
        &backfill,
        "backfill: another stg run holds the lock; nothing done",
    );
    let pg = env.pg().await;
    for table in ["stg.order_events", "dwh.batches", "dwh.offsets"] {
        let sql = format!("SELECT count(*) FROM {table}");
        assert_eq!(count(&pg, &sql).await, 0, "{table}");
    }
    assert_eq!(env.topic_len(&env.stg_topic), 0);
    // The partition it did lock is free again: stg's worker 0/2 takes it at once.
    let line = env.dwh_ok(&["stg", "--worker", "0/2", "--lock-wait-secs", "0"]);
    assert!(line.contains("consumed=0 "), "{line}");

    pause.release();
    worker.finish().succeeded();
    let line = env.dwh_ok(&backfill);
    assert!(line.contains("batches=1 "), "{line}");
    assert_loaded(&line, messages);
    assert!(count(&pg, "SELECT count(*) FROM stg.order_events").await > 0);
    std::fs::remove_dir_all(&dir).unwrap();
}
