//! Keyed state kept by the host: checkpointed with the job and given back
//! after a failure or when the job resumes, so an operator's counts, windows
//! and buffers survive restarts without being held in guest memory.
//!
//! Two things in the job spec make it work:
//!
//! - **Grant the capability.** An operator that uses this module imports
//!   `flumen:dataflow/state`, and the host refuses imports the job did not
//!   grant: `capabilities = ["log", "state"]`. (One that never calls it does
//!   not import it and needs no grant.)
//! - **Hash-partition the input on the key.** State is kept per subtask; with
//!   `inputs = [{ from = "src", partition = "hash", keys = ["user"] }]` every
//!   row of one key reaches the same subtask, so each key's state lives in
//!   exactly one place.
//!
//! A state is named by the operator ([`ValueState::new("counts")`](ValueState::new));
//! within it every entry lives under a key of bytes. [`keys_of`] turns a key
//! column into keys ([`key_of`] one row); the empty key, which [`key_of`]
//! never returns, is the subtask's operator-wide state. Read and write a whole
//! batch's keys with one call ([`ValueState::get_many`], [`ValueState::set_many`]),
//! never one call per row.
//!
//! ```text
//! let counts = ValueState::new("counts");
//! let keys = state::keys_of(batch.column(self.key).as_ref())?;
//! let before = counts.get_many_i64(&keys)?;
//! // ... compute ...
//! counts.set_many_i64(&updates)?;
//! ```
//!
//! Every failure (a limit crossed: names over 256 bytes, keys and fields over
//! 64 KiB, values over 16 MiB) comes back as an [`Error`]: return it from
//! `process` and the operator's failure policy decides what follows.

use std::ops::Range;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type};
use arrow_array::{Array, ArrowPrimitiveType};
use arrow_schema::{DataType, Field};

use crate::Error;
use crate::bindings::flumen::dataflow::state as wit;

/// Most keys or entries sent in one `*-many` host call; larger requests are
/// split. Keeps each call's argument and result lists (copied by the
/// canonical ABI) bounded, and well under the host's own per-call cap.
const MANY_CHUNK: usize = 1 << 16;

/// Tag bytes of the key encoding; see [`key_of`].
const TAG_NULL: u8 = 0x00;
const TAG_BOOL: u8 = 0x01;
const TAG_INT: u8 = 0x02;
const TAG_UINT_ABOVE_I64: u8 = 0x03;
const TAG_UTF8: u8 = 0x04;
const TAG_BINARY: u8 = 0x05;

/// The key bytes of row `row` of `array`.
///
/// The encoding is one tag byte followed by the value:
///
/// | value | bytes |
/// |---|---|
/// | null (any type) | `00` |
/// | boolean | `01 00` (false) or `01 01` (true) |
/// | int8 … int64, uint8 … uint64 up to `i64::MAX` | `02` + the value as an `i64`, big-endian, sign bit flipped (8 bytes) |
/// | uint64 above `i64::MAX` | `03` + the value, big-endian (8 bytes) |
/// | utf8, large-utf8, utf8-view | `04` + the UTF-8 bytes |
/// | binary, large-binary, binary-view | `05` + the bytes |
///
/// So a key is never empty (the empty key is the operator-wide state), null
/// never collides with a value, an integer has the same key whatever its
/// column's width or signedness (`5_i32` and `5_u64` agree), a string and
/// the same bytes as binary do not, and within one kind the byte order of
/// keys is the order of values. The encoding is stable: state written by one
/// version of an operator is found by the next.
///
/// Fails on a row out of bounds or an unsupported type (check the column
/// with [`check_key_field`] at `open`).
pub fn key_of(array: &dyn Array, row: usize) -> Result<Vec<u8>, Error> {
    if row >= array.len() {
        return Err(Error::input(format!("key row {row} is out of bounds for a column of {} rows", array.len())));
    }
    let mut keys = encode(array, row..row + 1)?;
    keys.pop().ok_or_else(|| Error::internal("encoding one key gave none"))
}

