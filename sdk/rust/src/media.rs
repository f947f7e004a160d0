//! Typed access to Flumen's multimodal columns: encoded images and videos
//! (blob references), decoded images and tensors (Arrow's canonical tensor
//! extension types), audio and embeddings.
//!
//! The type definitions are shared with the host (`flumen_batch::media`), so
//! both ends agree on names, storage and metadata by construction. This module
//! adds what an operator needs to write and read those columns without
//! touching their Arrow storage:
//!
//! | column                          | build with                   | read with                   |
//! |---------------------------------|------------------------------|-----------------------------|
//! | `arrow.fixed_shape_tensor`      | [`FixedShapeTensorBuilder`]  | [`FixedShapeTensorColumn`]  |
//! | `arrow.variable_shape_tensor`   | [`VariableShapeTensorBuilder`] | [`VariableShapeTensorColumn`] |
//! | decoded image (`H`, `W`, `C`)   | [`DecodedImageBuilder`]      | [`DecodedImageColumn`]      |
//! | `flumen.audio`                  | [`AudioBuilder`]             | [`AudioColumn`]             |
//! | `flumen.embedding`              | [`EmbeddingBuilder`]         | [`EmbeddingColumn`]         |
//! | `flumen.blob` / `image` / `video` | [`BlobColumnBuilder`]      | [`BlobColumn`]              |
//!
//! ```text
//! use flumen_sdk::media::{DecodedImageBuilder, FixedShapeTensorBuilder};
//! use flumen_sdk::arrow_array::types::Float32Type;
//!
//! // Open: declare the output field.
//! let mut tensors = FixedShapeTensorBuilder::<Float32Type>::new(&[3, 224, 224])?;
//! let field = tensors.field("tensor", Some(&["C", "H", "W"]), true);
//! // Process: one tensor per row, written in place, or a null.
//! normalize_into(&pixels, tensors.append_zeroed());
//! tensors.append_null();
//! let column = tensors.finish();
//! ```
//!
//! Builders check what they are given (a tensor of the wrong length, a shape
//! that does not match its values) and return an [`Error`] instead of
//! building a column the host would refuse. Readers check the storage they
//! are handed, so a column from a file or another operator cannot make them
//! panic.

use std::marker::PhantomData;
use std::sync::Arc;

use arrow_array::types::{ArrowPrimitiveType, Float32Type, Int32Type, UInt8Type};
use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, ListArray, PrimitiveArray, StructArray, UInt16Array, UInt32Array,
};
use arrow_buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field};
pub use flumen_batch::media::*;

use crate::Error;

/// Builds an `arrow.fixed_shape_tensor` column: one tensor of a fixed shape
/// per row (row-major), or a null.
#[derive(Debug)]
pub struct FixedShapeTensorBuilder<T: ArrowPrimitiveType> {
    shape: Vec<usize>,
    size: usize,
    values: Vec<T::Native>,
    valid: Vec<bool>,
}

impl<T: ArrowPrimitiveType> FixedShapeTensorBuilder<T> {
    /// A builder of tensors of `shape`; refused if a tensor would hold no
    /// values or more than Arrow's fixed-size list can (`i32::MAX`).
    pub fn new(shape: &[usize]) -> Result<Self, Error> {
        let size = tensor_size(shape)?;
        if size == 0 {
            return Err(Error::config(format!("a fixed-shape tensor of shape {shape:?} holds no values")));
        }
        Ok(Self { shape: shape.to_vec(), size, values: Vec::new(), valid: Vec::new() })
    }

    /// Like [`new`](Self::new), with room for `rows` tensors.
    pub fn with_capacity(shape: &[usize], rows: usize) -> Result<Self, Error> {
        let mut b = Self::new(shape)?;
        b.values.reserve(rows.saturating_mul(b.size));
        b.valid.reserve(rows);
        Ok(b)
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Values per tensor (the product of the shape).
    pub fn size(&self) -> usize {
        self.size
    }

    /// Rows appended since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.valid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.valid.is_empty()
    }

    /// The field for this builder's columns, with the tensor metadata.
    pub fn field(&self, name: &str, dim_names: Option<&[&str]>, nullable: bool) -> Field {
        fixed_shape_tensor_field(name, T::DATA_TYPE, &self.shape, dim_names, nullable)
    }

    /// Appends one tensor; `values` must hold exactly [`size`](Self::size) values.
    pub fn append(&mut self, values: &[T::Native]) -> Result<(), Error> {
        if values.len() != self.size {
            return Err(Error::internal(format!(
                "a tensor of shape {:?} has {} values, {} were given",
                self.shape,
                self.size,
                values.len()
            )));
        }
        self.values.extend_from_slice(values);
        self.valid.push(true);
        Ok(())
    }

