//! Tag events: one message to the tags topic whenever a user earns or loses a tag.
//!
//! A recompute reads the user's tags as `cdm.user_tags` held them, computes them again, and
//! queues the difference — a `granted` for each tag the user now holds and did not, a `revoked`
//! for each the user held and no longer does — in `dwh.outbox`, in the transaction that writes
//! the new tags. So a crash before the commit queues nothing (the next run computes the same
//! change again), a crash after it leaves the events for the next run to publish, and a replay
//! that changes no tag queues nothing. The event's id is fixed when it is queued: publishing it
//! again (after a crash mid-publish) repeats the same `event_id`. Folding the topic — the last
//! event per user × tag, an `event_id` seen before ignored — gives `cdm.user_tags`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use dwh_shared::vault;
use serde::Serialize;
use tokio_postgres::{GenericClient, Transaction};
use uuid::Uuid;

/// Where a recompute queues its events: under which batch (the outbox rows' and the event ids'),
/// for which topic.
#[derive(Debug, Clone, Copy)]
pub struct Events<'a> {
    pub batch_id: Uuid,
    pub topic: &'a str,
}

/// A user's count of distinct CLOSED orders under one rule (users with none have no entry), and
/// the rule's threshold: the user holds the tag when `order_cnt >= threshold`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagCount {
    pub user: Uuid,
    pub tag: String,
    pub order_cnt: i64,
    pub threshold: i64,
}

/// Which way a tag changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Granted,
    Revoked,
}

/// A change of one user's tag: what a recompute found against the tags held before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub user: Uuid,
    pub tag: String,
    pub kind: Kind,
    /// The user's qualifying orders now: at least the threshold for a grant, below it (0 when
    /// none, or when the rule is gone) for a revocation.
    pub order_cnt: i64,
}

/// The value of a message on the tags topic (its key is `user_id`). The contract the README
/// documents; the application reads it.
#[derive(Debug, Serialize)]
pub struct TagEvent<'a> {
    /// uuid v5 over (user, tag, event, batch): the same whenever this change is published again.
    pub event_id: Uuid,
    /// The user's id as the source (and the application) knows it.
    pub user_id: &'a str,
    /// The user's hub key in the warehouse (`cdm.*.user_id`, `dds.h_user`).
    pub user_pk: Uuid,
    pub tag: &'a str,
    pub event: Kind,
    pub order_cnt: i64,
    /// When the change was computed (UTC, RFC 3339).
    pub at: &'a str,
    /// The CDM batch that computed it.
    pub batch_id: Uuid,
}

/// The stable id of a change computed by batch `batch_id`.
pub fn event_id(user: Uuid, tag: &str, kind: Kind, batch_id: Uuid) -> Uuid {
    let kind = match kind {
        Kind::Granted => "granted",
        Kind::Revoked => "revoked",
    };
    vault::hub_key(&format!("tag-event|{user}|{tag}|{kind}|{batch_id}"))
}

/// The tags `users` hold now, as (user, tag) → orders, leaving out `frozen` tags (of rules that
/// cannot be evaluated: they are neither recomputed nor revoked).
pub async fn held<C: GenericClient>(
    client: &C,
    users: &[Uuid],
    frozen: &[String],
) -> Result<BTreeMap<(Uuid, String), i64>> {
    let rows = client
        .query(include_str!("../sql/tags_held.sql"), &[&users, &frozen])
        .await
        .context("reading the tags held before the recompute")?;
    Ok(rows
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect())
}

/// The changes from the tags held `before` to those `counts` grant, in (user, tag) order.
pub fn changes(before: &BTreeMap<(Uuid, String), i64>, counts: &[TagCount]) -> Vec<Change> {
    let now: BTreeMap<(Uuid, &str), &TagCount> = counts
        .iter()
        .map(|c| ((c.user, c.tag.as_str()), c))
        .collect();
    let holds = |c: &&TagCount| c.order_cnt >= c.threshold;
    let mut out = Vec::new();
    for (&(user, tag), count) in &now {
        if holds(count) && !before.contains_key(&(user, tag.to_owned())) {
            out.push(Change {
                user,
                tag: tag.to_owned(),
                kind: Kind::Granted,
                order_cnt: count.order_cnt,
            });
        }
    }
    for (user, tag) in before.keys() {
        let count = now.get(&(*user, tag.as_str()));
        if !count.is_some_and(holds) {
            out.push(Change {
                user: *user,
                tag: tag.clone(),
                kind: Kind::Revoked,
                order_cnt: count.map_or(0, |c| c.order_cnt),
            });
        }
    }
    out.sort_by(|a, b| (a.user, &a.tag).cmp(&(b.user, &b.tag)));
    out
}

