//! Least privilege and secrets: each job role is refused what its job must not do; every failing
//! path a user can hit — a bad URL, a wrong password, an unreachable host, a TLS mismatch, a SASL
//! broker that is not one — ends in one plain line, and no password appears in anything printed or
//! logged (also with `DWH_LOG=debug`); TLS verifies certificates unless told not to.
//!
//! The passwords are real: a private PostgreSQL cluster with `scram-sha-256` (so a wrong password
//! really fails), a redis-server with `requirepass`, and TLS-only instances with certificates made
//! here (harness::instances).

mod harness;

use std::process::{Command, Output, Stdio};
use std::time::Instant;

use harness::instances::{make_certs, Certs, PgCluster, PgOptions, RedisServer, Scratch};
use harness::oracle::Oracle;
use harness::showcases::assert_matches;
use harness::{count, Env, Services, ROLE_PASSWORD};

/// The password of every private instance here, and the one a user mistypes (with a prefix).
const SECRET: &str = "Hunter2-s3cret";

/// `dwh <args>` with the services' variables of this process removed and `env` set.
fn dwh(args: &[String], env: &[(String, String)], debug: bool) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dwh"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in [
        "DWH_PG_URL",
        "DWH_PG_CA_FILE",
        "DWH_REDIS_URL",
        "DWH_REDIS_CA_FILE",
        "DWH_FAULT",
        "DWH_PAUSE",
        "DWH_LOG",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    if debug {
        cmd.env("DWH_LOG", "debug").env("RUST_LOG", "debug");
    }
    cmd
}

/// Nothing printed holds a password.
fn assert_no_secret(what: &str, out: &Output) {
    for stream in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(stream);
        for secret in [SECRET, ROLE_PASSWORD] {
            assert!(
                !text.contains(secret),
                "{what}: a password was printed:\n{text}"
            );
        }
    }
}

/// A failing path: what to run and what its one line must say.
struct Case {
    what: &'static str,
    args: Vec<String>,
    env: Vec<(String, String)>,
    expect: &'static str,
}

fn case(what: &'static str, args: &[&str], expect: &'static str) -> Case {
    Case {
        what,
        args: args.iter().map(|a| a.to_string()).collect(),
        env: Vec::new(),
        expect,
    }
}

/// Run every case twice at once — default logging (one plain line) and `DWH_LOG=debug` — and
/// check both: non-zero exit, no password anywhere.
fn run_all(cases: &[Case]) {
    let started = Instant::now();
    let children: Vec<_> = cases
        .iter()
        .flat_map(|c| [false, true].map(|debug| (c, debug)))
        .map(|(c, debug)| {
            let child = dwh(&c.args, &c.env, debug).spawn().unwrap();
            (c, debug, child)
        })
        .collect();
    for (c, debug, child) in children {
        let out = child.wait_with_output().unwrap();
        assert_no_secret(c.what, &out);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", c.what);
        if !debug {
            let line = stderr.trim_end();
            assert_eq!(line.lines().count(), 1, "{}: one line: {line}", c.what);
            assert!(line.contains(c.expect), "{}: {line}", c.what);
            eprintln!("{}: {line}", c.what);
        }
    }
    eprintln!(
        "{} failing paths, twice each, in {:.1} s",
        cases.len(),
        started.elapsed().as_secs_f64()
    );
}

/// TLS-only PostgreSQL and Redis with a certificate for localhost and 127.0.0.1.
struct TlsInstances {
    certs: Certs,
    pg: PgCluster,
    redis: RedisServer,
    _dir: Scratch,
}

impl TlsInstances {
    fn start() -> TlsInstances {
        let dir = Scratch::new("secrets-certs");
        let certs = make_certs(&dir.0);
        let pg = PgCluster::start(PgOptions {
            password: Some(SECRET),
            tls: Some(&certs),
        });
        let redis = RedisServer::start_with(&["--requirepass", SECRET], Some(&certs));
        TlsInstances {
            certs,
            pg,
            redis,
            _dir: dir,
        }
    }

    fn pg_url(&self, host: &str, query: &str) -> String {
        format!(
            "postgres://postgres:{SECRET}@{host}:{}/dwh_tls{query}",
            self.pg.port
        )
    }

    fn redis_url(&self, scheme: &str) -> String {
        format!("{scheme}://:{SECRET}@localhost:{}/0", self.redis.port)
    }
}

