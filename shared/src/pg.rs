//! PostgreSQL: connecting, migrations, advisory locks, and `COPY … (FORMAT binary)` from Arrow.
//!
//! Every bulk write goes through [`copy_batch`]: an Arrow `RecordBatch` is encoded by pgpq into
//! PostgreSQL's binary COPY format and streamed in one `COPY`. A 16-byte `FixedSizeBinary` column
//! travels as raw bytes, which is exactly the binary form of `uuid`, so key columns land as uuids.

use crate::error::{bail, Context, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema};
use bytes::BytesMut;
use futures::SinkExt;
use tokio_postgres::{Client, GenericClient, Transaction};
use tracing::Instrument;

use crate::config::Postgres;
use crate::{mask_url, pg_tls, retry};

/// Rows encoded and sent per piece of a `COPY`.
const COPY_SLICE_ROWS: usize = 8_192;

mod embedded {
    refinery::embed_migrations!("../sql");
}

/// Connect to the warehouse, over TLS as the URL's `sslmode` says; the error names the (masked)
/// URL.
pub async fn connect(pg: &Postgres) -> Result<Client> {
    let parsed = pg_tls::parse(&pg.url)?;
    connect_config(&parsed.config, pg, parsed.verify).await
}

/// How long one attempt to connect may take when the URL does not say (`connect_timeout`), and
/// the retry bound leaves that much ([`retry::attempt_timeout`]).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connect, retrying while the server is away (see [`retry`]); a wrong password or a certificate
/// that does not verify fails at once.
async fn connect_config(
    config: &tokio_postgres::Config,
    pg: &Postgres,
    verify: pg_tls::Verify,
) -> Result<Client> {
    let url = &pg.url;
    let tls = pg_tls::connector(verify, pg.ca_file.as_deref())?;
    let natural = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(CONNECT_TIMEOUT);
    let (client, connection) = retry::run(retry::Service::Postgres, async || {
        // No attempt outlasts the retry bound.
        let mut config = config.clone();
        config.connect_timeout(retry::attempt_timeout(natural));
        config.connect(tls.clone()).await.map_err(|e| {
            // The server answered (a wrong password, no such database) or it did not.
            let what = if e.as_db_error().is_some() {
                "refused the connection"
            } else {
                "is unreachable"
            };
            anyhow::Error::new(e).context(format!("PostgreSQL at {} {what}", mask_url(url)))
        })
    })
    .await?;
    tokio::spawn(async move {
        // The statement that needed the connection reports it; this is for debugging.
        if let Err(e) = connection.await {
            tracing::debug!("PostgreSQL connection closed: {e}");
        }
    });
    // JIT compiled every merge (~0.8 s of a 6 s stg merge): the planner's estimates for the
    // unanalysed stage tables are far above their rows. The merges' sorts fit in `work_mem`.
    client
        .execute(
            "SELECT set_config('jit', 'off', false), set_config('work_mem', $1, false)",
            &[&pg.work_mem],
        )
        .await
        .with_context(|| format!("setting work_mem = {} (--pg-work-mem)", pg.work_mem))?;
    Ok(client)
}

/// Create the database named in the URL if it does not exist yet (connecting to `postgres`).
pub async fn ensure_database(pg: &Postgres) -> Result<()> {
    let parsed = pg_tls::parse(&pg.url)?;
    let Some(name) = parsed.config.get_dbname().map(str::to_owned) else {
        return Ok(());
    };
    let mut admin = parsed.config.clone();
    admin.dbname("postgres");
    let client = connect_config(&admin, pg, parsed.verify).await?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .with_context(|| format!("looking for database {name}"))?
        .is_some();
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match client
            .batch_execute(&format!("CREATE DATABASE {quoted}"))
            .await
        {
            Ok(()) => tracing::info!(database = %name, "created database"),
            // Another migrate created it in the meantime.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {}
            Err(e) => return Err(e).context(format!("creating database {name}")),
        }
    }
    Ok(())
}

/// Apply the migrations in `sql/` that are not applied yet; returns the names applied now.
///
/// Runs under an advisory lock, so two `dwh migrate` at once apply each migration once.
pub async fn migrate(client: &mut Client) -> Result<Vec<String>> {
    client
        .batch_execute("SELECT pg_advisory_lock(hashtextextended('dwh:migrate', 0))")
        .await
        .context("taking the migration lock")?;
    let report = embedded::migrations::runner()
        .set_migration_table_name("dwh_schema_history")
        .run_async(client)
        .await;
    client
        .batch_execute("SELECT pg_advisory_unlock(hashtextextended('dwh:migrate', 0))")
        .await
        .context("releasing the migration lock")?;
    let report = report.context("applying migrations")?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| m.to_string())
        .collect())
}

