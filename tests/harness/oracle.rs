//! The expected warehouse, computed straight from the testdata files.
//!
//! This shares no code with dwh: it reads the JSON lines with `serde_json::Value` and applies the
//! rules of DESIGN §1, §2, §5, §6 and README "The model", nothing else:
//! - An order message is valid or junk (DESIGN §2.1). Every distinct valid version of an order is
//!   kept (its payload is its content: an escaped and a raw UTF-8 copy are one version, and so are
//!   two messages that differ only outside the payload); an exact duplicate (a replay, a
//!   redelivery) is kept once, at the place it was first added, and changes nothing.
//! - Versions are ordered by `payload.update_ts`; on equal `update_ts` the version added later
//!   wins (callers add messages in the order they are produced, and put versions that must tie in
//!   one partition, where production order is read order). The current version is the last.
//! - Dictionary documents are versions too, ordered by `update_ts_utc` (a document without one:
//!   the time it is added, standing for the time STG stores it), ties → the one added later; an
//!   identical document added again is the version already kept.
//! - A dish's name and category are those of the newest restaurant version (any restaurant)
//!   whose menu lists the dish; a listed dish without a category has none. A dish no menu lists
//!   has no category and, in a user's showcase, the name the user's newest CLOSED order holding
//!   it gives it.
//! - An order counts when its current status is CLOSED, with the distinct dishes of its current
//!   version; a counter is the number of distinct orders; a counter of zero has no row.
//! - DDS keeps one version per timestamp (the winner of a tie) and a satellite row per change:
//!   [`Oracle::dds_versions`], [`changes`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;
use uuid::{uuid, Uuid};

const NAMESPACE: Uuid = uuid!("7f288a2e-0ad0-4039-8e59-6c9838d87307");

/// Hub key of a business key, as DESIGN §5 defines it.
pub fn key(business_key: &str) -> Uuid {
    Uuid::new_v5(&NAMESPACE, business_key.as_bytes())
}

/// One valid version of an order.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub user_id: String,
    pub restaurant_id: String,
    pub status: String,
    pub update_ts: String,
    pub cost: i64,
    pub payment: i64,
    /// (dish id, dish name) per order line.
    pub items: Vec<(String, String)>,
}

impl Order {
    /// The distinct dishes of this version.
    pub fn dishes(&self) -> BTreeSet<&str> {
        self.items.iter().map(|(id, _)| id.as_str()).collect()
    }

    /// The name this version gives `dish` (its first line of the dish).
    pub fn name_of(&self, dish: &str) -> Option<&str> {
        self.items
            .iter()
            .find(|(id, _)| id == dish)
            .map(|(_, name)| name.as_str())
    }
}

/// A kept order version: the order, its payload (its identity) and when it was first added.
#[derive(Debug, Clone)]
struct OrderVersion {
    order: Order,
    payload: Value,
    arrival: u64,
}

/// A dish as a menu lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct MenuDish {
    pub name: Option<String>,
    pub category: Option<String>,
}

/// A version of a restaurant document.
#[derive(Debug, Clone)]
pub struct RestaurantVersion {
    pub name: Option<String>,
    /// `update_ts_utc`, or the time the document was added when it has none.
    pub update_ts: String,
    /// Dish id → the dish as this version's menu lists it (an entry without `_id` is no dish).
    pub menu: BTreeMap<String, MenuDish>,
    arrival: u64,
    doc: Value,
}

/// A version of a user document.
#[derive(Debug, Clone)]
pub struct UserVersion {
    pub name: Option<String>,
    pub login: Option<String>,
    /// `update_ts_utc`, or the time the document was added when it has none.
    pub update_ts: String,
    arrival: u64,
    doc: Value,
}