    /// Appends one tensor of zeros and returns its values to fill in place
    /// (no intermediate buffer).
    pub fn append_zeroed(&mut self) -> &mut [T::Native] {
        let start = self.values.len();
        self.values.resize(start + self.size, T::Native::default());
        self.valid.push(true);
        &mut self.values[start..]
    }

    /// Appends a null row.
    pub fn append_null(&mut self) {
        self.values.resize(self.values.len() + self.size, T::Native::default());
        self.valid.push(false);
    }

    /// The column built so far (the storage of [`field`](Self::field)); the builder starts over.
    pub fn finish(&mut self) -> FixedSizeListArray {
        let len = self.valid.len();
        let values = PrimitiveArray::<T>::new(ScalarBuffer::from(std::mem::take(&mut self.values)), None);
        let nulls = take_nulls(&mut self.valid);
        let item = Arc::new(Field::new("item", T::DATA_TYPE, false));
        // The size was checked at `new` and each row added exactly `size` non-null values.
        FixedSizeListArray::try_new_with_length(item, self.size as i32, Arc::new(values), nulls, len)
            .expect("fixed-shape tensor parts agree by construction")
    }
}

/// Reads an `arrow.fixed_shape_tensor` column: each row's values as a slice.
#[derive(Debug)]
pub struct FixedShapeTensorColumn<T: ArrowPrimitiveType> {
    meta: FixedShapeTensor,
    nulls: Option<NullBuffer>,
    values: ScalarBuffer<T::Native>,
    size: usize,
    len: usize,
}

// By hand: a derive would require `T: Clone`, which Arrow's type markers are not.
impl<T: ArrowPrimitiveType> Clone for FixedShapeTensorColumn<T> {
    fn clone(&self) -> Self {
        Self {
            meta: self.meta.clone(),
            nulls: self.nulls.clone(),
            values: self.values.clone(),
            size: self.size,
            len: self.len,
        }
    }
}

impl<T: ArrowPrimitiveType> FixedShapeTensorColumn<T> {
    /// Views `array`, the column of `field`, as tensors of `T`.
    pub fn new(field: &Field, array: &dyn Array) -> Result<Self, Error> {
        let meta = fixed_shape_tensor_of(field)?;
        let bad = |m: String| Error::input(format!("tensor column `{}`: {m}", field.name()));
        let list = array
            .as_any()
            .downcast_ref::<FixedSizeListArray>()
            .ok_or_else(|| bad(format!("storage is {}, not a fixed-size list", array.data_type())))?;
        let size = meta.size();
        if list.value_length() as usize != size {
            return Err(bad(format!("rows hold {} values, shape {:?} needs {size}", list.value_length(), meta.shape)));
        }
        let values = primitive_values::<T>(list.values().as_ref()).map_err(bad)?;
        if values.len() < list.len() * size {
            return Err(bad("fewer values than rows".into()));
        }
        Ok(Self { meta, nulls: list.nulls().cloned(), values, size, len: list.len() })
    }

    pub fn shape(&self) -> &[usize] {
        &self.meta.shape
    }

    /// The dimension names, if the column declares them (e.g. `["C", "H", "W"]`).
    pub fn dim_names(&self) -> Option<&[String]> {
        self.meta.dim_names.as_deref()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Row `i`'s tensor (row-major), or `None` for a null row.
    pub fn get(&self, i: usize) -> Option<&[T::Native]> {
        if i >= self.len || self.nulls.as_ref().is_some_and(|n| n.is_null(i)) {
            return None;
        }
        Some(&self.values[i * self.size..(i + 1) * self.size])
    }
}

/// Builds an `arrow.variable_shape_tensor` column of `ndim` dimensions: one
/// tensor of any shape per row, or a null.
#[derive(Debug)]
pub struct VariableShapeTensorBuilder<T: ArrowPrimitiveType> {
    ndim: usize,
    values: Vec<T::Native>,
    offsets: Vec<i32>,
    shapes: Vec<i32>,
    valid: Vec<bool>,
}

impl<T: ArrowPrimitiveType> VariableShapeTensorBuilder<T> {
    pub fn new(ndim: usize) -> Self {
        Self { ndim, values: Vec::new(), offsets: vec![0], shapes: Vec::new(), valid: Vec::new() }
    }

    pub fn ndim(&self) -> usize {
        self.ndim
    }

    pub fn len(&self) -> usize {
        self.valid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.valid.is_empty()
    }

    /// Values appended since the last [`finish`](Self::finish) (to bound a batch's size).
    pub fn values_len(&self) -> usize {
        self.values.len()
    }

    /// The field for this builder's columns.
    pub fn field(&self, name: &str, meta: &VariableShapeTensor) -> Field {
        variable_shape_tensor_field(name, T::DATA_TYPE, meta, self.ndim)
    }

