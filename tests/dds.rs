//! The DDS job against real services: the vault built from the testdata equals the distinct
//! business keys counted here, keys are uuid v5 as PostgreSQL's own uuid-ossp computes them,
//! replays change nothing, late and out-of-order versions, crashes, and the CDM read's indexes.

mod harness;

use std::collections::{BTreeMap, BTreeSet};

use harness::oracle::{Oracle, Order};
use harness::{count, fingerprint, pairs, Env};

const TABLES: &[&str] = &[
    "dds.h_user",
    "dds.h_product",
    "dds.h_category",
    "dds.h_restaurant",
    "dds.h_order",
    "dds.l_order_user",
    "dds.l_order_product",
    "dds.l_product_restaurant",
    "dds.l_product_category",
    "dds.s_user_names",
    "dds.s_product_names",
    "dds.s_restaurant_names",
    "dds.s_order_cost",
    "dds.s_order_status",
    "dds.s_order_basket",
    "dds.es_product_category",
    "dds.x_order_versions",
    "dds.x_user_versions",
    "dds.x_restaurant_versions",
    "dds.x_product_versions",
];

async fn current_statuses(env: &Env) -> BTreeMap<i64, String> {
    pairs(
        &env.pg().await,
        "SELECT h.order_id, (SELECT s.status FROM dds.s_order_status s WHERE s.h_order_pk = h.h_order_pk
                             ORDER BY s.effective_dt DESC LIMIT 1)
         FROM dds.h_order h",
    )
    .await
}

#[tokio::test]
async fn the_vault_holds_every_distinct_business_key_once() {
    let env = Env::new().await;
    let oracle = Oracle::testdata();
    env.replay_testdata();
    env.dwh_ok(&["stg"]);
    env.dwh_ok(&["dds"]);
    let pg = env.pg().await;

    // Hubs and links hold every business key the orders (every version) and the menus STG read
    // name: the menus of the restaurants the orders name, every dish on them even if never ordered
    // (README "The model": dish names and categories come from the menus).
    let orders = &oracle.orders;
    let users: BTreeSet<&str> = orders.values().map(|o| o.user_id.as_str()).collect();
    let restaurants: BTreeSet<&str> = orders.values().map(|o| o.restaurant_id.as_str()).collect();
    let versions: Vec<(i64, &Order)> = orders
        .keys()
        .flat_map(|id| oracle.order_versions(*id).into_iter().map(|o| (*id, o)))
        .collect();
    let order_products: BTreeSet<(i64, &str)> = versions
        .iter()
        .flat_map(|(id, o)| o.dishes().into_iter().map(|d| (*id, d)))
        .collect();
    let menu_pairs: BTreeSet<(String, String)> = oracle
        .menu_pairs()
        .into_iter()
        .filter(|(r, _)| restaurants.contains(r.as_str()))
        .collect();
    let product_restaurants: BTreeSet<(&str, &str)> = versions
        .iter()
        .flat_map(|(_, o)| {
            o.dishes()
                .into_iter()
                .map(|d| (d, o.restaurant_id.as_str()))
        })
        .chain(menu_pairs.iter().map(|(r, d)| (d.as_str(), r.as_str())))
        .collect();
    let products: BTreeSet<&str> = product_restaurants.iter().map(|(d, _)| *d).collect();
    let menu_dishes: BTreeSet<&str> = menu_pairs.iter().map(|(_, d)| d.as_str()).collect();
    let menu_dishes: Vec<&str> = menu_dishes.into_iter().collect();
    let product_categories = oracle.menu_categories();
    let categories: BTreeSet<&String> = product_categories.iter().map(|(_, c)| c).collect();
    let read_users: Vec<&str> = users
        .iter()
        .copied()
        .filter(|u| oracle.users.contains(*u))
        .collect();
    let read_restaurants: Vec<&str> = restaurants
        .iter()
        .copied()
        .filter(|r| oracle.restaurants.contains(*r))
        .collect();
    // Rows over the given keys, `f` rows each.
    let rows =
        |keys: &[&str], f: &dyn Fn(&str) -> usize| -> usize { keys.iter().map(|k| f(k)).sum() };
    let order_rows = |f: &dyn Fn(i64) -> usize| -> usize { orders.keys().map(|id| f(*id)).sum() };

    for (table, expected) in [
        ("dds.h_order", orders.len()),
        ("dds.h_user", users.len()),
        ("dds.h_restaurant", restaurants.len()),
        ("dds.h_product", products.len()),
        ("dds.h_category", categories.len()),
        ("dds.l_order_user", orders.len()),
        ("dds.l_order_product", order_products.len()),
        ("dds.l_product_restaurant", product_restaurants.len()),
        ("dds.l_product_category", product_categories.len()),
        // Satellites: a row per change, version logs: a row per version (README "The model").
        (
            "dds.x_order_versions",
            order_rows(&|id| oracle.dds_versions(id).len()),
        ),
        (
            "dds.s_order_status",
            order_rows(&|id| oracle.status_history(id).len()),
        ),
        (
            "dds.s_order_cost",
            order_rows(&|id| oracle.cost_history(id).len()),
        ),
        (
            "dds.s_order_basket",
            order_rows(&|id| oracle.basket_history(id).len()),
        ),
        (
            "dds.x_user_versions",
            rows(&read_users, &|u| oracle.user_versions(u).len()),
        ),
        (
            "dds.s_user_names",
            rows(&read_users, &|u| oracle.user_history(u).len()),
        ),
        (
            "dds.x_restaurant_versions",
            rows(&read_restaurants, &|r| oracle.restaurant_versions(r).len()),
        ),
        (
            "dds.s_restaurant_names",
            rows(&read_restaurants, &|r| oracle.restaurant_history(r).len()),
        ),
        (
            "dds.x_product_versions",
            rows(&menu_dishes, &|d| oracle.dish_versions(d).len()),
        ),
        (
            "dds.s_product_names",
            rows(&menu_dishes, &|d| oracle.dish_name_history(d).len()),
        ),
        (
            "dds.es_product_category",
            rows(&menu_dishes, &|d| oracle.dish_category_history(d).len()),
        ),
    ] {
        assert_eq!(
            count(&pg, &format!("SELECT count(*) FROM {table}")).await,
            expected as i64,
            "{table}"
        );
    }
    let expected = oracle.statuses();
    assert_eq!(current_statuses(&env).await, expected);

    // Keys are uuid v5 in the source project's namespace, as PostgreSQL computes them itself.
    pg.batch_execute("CREATE EXTENSION IF NOT EXISTS \"uuid-ossp\"")
        .await
        .unwrap();
    let ns = "'7f288a2e-0ad0-4039-8e59-6c9838d87307'::uuid";
    for (table, key, bk) in [
        ("h_user", "h_user_pk", "user_id"),
        ("h_product", "h_product_pk", "product_id"),
        ("h_category", "h_category_pk", "category_name"),
        ("h_restaurant", "h_restaurant_pk", "restaurant_id"),
        ("h_order", "h_order_pk", "order_id::text"),
    ] {
        let sql =
            format!("SELECT count(*) FROM dds.{table} WHERE {key} <> uuid_generate_v5({ns}, {bk})");
        assert_eq!(count(&pg, &sql).await, 0, "{table}");
    }
    assert_eq!(
        count(&pg, "SELECT count(*) FROM dds.h_category WHERE category_name = 'Супы' AND h_category_pk = '5f2bd497-da00-5ac4-b4a7-3f00c6551edc'").await,
        1
    );
    assert_eq!(
        env.topic_len(&env.dds_topic),
        users.len() as i64,
        "one message per affected user"
    );
}

