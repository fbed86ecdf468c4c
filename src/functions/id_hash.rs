//! `id_hash(x)`: a fixed 64-bit hash of a string, used to find repeated ids
//! cheaply.
//!
//! ```sql
//! SELECT id_hash(event_id) AS h FROM events GROUP BY h HAVING count(*) > 1
//! ```
//!
//! Counting `event_id` strings over the whole history is one of the most
//! expensive steps of the report (a hash table keyed by 10M strings). Counting
//! their 64-bit hashes finds a *superset* of the repeated ids at a fraction of
//! the cost: every repeated id is among the hashes seen twice, and a hash
//! collision only adds a candidate, which the exact deduplication of the
//! candidates then treats like any other id. So the hash is never trusted
//! for equality, only for narrowing. The seed is fixed, so the hash of a value
//! is the same in every query and every process. NULL gives NULL.
//!
//! The top bit of every hash is set (63 bits of hash remain), so a hash is
//! never equal to a small integer: a query can put hashes and small codes in
//! one `UInt64` key and group by that single column, which is much cheaper
//! than grouping by two (see `event_checks`).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, UInt64Array};
use datafusion::arrow::buffer::ScalarBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::hash_utils::{create_hashes, RandomState};
use datafusion::common::{plan_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// Name under which the function is registered.
pub const ID_HASH: &str = "id_hash";

/// The `id_hash` scalar function (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdHash {
    signature: Signature,
}

impl Default for IdHash {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// The function as a [`ScalarUDF`], ready for `SessionContext::register_udf`.
pub fn id_hash_udf() -> ScalarUDF {
    ScalarUDF::from(IdHash::default())
}

impl ScalarUDFImpl for IdHash {
    fn name(&self) -> &str {
        ID_HASH
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            // One input type, so a value hashes the same whatever its
            // column's string type.
            [DataType::Utf8View | DataType::Utf8 | DataType::LargeUtf8 | DataType::Null] => {
                Ok(vec![DataType::Utf8View])
            }
            [other] => plan_err!("{ID_HASH} takes a string, not {other}"),
            _ => plan_err!("{ID_HASH} takes exactly one argument"),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::UInt64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        Ok(ColumnarValue::Array(hash_array(&arrays[0])?))
    }
}

/// Set in every hash, so that hashes and codes below 2^63 never meet.
pub const TOP_BIT: u64 = 1 << 63;

/// The fixed-seed hashes of `values` (top bit set), NULL where a value is NULL.
pub fn hash_array(values: &ArrayRef) -> Result<ArrayRef> {
    // A fixed seed: the hash must not change between queries or processes.
    const STATE: RandomState = RandomState::with_seed(0x5eed_f00d);
    let values = if values.data_type() == &DataType::Utf8View {
        Arc::clone(values)
    } else {
        cast(values, &DataType::Utf8View)?
    };
    let mut hashes = vec![0u64; values.len()];
    create_hashes([&values], &STATE, &mut hashes)?;
    for h in &mut hashes {
        *h |= TOP_BIT;
    }
    Ok(Arc::new(UInt64Array::new(
        ScalarBuffer::from(hashes),
        values.logical_nulls(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, StringArray, StringViewArray};
    use datafusion::arrow::datatypes::UInt64Type;

    #[test]
    fn equal_strings_hash_equal_whatever_the_string_type() {
        let a: ArrayRef = Arc::new(StringArray::from(vec![
            Some("e000000100656"),
            None,
            Some("x"),
        ]));
        let b: ArrayRef = Arc::new(StringViewArray::from(vec![
            Some("x"),
            Some("e000000100656"),
            None,
        ]));
        let (ha, hb) = (hash_array(&a).unwrap(), hash_array(&b).unwrap());
        let (ha, hb) = (
            ha.as_primitive::<UInt64Type>(),
            hb.as_primitive::<UInt64Type>(),
        );
        assert_eq!(ha.value(0), hb.value(1));
        assert_eq!(ha.value(2), hb.value(0));
        assert_ne!(ha.value(0), ha.value(2));
        assert!(ha.is_null(1) && hb.is_null(2));
        assert!(ha.value(0) >= TOP_BIT && ha.value(2) >= TOP_BIT);
    }
}
