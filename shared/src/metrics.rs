//! Metrics a CronJob can give: lag, and each run's figures pushed to a Prometheus Pushgateway.
//!
//! A CronJob's pod lives for seconds, too short to be scraped, so a run pushes its figures once
//! at the end (`PUT <gateway>/metrics/job/dwh/dwh_job/<job>`, Prometheus text format) when
//! `DWH_PUSHGATEWAY_URL` is set; by default nothing is pushed. A push that fails is logged and the
//! run still succeeds: its batch is committed, and the next run pushes again.
//! Lag is the number of messages Kafka holds beyond the offsets PostgreSQL stores for a job.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{Context, Result};
use prometheus::{Encoder, Gauge, Registry, TextEncoder};
use tokio_postgres::GenericClient;

use crate::batch::Summary;
use crate::config::{Kafka, Postgres};
use crate::{offsets, pg};

/// Where to push each run's figures (the consuming jobs only: `stg`, `dds`, `cdm`).
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Metrics")]
pub struct Push {
    /// Prometheus Pushgateway to push each run's figures to, e.g. http://pushgateway:9091 (off
    /// when unset)
    #[arg(
        id = "pushgateway_url",
        long = "pushgateway-url",
        env = "DWH_PUSHGATEWAY_URL",
        value_name = "URL"
    )]
    pub url: Option<String>,
}

/// Messages waiting for `job` in `topic`, per partition: the high watermark minus the offset
/// PostgreSQL stores (or minus the low watermark when the job never read the partition).
pub async fn lag_per_partition<C: GenericClient>(
    client: &C,
    kafka: &Kafka,
    job: &str,
    topic: &str,
) -> Result<BTreeMap<i32, i64>> {
    Ok(offsets::describe(client, kafka, job, topic, false)
        .await?
        .into_iter()
        .map(|p| (p.partition, p.lag))
        .collect())
}

/// Messages waiting for `job` in `topic`, over all partitions.
pub async fn lag<C: GenericClient>(
    client: &C,
    kafka: &Kafka,
    job: &str,
    topic: &str,
) -> Result<i64> {
    Ok(lag_per_partition(client, kafka, job, topic)
        .await?
        .values()
        .sum())
}

/// The figures one run pushes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub consumed: f64,
    pub loaded: f64,
    pub dead_lettered: f64,
    pub published: f64,
    pub seconds: f64,
    /// Messages still waiting after the run.
    pub lag: f64,
    /// Dead letters stored for the job, all batches.
    pub dead_letters: f64,
    /// When the run ended, seconds since the epoch.
    pub finished: f64,
}

/// `figures` in the Prometheus text exposition format, one gauge each.
pub fn encode(figures: &Figures) -> Result<String> {
    let registry = Registry::new();
    let gauges = [
        (
            "dwh_batch_consumed_messages",
            "Messages the run consumed",
            figures.consumed,
        ),
        (
            "dwh_batch_loaded_rows",
            "Rows the run wrote to its layer",
            figures.loaded,
        ),
        (
            "dwh_batch_dead_lettered_messages",
            "Messages the run dead-lettered",
            figures.dead_lettered,
        ),
        (
            "dwh_batch_published_messages",
            "Messages the run published downstream",
            figures.published,
        ),
        ("dwh_batch_seconds", "Seconds the run took", figures.seconds),
        (
            "dwh_lag_messages",
            "Messages waiting in Kafka beyond the offsets stored in PostgreSQL",
            figures.lag,
        ),
        (
            "dwh_dead_letters",
            "Dead letters stored for the job",
            figures.dead_letters,
        ),
        (
            "dwh_last_run_timestamp_seconds",
            "When the run ended (Unix time)",
            figures.finished,
        ),
    ];
    for (name, help, value) in gauges {
        let gauge = Gauge::new(name, help)?;
        gauge.set(value);
        registry.register(Box::new(gauge))?;
    }
    let mut text = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut text)?;
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// Push `figures` of `job` to the Pushgateway at `url`, replacing the job's previous push.
pub async fn push(url: &str, job: &str, figures: &Figures) -> Result<()> {
    let body = encode(figures)?;
    let target = format!(
        "{}/metrics/job/dwh/dwh_job/{job}",
        url.trim_end_matches('/')
    );
    let where_ = crate::mask_url(&target);
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?
        .put(&target)
        .header(reqwest::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)
        .body(body)
        .send()
        .await
        .with_context(|| format!("Pushgateway at {where_} is unreachable"))?
        .error_for_status()
        .with_context(|| format!("Pushgateway at {where_} refused the metrics"))?;
    Ok(())
}

/// After a run of `job` over `topic`: measure the lag and the stored dead letters and push them
/// with the run's summary, when a Pushgateway is configured. Failures are logged, never fatal.
pub async fn after_run(
    push_to: &Push,
    job: &str,
    summary: &Summary,
    pg: &Postgres,
    kafka: &Kafka,
    topic: &str,
) {
    let Some(url) = push_to.url.as_deref().filter(|u| !u.is_empty()) else {
        return;
    };
    if summary.skipped {
        return;
    }
    let result = async {
        let client = pg::connect(pg).await?;
        let dead: i64 = client
            .query_one(
                "SELECT count(*) FROM dwh.dead_letters WHERE job = $1",
                &[&job],
            )
            .await
            .context("counting dead letters")?
            .get(0);
        let figures = Figures {
            consumed: summary.consumed as f64,
            loaded: summary.loaded as f64,
            dead_lettered: summary.dead_lettered as f64,
            published: summary.published as f64,
            seconds: summary.seconds,
            lag: lag(&client, kafka, job, topic).await? as f64,
            dead_letters: dead as f64,
            finished: chrono::Utc::now().timestamp_millis() as f64 / 1000.0,
        };
        push(url, job, &figures).await
    }
    .await;
    if let Err(error) = result {
        tracing::warn!(
            "dwh {job}: metrics not pushed: {}",
            crate::chain_line(&error)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_encode_as_prometheus_text() {
        let text = encode(&Figures {
            consumed: 3082.0,
            lag: 5.0,
            ..Figures::default()
        })
        .unwrap();
        assert!(text.contains("# TYPE dwh_batch_consumed_messages gauge\n"));
        assert!(text.contains("\ndwh_batch_consumed_messages 3082\n"));
        assert!(text.contains("\ndwh_lag_messages 5\n"));
    }
}
