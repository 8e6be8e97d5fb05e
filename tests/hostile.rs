//! Hostile input end to end: over ten thousand messages no parser wants to see (tests/harness/
//! hostile.rs), interleaved with the testdata's orders, and hostile documents in Redis, through
//! stg → dds → cdm. Every message is either loaded as the data it is or in the dead-letter table
//! with its raw bytes and a reason; no partition is stuck; the orders around the hostile ones
//! load, and the showcases equal the oracle's count of every valid order.

mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use dwh_shared::archive::Archive;
use dwh_shared::kafka::Polled;
use harness::hostile::{self, Fate, Rng};
use harness::oracle::{parse_order, Oracle};
use harness::{count, pairs, showcases, testdata, Env};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

const SEED: u64 = 20_231_002;
/// Hostile orders that must load (the rest of the corpus must not).
const LOADED: usize = 1_500;

/// One message as sent: its bytes, what must become of it, and its class for the messages.
struct Sent {
    class: &'static str,
    bytes: Vec<u8>,
    fate: Fate,
    offset: i64,
}

/// The testdata's order lines and the corpus, interleaved at random (seeded), each with its fate:
/// a testdata line loads when the oracle finds a valid order in it.
fn interleaved(corpus: Vec<hostile::Message>) -> Vec<Sent> {
    let text = std::fs::read_to_string(testdata().join("orders.jsonl")).unwrap();
    let mut plain: Vec<Sent> = text
        .lines()
        .map(|line| Sent {
            class: "testdata",
            bytes: line.as_bytes().to_vec(),
            fate: match parse_order(line) {
                Some(_) => Fate::Loaded,
                None => Fate::Refused,
            },
            offset: -1,
        })
        .rev()
        .collect();
    let mut hostile: Vec<Sent> = corpus
        .into_iter()
        .rev()
        .map(|m| Sent {
            class: m.class,
            bytes: m.bytes,
            fate: m.fate,
            offset: -1,
        })
        .collect();
    let mut rng = Rng::new(SEED + 1);
    let mut out = Vec::with_capacity(plain.len() + hostile.len());
    while !plain.is_empty() || !hostile.is_empty() {
        let from_plain = rng.below(plain.len() + hostile.len()) < plain.len();
        out.push(
            if from_plain {
                plain.pop()
            } else {
                hostile.pop()
            }
            .unwrap(),
        );
    }
    out
}

/// Produce every message to the orders topic, recording the offset the broker gave it.
async fn produce(env: &Env, messages: &mut [Sent]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("message.max.bytes", (16 << 20).to_string())
        .set("linger.ms", "5")
        .create()
        .expect("a producer");
    let deliveries: Vec<_> = messages
        .iter()
        .map(|m| {
            let record = FutureRecord::<(), [u8]>::to(&env.orders_topic).payload(&m.bytes);
            producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("queued")
        })
        .collect();
    for (message, delivery) in messages.iter_mut().zip(deliveries) {
        let delivered = delivery
            .await
            .expect("a delivery report")
            .unwrap_or_else(|(e, _)| {
                panic!("{} of {} bytes: {e}", message.class, message.bytes.len())
            });
        message.offset = delivered.offset;
    }
}