/// The key bytes of every row of `array`, in row order; see [`key_of`] for
/// the encoding.
pub fn keys_of(array: &dyn Array) -> Result<Vec<Vec<u8>>, Error> {
    encode(array, 0..array.len())
}

/// A key's value, decoded from the bytes [`key_of`] made: what a window or a
/// timer keyed by those bytes hands back must become a column value again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyValue {
    Null,
    Bool(bool),
    /// Every integer up to `i64::MAX`, whatever its column's type.
    Int(i64),
    /// A uint64 above `i64::MAX`.
    UInt(u64),
    Utf8(String),
    Binary(Vec<u8>),
}

/// Decodes key bytes made by [`key_of`]/[`keys_of`]; anything else (the empty
/// key, an unknown tag, a wrong length, invalid UTF-8) is an error, never a panic.
pub fn decode_key(key: &[u8]) -> Result<KeyValue, Error> {
    let malformed = || Error::internal(format!("malformed state key of {} bytes", key.len()));
    let (&tag, rest) = key.split_first().ok_or_else(malformed)?;
    let eight = || -> Result<[u8; 8], Error> { rest.try_into().map_err(|_| malformed()) };
    Ok(match tag {
        TAG_NULL if rest.is_empty() => KeyValue::Null,
        TAG_BOOL => match rest {
            [0] => KeyValue::Bool(false),
            [1] => KeyValue::Bool(true),
            _ => return Err(malformed()),
        },
        TAG_INT => KeyValue::Int((u64::from_be_bytes(eight()?) ^ (1 << 63)) as i64),
        TAG_UINT_ABOVE_I64 => KeyValue::UInt(u64::from_be_bytes(eight()?)),
        TAG_UTF8 => KeyValue::Utf8(String::from_utf8(rest.to_vec()).map_err(|_| malformed())?),
        TAG_BINARY => KeyValue::Binary(rest.to_vec()),
        _ => return Err(malformed()),
    })
}

/// Whether a column of `field`'s type can be turned into keys, as a config
/// error naming the column if not: call it at `open`.
pub fn check_key_field(field: &Field) -> Result<(), Error> {
    if is_key_type(field.data_type()) {
        Ok(())
    } else {
        Err(Error::config(format!(
            "column `{}` has type {}, which cannot be a state key; use an integer, boolean, string or binary column",
            field.name(),
            field.data_type()
        )))
    }
}

/// Whether [`keys_of`] accepts columns of `data_type`.
pub fn is_key_type(data_type: &DataType) -> bool {
    use DataType::*;
    matches!(
        data_type,
        Boolean
            | Int8
            | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Utf8
            | LargeUtf8
            | Utf8View
            | Binary
            | LargeBinary
            | BinaryView
    )
}

/// A value per key: `get`, `set`, `delete`, and the same for many keys at once.
///
/// The typed helpers (`get_i64`, `set_many_f64`, …) store numbers as 8 bytes,
/// little-endian; reading a value of another length is an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueState {
    name: String,
}

