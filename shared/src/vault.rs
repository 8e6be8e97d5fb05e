//! Data Vault keys, and the one description of the DDS tables and of the stages that feed them.
//!
//! Keys are computed in Rust over the batch, never row by row in SQL: a hub key is uuid v5 over
//! the raw business key, a link key is uuid v5 over its hub keys, a hashdiff is uuid v5 over a
//! satellite's attributes. The namespace is the one the source project's ecosystem uses, so keys
//! match existing dashboards.
//!
//! Everything DDS writes follows from the descriptions below: a [`Stage`] names the source fields
//! it takes from each message (with their type and how to read them), the hubs whose keys it
//! computes, the links and satellites it feeds. From that come the stage's Arrow schema and rows
//! ([`stage_batch`]), the hashdiff and link-key inputs, and every merge statement. Adding an
//! attribute to a satellite is one [`Field`] in its description (and the migration adding the
//! column).
//!
//! History: every version of a source record is logged in a version log ([`VersionLog`]:
//! `dds.x_*_versions`, one row per parent and source timestamp, with the tie-breaking position);
//! a satellite keeps a row where its hashdiff differs from the version before it, in the order of
//! the source's timestamps, whichever batch brought which version (see [`satellite_merge`]).

use arrow::array::{
    Array, ArrayRef, BooleanArray, FixedSizeBinaryArray, FixedSizeBinaryBuilder, Int64Array,
    Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondArray,
    TimestampMicrosecondBuilder,
};
use chrono::NaiveDateTime;
use std::borrow::Cow;
use std::sync::Arc;
use uuid::{uuid, Uuid};

use crate::error::{bail, Result};
use crate::model::{StgOrder, StgRestaurantVersion, StgUserVersion};

/// Namespace of every key (the source project's convention).
pub const NAMESPACE: Uuid = uuid!("7f288a2e-0ad0-4039-8e59-6c9838d87307");

/// Hub key: uuid v5 over the raw business key.
pub fn hub_key(business_key: &str) -> Uuid {
    Uuid::new_v5(&NAMESPACE, business_key.as_bytes())
}

/// Link key: uuid v5 over the concatenated hub keys, in the link's column order.
pub fn link_key(hub_keys: &[Uuid]) -> Uuid {
    let bytes: Vec<u8> = hub_keys.iter().flat_map(|k| *k.as_bytes()).collect();
    Uuid::new_v5(&NAMESPACE, &bytes)
}

/// Hashdiff of a satellite's attributes.
///
/// Attributes are separated by a unit separator and a missing value is distinct from an empty one
/// (so a version whose attributes are all unknown is a value too).
pub fn hashdiff(attributes: &[Option<&str>]) -> Uuid {
    let mut text = String::new();
    for attribute in attributes {
        match attribute {
            Some(value) => {
                text.push('\u{2}');
                text.push_str(value);
            }
            None => text.push('\u{0}'),
        }
        text.push('\u{1f}');
    }
    Uuid::new_v5(&NAMESPACE, text.as_bytes())
}

/// The type of a stage column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A key (uuid).
    Key,
    Text,
    Int,
    /// A naive UTC timestamp.
    Time,
    /// JSON text, stored as `jsonb`.
    Json,
    /// A mark computed over the whole batch (a satellite's change points).
    Flag,
}

impl Kind {
    /// The SQL type a stage column of this kind is read as in the merges.
    fn sql(self) -> &'static str {
        match self {
            Kind::Key => "uuid",
            Kind::Text => "text",
            Kind::Int => "int8",
            Kind::Time => "timestamp",
            Kind::Json => "jsonb",
            Kind::Flag => "bool",
        }
    }
}

/// One value read from a source record.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Key(Option<Uuid>),
    Text(Option<&'a str>),
    Int(i64),
    Time(NaiveDateTime),
    Json(&'a str),
}

impl Value<'_> {
    /// The value as the text a key or hashdiff is computed over (`None` when missing).
    fn text(&self) -> Option<Cow<'_, str>> {
        match self {
            Value::Key(k) => k.map(|k| Cow::Owned(k.to_string())),
            Value::Text(t) => t.map(Cow::Borrowed),
            Value::Int(n) => Some(Cow::Owned(n.to_string())),
            Value::Time(t) => Some(Cow::Owned(t.format(crate::model::TS_FORMAT).to_string())),
            Value::Json(j) => Some(Cow::Borrowed(j)),
        }
    }
}

/// A field of a stage: a column, its kind, and how to read it from the `row`-th row of a source
/// record `T` (a record stages [`Stage::rows`] rows).
pub struct Field<T: 'static> {
    pub name: &'static str,
    pub kind: Kind,
    pub get: fn(&T, usize) -> Value<'_>,
}

/// A hub: its key, the business key it hashes, and other columns it carries.
pub struct Hub {
    pub table: &'static str,
    pub key: &'static str,
    /// The business key column (hashed into `key`); a stage feeding the hub has a field of this
    /// name.
    pub business_key: &'static str,
    /// Further columns, read from stage fields of the same names.
    pub extras: &'static [&'static str],
}

