//! The source messages as typed structs, and the checks that decide what is junk.
//!
//! Parsing never panics and never guesses: a message either becomes a typed value or a reason
//! string that goes to the dead-letter table with the raw bytes.

use chrono::NaiveDateTime;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// The timestamp format of every source: naive `YYYY-MM-DD HH:MM:SS`, UTC.
pub const TS_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// Parse a source timestamp.
pub fn parse_ts(raw: &str) -> Result<NaiveDateTime, String> {
    NaiveDateTime::parse_from_str(raw, TS_FORMAT)
        .map_err(|e| format!("timestamp {raw:?} is not YYYY-MM-DD HH:MM:SS: {e}"))
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
    restaurant: Ref,
    user: Ref,
    #[serde(deserialize_with = "ts")]
    date: NaiveDateTime,
    #[serde(deserialize_with = "ts")]
    update_ts: NaiveDateTime,
    final_status: String,
    order_items: Vec<OrderItem>,
    cost: i64,
    payment: i64,
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
}

impl OrderMessage {
    /// Parse one Kafka message value; `Err` carries the reason it is junk.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err("empty message".into());
        }
        let envelope: Envelope =
            serde_json::from_slice(bytes).map_err(|e| format!("not an order message: {e}"))?;
        if envelope.object_type != "order" {
            return Err(format!(
                "object_type {:?} is not \"order\"",
                envelope.object_type
            ));
        }
        let payload: Payload = serde_json::from_str(envelope.payload.get())
            .map_err(|e| format!("order {} has a bad payload: {e}", envelope.object_id))?;
        let missing = if payload.user.id.is_empty() {
            Some("user.id")
        } else if payload.restaurant.id.is_empty() {
            Some("restaurant.id")
        } else if payload.final_status.is_empty() {
            Some("final_status")
        } else {
            None
        };
        if let Some(field) = missing {
            return Err(format!("order {} has an empty {field}", envelope.object_id));
        }
        let _ = (
            payload.date,
            payload.order_items.len(),
            payload.cost,
            payload.payment,
        );
        Ok(OrderMessage {
            object_id: envelope.object_id,
            object_type: envelope.object_type,
            sent_dttm: envelope.sent_dttm,
            update_ts: payload.update_ts,
            user_id: payload.user.id,
            restaurant_id: payload.restaurant.id,
            payload: envelope.payload.get().to_string(),
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
    menu: Option<serde_json::Value>,
    login: Option<serde_json::Value>,
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
        let doc: DictDoc =
            serde_json::from_slice(bytes).map_err(|e| format!("redis key {key}: {e}"))?;
        let kind = match (&doc.menu, &doc.login) {
            (Some(_), _) => DictKind::Restaurant,
            (None, Some(_)) => DictKind::User,
            (None, None) => {
                return Err(format!("redis key {key}: neither a user nor a restaurant"))
            }
        };
        // serde_json's Value keeps keys sorted: its text is a canonical form of the content,
        // so an escaped and a raw UTF-8 copy of one document are one version.
        let canonical: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("redis key {key}: {e}"))?;
        let version = crate::vault::hub_key(&canonical.to_string());
        Ok(DictVersion {
            kind,
            id: doc.id,
            update_ts: doc.update_ts_utc,
            version,
            doc: String::from_utf8_lossy(bytes).into_owned(),
        })
    }
}

/// An order as `dwh stg` publishes it to the STG topic: the current version, enriched with the
/// dictionary names and item categories STG knew at the time.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct StgOrder {
    pub order_id: i64,
    pub order_dt: String,
    pub update_ts: String,
    pub final_status: String,
    pub cost: i64,
    pub payment: i64,
    pub user: StgUser,
    pub restaurant: StgRestaurant,
    pub items: Vec<StgItem>,
}

/// The user of an order; name and login are `None` while Redis does not know the user.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct StgUser {
    pub id: String,
    pub name: Option<String>,
    pub login: Option<String>,
    pub update_ts: Option<String>,
}

/// The restaurant of an order; the name is `None` while Redis does not know it.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct StgRestaurant {
    pub id: String,
    pub name: Option<String>,
    pub update_ts: Option<String>,
}

/// One line of an order with the category the restaurant's menu gives it (`None` if unknown).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct StgItem {
    pub id: String,
    pub name: String,
    pub price: i64,
    pub quantity: i64,
    pub category: Option<String>,
}

/// What `dwh dds` tells the CDM job: this user's facts changed in this batch.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct AffectedUser {
    pub user_pk: uuid::Uuid,
    pub batch_id: uuid::Uuid,
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER: &str = r#"{"object_id": 5601234, "object_type": "order", "sent_dttm": "2023-10-02 09:15:41",
 "payload": {"restaurant": {"id": "ebfa4c9b8dadfc1da37ab58d"}, "date": "2023-09-25 13:42:07",
   "user": {"id": "626a81ce9a8cd1920641e272"},
   "order_items": [{"id": "2df24d1c887b0d10f48bd0b5", "name": "\u0421\u0430\u043b\u0430\u0442", "price": 200, "quantity": 2}],
   "bonus_payment": 0, "cost": 400, "payment": 400, "bonus_grant": 0,
   "statuses": [{"status": "CLOSED", "dttm": "2023-09-25 13:42:07"}],
   "final_status": "CLOSED", "update_ts": "2023-09-25 13:42:07"}}"#;

    #[test]
    fn a_valid_order_keeps_its_payload_as_received() {
        let order = OrderMessage::parse(ORDER.as_bytes()).unwrap();
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
        let payment = ORDER.replace("\"order\"", "\"payment\"");
        assert!(OrderMessage::parse(payment.as_bytes())
            .unwrap_err()
            .contains("is not \"order\""));
        let bad_ts = ORDER.replace(
            "\"update_ts\": \"2023-09-25 13:42:07\"",
            "\"update_ts\": \"soon\"",
        );
        assert!(OrderMessage::parse(bad_ts.as_bytes())
            .unwrap_err()
            .contains("bad payload"));
    }

    #[test]
    fn escaped_and_raw_dictionary_documents_are_one_version() {
        let raw = r#"{"_id": "u1", "name": "Вера", "login": "vera", "update_ts_utc": "2023-08-11 16:45:00"}"#;
        let escaped = r#"{"_id": "u1", "name": "\u0412\u0435\u0440\u0430", "login": "vera", "update_ts_utc": "2023-08-11 16:45:00"}"#;
        let a = DictVersion::parse("u1", raw.as_bytes()).unwrap();
        let b = DictVersion::parse("u1", escaped.as_bytes()).unwrap();
        assert_eq!(a.kind, DictKind::User);
        assert_eq!(a.version, b.version);
    }
}