#[derive(Debug, Default)]
pub struct Oracle {
    /// The current (newest) valid version of every order.
    pub orders: BTreeMap<i64, Order>,
    /// Lines that are not valid orders.
    pub junk: usize,
    /// Every line of the order files.
    pub lines: usize,
    /// (restaurant id, dish id) → category, for every pair a version of the restaurant lists with
    /// a category (the newest such version's category).
    pub menu: BTreeMap<(String, String), String>,
    /// Ids of the users with a document.
    pub users: BTreeSet<String>,
    /// Ids of the restaurants with a document.
    pub restaurants: BTreeSet<String>,
    /// Every distinct valid version of each order, in (update_ts, arrival) order.
    history: BTreeMap<i64, Vec<OrderVersion>>,
    /// Every distinct version of each user document, in (update_ts, arrival) order.
    user_versions: BTreeMap<String, Vec<UserVersion>>,
    /// Every distinct version of each restaurant document, in (update_ts, arrival) order.
    restaurant_versions: BTreeMap<String, Vec<RestaurantVersion>>,
    /// Additions so far (orders and documents alike): the arrival order.
    added: u64,
}

/// Exactly `YYYY-MM-DD HH:MM:SS` (DESIGN §2.1), and a real date and time.
fn is_ts(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 19 && chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").is_ok()
    })
}

/// A business key: a string of at most 256 bytes (the bound dwh documents for ids).
fn key_text(v: &Value) -> Option<String> {
    v.as_str().filter(|s| s.len() <= 256).map(str::to_owned)
}

fn non_empty(v: &Value) -> Option<String> {
    key_text(v).filter(|s| !s.is_empty())
}

/// A non-negative amount of money.
fn amount(v: &Value) -> Option<i64> {
    v.as_i64().filter(|n| *n >= 0)
}

/// The statuses (or any attribute) of successive versions reduced to their change points: the
/// first, then each that differs from the one before it — the rows a satellite keeps.
pub fn changes<T: PartialEq>(values: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for v in values {
        if out.last() != Some(&v) {
            out.push(v);
        }
    }
    out
}

/// Where an order's current version stands among all: (update_ts, arrival).
type Place<'a> = (&'a str, u64);

/// Of versions in (timestamp, arrival) order, the winner of each timestamp (the last).
fn winners<T>(versions: &[T], ts: impl Fn(&T) -> &str) -> Vec<&T> {
    let mut out: Vec<&T> = Vec::new();
    for v in versions {
        match out.last_mut() {
            Some(last) if ts(last) == ts(v) => *last = v,
            _ => out.push(v),
        }
    }
    out
}

/// A valid order message as `(object_id, order)`, or `None` for junk.
pub fn parse_order(line: &str) -> Option<(i64, Order)> {
    parse(line).map(|(id, order, _)| (id, order))
}

/// A valid order message as `(object_id, order, payload)`.
fn parse(line: &str) -> Option<(i64, Order, Value)> {
    let v: Value = serde_json::from_str(line).ok()?;
    let id = v.get("object_id")?.as_i64().filter(|id| *id > 0)?;
    if v.get("object_type")?.as_str()? != "order" || !is_ts(v.get("sent_dttm")?) {
        return None;
    }
    let p = v.get("payload")?;
    if !is_ts(p.get("date")?) || !is_ts(p.get("update_ts")?) {
        return None;
    }
    let cost = amount(p.get("cost")?)?;
    let payment = amount(p.get("payment")?)?;
    let mut items = Vec::new();
    for item in p.get("order_items")?.as_array()? {
        amount(item.get("price")?)?;
        item.get("quantity")?.as_i64().filter(|q| *q >= 1)?;
        items.push((
            key_text(item.get("id")?)?,
            item.get("name")?.as_str()?.to_owned(),
        ));
    }
    let order = Order {
        user_id: non_empty(p.get("user")?.get("id")?)?,
        restaurant_id: non_empty(p.get("restaurant")?.get("id")?)?,
        status: non_empty(p.get("final_status")?)?,
        update_ts: p.get("update_ts")?.as_str()?.to_owned(),
        cost,
        payment,
        items,
    };
    Some((id, order, p.clone()))
}

/// A dictionary document's version timestamp: `update_ts_utc`, or now (when STG stores it).
fn doc_ts(doc: &Value) -> String {
    match doc.get("update_ts_utc") {
        Some(ts) if is_ts(ts) => ts.as_str().unwrap().to_owned(),
        _ => chrono::Utc::now()
            .naive_utc()
            .format("%Y-%m-%d %H:%M:%S%.6f")
            .to_string(),
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_owned)
}

