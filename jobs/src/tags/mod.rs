//! `dwh tags`: the user tags for the application — the rules that grant them, and one user's.
//!
//! The tags themselves are computed by the CDM job (`cdm.user_tags`), and every change of them is
//! published to the tags topic ([`events`]). `dwh tags rules` lists and changes the rules
//! ([`rules`]); `dwh tags show USER_ID` looks a user up by the id the application knows.

pub mod events;
pub mod rules;

use std::fmt::Write as _;

use anyhow::{Context, Result};
use dwh_shared::config::{Kafka, Postgres};
use dwh_shared::pg;
use serde::Serialize;
use uuid::Uuid;

use crate::cdm;

/// `dwh tags`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// List the tag rules, or change one: `rules set TAG …`, `rules remove TAG`
    Rules(Box<rules::Args>),
    /// A user's tags, with the order counts behind them, and how far the user is from the others
    Show(ShowArgs),
}

#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// The user's id as the source (and the application) knows it
    #[arg(value_name = "USER_ID")]
    pub user: String,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub pg: Postgres,
}

/// What the command was given cannot be done (a bad pattern, an unknown category or tag): one
/// line, exit code 2, nothing changed.
#[derive(Debug)]
pub struct Invalid(pub String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

impl Args {
    /// The command's name in its error lines.
    pub fn name(&self) -> &'static str {
        match &self.command {
            Command::Rules(a) => match &a.change {
                None => "tags rules",
                Some(rules::Change::Set(_)) => "tags rules set",
                Some(rules::Change::Remove(_)) => "tags rules remove",
            },
            Command::Show(_) => "tags show",
        }
    }

    /// The services this command talks to.
    pub fn endpoints(&self) -> (&Postgres, Option<&Kafka>) {
        match &self.command {
            Command::Rules(a) => a.endpoints(),
            Command::Show(a) => (&a.pg, None),
        }
    }
}

pub async fn run(args: &Args) -> Result<String> {
    match &args.command {
        Command::Rules(a) => rules::run(a).await,
        Command::Show(a) => show(a).await,
    }
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

async fn show(args: &ShowArgs) -> Result<String> {
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
        .query(
            "SELECT tag, order_cnt, to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
             FROM cdm.user_tags WHERE user_id = $1 ORDER BY tag",
            &[&user_pk],
        )
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
