//! The STG job against real services: every oddity of the testdata, replays, crashes before and
//! after the commit, two runs at once, bounded runs, snapshots, and the errors a user sees.

mod harness;

use std::collections::BTreeMap;

use harness::oracle::Oracle;
use harness::{count, fingerprint, pairs, Env};

/// Current status per order in STG (`stg.order_events` keeps every version: the view picks the
/// current one).
async fn stg_statuses(env: &Env) -> BTreeMap<i64, String> {
    pairs(
        &env.pg().await,
        "SELECT object_id, payload ->> 'final_status' FROM stg.orders_current",
    )
    .await
}

/// Every version per order in STG as (update_ts, status), in the order of the tie rule.
async fn stg_versions(env: &Env) -> BTreeMap<i64, Vec<(String, String)>> {
    let mut out: BTreeMap<i64, Vec<(String, String)>> = BTreeMap::new();
    for row in env
        .pg()
        .await
        .query(
            "SELECT object_id, to_char(update_ts, 'YYYY-MM-DD HH24:MI:SS'),
                    payload ->> 'final_status'
             FROM stg.order_events ORDER BY object_id, update_ts, src_partition, src_offset",
            &[],
        )
        .await
        .unwrap()
    {
        out.entry(row.get(0))
            .or_default()
            .push((row.get(1), row.get(2)));
    }
    out
}

#[tokio::test]
async fn loads_every_oddity_once_and_publishes_each_order() {
    let env = Env::new().await;
    let oracle = Oracle::testdata();
    env.replay_testdata();
    let line = env.dwh_ok(&["stg"]);
    assert!(line.starts_with("stg: batch="), "{line}");

    let expected = oracle.statuses();
    assert_eq!(
        stg_statuses(&env).await,
        expected,
        "newest version of every order wins"
    );
    let versions: BTreeMap<i64, Vec<(String, String)>> = oracle
        .orders
        .keys()
        .map(|id| (*id, oracle.versions(*id)))
        .collect();
    assert_eq!(
        stg_versions(&env).await,
        versions,
        "every distinct version of every order is kept, once"
    );

    let pg = env.pg().await;
    assert_eq!(
        count(&pg, "SELECT count(*) FROM dwh.dead_letters").await,
        oracle.junk as i64
    );
    assert_eq!(
        count(
            &pg,
            "SELECT count(*) FROM dwh.dead_letters WHERE reason = '' OR \"offset\" < 0"
        )
        .await,
        0,
        "every dead letter has its reason and position"
    );
    assert_eq!(
        count(&pg, "SELECT count(DISTINCT id) FROM stg.users").await,
        oracle.users.len() as i64
    );
    assert_eq!(
        count(&pg, "SELECT count(DISTINCT id) FROM stg.restaurants").await,
        oracle.restaurants.len() as i64
    );
    assert_eq!(count(&pg, "SELECT count(*) FROM dwh.outbox").await, 0);
    assert_eq!(
        count(
            &pg,
            "SELECT count(*) FROM dwh.batches WHERE published_at IS NULL"
        )
        .await,
        0
    );
    assert_eq!(env.topic_len(&env.stg_topic), oracle.stg_messages() as i64);

    // Escaped and raw UTF-8 payloads are the same data: names compare equal in jsonb.
    let names = count(
        &pg,
        "SELECT count(*) FROM stg.orders_current WHERE payload -> 'order_items' -> 0 ->> 'name' ~ '[А-Яа-я]'",
    )
    .await;
    assert_eq!(
        names,
        oracle
            .orders
            .values()
            .filter(|o| o
                .items
                .first()
                .is_some_and(|(_, n)| n.chars().any(|c| ('А'..='я').contains(&c))))
            .count() as i64
    );
}

#[tokio::test]
async fn replaying_the_topic_or_the_files_changes_no_row() {
    let env = Env::new().await;
    env.replay_testdata();
    env.dwh_ok(&["stg"]);
    let pg = env.pg().await;
    let tables = [
        "stg.order_events",
        "stg.users",
        "stg.restaurants",
        "dwh.dead_letters",
    ];
    let mut before = Vec::new();
    for t in tables {
        before.push(fingerprint(&pg, t).await);
    }
    let published = env.topic_len(&env.stg_topic);

    // The whole topic again, from offset 0.
    pg.execute("DELETE FROM dwh.offsets WHERE job = 'stg'", &[])
        .await
        .unwrap();
    env.dwh_ok(&["stg"]);
    for (t, fp) in tables.iter().zip(&before) {
        assert_eq!(&fingerprint(&pg, t).await, fp, "{t} changed on replay");
    }
    assert_eq!(
        env.topic_len(&env.stg_topic),
        published,
        "nothing changed, nothing republished"
    );

    // The same files produced again: new messages, same orders and dictionaries.
    env.replay_testdata();
    env.dwh_ok(&["stg"]);
    for (t, fp) in tables.iter().zip(&before).take(3) {
        assert_eq!(
            &fingerprint(&pg, t).await,
            fp,
            "{t} changed when the files were sent again"
        );
    }
}

