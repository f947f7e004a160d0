//! The Nexmark Bid file shared by the W2 and W3 benches (`#[path]`-included
//! by both): N Bid events of the `nexmark` crate (default config, fixed base
//! time, so the file is the same on every machine) as
//! `auction, bidder, price, channel, url, date_time (int64 ms), extra`,
//! Snappy, 64 K-row row groups, at `<dir>/bids-<N>.parquet`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::builder::{Int64Builder, StringBuilder};
use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use nexmark::config::NexmarkConfig;
use nexmark::event::{Event, EventType};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

/// Rows per row group (and per generated batch).
const ROW_GROUP_ROWS: usize = 65536;
/// 2015-07-15 00:00:00 UTC in ms: a fixed base time, so the file is the same on every machine.
const BASE_TIME_MS: u64 = 1_436_918_400_000;

/// `<dir>/bids-<events>.parquet`, generated first if it is missing.
pub fn bids_file(dir: &Path, events: u64) -> PathBuf {
    let data = dir.join(format!("bids-{events}.parquet"));
    let mb = |path: &Path| std::fs::metadata(path).map(|m| m.len() >> 20).unwrap_or(0);
    if data.is_file() {
        println!("using {} ({} MB)", data.display(), mb(&data));
    } else {
        let started = Instant::now();
        generate(&data, events);
        println!("generated {} in {:.1} s ({} MB)", data.display(), started.elapsed().as_secs_f64(), mb(&data));
    }
    data
}

pub fn bid_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("auction", DataType::Int64, false),
        Field::new("bidder", DataType::Int64, false),
        Field::new("price", DataType::Int64, false),
        Field::new("channel", DataType::Utf8, false),
        Field::new("url", DataType::Utf8, false),
        Field::new("date_time", DataType::Int64, false),
        Field::new("extra", DataType::Utf8, false),
    ]))
}

/// Writes `events` Bid events to `path` (through a temporary file, so an
/// interrupted run never leaves a file that looks complete).
fn generate(path: &Path, events: u64) {
    let config = NexmarkConfig { base_time: BASE_TIME_MS, ..NexmarkConfig::default() };
    let mut bids = nexmark::EventGenerator::new(config).with_type_filter(EventType::Bid);
    let schema = bid_schema();
    let tmp = path.with_extension("parquet.partial");
    let file = File::create(&tmp).unwrap_or_else(|e| panic!("cannot create {}: {e}", tmp.display()));
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props)).expect("parquet writer");
    let mut left = events;
    while left > 0 {
        let n = left.min(ROW_GROUP_ROWS as u64) as usize;
        let mut auction = Int64Builder::with_capacity(n);
        let mut bidder = Int64Builder::with_capacity(n);
        let mut price = Int64Builder::with_capacity(n);
        let mut channel = StringBuilder::with_capacity(n, n * 8);
        let mut url = StringBuilder::with_capacity(n, n * 64);
        let mut date_time = Int64Builder::with_capacity(n);
        let mut extra = StringBuilder::with_capacity(n, n * 64);
        for _ in 0..n {
            let Some(Event::Bid(b)) = bids.next() else { panic!("the Bid filter yielded something else") };
            auction.append_value(b.auction as i64);
            bidder.append_value(b.bidder as i64);
            price.append_value(b.price as i64);
            channel.append_value(&b.channel);
            url.append_value(&b.url);
            date_time.append_value(b.date_time as i64);
            extra.append_value(&b.extra);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(auction.finish()),
            Arc::new(bidder.finish()),
            Arc::new(price.finish()),
            Arc::new(channel.finish()),
            Arc::new(url.finish()),
            Arc::new(date_time.finish()),
            Arc::new(extra.finish()),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns).expect("bid batch");
        writer.write(&batch).expect("writing Parquet");
        left -= n as u64;
    }
    writer.close().expect("closing Parquet");
    std::fs::rename(&tmp, path)
        .unwrap_or_else(|e| panic!("cannot rename {} to {}: {e}", tmp.display(), path.display()));
}