    /// Appends one tensor of `shape` (row-major `values`).
    pub fn append(&mut self, shape: &[usize], values: &[T::Native]) -> Result<(), Error> {
        self.reserve_row(shape, values.len())?;
        self.values.extend_from_slice(values);
        Ok(())
    }

    /// Appends one tensor of `shape` filled with zeros and returns its values
    /// to fill in place.
    pub fn append_zeroed(&mut self, shape: &[usize]) -> Result<&mut [T::Native], Error> {
        let size = tensor_size(shape)?;
        self.reserve_row(shape, size)?;
        let start = self.values.len();
        self.values.resize(start + size, T::Native::default());
        Ok(&mut self.values[start..])
    }

    /// Appends a null row (an empty tensor under a null bit).
    pub fn append_null(&mut self) {
        self.shapes.extend(std::iter::repeat_n(0, self.ndim));
        self.offsets.push(*self.offsets.last().unwrap_or(&0));
        self.valid.push(false);
    }

    /// Checks a row's shape against its value count and records its shape and end offset.
    fn reserve_row(&mut self, shape: &[usize], values: usize) -> Result<(), Error> {
        if shape.len() != self.ndim {
            return Err(Error::internal(format!(
                "a tensor of {} dimensions was given shape {shape:?} ({} dimensions)",
                self.ndim,
                shape.len()
            )));
        }
        let size = tensor_size(shape)?;
        if size != values {
            return Err(Error::internal(format!("a tensor of shape {shape:?} has {size} values, {values} were given")));
        }
        let end = i32::try_from(self.values.len() + values).map_err(|_| too_many_values())?;
        self.shapes.extend(shape.iter().map(|d| *d as i32)); // each ≤ size ≤ i32::MAX
        self.offsets.push(end);
        self.valid.push(true);
        Ok(())
    }

    /// The column built so far (the storage of [`field`](Self::field)); the builder starts over.
    pub fn finish(&mut self) -> StructArray {
        let values = PrimitiveArray::<T>::new(ScalarBuffer::from(std::mem::take(&mut self.values)), None);
        let offsets = OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(&mut self.offsets, vec![0])));
        let shapes = PrimitiveArray::<Int32Type>::new(ScalarBuffer::from(std::mem::take(&mut self.shapes)), None);
        let nulls = take_nulls(&mut self.valid);
        let DataType::Struct(fields) = variable_shape_tensor_storage(T::DATA_TYPE, self.ndim) else {
            unreachable!("variable-shape tensor storage is a struct")
        };
        let (DataType::List(item), DataType::FixedSizeList(shape_item, _)) =
            (fields[0].data_type(), fields[1].data_type())
        else {
            unreachable!("variable-shape tensor storage is {{ list, fixed_size_list }}")
        };
        // Offsets grow monotonically from 0 to values.len(); shapes hold ndim values per row.
        let data = ListArray::try_new(item.clone(), offsets, Arc::new(values), None)
            .expect("tensor data parts agree by construction");
        let shape = FixedSizeListArray::try_new_with_length(
            shape_item.clone(),
            self.ndim as i32,
            Arc::new(shapes),
            None,
            data.len(),
        )
        .expect("tensor shape parts agree by construction");
        StructArray::try_new(fields, vec![Arc::new(data) as ArrayRef, Arc::new(shape)], nulls)
            .expect("tensor struct parts agree by construction")
    }
}

/// One tensor read from a variable-shape column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TensorView<'a, N> {
    /// The size of each dimension.
    pub shape: &'a [usize],
    /// The values, row-major.
    pub data: &'a [N],
}

/// Reads an `arrow.variable_shape_tensor` column: each row's shape and values.
#[derive(Debug)]
pub struct VariableShapeTensorColumn<T: ArrowPrimitiveType> {
    ndim: usize,
    nulls: Option<NullBuffer>,
    offsets: OffsetBuffer<i32>,
    values: ScalarBuffer<T::Native>,
    /// `ndim` sizes per row, checked against the row's value count.
    shapes: Vec<usize>,
    _type: PhantomData<T>,
}

// By hand: a derive would require `T: Clone`, which Arrow's type markers are not.
impl<T: ArrowPrimitiveType> Clone for VariableShapeTensorColumn<T> {
    fn clone(&self) -> Self {
        Self {
            ndim: self.ndim,
            nulls: self.nulls.clone(),
            offsets: self.offsets.clone(),
            values: self.values.clone(),
            shapes: self.shapes.clone(),
            _type: PhantomData,
        }
    }
}

