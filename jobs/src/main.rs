//! `dwh`: parses the command line, sets up logging, runs one job, prints its summary line.
//!
//! Any error ends the run with one plain line on stderr naming what failed and where, and a
//! non-zero exit code; a bad flag is reported by clap the same way.

mod backfill;
mod baseline;
mod cdm;
mod dds;
mod export;
mod migrate;
mod offsets;
mod replay;
mod report;
mod status;
mod stg;

use clap::{Parser, Subcommand};
use dwh_shared::batch::Summary;
use dwh_shared::config::{Kafka, Postgres, Retry};
use dwh_shared::metrics;
use dwh_shared::retry::{self, Endpoints};

#[derive(Parser, Debug)]
#[command(
    name = "dwh",
    version,
    about = "Micro-batch jobs that build the orders warehouse: STG → DDS (Data Vault) → CDM",
    after_help = "Logging: DWH_LOG (an EnvFilter, default warn), DWH_LOG_FORMAT (json for one JSON \
                  object per line, else human).\nS3 archives and exports (s3://…): AWS_ACCESS_KEY_ID, \
                  AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT, AWS_ALLOW_HTTP"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    push: metrics::Push,
    #[command(flatten)]
    retry: Retry,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the database, apply sql/ migrations and create the Kafka topics (safe to rerun)
    Migrate(migrate::Args),
    /// Load waiting orders (and the dictionaries they name) into STG, publish them enriched
    Stg(stg::Args),
    /// Load every user and restaurant from Redis into STG
    Snapshot(stg::SnapshotArgs),
    /// Build the Data Vault from the STG topic and report affected users
    Dds(dds::Args),
    /// Recompute the showcases of affected users (or of everybody with --full)
    Cdm(cdm::Args),
    /// Publish testdata order files to Kafka and load dictionary files into Redis
    Replay(replay::Args),
    /// Rebuild STG from an archive of batches (then run dds and cdm as usual)
    Backfill(backfill::Args),
    /// Write the showcases as Parquet to a folder or bucket
    Export(export::Args),
    /// Is the pipeline healthy? Batches, lag, dead letters and rows per layer (exit 2 when stale)
    Status(status::Args),
    /// Show where each job stands in its topic (stored, log, group offsets), or --reset a job's
    Offsets(offsets::Args),
    /// Write a self-contained HTML dashboard of the showcases and the pipeline's freshness
    Report(report::Args),
    /// Time a plain binary COPY of order files' STG rows (the baseline of `scripts/bench`)
    #[command(hide = true)]
    CopyBaseline(baseline::Args),
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Migrate(_) => "migrate",
            Command::Stg(_) => "stg",
            Command::Snapshot(_) => "snapshot",
            Command::Dds(_) => "dds",
            Command::Cdm(_) => "cdm",
            Command::Replay(_) => "replay",
            Command::Backfill(_) => "backfill",
            Command::Export(_) => "export",
            Command::Status(_) => "status",
            Command::Offsets(_) => "offsets",
            Command::Report(_) => "report",
            Command::CopyBaseline(_) => "copy-baseline",
        }
    }

    /// The services this command talks to, to name them in its errors.
    fn endpoints(&self) -> Endpoints<'_> {
        let (postgres, redis, kafka) = match self {
            Command::Migrate(a) => (Some(&a.pg), None, Some(&a.kafka)),
            Command::Stg(a) => (Some(&a.pg), Some(&a.redis), Some(&a.kafka)),
            Command::Snapshot(a) => (Some(&a.pg), Some(&a.redis), None),
            Command::Dds(a) => (Some(&a.pg), None, Some(&a.kafka)),
            Command::Cdm(a) => (Some(&a.pg), None, Some(&a.kafka)),
            Command::Replay(a) => (None, Some(&a.redis), Some(&a.kafka)),
            Command::Backfill(a) => (Some(&a.pg), None, Some(&a.kafka)),
            Command::Export(a) => (Some(&a.pg), None, None),
            Command::Status(a) => (Some(&a.pg), None, Some(&a.kafka)),
            Command::Offsets(a) => (Some(&a.pg), None, Some(&a.kafka)),
            Command::Report(a) => (Some(&a.pg), None, Some(&a.kafka)),
            Command::CopyBaseline(a) => (Some(&a.pg), None, None),
        };
        Endpoints {
            postgres,
            redis,
            kafka,
        }
    }
}

/// The one line a failed run prints: the command, the service that failed (when the error does
/// not name it yet) and the error's causes.
fn error_line(command: &Command, error: anyhow::Error) -> String {
    let error = retry::name_service(error, &command.endpoints());
    format!("dwh {}: {}", command.name(), dwh_shared::error_line(&error))
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("DWH_LOG")
        .unwrap_or_else(|_| EnvFilter::new("warn,librdkafka=off,rdkafka=off"));
    // At info, every step of a run (drain, parse, copy, merge, commit, publish…) logs its time
    // when it ends (`close time.busy=… time.idle=…`): where a run's seconds went.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(std::io::stderr);
    if std::env::var("DWH_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A consuming job's summary line, after pushing its figures when a Pushgateway is configured.
async fn finish(
    name: &str,
    summary: anyhow::Result<Summary>,
    push: &metrics::Push,
    (pg, kafka, topic): (&Postgres, &Kafka, &str),
) -> anyhow::Result<String> {
    let summary = summary?;
    metrics::after_run(push, name, &summary, pg, kafka, topic).await;
    Ok(summary.line(name))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging();
    retry::configure(&cli.retry);
    let name = cli.command.name();
    let push = &cli.push;
    if let Command::Status(args) = &cli.command {
        return status::run(args).await.unwrap_or_else(|error| {
            eprintln!("{}", error_line(&cli.command, error));
            std::process::ExitCode::FAILURE
        });
    }
    let result = match &cli.command {
        Command::Migrate(args) => migrate::run(args).await,
        Command::Stg(args) => {
            let to = (&args.pg, &args.kafka, args.kafka.orders_topic.as_str());
            finish(name, stg::run(args).await, push, to).await
        }
        Command::Snapshot(args) => stg::snapshot(args).await.map(|s| s.line(name)),
        Command::Dds(args) => {
            let to = (&args.pg, &args.kafka, args.kafka.stg_topic.as_str());
            finish(name, dds::run(args).await, push, to).await
        }
        Command::Cdm(args) => {
            let to = (&args.pg, &args.kafka, args.kafka.dds_topic.as_str());
            finish(name, cdm::run(args).await, push, to).await
        }
        Command::Replay(args) => replay::run(args).await,
        Command::Backfill(args) => backfill::run(args).await,
        Command::Export(args) => export::run(args).await,
        Command::Status(_) => unreachable!("handled above"),
        Command::Offsets(args) => offsets::run(args).await,
        Command::Report(args) => report::run(args).await,
        Command::CopyBaseline(args) => baseline::run(args).await,
    };
    match result {
        Ok(line) => {
            println!("{line}");
            tracing::info!("{line}");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{}", error_line(&cli.command, error));
            std::process::ExitCode::FAILURE
        }
    }
}