#[tokio::test]
async fn a_crash_after_commit_is_published_by_the_next_run() {
    let env = Env::new().await;
    let oracle = Oracle::testdata();
    env.replay_testdata();
    let out = env
        .command(&["stg"], &[("DWH_FAULT", "stg:after-commit")])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the injected crash kills the run");
    let pg = env.pg().await;
    // stg.order_events holds every order version (README "The model").
    assert_eq!(
        count(&pg, "SELECT count(*) FROM stg.order_events").await,
        oracle.version_count() as i64
    );
    assert_eq!(
        env.topic_len(&env.stg_topic),
        0,
        "nothing published before the crash"
    );
    // The batch's messages were built in memory: the outbox holds its one rebuild row, not them.
    assert_eq!(
        count(
            &pg,
            "SELECT count(*) FROM dwh.outbox WHERE rebuild AND job = 'stg'"
        )
        .await,
        1
    );
    assert_eq!(count(&pg, "SELECT count(*) FROM dwh.outbox").await, 1);

    let line = env.dwh_ok(&["stg"]);
    assert!(
        line.contains(&format!(
            "consumed=0 loaded=0 dead_lettered=0 published={}",
            oracle.stg_messages() as i64
        )),
        "{line}"
    );
    assert_eq!(env.topic_len(&env.stg_topic), oracle.stg_messages() as i64);
    assert_eq!(count(&pg, "SELECT count(*) FROM dwh.outbox").await, 0);
}

#[tokio::test]
async fn a_crash_before_commit_leaves_nothing_behind() {
    let env = Env::new().await;
    let oracle = Oracle::testdata();
    env.replay_testdata();
    for point in ["after-copy", "after-merge", "before-commit"] {
        let fault = format!("stg:{point}");
        let out = env
            .command(&["stg"], &[("DWH_FAULT", &fault)])
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{point}: the injected crash kills the run"
        );
        let pg = env.pg().await;
        for table in [
            "stg.order_events",
            "stg.users",
            "dwh.dead_letters",
            "dwh.offsets",
            "dwh.outbox",
            "dwh.batches",
        ] {
            assert_eq!(
                count(&pg, &format!("SELECT count(*) FROM {table}")).await,
                0,
                "{point}: {table}"
            );
        }
    }
    env.dwh_ok(&["stg"]);
    let pg = env.pg().await;
    assert_eq!(
        count(&pg, "SELECT count(*) FROM stg.order_events").await,
        oracle.version_count() as i64
    );
    assert_eq!(env.topic_len(&env.stg_topic), oracle.stg_messages() as i64);
}

#[tokio::test]
async fn two_runs_at_once_load_and_publish_each_order_once() {
    let env = Env::new().await;
    let oracle = Oracle::testdata();
    env.replay_testdata();
    let a = env.command(&["stg"], &[]).spawn().unwrap();
    let b = env.command(&["stg"], &[]).spawn().unwrap();
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let pg = env.pg().await;
    assert_eq!(
        count(&pg, "SELECT count(*) FROM stg.order_events").await,
        oracle.version_count() as i64
    );
    assert_eq!(
        count(&pg, "SELECT count(*) FROM dwh.dead_letters").await,
        oracle.junk as i64
    );
    assert_eq!(env.topic_len(&env.stg_topic), oracle.stg_messages() as i64);
}

/// Run `dwh stg <bound…>` until a run consumes nothing; returns the runs that consumed something.
fn drain_in_runs(env: &Env, bound: &[&str]) -> usize {
    let mut busy = 0;
    loop {
        let line = env.dwh_ok(&[&["stg"], bound].concat());
        if line.contains("consumed=0 ") {
            return busy;
        }
        busy += 1;
        assert!(busy <= 10, "{bound:?} does not converge: {line}");
    }
}

