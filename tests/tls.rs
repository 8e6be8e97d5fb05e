//! TLS for real: a private PostgreSQL cluster that accepts only TLS connections and a private
//! redis-server that speaks only TLS, both on spare loopback ports with a certificate signed by a
//! CA this test makes (openssl CLI). `dwh` must connect through `sslmode=verify-full` and
//! `rediss://` with the CA file, and fail with one plain line when the CA is the wrong one or the
//! host name is not in the certificate.
//!
//! Kafka over SASL_SSL: the local broker's listener on 127.0.0.1:9093 (SCRAM-SHA-512, a
//! certificate of its own CA naming 127.0.0.1 and localhost; `scripts/services env sasl_ssl`).
//! The whole pipeline runs over it, every dwh command with those settings, and its showcases
//! equal the oracle's. A wrong password, a wrong CA and an address the certificate does not name
//! (the same listener on 127.0.0.2:9095) each end `dwh stg` and `dwh migrate` at once — refusals
//! are not retried — with one plain line naming the failure and the broker, and no password.

mod harness;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use harness::instances::{make_certs, PgCluster, PgOptions, RedisServer, Scratch};
use harness::oracle::Oracle;
use harness::showcases::assert_matches;
use harness::{count, one_line_failure, Env, Services};

/// The URL of the private cluster's `dwh_tls` database (trust auth: the password is only there to
/// show that it is never printed).
fn pg_url(pg: &PgCluster, host: &str, sslmode: &str) -> String {
    format!(
        "postgres://postgres:pg-s3cret@{host}:{}/dwh_tls?sslmode={sslmode}",
        pg.port
    )
}

fn dwh(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dwh"));
    cmd.args(args)
        .env_remove("DWH_PG_CA_FILE")
        .env_remove("DWH_REDIS_CA_FILE")
        .env_remove("DWH_FAULT")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the dwh binary runs")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "dwh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The one line a failing run prints; it must name `what` and show no password.
fn one_line_error(out: &Output, what: &str) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = one_line_failure(out);
    assert!(stderr.contains(what), "{stderr}");
    assert!(!stderr.contains("s3cret"), "password printed: {stderr}");
    eprintln!("as expected: {stderr}");
    stderr
}

#[test]
fn postgres_verify_full_and_redis_tls_with_the_ca_file_and_plain_errors_without_the_right_one() {
    let scratch = Scratch::new("certs");
    let certs = make_certs(&scratch.0);
    // A cluster that accepts TLS connections only, and a redis-server that speaks only TLS.
    let pg = PgCluster::start(PgOptions {
        password: None,
        tls: Some(&certs),
    });
    let redis = RedisServer::start_with(&["--requirepass", "redis-s3cret"], Some(&certs));
    let (ca, wrong_ca) = (certs.ca.to_str().unwrap(), certs.wrong_ca.to_str().unwrap());
    let full = pg_url(&pg, "127.0.0.1", "verify-full");

    // verify-full with the right CA: the database is created and migrated, over TLS only
    // (pg_hba rejects every connection without it).
    let migrations = std::fs::read_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sql"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('V')
        })
        .count();
    let out = dwh(
        &["migrate", "--skip-topics"],
        &[("DWH_PG_URL", &full), ("DWH_PG_CA_FILE", ca)],
    );
    let applied = format!("migrate: applied {migrations} migration(s)");
    assert!(ok(&out).starts_with(&applied), "{out:?}");

    // Without TLS the server refuses; with the wrong CA, or a host name the certificate does
    // not name, dwh refuses; each is one plain line.
    let plain = pg_url(&pg, "127.0.0.1", "disable");
    let out = dwh(&["migrate", "--skip-topics", "--pg-url", &plain], &[]);
    one_line_error(&out, "no encryption");
    let out = dwh(
        &[
            "migrate",
            "--skip-topics",
            "--pg-url",
            &full,
            "--pg-ca-file",
            wrong_ca,
        ],
        &[],
    );
    let line = one_line_error(&out, "PostgreSQL at postgres://postgres:****@127.0.0.1");
    assert_eq!(
        line.matches("certificate verify failed").count(),
        1,
        "{line}"
    );
    assert!(
        line.contains("unable to get local issuer certificate"),
        "{line}"
    );
    let other_name = pg_url(&pg, "127.0.0.2", "verify-full");
    let out = dwh(
        &[
            "migrate",
            "--skip-topics",
            "--pg-url",
            &other_name,
            "--pg-ca-file",
            ca,
        ],
        &[],
    );
    let line = one_line_error(&out, "PostgreSQL at");
    assert!(line.contains("IP address mismatch"), "{line}");
    // verify-ca checks the chain only, so the same host name is fine there.
    let chain_only = pg_url(&pg, "127.0.0.2", "verify-ca");
    let out = dwh(
        &[
            "migrate",
            "--skip-topics",
            "--pg-url",
            &chain_only,
            "--pg-ca-file",
            ca,
        ],
        &[],
    );
    assert!(
        ok(&out).starts_with("migrate: applied 0 migration(s)"),
        "{out:?}"
    );

    // Redis over TLS: the dictionaries go in with `replay` and come back with `snapshot`.
    let rediss = format!("rediss://:redis-s3cret@localhost:{}/0", redis.port);
    let users = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/users.jsonl");
    // Distinct ids of the file: each is one key in Redis, one version in STG.
    let expected_users: std::collections::BTreeSet<String> = std::fs::read_to_string(&users)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["_id"].to_string())
        .collect();
    let expected_users = expected_users.len();
    assert!(expected_users > 0);
    let tls_env = [
        ("DWH_PG_URL", full.as_str()),
        ("DWH_PG_CA_FILE", ca),
        ("DWH_REDIS_URL", rediss.as_str()),
        ("DWH_REDIS_CA_FILE", ca),
    ];
    ok(&dwh(&["replay", users.to_str().unwrap()], &tls_env));
    let line = ok(&dwh(&["snapshot"], &tls_env));
    let counts = format!("consumed={expected_users} loaded={expected_users} ");
    assert!(line.contains(&counts), "{line}");

    let mut wrong = tls_env;
    wrong[3] = ("DWH_REDIS_CA_FILE", wrong_ca);
    let line = one_line_error(&dwh(&["snapshot"], &wrong), "Redis at rediss://");
    assert!(line.contains("certificate verify failed"), "{line}");
    let mut plain = tls_env;
    let plain_url = format!("redis://:redis-s3cret@localhost:{}/0", redis.port);
    plain[2] = ("DWH_REDIS_URL", plain_url.as_str());
    one_line_error(
        &dwh(&["snapshot"], &plain),
        "a Redis CA file needs a rediss:// URL",
    );
}

