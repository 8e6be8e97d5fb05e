//! The expected warehouse, computed straight from the testdata files.
//!
//! This shares no code with dwh: it reads the JSON lines with `serde_json::Value`, applies the
//! rules of DESIGN §2 (what is an order, newest `update_ts` wins, categories come from the menu,
//! only CLOSED orders count, a counter is the number of distinct orders) and nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;
use uuid::{uuid, Uuid};

const NAMESPACE: Uuid = uuid!("7f288a2e-0ad0-4039-8e59-6c9838d87307");

/// Hub key of a business key, as DESIGN §5 defines it.
pub fn key(business_key: &str) -> Uuid {
    Uuid::new_v5(&NAMESPACE, business_key.as_bytes())
}

#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub user_id: String,
    pub restaurant_id: String,
    pub status: String,
    pub update_ts: String,
    /// (dish id, dish name) per order line.
    pub items: Vec<(String, String)>,
}

#[derive(Debug, Default)]
pub struct Oracle {
    /// The newest valid version of every order.
    pub orders: BTreeMap<i64, Order>,
    /// Lines that are not valid orders.
    pub junk: usize,
    /// Every line of the order files.
    pub lines: usize,
    /// (restaurant id, dish id) → category.
    pub menu: BTreeMap<(String, String), String>,
    pub users: BTreeSet<String>,
    pub restaurants: BTreeSet<String>,
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

/// A valid order message as `(object_id, order)`, or `None` for junk.
pub fn parse_order(line: &str) -> Option<(i64, Order)> {
    let v: Value = serde_json::from_str(line).ok()?;
    let id = v.get("object_id")?.as_i64().filter(|id| *id > 0)?;
    if v.get("object_type")?.as_str()? != "order" || !is_ts(v.get("sent_dttm")?) {
        return None;
    }
    let p = v.get("payload")?;
    if !is_ts(p.get("date")?) || !is_ts(p.get("update_ts")?) {
        return None;
    }
    amount(p.get("cost")?)?;
    amount(p.get("payment")?)?;
    let mut items = Vec::new();
    for item in p.get("order_items")?.as_array()? {
        amount(item.get("price")?)?;
        item.get("quantity")?.as_i64().filter(|q| *q >= 1)?;
        items.push((
            key_text(item.get("id")?)?,
            item.get("name")?.as_str()?.to_owned(),
        ));
    }
    Some((
        id,
        Order {
            user_id: non_empty(p.get("user")?.get("id")?)?,
            restaurant_id: non_empty(p.get("restaurant")?.get("id")?)?,
            status: non_empty(p.get("final_status")?)?,
            update_ts: p.get("update_ts")?.as_str()?.to_owned(),
            items,
        },
    ))
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

    /// Add order lines (later lines only win with a newer `update_ts`).
    pub fn add_orders(&mut self, text: &str) {
        for line in text.lines().filter(|l| !l.is_empty()) {
            self.add_message(line);
        }
    }

    /// Add one order message (it only wins with a newer `update_ts`).
    pub fn add_message(&mut self, message: &str) {
        self.lines += 1;
        match parse_order(message) {
            None => self.junk += 1,
            Some((id, order)) => match self.orders.get(&id) {
                Some(known) if known.update_ts >= order.update_ts => {}
                _ => {
                    self.orders.insert(id, order);
                }
            },
        }
    }

    fn add_dictionaries(&mut self, users: &Path, restaurants: &Path) {
        for line in std::fs::read_to_string(users).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            self.users.insert(v["_id"].as_str().unwrap().to_owned());
        }
        for line in std::fs::read_to_string(restaurants).unwrap().lines() {
            self.add_restaurant(&serde_json::from_str(line).unwrap());
        }
    }

    /// Add a restaurant document Redis holds (and dwh must read): its menu gives the categories.
    pub fn add_restaurant(&mut self, doc: &Value) {
        let rid = doc["_id"].as_str().unwrap().to_owned();
        for item in doc["menu"].as_array().unwrap() {
            if let (Some(dish), Some(category)) = (item["_id"].as_str(), item["category"].as_str())
            {
                self.menu
                    .insert((rid.clone(), dish.to_owned()), category.to_owned());
            }
        }
        self.restaurants.insert(rid);
    }

    /// The final status of every order (its newest version's).
    pub fn statuses(&self) -> BTreeMap<i64, String> {
        self.orders
            .iter()
            .map(|(id, o)| (*id, o.status.clone()))
            .collect()
    }

    fn closed(&self) -> impl Iterator<Item = (&i64, &Order)> {
        self.orders.iter().filter(|(_, o)| o.status == "CLOSED")
    }

    /// The newest name of each dish (from the newest order that names it).
    pub fn dish_names(&self) -> BTreeMap<String, String> {
        let mut newest: BTreeMap<String, (String, String)> = BTreeMap::new();
        for order in self.orders.values() {
            for (id, name) in &order.items {
                let e = newest
                    .entry(id.clone())
                    .or_insert((String::new(), name.clone()));
                if order.update_ts > e.0 {
                    *e = (order.update_ts.clone(), name.clone());
                }
            }
        }
        newest
            .into_iter()
            .map(|(id, (_, name))| (id, name))
            .collect()
    }

    /// user key → product key → (name, distinct CLOSED orders).
    pub fn product_counters(&self) -> BTreeMap<(Uuid, Uuid), (String, i64)> {
        let names = self.dish_names();
        let mut out: BTreeMap<(Uuid, Uuid), (String, i64)> = BTreeMap::new();
        for (_, order) in self.closed() {
            let dishes: BTreeSet<&String> = order.items.iter().map(|(id, _)| id).collect();
            for dish in dishes {
                let e = out
                    .entry((key(&order.user_id), key(dish)))
                    .or_insert((names[dish].clone(), 0));
                e.1 += 1;
            }
        }
        out
    }

    /// (user key, category key) → (category, distinct CLOSED orders).
    pub fn category_counters(&self) -> BTreeMap<(Uuid, Uuid), (String, i64)> {
        let mut out: BTreeMap<(Uuid, Uuid), (String, i64)> = BTreeMap::new();
        for (_, order) in self.closed() {
            let categories: BTreeSet<&String> = order
                .items
                .iter()
                .filter_map(|(id, _)| self.menu.get(&(order.restaurant_id.clone(), id.clone())))
                .collect();
            for category in categories {
                let e = out
                    .entry((key(&order.user_id), key(category)))
                    .or_insert((category.clone(), 0));
                e.1 += 1;
            }
        }
        out
    }

    /// Users with `threshold`+ CLOSED orders holding a dish whose lower-cased name contains one
    /// of `needles`: user key → orders.
    pub fn users_with_dish(&self, needles: &[&str], threshold: i64) -> BTreeMap<Uuid, i64> {
        let mut out: BTreeMap<Uuid, i64> = BTreeMap::new();
        for (_, order) in self.closed() {
            if order
                .items
                .iter()
                .any(|(_, name)| needles.iter().any(|n| name.to_lowercase().contains(n)))
            {
                *out.entry(key(&order.user_id)).or_default() += 1;
            }
        }
        out.retain(|_, n| *n >= threshold);
        out
    }
}
