//! The order message of the STG topic as `dwh stg` builds it: an order version with the names
//! STG knows of its user and restaurant (their newest versions) and each line's category from
//! the restaurant's menu. [`crate::model::StgOrder`] is the same message as DDS reads it.
//!
//! Built here from the parsed order and the names read for the batch, in memory: building it in
//! SQL, then writing it to the outbox and reading it back, was most of the STG merge.

use std::collections::HashMap;

use serde::Serialize;

use crate::model::{OrderMessage, TS_FORMAT};

/// A user as the messages name it: the fields of its newest version STG holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserNames {
    pub name: Option<String>,
    pub login: Option<String>,
    /// The document's `update_ts_utc` as written there.
    pub update_ts: Option<String>,
}

/// A restaurant as the messages name it (its newest version STG holds).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RestaurantNames {
    pub name: Option<String>,
    pub update_ts: Option<String>,
}

/// What a batch's messages are enriched with: the newest version of each user and restaurant
/// its orders name, and the category each of those restaurants' menus gives each dish.
#[derive(Debug, Default)]
pub struct Names {
    pub users: HashMap<String, UserNames>,
    pub restaurants: HashMap<String, RestaurantNames>,
    /// Restaurant id → dish id → category; a dish listed twice keeps its first listing.
    pub categories: HashMap<String, HashMap<String, Option<String>>>,
}

impl Names {
    /// Add a menu listing; a dish already listed by this restaurant keeps its first category.
    pub fn list_dish(&mut self, restaurant: &str, dish: &str, category: Option<String>) {
        self.categories
            .entry(restaurant.to_owned())
            .or_default()
            .entry(dish.to_owned())
            .or_insert(category);
    }

    fn category(&self, restaurant: &str, dish: &str) -> Option<&str> {
        self.categories
            .get(restaurant)
            .and_then(|menu| menu.get(dish))
            .and_then(Option::as_deref)
    }
}

#[derive(Serialize)]
struct Message<'a> {
    order_id: i64,
    seq: i64,
    order_dt: String,
    update_ts: String,
    final_status: &'a str,
    cost: i64,
    payment: i64,
    user: User<'a>,
    restaurant: Restaurant<'a>,
    items: Vec<Item<'a>>,
}

#[derive(Serialize)]
struct User<'a> {
    id: &'a str,
    name: Option<&'a str>,
    login: Option<&'a str>,
    update_ts: Option<&'a str>,
}

#[derive(Serialize)]
struct Restaurant<'a> {
    id: &'a str,
    name: Option<&'a str>,
    update_ts: Option<&'a str>,
}

#[derive(Serialize)]
struct Item<'a> {
    id: &'a str,
    name: &'a str,
    price: i64,
    quantity: i64,
    category: Option<&'a str>,
}

/// The position a version was read at, as one number: partition × 2^40 + offset (on equal
/// `update_ts` the greater one wins downstream).
pub fn seq(partition: i32, offset: i64) -> i64 {
    (i64::from(partition) << 40) + offset
}

