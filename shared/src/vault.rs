//! Data Vault keys, and the one description of the DDS tables that every merge is generated from.
//!
//! Keys are computed in Rust over the batch, never row by row in SQL: a hub key is uuid v5 over
//! the raw business key, a link key is uuid v5 over its hub keys, a hashdiff is uuid v5 over a
//! satellite's attributes. The namespace is the one the source project's ecosystem uses, so keys
//! match existing dashboards.

use uuid::{uuid, Uuid};

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

/// Hashdiff of a satellite's attributes; `None` when every attribute is unknown (no row then).
///
/// Attributes are separated by a unit separator and a missing value is distinct from an empty one.
pub fn hashdiff(attributes: &[Option<&str>]) -> Option<Uuid> {
    if attributes.iter().all(Option::is_none) {
        return None;
    }
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
    Some(Uuid::new_v5(&NAMESPACE, text.as_bytes()))
}

/// The staging table a hub, link or satellite is fed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// One row per order (`stage_orders`).
    Orders,
    /// One row per order line (`stage_items`).
    Items,
}

impl Stage {
    pub fn table(self) -> &'static str {
        match self {
            Stage::Orders => "stage_orders",
            Stage::Items => "stage_items",
        }
    }
}

/// A hub: a key and its business key columns (same names in stage and target).
pub struct Hub {
    pub table: &'static str,
    pub key: &'static str,
    pub business_keys: &'static [&'static str],
    pub stage: Stage,
}

/// A link: a key over the keys of the hubs it joins (same names in stage and target).
pub struct Link {
    pub table: &'static str,
    pub key: &'static str,
    pub hub_keys: &'static [&'static str],
    pub stage: Stage,
}

/// A satellite: attributes of a hub, versioned by the source's own timestamp.
pub struct Satellite {
    pub table: &'static str,
    pub parent_key: &'static str,
    /// `(target column, stage column)`.
    pub attributes: &'static [(&'static str, &'static str)],
    /// The stage column that dates this version (the source's `update_ts`).
    pub effective: &'static str,
    pub stage: Stage,
}

impl Satellite {
    /// The stage column holding this satellite's hashdiff.
    pub fn hashdiff_column(&self) -> String {
        format!("{}_hashdiff", self.table)
    }
}

pub const HUBS: &[Hub] = &[
    Hub {
        table: "h_user",
        key: "h_user_pk",
        business_keys: &["user_id"],
        stage: Stage::Orders,
    },
    Hub {
        table: "h_restaurant",
        key: "h_restaurant_pk",
        business_keys: &["restaurant_id"],
        stage: Stage::Orders,
    },
    Hub {
        table: "h_order",
        key: "h_order_pk",
        business_keys: &["order_id", "order_dt"],
        stage: Stage::Orders,
    },
    Hub {
        table: "h_product",
        key: "h_product_pk",
        business_keys: &["product_id"],
        stage: Stage::Items,
    },
    Hub {
        table: "h_category",
        key: "h_category_pk",
        business_keys: &["category_name"],
        stage: Stage::Items,
    },
];

pub const LINKS: &[Link] = &[
    Link {
        table: "l_order_user",
        key: "hk_order_user_pk",
        hub_keys: &["h_order_pk", "h_user_pk"],
        stage: Stage::Orders,
    },
    Link {
        table: "l_order_product",
        key: "hk_order_product_pk",
        hub_keys: &["h_order_pk", "h_product_pk"],
        stage: Stage::Items,
    },
    Link {
        table: "l_product_restaurant",
        key: "hk_product_restaurant_pk",
        hub_keys: &["h_product_pk", "h_restaurant_pk"],
        stage: Stage::Items,
    },
    Link {
        table: "l_product_category",
        key: "hk_product_category_pk",
        hub_keys: &["h_product_pk", "h_category_pk"],
        stage: Stage::Items,
    },
];

pub const SATELLITES: &[Satellite] = &[
    Satellite {
        table: "s_user_names",
        parent_key: "h_user_pk",
        attributes: &[("username", "username"), ("userlogin", "userlogin")],
        effective: "user_update_ts",
        stage: Stage::Orders,
    },
    Satellite {
        table: "s_restaurant_names",
        parent_key: "h_restaurant_pk",
        attributes: &[("name", "restaurant_name")],
        effective: "restaurant_update_ts",
        stage: Stage::Orders,
    },
    Satellite {
        table: "s_order_cost",
        parent_key: "h_order_pk",
        attributes: &[("cost", "cost"), ("payment", "payment")],
        effective: "update_ts",
        stage: Stage::Orders,
    },
    Satellite {
        table: "s_order_status",
        parent_key: "h_order_pk",
        attributes: &[("status", "status")],
        effective: "update_ts",
        stage: Stage::Orders,
    },
    Satellite {
        table: "s_product_names",
        parent_key: "h_product_pk",
        attributes: &[("name", "product_name")],
        effective: "update_ts",
        stage: Stage::Items,
    },
];

