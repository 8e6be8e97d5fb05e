//! Publishing a run's messages after its commit: the outbox (read a chunk at a time, pipelined,
//! each chunk deleted once acknowledged), the messages a job sent from memory ([`Outgoing`], behind
//! a rebuild row), and what earlier runs left unpublished ([`Run::republish`]).

use std::collections::BTreeMap;

use tokio_postgres::Transaction;
use tracing::Instrument;
use uuid::Uuid;

use super::{fault_point, Job, Run};
use crate::error::{Context, Result};
use crate::kafka;

/// Rows of the outbox published per round trip: enriched orders of up to a few KB each, so a
/// chunk held in memory (as rows, then as the producer's copies) stays in the tens of MB.
const PUBLISH_CHUNK: i64 = 10_000;

/// After publishing this many messages the outbox is vacuumed: its index is otherwise full of the
/// deleted rows until autovacuum comes, and every later run's `SELECT … ORDER BY id LIMIT` walks
/// them (measured: 2.7 s for a 5-order tick after a 1M-order backfill).
const VACUUM_AFTER: u64 = 10_000;

/// Messages for one topic, each a key and a value, in the order they are sent.
#[derive(Debug, Default)]
pub struct Outgoing {
    pub topic: String,
    pub records: Vec<(String, String)>,
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

impl Run {
    /// Publish a batch just committed: the messages it built in memory, if any (then its rebuild
    /// row goes), then the outbox. Returns the messages sent.
    pub(super) async fn publish(&self, batch_id: Uuid, outgoing: Option<&Outgoing>) -> Result<u64> {
        let mut sent = 0;
        if let Some(outgoing) = outgoing {
            sent += self.send(outgoing).await?;
            self.rebuilt(batch_id).await?;
        }
        Ok(sent + self.publish_outbox().await?)
    }

    /// What earlier runs of `job` left unpublished in this run's partitions, oldest first: the
    /// messages of each batch with a rebuild row, rebuilt by the job and sent, then the outbox
    /// ([`Run::publish_outbox`]). Returns the messages sent.
    pub async fn republish<J: Job>(&self, job: &mut J) -> Result<u64> {
        let keys: Vec<String> = self.partitions.iter().map(i32::to_string).collect();
        let waiting = self
            .client
            .query(
                include_str!("../sql/rebuilds_waiting.sql"),
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
                    include_str!("../sql/outbox_next.sql"),
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
            .execute(
                include_str!("../sql/mark_published.sql"),
                &[&self.job, &keys],
            )
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
            .query_one(include_str!("../sql/may_vacuum_outbox.sql"), &[])
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
