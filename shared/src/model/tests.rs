//! The parsers against every class of hostile input: each is either accepted as the data it is
//! or refused with a reason that names the problem.

use serde_json::{json, Value};

use super::*;

const ORDER: &str = r#"{"object_id": 5601234, "object_type": "order", "sent_dttm": "2023-10-02 09:15:41",
 "payload": {"restaurant": {"id": "ebfa4c9b8dadfc1da37ab58d"}, "date": "2023-09-25 13:42:07",
   "user": {"id": "626a81ce9a8cd1920641e272"},
   "order_items": [{"id": "2df24d1c887b0d10f48bd0b5", "name": "\u0421\u0430\u043b\u0430\u0442", "price": 200, "quantity": 2}],
   "bonus_payment": 0, "cost": 400, "payment": 400, "bonus_grant": 0,
   "statuses": [{"status": "CLOSED", "dttm": "2023-09-25 13:42:07"}],
   "final_status": "CLOSED", "update_ts": "2023-09-25 13:42:07"}}"#;

const USER: &str =
    r#"{"_id": "u1", "name": "Вера", "login": "vera", "update_ts_utc": "2023-08-11 16:45:00"}"#;

const RESTAURANT: &str = r#"{"_id": "r1", "name": "PLove", "update_ts_utc": "2023-08-11 16:45:00",
 "menu": [{"_id": "d1", "name": "Борщ", "price": 290, "category": "Супы"},
          {"_id": "", "name": "", "price": 0, "category": ""}]}"#;

/// The sample order with `edit` applied to its JSON.
fn order(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut value: Value = serde_json::from_str(ORDER).unwrap();
    edit(&mut value);
    serde_json::to_vec(&value).unwrap()
}

/// The sample order with one payload field set to `value`.
fn order_with(field: &str, value: Value) -> Vec<u8> {
    order(|o| o["payload"][field] = value)
}

fn refused(bytes: &[u8], reason: &str) {
    let err = OrderMessage::parse(bytes).map(|_| ()).unwrap_err();
    assert!(
        err.contains(reason),
        "{:.80}: {err}",
        String::from_utf8_lossy(bytes)
    );
}

fn accepted(bytes: &[u8]) -> OrderMessage {
    OrderMessage::parse(bytes)
        .unwrap_or_else(|e| panic!("{:.80}: {e}", String::from_utf8_lossy(bytes)))
}

fn dict_refused(doc: &[u8], reason: &str) {
    let err = DictVersion::parse("k", doc).map(|_| ()).unwrap_err();
    assert!(
        err.contains(reason),
        "{:.80}: {err}",
        String::from_utf8_lossy(doc)
    );
}

#[test]
fn a_valid_order_keeps_its_payload_as_received() {
    let order = accepted(ORDER.as_bytes());
    assert_eq!(order.object_id, 5601234);
    assert_eq!(order.user_id, "626a81ce9a8cd1920641e272");
    assert!(order.payload.contains(r"\u0421"));
}

#[test]
fn junk_has_a_reason() {
    for (junk, reason) in [
        ("", "empty message"),
        ("{\"object_id\": 1", "not an order message"),
        ("{\"object_id\": \"x\"}", "not an order message"),
        ("null", "not an order message"),
    ] {
        let err = OrderMessage::parse(junk.as_bytes()).unwrap_err();
        assert!(err.starts_with(reason), "{junk}: {err}");
    }
    refused(
        ORDER.replace("\"order\"", "\"payment\"").as_bytes(),
        "is not \"order\"",
    );
    refused(&order_with("update_ts", json!("soon")), "bad payload");
}

#[test]
fn invalid_utf8_is_refused() {
    let mut bytes = ORDER.as_bytes().to_vec();
    let at = ORDER.find("CLOSED").unwrap();
    bytes[at] = 0xff;
    refused(&bytes, "not UTF-8");
    refused(b"\xc3\x28", "not UTF-8");
    dict_refused(b"{\"_id\": \"u\xff\", \"login\": \"x\"}", "not UTF-8");
}

#[test]
fn a_nul_escape_in_any_string_is_refused() {
    refused(
        &order(|o| o["payload"]["order_items"][0]["name"] = json!("a\0b")),
        r"\u0000",
    );
    refused(&order_with("comment", json!("\0")), r"\u0000");
    refused(&order_with("statuses", json!({"\0": 1})), r"\u0000");
    refused(&order(|o| o["trace"] = json!(["\0"])), r"\u0000");
    // An escaped backslash followed by "u0000" is text like any other.
    let text = accepted(&order_with("comment", json!(r"\u0000")));
    assert!(text.payload.contains(r"\\u0000"));
}

