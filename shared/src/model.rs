//! The source messages as typed structs, and the checks that decide what is junk.
//!
//! Parsing never panics and never guesses: a message either becomes a typed value or a reason
//! string that goes to the dead-letter table with the raw bytes. Everything accepted here can be
//! stored: valid UTF-8, no JSON PostgreSQL refuses ([`crate::jsonb`]), ids short enough for the
//! unique indexes of the hubs, timestamps `timestamp` holds, sizes within the bounds below.

use chrono::NaiveDateTime;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::jsonb;

/// The timestamp format of every source: naive `YYYY-MM-DD HH:MM:SS`, UTC.
pub const TS_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// The largest order message accepted, in bytes (Kafka's default message limit is about this).
pub const MAX_ORDER_BYTES: usize = 1 << 20;

/// The largest dictionary document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// The longest id (and category name) accepted, in bytes. They are business keys behind unique
/// btree indexes, whose entries cannot exceed about 2,700 bytes; real ids have 24.
pub const MAX_KEY_BYTES: usize = 256;

/// The most lines one order may have (real orders have 1–5).
pub const MAX_ORDER_ITEMS: usize = 1_000;

/// Parse a source timestamp: exactly `YYYY-MM-DD HH:MM:SS`, so the year has four digits and
/// PostgreSQL's `timestamp` holds every value that passes.
pub fn parse_ts(raw: &str) -> Result<NaiveDateTime, String> {
    let shaped = raw.len() == 19
        && raw.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b' ',
            13 | 16 => b == b':',
            _ => b.is_ascii_digit(),
        });
    if !shaped {
        return Err(format!(
            "timestamp {} is not YYYY-MM-DD HH:MM:SS",
            shown(raw)
        ));
    }
    NaiveDateTime::parse_from_str(raw, TS_FORMAT)
        .map_err(|e| format!("timestamp {} is not a date and time: {e}", shown(raw)))
}

/// `text` quoted for a reason, cut after 40 characters (a hostile value may be megabytes).
fn shown(text: &str) -> String {
    match text.char_indices().nth(40) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &text[..cut], text.len()),
    }
}

/// An id that must be present (unless `may_be_empty`) and short enough to be a key.
fn check_key(field: &str, id: &str, may_be_empty: bool) -> Result<(), String> {
    if id.is_empty() && !may_be_empty {
        return Err(format!("an empty {field}"));
    }
    if id.len() > MAX_KEY_BYTES {
        return Err(format!(
            "a {field} of {} bytes, over the {MAX_KEY_BYTES}-byte bound for keys",
            id.len()
        ));
    }
    Ok(())
}

/// The bytes of a message as text: within `max` bytes and valid UTF-8.
fn bounded_text(bytes: &[u8], max: usize) -> Result<&str, String> {
    if bytes.len() > max {
        return Err(format!("{} bytes, over the {max}-byte bound", bytes.len()));
    }
    std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))
}

/// `T` read only from a JSON object. serde's derive also takes an array of the field values
/// (`["626a…"]` for `{"id": "626a…"}`), in which PostgreSQL's `->` would find no field.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Fields<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Fields(std::marker::PhantomData))
            .map(Object)
    }
}

fn ts<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDateTime, D::Error> {
    let raw = String::deserialize(d)?;
    parse_ts(&raw).map_err(serde::de::Error::custom)
}

fn opt_ts<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NaiveDateTime>, D::Error> {
    match Option::<String>::deserialize(d)? {
        Some(raw) => parse_ts(&raw).map(Some).map_err(serde::de::Error::custom),
        None => Ok(None),
    }
}

/// A reference to another object by id (`{"id": "…"}`).
#[derive(Debug, Clone, Deserialize)]
pub struct Ref {
    pub id: String,
}

/// One line of an order as the order service sends it.
#[derive(Debug, Clone, Deserialize)]
pub struct OrderItem {
    pub id: String,
    pub name: String,
    pub price: i64,
    pub quantity: i64,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    object_id: i64,
    object_type: String,
    #[serde(deserialize_with = "ts")]
    sent_dttm: NaiveDateTime,
    #[serde(borrow)]
    payload: &'a RawValue,
}

#[derive(Deserialize)]
struct Payload {
    restaurant: Object<Ref>,
    user: Object<Ref>,
    #[serde(deserialize_with = "ts")]
    date: NaiveDateTime,
    #[serde(deserialize_with = "ts")]
    update_ts: NaiveDateTime,
    final_status: String,
    order_items: Vec<Object<OrderItem>>,
    cost: i64,
    payment: i64,
}

