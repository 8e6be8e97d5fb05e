//! What a new user hits first (issue 20): every mistake fails loudly and fast, creates nothing,
//! and says what to do — in one line.
//!
//! A mistyped archive is an error, never a rebuild of nothing, and is never created; the commands
//! a person runs by hand answer within seconds when the database is away; a size, count or bound
//! of 0 or less is a bad flag (exit 2) naming the flag; S3 without credentials names the
//! variables that provide them; a retry bound is the bound, also for one long attempt; an
//! interrupted replay says what went out; `--help` groups each command's flags and spells value
//! names one way. Each failing case checks the exit code, that stderr is exactly one line naming
//! what and where, and that nothing was created; the lines are printed (`--nocapture`).

mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::{count, eventually, one_line_failure, testdata, Env};

/// A password that must never be printed.
const SECRET: &str = "s3cret-papercut";

/// A finished failing run: its exit code, its one line of stderr and how long it took.
struct Failed {
    code: Option<i32>,
    line: String,
    seconds: f64,
}

/// Run `cmd` to its end; it must fail with exactly one line on stderr and print nothing else.
fn fail(what: &str, mut cmd: Command) -> Failed {
    let started = Instant::now();
    let out = cmd.output().expect("the dwh binary runs");
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("{what}:");
    let line = one_line_failure(&out);
    assert!(
        !line.contains(SECRET),
        "{what} printed the password: {line}"
    );
    assert!(out.stdout.is_empty(), "{what}: {out:?}");
    eprintln!(
        "{what} ({seconds:.1} s, exit {:?}): {line}",
        out.status.code()
    );
    Failed {
        code: out.status.code(),
        line,
        seconds,
    }
}

/// A path in the temp folder that does not exist yet.
fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("dwh-papercut-{name}-{}", uuid::Uuid::new_v4()))
}

/// Nothing was loaded or published: no batch, no offset, nothing in the STG topic.
async fn assert_nothing_loaded(env: &Env) {
    let pg = env.pg().await;
    for table in ["dwh.batches", "dwh.offsets", "stg.order_events"] {
        assert_eq!(
            count(&pg, &format!("SELECT count(*) FROM {table}")).await,
            0,
            "{table} was written"
        );
    }
    assert_eq!(env.topic_len(&env.stg_topic), 0, "something was published");
}

#[tokio::test]
async fn a_missing_or_empty_archive_is_an_error_and_is_never_created() {
    let env = Env::new().await;
    let missing = scratch("missing");
    let file = scratch("file");
    std::fs::write(&file, "not an archive\n").unwrap();
    let empty = scratch("empty");
    std::fs::create_dir_all(empty.join("orders")).unwrap();
    let cases = [
        (
            &missing,
            "does not exist: expected the folder `dwh stg --archive` writes",
        ),
        (
            &file,
            "is a file, not a folder: expected the folder `dwh stg --archive` writes",
        ),
        (
            &empty,
            "holds no archive file (orders/*.parquet, snapshots/*.parquet)",
        ),
    ];
    for (path, expected) in cases {
        let path = path.to_str().unwrap();
        let failed = fail(
            &format!("backfill --from-archive {path}"),
            env.command(&["backfill", "--from-archive", path], &[]),
        );
        assert_eq!(failed.code, Some(1));
        assert!(failed.line.starts_with("dwh backfill: "), "{}", failed.line);
        assert!(
            failed.line.contains(path),
            "names the path: {}",
            failed.line
        );
        assert!(failed.line.contains(expected), "{}", failed.line);
    }
    assert!(!missing.exists(), "reading the archive created it");
    assert_nothing_loaded(&env).await;
    std::fs::remove_file(file).unwrap();
    std::fs::remove_dir_all(empty).unwrap();
}

