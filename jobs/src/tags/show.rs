//! `dwh tags show USER_ID [--json]`: one user's tags, by the id the application knows.
//!
//! The tags the user holds come from `cdm.user_tags` with the orders behind each; for the rules
//! the user does not meet, the qualifying orders are counted from DDS as a recompute would.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use dwh_shared::config::Postgres;
use dwh_shared::pg;
use serde::Serialize;
use uuid::Uuid;

use super::rules;
use crate::cdm;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The user's id as the source (and the application) knows it
    #[arg(value_name = "USER_ID")]
    pub user: String,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub pg: Postgres,
}

/// One user's tags as `dwh tags show` prints them.
#[derive(Debug, Serialize)]
struct Shown {
    user_id: String,
    user_pk: Uuid,
    /// The tags the user holds (`cdm.user_tags`), with the orders behind each.
    tags: Vec<Held>,
    /// The other rules, with the user's qualifying orders now (computed from DDS).
    not_held: Vec<Progress>,
}

#[derive(Debug, Serialize)]
struct Held {
    tag: String,
    order_cnt: i64,
    /// The rule's threshold (`null`: the rule is gone; the next recompute revokes the tag).
    threshold: Option<i64>,
    updated_at: String,
}

#[derive(Debug, Serialize)]
struct Progress {
    tag: String,
    order_cnt: i64,
    threshold: i64,
}

pub async fn run(args: &Args) -> Result<String> {
    let client = pg::connect(&args.pg).await?;
    let user_pk: Uuid = client
        .query_opt(
            "SELECT h_user_pk FROM dds.h_user WHERE user_id = $1",
            &[&args.user],
        )
        .await
        .context("looking the user up in dds.h_user")?
        .with_context(|| format!("no user {:?} in the warehouse (dds.h_user)", args.user))?
        .get(0);
    let rules = rules::read(&client).await?;
    let threshold = |tag: &str| {
        rules
            .valid
            .iter()
            .find(|r| r.tag == tag)
            .map(|r| r.threshold)
    };
    let tags: Vec<Held> = client
        .query(include_str!("../sql/tags_user.sql"), &[&user_pk])
        .await
        .context("reading the user's tags")?
        .iter()
        .map(|r| Held {
            tag: r.get(0),
            order_cnt: r.get(1),
            threshold: threshold(r.get(0)),
            updated_at: r.get(2),
        })
        .collect();
    let counts = cdm::tag_counts(&client, &[user_pk], &rules.valid).await?;
    let not_held = rules
        .valid
        .iter()
        .filter(|r| !tags.iter().any(|t| t.tag == r.tag))
        .map(|r| Progress {
            tag: r.tag.clone(),
            order_cnt: counts
                .iter()
                .find(|c| c.tag == r.tag)
                .map_or(0, |c| c.order_cnt),
            threshold: r.threshold,
        })
        .collect();
    let shown = Shown {
        user_id: args.user.clone(),
        user_pk,
        tags,
        not_held,
    };
    Ok(if args.json {
        serde_json::to_string_pretty(&shown)?
    } else {
        render(&shown)
    })
}

fn render(shown: &Shown) -> String {
    let mut out = format!(
        "user {} (user_pk {}): {} tag(s)",
        shown.user_id,
        shown.user_pk,
        shown.tags.len()
    );
    if !shown.tags.is_empty() {
        let _ = write!(
            out,
            "\n{:<20} {:>7} {:>9}  updated",
            "tag", "orders", "threshold"
        );
    }
    for t in &shown.tags {
        let threshold = t.threshold.map_or("-".to_owned(), |n| n.to_string());
        let _ = write!(
            out,
            "\n{:<20} {:>7} {:>9}  {}",
            t.tag, t.order_cnt, threshold, t.updated_at
        );
    }
    if !shown.not_held.is_empty() {
        let progress: Vec<String> = shown
            .not_held
            .iter()
            .map(|p| format!("{} {}/{}", p.tag, p.order_cnt, p.threshold))
            .collect();
        let _ = write!(
            out,
            "\nnot held (orders/threshold): {}",
            progress.join(", ")
        );
    }
    out
}
