//! `dwh replay`: testdata into the sources, as the order service and its dictionaries would.
//!
//! A file whose first line is a JSON document with an `_id` is a dictionary: each line is SET in
//! Redis under its `_id`. Any other file is orders: each line is one message value for the orders
//! topic, sent as is (junk lines included, that is the point). A folder means its `*.jsonl` files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use dwh_shared::config::{Kafka, Redis};
use dwh_shared::kafka;
use dwh_shared::progress::Progress;
use rdkafka::producer::FutureRecord;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Order and dictionary files (JSON lines), or folders of them
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Pace the orders, e.g. `5/min` or `100/s` (default: as fast as possible)
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<Duration>,
    #[command(flatten)]
    pub redis: Redis,
    #[command(flatten)]
    pub kafka: Kafka,
}

/// `N/s`, `N/min` or `N/h` as the pause between two messages.
fn parse_rate(raw: &str) -> Result<Duration, String> {
    let (count, unit) = raw.split_once('/').ok_or("expected N/s, N/min or N/h")?;
    let count: f64 = count
        .trim()
        .parse()
        .map_err(|_| format!("{count:?} is not a number"))?;
    let per = match unit.trim() {
        "s" | "sec" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown unit {other:?}: use s, min or h")),
    };
    if count <= 0.0 {
        return Err("the rate must be positive".into());
    }
    Ok(Duration::from_secs_f64(per / count))
}

fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("reading folder {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
                .collect();
            found.sort();
            out.extend(found);
        } else if path.is_file() {
            out.push(path.clone());
        } else {
            bail!("{} is neither a file nor a folder", path.display());
        }
    }
    Ok(out)
}

fn lines(path: &Path) -> Result<Vec<Vec<u8>>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
        .filter(|l| !l.is_empty())
        .collect())
}

fn dictionary_id(line: &[u8]) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_slice(line).ok()?;
    doc.get("_id")?.as_str().map(str::to_owned)
}

fn progress(len: usize, what: &str) -> Progress {
    Progress::new(what, len as u64)
}

pub async fn run(args: &Args) -> Result<String> {
    let mut orders = 0usize;
    let mut documents = 0usize;
    let producer = kafka::producer(&args.kafka)?;
    let mut redis = None;
    for file in files(&args.paths)? {
        let lines = lines(&file)?;
        if lines.first().and_then(|l| dictionary_id(l)).is_some() {
            if redis.is_none() {
                redis = Some(dwh_shared::redis::connect(&args.redis).await?);
            }
            let conn = redis.as_mut().expect("connected above");
            let mut pipe = redis::pipe();
            for line in &lines {
                let id = dictionary_id(line)
                    .with_context(|| format!("{}: a dictionary line has no _id", file.display()))?;
                pipe.set(id, line.as_slice()).ignore();
            }
            pipe.query_async::<()>(conn)
                .await
                .with_context(|| format!("loading {} into Redis", file.display()))?;
            documents += lines.len();
            continue;
        }
        let topic = &args.kafka.orders_topic;
        let bar = progress(lines.len(), "orders");
        match args.rate {
            None => {
                for chunk in lines.chunks(10_000) {
                    let mut deliveries = Vec::with_capacity(chunk.len());
                    for line in chunk {
                        let record = FutureRecord::<(), [u8]>::to(topic).payload(line.as_slice());
                        deliveries.push(producer.send_result(record).map_err(|(e, _)| e)?);
                    }
                    for delivery in deliveries {
                        delivery
                            .await?
                            .map_err(|(e, _)| e)
                            .with_context(|| format!("publishing to {topic}"))?;
                        bar.inc(1);
                    }
                }
            }
            Some(pause) => {
                for line in &lines {
                    let record = FutureRecord::<(), [u8]>::to(topic).payload(line.as_slice());
                    producer
                        .send(record, Duration::from_secs(30))
                        .await
                        .map_err(|(e, _)| e)
                        .with_context(|| format!("publishing to {topic}"))?;
                    bar.inc(1);
                    tokio::time::sleep(pause).await;
                }
            }
        }
        bar.finish();
        orders += lines.len();
    }
    kafka::flush(&producer)?;
    Ok(format!(
        "replay: published {orders} order message(s), loaded {documents} dictionary document(s)"
    ))
}
