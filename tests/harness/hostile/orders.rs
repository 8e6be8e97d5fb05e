//! The order messages of the corpus: valid orders of the hostile world, the variants that must
//! still load, and every class that must be dead-lettered.

use serde_json::{json, Value};

use super::world::{Dish, World};
use super::{nested, splice, text_of, Document, Fate, Message, Rng, DOCUMENT_BOUND, KEY_BOUND};

/// Timestamps in formats other than `YYYY-MM-DD HH:MM:SS`, and impossible ones.
const OTHER_TIMESTAMPS: &[&str] = &[
    "2023-09-25T13:42:07",
    "2023-09-25 13:42:07Z",
    "2023-09-25 13:42:07+03:00",
    "2023-09-25 13:42:07.123456",
    "2023-9-25 13:42:07",
    "25.09.2023 13:42:07",
    "09/25/2023 1:42 PM",
    "2023-09-25",
    "13:42:07",
    " 2023-09-25 13:42:07",
    "2023-09-25  13:42:07",
    "+12023-09-25 13:42:07",
    "-5000-01-01 00:00:00",
    "99999-01-01 00:00:00",
    "2023-02-30 00:00:00",
    "2023-09-25 24:00:00",
    "2023-13-01 00:00:00",
    "२०२३-०९-२५ 13:42:07",
    "1695649327",
    "",
    "infinity",
    "epoch",
];

/// A valid order of the hostile world, `minute` minutes after 2023-09-20 00:00:00; with
/// `long_name`, its first line is a dish with a 120 KB name.
pub(super) fn order(
    world: &World,
    rng: &mut Rng,
    object_id: i64,
    minute: i64,
    long_name: bool,
) -> Value {
    let at = chrono::NaiveDate::from_ymd_opt(2023, 9, 20)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        + chrono::Duration::minutes(minute);
    let ts = at.format("%Y-%m-%d %H:%M:%S").to_string();
    let sent = (at + chrono::Duration::days(7))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let restaurant = rng.pick(&world.restaurants);
    let (mut long, mut dishes): (Vec<Dish>, Vec<Dish>) = restaurant
        .menu
        .iter()
        .cloned()
        .partition(|d| d.name.len() > 1_000);
    rng.shuffle(&mut dishes);
    dishes.truncate(1 + rng.below(5));
    if long_name {
        long.truncate(1);
        dishes.splice(0..0, long);
    }
    let mut cost = 0;
    let items: Vec<Value> = dishes
        .iter()
        .map(|d| {
            let (price, quantity) = (50 * (1 + rng.below(10)) as i64, 1 + rng.below(5) as i64);
            cost += price * quantity;
            json!({"id": d.id, "name": d.name, "price": price, "quantity": quantity})
        })
        .collect();
    let status = if rng.below(5) == 0 {
        "CANCELLED"
    } else {
        "CLOSED"
    };
    json!({"object_id": object_id, "object_type": "order", "sent_dttm": sent,
        "payload": {"restaurant": {"id": restaurant.id}, "date": ts,
            "user": {"id": rng.pick(&world.users)}, "order_items": items,
            "bonus_payment": 0, "cost": cost, "payment": cost, "bonus_grant": 0,
            "statuses": [{"status": status, "dttm": ts}], "final_status": status,
            "update_ts": ts}})
}

/// Every non-ASCII character of a JSON text as a `\uXXXX` escape (surrogate pairs above U+FFFF).
fn ascii_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// Accepted variants of an order: each must load as the data it is.
pub(super) const LOADED: &[&str] = &[
    "odd ids and names",
    r"\uXXXX-escaped",
    "empty and repeated unknown keys",
    "large but storable numbers",
    "nesting within bounds",
    r"an escaped backslash before u0000",
    "whitespace between tokens",
    "free items and the largest price",
    "a status that is SQL",
];