impl Oracle {
    /// The expectation for the bundled testdata.
    pub fn testdata() -> Oracle {
        Oracle::from_dir(&super::testdata())
    }

    /// The expectation for the files `testdata/generate.py` wrote into `dir`.
    pub fn from_dir(dir: &Path) -> Oracle {
        let mut oracle = Oracle::default();
        oracle.add_orders(&std::fs::read_to_string(dir.join("orders.jsonl")).unwrap());
        oracle.add_dictionaries(&dir.join("users.jsonl"), &dir.join("restaurants.jsonl"));
        oracle
    }

    /// Add order lines, in the order they are produced.
    pub fn add_orders(&mut self, text: &str) {
        for line in text.lines().filter(|l| !l.is_empty()) {
            self.add_message(line);
        }
    }

    /// Add one order message, produced after every message added before it.
    pub fn add_message(&mut self, message: &str) {
        self.lines += 1;
        let Some((id, order, payload)) = parse(message) else {
            self.junk += 1;
            return;
        };
        let versions = self.history.entry(id).or_default();
        if versions.iter().any(|v| v.payload == payload) {
            // An exact duplicate: one version, at the place it was first read; nothing changes.
            return;
        }
        self.added += 1;
        versions.push(OrderVersion {
            order,
            payload,
            arrival: self.added,
        });
        versions
            .sort_by(|a, b| (&a.order.update_ts, a.arrival).cmp(&(&b.order.update_ts, b.arrival)));
        let current = versions.last().unwrap().order.clone();
        self.orders.insert(id, current);
    }

    fn add_dictionaries(&mut self, users: &Path, restaurants: &Path) {
        for line in std::fs::read_to_string(users).unwrap().lines() {
            self.add_user(&serde_json::from_str(line).unwrap());
        }
        for line in std::fs::read_to_string(restaurants).unwrap().lines() {
            self.add_restaurant(&serde_json::from_str(line).unwrap());
        }
    }

    /// Add a version of a user document dwh reads (loaded after every version added before).
    pub fn add_user(&mut self, doc: &Value) {
        let id = doc["_id"].as_str().unwrap().to_owned();
        self.users.insert(id.clone());
        let versions = self.user_versions.entry(id).or_default();
        if versions.iter().any(|v| v.doc == *doc) {
            return;
        }
        self.added += 1;
        versions.push(UserVersion {
            name: text(doc.get("name")),
            login: text(doc.get("login")),
            update_ts: doc_ts(doc),
            arrival: self.added,
            doc: doc.clone(),
        });
        versions.sort_by(|a, b| (&a.update_ts, a.arrival).cmp(&(&b.update_ts, b.arrival)));
    }

    /// Add a version of a restaurant document dwh reads (loaded after every version added
    /// before): its menu gives the names and categories of its dishes.
    pub fn add_restaurant(&mut self, doc: &Value) {
        let rid = doc["_id"].as_str().unwrap().to_owned();
        self.restaurants.insert(rid.clone());
        let versions = self.restaurant_versions.entry(rid.clone()).or_default();
        if versions.iter().any(|v| v.doc == *doc) {
            return;
        }
        self.added += 1;
        let mut menu = BTreeMap::new();
        for item in doc["menu"].as_array().unwrap() {
            if let Some(dish) = item.get("_id").and_then(Value::as_str) {
                menu.entry(dish.to_owned()).or_insert(MenuDish {
                    name: text(item.get("name")),
                    category: text(item.get("category")),
                });
            }
        }
        versions.push(RestaurantVersion {
            name: text(doc.get("name")),
            update_ts: doc_ts(doc),
            menu,
            arrival: self.added,
            doc: doc.clone(),
        });
        versions.sort_by(|a, b| (&a.update_ts, a.arrival).cmp(&(&b.update_ts, b.arrival)));
        self.menu.retain(|(r, _), _| *r != rid);
        for v in versions.iter() {
            for (dish, listed) in &v.menu {
                if let Some(category) = &listed.category {
                    self.menu
                        .insert((rid.clone(), dish.clone()), category.clone());
                }
            }
        }
    }

