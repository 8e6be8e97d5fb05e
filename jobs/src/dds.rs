//! The DDS job: enriched orders from the STG topic into the Data Vault, set-based.
//!
//! drain → parse → keys and hashdiffs computed in Rust into two Arrow batches (one row per order,
//! one per order line) → `COPY` into temp tables → one generated `INSERT … SELECT` per hub, link
//! and satellite (from `vault::HUBS`, `LINKS`, `SATELLITES`) → queue the affected users for CDM
//! → record offsets → commit → publish.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{
    ArrayRef, FixedSizeBinaryBuilder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use chrono::NaiveDateTime;
use dwh_shared::batch::{self, Job, Loaded, Summary};
use dwh_shared::config::{Bounds, DdsTopic, Kafka, Postgres, Share, StgTopic};
use dwh_shared::kafka::Drained;
use dwh_shared::metrics::Push;
use dwh_shared::model::{parse_ts, StgOrder};
use dwh_shared::pg;
use dwh_shared::vault::{self, hashdiff, hub_key, link_key};
use tokio_postgres::Transaction;
use tracing::Instrument;
use uuid::Uuid;

/// `dwh dds`: build the Data Vault from what waits in the STG topic.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub pg: Postgres,
    #[command(flatten)]
    pub kafka: Kafka,
    #[command(flatten)]
    pub stg: StgTopic,
    #[command(flatten)]
    pub dds: DdsTopic,
    #[command(flatten)]
    pub bounds: Bounds,
    #[command(flatten)]
    pub share: Share,
    #[command(flatten)]
    pub push: Push,
}

pub async fn run(args: &Args) -> Result<Summary> {
    let mut job = Dds {
        source: format!("kafka:{}", args.stg.name),
        target: args.dds.name.clone(),
    };
    batch::run(
        &mut job,
        &args.pg,
        &args.kafka,
        &args.stg.name,
        &args.bounds,
        &args.share,
    )
    .await
}

struct Dds {
    /// `load_src` of every row this job writes.
    source: String,
    /// The DDS topic affected users are published to.
    target: String,
}

impl Job for Dds {
    const NAME: &'static str = "dds";

    async fn load(
        &mut self,
        tx: &Transaction<'_>,
        drained: &Drained,
        batch_id: Uuid,
    ) -> Result<Loaded> {
        let (orders, dead) = batch::parse_all(drained, Order::parse);
        let orders: Vec<Order> = orders.into_iter().map(|(_, order)| order).collect();
        let (order_rows, item_rows) = stage_batches(&orders)?;
        pg::stage(tx, vault::Stage::Orders.table(), &order_rows).await?;
        pg::stage(tx, vault::Stage::Items.table(), &item_rows).await?;
        batch::fault_point(Self::NAME, "after-copy");

        let merges = (vault::HUBS.iter().map(|h| (h.table, vault::hub_merge(h))))
            .chain(vault::LINKS.iter().map(|l| (l.table, vault::link_merge(l))))
            .chain(
                vault::SATELLITES
                    .iter()
                    .map(|s| (s.table, vault::satellite_merge(s))),
            );
        let mut rows = 0;
        for (table, sql) in merges {
            rows += tx
                .execute(&sql, &[&self.source, &batch_id])
                .instrument(tracing::info_span!("merge", table))
                .await
                .with_context(|| format!("merging dds.{table}"))?;
        }
        tx.execute(
            include_str!("sql/dds_affected_users.sql"),
            &[&batch_id, &self.target],
        )
        .instrument(tracing::info_span!("merge", table = "dwh.outbox"))
        .await
        .context("queueing affected users")?;
        Ok(Loaded { rows, dead })
    }
}

/// An STG message with its timestamps checked.
struct Order {
    msg: StgOrder,
    order_dt: NaiveDateTime,
    update_ts: NaiveDateTime,
    user_update_ts: Option<NaiveDateTime>,
    restaurant_update_ts: Option<NaiveDateTime>,
}

impl Order {
    fn parse(bytes: &[u8]) -> Result<Self, String> {
        let msg: StgOrder =
            serde_json::from_slice(bytes).map_err(|e| format!("not an STG order: {e}"))?;
        let optional = |ts: &Option<String>| ts.as_deref().map(parse_ts).transpose();
        Ok(Order {
            order_dt: parse_ts(&msg.order_dt)?,
            update_ts: parse_ts(&msg.update_ts)?,
            user_update_ts: optional(&msg.user.update_ts)?,
            restaurant_update_ts: optional(&msg.restaurant.update_ts)?,
            msg,
        })
    }
}

fn micros(ts: NaiveDateTime) -> i64 {
    ts.and_utc().timestamp_micros()
}

/// Typed column builders keyed by column name, so a stage batch is described by its names.
#[derive(Default)]
struct Columns {
    order: Vec<&'static str>,
    uuids: BTreeMap<&'static str, FixedSizeBinaryBuilder>,
    texts: BTreeMap<&'static str, StringBuilder>,
    ints: BTreeMap<&'static str, Int64Builder>,
    times: BTreeMap<&'static str, TimestampMicrosecondBuilder>,
}

