//! The batch protocol that makes every run idempotent (DESIGN §4).
//!
//! A run: take the job's advisory lock → publish whatever an earlier run committed but did not
//! publish → drain Kafka from the offsets stored in PostgreSQL → load, and in the same
//! transaction store the new offsets, the batch record and the messages for downstream (the
//! outbox) → commit → publish the outbox. A crash anywhere leaves either nothing (before commit)
//! or a committed batch whose outbox the next run publishes. Downstream jobs are idempotent, so a
//! message published twice after a crash mid-publish changes nothing.
//!
//! A job whose messages follow from what its batch stored (STG's enriched orders) need not write
//! them twice: its batch queues one rebuild row in the outbox instead ([`Loaded::outgoing`]), the
//! run sends the messages from memory after the commit and then deletes the row. A run that died
//! before the broker acknowledged them left the row, and with it the batch unpublished: the next
//! run has the job rebuild the messages ([`Job::rebuild`]) and sends them first.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use std::future::Future;

use crate::error::{Context, Result};
use rdkafka::producer::FutureProducer;
use tokio_postgres::{Client, GenericClient, Transaction};
use tracing::Instrument;
use uuid::Uuid;

use crate::config::{Bounds, Kafka, Postgres, Share};
use crate::kafka::{self, Drained};
use crate::{pg, vault};

mod publish;

pub use publish::{queue_rebuild, Outgoing};

/// Deterministic id of a batch: uuid v5 over the job, the topic and the offset ranges consumed.
pub fn batch_id(job: &str, topic: &str, ranges: &BTreeMap<i32, (i64, i64)>) -> Uuid {
    let ranges: Vec<String> = ranges
        .iter()
        .map(|(p, (start, end))| format!("{p}:{start}-{end}"))
        .collect();
    vault::hub_key(&format!("batch|{job}|{topic}|{}", ranges.join(",")))
}

pub use crate::dead_letters::{dead_letter, parse_all, DeadLetter};
pub use crate::faults::fault_point;

/// The figures of one run, printed as its summary line.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub batch_id: Option<Uuid>,
    pub consumed: usize,
    pub loaded: u64,
    pub dead_lettered: u64,
    pub published: u64,
    pub seconds: f64,
    pub skipped: bool,
}

impl Summary {
    /// The summary of a run that found its partitions locked by another run.
    pub fn skipped() -> Summary {
        Summary {
            skipped: true,
            ..Summary::default()
        }
    }

    /// The one line a run prints when it ends.
    pub fn line(&self, job: &str) -> String {
        if self.skipped {
            return format!("{job}: another run holds the lock; nothing done");
        }
        let batch = self
            .batch_id
            .map(|b| b.to_string())
            .unwrap_or_else(|| "-".into());
        format!(
            "{job}: batch={batch} consumed={} loaded={} dead_lettered={} published={} seconds={:.2}",
            self.consumed, self.loaded, self.dead_lettered, self.published, self.seconds
        )
    }
}

/// What a job's load step did with one drained batch.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Rows written to the job's tables.
    pub rows: u64,
    /// Messages that could not be used.
    pub dead: Vec<DeadLetter>,
    /// Messages for downstream sent from memory after the commit (the batch queued a rebuild
    /// row for them, see [`queue_rebuild`]), besides any the batch wrote to the outbox.
    pub outgoing: Option<Outgoing>,
}

/// A consuming job: the one step that differs between `stg`, `dds` and `cdm`.
pub trait Job {
    /// The job's name: its lock, its offsets, its outbox rows and its fault points.
    const NAME: &'static str;

    /// Load one drained batch inside the run's transaction (and queue its downstream messages
    /// in the outbox). Everything around it — lock, offsets, dead letters, commit, publishing —
    /// is [`run`]'s.
    fn load(
        &mut self,
        tx: &Transaction<'_>,
        drained: &Drained,
        batch_id: Uuid,
    ) -> impl Future<Output = anyhow::Result<Loaded>>;

    /// Work that must follow a batch's commit in a transaction of its own, and that a run also
    /// does first for whatever an earlier run committed but did not get to (it died in between):
    /// DDS queues the users of changed dishes, STG publishes dictionary versions. Before
    /// publishing.
    fn after_commit(&mut self, run: &Run) -> impl Future<Output = anyhow::Result<()>> {
        let _ = run;
        async { Ok(()) }
    }

    /// The [`Loaded::outgoing`] messages of a committed batch whose run died before the broker
    /// acknowledged them, rebuilt from what the batch stored; `None` for a job that writes its
    /// messages to the outbox (it never queues a rebuild row).
    fn rebuild(
        &mut self,
        client: &Client,
        batch_id: Uuid,
    ) -> impl Future<Output = anyhow::Result<Option<Outgoing>>> {
        let _ = (client, batch_id);
        async { Ok(None) }
    }
}

