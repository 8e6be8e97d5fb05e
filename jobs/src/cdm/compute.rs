//! The showcases computed from the facts with Polars: distinct CLOSED orders per user × dish, per
//! user × category and per tag rule. Pure: no database, so it is unit-tested below.

use anyhow::Result;
use arrow::array::RecordBatch;
use dwh_shared::frames;
use polars::prelude::*;
use uuid::Uuid;

use crate::tags::events::TagCount;
use crate::tags::rules::TagRule;

/// The three showcases of a set of users, as Arrow batches shaped like their tables, and each
/// user's count under each rule (held or not: what a tag event says).
pub struct Showcases {
    pub products: RecordBatch,
    pub categories: RecordBatch,
    pub tags: RecordBatch,
    pub tag_counts: Vec<TagCount>,
}

/// Count distinct CLOSED orders per user×product, user×category and tag rule, with Polars.
pub fn compute(facts: &RecordBatch, rules: &[TagRule]) -> Result<Showcases> {
    let facts = frames::to_polars(facts)?.lazy();
    let distinct_orders = || {
        col("order_id")
            .n_unique()
            .cast(DataType::Int64)
            .alias("order_cnt")
    };

    let mut products = facts
        .clone()
        .group_by([col("user_id"), col("product_id")])
        .agg([
            // The dish's current name (the same on every row) or, for a dish no menu lists,
            // the name the user's newest order gives it.
            col("product_name")
                .sort_by(
                    [col("order_ts")],
                    SortMultipleOptions::default().with_order_descending(true),
                )
                .drop_nulls()
                .first()
                .alias("product_name"),
            distinct_orders(),
        ])
        .select([
            col("user_id"),
            col("product_id"),
            col("product_name").fill_null(lit("")),
            col("order_cnt"),
        ])
        .collect()?;
    let mut categories = facts
        .clone()
        .filter(col("category_id").is_not_null())
        .group_by([col("user_id"), col("category_id")])
        .agg([
            col("category_name").first().alias("category_name"),
            distinct_orders(),
        ])
        .select([
            col("user_id"),
            col("category_id"),
            col("category_name"),
            col("order_cnt"),
        ])
        .collect()?;

    let mut tag_frames = Vec::new();
    for rule in rules {
        let matches = match (&rule.category_name, &rule.dish_pattern) {
            (Some(category), _) => col("category_name").eq(lit(category.as_str())),
            (None, Some(pattern)) => col("product_name")
                .str()
                .contains(lit(format!("(?i){pattern}")), false),
            (None, None) => continue,
        };
        tag_frames.push(
            facts
                .clone()
                .filter(matches)
                .group_by([col("user_id")])
                .agg([distinct_orders()])
                .select([
                    col("user_id"),
                    lit(rule.tag.as_str()).alias("tag"),
                    col("order_cnt"),
                    lit(rule.threshold).cast(DataType::Int64).alias("threshold"),
                ]),
        );
    }
    let (mut tags, tag_counts) = if tag_frames.is_empty() {
        (DataFrame::empty(), Vec::new())
    } else {
        let counts = concat(tag_frames, UnionArgs::default())?.collect()?;
        let tags = counts
            .clone()
            .lazy()
            .filter(col("order_cnt").gt_eq(col("threshold")))
            .select([col("user_id"), col("tag"), col("order_cnt")])
            .collect()?;
        (tags, counts_of(&counts)?)
    };
    Ok(Showcases {
        products: frames::from_polars(&mut products)?,
        categories: frames::from_polars(&mut categories)?,
        tags: frames::from_polars(&mut tags)?,
        tag_counts,
    })
}