/// A link: a key over the keys of the hubs it joins, in this order.
pub struct Link {
    pub table: &'static str,
    pub key: &'static str,
    pub hubs: &'static [&'static Hub],
    /// The hub whose keys, when the batch added them, make this link's rows new: they are
    /// inserted without the conflict check. Only for a link one stage writes, after that hub's
    /// merge in the same batch (an order's links: an order the batch added has none yet).
    pub new_with: Option<&'static Hub>,
}

/// A version log: every version of a parent's source record, by the source's timestamp, with the
/// position that breaks ties (`dds.x_*_versions`).
pub struct VersionLog {
    pub table: &'static str,
    pub parent: &'static Hub,
}

/// A satellite: attributes of a version log's parent, one row per change.
pub struct Satellite<T: 'static> {
    pub table: &'static str,
    pub log: &'static VersionLog,
    pub attributes: &'static [Field<T>],
    /// Whether a change must recompute the users who ordered the parent (a dish's name or
    /// category): the merge records the changed parents in `dds.pending_fanout`.
    pub reaches_users: bool,
}

impl<T> Satellite<T> {
    /// The stage column holding this satellite's hashdiff.
    pub fn hashdiff_column(&self) -> String {
        format!("{}_hashdiff", self.table)
    }
    /// The stage column marking the rows that are this satellite's change points among the
    /// batch's versions of their parent ([`change_points`]).
    pub fn change_column(&self) -> String {
        format!("{}_change", self.table)
    }
    /// The stage column holding one of this satellite's attributes.
    pub fn stage_column(&self, attribute: &str) -> String {
        format!("{}_{attribute}", self.table)
    }
    fn parent(&self) -> &'static str {
        self.log.parent.key
    }
}

/// How a stage feeds a version log: the fields with the source's timestamp and position.
pub struct LogFeed {
    pub log: &'static VersionLog,
    pub effective: &'static str,
    pub seq: &'static str,
}

/// A stage table (a temp table per batch) and everything it feeds.
pub struct Stage<T: 'static> {
    pub table: &'static str,
    /// Rows one source record stages.
    pub rows: fn(&T) -> usize,
    /// Business keys, hub extras, timestamps and positions.
    pub fields: &'static [Field<T>],
    /// Hubs whose keys this stage computes (from their business key fields).
    pub keys: &'static [&'static Hub],
    /// Hubs this stage inserts (among `keys`).
    pub hubs: &'static [&'static Hub],
    pub links: &'static [&'static Link],
    pub log: Option<LogFeed>,
    pub satellites: &'static [&'static Satellite<T>],
    /// Whether two partitions of the STG topic may bring versions of one parent (a dish on the
    /// menus of two restaurants): the merge then locks those parents first, so two parallel
    /// workers never bring one parent's satellites in line at once.
    pub shared_parents: bool,
}

// ----- the tables ---------------------------------------------------------------------------

pub static H_USER: Hub = Hub {
    table: "h_user",
    key: "h_user_pk",
    business_key: "user_id",
    extras: &[],
};
pub static H_RESTAURANT: Hub = Hub {
    table: "h_restaurant",
    key: "h_restaurant_pk",
    business_key: "restaurant_id",
    extras: &[],
};
pub static H_ORDER: Hub = Hub {
    table: "h_order",
    key: "h_order_pk",
    business_key: "order_id",
    extras: &["order_dt"],
};
pub static H_PRODUCT: Hub = Hub {
    table: "h_product",
    key: "h_product_pk",
    business_key: "product_id",
    extras: &[],
};
pub static H_CATEGORY: Hub = Hub {
    table: "h_category",
    key: "h_category_pk",
    business_key: "category_name",
    extras: &[],
};

pub static HUBS: &[&Hub] = &[&H_USER, &H_RESTAURANT, &H_ORDER, &H_PRODUCT, &H_CATEGORY];

pub static L_ORDER_USER: Link = Link {
    table: "l_order_user",
    key: "hk_order_user_pk",
    hubs: &[&H_ORDER, &H_USER],
    new_with: Some(&H_ORDER),
};
pub static L_ORDER_PRODUCT: Link = Link {
    table: "l_order_product",
    key: "hk_order_product_pk",
    hubs: &[&H_ORDER, &H_PRODUCT],
    new_with: Some(&H_ORDER),
};
pub static L_PRODUCT_RESTAURANT: Link = Link {
    table: "l_product_restaurant",
    key: "hk_product_restaurant_pk",
    hubs: &[&H_PRODUCT, &H_RESTAURANT],
    new_with: None,
};
pub static L_PRODUCT_CATEGORY: Link = Link {
    table: "l_product_category",
    key: "hk_product_category_pk",
    hubs: &[&H_PRODUCT, &H_CATEGORY],
    new_with: None,
};

pub static X_ORDER: VersionLog = VersionLog {
    table: "x_order_versions",
    parent: &H_ORDER,
};
pub static X_USER: VersionLog = VersionLog {
    table: "x_user_versions",
    parent: &H_USER,
};
pub static X_RESTAURANT: VersionLog = VersionLog {
    table: "x_restaurant_versions",
    parent: &H_RESTAURANT,
};
/// A dish's versions are the versions of the menus that list it.
pub static X_PRODUCT: VersionLog = VersionLog {
    table: "x_product_versions",
    parent: &H_PRODUCT,
};