/// One run of a consuming job, start to end: lock → republish → drain `topic` → load → dead
/// letters → offsets and batch record → commit → publish → group offsets for monitoring.
pub async fn run<J: Job>(
    job: &mut J,
    pg: &Postgres,
    kafka: &Kafka,
    topic: &str,
    bounds: &Bounds,
    share: &Share,
) -> Result<Summary> {
    let Some(mut run) = Run::begin(J::NAME, pg, kafka, share, topic, Hold::Any).await? else {
        return Ok(Summary::skipped());
    };
    // What an earlier run committed but did not finish: its step after the commit first (it may
    // look at the batch's outbox, e.g. DDS skips the users the batch queued already), then its
    // messages.
    job.after_commit(&run)
        .await
        .context("finishing the last batch")?;
    let mut summary = Summary {
        published: run
            .republish(job)
            .await
            .context("republishing the last batch")?,
        ..Summary::default()
    };
    fault_point(J::NAME, "before-drain");
    let drained = run
        .drain(bounds)
        .instrument(tracing::info_span!("drain", job = J::NAME))
        .await?;
    load_batch(&mut run, job, &drained, &mut summary).await?;
    summary.seconds = run.elapsed();
    Ok(summary)
}

/// Load one batch of messages (drained from Kafka, or read back from an archive) through the
/// job's load step, commit it with its offsets, then publish its outbox. An empty batch is a no-op.
pub async fn load_batch<J: Job>(
    run: &mut Run,
    job: &mut J,
    drained: &Drained,
    summary: &mut Summary,
) -> Result<()> {
    summary.consumed += drained.messages.len();
    if drained.messages.is_empty() {
        // Nothing to load, but retention may have passed the stored offsets: record that and
        // move them to the log's start, or every run would find the same gap again.
        record_gaps(&run.client, J::NAME, drained).await?;
        return Ok(());
    }
    fault_point(J::NAME, "after-drain");
    let topic = drained.topic.as_str();
    let batch_id = batch_id(J::NAME, topic, &drained.ranges);
    summary.batch_id = Some(batch_id);
    let span = tracing::info_span!("batch", job = J::NAME, %batch_id);
    let started = run.batch_started;
    async {
        let tx = run
            .client
            .transaction()
            .await
            .context("beginning the batch")?;
        let loaded = job
            .load(&tx, drained, batch_id)
            .instrument(tracing::info_span!("load"))
            .await?;
        summary.loaded += loaded.rows;
        fault_point(J::NAME, "after-merge");
        summary.dead_lettered += dead_letter(&tx, J::NAME, topic, batch_id, &loaded.dead).await?;
        let timed = Summary {
            seconds: started.elapsed().as_secs_f64(),
            ..summary.clone()
        };
        record(&tx, J::NAME, drained, batch_id, &timed).await?;
        fault_point(J::NAME, "before-commit");
        tx.commit()
            .instrument(tracing::info_span!("commit"))
            .await
            .context("committing the batch")?;
        fault_point(J::NAME, "after-commit");
        job.after_commit(run).await?;

        summary.published += run
            .publish(batch_id, loaded.outgoing.as_ref())
            .instrument(tracing::info_span!("publish"))
            .await?;
        fault_point(J::NAME, "after-publish");
        drained.commit_group_offsets();
        Ok::<_, crate::Error>(())
    }
    .instrument(span)
    .await?;
    run.batch_started = Instant::now();
    Ok(())
}

/// One run of a consuming job, holding its lock for as long as it lives.
pub struct Run {
    pub job: &'static str,
    pub client: Client,
    /// The topic this run consumes.
    pub topic: String,
    /// The partitions of `topic` this run holds the locks of: it reads, records and publishes
    /// for these only.
    pub partitions: Vec<i32>,
    producer: FutureProducer,
    kafka: Kafka,
    started: Instant,
    /// When the current batch began: the run's start, then each batch's end (a backfill loads
    /// many batches in one run); `dwh.batches.seconds` is measured from here to the commit.
    batch_started: Instant,
}

/// Which of its partitions a run must hold to go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Those it can lock: a consuming run reads, records and publishes for these only, and
    /// another run of the job takes the rest.
    Any,
    /// Every one, or none: for work that is not split by partition. Two recomputes of the same
    /// user must never interleave (`dwh cdm --full` against an incremental run), and a backfill
    /// writes the batches of every partition, so it must not race a live stg run on some.
    All,
}

impl Run {
    /// Connect and lock this worker's partitions of `topic` (one advisory lock per partition,
    /// waiting at most `--lock-wait-secs` in all); `None` when other runs hold every one of them,
    /// or, with [`Hold::All`], any one of them (the locks taken are released again first).
    pub async fn begin(
        job: &'static str,
        pg: &Postgres,
        kafka: &Kafka,
        share: &Share,
        topic: &str,
        hold: Hold,
    ) -> Result<Option<Run>> {
        let client = pg::connect(pg).await?;
        let mine: Vec<i32> = kafka::topic_partitions(kafka, topic)
            .await?
            .into_iter()
            .filter(|p| share.worker.owns(*p))
            .collect();
        let wait = share.lock.duration();
        let partitions = lock_partitions(&client, job, topic, &mine, wait).await?;
        if hold == Hold::All && partitions.len() < mine.len() {
            // Released now, not when the connection's end reaches the server: the run holding the
            // others must not find these taken meanwhile.
            client
                .batch_execute("SELECT pg_advisory_unlock_all()")
                .await
                .context("releasing the partition locks")?;
            return Ok(None);
        }
        if partitions.is_empty() {
            return Ok(None);
        }
        let producer = kafka::producer(kafka)?;
        Ok(Some(Run {
            job,
            client,
            topic: topic.to_owned(),
            partitions,
            producer,
            kafka: kafka.clone(),
            started: Instant::now(),
            batch_started: Instant::now(),
        }))
    }

