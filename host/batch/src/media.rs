//! Flumen's multimodal Arrow extension types: blob references, encoded media,
//! tensors, audio and embeddings, shared by the host and the guest SDK.
//!
//! Arrow's canonical tensor types are used where they fit
//! (`arrow.fixed_shape_tensor`, `arrow.variable_shape_tensor`): a decoded
//! image is a variable-shape tensor with dimensions `H`, `W`, `C`; a resized,
//! normalized one a fixed-shape tensor. Flumen defines only what Arrow lacks:
//!
//! | name               | storage                                                        |
//! |--------------------|----------------------------------------------------------------|
//! | `flumen.blob`      | struct { digest: fixed_size_binary(32), size: uint64, media_type: utf8, token: fixed_size_binary(16) } |
//! | `flumen.image`     | the `flumen.blob` struct; the bytes are an encoded image (PNG, JPEG, WebP, …) |
//! | `flumen.video`     | the `flumen.blob` struct; the bytes are an encoded video or animation |
//! | `flumen.audio`     | struct { sample_rate: uint32, channels: uint16, samples: list<float32> } (interleaved) |
//! | `flumen.embedding` | fixed_size_list<float32>[dim]; metadata `{"dim": d, "model": "…"}` |
//!
//! The extension name and its metadata travel in the field metadata under
//! Arrow's standard keys, so they cross the component boundary and survive
//! Parquet and IPC files untouched.

use std::sync::Arc;

use arrow_array::builder::{FixedSizeBinaryBuilder, StringBuilder, UInt64Builder};
use arrow_array::{Array, ArrayRef, FixedSizeBinaryArray, StringArray, StructArray, UInt64Array};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, Field, Fields};
use serde::{Deserialize, Serialize};

use crate::BatchError;

/// Field metadata key holding an extension type's name (Arrow's convention).
pub const EXTENSION_NAME_KEY: &str = "ARROW:extension:name";
/// Field metadata key holding an extension type's serialized metadata.
pub const EXTENSION_METADATA_KEY: &str = "ARROW:extension:metadata";

pub const BLOB: &str = "flumen.blob";
pub const IMAGE: &str = "flumen.image";
pub const VIDEO: &str = "flumen.video";
pub const AUDIO: &str = "flumen.audio";
pub const EMBEDDING: &str = "flumen.embedding";
pub const FIXED_SHAPE_TENSOR: &str = "arrow.fixed_shape_tensor";
pub const VARIABLE_SHAPE_TENSOR: &str = "arrow.variable_shape_tensor";

/// Extension types whose storage is a blob reference.
pub const BLOB_REF_TYPES: &[&str] = &[BLOB, IMAGE, VIDEO];

// The blob vocabulary is the `blobs` capability's (flumen-types); this
// module gives it its Arrow form.
pub use flumen_types::blob::{BlobRef, DIGEST_BYTES, OCTET_STREAM, TOKEN_BYTES};

/// The storage type of every blob-reference extension type.
pub fn blob_storage_type() -> DataType {
    DataType::Struct(blob_fields())
}

fn blob_fields() -> Fields {
    Fields::from(vec![
        Field::new("digest", DataType::FixedSizeBinary(DIGEST_BYTES as i32), false),
        Field::new("size", DataType::UInt64, false),
        Field::new("media_type", DataType::Utf8, false),
        Field::new("token", DataType::FixedSizeBinary(TOKEN_BYTES as i32), false),
    ])
}

/// Tags `field` as the extension type `name` with `metadata` (JSON text; empty for none).
pub fn with_extension(field: Field, name: &str, metadata: &str) -> Field {
    let mut md = field.metadata().clone();
    md.insert(EXTENSION_NAME_KEY, name);
    md.insert(EXTENSION_METADATA_KEY, metadata);
    field.with_metadata(md)
}

/// The extension type a field is tagged with, if any.
pub fn extension_name(field: &Field) -> Option<&str> {
    field.metadata().get(EXTENSION_NAME_KEY).map(String::as_str)
}

/// The extension metadata of a field (empty when absent).
pub fn extension_metadata(field: &Field) -> &str {
    field.metadata().get(EXTENSION_METADATA_KEY).map_or("", String::as_str)
}

/// A `flumen.blob` field.
pub fn blob_field(name: &str, nullable: bool) -> Field {
    with_extension(Field::new(name, blob_storage_type(), nullable), BLOB, "")
}