impl ValueState {
    /// The value state called `name` (at most 256 bytes), private to this operator.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value under `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        wit::value_get(&self.name, key).map_err(|e| wrap(&self.name, e))
    }

    /// Sets the value under `key`.
    pub fn set(&self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        wit::value_set(&self.name, key, value).map_err(|e| wrap(&self.name, e))
    }

    /// Removes the value under `key`; removing a missing key is not an error.
    pub fn delete(&self, key: &[u8]) -> Result<(), Error> {
        wit::value_delete(&self.name, key).map_err(|e| wrap(&self.name, e))
    }

    /// The values under `keys`, in the same order: call it once per batch.
    pub fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        let mut values = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(MANY_CHUNK) {
            let borrowed: Vec<&[u8]> = chunk.iter().map(AsRef::as_ref).collect();
            let got = wit::value_get_many(&self.name, &borrowed).map_err(|e| wrap(&self.name, e))?;
            values.extend(same_len(&self.name, chunk.len(), got)?);
        }
        Ok(values)
    }

    /// Removes the values under `keys`.
    pub fn delete_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<(), Error> {
        for chunk in keys.chunks(MANY_CHUNK) {
            let borrowed: Vec<&[u8]> = chunk.iter().map(AsRef::as_ref).collect();
            wit::value_delete_many(&self.name, &borrowed).map_err(|e| wrap(&self.name, e))?;
        }
        Ok(())
    }

    /// Sets every `(key, value)` of `entries`; a key given twice keeps its last value.
    pub fn set_many<K: AsRef<[u8]>, V: AsRef<[u8]>>(&self, entries: &[(K, V)]) -> Result<(), Error> {
        for chunk in entries.chunks(MANY_CHUNK) {
            let borrowed: Vec<(&[u8], &[u8])> = chunk.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect();
            wit::value_set_many(&self.name, &borrowed).map_err(|e| wrap(&self.name, e))?;
        }
        Ok(())
    }

    pub fn get_i64(&self, key: &[u8]) -> Result<Option<i64>, Error> {
        self.get_number(key)
    }
    pub fn set_i64(&self, key: &[u8], value: i64) -> Result<(), Error> {
        self.set(key, &value.to_le_bytes())
    }
    pub fn get_many_i64<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<i64>>, Error> {
        self.get_many_numbers(keys)
    }
    pub fn set_many_i64<K: AsRef<[u8]>>(&self, entries: &[(K, i64)]) -> Result<(), Error> {
        self.set_many_numbers(entries)
    }

    /// Adds one to the int64 value of each key of `keys`, in order (a key
    /// may come back), and returns each one's value after its addition: a
    /// running count per key. One `get_many` of the distinct keys and one
    /// `set_many` of their final values, whatever the number of rows.
    pub fn increment_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<i64>, Error> {
        let mut slot_of_key: std::collections::HashMap<&[u8], usize> = std::collections::HashMap::new();
        let mut distinct: Vec<&[u8]> = Vec::new();
        let slots: Vec<usize> = keys
            .iter()
            .map(|key| {
                *slot_of_key.entry(key.as_ref()).or_insert_with(|| {
                    distinct.push(key.as_ref());
                    distinct.len() - 1
                })
            })
            .collect();
        let mut running: Vec<i64> = self.get_many_i64(&distinct)?.into_iter().map(|c| c.unwrap_or(0)).collect();
        let counts = slots
            .into_iter()
            .map(|slot| {
                running[slot] += 1;
                running[slot]
            })
            .collect();
        let updates: Vec<(&[u8], i64)> = distinct.into_iter().zip(running).collect();
        self.set_many_i64(&updates)?;
        Ok(counts)
    }

    pub fn get_u64(&self, key: &[u8]) -> Result<Option<u64>, Error> {
        self.get_number(key)
    }
    pub fn set_u64(&self, key: &[u8], value: u64) -> Result<(), Error> {
        self.set(key, &value.to_le_bytes())
    }
    pub fn get_many_u64<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<u64>>, Error> {
        self.get_many_numbers(keys)
    }
    pub fn set_many_u64<K: AsRef<[u8]>>(&self, entries: &[(K, u64)]) -> Result<(), Error> {
        self.set_many_numbers(entries)
    }

    pub fn get_f64(&self, key: &[u8]) -> Result<Option<f64>, Error> {
        self.get_number(key)
    }
    pub fn set_f64(&self, key: &[u8], value: f64) -> Result<(), Error> {
        self.set(key, &value.to_le_bytes())
    }
    pub fn get_many_f64<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<f64>>, Error> {
        self.get_many_numbers(keys)
    }
    pub fn set_many_f64<K: AsRef<[u8]>>(&self, entries: &[(K, f64)]) -> Result<(), Error> {
        self.set_many_numbers(entries)
    }

    fn get_number<N: Number>(&self, key: &[u8]) -> Result<Option<N>, Error> {
        self.get(key)?.map(|bytes| N::decode(&self.name, &bytes)).transpose()
    }

    fn get_many_numbers<N: Number, K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<N>>, Error> {
        self.get_many(keys)?.into_iter().map(|v| v.map(|bytes| N::decode(&self.name, &bytes)).transpose()).collect()
    }

    fn set_many_numbers<N: Number, K: AsRef<[u8]>>(&self, entries: &[(K, N)]) -> Result<(), Error> {
        let encoded: Vec<(&[u8], [u8; 8])> = entries.iter().map(|(k, v)| (k.as_ref(), v.encode())).collect();
        self.set_many(&encoded)
    }
}

