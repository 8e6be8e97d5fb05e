//! The archive: every STG batch and dictionary snapshot as one Parquet file, in a folder or an
//! S3-compatible bucket, so the warehouse outlives Kafka's retention (DESIGN §8).
//!
//! A file holds the raw bytes exactly as received — the Kafka messages of a batch (topic,
//! partition, offset, timestamp, key) and the dictionary documents it read from Redis — so
//! `dwh backfill --from-archive` can feed them through the same STG load as Kafka did, with no
//! Kafka and no Redis. Names are deterministic (`orders/<from>_<to>_<batch id>.parquet`, the Kafka
//! timestamps of the batch's first and last message): a retried batch overwrites itself. Every
//! file is written with one `put`, which is atomic on both stores (S3: a single PUT; a folder:
//! object_store writes a staged file and renames it), so a reader never sees half a file.

use crate::error::{bail, Context, Result};
use arrow::array::{
    Array, BinaryArray, BinaryBuilder, Int32Array, Int32Builder, Int64Array, Int64Builder,
    RecordBatch, StringArray, StringBuilder, TimestampMillisecondArray,
    TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, TimeUnit};
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use uuid::Uuid;

use crate::bucket::Bucket;
use crate::columns;
use crate::kafka::Polled;

/// Where `dwh stg` and `dwh snapshot` archive what they load (off when unset).
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Archive")]
pub struct ArchiveArgs {
    /// Archive every batch as Parquet here: a folder, or s3://bucket/prefix (credentials from
    /// AWS_* env vars; AWS_ENDPOINT and AWS_ALLOW_HTTP for an S3-compatible server)
    #[arg(long = "archive", env = "DWH_ARCHIVE", value_name = "URL")]
    pub url: Option<String>,
}

/// Row kind of a Kafka message in an archive file.
pub const KIND_MESSAGE: &str = "message";
/// Row kind of a dictionary document (a Redis value) in an archive file.
pub const KIND_DICTIONARY: &str = "dictionary";

const ORDERS: &str = "orders";
const SNAPSHOTS: &str = "snapshots";
const STAMP: &str = "%Y%m%dT%H%M%S%.3fZ";

columns! {
    /// The columns of every archive file (documented in the README): written by [`rows`], read
    /// back by [`decode`].
    struct ArchiveColumns => ArchiveArrays {
        /// [`KIND_MESSAGE`] or [`KIND_DICTIONARY`].
        kind: StringBuilder, StringArray = DataType::Utf8, false;
        topic: StringBuilder, StringArray = DataType::Utf8, true;
        partition: Int32Builder, Int32Array = DataType::Int32, true;
        offset: Int64Builder, Int64Array = DataType::Int64, true;
        /// The Kafka timestamp; for a snapshot's documents, when it was taken.
        timestamp: TimestampMillisecondBuilder, TimestampMillisecondArray =
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), true;
        key: BinaryBuilder, BinaryArray = DataType::Binary, true;
        value: BinaryBuilder, BinaryArray = DataType::Binary, false;
        batch_id: StringBuilder, StringArray = DataType::Utf8, false;
    }
}

/// A dictionary document as Redis held it: its key and its raw value.
#[derive(Debug, Clone)]
pub struct Document {
    pub key: String,
    pub value: Vec<u8>,
}

/// One archive file read back.
#[derive(Debug, Default)]
pub struct Archived {
    pub batch_id: Uuid,
    /// The Kafka topic the messages came from (empty for a snapshot).
    pub topic: String,
    pub messages: Vec<Polled>,
    pub documents: Vec<Document>,
}

/// What an archive file holds, told by its folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An STG batch: the Kafka messages and the dictionary documents they named.
    Orders,
    /// A `dwh snapshot`: dictionary documents only.
    Snapshot,
}

/// An archive file as listed: where it is and the time span its name gives.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: Path,
    pub kind: Kind,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub batch_id: Uuid,
}

impl Entry {
    /// Whether the file's time span meets `[since, until)`.
    pub fn meets(&self, since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> bool {
        since.is_none_or(|s| self.to >= s) && until.is_none_or(|u| self.from < u)
    }
}

/// A folder or bucket holding the archive (cheap to clone: the store is shared).
#[derive(Clone)]
pub struct Archive {
    bucket: Bucket,
}

impl Archive {
    /// Open `url` to write to: `s3://bucket/prefix`, or a local folder (`file://` or a plain
    /// path, created if missing).
    pub fn open(url: &str) -> Result<Archive> {
        Ok(Archive {
            bucket: Bucket::open(url, "archive")?,
        })
    }