/// A `flumen.image` field: references to encoded images.
pub fn image_field(name: &str, nullable: bool) -> Field {
    with_extension(Field::new(name, blob_storage_type(), nullable), IMAGE, "")
}

/// A `flumen.video` field: references to encoded videos or animations.
pub fn video_field(name: &str, nullable: bool) -> Field {
    with_extension(Field::new(name, blob_storage_type(), nullable), VIDEO, "")
}

/// Whether `field` holds blob references (any of [`BLOB_REF_TYPES`] over the blob storage).
pub fn is_blob_ref(field: &Field) -> bool {
    extension_name(field).is_some_and(|n| BLOB_REF_TYPES.contains(&n)) && field.data_type() == &blob_storage_type()
}

/// Checks that a field tagged as a blob-reference type has the blob storage
/// type: a guest or a file cannot smuggle other data under the tag.
pub fn check_blob_field(field: &Field) -> Result<(), BatchError> {
    match extension_name(field) {
        Some(n) if BLOB_REF_TYPES.contains(&n) && field.data_type() != &blob_storage_type() => {
            Err(BatchError::InvalidColumn {
                field: field.name().clone(),
                message: format!("tagged `{n}` but its type is {}, not the blob reference struct", field.data_type()),
            })
        }
        _ => Ok(()),
    }
}

/// Read access to a column of blob references.
#[derive(Debug, Clone)]
pub struct BlobColumn {
    nulls: Option<NullBuffer>,
    digests: FixedSizeBinaryArray,
    sizes: UInt64Array,
    media_types: StringArray,
    tokens: FixedSizeBinaryArray,
}

impl BlobColumn {
    /// Views `array` (the storage of a blob-reference field) as references.
    pub fn new(array: &dyn Array) -> Result<Self, BatchError> {
        let bad = |m: &str| BatchError::MalformedBatch(format!("blob reference column: {m}"));
        let s = array.as_any().downcast_ref::<StructArray>().ok_or_else(|| bad("not a struct"))?;
        if s.data_type() != &blob_storage_type() {
            return Err(bad(&format!("type {} is not the blob reference struct", s.data_type())));
        }
        let col = |i: usize| s.column(i).clone();
        let digests = col(0).as_any().downcast_ref::<FixedSizeBinaryArray>().cloned().ok_or_else(|| bad("digest"))?;
        let sizes = col(1).as_any().downcast_ref::<UInt64Array>().cloned().ok_or_else(|| bad("size"))?;
        let media_types = col(2).as_any().downcast_ref::<StringArray>().cloned().ok_or_else(|| bad("media_type"))?;
        let tokens = col(3).as_any().downcast_ref::<FixedSizeBinaryArray>().cloned().ok_or_else(|| bad("token"))?;
        Ok(Self { nulls: s.nulls().cloned(), digests, sizes, media_types, tokens })
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The reference in row `i`; `None` for a null row (or a null child value).
    pub fn get(&self, i: usize) -> Option<BlobRef> {
        if i >= self.len() || self.nulls.as_ref().is_some_and(|n| n.is_null(i)) {
            return None;
        }
        if self.digests.is_null(i) || self.tokens.is_null(i) || self.sizes.is_null(i) || self.media_types.is_null(i) {
            return None;
        }
        Some(BlobRef {
            digest: self.digests.value(i).try_into().ok()?,
            size: self.sizes.value(i),
            media_type: self.media_types.value(i).to_string(),
            token: self.tokens.value(i).try_into().ok()?,
        })
    }

    /// The digest in row `i` without building a whole reference.
    pub fn digest(&self, i: usize) -> Option<&[u8]> {
        if i >= self.len() || self.nulls.as_ref().is_some_and(|n| n.is_null(i)) || self.digests.is_null(i) {
            return None;
        }
        Some(self.digests.value(i))
    }

    /// Every row, nulls as `None`.
    pub fn iter(&self) -> impl Iterator<Item = Option<BlobRef>> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// The digest values buffer's backing array (the host replaces it to pin blobs).
    pub fn digests(&self) -> &FixedSizeBinaryArray {
        &self.digests
    }
}

/// Builds a column of blob references.
#[derive(Debug)]
pub struct BlobColumnBuilder {
    digests: FixedSizeBinaryBuilder,
    sizes: UInt64Builder,
    media_types: StringBuilder,
    tokens: FixedSizeBinaryBuilder,
    valid: Vec<bool>,
}

impl Default for BlobColumnBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BlobColumnBuilder {
    pub fn new() -> Self {
        Self {
            digests: FixedSizeBinaryBuilder::new(DIGEST_BYTES as i32),
            sizes: UInt64Builder::new(),
            media_types: StringBuilder::new(),
            tokens: FixedSizeBinaryBuilder::new(TOKEN_BYTES as i32),
            valid: Vec::new(),
        }
    }