/// Queue `changes` for the tags topic in the outbox of job `cdm`, keyed by the user's source id,
/// in their order. Returns the events queued.
pub async fn queue(tx: &Transaction<'_>, events: &Events<'_>, changes: &[Change]) -> Result<u64> {
    if changes.is_empty() {
        return Ok(0);
    }
    let users: Vec<Uuid> = changes
        .iter()
        .map(|c| c.user)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let source_ids: BTreeMap<Uuid, String> = tx
        .query(
            "SELECT h_user_pk, user_id FROM dds.h_user WHERE h_user_pk = ANY($1)",
            &[&users],
        )
        .await
        .context("reading the source ids of the users whose tags changed")?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    for change in changes {
        let user_id = source_ids
            .get(&change.user)
            .with_context(|| format!("user {} is not in dds.h_user", change.user))?;
        let event = TagEvent {
            event_id: event_id(change.user, &change.tag, change.kind, events.batch_id),
            user_id,
            user_pk: change.user,
            tag: &change.tag,
            event: change.kind,
            order_cnt: change.order_cnt,
            at: &at,
            batch_id: events.batch_id,
        };
        keys.push(user_id.clone());
        values.push(serde_json::to_string(&event)?);
    }
    tx.execute(
        include_str!("../sql/tags_queue_events.sql"),
        &[&events.batch_id, &events.topic, &keys, &values],
    )
    .await
    .context("queueing tag events in the outbox")?;
    Ok(changes.len() as u64)
}

/// Record a batch of `cdm` that no drain made (a `--full` chunk, a rule change) so that its
/// queued events are published like any other batch's: by this run, or by the next run of any of
/// `partitions` (the DDS topic's, which this run holds) if this one dies first.
pub async fn record_batch(
    tx: &Transaction<'_>,
    batch_id: Uuid,
    source: &str,
    partitions: &[i32],
    (users, rows): (usize, u64),
    seconds: f64,
) -> Result<()> {
    let ranges: serde_json::Map<String, serde_json::Value> = partitions
        .iter()
        .map(|p| (p.to_string(), serde_json::json!([0, 0])))
        .collect();
    tx.execute(
        include_str!("../sql/tags_record_batch.sql"),
        &[
            &batch_id,
            &source,
            &serde_json::Value::Object(ranges),
            &(users as i64),
            &(rows as i64),
            &seconds,
        ],
    )
    .await
    .context("recording the batch of the tag events")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(user: u128, tag: &str, order_cnt: i64, threshold: i64) -> TagCount {
        TagCount {
            user: Uuid::from_u128(user),
            tag: tag.into(),
            order_cnt,
            threshold,
        }
    }

    #[test]
    fn only_a_change_of_the_tag_is_an_event() {
        let before: BTreeMap<(Uuid, String), i64> = [
            ((Uuid::from_u128(1), "Soup Fan".to_owned()), 5),
            ((Uuid::from_u128(2), "Soup Fan".to_owned()), 7),
            ((Uuid::from_u128(3), "Gone".to_owned()), 1),
        ]
        .into();
        let counts = [
            // Still held, another count: no event.
            count(1, "Soup Fan", 6, 5),
            // Fell below the threshold: revoked with the count now.
            count(2, "Soup Fan", 4, 5),
            // Newly over it: granted.
            count(2, "Tea Drinker", 3, 3),
            // Under it and not held: nothing.
            count(4, "Tea Drinker", 2, 3),
        ];
        let found: Vec<(u128, String, Kind, i64)> = changes(&before, &counts)
            .into_iter()
            .map(|c| (c.user.as_u128(), c.tag, c.kind, c.order_cnt))
            .collect();
        let expected = [
            (2, "Soup Fan", Kind::Revoked, 4),
            (2, "Tea Drinker", Kind::Granted, 3),
            // Its rule is gone (or no qualifying order is left): revoked with 0.
            (3, "Gone", Kind::Revoked, 0),
        ]
        .map(|(u, t, k, n)| (u, t.to_owned(), k, n));
        assert_eq!(found, expected);
        // Held and still held at exactly the threshold: only the others are revoked.
        assert!(changes(&before, &[count(1, "Soup Fan", 5, 5)])
            .iter()
            .all(|c| c.kind == Kind::Revoked && c.user != Uuid::from_u128(1)));
    }

    #[test]
    fn an_event_is_the_documented_json_and_its_id_is_stable() {
        let user = vault::hub_key("626a81ce9a8cd1920641e272");
        let batch = Uuid::from_u128(7);
        let id = event_id(user, "Pizza Lover", Kind::Granted, batch);
        assert_eq!(id, event_id(user, "Pizza Lover", Kind::Granted, batch));
        assert_ne!(id, event_id(user, "Pizza Lover", Kind::Revoked, batch));
        assert_ne!(
            id,
            event_id(user, "Pizza Lover", Kind::Granted, Uuid::from_u128(8))
        );
        let event = TagEvent {
            event_id: id,
            user_id: "626a81ce9a8cd1920641e272",
            user_pk: user,
            tag: "Pizza Lover",
            event: Kind::Granted,
            order_cnt: 10,
            at: "2026-12-01T10:15:02.123Z",
            batch_id: batch,
        };
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            format!(
                "{{\"event_id\":\"{id}\",\"user_id\":\"626a81ce9a8cd1920641e272\",\
                 \"user_pk\":\"f58d869c-6e95-59bd-ae43-fc5e42b6f9cd\",\"tag\":\"Pizza Lover\",\
                 \"event\":\"granted\",\"order_cnt\":10,\"at\":\"2026-12-01T10:15:02.123Z\",\
                 \"batch_id\":\"00000000-0000-0000-0000-000000000007\"}}"
            )
        );
    }
}
