//! `DictVersion::parse` over arbitrary bytes, seeded with restaurant documents: it never panics,
//! what it refuses has a reason PostgreSQL can store, and a restaurant it accepts has a menu whose
//! dish ids and categories fit a key.

#![no_main]

use dwh_fuzz::model::{DictKind, DictVersion};
use dwh_fuzz::{accepted, jsonb, key_sized};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(restaurant) = accepted(DictVersion::parse("fuzz", data)) else {
        return;
    };
    assert!(!restaurant.id.is_empty() && key_sized(&restaurant.id));
    assert_eq!(jsonb::check(&restaurant.doc), Ok(()));
    if restaurant.kind != DictKind::Restaurant {
        return;
    }
    let doc: serde_json::Value =
        serde_json::from_str(&restaurant.doc).expect("the document is JSON");
    let menu = doc["menu"]
        .as_array()
        .expect("a restaurant's menu is an array");
    for item in menu {
        // What the STG merge reads with `->>` as dish id and category: text that fits a key.
        for field in ["_id", "category"] {
            match &item[field] {
                serde_json::Value::Null => {}
                serde_json::Value::String(key) => assert!(key_sized(key), "{field}"),
                other => panic!("menu {field} {other}"),
            }
        }
    }
});