    /// Open `url` to read from: like [`Archive::open`], but a folder must exist already (reading
    /// never creates one). Whether it holds any archive file is for [`Archive::list`] to say.
    pub fn open_existing(url: &str) -> Result<Archive> {
        let expected = "expected the folder `dwh stg --archive` writes, with orders/ and \
                        snapshots/ of Parquet files";
        Ok(Archive {
            bucket: Bucket::open_existing(url, "archive", expected)?,
        })
    }

    /// The archive's URL, password masked.
    pub fn url(&self) -> &str {
        self.bucket.url()
    }

    /// Archive one STG batch: its messages from `topic` and the dictionary documents it read.
    /// Encoding runs on a blocking thread, so the caller can spawn this next to its own work.
    pub async fn write_batch(
        &self,
        batch_id: Uuid,
        topic: String,
        messages: Vec<Polled>,
        documents: Vec<Document>,
    ) -> Result<Path> {
        let stamps = messages.iter().filter_map(|m| m.timestamp_ms);
        let from = stamp(stamps.clone().min().unwrap_or(0));
        let to = stamp(stamps.max().unwrap_or(0));
        let path = self
            .bucket
            .path(&[ORDERS, &format!("{from}_{to}_{batch_id}.parquet")]);
        let file = tokio::task::spawn_blocking(move || {
            encode(&rows(batch_id, &topic, &messages, &documents, None)?)
        })
        .await
        .context("the archive encoder failed")??;
        self.put(&path, file).await?;
        Ok(path)
    }

    /// Archive one dictionary snapshot taken at `taken`.
    pub async fn write_snapshot(
        &self,
        batch_id: Uuid,
        taken: DateTime<Utc>,
        documents: &[Document],
    ) -> Result<Path> {
        let at = stamp(taken.timestamp_millis());
        let path = self
            .bucket
            .path(&[SNAPSHOTS, &format!("{at}_{at}_{batch_id}.parquet")]);
        let file = encode(&rows(batch_id, "", &[], documents, Some(taken))?)?;
        self.put(&path, file).await?;
        Ok(path)
    }

    async fn put(&self, path: &Path, file: Vec<u8>) -> Result<()> {
        self.bucket
            .store()
            .put(path, PutPayload::from(file))
            .await
            .with_context(|| format!("writing {path} to the archive {}", self.url()))?;
        Ok(())
    }

