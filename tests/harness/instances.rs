//! Private, throw-away instances of the services, on spare loopback ports, that a test may stop,
//! kill and start again without disturbing any other test or the machine's own services.
//!
//! - [`PgCluster`]: `initdb` into a temp folder, password (`scram-sha-256`) or trust auth, TLS when
//!   given certificates; stopped fast (connections are told) or immediately (a crash).
//! - [`RedisServer`]: a `redis-server` that keeps nothing on disk, so it comes back empty.
//! - [`Broker`]: a tansu broker with SQLite storage in its own folder, so its topics survive a kill.
//!
//! Each waits, with a deadline, until its service answers; each removes everything on drop. The
//! certificates of the TLS tests ([`make_certs`]) are made with the openssl CLI.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const STARTUP: Duration = Duration::from_secs(60);

/// A scratch directory, removed at the end.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(what: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "dwh-{what}-{}-{:x}",
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

/// Run a command that must succeed.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A port nobody listens on right now.
pub fn spare_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait until something accepts connections on `port`, or fail after the startup deadline.
fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + STARTUP;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A CA, and a server certificate it signed for `localhost` and 127.0.0.1 (not 127.0.0.2).
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Another CA, which signed nothing here.
    pub wrong_ca: PathBuf,
}

pub fn make_certs(dir: &Path) -> Certs {
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

/// How a private PostgreSQL cluster authenticates and encrypts.
#[derive(Default)]
pub struct PgOptions<'a> {
    /// The superuser's password, and `scram-sha-256` for every TCP connection (else trust).
    pub password: Option<&'a str>,
    /// TLS with these certificates, and only TLS over TCP.
    pub tls: Option<&'a Certs>,
}

/// A private PostgreSQL cluster.
pub struct PgCluster {
    data: PathBuf,
    pub port: u16,
    password: Option<String>,
    options: String,
    _dir: Scratch,
}

impl PgCluster {
    /// A cluster that wants the superuser's password (`scram-sha-256`), so a wrong one fails.
    pub fn with_password(password: &str) -> PgCluster {
        PgCluster::start(PgOptions {
            password: Some(password),
            tls: None,
        })
    }

    pub fn start(opts: PgOptions) -> PgCluster {
        let dir = Scratch::new("pg");
        let data = dir.0.join("data");
        let pwfile = dir.0.join("pwfile");
        std::fs::write(&pwfile, opts.password.unwrap_or("postgres")).unwrap();
        if is_root() {
            run(Command::new("chown").args(["-R", "postgres:"]).arg(&dir.0));
        }
        run(as_postgres("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "--pwfile"])
            .arg(&pwfile)
            .arg("-D")
            .arg(&data)
            .stdout(Stdio::null()));
        let method = if opts.password.is_some() {
            "scram-sha-256"
        } else {
            "trust"
        };
        let hba = match opts.tls {
            Some(_) => format!(
                "local all all trust\nhostssl all all 127.0.0.0/8 {method}\n\
                 hostnossl all all 127.0.0.0/8 reject\n"
            ),
            None => format!("local all all trust\nhost all all 127.0.0.0/8 {method}\n"),
        };
        std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
        let port = spare_port();
        let mut options = format!(
            "-p {port} -k {} -c listen_addresses='127.0.0.1,127.0.0.2' -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c password_encryption=scram-sha-256",
            data.display()
        );
        if let Some(certs) = opts.tls {
            for (from, to) in [(&certs.cert, "server.pem"), (&certs.key, "server.key")] {
                std::fs::copy(from, data.join(to)).unwrap();
            }
            options.push_str(" -c ssl=on -c ssl_cert_file=server.pem -c ssl_key_file=server.key");
        }
        if is_root() {
            run(Command::new("chown").args(["-R", "postgres:"]).arg(&data));
        }
        let _ = std::fs::set_permissions(
            data.join("server.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        );
        let cluster = PgCluster {
            data,
            port,
            password: opts.password.map(str::to_owned),
            options,
            _dir: dir,
        };
        cluster.start_again();
        cluster
    }

    /// The superuser's URL of database `db` (with `?sslmode=…` appended by the caller if needed).
    pub fn url(&self, db: &str) -> String {
        match &self.password {
            Some(pw) => format!("postgres://postgres:{pw}@127.0.0.1:{}/{db}", self.port),
            None => format!("postgres://postgres@127.0.0.1:{}/{db}", self.port),
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut cmd = as_postgres("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data)
            .args(args)
            .stdout(Stdio::null());
        cmd
    }

    /// Start (again) and wait until it accepts connections.
    pub fn start_again(&self) {
        run(self
            .pg_ctl(&["-w", "-t", "60", "-l"])
            .arg(self.data.join("log"))
            .args(["-o", &self.options, "start"]));
    }

    /// Shut down the way an administrator restarting it does: sessions are told and closed.
    pub fn stop(&self) {
        run(&mut self.pg_ctl(&["-w", "-m", "fast", "stop"]));
    }

    /// Die without warning (like a crash or a killed pod); starting again recovers from the WAL.
    pub fn kill(&self) {
        run(&mut self.pg_ctl(&["-w", "-m", "immediate", "stop"]));
    }

    /// Stop and start: every open session is cut.
    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]).output();
    }
}

/// A private redis-server that keeps nothing on disk: after a restart it is empty.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    args: Vec<String>,
}

impl RedisServer {
    /// Plain TCP, no password.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[], None)
    }

