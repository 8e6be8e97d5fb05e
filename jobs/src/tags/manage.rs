//! `dwh tags rules`: list the rules; `set` and `remove` change one.
//!
//! A change is checked before anything is touched (a pattern that does not compile, a category
//! DDS does not know, a threshold below 1, a tag without a rule: one line, exit code 2). Then,
//! under every partition lock of the cdm job (as `dwh cdm --full`: no run of cdm recomputes a user
//! meanwhile), one transaction changes the rule, recomputes exactly the users whose tags can
//! change and queues their tag events; after the commit the events are published.

use std::fmt::Write as _;

use anyhow::{bail, Context, Result};
use dwh_shared::batch::{Hold, Run};
use dwh_shared::config::{positive, DdsTopic, Kafka, LockWait, Postgres, Share, TagsTopic, Worker};
use dwh_shared::vault;
use serde::Serialize;
use tokio_postgres::{GenericClient, Transaction};
use uuid::Uuid;

use super::events::{self, Events};
use super::rules::{all, pattern_error, read, TagRule};
use super::Invalid;
use crate::cdm;

/// `dwh tags rules [set|remove]`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub change: Option<Change>,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub pg: Postgres,
}

#[derive(clap::Subcommand, Debug)]
pub enum Change {
    /// Add a rule or replace a tag's rule, then recompute the users whose tags can change and
    /// publish their tag events
    Set(SetArgs),
    /// Remove a tag's rule: its holders lose the tag (published as revocations)
    Remove(RemoveArgs),
}

#[derive(clap::Args, Debug)]
pub struct SetArgs {
    /// The tag the rule grants
    #[arg(value_name = "TAG", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub tag: String,
    #[command(flatten)]
    pub counts: Counts,
    /// Distinct CLOSED orders a user needs to hold the tag
    #[arg(
        long,
        value_name = "N",
        value_parser = positive::<i64>,
        allow_negative_numbers = true
    )]
    pub threshold: i64,
    #[command(flatten)]
    pub run: ChangeArgs,
}

/// What a rule counts: orders with a dish of a category, or with a dish whose name matches.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct Counts {
    /// Orders holding a dish of this category (a category DDS knows: see dds.h_category)
    #[arg(long, value_name = "NAME")]
    pub category: Option<String>,
    /// Orders holding a dish whose name matches this regular expression (case-insensitive)
    #[arg(long, value_name = "REGEX")]
    pub dish_pattern: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct RemoveArgs {
    /// The tag whose rule goes
    #[arg(value_name = "TAG")]
    pub tag: String,
    #[command(flatten)]
    pub run: ChangeArgs,
}

/// What a rule change needs: the warehouse, cdm's locks and the topics, the recompute's chunk.
#[derive(clap::Args, Debug)]
pub struct ChangeArgs {
    #[command(flatten)]
    pub chunk: cdm::Chunk,
    // How long to wait for a running `dwh cdm`'s locks.
    #[command(flatten)]
    pub lock: LockWait,
    #[command(flatten)]
    pub pg: Postgres,
    #[command(flatten)]
    pub kafka: Kafka,
    #[command(flatten)]
    pub dds: DdsTopic,
    #[command(flatten)]
    pub tags: TagsTopic,
}

impl Args {
    /// The services this command talks to.
    pub fn endpoints(&self) -> (&Postgres, Option<&Kafka>) {
        match &self.change {
            Some(Change::Set(a)) => (&a.run.pg, Some(&a.run.kafka)),
            Some(Change::Remove(a)) => (&a.run.pg, Some(&a.run.kafka)),
            None => (&self.pg, None),
        }
    }
}

pub async fn run(args: &Args) -> Result<String> {
    match &args.change {
        None => list(args).await,
        Some(Change::Set(set)) => {
            let rule = TagRule {
                tag: set.tag.clone(),
                category_name: set.counts.category.clone(),
                dish_pattern: set.counts.dish_pattern.clone(),
                threshold: set.threshold,
            };
            if let Some(reason) = rule.dish_pattern.as_deref().and_then(pattern_error) {
                return Err(Invalid(format!(
                    "--dish-pattern {:?} is not a valid regular expression: {reason}; nothing \
                     changed",
                    rule.dish_pattern.as_deref().unwrap_or_default()
                ))
                .into());
            }
            edit(&set.run, Edit::Set(rule)).await
        }
        Some(Change::Remove(remove)) => edit(&remove.run, Edit::Remove(&remove.tag)).await,
    }
}

