//! W1 per language: `g = gcd(a, b)` over two int32 columns in Rust (Stein's
//! binary GCD, the algorithm of the `expr` crate's kernel; nulls propagate).

use std::sync::Arc;

use arrow_buffer::{NullBuffer, ScalarBuffer};
use flumen_sdk::arrow_array::cast::AsArray;
use flumen_sdk::arrow_array::types::Int32Type;
use flumen_sdk::arrow_array::{Array, ArrayRef, Int32Array};
use flumen_sdk::{
    Context, DataType, Emitter, Error, Field, Operator, RecordBatch, Schema, SchemaRef, Shape, export_operator,
};

struct Gcd {
    schema: SchemaRef,
    reads: [usize; 2],
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    if a == 0 {
        return b;
    }
    if b == 0 {
        return a;
    }
    let shift = (a | b).trailing_zeros();
    a >>= a.trailing_zeros();
    loop {
        b >>= b.trailing_zeros();
        if a > b {
            std::mem::swap(&mut a, &mut b);
        }
        b -= a;
        if b == 0 {
            return a << shift;
        }
    }
}

impl Operator for Gcd {
    type Config = serde::de::IgnoredAny;

    fn open(ctx: &Context, _config: Self::Config) -> Result<Self, Error> {
        let input = ctx.input(0)?;
        let mut reads = [0; 2];
        for (slot, name) in reads.iter_mut().zip(["a", "b"]) {
            *slot = input.index_of(name).map_err(|_| Error::config(format!("gcd: no column `{name}`")))?;
            if input.field(*slot).data_type() != &DataType::Int32 {
                return Err(Error::config(format!("gcd: column `{name}` must be int32")));
            }
        }
        let mut fields = input.fields().to_vec();
        fields.push(Arc::new(Field::new("g", DataType::Int32, true)));
        Ok(Self { schema: Arc::new(Schema::new(fields)), reads })
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn shape(&self) -> Shape {
        let carried = self.schema.fields().len() - 1;
        Shape::new().reads(0, self.reads).carries((0..carried).map(Some).chain([None]))
    }

    /// `batch` holds `a` and `b`, in input order.
    fn process(&mut self, _port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error> {
        let (i, j) = if self.reads[0] < self.reads[1] { (0, 1) } else { (1, 0) };
        let a = batch.column(i).as_primitive::<Int32Type>();
        let b = batch.column(j).as_primitive::<Int32Type>();
        let values: ScalarBuffer<i32> = a
            .values()
            .iter()
            .zip(b.values().iter())
            .map(|(&x, &y)| gcd(x.unsigned_abs(), y.unsigned_abs()) as i32)
            .collect();
        let g: ArrayRef = Arc::new(Int32Array::new(values, NullBuffer::union(a.nulls(), b.nulls())));
        out.emit(&RecordBatch::try_new(out.schema().clone(), vec![g])?)
    }
}

export_operator!(Gcd);