/// A list of items per key, oldest first: a buffer of events, say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListState {
    name: String,
}

impl ListState {
    /// The list state called `name` (at most 256 bytes), private to this operator.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The items under `key`, oldest first; empty if there are none.
    pub fn get(&self, key: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
        wit::list_get(&self.name, key).map_err(|e| wrap(&self.name, e))
    }

    /// Appends `item` to the list under `key`.
    pub fn append(&self, key: &[u8], item: &[u8]) -> Result<(), Error> {
        wit::list_append(&self.name, key, item).map_err(|e| wrap(&self.name, e))
    }

    /// Empties the list under `key`.
    pub fn clear(&self, key: &[u8]) -> Result<(), Error> {
        wit::list_clear(&self.name, key).map_err(|e| wrap(&self.name, e))
    }

    /// The items under each of `keys`, in the same order: one call per batch.
    pub fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Vec<Vec<u8>>>, Error> {
        let mut lists = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(MANY_CHUNK) {
            let borrowed: Vec<&[u8]> = chunk.iter().map(AsRef::as_ref).collect();
            let got = wit::list_get_many(&self.name, &borrowed).map_err(|e| wrap(&self.name, e))?;
            lists.extend(same_len(&self.name, chunk.len(), got)?);
        }
        Ok(lists)
    }

    /// Appends each `(key, item)`, in order.
    pub fn append_many<K: AsRef<[u8]>, V: AsRef<[u8]>>(&self, items: &[(K, V)]) -> Result<(), Error> {
        for chunk in items.chunks(MANY_CHUNK) {
            let borrowed: Vec<(&[u8], &[u8])> = chunk.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect();
            wit::list_append_many(&self.name, &borrowed).map_err(|e| wrap(&self.name, e))?;
        }
        Ok(())
    }

    /// Empties the lists under `keys`.
    pub fn clear_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<(), Error> {
        for chunk in keys.chunks(MANY_CHUNK) {
            let borrowed: Vec<&[u8]> = chunk.iter().map(AsRef::as_ref).collect();
            wit::list_clear_many(&self.name, &borrowed).map_err(|e| wrap(&self.name, e))?;
        }
        Ok(())
    }
}

/// Checks that the host answered a batch call with one result per request.
fn same_len<T>(name: &str, asked: usize, got: Vec<T>) -> Result<Vec<T>, Error> {
    if got.len() != asked {
        return Err(Error::internal(format!(
            "state `{name}`: asked for {asked} results, the host returned {}",
            got.len()
        )));
    }
    Ok(got)
}

/// One `(field, value)` of a [`MapState`] map.
pub type MapEntry = (Vec<u8>, Vec<u8>);

/// A map from fields to values per key, ordered by field bytes: per-user
/// counters by category, say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapState {
    name: String,
}

impl MapState {
    /// The map state called `name` (at most 256 bytes), private to this operator.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value of `field` in the map under `key`, if any.
    pub fn get(&self, key: &[u8], field: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        wit::map_get(&self.name, key, field).map_err(|e| wrap(&self.name, e))
    }