/// One rule with the users holding its tag, as listed.
#[derive(Debug, Serialize)]
struct Listed {
    #[serde(flatten)]
    rule: TagRule,
    users: i64,
    /// Why the rule is skipped, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    invalid: Option<String>,
}

async fn list(args: &Args) -> Result<String> {
    let client = dwh_shared::pg::connect(&args.pg).await?;
    let listed: Vec<Listed> = client
        .query(include_str!("../sql/tags_rules_listed.sql"), &[])
        .await
        .context("reading cdm.tag_rules")?
        .iter()
        .map(|r| {
            let rule = TagRule {
                tag: r.get(0),
                category_name: r.get(1),
                dish_pattern: r.get(2),
                threshold: r.get(3),
            };
            let invalid = rule.dish_pattern.as_deref().and_then(pattern_error);
            Listed {
                rule,
                users: r.get(4),
                invalid,
            }
        })
        .collect();
    if args.json {
        return Ok(serde_json::to_string_pretty(&listed)?);
    }
    let mut out = format!(
        "{:<20} {:<36} {:>9} {:>7}",
        "tag", "counts", "threshold", "users"
    );
    for l in &listed {
        let _ = write!(
            out,
            "\n{:<20} {:<36} {:>9} {:>7}",
            l.rule.tag,
            l.rule.describe(),
            l.rule.threshold,
            l.users
        );
        if let Some(reason) = &l.invalid {
            let _ = write!(out, "  SKIPPED: not a valid regular expression ({reason})");
        }
    }
    Ok(out)
}

/// A change of the rules.
enum Edit<'a> {
    Set(TagRule),
    Remove(&'a str),
}

impl Edit<'_> {
    fn tag(&self) -> &str {
        match self {
            Edit::Set(rule) => &rule.tag,
            Edit::Remove(tag) => tag,
        }
    }
}

