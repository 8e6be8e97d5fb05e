//! The dwh library: everything the jobs share.
//!
//! The `dwh` binary (in `jobs/`) is thin over this crate. Each module owns one concern: where the
//! settings come from ([`config`]), talking to Kafka ([`kafka`]), Redis ([`redis`]) and
//! PostgreSQL ([`pg`]), the batch protocol that makes every run idempotent ([`batch`]), the source
//! messages ([`model`]) and what PostgreSQL refuses in them ([`jsonb`]), the Data Vault
//! description ([`vault`]), Arrow batches declared once ([`columns`]) and the bridge from Arrow to
//! Polars ([`frames`]); the Parquet archive of every batch ([`archive`]) and the folder or bucket
//! it and the exports write to ([`bucket`]); riding out a service that is briefly away
//! ([`retry`]).

pub mod archive;
pub mod batch;
pub mod bucket;
pub mod columns;
pub mod config;
pub mod dead_letters;
pub mod enriched;
pub mod error;
pub mod faults;
pub mod frames;
pub mod jsonb;
pub mod kafka;
pub mod metrics;
pub mod model;
pub mod offsets;
pub mod pg;
pub mod pg_tls;
pub mod progress;
pub mod redis;
pub mod retry;
pub mod vault;

pub use error::Error;

/// Replace the password of a connection URL with `****`, so it can be printed.
///
/// Works for `scheme://user:password@host/...` URLs (also ones that do not parse, e.g. with a bad
/// port, and with a `password=` query parameter) and for `key=value` connection strings (quoted
/// values too). Anything that might be a password is masked: better too much than too little.
pub fn mask_url(raw: &str) -> String {
    if let Ok(mut parsed) = url::Url::parse(raw) {
        if parsed.password().is_some() {
            let _ = parsed.set_password(Some("****"));
        }
        if parsed.query_pairs().any(|(k, _)| is_secret_key(&k)) {
            let pairs: Vec<(String, String)> = parsed
                .query_pairs()
                .map(|(k, v)| {
                    let v = if is_secret_key(&k) {
                        "****".into()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            parsed.query_pairs_mut().clear().extend_pairs(pairs);
        }
        return parsed.to_string();
    }
    if let Some((scheme, rest)) = raw.split_once("://") {
        // Not a URL the parser accepts: mask everything between `user:` and the last `@`.
        let Some(at) = rest.rfind('@') else {
            return raw.to_owned();
        };
        let user = rest[..at]
            .split_once(':')
            .map_or(&rest[..at], |(user, _)| user);
        let password = if rest[..at].contains(':') {
            ":****"
        } else {
            ""
        };
        return format!("{scheme}://{user}{password}{}", &rest[at..]);
    }
    mask_key_values(raw)
}

fn is_secret_key(key: &str) -> bool {
    key.to_ascii_lowercase().contains("password")
}

/// `key=value` pairs (libpq's format: values may be single-quoted, with `\'` inside) with the
/// value of every `*password*` key replaced by `****`.
fn mask_key_values(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else {
            out.push_str(rest);
            break;
        };
        let key = rest[..eq].trim();
        let key = key.rsplit(char::is_whitespace).next().unwrap_or(key);
        out.push_str(&rest[..=eq]);
        let after = &rest[eq + 1..];
        let value_start = after.len() - after.trim_start().len();
        out.push_str(&after[..value_start]);
        let value = &after[value_start..];
        let value_len = if let Some(quoted) = value.strip_prefix('\'') {
            let mut escaped = false;
            quoted
                .char_indices()
                .find(|&(_, c)| {
                    let close = c == '\'' && !escaped;
                    escaped = c == '\\' && !escaped;
                    close
                })
                .map_or(value.len(), |(i, _)| i + 2)
        } else {
            value.find(char::is_whitespace).unwrap_or(value.len())
        };
        if is_secret_key(key) {
            out.push_str("****");
        } else {
            out.push_str(&value[..value_len]);
        }
        rest = &value[value_len..];
    }
    out
}

/// An error and its causes on one line, `: `-separated, leaving out a cause whose text is already
/// there (OpenSSL's errors repeat themselves through several layers of wrapping).
pub fn error_line(error: &anyhow::Error) -> String {
    chain_line(error.as_ref())
}

/// [`error_line`] of any error: it and its sources.
pub fn chain_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    let mut next = Some(error);
    while let Some(cause) = next {
        next = cause.source();
        let text = cause.to_string();
        if line.contains(text.trim()) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::{error_line, mask_url};

    #[test]
    fn an_error_is_one_line_without_repeated_causes() {
        let tls = anyhow::anyhow!("certificate verify failed")
            .context("error performing TLS handshake: certificate verify failed")
            .context("PostgreSQL at postgres://db/dwh is unreachable");
        assert_eq!(
            error_line(&tls),
            "PostgreSQL at postgres://db/dwh is unreachable: error performing TLS handshake: \
             certificate verify failed"
        );
        let two = anyhow::anyhow!("line one\nline two").context("reading");
        assert_eq!(error_line(&two), "reading: line one line two");
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_url("postgres://dwh:s3cret@db:5432/dwh"),
            "postgres://dwh:****@db:5432/dwh"
        );
        assert_eq!(
            mask_url("host=db user=dwh password=s3cret"),
            "host=db user=dwh password=****"
        );
        assert_eq!(mask_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn passwords_are_masked_where_the_url_does_not_parse_or_hides_them_elsewhere() {
        let cases = [
            (
                "postgres://dwh:s3cret@127.0.0.1:notaport/dwh",
                "postgres://dwh:****@127.0.0.1:notaport/dwh",
            ),
            (
                "postgres://dwh:s3/cr@et@db/dwh",
                "postgres://dwh:****@db/dwh",
            ),
            ("redis://:s3cret@[::1/0", "redis://:****@[::1/0"),
            (
                "postgres://db/dwh?user=dwh&password=s3cret",
                "postgres://db/dwh?user=dwh&password=****",
            ),
            (
                "host=db password='s3 cr\\'et' user=dwh",
                "host=db password=**** user=dwh",
            ),
            ("host=db sslpassword = s3cret", "host=db sslpassword = ****"),
        ];
        for (raw, masked) in cases {
            assert_eq!(mask_url(raw), masked, "{raw}");
            assert!(!mask_url(raw).contains("s3"), "{raw}");
        }
    }
}
