//! The one crossing between arrow-rs and Polars (which carries its own Arrow).
//!
//! Batches cross as an Arrow IPC stream in memory: safe, schema-preserving, and cheap next to the
//! database round trips around it. Polars writes the oldest IPC compatibility level, so what comes
//! back is plain `LargeUtf8`/`LargeBinary` that pgpq encodes for `COPY`.

use std::io::Cursor;

use crate::error::{Context, Result};
use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use polars::prelude::{
    CompatLevel, DataFrame, IpcStreamReader, IpcStreamWriter, SerReader, SerWriter,
};

/// An arrow-rs batch as a Polars frame.
pub fn to_polars(batch: &RecordBatch) -> Result<DataFrame> {
    let mut buf = Vec::new();
    {
        let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &batch.schema())?;
        writer.write(batch)?;
        writer.finish()?;
    }
    IpcStreamReader::new(Cursor::new(buf))
        .finish()
        .context("reading an Arrow batch into Polars")
}

/// A Polars frame as one arrow-rs batch.
pub fn from_polars(frame: &mut DataFrame) -> Result<RecordBatch> {
    let mut buf = Vec::new();
    IpcStreamWriter::new(&mut buf)
        .with_compat_level(CompatLevel::oldest())
        .finish(frame)
        .context("writing a Polars frame as Arrow")?;
    let reader = arrow::ipc::reader::StreamReader::try_new(Cursor::new(buf), None)?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    Ok(concat_batches(&schema, &batches)?)
}
