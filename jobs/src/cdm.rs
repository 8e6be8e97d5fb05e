//! The CDM job: the showcases, recomputed with Polars for the users DDS reports as affected.
//!
//! drain → the affected users → read their facts from DDS (orders with their current status,
//! products, categories) into Arrow → compute both counters and the tags with Polars → replace
//! those users' rows in one transaction → record offsets → commit. Counters are recomputed, never
//! incremented, so the result does not depend on how often or in which order batches ran.
//! `dwh cdm --full` recomputes every user in chunks.

use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{
    ArrayRef, BinaryBuilder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use chrono::NaiveDateTime;
use dwh_shared::batch::{self, Hold, Job, Loaded, Run, Summary};
use dwh_shared::config::{positive, Bounds, DdsTopic, Kafka, Postgres, Share, Worker};
use dwh_shared::frames;
use dwh_shared::kafka::Drained;
use dwh_shared::metrics::Push;
use dwh_shared::model::AffectedUser;
use dwh_shared::pg;
use dwh_shared::progress::Progress;
use polars::prelude::*;
use tokio_postgres::{GenericClient, Transaction};
use tracing::{info, info_span, Instrument};
use uuid::Uuid;

/// `dwh cdm`: recompute the showcases of the users DDS reported.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Recompute every user's showcases (after a backfill, a bug fix or a change of tag rules)
    #[arg(long)]
    pub full: bool,
    /// Users recomputed at a time: per transaction by --full, per step of an incremental run
    #[arg(
        long,
        env = "DWH_CDM_CHUNK",
        value_name = "N",
        default_value_t = 5_000,
        value_parser = positive::<i64>,
        allow_negative_numbers = true
    )]
    pub chunk: i64,
    #[command(flatten)]
    pub pg: Postgres,
    #[command(flatten)]
    pub kafka: Kafka,
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
    if args.full {
        return full(args).await;
    }
    let topic = &args.dds.name;
    let mut job = Cdm {
        chunk: args.chunk as usize,
    };
    batch::run(
        &mut job,
        &args.pg,
        &args.kafka,
        topic,
        &args.bounds,
        &args.share,
    )
    .await
}

/// The CDM load step: the affected users are recomputed `chunk` at a time (in the batch's one
/// transaction), so a batch naming every user holds one chunk's facts at a time.
struct Cdm {
    chunk: usize,
}

impl Job for Cdm {
    const NAME: &'static str = "cdm";

    async fn load(&mut self, tx: &Transaction<'_>, drained: &Drained, _: Uuid) -> Result<Loaded> {
        let (affected, dead) = batch::parse_all(drained, |bytes| {
            serde_json::from_slice::<AffectedUser>(bytes)
                .map_err(|e| format!("not an affected-user message: {e}"))
        });
        let mut users: Vec<Uuid> = affected.iter().map(|(_, a)| a.user_pk).collect();
        users.sort();
        users.dedup();
        let rules = read_rules(tx).await?;
        let mut rows = 0;
        for chunk in users.chunks(self.chunk) {
            rows += recompute(tx, chunk, &rules).await?;
        }
        Ok(Loaded { rows, dead })
    }
}

/// Recompute every user, `chunk` users per transaction, so memory stays bounded.
async fn full(args: &Args) -> Result<Summary> {
    // Every partition, or nothing: no incremental run may recompute a user while --full does.
    let share = Share {
        worker: Worker::ALL,
        ..args.share.clone()
    };
    let topic = &args.dds.name;
    let Some(mut run) =
        Run::begin(Cdm::NAME, &args.pg, &args.kafka, &share, topic, Hold::All).await?
    else {
        return Ok(Summary::skipped());
    };
    let chunk = args.chunk;
    let mut summary = Summary::default();
    let mut after = Uuid::nil();
    let tx = run.client.transaction().await?;
    // Users that left the vault (a rebuilt DDS) must not keep rows.
    for table in [
        "user_product_counters",
        "user_category_counters",
        "user_tags",
    ] {
        tx.execute(
            &format!("DELETE FROM cdm.{table} c WHERE NOT EXISTS (SELECT 1 FROM dds.h_user u WHERE u.h_user_pk = c.user_id)"),
            &[],
        )
        .await?;
    }
    tx.commit().await?;
    let users: i64 = run
        .client
        .query_one("SELECT count(*) FROM dds.h_user", &[])
        .await?
        .get(0);
    let rules = read_rules(&run.client).await?;
    let progress = Progress::new("users", users as u64);
    loop {
        let tx = run.client.transaction().await?;
        let users: Vec<Uuid> = tx
            .query(
                "SELECT h_user_pk FROM dds.h_user WHERE h_user_pk > $1 ORDER BY h_user_pk LIMIT $2",
                &[&after, &chunk],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let Some(last) = users.last().copied() else {
            break;
        };
        summary.loaded += recompute(&tx, &users, &rules).await?;
        tx.commit().await?;
        batch::fault_point(Cdm::NAME, "mid-full");
        summary.consumed += users.len();
        progress.inc(users.len() as u64);
        after = last;
        info!(users = summary.consumed, "recomputed");
    }
    progress.finish();
    summary.seconds = run.elapsed();
    Ok(summary)
}

/// Replace the showcase rows of `users` with ones computed under `rules` (read once per run, not
/// per chunk); returns the rows written.
pub async fn recompute(tx: &Transaction<'_>, users: &[Uuid], rules: &[TagRule]) -> Result<u64> {
    if users.is_empty() {
        return Ok(0);
    }
    let facts = read_facts(tx, users)
        .instrument(info_span!("facts", users = users.len()))
        .await?;
    let showcases = info_span!("compute").in_scope(|| compute(&facts, rules))?;
    let mut written = 0;
    for (table, batch) in [
        ("cdm.user_product_counters", showcases.products),
        ("cdm.user_category_counters", showcases.categories),
        ("cdm.user_tags", showcases.tags),
    ] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE user_id = ANY($1)"),
            &[&users],
        )
        .instrument(info_span!("clear", table))
        .await
        .with_context(|| format!("clearing {table}"))?;
        if batch.num_rows() > 0 {
            written += pg::copy_batch(tx, table, &batch).await?;
        }
    }
    batch::fault_point(Cdm::NAME, "after-copy");
    Ok(written)
}

