//! `dwh status`: is the pipeline healthy? One look at every job and every layer.
//!
//! Per job: its newest batch (id, when, rows, seconds), its lag (messages Kafka holds beyond the
//! offsets PostgreSQL stores for it), its dead letters (count, newest reason); then the rows of
//! every table per layer. A human table by default, `--json` for machines. A job is **stale** when
//! messages wait for it and its newest batch is older than `--stale-secs` (or it never ran); a
//! quiet source is not stale. Any stale job makes the exit code 2 (an error is 1), so the command
//! can back a Kubernetes probe or an alert. A job whose stored offsets lie beyond the log (its
//! topic was recreated) is unhealthy too; messages retention deleted before a job read them are
//! shown from `dwh.offset_gaps`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use dwh_shared::config::{positive, Kafka, Postgres, Topics};
use dwh_shared::offsets::{self, PartitionOffsets, State};
use dwh_shared::pg;
use serde::Serialize;
use tokio_postgres::Client;
use uuid::Uuid;

/// Exit code when a job is stale.
pub const STALE_EXIT: u8 = 2;

/// `dwh status`: per-job batches, lag, dead letters and rows per layer.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
    /// A job with messages waiting whose newest batch is older than this is stale (exit code 2)
    #[arg(
        long,
        env = "DWH_STALE_SECS",
        value_name = "SECS",
        default_value_t = 900,
        value_parser = positive::<u64>,
        allow_negative_numbers = true
    )]
    pub stale_secs: u64,
    /// Rows per table from PostgreSQL's statistics instead of count(*) (instant on big tables)
    #[arg(long, env = "DWH_STATUS_ESTIMATE")]
    pub estimate: bool,
    #[command(flatten)]
    pub pg: Postgres,
    #[command(flatten)]
    pub kafka: Kafka,
    #[command(flatten)]
    pub topics: Topics,
}

/// The whole answer: every job and every table.
#[derive(Debug, Serialize)]
pub struct Status {
    /// When this was measured (UTC, RFC 3339).
    pub at: String,
    pub stale_secs: u64,
    /// Row counts are PostgreSQL's estimates (`--estimate`), not `count(*)`.
    pub estimated_rows: bool,
    /// No job is stale.
    pub healthy: bool,
    pub jobs: Vec<JobStatus>,
    pub tables: Vec<TableRows>,
}

/// One consuming job.
#[derive(Debug, Serialize)]
pub struct JobStatus {
    pub job: String,
    /// The topic it consumes.
    pub topic: String,
    pub last_batch: Option<LastBatch>,
    /// Messages waiting in Kafka beyond the offsets stored in PostgreSQL.
    pub lag: i64,
    /// The same, per partition of the topic.
    pub lag_per_partition: std::collections::BTreeMap<i32, i64>,
    /// Partitions whose stored offset is beyond the log's end (the topic was recreated): the
    /// job stops there until `dwh offsets JOB --reset`.
    pub ahead_of_log: Vec<PartitionOffsets>,
    /// Messages retention deleted before the job read them (`dwh.offset_gaps`).
    pub lost_to_retention: Gaps,
    pub dead_letters: DeadLetters,
    pub stale: bool,
}

/// What retention took from a job, all time.
#[derive(Debug, Serialize)]
pub struct Gaps {
    /// Gaps recorded.
    pub gaps: i64,
    /// Offsets in them (messages, and perhaps transaction markers).
    pub offsets: i64,
    pub newest_at: Option<String>,
}

/// A job's newest committed batch.
#[derive(Debug, Serialize)]
pub struct LastBatch {
    pub batch_id: Uuid,
    /// When it was committed (UTC, RFC 3339).
    pub committed_at: String,
    /// Seconds since it was committed.
    pub age_secs: f64,
    pub consumed: i64,
    pub loaded: i64,
    pub dead_lettered: i64,
    /// Seconds the run took up to its commit (unknown for batches from before migration V0006).
    pub seconds: Option<f64>,
    /// Its downstream messages reached Kafka.
    pub published: bool,
}

