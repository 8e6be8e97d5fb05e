//! `OrderMessage::parse` over arbitrary bytes: it never panics; what it refuses has a reason
//! PostgreSQL can store; what it accepts STG can store (bounded, valid JSON that jsonb takes, ids
//! that fit a key, timestamps PostgreSQL holds) and the STG merge reads as the parser did.

#![no_main]

use dwh_fuzz::model::{OrderMessage, MAX_ORDER_BYTES, MAX_ORDER_ITEMS};
use dwh_fuzz::{accepted, jsonb, key_sized, storable};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some(order) = accepted(OrderMessage::parse(data)) else {
        return;
    };
    assert!(data.len() <= MAX_ORDER_BYTES);
    assert!(order.object_id > 0);
    assert_eq!(order.object_type, "order");
    assert!(!order.user_id.is_empty() && key_sized(&order.user_id));
    assert!(!order.restaurant_id.is_empty() && key_sized(&order.restaurant_id));
    assert!(storable(order.sent_dttm) && storable(order.update_ts));
    assert_eq!(jsonb::check(&order.payload), Ok(()));
    // What `stg_merge.sql` reads with `->` and `->>` (a number f64 cannot hold in a field the
    // parser skips makes Value refuse the payload; jsonb keeps it, and nothing reads it).
    let Ok(payload) = serde_json::from_str::<Value>(&order.payload) else {
        return;
    };
    assert_eq!(payload["user"]["id"].as_str(), Some(order.user_id.as_str()));
    assert_eq!(
        payload["restaurant"]["id"].as_str(),
        Some(order.restaurant_id.as_str())
    );
    for field in ["date", "update_ts", "final_status"] {
        assert!(payload[field].is_string(), "{field}");
    }
    let items = payload["order_items"]
        .as_array()
        .expect("order_items is an array");
    assert!(items.len() <= MAX_ORDER_ITEMS);
    for item in items {
        assert!(item["id"].as_str().is_some_and(key_sized));
        assert!(item["name"].is_string());
        assert!(item["price"].as_i64().is_some_and(|p| p >= 0));
        assert!(item["quantity"].as_i64().is_some_and(|q| q >= 1));
    }
});
