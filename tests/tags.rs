//! Tag events on the real broker: folding the tags topic — the last event per user × tag, an
//! `event_id` seen before ignored, `granted` meaning held — gives `cdm.user_tags`, and both equal
//! the tags counted here from the testdata (the oracle) under the rules the test sets: after the
//! pipeline, after replaying every topic (no new event), after a crash at every step of `dwh cdm`
//! and of `dwh cdm --full`, after rule changes through `dwh tags rules`, and after a user's only
//! qualifying order turns CANCELLED (`revoked`). Bad rules are refused with one line and exit 2,
//! changing nothing; a rule edited by hand with a bad pattern is skipped, not a failed batch.

mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use harness::oracle::{key, Oracle};
use harness::{count, fingerprint, one_line_failure, testdata, Env};

/// What a rule counts, as the test states it: a category, or dish names containing one of
/// these (lower-case) words — the rule's pattern is the same words as an alternation.
#[derive(Debug, Clone, Copy)]
enum Counts {
    Category(&'static str),
    Dish(&'static [&'static str]),
}

#[derive(Debug, Clone, Copy)]
struct Rule {
    tag: &'static str,
    counts: Counts,
    threshold: i64,
}

const fn rule(tag: &'static str, counts: Counts, threshold: i64) -> Rule {
    Rule {
        tag,
        counts,
        threshold,
    }
}

/// The rules `dwh migrate` seeds (sql/V0004__cdm.sql).
const SEEDED: [Rule; 5] = [
    rule("Pizza Lover", Counts::Dish(&["пицц", "pizza"]), 10),
    rule("Soup Fan", Counts::Category("Супы"), 5),
    rule("Sweet Tooth", Counts::Category("Десерты"), 3),
    rule("Tea Drinker", Counts::Category("Чай"), 3),
    rule("Pastry Regular", Counts::Category("Выпечка"), 10),
];

/// (user source id, tag)
type Tags = BTreeSet<(String, String)>;

/// The tags the oracle's users hold under `rules`.
fn expected(oracle: &Oracle, rules: &[Rule]) -> Tags {
    let source: BTreeMap<Uuid, String> = oracle
        .orders
        .values()
        .map(|o| (key(&o.user_id), o.user_id.clone()))
        .collect();
    let categories = oracle.category_counters();
    let mut tags = Tags::new();
    for rule in rules {
        let users: Vec<Uuid> = match rule.counts {
            Counts::Category(name) => categories
                .iter()
                .filter(|((_, c), (_, n))| *c == key(name) && *n >= rule.threshold)
                .map(|((u, _), _)| *u)
                .collect(),
            Counts::Dish(words) => oracle
                .users_with_dish(words, rule.threshold)
                .into_keys()
                .collect(),
        };
        tags.extend(
            users
                .into_iter()
                .map(|u| (source[&u].clone(), rule.tag.to_owned())),
        );
    }
    tags
}

/// A user's count of qualifying orders under `rule`, as the oracle counts it.
fn orders_of(oracle: &Oracle, rule: &Rule, user: &str) -> i64 {
    match rule.counts {
        Counts::Category(name) => oracle
            .category_counters()
            .get(&(key(user), key(name)))
            .map_or(0, |(_, n)| *n),
        Counts::Dish(words) => oracle
            .users_with_dish(words, 1)
            .get(&key(user))
            .copied()
            .unwrap_or(0),
    }
}

/// One message of the tags topic, as the README documents it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
struct Event {
    event_id: Uuid,
    user_id: String,
    user_pk: Uuid,
    tag: String,
    event: String,
    order_cnt: i64,
    at: String,
    batch_id: Uuid,
}

/// Every message of `topic` as (key, raw value), partition by partition, up to the end the
/// broker reports now.
fn messages(env: &Env, topic: &str) -> Vec<(String, Vec<u8>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("group.id", format!("{}-fold", env.name))
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .expect("topic metadata");
    let mut assignment = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in metadata.topics()[0].partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), timeout)
            .expect("watermarks");
        if high > low {
            assignment
                .add_partition_offset(topic, p.id(), Offset::Offset(low))
                .unwrap();
            ends.insert(p.id(), high);
        }
    }
    let mut read: BTreeMap<i32, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    if ends.is_empty() {
        return Vec::new();
    }
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut open = ends.len();
    while open > 0 {
        assert!(Instant::now() < deadline, "reading {topic} timed out");
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.expect("a message");
        let key = String::from_utf8(message.key().unwrap_or_default().to_vec()).unwrap();
        read.entry(message.partition())
            .or_default()
            .push((key, message.payload().unwrap_or_default().to_vec()));
        if message.offset() + 1 == ends[&message.partition()] {
            open -= 1;
        }
    }
    read.into_values().flatten().collect()
}

