//! The tag rules, as every recompute reads them.
//!
//! A rule `(tag, category | dish pattern, threshold)` grants its tag to a user with `threshold` or
//! more distinct CLOSED orders holding a dish of the category, or a dish whose name matches the
//! pattern (a case-insensitive regular expression, matched by Polars with Rust's `regex`). A rule
//! edited by hand whose pattern does not compile is skipped with a warning: its users keep the
//! tag as it was (neither granted nor revoked) until the rule is fixed.

use anyhow::{Context, Result};
use serde::Serialize;
use tokio_postgres::GenericClient;

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

pub(super) async fn all<C: GenericClient>(client: &C) -> Result<Vec<TagRule>> {
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
