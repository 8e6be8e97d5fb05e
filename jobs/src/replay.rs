//! `dwh replay`: testdata into the sources, as the order service and its dictionaries would.
//!
//! A file whose first line is a JSON document with an `_id` is a dictionary: each line is SET in
//! Redis under its `_id`. Any other file is orders: each line is one message value for the orders
//! topic, sent as is (junk lines included, that is the point). A folder means its `*.jsonl` files.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use dwh_shared::config::{Kafka, OrdersTopic, Redis};
use dwh_shared::kafka;
use dwh_shared::progress::Progress;
use rdkafka::producer::FutureRecord;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Order and dictionary files (JSON lines), or folders of them
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,
    /// Pace the orders, e.g. `5/min` or `100/s` (default: as fast as possible)
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub rate: Option<Duration>,
    #[command(flatten)]
    pub redis: Redis,
    #[command(flatten)]
    pub kafka: Kafka,
    #[command(flatten)]
    pub orders: OrdersTopic,
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
    if count.is_nan() || count <= 0.0 {
        return Err("the rate must be positive".into());
    }
    Duration::try_from_secs_f64(per / count).map_err(|_| format!("{raw:?} is not a rate"))
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

/// Lines of a file read one chunk at a time (so a file of millions of orders is never held whole),
/// without line ends and blank lines.
struct Lines {
    reader: BufReader<File>,
    path: PathBuf,
}

impl Lines {
    fn open(path: &Path) -> Result<Lines> {
        let file = File::open(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Lines {
            reader: BufReader::with_capacity(1 << 20, file),
            path: path.to_owned(),
        })
    }

    /// Up to `max` next lines; empty at the end of the file. `bytes` grows by what was read.
    fn chunk(&mut self, max: usize, bytes: &mut u64) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::with_capacity(max.min(16_384));
        while out.len() < max {
            let mut line = Vec::new();
            let read = self
                .reader
                .read_until(b'\n', &mut line)
                .with_context(|| format!("reading {}", self.path.display()))?;
            if read == 0 {
                break;
            }
            *bytes += read as u64;
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if !line.is_empty() {
                out.push(line);
            }
        }
        Ok(out)
    }
}

fn dictionary_id(line: &[u8]) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_slice(line).ok()?;
    doc.get("_id")?.as_str().map(str::to_owned)
}

/// Lines sent or SET per round.
const CHUNK: usize = 10_000;

/// What a replay sent so far: acknowledged by the broker or by Redis.
#[derive(Debug, Default)]
struct Sent {
    orders: usize,
    documents: usize,
}

/// A replay stopped by Ctrl-C (SIGINT): what went out before it stopped.
#[derive(Debug)]
pub struct Interrupted {
    orders: usize,
    documents: usize,
    /// The file it was sending.
    file: PathBuf,
}

impl Interrupted {
    fn at(sent: &Sent, file: &Path) -> Interrupted {
        Interrupted {
            orders: sent.orders,
            documents: sent.documents,
            file: file.to_owned(),
        }
    }
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "interrupted: published {} order message(s) and loaded {} dictionary document(s) \
             before it stopped (in {})",
            self.orders,
            self.documents,
            self.file.display()
        )
    }
}

impl std::error::Error for Interrupted {}

/// Ctrl-C (SIGINT) asks the replay to stop after the message or chunk in flight, so what it says
/// went out did; a second one ends the process at once. The handler is in place on return.
fn listen_for_ctrl_c() -> Result<watch::Receiver<bool>> {
    let mut interrupts =
        signal(SignalKind::interrupt()).context("listening for Ctrl-C (SIGINT)")?;
    let (ask, asked) = watch::channel(false);
    tokio::spawn(async move {
        interrupts.recv().await;
        let _ = ask.send(true);
        interrupts.recv().await;
        std::process::exit(130);
    });
    Ok(asked)
}

pub async fn run(args: &Args) -> Result<String> {
    let mut asked = listen_for_ctrl_c()?;
    let mut sent = Sent::default();
    let mut topic_checked = false;
    let producer = kafka::producer(&args.kafka)?;
    let mut redis = None;
    for file in files(&args.paths)? {
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        let mut lines = Lines::open(&file)?;
        let mut read = 0u64;
        // The first line alone tells a dictionary from orders.
        let mut chunk = lines.chunk(1, &mut read)?;
        if chunk.first().and_then(|l| dictionary_id(l)).is_some() {
            if redis.is_none() {
                redis = Some(dwh_shared::redis::connect(&args.redis).await?);
            }
            let conn = redis.as_mut().expect("connected above");
            while !chunk.is_empty() {
                if *asked.borrow() {
                    return Err(Interrupted::at(&sent, &file).into());
                }
                let mut pipe = redis::pipe();
                for line in &chunk {
                    let id = dictionary_id(line).with_context(|| {
                        format!("{}: a dictionary line has no _id", file.display())
                    })?;
                    pipe.set(id, line.as_slice()).ignore();
                }
                pipe.query_async::<()>(conn)
                    .await
                    .with_context(|| format!("loading {} into Redis", file.display()))?;
                sent.documents += chunk.len();
                chunk = lines.chunk(CHUNK, &mut read)?;
            }
            continue;
        }
        let topic = &args.orders.name;
        if !topic_checked {
            // The orders topic exists and the brokers let us in (a refusal is one line at once;
            // a producer alone would only time out).
            kafka::topic_partitions(&args.kafka, topic).await?;
            topic_checked = true;
        }
        let progress = Progress::new("order bytes", size);
        let mut shown = 0;
        let per_round = if args.rate.is_some() { 1 } else { CHUNK };
        while !chunk.is_empty() {
            if *asked.borrow() {
                progress.stop();
                return Err(Interrupted::at(&sent, &file).into());
            }
            match args.rate {
                None => {
                    let mut deliveries = Vec::with_capacity(chunk.len());
                    for line in &chunk {
                        let record = FutureRecord::<(), [u8]>::to(topic).payload(line.as_slice());
                        deliveries.push(producer.send_result(record).map_err(|(e, _)| e)?);
                    }
                    for delivery in deliveries {
                        delivery
                            .await?
                            .map_err(|(e, _)| e)
                            .with_context(|| format!("publishing to {topic}"))?;
                    }
                    sent.orders += chunk.len();
                }
                Some(pause) => {
                    for line in &chunk {
                        let record = FutureRecord::<(), [u8]>::to(topic).payload(line.as_slice());
                        producer
                            .send(record, Duration::from_secs(30))
                            .await
                            .map_err(|(e, _)| e)
                            .with_context(|| format!("publishing to {topic}"))?;
                        sent.orders += 1;
                        // The pause ends early on Ctrl-C.
                        tokio::select! {
                            _ = tokio::time::sleep(pause) => {}
                            _ = asked.wait_for(|asked| *asked) => {}
                        }
                    }
                }
            }
            progress.inc(read - shown);
            shown = read;
            chunk = lines.chunk(per_round, &mut read)?;
        }
        progress.finish();
    }
    kafka::flush(&producer)?;
    Ok(format!(
        "replay: published {} order message(s), loaded {} dictionary document(s)",
        sent.orders, sent.documents
    ))
}