/// The tags topic folded.
#[derive(Debug, Default)]
struct Fold {
    /// (user, tag) whose last event is `granted`.
    held: Tags,
    /// The last event of each (user, tag).
    last: BTreeMap<(String, String), Event>,
    /// Messages read.
    messages: usize,
    /// Messages whose `event_id` came before (republished after a crash): each equal to the
    /// first, byte for byte.
    duplicates: usize,
}

/// Read and fold the tags topic, checking every message against the contract.
fn fold(env: &Env) -> Fold {
    let mut fold = Fold::default();
    let mut seen: BTreeMap<Uuid, Vec<u8>> = BTreeMap::new();
    let mut naive: BTreeMap<(String, String), String> = BTreeMap::new();
    for (key, raw) in messages(env, &env.tags_topic) {
        fold.messages += 1;
        let event: Event = serde_json::from_slice(&raw)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&raw)));
        let fields: BTreeSet<String> = serde_json::from_slice::<BTreeMap<String, Value>>(&raw)
            .unwrap()
            .into_keys()
            .collect();
        assert_eq!(
            fields,
            [
                "at",
                "batch_id",
                "event",
                "event_id",
                "order_cnt",
                "tag",
                "user_id",
                "user_pk"
            ]
            .map(String::from)
            .into(),
            "the documented fields"
        );
        assert_eq!(key, event.user_id, "key = the user's source id");
        assert_eq!(event.user_pk, harness::oracle::key(&event.user_id));
        assert!(
            chrono::DateTime::parse_from_rfc3339(&event.at).is_ok(),
            "{event:?}"
        );
        match event.event.as_str() {
            "granted" => assert!(event.order_cnt >= 1, "{event:?}"),
            "revoked" => assert!(event.order_cnt >= 0, "{event:?}"),
            other => panic!("event {other:?}"),
        }
        let id = (event.user_id.clone(), event.tag.clone());
        naive.insert(id.clone(), event.event.clone());
        if let Some(first) = seen.get(&event.event_id) {
            assert_eq!(*first, raw, "a republished event is the same message");
            fold.duplicates += 1;
            continue;
        }
        seen.insert(event.event_id, raw);
        fold.last.insert(id, event);
    }
    fold.held = fold
        .last
        .iter()
        .filter(|(_, e)| e.event == "granted")
        .map(|(id, _)| id.clone())
        .collect();
    // One worker publishes a user's events in order, republished ones before anything newer:
    // folding without looking at the ids gives the same.
    let naive: Tags = naive
        .into_iter()
        .filter(|(_, e)| e == "granted")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(naive, fold.held, "the fold ignoring event ids");
    fold
}