/// After bounded runs, STG holds what one unbounded run would have loaded.
async fn assert_all_loaded(env: &Env, oracle: &Oracle) {
    let expected = oracle.statuses();
    assert_eq!(stg_statuses(env).await, expected);
    let versions: BTreeMap<i64, Vec<(String, String)>> = oracle
        .orders
        .keys()
        .map(|id| (*id, oracle.versions(*id)))
        .collect();
    assert_eq!(stg_versions(env).await, versions);
    let pg = env.pg().await;
    assert_eq!(
        count(&pg, "SELECT count(*) FROM dwh.dead_letters").await,
        oracle.junk as i64
    );
    assert_eq!(
        count(&pg, "SELECT next_offset FROM dwh.offsets WHERE job = 'stg'").await,
        oracle.lines as i64
    );
}

#[tokio::test]
async fn bounded_runs_resume_where_the_last_one_stopped() {
    let env = Env::new().await;
    let oracle = Oracle::testdata();
    env.replay_testdata();
    assert_eq!(
        drain_in_runs(&env, &["--max-messages", "1000"]),
        4,
        "3082 messages take four runs of 1000"
    );
    assert_all_loaded(&env, &oracle).await;
}

#[tokio::test]
async fn a_byte_bound_splits_the_backlog_into_runs_of_that_size() {
    let env = Env::new().await;
    let oracle = Oracle::testdata();
    env.replay_testdata();
    let orders = std::fs::read_to_string(harness::testdata().join("orders.jsonl")).unwrap();
    let bytes: usize = orders.lines().filter(|l| !l.is_empty()).map(str::len).sum();
    // A run stops at the message that crosses the bound: a third of the bytes plus one takes
    // exactly three runs.
    let bound = (bytes / 3 + 1).to_string();
    assert_eq!(
        drain_in_runs(&env, &["--max-batch-bytes", &bound]),
        3,
        "{bytes} bytes in runs of at most {bound}"
    );
    assert_all_loaded(&env, &oracle).await;
}

#[tokio::test]
async fn a_snapshot_keeps_each_dictionary_version_once() {
    let env = Env::new().await;
    env.replay_testdata();
    env.dwh_ok(&["snapshot"]);
    env.dwh_ok(&["snapshot"]);
    let pg = env.pg().await;
    assert_eq!(count(&pg, "SELECT count(*) FROM stg.users").await, 100);
    assert_eq!(count(&pg, "SELECT count(*) FROM stg.restaurants").await, 4);

    // A renamed user is a new version; the old one stays.
    let dir = std::env::temp_dir().join(&env.name);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("users.jsonl");
    std::fs::write(
        &file,
        r#"{"_id": "bd9c66b3ad3c2d6d1a3d1fa7", "name": "Михайлова Екатерина", "login": "ekaterina18", "update_ts_utc": "2023-10-01 10:00:00"}"#,
    )
    .unwrap();
    env.dwh_ok(&["replay", file.to_str().unwrap()]);
    env.dwh_ok(&["snapshot"]);
    assert_eq!(count(&pg, "SELECT count(*) FROM stg.users").await, 101);
    assert_eq!(
        count(
            &pg,
            "SELECT count(*) FROM stg.users WHERE id = 'bd9c66b3ad3c2d6d1a3d1fa7'"
        )
        .await,
        2
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn unreachable_services_and_bad_flags_get_one_plain_line() {
    let env = Env::new().await;
    // A small retry bound: a service that is away is retried for a second, then named.
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "stg",
                "--retry-max-secs",
                "1",
                "--pg-url",
                "postgres://dwh:s3cret@127.0.0.1:1/dwh",
            ],
            "PostgreSQL at postgres://dwh:****@127.0.0.1:1/dwh is unreachable",
        ),
        (
            &[
                "stg",
                "--retry-max-secs",
                "1",
                "--redis-url",
                "redis://:s3cret@127.0.0.1:1",
            ],
            "Redis at redis://:****@127.0.0.1:1",
        ),
        (
            &[
                "stg",
                "--retry-max-secs",
                "1",
                "--kafka-brokers",
                "127.0.0.1:1",
                "--fetch-timeout-secs",
                "5",
            ],
            "127.0.0.1:1",
        ),
        (
            &["stg", "--pg-work-mem", "lots"],
            "setting work_mem = lots (--pg-work-mem)",
        ),
    ];
    for (args, expected) in cases {
        let out = env.dwh(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("s3cret"),
            "{args:?} printed the password: {stderr}"
        );
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{args:?}: one line, got {stderr}"
        );
    }
    let pg = env.pg().await;
    assert_eq!(
        count(&pg, "SELECT count(*) FROM dwh.offsets").await,
        0,
        "nothing half-written"
    );

    let out = env.dwh(&["stg", "--max-messages", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-messages"));
}
