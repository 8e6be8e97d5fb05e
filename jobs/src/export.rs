//! `dwh export --out DIR|URL`: the showcases as Parquet files for BI tools and notebooks.
//!
//! Each showcase is read through a portal (the protocol's server-side cursor: `Transaction::bind`,
//! `query_portal`), `--chunk` rows at a time, each chunk turned into one Arrow batch and one
//! Parquet row group and streamed to the folder or bucket (a multipart upload, finished
//! atomically), so memory stays bounded whatever the table's size.
//! Hub keys are written as canonical uuid text, next to the source ids and the human names.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arrow::array::{
    ArrayRef, Int32Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use dwh_shared::archive;
use dwh_shared::bucket::Bucket;
use dwh_shared::config::{positive, Postgres};
use dwh_shared::pg;
use object_store::buffered::BufWriter;
use parquet::arrow::AsyncArrowWriter;
use tokio_postgres::types::Type;
use tokio_postgres::{Row, Transaction};

/// `dwh export`: write the three showcases as Parquet.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to write: a folder, or s3://bucket/prefix (credentials from AWS_* env vars)
    #[arg(long = "out", env = "DWH_EXPORT_OUT", value_name = "DIR|URL")]
    pub out: String,
    /// Rows per chunk (one Parquet row group); bounds the memory used
    #[arg(
        long,
        env = "DWH_EXPORT_CHUNK",
        value_name = "N",
        default_value_t = 100_000,
        value_parser = positive::<usize>,
        allow_negative_numbers = true
    )]
    pub chunk: usize,
    #[command(flatten)]
    pub pg: Postgres,
}

/// The showcases and the query that reads each.
const SHOWCASES: &[(&str, &str)] = &[
    (
        "user_product_counters",
        include_str!("sql/export_user_product_counters.sql"),
    ),
    (
        "user_category_counters",
        include_str!("sql/export_user_category_counters.sql"),
    ),
    ("user_tags", include_str!("sql/export_user_tags.sql")),
];

pub async fn run(args: &Args) -> Result<String> {
    let started = std::time::Instant::now();
    // Connected first: a run that cannot read the showcases creates no folder.
    let mut client = pg::connect(&args.pg).await?;
    let out = Bucket::open(&args.out, "export")?;
    let mut written = Vec::new();
    for (table, sql) in SHOWCASES {
        // One repeatable-read transaction per table: a consistent picture of it.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let rows = export(&tx, &out, table, sql, args.chunk)
            .await
            .with_context(|| format!("exporting cdm.{table} to {}", out.url()))?;
        tx.commit().await?;
        written.push(format!("{table}={rows}"));
    }
    Ok(format!(
        "export: out={} {} seconds={:.2}",
        out.url(),
        written.join(" "),
        started.elapsed().as_secs_f64()
    ))
}

async fn export(
    tx: &Transaction<'_>,
    out: &Bucket,
    table: &str,
    sql: &str,
    chunk: usize,
) -> Result<u64> {
    let statement = tx.prepare(sql).await?;
    let schema = schema(statement.columns())?;
    // A portal: the query's rows are fetched `chunk` at a time, as from a server-side cursor.
    let portal = tx.bind(&statement, &[]).await?;
    let per_fetch = i32::try_from(chunk).unwrap_or(i32::MAX);
    let path = out.path(&[&format!("{table}.parquet")]);
    let properties = archive::writer_properties()
        .into_builder()
        .set_max_row_group_row_count(Some(chunk))
        .build();
    let mut writer = AsyncArrowWriter::try_new(
        BufWriter::new(out.store().clone(), path),
        schema.clone(),
        Some(properties),
    )?;
    let mut total = 0u64;
    loop {
        let rows = tx.query_portal(&portal, per_fetch).await?;
        if rows.is_empty() {
            break;
        }
        total += rows.len() as u64;
        writer.write(&to_batch(&schema, &rows)?).await?;
    }
    writer.close().await?;
    Ok(total)
}

/// The Arrow schema of a query's columns (text, integers and timestamps are all the exports use).
fn schema(columns: &[tokio_postgres::Column]) -> Result<SchemaRef> {
    let fields = columns
        .iter()
        .map(|c| {
            let data_type = match *c.type_() {
                Type::TEXT | Type::VARCHAR => DataType::Utf8,
                Type::INT4 => DataType::Int32,
                Type::INT8 => DataType::Int64,
                Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                ref other => bail!("column {} has type {other}, not exported", c.name()),
            };
            Ok(Field::new(c.name(), data_type, true))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// One chunk of rows as an Arrow batch of `schema`.
fn to_batch(schema: &SchemaRef, rows: &[Row]) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (i, field) in schema.fields().iter().enumerate() {
        columns.push(match field.data_type() {
            DataType::Utf8 => {
                let mut b = StringBuilder::new();
                for r in rows {
                    b.append_option(r.try_get::<_, Option<&str>>(i)?);
                }
                Arc::new(b.finish())
            }
            DataType::Int32 => {
                let mut b = Int32Builder::with_capacity(rows.len());
                for r in rows {
                    b.append_option(r.try_get::<_, Option<i32>>(i)?);
                }
                Arc::new(b.finish())
            }
            DataType::Int64 => {
                let mut b = Int64Builder::with_capacity(rows.len());
                for r in rows {
                    b.append_option(r.try_get::<_, Option<i64>>(i)?);
                }
                Arc::new(b.finish())
            }
            _ => {
                let mut b =
                    TimestampMicrosecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
                for r in rows {
                    let t: Option<DateTime<Utc>> = r.try_get(i)?;
                    b.append_option(t.map(|t| t.timestamp_micros()));
                }
                Arc::new(b.finish())
            }
        });
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}