#[tokio::test]
async fn every_failing_path_is_one_plain_line_and_no_password_is_printed_or_logged() {
    let scram = PgCluster::with_password(SECRET);
    let env = Env::on(Services::default().with_pg(&scram), 1).await;
    let redis = RedisServer::start_with(&["--requirepass", SECRET], None);
    let tls = TlsInstances::start();
    let (ca, wrong_ca) = (
        tls.certs.ca.to_str().unwrap(),
        tls.certs.wrong_ca.to_str().unwrap(),
    );

    // PostgreSQL, through `dwh migrate` (its first step connects).
    let migrate = |url: &str| {
        vec![
            "migrate".to_owned(),
            "--skip-topics".to_owned(),
            "--retry-max-secs".to_owned(),
            "1".to_owned(),
            "--pg-url".to_owned(),
            url.to_owned(),
        ]
    };
    let with_ca = |mut args: Vec<String>, ca: &str| {
        args.extend(["--pg-ca-file".to_owned(), ca.to_owned()]);
        args
    };
    let scram_url = |user: &str, password: &str| {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{}",
            scram.port, env.name
        )
    };
    let wrong = format!("wrong-{SECRET}");
    let mut cases = vec![
        Case {
            args: migrate(&format!(
                "postgres://postgres:{SECRET}@127.0.0.1:notaport/dwh"
            )),
            ..case("PostgreSQL URL with a bad port", &[], "bad PostgreSQL URL")
        },
        Case {
            args: migrate(&format!(
                "host=127.0.0.1 port=notaport user=postgres password='{SECRET} x'"
            )),
            ..case("PostgreSQL key=value string", &[], "bad PostgreSQL URL")
        },
        Case {
            args: migrate(&format!("{}?sslmode=verify", scram_url("postgres", SECRET))),
            ..case("unknown sslmode", &[], "sslmode=verify is not one of")
        },
        Case {
            args: migrate(&scram_url("postgres", &wrong)),
            ..case(
                "wrong PostgreSQL password",
                &[],
                "password authentication failed for user \"postgres\"",
            )
        },
        Case {
            args: migrate(&scram_url("dwh_test_stg", SECRET)),
            ..case(
                "wrong password of a job user",
                &[],
                "password authentication failed for user \"dwh_test_stg\"",
            )
        },
        Case {
            args: migrate(&format!("postgres://postgres:{SECRET}@127.0.0.1:1/dwh")),
            ..case("PostgreSQL unreachable", &[], "is unreachable")
        },
        Case {
            args: with_ca(
                migrate(&tls.pg_url("127.0.0.1", "?sslmode=verify-full")),
                wrong_ca,
            ),
            ..case("PostgreSQL TLS, wrong CA", &[], "certificate verify failed")
        },
        Case {
            args: with_ca(
                migrate(&tls.pg_url("127.0.0.2", "?sslmode=verify-full")),
                ca,
            ),
            ..case(
                "PostgreSQL TLS, other host name",
                &[],
                "IP address mismatch",
            )
        },
        Case {
            args: migrate(&tls.pg_url("127.0.0.1", "?sslmode=disable")),
            ..case(
                "PostgreSQL without TLS where it is required",
                &[],
                "no encryption",
            )
        },
    ];

    // Redis, through `dwh stg` (its first step connects to Redis).
    let stg = |url: &str, extra: &[&str]| {
        let mut args: Vec<String> = ["stg", "--retry-max-secs", "1", "--redis-url", url]
            .map(String::from)
            .to_vec();
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    cases.extend([
        Case {
            args: stg(&format!("redis://:{SECRET}@127.0.0.1:notaport"), &[]),
            ..case("Redis URL with a bad port", &[], "bad Redis URL")
        },
        Case {
            args: stg(&format!("redis://:{wrong}@127.0.0.1:{}/0", redis.port), &[]),
            ..case("wrong Redis password", &[], "Redis at redis://:****@")
        },
        Case {
            args: stg(&format!("redis://:{SECRET}@127.0.0.1:1"), &[]),
            ..case("Redis unreachable", &[], "is unreachable")
        },
        Case {
            args: stg(&tls.redis_url("rediss"), &["--redis-ca-file", wrong_ca]),
            ..case("Redis TLS, wrong CA", &[], "certificate verify failed")
        },
        Case {
            args: stg(&tls.redis_url("redis"), &[]),
            ..case(
                "Redis without TLS where it is required",
                &[],
                "Redis at redis://:****@",
            )
        },
    ]);

    // Kafka with SASL against the PLAINTEXT listener (9092), through `dwh stg` as its job user,
    // after Redis and PostgreSQL answered: SASL_PLAINTEXT is refused at once (the listener answers
    // the SASL handshake with an error), SASL_SSL fails as an outage would (it drops the TLS
    // handshake). The SASL_SSL listener itself is tried in tests/tls.rs.
    let kafka_env = |protocol: &str, mechanism: &str| -> Vec<(String, String)> {
        [
            ("DWH_PG_URL", env.job_url("stg").as_str()),
            ("DWH_REDIS_URL", env.redis_url.as_str()),
            ("DWH_KAFKA_BROKERS", env.brokers.as_str()),
            ("DWH_ORDERS_TOPIC", env.orders_topic.as_str()),
            ("DWH_KAFKA_SECURITY_PROTOCOL", protocol),
            ("DWH_KAFKA_SASL_MECHANISM", mechanism),
            ("DWH_KAFKA_SASL_USERNAME", "dwh"),
            ("DWH_KAFKA_SASL_PASSWORD", SECRET),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    let mut sasl_ssl = kafka_env("sasl_ssl", "SCRAM-SHA-512");
    sasl_ssl.push(("DWH_KAFKA_CA_FILE".to_owned(), ca.to_owned()));
    cases.extend([
        Case {
            env: kafka_env("sasl_plaintext", "PLAIN"),
            ..case(
                "Kafka SASL to a broker without it",
                &["stg", "--retry-max-secs", "1"],
                "Kafka at",
            )
        },
        Case {
            env: sasl_ssl,
            ..case(
                "Kafka SASL_SSL to a plaintext broker",
                &["stg", "--retry-max-secs", "1"],
                "Kafka at",
            )
        },
    ]);
    run_all(&cases);

    // Runs that succeed log nothing secret either, at debug level: the owner's URL holds SECRET,
    // the job users' URLs ROLE_PASSWORD.
    env.replay_testdata();
    for args in [&["migrate"][..], &["stg"], &["dds"], &["cdm"], &["status"]] {
        let out = env
            .command(args, &[("DWH_LOG", "debug"), ("RUST_LOG", "debug")])
            .output()
            .unwrap();
        assert!(
            out.status.code().is_some_and(|c| c != 1),
            "{args:?}: {out:?}"
        );
        assert_no_secret(&format!("{args:?} at debug level"), &out);
    }
}

#[tokio::test]
async fn tls_verifies_certificates_by_default() {
    let tls = TlsInstances::start();
    let ca = tls.certs.ca.to_str().unwrap();
    let migrate = |url: String, ca: Option<&str>| {
        let mut args = vec!["migrate".to_owned(), "--skip-topics".to_owned()];
        args.extend(["--retry-max-secs".to_owned(), "1".to_owned()]);
        args.extend(["--pg-url".to_owned(), url]);
        if let Some(ca) = ca {
            args.extend(["--pg-ca-file".to_owned(), ca.to_owned()]);
        }
        dwh(&args, &[], false).output().unwrap()
    };
    let ok = |out: &Output| {
        assert!(out.status.success(), "{out:?}");
        assert_no_secret("TLS", out);
    };
    let refused = |out: &Output, reason: &str| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(reason), "{stderr}");
        assert_no_secret("TLS", out);
    };

    // sslmode=require checks the chain: against the CA file, or the system's CAs without one
    // (which do not know this test's CA).
    refused(
        &migrate(tls.pg_url("127.0.0.1", "?sslmode=require"), None),
        "certificate verify failed",
    );
    ok(&migrate(
        tls.pg_url("127.0.0.1", "?sslmode=require"),
        Some(ca),
    ));
    // verify-full against the system's CAs: refused the same way.
    refused(
        &migrate(tls.pg_url("localhost", "?sslmode=verify-full"), None),
        "certificate verify failed",
    );
    ok(&migrate(
        tls.pg_url("localhost", "?sslmode=verify-full"),
        Some(ca),
    ));
    // prefer (no sslmode) is opportunistic: encrypted where offered, not authenticated.
    ok(&migrate(tls.pg_url("127.0.0.1", ""), None));

    // rediss:// checks the chain and the host name against the system's CAs without a CA file.
    let snapshot = |redis_ca: Option<&str>| {
        let mut args = vec![
            "snapshot".to_owned(),
            "--retry-max-secs".to_owned(),
            "1".to_owned(),
        ];
        args.extend(["--redis-url".to_owned(), tls.redis_url("rediss")]);
        if let Some(redis_ca) = redis_ca {
            args.extend(["--redis-ca-file".to_owned(), redis_ca.to_owned()]);
        }
        let env = [
            (
                "DWH_PG_URL".to_owned(),
                tls.pg_url("localhost", "?sslmode=verify-full"),
            ),
            ("DWH_PG_CA_FILE".to_owned(), ca.to_owned()),
        ];
        dwh(&args, &env, false).output().unwrap()
    };
    refused(&snapshot(None), "certificate verify failed");
    ok(&snapshot(Some(ca)));
}