pub static S_ORDER_STATUS: Satellite<StgOrder> = Satellite {
    table: "s_order_status",
    log: &X_ORDER,
    attributes: &[Field {
        name: "status",
        kind: Kind::Text,
        get: |o, _| Value::Text(Some(&o.final_status)),
    }],
    reaches_users: false,
};
pub static S_ORDER_COST: Satellite<StgOrder> = Satellite {
    table: "s_order_cost",
    log: &X_ORDER,
    attributes: &[
        Field {
            name: "cost",
            kind: Kind::Int,
            get: |o, _| Value::Int(o.cost),
        },
        Field {
            name: "payment",
            kind: Kind::Int,
            get: |o, _| Value::Int(o.payment),
        },
    ],
    reaches_users: false,
};
/// The dishes of each version of an order (the effectivity of `l_order_product`: a link is in
/// effect in the versions whose basket lists it), with the name the order gives each.
pub static S_ORDER_BASKET: Satellite<StgOrder> = Satellite {
    table: "s_order_basket",
    log: &X_ORDER,
    attributes: &[Field {
        name: "items",
        kind: Kind::Json,
        get: |o, _| Value::Json(&o.basket),
    }],
    reaches_users: false,
};
pub static S_USER_NAMES: Satellite<StgUserVersion> = Satellite {
    table: "s_user_names",
    log: &X_USER,
    attributes: &[
        Field {
            name: "username",
            kind: Kind::Text,
            get: |u, _| Value::Text(u.name.as_deref()),
        },
        Field {
            name: "userlogin",
            kind: Kind::Text,
            get: |u, _| Value::Text(u.login.as_deref()),
        },
    ],
    reaches_users: false,
};
pub static S_RESTAURANT_NAMES: Satellite<StgRestaurantVersion> = Satellite {
    table: "s_restaurant_names",
    log: &X_RESTAURANT,
    attributes: &[Field {
        name: "name",
        kind: Kind::Text,
        get: |r, _| Value::Text(r.name.as_deref()),
    }],
    reaches_users: false,
};
/// A dish's name as the menus list it.
pub static S_PRODUCT_NAMES: Satellite<StgRestaurantVersion> = Satellite {
    table: "s_product_names",
    log: &X_PRODUCT,
    attributes: &[Field {
        name: "name",
        kind: Kind::Text,
        get: |r, i| Value::Text(r.menu[i].name.as_deref()),
    }],
    reaches_users: true,
};
/// The effectivity of `l_product_category` with the dish as driving key: from `effective_dt` on,
/// the dish is in this category (until its next row). One category per dish at a time.
pub static ES_PRODUCT_CATEGORY: Satellite<StgRestaurantVersion> = Satellite {
    table: "es_product_category",
    log: &X_PRODUCT,
    attributes: &[Field {
        name: "h_category_pk",
        kind: Kind::Key,
        get: |r, i| Value::Key(r.menu[i].category.as_deref().map(hub_key)),
    }],
    reaches_users: true,
};

// ----- the stages ---------------------------------------------------------------------------

// Fields that more than one stage reads from the same record.
const ORDER_ID: Field<StgOrder> = Field {
    name: "order_id",
    kind: Kind::Int,
    get: |o, _| Value::Int(o.order_id),
};
const ORDER_RESTAURANT_ID: Field<StgOrder> = Field {
    name: "restaurant_id",
    kind: Kind::Text,
    get: |o, _| Value::Text(Some(&o.restaurant.id)),
};
const RESTAURANT_ID: Field<StgRestaurantVersion> = Field {
    name: "restaurant_id",
    kind: Kind::Text,
    get: |r, _| Value::Text(Some(&r.id)),
};
const RESTAURANT_UPDATE_TS: Field<StgRestaurantVersion> = Field {
    name: "update_ts",
    kind: Kind::Time,
    get: |r, _| Value::Time(r.update_ts),
};
const RESTAURANT_SEQ: Field<StgRestaurantVersion> = Field {
    name: "src_seq",
    kind: Kind::Int,
    get: |r, _| Value::Int(r.seq),
};

/// One row per order version.
pub static STAGE_ORDERS: Stage<StgOrder> = Stage {
    table: "stage_orders",
    rows: |_| 1,
    fields: &[
        ORDER_ID,
        Field {
            name: "order_dt",
            kind: Kind::Time,
            get: |o, _| Value::Time(o.order_dt),
        },
        Field {
            name: "update_ts",
            kind: Kind::Time,
            get: |o, _| Value::Time(o.update_ts),
        },
        Field {
            name: "src_seq",
            kind: Kind::Int,
            get: |o, _| Value::Int(o.seq),
        },
        Field {
            name: "user_id",
            kind: Kind::Text,
            get: |o, _| Value::Text(Some(&o.user.id)),
        },
        ORDER_RESTAURANT_ID,
    ],
    keys: &[&H_ORDER, &H_USER, &H_RESTAURANT],
    hubs: &[&H_ORDER, &H_USER, &H_RESTAURANT],
    links: &[&L_ORDER_USER],
    log: Some(LogFeed {
        log: &X_ORDER,
        effective: "update_ts",
        seq: "src_seq",
    }),
    satellites: &[&S_ORDER_STATUS, &S_ORDER_COST, &S_ORDER_BASKET],
    shared_parents: false,
};

