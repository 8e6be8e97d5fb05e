//! `dwh offsets`: where each job stands in the topic it reads, and moving a job's offsets.
//!
//! Shows, per job and partition, the offset PostgreSQL stores (the truth), the log's start and end
//! on the broker, the consumer group's committed offset (what Kafka's own tooling shows), the lag
//! and whether the stored offset still lies within the log. `--reset` moves a job's stored
//! offsets under the job's partition locks — after a topic was recreated, or to skip or re-read
//! part of a log on purpose — and is the one supported way to change them by hand.

use std::fmt::Write as _;

use anyhow::Result;
use dwh_shared::config::{non_negative, Kafka, LockWait, Postgres, Topics};
use dwh_shared::offsets::{self, PartitionOffsets, ResetTo};
use dwh_shared::pg;
use serde::Serialize;

use crate::status::jobs;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The job to show or reset (default: show all three)
    #[arg(value_name = "JOB", value_parser = ["stg", "dds", "cdm"])]
    pub job: Option<String>,
    /// Move the job's stored offsets to `earliest` (the log's start), `latest` (its end) or an
    /// offset; the job's runs must not be running (its locks are taken)
    #[arg(long, value_name = "TO", requires = "job")]
    pub reset: Option<ResetTo>,
    /// With --reset: only this partition (repeatable; default every partition)
    #[arg(
        long = "partition",
        value_name = "N",
        requires = "reset",
        value_parser = non_negative::<i32>
    )]
    pub partitions: Vec<i32>,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
    // How long --reset waits for a running job's locks.
    #[command(flatten)]
    pub lock: LockWait,
    #[command(flatten)]
    pub pg: Postgres,
    #[command(flatten)]
    pub kafka: Kafka,
    #[command(flatten)]
    pub topics: Topics,
}

/// One job's partitions, as shown.
#[derive(Debug, Serialize)]
struct JobOffsets {
    job: String,
    topic: String,
    partitions: Vec<PartitionOffsets>,
}

pub async fn run(args: &Args) -> Result<String> {
    let client = pg::connect(&args.pg).await?;
    let chosen: Vec<(&str, &str)> = jobs(&args.topics)
        .into_iter()
        .filter(|(job, _)| args.job.as_deref().is_none_or(|j| j == *job))
        .collect();
    if let (Some(to), [(job, topic)]) = (args.reset, chosen.as_slice()) {
        let wait = args.lock.duration();
        let moved = offsets::reset(
            &client,
            &args.kafka,
            (job, topic),
            &args.partitions,
            to,
            wait,
        )
        .await?;
        let parts: Vec<String> = moved
            .iter()
            .map(|(p, before, now)| {
                let before = before.map_or("none".to_owned(), |b| b.to_string());
                format!("{p}: {before} → {now}")
            })
            .collect();
        return Ok(format!(
            "offsets: job {job} in {topic} reset ({})",
            parts.join(", ")
        ));
    }
    let mut shown = Vec::new();
    for (job, topic) in chosen {
        shown.push(JobOffsets {
            job: job.to_owned(),
            topic: topic.to_owned(),
            partitions: offsets::describe(&client, &args.kafka, job, topic, true).await?,
        });
    }
    Ok(if args.json {
        serde_json::to_string_pretty(&shown)?
    } else {
        render(&shown)
    })
}

fn render(shown: &[JobOffsets]) -> String {
    let mut out = format!(
        "{:<4} {:<30} {:>9} {:>12} {:>12} {:>12} {:>12} {:>10}  state",
        "job", "topic", "partition", "stored", "log start", "log end", "group", "lag"
    );
    let or_dash = |o: Option<i64>| o.map_or("-".to_owned(), |o| o.to_string());
    for job in shown {
        for p in &job.partitions {
            let _ = write!(
                out,
                "\n{:<4} {:<30} {:>9} {:>12} {:>12} {:>12} {:>12} {:>10}  {}",
                job.job,
                job.topic,
                p.partition,
                or_dash(p.stored),
                p.log_start,
                p.log_end,
                or_dash(p.group),
                p.lag,
                p.state.word()
            );
        }
    }
    out
}
