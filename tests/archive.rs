//! The archive against real services: the pipeline with `--archive` on, then a second, empty
//! warehouse (new database, new topics, an empty Redis database) rebuilt from the archive alone
//! with `dwh backfill` → `dds` → `cdm`, equals the first one; a second backfill changes nothing;
//! the exported showcases read back with the `parquet` crate's reader equal the tables. Once with
//! a folder, once with the S3-compatible server `scripts/services up` runs on loopback.
//!
//! "Equal" means every row of every STG, DDS and CDM table and of the dead letters, with every
//! column except those that record *when* or *through which topic* a row was loaded — `load_dt`,
//! `created_at`, `updated_at`, `batch_id` and DDS's `load_src` (the STG topic's name, which the
//! second warehouse's fresh topics change). That the rebuilt STG batches carry the ids of the
//! original ones is checked on its own.

mod harness;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{BinaryArray, RecordBatch, StringArray};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use harness::{count, fingerprint, Env};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Columns that say when or through which topic a row was loaded, not what it holds.
/// `published_batch` (stg.users, stg.restaurants) names the batch that published a dictionary
/// version to the STG topic: a batch of its own, not of the orders topic (README "The model").
const LOAD_COLUMNS: &[&str] = &[
    "load_dt",
    "created_at",
    "updated_at",
    "batch_id",
    "load_src",
    "published_batch",
];

/// Where the tests' S3-compatible server is (scripts/services: s3s-fs on 127.0.0.1).
fn s3_env() -> Vec<(&'static str, String)> {
    let port = std::env::var("DWH_S3_PORT").unwrap_or_else(|_| "9310".into());
    vec![
        ("AWS_ENDPOINT", format!("http://127.0.0.1:{port}")),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_ACCESS_KEY_ID", "dwh".into()),
        ("AWS_SECRET_ACCESS_KEY", "dwh-local-secret".into()),
        ("AWS_REGION", "us-east-1".into()),
    ]
}

/// Bucket the services script creates for tests.
const BUCKET: &str = "dwh-test";

/// `dwh <args>` in `env` with `extra` env vars; must succeed; returns stdout.
fn dwh(env: &Env, args: &[&str], extra: &[(&str, String)]) -> String {
    let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.dwh_ok_with(args, &extra)
}

/// A fingerprint of every STG, DDS and CDM table and the dead letters, load columns left out.
async fn content(env: &Env) -> BTreeMap<String, (i64, String)> {
    let client = env.pg().await;
    let tables = client
        .query(
            "SELECT table_schema || '.' || table_name,
                    string_agg(quote_ident(column_name), ', ' ORDER BY ordinal_position)
             FROM information_schema.columns
             WHERE (table_schema IN ('stg', 'dds', 'cdm') OR
                    (table_schema, table_name) = ('dwh', 'dead_letters'))
               AND column_name <> ALL($1)
             GROUP BY 1",
            &[&LOAD_COLUMNS],
        )
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for row in tables {
        let (table, columns): (String, String) = (row.get(0), row.get(1));
        let rows = count(&client, &format!("SELECT count(*) FROM {table}")).await;
        let print = fingerprint(&client, &format!("(SELECT {columns} FROM {table})")).await;
        out.insert(table, (rows, print));
    }
    out
}

/// The ids of the STG batches of the orders topic (the batches that publish dictionary versions,
/// `topic = 'redis'`, are named by the time they ran: README "The model").
async fn stg_batches(env: &Env) -> Vec<uuid::Uuid> {
    env.pg()
        .await
        .query(
            "SELECT batch_id FROM dwh.batches WHERE job = 'stg' AND topic <> 'redis' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Every Parquet file under `prefix`, read back with the `parquet` crate.
async fn read_all(store: &dyn ObjectStore, prefix: &Path) -> BTreeMap<String, Vec<RecordBatch>> {
    use futures::TryStreamExt;
    let metas: Vec<_> = store.list(Some(prefix)).try_collect().await.unwrap();
    let mut files = BTreeMap::new();
    for meta in metas {
        let bytes = store
            .get(&meta.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let batches = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        files.insert(format!("/{}", meta.location), batches);
    }
    files
}

/// Rows of `batches` as text, the named columns in order.
fn rows_as_text(batches: &[RecordBatch], columns: &[&str]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = columns
            .iter()
            .map(|c| {
                let column = batch
                    .column_by_name(c)
                    .unwrap_or_else(|| panic!("exported column {c}"));
                ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default()).unwrap()
            })
            .collect();
        for i in 0..batch.num_rows() {
            rows.push(formatters.iter().map(|f| f.value(i).to_string()).collect());
        }
    }
    rows.sort();
    rows
}

/// The same columns of a showcase straight from PostgreSQL, as text.
async fn table_as_text(env: &Env, sql: &str) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = env
        .pg()
        .await
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (0..r.len()).map(|i| r.get::<_, String>(i)).collect())
        .collect();
    rows.sort();
    rows
}