/// One row per line of an order version.
pub static STAGE_ORDER_ITEMS: Stage<StgOrder> = Stage {
    table: "stage_order_items",
    rows: |o| o.items.len(),
    fields: &[
        ORDER_ID,
        ORDER_RESTAURANT_ID,
        Field {
            name: "product_id",
            kind: Kind::Text,
            get: |o, i| Value::Text(Some(&o.items[i].id)),
        },
    ],
    keys: &[&H_ORDER, &H_RESTAURANT, &H_PRODUCT],
    hubs: &[&H_PRODUCT],
    links: &[&L_ORDER_PRODUCT, &L_PRODUCT_RESTAURANT],
    log: None,
    satellites: &[],
    shared_parents: false,
};

/// One row per user version.
pub static STAGE_USERS: Stage<StgUserVersion> = Stage {
    table: "stage_users",
    rows: |_| 1,
    fields: &[
        Field {
            name: "user_id",
            kind: Kind::Text,
            get: |u, _| Value::Text(Some(&u.id)),
        },
        Field {
            name: "update_ts",
            kind: Kind::Time,
            get: |u, _| Value::Time(u.update_ts),
        },
        Field {
            name: "src_seq",
            kind: Kind::Int,
            get: |u, _| Value::Int(u.seq),
        },
    ],
    keys: &[&H_USER],
    hubs: &[&H_USER],
    links: &[],
    log: Some(LogFeed {
        log: &X_USER,
        effective: "update_ts",
        seq: "src_seq",
    }),
    satellites: &[&S_USER_NAMES],
    shared_parents: false,
};

/// One row per restaurant version.
pub static STAGE_RESTAURANTS: Stage<StgRestaurantVersion> = Stage {
    table: "stage_restaurants",
    rows: |_| 1,
    fields: &[RESTAURANT_ID, RESTAURANT_UPDATE_TS, RESTAURANT_SEQ],
    keys: &[&H_RESTAURANT],
    hubs: &[&H_RESTAURANT],
    links: &[],
    log: Some(LogFeed {
        log: &X_RESTAURANT,
        effective: "update_ts",
        seq: "src_seq",
    }),
    satellites: &[&S_RESTAURANT_NAMES],
    shared_parents: false,
};

/// One row per dish of a restaurant version's menu.
pub static STAGE_MENU: Stage<StgRestaurantVersion> = Stage {
    table: "stage_menu",
    rows: |r| r.menu.len(),
    fields: &[
        RESTAURANT_ID,
        Field {
            name: "product_id",
            kind: Kind::Text,
            get: |r, i| Value::Text(Some(r.menu[i].id())),
        },
        Field {
            name: "category_name",
            kind: Kind::Text,
            get: |r, i| Value::Text(r.menu[i].category.as_deref()),
        },
        RESTAURANT_UPDATE_TS,
        RESTAURANT_SEQ,
    ],
    keys: &[&H_RESTAURANT, &H_PRODUCT, &H_CATEGORY],
    hubs: &[&H_PRODUCT, &H_CATEGORY],
    links: &[&L_PRODUCT_RESTAURANT, &L_PRODUCT_CATEGORY],
    log: Some(LogFeed {
        log: &X_PRODUCT,
        effective: "update_ts",
        seq: "src_seq",
    }),
    satellites: &[&S_PRODUCT_NAMES, &ES_PRODUCT_CATEGORY],
    shared_parents: true,
};

// ----- the stage batch ----------------------------------------------------------------------

/// A stage's columns in order: its fields, the hub keys, the link keys, then each satellite's
/// attributes (`<satellite>_<attribute>`) and hashdiff.
pub fn stage_columns<T>(stage: &Stage<T>) -> Vec<(String, Kind)> {
    let mut columns: Vec<(String, Kind)> = stage
        .fields
        .iter()
        .map(|f| (f.name.to_owned(), f.kind))
        .collect();
    columns.extend(stage.keys.iter().map(|h| (h.key.to_owned(), Kind::Key)));
    columns.extend(stage.links.iter().map(|l| (l.key.to_owned(), Kind::Key)));
    for sat in stage.satellites {
        columns.extend(
            sat.attributes
                .iter()
                .map(|a| (sat.stage_column(a.name), a.kind)),
        );
        columns.push((sat.hashdiff_column(), Kind::Key));
    }
    columns.extend((stage.satellites.iter()).map(|sat| (sat.change_column(), Kind::Flag)));
    columns
}

enum Builder {
    Key(FixedSizeBinaryBuilder),
    Text(StringBuilder),
    Int(Int64Builder),
    Time(TimestampMicrosecondBuilder),
}

impl Builder {
    fn new(kind: Kind) -> Builder {
        match kind {
            Kind::Key => Builder::Key(FixedSizeBinaryBuilder::new(16)),
            Kind::Text | Kind::Json => Builder::Text(StringBuilder::new()),
            Kind::Int => Builder::Int(Int64Builder::new()),
            Kind::Time => Builder::Time(TimestampMicrosecondBuilder::new()),
            Kind::Flag => unreachable!("a flag is computed over the batch, not read"),
        }
    }