#[tokio::test]
async fn status_report_and_export_answer_within_seconds_when_the_database_is_away() {
    let env = Env::new().await;
    let url = format!("postgres://dwh:{SECRET}@127.0.0.1:1/dwh");
    let report = scratch("report.html");
    let export = scratch("export");
    let (report_out, export_out) = (report.to_str().unwrap(), export.to_str().unwrap());
    let cases: [(&str, Vec<&str>); 3] = [
        ("status", vec!["status", "--pg-url", &url]),
        (
            "report",
            vec!["report", "--pg-url", &url, "--out", report_out],
        ),
        (
            "export",
            vec!["export", "--pg-url", &url, "--out", export_out],
        ),
    ];
    for (command, args) in cases {
        let failed = fail(command, env.command(&args, &[]));
        assert_eq!(failed.code, Some(1));
        assert!(
            failed.line.starts_with(&format!(
                "dwh {command}: PostgreSQL at postgres://dwh:****@127.0.0.1:1/dwh is unreachable"
            )),
            "{}",
            failed.line
        );
        // Their own bound: 5 s (the jobs' is 60 s).
        assert!(failed.line.ends_with(" in 5.0 s)"), "{}", failed.line);
        assert!(
            failed.seconds < 8.0,
            "{command} took {:.1} s",
            failed.seconds
        );
    }
    assert!(
        !report.exists() && !export.exists(),
        "a failed run wrote its output"
    );

    // Still a flag: a shorter bound is shorter.
    let failed = fail(
        "status --retry-max-secs 1",
        env.command(&["status", "--pg-url", &url, "--retry-max-secs", "1"], &[]),
    );
    assert!(failed.line.ends_with(" in 1.0 s)"), "{}", failed.line);
    assert!(failed.seconds < 4.0, "took {:.1} s", failed.seconds);
}

#[tokio::test]
async fn sizes_counts_and_bounds_of_zero_or_less_are_bad_flags() {
    let env = Env::new().await;
    env.replay_testdata();
    let out = scratch("export-out");
    let out = out.to_str().unwrap();
    let users = testdata().join("users.jsonl");
    let users = users.to_str().unwrap();
    // (arguments, the flag as clap names it, its value)
    let cases: &[(&[&str], &str, &str)] = &[
        (&["cdm", "--chunk", "0"], "--chunk <N>", "0"),
        (&["cdm", "--full", "--chunk", "0"], "--chunk <N>", "0"),
        (&["cdm", "--chunk", "-5"], "--chunk <N>", "-5"),
        (&["stg", "--max-messages", "0"], "--max-messages <N>", "0"),
        (&["stg", "--max-messages", "-1"], "--max-messages <N>", "-1"),
        (
            &["dds", "--max-batch-bytes", "0"],
            "--max-batch-bytes <BYTES>",
            "0",
        ),
        (
            &["stg", "--fetch-timeout-secs", "0"],
            "--fetch-timeout-secs <SECS>",
            "0",
        ),
        (&["status", "--stale-secs", "0"], "--stale-secs <SECS>", "0"),
        (&["migrate", "--partitions", "0"], "--partitions <N>", "0"),
        (
            &["migrate", "--replication-factor", "-1"],
            "--replication-factor <N>",
            "-1",
        ),
        (&["report", "--top", "0"], "--top <N>", "0"),
        (
            &["export", "--out", out, "--chunk", "0"],
            "--chunk <N>",
            "0",
        ),
        (&["replay", "--rate", "0/s", users], "--rate <RATE>", "0/s"),
        (
            &["stg", "--lock-wait-secs", "-1"],
            "--lock-wait-secs <SECS>",
            "-1",
        ),
        (
            &["stg", "--retry-max-secs", "-1"],
            "--retry-max-secs <SECS>",
            "-1",
        ),
    ];
    for (args, flag, value) in cases {
        let failed = fail(&format!("{args:?}"), env.command(args, &[]));
        assert_eq!(failed.code, Some(2), "{args:?}: {}", failed.line);
        let command = args[0];
        assert!(
            failed.line.starts_with(&format!(
                "dwh {command}: invalid value '{value}' for '{flag}'"
            )),
            "{args:?}: {}",
            failed.line
        );
        assert!(
            failed
                .line
                .ends_with(&format!("(see `dwh {command} --help`)")),
            "{}",
            failed.line
        );
    }
    // From the environment too, named by its flag.
    let failed = fail(
        "DWH_MAX_MESSAGES=0 dwh stg",
        env.command(&["stg"], &[("DWH_MAX_MESSAGES", "0")]),
    );
    assert_eq!(failed.code, Some(2));
    assert!(
        failed
            .line
            .contains("'--max-messages <N>': must be 1 or more"),
        "{}",
        failed.line
    );
    assert!(!Path::new(out).exists(), "export wrote something");
    assert_nothing_loaded(&env).await;

    // 0 stays valid where it means "none": no retries, no waiting for the lock.
    let line = env.dwh_ok(&["stg", "--retry-max-secs", "0", "--lock-wait-secs", "0"]);
    assert!(line.starts_with("stg: batch="), "{line}");
}