/// Archive → rebuild → compare, against the store `store` (holding the archive at `prefix`).
async fn round_trip(
    url: &str,
    extra: &[(&str, String)],
    store: Arc<dyn ObjectStore>,
    prefix: Path,
) {
    let first = Env::new().await;
    first.replay_testdata();
    let archived = [extra, &[("DWH_ARCHIVE", url.to_owned())]].concat();
    dwh(&first, &["snapshot"], &archived);
    // A run that dies after archiving but before its commit: the retry archives the same batch
    // under the same name, so the archive still holds it once.
    let crash = [
        &archived[..],
        &[("DWH_FAULT", "stg:before-commit".to_owned())],
    ]
    .concat();
    let crash: Vec<(&str, &str)> = crash.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let died = first.command(&["stg"], &crash).output().unwrap();
    assert!(!died.status.success(), "the injected crash happened");
    assert_eq!(
        count(&first.pg().await, "SELECT count(*) FROM stg.order_events").await,
        0
    );
    for job in ["stg", "dds", "cdm"] {
        dwh(&first, &[job], &archived);
    }
    let original = content(&first).await;
    let original_batches = stg_batches(&first).await;
    assert!(original["stg.order_events"].0 > 2_000, "{original:?}");
    assert!(original["cdm.user_product_counters"].0 > 0);
    assert!(original["dwh.dead_letters"].0 > 0);
    let layers = |schema: &str| original.keys().filter(|t| t.starts_with(schema)).count();
    assert!(
        layers("stg.") >= 3 && layers("dds.") >= 14 && layers("cdm.") >= 4,
        "{original:?}"
    );

    // The archive holds every message exactly as it was in the testdata file.
    let files = read_all(store.as_ref(), &prefix).await;
    let in_folder = |folder: &str| files.keys().filter(|k| k.contains(folder)).count();
    assert_eq!(in_folder("/snapshots/"), 1, "{:?}", files.keys());
    assert_eq!(in_folder("/orders/"), 1, "{:?}", files.keys());
    let mut archived_values: Vec<Vec<u8>> = Vec::new();
    for batches in files
        .iter()
        .filter(|(k, _)| k.contains("/orders/"))
        .map(|(_, b)| b)
    {
        for batch in batches {
            let column = |name: &str| batch.column_by_name(name).unwrap().clone();
            let kind = column("kind");
            let kind = kind.as_any().downcast_ref::<StringArray>().unwrap();
            let value = column("value");
            let value = value.as_any().downcast_ref::<BinaryArray>().unwrap();
            for i in 0..batch.num_rows() {
                if kind.value(i) == "message" {
                    archived_values.push(value.value(i).to_vec());
                }
            }
        }
    }
    let lines = std::fs::read(harness::testdata().join("orders.jsonl")).unwrap();
    let mut expected: Vec<Vec<u8>> = lines
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    expected.sort();
    archived_values.sort();
    assert_eq!(archived_values.len(), expected.len());
    assert!(
        archived_values == expected,
        "archived bytes differ from the testdata lines"
    );

    // Lose everything: a new database, new topics, an empty Redis. Rebuild from the archive.
    drop(first);
    let second = Env::new().await;
    let from = ["backfill", "--from-archive", url];
    let line = dwh(&second, &from, extra);
    assert!(line.contains("batches=1 snapshots=1"), "{line}");
    for job in ["dds", "cdm"] {
        dwh(&second, &[job], extra);
    }
    let rebuilt = content(&second).await;
    assert_eq!(rebuilt, original, "the rebuilt warehouse differs");
    assert_eq!(stg_batches(&second).await, original_batches);

    // Again, over a warehouse that already holds everything: nothing changes.
    dwh(&second, &from, extra);
    for job in ["dds", "cdm"] {
        dwh(&second, &[job], extra);
    }
    assert_eq!(
        content(&second).await,
        original,
        "a second backfill changed rows"
    );

    // A range that holds nothing loads nothing.
    let line = dwh(
        &second,
        &[&from[..], &["--until", "2000-01-01"]].concat(),
        extra,
    );
    assert!(line.contains("batches=0 snapshots=0 consumed=0"), "{line}");

    export(&second, url, extra, store, prefix).await;
}

