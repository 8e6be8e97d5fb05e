//! The CDM job: the showcases, recomputed with Polars for the users DDS reports as affected.
//!
//! drain → the affected users → read their facts from DDS (orders with their current status,
//! products, categories) into Arrow → compute both counters and the tags with Polars → replace
//! those users' rows in one transaction → record offsets → commit. Counters are recomputed, never
//! incremented, so the result does not depend on how often or in which order batches ran.
//! `dwh cdm --full` recomputes every user in chunks. Each recompute also compares the users' tags
//! with those they held and queues a tag event per change for the tags topic, in the same
//! transaction (`tags::events`); the run publishes them after the commit.

use anyhow::{Context, Result};
use dwh_shared::batch::{self, Hold, Job, Loaded, Run, Summary};
use dwh_shared::config::{positive, Bounds, DdsTopic, Kafka, Postgres, Share, TagsTopic, Worker};
use dwh_shared::kafka::Drained;
use dwh_shared::metrics::Push;
use dwh_shared::model::AffectedUser;
use dwh_shared::progress::Progress;
use dwh_shared::{pg, vault};
use tokio_postgres::{GenericClient, Transaction};
use tracing::{info, info_span, Instrument};
use uuid::Uuid;

use crate::tags::events::{self, Events, TagCount};
use crate::tags::rules::{self, Rules, TagRule};
use compute::compute;
use facts::read_facts;

mod compute;
mod facts;

/// The job's name: its locks, offsets, batches and outbox rows.
pub const NAME: &str = "cdm";

/// `dwh cdm`: recompute the showcases of the users DDS reported.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Recompute every user's showcases (after a backfill, a bug fix or a change of tag rules)
    #[arg(long)]
    pub full: bool,
    #[command(flatten)]
    pub chunk: Chunk,
    #[command(flatten)]
    pub pg: Postgres,
    #[command(flatten)]
    pub kafka: Kafka,
    #[command(flatten)]
    pub dds: DdsTopic,
    #[command(flatten)]
    pub tags: TagsTopic,
    #[command(flatten)]
    pub bounds: Bounds,
    #[command(flatten)]
    pub share: Share,
    #[command(flatten)]
    pub push: Push,
}

/// How many users one step of a recompute takes (`dwh cdm`, `dwh tags rules set|remove`).
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct Chunk {
    /// Users recomputed at a time: per transaction by --full, per step of an incremental run or
    /// of a rule change (in its one transaction)
    #[arg(
        id = "chunk",
        long = "chunk",
        env = "DWH_CDM_CHUNK",
        value_name = "N",
        default_value_t = 5_000,
        value_parser = positive::<i64>,
        allow_negative_numbers = true
    )]
    pub users: i64,
}

pub async fn run(args: &Args) -> Result<Summary> {
    if args.full {
        return full(args).await;
    }
    let topic = &args.dds.name;
    let mut job = Cdm {
        chunk: args.chunk.users as usize,
        tags_topic: args.tags.name.clone(),
    };
    Ok(batch::run(
        &mut job,
        &args.pg,
        &args.kafka,
        topic,
        &args.bounds,
        &args.share,
    )
    .await?)
}

/// The CDM load step: the affected users are recomputed `chunk` at a time (in the batch's one
/// transaction), so a batch naming every user holds one chunk's facts at a time; their tag
/// events go out under the batch's id.
struct Cdm {
    chunk: usize,
    tags_topic: String,
}

impl Job for Cdm {
    const NAME: &'static str = NAME;

    async fn load(
        &mut self,
        tx: &Transaction<'_>,
        drained: &Drained,
        batch_id: Uuid,
    ) -> Result<Loaded> {
        let (affected, dead) = batch::parse_all(drained, |bytes| {
            serde_json::from_slice::<AffectedUser>(bytes)
                .map_err(|e| format!("not an affected-user message: {e}"))
        });
        let mut users: Vec<Uuid> = affected.iter().map(|(_, a)| a.user_pk).collect();
        users.sort();
        users.dedup();
        let rules = rules::read(tx).await?;
        let events = Events {
            batch_id,
            topic: &self.tags_topic,
        };
        let mut done = Recomputed::default();
        for chunk in users.chunks(self.chunk) {
            done += recompute(tx, chunk, &rules, &events).await?;
        }
        Ok(Loaded {
            rows: done.rows,
            dead,
            outgoing: None,
        })
    }
}

