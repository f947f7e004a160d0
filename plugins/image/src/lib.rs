//! The `image` operator: decodes the images a blob-reference column points
//! to (PNG, JPEG, WebP), optionally resizes and normalizes them, and writes a
//! tensor column: a fixed-shape tensor when resized, a decoded image
//! (variable-shape uint8 `H`, `W`, `C`) otherwise.

mod config;
use flumen_pixels as pixels;

use std::sync::Arc;

use flumen_sdk::arrow_array::types::{Float32Type, UInt8Type};
use flumen_sdk::blob::{self, BlobColumn, BlobRef};
use flumen_sdk::media::{DecodedImageBuilder, FixedShapeTensorBuilder};
use flumen_sdk::{ArrayRef, Context, Emitter, Error, Operator, RecordBatch, Schema, SchemaRef, export_operator};

use image::DynamicImage;

use crate::config::{Config, Output, Plan};
use pixels::{Layout, Resampler};

/// Tensor bytes gathered before a batch is emitted: a batch of many large
/// images goes out in several batches (each a slice of the input's rows), so
/// an instance never holds more than about this much output at once.
const EMIT_BYTES_TARGET: usize = 32 << 20;

struct ImageOp {
    schema: SchemaRef,
    plan: Plan,
    /// The blob-reference column.
    input: usize,
    /// Input columns kept, in output order, and where the output column goes among them.
    kept: Vec<usize>,
    output_at: usize,
    resampler: Option<Resampler>,
    /// One resized image, before it is normalized or reordered.
    resized: Vec<u8>,
}

impl Operator for ImageOp {
    type Config = Config;

    fn open(ctx: &Context, config: Config) -> Result<Self, Error> {
        if ctx.inputs.len() != 1 {
            return Err(Error::config(format!(
                "image: takes one input, operator `{}` has {}",
                ctx.operator_id,
                ctx.inputs.len()
            )));
        }
        let input_schema = ctx.input(0)?.clone();
        let plan = config.plan(&input_schema)?;
        let output_field = plan.output_field();
        let input = plan.input;
        // The output replaces the reference column in place when it takes its name.
        let mut kept: Vec<usize> = (0..input_schema.fields().len()).collect();
        if plan.drop_input || plan.replaces_input {
            kept.retain(|i| *i != input);
        }
        let output_at = if plan.replaces_input { input } else { kept.len() };
        let mut fields: Vec<_> = kept.iter().map(|i| input_schema.field(*i).clone()).collect();
        fields.insert(output_at, output_field);
        let schema = Arc::new(Schema::new_with_metadata(fields, input_schema.metadata().clone()));
        let resampler = plan.resize.map(Resampler::new);
        Ok(Self { schema, plan, input, kept, output_at, resampler, resized: Vec::new() })
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process(&mut self, _port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error> {
        let refs = BlobColumn::new(batch.column(self.input))?;
        let mut tensors = Tensors::new(&self.plan)?;
        let mut start = 0;
        for row in 0..batch.num_rows() {
            match refs.get(row) {
                None => tensors.append_null(),
                Some(r) => {
                    let bytes = blob::read_all(&r)?;
                    let image = pixels::decode(&bytes).map_err(|e| decode_error(&r, &e))?;
                    self.append(&mut tensors, image)?;
                }
            }
            if tensors.bytes() >= EMIT_BYTES_TARGET || row + 1 == batch.num_rows() {
                let rows = batch.slice(start, row + 1 - start);
                out.emit(&self.assemble(&rows, tensors.finish())?)?;
                start = row + 1;
            }
        }
        Ok(())
    }
}

impl ImageOp {
    /// Converts, resizes and normalizes one decoded image into the output column.
    fn append(&mut self, tensors: &mut Tensors, image: DynamicImage) -> Result<(), Error> {
        let image = pixels::convert(image, self.plan.channels);
        let channels = self.plan.channels.count();
        let Some(resampler) = self.resampler.as_mut() else {
            let Tensors::Images(b) = tensors else { return Err(mismatch()) };
            return b.append(image.height() as usize, image.width() as usize, channels, pixels::samples(&image));
        };
        let resize_error = |e: String| Error::internal(format!("image: resizing failed: {e}"));
        match (tensors, &self.plan.output) {
            (Tensors::Bytes(b), Output::Bytes { layout: Layout::Hwc, .. }) => {
                resampler.resize_into(&image, b.append_zeroed()).map_err(resize_error)
            }
            (Tensors::Bytes(b), Output::Bytes { layout, .. }) => {
                self.resized.resize(resampler.out_len(self.plan.channels), 0);
                resampler.resize_into(&image, &mut self.resized).map_err(resize_error)?;
                pixels::write_u8(&self.resized, channels, *layout, b.append_zeroed());
                Ok(())
            }
            (Tensors::Float(b), Output::Float { normalize, layout, .. }) => {
                self.resized.resize(resampler.out_len(self.plan.channels), 0);
                resampler.resize_into(&image, &mut self.resized).map_err(resize_error)?;
                pixels::write_f32(&self.resized, channels, normalize, *layout, b.append_zeroed());
                Ok(())
            }
            _ => Err(mismatch()),
        }
    }

    /// The output batch for `rows` of the input and their tensors.
    fn assemble(&self, rows: &RecordBatch, tensors: ArrayRef) -> Result<RecordBatch, Error> {
        let mut columns: Vec<ArrayRef> = self.kept.iter().map(|i| rows.column(*i).clone()).collect();
        columns.insert(self.output_at, tensors);
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// The output column being built, of the type the plan declares.
enum Tensors {
    Float(FixedShapeTensorBuilder<Float32Type>),
    Bytes(FixedShapeTensorBuilder<UInt8Type>),
    Images(DecodedImageBuilder),
}

impl Tensors {
    fn new(plan: &Plan) -> Result<Self, Error> {
        Ok(match &plan.output {
            Output::Float { shape, .. } => Tensors::Float(FixedShapeTensorBuilder::new(shape)?),
            Output::Bytes { shape, .. } => Tensors::Bytes(FixedShapeTensorBuilder::new(shape)?),
            Output::Images => Tensors::Images(DecodedImageBuilder::new(Some(plan.channels.count()))),
        })
    }

    fn append_null(&mut self) {
        match self {
            Tensors::Float(b) => b.append_null(),
            Tensors::Bytes(b) => b.append_null(),
            Tensors::Images(b) => b.append_null(),
        }
    }

    /// Tensor bytes gathered since the last [`finish`](Self::finish).
    fn bytes(&self) -> usize {
        match self {
            Tensors::Float(b) => b.len() * b.size() * 4,
            Tensors::Bytes(b) => b.len() * b.size(),
            Tensors::Images(b) => b.pixel_bytes(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Tensors::Float(b) => Arc::new(b.finish()),
            Tensors::Bytes(b) => Arc::new(b.finish()),
            Tensors::Images(b) => Arc::new(b.finish()),
        }
    }
}

fn mismatch() -> Error {
    Error::internal("image: the output column does not match the plan")
}

/// An input error naming the file (or, for bytes made in the job, the digest).
fn decode_error(r: &BlobRef, e: &pixels::DecodeError) -> Error {
    let name = blob::stat(r).ok().and_then(|info| info.source).unwrap_or_else(|| format!("blob {}", r.digest_hex()));
    Error::input(format!("image: cannot decode `{name}` ({}, {} bytes): {e}", r.media_type, r.size))
}

export_operator!(ImageOp);
