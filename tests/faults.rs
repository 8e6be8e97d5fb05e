//! Every named step of every job, crashed at deterministically (`DWH_FAULT=<job>:<point>`, a real
//! process abort): the crash leaves either nothing (before the commit) or a committed batch (after
//! it), the next run finishes the work, and at the end the vault and both showcases equal the
//! oracle: nothing lost, nothing counted twice.
//!
//! Each job gets one warehouse. The testdata orders are split into one slice per point; for each
//! point a slice is replayed, the jobs upstream run cleanly, the job under test crashes at the
//! point, then it and the jobs downstream run cleanly.

mod harness;

use harness::oracle::Oracle;
use harness::showcases::{assert_matches, audit};
use harness::{count, Env};

/// Points before the commit: the batch must leave no trace, offsets stay where they were.
const BEFORE_COMMIT: &[&str] = &[
    "before-drain",
    "after-drain",
    "after-copy",
    "after-merge",
    "before-commit",
];
/// Points after the commit: the batch is kept, offsets have moved.
const AFTER_COMMIT: &[&str] = &["after-commit", "mid-publish", "after-publish"];

const JOBS: [&str; 3] = ["stg", "dds", "cdm"];

async fn stored_offsets(env: &Env, job: &str) -> i64 {
    count(
        &env.pg().await,
        &format!("SELECT coalesce(sum(next_offset), 0)::int8 FROM dwh.offsets WHERE job = '{job}'"),
    )
    .await
}

/// Crash `job` once at each of `points`, each time on a new slice of the testdata.
async fn crash_everywhere(job: &str, points: &[&str]) {
    let env = Env::new().await;
    let (_slices, files) = env.testdata_slices(points.len());
    let position = JOBS.iter().position(|j| *j == job).unwrap();

    for (point, file) in points.iter().zip(&files) {
        env.dwh_ok(&["replay", file.to_str().unwrap()]);
        for upstream in &JOBS[..position] {
            env.dwh_ok(&[upstream]);
        }

        let before = stored_offsets(&env, job).await;
        let fault = format!("{job}:{point}");
        env.crash_at(&[job], point);
        let after = stored_offsets(&env, job).await;
        if BEFORE_COMMIT.contains(point) {
            assert_eq!(after, before, "{fault}: offsets moved without a commit");
        } else {
            assert!(
                after > before,
                "{fault}: the committed batch lost its offsets"
            );
        }

        for rest in &JOBS[position..] {
            env.dwh_ok(&[rest]);
        }
    }

    let oracle = Oracle::testdata();
    assert_matches(
        &env,
        &oracle,
        &format!("after crashing {job} at {points:?}"),
    )
    .await;
    let audit = audit(&env, &oracle).await;
    assert_eq!((audit.lost, audit.doubled), (0, 0), "{job}: {audit:?}");
    assert!(audit.rows > 0);
}

fn every_point() -> Vec<&'static str> {
    BEFORE_COMMIT.iter().chain(AFTER_COMMIT).copied().collect()
}

#[tokio::test]
async fn stg_survives_a_crash_at_every_step() {
    crash_everywhere("stg", &every_point()).await;
}

#[tokio::test]
async fn dds_survives_a_crash_at_every_step() {
    crash_everywhere("dds", &every_point()).await;
}

/// CDM publishes nothing: it has no mid-publish.
#[tokio::test]
async fn cdm_survives_a_crash_at_every_step() {
    let points: Vec<&str> = every_point()
        .into_iter()
        .filter(|p| *p != "mid-publish")
        .collect();
    crash_everywhere("cdm", &points).await;
}

/// `dwh cdm --full` crashed after its first chunk: the next `--full` recomputes everything.
#[tokio::test]
async fn a_full_recompute_survives_a_crash_between_chunks() {
    let env = Env::new().await;
    env.replay_testdata();
    env.pipeline();
    env.pg()
        .await
        .batch_execute(
            "TRUNCATE cdm.user_product_counters, cdm.user_category_counters, cdm.user_tags",
        )
        .await
        .unwrap();
    env.crash_at(&["cdm", "--full", "--chunk", "10"], "mid-full");
    let users = count(
        &env.pg().await,
        "SELECT count(DISTINCT user_id) FROM cdm.user_product_counters",
    )
    .await;
    assert!(
        (1..=10).contains(&users),
        "one chunk committed, got {users} users"
    );
    env.dwh_ok(&["cdm", "--full", "--chunk", "10"]);
    assert_matches(&env, &Oracle::testdata(), "after the crashed --full").await;
}

/// The audit the crash tests and the campaign rely on sees a lost order line and a double count.
#[tokio::test]
async fn the_audit_sees_a_lost_line_and_a_double_count() {
    let env = Env::new().await;
    let oracle = Oracle::testdata();
    env.replay_testdata();
    env.pipeline();
    let clean = audit(&env, &oracle).await;
    assert_eq!((clean.lost, clean.doubled), (0, 0), "{clean:?}");
    env.pg()
        .await
        .batch_execute(
            "DELETE FROM dds.l_order_product
             WHERE ctid = (SELECT min(ctid) FROM dds.l_order_product);
             UPDATE cdm.user_category_counters SET order_cnt = order_cnt + 1
             WHERE ctid = (SELECT min(ctid) FROM cdm.user_category_counters)",
        )
        .await
        .unwrap();
    let found = audit(&env, &oracle).await;
    assert_eq!((found.lost, found.doubled), (1, 1), "{found:?}");
}
