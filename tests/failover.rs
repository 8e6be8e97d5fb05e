//! Kafka failover: the warehouse on a private 3-node Apache Kafka cluster (KRaft; every topic
//! replicated 3 times with `min.insync.replicas=2`; dwh produces with `acks=all` and idempotence
//! and reads `read_committed`) while the node that leads a partition a running job reads or
//! writes is SIGKILLed.
//!
//! The testdata is a backfill of several runs (`--max-messages 400`). The run under test is held
//! at a pause point (`DWH_PAUSE`), so the kill lands exactly where intended, and let go at once:
//! it meets the dead leader and waits out the election (the controller notices the dead broker
//! when its session times out) on its own.
//!
//! - `stg` held before it drains; the leader of the orders partition it reads is killed and left
//!   down. The rest of the backfill runs on the two nodes left.
//! - `stg` held after its commit; the leader of the STG partition it publishes to is killed and
//!   started again at once: the node's JVM starts while the run waits for the new leader, and it
//!   serves again (once its old session timed out) while the run publishes or just after it ended
//!   (the test notes which). Once that node is in sync again, `dds` is held before it drains and
//!   the new leader of the STG partition it reads is killed and left down: with two nodes live
//!   and two copies required, every write of the rest of the backfill needs the restarted node,
//!   which must have caught up.
//!
//! A run may end with a plain line naming Kafka while a leader moves; the next run completes its
//! work. Rounds of stg, dds and cdm then go on until none consumes or publishes anything, and the
//! warehouse must hold every order exactly once: STG each distinct order and each junk line's dead
//! letter once, the audit of `tests/chaos.rs` nothing lost and nothing counted twice in DDS and
//! CDM, and both showcases and the tags equal to the oracle's.

mod harness;

use std::time::{Duration, Instant};

use harness::instances::KafkaCluster;
use harness::oracle::Oracle;
use harness::runs::{Background, Finished, Pause, RUN_LIMIT};
use harness::showcases::{assert_matches, audit};
use harness::{count, figure, Env, Services};

const JOBS: [&str; 3] = ["stg", "dds", "cdm"];
const NODES: usize = 3;
const PARTITIONS: u32 = 2;
/// Messages a run takes at most: the testdata's 3,082 order lines are a backfill of 8 stg runs.
const MAX_MESSAGES: &str = "400";
/// Retries are logged (at info), librdkafka's own chatter is not.
const LOG: (&str, &str) = (
    "DWH_LOG",
    "warn,dwh_shared::retry=info,librdkafka=off,rdkafka=off",
);
/// Most runs of one test that may end with a plain line while leaders move.
const MOST_FAILED_RUNS: usize = 3;
/// Most rounds of stg, dds and cdm the rest of a backfill may take.
const MOST_ROUNDS: usize = 30;

