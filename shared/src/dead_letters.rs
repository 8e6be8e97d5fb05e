//! Messages that cannot be used: split from the good ones with the parser's reason, and kept in
//! `dwh.dead_letters` with their raw bytes and position (DESIGN §4); the batch goes on.

use crate::error::{Context, Result};
use tokio_postgres::Transaction;
use uuid::Uuid;

use crate::kafka::{Drained, Polled};

/// A message that could not be used, kept with its position and the reason.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    pub raw: Vec<u8>,
    pub reason: String,
}

/// Split drained messages into the values `parse` accepts and dead letters with its reason.
pub fn parse_all<T>(
    drained: &Drained,
    parse: impl Fn(&[u8]) -> Result<T, String>,
) -> (Vec<(&Polled, T)>, Vec<DeadLetter>) {
    let _timed = tracing::info_span!("parse").entered();
    let mut good = Vec::with_capacity(drained.messages.len());
    let mut dead = Vec::new();
    for message in &drained.messages {
        match parse(&message.payload) {
            Ok(value) => good.push((message, value)),
            Err(reason) => dead.push(DeadLetter {
                partition: message.partition,
                offset: message.offset,
                raw: message.payload.clone(),
                reason: storable_reason(reason),
            }),
        }
    }
    (good, dead)
}

/// Longest reason kept with a dead letter, in characters.
const MAX_REASON_CHARS: usize = 1_000;

/// A reason `dwh.dead_letters.reason` can hold, whatever the parser quoted from the message: no
/// NUL (text cannot store it, and one would fail the whole batch), at most [`MAX_REASON_CHARS`].
fn storable_reason(reason: String) -> String {
    let reason = if reason.is_empty() {
        "unusable message".to_owned()
    } else {
        reason.replace('\0', "\\0")
    };
    match reason.char_indices().nth(MAX_REASON_CHARS) {
        Some((cut, _)) => format!("{}…", &reason[..cut]),
        None => reason,
    }
}

/// Keep unusable messages with their position and reason; a replay adds nothing twice.
pub async fn dead_letter(
    tx: &Transaction<'_>,
    job: &str,
    topic: &str,
    batch_id: Uuid,
    letters: &[DeadLetter],
) -> Result<u64> {
    if letters.is_empty() {
        return Ok(0);
    }
    let partitions: Vec<i32> = letters.iter().map(|l| l.partition).collect();
    let offsets: Vec<i64> = letters.iter().map(|l| l.offset).collect();
    let raws: Vec<&[u8]> = letters.iter().map(|l| l.raw.as_slice()).collect();
    let reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
    tx.execute(
        include_str!("sql/dead_letters.sql"),
        &[
            &job,
            &topic,
            &batch_id,
            &partitions,
            &offsets,
            &raws,
            &reasons,
        ],
    )
    .await
    .context("writing dead letters")?;
    Ok(letters.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::storable_reason;

    #[test]
    fn a_reason_is_text_postgresql_stores() {
        assert_eq!(storable_reason("a\0b".into()), r"a\0b");
        assert_eq!(storable_reason(String::new()), "unusable message");
        let long = storable_reason("й".repeat(5_000));
        assert_eq!(long.chars().count(), 1_001);
        assert!(long.ends_with('…'));
    }
}
