//! History and current truth (issue #17, README "The model"): small scenarios whose versions
//! arrive late, out of order, on equal timestamps, or as dictionaries with no order naming them.
//!
//! In each, after the stg → dds → cdm cycles: both showcases (with their names) and the tags equal
//! the expectation computed by hand for the scenario and the oracle's (fed the same messages and
//! documents), `sql/checks/reconcile_cdm.sql` finds nothing, and every version is kept — in STG
//! (`stg.order_events`: one row per order × update_ts × content) and in the satellites (a row per
//! change, in the order of the source's timestamps, whichever batch brought which version).

mod harness;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use harness::oracle::{key, Oracle};
use harness::runs::{Background, Pause};
use harness::showcases::{categories, products};
use harness::{count, figure, Env};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

// ----- the sources --------------------------------------------------------------------------

/// An order message (DESIGN §2.1) of `restaurant` whose lines are `dishes` (id, name), one each.
fn order(
    id: i64,
    user: &str,
    restaurant: &str,
    status: &str,
    update_ts: &str,
    dishes: &[(&str, &str)],
) -> String {
    let items: Vec<Value> = dishes
        .iter()
        .map(|(id, name)| json!({"id": id, "name": name, "price": 100, "quantity": 1}))
        .collect();
    let cost = 100 * dishes.len() as i64;
    json!({
        "object_id": id, "object_type": "order", "sent_dttm": "2023-10-02 09:15:41",
        "payload": {
            "restaurant": {"id": restaurant}, "date": "2023-09-25 12:00:00",
            "user": {"id": user}, "order_items": items,
            "bonus_payment": 0, "cost": cost, "payment": cost, "bonus_grant": 0,
            "statuses": [{"status": status, "dttm": update_ts}],
            "final_status": status, "update_ts": update_ts
        }
    })
    .to_string()
}

/// A restaurant version whose menu lists `menu` (dish id, name, category).
fn restaurant(id: &str, name: &str, update_ts: &str, menu: &[(&str, &str, &str)]) -> Value {
    let menu: Vec<Value> = menu
        .iter()
        .map(|(id, name, category)| {
            json!({"_id": id, "name": name, "price": 100, "category": category})
        })
        .collect();
    json!({"_id": id, "name": name, "menu": menu, "update_ts_utc": update_ts})
}

/// A user version.
fn user(id: &str, name: &str, login: &str, update_ts: &str) -> Value {
    json!({"_id": id, "name": name, "login": login, "update_ts_utc": update_ts})
}

/// What a test sends into its sources: order lines to the orders topic (in this order; one
/// partition keeps it), dictionary documents to Redis, each through `dwh replay` of a file.
struct Feed<'a> {
    env: &'a Env,
    dir: PathBuf,
    files: Cell<usize>,
    /// Every order line sent, in the order sent.
    orders: RefCell<Vec<String>>,
    /// Every dictionary document sent, in the order sent.
    documents: RefCell<Vec<Value>>,
}

impl<'a> Feed<'a> {
    fn new(env: &'a Env) -> Feed<'a> {
        let dir = std::env::temp_dir().join(format!("{}-history", env.name));
        std::fs::create_dir_all(&dir).unwrap();
        Feed {
            env,
            dir,
            files: Cell::new(0),
            orders: RefCell::default(),
            documents: RefCell::default(),
        }
    }

    fn replay(&self, lines: &[String]) {
        let n = self.files.get() + 1;
        self.files.set(n);
        let file = self.dir.join(format!("{n:03}.jsonl"));
        std::fs::write(&file, lines.join("\n")).unwrap();
        let line = self.env.dwh_ok(&["replay", file.to_str().unwrap()]);
        assert!(line.starts_with("replay: published"), "{line}");
    }

    /// Send order lines to the orders topic.
    fn orders(&self, lines: &[String]) {
        self.replay(lines);
        self.orders.borrow_mut().extend(lines.iter().cloned());
    }

    /// SET dictionary documents in Redis.
    fn documents(&self, docs: &[Value]) {
        let lines: Vec<String> = docs.iter().map(Value::to_string).collect();
        self.replay(&lines);
        self.documents.borrow_mut().extend(docs.iter().cloned());
    }

    /// The oracle of everything sent so far, each kind in the order sent.
    fn oracle(&self) -> Oracle {
        let mut oracle = Oracle::default();
        for doc in self.documents.borrow().iter() {
            if doc.get("menu").is_some() {
                oracle.add_restaurant(doc);
            } else {
                oracle.add_user(doc);
            }
        }
        for line in self.orders.borrow().iter() {
            oracle.add_message(line);
        }
        oracle
    }
}

impl Drop for Feed<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `dwh snapshot`, then one stg → dds → cdm cycle with no new order.
fn snapshot_and_cycle(env: &Env) {
    env.dwh_ok(&["snapshot"]);
    let stg = env.dwh_ok(&["stg"]);
    assert_eq!(figure(&stg, "consumed"), Some(0), "no new order: {stg}");
    env.dwh_ok(&["dds"]);
    env.dwh_ok(&["cdm"]);
}

// ----- the expectation ----------------------------------------------------------------------

/// Every category of the source system (DESIGN §2.3).
const CATEGORIES: [&str; 11] = [
    "Выпечка",
    "Гарниры",
    "Десерты",
    "Закуски",
    "Напитки",
    "Основные блюда",
    "Салаты",
    "Соусы",
    "Супы",
    "Чай",
    "",
];

/// The business keys behind a scenario's hub keys, so that a difference reads as names.
struct Names(BTreeMap<Uuid, String>);

impl Names {
    fn new(ids: &[&str]) -> Names {
        Names(
            ids.iter()
                .chain(CATEGORIES.iter())
                .map(|id| (key(id), (*id).to_owned()))
                .collect(),
        )
    }

