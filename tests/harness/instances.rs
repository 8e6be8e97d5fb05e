//! Private, throw-away instances of the services, on spare loopback ports, that a test may stop,
//! kill and start again without disturbing any other test or the machine's own services.
//!
//! - [`PgCluster`]: `initdb` into a temp folder, password (`scram-sha-256`) or trust auth, TLS when
//!   given certificates; stopped fast (connections are told) or immediately (a crash).
//! - [`RedisServer`]: a `redis-server` that keeps nothing on disk, so it comes back empty.
//! - [`KafkaCluster`]: N Apache Kafka nodes in KRaft mode (each a broker and a controller, all
//!   voters), configured and started by `scripts/kafka/node` like the machine's own broker (with
//!   a 256 MB heap), each with its data and its log in its own folder, so topics survive a node's
//!   kill. A cluster of 3 or more replicates every partition 3 times with
//!   `min.insync.replicas=2`; a node can be SIGKILLed and started again, and the metadata tells
//!   which node leads a partition and which replicas are in sync.
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

/// Where `scripts/kafka/node install` keeps Apache Kafka: `$DWH_CACHE/kafka`, by default
/// `~/.cache/dwh/kafka`, as the script has it.
pub fn kafka_home() -> PathBuf {
    let cache = std::env::var_os("DWH_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/dwh"));
    cache.join("kafka")
}

/// The one way to configure and start a Kafka node (`init`, `run`).
fn kafka_node_script() -> PathBuf {
    super::repo().join("scripts/kafka/node")
}

/// The heap of each test node (`scripts/kafka/node run` defaults to 512m).
const KAFKA_HEAP: &str = "256m";
/// How long a node may take to start and register, JVM and all, on a busy two-core machine.
const KAFKA_STARTUP: Duration = Duration::from_secs(180);
/// How long a leader election or a replica catching up may take (a dead broker is noticed after
/// its session times out: 9 s by default).
const KAFKA_SETTLE: Duration = Duration::from_secs(120);

/// One node of a [`KafkaCluster`]: broker and controller in one JVM.
struct KafkaNode {
    id: i32,
    port: u16,
    controller_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl KafkaNode {
    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> PathBuf {
        self.dir.join("kafka.log")
    }

    /// The end of the node's log, for a failure message.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!("node {} ({}):\n{tail}", self.id, self.log().display())
    }
}

/// One partition as the cluster's metadata has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    pub id: i32,
    /// `None` while no replica leads it (during an election).
    pub leader: Option<i32>,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// A private Apache Kafka cluster of N nodes in KRaft mode, each a broker and a controller in one
/// JVM started by `scripts/kafka/node`, on spare loopback ports, with its data and its log in its
/// own folder: killed and started again, a node still has its topics and messages. Nodes are
/// numbered from 1 (their `node.id`).
pub struct KafkaCluster {
    nodes: Vec<KafkaNode>,
    _dir: Scratch,
}

impl KafkaCluster {
    /// `size` nodes, every one a voter of the controller quorum (3 or more replicate each
    /// partition 3 times with `min.insync.replicas=2`; fewer keep one copy), started and waited
    /// for until the metadata names every node.
    pub fn start(size: usize) -> KafkaCluster {
        assert!(size >= 1);
        let lib = kafka_home().join("lib");
        assert!(
            lib.is_dir(),
            "no Apache Kafka in {}: run scripts/kafka/node install (scripts/services up does)",
            lib.display()
        );
        let dir = Scratch::new("kafka");
        // Held open together, so that no two are the same.
        let listeners: Vec<TcpListener> = (0..2 * size)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        drop(listeners);
        let nodes: Vec<KafkaNode> = (0..size)
            .map(|i| KafkaNode {
                id: i as i32 + 1,
                port: ports[2 * i],
                controller_port: ports[2 * i + 1],
                dir: dir.0.join(format!("node-{}", i + 1)),
                child: None,
            })
            .collect();
        let voters = nodes
            .iter()
            .map(|n| format!("{}@127.0.0.1:{}", n.id, n.controller_port))
            .collect::<Vec<_>>()
            .join(",");
        // Formatting a node's storage starts a JVM: all nodes at once.
        std::thread::scope(|scope| {
            for node in &nodes {
                let voters = voters.as_str();
                scope.spawn(move || {
                    run(Command::new(kafka_node_script())
                        .arg("init")
                        .arg(&node.dir)
                        .arg(node.id.to_string())
                        .arg(node.port.to_string())
                        .arg(node.controller_port.to_string())
                        .arg(voters)
                        .stdin(Stdio::null()))
                });
            }
        });
        let mut cluster = KafkaCluster { nodes, _dir: dir };
        let ids = cluster.ids();
        for id in &ids {
            cluster.launch(*id);
        }
        for id in &ids {
            cluster.wait_serving(*id, &ids);
        }
        cluster
    }

    /// The node ids, 1 to N.
    pub fn ids(&self) -> Vec<i32> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    fn node(&self, id: i32) -> &KafkaNode {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no Kafka node {id}"))
    }

    fn node_mut(&mut self, id: i32) -> &mut KafkaNode {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no Kafka node {id}"))
    }