/// `dwh export` to `<url>/export`, read back and compared with the showcase tables row by row.
async fn export(
    env: &Env,
    url: &str,
    extra: &[(&str, String)],
    store: Arc<dyn ObjectStore>,
    prefix: Path,
) {
    let out = format!("{url}/export");
    // A small chunk, so the files have many row groups.
    let line = dwh(env, &["export", "--out", &out, "--chunk", "500"], extra);
    assert!(line.contains("user_product_counters="), "{line}");
    let files = read_all(store.as_ref(), &prefix.clone().join("export")).await;
    let file = |name: &str| {
        files
            .iter()
            .find(|(k, _)| k.ends_with(&format!("/{name}.parquet")))
            .unwrap_or_else(|| panic!("{name}.parquet in {:?}", files.keys()))
            .1
            .clone()
    };
    let products = file("user_product_counters");
    assert!(products.len() > 1, "one batch per row group of 500 rows");
    let expected = table_as_text(
        env,
        "SELECT c.user_id::text, u.user_id, coalesce(n.username, ''), c.product_id::text,
                c.product_name, c.order_cnt::text
         FROM cdm.user_product_counters c JOIN dds.h_user u ON u.h_user_pk = c.user_id
         LEFT JOIN LATERAL (SELECT username FROM dds.s_user_names s WHERE s.h_user_pk = c.user_id
                            ORDER BY effective_dt DESC LIMIT 1) n ON true",
    )
    .await;
    assert!(expected.len() > 500);
    let got = rows_as_text(
        &products,
        &[
            "user_id",
            "user_source_id",
            "username",
            "product_id",
            "product_name",
            "order_cnt",
        ],
    );
    assert_eq!(got, expected, "user_product_counters.parquet");

    let expected = table_as_text(
        env,
        "SELECT user_id::text, category_id::text, category_name, order_cnt::text
         FROM cdm.user_category_counters",
    )
    .await;
    assert!(!expected.is_empty());
    let got = rows_as_text(
        &file("user_category_counters"),
        &["user_id", "category_id", "category_name", "order_cnt"],
    );
    assert_eq!(got, expected, "user_category_counters.parquet");

    let expected = table_as_text(
        env,
        "SELECT user_id::text, tag, order_cnt::text FROM cdm.user_tags",
    )
    .await;
    assert!(!expected.is_empty());
    let got = rows_as_text(&file("user_tags"), &["user_id", "tag", "order_cnt"]);
    assert_eq!(got, expected, "user_tags.parquet");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warehouse_rebuilt_from_an_archive_folder_is_identical() {
    let dir: PathBuf = std::env::temp_dir().join(format!("dwh-archive-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Arc::new(LocalFileSystem::new_with_prefix(&dir).unwrap());
    round_trip(dir.to_str().unwrap(), &[], store, Path::default()).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warehouse_rebuilt_from_an_s3_bucket_is_identical() {
    let prefix = format!("run-{}", uuid::Uuid::new_v4());
    let env = s3_env();
    let mut builder = AmazonS3Builder::new().with_bucket_name(BUCKET);
    for (key, value) in &env {
        builder = builder.with_config(key.to_lowercase().parse().unwrap(), value);
    }
    let store: Arc<dyn ObjectStore> = Arc::new(builder.build().unwrap());
    let url = format!("s3://{BUCKET}/{prefix}");

    // An archive that cannot be written (the server refuses a wrong secret) stops the batch
    // before its commit.
    let lost = Env::new().await;
    lost.replay_testdata();
    let extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let archive = format!("{url}-refused");
    let bad = [
        ("DWH_ARCHIVE", archive.as_str()),
        ("AWS_SECRET_ACCESS_KEY", "wrong-secret"),
    ];
    let out = lost
        .command(&["stg"], &[&extra[..], &bad].concat())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&archive) && stderr.contains("403"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("wrong-secret"),
        "a secret is printed: {stderr}"
    );
    let client = lost.pg().await;
    assert_eq!(
        count(&client, "SELECT count(*) FROM stg.order_events").await,
        0
    );
    assert_eq!(count(&client, "SELECT count(*) FROM dwh.batches").await, 0);
    drop(lost);

    round_trip(&url, &env, store.clone(), Path::from(prefix.as_str())).await;
    // Leave the bucket as it was.
    use futures::TryStreamExt;
    let metas: Vec<_> = store
        .list(Some(&Path::from(prefix.as_str())))
        .try_collect()
        .await
        .unwrap();
    for meta in metas {
        store.delete(&meta.location).await.unwrap();
    }
}
