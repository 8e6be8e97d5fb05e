//! `dwh`: parses the command line, sets up logging, runs one job, prints its summary line.
//!
//! Any error ends the run with one plain line on stderr naming what failed and where, and a
//! non-zero exit code; a bad flag is reported by clap the same way.

mod baseline;
mod cdm;
mod dds;
mod migrate;
mod replay;
mod stg;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "dwh",
    version,
    about = "Micro-batch jobs that build the orders warehouse: STG → DDS (Data Vault) → CDM"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
            Command::CopyBaseline(_) => "copy-baseline",
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("DWH_LOG")
        .unwrap_or_else(|_| EnvFilter::new("warn,librdkafka=off,rdkafka=off"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("DWH_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging();
    let name = cli.command.name();
    let result = match &cli.command {
        Command::Migrate(args) => migrate::run(args).await,
        Command::Stg(args) => stg::run(args).await.map(|s| s.line(name)),
        Command::Snapshot(args) => stg::snapshot(args).await.map(|s| s.line(name)),
        Command::Dds(args) => dds::run(args).await.map(|s| s.line(name)),
        Command::Cdm(args) => cdm::run(args).await.map(|s| s.line(name)),
        Command::Replay(args) => replay::run(args).await,
        Command::CopyBaseline(args) => baseline::run(args).await,
    };
    match result {
        Ok(line) => {
            println!("{line}");
            tracing::info!("{line}");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("dwh {name}: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