#[tokio::test]
async fn s3_without_credentials_names_the_variables_that_provide_them() {
    let env = Env::new().await;
    env.replay_testdata();
    let url = format!("s3://dwh-test/papercut-{}", uuid::Uuid::new_v4());
    let port = std::env::var("DWH_S3_PORT").unwrap_or_else(|_| "9310".into());
    let endpoint = format!("http://127.0.0.1:{port}");
    let without_credentials = |args: &[&str]| {
        let mut cmd = env.command(args, &[]);
        for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("AWS_")) {
            cmd.env_remove(name);
        }
        cmd.env("AWS_ENDPOINT", &endpoint)
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_REGION", "us-east-1");
        cmd
    };
    let export = [&["export", "--out"][..], &[url.as_str()]].concat();
    let backfill = [&["backfill", "--from-archive"][..], &[url.as_str()]].concat();
    let stg = [&["stg", "--archive"][..], &[url.as_str()]].concat();
    for args in [&stg, &export, &backfill] {
        let failed = fail(&format!("{} to S3", args[0]), without_credentials(args));
        assert_eq!(failed.code, Some(1));
        assert!(
            failed.line.starts_with(&format!(
                "dwh {}: no S3 credentials found for {url}: set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY",
                args[0]
            )),
            "{}",
            failed.line
        );
        assert!(
            failed.line.contains("AWS_WEB_IDENTITY_TOKEN_FILE"),
            "{}",
            failed.line
        );
        assert!(failed.seconds < 5.0, "took {:.1} s", failed.seconds);
    }
    assert_nothing_loaded(&env).await;
}

#[tokio::test]
async fn a_retry_bound_of_five_seconds_gives_up_within_six_against_an_unreachable_broker() {
    let env = Env::new().await;
    let orders = testdata().join("orders.jsonl");
    let cases: [Vec<&str>; 2] = [
        vec![
            "stg",
            "--retry-max-secs",
            "5",
            "--kafka-brokers",
            "127.0.0.1:1",
        ],
        vec![
            "replay",
            "--retry-max-secs",
            "5",
            "--kafka-brokers",
            "127.0.0.1:1",
            orders.to_str().unwrap(),
        ],
    ];
    for args in cases {
        let failed = fail(
            &format!("{} --retry-max-secs 5", args[0]),
            env.command(&args, &[]),
        );
        assert_eq!(failed.code, Some(1));
        assert!(
            failed.line.starts_with(&format!(
                "dwh {}: Kafka at 127.0.0.1:1 is unreachable",
                args[0]
            )),
            "{}",
            failed.line
        );
        assert!(failed.line.contains("(gave up after"), "{}", failed.line);
        // One metadata wait used to take 10 s whatever the bound.
        assert!(
            (4.5..6.5).contains(&failed.seconds),
            "{} took {:.1} s",
            args[0],
            failed.seconds
        );
    }
    assert_nothing_loaded(&env).await;
}

