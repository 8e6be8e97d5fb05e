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

/// `cdm.user_product_counters` as (user, product) → (name, orders).
pub async fn products(env: &Env) -> Counters {
    showcase(env, "user_product_counters", "product_id", "product_name").await
}

/// `cdm.user_category_counters` as (user, category) → (name, orders).
pub async fn categories(env: &Env) -> Counters {
    showcase(
        env,
        "user_category_counters",
        "category_id",
        "category_name",
    )
    .await
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
    let products = products(env).await;
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
    let categories = categories(env).await;
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

/// What a warehouse holds compared with the oracle, order by order and counter by counter.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Audit {
    /// Orders, order lines and counters compared.
    pub rows: u64,
    /// Orders or lines the oracle has and the warehouse does not (or holds in an older
    /// version), plus counts short of the oracle's.
    pub lost: u64,
    /// Orders or lines the warehouse has beyond the oracle, plus counts above the oracle's.
    pub doubled: u64,
}

impl Audit {
    fn counters<K: Ord>(
        &mut self,
        expected: &BTreeMap<K, (String, i64)>,
        found: &BTreeMap<K, (String, i64)>,
    ) {
        let keys: BTreeSet<&K> = expected.keys().chain(found.keys()).collect();
        for key in keys {
            let want = expected.get(key).map_or(0, |(_, n)| *n);
            let got = found.get(key).map_or(0, |(_, n)| *n);
            self.rows += 1;
            self.lost += (want - got).max(0) as u64;
            self.doubled += (got - want).max(0) as u64;
        }
    }
}

/// Audit DDS (every order's current status, user and current basket: the dishes of its newest
/// `s_order_basket` row that `l_order_product` links to it — the link holds every dish the order
/// ever held) and both CDM showcases against the oracle.
pub async fn audit(env: &Env, oracle: &Oracle) -> Audit {
    type Vault = BTreeMap<i64, (String, Uuid, BTreeSet<Uuid>)>;
    let pg = env.pg().await;
    let mut vault: Vault = BTreeMap::new();
    for row in pg
        .query(
            "SELECT h.order_id,
                    (SELECT s.status FROM dds.s_order_status s WHERE s.h_order_pk = h.h_order_pk
                     ORDER BY s.effective_dt DESC LIMIT 1),
                    (SELECT ou.h_user_pk FROM dds.l_order_user ou WHERE ou.h_order_pk = h.h_order_pk),
                    ARRAY(SELECT (e ->> 'product_pk')::uuid
                          FROM (SELECT b.items FROM dds.s_order_basket b
                                WHERE b.h_order_pk = h.h_order_pk
                                ORDER BY b.effective_dt DESC LIMIT 1) b,
                               jsonb_array_elements(b.items) e
                          WHERE EXISTS (SELECT FROM dds.l_order_product op
                                        WHERE op.h_order_pk = h.h_order_pk
                                          AND op.h_product_pk = (e ->> 'product_pk')::uuid))
             FROM dds.h_order h",
            &[],
        )
        .await
        .unwrap()
    {
        let products: Vec<Uuid> = row.get(3);
        let status: Option<String> = row.get(1);
        let user: Option<Uuid> = row.get(2);
        vault.insert(
            row.get(0),
            (
                status.unwrap_or_default(),
                user.unwrap_or_default(),
                products.into_iter().collect(),
            ),
        );
    }
    let mut audit = Audit::default();
    for (id, order) in &oracle.orders {
        let products: BTreeSet<Uuid> = order.items.iter().map(|(dish, _)| key(dish)).collect();
        audit.rows += 1 + products.len() as u64;
        let Some((status, user, found)) = vault.get(id) else {
            audit.lost += 1 + products.len() as u64;
            continue;
        };
        if *status != order.status || *user != key(&order.user_id) {
            audit.lost += 1;
        }
        audit.lost += products.difference(found).count() as u64;
        audit.doubled += found.difference(&products).count() as u64;
    }
    audit.doubled += vault
        .keys()
        .filter(|id| !oracle.orders.contains_key(id))
        .count() as u64;
    let products = products(env).await;
    audit.counters(&oracle.product_counters(), &products);
    let categories = categories(env).await;
    audit.counters(&oracle.category_counters(), &categories);
    audit
}
