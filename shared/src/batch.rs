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

/// Rows of the outbox published per round trip: enriched orders of up to a few KB each, so a
/// chunk held in memory (as rows, then as the producer's copies) stays in the tens of MB.
const PUBLISH_CHUNK: i64 = 10_000;

/// After publishing this many messages the outbox is vacuumed: its index is otherwise full of the
/// deleted rows until autovacuum comes, and every later run's `SELECT … ORDER BY id LIMIT` walks
/// them (measured: 2.7 s for a 5-order tick after a 1M-order backfill).
const VACUUM_AFTER: u64 = 10_000;

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

/// Messages for one topic, each a key and a value, in the order they are sent.
#[derive(Debug, Default)]
pub struct Outgoing {
    pub topic: String,
    pub records: Vec<(String, String)>,
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

/// Queue in `tx` the rebuild row of a batch whose messages are sent from memory after its commit
/// ([`Loaded::outgoing`]): until they are acknowledged, the batch stays unpublished.
pub async fn queue_rebuild(
    tx: &Transaction<'_>,
    job: &str,
    batch_id: Uuid,
    topic: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO dwh.outbox (job, batch_id, topic, key, value, rebuild) \
         VALUES ($1, $2, $3, '', '', true)",
        &[&job, &batch_id, &topic],
    )
    .await
    .context("queueing the batch's rebuild row")?;
    Ok(())
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

        summary.published += async {
            let mut sent = 0;
            if let Some(outgoing) = &loaded.outgoing {
                sent += run.send(outgoing).await?;
                run.rebuilt(batch_id).await?;
            }
            Ok::<_, crate::Error>(sent + run.publish_outbox().await?)
        }
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

    /// [`Run::begin`], then publish what an earlier run committed but did not publish: the
    /// start of every run that loads batches. The summary counts what was republished.
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

    /// What earlier runs of `job` left unpublished in this run's partitions, oldest first: the
    /// messages of each batch with a rebuild row, rebuilt by the job and sent, then the outbox
    /// ([`Run::publish_outbox`]). Returns the messages sent.
    pub async fn republish<J: Job>(&self, job: &mut J) -> Result<u64> {
        let keys: Vec<String> = self.partitions.iter().map(i32::to_string).collect();
        let waiting = self
            .client
            .query(
                include_str!("sql/rebuilds_waiting.sql"),
                &[&self.job, &keys],
            )
            .await
            .context("looking for batches to rebuild")?;
        let mut sent = 0;
        for row in waiting {
            let batch_id: Uuid = row.get(0);
            let Some(outgoing) = job
                .rebuild(&self.client, batch_id)
                .instrument(tracing::info_span!("rebuild", %batch_id))
                .await
                .with_context(|| format!("rebuilding the messages of batch {batch_id}"))?
            else {
                crate::error::bail!(
                    "batch {batch_id} of {} waits for its messages to be rebuilt, which this \
                     job cannot do",
                    self.job
                );
            };
            sent += self.send(&outgoing).await?;
            self.rebuilt(batch_id).await?;
        }
        Ok(sent + self.publish_outbox().await?)
    }

    /// Send `outgoing` a chunk at a time, pipelined (the next chunk goes to the producer while the
    /// broker acknowledges the one before); returns once every message was acknowledged.
    async fn send(&self, outgoing: &Outgoing) -> Result<u64> {
        let mut in_flight: Option<kafka::Sending> = None;
        for chunk in outgoing.records.chunks(PUBLISH_CHUNK as usize) {
            let sending = kafka::send(&self.producer, &outgoing.topic, chunk)?;
            if let Some(acks) = in_flight.replace(sending) {
                self.acknowledged(acks).await?;
            }
        }
        if let Some(acks) = in_flight {
            self.acknowledged(acks).await?;
        }
        Ok(outgoing.records.len() as u64)
    }

