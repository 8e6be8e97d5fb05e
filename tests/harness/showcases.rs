//! Comparing the CDM showcases of a test's warehouse with the oracle.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::oracle::{key, Oracle};
use super::Env;

type Counters = BTreeMap<(Uuid, Uuid), (String, i64)>;

pub async fn showcase(env: &Env, table: &str, id: &str, name: &str) -> Counters {
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

pub async fn tagged(env: &Env, tag: &str) -> BTreeSet<Uuid> {
    env.pg()
        .await
        .query("SELECT user_id FROM cdm.user_tags WHERE tag = $1", &[&tag])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Both showcases and the tags equal the oracle's, and the reconciliation check finds nothing.
pub async fn assert_matches(env: &Env, oracle: &Oracle, when: &str) {
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
        std::fs::read_to_string(super::repo().join("sql/checks/reconcile_cdm.sql")).unwrap();
    assert_eq!(
        pg.query(&check, &[]).await.unwrap().len(),
        0,
        "{when}: reconciliation"
    );
}
