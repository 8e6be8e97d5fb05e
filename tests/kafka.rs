//! What a real Apache Kafka does that a stand-in never did, each on the machine's broker:
//!
//! - transactional producers upstream: commit and abort markers, aborted messages and a still
//!   open transaction in the orders topic — dwh reads committed data only, and a drain ends at
//!   the end of what is readable even when the last offsets are markers;
//! - a topic deleted and recreated under the same name: the stored offsets are beyond the new
//!   log; the run stops with one line, `dwh status` says so, `dwh offsets --reset` resumes;
//! - retention that deleted messages before they were loaded: recorded in `dwh.offset_gaps` and
//!   shown by `dwh status`;
//! - a topic's message size limit: a message the broker refuses is named with the fix, and its
//!   batch stays unpublished until the limit is raised — nothing lost;
//! - the group offsets dwh commits for monitoring, as Kafka's own `kafka-consumer-groups` shows.

mod harness;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use harness::instances::Scratch;
use harness::oracle::{parse_order, Oracle};
use harness::showcases::assert_matches;
use harness::{count, eventually, figure, one_line_failure, testdata, Env};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(30);

/// The distinct valid orders of the testdata, each as its newest line, by id.
fn testdata_orders() -> Vec<(i64, String)> {
    let text = std::fs::read_to_string(testdata().join("orders.jsonl")).unwrap();
    let mut orders: Vec<(i64, String)> = text
        .lines()
        .filter_map(|line| parse_order(line).map(|(id, _)| (id, line.to_owned())))
        .collect();
    orders.sort_by_key(|(id, _)| *id);
    orders.dedup_by_key(|(id, _)| *id);
    orders
}

fn admin(env: &Env) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .create()
        .expect("an admin client")
}

fn producer(env: &Env, transactional_id: Option<&str>) -> ThreadedProducer<DefaultProducerContext> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &env.brokers);
    if let Some(id) = transactional_id {
        config.set("transactional.id", id);
    }
    config.create().expect("a producer")
}

fn send_all(producer: &ThreadedProducer<DefaultProducerContext>, topic: &str, lines: &[&str]) {
    for line in lines {
        producer
            .send(BaseRecord::<(), str>::to(topic).payload(*line))
            .map_err(|(e, _)| e)
            .expect("queued");
    }
    producer.flush(TIMEOUT).expect("flushed");
}