    /// Sets `field` to `value` in the map under `key`.
    pub fn put(&self, key: &[u8], field: &[u8], value: &[u8]) -> Result<(), Error> {
        wit::map_put(&self.name, key, field, value).map_err(|e| wrap(&self.name, e))
    }

    /// Removes `field` from the map under `key`; removing a missing field is not an error.
    pub fn remove(&self, key: &[u8], field: &[u8]) -> Result<(), Error> {
        wit::map_remove(&self.name, key, field).map_err(|e| wrap(&self.name, e))
    }

    /// Every `(field, value)` of the map under `key`, ordered by field bytes.
    pub fn entries(&self, key: &[u8]) -> Result<Vec<MapEntry>, Error> {
        wit::map_entries(&self.name, key).map_err(|e| wrap(&self.name, e))
    }

    /// The value of each `(key, field)`, in the same order: one call per batch.
    pub fn get_many<K: AsRef<[u8]>, F: AsRef<[u8]>>(&self, fields: &[(K, F)]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        let mut values = Vec::with_capacity(fields.len());
        for chunk in fields.chunks(MANY_CHUNK) {
            let borrowed: Vec<(&[u8], &[u8])> = chunk.iter().map(|(k, f)| (k.as_ref(), f.as_ref())).collect();
            let got = wit::map_get_many(&self.name, &borrowed).map_err(|e| wrap(&self.name, e))?;
            values.extend(same_len(&self.name, chunk.len(), got)?);
        }
        Ok(values)
    }

    /// Puts each `(key, field, value)`, in order.
    pub fn put_many<K: AsRef<[u8]>, F: AsRef<[u8]>, V: AsRef<[u8]>>(&self, entries: &[(K, F, V)]) -> Result<(), Error> {
        for chunk in entries.chunks(MANY_CHUNK) {
            let borrowed: Vec<(&[u8], &[u8], &[u8])> =
                chunk.iter().map(|(k, f, v)| (k.as_ref(), f.as_ref(), v.as_ref())).collect();
            wit::map_put_many(&self.name, &borrowed).map_err(|e| wrap(&self.name, e))?;
        }
        Ok(())
    }

    /// Removes each `(key, field)`.
    pub fn remove_many<K: AsRef<[u8]>, F: AsRef<[u8]>>(&self, fields: &[(K, F)]) -> Result<(), Error> {
        for chunk in fields.chunks(MANY_CHUNK) {
            let borrowed: Vec<(&[u8], &[u8])> = chunk.iter().map(|(k, f)| (k.as_ref(), f.as_ref())).collect();
            wit::map_remove_many(&self.name, &borrowed).map_err(|e| wrap(&self.name, e))?;
        }
        Ok(())
    }

    /// The entries of the map under each of `keys`, in the same order.
    pub fn entries_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Vec<MapEntry>>, Error> {
        let mut maps = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(MANY_CHUNK) {
            let borrowed: Vec<&[u8]> = chunk.iter().map(AsRef::as_ref).collect();
            let got = wit::map_entries_many(&self.name, &borrowed).map_err(|e| wrap(&self.name, e))?;
            maps.extend(same_len(&self.name, chunk.len(), got)?);
        }
        Ok(maps)
    }
}

/// The host's error, naming the state it concerns.
fn wrap(name: &str, e: wit::Error) -> Error {
    let mut e = Error::from(e);
    e.message = format!("state `{name}`: {}", e.message);
    e
}

/// A number stored as 8 little-endian bytes.
trait Number: Sized + Copy {
    const TYPE: &'static str;
    fn encode(self) -> [u8; 8];
    fn from_le(bytes: [u8; 8]) -> Self;

