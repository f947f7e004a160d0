//! The `text-chunk` plugin over documents given as files (a `blobs` source)
//! and as a text column (JSONL): chunks respect the size and the overlap,
//! cover every byte, and their offsets map back to the document exactly; a
//! file that is not UTF-8 goes to the dead-letter sink, named.

use std::collections::BTreeMap;

use crate::common::*;

/// A document's chunks as the sink wrote them, ordered by `chunk_index`.
#[derive(Debug)]
struct Chunk {
    index: u64,
    text: String,
    start: usize,
    end: usize,
}

fn read_jsonl(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(|l| serde_json::from_str(l).expect("json line")).collect()
}

/// Groups chunk rows by the value of `key` (a document's name or id).
fn chunks_by(rows: &[serde_json::Value], key: impl Fn(&serde_json::Value) -> String) -> BTreeMap<String, Vec<Chunk>> {
    let mut docs: BTreeMap<String, Vec<Chunk>> = BTreeMap::new();
    for r in rows {
        docs.entry(key(r)).or_default().push(Chunk {
            index: r["chunk_index"].as_u64().expect("chunk_index"),
            text: r["chunk"].as_str().expect("chunk").to_string(),
            start: r["start"].as_u64().expect("start") as usize,
            end: r["end"].as_u64().expect("end") as usize,
        });
    }
    for chunks in docs.values_mut() {
        chunks.sort_by_key(|c| c.index);
    }
    docs
}

/// What a user relies on: chunk `i` is `doc[start..end]`, at most `max` long
/// in `measure`'s unit; the chunks start at 0, end at the document's end,
/// leave no gap, and repeat at most `overlap` of the previous chunk.
#[track_caller]
fn check_document(name: &str, doc: &str, chunks: &[Chunk], max: usize, overlap: usize, measure: fn(&str) -> usize) {
    assert!(!chunks.is_empty(), "{name}: no chunks");
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c.index, i as u64, "{name}: chunk indexes count from 0");
        assert_eq!(doc.get(c.start..c.end), Some(c.text.as_str()), "{name}: chunk {i} at {}..{}", c.start, c.end);
        assert!(measure(&c.text) <= max, "{name}: chunk {i} is {} long, over {max}: {:?}", measure(&c.text), c.text);
    }
    assert_eq!(chunks[0].start, 0, "{name}: the first chunk starts the document");
    assert_eq!(chunks.last().unwrap().end, doc.len(), "{name}: the last chunk ends it");
    for w in chunks.windows(2) {
        assert!(w[1].start <= w[0].end, "{name}: bytes {}..{} are in no chunk", w[0].end, w[1].start);
        assert!(w[1].start > w[0].start && w[1].end > w[0].end, "{name}: a chunk does not move forward");
        let shared = &doc[w[1].start..w[0].end];
        assert!(measure(shared) <= overlap, "{name}: overlap {shared:?} is over {overlap}");
    }
}