    /// Only TLS with `certs` (when given), and `extra` arguments (e.g. `--requirepass`).
    pub fn start_with(extra: &[&str], certs: Option<&Certs>) -> RedisServer {
        let port = spare_port();
        let mut args: Vec<String> = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            .map(String::from)
            .to_vec();
        match certs {
            None => args.extend(["--port".into(), port.to_string()]),
            Some(c) => {
                args.extend(["--port".into(), "0".into()]);
                args.extend(["--tls-port".into(), port.to_string()]);
                for (flag, path) in [
                    ("--tls-cert-file", &c.cert),
                    ("--tls-key-file", &c.key),
                    ("--tls-ca-cert-file", &c.ca),
                ] {
                    args.extend([flag.into(), path.display().to_string()]);
                }
                args.extend(["--tls-auth-clients".into(), "no".into()]);
            }
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut server = RedisServer {
            child: None,
            port,
            args,
        };
        server.start_again();
        server
    }

    /// The URL of database `db`.
    pub fn url(&self, db: u32) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    /// Start (again, empty) and wait until it listens.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "redis-server is running");
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        self.child = Some(child);
        wait_for_port(self.port, "redis-server");
    }

    /// Kill it: connections drop, and everything it held is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop and start: it comes back empty.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where `scripts/services up` installs tansu.
pub fn tansu_bin() -> PathBuf {
    let cache = std::env::var_os("DWH_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/dwh"));
    cache.join("tansu/bin/tansu")
}

/// A private tansu broker with SQLite storage in its own folder: killed and started again, it
/// still has its topics and messages.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    dir: Scratch,
}

impl Broker {
    pub fn start() -> Broker {
        let dir = Scratch::new("broker");
        // tansu reads the first .env walking up from its working folder; this one stops it here.
        std::fs::write(dir.0.join(".env"), "# dwh tests\n").unwrap();
        let mut broker = Broker {
            child: None,
            port: spare_port(),
            dir,
        };
        broker.start_again();
        broker
    }

    /// `host:port` for `DWH_KAFKA_BROKERS`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Start (again) and wait until it answers a metadata request.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the broker is running");
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.0.join("tansu.log"))
            .unwrap();
        let child = Command::new(tansu_bin())
            .current_dir(&self.dir.0)
            .env_remove("SCHEMA_REGISTRY")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .args(["broker", "--cluster-id", "dwh-test"])
            .args(["--listener-url", &listener])
            .args(["--advertised-listener-url", &listener])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("tansu at {}: {e}", tansu_bin().display()));
        self.child = Some(child);
        wait_for_port(self.port, "tansu");
        let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", self.address())
            .create()
            .unwrap();
        let deadline = Instant::now() + STARTUP;
        while rdkafka::consumer::Consumer::fetch_metadata(&consumer, None, Duration::from_secs(2))
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "tansu did not answer on {}",
                self.port
            );
        }
    }

    /// SIGKILL: no goodbye to its clients.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}