/// The STG topic's message of `order` (read at `partition`/`offset`): key and value.
pub fn order_message(
    order: &OrderMessage,
    partition: i32,
    offset: i64,
    names: &Names,
) -> (String, String) {
    let user = names.users.get(&order.user_id);
    let restaurant = names.restaurants.get(&order.restaurant_id);
    let message = Message {
        order_id: order.object_id,
        seq: seq(partition, offset),
        order_dt: order.order_dt.format(TS_FORMAT).to_string(),
        update_ts: order.update_ts.format(TS_FORMAT).to_string(),
        final_status: &order.final_status,
        cost: order.cost,
        payment: order.payment,
        user: User {
            id: &order.user_id,
            name: user.and_then(|u| u.name.as_deref()),
            login: user.and_then(|u| u.login.as_deref()),
            update_ts: user.and_then(|u| u.update_ts.as_deref()),
        },
        restaurant: Restaurant {
            id: &order.restaurant_id,
            name: restaurant.and_then(|r| r.name.as_deref()),
            update_ts: restaurant.and_then(|r| r.update_ts.as_deref()),
        },
        items: order
            .items
            .iter()
            .map(|i| Item {
                id: &i.id,
                name: &i.name,
                price: i.price,
                quantity: i.quantity,
                category: names.category(&order.restaurant_id, &i.id),
            })
            .collect(),
    };
    let value = serde_json::to_string(&message).expect("an order message serialises");
    (order.object_id.to_string(), value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{StgMessage, StgOrder};

    fn order(user: &str, restaurant: &str) -> OrderMessage {
        let payload = serde_json::json!({
            "restaurant": {"id": restaurant}, "user": {"id": user},
            "date": "2024-01-02 03:04:05", "update_ts": "2024-01-02 03:05:00",
            "final_status": "CLOSED", "cost": 600, "payment": 600,
            "order_items": [
                {"id": "d1", "name": "Пицца", "price": 200, "quantity": 2},
                {"id": "d2", "name": "Soup \"hot\"", "price": 200, "quantity": 1},
            ],
        });
        OrderMessage::with_payload(
            7,
            "order".into(),
            chrono::NaiveDateTime::default(),
            &payload.to_string(),
        )
        .unwrap()
    }

    fn read(value: &str) -> StgOrder {
        match StgMessage::parse(value.as_bytes()).unwrap() {
            StgMessage::Order(o) => o,
            other => panic!("not an order: {other:?}"),
        }
    }

    #[test]
    fn an_order_with_known_names_reads_back_as_dds_reads_it() {
        let mut names = Names::default();
        names.users.insert(
            "u1".into(),
            UserNames {
                name: Some("Ann".into()),
                login: Some("ann".into()),
                update_ts: Some("2024-01-01 00:00:00".into()),
            },
        );
        names.restaurants.insert(
            "r1".into(),
            RestaurantNames {
                name: Some("Pizzeria".into()),
                update_ts: None,
            },
        );
        names.list_dish("r1", "d1", Some("Pizza".into()));
        names.list_dish("r1", "d1", Some("Listed twice".into()));
        names.list_dish("r2", "d2", Some("Another restaurant's".into()));

        let (key, value) = order_message(&order("u1", "r1"), 3, 42, &names);
        assert_eq!(key, "7");
        let read = read(&value);
        assert_eq!(read.order_id, 7);
        assert_eq!(read.seq, (3 << 40) + 42);
        assert_eq!(read.order_dt.to_string(), "2024-01-02 03:04:05");
        assert_eq!(read.update_ts.to_string(), "2024-01-02 03:05:00");
        assert_eq!((read.cost, read.payment), (600, 600));
        assert_eq!(read.user.name.as_deref(), Some("Ann"));
        assert_eq!(read.user.login.as_deref(), Some("ann"));
        assert_eq!(read.restaurant.name.as_deref(), Some("Pizzeria"));
        assert_eq!(read.restaurant.update_ts, None);
        let lines: Vec<(&str, &str, i64, Option<&str>)> = read
            .items
            .iter()
            .map(|i| {
                (
                    i.id.as_str(),
                    i.name.as_str(),
                    i.quantity,
                    i.category.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            lines,
            [
                ("d1", "Пицца", 2, Some("Pizza")),
                ("d2", "Soup \"hot\"", 1, None)
            ]
        );
    }

    #[test]
    fn unknown_user_and_restaurant_leave_names_and_categories_empty() {
        let read = read(&order_message(&order("u9", "r9"), 0, 1, &Names::default()).1);
        assert_eq!(read.user.id, "u9");
        assert_eq!((read.user.name, read.user.login), (None, None));
        assert_eq!(read.restaurant.name, None);
        assert!(read.items.iter().all(|i| i.category.is_none()));
    }
}
