//! The tag rules: read for every recompute, listed and changed with `dwh tags rules`.
//!
//! A rule `(tag, category | dish pattern, threshold)` grants its tag to a user with `threshold` or
//! more distinct CLOSED orders holding a dish of the category, or a dish whose name matches the
//! pattern (a case-insensitive regular expression, matched by Polars with Rust's `regex`).
//! `dwh tags rules set|remove` checks what it is given before it changes anything, then — under
//! every partition lock of the cdm job, as `dwh cdm --full` — changes the rule, recomputes in the
//! same transaction exactly the users whose tags can change and queues their tag events, commits
//! and publishes them. A rule edited by hand whose pattern does not compile is skipped with a
//! warning: its users keep the tag as it was until the rule is fixed.

use std::fmt::Write as _;

use anyhow::{bail, Context, Result};
use dwh_shared::batch::{Hold, Run};
use dwh_shared::config::{
    non_negative, positive, DdsTopic, Kafka, Postgres, Share, TagsTopic, Worker,
};
use dwh_shared::vault;
use serde::Serialize;
use tokio_postgres::{GenericClient, Transaction};
use uuid::Uuid;

use super::events::{self, Events};
use super::Invalid;
use crate::cdm;

/// A tag rule: `threshold`+ distinct CLOSED orders with a dish of a category or matching a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagRule {
    pub tag: String,
    pub category_name: Option<String>,
    pub dish_pattern: Option<String>,
    pub threshold: i64,
}

impl TagRule {
    /// What the rule counts, in words.
    pub fn describe(&self) -> String {
        match (&self.category_name, &self.dish_pattern) {
            (Some(category), _) => format!("category {category:?}"),
            (None, Some(pattern)) => format!("dish pattern {pattern:?}"),
            (None, None) => "nothing".to_owned(),
        }
    }
}

/// The rules a recompute applies, and the tags of those it cannot (a pattern that does not
/// compile): those tags are left as the users hold them.
#[derive(Debug, Default)]
pub struct Rules {
    pub valid: Vec<TagRule>,
    pub frozen: Vec<String>,
}

/// Why `pattern` cannot be a dish pattern, in one line; `None` when it can. Checked as Polars
/// matches it: case-insensitive, with Rust's `regex`.
pub fn pattern_error(pattern: &str) -> Option<String> {
    let error = regex::Regex::new(&format!("(?i){pattern}")).err()?;
    let text = error.to_string();
    // A syntax error is a small picture of the pattern with a caret; its last line says what.
    let reason = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .unwrap_or(text.trim());
    Some(reason.replace('\n', " "))
}

/// Every rule of `cdm.tag_rules`, those that can be applied in `valid` (by tag); a pattern that
/// does not compile is logged and its tag frozen.
pub async fn read<C: GenericClient>(client: &C) -> Result<Rules> {
    let mut rules = Rules::default();
    for rule in all(client).await? {
        match rule.dish_pattern.as_deref().and_then(pattern_error) {
            Some(reason) => {
                tracing::warn!(
                    tag = rule.tag,
                    "tag rule {:?} skipped: its dish pattern {:?} is not a valid regular \
                     expression ({reason}); its users keep the tag as it was. Fix it with \
                     `dwh tags rules set`",
                    rule.tag,
                    rule.dish_pattern.as_deref().unwrap_or_default()
                );
                rules.frozen.push(rule.tag);
            }
            None => rules.valid.push(rule),
        }
    }
    Ok(rules)
}

async fn all<C: GenericClient>(client: &C) -> Result<Vec<TagRule>> {
    let rows = client
        .query(
            "SELECT tag, category_name, dish_pattern, threshold FROM cdm.tag_rules ORDER BY tag",
            &[],
        )
        .await
        .context("reading cdm.tag_rules")?;
    Ok(rows
        .iter()
        .map(|r| TagRule {
            tag: r.get(0),
            category_name: r.get(1),
            dish_pattern: r.get(2),
            threshold: r.get(3),
        })
        .collect())
}

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
    /// Users recomputed at a time (all of them in the change's one transaction)
    #[arg(
        long,
        env = "DWH_CDM_CHUNK",
        value_name = "N",
        default_value_t = 5_000,
        value_parser = positive::<i64>,
        allow_negative_numbers = true
    )]
    pub chunk: i64,
    /// Seconds to wait for a running `dwh cdm` to finish before giving up (0: do not wait)
    #[arg(
        long,
        env = "DWH_LOCK_WAIT_SECS",
        value_name = "SECS",
        default_value_t = 10,
        value_parser = non_negative::<u64>,
        allow_negative_numbers = true,
        help_heading = "Locks and workers"
    )]
    pub lock_wait_secs: u64,
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
    let mut listed = Vec::new();
    for rule in all(&client).await? {
        let users: i64 = client
            .query_one(
                "SELECT count(*) FROM cdm.user_tags WHERE tag = $1",
                &[&rule.tag],
            )
            .await?
            .get(0);
        let invalid = rule.dish_pattern.as_deref().and_then(pattern_error);
        listed.push(Listed {
            rule,
            users,
            invalid,
        });
    }
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