    // ---- order history ----

    fn kept(&self, order_id: i64) -> &[OrderVersion] {
        self.history.get(&order_id).map_or(&[], Vec::as_slice)
    }

    /// Every distinct valid version of the order as (update_ts, status), in (update_ts, arrival)
    /// order, an exact duplicate once: what `stg.order_events` holds of it.
    pub fn versions(&self, order_id: i64) -> Vec<(String, String)> {
        self.kept(order_id)
            .iter()
            .map(|v| (v.order.update_ts.clone(), v.order.status.clone()))
            .collect()
    }

    /// How many distinct valid order versions there are: the rows of `stg.order_events`.
    pub fn version_count(&self) -> usize {
        self.history.values().map(Vec::len).sum()
    }

    /// The messages `dwh stg` publishes when it loads these orders with every dictionary
    /// document in Redis (README "The model"): every order version, and every version of the
    /// users and restaurants the orders name (STG reads those) that has a document.
    pub fn stg_messages(&self) -> usize {
        let users: BTreeSet<&str> = self.orders.values().map(|o| o.user_id.as_str()).collect();
        let restaurants: BTreeSet<&str> = self
            .orders
            .values()
            .map(|o| o.restaurant_id.as_str())
            .collect();
        let users: usize = users
            .into_iter()
            .filter_map(|u| self.user_versions.get(u))
            .map(Vec::len)
            .sum();
        let restaurants: usize = restaurants
            .into_iter()
            .filter_map(|r| self.restaurant_versions.get(r))
            .map(Vec::len)
            .sum();
        self.version_count() + users + restaurants
    }

    /// Every distinct valid version of the order, in (update_ts, arrival) order.
    pub fn order_versions(&self, order_id: i64) -> Vec<&Order> {
        self.kept(order_id).iter().map(|v| &v.order).collect()
    }

    /// The versions DDS keeps of the order: one per `update_ts` (the tie's winner), in order.
    pub fn dds_versions(&self, order_id: i64) -> Vec<&Order> {
        winners(self.kept(order_id), |v| &v.order.update_ts)
            .into_iter()
            .map(|v| &v.order)
            .collect()
    }

    /// The order's status changes, oldest first: the statuses of the versions (of
    /// [`Self::dds_versions`]) whose status differs from the version before — the rows of
    /// `dds.s_order_status`.
    pub fn status_history(&self, order_id: i64) -> Vec<String> {
        changes(
            self.dds_versions(order_id)
                .into_iter()
                .map(|o| o.status.clone()),
        )
    }

    /// The order's (cost, payment) changes, oldest first — the rows of `dds.s_order_cost`.
    pub fn cost_history(&self, order_id: i64) -> Vec<(i64, i64)> {
        changes(
            self.dds_versions(order_id)
                .into_iter()
                .map(|o| (o.cost, o.payment)),
        )
    }

    /// The order's basket changes (the distinct dishes of a version), oldest first.
    pub fn basket_history(&self, order_id: i64) -> Vec<BTreeSet<String>> {
        changes(self.dds_versions(order_id).into_iter().map(|o| {
            o.dishes()
                .into_iter()
                .map(str::to_owned)
                .collect::<BTreeSet<_>>()
        }))
    }

    // ---- dictionaries ----

    /// The versions DDS keeps of a user: one per timestamp (the tie's winner), in order.
    pub fn user_versions(&self, user_id: &str) -> Vec<&UserVersion> {
        winners(
            self.user_versions.get(user_id).map_or(&[], Vec::as_slice),
            |v| &v.update_ts,
        )
    }

    /// The user's (name, login) changes, oldest first — the rows of `dds.s_user_names`.
    pub fn user_history(&self, user_id: &str) -> Vec<(Option<String>, Option<String>)> {
        changes(
            self.user_versions(user_id)
                .into_iter()
                .map(|v| (v.name.clone(), v.login.clone())),
        )
    }