pub(super) fn loaded(class: &str, mut order: Value) -> Vec<u8> {
    match class {
        "odd ids and names" => {}
        r"\uXXXX-escaped" => return ascii_escaped(&text_of(&order)).into_bytes(),
        "empty and repeated unknown keys" => {
            let text = text_of(&order);
            return text
                .replacen(
                    "\"bonus_grant\"",
                    "\"\": 1, \"x\": 1, \"x\": {\"\": \"\"}, \"bonus_grant\"",
                    1,
                )
                .into_bytes();
        }
        "large but storable numbers" => {
            let text = text_of(&order);
            return text
                .replacen(
                    "\"bonus_grant\":0",
                    "\"bonus_grant\":1e300,\"tip\":-0.0,\"big\":123456789012345678901234567890,\"tiny\":1E-999",
                    1,
                )
                .into_bytes();
        }
        "nesting within bounds" => {
            order["payload"]["extra"] = serde_json::from_str(&nested(60)).unwrap();
        }
        r"an escaped backslash before u0000" => {
            order["payload"]["note"] = json!(r"C:\u0000\new \\u0000");
        }
        "whitespace between tokens" => {
            return serde_json::to_string_pretty(&order).unwrap().into_bytes();
        }
        "free items and the largest price" => {
            order["payload"]["order_items"][0]["price"] = json!(0);
            order["payload"]["order_items"][0]["quantity"] = json!(1);
            if let Some(item) = order["payload"]["order_items"].get_mut(1) {
                item["price"] = json!(i64::MAX);
                item["quantity"] = json!(1);
            }
            order["payload"]["cost"] = json!(i64::MAX);
            order["payload"]["payment"] = json!(i64::MAX);
        }
        "a status that is SQL" => {
            order["payload"]["final_status"] =
                json!("CLOSED'; UPDATE dds.s_order_status SET status = 'CLOSED");
        }
        other => unreachable!("{other}"),
    }
    text_of(&order).into_bytes()
}

/// The heaviest order STG can publish: a message of nearly 1 MiB, its user's and its
/// restaurant's documents of nearly 1 MiB each, a 256-byte category. Its enriched STG message
/// is about 3 MB, which DDS must still read.
pub(super) fn heaviest(object_id: i64) -> (Message, [Document; 2]) {
    let user = json!({"_id": "heavy-user", "name": "Н".repeat(DOCUMENT_BOUND / 2 - 100),
                      "login": "heavy", "update_ts_utc": "2023-08-11 16:45:00"});
    let dish =
        json!({"_id": "heavy-dish", "name": "d", "price": 1, "category": "c".repeat(KEY_BOUND)});
    let restaurant = json!({"_id": "heavy-restaurant", "name": "R".repeat(DOCUMENT_BOUND - 400),
                            "menu": [dish], "update_ts_utc": "2023-08-11 16:45:00"});
    let ts = "2023-09-19 12:00:00";
    let order = json!({"object_id": object_id, "object_type": "order", "sent_dttm": ts,
        "payload": {"restaurant": {"id": "heavy-restaurant"}, "user": {"id": "heavy-user"},
            "date": ts, "update_ts": ts, "final_status": "CLOSED", "cost": 1, "payment": 1,
            "order_items": [{"id": "heavy-dish", "name": "Ж".repeat(DOCUMENT_BOUND / 2 - 400),
                             "price": 1, "quantity": 1}]}});
    let document = |key: &str, doc: &Value| Document {
        class: "nearly 1 MiB",
        key: key.to_owned(),
        value: text_of(doc).into_bytes(),
        fate: Fate::Loaded,
    };
    let message = Message {
        class: "the heaviest enriched order",
        bytes: text_of(&order).into_bytes(),
        fate: Fate::Loaded,
    };
    (
        message,
        [
            document("heavy-user", &user),
            document("heavy-restaurant", &restaurant),
        ],
    )
}

/// Refused classes of order messages, with how many of each the corpus holds.
pub(super) const REFUSED: &[(&str, usize)] = &[
    ("invalid UTF-8", 700),
    (r"\u0000 in a string", 700),
    ("an unpaired surrogate", 600),
    ("over 1 MiB (up to 5 MB, the orders topic's limit)", 4),
    ("nested too deep", 400),
    ("a number out of range", 800),
    ("NaN-like", 400),
    ("a non-positive quantity, price, amount or id", 600),
    ("a wrong type", 800),
    ("empty", 100),
    ("a duplicate key that is read", 500),
    ("an empty id or status", 400),
    ("an id over 256 bytes", 500),
    ("over 1,000 lines", 20),
    ("a timestamp in another format", 1_000),
    ("not JSON", 700),
    ("not an order", 400),
];