    fn push(&mut self, value: &Value) -> Result<()> {
        match (self, value) {
            (Builder::Key(b), Value::Key(Some(k))) => b.append_value(k.as_bytes())?,
            (Builder::Key(b), Value::Key(None)) => b.append_null(),
            (Builder::Text(b), Value::Text(t)) => b.append_option(*t),
            (Builder::Text(b), Value::Json(j)) => b.append_value(j),
            (Builder::Int(b), Value::Int(n)) => b.append_value(*n),
            (Builder::Time(b), Value::Time(t)) => b.append_value(t.and_utc().timestamp_micros()),
            (_, value) => bail!("a stage value of the wrong kind: {value:?}"),
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Key(b) => Arc::new(b.finish()),
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Int(b) => Arc::new(b.finish()),
            Builder::Time(b) => Arc::new(b.finish()),
        }
    }
}

/// The stage's Arrow batch for `records` (an empty batch of the stage's schema when they stage no
/// rows): fields as read, hub keys over the business keys, link keys over the hub keys,
/// hashdiffs over each satellite's attributes, then each satellite's change points.
pub fn stage_batch<T>(stage: &Stage<T>, records: &[T]) -> Result<RecordBatch> {
    let columns = stage_columns(stage);
    let read = columns.len() - stage.satellites.len();
    let mut builders: Vec<Builder> = columns[..read]
        .iter()
        .map(|(_, k)| Builder::new(*k))
        .collect();
    let field_of = |name: &str| {
        stage
            .fields
            .iter()
            .position(|f| f.name == name)
            .unwrap_or_else(|| panic!("stage {} has no field {name}", stage.table))
    };
    let key_fields: Vec<usize> = stage
        .keys
        .iter()
        .map(|h| field_of(h.business_key))
        .collect();
    let link_hubs: Vec<Vec<usize>> = stage
        .links
        .iter()
        .map(|l| {
            l.hubs
                .iter()
                .map(|h| {
                    stage
                        .keys
                        .iter()
                        .position(|k| std::ptr::eq(*k, *h))
                        .unwrap_or_else(|| panic!("stage {} has no key {}", stage.table, h.key))
                })
                .collect()
        })
        .collect();
    let mut values: Vec<Value> = Vec::with_capacity(columns.len());
    let mut keys: Vec<Option<Uuid>> = Vec::with_capacity(stage.keys.len());
    for record in records {
        for row in 0..(stage.rows)(record) {
            values.clear();
            keys.clear();
            values.extend(stage.fields.iter().map(|f| (f.get)(record, row)));
            keys.extend(
                key_fields
                    .iter()
                    .map(|&i| values[i].text().map(|t| hub_key(&t))),
            );
            let links: Vec<Option<Uuid>> = link_hubs
                .iter()
                .map(|hubs| {
                    hubs.iter()
                        .map(|&i| keys[i])
                        .collect::<Option<Vec<Uuid>>>()
                        .map(|k| link_key(&k))
                })
                .collect();
            values.extend(keys.iter().map(|k| Value::Key(*k)));
            values.extend(links.into_iter().map(Value::Key));
            for sat in stage.satellites {
                let attributes: Vec<Value> = sat
                    .attributes
                    .iter()
                    .map(|a| (a.get)(record, row))
                    .collect();
                let texts: Vec<Option<Cow<str>>> = attributes.iter().map(Value::text).collect();
                let inputs: Vec<Option<&str>> = texts.iter().map(Option::as_deref).collect();
                let diff = hashdiff(&inputs);
                values.extend(attributes);
                values.push(Value::Key(Some(diff)));
            }
            for (builder, value) in builders.iter_mut().zip(&values) {
                builder.push(value)?;
            }
        }
    }
    let mut arrays: Vec<(String, ArrayRef)> = columns
        .into_iter()
        .zip(builders.iter_mut())
        .map(|((name, _), b)| (name, b.finish()))
        .collect();
    if let Some(feed) = &stage.log {
        let column = |name: &str| {
            let (_, array) = (arrays.iter())
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("stage {} has no column {name}", stage.table));
            Arc::clone(array)
        };
        let (parents, effective, seq) = (
            column(feed.log.parent.key),
            column(feed.effective),
            column(feed.seq),
        );
        let versions = Versions {
            parents: parents.as_any().downcast_ref().expect("a key column"),
            effective: effective.as_any().downcast_ref().expect("a time column"),
            seq: seq.as_any().downcast_ref().expect("an int column"),
        };
        let changes: Vec<(String, ArrayRef)> = (stage.satellites.iter())
            .map(|sat| {
                let hashdiffs = column(&sat.hashdiff_column());
                let hashdiffs = hashdiffs.as_any().downcast_ref().expect("a key column");
                let change: ArrayRef = Arc::new(change_points(&versions, hashdiffs));
                (sat.change_column(), change)
            })
            .collect();
        arrays.extend(changes);
    }
    Ok(RecordBatch::try_from_iter(arrays)?)
}