/// A job's dead letters, all batches.
#[derive(Debug, Serialize)]
pub struct DeadLetters {
    pub count: i64,
    pub newest_reason: Option<String>,
    pub newest_at: Option<String>,
}

/// Rows of one table.
#[derive(Debug, Serialize)]
pub struct TableRows {
    pub layer: String,
    pub table: String,
    pub rows: i64,
}

/// The consuming jobs and the topic each reads.
pub fn jobs(topics: &Topics) -> [(&'static str, &str); 3] {
    [
        ("stg", topics.orders.name.as_str()),
        ("dds", topics.stg.name.as_str()),
        ("cdm", topics.dds.name.as_str()),
    ]
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Measure everything `dwh status` shows.
pub async fn collect(
    client: &Client,
    (kafka, topics): (&Kafka, &Topics),
    stale_secs: u64,
    estimate: bool,
) -> Result<Status> {
    let jobs = jobs(topics);
    let names: Vec<&str> = jobs.iter().map(|(job, _)| *job).collect();
    let rows = client
        .query(include_str!("sql/status_jobs.sql"), &[&names])
        .await
        .context("reading batches and dead letters")?;
    let mut out = Vec::new();
    for ((job, topic), row) in jobs.iter().zip(&rows) {
        let last_batch = row
            .get::<_, Option<Uuid>>("batch_id")
            .map(|batch_id| LastBatch {
                batch_id,
                committed_at: rfc3339(row.get("committed_at")),
                age_secs: row.get("age_secs"),
                consumed: row.get("consumed"),
                loaded: row.get("loaded"),
                dead_lettered: row.get("dead_lettered"),
                seconds: row.get("seconds"),
                published: row.get("published"),
            });
        let partitions = offsets::describe(client, kafka, job, topic, false).await?;
        let lag_per_partition: std::collections::BTreeMap<i32, i64> =
            partitions.iter().map(|p| (p.partition, p.lag)).collect();
        let lag = lag_per_partition.values().sum();
        let ahead_of_log: Vec<PartitionOffsets> = partitions
            .into_iter()
            .filter(|p| p.state == State::AheadOfLog)
            .collect();
        let stale = lag > 0
            && last_batch
                .as_ref()
                .is_none_or(|b| b.age_secs > stale_secs as f64);
        out.push(JobStatus {
            job: job.to_string(),
            topic: topic.to_string(),
            last_batch,
            lag,
            lag_per_partition,
            ahead_of_log,
            lost_to_retention: Gaps {
                gaps: row.get("gaps"),
                offsets: row.get("gap_offsets"),
                newest_at: row
                    .get::<_, Option<DateTime<Utc>>>("newest_gap_at")
                    .map(rfc3339),
            },
            dead_letters: DeadLetters {
                count: row.get("dead_letters"),
                newest_reason: row.get("newest_reason"),
                newest_at: row
                    .get::<_, Option<DateTime<Utc>>>("newest_at")
                    .map(rfc3339),
            },
            stale,
        });
    }
    let rows_sql = if estimate {
        include_str!("sql/status_rows_estimated.sql")
    } else {
        include_str!("sql/status_rows.sql")
    };
    let tables = client
        .query(rows_sql, &[])
        .await
        .context("counting rows per layer")?
        .iter()
        .map(|r| TableRows {
            layer: r.get(0),
            table: r.get(1),
            rows: r.get(2),
        })
        .collect();
    Ok(Status {
        at: rfc3339(Utc::now()),
        stale_secs,
        estimated_rows: estimate,
        healthy: out.iter().all(|j| !j.stale && j.ahead_of_log.is_empty()),
        jobs: out,
        tables,
    })
}

/// `12s`, `4m 05s`, `3h 20m`, `2d 4h`.
pub fn age(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// The human form: a table of jobs, the newest dead-letter reasons, a table of rows per layer.
pub fn render(status: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<4} {:<8} {:>9} {:>9} {:>9} {:>8} {:>9} {:>6}  state",
        "job", "batch", "age", "consumed", "loaded", "seconds", "lag", "dead"
    );
    for job in &status.jobs {
        let (batch, age_, consumed, loaded, seconds) = match &job.last_batch {
            Some(b) => (
                b.batch_id.to_string()[..8].to_string(),
                age(b.age_secs),
                b.consumed.to_string(),
                b.loaded.to_string(),
                b.seconds.map_or("-".into(), |s| format!("{s:.2}")),
            ),
            None => (
                "-".into(),
                "never".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ),
        };
        let state = if !job.ahead_of_log.is_empty() {
            "AHEAD"
        } else if job.stale {
            "STALE"
        } else {
            "ok"
        };
        let _ = writeln!(
            out,
            "{:<4} {:<8} {:>9} {:>9} {:>9} {:>8} {:>9} {:>6}  {state}",
            job.job, batch, age_, consumed, loaded, seconds, job.lag, job.dead_letters.count
        );
    }
    for job in status.jobs.iter().filter(|j| j.lag_per_partition.len() > 1) {
        let parts: Vec<String> = job
            .lag_per_partition
            .iter()
            .map(|(p, lag)| format!("{p}:{lag}"))
            .collect();
        let _ = writeln!(out, "lag of {} per partition: {}", job.job, parts.join(" "));
    }
    for job in &status.jobs {
        for p in &job.ahead_of_log {
            let _ = writeln!(
                out,
                "offsets of {} beyond the log of {}/{}: stored {}, log ends at {} — the topic \
                 was recreated; see `dwh offsets {}`",
                job.job,
                job.topic,
                p.partition,
                p.stored.unwrap_or_default(),
                p.log_end,
                job.job
            );
        }
        let lost = &job.lost_to_retention;
        if lost.gaps > 0 {
            let _ = writeln!(
                out,
                "lost to retention before {} read them: {} offsets in {} gap(s), newest {} \
                 (dwh.offset_gaps)",
                job.job,
                lost.offsets,
                lost.gaps,
                lost.newest_at.as_deref().unwrap_or("-")
            );
        }
        if let Some(reason) = &job.dead_letters.newest_reason {
            let reason: String = reason.chars().take(100).collect();
            let _ = writeln!(out, "newest dead letter of {}: {reason}", job.job);
        }
    }
    let _ = writeln!(out);
    let width = status
        .tables
        .iter()
        .map(|t| t.table.len())
        .max()
        .unwrap_or(5);
    for table in &status.tables {
        let _ = writeln!(out, "{:<width$} {:>10}", table.table, table.rows);
    }
    let ahead: Vec<&str> = status
        .jobs
        .iter()
        .filter(|j| !j.ahead_of_log.is_empty())
        .map(|j| j.job.as_str())
        .collect();
    let verdict = if status.healthy {
        "healthy".to_string()
    } else if !ahead.is_empty() {
        format!(
            "STOPPED: {} (stored offsets beyond the log: topic recreated)",
            ahead.join(", ")
        )
    } else {
        let stale: Vec<&str> = status
            .jobs
            .iter()
            .filter(|j| j.stale)
            .map(|j| j.job.as_str())
            .collect();
        format!(
            "STALE: {} (messages waiting, no batch for more than {}s)",
            stale.join(", "),
            status.stale_secs
        )
    };
    let _ = write!(out, "\n{verdict}");
    out
}

/// Run `dwh status`: print the table (or JSON) and exit 0 when healthy, 2 when a job is stale.
pub async fn run(args: &Args) -> Result<ExitCode> {
    let client = pg::connect(&args.pg).await?;
    let status = collect(
        &client,
        (&args.kafka, &args.topics),
        args.stale_secs,
        args.estimate,
    )
    .await?;
    let text = if args.json {
        serde_json::to_string_pretty(&status)?
    } else {
        render(&status)
    };
    // A closed pipe (`dwh status | head`) is not an error worth a panic.
    let _ = writeln!(std::io::stdout(), "{text}");
    Ok(if status.healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(STALE_EXIT)
    })
}

#[cfg(test)]
mod tests {
    use super::age;

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(age(12.4), "12s");
        assert_eq!(age(245.0), "4m 05s");
        assert_eq!(age(12_000.0), "3h 20m");
        assert_eq!(age(187_200.0), "2d 4h");
    }
}