#[tokio::test]
async fn each_job_role_is_refused_what_its_job_must_not_do() {
    // The whole pipeline as the job users (the harness's default): enough privileges.
    let env = Env::new().await;
    let oracle = Oracle::testdata();
    env.replay_testdata();
    env.pipeline();
    assert_matches(&env, &oracle, "under the job roles").await;

    let owner = env.pg().await;
    let offsets_before = harness::fingerprint(&owner, "dwh.offsets").await;
    let batches_before = harness::fingerprint(&owner, "dwh.batches").await;
    let new_offset =
        "INSERT INTO dwh.offsets (job, topic, partition, next_offset, batch_id, updated_at)
                      VALUES ('{job}', 't', 0, 0, gen_random_uuid(), now())";
    let refused: [(&str, &[&str]); 3] = [
        (
            "stg",
            &[
                "SELECT count(*) FROM dds.h_user",
                "INSERT INTO dds.h_category VALUES (gen_random_uuid(), 'x', now(), 'x', gen_random_uuid())",
                "DELETE FROM cdm.user_tags",
                "DELETE FROM stg.order_events",
                "UPDATE stg.users SET doc = '{}'",
                "TRUNCATE stg.restaurants",
                "CREATE TABLE stg.mine (i int)",
                "DROP TABLE stg.users",
                "DELETE FROM dwh.offsets",
                "UPDATE cdm.tag_rules SET threshold = 1",
                &new_offset.replace("{job}", "dds"),
            ],
        ),
        (
            "dds",
            &[
                "SELECT count(*) FROM stg.order_events",
                "UPDATE dds.s_order_status SET status = 'CLOSED'",
                "DELETE FROM dds.h_user",
                "INSERT INTO cdm.user_tags (user_id, tag, order_cnt) VALUES (gen_random_uuid(), 'x', 1)",
                "CREATE TABLE dds.mine (i int)",
                "DELETE FROM dwh.dead_letters",
                &new_offset.replace("{job}", "cdm"),
            ],
        ),
        (
            "cdm",
            &[
                "SELECT count(*) FROM stg.order_events",
                "INSERT INTO stg.users (id, version, doc, batch_id, load_dt) VALUES ('x', gen_random_uuid(), '{}', gen_random_uuid(), now())",
                "INSERT INTO dds.h_category VALUES (gen_random_uuid(), 'x', now(), 'x', gen_random_uuid())",
                "UPDATE cdm.tag_rules SET threshold = 1",
                "INSERT INTO cdm.tag_rules VALUES ('x', 'Супы', NULL, 1)",
                "UPDATE cdm.user_product_counters SET order_cnt = 99",
                // cdm queues tag events, as job cdm only (row-level security).
                "INSERT INTO dwh.outbox (job, batch_id, topic, key, value) VALUES ('dds', gen_random_uuid(), 't', 'k', 'v')",
                &new_offset.replace("{job}", "stg"),
            ],
        ),
    ];
    for (job, statements) in refused {
        let client = env.pg_as(job).await;
        for sql in statements {
            let error = client
                .batch_execute(sql)
                .await
                .expect_err(&format!("{job} may not: {sql}"));
            let code = error.code().map(|c| c.code().to_owned());
            assert_eq!(
                code.as_deref(),
                Some("42501"),
                "{job}: {sql}: refused for lack of privilege, not for {error}"
            );
        }
        // Another job's control rows are invisible to its writes (row-level security).
        let other = if job == "stg" { "dds" } else { "stg" };
        for sql in [
            format!("UPDATE dwh.offsets SET next_offset = 0 WHERE job = '{other}'"),
            format!("UPDATE dwh.batches SET published_at = NULL WHERE job = '{other}'"),
        ] {
            assert_eq!(client.execute(&sql, &[]).await.unwrap(), 0, "{job}: {sql}");
        }
        // Reading them is open to all (the lag, `dwh status`).
        assert_eq!(count(&client, "SELECT count(*) FROM dwh.offsets").await, 3);
    }
    assert_eq!(
        harness::fingerprint(&owner, "dwh.offsets").await,
        offsets_before
    );
    assert_eq!(
        harness::fingerprint(&owner, "dwh.batches").await,
        batches_before
    );

    // A job run with another job's user fails, names PostgreSQL, and writes nothing.
    env.replay_testdata();
    let out = env
        .command(&["stg"], &[("DWH_PG_URL", &env.job_url("cdm"))])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("permission denied"), "{stderr}");
    assert!(
        stderr.contains("PostgreSQL at postgres://dwh_test_cdm:****@"),
        "{stderr}"
    );
    assert_eq!(
        harness::fingerprint(&owner, "dwh.offsets").await,
        offsets_before
    );
}