/// Store the testdata's dictionaries and the hostile documents in this test's Redis database.
async fn store_documents(env: &Env, documents: &[hostile::Document]) {
    let dir = testdata();
    env.dwh_ok(&[
        "replay",
        dir.join("users.jsonl").to_str().unwrap(),
        dir.join("restaurants.jsonl").to_str().unwrap(),
    ]);
    let client = redis::Client::open(env.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut pipe = redis::pipe();
    for d in documents {
        pipe.set(&d.key, d.value.as_slice()).ignore();
    }
    // Keys no order names, read only by `dwh snapshot`: a name that is not UTF-8, a hash.
    pipe.set(
        b"\xff\xfe not UTF-8".as_slice(),
        br#"{"_id": "x", "login": "x"}"#.as_slice(),
    )
    .ignore();
    pipe.hset("a-hash", "_id", "h").ignore();
    pipe.query_async::<()>(&mut conn).await.unwrap();
}

/// The stored offset of `job` on `topic` equals the topic's end: nothing is left behind.
async fn assert_drained(env: &Env, job: &str, topic: &str) {
    let stored: i64 = env
        .pg()
        .await
        .query_one(
            "SELECT coalesce(sum(next_offset), 0)::int8 FROM dwh.offsets WHERE job = $1 AND topic = $2",
            &[&job, &topic],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        stored,
        env.topic_len(topic),
        "{job}: stored offsets reach the end of {topic}"
    );
}

#[tokio::test]
async fn every_hostile_message_is_loaded_or_dead_lettered_and_the_batch_around_it_loads() {
    let started = Instant::now();
    let env = Env::new().await;
    let corpus = hostile::corpus(SEED, LOADED);
    assert!(corpus.messages.len() >= 10_000, "{}", corpus.messages.len());
    let readable_restaurants = hostile::readable_restaurants(&corpus);
    store_documents(&env, &corpus.documents).await;
    let documents = corpus.documents;
    let mut sent = interleaved(corpus.messages);
    produce(&env, &mut sent).await;
    let produced = started.elapsed();

    env.pipeline();
    let piped = started.elapsed() - produced;
    for (job, topic) in [
        ("stg", &env.orders_topic),
        ("dds", &env.stg_topic),
        ("cdm", &env.dds_topic),
    ] {
        assert_drained(&env, job, topic).await;
    }
    let again = env.dwh_ok(&["stg"]);
    assert!(
        again.contains("consumed=0"),
        "nothing is left to retry: {again}"
    );

    // Every offset: loaded (its order in STG) or dead-lettered with its raw bytes and a reason.
    let pg = env.pg().await;
    let dead: BTreeMap<i64, (Vec<u8>, String)> = pg
        .query(
            "SELECT \"offset\", raw, reason FROM dwh.dead_letters WHERE job = 'stg'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let events: BTreeMap<i64, i64> =
        pairs(&pg, "SELECT object_id, src_offset FROM stg.order_events").await;
    let mut tally: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for m in &sent {
        match (m.fate, dead.get(&m.offset)) {
            (Fate::Refused, Some((raw, reason))) => {
                assert!(
                    raw == &m.bytes,
                    "{} at {}: raw bytes kept",
                    m.class,
                    m.offset
                );
                assert!(
                    !reason.trim().is_empty(),
                    "{} at {}: a reason",
                    m.class,
                    m.offset
                );
            }
            (Fate::Refused, None) => panic!(
                "{} at offset {} was not dead-lettered: {:.200}",
                m.class,
                m.offset,
                String::from_utf8_lossy(&m.bytes)
            ),
            (Fate::Loaded, Some((_, reason))) => {
                panic!(
                    "{} at offset {} was dead-lettered: {reason}",
                    m.class, m.offset
                )
            }
            (Fate::Loaded, None) => {
                let text = std::str::from_utf8(&m.bytes).unwrap();
                let (id, _) = parse_order(text).expect("the oracle reads a loaded order");
                let offset = events.get(&id).copied();
                assert!(
                    offset.is_some(),
                    "{} at {}: order {id} in STG",
                    m.class,
                    m.offset
                );
                if m.class != "testdata" {
                    assert_eq!(
                        offset,
                        Some(m.offset),
                        "{}: order {id} from its message",
                        m.class
                    );
                }
            }
        }
        let fate = match m.fate {
            Fate::Loaded => "loaded",
            Fate::Refused => "dead-lettered",
        };
        *tally.entry((m.class, fate)).or_default() += 1;
    }
    let refused = sent.iter().filter(|m| m.fate == Fate::Refused).count();
    assert_eq!(dead.len(), refused, "nothing else is dead-lettered");

    // DDS and CDM read everything STG published; the showcases equal the oracle's count.
    assert_eq!(
        count(
            &pg,
            "SELECT count(*) FROM dwh.dead_letters WHERE job <> 'stg'"
        )
        .await,
        0,
        "dds and cdm dead-letter nothing"
    );
    assert_eq!(
        count(&pg, "SELECT count(*) FROM dds.h_order").await,
        events.len() as i64
    );
    let mut oracle = Oracle::testdata();
    for doc in &readable_restaurants {
        oracle.add_restaurant(doc);
    }
    let junk = oracle.junk;
    for m in sent
        .iter()
        .filter(|m| m.class != "testdata" && m.fate == Fate::Loaded)
    {
        oracle.add_message(std::str::from_utf8(&m.bytes).unwrap());
    }
    assert_eq!(
        oracle.junk, junk,
        "the oracle reads every hostile order that loads"
    );
    assert_eq!(oracle.orders.len(), events.len());
    showcases::assert_matches(&env, &oracle, "hostile corpus").await;

    assert_documents(&env, &documents).await;
    env.dwh_ok(&["snapshot"]);
    assert_documents(&env, &documents).await;

    let seconds = started.elapsed();
    println!(
        "hostile corpus: {} messages ({refused} to dead letters); produced in {produced:?}, \
         stg + dds + cdm {piped:?}, the whole test {seconds:?}",
        sent.len()
    );
    for ((class, fate), n) in &tally {
        println!("{n:>6}  {fate:<13}  {class}");
    }
}

/// Readable hostile documents are in STG, spoiled ones are not; a user's odd name reaches DDS
/// exactly, and a user whose document was left out has no name there.
async fn assert_documents(env: &Env, documents: &[hostile::Document]) {
    let pg = env.pg().await;
    let ids = |sql: &'static str| {
        let pg = &pg;
        async move {
            let rows = pg.query(sql, &[]).await.unwrap();
            rows.iter().map(|r| r.get(0)).collect::<BTreeSet<String>>()
        }
    };
    let stored = ids("SELECT id FROM stg.users UNION SELECT id FROM stg.restaurants").await;
    let users = ids("SELECT user_id FROM dds.h_user").await;
    for d in documents {
        let what = format!("{}: {:.60}", d.class, d.key);
        assert_eq!(stored.contains(&d.key), d.fate == Fate::Loaded, "{what}");
        if !users.contains(&d.key) {
            continue;
        }
        let names: Vec<Option<String>> = pg
            .query(
                "SELECT s.username FROM dds.s_user_names s JOIN dds.h_user h USING (h_user_pk)
                 WHERE h.user_id = $1",
                &[&d.key],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let expected = match d.fate {
            Fate::Loaded => {
                let doc: serde_json::Value = serde_json::from_slice(&d.value).unwrap();
                vec![doc["name"].as_str().map(str::to_owned)]
            }
            Fate::Refused => Vec::new(),
        };
        assert_eq!(names, expected, "{what}");
    }
}

/// Messages of 10 MB. The orders topic refuses them (`dwh migrate` makes it with
/// max.message.bytes of 5 MiB), so they come in the other way into STG's load: an archived batch,
/// which `dwh backfill` loads through the same parse, dead letters and merge as `dwh stg`.
#[tokio::test]
async fn ten_megabyte_messages_are_dead_lettered_and_their_batch_loads() {
    let env = Env::new().await;
    let text = std::fs::read_to_string(testdata().join("orders.jsonl")).unwrap();
    let mut valid: Vec<(i64, &str)> = text
        .lines()
        .filter_map(|line| parse_order(line).map(|(id, _)| (id, line)))
        .collect();
    valid.dedup_by_key(|(id, _)| *id);
    let mut huge: serde_json::Value = serde_json::from_str(valid[0].1).unwrap();
    huge["payload"]["comment"] = serde_json::json!("z".repeat(10_000_000));
    let mut not_utf8 = vec![b'{'; 10_000_000];
    not_utf8[5_000_000] = 0xff;
    let payloads: Vec<Vec<u8>> = vec![
        valid[1].1.as_bytes().to_vec(),
        serde_json::to_vec(&huge).unwrap(),
        valid[2].1.as_bytes().to_vec(),
        not_utf8,
        valid[3].1.as_bytes().to_vec(),
    ];
    let messages: Vec<Polled> = payloads
        .iter()
        .enumerate()
        .map(|(offset, payload)| Polled {
            partition: 0,
            offset: offset as i64,
            timestamp_ms: Some(1_696_238_141_000),
            key: None,
            payload: payload.clone(),
        })
        .collect();
    let folder = std::env::temp_dir().join(format!("{}-archive", env.name));
    let url = folder.to_str().unwrap();
    let ranges = BTreeMap::from([(0, (0, payloads.len() as i64))]);
    let batch_id = dwh_shared::batch::batch_id("stg", &env.orders_topic, &ranges);
    Archive::open(url)
        .unwrap()
        .write_batch(batch_id, env.orders_topic.clone(), messages, Vec::new())
        .await
        .unwrap();

    let line = env.dwh_ok(&["backfill", "--from-archive", url]);
    assert!(
        line.contains("consumed=5 loaded=3 dead_lettered=2"),
        "{line}"
    );
    env.dwh_ok(&["dds"]);
    env.dwh_ok(&["cdm"]);
    let pg = env.pg().await;
    let dead = pg
        .query(
            "SELECT \"offset\", raw, reason FROM dwh.dead_letters ORDER BY \"offset\"",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(dead.len(), 2);
    for row in dead {
        let offset: i64 = row.get(0);
        let raw: Vec<u8> = row.get(1);
        let reason: String = row.get(2);
        assert!(raw == payloads[offset as usize], "raw bytes at {offset}");
        assert!(reason.contains("over the 1048576-byte bound"), "{reason}");
    }
    let ids = [valid[1].0, valid[2].0, valid[3].0];
    for table in ["stg.order_events", "dds.h_order"] {
        let column = if table == "dds.h_order" {
            "order_id"
        } else {
            "object_id"
        };
        let sql = format!("SELECT count(*) FROM {table} WHERE {column} = ANY($1)");
        let found: i64 = pg.query_one(&sql, &[&ids.as_slice()]).await.unwrap().get(0);
        assert_eq!(found, 3, "{table}: the batch around them loads");
    }
    std::fs::remove_dir_all(folder).unwrap();
}