    fn decode(state: &str, bytes: &[u8]) -> Result<Self, Error> {
        let bytes: [u8; 8] = bytes.try_into().map_err(|_| {
            Error::internal(format!(
                "state `{state}`: a stored value has {} bytes, not the 8 of a little-endian {}",
                bytes.len(),
                Self::TYPE
            ))
        })?;
        Ok(Self::from_le(bytes))
    }
}

macro_rules! number {
    ($($t:ty),*) => {$(
        impl Number for $t {
            const TYPE: &'static str = stringify!($t);
            fn encode(self) -> [u8; 8] {
                self.to_le_bytes()
            }
            fn from_le(bytes: [u8; 8]) -> Self {
                <$t>::from_le_bytes(bytes)
            }
        }
    )*};
}
number!(i64, u64, f64);

/// Encodes rows `rows` of `array`: the column is downcast once, not per row.
fn encode(array: &dyn Array, rows: Range<usize>) -> Result<Vec<Vec<u8>>, Error> {
    let unsupported = || {
        Error::input(format!(
            "a column of type {} cannot be a state key; use an integer, boolean, string or binary column",
            array.data_type()
        ))
    };
    let mismatch = || Error::internal(format!("column of type {} is not the array it says", array.data_type()));
    match array.data_type() {
        DataType::Boolean => {
            let a = array.as_boolean_opt().ok_or_else(mismatch)?;
            Ok(each(array, rows, |i| vec![TAG_BOOL, u8::from(a.value(i))]))
        }
        DataType::Int8 => ints::<Int8Type>(array, rows, mismatch),
        DataType::Int16 => ints::<Int16Type>(array, rows, mismatch),
        DataType::Int32 => ints::<Int32Type>(array, rows, mismatch),
        DataType::Int64 => ints::<Int64Type>(array, rows, mismatch),
        DataType::UInt8 => ints::<UInt8Type>(array, rows, mismatch),
        DataType::UInt16 => ints::<UInt16Type>(array, rows, mismatch),
        DataType::UInt32 => ints::<UInt32Type>(array, rows, mismatch),
        DataType::UInt64 => {
            let a = array.as_primitive_opt::<UInt64Type>().ok_or_else(mismatch)?;
            Ok(each(array, rows, |i| match i64::try_from(a.value(i)) {
                Ok(v) => int_key(v),
                Err(_) => tagged(TAG_UINT_ABOVE_I64, &a.value(i).to_be_bytes()),
            }))
        }
        DataType::Utf8 => {
            let a = array.as_string_opt::<i32>().ok_or_else(mismatch)?;
            Ok(each(array, rows, |i| tagged(TAG_UTF8, a.value(i).as_bytes())))
        }
        DataType::LargeUtf8 => {
            let a = array.as_string_opt::<i64>().ok_or_else(mismatch)?;
            Ok(each(array, rows, |i| tagged(TAG_UTF8, a.value(i).as_bytes())))
        }
        DataType::Utf8View => {
            let a = array.as_string_view_opt().ok_or_else(mismatch)?;
            Ok(each(array, rows, |i| tagged(TAG_UTF8, a.value(i).as_bytes())))
        }
        DataType::Binary => {
            let a = array.as_binary_opt::<i32>().ok_or_else(mismatch)?;
            Ok(each(array, rows, |i| tagged(TAG_BINARY, a.value(i))))
        }
        DataType::LargeBinary => {
            let a = array.as_binary_opt::<i64>().ok_or_else(mismatch)?;
            Ok(each(array, rows, |i| tagged(TAG_BINARY, a.value(i))))
        }
        DataType::BinaryView => {
            let a = array.as_binary_view_opt().ok_or_else(mismatch)?;
            Ok(each(array, rows, |i| tagged(TAG_BINARY, a.value(i))))
        }
        _ => Err(unsupported()),
    }
}

/// Keys of a signed or narrow unsigned integer column: every value fits an `i64`.
fn ints<T>(array: &dyn Array, rows: Range<usize>, mismatch: impl Fn() -> Error) -> Result<Vec<Vec<u8>>, Error>
where
    T: ArrowPrimitiveType,
    T::Native: Into<i64>,
{
    let a = array.as_primitive_opt::<T>().ok_or_else(mismatch)?;
    Ok(each(array, rows, |i| int_key(a.value(i).into())))
}