    /// The versions DDS keeps of a restaurant: one per timestamp (the tie's winner), in order.
    pub fn restaurant_versions(&self, restaurant_id: &str) -> Vec<&RestaurantVersion> {
        winners(
            self.restaurant_versions
                .get(restaurant_id)
                .map_or(&[], Vec::as_slice),
            |v| &v.update_ts,
        )
    }

    /// The restaurant's name changes, oldest first — the rows of `dds.s_restaurant_names`.
    pub fn restaurant_history(&self, restaurant_id: &str) -> Vec<Option<String>> {
        changes(
            self.restaurant_versions(restaurant_id)
                .into_iter()
                .map(|v| v.name.clone()),
        )
    }

    /// The menu versions (any restaurant) that list `dish`, as DDS keeps them: one per
    /// timestamp (on equal `update_ts_utc` the one added later), oldest first, each with the
    /// dish as it lists it.
    pub fn dish_versions(&self, dish: &str) -> Vec<(&str, &MenuDish)> {
        let mut listing: Vec<&RestaurantVersion> = self
            .restaurant_versions
            .values()
            .flatten()
            .filter(|v| v.menu.contains_key(dish))
            .collect();
        listing.sort_by(|a, b| (&a.update_ts, a.arrival).cmp(&(&b.update_ts, b.arrival)));
        winners(&listing, |v| &v.update_ts)
            .into_iter()
            .map(|v| (v.update_ts.as_str(), &v.menu[dish]))
            .collect()
    }

    /// The dish's name changes in the menus, oldest first — the rows of `dds.s_product_names`.
    pub fn dish_name_history(&self, dish: &str) -> Vec<Option<String>> {
        changes(
            self.dish_versions(dish)
                .into_iter()
                .map(|(_, d)| d.name.clone()),
        )
    }

    /// The dish's category changes in the menus, oldest first (`None`: a menu lists it without
    /// one) — the rows of `dds.es_product_category`.
    pub fn dish_category_history(&self, dish: &str) -> Vec<Option<String>> {
        changes(
            self.dish_versions(dish)
                .into_iter()
                .map(|(_, d)| d.category.clone()),
        )
    }

    /// The dish as the newest menu version listing it lists it; `None`: no menu lists it.
    pub fn menu_dish(&self, dish: &str) -> Option<&MenuDish> {
        self.dish_versions(dish).last().map(|(_, d)| *d)
    }

    /// The dish's current category (`None`: no menu lists it, or the newest that does gives it
    /// none).
    pub fn category_of(&self, dish: &str) -> Option<&str> {
        self.menu_dish(dish).and_then(|d| d.category.as_deref())
    }

    /// The dish's current menu name (`None`: no menu lists it, or the newest gives it no name).
    pub fn menu_name_of(&self, dish: &str) -> Option<&str> {
        self.menu_dish(dish).and_then(|d| d.name.as_deref())
    }

    /// Every (restaurant id, dish id) pair a menu version lists.
    pub fn menu_pairs(&self) -> BTreeSet<(String, String)> {
        self.restaurant_versions
            .iter()
            .flat_map(|(r, vs)| {
                vs.iter()
                    .flat_map(move |v| v.menu.keys().map(move |d| (r.clone(), d.clone())))
            })
            .collect()
    }

    /// Every (dish id, category) pair a menu version lists (a dish without category: none).
    pub fn menu_categories(&self) -> BTreeSet<(String, String)> {
        self.restaurant_versions
            .values()
            .flatten()
            .flat_map(|v| {
                v.menu
                    .iter()
                    .filter_map(|(d, m)| m.category.clone().map(|c| (d.clone(), c)))
            })
            .collect()
    }

    // ---- CDM ----

    /// The final status of every order (its current version's).
    pub fn statuses(&self) -> BTreeMap<i64, String> {
        self.orders
            .iter()
            .map(|(id, o)| (*id, o.status.clone()))
            .collect()
    }