/// The columns of a stage batch that place each row among its parent's versions.
struct Versions<'a> {
    parents: &'a FixedSizeBinaryArray,
    effective: &'a TimestampMicrosecondArray,
    seq: &'a Int64Array,
}

/// Which rows of a stage batch are a satellite's change points among the batch's versions of
/// their parent: at each timestamp of a parent the row at the latest position (the version log's
/// tie rule; of rows at one position, the smallest hashdiff, as [`satellite_merge`] picks), and
/// of those each whose hashdiff differs from the one before it. For a parent the batch adds to
/// its hub they are exactly the satellite's rows; the merge reads them for no other parent.
fn change_points(versions: &Versions, hashdiffs: &FixedSizeBinaryArray) -> BooleanArray {
    let Versions {
        parents,
        effective,
        seq,
    } = versions;
    let mut rows: Vec<usize> = (0..parents.len())
        .filter(|&i| parents.is_valid(i))
        .collect();
    rows.sort_unstable_by(|&a, &b| {
        (parents.value(a).cmp(parents.value(b)))
            .then(effective.value(a).cmp(&effective.value(b)))
            .then(seq.value(b).cmp(&seq.value(a)))
            .then(hashdiffs.value(a).cmp(hashdiffs.value(b)))
    });
    let mut change = vec![false; parents.len()];
    // The parent, timestamp and hashdiff of the version taken last.
    let mut taken: Option<(&[u8], i64, &[u8])> = None;
    for i in rows {
        let (parent, at, hashdiff) = (parents.value(i), effective.value(i), hashdiffs.value(i));
        change[i] = match taken {
            Some((p, t, _)) if p == parent && t == at => continue,
            Some((p, _, before)) => p != parent || before != hashdiff,
            None => true,
        };
        taken = Some((parent, at, hashdiff));
    }
    BooleanArray::from(change)
}

// ----- the merges ---------------------------------------------------------------------------

/// The temp table of the keys a batch added to a hub: a parent whose hub row the batch added had
/// no versions, satellite rows or (for a link that names it in `new_with`) link rows before it, so
/// what the batch writes for it needs no look at what is stored.
fn added(hub: &Hub) -> String {
    format!("added_{}", hub.table)
}

/// Make the batch's temp table of the keys it added to `hub`, if no merge made it yet.
fn create_added(hub: &Hub) -> Statement {
    Statement::Plain(format!(
        "CREATE TEMP TABLE IF NOT EXISTS {added} ({key} uuid) ON COMMIT DROP",
        added = added(hub),
        key = hub.key
    ))
}

/// The `WHERE` term true for a row (`alias`) of a parent the batch added to `hub`.
fn added_term(hub: &Hub, alias: &str) -> String {
    format!(
        "EXISTS (SELECT FROM {added} n WHERE n.{key} = {alias}.{key})",
        added = added(hub),
        key = hub.key
    )
}

/// `INSERT … SELECT … ON CONFLICT DO NOTHING` of a hub's new keys from a stage, which also keeps
/// the keys it added in the batch's temp table of them (made by the first statement). `$1`
/// load_src, `$2` batch id.
///
/// A key is added by one batch only: another batch adding it at once waits on the primary key
/// until this one commits (then finds it there) or rolls back (then adds it itself).
pub fn hub_merge(hub: &Hub, stage: &str) -> Vec<Statement> {
    let columns = [&[hub.key, hub.business_key][..], hub.extras]
        .concat()
        .join(", ");
    let order = [&[hub.key][..], hub.extras].concat().join(", ");
    vec![
        create_added(hub),
        Statement::Loading(format!(
            "WITH added AS (
                 INSERT INTO dds.{table} ({columns}, load_dt, load_src, batch_id)
                 SELECT DISTINCT ON ({key}) {columns}, now(), $1, $2 FROM {stage}
                 WHERE {key} IS NOT NULL ORDER BY {order}
                 ON CONFLICT DO NOTHING
                 RETURNING {key}
             )
             INSERT INTO {added} SELECT {key} FROM added",
            table = hub.table,
            key = hub.key,
            added = added(hub),
        )),
    ]
}

/// `INSERT … SELECT … ON CONFLICT DO NOTHING` of a link's new pairs from a stage; for a link with
/// `new_with`, the pairs of the keys the batch added to that hub are inserted first without the
/// check (the conflict check costs about a third of an insert into a hash-key B-tree). `$1`
/// load_src, `$2` batch id.
pub fn link_merge(link: &Link, stage: &str) -> Vec<Statement> {
    let hub_keys: Vec<&str> = link.hubs.iter().map(|h| h.key).collect();
    let columns = [&[link.key][..], &hub_keys].concat().join(", ");
    let insert = |filter: &str, conflict: &str| {
        Statement::Loading(format!(
            "INSERT INTO dds.{table} ({columns}, load_dt, load_src, batch_id)
             SELECT DISTINCT ON ({key}) {columns}, now(), $1, $2 FROM {stage} s
             WHERE {key} IS NOT NULL{filter} ORDER BY {key}{conflict}",
            table = link.table,
            key = link.key,
        ))
    };
    match link.new_with {
        None => vec![insert("", "\n             ON CONFLICT DO NOTHING")],
        Some(hub) => {
            let new = added_term(hub, "s");
            vec![
                create_added(hub),
                insert(&format!(" AND {new}"), ""),
                insert(
                    &format!(" AND NOT {new}"),
                    "\n             ON CONFLICT DO NOTHING",
                ),
            ]
        }
    }
}