/// The key of every row in `rows`: `00` for a null, `value(row)` otherwise.
fn each(array: &dyn Array, rows: Range<usize>, value: impl Fn(usize) -> Vec<u8>) -> Vec<Vec<u8>> {
    rows.map(|i| if array.is_null(i) { vec![TAG_NULL] } else { value(i) }).collect()
}

/// `02` + the value big-endian with its sign bit flipped, so byte order is numeric order.
fn int_key(v: i64) -> Vec<u8> {
    tagged(TAG_INT, &((v as u64) ^ (1 << 63)).to_be_bytes())
}

fn tagged(tag: u8, bytes: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + bytes.len());
    key.push(tag);
    key.extend_from_slice(bytes);
    key
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{
        ArrayRef, BinaryArray, BooleanArray, Float64Array, Int8Array, Int32Array, Int64Array, LargeStringArray,
        StringArray, StringViewArray, UInt64Array,
    };

    use super::*;

    /// The key of one entry of `tests/conformance/state-keys.json`, the
    /// vectors every guest SDK's tests check (Python, JavaScript, C too).
    fn shared_vector_key(entry: &serde_json::Value) -> Vec<u8> {
        let value = &entry["value"];
        let text = value.as_str().unwrap_or("");
        let array: ArrayRef = match entry["type"].as_str().unwrap() {
            "null" => Arc::new(Int64Array::from(vec![None::<i64>])),
            "bool" => Arc::new(BooleanArray::from(vec![value.as_bool().unwrap()])),
            "int" => Arc::new(Int64Array::from(vec![text.parse::<i64>().unwrap()])),
            "uint" => Arc::new(UInt64Array::from(vec![text.parse::<u64>().unwrap()])),
            "string" => Arc::new(StringArray::from(vec![text])),
            "bytes" => {
                let bytes: Vec<u8> =
                    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect();
                Arc::new(BinaryArray::from(vec![bytes.as_slice()]))
            }
            other => panic!("unknown vector type {other}"),
        };
        key_of(array.as_ref(), 0).unwrap()
    }

    #[test]
    fn keys_match_the_vectors_every_sdk_shares() {
        let text = include_str!("../../../tests/conformance/state-keys.json");
        let doc: serde_json::Value = serde_json::from_str(text).unwrap();
        let entries = doc["keys"].as_array().unwrap();
        assert!(entries.len() >= 10);
        for entry in entries {
            let key = shared_vector_key(entry);
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(hex, entry["key"].as_str().unwrap(), "{entry}");
        }
    }

    #[test]
    fn null_and_values_get_distinct_non_empty_keys() {
        let a = Int64Array::from(vec![Some(0), None, Some(-1)]);
        let keys = keys_of(&a).unwrap();
        assert_eq!(keys[1], vec![TAG_NULL]);
        assert!(keys.iter().all(|k| !k.is_empty()));
        assert_ne!(keys[0], keys[1]);
        assert_ne!(keys[0], keys[2]);
        let s = StringArray::from(vec![Some(""), None]);
        let keys = keys_of(&s).unwrap();
        assert_eq!(keys[0], vec![TAG_UTF8]);
        assert_ne!(keys[0], keys[1]);
    }

    #[test]
    fn an_integer_has_one_key_whatever_its_column_type() {
        let expected = key_of(&Int64Array::from(vec![5]), 0).unwrap();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int8Array::from(vec![5])),
            Arc::new(Int32Array::from(vec![5])),
            Arc::new(UInt64Array::from(vec![5])),
        ];
        for c in columns {
            assert_eq!(key_of(c.as_ref(), 0).unwrap(), expected, "{}", c.data_type());
        }
    }

    #[test]
    fn integer_keys_sort_like_their_values() {
        let a = Int64Array::from(vec![i64::MIN, -2, -1, 0, 1, i64::MAX]);
        let keys = keys_of(&a).unwrap();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        let big = UInt64Array::from(vec![i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX]);
        let keys = keys_of(&big).unwrap();
        assert_eq!(keys[0], key_of(&a, 5).unwrap());
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
    }

    #[test]
    fn strings_agree_across_layouts_but_not_with_binary() {
        let utf8 = key_of(&StringArray::from(vec!["ab"]), 0).unwrap();
        assert_eq!(key_of(&LargeStringArray::from(vec!["ab"]), 0).unwrap(), utf8);
        assert_eq!(key_of(&StringViewArray::from(vec!["ab"]), 0).unwrap(), utf8);
        let binary = key_of(&BinaryArray::from(vec![b"ab".as_ref()]), 0).unwrap();
        assert_ne!(binary, utf8);
        assert_eq!(binary, vec![TAG_BINARY, b'a', b'b']);
    }

    #[test]
    fn booleans_and_sliced_columns() {
        let b = BooleanArray::from(vec![Some(true), Some(false), None]);
        assert_eq!(keys_of(&b).unwrap(), vec![vec![TAG_BOOL, 1], vec![TAG_BOOL, 0], vec![TAG_NULL]]);
        let a = Int64Array::from(vec![Some(1), None, Some(3)]).slice(1, 2);
        assert_eq!(keys_of(&a).unwrap(), vec![vec![TAG_NULL], int_key(3)]);
    }

    #[test]
    fn unsupported_types_and_rows_out_of_bounds_are_errors() {
        let f = Float64Array::from(vec![1.0]);
        assert_eq!(keys_of(&f).unwrap_err().kind, crate::ErrorKind::InvalidInput);
        assert!(check_key_field(&Field::new("x", DataType::Float64, false)).is_err());
        assert!(check_key_field(&Field::new("x", DataType::Utf8, true)).is_ok());
        assert!(key_of(&Int64Array::from(vec![1]), 1).is_err());
    }

    #[test]
    fn keys_decode_to_their_values() {
        let ints = Int64Array::from(vec![Some(i64::MIN), Some(-1), Some(0), Some(i64::MAX), None]);
        let decoded: Vec<KeyValue> = keys_of(&ints).unwrap().iter().map(|k| decode_key(k).unwrap()).collect();
        assert_eq!(
            decoded,
            [KeyValue::Int(i64::MIN), KeyValue::Int(-1), KeyValue::Int(0), KeyValue::Int(i64::MAX), KeyValue::Null]
        );
        assert_eq!(
            decode_key(&key_of(&UInt64Array::from(vec![u64::MAX]), 0).unwrap()).unwrap(),
            KeyValue::UInt(u64::MAX)
        );
        assert_eq!(
            decode_key(&key_of(&StringArray::from(vec!["ab"]), 0).unwrap()).unwrap(),
            KeyValue::Utf8("ab".into())
        );
        assert_eq!(decode_key(&[TAG_BINARY, 7]).unwrap(), KeyValue::Binary(vec![7]));
        assert_eq!(decode_key(&[TAG_BOOL, 1]).unwrap(), KeyValue::Bool(true));
        for bad in [&[][..], &[TAG_INT, 1, 2], &[TAG_BOOL, 2], &[TAG_UTF8, 0xff], &[0x7f], &[TAG_NULL, 0]] {
            assert!(decode_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn numbers_are_eight_little_endian_bytes() {
        assert_eq!(i64::decode("s", &(-3_i64).to_le_bytes()).unwrap(), -3);
        assert_eq!(f64::decode("s", &1.5_f64.encode()).unwrap(), 1.5);
        assert!(u64::decode("s", &[1, 2, 3]).unwrap_err().message.contains("3 bytes"));
    }
}