impl<T: ArrowPrimitiveType> VariableShapeTensorColumn<T> {
    /// Views `array`, the column of `field`, as tensors of `T`. Every row's
    /// shape is checked against its number of values here, once.
    pub fn new(field: &Field, array: &dyn Array) -> Result<Self, Error> {
        let bad = |m: String| Error::input(format!("tensor column `{}`: {m}", field.name()));
        if extension_name(field) != Some(VARIABLE_SHAPE_TENSOR) {
            return Err(bad(format!("is not a `{VARIABLE_SHAPE_TENSOR}`")));
        }
        let s = array
            .as_any()
            .downcast_ref::<StructArray>()
            .ok_or_else(|| bad(format!("storage is {}, not a struct", array.data_type())))?;
        let (Some(data), Some(shape)) = (s.column_by_name("data"), s.column_by_name("shape")) else {
            return Err(bad("storage lacks `data` or `shape`".into()));
        };
        let data = data.as_any().downcast_ref::<ListArray>().ok_or_else(|| bad("`data` is not a list".into()))?;
        let shape = shape
            .as_any()
            .downcast_ref::<FixedSizeListArray>()
            .ok_or_else(|| bad("`shape` is not a fixed-size list".into()))?;
        let ndim = shape.value_length().max(0) as usize;
        let dims = primitive_values::<Int32Type>(shape.values().as_ref()).map_err(bad)?;
        let values = primitive_values::<T>(data.values().as_ref()).map_err(bad)?;
        let nulls = s.nulls().cloned();
        let mut shapes = Vec::with_capacity(s.len() * ndim);
        for row in 0..s.len() {
            let start = shape.value_offset_at(row);
            let row_dims = dims.get(start..start + ndim).ok_or_else(|| bad("`shape` is too short".into()))?;
            if nulls.as_ref().is_some_and(|n| n.is_null(row)) {
                shapes.extend(std::iter::repeat_n(0, ndim));
                continue;
            }
            let mut size = 1usize;
            for d in row_dims {
                let d = usize::try_from(*d).map_err(|_| bad(format!("row {row} has a negative dimension {d}")))?;
                size = size.checked_mul(d).ok_or_else(|| bad(format!("row {row}'s shape overflows")))?;
                shapes.push(d);
            }
            let (lo, hi) = (data.value_offsets()[row] as usize, data.value_offsets()[row + 1] as usize);
            if hi - lo != size || hi > values.len() {
                return Err(bad(format!(
                    "row {row} has shape {:?} ({size} values) but {} values",
                    &shapes[shapes.len() - ndim..],
                    hi - lo
                )));
            }
        }
        Ok(Self { ndim, nulls, offsets: data.offsets().clone(), values, shapes, _type: PhantomData })
    }

