//! `dwh report --out report.html`: one self-contained page answering "what do our users order?".
//!
//! Charts of the top dishes and categories (by distinct CLOSED orders and by distinct users, from
//! the CDM showcases), orders per day (from DDS, by current status), users per tag (and the
//! distinct users holding any tag) and the pipeline's freshness (from `dwh status`). The page is `assets/report.html` with the figures
//! inlined as JSON and Chart.js (vendored in `assets/`, see its README) inlined as a script, so it
//! opens anywhere without a network. Each canvas marks itself `data-rendered="true"` once it holds
//! painted pixels; the page then sets `data-charts-rendered` on `<body>` (the tests read both).

use std::path::PathBuf;

use anyhow::{Context, Result};
use dwh_shared::config::{positive, Kafka, Postgres, Topics};
use dwh_shared::{mask_url, pg};
use serde_json::{json, Value};
use tokio_postgres::Client;

use crate::status;

/// The vendored Chart.js build (see `assets/README.md` to update it).
pub const CHART_JS_VERSION: &str = "4.6.1";
const CHART_JS: &str = include_str!("../assets/chart.umd.min.js");
const TEMPLATE: &str = include_str!("../assets/report.html");
/// Charts on the page (the tests expect each to be rendered).
pub const CHARTS: usize = 7;

/// `dwh report`: write the showcase dashboard as one HTML file.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The HTML file to write
    #[arg(long, value_name = "FILE", default_value = "report.html")]
    pub out: PathBuf,
    /// Bars per top-N chart
    #[arg(
        long,
        value_name = "N",
        default_value_t = 15,
        value_parser = positive::<usize>,
        allow_negative_numbers = true
    )]
    pub top: usize,
    #[command(flatten)]
    pub pg: Postgres,
    #[command(flatten)]
    pub kafka: Kafka,
    #[command(flatten)]
    pub topics: Topics,
}

/// (name, orders, users) of every dish or category.
async fn ranking(client: &Client, sql: &str) -> Result<Vec<(String, i64, i64)>> {
    Ok(client
        .query(sql, &[])
        .await?
        .iter()
        .map(|r| {
            let name: String = r.get(0);
            let name = if name.is_empty() {
                "(none)".into()
            } else {
                name
            };
            (name, r.get(1), r.get(2))
        })
        .collect())
}

/// The `top` of `rows` by `key` (descending, then by name), as `[name, value]` pairs.
fn top(rows: &[(String, i64, i64)], top: usize, key: fn(&(String, i64, i64)) -> i64) -> Value {
    let mut sorted: Vec<&(String, i64, i64)> = rows.iter().collect();
    sorted.sort_by(|a, b| key(b).cmp(&key(a)).then_with(|| a.0.cmp(&b.0)));
    sorted
        .iter()
        .take(top)
        .map(|r| json!([r.0, key(r)]))
        .collect()
}