#[tokio::test]
async fn an_interrupted_replay_says_what_went_out_before_it_stopped() {
    let env = Env::new().await;
    // A big generated file of orders: the testdata's lines ten times over, far more than the
    // seconds this test waits could send at 50 a second.
    let orders: Vec<String> = std::fs::read_to_string(testdata().join("orders.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let big = scratch("orders.jsonl");
    let ten_times: Vec<String> = std::iter::repeat_n(orders.join("\n"), 10).collect();
    std::fs::write(&big, ten_times.join("\n")).unwrap();
    let users = testdata().join("users.jsonl");
    let documents = std::fs::read_to_string(&users)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();

    let child = env
        .command(
            &[
                "replay",
                "--rate",
                "50/s",
                users.to_str().unwrap(),
                big.to_str().unwrap(),
            ],
            &[],
        )
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(60), "the replay publishing", || async {
        (env.topic_len(&env.orders_topic) >= 20).then_some(())
    })
    .await;
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(killed.success());
    let sent = Instant::now();
    let out = child.wait_with_output().unwrap();
    let stopped = sent.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.trim_end();
    eprintln!(
        "replay interrupted ({stopped:.2} s after SIGINT, exit {:?}): {line}",
        out.status.code()
    );
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert_eq!(line.lines().count(), 1, "one line: {stderr}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(stopped < 5.0, "took {stopped:.1} s to stop");
    // What it says went out is what the topic holds, and Redis got every user.
    let published = env.topic_len(&env.orders_topic);
    assert!(published < orders.len() as i64 * 10, "it stopped early");
    assert_eq!(
        line,
        format!(
            "dwh replay: interrupted: published {published} order message(s) and loaded \
             {documents} dictionary document(s) before it stopped (in {})",
            big.display()
        )
    );
    std::fs::remove_file(big).unwrap();
}

/// `dwh <args> --help`.
fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dwh"))
        .args(args)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "dwh {args:?} --help");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The flags of a help text under each heading (`Options:` for the command's own).
fn headings(help: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in help.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            out.push((line.trim_end_matches(':').to_owned(), Vec::new()));
            continue;
        }
        // A flag's line starts with it (`-h, --help`, `--pg-url <URL>`); a wrapped description
        // does not.
        if !line.trim_start().starts_with('-') {
            continue;
        }
        let flag = line.split_whitespace().find(|w| w.starts_with("--"));
        if let (Some(flag), Some((_, flags))) = (flag, out.last_mut()) {
            flags.push(flag.trim_end_matches(',').to_owned());
        }
    }
    out
}

#[test]
fn help_groups_each_commands_own_flags_and_names_values_one_way() {
    let commands = [
        "migrate", "stg", "snapshot", "dds", "cdm", "replay", "backfill", "export", "status",
        "offsets", "report",
    ];
    for command in commands {
        let help = help(&[command]);
        // One spelling of value names: UPPER_CASE words (`<URL>`, `<SECS>`, `<DIR|URL>`).
        for name in help.split('<').skip(1).map(|s| &s[..s.find('>').unwrap()]) {
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || "_|/".contains(c)),
                "dwh {command} --help: <{name}>"
            );
        }
        let groups = headings(&help);
        let under = |flag: &str| {
            groups
                .iter()
                .find(|(_, flags)| flags.iter().any(|f| f == flag))
                .map(|(heading, _)| heading.as_str())
        };
        // Metrics are pushed by the consuming jobs only.
        let pushes = ["stg", "dds", "cdm"].contains(&command);
        assert_eq!(
            under("--pushgateway-url"),
            pushes.then_some("Metrics"),
            "dwh {command} --help"
        );
        for (flag, heading) in [
            ("--pg-url", "PostgreSQL"),
            ("--redis-url", "Redis"),
            ("--kafka-brokers", "Kafka"),
            ("--kafka-sasl-password", "Kafka"),
            ("--orders-topic", "Topics"),
            ("--max-messages", "Batch bounds"),
            ("--worker", "Locks and workers"),
            ("--archive", "Archive"),
            ("--retry-max-secs", "Retries"),
        ] {
            if let Some(found) = under(flag) {
                assert_eq!(found, heading, "dwh {command} --help: {flag}");
            }
        }
    }
    // Each command lists the topics it uses, and only those.
    let topics = |command: &str| {
        let help = help(&[command]);
        ["--orders-topic", "--stg-topic", "--dds-topic"]
            .into_iter()
            .filter(|t| help.contains(&format!("{t} ")))
            .collect::<Vec<_>>()
    };
    assert_eq!(topics("stg"), ["--orders-topic", "--stg-topic"]);
    assert_eq!(topics("dds"), ["--stg-topic", "--dds-topic"]);
    assert_eq!(topics("cdm"), ["--dds-topic"]);
    assert_eq!(topics("replay"), ["--orders-topic"]);
    assert_eq!(topics("snapshot"), Vec::<&str>::new());
    assert_eq!(
        topics("status"),
        ["--orders-topic", "--stg-topic", "--dds-topic"]
    );
    assert!(!help(&["backfill"]).contains("--max-messages"));
    assert!(!help(&["status"]).contains("--pushgateway-url"));
}