/// `cdm.user_tags` by the users' source ids.
async fn table(env: &Env) -> Tags {
    env.pg()
        .await
        .query(
            "SELECT h.user_id, t.tag FROM cdm.user_tags t JOIN dds.h_user h ON h.h_user_pk = t.user_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// The folded topic equals `cdm.user_tags`; returns the fold.
async fn assert_folds(env: &Env, when: &str) -> Fold {
    let fold = fold(env);
    assert_eq!(fold.held, table(env).await, "{when}: the folded topic");
    fold
}

/// The folded topic equals `cdm.user_tags`, and both equal the oracle's tags under `rules`.
async fn assert_tags(env: &Env, oracle: &Oracle, rules: &[Rule], when: &str) -> Fold {
    let fold = assert_folds(env, when).await;
    let expected = expected(oracle, rules);
    assert!(!expected.is_empty(), "{when}: somebody holds a tag");
    assert_eq!(fold.held, expected, "{when}: the oracle's tags");
    fold
}

/// The number after `before` in a summary line (`recomputed 56 user(s)`: "recomputed ").
fn said(line: &str, before: &str) -> i64 {
    let at = line
        .find(before)
        .unwrap_or_else(|| panic!("{before:?} in {line}"));
    line[at + before.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a number after {before:?} in {line}"))
}

#[tokio::test]
async fn the_folded_topic_is_the_tags_table_after_the_pipeline_and_replays() {
    let env = Env::new().await;
    let oracle = Oracle::testdata();
    // `dwh migrate` made the topic (the app subscribes before the first event).
    assert_eq!(env.topic_len(&env.tags_topic), 0);
    env.replay_testdata();
    env.pipeline();
    let fold = assert_tags(&env, &oracle, &SEEDED, "after the pipeline").await;
    let pairs = fold.held.len();
    assert_eq!(fold.messages, pairs, "one grant per tag held, nothing else");
    assert!(fold.last.values().all(|e| e.event == "granted"));
    // Each grant says the count behind it.
    for event in fold.last.values() {
        let rule = SEEDED.iter().find(|r| r.tag == event.tag).unwrap();
        assert_eq!(
            event.order_cnt,
            orders_of(&oracle, rule, &event.user_id),
            "{event:?}"
        );
    }

    // Replay every topic from the start: no tag changes, so no event.
    let pg = env.pg().await;
    pg.execute("DELETE FROM dwh.offsets", &[]).await.unwrap();
    env.pipeline();
    let fold = assert_tags(&env, &oracle, &SEEDED, "after replaying every topic").await;
    assert_eq!(fold.messages, pairs, "a replay published a change");
    // …nor does a full recompute.
    env.dwh_ok(&["cdm", "--full", "--chunk", "7"]);
    assert_eq!(assert_folds(&env, "after --full").await.messages, pairs);

    // `dwh tags show`: a user's tags with the counts behind them, and the rest.
    let (user, _) = fold
        .held
        .iter()
        .max_by_key(|(u, _)| fold.held.iter().filter(|(v, _)| v == u).count())
        .unwrap();
    let shown: Value =
        serde_json::from_str(&env.dwh_ok(&["tags", "show", user, "--json"])).unwrap();
    assert_eq!(shown["user_id"], user.as_str());
    assert_eq!(shown["user_pk"], key(user).to_string());
    let mut held = BTreeSet::new();
    for t in shown["tags"].as_array().unwrap() {
        let rule = SEEDED.iter().find(|r| r.tag == t["tag"]).unwrap();
        assert_eq!(t["order_cnt"], orders_of(&oracle, rule, user), "{t}");
        assert_eq!(t["threshold"], rule.threshold);
        held.insert((user.clone(), rule.tag.to_owned()));
    }
    let expected_held: Tags = fold
        .held
        .iter()
        .filter(|(u, _)| u == user)
        .cloned()
        .collect();
    assert!(held.len() >= 2);
    assert_eq!(held, expected_held);
    for t in shown["not_held"].as_array().unwrap() {
        let rule = SEEDED.iter().find(|r| r.tag == t["tag"]).unwrap();
        assert_eq!(t["order_cnt"], orders_of(&oracle, rule, user), "{t}");
        assert!(t["order_cnt"].as_i64().unwrap() < rule.threshold);
    }
    assert_eq!(
        shown["tags"].as_array().unwrap().len() + shown["not_held"].as_array().unwrap().len(),
        SEEDED.len()
    );
    let text = env.dwh_ok(&["tags", "show", user]);
    assert!(text.starts_with(&format!("user {user} ")), "{text}");
    for (_, tag) in &held {
        assert!(text.contains(tag.as_str()), "{text}");
    }
    let unknown = one_line_failure(&env.dwh(&["tags", "show", "no-such-user"]));
    assert!(unknown.starts_with("dwh tags show: no user"), "{unknown}");

    // The report counts tagged users once each, and the users per tag.
    let page = std::env::temp_dir().join(format!("{}-report.html", env.name));
    env.dwh_ok(&["report", "--out", page.to_str().unwrap()]);
    let html = std::fs::read_to_string(&page).unwrap();
    std::fs::remove_file(&page).unwrap();
    let data = html
        .split(r#"<script type="application/json" id="dwh-data">"#)
        .nth(1)
        .and_then(|rest| rest.split("</script>").next())
        .unwrap();
    let data: Value = serde_json::from_str(data).unwrap();
    let kpi = |label: &str| {
        data["kpis"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k[0] == label)
            .map(|k| k[1].as_i64().unwrap())
            .unwrap()
    };
    let users: BTreeSet<&String> = fold.held.iter().map(|(u, _)| u).collect();
    assert!(users.len() < pairs, "somebody holds two tags");
    assert_eq!(kpi("tagged users"), users.len() as i64);
    for rule in SEEDED {
        let holders = fold.held.iter().filter(|(_, t)| t == rule.tag).count();
        let charted = data["tags"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t[0] == rule.tag)
            .map(|t| t[1].as_i64().unwrap());
        assert_eq!(charted, Some(holders as i64), "{}", rule.tag);
    }
}

/// The newest version of order `id` from the testdata, turned CANCELLED by a later version.
fn cancelled(id: i64) -> String {
    let orders = std::fs::read_to_string(testdata().join("orders.jsonl")).unwrap();
    let mut newest: Option<Value> = None;
    for line in orders.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["object_id"] != id || harness::oracle::parse_order(line).is_none() {
            continue;
        }
        let newer = newest.as_ref().is_none_or(|n| {
            v["payload"]["update_ts"].as_str() >= n["payload"]["update_ts"].as_str()
        });
        if newer {
            newest = Some(v);
        }
    }
    let mut order = newest.unwrap();
    order["payload"]["final_status"] = "CANCELLED".into();
    order["payload"]["update_ts"] = "2023-12-31 23:59:59".into();
    order.to_string()
}

#[tokio::test]
async fn rule_changes_and_a_cancelled_order_grant_and_revoke_what_changed() {
    let env = Env::with_partitions(2).await;
    let mut oracle = Oracle::testdata();
    env.replay_testdata();
    env.pipeline();
    let mut rules = SEEDED.to_vec();
    let fold = assert_tags(&env, &oracle, &rules, "after the pipeline").await;
    let mut published = fold.messages;

    // A new rule: exactly the users reaching its threshold are recomputed, and granted it.
    let desserts = rule("Dessert Taster", Counts::Category("Десерты"), 1);
    let line = env.dwh_ok(&[
        "tags",
        "rules",
        "set",
        "Dessert Taster",
        "--category",
        "Десерты",
        "--threshold",
        "1",
    ]);
    rules.push(desserts);
    let tasters = expected(&oracle, &[desserts]).len() as i64;
    assert!(tasters > 1, "{line}");
    assert_eq!(said(&line, "recomputed "), tasters, "{line}");
    assert!(
        line.contains(&format!("{tasters} granted, 0 revoked")),
        "{line}"
    );
    assert_eq!(said(&line, "published "), tasters, "{line}");
    let fold = assert_tags(&env, &oracle, &rules, "after a new rule").await;
    assert_eq!(fold.messages, published + tasters as usize);
    published = fold.messages;

    // A lower threshold for a pattern rule grants more users; the old holders keep it.
    let line = env.dwh_ok(&[
        "tags",
        "rules",
        "set",
        "Pizza Lover",
        "--dish-pattern",
        "пицц|pizza",
        "--threshold",
        "4",
    ]);
    let before = expected(&oracle, &rules);
    rules[0].threshold = 4;
    let after = expected(&oracle, &rules);
    let granted = after.difference(&before).count();
    assert!(granted > 0 && before.is_subset(&after));
    assert!(
        line.contains(&format!("{granted} granted, 0 revoked")),
        "{line}"
    );
    let fold = assert_tags(&env, &oracle, &rules, "after a lower threshold").await;
    assert_eq!(fold.messages, published + granted);
    published = fold.messages;

    // Removing a rule revokes its tag from every holder, with the count they have now.
    let holders: Vec<String> = after
        .iter()
        .filter(|(_, t)| t == "Tea Drinker")
        .map(|(u, _)| u.clone())
        .collect();
    assert!(!holders.is_empty());
    let line = env.dwh_ok(&["tags", "rules", "remove", "Tea Drinker"]);
    assert_eq!(said(&line, "recomputed "), holders.len() as i64, "{line}");
    rules.retain(|r| r.tag != "Tea Drinker");
    let fold = assert_tags(&env, &oracle, &rules, "after removing a rule").await;
    assert_eq!(fold.messages, published + holders.len());
    published = fold.messages;
    for user in &holders {
        let last = &fold.last[&(user.clone(), "Tea Drinker".to_owned())];
        assert_eq!(last.event, "revoked");
        assert_eq!(last.order_cnt, 0, "the rule is gone: nothing counts");
    }
    let listed = env.dwh_ok(&["tags", "rules"]);
    assert!(!listed.contains("Tea Drinker") && listed.contains("Dessert Taster"));

    // The rule changes recomputed every user they had to: a full recompute finds nothing more.
    env.dwh_ok(&["cdm", "--full"]);
    assert_eq!(assert_folds(&env, "after --full").await.messages, published);

    // A user whose only dessert order turns CANCELLED loses the tag it gave them.
    let (user, id) = oracle
        .orders
        .iter()
        .filter(|(_, o)| o.status == "CLOSED")
        .filter(|(_, o)| {
            o.dishes()
                .iter()
                .any(|d| oracle.category_of(d) == Some("Десерты"))
        })
        .map(|(id, o)| (o.user_id.clone(), *id))
        .find(|(u, _)| orders_of(&oracle, &desserts, u) == 1)
        .expect("a user with one dessert order");
    let version = cancelled(id);
    let file = std::env::temp_dir().join(format!("{}-cancel.jsonl", env.name));
    std::fs::write(&file, &version).unwrap();
    env.dwh_ok(&["replay", file.to_str().unwrap()]);
    std::fs::remove_file(&file).unwrap();
    env.pipeline();
    oracle.add_orders(&version);
    assert_eq!(oracle.orders[&id].status, "CANCELLED");
    let fold = assert_tags(&env, &oracle, &rules, "after a cancelled order").await;
    let last = &fold.last[&(user.clone(), "Dessert Taster".to_owned())];
    assert_eq!((last.event.as_str(), last.order_cnt), ("revoked", 0));
    assert!(fold.messages > published);
}

#[tokio::test]
async fn bad_rules_are_refused_with_one_line_and_exit_2_and_change_nothing() {
    let env = Env::new().await;
    let oracle = Oracle::testdata();
    env.replay_testdata();
    env.pipeline();
    let owner = env.pg().await;
    let state = async || {
        (
            fingerprint(&owner, "cdm.tag_rules").await,
            fingerprint(&owner, "cdm.user_tags").await,
            count(&owner, "SELECT count(*) FROM dwh.batches").await,
            count(&owner, "SELECT count(*) FROM dwh.outbox").await,
            env.topic_len(&env.tags_topic),
        )
    };
    let before = state().await;
    let set = |rest: &[&'static str]| -> Vec<&'static str> {
        [&["tags", "rules", "set", "Pizza Lover"][..], rest].concat()
    };
    // (arguments, the start of the line, what it must say)
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (
            set(&["--dish-pattern", "(пицц", "--threshold", "3"]),
            "dwh tags rules set: ",
            "--dish-pattern \"(пицц\" is not a valid regular expression: unclosed group; nothing changed",
        ),
        (
            set(&["--dish-pattern", "[a-", "--threshold", "3"]),
            "dwh tags rules set: ",
            "is not a valid regular expression",
        ),
        (
            set(&["--category", "Пицца", "--threshold", "3"]),
            "dwh tags rules set: ",
            "unknown category \"Пицца\": DDS knows \"\", \"Выпечка\",",
        ),
        (
            set(&["--category", "Супы", "--threshold", "0"]),
            "dwh tags rules set: ",
            "invalid value '0' for '--threshold <N>': must be 1 or more",
        ),
        (
            set(&["--category", "Супы", "--threshold", "-2"]),
            "dwh tags rules set: ",
            "invalid value '-2' for '--threshold <N>': must be 1 or more",
        ),
        (
            set(&["--category", "Супы", "--dish-pattern", "суп", "--threshold", "2"]),
            "dwh tags rules set: ",
            "cannot be used with",
        ),
        (
            set(&["--threshold", "2"]),
            "dwh tags rules set: ",
            "required arguments were not provided",
        ),
        (
            vec!["tags", "rules", "remove", "No Such Tag"],
            "dwh tags rules remove: ",
            "no rule grants tag \"No Such Tag\"",
        ),
    ];
    for (args, start, says) in &cases {
        let out = env.dwh(args);
        let line = one_line_failure(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {line}");
        assert!(line.starts_with(start), "{args:?}: {line}");
        assert!(line.contains(says), "{args:?}: {line}");
        assert_eq!(state().await, before, "{args:?} changed something");
    }

    // A rule edited by hand with a bad pattern: skipped with a warning, not a failed batch; its
    // holders keep the tag (no event), and every other tag is computed as usual.
    owner
        .batch_execute("UPDATE cdm.tag_rules SET dish_pattern = '(pizza' WHERE tag = 'Pizza Lover'")
        .await
        .unwrap();
    let warned = |out: &std::process::Output| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains("WARN") && stderr.contains("\"Pizza Lover\" skipped"),
            "{stderr}"
        );
    };
    warned(&env.dwh(&["cdm", "--full"]));
    owner
        .execute("DELETE FROM dwh.offsets WHERE job = 'cdm'", &[])
        .await
        .unwrap();
    let out = env.dwh(&["cdm"]);
    warned(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("consumed=102"));
    let listed = env.dwh_ok(&["tags", "rules"]);
    assert!(
        listed.contains("SKIPPED: not a valid regular expression (unclosed group)"),
        "{listed}"
    );
    let fold = assert_tags(&env, &oracle, &SEEDED, "with a broken rule").await;
    assert_eq!(
        fold.messages as i64, before.4,
        "a broken rule changed a tag"
    );

    // Fixed through dwh: nothing changed for its holders, so nothing is published.
    let line = env.dwh_ok(&set(&["--dish-pattern", "пицц|pizza", "--threshold", "10"]));
    assert!(
        line.trim_end()
            .ends_with("0 granted, 0 revoked; published 0 event(s)"),
        "{line}"
    );
    assert_tags(&env, &oracle, &SEEDED, "with the rule fixed").await;
}

/// Points of `dwh cdm` after the commit first: there the slices still grant many tags, so the
/// publish is reached mid-way.
const POINTS: [&str; 8] = [
    "mid-publish",
    "after-commit",
    "after-publish",
    "before-drain",
    "after-drain",
    "after-copy",
    "after-merge",
    "before-commit",
];
const AFTER_COMMIT: [&str; 3] = ["mid-publish", "after-commit", "after-publish"];

#[tokio::test]
async fn a_crash_at_every_step_of_cdm_loses_no_tag_event() {
    let env = Env::new().await;
    // Low thresholds (set by hand, as an operator might): each slice grants tags.
    let low = [
        rule("Pizza Lover", Counts::Dish(&["пицц", "pizza"]), 2),
        rule("Soup Fan", Counts::Category("Супы"), 1),
        rule("Sweet Tooth", Counts::Category("Десерты"), 1),
        rule("Tea Drinker", Counts::Category("Чай"), 1),
        rule("Pastry Regular", Counts::Category("Выпечка"), 3),
    ];
    let owner = env.pg().await;
    for r in &low {
        owner
            .execute(
                "UPDATE cdm.tag_rules SET threshold = $2 WHERE tag = $1",
                &[&r.tag, &r.threshold],
            )
            .await
            .unwrap();
    }
    let (_slices, files) = env.testdata_slices(POINTS.len());
    for (point, file) in POINTS.iter().zip(&files) {
        env.dwh_ok(&["replay", file.to_str().unwrap()]);
        env.dwh_ok(&["stg"]);
        env.dwh_ok(&["dds"]);
        let published = env.topic_len(&env.tags_topic);
        let fault = format!("cdm:{point}");
        env.crash_at(&["cdm"], point);
        let after_crash = env.topic_len(&env.tags_topic);
        if AFTER_COMMIT.contains(point) {
            assert!(after_crash >= published, "{fault}");
        } else {
            assert_eq!(
                after_crash, published,
                "{fault}: published without a commit"
            );
        }
        env.dwh_ok(&["cdm"]);
        let fold = assert_folds(&env, &format!("after a crash at {point}")).await;
        if *point == "mid-publish" {
            assert!(
                fold.duplicates > 0,
                "the acknowledged chunk is published again"
            );
        }
        if *point == "after-commit" {
            assert!(
                env.topic_len(&env.tags_topic) > after_crash,
                "the committed events went out with the next run"
            );
        }
    }
    let oracle = Oracle::testdata();
    let fold = assert_tags(&env, &oracle, &low, "after a crash at every step").await;
    assert!(fold.duplicates > 0);

    // The seeded thresholds again, by hand, then `--full` dies after its first chunk: the next
    // `--full` publishes what the first committed, then the rest — the revocations included.
    for r in &SEEDED {
        owner
            .execute(
                "UPDATE cdm.tag_rules SET threshold = $2 WHERE tag = $1",
                &[&r.tag, &r.threshold],
            )
            .await
            .unwrap();
    }
    env.crash_at(&["cdm", "--full", "--chunk", "10"], "mid-full");
    let before = env.topic_len(&env.tags_topic);
    env.dwh_ok(&["cdm", "--full", "--chunk", "10"]);
    let fold = assert_tags(&env, &oracle, &SEEDED, "after the crashed --full").await;
    assert!(env.topic_len(&env.tags_topic) > before);
    let revoked = fold.last.values().filter(|e| e.event == "revoked").count();
    assert!(revoked > 0, "higher thresholds revoke tags");
}