#[test]
fn an_unpaired_surrogate_is_refused() {
    let lone = ORDER.replace("\"bonus_grant\": 0", r#""note": "\ud800x""#);
    refused(lone.as_bytes(), "surrogate");
    let pair = ORDER.replace("\"bonus_grant\": 0", r#""note": "\ud83d\ude00""#);
    accepted(pair.as_bytes());
}

#[test]
fn a_message_over_the_bound_is_refused_whatever_it_holds() {
    let mut big = ORDER.as_bytes().to_vec();
    big.resize(MAX_ORDER_BYTES, b' ');
    accepted(&big);
    big.push(b' ');
    refused(&big, "over the 1048576-byte bound");
    let ten_mb = order_with("comment", json!("x".repeat(10 << 20)));
    refused(&ten_mb, "over the 1048576-byte bound");
}

#[test]
fn deep_nesting_is_refused_even_where_the_parser_skips() {
    let deep = |n: usize| {
        let nested = format!("{}{}", "[".repeat(n), "]".repeat(n));
        ORDER.replace("\"bonus_grant\": 0", &format!("\"bonus_grant\": {nested}"))
    };
    accepted(deep(10).as_bytes());
    refused(deep(100).as_bytes(), "nested deeper");
    refused(deep(200_000).as_bytes(), "nested deeper");
}

#[test]
fn numbers_out_of_range_are_refused() {
    refused(
        ORDER.replace("5601234", "9223372036854775808").as_bytes(),
        "not an order message",
    );
    refused(ORDER.replace("5601234", "-5").as_bytes(), "not a positive");
    refused(ORDER.replace("5601234", "0").as_bytes(), "not a positive");
    refused(
        ORDER.replace("\"cost\": 400", "\"cost\": 1e400").as_bytes(),
        "bad payload",
    );
    refused(
        ORDER.replace("\"cost\": 400", "\"cost\": 400.5").as_bytes(),
        "bad payload",
    );
    for skipped in ["1e1000", "1e-99999", "-1E+131072"] {
        let text = ORDER.replace("\"bonus_grant\": 0", &format!("\"bonus_grant\": {skipped}"));
        refused(text.as_bytes(), "number");
    }
    let long = format!("0.{}1", "0".repeat(20_000));
    refused(
        ORDER
            .replace("\"bonus_grant\": 0", &format!("\"bonus_grant\": {long}"))
            .as_bytes(),
        "number",
    );
    accepted(
        ORDER
            .replace("\"bonus_grant\": 0", "\"bonus_grant\": 1e300")
            .as_bytes(),
    );
}

#[test]
fn nan_like_values_are_refused() {
    for nan in ["NaN", "Infinity", "-Infinity", "nan"] {
        refused(
            ORDER
                .replace("\"cost\": 400", &format!("\"cost\": {nan}"))
                .as_bytes(),
            "not an order message",
        );
    }
    refused(&order_with("cost", json!("NaN")), "bad payload");
}

#[test]
fn amounts_and_quantities_must_be_amounts() {
    let item =
        |field: &str, value: i64| order(|o| o["payload"]["order_items"][0][field] = json!(value));
    refused(&item("quantity", 0), "quantity 0");
    refused(&item("quantity", -2), "quantity -2");
    refused(&item("price", -1), "price -1");
    accepted(&item("price", 0));
    refused(&order_with("cost", json!(-400)), "negative amount");
    refused(&order_with("payment", json!(-1)), "negative amount");
    accepted(&item("price", i64::MAX));
}

#[test]
fn wrong_types_are_refused() {
    for (field, value) in [
        ("order_items", json!({"id": "x"})),
        ("user", json!("626a81ce9a8cd1920641e272")),
        ("restaurant", json!({"id": 5})),
        ("final_status", json!(["CLOSED"])),
        ("cost", json!(true)),
        ("date", json!(1695649327)),
        ("payment", Value::Null),
    ] {
        refused(&order_with(field, value), "bad payload");
    }
    refused(
        &order(|o| o["object_id"] = json!("5601234")),
        "not an order message",
    );
    refused(&order(|o| o["payload"] = json!("{}")), "bad payload");
    refused(&order(|o| o["payload"] = json!([])), "bad payload");
    refused(b"[1, 2, 3]", "not an order message");
    // serde's derive would read a struct from an array of its field values.
    let positional = r#"[5601234, "order", "2023-10-02 09:15:41", {"restaurant": {"id": "r"},
        "user": {"id": "u"}, "date": "2023-09-25 13:42:07", "update_ts": "2023-09-25 13:42:07",
        "final_status": "CLOSED", "order_items": [], "cost": 0, "payment": 0}]"#;
    refused(positional.as_bytes(), "expected a JSON object");
    refused(
        &order_with("user", json!(["626a81ce9a8cd1920641e272"])),
        "expected a JSON object",
    );
    refused(
        &order(|o| o["payload"]["order_items"][0] = json!(["d", "Борщ", 200, 2])),
        "expected a JSON object",
    );
    refused(b"\"order\"", "not an order message");
}