/// Recompute every user, `chunk` users per transaction, so memory stays bounded; each chunk's tag
/// events are published after its commit (a chunk that changed tags is recorded as a batch of its
/// own, so a run that dies before publishing leaves them to the next run).
async fn full(args: &Args) -> Result<Summary> {
    // Every partition, or nothing: no incremental run may recompute a user while --full does.
    let share = Share {
        worker: Worker::ALL,
        ..args.share.clone()
    };
    let topic = &args.dds.name;
    let Some((mut run, mut summary)) =
        Run::resume(NAME, &args.pg, &args.kafka, &share, topic, Hold::All).await?
    else {
        return Ok(Summary::skipped());
    };
    let chunk = args.chunk.users;
    let mut after = Uuid::nil();
    let started = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    // Users that left the vault (a rebuilt DDS) must not keep rows.
    let tx = run.client.transaction().await?;
    tx.batch_execute(include_str!("../sql/cdm_drop_gone_users.sql"))
        .await
        .context("deleting the showcase rows of users no longer in dds.h_user")?;
    tx.commit().await?;
    let users: i64 = run
        .client
        .query_one("SELECT count(*) FROM dds.h_user", &[])
        .await?
        .get(0);
    let rules = rules::read(&run.client).await?;
    let progress = Progress::new("users", users as u64);
    loop {
        let chunk_started = std::time::Instant::now();
        let tx = run.client.transaction().await?;
        let users: Vec<Uuid> = tx
            .query(
                include_str!("../sql/cdm_users_after.sql"),
                &[&after, &chunk],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let Some(last) = users.last().copied() else {
            break;
        };
        let batch_id = vault::hub_key(&format!("cdm-full|{topic}|{started}|{last}"));
        let events = Events {
            batch_id,
            topic: &args.tags.name,
        };
        let done = recompute(&tx, &users, &rules, &events).await?;
        if done.granted + done.revoked > 0 {
            let figures = (users.len(), done.rows);
            let seconds = chunk_started.elapsed().as_secs_f64();
            let partitions = &run.partitions;
            events::record_batch(&tx, batch_id, "cdm --full", partitions, figures, seconds).await?;
        }
        tx.commit().await?;
        batch::fault_point(NAME, "mid-full");
        summary.published += run.publish_outbox().await?;
        summary.loaded += done.rows;
        summary.consumed += users.len();
        progress.inc(users.len() as u64);
        after = last;
        info!(users = summary.consumed, "recomputed");
    }
    progress.finish();
    summary.seconds = run.elapsed();
    Ok(summary)
}

/// What a recompute did: rows written, tags granted and revoked (the events queued).
#[derive(Debug, Default, Clone, Copy)]
pub struct Recomputed {
    pub rows: u64,
    pub granted: u64,
    pub revoked: u64,
}

impl std::ops::AddAssign for Recomputed {
    fn add_assign(&mut self, other: Recomputed) {
        self.rows += other.rows;
        self.granted += other.granted;
        self.revoked += other.revoked;
    }
}

/// Replace the showcase rows of `users` with ones computed under `rules` (read once per run, not
/// per chunk), and queue an event for each tag a user gained or lost (the tags of frozen rules
/// are left as they are).
pub async fn recompute(
    tx: &Transaction<'_>,
    users: &[Uuid],
    rules: &Rules,
    events: &Events<'_>,
) -> Result<Recomputed> {
    let mut done = Recomputed::default();
    if users.is_empty() {
        return Ok(done);
    }
    let facts = read_facts(tx, users)
        .instrument(info_span!("facts", users = users.len()))
        .await?;
    let showcases = info_span!("compute").in_scope(|| compute(&facts, &rules.valid))?;
    let held = events::held(tx, users, &rules.frozen).await?;
    for (table, batch) in [
        ("cdm.user_product_counters", showcases.products),
        ("cdm.user_category_counters", showcases.categories),
        ("cdm.user_tags", showcases.tags),
    ] {
        let clear = info_span!("clear", table);
        let cleared = if table == "cdm.user_tags" {
            // The tags of frozen rules stay as they are.
            tx.execute(
                "DELETE FROM cdm.user_tags WHERE user_id = ANY($1) AND tag <> ALL($2)",
                &[&users, &rules.frozen],
            )
            .instrument(clear)
            .await
        } else {
            let sql = format!("DELETE FROM {table} WHERE user_id = ANY($1)");
            tx.execute(&sql, &[&users]).instrument(clear).await
        };
        cleared.with_context(|| format!("clearing {table}"))?;
        if batch.num_rows() > 0 {
            done.rows += pg::copy_batch(tx, table, &batch).await?;
        }
    }
    let changes = events::changes(&held, &showcases.tag_counts);
    events::queue(tx, events, &changes)
        .instrument(info_span!("tag_events", changes = changes.len()))
        .await?;
    for change in &changes {
        match change.kind {
            events::Kind::Granted => done.granted += 1,
            events::Kind::Revoked => done.revoked += 1,
        }
    }
    batch::fault_point(NAME, "after-copy");
    Ok(done)
}

/// The users' counts of qualifying orders under each of `rules`, computed from DDS (read only).
pub async fn tag_counts<C: GenericClient>(
    client: &C,
    users: &[Uuid],
    rules: &[TagRule],
) -> Result<Vec<TagCount>> {
    let facts = read_facts(client, users).await?;
    Ok(compute(&facts, rules)?.tag_counts)
}
