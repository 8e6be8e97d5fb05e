//! The CDM job against real services: both showcases and the tags equal what is counted here
//! from the testdata files, after the pipeline, after replaying every topic, after a status
//! change, and after `--full`; and the shipped reconciliation check finds nothing.

mod harness;

use harness::oracle::Oracle;
use harness::showcases::assert_matches;
use harness::{count, Env};

#[tokio::test]
async fn showcases_equal_the_testdata_counted_independently() {
    let env = Env::new().await;
    let mut oracle = Oracle::testdata();
    env.replay_testdata();
    env.pipeline();
    assert_matches(&env, &oracle, "after the pipeline").await;

    // Replay every topic from the start: nothing changes.
    let pg = env.pg().await;
    pg.execute("DELETE FROM dwh.offsets", &[]).await.unwrap();
    env.pipeline();
    assert_matches(&env, &oracle, "after replaying every topic").await;

    // A CLOSED order turns CANCELLED: its counters go down.
    let (id, order) = oracle
        .orders
        .iter()
        .find(|(_, o)| o.status == "CLOSED" && o.items.len() > 1)
        .map(|(id, o)| (*id, o.clone()))
        .unwrap();
    let original = std::fs::read_to_string(harness::testdata().join("orders.jsonl"))
        .unwrap()
        .lines()
        .find(|l| harness::oracle::parse_order(l).is_some_and(|(i, o)| i == id && o == order))
        .unwrap()
        .to_string();
    let cancelled = original
        .replace(
            "\"final_status\": \"CLOSED\"",
            "\"final_status\": \"CANCELLED\"",
        )
        .replace(
            &format!("\"update_ts\": \"{}\"", order.update_ts),
            "\"update_ts\": \"2023-12-31 23:59:59\"",
        );
    assert_ne!(cancelled, original);
    let dir = std::env::temp_dir().join(&env.name);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cancel.jsonl");
    std::fs::write(&file, &cancelled).unwrap();
    env.dwh_ok(&["replay", file.to_str().unwrap()]);
    env.pipeline();
    oracle.add_orders(&cancelled);
    assert_eq!(oracle.orders[&id].status, "CANCELLED");
    assert_matches(&env, &oracle, "after a status change").await;

    // Rebuild every showcase from DDS, in small chunks.
    pg.batch_execute(
        "TRUNCATE cdm.user_product_counters, cdm.user_category_counters, cdm.user_tags",
    )
    .await
    .unwrap();
    env.dwh_ok(&["cdm", "--full", "--chunk", "7"]);
    assert_matches(&env, &oracle, "after --full").await;
    assert_eq!(
        count(
            &pg,
            "SELECT count(*) FROM cdm.user_product_counters WHERE order_cnt <= 0"
        )
        .await,
        0
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_crash_before_commit_recomputes_on_the_next_run() {
    let env = Env::new().await;
    let oracle = Oracle::testdata();
    env.replay_testdata();
    env.dwh_ok(&["stg"]);
    env.dwh_ok(&["dds"]);
    for point in ["after-merge", "before-commit"] {
        let fault = format!("cdm:{point}");
        let out = env
            .command(&["cdm"], &[("DWH_FAULT", &fault)])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let pg = env.pg().await;
        assert_eq!(
            count(&pg, "SELECT count(*) FROM cdm.user_product_counters").await,
            0,
            "{point}"
        );
    }
    env.dwh_ok(&["cdm"]);
    assert_matches(&env, &oracle, "after the crashes").await;
}
