//! `dwh copy-baseline` (hidden, for `scripts/bench`): the floor `dwh stg` is measured against.
//!
//! It parses order files exactly as `dwh stg` parses Kafka messages, builds the same Arrow batch
//! (`stg::orders_batch`) and `COPY`s it with the same `pg::copy_batch` into a plain table with the
//! same columns and no indexes, one transaction per `--max-messages` rows. Only the COPYs (encoding
//! included) are timed: no Kafka, no Redis, no merge, no outbox — what the bare COPY of the STG rows
//! costs on this PostgreSQL.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dwh_shared::config::Postgres;
use dwh_shared::kafka::Polled;
use dwh_shared::model::OrderMessage;
use dwh_shared::pg;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Order files (JSON lines, one message value a line)
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub pg: Postgres,
    /// Rows per COPY and transaction (as one `dwh stg` run)
    #[arg(
        long,
        env = "DWH_MAX_MESSAGES",
        value_name = "N",
        default_value_t = 200_000,
        value_parser = dwh_shared::config::positive::<usize>,
        allow_negative_numbers = true
    )]
    pub max_messages: usize,
}

const TABLE: &str = "public.bench_copy_baseline";

pub async fn run(args: &Args) -> Result<String> {
    let mut client = pg::connect(&args.pg).await?;
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {TABLE};
             CREATE TABLE {TABLE} (partition int4, kafka_offset int8, object_id int8,
                 object_type text, sent_dttm timestamp, update_ts timestamp, payload text)"
        ))
        .await
        .context("creating the baseline table")?;
    let (mut rows, mut copying, mut offset) = (0u64, Duration::ZERO, 0i64);
    let mut chunk: Vec<Polled> = Vec::with_capacity(args.max_messages);
    for file in &args.files {
        let reader = BufReader::with_capacity(
            1 << 20,
            std::fs::File::open(file).with_context(|| format!("reading {}", file.display()))?,
        );
        for line in reader.split(b'\n') {
            let payload = line.with_context(|| format!("reading {}", file.display()))?;
            chunk.push(Polled {
                partition: 0,
                offset,
                timestamp_ms: None,
                key: None,
                payload,
            });
            offset += 1;
            if chunk.len() == args.max_messages {
                let (n, took) = copy(&mut client, &chunk).await?;
                (rows, copying) = (rows + n, copying + took);
                chunk.clear();
            }
        }
    }
    if !chunk.is_empty() {
        let (n, took) = copy(&mut client, &chunk).await?;
        (rows, copying) = (rows + n, copying + took);
    }
    let seconds = copying.as_secs_f64();
    Ok(format!(
        "copy-baseline: rows={rows} seconds={seconds:.2} rows_per_s={:.0}",
        rows as f64 / seconds.max(1e-9)
    ))
}

/// Parse like `dwh stg` (untimed), then time the encoding, the COPY and the commit.
async fn copy(client: &mut tokio_postgres::Client, messages: &[Polled]) -> Result<(u64, Duration)> {
    let orders: Vec<(&Polled, OrderMessage)> = messages
        .iter()
        .filter_map(|m| OrderMessage::parse(&m.payload).ok().map(|o| (m, o)))
        .collect();
    let started = Instant::now();
    let batch = crate::stg::orders_batch(&orders)?;
    let tx = client.transaction().await?;
    let rows = pg::copy_batch(&tx, TABLE, &batch).await?;
    tx.commit().await.context("committing the baseline COPY")?;
    Ok((rows, started.elapsed()))
}