    pub fn ndim(&self) -> usize {
        self.ndim
    }

    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i`'s tensor, or `None` for a null row.
    pub fn get(&self, i: usize) -> Option<TensorView<'_, T::Native>> {
        if i >= self.len() || self.nulls.as_ref().is_some_and(|n| n.is_null(i)) {
            return None;
        }
        let (lo, hi) = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
        Some(TensorView { shape: &self.shapes[i * self.ndim..(i + 1) * self.ndim], data: &self.values[lo..hi] })
    }
}

/// One decoded image: `height × width × channels` bytes, row-major, channels last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageView<'a> {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub pixels: &'a [u8],
}

/// Builds a decoded-image column ([`decoded_image_field`]): a variable-shape
/// uint8 tensor with dimensions `H`, `W`, `C` per row.
#[derive(Debug)]
pub struct DecodedImageBuilder {
    inner: VariableShapeTensorBuilder<UInt8Type>,
    channels: Option<usize>,
}

impl DecodedImageBuilder {
    /// A builder of images that all have `channels` channels (e.g. `Some(3)`
    /// for RGB), or any number (`None`).
    pub fn new(channels: Option<usize>) -> Self {
        Self { inner: VariableShapeTensorBuilder::new(3), channels }
    }

    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Pixel bytes appended since the last [`finish`](Self::finish).
    pub fn pixel_bytes(&self) -> usize {
        self.inner.values_len()
    }

    /// The field for this builder's columns.
    pub fn field(&self, name: &str) -> Field {
        decoded_image_field(name, DataType::UInt8, self.channels)
    }

    /// Appends one image; `pixels` holds `height × width × channels` bytes.
    pub fn append(&mut self, height: usize, width: usize, channels: usize, pixels: &[u8]) -> Result<(), Error> {
        if let Some(c) = self.channels.filter(|c| *c != channels) {
            return Err(Error::internal(format!("the column holds {c}-channel images, one with {channels} was given")));
        }
        self.inner.append(&[height, width, channels], pixels)
    }

    /// Appends a null row.
    pub fn append_null(&mut self) {
        self.inner.append_null();
    }

    /// The column built so far; the builder starts over.
    pub fn finish(&mut self) -> StructArray {
        self.inner.finish()
    }
}

/// Reads a decoded-image column (a 3-dimensional uint8 variable-shape tensor, `H`, `W`, `C`).
#[derive(Debug, Clone)]
pub struct DecodedImageColumn {
    inner: VariableShapeTensorColumn<UInt8Type>,
}

impl DecodedImageColumn {
    pub fn new(field: &Field, array: &dyn Array) -> Result<Self, Error> {
        let inner = VariableShapeTensorColumn::<UInt8Type>::new(field, array)?;
        if inner.ndim() != 3 {
            return Err(Error::input(format!(
                "image column `{}` has {} dimensions, not 3 (H, W, C)",
                field.name(),
                inner.ndim()
            )));
        }
        Ok(Self { inner })
    }

    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Row `i`'s image, or `None` for a null row.
    pub fn get(&self, i: usize) -> Option<ImageView<'_>> {
        let t = self.inner.get(i)?;
        Some(ImageView { height: t.shape[0], width: t.shape[1], channels: t.shape[2], pixels: t.data })
    }
}

/// One audio clip read from a `flumen.audio` column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AudioView<'a> {
    pub sample_rate: u32,
    pub channels: u16,
    /// Interleaved samples in [-1, 1]: `frames × channels` values.
    pub samples: &'a [f32],
}

impl AudioView<'_> {
    /// Samples per channel.
    pub fn frames(&self) -> usize {
        self.samples.len() / usize::from(self.channels.max(1))
    }

    /// Length in seconds.
    pub fn duration_secs(&self) -> f64 {
        self.frames() as f64 / f64::from(self.sample_rate.max(1))
    }
}

/// Builds a `flumen.audio` column: one clip (sample rate, channel count,
/// interleaved float samples) per row, or a null.
#[derive(Debug, Default)]
pub struct AudioBuilder {
    sample_rates: Vec<u32>,
    channels: Vec<u16>,
    offsets: Vec<i32>,
    samples: Vec<f32>,
    valid: Vec<bool>,
}

impl AudioBuilder {
    pub fn new() -> Self {
        Self { offsets: vec![0], ..Self::default() }
    }

    pub fn len(&self) -> usize {
        self.valid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.valid.is_empty()
    }

    /// Samples appended since the last [`finish`](Self::finish) (to bound a batch's size).
    pub fn samples_len(&self) -> usize {
        self.samples.len()
    }

    /// The field for this builder's columns.
    pub fn field(&self, name: &str, nullable: bool) -> Field {
        audio_field(name, nullable)
    }

    /// Appends one clip: `samples` interleaved, a whole number of frames of `channels` (≥ 1) values.
    pub fn append(&mut self, sample_rate: u32, channels: u16, samples: &[f32]) -> Result<(), Error> {
        if channels == 0 || sample_rate == 0 {
            return Err(Error::internal(format!(
                "audio needs a sample rate and channels above 0, got {sample_rate} Hz and {channels} channels"
            )));
        }
        if !samples.len().is_multiple_of(usize::from(channels)) {
            return Err(Error::internal(format!(
                "{} interleaved samples are not a whole number of {channels}-channel frames",
                samples.len()
            )));
        }
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        let end = i32::try_from(self.samples.len() + samples.len()).map_err(|_| too_many_values())?;
        self.samples.extend_from_slice(samples);
        self.sample_rates.push(sample_rate);
        self.channels.push(channels);
        self.offsets.push(end);
        self.valid.push(true);
        Ok(())
    }

    /// Appends a null row.
    pub fn append_null(&mut self) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        self.sample_rates.push(0);
        self.channels.push(0);
        self.offsets.push(*self.offsets.last().unwrap_or(&0));
        self.valid.push(false);
    }

    /// The column built so far (the storage of a `flumen.audio` field); the builder starts over.
    pub fn finish(&mut self) -> StructArray {
        let DataType::Struct(fields) = audio_storage_type() else { unreachable!("audio storage is a struct") };
        let DataType::List(item) = fields[2].data_type() else { unreachable!("audio samples are a list") };
        let mut offsets = std::mem::replace(&mut self.offsets, vec![0]);
        if offsets.is_empty() {
            offsets.push(0);
        }
        let samples = PrimitiveArray::<Float32Type>::new(ScalarBuffer::from(std::mem::take(&mut self.samples)), None);
        let samples = ListArray::try_new(item.clone(), OffsetBuffer::new(offsets.into()), Arc::new(samples), None)
            .expect("audio sample parts agree by construction");
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(std::mem::take(&mut self.sample_rates))),
            Arc::new(UInt16Array::from(std::mem::take(&mut self.channels))),
            Arc::new(samples),
        ];
        let nulls = take_nulls(&mut self.valid);
        StructArray::try_new(fields, columns, nulls).expect("audio parts agree by construction")
    }
}

/// Reads a `flumen.audio` column.
#[derive(Debug, Clone)]
pub struct AudioColumn {
    nulls: Option<NullBuffer>,
    sample_rates: ScalarBuffer<u32>,
    channels: ScalarBuffer<u16>,
    offsets: OffsetBuffer<i32>,
    samples: ScalarBuffer<f32>,
}

impl AudioColumn {
    /// Views `array`, the column of `field` (a `flumen.audio` field), as clips.
    pub fn new(field: &Field, array: &dyn Array) -> Result<Self, Error> {
        let bad = |m: String| Error::input(format!("audio column `{}`: {m}", field.name()));
        if extension_name(field) != Some(AUDIO) {
            return Err(bad(format!("is not `{AUDIO}`")));
        }
        if array.data_type() != &audio_storage_type() {
            return Err(bad(format!("storage is {}, not the audio struct", array.data_type())));
        }
        let s = array.as_any().downcast_ref::<StructArray>().ok_or_else(|| bad("not a struct".into()))?;
        let sample_rates = primitive_values::<arrow_array::types::UInt32Type>(s.column(0).as_ref()).map_err(bad)?;
        let channels = primitive_values::<arrow_array::types::UInt16Type>(s.column(1).as_ref()).map_err(bad)?;
        let list = s.column(2).as_any().downcast_ref::<ListArray>().ok_or_else(|| bad("samples".into()))?;
        let samples = primitive_values::<Float32Type>(list.values().as_ref()).map_err(bad)?;
        if list.value_offsets().last().is_some_and(|end| *end as usize > samples.len()) {
            return Err(bad("sample offsets run past the samples".into()));
        }
        Ok(Self { nulls: s.nulls().cloned(), sample_rates, channels, offsets: list.offsets().clone(), samples })
    }

    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i`'s clip, or `None` for a null row.
    pub fn get(&self, i: usize) -> Option<AudioView<'_>> {
        if i >= self.len() || self.nulls.as_ref().is_some_and(|n| n.is_null(i)) {
            return None;
        }
        let (lo, hi) = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
        Some(AudioView {
            sample_rate: self.sample_rates[i],
            channels: self.channels[i],
            samples: &self.samples[lo..hi],
        })
    }
}