/// The temp table holding the versions a batch added to (or won a tie in) a version log for the
/// parents it did not add to the hub: the satellites' general path reads it, for those only.
fn accepted(log: &VersionLog) -> String {
    format!("accepted_{}", log.table)
}

/// The temp table of the parents that took versions in a batch and had versions before it: only
/// theirs need the stored versions and rows.
fn known(log: &VersionLog) -> String {
    format!("known_{}", log.table)
}

/// Log the stage's versions: new ones are added (without the conflict check for a parent the batch
/// added to the hub); a version at a timestamp already logged replaces it only from a later
/// position (the tie rule). For the parents the batch did not add to the hub, the versions taken
/// are kept in a temp table for the satellites' merges, and those parents in another (`known_…`,
/// analysed so the planner sees how few they are after a backfill's first batches): only they
/// take the satellites' general path. `$1` load_src, `$2` batch id.
pub fn log_merge(feed: &LogFeed, stage: &str) -> Vec<Statement> {
    let parent = feed.log.parent.key;
    let accepted = accepted(feed.log);
    let known = known(feed.log);
    let new = added_term(feed.log.parent, "s");
    // The stage's versions of the parents `filter` picks: per timestamp the latest position.
    let staged = |filter: &str| {
        format!(
            "SELECT DISTINCT ON ({parent}, {effective}) {parent}, {effective} AS effective_dt,
                    {seq} AS src_seq
             FROM {stage} s WHERE {parent} IS NOT NULL AND {filter}
             ORDER BY {parent}, {effective}, {seq} DESC",
            effective = feed.effective,
            seq = feed.seq,
        )
    };
    vec![
        Statement::Plain(format!(
            "CREATE TEMP TABLE {accepted} ({parent} uuid, effective_dt timestamp, src_seq int8)
             ON COMMIT DROP"
        )),
        Statement::Loading(format!(
            "INSERT INTO dds.{log} ({parent}, effective_dt, src_seq, load_dt, load_src, batch_id)
             SELECT {parent}, effective_dt, src_seq, now(), $1, $2 FROM ({staged}) staged",
            log = feed.log.table,
            staged = staged(&new),
        )),
        Statement::Loading(format!(
            "WITH taken AS (
                 INSERT INTO dds.{log} AS x ({parent}, effective_dt, src_seq, load_dt, load_src, batch_id)
                 SELECT {parent}, effective_dt, src_seq, now(), $1, $2 FROM ({staged}) staged
                 ON CONFLICT ({parent}, effective_dt) DO UPDATE
                 SET src_seq = EXCLUDED.src_seq, load_dt = EXCLUDED.load_dt,
                     load_src = EXCLUDED.load_src, batch_id = EXCLUDED.batch_id
                 WHERE EXCLUDED.src_seq > x.src_seq
                 RETURNING {parent}, effective_dt, src_seq
             )
             INSERT INTO {accepted} SELECT * FROM taken",
            log = feed.log.table,
            staged = staged(&format!("NOT {new}")),
        )),
        Statement::Plain(format!(
            "CREATE TEMP TABLE {known} ON COMMIT DROP AS SELECT DISTINCT {parent} FROM {accepted}"
        )),
        Statement::Plain(format!("ANALYZE {known}")),
    ]
}

/// Lock the parents a stage brings versions of, in key order (so two workers cannot deadlock):
/// held to the commit, they keep a parallel worker off the same parents' satellites.
pub fn lock_parents(feed: &LogFeed, stage: &str) -> String {
    let parent = feed.log.parent.key;
    format!(
        "SELECT count(pg_advisory_xact_lock(hashtextextended('dwh:dds:' || {parent}::text, 0)))
         FROM (SELECT DISTINCT {parent} FROM {stage} WHERE {parent} IS NOT NULL
               ORDER BY {parent}) p"
    )
}

/// One statement of a merge, with the parameters it takes.
pub enum Statement {
    /// No parameters.
    Plain(String),
    /// `$1` load_src, `$2` batch id.
    Loading(String),
    /// `$1` batch id.
    Batch(String),
}

