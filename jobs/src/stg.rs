//! The STG job: orders from Kafka and the dictionaries they name from Redis, into `stg`, as is.
//!
//! Read top to bottom as the data flows: drain → parse (junk to dead letters) → read dictionaries
//! → stage as Arrow and `COPY` → one set-based merge → the new versions' messages, enriched in
//! memory with the names STG holds (the outbox gets one rebuild row, not the messages) → record
//! offsets → commit → send the messages → publish. `dwh snapshot` loads every dictionary the same way.
//! With `--archive`, each batch (and each snapshot) is also written as Parquet before the commit;
//! `dwh backfill` runs this same load over archived batches, reading their dictionaries from the
//! archive instead of Redis.

use std::collections::HashMap;

use anyhow::{anyhow, Context, Result};
use arrow::array::{
    FixedSizeBinaryArray, FixedSizeBinaryBuilder, Int32Array, Int32Builder, Int64Array,
    Int64Builder, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, TimeUnit};
use chrono::NaiveDateTime;
use dwh_shared::archive::{Archive, ArchiveArgs, Document};
use dwh_shared::batch::{self, Job, Loaded, Outgoing, Run, Summary};
use dwh_shared::config::{Bounds, Kafka, OrdersTopic, Postgres, Redis, Share, StgTopic};
use dwh_shared::enriched::{self, Names, RestaurantNames, UserNames};
use dwh_shared::kafka::{Drained, Polled};
use dwh_shared::metrics::Push;
use dwh_shared::model::{DictKind, DictVersion, OrderMessage};
use dwh_shared::retry::{self, NotReady, Service};
use dwh_shared::{columns, pg, redis, vault};
use tokio_postgres::{Client, GenericClient, Transaction};
use tracing::{info, info_span, warn, Instrument};
use uuid::Uuid;

/// `dwh stg`: load what waits in the orders topic into STG and publish it enriched.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub pg: Postgres,
    #[command(flatten)]
    pub redis: Redis,
    #[command(flatten)]
    pub kafka: Kafka,
    #[command(flatten)]
    pub orders: OrdersTopic,
    #[command(flatten)]
    pub stg: StgTopic,
    #[command(flatten)]
    pub bounds: Bounds,
    #[command(flatten)]
    pub share: Share,
    #[command(flatten)]
    pub archive: ArchiveArgs,
    #[command(flatten)]
    pub push: Push,
}

/// `dwh snapshot`: load every user and restaurant Redis holds into STG.
#[derive(clap::Args, Debug)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub pg: Postgres,
    #[command(flatten)]
    pub redis: Redis,
    #[command(flatten)]
    pub archive: ArchiveArgs,
}

fn open_archive(args: &ArchiveArgs) -> Result<Option<Archive>> {
    Ok(args.url.as_deref().map(Archive::open).transpose()?)
}

pub async fn run(args: &Args) -> Result<Summary> {
    let mut job = Stg {
        dictionaries: Dictionaries::Redis(redis::Reader::connect(&args.redis).await?),
        source: args.orders.name.clone(),
        target: args.stg.name.clone(),
        archive: open_archive(&args.archive)?,
    };
    Ok(batch::run(
        &mut job,
        &args.pg,
        &args.kafka,
        &args.orders.name,
        &args.bounds,
        &args.share,
    )
    .await?)
}

/// The STG load step; `dwh stg` and `dwh backfill` differ only in where the dictionaries come
/// from and whether the batch is archived.
pub struct Stg {
    pub dictionaries: Dictionaries,
    /// The orders topic.
    pub source: String,
    /// The STG topic enriched orders are published to.
    pub target: String,
    /// Where each batch is archived before its commit, if anywhere.
    pub archive: Option<Archive>,
}

/// Where a batch's users and restaurants are read from.
pub enum Dictionaries {
    /// Live: the documents the batch names, read from Redis now.
    Redis(redis::Reader),
    /// Rebuilding: the documents the original batch read, from its archive file.
    Archived(Vec<Document>),
}

