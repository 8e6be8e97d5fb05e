//! Dictionary snapshots from Redis: the users and restaurants a batch names, or every key.
//!
//! Keys are raw ids (no prefix) and values JSON documents. Reads are `MGET`s of a few thousand
//! keys each, never one `GET` per order. Connecting is retried while Redis is away; a [`Reader`]
//! also reconnects when Redis drops the connection mid-run.

use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;

use crate::config::Redis;
use crate::error::{bail, Cause, Context, Result};
use crate::model::DictVersion;
use crate::{mask_url, retry};

const CHUNK: usize = 5_000;

/// Connect to Redis, retrying while it is away (see [`retry`]); the error names the (masked) URL.
///
/// A `rediss://` URL is TLS, verified (chain and host name) against the CA file when one is
/// given, else against the system's CAs.
pub async fn connect(settings: &Redis) -> Result<MultiplexedConnection> {
    retry::run(retry::Service::Redis, async || open(settings).await).await
}

/// How long one attempt waits for a connection (TLS included), and for a reply.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// One attempt to connect.
async fn open(settings: &Redis) -> Result<MultiplexedConnection> {
    let url = settings.url.as_str();
    let client = match &settings.ca_file {
        None => redis::Client::open(url),
        Some(ca) => {
            if !url.starts_with("rediss://") {
                bail!(
                    "a Redis CA file needs a rediss:// URL, not {}",
                    mask_url(url)
                );
            }
            let root_cert = std::fs::read(ca)
                .with_context(|| format!("reading the Redis CA file {}", ca.display()))?;
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            };
            redis::Client::build_with_tls(url, certificates)
        }
    }
    .with_context(|| format!("bad Redis URL {}", mask_url(url)))?;
    // redis-rs waits 1 s for a connection and 500 ms for a reply by default: too little for a TLS
    // handshake on a busy node or an MGET of large menus. A Redis that is away is still noticed
    // at once (refused); one that hangs is retried within the bound.
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(retry::attempt_timeout(CONNECT_TIMEOUT)))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| {
            let what = if e.kind() == redis::ErrorKind::AuthenticationFailed {
                "refused the connection"
            } else {
                "is unreachable"
            };
            e.within(format!("Redis at {} {what}", mask_url(url)))
        })
}

/// Reads the dictionaries a run needs over one connection, opening a new one when Redis dropped
/// the last (a restart, a failover); the caller decides when to try again.
pub struct Reader {
    settings: Redis,
    conn: Option<MultiplexedConnection>,
}

impl Reader {
    /// Connect (retrying while Redis is away).
    pub async fn connect(settings: &Redis) -> Result<Reader> {
        Ok(Reader {
            settings: settings.clone(),
            conn: Some(connect(settings).await?),
        })
    }

    /// One attempt at reading `keys` (see [`read`]); after an outage the next call reconnects.
    pub async fn try_read(&mut self, keys: &[String]) -> Result<Snapshot> {
        let conn = self.connection().await?;
        let result = read(conn, keys).await;
        self.forget_if_lost(&result);
        result
    }

    /// Whether the database holds no key at all (`DBSIZE`), one attempt.
    pub async fn try_is_empty(&mut self) -> Result<bool> {
        let conn = self.connection().await?;
        let result = redis::cmd("DBSIZE")
            .query_async::<u64>(conn)
            .await
            .map(|keys| keys == 0)
            .context("counting the keys in Redis");
        self.forget_if_lost(&result);
        result
    }

    async fn connection(&mut self) -> Result<&mut MultiplexedConnection> {
        if self.conn.is_none() {
            self.conn = Some(open(&self.settings).await?);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    fn forget_if_lost<T>(&mut self, result: &Result<T>) {
        if result
            .as_ref()
            .is_err_and(|e| e.diagnose().is_some_and(|(_, transient)| transient))
        {
            self.conn = None;
        }
    }
}

/// What a dictionary read found.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub versions: Vec<DictVersion>,
    /// Keys that held something that is not a user or restaurant document, with the reason.
    pub unreadable: Vec<(String, String)>,
    /// Keys asked for that Redis does not have.
    pub missing: usize,
}

/// Read the documents under `keys` (duplicates are read once).
pub async fn read(conn: &mut MultiplexedConnection, keys: &[String]) -> Result<Snapshot> {
    let mut keys: Vec<&String> = keys.iter().filter(|k| !k.is_empty()).collect();
    keys.sort();
    keys.dedup();
    let mut snapshot = Snapshot::default();
    for chunk in keys.chunks(CHUNK) {
        let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(chunk)
            .query_async(conn)
            .await
            .context("reading dictionaries from Redis")?;
        for (key, value) in chunk.iter().zip(values) {
            match value {
                None => snapshot.missing += 1,
                Some(bytes) => match DictVersion::parse(key, &bytes) {
                    Ok(version) => snapshot.versions.push(version),
                    Err(reason) => snapshot.unreadable.push(((*key).clone(), reason)),
                },
            }
        }
    }
    Ok(snapshot)
}

/// Every key in the database (`SCAN`, so Redis is never blocked). A key that is not UTF-8 cannot
/// be an id an order names: it is left out with a warning.
pub async fn all_keys(conn: &mut MultiplexedConnection) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut iter: redis::AsyncIter<Vec<u8>> = conn
        .scan_options(redis::ScanOptions::default().with_count(1000))
        .await
        .context("scanning Redis")?;
    while let Some(key) = futures::StreamExt::next(&mut iter).await {
        match String::from_utf8(key.context("scanning Redis")?) {
            Ok(key) => keys.push(key),
            Err(e) => tracing::warn!(
                key = %String::from_utf8_lossy(e.as_bytes()),
                "a key that is not UTF-8 is not an id: left out"
            ),
        }
    }
    Ok(keys)
}
