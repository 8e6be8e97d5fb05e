//! The crash campaign: a backfill through stg → dds → cdm while jobs are SIGKILLed at random
//! moments, then the vault and both showcases audited against the oracle.
//!
//! Rounds run stg, dds and cdm once each, every run bounded by `--max-messages` so a backfill
//! takes many runs. A run picked for a kill (seeded: the same seed picks the same runs and
//! delays) is SIGKILLed after a random delay between 0 and 1.5× the job's typical run time:
//! while it starts, republishes, drains, loads, commits or publishes. Rounds go on until every
//! job has taken its share of the kills and a round finds nothing left to do. Then the warehouse
//! must equal the oracle, computed from the input files by code that shares nothing with dwh.
//!
//! CI runs the default (2,000 orders, 10 kills, debug build); `scripts/chaos` runs the campaign
//! (20,000 orders, 120 kills, release build) and prints the table. Settings, from the
//! environment: `CHAOS_ORDERS`, `CHAOS_KILLS`, `CHAOS_SEED`, `CHAOS_MAX_MESSAGES`,
//! `CHAOS_PARTITIONS`.

mod harness;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::oracle::Oracle;
use harness::showcases::{assert_matches, audit};
use harness::{figure, repo, Env};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const JOBS: [&str; 3] = ["stg", "dds", "cdm"];

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        })
        .unwrap_or(default)
}

#[derive(Debug, Default)]
struct JobStats {
    runs: u64,
    kills: u64,
    /// Runs that ended on their own (including those that found nothing to do).
    completed: u64,
    /// Runs that found their partitions locked by a run whose connection was not closed yet.
    skipped: u64,
    /// Seconds of the completed runs that did work.
    busy_seconds: f64,
    busy_runs: u64,
}

impl JobStats {
    /// The run time a kill delay is drawn against.
    fn typical(&self) -> Duration {
        if self.busy_runs == 0 {
            return Duration::from_millis(300);
        }
        Duration::from_secs_f64(self.busy_seconds / self.busy_runs as f64)
    }
}

fn generate(dir: &Path, orders: u64, users: u64, seed: u64) {
    let status = Command::new("python3")
        .arg(repo().join("testdata/generate.py"))
        .args(["--seed", &seed.to_string()])
        .args(["--orders", &orders.to_string()])
        .args(["--users", &users.to_string()])
        .args(["--out", dir.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("python3 runs testdata/generate.py");
    assert!(status.success(), "generating the campaign's data");
}

#[tokio::test]
async fn nothing_is_lost_or_counted_twice_when_jobs_are_killed_at_random() {
    let orders = setting("CHAOS_ORDERS", 2_000);
    let kills = setting("CHAOS_KILLS", 10);
    let seed = setting("CHAOS_SEED", 1);
    let max_messages = setting(
        "CHAOS_MAX_MESSAGES",
        (orders / kills.max(1)).clamp(20, 5_000),
    );
    let partitions = setting("CHAOS_PARTITIONS", 2) as u32;
    let users = (orders / 20).max(100);
    let started = Instant::now();

    let env = Env::with_partitions(partitions).await;
    let dir = std::env::temp_dir().join(format!("{}-chaos", env.name));
    std::fs::create_dir_all(&dir).unwrap();
    generate(&dir, orders, users, seed);
    let oracle = Oracle::from_dir(&dir);
    env.dwh_ok(&["replay", dir.to_str().unwrap()]);

    // Each job's share of the kills: stg takes the remainder.
    let quota: BTreeMap<&str, u64> = JOBS
        .iter()
        .enumerate()
        .map(|(i, job)| (*job, kills / 3 + u64::from(i == 0) * (kills % 3)))
        .collect();
    let mut stats: BTreeMap<&str, JobStats> =
        JOBS.iter().map(|j| (*j, JobStats::default())).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let max = max_messages.to_string();
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 20_000, "the campaign does not converge: {stats:?}");
        let mut busy = false;
        for job in JOBS {
            let s = stats.get_mut(job).unwrap();
            let kill_after = (s.kills < quota[job] && rng.random_bool(0.6))
                .then(|| s.typical().mul_f64(rng.random_range(0.0..1.5)));
            let out_path = dir.join(format!("{job}.out"));
            let err_path = dir.join(format!("{job}.err"));
            // CDM recomputes a batch's users 13 at a time: kills land between its steps too.
            let mut command = env.command(
                &[job, "--max-messages", &max, "--lock-wait-secs", "30"],
                &[("DWH_CDM_CHUNK", "13")],
            );
            command
                .stdout(File::create(&out_path).unwrap())
                .stderr(File::create(&err_path).unwrap());
            let run_started = Instant::now();
            let mut child = tokio::process::Command::from(command).spawn().unwrap();
            let status = match kill_after {
                None => child.wait().await.unwrap(),
                Some(delay) => match tokio::time::timeout(delay, child.wait()).await {
                    Ok(status) => status.unwrap(),
                    Err(_) => {
                        child.start_kill().unwrap();
                        child.wait().await.unwrap()
                    }
                },
            };
            let seconds = run_started.elapsed().as_secs_f64();
            s.runs += 1;
            if status.signal() == Some(9) {
                s.kills += 1;
                busy = true;
                continue;
            }
            let stdout = std::fs::read_to_string(&out_path).unwrap();
            assert!(
                status.success(),
                "dwh {job} failed on its own ({status}): {}\n{stdout}",
                std::fs::read_to_string(&err_path).unwrap()
            );
            s.completed += 1;
            if stdout.contains("another run holds the lock") {
                s.skipped += 1;
                busy = true;
            } else if figure(&stdout, "consumed").unwrap_or(0) > 0
                || figure(&stdout, "published").unwrap_or(0) > 0
            {
                s.busy_seconds += seconds;
                s.busy_runs += 1;
                busy = true;
            }
        }
        if !busy && JOBS.iter().all(|j| stats[j].kills >= quota[j]) {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();

    let audit = audit(&env, &oracle).await;
    println!(
        "chaos: seed {seed}, {orders} orders generated ({} lines, {} junk, {} distinct orders), \
         {users} users, {partitions} partitions, at most {max_messages} messages per run, {rounds} rounds",
        oracle.lines,
        oracle.junk,
        oracle.orders.len()
    );
    println!("| job | runs | killed | completed | skipped (locked) | typical run s |");
    println!("|---|---:|---:|---:|---:|---:|");
    for job in JOBS {
        let s = &stats[job];
        println!(
            "| {job} | {} | {} | {} | {} | {:.2} |",
            s.runs,
            s.kills,
            s.completed,
            s.skipped,
            s.typical().as_secs_f64()
        );
    }
    let total = |f: fn(&JobStats) -> u64| stats.values().map(f).sum::<u64>();
    println!(
        "| all | {} | {} | {} | {} | |",
        total(|s| s.runs),
        total(|s| s.kills),
        total(|s| s.completed),
        total(|s| s.skipped)
    );
    println!();
    println!("| orders in | rows compared | lost | double-counted | seconds |");
    println!("|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {} | {} | {} | {seconds:.1} |",
        oracle.lines, audit.rows, audit.lost, audit.doubled
    );

    assert_eq!((audit.lost, audit.doubled), (0, 0), "{audit:?}");
    for job in JOBS {
        assert!(stats[job].kills >= quota[job], "{job}: {:?}", stats[job]);
    }
    assert_matches(&env, &oracle, "after the campaign").await;
    std::fs::remove_dir_all(dir).unwrap();
}
