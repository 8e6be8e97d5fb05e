use super::*;
use crate::model::StgMessage;

#[test]
fn keys_match_the_source_projects_dashboards() {
    assert_eq!(
        hub_key("626a81ce9a8cd1920641e272").to_string(),
        "f58d869c-6e95-59bd-ae43-fc5e42b6f9cd"
    );
    assert_eq!(
        hub_key("Супы").to_string(),
        "5f2bd497-da00-5ac4-b4a7-3f00c6551edc"
    );
}

#[test]
fn hashdiff_tells_missing_from_empty() {
    assert_ne!(hashdiff(&[Some(""), None]), hashdiff(&[None, Some("")]));
    assert_ne!(
        hashdiff(&[Some("a"), Some("b")]),
        hashdiff(&[Some("ab"), Some("")])
    );
    assert_ne!(hashdiff(&[None, None]), hashdiff(&[None]));
}

#[test]
fn link_keys_depend_on_order() {
    let (a, b) = (hub_key("a"), hub_key("b"));
    assert_ne!(link_key(&[a, b]), link_key(&[b, a]));
}

fn order(json: &str) -> crate::model::StgOrder {
    match StgMessage::parse(json.as_bytes()).unwrap() {
        StgMessage::Order(o) => o,
        other => panic!("not an order: {other:?}"),
    }
}

const ORDER: &str = r#"{"order_id":7,"order_dt":"2023-09-25 12:00:00","update_ts":"2023-09-25 13:00:00","seq":5,"final_status":"CLOSED","cost":400,"payment":400,
  "user":{"id":"u1","name":null,"login":null,"update_ts":null},"restaurant":{"id":"r1","name":null,"update_ts":null},
  "items":[{"id":"d2","name":"Борщ","price":200,"quantity":1,"category":"Супы"},{"id":"d1","name":"Чай","price":100,"quantity":2,"category":null},{"id":"d2","name":"Борщ","price":200,"quantity":1,"category":"Супы"}]}"#;

#[test]
fn a_stage_batch_follows_the_description() {
    let o = order(ORDER);
    let batch = stage_batch(&STAGE_ORDERS, std::slice::from_ref(&o)).unwrap();
    let names: Vec<String> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let expected: Vec<String> = stage_columns(&STAGE_ORDERS)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, expected);
    assert_eq!(batch.num_rows(), 1);
    let items = stage_batch(&STAGE_ORDER_ITEMS, std::slice::from_ref(&o)).unwrap();
    assert_eq!(items.num_rows(), 3, "one row per line");
    // No records: the same schema, no rows (no probe record parsed for it).
    let empty = stage_batch(&STAGE_MENU, &[]).unwrap();
    assert_eq!(empty.num_rows(), 0);
    assert_eq!(
        empty.schema().fields().len(),
        stage_columns(&STAGE_MENU).len()
    );
}

#[test]
fn the_basket_is_each_dish_once_by_id() {
    let o = order(ORDER);
    let d1 = hub_key("d1");
    let d2 = hub_key("d2");
    assert_eq!(
        o.basket,
        format!(r#"[{{"product_pk":"{d1}","name":"Чай"}},{{"product_pk":"{d2}","name":"Борщ"}}]"#)
    );
}

#[test]
fn every_stage_reads_what_it_feeds() {
    fn check<T>(stage: &Stage<T>) {
        let columns = stage_columns(stage);
        let mut names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all, "{}: a column twice", stage.table);
        for hub in stage.keys {
            assert!(
                names.contains(&hub.business_key),
                "{}: {}",
                stage.table,
                hub.table
            );
        }
        for hub in stage.hubs {
            assert!(stage.keys.iter().any(|k| std::ptr::eq(*k, *hub)));
            for extra in hub.extras {
                assert!(
                    names.contains(extra),
                    "{}: {}.{extra}",
                    stage.table,
                    hub.table
                );
            }
        }
        for link in stage.links {
            for hub in link.hubs {
                assert!(stage.keys.iter().any(|k| std::ptr::eq(*k, *hub)));
            }
        }
        for sat in stage.satellites {
            let feed = stage
                .log
                .as_ref()
                .expect("a satellite's stage feeds its log");
            assert!(std::ptr::eq(feed.log, sat.log), "{}", sat.table);
            assert!(names.contains(&feed.effective) && names.contains(&feed.seq));
        }
    }
    check(&STAGE_ORDERS);
    check(&STAGE_ORDER_ITEMS);
    check(&STAGE_USERS);
    check(&STAGE_RESTAURANTS);
    check(&STAGE_MENU);
}