    /// Every archive file whose time span meets `[since, until)`, in the order they were loaded:
    /// by the time of their last message (a batch is loaded after its last message arrived) or
    /// of the snapshot.
    pub async fn list(
        &self,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Vec<Entry>> {
        let mut entries = Vec::new();
        for (folder, kind) in [(ORDERS, Kind::Orders), (SNAPSHOTS, Kind::Snapshot)] {
            let prefix = self.bucket.path(&[folder]);
            let metas: Vec<_> = self
                .bucket
                .store()
                .list(Some(&prefix))
                .try_collect()
                .await
                .with_context(|| format!("listing the archive {}", self.url()))?;
            for meta in metas {
                let Some(entry) = parse_name(&meta.location, kind) else {
                    tracing::warn!(path = %meta.location, "not an archive file; skipped");
                    continue;
                };
                if entry.meets(since, until) {
                    entries.push(entry);
                }
            }
        }
        entries
            .sort_by(|a, b| (a.to, a.from, a.path.as_ref()).cmp(&(b.to, b.from, b.path.as_ref())));
        Ok(entries)
    }

    /// Read one archive file back.
    pub async fn read(&self, entry: &Entry) -> Result<Archived> {
        let file = self
            .bucket
            .store()
            .get(&entry.path)
            .await
            .with_context(|| format!("reading {} from the archive {}", entry.path, self.url()))?
            .bytes()
            .await
            .with_context(|| format!("reading {} from the archive {}", entry.path, self.url()))?;
        decode(file, entry.batch_id).with_context(|| format!("decoding {}", entry.path))
    }
}

/// `20231002T091541.123Z` for milliseconds since the epoch.
fn stamp(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format(STAMP)
        .to_string()
}

fn parse_name(path: &Path, kind: Kind) -> Option<Entry> {
    let name = path.filename()?.strip_suffix(".parquet")?;
    let mut parts = name.splitn(3, '_');
    let from = NaiveDateTime::parse_from_str(parts.next()?, STAMP).ok()?;
    let to = NaiveDateTime::parse_from_str(parts.next()?, STAMP).ok()?;
    let batch_id = Uuid::parse_str(parts.next()?).ok()?;
    Some(Entry {
        path: path.clone(),
        kind,
        from: from.and_utc(),
        to: to.and_utc(),
        batch_id,
    })
}

/// Parse a `--since`/`--until` time: RFC 3339, `YYYY-MM-DD HH:MM:SS` (UTC) or `YYYY-MM-DD`.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    bail!("cannot read {text:?} as a time: use 2023-10-02, 2023-10-02 09:15:41 or RFC 3339")
}

/// The rows of one archive file: the messages, then the dictionary documents (stamped `taken`).
fn rows(
    batch_id: Uuid,
    topic: &str,
    messages: &[Polled],
    documents: &[Document],
    taken: Option<DateTime<Utc>>,
) -> Result<RecordBatch> {
    let n = messages.len() + documents.len();
    let bytes: usize = messages.iter().map(|m| m.payload.len()).sum::<usize>()
        + documents.iter().map(|d| d.value.len()).sum::<usize>();
    let mut c = ArchiveColumns::with_capacity(n);
    // Room for every value at once: their sizes are known.
    c.value = BinaryBuilder::with_capacity(n, bytes);
    let id = batch_id.to_string();
    for m in messages {
        c.kind.append_value(KIND_MESSAGE);
        c.topic.append_value(topic);
        c.partition.append_value(m.partition);
        c.offset.append_value(m.offset);
        c.timestamp.append_option(m.timestamp_ms);
        c.key.append_option(m.key.as_deref());
        c.value.append_value(&m.payload);
        c.batch_id.append_value(&id);
    }
    for d in documents {
        c.kind.append_value(KIND_DICTIONARY);
        c.topic.append_null();
        c.partition.append_null();
        c.offset.append_null();
        c.timestamp
            .append_option(taken.map(|t| t.timestamp_millis()));
        c.key.append_value(d.key.as_bytes());
        c.value.append_value(&d.value);
        c.batch_id.append_value(&id);
    }
    Ok(c.finish()?)
}

/// Writer settings of archive and export files: zstd, statistics for readers that prune.
pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build()
}

fn encode(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut file = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut file, batch.schema(), Some(writer_properties()))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(file)
}

