//! The facts of the showcases: the affected users' CLOSED orders and current dishes, read from DDS
//! (`sql/cdm_facts.sql`) into one Arrow batch whose columns are declared once ([`Facts`]).

use anyhow::{Context, Result};
use arrow::array::{
    BinaryArray, BinaryBuilder, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, TimeUnit};
use chrono::NaiveDateTime;
use dwh_shared::columns;
use tokio_postgres::GenericClient;
use uuid::Uuid;

columns! {
    /// The facts [`compute`](super::compute::compute) counts: one row per (user, CLOSED order, dish of its current
    /// basket) with the dish's current name and category, and, for a dish no menu names, the
    /// time of the order's newest version (which order's name it takes). Keys are the hub keys'
    /// 16 bytes.
    pub struct Facts {
        user_id: BinaryBuilder, BinaryArray = DataType::Binary, false;
        order_id: BinaryBuilder, BinaryArray = DataType::Binary, false;
        product_id: BinaryBuilder, BinaryArray = DataType::Binary, false;
        product_name: StringBuilder, StringArray = DataType::Utf8, true;
        /// NULL for a dish no menu lists.
        category_id: BinaryBuilder, BinaryArray = DataType::Binary, true;
        category_name: StringBuilder, StringArray = DataType::Utf8, true;
        /// NULL for a dish a menu names.
        order_ts: TimestampMicrosecondBuilder, TimestampMicrosecondArray =
            DataType::Timestamp(TimeUnit::Microsecond, None), true;
    }
}

/// The [`Facts`] of `users`, read from DDS.
pub async fn read_facts<C: GenericClient>(client: &C, users: &[Uuid]) -> Result<RecordBatch> {
    let rows = client
        .query(include_str!("../sql/cdm_facts.sql"), &[&users])
        .await
        .context("reading facts from DDS")?;
    let mut facts = Facts::with_capacity(rows.len());
    for row in &rows {
        facts.user_id.append_value(row.get::<_, Uuid>(0).as_bytes());
        facts
            .order_id
            .append_value(row.get::<_, Uuid>(1).as_bytes());
        facts
            .product_id
            .append_value(row.get::<_, Uuid>(2).as_bytes());
        facts
            .product_name
            .append_option(row.get::<_, Option<&str>>(3));
        let category = row.get::<_, Option<Uuid>>(4);
        facts
            .category_id
            .append_option(category.map(|c| *c.as_bytes()));
        facts
            .category_name
            .append_option(row.get::<_, Option<&str>>(5));
        let order_ts = row.get::<_, Option<NaiveDateTime>>(6);
        facts
            .order_ts
            .append_option(order_ts.map(|t| t.and_utc().timestamp_micros()));
    }
    Ok(facts.finish()?)
}