/// Bring a satellite in line with its version log for the parents whose versions this batch took:
/// every version of those parents gets its value (the staged one for a version taken now, else
/// the value of the satellite row in effect at it), and the satellite keeps exactly the versions
/// whose hashdiff differs from the version before. So a late version that falls between two
/// others adds its row and, where needed, the row of the version after it (which the log knows),
/// and one that repeats its neighbour removes the row that became redundant: the result is the
/// same whichever batches brought the versions, in whichever order.
pub fn satellite_merge<T>(sat: &Satellite<T>, stage: &Stage<T>) -> Vec<Statement> {
    let feed = stage
        .log
        .as_ref()
        .expect("a stage feeding a satellite feeds its version log");
    let parent = sat.parent();
    let accepted = accepted(sat.log);
    let want = format!("want_{}", sat.table);
    let attributes: Vec<&str> = sat.attributes.iter().map(|a| a.name).collect();
    let staged_attributes = sat
        .attributes
        .iter()
        .map(|a| {
            let column = sat.stage_column(a.name);
            format!("{column}::{} AS {}", a.kind.sql(), a.name)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let chosen = attributes
        .iter()
        .map(|a| format!("CASE WHEN st.{parent} IS NULL THEN old.{a} ELSE st.{a} END AS {a}"))
        .collect::<Vec<_>>()
        .join(", ");
    let known = known(sat.log);
    let mut statements = vec![
        Statement::Plain(format!(
            "CREATE TEMP TABLE {want} ON COMMIT DROP AS
             WITH staged AS (
                 SELECT DISTINCT ON ({parent}, {effective}, {seq}) {parent},
                        {effective} AS effective_dt, {seq} AS src_seq,
                        {hashdiff} AS hashdiff, {staged_attributes}
                 FROM {stage_table} WHERE {parent} IN (SELECT {parent} FROM {known})
                 ORDER BY {parent}, {effective}, {seq}, {hashdiff}
             ), valued AS (
                 SELECT x.{parent}, x.effective_dt,
                        CASE WHEN st.{parent} IS NULL THEN old.hashdiff ELSE st.hashdiff END
                            AS hashdiff,
                        {chosen}
                 FROM dds.{log} x
                 JOIN {known} p ON p.{parent} = x.{parent}
                 LEFT JOIN {accepted} a
                        ON a.{parent} = x.{parent} AND a.effective_dt = x.effective_dt
                 LEFT JOIN staged st
                        ON st.{parent} = a.{parent} AND st.effective_dt = a.effective_dt
                       AND st.src_seq = a.src_seq
                 LEFT JOIN LATERAL (
                     SELECT c.hashdiff, {old_attributes} FROM dds.{table} c
                     WHERE c.{parent} = x.{parent} AND c.effective_dt <= x.effective_dt
                     ORDER BY c.effective_dt DESC LIMIT 1
                 ) old ON a.{parent} IS NULL
             )
             SELECT {parent}, effective_dt, hashdiff, {attribute_list}
             FROM (SELECT v.*, lag(v.hashdiff) OVER (PARTITION BY v.{parent}
                                                     ORDER BY v.effective_dt) AS before
                   FROM valued v) w
             WHERE hashdiff IS NOT NULL AND hashdiff IS DISTINCT FROM before",
            effective = feed.effective,
            seq = feed.seq,
            hashdiff = sat.hashdiff_column(),
            stage_table = stage.table,
            log = sat.log.table,
            table = sat.table,
            old_attributes = attributes
                .iter()
                .map(|a| format!("c.{a}"))
                .collect::<Vec<_>>()
                .join(", "),
            attribute_list = attributes.join(", "),
        )),
        Statement::Plain(format!("ANALYZE {want}")),
    ];
    let remove = format!(
        "DELETE FROM dds.{table} c
         WHERE c.{parent} IN (SELECT {parent} FROM {known})
           AND NOT EXISTS (SELECT 1 FROM {want} w
                           WHERE w.{parent} = c.{parent} AND w.effective_dt = c.effective_dt
                             AND w.hashdiff = c.hashdiff)
         RETURNING c.{parent}",
        table = sat.table,
    );
    let insert = |select: String| {
        format!(
            "INSERT INTO dds.{table} ({parent}, effective_dt, hashdiff, {attribute_list}, load_dt, load_src, batch_id)
             {select}
             RETURNING {parent}",
            table = sat.table,
            attribute_list = attributes.join(", "),
        )
    };
    let add = insert(format!(
        "SELECT {parent}, effective_dt, hashdiff, {attribute_list}, now(), $1, $2 FROM {want}
         ON CONFLICT DO NOTHING",
        attribute_list = attributes.join(", "),
    ));
    // A parent the batch added has no versions but those it took: its rows are the change points
    // among them, marked in the stage, inserted without the conflict check.
    let add_new = insert(format!(
        "SELECT {parent}, {effective}, {hashdiff}, {staged_attributes}, now(), $1, $2
         FROM {stage_table} s WHERE {change} AND {new}",
        effective = feed.effective,
        hashdiff = sat.hashdiff_column(),
        stage_table = stage.table,
        change = sat.change_column(),
        new = added_term(sat.log.parent, "s"),
    ));
    if sat.reaches_users {
        // The dishes whose rows changed: after the commit, their users are queued for CDM.
        statements.push(Statement::Batch(format!(
            "WITH changed AS ({remove})
             INSERT INTO dds.pending_fanout (batch_id, {parent})
             SELECT DISTINCT $1::uuid, {parent} FROM changed ON CONFLICT DO NOTHING"
        )));
        for add in [add, add_new] {
            statements.push(Statement::Loading(format!(
                "WITH changed AS ({add})
                 INSERT INTO dds.pending_fanout (batch_id, {parent})
                 SELECT DISTINCT $2::uuid, {parent} FROM changed ON CONFLICT DO NOTHING"
            )));
        }
    } else {
        statements.push(Statement::Plain(remove));
        statements.push(Statement::Loading(add));
        statements.push(Statement::Loading(add_new));
    }
    statements
}

#[cfg(test)]
mod tests;
