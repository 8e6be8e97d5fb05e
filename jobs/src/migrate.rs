//! `dwh migrate`: the database, its schema (the numbered files in `sql/`) and the topics: the
//! three of the pipeline and the tags topic the application reads.
//!
//! Safe to run any time: applied migrations are recorded and skipped, existing topics are kept.

use anyhow::Result;
use dwh_shared::config::{positive, Kafka, Postgres, TagsTopic, Topics};
use dwh_shared::{kafka, pg};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Partitions of the topics this creates (existing topics are left as they are)
    #[arg(
        long,
        env = "DWH_PARTITIONS",
        value_name = "N",
        default_value_t = 1,
        value_parser = positive::<i32>,
        allow_negative_numbers = true
    )]
    pub partitions: i32,
    /// Copies of each partition in the topics this creates (default: the cluster's
    /// default.replication.factor)
    #[arg(
        long,
        env = "DWH_REPLICATION_FACTOR",
        value_name = "N",
        value_parser = positive::<i32>,
        allow_negative_numbers = true
    )]
    pub replication_factor: Option<i32>,
    /// Only migrate PostgreSQL; leave Kafka alone
    #[arg(long)]
    pub skip_topics: bool,
    #[command(flatten)]
    pub pg: Postgres,
    #[command(flatten)]
    pub kafka: Kafka,
    #[command(flatten)]
    pub topics: Topics,
    #[command(flatten)]
    pub tags: TagsTopic,
}

pub async fn run(args: &Args) -> Result<String> {
    pg::ensure_database(&args.pg).await?;
    let mut client = pg::connect(&args.pg).await?;
    let applied = pg::migrate(&mut client).await?;
    let mut created = Vec::new();
    let mut differing = String::new();
    if !args.skip_topics {
        let (k, t) = (&args.kafka, &args.topics);
        let topics = [
            t.orders.name.as_str(),
            t.stg.name.as_str(),
            t.dds.name.as_str(),
            args.tags.name.as_str(),
        ];
        created =
            kafka::create_topics(k, &topics, args.partitions, args.replication_factor).await?;
        for topic in topics {
            let found = kafka::topic_partitions(k, topic).await?.len();
            if found != args.partitions as usize {
                differing.push_str(&format!(
                    "; topic {topic} has {found} partition(s), not {}: existing topics are left as they are",
                    args.partitions
                ));
            }
        }
    }
    Ok(format!(
        "migrate: applied {} migration(s){}; created {} topic(s){}{differing}",
        applied.len(),
        if applied.is_empty() {
            String::new()
        } else {
            format!(" ({})", applied.join(", "))
        },
        created.len(),
        if created.is_empty() {
            String::new()
        } else {
            format!(" ({})", created.join(", "))
        },
    ))
}