/// Every figure the page shows, as the JSON its script reads.
pub async fn figures(client: &Client, args: &Args) -> Result<Value> {
    let dishes = ranking(client, include_str!("sql/report_products.sql"))
        .await
        .context("reading the product showcase")?;
    let categories = ranking(client, include_str!("sql/report_categories.sql"))
        .await
        .context("reading the category showcase")?;
    let per_day: Vec<Value> = client
        .query(include_str!("sql/report_orders_per_day.sql"), &[])
        .await
        .context("counting orders per day in DDS")?
        .iter()
        .map(|r| {
            json!([
                r.get::<_, String>(0),
                r.get::<_, i64>(1),
                r.get::<_, i64>(2)
            ])
        })
        .collect();
    let tags: Vec<Value> = client
        .query(include_str!("sql/report_tags.sql"), &[])
        .await
        .context("counting users per tag")?
        .iter()
        .map(|r| json!([r.get::<_, String>(0), r.get::<_, i64>(1)]))
        .collect();
    // A user holding three tags is one tagged user, not three.
    let tagged_users: i64 = client
        .query_one("SELECT count(DISTINCT user_id) FROM cdm.user_tags", &[])
        .await
        .context("counting tagged users")?
        .get(0);
    let status = status::collect(client, (&args.kafka, &args.topics), u64::MAX, false).await?;
    let jobs: Vec<Value> = status
        .jobs
        .iter()
        .map(|j| {
            let b = j.last_batch.as_ref();
            // Whole seconds, as `status::age` counts them: the chart's bar and the table's text
            // show the same age.
            let age_secs = b.map(|b| b.age_secs.max(0.0).floor() as u64);
            json!({
                "job": j.job,
                "batch": b.map_or("-".into(), |b| b.batch_id.to_string()[..8].to_string()),
                "age": age_secs.map_or("never".into(), |s| status::age(s as f64)),
                "age_secs": age_secs,
                "rows": b.map_or(0, |b| b.loaded),
                "seconds": b.and_then(|b| b.seconds).map_or("-".into(), |s| format!("{s:.2}")),
                "lag": j.lag,
                "dead_letters": j.dead_letters.count,
                "state": if j.lag > 0 { "behind" } else { "ok" },
            })
        })
        .collect();
    let rows_of = |table: &str| {
        status
            .tables
            .iter()
            .find(|t| t.table == table)
            .map_or(0, |t| t.rows)
    };
    let closed: i64 = per_day.iter().map(|d| d[1].as_i64().unwrap_or(0)).sum();
    Ok(json!({
        "generated_at": status.at,
        "database": mask_url(&args.pg.url),
        "kpis": [
            ["orders", rows_of("dds.h_order")],
            ["CLOSED orders", closed],
            ["users", rows_of("dds.h_user")],
            ["dishes", rows_of("dds.h_product")],
            ["tagged users", tagged_users],
            ["dead letters", status.jobs.iter().map(|j| j.dead_letters.count).sum::<i64>()],
        ],
        "dishes_by_orders": top(&dishes, args.top, |r| r.1),
        "dishes_by_users": top(&dishes, args.top, |r| r.2),
        "categories_by_orders": top(&categories, args.top, |r| r.1),
        "categories_by_users": top(&categories, args.top, |r| r.2),
        "orders_per_day": per_day,
        "tags": tags,
        "jobs": jobs,
    }))
}

/// The page: the template with the figures and Chart.js inlined.
pub fn page(figures: &Value) -> String {
    // JSON inside <script> must not contain `</`: escape every `<`.
    let data = figures.to_string().replace('<', "\\u003c");
    TEMPLATE
        .replacen("/*DATA*/", &data, 1)
        .replacen("/*CHART_JS*/", CHART_JS, 1)
}

/// Run `dwh report`: read the figures, write the page, return the summary line.
pub async fn run(args: &Args) -> Result<String> {
    let client = pg::connect(&args.pg).await?;
    let figures = figures(&client, args).await?;
    let html = page(&figures);
    std::fs::write(&args.out, &html).with_context(|| format!("writing {}", args.out.display()))?;
    Ok(format!(
        "report: wrote {} ({} KiB, {CHARTS} charts, Chart.js {CHART_JS_VERSION})",
        args.out.display(),
        html.len() / 1024
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_inlines_chart_js_and_escapes_the_data() {
        let html = page(&json!({"x": "</script><b>"}));
        assert!(html.contains(&format!("Chart.js v{CHART_JS_VERSION}")));
        assert!(!html.contains("/*DATA*/") && !html.contains("/*CHART_JS*/"));
        assert!(html.contains(r#"{"x":"\u003c/script>\u003cb>"}"#));
        // Nothing is fetched: no external scripts, styles or images.
        assert!(!html.contains(" src=") && !html.contains("href=\"http"));
        assert_eq!(html.matches("<canvas").count(), CHARTS);
    }
}
