//! W1 per language: `host` = the host of an http(s) URL (utf8) in Rust: a
//! byte scan after `://` up to `/ ? #`, less `user@` and `:port`.

use std::sync::Arc;

use flumen_sdk::arrow_array::builder::StringBuilder;
use flumen_sdk::arrow_array::cast::AsArray;
use flumen_sdk::arrow_array::{Array, ArrayRef};
use flumen_sdk::{
    Context, DataType, Emitter, Error, Field, Operator, RecordBatch, Schema, SchemaRef, Shape, export_operator,
};

struct UrlHost {
    schema: SchemaRef,
    column: usize,
}

/// The host of an http(s) URL (a bracketed IPv6 host keeps its brackets).
fn url_host(url: &str) -> Option<&str> {
    let b = url.as_bytes();
    let start = if b.len() >= 8 && b[..8].eq_ignore_ascii_case(b"https://") {
        8
    } else if b.len() >= 7 && b[..7].eq_ignore_ascii_case(b"http://") {
        7
    } else {
        return None;
    };
    let end = b[start..].iter().position(|c| matches!(c, b'/' | b'?' | b'#')).map_or(b.len(), |i| start + i);
    let host_start = start + b[start..end].iter().rposition(|&c| c == b'@').map_or(0, |i| i + 1);
    let host = &b[host_start..end];
    let host_len = if host.first() == Some(&b'[') {
        host.iter().position(|&c| c == b']')? + 1
    } else {
        host.iter().position(|&c| c == b':').unwrap_or(host.len())
    };
    if host_len == 0 {
        return None;
    }
    url.get(host_start..host_start + host_len)
}

impl Operator for UrlHost {
    type Config = serde::de::IgnoredAny;

    fn open(ctx: &Context, _config: Self::Config) -> Result<Self, Error> {
        let input = ctx.input(0)?;
        let column = input.index_of("url").map_err(|_| Error::config("url-host: no column `url`"))?;
        if input.field(column).data_type() != &DataType::Utf8 {
            return Err(Error::config("url-host: column `url` must be utf8"));
        }
        let mut fields = input.fields().to_vec();
        fields.push(Arc::new(Field::new("host", DataType::Utf8, true)));
        Ok(Self { schema: Arc::new(Schema::new(fields)), column })
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn shape(&self) -> Shape {
        let carried = self.schema.fields().len() - 1;
        Shape::new().reads(0, [self.column]).carries((0..carried).map(Some).chain([None]))
    }

    fn process(&mut self, _port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error> {
        let urls = batch.column(0).as_string::<i32>();
        let mut hosts = StringBuilder::with_capacity(urls.len(), urls.value_data().len() / 2);
        for i in 0..urls.len() {
            match urls.is_valid(i).then(|| url_host(urls.value(i))).flatten() {
                Some(h) => hosts.append_value(h),
                None => hosts.append_null(),
            }
        }
        let host: ArrayRef = Arc::new(hosts.finish());
        out.emit(&RecordBatch::try_new(out.schema().clone(), vec![host])?)
    }
}

export_operator!(UrlHost);
