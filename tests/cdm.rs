//! The CDM job against real services: both showcases and the tags equal what is counted here
//! from the testdata files, after the pipeline, after replaying every topic, after a status
//! change, and after `--full`; and the shipped reconciliation check finds nothing.

mod harness;

use std::collections::{BTreeMap, BTreeSet};

use harness::oracle::{key, Oracle};
use harness::{count, Env};
use uuid::Uuid;

type Counters = BTreeMap<(Uuid, Uuid), (String, i64)>;

async fn showcase(env: &Env, table: &str, id: &str, name: &str) -> Counters {
    env.pg()
        .await
        .query(
            &format!("SELECT user_id, {id}, {name}, order_cnt FROM cdm.{table}"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3))))
        .collect()
}

async fn tagged(env: &Env, tag: &str) -> BTreeSet<Uuid> {
    env.pg()
        .await
        .query("SELECT user_id FROM cdm.user_tags WHERE tag = $1", &[&tag])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn assert_matches(env: &Env, oracle: &Oracle, when: &str) {
    let products = showcase(env, "user_product_counters", "product_id", "product_name").await;
    assert_eq!(
        products.len(),
        oracle.product_counters().len(),
        "{when}: product rows"
    );
    assert_eq!(
        products,
        oracle.product_counters(),
        "{when}: user_product_counters"
    );
    let categories = showcase(
        env,
        "user_category_counters",
        "category_id",
        "category_name",
    )
    .await;
    assert_eq!(
        categories,
        oracle.category_counters(),
        "{when}: user_category_counters"
    );

    let pizza: BTreeSet<Uuid> = oracle
        .users_with_dish(&["пицц", "pizza"], 10)
        .into_keys()
        .collect();
    assert!(!pizza.is_empty());
    assert_eq!(
        tagged(env, "Pizza Lover").await,
        pizza,
        "{when}: Pizza Lover"
    );
    let soup: BTreeSet<Uuid> = oracle
        .category_counters()
        .iter()
        .filter(|((_, c), (_, n))| *c == key("Супы") && *n >= 5)
        .map(|((u, _), _)| *u)
        .collect();
    assert_eq!(tagged(env, "Soup Fan").await, soup, "{when}: Soup Fan");

    let pg = env.pg().await;
    let check =
        std::fs::read_to_string(harness::repo().join("sql/checks/reconcile_cdm.sql")).unwrap();
    assert_eq!(
        pg.query(&check, &[]).await.unwrap().len(),
        0,
        "{when}: reconciliation"
    );
}

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