#[tokio::test]
async fn replaying_the_stg_topic_changes_no_row() {
    let env = Env::new().await;
    env.replay_testdata();
    env.dwh_ok(&["stg"]);
    env.dwh_ok(&["dds"]);
    let pg = env.pg().await;
    let mut before = Vec::new();
    for t in TABLES {
        before.push(fingerprint(&pg, t).await);
    }
    pg.execute("DELETE FROM dwh.offsets WHERE job = 'dds'", &[])
        .await
        .unwrap();
    // A crash mid-publish in STG sends its batch twice: the vault must not care either.
    pg.execute("DELETE FROM dwh.offsets WHERE job = 'stg'", &[])
        .await
        .unwrap();
    pg.execute(
        "UPDATE stg.order_events SET update_ts = update_ts - interval '1 second'",
        &[],
    )
    .await
    .unwrap();
    env.dwh_ok(&["stg"]);
    assert!(env.topic_len(&env.stg_topic) > 3000);
    env.dwh_ok(&["dds"]);
    for (t, fp) in TABLES.iter().zip(&before) {
        assert_eq!(&fingerprint(&pg, t).await, fp, "{t} changed on replay");
    }
}

fn order_line(id: i64, user: &str, status: &str, update_ts: &str) -> String {
    format!(
        r#"{{"object_id": {id}, "object_type": "order", "sent_dttm": "2023-10-02 09:15:41", "payload": {{"restaurant": {{"id": "r-late"}}, "date": "2023-09-25 12:00:00", "user": {{"id": "{user}"}}, "order_items": [{{"id": "dish-late", "name": "Борщ", "price": 300, "quantity": 1}}], "bonus_payment": 0, "cost": 300, "payment": 300, "bonus_grant": 0, "statuses": [], "final_status": "{status}", "update_ts": "{update_ts}"}}}}"#
    )
}