/// The order ids in STG.
async fn stg_ids(env: &Env) -> BTreeSet<i64> {
    env.pg()
        .await
        .query("SELECT object_id FROM stg.order_events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// `consumed=N` of a summary line.
fn consumed(line: &str) -> i64 {
    figure(line, "consumed").unwrap_or_else(|| panic!("no consumed= in {line}"))
}

#[tokio::test]
async fn a_transactional_upstream_is_read_committed_and_the_drain_ends_at_its_markers() {
    let env = Env::new().await;
    let orders = testdata_orders();
    let lines: Vec<&str> = orders.iter().map(|(_, l)| l.as_str()).collect();
    let (committed, rest) = lines.split_at(40);
    let (aborted, rest) = rest.split_at(30);
    let (later, rest) = rest.split_at(20);
    let open = &rest[..10];

    let upstream = producer(&env, Some(&format!("{}-outbox", env.name)));
    upstream.init_transactions(TIMEOUT).unwrap();
    upstream.begin_transaction().unwrap();
    send_all(&upstream, &env.orders_topic, committed);
    upstream.commit_transaction(TIMEOUT).unwrap();
    upstream.begin_transaction().unwrap();
    send_all(&upstream, &env.orders_topic, aborted);
    upstream.abort_transaction(TIMEOUT).unwrap();
    upstream.begin_transaction().unwrap();
    send_all(&upstream, &env.orders_topic, later);
    upstream.commit_transaction(TIMEOUT).unwrap();
    // The log now ends with a commit marker: 40 + 30 + 20 messages and 3 markers.
    assert_eq!(env.topic_len(&env.orders_topic), 93);

    // A transaction still open: its messages are in the log, beyond the last stable offset.
    upstream.begin_transaction().unwrap();
    send_all(&upstream, &env.orders_topic, open);

    // A short fetch timeout: a drain that waited for a message at the last offset would fail.
    let out = env.dwh_ok(&["stg", "--fetch-timeout-secs", "5"]);
    assert_eq!(consumed(&out), 60, "{out}");
    let id = |line: &&str| parse_order(line).unwrap().0;
    let expected: BTreeSet<i64> = committed.iter().chain(later).map(id).collect();
    assert_eq!(stg_ids(&env).await, expected, "committed orders only");
    let again = env.dwh_ok(&["stg", "--fetch-timeout-secs", "5"]);
    assert_eq!(consumed(&again), 0, "nothing readable is left: {again}");

    upstream.commit_transaction(TIMEOUT).unwrap();
    let out = env.dwh_ok(&["stg", "--fetch-timeout-secs", "5"]);
    assert_eq!(
        consumed(&out),
        10,
        "the transaction's messages once committed: {out}"
    );
    let expected: BTreeSet<i64> = committed.iter().chain(later).chain(open).map(id).collect();
    assert_eq!(stg_ids(&env).await, expected);
    // Everything to the end of the log (markers included) is behind the job: no lag left.
    let status = env.dwh(&["status", "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["jobs"][0]["lag"], 0, "{status:#}");
}

#[tokio::test]
async fn a_recreated_topic_stops_the_job_until_its_offsets_are_reset() {
    let env = Env::new().await;
    env.replay_testdata();
    let first = env.dwh_ok(&["stg"]);
    let read = consumed(&first);
    assert!(read > 3000, "{first}");

    // The orders topic is deleted and created again, empty, under the same name.
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let admin = admin(&env);
    let deleted = admin
        .delete_topics(&[env.orders_topic.as_str()], &options)
        .await
        .unwrap();
    assert!(deleted.iter().all(Result::is_ok), "{deleted:?}");
    let topic = NewTopic::new(&env.orders_topic, 1, TopicReplication::Fixed(1));
    eventually(TIMEOUT, "the topic made again", || async {
        let made = admin
            .create_topics([&topic], &options)
            .await
            .ok()?
            .into_iter()
            .next()?;
        made.ok()
    })
    .await;
    let orders = testdata_orders();
    let new: Vec<&str> = orders[..5].iter().map(|(_, l)| l.as_str()).collect();
    send_all(&producer(&env, None), &env.orders_topic, &new);

    let out = env.dwh(&["stg"]);
    let line = one_line_failure(&out);
    for needle in [
        "beyond the end of its log",
        &format!("stored {read}, log ends at 5"),
        "recreated",
        "dwh offsets stg --reset earliest",
    ] {
        assert!(line.contains(needle), "{needle:?} in {line}");
    }
    let status = env.dwh(&["status"]);
    assert_eq!(status.status.code(), Some(2), "status is unhealthy");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("AHEAD") && text.contains("recreated"),
        "{text}"
    );
    let shown = env.dwh_ok(&["offsets", "stg"]);
    assert!(shown.contains("AHEAD"), "{shown}");

    // A reset waits for the job's lock: a run in progress keeps it, and nothing changes.
    let holder = env.pg().await;
    let lock = format!("dwh:stg:{}:0", env.orders_topic);
    holder
        .execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", &[&lock])
        .await
        .unwrap();
    let out = env.dwh(&[
        "offsets",
        "stg",
        "--reset",
        "earliest",
        "--lock-wait-secs",
        "1",
    ]);
    let line = one_line_failure(&out);
    assert!(
        line.contains("holds the lock") && line.contains("nothing done"),
        "{line}"
    );
    holder
        .execute(
            "SELECT pg_advisory_unlock(hashtextextended($1, 0))",
            &[&lock],
        )
        .await
        .unwrap();

    let reset = env.dwh_ok(&["offsets", "stg", "--reset", "earliest"]);
    assert!(reset.contains(&format!("0: {read} → 0")), "{reset}");
    let out = env.dwh_ok(&["stg"]);
    assert_eq!(consumed(&out), 5, "the new log from its start: {out}");
    let status = env.dwh(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        !text.contains("AHEAD") && !text.contains("recreated"),
        "{text}"
    );
}

#[tokio::test]
async fn messages_retention_deleted_before_they_were_loaded_are_recorded_and_shown() {
    let env = Env::new().await;
    env.replay_testdata();
    let total = env.topic_len(&env.orders_topic);
    env.dwh_ok(&["stg", "--max-messages", "100"]);
    // Retention (here: kafka-delete-records) moves the log's start past the stored offset.
    let mut upto = TopicPartitionList::new();
    upto.add_partition_offset(&env.orders_topic, 0, Offset::Offset(1000))
        .unwrap();
    admin(&env)
        .delete_records(&upto, &AdminOptions::new())
        .await
        .unwrap();

    let out = env.dwh_ok(&["stg"]);
    assert_eq!(consumed(&out), total - 1000, "{out}");
    let pg = env.pg().await;
    let gap = pg
        .query_one(
            "SELECT partition, from_offset, to_offset FROM dwh.offset_gaps WHERE job = 'stg'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            gap.get::<_, i32>(0),
            gap.get::<_, i64>(1),
            gap.get::<_, i64>(2)
        ),
        (0, 100, 1000)
    );
    let status = env.dwh(&["status", "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["jobs"][0]["lost_to_retention"]["offsets"], 900);
    let text = env.dwh(&["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("lost to retention before stg read them: 900 offsets"),
        "{text}"
    );
    // Recorded once: a replay of the same range finds nothing new.
    env.dwh_ok(&["stg"]);
    assert_eq!(count(&pg, "SELECT count(*) FROM dwh.offset_gaps").await, 1);
}

#[tokio::test]
async fn a_message_over_the_topics_size_limit_is_named_and_its_batch_waits() {
    let env = Env::new().await;
    // The STG topic as an administrator may have made it: Kafka's default limit (1 MiB + 12).
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let limit = |bytes: &'static str| {
        AlterConfig::new(ResourceSpecifier::Topic(&env.stg_topic)).set("max.message.bytes", bytes)
    };
    let altered = admin(&env)
        .alter_configs([&limit("1048588")], &options)
        .await
        .unwrap();
    assert!(altered.iter().all(Result::is_ok), "{altered:?}");

    // An order and a user each within STG's bounds (1 MiB), with long names: the enriched
    // message carries both, over 1 MiB.
    let orders = testdata_orders();
    let (big_id, line) = &orders[0];
    let mut big: Value = serde_json::from_str(line).unwrap();
    big["payload"]["order_items"][0]["name"] = Value::from("z".repeat(600_000));
    let user_id = big["payload"]["user"]["id"].as_str().unwrap().to_owned();
    let dir = Scratch::new("oversized");
    let user = serde_json::json!({"_id": user_id, "name": "Я".repeat(250_000),
        "login": "long", "update_ts_utc": "2023-10-01 00:00:00"});
    std::fs::write(dir.0.join("users.jsonl"), format!("{user}\n")).unwrap();
    let rest: Vec<&str> = orders[1..50].iter().map(|(_, l)| l.as_str()).collect();
    std::fs::write(
        dir.0.join("orders.jsonl"),
        format!("{big}\n{}\n", rest.join("\n")),
    )
    .unwrap();
    env.dwh_ok(&["replay", dir.0.to_str().unwrap()]);

    let out = env.dwh(&["stg"]);
    let line = one_line_failure(&out);
    for needle in [
        format!("keyed {big_id}"),
        format!("larger than topic {}", env.stg_topic),
        "max.message.bytes".to_owned(),
        "nothing is lost".to_owned(),
    ] {
        assert!(line.contains(&needle), "{needle:?} in {line}");
    }
    // The batch is committed and stays unpublished: its rebuild row waits in the outbox, and the
    // refused order's version in STG, to be sent again.
    let pg = env.pg().await;
    assert_eq!(
        count(&pg, "SELECT count(*) FROM stg.order_events").await,
        50
    );
    let waiting: i64 = pg
        .query_one(
            "SELECT count(*) FROM dwh.batches b JOIN stg.order_events e USING (batch_id) \
             WHERE b.job = 'stg' AND b.published_at IS NULL AND e.object_id = $1 \
               AND EXISTS (SELECT FROM dwh.outbox o WHERE o.batch_id = b.batch_id AND o.rebuild)",
            &[big_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        waiting, 1,
        "the refused message's batch is kept unpublished"
    );
    // The same run again refuses it again, and still loses nothing.
    let again = one_line_failure(&env.dwh(&["stg"]));
    assert!(again.contains(&format!("keyed {big_id}")), "{again}");

    // The operator raises the limit as the line says; the next run publishes the rest.
    let altered = admin(&env)
        .alter_configs([&limit("5242880")], &options)
        .await
        .unwrap();
    assert!(altered.iter().all(Result::is_ok), "{altered:?}");
    eventually(TIMEOUT, "the outbox published", || async {
        let out = env.dwh(&["stg"]);
        out.status.success().then_some(())
    })
    .await;
    assert_eq!(count(&pg, "SELECT count(*) FROM dwh.outbox").await, 0);
    // At least once between the jobs: the acknowledged part of a refused chunk went out again.
    assert!(env.topic_len(&env.stg_topic) >= 50);
    env.dwh_ok(&["dds"]);
    let dds = count(
        &pg,
        "SELECT count(*) FROM dds.h_order WHERE order_id = ANY(SELECT object_id FROM stg.order_events)",
    )
    .await;
    assert_eq!(dds, 50, "every order reached DDS");
}

#[tokio::test]
async fn the_group_offsets_dwh_commits_show_up_in_kafkas_own_tooling() {
    let env = Env::new().await;
    let oracle = Oracle::testdata();
    env.replay_testdata();
    env.dwh_ok(&["snapshot"]);
    env.pipeline();
    assert_matches(&env, &oracle, "after the pipeline").await;

    let pg = env.pg().await;
    for (job, topic) in [
        ("stg", &env.orders_topic),
        ("dds", &env.stg_topic),
        ("cdm", &env.dds_topic),
    ] {
        let stored: i64 = pg
            .query_one(
                "SELECT next_offset FROM dwh.offsets WHERE job = $1 AND topic = $2",
                &[&job, topic],
            )
            .await
            .unwrap()
            .get(0);
        // kafka-consumer-groups --describe: GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG …
        let out = Command::new(harness::repo().join("scripts/kafka/node"))
            .args([
                "tool",
                "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
            ])
            .args(["--bootstrap-server", &env.brokers, "--describe", "--group"])
            .arg(format!("dwh-{job}"))
            .output()
            .expect("Kafka's tools run");
        let text = String::from_utf8_lossy(&out.stdout);
        let row: Vec<&str> = text
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(topic.as_str()))
            .unwrap_or_else(|| panic!("no row for {topic}: {text}"))
            .split_whitespace()
            .collect();
        assert_eq!(row[0], format!("dwh-{job}"));
        assert_eq!(row[3], stored.to_string(), "{job}: {text}");
        assert_eq!(row[5], "0", "{job}: no lag: {text}");

        // The same through the admin API, as `dwh offsets` shows it.
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &env.brokers)
            .set("group.id", format!("dwh-{job}"))
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, 0);
        let committed = consumer.committed_offsets(tpl, TIMEOUT).unwrap();
        assert_eq!(
            committed.elements()[0].offset(),
            Offset::Offset(stored),
            "{job}"
        );
    }
    let shown = env.dwh_ok(&["offsets", "--json"]);
    let shown: Value = serde_json::from_str(&shown).unwrap();
    for job in shown.as_array().unwrap() {
        let p = &job["partitions"][0];
        assert_eq!(p["group"], p["stored"], "{job:#}");
        assert_eq!(p["state"], "ok");
    }
}