    async fn acknowledged(&self, acks: kafka::Sending) -> Result<()> {
        acks.acknowledged()
            .instrument(tracing::info_span!("produce"))
            .await?;
        fault_point(self.job, "mid-publish");
        Ok(())
    }

    /// The messages of `batch_id` were acknowledged: delete its rebuild row.
    async fn rebuilt(&self, batch_id: Uuid) -> Result<()> {
        self.client
            .execute(
                "DELETE FROM dwh.outbox WHERE batch_id = $1 AND rebuild",
                &[&batch_id],
            )
            .await
            .context("deleting the rebuild row")?;
        Ok(())
    }

    /// Publish the outbox of this job's batches from this run's partitions, oldest first,
    /// deleting what the broker acknowledged; then mark those batches published. Returns the
    /// messages sent.
    ///
    /// Pipelined: while the broker takes one chunk, the next is read from the outbox; a chunk is
    /// deleted only once every message of it was acknowledged.
    pub async fn publish_outbox(&self) -> Result<u64> {
        let keys: Vec<String> = self.partitions.iter().map(i32::to_string).collect();
        let mut sent = 0u64;
        let mut after = 0i64;
        let mut in_flight: Option<(Vec<i64>, Vec<kafka::Sending>)> = None;
        loop {
            let rows = self
                .client
                .query(
                    include_str!("sql/outbox_next.sql"),
                    &[&self.job, &keys, &PUBLISH_CHUNK, &after],
                )
                .instrument(tracing::info_span!("outbox_read"))
                .await
                .context("reading the outbox")?;
            let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
            let mut by_topic: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
            for row in &rows {
                by_topic
                    .entry(row.get(1))
                    .or_default()
                    .push((row.get(2), row.get(3)));
            }
            drop(rows);
            let sending = by_topic
                .iter()
                .map(|(topic, records)| kafka::send(&self.producer, topic, records))
                .collect::<Result<Vec<_>>>()?;
            drop(by_topic);
            if let Some((done, acks)) = in_flight.take() {
                sent += self.acknowledged_then_clear(&done, acks).await?;
            }
            let Some(&last) = ids.last() else {
                break;
            };
            after = last;
            in_flight = Some((ids, sending));
        }
        self.client
            .execute(include_str!("sql/mark_published.sql"), &[&self.job, &keys])
            .await
            .context("marking batches published")?;
        if sent >= VACUUM_AFTER {
            self.vacuum_outbox(sent).await;
        }
        Ok(sent)
    }

    /// Wait for the broker to acknowledge a chunk, then delete its outbox rows.
    async fn acknowledged_then_clear(&self, ids: &[i64], acks: Vec<kafka::Sending>) -> Result<u64> {
        for sending in acks {
            sending
                .acknowledged()
                .instrument(tracing::info_span!("produce"))
                .await?;
        }
        fault_point(self.job, "mid-publish");
        self.client
            .execute("DELETE FROM dwh.outbox WHERE id = ANY($1)", &[&ids])
            .instrument(tracing::info_span!("outbox_clear"))
            .await
            .context("clearing the outbox")?;
        Ok(ids.len() as u64)
    }

    /// `VACUUM dwh.outbox`, when this run's role may (its owner; from PostgreSQL 17 also a role
    /// granted MAINTAIN); a job role on PostgreSQL 15 and 16 leaves it to autovacuum.
    async fn vacuum_outbox(&self, sent: u64) {
        let allowed = self
            .client
            .query_one(include_str!("sql/may_vacuum_outbox.sql"), &[])
            .await
            .is_ok_and(|row| row.get::<_, bool>(0));
        if !allowed {
            tracing::info!("dwh.outbox left to autovacuum: this role may not vacuum it");
            return;
        }
        if let Err(e) = self.client.batch_execute("VACUUM dwh.outbox").await {
            tracing::warn!("could not vacuum dwh.outbox after publishing {sent} messages: {e}");
        }
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