impl Columns {
    fn uuid(&mut self, name: &'static str, value: Option<Uuid>) {
        let builder = self
            .uuids
            .entry(name)
            .or_insert_with(|| FixedSizeBinaryBuilder::new(16));
        match value {
            Some(v) => builder
                .append_value(v.as_bytes())
                .expect("a uuid is 16 bytes"),
            None => builder.append_null(),
        }
        if !self.order.contains(&name) {
            self.order.push(name);
        }
    }
    fn text(&mut self, name: &'static str, value: Option<&str>) {
        self.texts.entry(name).or_default().append_option(value);
        if !self.order.contains(&name) {
            self.order.push(name);
        }
    }
    fn int(&mut self, name: &'static str, value: i64) {
        self.ints.entry(name).or_default().append_value(value);
        if !self.order.contains(&name) {
            self.order.push(name);
        }
    }
    fn time(&mut self, name: &'static str, value: Option<NaiveDateTime>) {
        self.times
            .entry(name)
            .or_default()
            .append_option(value.map(micros));
        if !self.order.contains(&name) {
            self.order.push(name);
        }
    }
    fn finish(mut self) -> Result<RecordBatch> {
        let mut columns: Vec<(&str, ArrayRef)> = Vec::new();
        for name in self.order {
            let array: ArrayRef = if let Some(b) = self.uuids.get_mut(name) {
                Arc::new(b.finish())
            } else if let Some(b) = self.texts.get_mut(name) {
                Arc::new(b.finish())
            } else if let Some(b) = self.ints.get_mut(name) {
                Arc::new(b.finish())
            } else {
                Arc::new(
                    self.times
                        .get_mut(name)
                        .expect("every column has a builder")
                        .finish(),
                )
            };
            columns.push((name, array));
        }
        Ok(RecordBatch::try_from_iter(columns)?)
    }
}

/// The two stage batches: one row per order and one per order line, with every key computed.
fn stage_batches(orders: &[Order]) -> Result<(RecordBatch, RecordBatch)> {
    let mut o = Columns::default();
    let mut i = Columns::default();
    for order in orders {
        let m = &order.msg;
        let order_pk = hub_key(&m.order_id.to_string());
        let user_pk = hub_key(&m.user.id);
        let restaurant_pk = hub_key(&m.restaurant.id);
        let cost = m.cost.to_string();
        let payment = m.payment.to_string();
        o.uuid("h_order_pk", Some(order_pk));
        o.int("order_id", m.order_id);
        o.time("order_dt", Some(order.order_dt));
        o.time("update_ts", Some(order.update_ts));
        o.text("status", Some(&m.final_status));
        o.int("cost", m.cost);
        o.int("payment", m.payment);
        o.uuid("h_user_pk", Some(user_pk));
        o.text("user_id", Some(&m.user.id));
        o.text("username", m.user.name.as_deref());
        o.text("userlogin", m.user.login.as_deref());
        o.time(
            "user_update_ts",
            order.user_update_ts.or(Some(order.update_ts)),
        );
        o.uuid("h_restaurant_pk", Some(restaurant_pk));
        o.text("restaurant_id", Some(&m.restaurant.id));
        o.text("restaurant_name", m.restaurant.name.as_deref());
        o.time(
            "restaurant_update_ts",
            order.restaurant_update_ts.or(Some(order.update_ts)),
        );
        o.uuid("hk_order_user_pk", Some(link_key(&[order_pk, user_pk])));
        o.uuid(
            "s_user_names_hashdiff",
            hashdiff(&[m.user.name.as_deref(), m.user.login.as_deref()]),
        );
        o.uuid(
            "s_restaurant_names_hashdiff",
            hashdiff(&[m.restaurant.name.as_deref()]),
        );
        o.uuid(
            "s_order_cost_hashdiff",
            hashdiff(&[Some(&cost), Some(&payment)]),
        );
        o.uuid(
            "s_order_status_hashdiff",
            hashdiff(&[Some(&m.final_status)]),
        );
        for item in &m.items {
            let product_pk = hub_key(&item.id);
            let category_pk = item.category.as_deref().map(hub_key);
            i.uuid("h_order_pk", Some(order_pk));
            i.time("update_ts", Some(order.update_ts));
            i.uuid("h_product_pk", Some(product_pk));
            i.text("product_id", Some(&item.id));
            i.text("product_name", Some(&item.name));
            i.uuid("h_restaurant_pk", Some(restaurant_pk));
            i.uuid("h_category_pk", category_pk);
            i.text("category_name", item.category.as_deref());
            i.uuid(
                "hk_order_product_pk",
                Some(link_key(&[order_pk, product_pk])),
            );
            i.uuid(
                "hk_product_restaurant_pk",
                Some(link_key(&[product_pk, restaurant_pk])),
            );
            i.uuid(
                "hk_product_category_pk",
                category_pk.map(|c| link_key(&[product_pk, c])),
            );
            i.uuid("s_product_names_hashdiff", hashdiff(&[Some(&item.name)]));
        }
    }
    if orders.is_empty() {
        return Ok((
            empty_stage(vault::Stage::Orders),
            empty_stage(vault::Stage::Items),
        ));
    }
    let items = if i.order.is_empty() {
        empty_stage(vault::Stage::Items)
    } else {
        i.finish()?
    };
    Ok((o.finish()?, items))
}

/// A stage batch with no rows (every message of the batch was junk, or no order had items).
fn empty_stage(stage: vault::Stage) -> RecordBatch {
    let mut probe = Order::parse(PROBE.as_bytes()).expect("the probe order parses");
    probe.msg.items.clear();
    if stage == vault::Stage::Items {
        probe.msg.items.push(dwh_shared::model::StgItem {
            id: String::new(),
            name: String::new(),
            price: 0,
            quantity: 0,
            category: None,
        });
    }
    let (orders, items) = stage_batches(std::slice::from_ref(&probe)).expect("the probe stages");
    let batch = if stage == vault::Stage::Orders {
        orders
    } else {
        items
    };
    batch.slice(0, 0)
}

const PROBE: &str = r#"{"order_id":0,"order_dt":"2000-01-01 00:00:00","update_ts":"2000-01-01 00:00:00","final_status":"","cost":0,"payment":0,"user":{"id":"","name":null,"login":null,"update_ts":null},"restaurant":{"id":"","name":null,"update_ts":null},"items":[]}"#;