    /// The orders whose current status is CLOSED, with the place of their current version
    /// (update_ts, arrival) for "the newest order".
    fn closed(&self) -> impl Iterator<Item = (&i64, &Order, Place<'_>)> {
        self.history.iter().filter_map(|(id, vs)| {
            let v = vs.last()?;
            (v.order.status == "CLOSED").then_some((
                id,
                &v.order,
                (v.order.update_ts.as_str(), v.arrival),
            ))
        })
    }

    /// The current name of each dish of a current order or a menu: the newest menu's, or for a
    /// dish no menu names, the name the newest order (any user, any status) holding it gives it.
    pub fn dish_names(&self) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, (Place, String)> = BTreeMap::new();
        for vs in self.history.values() {
            let v = vs.last().unwrap();
            let at = (v.order.update_ts.as_str(), v.arrival);
            for (dish, name) in &v.order.items {
                let e = out.entry(dish.clone()).or_insert((at, name.clone()));
                if at > e.0 {
                    *e = (at, name.clone());
                }
            }
        }
        let mut names: BTreeMap<String, String> =
            out.into_iter().map(|(d, (_, name))| (d, name)).collect();
        let dishes: BTreeSet<String> = self
            .restaurant_versions
            .values()
            .flatten()
            .flat_map(|v| v.menu.keys().cloned())
            .chain(names.keys().cloned())
            .collect();
        for dish in dishes {
            if let Some(name) = self.menu_name_of(&dish) {
                names.insert(dish, name.to_owned());
            }
        }
        names
    }

    /// The name a dish has in one order: its current menu name, or the name the order gives it.
    fn name_in<'a>(&'a self, order: &'a Order, dish: &str) -> &'a str {
        self.menu_name_of(dish)
            .or_else(|| order.name_of(dish))
            .unwrap_or_default()
    }

    /// (user key, product key) → (name, distinct CLOSED orders). A dish no menu names has the
    /// name the user's newest CLOSED order holding it gives it.
    pub fn product_counters(&self) -> BTreeMap<(Uuid, Uuid), (String, i64)> {
        type Entry<'a> = (Place<'a>, String, i64);
        let mut out: BTreeMap<(Uuid, Uuid), Entry> = BTreeMap::new();
        for (_, order, at) in self.closed() {
            for dish in order.dishes() {
                let name = self.name_in(order, dish).to_owned();
                let e =
                    out.entry((key(&order.user_id), key(dish)))
                        .or_insert((at, name.clone(), 0));
                if at > e.0 {
                    (e.0, e.1) = (at, name);
                }
                e.2 += 1;
            }
        }
        out.into_iter()
            .map(|(k, (_, name, n))| (k, (name, n)))
            .collect()
    }

    /// (user key, category key) → (category, distinct CLOSED orders): each dish of an order's
    /// current version in its current category.
    pub fn category_counters(&self) -> BTreeMap<(Uuid, Uuid), (String, i64)> {
        let mut out: BTreeMap<(Uuid, Uuid), (String, i64)> = BTreeMap::new();
        for (_, order, _) in self.closed() {
            let categories: BTreeSet<&str> = order
                .dishes()
                .into_iter()
                .filter_map(|dish| self.category_of(dish))
                .collect();
            for category in categories {
                let e = out
                    .entry((key(&order.user_id), key(category)))
                    .or_insert((category.to_owned(), 0));
                e.1 += 1;
            }
        }
        out
    }

    /// Users with `threshold`+ CLOSED orders holding a dish whose lower-cased name (its current
    /// menu name, or the name the order gives it) contains one of `needles`: user key → orders.
    pub fn users_with_dish(&self, needles: &[&str], threshold: i64) -> BTreeMap<Uuid, i64> {
        let mut out: BTreeMap<Uuid, i64> = BTreeMap::new();
        for (_, order, _) in self.closed() {
            if order.dishes().into_iter().any(|dish| {
                let name = self.name_in(order, dish).to_lowercase();
                needles.iter().any(|n| name.contains(n))
            }) {
                *out.entry(key(&order.user_id)).or_default() += 1;
            }
        }
        out.retain(|_, n| *n >= threshold);
        out
    }
}
