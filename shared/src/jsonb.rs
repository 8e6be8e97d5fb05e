//! What PostgreSQL refuses in valid JSON: the checks a document passes before it is stored.
//!
//! serde_json accepts, and in the values it skips does not even look at, four things PostgreSQL
//! refuses: the escape `\u0000` (`text` and `jsonb` cannot hold NUL), an unpaired surrogate escape
//! such as `\ud800`, nesting deeper than the server's stack allows, and numbers `numeric` cannot
//! hold (an exponent past about ±131,000, or more than 16,383 decimals). One such value fails the
//! whole `COPY` or merge of its batch, and since every retry reads the same batch it would stop
//! the partition for good. [`check`] finds them in one pass over the raw text, so the message is
//! rejected with a reason instead.

/// Deepest nesting of arrays and objects accepted (real documents are 3–4 levels deep).
pub const MAX_DEPTH: usize = 64;
/// Longest number accepted, in characters.
pub const MAX_NUMBER_CHARS: usize = 64;
/// Largest exponent magnitude accepted (`1e999` is fine, `1e1000` is not).
pub const MAX_EXPONENT: u32 = 999;

/// `Ok` when PostgreSQL can store `text` as `jsonb` and every string in it as `text`.
///
/// `text` should be valid JSON (parse it first): the scan then sees every string and number as
/// JSON does. On anything else it still ends, without panicking, with some answer.
pub fn check(text: &str) -> Result<(), String> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        i = match bytes[i] {
            b'"' => string_end(bytes, i + 1)?,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!("is nested deeper than {MAX_DEPTH} levels"));
                }
                i + 1
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                i + 1
            }
            b'-' | b'0'..=b'9' => number_end(bytes, i)?,
            _ => i + 1,
        };
    }
    Ok(())
}

/// The index after the closing quote of the string whose content starts at `i`.
fn string_end(bytes: &[u8], mut i: usize) -> Result<usize, String> {
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return Ok(i + 1),
            b'\\' if bytes.get(i + 1) == Some(&b'u') => {
                let Some(unit) = hex4(bytes, i + 2) else {
                    i += 2;
                    continue;
                };
                match unit {
                    0 => {
                        return Err(
                            r"holds \u0000 in a string, which PostgreSQL cannot store".into()
                        )
                    }
                    0xd800..=0xdbff => {
                        let low = (bytes.get(i + 6..i + 8) == Some(br"\u"))
                            .then(|| hex4(bytes, i + 8))
                            .flatten();
                        if !matches!(low, Some(0xdc00..=0xdfff)) {
                            return Err(format!(r"holds an unpaired surrogate \u{unit:04x}"));
                        }
                        i += 12;
                    }
                    0xdc00..=0xdfff => {
                        return Err(format!(r"holds an unpaired surrogate \u{unit:04x}"));
                    }
                    _ => i += 6,
                }
            }
            // Any other escape is two bytes; `\\u0000` is a backslash followed by "u0000".
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    Ok(i)
}

/// The four hex digits at `i` as a UTF-16 code unit.
fn hex4(bytes: &[u8], i: usize) -> Option<u32> {
    bytes
        .get(i..i + 4)?
        .iter()
        .try_fold(0, |unit, b| Some(unit * 16 + char::from(*b).to_digit(16)?))
}

/// The index after the number starting at `start`, or why PostgreSQL could not hold it.
fn number_end(bytes: &[u8], start: usize) -> Result<usize, String> {
    let len = bytes[start..]
        .iter()
        .take_while(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
        .count();
    let number = &bytes[start..start + len];
    let exponent = number
        .iter()
        .position(|b| matches!(b, b'e' | b'E'))
        .map(|e| {
            number[e + 1..]
                .iter()
                .filter(|b| b.is_ascii_digit())
                .fold(0u32, |n, d| {
                    n.saturating_mul(10).saturating_add(u32::from(d - b'0'))
                })
        })
        .unwrap_or(0);
    if len > MAX_NUMBER_CHARS || exponent > MAX_EXPONENT {
        let shown = String::from_utf8_lossy(&number[..len.min(24)]);
        let more = if len > 24 { "…" } else { "" };
        return Err(format!(
            "holds the number {shown}{more} ({len} characters), beyond what is accepted \
             ({MAX_NUMBER_CHARS} characters, exponents within ±{MAX_EXPONENT})"
        ));
    }
    Ok(start + len)
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn ordinary_documents_pass() {
        for ok in [
            r#"{"a": [1, -2.5, 3e10, 1E-300, 0], "b": "Вера \u0412 😀 \ud83d\ude00 \\u0000 \"q\""}"#,
            r#"{"": "", "nested": {"x": [[[]]]}}"#,
            "1e999",
            "12345678901234567890123456789012345678901234567890",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn nul_escapes_are_refused_wherever_they_are() {
        for bad in [
            r#"{"a": "x\u0000y"}"#,
            r#"{"\u0000": 1}"#,
            r#"["\\\u0000"]"#,
        ] {
            assert!(check(bad).unwrap_err().contains(r"\u0000"), "{bad}");
        }
    }

    #[test]
    fn unpaired_surrogates_are_refused() {
        for bad in [
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\ud800\u0041""#,
            r#""\ud83d""#,
            r#""\ud83d\ud83d""#,
        ] {
            assert!(check(bad).unwrap_err().contains("surrogate"), "{bad}");
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert!(check(&deep).unwrap_err().contains("nested deeper"));
        let fine = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert_eq!(check(&fine), Ok(()));
        // Brackets inside strings are text.
        assert_eq!(check(&format!("\"{}\"", "[".repeat(1000))), Ok(()));
    }

    #[test]
    fn numbers_numeric_cannot_hold_are_refused() {
        for bad in [
            "1e1000".to_owned(),
            "1e-131072".to_owned(),
            "-1E+99999999999999999999".to_owned(),
            format!("0.{}1", "0".repeat(20_000)),
        ] {
            assert!(check(&bad).unwrap_err().contains("number"), "{bad:.40}");
        }
    }

    #[test]
    fn malformed_text_ends_without_panicking() {
        for odd in [
            r#""\u00"#,
            r#""\ud800\u"#,
            "\"\\",
            "-",
            "[[[",
            "]]]}",
            "\"open",
        ] {
            let _ = check(odd);
        }
    }
}
