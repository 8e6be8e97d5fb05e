//! Parallel runs: 8 partitions, 4 runs of each job at once (`--worker i/4`), over the testdata
//! with its status changes and duplicates; the showcases equal the oracle and every order is once
//! in DDS — also when one run is killed mid-batch and the others go on.

mod harness;

use std::process::Child;

use harness::oracle::Oracle;
use harness::showcases::assert_matches;
use harness::{count, Env};

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
    for table in ["dds.h_order", "dds.l_order_user", "stg.order_events"] {
        let sql = format!("SELECT count(*) FROM {table}");
        assert_eq!(count(&pg, &sql).await, orders, "{table}");
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