/// `INSERT … SELECT … ON CONFLICT DO NOTHING` of a hub's new keys. `$1` load_src, `$2` batch id.
pub fn hub_merge(hub: &Hub) -> String {
    let columns = [&[hub.key][..], hub.business_keys].concat().join(", ");
    format!(
        "INSERT INTO dds.{table} ({columns}, load_dt, load_src, batch_id)
         SELECT DISTINCT ON ({key}) {columns}, now(), $1, $2 FROM {stage}
         WHERE {key} IS NOT NULL ORDER BY {key}
         ON CONFLICT DO NOTHING",
        table = hub.table,
        key = hub.key,
        stage = hub.stage.table(),
    )
}

/// `INSERT … SELECT … ON CONFLICT DO NOTHING` of a link's new pairs. `$1` load_src, `$2` batch id.
pub fn link_merge(link: &Link) -> String {
    let columns = [&[link.key][..], link.hub_keys].concat().join(", ");
    format!(
        "INSERT INTO dds.{table} ({columns}, load_dt, load_src, batch_id)
         SELECT DISTINCT ON ({key}) {columns}, now(), $1, $2 FROM {stage}
         WHERE {key} IS NOT NULL ORDER BY {key}
         ON CONFLICT DO NOTHING",
        table = link.table,
        key = link.key,
        stage = link.stage.table(),
    )
}

/// Insert a satellite row only where the batch's newest version is newer than the current one and
/// its hashdiff differs. `$1` load_src, `$2` batch id.
pub fn satellite_merge(sat: &Satellite) -> String {
    let hashdiff = sat.hashdiff_column();
    let targets: Vec<&str> = sat.attributes.iter().map(|(target, _)| *target).collect();
    let sources: Vec<String> = sat
        .attributes
        .iter()
        .map(|(target, source)| format!("{source} AS {target}"))
        .collect();
    format!(
        "INSERT INTO dds.{table} ({parent}, effective_dt, hashdiff, {targets}, load_dt, load_src, batch_id)
         SELECT s.{parent}, s.effective_dt, s.hashdiff, {s_targets}, now(), $1, $2
         FROM (SELECT DISTINCT ON ({parent}) {parent}, {effective} AS effective_dt,
                      {hashdiff} AS hashdiff, {sources}
               FROM {stage} WHERE {parent} IS NOT NULL AND {hashdiff} IS NOT NULL
               ORDER BY {parent}, {effective} DESC) s
         LEFT JOIN LATERAL (SELECT c.hashdiff, c.effective_dt FROM dds.{table} c
                            WHERE c.{parent} = s.{parent}
                            ORDER BY c.effective_dt DESC LIMIT 1) cur ON true
         WHERE cur.hashdiff IS NULL
            OR (s.effective_dt > cur.effective_dt AND s.hashdiff <> cur.hashdiff)
         ON CONFLICT DO NOTHING",
        table = sat.table,
        parent = sat.parent_key,
        effective = sat.effective,
        targets = targets.join(", "),
        s_targets = targets.iter().map(|t| format!("s.{t}")).collect::<Vec<_>>().join(", "),
        sources = sources.join(", "),
        stage = sat.stage.table(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_the_source_projects_dashboards() {
        assert_eq!(
            hub_key("626a81ce9a8cd1920641e272").to_string(),
            "f58d869c-6e95-59bd-ae43-fc5e42b6f9cd"
        );
        assert_eq!(
            hub_key("Супы").to_string(),
            "5f2bd497-da00-5ac4-b4a7-3f00c6551edc"
        );
    }

    #[test]
    fn hashdiff_tells_missing_from_empty() {
        assert_ne!(hashdiff(&[Some(""), None]), hashdiff(&[None, Some("")]));
        assert_ne!(
            hashdiff(&[Some("a"), Some("b")]),
            hashdiff(&[Some("ab"), Some("")])
        );
        assert_eq!(hashdiff(&[None, None]), None);
    }

    #[test]
    fn link_keys_depend_on_order() {
        let (a, b) = (hub_key("a"), hub_key("b"));
        assert_ne!(link_key(&[a, b]), link_key(&[b, a]));
    }
}