impl Payload {
    /// What the types cannot say: ids present and short enough to be keys, a bounded number of
    /// lines, amounts that are amounts. `Err` completes "order N has …".
    fn check(&self) -> Result<(), String> {
        check_key("user.id", &self.user.0.id, false)?;
        check_key("restaurant.id", &self.restaurant.0.id, false)?;
        if self.final_status.is_empty() {
            return Err("an empty final_status".into());
        }
        if self.cost < 0 || self.payment < 0 {
            return Err(format!(
                "a negative amount (cost {}, payment {})",
                self.cost, self.payment
            ));
        }
        if self.order_items.len() > MAX_ORDER_ITEMS {
            return Err(format!(
                "{} order_items, over the bound of {MAX_ORDER_ITEMS}",
                self.order_items.len()
            ));
        }
        for (n, Object(item)) in self.order_items.iter().enumerate() {
            // The real menu has an item with an empty id; orders may name it.
            check_key(&format!("order_items[{n}].id"), &item.id, true)?;
            if item.quantity < 1 {
                return Err(format!("order_items[{n}] with quantity {}", item.quantity));
            }
            if item.price < 0 {
                return Err(format!("order_items[{n}] with price {}", item.price));
            }
        }
        Ok(())
    }
}

/// A valid message of the orders topic: what STG stores, with the payload kept as received.
#[derive(Debug, Clone)]
pub struct OrderMessage {
    pub object_id: i64,
    pub object_type: String,
    pub sent_dttm: NaiveDateTime,
    pub update_ts: NaiveDateTime,
    pub user_id: String,
    pub restaurant_id: String,
    /// The `payload` object exactly as it arrived (escaped or raw UTF-8 alike).
    pub payload: String,
    /// The payload's `date`: when the order was placed.
    pub order_dt: NaiveDateTime,
    pub final_status: String,
    pub cost: i64,
    pub payment: i64,
    pub items: Vec<OrderItem>,
}

impl OrderMessage {
    /// Parse one Kafka message value; `Err` carries the reason it is junk.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err("empty message".into());
        }
        let text = bounded_text(bytes, MAX_ORDER_BYTES).map_err(|e| format!("message of {e}"))?;
        let Object(envelope): Object<Envelope> =
            serde_json::from_str(text).map_err(|e| format!("not an order message: {e}"))?;
        let id = envelope.object_id;
        jsonb::check(text).map_err(|e| format!("order {id} {e}"))?;
        if envelope.object_type != "order" {
            return Err(format!(
                "object_type {} is not \"order\"",
                shown(&envelope.object_type)
            ));
        }
        if id < 1 {
            return Err(format!("object_id {id} is not a positive order id"));
        }
        OrderMessage::with_payload(
            id,
            envelope.object_type,
            envelope.sent_dttm,
            envelope.payload.get(),
        )
    }

    /// The order a payload makes with its envelope's fields: for a message just read, and for
    /// one STG stored (its payload as `jsonb` printed it).
    pub fn with_payload(
        object_id: i64,
        object_type: String,
        sent_dttm: NaiveDateTime,
        payload: &str,
    ) -> Result<Self, String> {
        let id = object_id;
        let Object(parsed): Object<Payload> = serde_json::from_str(payload)
            .map_err(|e| format!("order {id} has a bad payload: {e}"))?;
        parsed.check().map_err(|e| format!("order {id} has {e}"))?;
        Ok(OrderMessage {
            object_id,
            object_type,
            sent_dttm,
            update_ts: parsed.update_ts,
            user_id: parsed.user.0.id,
            restaurant_id: parsed.restaurant.0.id,
            payload: payload.to_owned(),
            order_dt: parsed.date,
            final_status: parsed.final_status,
            cost: parsed.cost,
            payment: parsed.payment,
            items: parsed.order_items.into_iter().map(|Object(i)| i).collect(),
        })
    }
}

/// Which dictionary a Redis document belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DictKind {
    User,
    Restaurant,
}

impl DictKind {
    /// The STG table holding this dictionary's versions.
    pub fn table(self) -> &'static str {
        match self {
            DictKind::User => "stg.users",
            DictKind::Restaurant => "stg.restaurants",
        }
    }
}

