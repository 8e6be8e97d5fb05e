//! The dwh library: everything the jobs share.
//!
//! The `dwh` binary (in `jobs/`) is thin over this crate. Each module owns one concern: where the
//! settings come from ([`config`]), talking to Kafka ([`kafka`]), Redis ([`redis`]) and
//! PostgreSQL ([`pg`]), the batch protocol that makes every run idempotent ([`batch`]), the source
//! messages ([`model`]), the Data Vault description ([`vault`]) and the bridge from Arrow to
//! Polars ([`frames`]); the Parquet archive of every batch ([`archive`]).

pub mod archive;
pub mod batch;
pub mod config;
pub mod frames;
pub mod kafka;
pub mod metrics;
pub mod model;
pub mod pg;
pub mod pg_tls;
pub mod progress;
pub mod redis;
pub mod vault;

/// Replace the password of a connection URL with `****`, so it can be printed.
///
/// Works for `scheme://user:password@host/...` URLs and for `key=value` connection strings.
pub fn mask_url(raw: &str) -> String {
    if let Ok(mut parsed) = url::Url::parse(raw) {
        if parsed.password().is_some() {
            let _ = parsed.set_password(Some("****"));
        }
        return parsed.to_string();
    }
    raw.split_whitespace()
        .map(|part| match part.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=****"),
            _ => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// An error and its causes on one line, `: `-separated, leaving out a cause whose text is already
/// there (OpenSSL's errors repeat themselves through several layers of wrapping).
pub fn error_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
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
}