impl Dictionaries {
    /// The dictionary documents under `ids` (for an archived batch: what it read back then).
    ///
    /// A Redis that dropped the connection is reconnected to and read again, within the retry
    /// bounds. A Redis that answers with no keys at all while STG already holds dictionaries lost
    /// its data (it keeps none on disk): that is waited out the same way rather than loading the
    /// batch without names and categories, and ends the run when the dictionaries stay away.
    async fn read(&mut self, tx: &Transaction<'_>, ids: &[String]) -> Result<redis::Snapshot> {
        let reader = match self {
            Dictionaries::Redis(reader) => reader,
            Dictionaries::Archived(documents) => return Ok(parse_documents(documents)),
        };
        retry::run(Service::Redis, async || {
            let snapshot = reader.try_read(ids).await?;
            if snapshot.versions.is_empty()
                && snapshot.missing > 0
                && reader.try_is_empty().await?
                && stg_has_dictionaries(tx).await?
            {
                return Err(NotReady {
                    service: Service::Redis,
                    reason: "Redis holds no dictionaries although STG has loaded some: it lost \
                             its data (restarted?); load the users and restaurants into it again"
                        .to_owned(),
                }
                .into());
            }
            Ok(snapshot)
        })
        .await
    }
}

/// Whether STG holds any user or restaurant yet.
async fn stg_has_dictionaries(tx: &Transaction<'_>) -> Result<bool> {
    let row = tx
        .query_one(
            "SELECT EXISTS (SELECT FROM stg.users) OR EXISTS (SELECT FROM stg.restaurants)",
            &[],
        )
        .await
        .context("looking for dictionaries in STG")?;
    Ok(row.get(0))
}

/// Parse archived dictionary documents the way a Redis read does.
pub fn parse_documents(documents: &[Document]) -> redis::Snapshot {
    let mut snapshot = redis::Snapshot::default();
    for d in documents {
        match DictVersion::parse(&d.key, &d.value) {
            Ok(version) => snapshot.versions.push(version),
            Err(reason) => snapshot.unreadable.push((d.key.clone(), reason)),
        }
    }
    snapshot
}

/// The documents of dictionary versions as they are archived (key = id, value = raw document).
fn documents(versions: &[DictVersion]) -> Vec<Document> {
    versions
        .iter()
        .map(|v| Document {
            key: v.id.clone(),
            value: v.doc.clone().into_bytes(),
        })
        .collect()
}

impl Job for Stg {
    const NAME: &'static str = "stg";

    async fn load(
        &mut self,
        tx: &Transaction<'_>,
        drained: &Drained,
        batch_id: Uuid,
    ) -> Result<Loaded> {
        let (orders, dead) = batch::parse_all(drained, OrderMessage::parse);
        let ids: Vec<String> = orders
            .iter()
            .flat_map(|(_, o)| [o.user_id.clone(), o.restaurant_id.clone()])
            .collect();
        let dictionaries = self
            .dictionaries
            .read(tx, &ids)
            .instrument(info_span!("dictionaries", ids = ids.len()))
            .await?;
        for (key, reason) in &dictionaries.unreadable {
            warn!(key, reason, "unreadable dictionary document left out");
        }
        // The archive file is encoded and written while PostgreSQL merges; it must be stored
        // before this load returns, i.e. before the commit.
        let archiving = self.archive.clone().map(|archive| {
            let docs = documents(&dictionaries.versions);
            let (topic, messages) = (drained.topic.clone(), drained.messages.clone());
            tokio::spawn(async move { archive.write_batch(batch_id, topic, messages, docs).await })
        });
        pg::stage(tx, "stage_orders", &orders_batch(&orders)?).await?;
        batch::fault_point(Self::NAME, "after-copy");
        load_dictionaries(tx, &dictionaries.versions, batch_id).await?;
        let new_versions = tx
            .query(
                include_str!("sql/stg_merge.sql"),
                &[&batch_id, &self.source],
            )
            .instrument(info_span!("merge", table = "stg.order_events"))
            .await
            .context("merging orders into stg.order_events")?;
        let positions: Vec<(i32, i64)> =
            new_versions.iter().map(|r| (r.get(0), r.get(1))).collect();
        let rows = positions.len() as u64;
        let mut outgoing = None;
        if !positions.is_empty() {
            let records = new_messages(tx, &orders, &positions)
                .instrument(info_span!("messages", orders = positions.len()))
                .await?;
            batch::queue_rebuild(tx, Self::NAME, batch_id, &self.target).await?;
            outgoing = Some(Outgoing {
                topic: self.target.clone(),
                records,
            });
        }
        if let Some(archiving) = archiving {
            archiving.await.context("the archive writer failed")??;
        }
        Ok(Loaded {
            rows,
            dead,
            outgoing,
        })
    }