fn decode(file: Bytes, batch_id: Uuid) -> Result<Archived> {
    let mut archived = Archived {
        batch_id,
        ..Archived::default()
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?
        .with_batch_size(65_536)
        .build()?;
    for batch in reader {
        let batch = batch?;
        let ArchiveArrays {
            kind,
            topic,
            partition,
            offset,
            timestamp,
            key,
            value,
            ..
        } = ArchiveArrays::of(&batch)?;
        for i in 0..batch.num_rows() {
            match kind.value(i) {
                KIND_MESSAGE => {
                    if archived.topic.is_empty() {
                        archived.topic = topic.value(i).to_owned();
                    }
                    archived.messages.push(Polled {
                        partition: partition.value(i),
                        offset: offset.value(i),
                        timestamp_ms: timestamp.is_valid(i).then(|| timestamp.value(i)),
                        key: key.is_valid(i).then(|| key.value(i).to_vec()),
                        payload: value.value(i).to_vec(),
                    });
                }
                KIND_DICTIONARY => archived.documents.push(Document {
                    key: String::from_utf8_lossy(key.value(i)).into_owned(),
                    value: value.value(i).to_vec(),
                }),
                other => bail!("unknown row kind {other:?}"),
            }
        }
    }
    Ok(archived)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_an_archive_never_creates_it() {
        let dir = std::env::temp_dir().join(format!("dwh-archive-{}", Uuid::new_v4()));
        let missing = dir.to_str().unwrap();
        let error = Archive::open_existing(missing).err().unwrap().to_string();
        assert!(
            error.contains(&format!("the archive folder {missing} does not exist")),
            "{error}"
        );
        assert!(!dir.exists(), "reading created the folder");

        std::fs::write(&dir, b"not a folder").unwrap();
        let error = Archive::open_existing(missing).err().unwrap().to_string();
        assert!(error.contains("is a file, not a folder"), "{error}");
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn a_file_has_the_documented_schema_and_documents_no_position() {
        let message = Polled {
            partition: 3,
            offset: 9,
            timestamp_ms: None,
            key: None,
            payload: b"{}".to_vec(),
        };
        let document = Document {
            key: "u1".into(),
            value: b"{}".to_vec(),
        };
        let taken = DateTime::from_timestamp_millis(1_696_238_141_000);
        let batch = rows(Uuid::nil(), "orders", &[message], &[document], taken).unwrap();
        // The README's table of the archive's columns.
        let utc = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        let documented = [
            ("kind", DataType::Utf8, false),
            ("topic", DataType::Utf8, true),
            ("partition", DataType::Int32, true),
            ("offset", DataType::Int64, true),
            ("timestamp", utc, true),
            ("key", DataType::Binary, true),
            ("value", DataType::Binary, false),
            ("batch_id", DataType::Utf8, false),
        ];
        let schema = batch.schema();
        let found: Vec<(&str, DataType, bool)> = schema
            .fields()
            .iter()
            .map(|f| (f.name().as_str(), f.data_type().clone(), f.is_nullable()))
            .collect();
        assert_eq!(found, documented);
        let c = ArchiveArrays::of(&batch).unwrap();
        assert_eq!(c.kind.value(0), KIND_MESSAGE);
        assert_eq!(c.kind.value(1), KIND_DICTIONARY);
        assert!(c.topic.is_null(1) && c.partition.is_null(1) && c.offset.is_null(1));
        assert_eq!((c.partition.value(0), c.offset.value(0)), (3, 9));
        // A message without a timestamp has none; a snapshot's documents have when it was taken.
        assert!(c.timestamp.is_null(0));
        assert_eq!(c.timestamp.value(1), 1_696_238_141_000);
        assert_eq!(c.key.value(1), b"u1");
        assert_eq!(c.batch_id.value(1), Uuid::nil().to_string());
    }

    #[tokio::test]
    async fn a_batch_reads_back_as_written_and_lists_in_range() {
        let dir = std::env::temp_dir().join(format!("dwh-archive-{}", Uuid::new_v4()));
        let archive = Archive::open(dir.to_str().unwrap()).unwrap();
        let messages = vec![
            Polled {
                partition: 0,
                offset: 7,
                timestamp_ms: Some(1_696_238_141_000),
                key: None,
                payload: b"{\"object_id\": 1}".to_vec(),
            },
            Polled {
                partition: 1,
                offset: 3,
                timestamp_ms: Some(1_696_238_200_500),
                key: Some(b"k".to_vec()),
                payload: b"not json \xff".to_vec(),
            },
        ];
        let documents = vec![Document {
            key: "626a81ce9a8cd1920641e272".into(),
            value: "{\"name\": \"Вера\"}".as_bytes().to_vec(),
        }];
        let id = Uuid::new_v4();
        let write =
            || archive.write_batch(id, "orders".into(), messages.clone(), documents.clone());
        let path = write().await.unwrap();
        assert_eq!(
            path.filename().unwrap(),
            format!("20231002T091541.000Z_20231002T091640.500Z_{id}.parquet")
        );
        // Written twice (a retry): still one file.
        write().await.unwrap();
        let all = archive.list(None, None).await.unwrap();
        assert_eq!(all.len(), 1);
        let back = archive.read(&all[0]).await.unwrap();
        assert_eq!(back.batch_id, id);
        assert_eq!(back.topic, "orders");
        assert_eq!(back.messages.len(), 2);
        assert_eq!(back.messages[1].payload, messages[1].payload);
        assert_eq!(back.messages[1].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(back.messages[0].timestamp_ms, messages[0].timestamp_ms);
        assert_eq!(back.documents[0].value, documents[0].value);

        let t = |s| Some(parse_time(s).unwrap());
        assert_eq!(archive.list(t("2023-10-03"), None).await.unwrap().len(), 0);
        assert_eq!(
            archive
                .list(None, t("2023-10-02 09:15:41"))
                .await
                .unwrap()
                .len(),
            0
        );
        assert_eq!(
            archive
                .list(t("2023-10-02 09:16:00"), None)
                .await
                .unwrap()
                .len(),
            1
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
