//! Operating dwh against real services: `dwh status` figures after the testdata demo (counted
//! from the testdata by the oracle), the stale exit code, the metrics a run pushes to a
//! Pushgateway (a local listener here), JSON logs, the plain progress lines of `cdm --full`, and
//! the report rendered by a real headless Chromium with every chart painted and no console errors.

mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use harness::oracle::Oracle;
use harness::{eventually, Env};
use serde_json::Value;

/// `dwh status --json [extra]`: (exit code, parsed output).
fn status(env: &Env, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["status", "--json"];
    args.extend_from_slice(extra);
    let out = env.dwh(&args);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "dwh status --json printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().expect("an exit code"), json)
}

fn job<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == name)
        .unwrap_or_else(|| panic!("no job {name} in {status}"))
}

fn rows(status: &Value, table: &str) -> i64 {
    status["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == table)
        .unwrap_or_else(|| panic!("no table {table} in {status}"))["rows"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn status_shows_the_testdata_demo_exactly_and_exits_2_when_stale() {
    let env = Env::new().await;
    let oracle = Oracle::testdata();

    // Before anything ran: orders wait and no job ever committed: stale.
    env.replay_testdata();
    let (code, before) = status(&env, &[]);
    assert_eq!(code, 2, "{before}");
    assert_eq!(job(&before, "stg")["lag"], oracle.lines as i64);
    assert_eq!(job(&before, "stg")["stale"], true);
    assert!(job(&before, "dds")["last_batch"].is_null());

    env.pipeline();
    let (code, s) = status(&env, &[]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(s["healthy"], true);

    let orders = oracle.orders.len() as i64;
    // STG loads every order version (README "The model"); its last batch is the orders topic's.
    let versions = oracle.version_count() as i64;
    let stg = job(&s, "stg");
    assert_eq!(stg["topic"], env.orders_topic.as_str());
    assert_eq!(stg["last_batch"]["consumed"], oracle.lines as i64);
    assert_eq!(stg["last_batch"]["loaded"], versions);
    assert_eq!(stg["last_batch"]["dead_lettered"], oracle.junk as i64);
    assert_eq!(stg["last_batch"]["published"], true);
    assert!(stg["last_batch"]["seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(stg["dead_letters"]["count"], oracle.junk as i64);
    assert!(!stg["dead_letters"]["newest_reason"]
        .as_str()
        .unwrap()
        .is_empty());
    // DDS reads every order version and every dictionary version STG published.
    let dds = job(&s, "dds");
    assert_eq!(dds["last_batch"]["consumed"], oracle.stg_messages() as i64);
    assert_eq!(dds["dead_letters"]["count"], 0);
    let cdm = job(&s, "cdm");
    assert_eq!(
        cdm["last_batch"]["consumed"],
        env.topic_len(&env.dds_topic),
        "one message per affected user"
    );
    for name in ["stg", "dds", "cdm"] {
        assert_eq!(job(&s, name)["lag"], 0, "{name}");
        assert_eq!(job(&s, name)["stale"], false, "{name}");
        assert!(job(&s, name)["last_batch"]["age_secs"].as_f64().unwrap() < 600.0);
    }

    // Every dish an order or a menu names is a hub; a status row per change.
    let users: BTreeSet<&String> = oracle.orders.values().map(|o| &o.user_id).collect();
    let dishes: BTreeSet<String> = oracle
        .orders
        .values()
        .flat_map(|o| o.items.iter().map(|(id, _)| id.clone()))
        .chain(oracle.menu_pairs().into_iter().map(|(_, d)| d))
        .collect();
    let status_rows: usize = oracle
        .orders
        .keys()
        .map(|id| oracle.status_history(*id).len())
        .sum();
    assert_eq!(rows(&s, "stg.order_events"), versions);
    assert_eq!(rows(&s, "dds.h_order"), orders);
    assert_eq!(rows(&s, "dds.s_order_status"), status_rows as i64);
    assert_eq!(rows(&s, "dds.h_user"), users.len() as i64);
    assert_eq!(rows(&s, "dds.h_product"), dishes.len() as i64);
    assert_eq!(
        rows(&s, "cdm.user_product_counters"),
        oracle.product_counters().len() as i64
    );
    assert_eq!(
        rows(&s, "cdm.user_category_counters"),
        oracle.category_counters().len() as i64
    );
    // Estimated counts, once PostgreSQL has analysed the tables, say the same.
    env.pg().await.batch_execute("ANALYZE").await.unwrap();
    let (_, estimated) = status(&env, &["--estimate"]);
    assert_eq!(estimated["estimated_rows"], true);
    for table in [
        "stg.order_events",
        "dds.h_order",
        "cdm.user_product_counters",
    ] {
        assert_eq!(rows(&estimated, table), rows(&s, table), "{table}");
    }
    assert_eq!(
        estimated["tables"].as_array().unwrap().len(),
        s["tables"].as_array().unwrap().len()
    );

    // The pinned figures of the README's demo.
    assert_eq!(
        (orders, versions, oracle.junk, oracle.lines),
        (2980, 3018, 28, 3082)
    );

    // The human table says the same.
    let out = env.dwh(&["status"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let stg_line = text.lines().find(|l| l.starts_with("stg ")).unwrap();
    let cells: Vec<&str> = stg_line.split_whitespace().collect();
    assert_eq!(cells[3..5], ["3082", "3018"], "{text}");
    assert_eq!(cells[6..], ["0", "28", "ok"], "{text}");
    assert!(text.trim_end().ends_with("healthy"), "{text}");

    // New orders wait: fresh batches are not stale, but past the threshold they are.
    env.replay_testdata();
    let (code, s) = status(&env, &[]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(job(&s, "stg")["lag"], oracle.lines as i64);
    // The smallest threshold, 1 s (0 is a bad flag): stale once the newest batch is older.
    let s = eventually(Duration::from_secs(30), "stg to be stale", || async {
        let (code, s) = status(&env, &["--stale-secs", "1"]);
        (code == 2).then_some(s)
    })
    .await;
    assert_eq!(s["healthy"], false);
    assert_eq!(job(&s, "stg")["stale"], true);
    assert_eq!(job(&s, "dds")["stale"], false, "nothing waits for dds");
    let out = env.dwh(&["status", "--stale-secs", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("STALE: stg"));

    // Long work prints plain progress lines when not on a terminal.
    let out = env.dwh(&["cdm", "--full", "--chunk", "10"]);
    assert!(out.status.success());
    let n = users.len();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("users: {n}/{n} (100%)")),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A one-request HTTP listener standing in for the Pushgateway: (request line, body).
fn gateway() -> (String, mpsc::Receiver<(String, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream);
        let mut request = String::new();
        reader.read_line(&mut request).unwrap();
        let mut length = 0;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            if header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        reader
            .get_mut()
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .unwrap();
        let _ = tx.send((request.trim().to_string(), String::from_utf8(body).unwrap()));
    });
    (url, rx)
}

/// `name value` lines of a Prometheus text body.
fn samples(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_string(), value.parse().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn a_run_pushes_its_figures_and_a_dead_gateway_fails_nothing() {
    let env = Env::new().await;
    let oracle = Oracle::testdata();
    env.replay_testdata();

    let (url, pushed) = gateway();
    let out = env
        .command(&["stg"], &[("DWH_PUSHGATEWAY_URL", &url)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (request, body) = pushed
        .recv_timeout(Duration::from_secs(30))
        .expect("the run pushed its metrics");
    assert_eq!(request, "PUT /metrics/job/dwh/dwh_job/stg HTTP/1.1");
    assert!(body.contains("# TYPE dwh_batch_seconds gauge"), "{body}");
    let figures = samples(&body);
    assert_eq!(figures["dwh_batch_consumed_messages"], oracle.lines as f64);
    // Every order version loaded; published: those and the dictionary versions they name.
    assert_eq!(
        figures["dwh_batch_loaded_rows"],
        oracle.version_count() as f64
    );
    assert_eq!(
        figures["dwh_batch_dead_lettered_messages"],
        oracle.junk as f64
    );
    assert_eq!(
        figures["dwh_batch_published_messages"],
        oracle.stg_messages() as f64
    );
    assert_eq!(figures["dwh_dead_letters"], oracle.junk as f64);
    assert_eq!(figures["dwh_lag_messages"], 0.0);
    assert!(figures["dwh_batch_seconds"] > 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - figures["dwh_last_run_timestamp_seconds"]).abs() < 120.0);

    // Nobody listens: the batch still commits and the run says why, as a JSON log line.
    let out = env
        .command(
            &["dds"],
            &[
                ("DWH_PUSHGATEWAY_URL", "http://127.0.0.1:1"),
                ("DWH_LOG_FORMAT", "json"),
            ],
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warning: Value = stderr
        .lines()
        .find(|l| l.contains("metrics not pushed"))
        .map(|l| serde_json::from_str(l).expect("a JSON log line"))
        .unwrap_or_else(|| panic!("no warning in {stderr}"));
    assert_eq!(warning["level"], "WARN");
    let (_, s) = status(&env, &[]);
    assert_eq!(job(&s, "dds")["lag"], 0);
}

/// Chromium as Debian ships it (`DWH_CHROMIUM` overrides the binary).
fn chromium() -> String {
    let bin = std::env::var("DWH_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let found = Command::new(&bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{bin} not found: scripts/toolchain installs Debian's chromium"
    );
    bin
}

/// Open `page` in headless Chromium with no network: (the DOM after its scripts ran, console lines).
fn open_headless(page: &Path, dir: &Path) -> (String, Vec<String>) {
    let profile = dir.join("chromium-profile");
    let (dom, log) = (dir.join("dom.html"), dir.join("chromium.log"));
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // Any attempt to reach the network fails (and would log a console error).
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&dom).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 90s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = std::fs::read_to_string(log).unwrap();
    assert!(status.success(), "chromium failed: {log}");
    let console = log
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect();
    (std::fs::read_to_string(dom).unwrap(), console)
}

/// The value axes of every chart as the page rendered them: chart id → axis id → tick values.
fn chart_ticks(dom: &str) -> BTreeMap<String, BTreeMap<String, Vec<f64>>> {
    let mut out = BTreeMap::new();
    for canvas in dom.split("<canvas").skip(1) {
        let tag = &canvas[..canvas.find('>').unwrap()];
        let attr = |name: &str| {
            let start = tag.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
            tag[start..start + tag[start..].find('"').unwrap()].replace("&quot;", "\"")
        };
        let axes: BTreeMap<String, Vec<f64>> = serde_json::from_str(&attr("data-ticks")).unwrap();
        out.insert(attr("id"), axes);
    }
    out
}

/// The JSON figures inlined in the page.
fn page_data(html: &str) -> Value {
    let start = html.find(r#"id="dwh-data">"#).unwrap() + r#"id="dwh-data">"#.len();
    let end = start + html[start..].find("</script>").unwrap();
    serde_json::from_str(&html[start..end]).unwrap()
}

#[tokio::test]
async fn the_report_renders_every_chart_in_headless_chromium() {
    let env = Env::new().await;
    let oracle = Oracle::testdata();
    env.replay_testdata();
    env.pipeline();
    let dir = std::env::temp_dir().join(&env.name);
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("report.html");
    env.dwh_ok(&["report", "--out", page.to_str().unwrap()]);

    let html = std::fs::read_to_string(&page).unwrap();
    let data = page_data(&html);
    // The top dish, counted from the testdata: distinct CLOSED orders per dish name.
    let mut by_name: BTreeMap<String, i64> = BTreeMap::new();
    for (name, n) in oracle.product_counters().values() {
        *by_name.entry(name.clone()).or_default() += n;
    }
    let (top_name, top_orders) = by_name
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
        .unwrap();
    assert_eq!(data["dishes_by_orders"][0][0], top_name.as_str());
    assert_eq!(data["dishes_by_orders"][0][1], *top_orders);
    let closed = oracle
        .orders
        .values()
        .filter(|o| o.status == "CLOSED")
        .count() as i64;
    let per_day: i64 = data["orders_per_day"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d[1].as_i64().unwrap())
        .sum();
    assert_eq!(per_day, closed);

    let (dom, console) = open_headless(&page, &dir);
    let canvases = dom.matches("<canvas").count();
    assert_eq!(canvases, 7, "{dom}");
    assert_eq!(
        dom.matches(r#"data-rendered="true""#).count(),
        canvases,
        "every chart painted: {dom}"
    );
    assert!(dom.contains(r#"data-charts-rendered="7""#));
    // Counts are ticked at whole numbers (a lag of 0 once read 0.1, 0.2…), and so are ages of
    // seconds: every value axis here.
    let ticks = chart_ticks(&dom);
    assert_eq!(ticks.len(), 7, "{ticks:?}");
    for (chart, axes) in &ticks {
        assert!(!axes.is_empty(), "{chart} has no value axis");
        for (axis, values) in axes {
            assert!(
                values.len() >= 2 && values.iter().all(|v| v.fract() == 0.0),
                "{chart} axis {axis} ticks at {values:?}"
            );
        }
    }
    // The freshness chart and its table show the same age: whole seconds, one text.
    for j in data["jobs"].as_array().unwrap() {
        let secs = j["age_secs"].as_u64().expect("whole seconds");
        assert!(secs < 60, "{j}");
        assert_eq!(j["age"], format!("{secs}s"), "{j}");
    }
    // The page's own line proves the console is captured; nothing else may appear.
    assert_eq!(console.len(), 1, "console: {console:#?}");
    assert!(console[0].contains("dwh report: 7 charts rendered"));
    std::fs::remove_dir_all(dir).unwrap();
}