#[test]
fn empty_keys_are_data_and_duplicate_keys_are_refused() {
    let empty_key = ORDER.replace("\"bonus_grant\": 0", "\"\": 0, \"x\": {\"\": \"\"}");
    accepted(empty_key.as_bytes());
    let twice = ORDER.replace("\"object_type\"", "\"object_id\": 1, \"object_type\"");
    refused(twice.as_bytes(), "duplicate field `object_id`");
    let twice = ORDER.replace("\"cost\": 400", "\"cost\": 400, \"cost\": 1");
    refused(twice.as_bytes(), "duplicate field `cost`");
    refused(&order_with("user", json!({})), "bad payload");
    refused(&order_with("user", json!({"id": ""})), "an empty user.id");
}

#[test]
fn sql_looking_emoji_and_rtl_text_is_data() {
    let text = "'); DROP TABLE stg.order_events; -- 😀 مرحبا \u{202e}abc $$ \\ \"";
    let bytes = order(|o| {
        o["payload"]["order_items"][0]["name"] = json!(text);
        o["payload"]["user"]["id"] = json!("' OR 1=1 --");
    });
    let order = accepted(&bytes);
    assert_eq!(order.user_id, "' OR 1=1 --");
    let payload: Value = serde_json::from_str(&order.payload).unwrap();
    assert_eq!(payload["order_items"][0]["name"], json!(text));
}

#[test]
fn ids_longer_than_a_key_are_refused() {
    let id = |n: usize| "й".repeat(n / 2);
    accepted(&order(|o| {
        o["payload"]["user"]["id"] = json!(id(MAX_KEY_BYTES))
    }));
    refused(
        &order(|o| o["payload"]["user"]["id"] = json!(id(MAX_KEY_BYTES + 2))),
        "user.id of 258 bytes",
    );
    refused(
        &order(|o| o["payload"]["restaurant"]["id"] = json!("r".repeat(3000))),
        "restaurant.id of 3000 bytes",
    );
    refused(
        &order(|o| o["payload"]["order_items"][0]["id"] = json!("d".repeat(2704))),
        "order_items[0].id of 2704 bytes",
    );
    // A very long dish name is not a key: it is kept.
    accepted(&order(|o| {
        o["payload"]["order_items"][0]["name"] = json!("Пицца ".repeat(50_000))
    }));
}

#[test]
fn orders_with_too_many_lines_are_refused() {
    let lines = |n: usize| {
        let item = json!({"id": "d", "name": "n", "price": 1, "quantity": 1});
        order_with("order_items", Value::Array(vec![item; n]))
    };
    accepted(&lines(MAX_ORDER_ITEMS));
    refused(&lines(MAX_ORDER_ITEMS + 1), "1001 order_items");
}

#[test]
fn dates_in_other_formats_are_refused() {
    for other in [
        "2023-09-25T13:42:07",
        "2023-09-25 13:42:07Z",
        "2023-09-25 13:42:07+03",
        "2023-09-25 13:42:07.123",
        "2023-9-25 13:42:07",
        "25.09.2023 13:42:07",
        "2023-09-25",
        " 2023-09-25 13:42:07",
        "+12023-09-25 13:42:07",
        "-5000-01-01 00:00:00",
        "2023-02-30 00:00:00",
        "2023-09-25 24:00:00",
        "२०२३-09-25 13:42:07",
        "",
    ] {
        refused(&order_with("update_ts", json!(other)), "timestamp");
        assert!(parse_ts(other).is_err(), "{other}");
    }
    refused(&order(|o| o["sent_dttm"] = json!("yesterday")), "timestamp");
    for fine in [
        "0001-01-01 00:00:00",
        "9999-12-31 23:59:59",
        "2024-02-29 12:00:00",
    ] {
        assert!(parse_ts(fine).is_ok(), "{fine}");
    }
    let long = "9".repeat(100_000);
    let err = parse_ts(&long).unwrap_err();
    assert!(err.len() < 200, "a reason quotes at most the start: {err}");
}