#[tokio::test]
async fn a_newer_version_becomes_current_a_late_older_one_is_kept_as_history() {
    let env = Env::new().await;
    let dir = std::env::temp_dir().join(&env.name);
    std::fs::create_dir_all(&dir).unwrap();
    let send = |name: &str, lines: &[String]| {
        let file = dir.join(name);
        std::fs::write(&file, lines.join("\n")).unwrap();
        env.dwh_ok(&["replay", file.to_str().unwrap()]);
        env.dwh_ok(&["stg"]);
        env.dwh_ok(&["dds"]);
    };
    send(
        "v2.jsonl",
        &[order_line(1, "u-late", "CLOSED", "2023-09-25 13:00:00")],
    );
    // Newer: becomes current. Older (arriving last): kept as history in its place (README "The
    // model"), not current.
    send(
        "v3.jsonl",
        &[order_line(1, "u-late", "CANCELLED", "2023-09-25 14:00:00")],
    );
    send(
        "v1.jsonl",
        &[order_line(1, "u-late", "CLOSED", "2023-09-25 12:30:00")],
    );
    assert_eq!(
        current_statuses(&env).await,
        BTreeMap::from([(1, "CANCELLED".to_string())])
    );
    let pg = env.pg().await;
    assert_eq!(
        count(&pg, "SELECT count(*) FROM stg.order_events").await,
        3,
        "every version in STG"
    );
    assert_eq!(
        count(&pg, "SELECT count(*) FROM dds.x_order_versions").await,
        3,
        "every version in the log"
    );
    // The status changes in source order: CLOSED from the late 12:30 version on (it takes the
    // place of the 13:00 row, now a repeat), CANCELLED from 14:00.
    let history: Vec<(String, String)> = pg
        .query(
            "SELECT effective_dt::text, status FROM dds.s_order_status ORDER BY effective_dt",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        history,
        [
            ("2023-09-25 12:30:00".to_string(), "CLOSED".to_string()),
            ("2023-09-25 14:00:00".to_string(), "CANCELLED".to_string()),
        ]
    );
    assert_eq!(
        count(&pg, "SELECT count(*) FROM dds.l_product_category").await,
        0,
        "the menu is unknown"
    );

    // The restaurant's menu becomes known: the next order of the dish links its category.
    let restaurant = r#"{"_id": "r-late", "name": "Поздний", "menu": [{"_id": "dish-late", "name": "Борщ", "price": 300, "category": "Супы"}], "update_ts_utc": "2023-09-01 00:00:00"}"#;
    send("menu.jsonl", &[restaurant.to_string()]);
    send(
        "v4.jsonl",
        &[order_line(2, "u-other", "CLOSED", "2023-09-26 14:00:00")],
    );
    assert_eq!(
        count(&pg, "SELECT count(*) FROM dds.l_product_category").await,
        1
    );
    assert_eq!(
        count(&pg, "SELECT count(*) FROM dds.s_restaurant_names").await,
        1
    );
    // Reported to CDM: the user of each of the first three batches' orders (the late version's
    // batch too: every version is loaded now), then both users of the dish (the new order's, and
    // the earlier one's whose category the menu just gave).
    assert_eq!(env.topic_len(&env.dds_topic), 1 + 1 + 1 + 2);
    env.dwh_ok(&["cdm"]);
    assert_eq!(
        count(
            &pg,
            "SELECT count(*) FROM cdm.user_category_counters WHERE category_name = 'Супы'"
        )
        .await,
        1,
        "only the CLOSED order counts (order 1 is CANCELLED)"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn crashes_before_and_after_commit_lose_nothing() {
    let env = Env::new().await;
    let oracle = Oracle::testdata();
    env.replay_testdata();
    env.dwh_ok(&["stg"]);
    let pg = env.pg().await;
    for point in ["after-copy", "after-merge", "before-commit"] {
        let fault = format!("dds:{point}");
        let out = env
            .command(&["dds"], &[("DWH_FAULT", &fault)])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert_eq!(
            count(&pg, "SELECT count(*) FROM dds.h_order").await,
            0,
            "{point}"
        );
        assert_eq!(
            count(&pg, "SELECT count(*) FROM dwh.offsets WHERE job = 'dds'").await,
            0,
            "{point}"
        );
    }
    let out = env
        .command(&["dds"], &[("DWH_FAULT", "dds:after-commit")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        count(&pg, "SELECT count(*) FROM dds.h_order").await,
        oracle.orders.len() as i64
    );
    assert_eq!(env.topic_len(&env.dds_topic), 0);
    // The first load's menus named every dish: their users' fan-out waits for the next run.
    assert!(count(&pg, "SELECT count(*) FROM dds.pending_fanout").await > 0);
    env.dwh_ok(&["dds"]);
    assert_eq!(
        count(&pg, "SELECT count(*) FROM dds.pending_fanout").await,
        0,
        "the next run did the fan-out"
    );
    // Each user once: the fan-out skips the users the batch queued for its orders.
    let users: BTreeSet<&str> = oracle.orders.values().map(|o| o.user_id.as_str()).collect();
    assert_eq!(env.topic_len(&env.dds_topic), users.len() as i64);
}

#[tokio::test]
async fn the_cdm_read_uses_the_indexes() {
    let env = Env::new().await;
    env.replay_testdata();
    env.pipeline();
    let pg = env.pg().await;
    pg.batch_execute("ANALYZE").await.unwrap();
    let user: uuid::Uuid = pg
        .query_one("SELECT h_user_pk FROM dds.h_user LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    let sql = format!("EXPLAIN {}", include_str!("../jobs/src/sql/cdm_facts.sql"));
    let plan: Vec<String> = pg
        .query(&sql, &[&vec![user]])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(plan.contains("l_order_user_user"), "{plan}");
    assert!(plan.contains("s_order_status_pkey"), "{plan}");
}