/// Take the session-level advisory lock `name`, waiting up to `wait` for a holder to let go
/// (the backend of a run that just crashed may not have noticed yet); `false` if it stays held.
pub async fn lock(client: &Client, name: &str, wait: std::time::Duration) -> Result<bool> {
    client
        .batch_execute(&format!("SET lock_timeout = {}", wait.as_millis().max(1)))
        .await
        .context("setting lock_timeout")?;
    let taken = client
        .execute(
            "SELECT pg_advisory_lock(hashtextextended($1, 0))",
            &[&format!("dwh:{name}")],
        )
        .await;
    client
        .batch_execute("RESET lock_timeout")
        .await
        .context("resetting lock_timeout")?;
    match taken {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
            Ok(false)
        }
        Err(e) => Err(e).context("taking the advisory lock"),
    }
}

fn pg_type(data_type: &DataType) -> Result<&'static str> {
    Ok(match data_type {
        DataType::Boolean => "bool",
        DataType::Int16 => "int2",
        DataType::Int32 => "int4",
        DataType::Int64 => "int8",
        DataType::Float64 => "float8",
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text",
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea",
        DataType::FixedSizeBinary(16) => "uuid",
        DataType::Timestamp(_, None) => "timestamp",
        DataType::Timestamp(_, Some(_)) => "timestamptz",
        other => bail!("no PostgreSQL type for Arrow {other}"),
    })
}

/// Create a temporary table (dropped at commit) whose columns follow the batch's schema.
pub async fn create_temp_table<C: GenericClient>(
    tx: &C,
    name: &str,
    schema: &Schema,
) -> Result<()> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| Ok(format!("{} {}", f.name(), pg_type(f.data_type())?)))
        .collect::<Result<Vec<_>>>()?;
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE {name} ({}) ON COMMIT DROP",
        columns.join(", ")
    ))
    .await
    .with_context(|| format!("creating temp table {name}"))
}

/// `COPY table (columns of the batch) FROM STDIN (FORMAT binary)` with the batch encoded by pgpq.
pub async fn copy_batch(tx: &Transaction<'_>, table: &str, batch: &RecordBatch) -> Result<u64> {
    copy_encoded(tx, table, batch)
        .instrument(tracing::info_span!("copy", table, rows = batch.num_rows()))
        .await
}

async fn copy_encoded(tx: &Transaction<'_>, table: &str, batch: &RecordBatch) -> Result<u64> {
    let schema = batch.schema();
    let encoding = |e| anyhow::anyhow!("encoding {table} for COPY: {e:?}");
    let mut encoder = pgpq::ArrowToPostgresBinaryEncoder::try_new(&schema).map_err(encoding)?;
    let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let sink = tx
        .copy_in(&format!(
            "COPY {table} ({}) FROM STDIN (FORMAT binary)",
            columns.join(", ")
        ))
        .await
        .with_context(|| format!("starting COPY into {table}"))?;
    futures::pin_mut!(sink);
    // Encoded and sent a slice at a time: the encoded copy of a batch is never held whole.
    let mut buf = BytesMut::new();
    encoder.write_header(&mut buf).map_err(encoding)?;
    let rows = batch.num_rows();
    for offset in (0..rows).step_by(COPY_SLICE_ROWS) {
        let slice = batch.slice(offset, COPY_SLICE_ROWS.min(rows - offset));
        encoder.write_batch(&slice, &mut buf).map_err(encoding)?;
        sink.send(buf.split().freeze())
            .await
            .with_context(|| format!("COPY into {table}"))?;
    }
    encoder.write_footer(&mut buf).map_err(encoding)?;
    sink.send(buf.split().freeze())
        .await
        .with_context(|| format!("COPY into {table}"))?;
    sink.finish()
        .await
        .with_context(|| format!("COPY into {table}"))
}

/// Stage a batch: a temp table shaped like it, filled by one binary COPY.
pub async fn stage(tx: &Transaction<'_>, name: &str, batch: &RecordBatch) -> Result<u64> {
    create_temp_table(tx, name, &batch.schema()).await?;
    copy_batch(tx, name, batch).await
}
