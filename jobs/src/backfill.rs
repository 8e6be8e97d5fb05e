//! `dwh backfill --from-archive URL`: rebuild STG from archived batches alone (no Kafka history,
//! no Redis), through the very load `dwh stg` runs.
//!
//! Archive files are loaded in the order they were first loaded (see [`Archive::list`]): each
//! STG batch goes through [`batch::load_batch`] with its own messages and the dictionary documents
//! it read back then, so parsing, dead letters, the idempotent merge, offsets (which never move
//! backwards) and publishing to the STG topic are the live job's; each snapshot goes through the
//! same dictionary load as `dwh snapshot`. A rebuilt batch has the id of the original. Running it
//! twice, or over a database that already holds part of the range, changes nothing. `dds` and
//! `cdm` are run afterwards as usual.

use anyhow::{bail, Context, Result};
use dwh_shared::archive::{self, Archive, Kind};
use dwh_shared::batch::{self, Hold, Job, Run, Summary};
use dwh_shared::config::{Kafka, OrdersTopic, Postgres, Share, StgTopic, Worker};
use dwh_shared::kafka::Drained;
use dwh_shared::progress::Progress;

use crate::stg::{self, Dictionaries, Stg};

/// `dwh backfill`: load archived batches into STG and publish them to the STG topic again.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The archive to rebuild from: a folder or s3://bucket/prefix, as `dwh stg --archive` wrote
    /// it (read only: a missing or empty archive is an error)
    #[arg(
        long = "from-archive",
        env = "DWH_BACKFILL_ARCHIVE",
        value_name = "URL"
    )]
    pub from: String,
    /// Only files whose messages reach this time or later (2023-10-02, "2023-10-02 09:15:41",
    /// RFC 3339; UTC)
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only files whose messages start before this time
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    #[command(flatten)]
    pub pg: Postgres,
    #[command(flatten)]
    pub kafka: Kafka,
    #[command(flatten)]
    pub orders: OrdersTopic,
    #[command(flatten)]
    pub stg: StgTopic,
    #[command(flatten)]
    pub share: Share,
}

pub async fn run(args: &Args) -> Result<String> {
    let since = args.since.as_deref().map(archive::parse_time).transpose()?;
    let until = args.until.as_deref().map(archive::parse_time).transpose()?;
    // A mistyped archive must not look like a rebuild of nothing: it is read, never created,
    // and one without any file is an error. A range without files is not (nothing to do).
    let archive = Archive::open_existing(&args.from)?;
    let mut entries = archive.list(None, None).await?;
    if entries.is_empty() {
        bail!(
            "the archive {} holds no archive file (orders/*.parquet, snapshots/*.parquet): is it \
             the URL `dwh stg --archive` writes to?",
            archive.url()
        );
    }
    entries.retain(|entry| entry.meets(since, until));

    // Every partition, or nothing: the archived batches hold messages of every partition, and
    // no live stg run may load any of them meanwhile.
    let share = Share {
        worker: Worker::ALL,
        ..args.share.clone()
    };
    let topic = &args.orders.name;
    let Some(mut run) =
        Run::begin(Stg::NAME, &args.pg, &args.kafka, &share, topic, Hold::All).await?
    else {
        return Ok("backfill: another stg run holds the lock; nothing done".into());
    };
    let mut job = Stg {
        dictionaries: Dictionaries::Archived(Vec::new()),
        source: args.orders.name.clone(),
        target: args.stg.name.clone(),
        archive: None,
    };
    // What earlier stg runs committed and did not publish goes out first: the messages the job
    // rebuilds, then the outbox.
    let mut summary = Summary {
        published: run.republish(&mut job).await?,
        ..Summary::default()
    };
    let progress = Progress::new("archive files", entries.len() as u64);
    let (mut batches, mut snapshots) = (0usize, 0usize);
    for entry in &entries {
        let archived = archive.read(entry).await?;
        match entry.kind {
            Kind::Orders => {
                job.dictionaries = Dictionaries::Archived(archived.documents);
                job.source = archived.topic.clone();
                let drained = Drained::from_messages(&archived.topic, archived.messages);
                batch::load_batch(&mut run, &mut job, &drained, &mut summary)
                    .await
                    .with_context(|| format!("loading {}", entry.path))?;
                if summary.batch_id.is_some_and(|id| id != entry.batch_id) {
                    tracing::warn!(path = %entry.path, "rebuilt batch has another id than the archived one");
                }
                batches += 1;
            }
            Kind::Snapshot => {
                let read = stg::parse_documents(&archived.documents);
                let tx = run.client.transaction().await?;
                summary.loaded +=
                    stg::load_dictionaries(&tx, &read.versions, entry.batch_id).await?;
                tx.commit().await.context("committing a snapshot")?;
                snapshots += 1;
            }
        }
        progress.inc(1);
    }
    progress.finish();
    // Dictionary versions of archived snapshots (those of archived batches went with them).
    stg::publish_dictionaries(&run, &args.stg.name).await?;
    summary.published += run.publish_outbox().await?;
    Ok(format!(
        "backfill: archive={} batches={batches} snapshots={snapshots} consumed={} loaded={} \
         dead_lettered={} published={} seconds={:.2}",
        archive.url(),
        summary.consumed,
        summary.loaded,
        summary.dead_lettered,
        summary.published,
        run.elapsed()
    ))
}