async fn edit(args: &ChangeArgs, edit: Edit<'_>) -> Result<String> {
    let started = std::time::Instant::now();
    let share = Share {
        worker: Worker::ALL,
        lock_wait_secs: args.lock_wait_secs,
    };
    let topic = &args.dds.name;
    let Some((mut run, republished)) =
        Run::resume(cdm::NAME, &args.pg, &args.kafka, &share, topic, Hold::All).await?
    else {
        bail!(
            "another run of cdm holds a lock of {topic}; nothing changed (run it again when that \
             run ends, or wait longer with --lock-wait-secs)"
        );
    };
    if let Edit::Set(TagRule {
        category_name: Some(category),
        ..
    }) = &edit
    {
        known_category(&run.client, category).await?;
    }
    let (tag, done_to) = match &edit {
        Edit::Set(rule) => (rule.tag.clone(), format!("set to {}", said(rule))),
        Edit::Remove(tag) => (tag.to_string(), "removed".to_owned()),
    };
    let batch_id = vault::hub_key(&format!(
        "tags-rules|{tag}|{}",
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    ));
    let tx = run.client.transaction().await?;
    let before = match &edit {
        Edit::Set(rule) => upsert(&tx, rule).await?,
        Edit::Remove(tag) => Some(remove(&tx, tag).await?),
    };
    let users = match &edit {
        Edit::Set(rule) => candidates(&tx, rule).await?,
        Edit::Remove(tag) => holders(&tx, tag).await?,
    };
    let rules = read(&tx).await?;
    let events = Events {
        batch_id,
        topic: &args.tags.name,
    };
    let mut done = cdm::Recomputed::default();
    for chunk in users.chunks(args.chunk as usize) {
        done += cdm::recompute(&tx, chunk, &rules, &events).await?;
    }
    if done.granted + done.revoked > 0 {
        let figures = (users.len(), done.rows);
        let seconds = started.elapsed().as_secs_f64();
        events::record_batch(
            &tx,
            batch_id,
            "tags rules",
            &run.partitions,
            figures,
            seconds,
        )
        .await?;
    }
    tx.commit().await.context("committing the rule change")?;
    let published = run.publish_outbox().await?;
    let was = match &before {
        Some(rule) => format!(" (was {})", said(rule)),
        None => " (new)".to_owned(),
    };
    Ok(format!(
        "tags: rule {tag:?} {done_to}{}; recomputed {} user(s): {} granted, {} revoked; published \
         {} event(s)",
        if matches!(edit, Edit::Set(_)) {
            was
        } else {
            String::new()
        },
        users.len(),
        done.granted,
        done.revoked,
        published + republished.published
    ))
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
    Err(Invalid(format!(
        "unknown category {category:?}: DDS knows {}; nothing changed",
        if names.is_empty() {
            "none yet".to_owned()
        } else {
            names.join(", ")
        }
    ))
    .into())
}

/// Write `rule`, returning the rule the tag had before (if any).
async fn upsert(tx: &Transaction<'_>, rule: &TagRule) -> Result<Option<TagRule>> {
    let before = all(tx).await?.into_iter().find(|r| r.tag == rule.tag);
    tx.execute(
        "INSERT INTO cdm.tag_rules (tag, category_name, dish_pattern, threshold)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (tag) DO UPDATE SET category_name = EXCLUDED.category_name,
             dish_pattern = EXCLUDED.dish_pattern, threshold = EXCLUDED.threshold",
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
            tx.query(
                "SELECT user_id FROM cdm.user_category_counters
                 WHERE category_name = $1 AND order_cnt >= $2
                 UNION
                 SELECT user_id FROM cdm.user_tags WHERE tag = $3
                 ORDER BY 1",
                &[category, &rule.threshold, &rule.tag],
            )
            .await
        }
        (None, Some(pattern)) => {
            let products = dishes_matching(tx, pattern).await?;
            tx.query(
                "SELECT user_id FROM cdm.user_product_counters WHERE product_id = ANY($1)
                 GROUP BY user_id HAVING sum(order_cnt) >= $2::int8
                 UNION
                 SELECT user_id FROM cdm.user_tags WHERE tag = $3
                 ORDER BY 1",
                &[&products, &rule.threshold, &rule.tag],
            )
            .await
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
        .query(
            "SELECT p.h_product_pk,
                    (SELECT s.name FROM dds.s_product_names s WHERE s.h_product_pk = p.h_product_pk
                     ORDER BY s.effective_dt DESC LIMIT 1)
             FROM dds.h_product p",
            &[],
        )
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

#[cfg(test)]
mod tests {
    use super::pattern_error;

    #[test]
    fn a_bad_pattern_is_one_line_saying_what_is_wrong() {
        assert_eq!(pattern_error("пицц|pizza"), None);
        assert_eq!(pattern_error("(").as_deref(), Some("unclosed group"));
        let reason = pattern_error("[a-").unwrap();
        assert!(!reason.contains('\n') && !reason.is_empty(), "{reason}");
    }
}