/// One row per (user, CLOSED order, dish of its current basket) with the dish's current name and
/// category, and the time of the order's current basket.
async fn read_facts<C: GenericClient>(client: &C, users: &[Uuid]) -> Result<RecordBatch> {
    let rows = client
        .query(include_str!("sql/cdm_facts.sql"), &[&users])
        .await
        .context("reading facts from DDS")?;
    let mut user = BinaryBuilder::new();
    let mut order = BinaryBuilder::new();
    let mut product = BinaryBuilder::new();
    let mut product_name = StringBuilder::new();
    let mut category = BinaryBuilder::new();
    let mut category_name = StringBuilder::new();
    let mut order_ts = TimestampMicrosecondBuilder::new();
    for row in &rows {
        user.append_value(row.get::<_, Uuid>(0).as_bytes());
        order.append_value(row.get::<_, Uuid>(1).as_bytes());
        product.append_value(row.get::<_, Uuid>(2).as_bytes());
        product_name.append_option(row.get::<_, Option<&str>>(3));
        category.append_option(row.get::<_, Option<Uuid>>(4).map(|c| *c.as_bytes()));
        category_name.append_option(row.get::<_, Option<&str>>(5));
        order_ts.append_value(row.get::<_, NaiveDateTime>(6).and_utc().timestamp_micros());
    }
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("user_id", Arc::new(user.finish())),
        ("order_id", Arc::new(order.finish())),
        ("product_id", Arc::new(product.finish())),
        ("product_name", Arc::new(product_name.finish())),
        ("category_id", Arc::new(category.finish())),
        ("category_name", Arc::new(category_name.finish())),
        ("order_ts", Arc::new(order_ts.finish())),
    ];
    Ok(RecordBatch::try_from_iter(columns)?)
}

/// A tag rule: `threshold`+ distinct CLOSED orders with a dish of a category or matching a pattern.
pub struct TagRule {
    pub tag: String,
    pub category_name: Option<String>,
    pub dish_pattern: Option<String>,
    pub threshold: i64,
}

async fn read_rules<C: GenericClient>(client: &C) -> Result<Vec<TagRule>> {
    let rows = client
        .query(
            "SELECT tag, category_name, dish_pattern, threshold FROM cdm.tag_rules ORDER BY tag",
            &[],
        )
        .await
        .context("reading cdm.tag_rules")?;
    Ok(rows
        .iter()
        .map(|r| TagRule {
            tag: r.get(0),
            category_name: r.get(1),
            dish_pattern: r.get(2),
            threshold: r.get(3),
        })
        .collect())
}

/// The three showcases of a set of users, as Arrow batches shaped like their tables.
pub struct Showcases {
    pub products: RecordBatch,
    pub categories: RecordBatch,
    pub tags: RecordBatch,
}

/// Count distinct CLOSED orders per user×product, user×category and tag rule, with Polars.
pub fn compute(facts: &RecordBatch, rules: &[TagRule]) -> Result<Showcases> {
    let facts = frames::to_polars(facts)?.lazy();
    let distinct_orders = || {
        col("order_id")
            .n_unique()
            .cast(DataType::Int64)
            .alias("order_cnt")
    };

    let mut products = facts
        .clone()
        .group_by([col("user_id"), col("product_id")])
        .agg([
            // The dish's current name (the same on every row) or, for a dish no menu lists,
            // the name the user's newest order gives it.
            col("product_name")
                .sort_by(
                    [col("order_ts")],
                    SortMultipleOptions::default().with_order_descending(true),
                )
                .drop_nulls()
                .first()
                .alias("product_name"),
            distinct_orders(),
        ])
        .select([
            col("user_id"),
            col("product_id"),
            col("product_name").fill_null(lit("")),
            col("order_cnt"),
        ])
        .collect()?;
    let mut categories = facts
        .clone()
        .filter(col("category_id").is_not_null())
        .group_by([col("user_id"), col("category_id")])
        .agg([
            col("category_name").first().alias("category_name"),
            distinct_orders(),
        ])
        .select([
            col("user_id"),
            col("category_id"),
            col("category_name"),
            col("order_cnt"),
        ])
        .collect()?;

    let mut tag_frames = Vec::new();
    for rule in rules {
        let matches = match (&rule.category_name, &rule.dish_pattern) {
            (Some(category), _) => col("category_name").eq(lit(category.as_str())),
            (None, Some(pattern)) => col("product_name")
                .str()
                .contains(lit(format!("(?i){pattern}")), false),
            (None, None) => continue,
        };
        tag_frames.push(
            facts
                .clone()
                .filter(matches)
                .group_by([col("user_id")])
                .agg([distinct_orders()])
                .filter(col("order_cnt").gt_eq(lit(rule.threshold)))
                .select([
                    col("user_id"),
                    lit(rule.tag.as_str()).alias("tag"),
                    col("order_cnt"),
                ]),
        );
    }
    let mut tags = if tag_frames.is_empty() {
        DataFrame::empty()
    } else {
        concat(tag_frames, UnionArgs::default())?.collect()?
    };
    Ok(Showcases {
        products: frames::from_polars(&mut products)?,
        categories: frames::from_polars(&mut categories)?,
        tags: frames::from_polars(&mut tags)?,
    })
}