/// Change the rules and recompute what the change can affect, in one transaction under cdm's
/// locks; then publish the tag events. Returns the summary line.
async fn edit(args: &ChangeArgs, edit: Edit<'_>) -> Result<String> {
    let started = std::time::Instant::now();
    let (mut run, republished) = lock(args).await?;
    if let Edit::Set(TagRule {
        category_name: Some(category),
        ..
    }) = &edit
    {
        known_category(&run.client, category).await?;
    }
    let batch_id = vault::hub_key(&format!(
        "tags-rules|{}|{}",
        edit.tag(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    ));
    let events = Events {
        batch_id,
        topic: &args.tags.name,
    };
    let tx = run.client.transaction().await?;
    let (before, users) = match &edit {
        Edit::Set(rule) => (upsert(&tx, rule).await?, candidates(&tx, rule).await?),
        Edit::Remove(tag) => (Some(remove(&tx, tag).await?), holders(&tx, tag).await?),
    };
    let rules = read(&tx).await?;
    let mut done = cdm::Recomputed::default();
    for chunk in users.chunks(args.chunk.users as usize) {
        done += cdm::recompute(&tx, chunk, &rules, &events).await?;
    }
    if done.granted + done.revoked > 0 {
        let figures = (users.len(), done.rows);
        let seconds = started.elapsed().as_secs_f64();
        let partitions = &run.partitions;
        events::record_batch(&tx, batch_id, "tags rules", partitions, figures, seconds).await?;
    }
    tx.commit().await.context("committing the rule change")?;
    let published = republished + run.publish_outbox().await?;
    let change = match (&edit, &before) {
        (Edit::Set(rule), Some(was)) => format!("set to {} (was {})", said(rule), said(was)),
        (Edit::Set(rule), None) => format!("set to {} (new)", said(rule)),
        (Edit::Remove(_), _) => "removed".to_owned(),
    };
    Ok(format!(
        "tags: rule {:?} {change}; recomputed {} user(s): {} granted, {} revoked; published {} \
         event(s)",
        edit.tag(),
        users.len(),
        done.granted,
        done.revoked,
        published
    ))
}

/// Every partition lock of the cdm job, or an error saying another run holds one; returns the
/// run and the events it republished (an earlier run's, committed but not published).
async fn lock(args: &ChangeArgs) -> Result<(Run, u64)> {
    let share = Share {
        worker: Worker::ALL,
        lock: args.lock,
    };
    let topic = &args.dds.name;
    let Some((run, republished)) =
        Run::resume(cdm::NAME, &args.pg, &args.kafka, &share, topic, Hold::All).await?
    else {
        bail!(
            "another run of cdm holds a lock of {topic}; nothing changed (run it again when that \
             run ends, or wait longer with --lock-wait-secs)"
        );
    };
    Ok((run, republished.published))
}

/// A rule in the words of the summary line.
fn said(rule: &TagRule) -> String {
    format!("{}, threshold {}", rule.describe(), rule.threshold)
}

/// A category DDS knows, or [`Invalid`] naming those it does.
async fn known_category<C: GenericClient>(client: &C, category: &str) -> Result<()> {
    let known: Vec<String> = client
        .query(
            "SELECT category_name FROM dds.h_category ORDER BY category_name",
            &[],
        )
        .await
        .context("reading the categories of dds.h_category")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if known.iter().any(|k| k == category) {
        return Ok(());
    }
    let names: Vec<String> = known.iter().map(|k| format!("{k:?}")).collect();
    let names = if names.is_empty() {
        "none yet".to_owned()
    } else {
        names.join(", ")
    };
    Err(Invalid(format!(
        "unknown category {category:?}: DDS knows {names}; nothing changed"
    ))
    .into())
}

/// Write `rule`, returning the rule the tag had before (if any).
async fn upsert(tx: &Transaction<'_>, rule: &TagRule) -> Result<Option<TagRule>> {
    let before = all(tx).await?.into_iter().find(|r| r.tag == rule.tag);
    tx.execute(
        include_str!("../sql/tags_rule_upsert.sql"),
        &[
            &rule.tag,
            &rule.category_name,
            &rule.dish_pattern,
            &rule.threshold,
        ],
    )
    .await
    .context("writing cdm.tag_rules")?;
    Ok(before)
}

/// Delete the rule of `tag`, returning it, or [`Invalid`] when there is none.
async fn remove(tx: &Transaction<'_>, tag: &str) -> Result<TagRule> {
    let Some(rule) = all(tx).await?.into_iter().find(|r| r.tag == tag) else {
        return Err(Invalid(format!(
            "no rule grants tag {tag:?} (see `dwh tags rules`); nothing changed"
        ))
        .into());
    };
    tx.execute("DELETE FROM cdm.tag_rules WHERE tag = $1", &[&tag])
        .await
        .context("deleting from cdm.tag_rules")?;
    Ok(rule)
}

/// The users holding `tag`.
async fn holders<C: GenericClient>(client: &C, tag: &str) -> Result<Vec<Uuid>> {
    Ok(client
        .query(
            "SELECT user_id FROM cdm.user_tags WHERE tag = $1 ORDER BY user_id",
            &[&tag],
        )
        .await
        .context("reading the holders of the tag")?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// The users whose tag can change under `rule`: those holding it, and those whose showcases
/// reach the threshold — for a category, its counter; for a pattern, the sum of the counters of
/// the dishes whose current name matches or that no menu names (their orders name them, each its
/// own way): at least the distinct orders the rule counts. A user DDS changed since CDM last
/// recomputed them is recomputed by the cdm run that reads that change, under the new rule.
async fn candidates(tx: &Transaction<'_>, rule: &TagRule) -> Result<Vec<Uuid>> {
    let rows = match (&rule.category_name, &rule.dish_pattern) {
        (Some(category), _) => {
            let sql = include_str!("../sql/tags_candidates_category.sql");
            tx.query(sql, &[category, &rule.threshold, &rule.tag]).await
        }
        (None, Some(pattern)) => {
            let dishes = dishes_matching(tx, pattern).await?;
            let sql = include_str!("../sql/tags_candidates_dishes.sql");
            tx.query(sql, &[&dishes, &rule.threshold, &rule.tag]).await
        }
        (None, None) => bail!("rule {:?} counts nothing", rule.tag),
    }
    .context("finding the users whose tags the rule can change")?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The dishes whose current menu name matches `pattern`, and those no menu names.
async fn dishes_matching(tx: &Transaction<'_>, pattern: &str) -> Result<Vec<Uuid>> {
    let matcher = regex::Regex::new(&format!("(?i){pattern}"))?;
    let rows = tx
        .query(include_str!("../sql/tags_dish_names.sql"), &[])
        .await
        .context("reading the dishes' current names")?;
    Ok(rows
        .iter()
        .filter(|r| {
            r.get::<_, Option<&str>>(1)
                .is_none_or(|n| matcher.is_match(n))
        })
        .map(|r| r.get(0))
        .collect())
}
