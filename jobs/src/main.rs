//! `dwh`: parses the command line, sets up logging, runs one job, prints its summary line.
//!
//! Any error ends the run with one plain line on stderr naming what failed and where, and a
//! non-zero exit code; a bad flag is one line too (clap's message on one line, exit 2).

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
mod tags;

use clap::{CommandFactory, Parser, Subcommand};
use dwh_shared::batch::Summary;
use dwh_shared::config::{Kafka, Postgres, Retry, RetryArgs};
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
    retry: RetryArgs,
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
    /// The user tags: list or change the rules (recomputing and publishing what changes), or
    /// show a user's tags
    Tags(tags::Args),
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
            Command::Tags(a) => a.name(),
            Command::CopyBaseline(_) => "copy-baseline",
        }
    }

    /// How long this command rides out a service that is away unless `--retry-max-secs` says:
    /// a job a minute, a command a person waits for a few seconds.
    fn default_retry_secs(&self) -> u64 {
        match self {
            Command::Status(_)
            | Command::Report(_)
            | Command::Export(_)
            | Command::Offsets(_)
            | Command::Tags(_) => Retry::BY_HAND_MAX_SECS,
            _ => Retry::JOB_MAX_SECS,
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
            Command::Tags(a) => {
                let (pg, kafka) = a.endpoints();
                (Some(pg), None, kafka)
            }
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

/// Parse the command line. A bad flag ends the run like any other error: one line (clap's message
/// without its usage block, naming the flag), exit code 2; `--help` and `--version` print as usual.
fn parse() -> Cli {
    use clap::error::ErrorKind;
    let error = match Cli::try_parse() {
        Ok(cli) => return cli,
        Err(error) => error,
    };
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        error.exit();
    }
    // The subcommand is the first argument that names one (before it come only the global
    // flags, whose values are numbers), and so on down (`dwh tags rules set`).
    let mut command = "dwh".to_owned();
    let mut current = Cli::command();
    for arg in std::env::args().skip(1) {
        if let Some(sub) = current.find_subcommand(&arg).cloned() {
            command.push(' ');
            command.push_str(&arg);
            current = sub;
        }
    }
    eprintln!("{}", flag_error_line(&command, &error.render().to_string()));
    std::process::exit(2);
}

/// clap's rendered error on one line: `dwh <command>: <message> (see `dwh <command> --help`)`.
fn flag_error_line(command: &str, rendered: &str) -> String {
    let mut message = String::new();
    for line in rendered.lines().map(str::trim) {
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if line.is_empty() {
            continue;
        }
        let line = line.strip_prefix("error: ").unwrap_or(line);
        if message.is_empty() {
            message.push_str(line);
        } else if line.starts_with("tip:") {
            message.push_str("; ");
            message.push_str(line);
        } else if !message.contains(line) {
            message.push(' ');
            message.push_str(line);
        }
    }
    format!("{command}: {message} (see `{command} --help`)")
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
    let cli = parse();
    init_logging();
    retry::configure(&cli.retry.policy(cli.command.default_retry_secs()));
    let name = cli.command.name();
    if let Command::Status(args) = &cli.command {
        return status::run(args).await.unwrap_or_else(|error| {
            eprintln!("{}", error_line(&cli.command, error));
            std::process::ExitCode::FAILURE
        });
    }
    let result = match &cli.command {
        Command::Migrate(args) => migrate::run(args).await,
        Command::Stg(args) => {
            let to = (&args.pg, &args.kafka, args.orders.name.as_str());
            finish(name, stg::run(args).await, &args.push, to).await
        }
        Command::Snapshot(args) => stg::snapshot(args).await.map(|s| s.line(name)),
        Command::Dds(args) => {
            let to = (&args.pg, &args.kafka, args.stg.name.as_str());
            finish(name, dds::run(args).await, &args.push, to).await
        }
        Command::Cdm(args) => {
            let to = (&args.pg, &args.kafka, args.dds.name.as_str());
            finish(name, cdm::run(args).await, &args.push, to).await
        }
        Command::Replay(args) => replay::run(args).await,
        Command::Backfill(args) => backfill::run(args).await,
        Command::Export(args) => export::run(args).await,
        Command::Status(_) => unreachable!("handled above"),
        Command::Offsets(args) => offsets::run(args).await,
        Command::Report(args) => report::run(args).await,
        Command::Tags(args) => tags::run(args).await,
        Command::CopyBaseline(args) => baseline::run(args).await,
    };
    match result {
        Ok(line) => {
            println!("{line}");
            tracing::info!("{line}");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            // A replay stopped by Ctrl-C exits as the shell expects of SIGINT (128 + 2); what
            // `dwh tags` was asked to do cannot be done (a bad pattern…): like a bad flag, 2.
            let code = if error.downcast_ref::<replay::Interrupted>().is_some() {
                130
            } else if error.downcast_ref::<tags::Invalid>().is_some() {
                2
            } else {
                1
            };
            eprintln!("{}", error_line(&cli.command, error));
            std::process::ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::flag_error_line;

    #[test]
    fn a_bad_flag_is_one_line_naming_it_and_where_to_look() {
        let rendered = "error: unexpected argument '--chunks' found\n\n  tip: a similar argument \
                        exists: '--chunk'\n\nUsage: dwh cdm [OPTIONS]\n\nFor more information, \
                        try '--help'.\n";
        assert_eq!(
            flag_error_line("dwh cdm", rendered),
            "dwh cdm: unexpected argument '--chunks' found; tip: a similar argument exists: \
             '--chunk' (see `dwh cdm --help`)"
        );
        let missing = "error: the following required arguments were not provided:\n  \
                       --from-archive <URL>\n\nUsage: dwh backfill --from-archive <URL>\n";
        assert_eq!(
            flag_error_line("dwh backfill", missing),
            "dwh backfill: the following required arguments were not provided: --from-archive \
             <URL> (see `dwh backfill --help`)"
        );
    }
}