/// The rows of a frame of (user_id, tag, order_cnt, threshold).
fn counts_of(frame: &DataFrame) -> Result<Vec<TagCount>> {
    let users = frame.column("user_id")?.binary()?;
    let tags = frame.column("tag")?.str()?;
    let counts = frame.column("order_cnt")?.i64()?;
    let thresholds = frame.column("threshold")?.i64()?;
    let mut out = Vec::with_capacity(frame.height());
    for (((user, tag), order_cnt), threshold) in users
        .iter()
        .zip(tags.iter())
        .zip(counts.iter())
        .zip(thresholds.iter())
    {
        let (Some(user), Some(tag), Some(order_cnt), Some(threshold)) =
            (user, tag, order_cnt, threshold)
        else {
            continue;
        };
        out.push(TagCount {
            user: Uuid::from_slice(user)?,
            tag: tag.to_owned(),
            order_cnt,
            threshold,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arrow::array::{Int64Array, LargeBinaryArray, LargeStringArray};

    use super::*;
    use crate::cdm::facts::Facts;

    /// One fact: (user, order, product, product name, category, category name, order time in
    /// seconds). Ids are small numbers, made uuids.
    type Fact = (
        u128,
        u128,
        u128,
        Option<&'static str>,
        Option<u128>,
        Option<&'static str>,
        i64,
    );

    fn facts(rows: &[Fact]) -> RecordBatch {
        let mut facts = Facts::with_capacity(rows.len());
        for &(user, order, product, name, category, category_name, ts) in rows {
            facts.user_id.append_value(Uuid::from_u128(user).as_bytes());
            facts
                .order_id
                .append_value(Uuid::from_u128(order).as_bytes());
            facts
                .product_id
                .append_value(Uuid::from_u128(product).as_bytes());
            facts.product_name.append_option(name);
            facts
                .category_id
                .append_option(category.map(|c| *Uuid::from_u128(c).as_bytes()));
            facts.category_name.append_option(category_name);
            facts.order_ts.append_value(ts * 1_000_000);
        }
        facts.finish().unwrap()
    }

    fn rule(tag: &str, category: Option<&str>, pattern: Option<&str>, threshold: i64) -> TagRule {
        TagRule {
            tag: tag.to_owned(),
            category_name: category.map(str::to_owned),
            dish_pattern: pattern.map(str::to_owned),
            threshold,
        }
    }

    /// The showcases come back from Polars as `LargeBinary`/`LargeUtf8` (see `frames`).
    fn id(array: &LargeBinaryArray, i: usize) -> u128 {
        Uuid::from_slice(array.value(i)).unwrap().as_u128()
    }

    /// (user, key) → (name, order_cnt) of a counter batch whose key column is `key`.
    fn counters(
        batch: &RecordBatch,
        key: &str,
        name: &str,
    ) -> BTreeMap<(u128, u128), (String, i64)> {
        let users = batch.column_by_name("user_id").unwrap();
        let users = users.as_any().downcast_ref::<LargeBinaryArray>().unwrap();
        let keys = batch.column_by_name(key).unwrap();
        let keys = keys.as_any().downcast_ref::<LargeBinaryArray>().unwrap();
        let names = batch.column_by_name(name).unwrap();
        let names = names.as_any().downcast_ref::<LargeStringArray>().unwrap();
        let counts = batch.column_by_name("order_cnt").unwrap();
        let counts = counts.as_any().downcast_ref::<Int64Array>().unwrap();
        (0..batch.num_rows())
            .map(|i| {
                let name = names.value(i).to_owned();
                ((id(users, i), id(keys, i)), (name, counts.value(i)))
            })
            .collect()
    }

    const SOUP: Option<&str> = Some("Супы");
    const PASTRY: Option<&str> = Some("Выпечка");

    #[test]
    fn counters_count_distinct_orders_not_lines() {
        let batch = facts(&[
            // User 1: borscht in orders 10 and 11 (twice in 11: two lines, one order).
            (1, 10, 100, Some("Борщ"), Some(7), SOUP, 1),
            (1, 11, 100, Some("Борщ"), Some(7), SOUP, 2),
            (1, 11, 100, Some("Борщ"), Some(7), SOUP, 2),
            // Order 11 also has a second soup: the category counts order 11 once.
            (1, 11, 101, Some("Солянка"), Some(7), SOUP, 2),
            // User 2: one order of a pie.
            (2, 20, 200, Some("Пирожок"), Some(8), PASTRY, 3),
        ]);
        let showcases = compute(&batch, &[]).unwrap();
        let products = counters(&showcases.products, "product_id", "product_name");
        assert_eq!(
            products,
            BTreeMap::from([
                ((1, 100), ("Борщ".to_owned(), 2)),
                ((1, 101), ("Солянка".to_owned(), 1)),
                ((2, 200), ("Пирожок".to_owned(), 1)),
            ])
        );
        let categories = counters(&showcases.categories, "category_id", "category_name");
        assert_eq!(
            categories,
            BTreeMap::from([
                ((1, 7), ("Супы".to_owned(), 2)),
                ((2, 8), ("Выпечка".to_owned(), 1)),
            ])
        );
        // The batches are shaped like their tables (COPY matches columns by position).
        let names = |b: &RecordBatch| -> Vec<String> {
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        };
        assert_eq!(
            names(&showcases.products),
            ["user_id", "product_id", "product_name", "order_cnt"]
        );
        assert_eq!(
            names(&showcases.categories),
            ["user_id", "category_id", "category_name", "order_cnt"]
        );
        assert_eq!(showcases.tags.num_rows(), 0);
        assert!(showcases.tag_counts.is_empty());
    }

    #[test]
    fn a_dish_no_menu_lists_has_no_category_and_the_name_of_the_newest_order() {
        let batch = facts(&[
            (1, 10, 100, Some("Old name"), None, None, 1),
            (1, 12, 100, Some("New name"), None, None, 5),
            (1, 11, 100, None, None, None, 3),
            // A dish nobody ever named: an empty name, not NULL (the column is NOT NULL).
            (1, 10, 101, None, None, None, 1),
        ]);
        let showcases = compute(&batch, &[]).unwrap();
        let products = counters(&showcases.products, "product_id", "product_name");
        assert_eq!(products[&(1, 100)], ("New name".to_owned(), 3));
        assert_eq!(products[&(1, 101)], (String::new(), 1));
        assert_eq!(
            showcases.categories.num_rows(),
            0,
            "no category without a menu"
        );
    }

    #[test]
    fn tags_are_held_from_the_threshold_and_every_count_is_reported() {
        let batch = facts(&[
            (
                1,
                10,
                100,
                Some("Пицца Маргарита"),
                Some(9),
                Some("Основные блюда"),
                1,
            ),
            (
                1,
                11,
                101,
                Some("ПИЦЦА с грибами"),
                Some(9),
                Some("Основные блюда"),
                2,
            ),
            (1, 11, 102, Some("Борщ"), Some(7), SOUP, 2),
            (
                2,
                20,
                100,
                Some("Пицца Маргарита"),
                Some(9),
                Some("Основные блюда"),
                3,
            ),
        ]);
        let rules = [
            // Case-insensitive: "ПИЦЦА" matches "пицца".
            rule("Pizza Lover", None, Some("пицца"), 2),
            rule("Soup Fan", SOUP, None, 1),
            // Neither a category nor a pattern: counts nothing.
            rule("Nothing", None, None, 1),
        ];
        let showcases = compute(&batch, &rules).unwrap();
        let mut counts: Vec<(u128, String, i64, i64)> = showcases
            .tag_counts
            .iter()
            .map(|c| (c.user.as_u128(), c.tag.clone(), c.order_cnt, c.threshold))
            .collect();
        counts.sort();
        assert_eq!(
            counts,
            [
                (1, "Pizza Lover".to_owned(), 2, 2),
                (1, "Soup Fan".to_owned(), 1, 1),
                // Under the threshold: counted (a revocation says how far), not held.
                (2, "Pizza Lover".to_owned(), 1, 2),
            ]
        );
        let tags = &showcases.tags;
        let users = tags
            .column(0)
            .as_any()
            .downcast_ref::<LargeBinaryArray>()
            .unwrap();
        let names = tags
            .column(1)
            .as_any()
            .downcast_ref::<LargeStringArray>()
            .unwrap();
        let mut held: Vec<(u128, &str)> = (0..tags.num_rows())
            .map(|i| (id(users, i), names.value(i)))
            .collect();
        held.sort();
        assert_eq!(held, [(1, "Pizza Lover"), (1, "Soup Fan")]);
        let fields: Vec<&str> = tags
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(fields, ["user_id", "tag", "order_cnt"]);
    }
}