    pub fn append(&mut self, blob: Option<&BlobRef>) {
        // Children are non-nullable: a null row stores zeros under the struct's null bit.
        let zero = BlobRef { digest: [0; DIGEST_BYTES], size: 0, media_type: String::new(), token: [0; TOKEN_BYTES] };
        let b = blob.unwrap_or(&zero);
        // Widths match the builders', so these appends cannot fail.
        let _ = self.digests.append_value(b.digest);
        self.sizes.append_value(b.size);
        self.media_types.append_value(&b.media_type);
        let _ = self.tokens.append_value(b.token);
        self.valid.push(blob.is_some());
    }

    /// The column, as the storage array of a blob-reference field.
    pub fn finish(&mut self) -> StructArray {
        let nulls =
            if self.valid.iter().all(|v| *v) { None } else { Some(NullBuffer::from(std::mem::take(&mut self.valid))) };
        self.valid.clear();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.digests.finish()),
            Arc::new(self.sizes.finish()),
            Arc::new(self.media_types.finish()),
            Arc::new(self.tokens.finish()),
        ];
        StructArray::new(blob_fields(), columns, nulls)
    }
}

/// Metadata of `arrow.fixed_shape_tensor` (Arrow's canonical extension).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedShapeTensor {
    pub shape: Vec<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dim_names: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permutation: Option<Vec<usize>>,
}

impl FixedShapeTensor {
    /// Values per tensor.
    pub fn size(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A `arrow.fixed_shape_tensor` field of `value_type` values with `shape` (row-major).
pub fn fixed_shape_tensor_field(
    name: &str,
    value_type: DataType,
    shape: &[usize],
    dim_names: Option<&[&str]>,
    nullable: bool,
) -> Field {
    let meta = FixedShapeTensor {
        shape: shape.to_vec(),
        dim_names: dim_names.map(|d| d.iter().map(|s| s.to_string()).collect()),
        permutation: None,
    };
    let size = meta.size() as i32;
    let storage = DataType::FixedSizeList(Arc::new(Field::new("item", value_type, false)), size);
    let json = serde_json::to_string(&meta).unwrap_or_default();
    with_extension(Field::new(name, storage, nullable), FIXED_SHAPE_TENSOR, &json)
}

/// The tensor metadata of a `arrow.fixed_shape_tensor` field, checked against its storage.
pub fn fixed_shape_tensor_of(field: &Field) -> Result<FixedShapeTensor, BatchError> {
    let bad = |m: String| BatchError::InvalidColumn { field: field.name().clone(), message: m };
    if extension_name(field) != Some(FIXED_SHAPE_TENSOR) {
        return Err(bad(format!("is not a `{FIXED_SHAPE_TENSOR}`")));
    }
    let meta: FixedShapeTensor = serde_json::from_str(extension_metadata(field))
        .map_err(|e| bad(format!("bad `{FIXED_SHAPE_TENSOR}` metadata: {e}")))?;
    match field.data_type() {
        DataType::FixedSizeList(_, n) if *n as usize == meta.size() => Ok(meta),
        other => Err(bad(format!("storage {other} does not hold tensors of shape {:?}", meta.shape))),
    }
}

/// Metadata of `arrow.variable_shape_tensor` (Arrow's canonical extension).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariableShapeTensor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dim_names: Option<Vec<String>>,
    /// Sizes known to be equal in every row (`None` where they vary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uniform_shape: Option<Vec<Option<usize>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permutation: Option<Vec<usize>>,
}

/// Storage of a variable-shape tensor of `ndim` dimensions:
/// struct { data: list<value_type>, shape: fixed_size_list<int32>[ndim] }.
pub fn variable_shape_tensor_storage(value_type: DataType, ndim: usize) -> DataType {
    DataType::Struct(Fields::from(vec![
        Field::new("data", DataType::List(Arc::new(Field::new("item", value_type, false))), false),
        Field::new(
            "shape",
            DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Int32, false)), ndim as i32),
            false,
        ),
    ]))
}

/// A `arrow.variable_shape_tensor` field.
pub fn variable_shape_tensor_field(name: &str, value_type: DataType, meta: &VariableShapeTensor, ndim: usize) -> Field {
    let json = serde_json::to_string(meta).unwrap_or_default();
    with_extension(
        Field::new(name, variable_shape_tensor_storage(value_type, ndim), true),
        VARIABLE_SHAPE_TENSOR,
        &json,
    )
}

