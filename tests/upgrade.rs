//! `dwh migrate` carries a warehouse built by the version before history was kept (migrations
//! V0001–V0009) forward: the jobs then give the same showcases, and keep history from then on.
//!
//! `tests/data/warehouse-v0009.sql.gz` is that warehouse, as the earlier version built it: commit
//! d015723's `dwh migrate --partitions 1`, `dwh replay` of the first 500 lines of
//! testdata/orders.jsonl with the testdata users and restaurants, then `dwh stg`, `dwh dds`,
//! `dwh cdm` (as the owner), dumped with `pg_dump` (psql's `\restrict` lines dropped).

mod harness;

use std::path::Path;
use std::process::Command;

use harness::instances::{run, Scratch};
use harness::oracle::{key, Oracle};
use harness::showcases::assert_matches;
use harness::{count, Env, PG_ADMIN};

/// The first `lines` order lines of the testdata and its dictionaries, as files in `dir`.
fn testdata_subset(dir: &Path, lines: usize) {
    let source = harness::testdata();
    let text = std::fs::read_to_string(source.join("orders.jsonl")).unwrap();
    let orders: Vec<&str> = text.lines().take(lines).collect();
    std::fs::write(dir.join("orders.jsonl"), orders.join("\n") + "\n").unwrap();
    for dictionary in ["users.jsonl", "restaurants.jsonl"] {
        std::fs::copy(source.join(dictionary), dir.join(dictionary)).unwrap();
    }
}

/// Replace the test's database by the dump of the earlier version's warehouse.
async fn restore_v0009(env: &Env) {
    let admin = harness::connect(PG_ADMIN).await;
    for statement in [
        "DROP DATABASE \"{}\" WITH (FORCE)",
        "CREATE DATABASE \"{}\"",
    ] {
        admin
            .batch_execute(&statement.replace("{}", &env.name))
            .await
            .unwrap();
    }
    let dump = harness::repo().join("tests/data/warehouse-v0009.sql.gz");
    run(Command::new("sh").arg("-c").arg(format!(
        "gzip -dc '{}' | psql -X -q -v ON_ERROR_STOP=1 '{}' >/dev/null",
        dump.display(),
        env.pg_url
    )));
}

/// The showcases' rows (without `updated_at`), sorted.
async fn showcase_rows(env: &Env) -> Vec<Vec<String>> {
    let pg = env.pg().await;
    let mut tables = Vec::new();
    for sql in [
        "SELECT user_id::text, product_id::text, product_name, order_cnt::text FROM cdm.user_product_counters",
        "SELECT user_id::text, category_id::text, category_name, order_cnt::text FROM cdm.user_category_counters",
        "SELECT user_id::text, tag, '', order_cnt::text FROM cdm.user_tags",
    ] {
        let mut rows: Vec<String> = pg
            .query(sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (0..4).map(|i| r.get::<_, String>(i)).collect::<Vec<_>>().join("|"))
            .collect();
        rows.sort();
        tables.push(rows);
    }
    tables
}

#[tokio::test]
async fn a_warehouse_built_before_history_carries_forward() {
    let env = Env::new().await;
    restore_v0009(&env).await;
    let pg = env.pg().await;
    assert_eq!(
        count(&pg, "SELECT max(version)::int8 FROM dwh_schema_history").await,
        9,
        "the dump is the earlier version's warehouse"
    );
    let before = showcase_rows(&env).await;

    // The sources as they were when it was built.
    let data = Scratch::new("upgrade");
    testdata_subset(&data.0, 500);
    let files: Vec<String> = ["orders.jsonl", "users.jsonl", "restaurants.jsonl"]
        .iter()
        .map(|f| data.0.join(f).display().to_string())
        .collect();
    let mut replay = vec!["replay"];
    replay.extend(files.iter().map(String::as_str));
    env.dwh_ok(&replay);

    let migrated = env.dwh_ok(&["migrate", "--partitions", "1"]);
    assert!(migrated.contains("V10__history"), "{migrated}");
    let oracle = Oracle::from_dir(&data.0);
    // Each order so far is its first version, each satellite row a logged version.
    assert_eq!(
        count(&pg, "SELECT count(*) FROM stg.order_events").await,
        oracle.orders.len() as i64
    );
    assert_eq!(
        count(&pg, "SELECT count(*) FROM dds.s_order_basket").await,
        oracle.orders.len() as i64
    );

    env.pipeline();
    assert_eq!(
        showcase_rows(&env).await,
        before,
        "the same showcases after the upgrade and a cycle"
    );
    assert_matches(&env, &oracle, "after the upgrade").await;
    // Every stored dictionary version went out once and reached DDS.
    assert_eq!(
        count(
            &pg,
            "SELECT count(*) FROM stg.users WHERE published_batch IS NULL"
        )
        .await,
        0
    );
    assert_eq!(
        count(&pg, "SELECT count(*) FROM dds.x_product_versions WHERE effective_dt > '-infinity'").await,
        count(
            &pg,
            "SELECT count(DISTINCT m ->> '_id') FROM stg.restaurants r, jsonb_array_elements(r.doc -> 'menu') m"
        )
        .await,
        "each menu dish has its menu version logged"
    );

    // History from then on: a CLOSED order becomes CANCELLED.
    let (id, order) = oracle
        .orders
        .iter()
        .find(|(_, o)| o.status == "CLOSED")
        .map(|(id, o)| (*id, o.clone()))
        .expect("a CLOSED order");
    let line = std::fs::read_to_string(data.0.join("orders.jsonl"))
        .unwrap()
        .lines()
        .find(|l| harness::oracle::parse_order(l).is_some_and(|(i, o)| i == id && o == order))
        .unwrap()
        .to_owned();
    let cancelled = line
        .replace(
            "\"final_status\": \"CLOSED\"",
            "\"final_status\": \"CANCELLED\"",
        )
        .replace(&order.update_ts, "2023-12-31 23:59:59");
    assert_ne!(cancelled, line);
    let later = data.0.join("later.jsonl");
    std::fs::write(&later, format!("{cancelled}\n")).unwrap();
    env.dwh_ok(&["replay", later.to_str().unwrap()]);
    env.pipeline();
    let mut oracle = oracle;
    oracle.add_message(&cancelled);
    assert_matches(&env, &oracle, "after a new version").await;
    let statuses: Vec<String> = pg
        .query(
            "SELECT status FROM dds.s_order_status WHERE h_order_pk = $1 ORDER BY effective_dt",
            &[&key(&id.to_string())],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(statuses, ["CLOSED", "CANCELLED"]);
    assert_eq!(
        count(
            &pg,
            &format!("SELECT count(*) FROM stg.order_events WHERE object_id = {id}")
        )
        .await,
        2
    );
}