#[derive(Deserialize)]
struct DictDoc {
    #[serde(rename = "_id")]
    id: String,
    #[serde(default, deserialize_with = "opt_ts")]
    update_ts_utc: Option<NaiveDateTime>,
    // Names are read as text downstream (`->>`): a number or an object would become its JSON.
    #[allow(dead_code)]
    name: Option<String>,
    menu: Option<Value>,
    login: Option<String>,
}

/// A restaurant's menu: an array of objects whose `_id` and `category` (the dish and category
/// keys of DDS) are strings short enough to be keys, or absent.
fn check_menu(menu: &Value) -> Result<(), String> {
    let Some(items) = menu.as_array() else {
        return Err("menu is not an array".into());
    };
    for (n, item) in items.iter().enumerate() {
        let Some(item) = item.as_object() else {
            return Err(format!("menu[{n}] is not an object"));
        };
        for field in ["_id", "category"] {
            match item.get(field) {
                None | Some(Value::Null) => {}
                Some(Value::String(key)) => check_key(&format!("menu[{n}].{field}"), key, true)
                    .map_err(|e| format!("has {e}"))?,
                Some(_) => return Err(format!("menu[{n}].{field} is not a string")),
            }
        }
    }
    Ok(())
}

/// One version of a dictionary document from Redis.
#[derive(Debug, Clone)]
pub struct DictVersion {
    pub kind: DictKind,
    pub id: String,
    pub update_ts: Option<NaiveDateTime>,
    /// Deterministic id of this exact content: the same document read twice is one version.
    pub version: uuid::Uuid,
    /// The document as Redis holds it.
    pub doc: String,
}

impl DictVersion {
    /// Parse a Redis value; the kind is told by its shape (`menu` → restaurant, `login` → user).
    pub fn parse(key: &str, bytes: &[u8]) -> Result<Self, String> {
        let fail = |reason: String| format!("redis key {}: {reason}", shown(key));
        let text = bounded_text(bytes, MAX_DOCUMENT_BYTES)
            .map_err(|e| fail(format!("document of {e}")))?;
        // serde_json's Value keeps keys sorted (a duplicate key keeps its last value, as in
        // jsonb): its text is a canonical form of the content, so an escaped and a raw UTF-8
        // copy of one document are one version.
        let canonical: Value = serde_json::from_str(text).map_err(|e| fail(e.to_string()))?;
        if !canonical.is_object() {
            return Err(fail("not a JSON object".into()));
        }
        let doc = DictDoc::deserialize(&canonical).map_err(|e| fail(e.to_string()))?;
        jsonb::check(text).map_err(|e| fail(format!("the document {e}")))?;
        check_key("_id", &doc.id, false).map_err(|e| fail(format!("has {e}")))?;
        let kind = match (&doc.menu, &doc.login) {
            (Some(menu), _) => {
                check_menu(menu).map_err(fail)?;
                DictKind::Restaurant
            }
            (None, Some(_)) => DictKind::User,
            (None, None) => return Err(fail("neither a user nor a restaurant".into())),
        };
        let version = crate::vault::hub_key(&canonical.to_string());
        Ok(DictVersion {
            kind,
            id: doc.id,
            update_ts: doc.update_ts_utc,
            version,
            doc: text.to_owned(),
        })
    }
}

/// A message of the STG topic: an order version, or a user or restaurant version (`"kind"`;
/// a message without one is an order, as STG published them before dictionaries flowed).
#[derive(Debug, Clone)]
pub enum StgMessage {
    Order(StgOrder),
    User(StgUserVersion),
    Restaurant(StgRestaurantVersion),
}

impl StgMessage {
    /// Parse one message of the STG topic; `Err` carries the reason it is unusable.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Tagged {
            kind: Option<String>,
        }
        let Tagged { kind } =
            serde_json::from_slice(bytes).map_err(|e| format!("not an STG message: {e}"))?;
        match kind.as_deref() {
            None | Some("order") => {
                let mut order: StgOrder =
                    serde_json::from_slice(bytes).map_err(|e| format!("not an STG order: {e}"))?;
                order.basket = basket(&order.items);
                Ok(StgMessage::Order(order))
            }
            Some("user") => serde_json::from_slice(bytes)
                .map(StgMessage::User)
                .map_err(|e| format!("not an STG user version: {e}")),
            Some("restaurant") => {
                let mut restaurant: StgRestaurantVersion = serde_json::from_slice(bytes)
                    .map_err(|e| format!("not an STG restaurant version: {e}"))?;
                // A menu entry without an id names no dish.
                restaurant.menu.retain(|dish| dish.id.is_some());
                Ok(StgMessage::Restaurant(restaurant))
            }
            Some(other) => Err(format!("an STG message of unknown kind {}", shown(other))),
        }
    }
}