/// A decoded image column: a variable-shape tensor with dimensions `H`, `W`,
/// `C` (row-major, channels last) of `value_type` (`UInt8` for pixels as
/// decoded), with `channels` fixed when known.
pub fn decoded_image_field(name: &str, value_type: DataType, channels: Option<usize>) -> Field {
    let meta = VariableShapeTensor {
        dim_names: Some(vec!["H".into(), "W".into(), "C".into()]),
        uniform_shape: Some(vec![None, None, channels]),
        permutation: None,
    };
    variable_shape_tensor_field(name, value_type, &meta, 3)
}

/// The storage of `flumen.audio`: interleaved float samples in [-1, 1].
pub fn audio_storage_type() -> DataType {
    DataType::Struct(Fields::from(vec![
        Field::new("sample_rate", DataType::UInt32, false),
        Field::new("channels", DataType::UInt16, false),
        Field::new("samples", DataType::List(Arc::new(Field::new("item", DataType::Float32, false))), false),
    ]))
}

/// A `flumen.audio` field.
pub fn audio_field(name: &str, nullable: bool) -> Field {
    with_extension(Field::new(name, audio_storage_type(), nullable), AUDIO, "")
}

/// Metadata of `flumen.embedding`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Embedding {
    pub dim: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// A `flumen.embedding` field: `dim` float32 values per row.
pub fn embedding_field(name: &str, dim: usize, model: Option<&str>, nullable: bool) -> Field {
    let meta = Embedding { dim, model: model.map(str::to_string) };
    let storage = DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), dim as i32);
    let json = serde_json::to_string(&meta).unwrap_or_default();
    with_extension(Field::new(name, storage, nullable), EMBEDDING, &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(n: u8) -> BlobRef {
        BlobRef { digest: [n; 32], size: u64::from(n) * 10, media_type: format!("image/{n}"), token: [n ^ 0xff; 16] }
    }

    #[test]
    fn blob_column_round_trips_with_nulls() {
        let mut b = BlobColumnBuilder::new();
        b.append(Some(&blob(1)));
        b.append(None);
        b.append(Some(&blob(3)));
        let array = b.finish();
        let col = BlobColumn::new(&array).unwrap();
        assert_eq!(col.iter().collect::<Vec<_>>(), vec![Some(blob(1)), None, Some(blob(3))]);
        assert_eq!(col.digest(2), Some(&[3u8; 32][..]));
        assert!(is_blob_ref(&blob_field("b", true)));
        assert!(is_blob_ref(&image_field("b", true)));
        assert!(!is_blob_ref(&Field::new("b", blob_storage_type(), true)));
    }

    #[test]
    fn a_tag_over_the_wrong_storage_is_refused() {
        let f = with_extension(Field::new("x", DataType::Binary, true), BLOB, "");
        let err = check_blob_field(&f).unwrap_err().to_string();
        assert!(err.contains("`x`") && err.contains("flumen.blob"), "{err}");
        assert!(BlobColumn::new(&arrow_array::BinaryArray::from(vec![&b"a"[..]])).is_err());
    }

    #[test]
    fn tensor_metadata_round_trips_and_is_checked() {
        let f = fixed_shape_tensor_field("t", DataType::Float32, &[3, 224, 224], Some(&["C", "H", "W"]), false);
        let meta = fixed_shape_tensor_of(&f).unwrap();
        assert_eq!(meta.shape, vec![3, 224, 224]);
        assert_eq!(meta.size(), 3 * 224 * 224);
        assert!(extension_metadata(&f).contains("\"shape\":[3,224,224]"));
        let lying = with_extension(
            Field::new("t", DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), 5), false),
            FIXED_SHAPE_TENSOR,
            extension_metadata(&f),
        );
        assert!(fixed_shape_tensor_of(&lying).is_err());
        let img = decoded_image_field("img", DataType::UInt8, Some(3));
        assert_eq!(extension_name(&img), Some(VARIABLE_SHAPE_TENSOR));
        assert!(extension_metadata(&img).contains("\"dim_names\":[\"H\",\"W\",\"C\"]"));
        assert_eq!(extension_name(&embedding_field("e", 384, Some("minilm"), false)), Some(EMBEDDING));
        assert_eq!(extension_name(&audio_field("a", false)), Some(AUDIO));
    }
}
