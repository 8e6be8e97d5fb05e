//! Arrow batches whose columns are declared once.
//!
//! [`columns!`](crate::columns!) takes one list of columns — name, builder and array type, Arrow
//! type, nullable or not — and derives from it what would otherwise say the schema again: the
//! schema itself, a struct with a typed builder per column (each made from its field's Arrow
//! type, so a timestamp's time zone is set once), `finish` into a `RecordBatch` of that schema,
//! and, for batches read back, a struct of the typed arrays of a batch, checked by name and type.
//! Appending stays what it was by hand: one typed `append_*` call per column and row.

use arrow::array::{make_builder, Array, RecordBatch};
use arrow::datatypes::DataType;
use arrow::error::ArrowError;

#[doc(hidden)]
pub use arrow;

/// An empty builder of type `B` for `data_type`, room for `rows` rows (arrow's `make_builder`).
///
/// # Panics
/// When `B` is not the builder arrow makes for `data_type`: a declaration that names another
/// builder than its Arrow type takes fails the first time it is used (every declared batch has a
/// unit test).
pub fn builder<B: 'static>(data_type: &DataType, rows: usize) -> B {
    match make_builder(data_type, rows).into_box_any().downcast::<B>() {
        Ok(builder) => *builder,
        Err(_) => panic!(
            "a column of type {data_type} is declared with builder {}",
            std::any::type_name::<B>()
        ),
    }
}

/// The column `name` of `batch` as an `A`, or an error naming it.
pub fn array<'a, A: Array + 'static>(
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a A, ArrowError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<A>())
        .ok_or_else(|| {
            ArrowError::SchemaError(format!("column {name} is missing or of another type"))
        })
}

/// Declare an Arrow batch's columns once (see the [module](crate::columns)):
///
/// ```ignore
/// columns! {
///     /// The builders of a document batch.
///     pub struct DocumentColumns => DocumentArrays {
///         key: StringBuilder, StringArray = DataType::Utf8, false;
///         value: BinaryBuilder, BinaryArray = DataType::Binary, true;
///     }
/// }
/// let mut columns = DocumentColumns::with_capacity(2);
/// columns.key.append_value("k");
/// columns.value.append_null();
/// let batch = columns.finish()?;
/// let arrays = DocumentArrays::of(&batch)?;
/// ```
///
/// `=> Arrays` is optional: without it no reader struct is made.
#[macro_export]
macro_rules! columns {
    // With a reader: the builders, then the arrays.
    (
        $(#[$meta:meta])*
        $vis:vis struct $builders:ident => $arrays:ident {
            $(
                $(#[$column_meta:meta])*
                $column:ident: $builder:ty, $array:ty = $data_type:expr, $nullable:expr;
            )+
        }
    ) => {
        $crate::columns! {
            $(#[$meta])*
            $vis struct $builders {
                $($(#[$column_meta])* $column: $builder, $array = $data_type, $nullable;)+
            }
        }

        /// The typed columns of a batch read back.
        #[allow(dead_code)] // a reader need not read every column
        $vis struct $arrays<'a> {
            $(pub $column: &'a $array,)+
        }

        impl<'a> $arrays<'a> {
            /// The columns of `batch`, each checked to be there with its declared type.
            pub fn of(
                batch: &'a $crate::columns::arrow::array::RecordBatch,
            ) -> ::std::result::Result<Self, $crate::columns::arrow::error::ArrowError> {
                Ok(Self {
                    $($column: $crate::columns::array(batch, stringify!($column))?,)+
                })
            }
        }
    };
    (
        $(#[$meta:meta])*
        $vis:vis struct $builders:ident {
            $(
                $(#[$column_meta:meta])*
                $column:ident: $builder:ty, $array:ty = $data_type:expr, $nullable:expr;
            )+
        }
    ) => {
        $(#[$meta])*
        $vis struct $builders {
            $($(#[$column_meta])* pub $column: $builder,)+
        }

        impl $builders {
            /// The schema of the batch, from the declaration.
            #[allow(dead_code)]
            pub fn schema() -> $crate::columns::arrow::datatypes::SchemaRef {
                ::std::sync::Arc::new($crate::columns::arrow::datatypes::Schema::new(vec![
                    $($crate::columns::arrow::datatypes::Field::new(
                        stringify!($column),
                        $data_type,
                        $nullable,
                    ),)+
                ]))
            }

            /// Empty builders with room for `rows` rows.
            pub fn with_capacity(rows: usize) -> Self {
                Self {
                    $($column: $crate::columns::builder(&$data_type, rows),)+
                }
            }

            /// The batch built so far, of [`Self::schema`].
            pub fn finish(
                mut self,
            ) -> ::std::result::Result<
                $crate::columns::arrow::array::RecordBatch,
                $crate::columns::arrow::error::ArrowError,
            > {
                $crate::columns::arrow::array::RecordBatch::try_new(
                    Self::schema(),
                    vec![$({
                        // The declared array type is the builder's: checked here.
                        let array: $array = self.$column.finish();
                        ::std::sync::Arc::new(array) as $crate::columns::arrow::array::ArrayRef
                    },)+],
                )
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use arrow::array::{
        BinaryArray, BinaryBuilder, Int64Array, Int64Builder, StringArray, StringBuilder,
        TimestampMillisecondArray, TimestampMillisecondBuilder,
    };
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;

    crate::columns! {
        struct Rows => RowArrays {
            name: StringBuilder, StringArray = DataType::Utf8, false;
            count: Int64Builder, Int64Array = DataType::Int64, true;
            at: TimestampMillisecondBuilder, TimestampMillisecondArray =
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), true;
            bytes: BinaryBuilder, BinaryArray = DataType::Binary, false;
        }
    }

    #[test]
    fn the_declaration_is_the_schema_and_the_batch_reads_back() {
        let utc = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        let expected = Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("count", DataType::Int64, true),
            Field::new("at", utc, true),
            Field::new("bytes", DataType::Binary, false),
        ]);
        assert_eq!(*Rows::schema(), expected);

        let mut rows = Rows::with_capacity(2);
        rows.name.append_value("a");
        rows.count.append_value(7);
        rows.at.append_value(1_696_238_141_000);
        rows.bytes.append_value(b"\xff");
        rows.name.append_value("b");
        rows.count.append_null();
        rows.at.append_null();
        rows.bytes.append_value(b"");
        let batch = rows.finish().unwrap();
        // The builder made from the schema carries the time zone: the batch is of the schema.
        assert_eq!(*batch.schema(), expected);

        let arrays = RowArrays::of(&batch).unwrap();
        assert_eq!(arrays.name.value(1), "b");
        assert_eq!(arrays.count.value(0), 7);
        assert!(arrays.count.is_null(1) && arrays.at.is_null(1));
        assert_eq!(arrays.bytes.value(0), b"\xff");
    }

    #[test]
    fn a_batch_without_a_column_or_with_another_type_is_refused_by_name() {
        let other = RecordBatch::try_from_iter([(
            "name",
            std::sync::Arc::new(Int64Array::from(vec![1])) as arrow::array::ArrayRef,
        )])
        .unwrap();
        let error = RowArrays::of(&other).err().unwrap().to_string();
        assert!(
            error.contains("column name is missing or of another type"),
            "{error}"
        );
    }

    #[test]
    #[should_panic(expected = "declared with builder")]
    fn a_builder_that_does_not_fit_its_type_fails_at_once() {
        let _: Int64Builder = builder(&DataType::Utf8, 1);
    }
}