    fn of(&self, k: Uuid) -> String {
        self.0
            .get(&k)
            .cloned()
            .unwrap_or_else(|| format!("unknown key {k}"))
    }
}

/// (user, dish or category) → (name, distinct CLOSED orders).
type Counters = BTreeMap<(String, String), (String, i64)>;

/// The showcases and tags of a warehouse, keyed by business keys.
#[derive(Debug, Default, Clone, PartialEq)]
struct Showcases {
    products: Counters,
    categories: Counters,
    /// (user, tag) → orders behind it.
    tags: BTreeMap<(String, String), i64>,
}

impl Showcases {
    fn product(mut self, user: &str, dish: &str, name: &str, orders: i64) -> Self {
        self.products
            .insert((user.into(), dish.into()), (name.into(), orders));
        self
    }

    fn category(mut self, user: &str, category: &str, orders: i64) -> Self {
        self.categories
            .insert((user.into(), category.into()), (category.into(), orders));
        self
    }

    fn tag(mut self, user: &str, tag: &str, orders: i64) -> Self {
        self.tags.insert((user.into(), tag.into()), orders);
        self
    }

    /// What the warehouse's CDM holds.
    async fn of(env: &Env, names: &Names) -> Showcases {
        let readable = |counters: BTreeMap<(Uuid, Uuid), (String, i64)>| -> Counters {
            counters
                .into_iter()
                .map(|((u, k), v)| ((names.of(u), names.of(k)), v))
                .collect()
        };
        let tags = env
            .pg()
            .await
            .query("SELECT user_id, tag, order_cnt FROM cdm.user_tags", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| ((names.of(r.get(0)), r.get(1)), r.get(2)))
            .collect();
        Showcases {
            products: readable(products(env).await),
            categories: readable(categories(env).await),
            tags,
        }
    }
}

impl Showcases {
    /// What the oracle expects, the tags under the rules in `cdm.tag_rules` (a category, or a
    /// pattern of plain alternatives such as the seeded `пицц|pizza`).
    async fn from_oracle(env: &Env, oracle: &Oracle, names: &Names) -> Showcases {
        let readable = |counters: BTreeMap<(Uuid, Uuid), (String, i64)>| -> Counters {
            counters
                .into_iter()
                .map(|((u, k), v)| ((names.of(u), names.of(k)), v))
                .collect()
        };
        let categories = oracle.category_counters();
        let mut tags = BTreeMap::new();
        let rules = env
            .pg()
            .await
            .query(
                "SELECT tag, category_name, dish_pattern, threshold FROM cdm.tag_rules",
                &[],
            )
            .await
            .unwrap();
        assert!(!rules.is_empty(), "the seeded tag rules");
        for rule in rules {
            let (tag, threshold): (String, i64) = (rule.get(0), rule.get(3));
            let users: BTreeMap<Uuid, i64> = match (rule.get(1), rule.get(2)) {
                (Some(category), None) => {
                    let category: String = category;
                    categories
                        .iter()
                        .filter(|((_, c), (_, n))| *c == key(&category) && *n >= threshold)
                        .map(|((u, _), (_, n))| (*u, *n))
                        .collect()
                }
                (None, Some(pattern)) => {
                    let pattern: String = pattern;
                    let needles: Vec<&str> = pattern.split('|').collect();
                    assert!(
                        needles.iter().all(|n| n.chars().all(char::is_alphanumeric)),
                        "the oracle reads plain alternatives only: {pattern}"
                    );
                    oracle.users_with_dish(&needles, threshold)
                }
                _ => panic!("a rule of neither kind: {tag}"),
            };
            for (user, orders) in users {
                tags.insert((names.of(user), tag.clone()), orders);
            }
        }
        Showcases {
            products: readable(oracle.product_counters()),
            categories: readable(categories),
            tags,
        }
    }
}

/// The rows `sql/checks/reconcile_cdm.sql` lists (each a difference between CDM and a recount
/// from the vault).
async fn reconciliation(env: &Env) -> Vec<String> {
    let check =
        std::fs::read_to_string(harness::repo().join("sql/checks/reconcile_cdm.sql")).unwrap();
    env.pg()
        .await
        .query(&check, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let (showcase, user, id): (String, Uuid, Uuid) = (r.get(0), r.get(1), r.get(2));
            let (expected, actual): (Option<i64>, Option<i64>) = (r.get(3), r.get(4));
            format!("{showcase} {user} {id}: expected {expected:?}, actual {actual:?}")
        })
        .collect()
}

/// Both showcases and the tags are `expected`, and the reconciliation finds nothing.
async fn assert_showcases(env: &Env, names: &Names, expected: &Showcases, when: &str) {
    let found = Showcases::of(env, names).await;
    assert_equal(&found, expected, when);
    assert_eq!(
        reconciliation(env).await,
        Vec::<String>::new(),
        "{when}: reconcile_cdm.sql"
    );
}

/// [`assert_showcases`], and the oracle of everything `feed` sent expects the same.
async fn assert_current(feed: &Feed<'_>, names: &Names, expected: &Showcases, when: &str) {
    let oracle = Showcases::from_oracle(feed.env, &feed.oracle(), names).await;
    assert_equal(&oracle, expected, &format!("{when} (the oracle)"));
    assert_showcases(feed.env, names, expected, when).await;
}

fn assert_equal(found: &Showcases, expected: &Showcases, when: &str) {
    assert_eq!(
        found.products, expected.products,
        "{when}: user_product_counters"
    );
    assert_eq!(
        found.categories, expected.categories,
        "{when}: user_category_counters"
    );
    assert_eq!(found.tags, expected.tags, "{when}: user_tags");
}

// ----- the history --------------------------------------------------------------------------

const TS: &str = "'YYYY-MM-DD HH24:MI:SS'";