fn sql_of(statements: Vec<Statement>) -> String {
    statements
        .into_iter()
        .map(|s| match s {
            Statement::Plain(sql) => format!("-- no parameters\n{sql};"),
            Statement::Loading(sql) => format!("-- $1 load_src, $2 batch id\n{sql};"),
            Statement::Batch(sql) => format!("-- $1 batch id\n{sql};"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn generated_sql_of_the_order_stage() {
    let mut sql = hub_merge(&H_ORDER, STAGE_ORDERS.table);
    sql.extend(link_merge(&L_ORDER_USER, STAGE_ORDERS.table));
    sql.extend(log_merge(
        STAGE_ORDERS.log.as_ref().unwrap(),
        STAGE_ORDERS.table,
    ));
    insta::assert_snapshot!(sql_of(sql));
    insta::assert_snapshot!(
        "s_order_status",
        sql_of(satellite_merge(&S_ORDER_STATUS, &STAGE_ORDERS))
    );
}

/// A satellite's merge tells the parents a batch added by their hub's temp table, so each stage
/// feeding satellites must merge (and so record) that hub itself.
#[test]
fn every_satellite_stage_merges_its_parents_hub() {
    fn check<T>(stage: &Stage<T>) {
        if let Some(feed) = &stage.log {
            assert!(
                stage.hubs.iter().any(|h| std::ptr::eq(*h, feed.log.parent)),
                "{} does not merge {}",
                stage.table,
                feed.log.parent.table
            );
        }
    }
    check(&STAGE_ORDERS);
    check(&STAGE_ORDER_ITEMS);
    check(&STAGE_USERS);
    check(&STAGE_RESTAURANTS);
    check(&STAGE_MENU);
}

/// What lets a merge skip the conflict check for the rows of a parent the batch added: no other
/// statement of the batch wrote them before. Each version log and satellite is fed by one stage,
/// and a link with `new_with` by one stage, at or after one that merges that hub (the stages in
/// the order `dwh dds` loads them).
#[test]
fn rows_inserted_without_the_conflict_check_have_one_writer_per_batch() {
    struct Writes {
        hubs: Vec<&'static str>,
        links: Vec<&'static Link>,
        logged: Vec<&'static str>,
    }
    fn writes<T>(stage: &Stage<T>) -> Writes {
        let feed = stage.log.iter().map(|f| f.log.table);
        Writes {
            hubs: stage.hubs.iter().map(|h| h.table).collect(),
            links: stage.links.to_vec(),
            logged: feed
                .chain(stage.satellites.iter().map(|s| s.table))
                .collect(),
        }
    }
    let stages = [
        writes(&STAGE_ORDERS),
        writes(&STAGE_ORDER_ITEMS),
        writes(&STAGE_USERS),
        writes(&STAGE_RESTAURANTS),
        writes(&STAGE_MENU),
    ];
    let logged: Vec<&str> = stages.iter().flat_map(|s| s.logged.clone()).collect();
    for table in &logged {
        assert_eq!(logged.iter().filter(|t| *t == table).count(), 1, "{table}");
    }
    for (i, stage) in stages.iter().enumerate() {
        for link in stage.links.iter().filter(|l| l.new_with.is_some()) {
            let writers = (stages.iter())
                .filter(|s| s.links.iter().any(|l| l.table == link.table))
                .count();
            assert_eq!(writers, 1, "{} is written by {writers} stages", link.table);
            let hub = link.new_with.unwrap().table;
            assert!(
                stages[..=i].iter().any(|s| s.hubs.contains(&hub)),
                "{hub} is not merged before {}",
                link.table
            );
        }
    }
}

#[test]
fn generated_sql_of_a_satellite_that_reaches_users() {
    insta::assert_snapshot!(sql_of(satellite_merge(&ES_PRODUCT_CATEGORY, &STAGE_MENU)));
}

/// The change points of a batch, against what the merge's SQL keeps for a parent with no stored
/// versions: per timestamp the latest position, then each hashdiff that differs from the one
/// before.
#[test]
fn change_points_follow_the_tie_rule_and_skip_repeats() {
    let (p, q) = (hub_key("p"), hub_key("q"));
    let (a, b, c) = (hub_key("a"), hub_key("b"), hub_key("c"));
    let (small, large) = if a < b { (a, b) } else { (b, a) };
    // (parent, timestamp, position, hashdiff, a change point?)
    let rows: [(Option<Uuid>, i64, i64, Uuid, bool); 8] = [
        (Some(p), 4, 5, c, false),     // repeats the version before it (c at 3)
        (Some(p), 1, 1, a, true),      // the first version
        (Some(q), 1, 9, large, false), // another parent; at one position, the smaller hashdiff
        (Some(p), 3, 3, b, false),     // lost the tie at 3 to the later position
        (Some(p), 2, 2, a, false),     // repeats a
        (Some(p), 3, 4, c, true),      // won the tie at 3, differs from a
        (None, 1, 1, a, false),        // no parent: no row
        (Some(q), 1, 9, small, true),  // … is its first version
    ];
    let parents = FixedSizeBinaryArray::try_from_sparse_iter_with_size(
        rows.iter().map(|r| r.0.map(|k| *k.as_bytes())),
        16,
    )
    .unwrap();
    let effective = TimestampMicrosecondArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>());
    let seq = Int64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>());
    let hashdiffs =
        FixedSizeBinaryArray::try_from_iter(rows.iter().map(|r| *r.3.as_bytes())).unwrap();
    let versions = Versions {
        parents: &parents,
        effective: &effective,
        seq: &seq,
    };
    let change = change_points(&versions, &hashdiffs);
    let expected: Vec<bool> = rows.iter().map(|r| r.4).collect();
    assert_eq!(
        change.iter().map(Option::unwrap).collect::<Vec<_>>(),
        expected
    );
}