/// The SASL_SSL settings of `env` as `(name, value)`.
fn setting<'a>(env: &'a Env, name: &str) -> &'a str {
    env.kafka_security
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{name} is not set"))
}

#[tokio::test]
async fn the_whole_pipeline_runs_over_kafka_sasl_ssl_and_equals_the_oracle() {
    let started = Instant::now();
    // Every dwh run of this Env — migrate included — talks SASL_SSL to 127.0.0.1:9093, a
    // listener that speaks nothing else.
    let env = Env::on(Services::default().with_sasl_ssl(), 1).await;
    assert_eq!(env.brokers, "127.0.0.1:9093");
    assert_eq!(setting(&env, "DWH_KAFKA_SECURITY_PROTOCOL"), "sasl_ssl");
    assert_eq!(setting(&env, "DWH_KAFKA_SASL_MECHANISM"), "SCRAM-SHA-512");
    assert!(
        setting(&env, "DWH_KAFKA_CA_FILE").ends_with("kafka/tls/ca.pem"),
        "{}",
        setting(&env, "DWH_KAFKA_CA_FILE")
    );
    let oracle = Oracle::testdata();
    env.replay_testdata();
    let snapshot = env.dwh_ok(&["snapshot"]);
    assert!(snapshot.starts_with("snapshot: batch="), "{snapshot}");
    // Every order version is loaded (3018 of the 2980 orders); DDS reads those and the
    // dictionary versions STG published (README "The model").
    let stg = env.dwh_ok(&["stg"]);
    let loaded = format!("consumed=3082 loaded={} ", oracle.version_count());
    assert!(stg.contains(&loaded), "{stg}");
    let dds = env.dwh_ok(&["dds"]);
    let consumed = format!("consumed={} ", oracle.stg_messages());
    assert!(dds.contains(&consumed), "{dds}");
    let cdm = env.dwh_ok(&["cdm"]);
    assert!(cdm.starts_with("cdm: batch="), "{cdm}");
    assert_matches(&env, &oracle, "over SASL_SSL").await;
    eprintln!(
        "migrate, replay, snapshot, stg, dds, cdm over SASL_SSL in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test]
async fn a_wrong_password_a_wrong_ca_or_another_host_name_ends_the_run_at_once_in_one_line() {
    let env = Env::on(Services::default().with_sasl_ssl(), 1).await;
    let scratch = Scratch::new("kafka-wrong-ca");
    let certs = make_certs(&scratch.0);
    let password = setting(&env, "DWH_KAFKA_SASL_PASSWORD").to_owned();
    let wrong_password = format!("wrong-{password}");
    let wrong_ca = certs.wrong_ca.to_str().unwrap();
    let cases = [
        (
            ("DWH_KAFKA_SASL_PASSWORD", wrong_password.as_str()),
            "Kafka at 127.0.0.1:9093: SASL authentication failed for user dwh",
        ),
        (
            ("DWH_KAFKA_CA_FILE", wrong_ca),
            "Kafka at 127.0.0.1:9093: certificate not trusted",
        ),
        (
            ("DWH_KAFKA_BROKERS", "127.0.0.2:9095"),
            "Kafka at 127.0.0.2:9095: host name mismatch",
        ),
    ];
    // A refusal is not an outage: with ten minutes to retry in, each run still ends at once.
    let bound = Duration::from_secs(20);
    for (setting, expected) in cases {
        for command in ["stg", "migrate"] {
            let started = Instant::now();
            let out = env
                .command(&[command, "--retry-max-secs", "600"], &[setting])
                .output()
                .unwrap();
            let seconds = started.elapsed();
            let (stdout, stderr) = (
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
            for secret in [&password, &wrong_password] {
                assert!(
                    !stdout.contains(secret.as_str()) && !stderr.contains(secret.as_str()),
                    "{command} with {}: a password was printed: {stdout}{stderr}",
                    setting.0
                );
            }
            assert_eq!(out.status.code(), Some(1), "{command}: {stderr}");
            let line = stderr.trim_end();
            assert_eq!(line.lines().count(), 1, "{command}: one line: {line}");
            let prefix = format!("dwh {command}: {expected}");
            assert!(line.starts_with(&prefix), "{command}: {line}");
            assert!(!line.contains("gave up"), "{command}: retried: {line}");
            assert!(
                seconds < bound,
                "{command} with {}: {:.1} s",
                setting.0,
                seconds.as_secs_f64()
            );
            eprintln!("{:.2} s: {line}", seconds.as_secs_f64());
        }
    }
    let pg = env.pg().await;
    assert_eq!(
        count(&pg, "SELECT count(*) FROM dwh.batches").await,
        0,
        "nothing written"
    );
}
