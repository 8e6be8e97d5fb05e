//! The DDS job: enriched orders from the STG topic into the Data Vault, set-based.
//!
//! drain → parse (order, user and restaurant versions) → for each stage of `vault` (orders,
//! order lines, users, restaurants, menu dishes): keys and hashdiffs computed in Rust into an
//! Arrow batch → `COPY` into a temp table → the generated merges of its hubs, links, version log
//! and satellites → queue the users of the batch's orders for CDM → record offsets → commit →
//! queue the users of dishes renamed or moved to another category → publish.

use anyhow::{Context, Result};
use dwh_shared::batch::{self, Job, Loaded, Run, Summary};
use dwh_shared::config::{Bounds, DdsTopic, Kafka, Postgres, Share, StgTopic};
use dwh_shared::kafka::Drained;
use dwh_shared::metrics::Push;
use dwh_shared::model::StgMessage;
use dwh_shared::{pg, vault};
use tokio_postgres::types::ToSql;
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
    Ok(batch::run(
        &mut job,
        &args.pg,
        &args.kafka,
        &args.stg.name,
        &args.bounds,
        &args.share,
    )
    .await?)
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
        let (messages, dead) = batch::parse_all(drained, StgMessage::parse);
        let (mut orders, mut users, mut restaurants) = (Vec::new(), Vec::new(), Vec::new());
        for (_, message) in messages {
            match message {
                StgMessage::Order(o) => orders.push(o),
                StgMessage::User(u) => users.push(u),
                StgMessage::Restaurant(r) => restaurants.push(r),
            }
        }
        let mut rows = 0;
        rows += self
            .load_stage(tx, &vault::STAGE_ORDERS, &orders, batch_id)
            .await?;
        rows += self
            .load_stage(tx, &vault::STAGE_ORDER_ITEMS, &orders, batch_id)
            .await?;
        rows += self
            .load_stage(tx, &vault::STAGE_USERS, &users, batch_id)
            .await?;
        rows += self
            .load_stage(tx, &vault::STAGE_RESTAURANTS, &restaurants, batch_id)
            .await?;
        rows += self
            .load_stage(tx, &vault::STAGE_MENU, &restaurants, batch_id)
            .await?;
        if !orders.is_empty() {
            tx.execute(
                include_str!("sql/dds_affected_users.sql"),
                &[&batch_id, &self.target],
            )
            .instrument(tracing::info_span!("merge", table = "dwh.outbox"))
            .await
            .context("queueing affected users")?;
        }
        Ok(Loaded {
            rows,
            dead,
            outgoing: None,
        })
    }

    /// Queue, for CDM, the users of the dishes whose name or category a committed batch changed.
    ///
    /// After the commit, not inside the batch: an order another worker commits meanwhile is then
    /// either seen here, or committed after this batch, and its own message makes CDM recompute
    /// its user with this batch's change visible. A run that dies before this step leaves the
    /// dishes in `dds.pending_fanout`; the next run of these partitions does it.
    async fn after_commit(&mut self, run: &Run) -> Result<()> {
        let keys: Vec<String> = run.partitions.iter().map(i32::to_string).collect();
        run.client
            .execute(include_str!("sql/dds_fanout.sql"), &[&keys, &self.target])
            .instrument(tracing::info_span!("fanout"))
            .await
            .context("queueing the users of changed dishes")?;
        Ok(())
    }
}

impl Dds {
    /// Stage `records` as `stage` describes and run its merges: hubs, links, the version log,
    /// then each satellite. Returns the rows written.
    async fn load_stage<T>(
        &self,
        tx: &Transaction<'_>,
        stage: &vault::Stage<T>,
        records: &[T],
        batch_id: Uuid,
    ) -> Result<u64> {
        if records.is_empty() {
            return Ok(0);
        }
        let batch = vault::stage_batch(stage, records)?;
        pg::stage(tx, stage.table, &batch).await?;
        batch::fault_point(Self::NAME, "after-copy");
        let merges = (stage.hubs.iter())
            .map(|h| (h.table, vault::hub_merge(h, stage.table)))
            .chain((stage.links.iter()).map(|l| (l.table, vault::link_merge(l, stage.table))));
        let mut rows = 0;
        for (table, statements) in merges {
            rows += self.execute(tx, table, statements, batch_id).await?;
        }
        if let Some(feed) = &stage.log {
            if stage.shared_parents {
                tx.query_one(&vault::lock_parents(feed, stage.table), &[])
                    .instrument(tracing::info_span!("lock", table = feed.log.table))
                    .await
                    .context("locking the dishes of the menus")?;
            }
            let statements = vault::log_merge(feed, stage.table);
            rows += self
                .execute(tx, feed.log.table, statements, batch_id)
                .await?;
        }
        for sat in stage.satellites {
            let statements = vault::satellite_merge(sat, stage);
            rows += self.execute(tx, sat.table, statements, batch_id).await?;
        }
        Ok(rows)
    }

    /// Run the statements of one table's merge, each with the parameters it takes. Returns the
    /// rows they wrote.
    async fn execute(
        &self,
        tx: &Transaction<'_>,
        table: &str,
        statements: Vec<vault::Statement>,
        batch_id: Uuid,
    ) -> Result<u64> {
        let params: [&(dyn ToSql + Sync); 2] = [&self.source, &batch_id];
        let batch_param: [&(dyn ToSql + Sync); 1] = [&batch_id];
        let mut rows = 0;
        for statement in statements {
            let done = match &statement {
                vault::Statement::Plain(sql) => tx.execute(sql, &[]),
                vault::Statement::Loading(sql) => tx.execute(sql, &params),
                vault::Statement::Batch(sql) => tx.execute(sql, &batch_param),
            };
            rows += done
                .instrument(tracing::info_span!("merge", table))
                .await
                .with_context(|| format!("merging dds.{table}"))?;
        }
        Ok(rows)
    }
}