/// Rows of a (timestamp, text) query with one parameter.
async fn history(env: &Env, sql: &str, id: &(dyn ToSql + Sync)) -> Vec<(String, String)> {
    env.pg()
        .await
        .query(sql, &[id])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// `dds.s_order_status` of an order: (effective_dt, status), oldest first.
async fn status_rows(env: &Env, order_id: i64) -> Vec<(String, String)> {
    let sql = format!(
        "SELECT to_char(s.effective_dt, {TS}), s.status FROM dds.s_order_status s
         JOIN dds.h_order h USING (h_order_pk) WHERE h.order_id = $1 ORDER BY s.effective_dt"
    );
    history(env, &sql, &order_id).await
}

/// `dds.s_order_basket` of an order: (effective_dt, its dishes' ids sorted and comma-joined).
async fn basket_rows(env: &Env, order_id: i64) -> Vec<(String, String)> {
    let sql = format!(
        "SELECT to_char(s.effective_dt, {TS}),
                (SELECT coalesce(string_agg(coalesce(p.product_id, e ->> 'product_pk'), ','
                                            ORDER BY coalesce(p.product_id, e ->> 'product_pk')
                                            COLLATE \"C\"),
                                 '')
                 FROM jsonb_array_elements(s.items) e
                 LEFT JOIN dds.h_product p ON p.h_product_pk = (e ->> 'product_pk')::uuid)
         FROM dds.s_order_basket s
         JOIN dds.h_order h USING (h_order_pk) WHERE h.order_id = $1 ORDER BY s.effective_dt"
    );
    history(env, &sql, &order_id).await
}

/// `dds.es_product_category` of a dish: (effective_dt, category name or "NULL").
async fn category_rows(env: &Env, dish: &str) -> Vec<(String, String)> {
    let sql = format!(
        "SELECT to_char(s.effective_dt, {TS}), coalesce(c.category_name, 'NULL')
         FROM dds.es_product_category s
         JOIN dds.h_product p USING (h_product_pk)
         LEFT JOIN dds.h_category c ON c.h_category_pk = s.h_category_pk
         WHERE p.product_id = $1 ORDER BY s.effective_dt"
    );
    history(env, &sql, &dish).await
}

/// The categories `dds.l_product_category` links a dish to, sorted.
async fn category_links(env: &Env, dish: &str) -> Vec<String> {
    env.pg()
        .await
        .query(
            "SELECT c.category_name FROM dds.l_product_category l
             JOIN dds.h_product p USING (h_product_pk) JOIN dds.h_category c USING (h_category_pk)
             WHERE p.product_id = $1 ORDER BY 1",
            &[&dish],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// `dds.s_product_names` of a dish: (effective_dt, name).
async fn product_name_rows(env: &Env, dish: &str) -> Vec<(String, String)> {
    let sql = format!(
        "SELECT to_char(s.effective_dt, {TS}), coalesce(s.name, 'NULL') FROM dds.s_product_names s
         JOIN dds.h_product p USING (h_product_pk) WHERE p.product_id = $1 ORDER BY s.effective_dt"
    );
    history(env, &sql, &dish).await
}

/// `dds.s_user_names` of a user: (effective_dt, name).
async fn user_name_rows(env: &Env, user: &str) -> Vec<(String, String)> {
    let sql = format!(
        "SELECT to_char(s.effective_dt, {TS}), coalesce(s.username, 'NULL') FROM dds.s_user_names s
         JOIN dds.h_user u USING (h_user_pk) WHERE u.user_id = $1 ORDER BY s.effective_dt"
    );
    history(env, &sql, &user).await
}

/// `dds.s_restaurant_names` of a restaurant: (effective_dt, name).
async fn restaurant_name_rows(env: &Env, restaurant: &str) -> Vec<(String, String)> {
    let sql = format!(
        "SELECT to_char(s.effective_dt, {TS}), coalesce(s.name, 'NULL')
         FROM dds.s_restaurant_names s JOIN dds.h_restaurant r USING (h_restaurant_pk)
         WHERE r.restaurant_id = $1 ORDER BY s.effective_dt"
    );
    history(env, &sql, &restaurant).await
}

/// The versions `stg.order_events` keeps of an order: (update_ts, final_status, basket's dish
/// ids comma-joined, offset), in the order of the tie rule.
async fn stg_versions(env: &Env, order_id: i64) -> Vec<(String, String, String, i64)> {
    let sql = format!(
        "SELECT to_char(update_ts, {TS}), payload ->> 'final_status',
                (SELECT string_agg(i ->> 'id', ',' ORDER BY i ->> 'id' COLLATE \"C\")
                 FROM jsonb_array_elements(payload -> 'order_items') i),
                src_offset
         FROM stg.order_events WHERE object_id = $1
         ORDER BY update_ts, src_partition, src_offset"
    );
    env.pg()
        .await
        .query(&sql, &[&order_id])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

/// The number of versions `dds.x_order_versions` logs of an order.
async fn logged_versions(env: &Env, order_id: i64) -> i64 {
    let pg = env.pg().await;
    pg.query_one(
        "SELECT count(*) FROM dds.x_order_versions x JOIN dds.h_order h USING (h_order_pk)
         WHERE h.order_id = $1",
        &[&order_id],
    )
    .await
    .unwrap()
    .get(0)
}

fn rows(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

/// The values of history rows ("NULL": none), oldest first: what the oracle's change lists hold.
fn values(rows: &[(String, String)]) -> Vec<Option<String>> {
    rows.iter()
        .map(|(_, v)| (v != "NULL").then(|| v.clone()))
        .collect()
}

/// The statuses of `dds.s_order_status` rows, oldest first.
fn statuses(rows: &[(String, String)]) -> Vec<String> {
    rows.iter().map(|(_, v)| v.clone()).collect()
}

/// An order's history in the vault and STG equals the oracle's: its status changes, its basket
/// changes, and the versions STG keeps (update_ts, status), in tie order.
async fn assert_order_history(env: &Env, oracle: &Oracle, order_id: i64) {
    assert_eq!(
        statuses(&status_rows(env, order_id).await),
        oracle.status_history(order_id),
        "s_order_status of {order_id} against the oracle"
    );
    let baskets: Vec<String> = oracle
        .basket_history(order_id)
        .iter()
        .map(|dishes| dishes.iter().cloned().collect::<Vec<_>>().join(","))
        .collect();
    let found: Vec<String> = basket_rows(env, order_id)
        .await
        .into_iter()
        .map(|(_, dishes)| dishes)
        .collect();
    assert_eq!(
        found, baskets,
        "s_order_basket of {order_id} against the oracle"
    );
    let stg: Vec<(String, String)> = stg_versions(env, order_id)
        .await
        .into_iter()
        .map(|(ts, status, _, _)| (ts, status))
        .collect();
    assert_eq!(
        stg,
        oracle.versions(order_id),
        "stg.order_events of {order_id} against the oracle"
    );
}

// ----- the scenarios ------------------------------------------------------------------------

const T0: &str = "2023-09-01 00:00:00";
const T1: &str = "2023-10-01 00:00:00";
const T2: &str = "2023-11-01 00:00:00";

/// An order edited after it closed: its newer version takes dish B off and adds C. The counters
/// follow the current basket; STG and the basket satellite keep both.
#[tokio::test]
async fn an_edited_basket_counts_its_current_dishes() {
    let env = Env::new().await;
    let feed = Feed::new(&env);
    let (u, r) = ("u-edit", "r-edit");
    let (a, b, c) = (
        ("d-borscht", "Борщ"),
        ("d-caesar", "Цезарь"),
        ("d-cake", "Торт"),
    );
    let names = Names::new(&[u, a.0, b.0, c.0]);
    feed.documents(&[
        restaurant(
            r,
            "Правка",
            T0,
            &[
                (a.0, a.1, "Супы"),
                (b.0, b.1, "Салаты"),
                (c.0, c.1, "Десерты"),
            ],
        ),
        user(u, "Ирина", "irina", T0),
    ]);
    let v1 = order(101, u, r, "CLOSED", "2023-09-25 13:00:00", &[a, b]);
    feed.orders(&[
        v1.clone(),
        order(102, u, r, "CLOSED", "2023-09-25 13:30:00", &[a]),
    ]);
    env.pipeline();
    let before = Showcases::default()
        .product(u, a.0, a.1, 2)
        .product(u, b.0, b.1, 1)
        .category(u, "Супы", 2)
        .category(u, "Салаты", 1);
    assert_current(&feed, &names, &before, "before the edit").await;

    feed.orders(&[order(101, u, r, "CLOSED", "2023-09-25 14:00:00", &[a, c])]);
    env.pipeline();
    let after = Showcases::default()
        .product(u, a.0, a.1, 2)
        .product(u, c.0, c.1, 1)
        .category(u, "Супы", 2)
        .category(u, "Десерты", 1);
    assert_current(&feed, &names, &after, "after the edit").await;

    // Both versions are kept: in STG, in the order's log, and in the basket satellite; the
    // status did not change, so its satellite has one row.
    let expected_stg = vec![
        (
            "2023-09-25 13:00:00".to_owned(),
            "CLOSED".to_owned(),
            "d-borscht,d-caesar".to_owned(),
            0,
        ),
        (
            "2023-09-25 14:00:00".to_owned(),
            "CLOSED".to_owned(),
            "d-borscht,d-cake".to_owned(),
            2,
        ),
    ];
    assert_eq!(stg_versions(&env, 101).await, expected_stg);
    let baskets = rows(&[
        ("2023-09-25 13:00:00", "d-borscht,d-caesar"),
        ("2023-09-25 14:00:00", "d-borscht,d-cake"),
    ]);
    assert_eq!(basket_rows(&env, 101).await, baskets);
    assert_eq!(
        status_rows(&env, 101).await,
        rows(&[("2023-09-25 13:00:00", "CLOSED")])
    );
    assert_eq!(logged_versions(&env, 101).await, 2);
    let pg = env.pg().await;
    assert_eq!(
        count(
            &pg,
            "SELECT count(*) FROM dds.l_order_product l JOIN dds.h_order h USING (h_order_pk)
             WHERE h.order_id = 101"
        )
        .await,
        3,
        "the link keeps every dish the order ever held"
    );

    // The old version read again (an exact duplicate, later in the topic) is stored once, with the
    // position it was first read at, and changes nothing.
    feed.orders(&[v1]);
    let stg = env.dwh_ok(&["stg"]);
    assert_eq!(figure(&stg, "consumed"), Some(1), "{stg}");
    assert_eq!(figure(&stg, "published"), Some(0), "{stg}");
    env.dwh_ok(&["dds"]);
    env.dwh_ok(&["cdm"]);
    assert_current(&feed, &names, &after, "after the old version again").await;
    assert_eq!(basket_rows(&env, 101).await, baskets);
    assert_eq!(stg_versions(&env, 101).await, expected_stg);
    let oracle = feed.oracle();
    for id in [101, 102] {
        assert_order_history(&env, &oracle, id).await;
    }
}

/// A menu version moves dish D from Супы to Салаты, with no new order: one cycle after
/// `dwh snapshot` moves D's orders to Салаты and revokes the Soup Fan tag earned through D.
#[tokio::test]
async fn a_recategorised_dish_moves_its_orders_and_revokes_a_tag() {
    let env = Env::new().await;
    let feed = Feed::new(&env);
    let (fan, once, r) = ("u-soup-fan", "u-soup-once", "r-soup");
    let (d, e) = (("d-solyanka", "Солянка"), ("d-bread", "Хлеб"));
    let names = Names::new(&[fan, once, d.0, e.0]);
    feed.documents(&[
        restaurant(
            r,
            "Суповая",
            T0,
            &[(d.0, d.1, "Супы"), (e.0, e.1, "Выпечка")],
        ),
        user(fan, "Олег", "oleg", T0),
        user(once, "Мария", "maria", T0),
    ]);
    let mut orders: Vec<String> = (0..5)
        .map(|i| {
            let ts = format!("2023-09-2{i} 12:00:00");
            order(201 + i, fan, r, "CLOSED", &ts, &[d])
        })
        .collect();
    orders.push(order(
        206,
        once,
        r,
        "CLOSED",
        "2023-09-25 12:00:00",
        &[d, e],
    ));
    orders.push(order(207, fan, r, "CANCELLED", "2023-09-26 12:00:00", &[d]));
    feed.orders(&orders);
    env.pipeline();
    let products = Showcases::default()
        .product(fan, d.0, d.1, 5)
        .product(once, d.0, d.1, 1)
        .product(once, e.0, e.1, 1);
    let before = products
        .clone()
        .category(fan, "Супы", 5)
        .category(once, "Супы", 1)
        .category(once, "Выпечка", 1)
        .tag(fan, "Soup Fan", 5);
    assert_current(&feed, &names, &before, "before the menu change").await;

    feed.documents(&[restaurant(
        r,
        "Суповая",
        T1,
        &[(d.0, d.1, "Салаты"), (e.0, e.1, "Выпечка")],
    )]);
    snapshot_and_cycle(&env);
    let after = products
        .category(fan, "Салаты", 5)
        .category(once, "Салаты", 1)
        .category(once, "Выпечка", 1);
    assert_current(&feed, &names, &after, "after the menu change").await;

    assert_eq!(
        category_rows(&env, d.0).await,
        rows(&[(T0, "Супы"), (T1, "Салаты")])
    );
    assert_eq!(category_links(&env, d.0).await, ["Салаты", "Супы"]);
    assert_eq!(
        category_rows(&env, e.0).await,
        rows(&[(T0, "Выпечка")]),
        "E's category did not change"
    );
    assert_eq!(product_name_rows(&env, d.0).await, rows(&[(T0, d.1)]));
    let oracle = feed.oracle();
    for dish in [d.0, e.0] {
        assert_eq!(
            values(&category_rows(&env, dish).await),
            oracle.dish_category_history(dish),
            "es_product_category of {dish} against the oracle"
        );
        assert_eq!(
            values(&product_name_rows(&env, dish).await),
            oracle.dish_name_history(dish),
            "s_product_names of {dish} against the oracle"
        );
    }
    let pg = env.pg().await;
    assert_eq!(
        count(&pg, "SELECT count(*) FROM stg.restaurants").await,
        2,
        "both menu versions in STG"
    );
}

/// A renamed dish, user and restaurant, with no new order: the product counters show the dish's
/// new name, each satellite keeps both names, and nothing else changes.
#[tokio::test]
async fn renames_reach_the_showcases_without_new_orders() {
    let env = Env::new().await;
    let feed = Feed::new(&env);
    let (u, r) = ("u-rename", "r-rename");
    let d = ("d-pelmeni", "Пельмени");
    let names = Names::new(&[u, d.0]);
    feed.documents(&[
        restaurant(r, "Старая столовая", T0, &[(d.0, d.1, "Основные блюда")]),
        user(u, "Анна Смирнова", "anna", T0),
    ]);
    feed.orders(&[
        order(301, u, r, "CLOSED", "2023-09-25 12:00:00", &[d]),
        order(302, u, r, "CLOSED", "2023-09-26 12:00:00", &[d]),
    ]);
    env.pipeline();
    let before = Showcases::default()
        .product(u, d.0, d.1, 2)
        .category(u, "Основные блюда", 2);
    assert_current(&feed, &names, &before, "before the renames").await;

    let renamed = "Пельмени сибирские";
    feed.documents(&[
        restaurant(r, "Новая столовая", T1, &[(d.0, renamed, "Основные блюда")]),
        user(u, "Анна Петрова", "anna", T1),
    ]);
    snapshot_and_cycle(&env);
    let after = Showcases::default()
        .product(u, d.0, renamed, 2)
        .category(u, "Основные блюда", 2);
    assert_current(&feed, &names, &after, "after the renames").await;

    assert_eq!(
        product_name_rows(&env, d.0).await,
        rows(&[(T0, d.1), (T1, renamed)])
    );
    assert_eq!(
        user_name_rows(&env, u).await,
        rows(&[(T0, "Анна Смирнова"), (T1, "Анна Петрова")])
    );
    assert_eq!(
        restaurant_name_rows(&env, r).await,
        rows(&[(T0, "Старая столовая"), (T1, "Новая столовая")])
    );
    assert_eq!(
        category_rows(&env, d.0).await,
        rows(&[(T0, "Основные блюда")]),
        "the category did not change"
    );
    let oracle = feed.oracle();
    assert_eq!(
        values(&product_name_rows(&env, d.0).await),
        oracle.dish_name_history(d.0)
    );
    assert_eq!(
        values(&category_rows(&env, d.0).await),
        oracle.dish_category_history(d.0)
    );
    let user_names: Vec<Option<String>> = oracle
        .user_history(u)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(values(&user_name_rows(&env, u).await), user_names);
    assert_eq!(
        values(&restaurant_name_rows(&env, r).await),
        oracle.restaurant_history(r)
    );
}

/// A new order's versions arriving in one batch, out of order: its satellites keep the change
/// points among them, as when they arrive one batch each (a parent the batch adds takes the
/// change points marked in the stage; a later batch goes through the stored versions).
#[tokio::test]
async fn a_new_orders_versions_in_one_batch_keep_only_the_changes() {
    let env = Env::new().await;
    let feed = Feed::new(&env);
    let (u, r) = ("u-batch", "r-batch");
    let d = ("d-soup", "Борщ");
    let (t1, t2, t3) = (
        "2023-09-25 12:00:00",
        "2023-09-25 13:00:00",
        "2023-09-25 14:00:00",
    );
    feed.documents(&[
        restaurant(r, "Столовая", T0, &[(d.0, d.1, "Супы")]),
        user(u, "Анна", "anna", T0),
    ]);
    feed.orders(&[
        order(501, u, r, "CLOSED", t3, &[d]),
        order(501, u, r, "CLOSED", t1, &[d]),
        order(501, u, r, "CANCELLED", t2, &[d]),
        order(502, u, r, "CLOSED", t2, &[d]),
        order(502, u, r, "CLOSED", t1, &[d]),
    ]);
    env.pipeline();
    assert_eq!(
        status_rows(&env, 501).await,
        rows(&[(t1, "CLOSED"), (t2, "CANCELLED"), (t3, "CLOSED")])
    );
    assert_eq!(
        status_rows(&env, 502).await,
        rows(&[(t1, "CLOSED")]),
        "a repeated status adds no row"
    );
    assert_eq!(
        basket_rows(&env, 502).await.len(),
        1,
        "nor a repeated basket"
    );
    let oracle = feed.oracle();
    for order_id in [501, 502] {
        assert_order_history(&env, &oracle, order_id).await;
    }
    assert!(reconciliation(&env).await.is_empty());
}

/// Status flip-flops arriving out of order, each in its own cycle: CLOSED(t1), then CLOSED(t3),
/// then the CANCELLED(t2) between them. The order counts (CLOSED is current), the status
/// satellite holds the three change points, and a repeated CLOSED(t4) adds no row.
#[tokio::test]
async fn status_flip_flops_out_of_order_keep_every_change_point() {
    let env = Env::new().await;
    let feed = Feed::new(&env);
    let (u, r) = ("u-flip", "r-flip");
    let d = ("d-tea", "Чай чёрный");
    let names = Names::new(&[u, d.0]);
    let (t1, t2, t3, t4) = (
        "2023-09-25 12:00:00",
        "2023-09-25 13:00:00",
        "2023-09-25 14:00:00",
        "2023-09-25 15:00:00",
    );
    feed.documents(&[
        restaurant(r, "Чайная", T0, &[(d.0, d.1, "Чай")]),
        user(u, "Пётр", "petr", T0),
    ]);
    // Order 401 flips; order 402 was cancelled (t2), its CLOSED (t1) arrives last; 403 and 404
    // make three Чай orders with 401: the Tea Drinker tag stands on 401 being CLOSED.
    let expected = Showcases::default()
        .product(u, d.0, d.1, 3)
        .category(u, "Чай", 3)
        .tag(u, "Tea Drinker", 3);
    let steps: [(&str, Vec<String>); 4] = [
        (
            "CLOSED(t1)",
            vec![
                order(401, u, r, "CLOSED", t1, &[d]),
                order(402, u, r, "CANCELLED", t2, &[d]),
                order(403, u, r, "CLOSED", t1, &[d]),
                order(404, u, r, "CLOSED", t1, &[d]),
            ],
        ),
        ("CLOSED(t3)", vec![order(401, u, r, "CLOSED", t3, &[d])]),
        (
            "CANCELLED(t2)",
            vec![
                order(401, u, r, "CANCELLED", t2, &[d]),
                order(402, u, r, "CLOSED", t1, &[d]),
            ],
        ),
        ("CLOSED(t4)", vec![order(401, u, r, "CLOSED", t4, &[d])]),
    ];
    for (step, lines) in steps {
        feed.orders(&lines);
        env.pipeline();
        let when = format!("after {step}");
        assert_current(&feed, &names, &expected, &when).await;
        let status = status_rows(&env, 401).await;
        match step {
            "CLOSED(t1)" | "CLOSED(t3)" => {
                assert_eq!(status, rows(&[(t1, "CLOSED")]), "{when}: no change at t3")
            }
            _ => assert_eq!(
                status,
                rows(&[(t1, "CLOSED"), (t2, "CANCELLED"), (t3, "CLOSED")]),
                "{when}"
            ),
        }
    }
    assert_eq!(
        status_rows(&env, 402).await,
        rows(&[(t1, "CLOSED"), (t2, "CANCELLED")])
    );
    assert_eq!(logged_versions(&env, 401).await, 4);
    let stg: Vec<(String, String)> = stg_versions(&env, 401)
        .await
        .into_iter()
        .map(|(ts, status, _, _)| (ts, status))
        .collect();
    assert_eq!(
        stg,
        rows(&[
            (t1, "CLOSED"),
            (t2, "CANCELLED"),
            (t3, "CLOSED"),
            (t4, "CLOSED")
        ])
    );
    let oracle = feed.oracle();
    for id in [401, 402, 403, 404] {
        assert_order_history(&env, &oracle, id).await;
    }
}

/// One run of the equal-timestamps scenario: the messages produced in `order_of_sending`, loaded
/// in one batch per job, or one message per batch. Returns the showcases it ends with.
async fn equal_update_ts(order_of_sending: &[usize], one_per_batch: bool) -> Showcases {
    let env = Env::new().await;
    let feed = Feed::new(&env);
    let (u, r) = ("u-tie", "r-tie");
    let (a, b) = (("d-ukha", "Уха"), ("d-vinegret", "Винегрет"));
    let names = Names::new(&[u, a.0, b.0]);
    let t = "2023-09-25 12:00:00";
    feed.documents(&[
        restaurant(r, "Ничья", T0, &[(a.0, a.1, "Супы"), (b.0, b.1, "Салаты")]),
        user(u, "Нина", "nina", T0),
    ]);
    // Two versions of 501 (baskets A, B) and of 502 (CLOSED, CANCELLED), all at `t`.
    let messages = [
        order(501, u, r, "CLOSED", t, &[a]),
        order(502, u, r, "CLOSED", t, &[a]),
        order(501, u, r, "CLOSED", t, &[b]),
        order(502, u, r, "CANCELLED", t, &[a]),
    ];
    let sent: Vec<String> = order_of_sending
        .iter()
        .map(|i| messages[*i].clone())
        .collect();
    feed.orders(&sent);
    let pg = env.pg().await;
    if one_per_batch {
        // Each stg run takes one order message; each dds run one STG message (an order version
        // or a dictionary version); cdm after each round. Bounded: 4 orders, a few dictionaries.
        for round in 0.. {
            assert!(round <= 4, "stg did not drain 4 messages one at a time");
            let stg = env.dwh_ok(&["stg", "--max-messages", "1"]);
            for dds_round in 0.. {
                assert!(
                    dds_round <= 10,
                    "dds did not drain the STG topic one at a time"
                );
                let dds = env.dwh_ok(&["dds", "--max-messages", "1"]);
                if figure(&dds, "consumed") == Some(0) {
                    break;
                }
            }
            env.dwh_ok(&["cdm"]);
            if figure(&stg, "consumed") == Some(0) {
                break;
            }
        }
        let sql = format!(
            "SELECT count(*) FROM dwh.batches WHERE job = 'stg' AND topic = '{}'",
            env.orders_topic
        );
        assert_eq!(count(&pg, &sql).await, 4, "one message per STG batch");
    } else {
        env.pipeline();
        let sql = "SELECT count(*) FROM dwh.batches WHERE job = 'dds'";
        assert_eq!(count(&pg, sql).await, 1, "all in one DDS batch");
    }
    let when = format!("sent in order {order_of_sending:?}, one per batch: {one_per_batch}");

    // The version read later (greater offset) of each order is current.
    let position = |i: usize| order_of_sending.iter().position(|s| *s == i).unwrap();
    let basket_501 = if position(2) > position(0) { b } else { a };
    let status_502 = if position(3) > position(1) {
        "CANCELLED"
    } else {
        "CLOSED"
    };
    assert_eq!(
        basket_rows(&env, 501).await,
        rows(&[(t, basket_501.0)]),
        "{when}"
    );
    assert_eq!(
        status_rows(&env, 501).await,
        rows(&[(t, "CLOSED")]),
        "{when}"
    );
    assert_eq!(
        status_rows(&env, 502).await,
        rows(&[(t, status_502)]),
        "{when}"
    );
    // Both versions of each order are kept in STG, each with its position.
    for (id, versions) in [(501, [0, 2]), (502, [1, 3])] {
        let mut offsets: Vec<i64> = stg_versions(&env, id).await.iter().map(|v| v.3).collect();
        offsets.sort();
        let mut expected: Vec<i64> = versions.iter().map(|i| position(*i) as i64).collect();
        expected.sort();
        assert_eq!(offsets, expected, "{when}: STG versions of {id}");
    }

    let oracle = feed.oracle();
    for id in [501, 502] {
        assert_order_history(&env, &oracle, id).await;
    }

    let found = Showcases::of(&env, &names).await;
    // The CLOSED orders' current dishes: 501's basket, and 502's (A) when it is CLOSED.
    let mut dishes = vec![basket_501];
    if status_502 == "CLOSED" {
        dishes.push(a);
    }
    let mut expected = Showcases::default();
    for (dish, category) in [(a, "Супы"), (b, "Салаты")] {
        let n = dishes.iter().filter(|d| **d == dish).count() as i64;
        if n > 0 {
            expected = expected
                .product(u, dish.0, dish.1, n)
                .category(u, category, n);
        }
    }
    assert_current(&feed, &names, &expected, &when).await;
    found
}

/// Two different versions of an order with the same update_ts: the one read later (the greater
/// offset of the one partition) is current, whether both came in one batch or in separate ones,
/// and whichever was produced first.
#[tokio::test]
async fn on_equal_update_ts_the_version_read_later_wins() {
    let forward = [0, 1, 2, 3];
    let one_batch = equal_update_ts(&forward, false).await;
    let separate = equal_update_ts(&forward, true).await;
    assert_eq!(one_batch, separate, "the same showcases both ways");
    let reverse = [2, 3, 0, 1];
    let one_batch = equal_update_ts(&reverse, false).await;
    let separate = equal_update_ts(&reverse, true).await;
    assert_eq!(
        one_batch, separate,
        "the same showcases both ways (reversed)"
    );
}

// ----- parallel DDS workers -----------------------------------------------------------------

/// CRC-32 (IEEE), librdkafka's hash of a message key for its default partitioner.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The partition a message keyed `key` goes to (librdkafka's `consistent_random`).
fn partition_of(key: &str, partitions: u32) -> i32 {
    (crc32(key.as_bytes()) % partitions) as i32
}

/// Messages in each partition of `topic` (high watermarks).
fn partition_ends(env: &Env, topic: &str) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .create()
        .expect("a consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("topic metadata");
    let mut partitions: Vec<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    partitions.sort();
    partitions
        .iter()
        .map(|p| {
            consumer
                .fetch_watermarks(topic, *p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .collect()
}

/// `dwh stg`, which must publish exactly one message, into STG partition `partition`.
fn stg_publishes_one_into(env: &Env, partition: i32, what: &str) {
    let before = partition_ends(env, &env.stg_topic);
    env.dwh_ok(&["stg"]);
    let after = partition_ends(env, &env.stg_topic);
    let mut expected = before.clone();
    expected[partition as usize] += 1;
    assert_eq!(
        after, expected,
        "{what}: one message into partition {partition}"
    );
}

/// `dwh dds --worker i/2` held at `dds:before-commit` (its batch loaded, not committed).
fn dds_held(env: &Env, worker: i32) -> (Pause, Background) {
    let pause = Pause::at(env, "dds:before-commit");
    let share = format!("{worker}/2");
    let mut run = Background::start(env.command(&["dds", "--worker", &share], &pause.env()));
    pause.reached(&mut run);
    (pause, run)
}

/// Two DDS workers (`--worker 0/2`, `1/2`) race a late menu: one batch carries a menu version
/// moving dish D to another category, the other a new order of D by another user. Whichever
/// commits first while the other is held before its commit, after cdm every user counts D in its
/// current category: nobody missed a recompute.
#[tokio::test]
async fn parallel_dds_workers_racing_a_late_menu_miss_no_user() {
    let env = Env::with_partitions(2).await;
    let feed = Feed::new(&env);
    let r = "r-race";
    let (u1, u2, u3) = ("u-race-1", "u-race-2", "u-race-3");
    let d = ("d-shchi", "Щи");
    let names = Names::new(&[u1, u2, u3, d.0]);
    let menu_partition = partition_of(r, 2);
    let order_partition = 1 - menu_partition;
    let mut ids = (600..).filter(|id: &i64| partition_of(&id.to_string(), 2) == order_partition);
    let menu = |ts: &str, category: &str| restaurant(r, "Гонка", ts, &[(d.0, d.1, category)]);

    // Everyone is known to DDS before the race (a user version in the race would be a third
    // message); u1 earned Soup Fan with D.
    feed.documents(&[
        menu(T0, "Супы"),
        user(u1, "Первый", "first", T0),
        user(u2, "Второй", "second", T0),
        user(u3, "Третий", "third", T0),
    ]);
    env.dwh_ok(&["snapshot"]);
    let fan_orders: Vec<String> = (0..5)
        .map(|i| {
            let ts = format!("2023-09-2{i} 12:00:00");
            order(610 + i, u1, r, "CLOSED", &ts, &[d])
        })
        .collect();
    feed.orders(&fan_orders);
    env.pipeline();
    let start = Showcases::default()
        .product(u1, d.0, d.1, 5)
        .category(u1, "Супы", 5)
        .tag(u1, "Soup Fan", 5);
    assert_current(&feed, &names, &start, "before the race").await;

    // Race 1: u2's order of D is read by STG first (enriched with Супы), then the menu moves D
    // to Салаты. The menu's worker is held before its commit while the order's worker commits.
    let o2 = ids.next().unwrap();
    feed.orders(&[order(o2, u2, r, "CLOSED", "2023-10-02 12:00:00", &[d])]);
    stg_publishes_one_into(&env, order_partition, "u2's order");
    feed.documents(&[menu(T1, "Салаты")]);
    env.dwh_ok(&["snapshot"]);
    stg_publishes_one_into(&env, menu_partition, "the menu moving D to Салаты");

    let (pause, held) = dds_held(&env, menu_partition);
    let line = env.dwh_ok(&["dds", "--worker", &format!("{order_partition}/2")]);
    assert_eq!(figure(&line, "consumed"), Some(1), "{line}");
    env.dwh_ok(&["cdm"]);
    let meanwhile = start
        .clone()
        .product(u2, d.0, d.1, 1)
        .category(u2, "Супы", 1);
    assert_showcases(&env, &names, &meanwhile, "menu held, u2's order committed").await;
    pause.release();
    let done = held.finish();
    assert_eq!(
        figure(done.succeeded(), "consumed"),
        Some(1),
        "{}",
        done.stdout
    );
    env.dwh_ok(&["cdm"]);
    let after_race_1 = Showcases::default()
        .product(u1, d.0, d.1, 5)
        .product(u2, d.0, d.1, 1)
        .category(u1, "Салаты", 5)
        .category(u2, "Салаты", 1);
    assert_current(&feed, &names, &after_race_1, "after race 1").await;
    drop(pause);

    // Race 2: u3's order of D (enriched with Салаты), then the menu moves D to Закуски. This
    // time the order's worker is held before its commit while the menu's worker commits.
    let o3 = ids.next().unwrap();
    feed.orders(&[order(o3, u3, r, "CLOSED", "2023-11-02 12:00:00", &[d])]);
    stg_publishes_one_into(&env, order_partition, "u3's order");
    feed.documents(&[menu(T2, "Закуски")]);
    env.dwh_ok(&["snapshot"]);
    stg_publishes_one_into(&env, menu_partition, "the menu moving D to Закуски");

    let (pause, held) = dds_held(&env, order_partition);
    let line = env.dwh_ok(&["dds", "--worker", &format!("{menu_partition}/2")]);
    assert_eq!(figure(&line, "consumed"), Some(1), "{line}");
    env.dwh_ok(&["cdm"]);
    let meanwhile = Showcases::default()
        .product(u1, d.0, d.1, 5)
        .product(u2, d.0, d.1, 1)
        .category(u1, "Закуски", 5)
        .category(u2, "Закуски", 1);
    assert_showcases(&env, &names, &meanwhile, "u3's order held, menu committed").await;
    pause.release();
    let done = held.finish();
    assert_eq!(
        figure(done.succeeded(), "consumed"),
        Some(1),
        "{}",
        done.stdout
    );
    env.dwh_ok(&["cdm"]);
    let end = meanwhile
        .product(u3, d.0, d.1, 1)
        .category(u3, "Закуски", 1);
    assert_current(&feed, &names, &end, "after race 2").await;

    assert_eq!(
        category_rows(&env, d.0).await,
        rows(&[(T0, "Супы"), (T1, "Салаты"), (T2, "Закуски")])
    );
    assert_eq!(
        category_links(&env, d.0).await,
        ["Закуски", "Салаты", "Супы"]
    );
    assert_eq!(
        values(&category_rows(&env, d.0).await),
        feed.oracle().dish_category_history(d.0)
    );
}