    /// The messages of the order versions the batch stored, as its load built them (with the
    /// names STG holds now). Crash recovery only: `stg.order_events` is read by its batch id
    /// without an index.
    async fn rebuild(&mut self, client: &Client, batch_id: Uuid) -> Result<Option<Outgoing>> {
        let rows = client
            .query(include_str!("sql/stg_batch_versions.sql"), &[&batch_id])
            .await
            .context("reading the batch's order versions")?;
        let orders = rows
            .iter()
            .map(|row| {
                let order =
                    OrderMessage::with_payload(row.get(2), row.get(3), row.get(4), row.get(5))
                        .map_err(|reason| anyhow!("a stored order version: {reason}"))?;
                Ok((row.get(0), row.get(1), order))
            })
            .collect::<Result<Vec<(i32, i64, OrderMessage)>>>()?;
        let new = orders.iter().map(|(p, o, order)| (*p, *o, order)).collect();
        Ok(Some(Outgoing {
            topic: self.target.clone(),
            records: messages(client, new).await?,
        }))
    }

    /// Publish the dictionary versions STG holds but has not published (loaded by this batch, by
    /// `dwh snapshot` or by a backfill) as a batch of their own, so that a renamed user or a
    /// changed menu reaches DDS even when no order names it. Parallel workers each claim what is
    /// unclaimed; a version is claimed once.
    async fn after_commit(&mut self, run: &Run) -> Result<()> {
        publish_dictionaries(run, &self.target).await
    }
}

/// The STG topic's message of each order version new to STG (read at `positions` of this batch),
/// built from the parsed order and the names STG now holds (this batch's dictionaries included).
async fn new_messages(
    tx: &Transaction<'_>,
    orders: &[(&Polled, OrderMessage)],
    positions: &[(i32, i64)],
) -> Result<Vec<(String, String)>> {
    let at: HashMap<(i32, i64), &OrderMessage> = orders
        .iter()
        .map(|(message, order)| ((message.partition, message.offset), order))
        .collect();
    let new = positions
        .iter()
        .map(|&(partition, offset)| {
            let order = at.get(&(partition, offset)).with_context(|| {
                format!("STG merged a version at {partition}/{offset} the batch does not hold")
            })?;
            Ok((partition, offset, *order))
        })
        .collect::<Result<_>>()?;
    messages(tx, new).await
}

/// The messages of `new` order versions (partition, offset, order), in the order of order id,
/// then position, enriched with the names STG holds now.
async fn messages<C: GenericClient>(
    client: &C,
    mut new: Vec<(i32, i64, &OrderMessage)>,
) -> Result<Vec<(String, String)>> {
    new.sort_unstable_by_key(|&(partition, offset, order)| (order.object_id, partition, offset));
    let names = read_names(client, &new).await?;
    Ok(new
        .into_iter()
        .map(|(partition, offset, order)| enriched::order_message(order, partition, offset, &names))
        .collect())
}

/// The names STG holds of the users and restaurants `new` orders name (newest versions).
async fn read_names<C: GenericClient>(
    client: &C,
    new: &[(i32, i64, &OrderMessage)],
) -> Result<Names> {
    let mut users: Vec<&str> = new.iter().map(|(_, _, o)| o.user_id.as_str()).collect();
    let mut restaurants: Vec<&str> = new
        .iter()
        .map(|(_, _, o)| o.restaurant_id.as_str())
        .collect();
    for ids in [&mut users, &mut restaurants] {
        ids.sort_unstable();
        ids.dedup();
    }
    let mut names = Names::default();
    for row in client
        .query(include_str!("sql/stg_users_named.sql"), &[&users])
        .await
        .context("reading the names of the batch's users")?
    {
        let user = UserNames {
            name: row.get(1),
            login: row.get(2),
            update_ts: row.get(3),
        };
        names.users.insert(row.get(0), user);
    }
    for row in client
        .query(
            include_str!("sql/stg_restaurants_named.sql"),
            &[&restaurants],
        )
        .await
        .context("reading the names and menus of the batch's restaurants")?
    {
        let id: String = row.get(0);
        if let Some(dish) = row.get::<_, Option<&str>>(3) {
            names.list_dish(&id, dish, row.get(4));
        }
        names
            .restaurants
            .entry(id)
            .or_insert_with(|| RestaurantNames {
                name: row.get(1),
                update_ts: row.get(2),
            });
    }
    Ok(names)
}