    /// [`Run::begin`], then publish what an earlier run committed but did not publish, for a job
    /// whose messages all wait in the outbox (CDM's recomputes and rule changes); a job that sends
    /// some from memory starts with [`Run::republish`] instead. The summary counts what was
    /// republished.
    pub async fn resume(
        job: &'static str,
        pg: &Postgres,
        kafka: &Kafka,
        share: &Share,
        topic: &str,
        hold: Hold,
    ) -> Result<Option<(Run, Summary)>> {
        let Some(run) = Run::begin(job, pg, kafka, share, topic, hold).await? else {
            return Ok(None);
        };
        let published = run
            .publish_outbox()
            .await
            .context("republishing the last batch")?;
        let summary = Summary {
            published,
            ..Summary::default()
        };
        Ok(Some((run, summary)))
    }

    /// Seconds since the run began.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Drain this run's partitions from the offsets PostgreSQL holds for this job.
    pub async fn drain(&self, bounds: &Bounds) -> Result<Drained> {
        let stored = stored_offsets(&self.client, self.job, &self.topic)
            .await
            .with_context(|| format!("reading stored offsets of job {}", self.job))?;
        let plan = kafka::DrainPlan {
            partitions: self.partitions.clone(),
            stored,
            max: bounds.max_messages,
            max_bytes: bounds.max_batch_bytes,
            timeout: Duration::from_secs(bounds.fetch_timeout_secs),
        };
        kafka::drain(&self.kafka, self.job, &self.topic, plan).await
    }
}

/// Take `job`'s advisory lock of each of `partitions` of `topic` (one per partition, held for the
/// session), waiting at most `wait` in all; returns the partitions whose lock was taken.
pub async fn lock_partitions(
    client: &Client,
    job: &str,
    topic: &str,
    partitions: &[i32],
    wait: Duration,
) -> Result<Vec<i32>> {
    let deadline = Instant::now() + wait;
    let mut held = Vec::new();
    for &partition in partitions {
        let wait = deadline.saturating_duration_since(Instant::now());
        if pg::lock(client, &format!("{job}:{topic}:{partition}"), wait).await? {
            held.push(partition);
        }
    }
    Ok(held)
}

/// Record the batch and the new offsets inside the load's transaction. Offsets never move
/// backwards: loading an older range again (a backfill) leaves them where they are.
pub async fn record(
    tx: &Transaction<'_>,
    job: &str,
    drained: &Drained,
    batch_id: Uuid,
    summary: &Summary,
) -> Result<()> {
    let (partitions, next): (Vec<i32>, Vec<i64>) = drained
        .ranges
        .iter()
        .map(|(p, (_, end))| (*p, *end))
        .unzip();
    tx.execute(
        include_str!("sql/store_offsets.sql"),
        &[&job, &drained.topic, &batch_id, &partitions, &next],
    )
    .await
    .context("storing offsets")?;
    record_gaps(tx, job, drained).await?;
    let ranges = serde_json::to_value(&drained.ranges)?;
    tx.execute(
        include_str!("sql/record_batch.sql"),
        &[
            &batch_id,
            &job,
            &drained.topic,
            &ranges,
            &(summary.consumed as i64),
            &(summary.loaded as i64),
            &(summary.dead_lettered as i64),
            &summary.seconds,
        ],
    )
    .await
    .context("recording the batch")?;
    Ok(())
}

/// Record the offsets retention deleted before `job` read them ([`kafka::Gap`]), once each, and
/// move the job's stored offsets past them.
async fn record_gaps<C: GenericClient>(client: &C, job: &str, drained: &Drained) -> Result<()> {
    if drained.gaps.is_empty() {
        return Ok(());
    }
    let (mut partitions, mut from, mut to) = (Vec::new(), Vec::new(), Vec::new());
    for gap in &drained.gaps {
        partitions.push(gap.partition);
        from.push(gap.from);
        to.push(gap.to);
    }
    client
        .execute(
            include_str!("sql/record_gaps.sql"),
            &[&job, &drained.topic, &partitions, &from, &to],
        )
        .await
        .context("recording offset gaps")?;
    Ok(())
}

/// The next offset to read per partition, as the last committed batch of `job` left it.
pub async fn stored_offsets<C: GenericClient>(
    client: &C,
    job: &str,
    topic: &str,
) -> Result<BTreeMap<i32, i64>> {
    let rows = client
        .query(
            "SELECT partition, next_offset FROM dwh.offsets WHERE job = $1 AND topic = $2",
            &[&job, &topic],
        )
        .await
        .with_context(|| format!("reading the offsets of {job} on {topic}"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
