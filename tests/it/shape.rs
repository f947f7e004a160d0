//! The 0.2 operator boundary end to end: operators read only the columns they
//! declare, carry the rest through without copying them into the guest, and
//! select rows with masks or indices; malformed selections are refused by
//! name; 0.1 and 0.2 components run in one job; an unknown contract version
//! is refused naming both versions.

use crate::common::*;

fn rows_of(job: &Job, file: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(job.file(file)).expect("output");
    text.lines().map(|l| serde_json::from_str(l).expect("json line")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_reads_one_column_and_carries_the_rest() {
    let job = one_operator("plugin = \"filter\"\nconfig = { predicate = \"id % 3 = 0\" }", 1000);
    let summary = job.run().await.unwrap();
    let rows = rows_of(&job, "out.jsonl");
    let want: Vec<i64> = (0..1000).filter(|i| i % 3 == 0).collect();
    assert_eq!(read_jsonl_ids(&job.file("out.jsonl")), want);
    for row in &rows {
        let id = row["id"].as_i64().unwrap();
        assert_eq!(row["name"], format!("name-{id}"), "carried column kept its row: {row}");
    }
    let op = summary.node("op").unwrap();
    // Only `id` (1000 int64s) entered the guest, not `name`; only bitmaps left it.
    assert!(op.guest_bytes_in <= 1000 * 8 + 256, "{} bytes copied in", op.guest_bytes_in);
    assert!(op.guest_bytes_in >= 1000 * 8, "{} bytes copied in", op.guest_bytes_in);
    assert!(op.guest_bytes_out <= 10 * 16, "{} bytes copied out", op.guest_bytes_out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_emits_only_what_it_computes() {
    let job = one_operator("plugin = \"map\"\nconfig = { columns = [{ name = \"twice\", expr = \"id * 2\" }] }", 1000);
    let summary = job.run().await.unwrap();
    let rows = rows_of(&job, "out.jsonl");
    assert_eq!(rows.len(), 1000);
    for row in &rows {
        let id = row["id"].as_i64().unwrap();
        assert_eq!(row["twice"], id * 2, "{row}");
        assert_eq!(row["name"], format!("name-{id}"), "{row}");
    }
    let op = summary.node("op").unwrap();
    assert_eq!(op.guest_bytes_out, 1000 * 8, "only the computed int64 column leaves the guest");
    assert!(op.guest_bytes_in < 1000 * 8 + 256, "{} bytes copied in", op.guest_bytes_in);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_carries_reorders_and_renames_without_copying() {
    let job = one_operator(
        "plugin = \"project\"\nconfig = { columns = [\"name\", { name = \"next\", expr = \"id + 1\" }, \"id\"], \
         rename = { name = \"who\" } }",
        300,
    );
    let summary = job.run().await.unwrap();
    let text = std::fs::read_to_string(job.file("out.jsonl")).unwrap();
    let first = text.lines().next().unwrap();
    assert_eq!(first, r#"{"who":"name-0","next":1,"id":0}"#);
    assert_eq!(text.lines().count(), 300);
    let op = summary.node("op").unwrap();
    assert_eq!(op.guest_bytes_out, 300 * 8, "kept and renamed columns never leave the guest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_selected_by_index_keep_the_guests_order() {
    let job = one_operator("plugin = \"{guest:misbehave}\"\nconfig = { mode = \"select-reverse\" }", 250);
    job.run().await.unwrap();
    let text = std::fs::read_to_string(job.file("out.jsonl")).unwrap();
    let ids: Vec<i64> =
        text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_i64().unwrap()).collect();
    // Batches of 100 rows, each reversed.
    let want: Vec<i64> = (0..100).rev().chain((100..200).rev()).chain((200..250).rev()).collect();
    assert_eq!(ids, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_selections_are_refused_by_name() {
    let cases: &[(&str, &[&str])] = &[
        ("select-mask-short", &["a selection mask of 0 bytes for 100 input rows (must be 13)"]),
        ("select-stray-bits", &["the selection mask sets bits past input row 99"]),
        ("select-count-mismatch", &["selects all 100 input rows, but the computed columns have 101 rows"]),
        ("select-index-out-of-range", &["selection index 107 (at position 1) is out of range for 100 input rows"]),
        ("select-without-carry", &["sent a selection of rows, but the operator carries no input column"]),
        ("carry-in-finish", &["exist only while `process` runs", "`finish`"]),
    ];
    for (mode, needles) in cases {
        let job = one_operator(&format!("plugin = \"{{guest:misbehave}}\"\nconfig = {{ mode = \"{mode}\" }}"), 100);
        let err = job.run_err().await;
        assert_contains(&err, &["operator op[0]", "emitted a malformed batch"]);
        assert_contains(&err, needles);
        assert!(!job.file("out.jsonl").exists(), "{mode}: output left behind");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_of_0_1_and_0_2_run_in_one_job() {
    let job = Job::new(
        r#"
[job]
name = "t"
batch_rows = 100

[[source]]
id = "in"
kind = "csv"
path = "input.csv"

[[operator]]
id = "old"
plugin = "{guest:legacy-v01}"
inputs = ["in"]

[[operator]]
id = "new"
plugin = "filter"
config = { predicate = "id >= 400" }
inputs = ["old"]

[[sink]]
id = "out"
kind = "jsonl"
path = "out.jsonl"
inputs = ["new"]
"#,
    )
    .with_ids_csv(500);
    let summary = job.run().await.unwrap();
    assert_eq!(read_jsonl_ids(&job.file("out.jsonl")), (400..500).collect::<Vec<i64>>());
    assert_eq!(summary.node("old").unwrap().rows_in, 500);
    // The 0.1 component receives every column; the 0.2 filter only `id`.
    assert!(summary.node("old").unwrap().guest_bytes_in > summary.node("new").unwrap().guest_bytes_in * 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_of_an_unknown_version_is_refused_naming_both() {
    let job = one_operator("plugin = \"{guest:future-version}\"", 10);
    let err = job.run_err().await;
    assert_contains(
        &err,
        &["operator `op`", "targets flumen:dataflow@0.9.0", "this host runs flumen:dataflow@0.1.0 and @0.2.0"],
    );
}

/// bids.parquet: (id int64, name utf8, price int64, note utf8), 1000 rows.
fn write_bids(job: &Job) {
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use std::sync::Arc;
    let ids: Vec<i64> = (0..1000).collect();
    let batch = RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(ids.clone())) as arrow::array::ArrayRef),
        ("name", Arc::new(StringArray::from_iter_values(ids.iter().map(|i| format!("name-{i}"))))),
        ("price", Arc::new(Int64Array::from_iter_values(ids.iter().map(|i| i * 7 % 100)))),
        ("note", Arc::new(StringArray::from_iter_values(ids.iter().map(|i| format!("note-{i}"))))),
    ])
    .unwrap();
    let file = std::fs::File::create(job.file("bids.parquet")).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_decode_what_some_consumer_reads_and_results_stay_whole() {
    // `cheap` reads `price` and carries everything; `ids` keeps `id` as `bid`
    // after a hash edge on `name`. Nothing reads `note` unless the `all`
    // sink, which needs every column of the source, is there too. Whatever
    // the source skips, no output may show a placeholder.
    for with_all in [false, true] {
        let all_sink = if with_all {
            "[[sink]]\nid = \"all\"\nkind = \"jsonl\"\npath = \"all.jsonl\"\ninputs = [\"bids\"]\n"
        } else {
            ""
        };
        let job = Job::new(&format!(
            r#"
[job]
name = "t"
batch_rows = 128

[[source]]
id = "bids"
kind = "parquet"
path = "bids.parquet"

[[operator]]
id = "cheap"
plugin = "filter"
config = {{ predicate = "price < 10" }}
inputs = ["bids"]

[[operator]]
id = "ids"
plugin = "project"
config = {{ columns = ["id"], rename = {{ id = "bid" }} }}
parallelism = 2
inputs = [{{ from = "cheap", partition = "hash", keys = ["name"] }}]

[[sink]]
id = "out"
kind = "jsonl"
path = "out"
parallelism = 2
inputs = ["ids"]

{all_sink}"#
        ));
        write_bids(&job);
        job.run().await.unwrap();
        let mut got = Vec::new();
        for f in std::fs::read_dir(job.file("out")).unwrap() {
            let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
            got.extend(
                text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["bid"].as_i64().unwrap()),
            );
        }
        got.sort();
        let want: Vec<i64> = (0..1000).filter(|i| i * 7 % 100 < 10).collect();
        assert_eq!(got, want, "with_all = {with_all}");
        if with_all {
            let all = rows_of(&job, "all.jsonl");
            assert_eq!(all.len(), 1000);
            for r in &all {
                let id = r["id"].as_i64().unwrap();
                assert_eq!(r["name"], format!("name-{id}"));
                assert_eq!(r["price"], id * 7 % 100);
                assert_eq!(r["note"], format!("note-{id}"));
            }
        }
    }
}