/// The dishes of an order as its basket: each dish once (the first line naming it), by id, with
/// its hub key and the name the order gives it. Canonical, so an unchanged basket has an
/// unchanged hashdiff.
fn basket(items: &[StgItem]) -> String {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        product_pk: uuid::Uuid,
        name: &'a str,
    }
    let mut lines: Vec<(&str, &str)> = items
        .iter()
        .map(|i| (i.id.as_str(), i.name.as_str()))
        .collect();
    lines.sort_by(|a, b| a.0.cmp(b.0));
    lines.dedup_by(|a, b| a.0 == b.0);
    let lines: Vec<Line> = lines
        .into_iter()
        .map(|(id, name)| Line {
            product_pk: crate::vault::hub_key(id),
            name,
        })
        .collect();
    serde_json::to_string(&lines).expect("a basket serialises")
}

/// An order version as `dwh stg` publishes it to the STG topic, enriched with the dictionary
/// names and item categories STG knew at the time (DDS takes those from the dictionary versions).
#[derive(Debug, Clone, Deserialize)]
pub struct StgOrder {
    pub order_id: i64,
    #[serde(deserialize_with = "ts")]
    pub order_dt: NaiveDateTime,
    #[serde(deserialize_with = "ts")]
    pub update_ts: NaiveDateTime,
    /// The position the version was read at in the orders topic, partition × 2^40 + offset: on
    /// equal `update_ts` the greater one wins (0 in messages of versions before it was sent).
    #[serde(default)]
    pub seq: i64,
    pub final_status: String,
    pub cost: i64,
    pub payment: i64,
    pub user: StgUser,
    pub restaurant: StgRestaurant,
    pub items: Vec<StgItem>,
    /// The basket the items make (see [`basket`]).
    #[serde(skip)]
    pub basket: String,
}

/// The user of an order; name and login are `None` while Redis does not know the user.
#[derive(Debug, Clone, Deserialize)]
pub struct StgUser {
    pub id: String,
    pub name: Option<String>,
    pub login: Option<String>,
    pub update_ts: Option<String>,
}

/// The restaurant of an order; the name is `None` while Redis does not know it.
#[derive(Debug, Clone, Deserialize)]
pub struct StgRestaurant {
    pub id: String,
    pub name: Option<String>,
    pub update_ts: Option<String>,
}

/// One line of an order with the category the restaurant's menu gave it (`None` if unknown).
#[derive(Debug, Clone, Deserialize)]
pub struct StgItem {
    pub id: String,
    pub name: String,
    pub price: i64,
    pub quantity: i64,
    pub category: Option<String>,
}

/// A user version as STG publishes it: `update_ts` is the document's `update_ts_utc`, or when it
/// has none the time STG stored it; `seq` is STG's load order (on equal `update_ts` the later
/// load wins).
#[derive(Debug, Clone, Deserialize)]
pub struct StgUserVersion {
    pub id: String,
    pub name: Option<String>,
    pub login: Option<String>,
    #[serde(deserialize_with = "ts")]
    pub update_ts: NaiveDateTime,
    pub seq: i64,
}

/// A restaurant version as STG publishes it (timestamps and `seq` as for users).
#[derive(Debug, Clone, Deserialize)]
pub struct StgRestaurantVersion {
    pub id: String,
    pub name: Option<String>,
    #[serde(deserialize_with = "ts")]
    pub update_ts: NaiveDateTime,
    pub seq: i64,
    pub menu: Vec<MenuDish>,
}

/// A dish of a menu: an id (always, after parsing), its name and category as listed.
#[derive(Debug, Clone, Deserialize)]
pub struct MenuDish {
    pub id: Option<String>,
    pub name: Option<String>,
    pub category: Option<String>,
}

impl MenuDish {
    /// The dish's id (menu entries without one are dropped when the message is parsed).
    pub fn id(&self) -> &str {
        self.id.as_deref().unwrap_or_default()
    }
}

/// What `dwh dds` tells the CDM job: this user's facts changed in this batch.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct AffectedUser {
    pub user_pk: uuid::Uuid,
    pub batch_id: uuid::Uuid,
}

// The path is spelled out for fuzz/, which compiles this file through a `#[path]` of its own.
#[cfg(test)]
#[path = "model/tests.rs"]
mod tests;