    /// The bootstrap list of every node, for `DWH_KAFKA_BROKERS`.
    pub fn address(&self) -> String {
        self.nodes
            .iter()
            .map(KafkaNode::address)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether node `id`'s process is alive.
    pub fn running(&mut self, id: i32) -> bool {
        let node = self.node_mut(id);
        match node.child.as_mut() {
            Some(child) => child.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// SIGKILL node `id`: no goodbye to its clients, its controller peers or its followers.
    pub fn kill(&mut self, id: i32) {
        let node = self.node_mut(id);
        let mut child = node.child.take().expect("the node is running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Start node `id` again (its process only; see [`KafkaCluster::wait_serving`]).
    pub fn launch(&mut self, id: i32) {
        let node = self.node_mut(id);
        assert!(node.child.is_none(), "Kafka node {id} is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log())
            .unwrap();
        // `node run` execs the JVM: the child is the java process itself.
        let child = Command::new(kafka_node_script())
            .arg("run")
            .arg(&node.dir)
            .env("DWH_KAFKA_HEAP", KAFKA_HEAP)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", kafka_node_script().display()));
        node.child = Some(child);
    }

    /// Start node `id` again and wait until it serves.
    pub fn start_again(&mut self, id: i32) {
        self.launch(id);
        self.wait_serving(id, &[id]);
    }

    /// Whether node `id` answers a metadata request itself and its answer names every node of
    /// `registered` as a live broker; fails at once if its process ended. A node opens its port
    /// only once it caught up with the cluster's metadata, and names itself only once the
    /// controller let it in (unfenced), so a node started again is not mistaken for the
    /// registration its previous life left behind.
    pub fn serves(&mut self, id: i32, registered: &[i32]) -> bool {
        if !self.running(id) {
            panic!("Kafka node {id} ended:\n{}", self.node(id).log_tail());
        }
        metadata_from(&self.node(id).address(), None).is_some_and(|metadata| {
            let live: Vec<i32> = metadata.brokers().iter().map(|b| b.id()).collect();
            registered.iter().all(|id| live.contains(id))
        })
    }

    /// Wait until [`KafkaCluster::serves`] holds.
    pub fn wait_serving(&mut self, id: i32, registered: &[i32]) {
        let deadline = Instant::now() + KAFKA_STARTUP;
        while !self.serves(id, registered) {
            if Instant::now() > deadline {
                let logs: Vec<String> = self.nodes.iter().map(KafkaNode::log_tail).collect();
                panic!(
                    "Kafka node {id} did not serve with {registered:?} registered within \
                     {KAFKA_STARTUP:?}:\n{}",
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The live brokers, as the cluster answers (empty when no node answers).
    pub fn live(&self) -> Vec<i32> {
        metadata_from(&self.address(), None)
            .map(|m| m.brokers().iter().map(|b| b.id()).collect())
            .unwrap_or_default()
    }

    /// The partitions of `topic` as the cluster's metadata has them, by id (empty when no node
    /// answers or the topic is unknown).
    pub fn partitions(&self, topic: &str) -> Vec<PartitionState> {
        let Some(metadata) = metadata_from(&self.address(), Some(topic)) else {
            return Vec::new();
        };
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Vec::new();
        };
        let mut partitions: Vec<PartitionState> = found
            .partitions()
            .iter()
            .map(|p| PartitionState {
                id: p.id(),
                leader: (p.leader() >= 0).then_some(p.leader()),
                replicas: p.replicas().to_vec(),
                isr: p.isr().to_vec(),
            })
            .collect();
        partitions.sort_by_key(|p| p.id);
        partitions
    }

    /// The leader of `topic`/`partition`, if the cluster answers and one leads it.
    pub fn leader(&self, topic: &str, partition: i32) -> Option<i32> {
        self.partitions(topic)
            .into_iter()
            .find(|p| p.id == partition)
            .and_then(|p| p.leader)
    }

    /// `topic`'s setting `name` (its own or the cluster's default), as the cluster describes it.
    pub fn topic_setting(&self, topic: &str, name: &str) -> Option<String> {
        use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> =
            rdkafka::ClientConfig::new()
                .set("bootstrap.servers", self.address())
                .create()
                .ok()?;
        let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
        let described = futures::executor::block_on(
            admin.describe_configs([&ResourceSpecifier::Topic(topic)], &options),
        )
        .ok()?;
        described.into_iter().next()?.ok()?.get(name)?.value.clone()
    }

    /// Wait until a node other than `old` leads `topic`/`partition`; that node.
    pub fn wait_for_new_leader(&self, topic: &str, partition: i32, old: i32) -> i32 {
        let deadline = Instant::now() + KAFKA_SETTLE;
        loop {
            match self.leader(topic, partition) {
                Some(leader) if leader != old => return leader,
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "no new leader of {topic}/{partition} within {KAFKA_SETTLE:?}: {:?}",
                self.partitions(topic)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until every partition of `topic` has a leader and every replica in sync.
    pub fn wait_in_sync(&self, topic: &str) {
        let deadline = Instant::now() + KAFKA_SETTLE;
        loop {
            let partitions = self.partitions(topic);
            let synced = |p: &PartitionState| {
                let (mut isr, mut replicas) = (p.isr.clone(), p.replicas.clone());
                isr.sort_unstable();
                replicas.sort_unstable();
                p.leader.is_some() && isr == replicas
            };
            if !partitions.is_empty() && partitions.iter().all(synced) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{topic} not in sync within {KAFKA_SETTLE:?}: {partitions:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A metadata answer from the brokers at `bootstrap` (all topics, or `topic`), asked with a new
/// client so nothing an earlier answer said is reused; `None` when none answers within 2 s.
fn metadata_from(bootstrap: &str, topic: Option<&str>) -> Option<rdkafka::metadata::Metadata> {
    let client: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .ok()?;
    rdkafka::consumer::Consumer::fetch_metadata(&client, topic, Duration::from_secs(2)).ok()
}