/// Claim the unpublished dictionary versions under a new batch of `run`'s partitions and queue
/// them for `topic`; nothing when there are none.
pub async fn publish_dictionaries(run: &Run, topic: &str) -> Result<()> {
    let batch_id = vault::hub_key(&format!(
        "dictionaries|{}|{}",
        run.topic,
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    ));
    let ranges: serde_json::Map<String, serde_json::Value> = run
        .partitions
        .iter()
        .map(|p| (p.to_string(), serde_json::json!([0, 0])))
        .collect();
    let queued: i64 = run
        .client
        .query_opt(
            include_str!("sql/stg_publish_dictionaries.sql"),
            &[&batch_id, &topic, &serde_json::Value::Object(ranges)],
        )
        .instrument(info_span!("dictionaries"))
        .await
        .context("queueing dictionary versions for the STG topic")?
        .map_or(0, |row| row.get(0));
    if queued > 0 {
        info!(versions = queued, %batch_id, "dictionary versions queued");
    }
    Ok(())
}

fn micros(ts: NaiveDateTime) -> i64 {
    ts.and_utc().timestamp_micros()
}

columns! {
    /// The orders of a batch as they are copied into `stage_orders` (and by `dwh copy-baseline`).
    struct OrderColumns {
        partition: Int32Builder, Int32Array = DataType::Int32, false;
        kafka_offset: Int64Builder, Int64Array = DataType::Int64, false;
        object_id: Int64Builder, Int64Array = DataType::Int64, false;
        object_type: StringBuilder, StringArray = DataType::Utf8, false;
        sent_dttm: TimestampMicrosecondBuilder, TimestampMicrosecondArray =
            DataType::Timestamp(TimeUnit::Microsecond, None), false;
        update_ts: TimestampMicrosecondBuilder, TimestampMicrosecondArray =
            DataType::Timestamp(TimeUnit::Microsecond, None), false;
        payload: StringBuilder, StringArray = DataType::Utf8, false;
    }
}

columns! {
    /// Dictionary versions as they are copied into `stage_users` / `stage_restaurants`.
    struct DictionaryColumns {
        id: StringBuilder, StringArray = DataType::Utf8, false;
        /// The version's uuid (16 bytes).
        version: FixedSizeBinaryBuilder, FixedSizeBinaryArray = DataType::FixedSizeBinary(16), false;
        update_ts: TimestampMicrosecondBuilder, TimestampMicrosecondArray =
            DataType::Timestamp(TimeUnit::Microsecond, None), true;
        doc: StringBuilder, StringArray = DataType::Utf8, false;
    }
}

/// The orders of a batch as the Arrow batch that is copied into `stage_orders`.
pub(crate) fn orders_batch(orders: &[(&Polled, OrderMessage)]) -> Result<RecordBatch> {
    let mut columns = OrderColumns::with_capacity(orders.len());
    for (message, order) in orders {
        columns.partition.append_value(message.partition);
        columns.kafka_offset.append_value(message.offset);
        columns.object_id.append_value(order.object_id);
        columns.object_type.append_value(&order.object_type);
        columns.sent_dttm.append_value(micros(order.sent_dttm));
        columns.update_ts.append_value(micros(order.update_ts));
        columns.payload.append_value(&order.payload);
    }
    Ok(columns.finish()?)
}