/// Builds a `flumen.embedding` column: `dim` float32 values per row, or a null.
#[derive(Debug)]
pub struct EmbeddingBuilder {
    inner: FixedShapeTensorBuilder<Float32Type>,
    model: Option<String>,
}

impl EmbeddingBuilder {
    /// A builder of `dim`-dimensional embeddings made by `model` (recorded in the field's metadata).
    pub fn new(dim: usize, model: Option<&str>) -> Result<Self, Error> {
        Ok(Self { inner: FixedShapeTensorBuilder::new(&[dim])?, model: model.map(str::to_string) })
    }

    pub fn dim(&self) -> usize {
        self.inner.size()
    }

    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// The field for this builder's columns.
    pub fn field(&self, name: &str, nullable: bool) -> Field {
        embedding_field(name, self.dim(), self.model.as_deref(), nullable)
    }

    /// Appends one embedding of exactly [`dim`](Self::dim) values.
    pub fn append(&mut self, values: &[f32]) -> Result<(), Error> {
        self.inner.append(values)
    }

    /// Appends one embedding of zeros and returns it to fill in place.
    pub fn append_zeroed(&mut self) -> &mut [f32] {
        self.inner.append_zeroed()
    }

    pub fn append_null(&mut self) {
        self.inner.append_null();
    }

    /// The column built so far; the builder starts over.
    pub fn finish(&mut self) -> FixedSizeListArray {
        self.inner.finish()
    }
}

/// Reads a `flumen.embedding` column.
#[derive(Debug, Clone)]
pub struct EmbeddingColumn {
    meta: Embedding,
    nulls: Option<NullBuffer>,
    values: ScalarBuffer<f32>,
    len: usize,
}

impl EmbeddingColumn {
    pub fn new(field: &Field, array: &dyn Array) -> Result<Self, Error> {
        let bad = |m: String| Error::input(format!("embedding column `{}`: {m}", field.name()));
        if extension_name(field) != Some(EMBEDDING) {
            return Err(bad(format!("is not `{EMBEDDING}`")));
        }
        let meta: Embedding =
            serde_json::from_str(extension_metadata(field)).map_err(|e| bad(format!("bad metadata: {e}")))?;
        let list = array
            .as_any()
            .downcast_ref::<FixedSizeListArray>()
            .ok_or_else(|| bad(format!("storage is {}, not a fixed-size list", array.data_type())))?;
        if list.value_length() as usize != meta.dim {
            return Err(bad(format!("rows hold {} values, the metadata says {}", list.value_length(), meta.dim)));
        }
        let values = primitive_values::<Float32Type>(list.values().as_ref()).map_err(bad)?;
        if values.len() < list.len() * meta.dim {
            return Err(bad("fewer values than rows".into()));
        }
        Ok(Self { meta, nulls: list.nulls().cloned(), values, len: list.len() })
    }

    pub fn dim(&self) -> usize {
        self.meta.dim
    }

