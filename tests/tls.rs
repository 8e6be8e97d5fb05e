//! TLS for real: a private PostgreSQL cluster that accepts only TLS connections and a private
//! redis-server that speaks only TLS, both on spare loopback ports with a certificate signed by a
//! CA this test makes (openssl CLI). `dwh` must connect through `sslmode=verify-full` and
//! `rediss://` with the CA file, and fail with one plain line when the CA is the wrong one or the
//! host name is not in the certificate.
//!
//! Kafka over SASL_SSL cannot be tried here (the local broker has neither TLS nor SASL); the
//! librdkafka properties are unit-tested in shared/src/kafka.rs.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A scratch directory, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "dwh-tls-{what}-{}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A CA, and a server certificate it signed for `localhost` and 127.0.0.1 (not 127.0.0.2).
struct Certs {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// Another CA, which signed nothing here.
    wrong_ca: PathBuf,
}

fn make_certs(dir: &Path) -> Certs {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for ca in ["ca", "wrong-ca"] {
        run(Command::new("openssl")
            .current_dir(dir)
            .args(["req", "-x509"])
            .args(ec)
            .args([
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
            ])
            .args(["-days", "2", "-subj", &format!("/CN=dwh test {ca}")]));
    }
    run(Command::new("openssl")
        .current_dir(dir)
        .arg("req")
        .args(ec)
        .args([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]));
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    run(Command::new("openssl").current_dir(dir).args([
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]));
    Certs {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        wrong_ca: dir.join("wrong-ca.pem"),
    }
}

fn spare_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn is_root() -> bool {
    run(Command::new("id").arg("-u")).stdout.trim_ascii() == b"0"
}

/// A command that runs as the `postgres` OS user when we are root (initdb refuses root).
fn as_postgres(program: &str) -> Command {
    let path = format!("{PG_BIN}/{program}");
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--", &path]);
        cmd
    } else {
        Command::new(path)
    }
}

/// A private PostgreSQL cluster with `ssl=on` that refuses connections without TLS.
struct PrivatePg {
    data: PathBuf,
    port: u16,
    _dir: Scratch,
}

impl PrivatePg {
    fn start(certs: &Certs) -> PrivatePg {
        let dir = Scratch::new("pg");
        let data = dir.0.join("data");
        if is_root() {
            run(Command::new("chown").args(["-R", "postgres:"]).arg(&dir.0));
        }
        run(as_postgres("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data));
        for (from, to) in [(&certs.cert, "server.pem"), (&certs.key, "server.key")] {
            std::fs::copy(from, data.join(to)).unwrap();
        }
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.0/8 trust\n\
             hostnossl all all 127.0.0.0/8 reject\n",
        )
        .unwrap();
        if is_root() {
            run(Command::new("chown").args(["-R", "postgres:"]).arg(&data));
        }
        run(Command::new("chmod")
            .arg("0600")
            .arg(data.join("server.key")));
        let port = spare_port();
        let options = format!(
            "-p {port} -k {} -c listen_addresses='127.0.0.1,127.0.0.2' -c ssl=on \
             -c ssl_cert_file=server.pem -c ssl_key_file=server.key -c fsync=off",
            data.display()
        );
        run(as_postgres("pg_ctl")
            .args(["-w", "-t", "60", "-l"])
            .arg(data.join("log"))
            .arg("-D")
            .arg(&data)
            .args(["-o", &options, "start"])
            .stdout(Stdio::null()));
        PrivatePg {
            data,
            port,
            _dir: dir,
        }
    }

    fn url(&self, host: &str, sslmode: &str) -> String {
        format!(
            "postgres://postgres:pg-s3cret@{host}:{}/dwh_tls?sslmode={sslmode}",
            self.port
        )
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = as_postgres("pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(&self.data)
            .arg("stop")
            .output();
    }
}

/// A private redis-server listening only on a TLS port.
struct PrivateRedis {
    child: Child,
    port: u16,
}

impl PrivateRedis {
    fn start(certs: &Certs) -> PrivateRedis {
        let port = spare_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--tls-port",
                &port.to_string(),
            ])
            .arg("--tls-cert-file")
            .arg(&certs.cert)
            .arg("--tls-key-file")
            .arg(&certs.key)
            .arg("--tls-ca-cert-file")
            .arg(&certs.ca)
            .args(["--tls-auth-clients", "no", "--requirepass", "redis-s3cret"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        PrivateRedis { child, port }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(what), "{stderr}");
    assert!(!stderr.contains("s3cret"), "password printed: {stderr}");
    eprint!("as expected: {stderr}");
    stderr
}

#[test]
fn postgres_verify_full_and_redis_tls_with_the_ca_file_and_plain_errors_without_the_right_one() {
    let scratch = Scratch::new("certs");
    let certs = make_certs(&scratch.0);
    let pg = PrivatePg::start(&certs);
    let redis = PrivateRedis::start(&certs);
    let (ca, wrong_ca) = (certs.ca.to_str().unwrap(), certs.wrong_ca.to_str().unwrap());
    let full = pg.url("127.0.0.1", "verify-full");

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
    let plain = pg.url("127.0.0.1", "disable");
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
    let other_name = pg.url("127.0.0.2", "verify-full");
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
    let chain_only = pg.url("127.0.0.2", "verify-ca");
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