/// Keep each distinct dictionary version once in `stg.users` / `stg.restaurants`.
pub async fn load_dictionaries(
    tx: &Transaction<'_>,
    versions: &[DictVersion],
    batch_id: Uuid,
) -> Result<u64> {
    let mut loaded = 0;
    for kind in [DictKind::User, DictKind::Restaurant] {
        let of_kind: Vec<&DictVersion> = versions.iter().filter(|v| v.kind == kind).collect();
        if of_kind.is_empty() {
            continue;
        }
        let stage = format!("stage_{}", kind.table().trim_start_matches("stg."));
        pg::stage(tx, &stage, &dictionary_batch(&of_kind)?).await?;
        loaded += tx
            .execute(
                &include_str!("sql/stg_dictionary_merge.sql")
                    .replace("{table}", kind.table())
                    .replace("{stage}", &stage),
                &[&batch_id],
            )
            .await
            .with_context(|| format!("merging {}", kind.table()))?;
    }
    Ok(loaded)
}

fn dictionary_batch(versions: &[&DictVersion]) -> Result<RecordBatch> {
    let mut columns = DictionaryColumns::with_capacity(versions.len());
    for v in versions {
        columns.id.append_value(&v.id);
        columns.version.append_value(v.version.as_bytes())?;
        columns.update_ts.append_option(v.update_ts.map(micros));
        columns.doc.append_value(&v.doc);
    }
    Ok(columns.finish()?)
}

/// `dwh snapshot`: every key of Redis, read in chunks, each new version kept once.
pub async fn snapshot(args: &SnapshotArgs) -> Result<Summary> {
    let started = std::time::Instant::now();
    let mut client = pg::connect(&args.pg).await?;
    let mut redis = redis::connect(&args.redis).await?;
    let keys = redis::all_keys(&mut redis).await?;
    let dictionaries = redis::read(&mut redis, &keys).await?;
    for (key, reason) in &dictionaries.unreadable {
        warn!(key, reason, "unreadable dictionary document left out");
    }
    let mut versions: Vec<String> = dictionaries
        .versions
        .iter()
        .map(|v| v.version.to_string())
        .collect();
    versions.sort();
    let batch_id = vault::hub_key(&format!("snapshot|{}", versions.join(",")));
    let tx = client.transaction().await?;
    let loaded = load_dictionaries(&tx, &dictionaries.versions, batch_id).await?;
    if let Some(archive) = open_archive(&args.archive)? {
        let docs = documents(&dictionaries.versions);
        archive
            .write_snapshot(batch_id, chrono::Utc::now(), &docs)
            .await?;
    }
    tx.commit().await?;
    info!(
        keys = keys.len(),
        new_versions = loaded,
        "dictionary snapshot loaded"
    );
    Ok(Summary {
        batch_id: Some(batch_id),
        consumed: keys.len(),
        loaded,
        seconds: started.elapsed().as_secs_f64(),
        ..Summary::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_staged_batches_have_the_declared_columns() {
        let payload = r#"{"restaurant": {"id": "r1"}, "user": {"id": "u1"},
            "date": "2024-01-02 03:04:05", "update_ts": "2024-01-02 03:05:00",
            "final_status": "CLOSED", "cost": 200, "payment": 200,
            "order_items": [{"id": "d1", "name": "Pizza", "price": 200, "quantity": 1}]}"#;
        let order =
            OrderMessage::with_payload(7, "order".into(), NaiveDateTime::default(), payload)
                .unwrap();
        let polled = Polled {
            partition: 2,
            offset: 40,
            timestamp_ms: None,
            key: None,
            payload: Vec::new(),
        };
        let batch = orders_batch(&[(&polled, order)]).unwrap();
        let schema = batch.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "partition",
                "kafka_offset",
                "object_id",
                "object_type",
                "sent_dttm",
                "update_ts",
                "payload"
            ]
        );
        assert_eq!(batch.num_rows(), 1);

        let version =
            DictVersion::parse("u1", br#"{"_id": "u1", "name": "Ann", "login": "ann"}"#).unwrap();
        let batch = dictionary_batch(&[&version]).unwrap();
        assert_eq!(batch.schema(), DictionaryColumns::schema());
        assert_eq!(batch.column_by_name("update_ts").unwrap().null_count(), 1);
    }
}