/// `order` spoiled the way `class` says (the `n`th of its class).
pub(super) fn refused(class: &str, order: Value, rng: &mut Rng, n: usize) -> Vec<u8> {
    let text = text_of(&order);
    let mut order = order;
    match class {
        "invalid UTF-8" => {
            const BAD: &[&[u8]] = &[
                b"\xff",
                b"\xfe",
                b"\xc3\x28",
                b"\xe2\x82",
                b"\xc0\xaf",
                b"\xed\xa0\x80",
                b"\xf4\x90\x80\x80",
                b"\x80",
                b"\xf0\x9f\x98",
            ];
            let marker = *rng.pick(&["CLOSED", "order_items", "object_type", "restaurant", "2023"]);
            let marker = if text.contains(marker) {
                marker
            } else {
                "payload"
            };
            let bad: &[u8] = BAD[rng.below(BAD.len())];
            return splice(&text, marker, bad);
        }
        r"\u0000 in a string" => match n % 7 {
            0 => order["payload"]["order_items"][0]["name"] = json!("Борщ\0"),
            1 => order["payload"]["user"]["id"] = json!("\0"),
            2 => order["object_type"] = json!("order\0"),
            3 => order["payload"]["final_status"] = json!("CLOSED\0"),
            4 => order["payload"]["comment"] = json!("skipped by the parser, not by PostgreSQL \0"),
            5 => order["payload"]["statuses"][0]["\0"] = json!(1),
            _ => order["trace"] = json!(["\0\0"]),
        },
        "an unpaired surrogate" => {
            const LONE: &[&str] = &[
                r"\ud800",
                r"\udbff",
                r"\udc00",
                r"\udfff",
                r"\ud83dx",
                r"\ud83d\ud83d",
            ];
            let lone = rng.pick(LONE);
            return match n % 3 {
                0 => text.replacen(
                    "\"bonus_grant\"",
                    &format!("\"note\":\"{lone}\",\"bonus_grant\""),
                    1,
                ),
                1 => text.replacen("\"name\":\"", &format!("\"name\":\"{lone}"), 1),
                _ => text.replacen("\"order\"", &format!("\"order{lone}\""), 1),
            }
            .into_bytes();
        }
        "over 1 MiB (up to 5 MB, the orders topic's limit)" => {
            let mut bytes = text.into_bytes();
            match n {
                0 => bytes.resize(DOCUMENT_BOUND + 1, b' '),
                1 => {
                    order["payload"]["order_items"][0]["name"] =
                        json!("Ж".repeat(DOCUMENT_BOUND / 2));
                    return text_of(&order).into_bytes();
                }
                2 => {
                    order["payload"]["comment"] = json!("z".repeat(5_000_000));
                    return text_of(&order).into_bytes();
                }
                _ => bytes.resize(2 * DOCUMENT_BOUND, b'\n'),
            }
            return bytes;
        }
        "nested too deep" => {
            let depth = match n {
                0 => 200_000,
                1..=3 => 10_000,
                _ => 65 + rng.below(1_000),
            };
            let deep = nested(depth);
            return match n % 2 {
                0 => text.replacen("\"bonus_grant\":0", &format!("\"bonus_grant\":{deep}"), 1),
                _ => text.replacen(
                    "\"object_type\"",
                    &format!(
                        "\"deep\":{}{}{},\"object_type\"",
                        "{\"a\":".repeat(depth),
                        1,
                        "}".repeat(depth)
                    ),
                    1,
                ),
            }
            .into_bytes();
        }
        "a number out of range" => {
            const NUMBERS: &[(&str, &str)] = &[
                ("\"object_id\":", "9223372036854775808"),
                ("\"object_id\":", "-9223372036854775809"),
                ("\"object_id\":", "1e19"),
                ("\"object_id\":", "5.5"),
                ("\"cost\":", "1e400"),
                ("\"cost\":", "99999999999999999999"),
                ("\"price\":", "1e20"),
                ("\"quantity\":", "1.5"),
                ("\"bonus_grant\":", "1e1000"),
                ("\"bonus_grant\":", "-1E+131072"),
                ("\"bonus_grant\":", "1e-99999"),
                (
                    "\"bonus_payment\":",
                    "12345678901234567890123456789012345678901234567890123456789012345",
                ),
            ];
            let (field, number) = NUMBERS[n % NUMBERS.len()];
            return replace_value(&text, field, number);
        }
        "NaN-like" => {
            const NAN: &[&str] = &[
                "NaN",
                "Infinity",
                "-Infinity",
                "+1",
                "01",
                ".5",
                "1.",
                "0x10",
                "\"NaN\"",
                "\"Infinity\"",
                "nan",
                "1_000",
            ];
            let nan = NAN[(n / 4) % NAN.len()];
            // Not JSON anywhere; as a string only where a number is read.
            let fields: &[&str] = if nan.starts_with('"') {
                &["\"cost\":", "\"price\":", "\"object_id\":"]
            } else {
                &[
                    "\"cost\":",
                    "\"price\":",
                    "\"bonus_grant\":",
                    "\"object_id\":",
                ]
            };
            return replace_value(&text, fields[n % fields.len()], nan);
        }
        "a non-positive quantity, price, amount or id" => match n % 6 {
            0 => order["payload"]["order_items"][0]["quantity"] = json!(0),
            1 => {
                order["payload"]["order_items"][0]["quantity"] = json!(-(1 + rng.below(100) as i64))
            }
            2 => {
                order["payload"]["order_items"][0]["price"] =
                    json!(if n.is_multiple_of(4) { i64::MIN } else { -1 })
            }
            3 => order["payload"]["cost"] = json!(-1),
            4 => order["payload"]["payment"] = json!(-400),
            _ => order["object_id"] = json!(-(rng.below(10) as i64)),
        },
        "a wrong type" => {
            let (path, value): (&[&str], Value) = match n % 14 {
                0 => (&["object_id"], json!("5601234")),
                1 => (&["object_id"], json!(true)),
                2 => (&["object_id"], Value::Null),
                3 => (&["payload"], json!("{\"user\": {}}")),
                4 => (&["payload"], json!([1, 2])),
                5 => (&["payload", "user"], json!("626a81ce9a8cd1920641e272")),
                6 => (&["payload", "user"], json!(["626a81ce9a8cd1920641e272"])),
                7 => (&["payload", "order_items"], json!({"0": {}})),
                8 => (&["payload", "order_items"], json!([["d1", "Борщ", 200, 2]])),
                9 => (&["payload", "cost"], json!("400")),
                10 => (&["payload", "final_status"], json!(1)),
                11 => (&["payload", "date"], json!(1695649327)),
                12 => (&["sent_dttm"], json!({"$date": "2023-10-02"})),
                _ => (&["payload", "restaurant", "id"], json!(123)),
            };
            set(&mut order, path, value);
        }
        "empty" => {
            const EMPTY: &[&str] = &[
                "",
                " ",
                "\t\n",
                "{}",
                "[]",
                "null",
                "\"\"",
                "0",
                "true",
                "{\"payload\": {}}",
            ];
            return EMPTY[n % EMPTY.len()].as_bytes().to_vec();
        }
        "a duplicate key that is read" => {
            const TWICE: &[(&str, &str)] = &[
                ("\"object_id\":", "\"object_id\":1,"),
                ("\"object_type\":", "\"object_type\":\"order\","),
                ("\"payload\":", "\"payload\":{},"),
                ("\"cost\":", "\"cost\":1,"),
                ("\"final_status\":", "\"final_status\":\"CANCELLED\","),
                ("\"update_ts\":", "\"update_ts\":\"2030-01-01 00:00:00\","),
                ("\"id\":", "\"id\":\"other\","),
            ];
            let (at, extra) = TWICE[n % TWICE.len()];
            return text.replacen(at, &format!("{extra}{at}"), 1).into_bytes();
        }
        "an empty id or status" => match n % 4 {
            0 => order["payload"]["user"]["id"] = json!(""),
            1 => order["payload"]["restaurant"]["id"] = json!(""),
            2 => order["payload"]["final_status"] = json!(""),
            _ => {
                order["payload"].as_object_mut().unwrap().remove("user");
            }
        },
        "an id over 256 bytes" => {
            let long = "x".repeat(KEY_BOUND + 1 + rng.below(4_000));
            match n % 3 {
                0 => order["payload"]["user"]["id"] = json!(long),
                1 => order["payload"]["restaurant"]["id"] = json!(long),
                _ => order["payload"]["order_items"][0]["id"] = json!(long),
            }
        }
        "over 1,000 lines" => {
            let item = json!({"id": "d", "name": "n", "price": 1, "quantity": 1});
            order["payload"]["order_items"] = Value::Array(vec![item; 1_001 + rng.below(500)]);
        }
        "a timestamp in another format" => {
            let ts = OTHER_TIMESTAMPS[n % OTHER_TIMESTAMPS.len()];
            match (n / OTHER_TIMESTAMPS.len()) % 3 {
                0 => order["payload"]["update_ts"] = json!(ts),
                1 => order["payload"]["date"] = json!(ts),
                _ => order["sent_dttm"] = json!(ts),
            }
        }
        "not JSON" => {
            return match n % 8 {
                0..=2 => text.as_bytes()[..1 + rng.below(text.len() - 1)].to_vec(),
                3 => b"DROP TABLE stg.order_events; --".to_vec(),
                4 => format!("\u{feff}{text}").into_bytes(),
                5 => format!("{text}{text}").into_bytes(),
                6 => text.replacen('"', "'", 4).into_bytes(),
                _ => format!("{text} // a comment").into_bytes(),
            };
        }
        "not an order" => {
            const TYPES: &[&str] = &["payment", "ORDER", "order ", "", "ордер", "Order"];
            order["object_type"] = json!(TYPES[n % TYPES.len()]);
        }
        other => unreachable!("{other}"),
    }
    text_of(&order).into_bytes()
}

/// `text` with the value after the first `field` replaced by the raw JSON `value`.
fn replace_value(text: &str, field: &str, value: &str) -> Vec<u8> {
    let start = text.find(field).expect("the field is in the text") + field.len();
    let end = start
        + text[start..]
            .find([',', '}'])
            .expect("a value ends with , or }");
    format!("{}{value}{}", &text[..start], &text[end..]).into_bytes()
}

fn set(value: &mut Value, path: &[&str], new: Value) {
    let mut at = value;
    for key in path {
        at = &mut at[*key];
    }
    *at = new;
}