/// Whether some chunk repeats the end of the one before.
fn overlaps(chunks: &[Chunk]) -> bool {
    chunks.windows(2).any(|w| w[1].start < w[0].end)
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

fn bytes(s: &str) -> usize {
    s.len()
}

/// Documents with paragraphs, sentences, long words and non-ASCII text.
fn sample_documents() -> Vec<(&'static str, String)> {
    let mut long = String::new();
    for p in 0..12 {
        for s in 0..(3 + p % 4) {
            long.push_str(&format!("Paragraph {p} sentence {s} says something about streams and batches. "));
        }
        long.push_str("\n\n");
    }
    vec![
        ("a.txt", long),
        (
            "b.txt",
            "Grüße aus Köln! Ελληνικά κείμενα εδώ. 日本語のテキストもあります。\n\nDonaudampfschifffahrtsgesellschaftskapitänsmütze \
             is one long word. 🦀🦀🦀 crabs close the file."
                .to_string(),
        ),
        ("c.txt", "Short.".to_string()),
        // One run-on sentence: cut between words, so chunks overlap.
        ("d.txt", "and then the stream went on ".repeat(12)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_chunked_within_size_and_overlap_covering_every_byte() {
    let job = Job::new(
        r#"
[job]
name = "chunk-files"
batch_rows = 2

[[source]]
id = "docs"
kind = "blobs"
path = "docs/"

[[operator]]
id = "chunks"
plugin = "text-chunk"
capabilities = ["blobs"]
config = { column = "blob", max_chars = 80, overlap = 20 }
inputs = ["docs"]

[[sink]]
id = "out"
kind = "jsonl"
path = "out.jsonl"
inputs = ["chunks"]
"#,
    );
    std::fs::create_dir(job.file("docs")).unwrap();
    let docs = sample_documents();
    for (name, text) in &docs {
        std::fs::write(job.file("docs").join(name), text).unwrap();
    }
    std::fs::write(job.file("docs/empty.txt"), "").unwrap();
    job.run().await.expect("job runs");

    let rows = read_jsonl(&job.file("out.jsonl"));
    assert!(rows.iter().all(|r| r.get("blob").is_none()), "the blob column is dropped by default");
    let by_file = chunks_by(&rows, |r| {
        let path = r["path"].as_str().expect("path");
        path.rsplit('/').next().unwrap().to_string()
    });
    assert_eq!(
        by_file.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a.txt", "b.txt", "c.txt", "d.txt"],
        "empty.txt gives none"
    );
    for (name, text) in &docs {
        check_document(name, text, &by_file[*name], 80, 20, chars);
    }
    assert!(by_file["a.txt"].len() > 10, "the long document is split");
    assert_eq!(by_file["c.txt"].len(), 1);
    // Chunks of whole sentences longer than the overlap repeat nothing; chunks
    // cut between words repeat whole words.
    assert!(!overlaps(&by_file["a.txt"]), "a.txt is cut at sentences");
    assert!(overlaps(&by_file["d.txt"]), "d.txt is cut between words, with overlap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_column_is_chunked_by_bytes_and_keeps_the_other_columns() {
    let job = Job::new(
        r#"
[job]
name = "chunk-column"
batch_rows = 3

[[source]]
id = "articles"
kind = "jsonl"
path = "articles.jsonl"

[[operator]]
id = "chunks"
plugin = "text-chunk"
capabilities = ["blobs"]
config = { column = "body", max_bytes = 64, overlap = 16 }
inputs = ["articles"]

[[sink]]
id = "out"
kind = "jsonl"
path = "out.jsonl"
inputs = ["chunks"]
"#,
    );
    let mut docs: Vec<(i64, String)> =
        sample_documents().into_iter().enumerate().map(|(i, (_, t))| (i as i64, t)).collect();
    let word_id = docs.len() as i64;
    docs.push((word_id, "x".repeat(200)));
    let mut lines = String::new();
    for (id, text) in &docs {
        lines.push_str(&serde_json::json!({ "id": id, "body": text, "lang": "en" }).to_string());
        lines.push('\n');
    }
    lines.push_str(&serde_json::json!({ "id": 10, "body": "", "lang": "en" }).to_string());
    lines.push('\n');
    lines.push_str(&serde_json::json!({ "id": 11, "body": null, "lang": "en" }).to_string());
    lines.push('\n');
    std::fs::write(job.file("articles.jsonl"), lines).unwrap();
    job.run().await.expect("job runs");

    let rows = read_jsonl(&job.file("out.jsonl"));
    assert!(rows.iter().all(|r| r["lang"] == "en" && r.get("body").is_none()), "other columns repeat; body is dropped");
    let by_id = chunks_by(&rows, |r| r["id"].as_i64().expect("id").to_string());
    assert_eq!(by_id.len(), docs.len(), "the empty and the null body give no rows");
    for (id, text) in &docs {
        check_document(&format!("id {id}"), text, &by_id[&id.to_string()], 64, 16, bytes);
    }
    let xs = &by_id[&word_id.to_string()];
    assert!(xs.len() >= 4, "a 200-byte word is cut into 64-byte pieces: {xs:?}");
    assert!(xs.windows(2).all(|w| w[0].end - w[1].start == 16), "pieces of one word overlap by 16 bytes: {xs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_goes_to_the_dead_letter_sink_named() {
    let job = Job::new(
        r#"
[job]
name = "chunk-bad"

[[source]]
id = "docs"
kind = "blobs"
path = "docs/"

[[operator]]
id = "chunks"
plugin = "text-chunk"
capabilities = ["blobs"]
config = { column = "blob", max_chars = 100, max_chunks_per_document = 5 }
inputs = ["docs"]
on_error = { then = "dead-letter", dead_letter = "bad" }

[[sink]]
id = "out"
kind = "jsonl"
path = "out.jsonl"
inputs = ["chunks"]

[[sink]]
id = "bad"
kind = "jsonl"
path = "bad.jsonl"
"#,
    );
    std::fs::create_dir(job.file("docs")).unwrap();
    std::fs::write(job.file("docs/1-good.txt"), "A good document.\n\nIt has two paragraphs.").unwrap();
    std::fs::write(job.file("docs/2-latin1.txt"), b"caf\xe9 au lait").unwrap();
    std::fs::write(job.file("docs/3-long.txt"), "word ".repeat(200)).unwrap();
    std::fs::write(job.file("docs/4-good.txt"), "Another good one.").unwrap();
    job.run().await.expect("job completes");

    let good = chunks_by(&read_jsonl(&job.file("out.jsonl")), |r| r["path"].as_str().unwrap().to_string());
    let names: Vec<&str> = good.keys().map(|p| p.rsplit('/').next().unwrap()).collect();
    assert_eq!(names, ["1-good.txt", "4-good.txt"], "the valid documents are chunked");

    let bad = read_jsonl(&job.file("bad.jsonl"));
    let errors: BTreeMap<String, String> = bad
        .iter()
        .map(|r| {
            let path = r["path"].as_str().expect("dead-lettered rows keep their columns");
            (path.rsplit('/').next().unwrap().to_string(), r["_flumen_error"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(errors.keys().map(String::as_str).collect::<Vec<_>>(), ["2-latin1.txt", "3-long.txt"], "{bad:?}");
    assert_contains(&errors["2-latin1.txt"], &["2-latin1.txt", "not valid UTF-8", "offset 3"]);
    assert_contains(&errors["3-long.txt"], &["3-long.txt", "more than 5 chunks", "max_chunks_per_document"]);
}
