//! TLS to PostgreSQL: libpq's `sslmode` (up to `verify-full`) over OpenSSL.
//!
//! tokio-postgres itself knows only `disable`, `prefer` and `require` and leaves verification to
//! the connector. [`connector`] takes the mode out of the URL, hands tokio-postgres the part it
//! understands and builds an OpenSSL connector: `verify-full` checks the chain and the host name,
//! `verify-ca` and `require` the chain — against the CA file, or the system's CAs without one.
//! That makes `require` stricter than libpq's, which checks nothing without a root certificate:
//! TLS that is asked for is verified by default. `prefer` (the default) and `allow` encrypt when
//! the server offers it and check nothing; `disable` never encrypts.

use std::path::Path;

use crate::error::{bail, Context, Result};
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;
use tokio_postgres::config::SslMode;

use crate::mask_url;

/// What the server's certificate is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Nothing: encrypted, but the server is not authenticated.
    None,
    /// The chain up to the CA.
    Chain,
    /// The chain and that the certificate names the host connected to.
    Full,
}

/// A parsed connection string and the verification its `sslmode` asks for.
#[derive(Debug)]
pub struct Parsed {
    pub config: tokio_postgres::Config,
    pub verify: Verify,
}

/// Parse `url` (a `postgres://` URL or `key=value` string), taking `sslmode` out of it.
pub fn parse(url: &str) -> Result<Parsed> {
    let (rest, mode) = split_sslmode(url);
    let mut config: tokio_postgres::Config = rest
        .parse()
        .with_context(|| format!("bad PostgreSQL URL {}", mask_url(url)))?;
    let (ssl_mode, verify) = match mode.as_deref() {
        None | Some("prefer") | Some("allow") => (SslMode::Prefer, Verify::None),
        Some("disable") => (SslMode::Disable, Verify::None),
        Some("require") | Some("verify-ca") => (SslMode::Require, Verify::Chain),
        Some("verify-full") => (SslMode::Require, Verify::Full),
        Some(other) => bail!(
            "bad PostgreSQL URL {}: sslmode={other} is not one of disable, allow, prefer, \
             require, verify-ca, verify-full",
            mask_url(url)
        ),
    };
    config.ssl_mode(ssl_mode);
    Ok(Parsed { config, verify })
}

/// An OpenSSL connector that checks what `verify` says against `ca_file` (or the system's CAs).
pub fn connector(verify: Verify, ca_file: Option<&Path>) -> Result<MakeTlsConnector> {
    let mut builder = SslConnector::builder(SslMethod::tls_client())?;
    if let Some(ca) = ca_file {
        builder
            .set_ca_file(ca)
            .with_context(|| format!("reading the PostgreSQL CA file {}", ca.display()))?;
    }
    let mut connector = MakeTlsConnector::new(builder.build());
    connector.set_callback(move |config, _domain| {
        match verify {
            Verify::None => config.set_verify(SslVerifyMode::NONE),
            Verify::Chain => config.set_verify_hostname(false),
            Verify::Full => {}
        }
        Ok(())
    });
    Ok(connector)
}

/// The connection string without its `sslmode`, and that mode.
fn split_sslmode(url: &str) -> (String, Option<String>) {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Ok(mut parsed) = url::Url::parse(url) else {
            return (url.to_owned(), None);
        };
        let mut mode = None;
        let kept: Vec<(String, String)> = parsed
            .query_pairs()
            .filter_map(|(k, v)| {
                if k == "sslmode" {
                    mode = Some(v.into_owned());
                    None
                } else {
                    Some((k.into_owned(), v.into_owned()))
                }
            })
            .collect();
        if mode.is_none() {
            return (url.to_owned(), None);
        }
        if kept.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(kept);
        }
        return (parsed.to_string(), mode);
    }
    let mut mode = None;
    let kept: Vec<&str> = url
        .split_whitespace()
        .filter(|part| match part.split_once('=') {
            Some(("sslmode", value)) => {
                mode = Some(value.to_owned());
                false
            }
            _ => true,
        })
        .collect();
    (kept.join(" "), mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_taken_out_of_urls_and_key_value_strings() {
        assert_eq!(
            split_sslmode("postgres://u:p@db:5432/dwh?sslmode=verify-full&application_name=x"),
            (
                "postgres://u:p@db:5432/dwh?application_name=x".to_owned(),
                Some("verify-full".to_owned())
            )
        );
        assert_eq!(
            split_sslmode("postgresql://db/dwh?sslmode=verify-ca"),
            (
                "postgresql://db/dwh".to_owned(),
                Some("verify-ca".to_owned())
            )
        );
        assert_eq!(
            split_sslmode("host=db sslmode=require user=u"),
            ("host=db user=u".to_owned(), Some("require".to_owned()))
        );
        assert_eq!(
            split_sslmode("postgres://db/dwh"),
            ("postgres://db/dwh".to_owned(), None)
        );
    }

    #[test]
    fn modes_map_to_what_is_verified() {
        let cases = [
            ("postgres://db/dwh", SslMode::Prefer, Verify::None),
            (
                "postgres://db/dwh?sslmode=allow",
                SslMode::Prefer,
                Verify::None,
            ),
            (
                "postgres://db/dwh?sslmode=disable",
                SslMode::Disable,
                Verify::None,
            ),
            // Stricter than libpq: TLS that is asked for checks the chain.
            (
                "postgres://db/dwh?sslmode=require",
                SslMode::Require,
                Verify::Chain,
            ),
            (
                "postgres://db/dwh?sslmode=verify-ca",
                SslMode::Require,
                Verify::Chain,
            ),
            (
                "postgres://db/dwh?sslmode=verify-full",
                SslMode::Require,
                Verify::Full,
            ),
            (
                "host=db dbname=dwh sslmode=verify-full",
                SslMode::Require,
                Verify::Full,
            ),
        ];
        for (url, mode, verify) in cases {
            let parsed = parse(url).unwrap();
            assert_eq!(parsed.config.get_ssl_mode(), mode, "{url}");
            assert_eq!(parsed.verify, verify, "{url}");
            assert_eq!(parsed.config.get_dbname(), Some("dwh"), "{url}");
        }
    }

    #[test]
    fn an_unknown_mode_is_one_plain_error_without_the_password() {
        let error = parse("postgres://u:s3cret@db/dwh?sslmode=verify").unwrap_err();
        let text = crate::chain_line(&error);
        assert!(text.contains("sslmode=verify is not one of"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }
}