#[test]
fn escaped_and_raw_dictionary_documents_are_one_version() {
    let escaped = r#"{"_id": "u1", "name": "\u0412\u0435\u0440\u0430", "login": "vera", "update_ts_utc": "2023-08-11 16:45:00"}"#;
    let a = DictVersion::parse("u1", USER.as_bytes()).unwrap();
    let b = DictVersion::parse("u1", escaped.as_bytes()).unwrap();
    assert_eq!(a.kind, DictKind::User);
    assert_eq!(a.version, b.version);
    let r = DictVersion::parse("r1", RESTAURANT.as_bytes()).unwrap();
    assert_eq!(r.kind, DictKind::Restaurant);
}

/// `doc` (a user or restaurant sample) with `edit` applied.
fn doc(sample: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut value: Value = serde_json::from_str(sample).unwrap();
    edit(&mut value);
    serde_json::to_vec(&value).unwrap()
}

#[test]
fn hostile_dictionary_documents_are_left_out_with_a_reason() {
    dict_refused(&doc(USER, |u| u["name"] = json!("Ве\0ра")), r"\u0000");
    dict_refused(
        &doc(USER, |u| u["_id"] = json!("u".repeat(300))),
        "_id of 300 bytes",
    );
    dict_refused(&doc(USER, |u| u["_id"] = json!("")), "an empty _id");
    dict_refused(
        &doc(USER, |u| u["name"] = json!({"first": "Вера"})),
        "invalid type",
    );
    dict_refused(&doc(USER, |u| u["login"] = json!(42)), "invalid type");
    dict_refused(
        &doc(USER, |u| u["update_ts_utc"] = json!("11.08.2023")),
        "timestamp",
    );
    dict_refused(
        &doc(USER, |u| u["bio"] = json!("x".repeat(MAX_DOCUMENT_BYTES))),
        "bytes, over",
    );
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    dict_refused(
        USER.replace("\"login\"", &format!("\"deep\": {deep}, \"login\""))
            .as_bytes(),
        "nested deeper",
    );
    dict_refused(
        USER.replace("\"vera\"", r#""\udfff""#).as_bytes(),
        "surrogate",
    );
    dict_refused(
        USER.replace("\"vera\", ", "\"vera\", \"n\": 1e-20000, ")
            .as_bytes(),
        "number",
    );
    dict_refused(b"[]", "not a JSON object");
    dict_refused(
        r#"["u1", null, "Вера", null, "vera"]"#.as_bytes(),
        "not a JSON object",
    );
    dict_refused(b"", "EOF");
    dict_refused(br#"{"_id": "x"}"#, "neither a user nor a restaurant");
    let menu = |item: Value| doc(RESTAURANT, |r| r["menu"][0] = item);
    dict_refused(
        &menu(json!({"_id": "d1", "category": 5})),
        "menu[0].category is not a string",
    );
    dict_refused(&menu(json!({"_id": ["d1"]})), "menu[0]._id is not a string");
    dict_refused(
        &menu(json!({"_id": "d1", "category": "c".repeat(2800)})),
        "menu[0].category of 2800 bytes",
    );
    dict_refused(&menu(json!("d1")), "menu[0] is not an object");
    dict_refused(
        &doc(RESTAURANT, |r| r["menu"] = json!({"d1": {}})),
        "menu is not an array",
    );
    // Duplicate keys keep their last value, as jsonb does.
    let twice = USER.replace(
        "\"login\": \"vera\"",
        "\"login\": \"a\", \"login\": \"vera\"",
    );
    assert_eq!(
        DictVersion::parse("u1", twice.as_bytes()).unwrap().version,
        DictVersion::parse("u1", USER.as_bytes()).unwrap().version
    );
    // SQL-looking, emoji and right-to-left names are data.
    let odd = doc(RESTAURANT, |r| {
        r["name"] = json!("'; DROP SCHEMA cdm CASCADE; -- 🍕 مطعم");
        r["menu"][0]["category"] = json!("Супы 🍲 \u{202e}");
    });
    assert_eq!(
        DictVersion::parse("r1", &odd).unwrap().kind,
        DictKind::Restaurant
    );
}