    /// The model that made the embeddings, if the column names it.
    pub fn model(&self) -> Option<&str> {
        self.meta.model.as_deref()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Row `i`'s embedding, or `None` for a null row.
    pub fn get(&self, i: usize) -> Option<&[f32]> {
        if i >= self.len || self.nulls.as_ref().is_some_and(|n| n.is_null(i)) {
            return None;
        }
        Some(&self.values[i * self.meta.dim..(i + 1) * self.meta.dim])
    }
}

/// Values in a tensor of `shape`, refused past what one Arrow list can index.
fn tensor_size(shape: &[usize]) -> Result<usize, Error> {
    shape
        .iter()
        .try_fold(1usize, |acc, d| acc.checked_mul(*d))
        .filter(|n| *n <= i32::MAX as usize)
        .ok_or_else(|| Error::new(crate::ErrorKind::Limit, format!("a tensor of shape {shape:?} is too large")))
}

fn too_many_values() -> Error {
    Error::new(crate::ErrorKind::Limit, "a column holds more than i32::MAX values: emit smaller batches")
}

/// The values of a primitive array of `T` without nulls (tensor, audio and
/// embedding values are never null).
fn primitive_values<T: ArrowPrimitiveType>(array: &dyn Array) -> Result<ScalarBuffer<T::Native>, String> {
    let p = array
        .as_any()
        .downcast_ref::<PrimitiveArray<T>>()
        .ok_or_else(|| format!("values are {}, not {}", array.data_type(), T::DATA_TYPE))?;
    Ok(p.values().clone())
}

fn take_nulls(valid: &mut Vec<bool>) -> Option<NullBuffer> {
    let valid = std::mem::take(valid);
    if valid.iter().all(|v| *v) { None } else { Some(NullBuffer::from(valid)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_shape_tensors_round_trip_with_nulls() {
        let mut b = FixedShapeTensorBuilder::<Float32Type>::new(&[2, 3]).unwrap();
        b.append(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        b.append_null();
        b.append_zeroed().copy_from_slice(&[0.5; 6]);
        let err = b.append(&[1.0]).unwrap_err();
        assert!(err.message.contains("shape [2, 3] has 6 values, 1 were given"), "{err}");
        let field = b.field("t", Some(&["H", "W"]), true);
        let array = b.finish();
        assert_eq!(array.len(), 3);
        assert!(b.is_empty());
        let col = FixedShapeTensorColumn::<Float32Type>::new(&field, &array).unwrap();
        assert_eq!(col.shape(), &[2, 3]);
        assert_eq!(col.dim_names(), Some(&["H".to_string(), "W".to_string()][..]));
        assert_eq!(col.get(0), Some(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0][..]));
        assert_eq!(col.get(1), None);
        assert_eq!(col.get(2), Some(&[0.5; 6][..]));
        assert_eq!(col.get(3), None);
        // A slice of the column reads the right rows.
        let sliced = array.slice(1, 2);
        let col = FixedShapeTensorColumn::<Float32Type>::new(&field, &sliced).unwrap();
        assert_eq!((col.get(0), col.get(1)), (None, Some(&[0.5; 6][..])));
        // Reading with the wrong value type is an error, not a panic.
        assert!(FixedShapeTensorColumn::<UInt8Type>::new(&field, &array).is_err());
    }

    #[test]
    fn a_tensor_shape_with_no_values_or_too_many_is_refused() {
        assert!(FixedShapeTensorBuilder::<UInt8Type>::new(&[3, 0]).is_err());
        let err = FixedShapeTensorBuilder::<UInt8Type>::new(&[1 << 20, 1 << 20]).unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::Limit);
    }

    #[test]
    fn decoded_images_round_trip_with_their_shapes() {
        let mut b = DecodedImageBuilder::new(Some(3));
        let a: Vec<u8> = (0..2 * 4 * 3).map(|v| v as u8).collect();
        b.append(2, 4, 3, &a).unwrap();
        b.append_null();
        b.append(1, 1, 3, &[7, 8, 9]).unwrap();
        assert!(b.append(1, 1, 1, &[7]).unwrap_err().message.contains("3-channel"));
        assert!(b.append(2, 2, 3, &[0; 11]).unwrap_err().message.contains("12 values, 11 were given"));
        assert_eq!(b.pixel_bytes(), 27);
        let field = b.field("img");
        assert_eq!(extension_name(&field), Some(VARIABLE_SHAPE_TENSOR));
        let array = b.finish();
        assert_eq!(array.data_type(), field.data_type());
        let col = DecodedImageColumn::new(&field, &array).unwrap();
        assert_eq!(col.len(), 3);
        assert_eq!(col.get(0), Some(ImageView { height: 2, width: 4, channels: 3, pixels: &a }));
        assert_eq!(col.get(1), None);
        assert_eq!(col.get(2), Some(ImageView { height: 1, width: 1, channels: 3, pixels: &[7, 8, 9] }));
        // Sliced columns keep their offsets.
        let col = DecodedImageColumn::new(&field, &array.slice(2, 1)).unwrap();
        assert_eq!(col.get(0).map(|v| v.pixels), Some(&[7u8, 8, 9][..]));
        // A builder is reusable after `finish`.
        b.append(1, 1, 3, &[1, 2, 3]).unwrap();
        assert_eq!(b.finish().len(), 1);
    }

    #[test]
    fn a_variable_shape_column_whose_shape_lies_is_refused() {
        let mut b = VariableShapeTensorBuilder::<UInt8Type>::new(2);
        b.append(&[2, 2], &[1, 2, 3, 4]).unwrap();
        let good = b.finish();
        let field = b.field("t", &VariableShapeTensor { dim_names: None, uniform_shape: None, permutation: None });
        // Same data, shape [3, 2]: 6 values claimed, 4 present.
        let DataType::Struct(fields) = good.data_type().clone() else { unreachable!() };
        let DataType::FixedSizeList(item, _) = fields[1].data_type().clone() else { unreachable!() };
        let shape = FixedSizeListArray::new(item, 2, Arc::new(PrimitiveArray::<Int32Type>::from(vec![3, 2])), None);
        let lying = StructArray::new(fields, vec![good.column(0).clone(), Arc::new(shape)], None);
        let err = VariableShapeTensorColumn::<UInt8Type>::new(&field, &lying).unwrap_err();
        assert!(err.message.contains("row 0 has shape [3, 2] (6 values) but 4 values"), "{err}");
        assert!(VariableShapeTensorColumn::<UInt8Type>::new(&field, &good).is_ok());
        assert!(DecodedImageColumn::new(&field, &good).unwrap_err().message.contains("2 dimensions"));
        assert!(VariableShapeTensorColumn::<Float32Type>::new(&field, &good).is_err());
        assert!(b.append(&[2], &[1, 2]).unwrap_err().message.contains("2 dimensions"));
        let zeroed = b.append_zeroed(&[1, 3]).unwrap();
        zeroed[2] = 9;
        let col = VariableShapeTensorColumn::<UInt8Type>::new(&field, &b.finish()).unwrap();
        assert_eq!(col.get(0), Some(TensorView { shape: &[1, 3], data: &[0, 0, 9] }));
    }

    #[test]
    fn audio_round_trips_with_nulls() {
        let mut b = AudioBuilder::new();
        b.append(16_000, 2, &[0.1, -0.1, 0.2, -0.2]).unwrap();
        b.append_null();
        b.append(8_000, 1, &[]).unwrap();
        assert!(b.append(8_000, 2, &[0.1, 0.2, 0.3]).unwrap_err().message.contains("whole number"));
        assert!(b.append(8_000, 0, &[]).is_err());
        let field = b.field("audio", true);
        let array = b.finish();
        assert_eq!(array.data_type(), &audio_storage_type());
        let col = AudioColumn::new(&field, &array).unwrap();
        let clip = col.get(0).unwrap();
        assert_eq!((clip.sample_rate, clip.channels, clip.samples), (16_000, 2, &[0.1, -0.1, 0.2, -0.2][..]));
        assert_eq!(clip.frames(), 2);
        assert!((clip.duration_secs() - 2.0 / 16_000.0).abs() < 1e-12);
        assert_eq!(col.get(1), None);
        assert_eq!(col.get(2).map(|c| c.samples.len()), Some(0));
        assert!(AudioColumn::new(&Field::new("audio", audio_storage_type(), true), &array).is_err());
        // Empty and reused builders give valid columns.
        assert_eq!(b.finish().len(), 0);
        b.append(1, 1, &[1.0]).unwrap();
        assert_eq!(AudioColumn::new(&field, &b.finish()).unwrap().get(0).unwrap().samples, &[1.0]);
    }

    #[test]
    fn embeddings_round_trip_with_their_model() {
        let mut b = EmbeddingBuilder::new(3, Some("tiny")).unwrap();
        b.append(&[1.0, 0.0, 0.0]).unwrap();
        b.append_null();
        b.append_zeroed()[1] = 1.0;
        assert!(b.append(&[1.0]).is_err());
        let field = b.field("emb", true);
        let array = b.finish();
        let col = EmbeddingColumn::new(&field, &array).unwrap();
        assert_eq!((col.dim(), col.model()), (3, Some("tiny")));
        assert_eq!(col.get(0), Some(&[1.0, 0.0, 0.0][..]));
        assert_eq!(col.get(1), None);
        assert_eq!(col.get(2), Some(&[0.0, 1.0, 0.0][..]));
        let other = embedding_field("emb", 4, None, true);
        assert!(EmbeddingColumn::new(&other, &array).unwrap_err().message.contains("metadata says 4"));
    }
}