/// A private cluster of [`NODES`] nodes, serving; and when the test started.
fn start_cluster() -> (Instant, KafkaCluster) {
    let started = Instant::now();
    let cluster = KafkaCluster::start(NODES);
    eprintln!(
        "{NODES} nodes serving after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    (started, cluster)
}

/// Start `dwh <job>` held at `point`, SIGKILL the node that leads partition 0 of `topic` once it is
/// there, and let the run go: (the node killed, the run, when).
fn kill_leader_while_held(
    cluster: &mut KafkaCluster,
    runs: &Runs,
    (job, point): (&str, &str),
    topic: &str,
) -> (i32, Background, Instant) {
    let victim = cluster.leader(topic, 0).expect("a leader");
    eprintln!(
        "leaders: {}; {job} held at {point}, killing node {victim}",
        leaders(cluster, runs.env)
    );
    let pause = Pause::at(runs.env, &format!("{job}:{point}"));
    let [point, file] = pause.env();
    let mut run = Background::start(runs.command(job, &[point, file]));
    pause.reached(&mut run);
    let killed = Instant::now();
    cluster.kill(victim);
    pause.release();
    (victim, run, killed)
}

/// Wait until a node other than `victim` leads partition 0 of `topic`, and log when.
fn wait_for_new_leader(
    cluster: &KafkaCluster,
    env: &Env,
    topic: &str,
    victim: i32,
    killed: Instant,
) {
    let leader = cluster.wait_for_new_leader(topic, 0, victim);
    eprintln!(
        "node {leader} leads {topic}/0 {:.1} s after node {victim} was killed; leaders: {}",
        killed.elapsed().as_secs_f64(),
        leaders(cluster, env)
    );
}

/// A warehouse on `cluster` with every topic replicated on all three nodes and in sync, and the
/// testdata replayed.
async fn warehouse(cluster: &KafkaCluster) -> (Env, Oracle) {
    let env = Env::on(Services::default().with_broker(cluster), PARTITIONS).await;
    for topic in topics(&env) {
        cluster.wait_in_sync(topic);
        let partitions = cluster.partitions(topic);
        assert_eq!(partitions.len(), PARTITIONS as usize, "{topic}");
        for p in &partitions {
            assert_eq!(p.replicas.len(), NODES, "{topic}: {p:?}");
        }
        assert_eq!(
            cluster
                .topic_setting(topic, "min.insync.replicas")
                .as_deref(),
            Some("2"),
            "{topic}"
        );
    }
    env.replay_testdata();
    (env, Oracle::testdata())
}

fn topics(env: &Env) -> [&str; 3] {
    [&env.orders_topic, &env.stg_topic, &env.dds_topic]
}

/// Which node leads each partition of each topic, for the log.
fn leaders(cluster: &KafkaCluster, env: &Env) -> String {
    topics(env)
        .iter()
        .zip(["orders", "stg", "dds"])
        .map(|(topic, name)| {
            let leaders: Vec<String> = cluster
                .partitions(topic)
                .iter()
                .map(|p| p.leader.map_or("-".to_owned(), |l| l.to_string()))
                .collect();
            format!("{name} [{}]", leaders.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The runs of one test: how many, which failed, and what they logged.
struct Runs<'a> {
    env: &'a Env,
    started: Instant,
    runs: usize,
    failed: Vec<String>,
}

impl<'a> Runs<'a> {
    fn new(env: &'a Env) -> Runs<'a> {
        Runs {
            env,
            started: Instant::now(),
            runs: 0,
            failed: Vec::new(),
        }
    }

    /// A `dwh <job>` of the backfill, not started yet, with `extra` env vars.
    fn command(&self, job: &str, extra: &[(&str, &str)]) -> std::process::Command {
        let mut env = vec![LOG];
        env.extend_from_slice(extra);
        self.env
            .command(&[job, "--max-messages", MAX_MESSAGES], &env)
    }

    /// A finished run: its summary line; or `None` when it ended with one plain line naming
    /// Kafka (kept). Anything it logged is shown.
    fn outcome(&mut self, job: &str, done: Finished) -> Option<String> {
        self.runs += 1;
        let at = self.started.elapsed().as_secs_f64();
        let logged = done.stderr.trim_end();
        if !logged.is_empty() {
            eprintln!(
                "[{at:.1} s] dwh {job} logged ({:.1} s):\n{logged}",
                done.seconds
            );
        }
        if done.status.success() {
            let line = done.stdout.trim_end().to_owned();
            assert!(line.starts_with(&format!("{job}: ")), "{line}");
            eprintln!("[{at:.1} s] {line} ({:.1} s)", done.seconds);
            return Some(line);
        }
        assert_eq!(
            done.status.code(),
            Some(1),
            "dwh {job} died: {}{}",
            done.stdout,
            done.stderr
        );
        // The last line is the run's error; the lines before it retries and warnings.
        let line = logged.lines().last().unwrap_or_default();
        assert!(line.starts_with(&format!("dwh {job}: ")), "{logged}");
        assert!(
            line.contains("Kafka") || line.contains(&self.env.brokers),
            "a failure that does not name Kafka: {line}"
        );
        assert!(!line.contains(harness::ROLE_PASSWORD), "{line}");
        eprintln!("[{at:.1} s] failed after {:.1} s: {line}", done.seconds);
        self.failed.push(line.to_owned());
        None
    }

    /// Run `job` once, to its end.
    fn run(&mut self, job: &str) -> Option<String> {
        let done = Background::start(self.command(job, &[])).finish();
        self.outcome(job, done)
    }

    /// stg, dds and cdm once each; whether any of them consumed or published anything (or
    /// failed, leaving work for the next round).
    fn round(&mut self) -> bool {
        let mut busy = false;
        for job in JOBS {
            busy |= match self.run(job) {
                Some(line) => {
                    figure(&line, "consumed").unwrap_or(0) > 0
                        || figure(&line, "published").unwrap_or(0) > 0
                }
                None => true,
            };
        }
        busy
    }

    /// Rounds until one in which every job reports consumed=0 and published=0.
    fn until_idle(&mut self) {
        for _ in 0..MOST_ROUNDS {
            if !self.round() {
                return;
            }
        }
        panic!("the backfill did not end within {MOST_ROUNDS} rounds");
    }

    /// Every order exactly once, from STG to the showcases.
    async fn assert_exactly_once(&self, oracle: &Oracle) {
        let env = self.env;
        let pg = env.pg().await;
        // stg.order_events keeps every order version (README "The model").
        let orders = count(
            &pg,
            "SELECT count(DISTINCT object_id) FROM stg.order_events",
        )
        .await;
        assert_eq!(orders, oracle.orders.len() as i64, "distinct orders in STG");
        let versions = count(&pg, "SELECT count(*) FROM stg.order_events").await;
        assert_eq!(versions, oracle.version_count() as i64, "versions in STG");
        let dead = count(&pg, "SELECT count(*) FROM dwh.dead_letters").await;
        assert_eq!(dead, oracle.junk as i64, "dead letters");
        let audit = audit(env, oracle).await;
        eprintln!(
            "{} runs, {} failed: {:?}; {audit:?}; messages in orders/stg/dds: {}/{}/{}",
            self.runs,
            self.failed.len(),
            self.failed,
            env.topic_len(&env.orders_topic),
            env.topic_len(&env.stg_topic),
            env.topic_len(&env.dds_topic),
        );
        assert!(audit.rows > 0);
        assert_eq!((audit.lost, audit.doubled), (0, 0), "{audit:?}");
        assert_matches(env, oracle, "after the failover").await;
        assert!(
            self.failed.len() <= MOST_FAILED_RUNS,
            "{} runs failed: {:?}",
            self.failed.len(),
            self.failed
        );
    }
}

#[tokio::test]
async fn the_leader_stg_reads_from_killed_mid_run_and_left_down() {
    let (started, mut cluster) = start_cluster();
    let (env, oracle) = warehouse(&cluster).await;
    let mut runs = Runs::new(&env);
    // A first round with every node up (it also makes the group offsets topic, 3 copies).
    assert!(runs.round());

    let (victim, run, killed) = kill_leader_while_held(
        &mut cluster,
        &runs,
        ("stg", "before-drain"),
        &env.orders_topic,
    );
    wait_for_new_leader(&cluster, &env, &env.orders_topic, victim, killed);
    if let Some(line) = runs.outcome("stg", run.finish()) {
        assert!(figure(&line, "consumed").unwrap_or(0) > 0, "{line}");
    }

    runs.until_idle();
    assert!(
        !cluster.live().contains(&victim),
        "node {victim} stayed down"
    );
    runs.assert_exactly_once(&oracle).await;
    eprintln!("test took {:.1} s", started.elapsed().as_secs_f64());
}

#[tokio::test]
async fn the_leader_stg_publishes_to_killed_and_restarted_mid_run_then_another() {
    let (started, mut cluster) = start_cluster();
    let (env, oracle) = warehouse(&cluster).await;
    let mut runs = Runs::new(&env);
    assert!(runs.round());

    // Held between its commit and its publish: the batch and its outbox are in PostgreSQL.
    let (victim, mut run, killed) =
        kill_leader_while_held(&mut cluster, &runs, ("stg", "after-commit"), &env.stg_topic);
    // Its JVM starts while the run waits for the partition's new leader, which the controller
    // elects when the dead node's session times out (9 s). The node cannot register again before
    // that either (the controller refuses a second registration of a node id while the first
    // one's session lasts), so it is back about then: while the run publishes, or just after it
    // ended. Each is noted as it happens.
    cluster.launch(victim);
    let deadline = Instant::now() + RUN_LIMIT;
    let (mut elected, mut back, mut ended) = (None, None, None);
    // Each time is taken when its probe answered (a probe may wait up to 2 s).
    let since = || killed.elapsed().as_secs_f64();
    while elected.is_none() || back.is_none() {
        if elected.is_none() {
            let leader = cluster.leader(&env.stg_topic, 0);
            elected = leader.filter(|l| *l != victim).map(|l| (l, since()));
        }
        if back.is_none() && cluster.serves(victim, &[victim]) {
            back = Some(since());
        }
        if ended.is_none() && !run.running() {
            ended = Some(since());
        }
        assert!(
            Instant::now() < deadline,
            "node {victim} back: {back:?}, stg/0 led by another: {elected:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (leader, elected) = elected.unwrap();
    let during = match ended {
        Some(at) => format!("the run had ended, {at:.1} s after the kill"),
        None => "the run still going".to_owned(),
    };
    eprintln!(
        "node {victim} killed; node {leader} leads stg/0 {elected:.1} s later; node {victim} \
         serves again {:.1} s after the kill ({during}); leaders: {}",
        back.unwrap(),
        leaders(&cluster, &env)
    );
    if let Some(line) = runs.outcome("stg", run.finish()) {
        assert!(figure(&line, "published").unwrap_or(0) > 0, "{line}");
    }
    for topic in topics(&env) {
        cluster.wait_in_sync(topic);
    }
    eprintln!(
        "node {victim} in sync again {:.1} s after it was killed",
        killed.elapsed().as_secs_f64()
    );

    // The restarted node is in sync; now the new leader goes, while dds is about to read from it.
    let (second, run, killed) =
        kill_leader_while_held(&mut cluster, &runs, ("dds", "before-drain"), &env.stg_topic);
    assert_ne!(second, victim);
    wait_for_new_leader(&cluster, &env, &env.stg_topic, second, killed);
    if let Some(line) = runs.outcome("dds", run.finish()) {
        assert!(figure(&line, "consumed").unwrap_or(0) > 0, "{line}");
    }

    runs.until_idle();
    assert!(
        !cluster.live().contains(&second),
        "node {second} stayed down"
    );
    runs.assert_exactly_once(&oracle).await;
    eprintln!("test took {:.1} s", started.elapsed().as_secs_f64());
}
