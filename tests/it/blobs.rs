//! Large objects by reference: bytes never copied into guests that do not read
//! them, reference counting and release, forged and foreign references,
//! spilling under a memory budget, blobs retained across a kill.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use arrow_array::{Array, LargeBinaryArray, StringArray, UInt64Array};
use rand::{Rng, SeedableRng};

use crate::checkpoint::{flumen, resume_to_completion};
use crate::common::{Job, assert_contains, kill_when};

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random()).collect()
}

/// Every row of the Parquet files under `path` (a file or a directory).
fn read_parquet(path: &Path) -> Vec<arrow_array::RecordBatch> {
    let files: Vec<std::path::PathBuf> = if path.is_dir() {
        let mut v: Vec<_> = std::fs::read_dir(path)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    };
    let mut out = Vec::new();
    for f in files {
        let file = std::fs::File::open(&f).unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
        out.extend(reader.map(|b| b.unwrap()));
    }
    out
}

/// (path → bytes) of a sink that wrote blob columns inline.
fn inline_blobs(path: &Path, column: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for b in read_parquet(path) {
        let paths = b.column_by_name("path").unwrap().as_any().downcast_ref::<StringArray>().unwrap().clone();
        let bytes = b.column_by_name(column).unwrap().as_any().downcast_ref::<LargeBinaryArray>().unwrap().clone();
        for i in 0..b.num_rows() {
            out.insert(paths.value(i).to_string(), bytes.value(i).to_vec());
        }
    }
    out
}

/// The acceptance case: a 10 MB object through five operators that never
/// read it. The counters show none of its bytes entered a guest, and the sink
/// still writes exactly its bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_object_crosses_five_operators_without_entering_a_guest() {
    let mut text = String::from(
        r#"
[job]
name = "by-reference"

[[source]]
id = "files"
kind = "blobs"
path = "data"
"#,
    );
    let mut prev = "files".to_string();
    for i in 1..=5 {
        text.push_str(&format!(
            "\n[[operator]]\nid = \"op{i}\"\nplugin = \"{{guest:passthrough}}\"\ninputs = [\"{prev}\"]\n"
        ));
        prev = format!("op{i}");
    }
    text.push_str(&format!(
        "\n[[sink]]\nid = \"out\"\nkind = \"parquet\"\npath = \"out.parquet\"\ninputs = [\"{prev}\"]\n"
    ));
    let job = Job::new(&text);
    std::fs::create_dir_all(job.file("data")).unwrap();
    let big = random_bytes(10 * 1000 * 1000, 1);
    std::fs::write(job.file("data/big.bin"), &big).unwrap();
    std::fs::write(job.file("data/small.txt"), b"a small one").unwrap();

    let summary = job.run().await.unwrap();
    for i in 1..=5 {
        let n = summary.node(&format!("op{i}")).unwrap();
        assert_eq!(n.rows_in, 2);
        assert_eq!(n.blob_bytes_read, 0, "op{i} read blob bytes");
        // Only the reference rows cross: paths, sizes, digests, media types, tokens.
        assert!(n.guest_bytes_in < 4096, "op{i}: {} bytes copied in", n.guest_bytes_in);
        assert!(n.guest_bytes_out < 4096, "op{i}: {} bytes copied out", n.guest_bytes_out);
    }
    assert_eq!(summary.blobs.memory_bytes + summary.blobs.peak_memory_bytes, 0, "files are served in place");
    assert_eq!(summary.blobs.bytes_read, big.len() as u64 + 11, "the sink read each blob once");
    let written = inline_blobs(&job.file("out.parquet"), "blob");
    assert_eq!(written.len(), 2);
    assert!(written["data/big.bin"] == big, "the sink resolved the reference to different bytes");
    assert_eq!(written["data/small.txt"], b"a small one");
    assert_eq!(summary.blobs.blobs, 0, "nothing is held once the job is done: {:?}", summary.blobs);
    assert!(summary.render().contains("blobs: 2"), "{}", summary.render());
}

/// A guest that reads blobs sees exactly their bytes, through a streaming
/// reader, and its reads are counted; without the grant it cannot link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_guest_gets_the_bytes_and_is_counted() {
    let job_text = |caps: &str| {
        format!(
            r#"
[job]
name = "read"
batch_rows = 2

[[source]]
id = "files"
kind = "blobs"
path = "data/*.bin"

[[operator]]
id = "probe"
plugin = "{{guest:blob-probe}}"
capabilities = {caps}
config = {{ mode = "read" }}
inputs = [{{ from = "files", partition = "hash", keys = ["blob"] }}]
parallelism = 2

[[sink]]
id = "out"
kind = "jsonl"
path = "out.jsonl"
inputs = ["probe"]
"#
        )
    };
    let job = Job::new(&job_text(r#"["blobs"]"#));
    std::fs::create_dir_all(job.file("data")).unwrap();
    let mut expected = BTreeMap::new();
    let mut total = 0;
    for i in 0..5u64 {
        let bytes = random_bytes(300_000 + i as usize * 70_001, i);
        let mut h: u64 = 0xcbf29ce484222325;
        for b in &bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100000001b3);
        }
        total += bytes.len() as u64;
        expected.insert(format!("data/f{i}.bin"), (bytes.len() as u64, h));
        std::fs::write(job.file(&format!("data/f{i}.bin")), &bytes).unwrap();
    }
    std::fs::write(job.file("data/ignored.txt"), b"not matched by the glob").unwrap();
    let summary = job.run().await.unwrap();
    let text = std::fs::read_to_string(job.file("out.jsonl")).unwrap();
    let mut got = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        got.insert(
            v["path"].as_str().unwrap().to_string(),
            (v["read_len"].as_u64().unwrap(), v["checksum"].as_u64().unwrap()),
        );
    }
    assert_eq!(got, expected, "bytes read through the reader differ");
    assert_eq!(summary.node("probe").unwrap().blob_bytes_read, total);

    let denied = Job::new(&job_text(r#"["log"]"#));
    std::fs::create_dir_all(denied.file("data")).unwrap();
    std::fs::write(denied.file("data/a.bin"), b"x").unwrap();
    let err = denied.run_err().await;
    assert_contains(&err, &["probe", "capability `blobs`", "does not grant it"]);
}

/// A guest cannot forge a reference, nor use one from another job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_foreign_references_are_refused() {
    let job = |mode: &str, caps: &str| {
        let j = Job::new(&format!(
            r#"
[job]
name = "forge"

[[source]]
id = "files"
kind = "blobs"
path = "data"

[[operator]]
id = "forger"
plugin = "{{guest:blob-probe}}"
capabilities = {caps}
config = {{ mode = "{mode}" }}
inputs = ["files"]

[[sink]]
id = "out"
kind = "parquet"
path = "out.parquet"
blobs = "reference"
inputs = ["forger"]
"#
        ));
        std::fs::create_dir_all(j.file("data")).unwrap();
        std::fs::write(j.file("data/a.txt"), b"secret bytes").unwrap();
        j
    };
    let err = job("forge", r#"["blobs"]"#).run_err().await;
    assert_contains(&err, &["forger[0]", "blob reference", "forged or belongs to another job", "column `blob`, row 0"]);
    let err = job("read-forged", r#"["blobs"]"#).run_err().await;
    assert_contains(&err, &["forger[0]", "forged or belongs to another job"]);

    // A reference written by one job (as a reference) is refused by another.
    let writer = Job::new(
        r#"
[job]
name = "writes-references"

[[source]]
id = "files"
kind = "blobs"
path = "data"

[[sink]]
id = "out"
kind = "parquet"
path = "refs.parquet"
blobs = "reference"
inputs = ["files"]
"#,
    );
    std::fs::create_dir_all(writer.file("data")).unwrap();
    std::fs::write(writer.file("data/a.txt"), b"secret bytes").unwrap();
    writer.run().await.unwrap();
    let reader = Job::new(&format!(
        r#"
[job]
name = "reads-them"

[[source]]
id = "refs"
kind = "parquet"
path = "{}"

[[operator]]
id = "reader"
plugin = "{{guest:blob-probe}}"
capabilities = ["blobs"]
config = {{ mode = "read" }}
inputs = ["refs"]

[[sink]]
id = "out"
kind = "jsonl"
path = "out.jsonl"
inputs = ["reader"]
"#,
        writer.file("refs.parquet").display()
    ));
    let err = reader.run_err().await;
    assert_contains(&err, &["reader[0]", "forged or belongs to another job"]);
}

/// More blob bytes than twice the memory budget, all alive at once (the
/// guest retains every copy it makes): the store spills, stays within its
/// budget, and every byte comes out right. Afterwards nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_over_twice_the_memory_budget_completes_by_spilling() {
    let job = Job::new(
        r#"
[job]
name = "spill"
batch_rows = 3

[blobs]
memory_mb = 4
spill_dir = "spill"

[[source]]
id = "files"
kind = "blobs"
path = "data"

[[operator]]
id = "copy"
plugin = "{guest:blob-probe}"
capabilities = ["blobs"]
config = { mode = "copy-retain" }
inputs = ["files"]

[[sink]]
id = "out"
kind = "parquet"
path = "out.parquet"
inputs = ["copy"]
"#,
    );
    std::fs::create_dir_all(job.file("data")).unwrap();
    let mut originals = BTreeMap::new();
    for i in 0..12u64 {
        let bytes = random_bytes(1 << 20, 100 + i);
        std::fs::write(job.file(&format!("data/{i:02}.bin")), &bytes).unwrap();
        originals.insert(format!("data/{i:02}.bin"), bytes);
    }
    let summary = job.run().await.unwrap();
    let b = summary.blobs;
    assert!(b.bytes_created >= 24 << 20, "{b:?}");
    assert!(b.spilled >= 4, "expected spills: {b:?}");
    assert!(b.peak_memory_bytes <= 4 << 20, "memory went past the budget: {b:?}");
    let written = inline_blobs(&job.file("out.parquet"), "blob");
    assert_eq!(written.len(), 12);
    for (path, bytes) in originals {
        let mut reversed = bytes.clone();
        reversed.reverse();
        assert!(written[&path] == reversed, "{path}: wrong bytes after spilling");
    }
    assert!(spill_dirs(&job.file("spill")).is_empty(), "the store's spill directory is removed at the end");
    assert!(job.file("spill").is_dir(), "the configured directory itself is kept");
}

/// Blobs a guest made and retained are pinned by checkpoints: after a kill,
/// the resumed job reads back every one it kept, including those made before
/// the kill. Afterwards the checkpoint directory holds only what the retained
/// checkpoints pin.
#[test]
fn retained_blobs_survive_a_kill_through_checkpoints() {
    let rows = 2400;
    let job = Job::new(&format!(
        r#"
[job]
name = "retained"
batch_rows = 20

[checkpoint]
interval_ms = 100
dir = "ck"
retain = 2

[[source]]
id = "gen"
kind = "generator"
rows = {rows}
rows_per_second = 2000
columns = [{{ name = "id", gen = "sequence" }}]

[[operator]]
id = "keep"
plugin = "{{guest:blob-probe}}"
capabilities = ["blobs"]
config = {{ mode = "make-retain", column = "id" }}
inputs = ["gen"]

[[sink]]
id = "out"
kind = "jsonl"
path = "out"
inputs = ["keep"]
"#
    ));
    let mut child = flumen(&job, false).spawn().unwrap();
    let durable = job.file("ck/.blobs");
    let pinned = || std::fs::read_dir(&durable).map(|d| d.count()).unwrap_or(0);
    // Killed as soon as a checkpoint has pinned blobs, long before its 1.2 s of input end.
    kill_when(&mut child, || pinned() > 1);
    let pinned_before = std::fs::read_dir(&durable).map(|d| d.count()).unwrap_or(0);
    assert!(pinned_before > 1, "the killed run pinned blobs for its checkpoints ({})", durable.display());
    let text = resume_to_completion(&job);
    let mut seen = BTreeMap::new();
    for entry in std::fs::read_dir(job.file("out")).unwrap().flatten() {
        if entry.path().extension().is_none_or(|e| e != "jsonl") {
            continue;
        }
        for line in std::fs::read_to_string(entry.path()).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let id = v["path"].as_str().unwrap().to_string();
            assert_eq!(v["content"].as_str().unwrap(), format!("made-{id}"), "{text}");
            *seen.entry(id.parse::<u64>().unwrap()).or_insert(0) += 1;
        }
    }
    assert_eq!(seen.len() as u64, rows, "every id's blob was read back: {text}");
    assert!(seen.values().all(|n| *n == 1), "each exactly once");
    // What stays in the durable directory is exactly what the retained checkpoints pin:
    // nothing leaked from the killed run, nothing a retained checkpoint needs is gone. (The
    // final checkpoint pins nothing — the guest released everything — but the one before
    // it is retained too, and pins what the guest held then, until retention drops it.)
    let left: BTreeSet<String> = std::fs::read_dir(&durable)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| !n.starts_with("key-"))
        .collect();
    let mut pinned_by_retained = BTreeSet::new();
    for region in std::fs::read_dir(job.file("ck")).unwrap().flatten() {
        let name = region.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        for manifest in std::fs::read_dir(region.path()).unwrap().flatten() {
            let file = manifest.file_name().to_string_lossy().to_string();
            if !(file.starts_with("chk-") && file.ends_with(".json")) {
                continue;
            }
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(manifest.path()).unwrap()).unwrap();
            for participant in v["manifest"]["participants"].as_object().unwrap().values() {
                for blob in participant["meta"]["blobs"].as_array().into_iter().flatten() {
                    pinned_by_retained.insert(blob["digest"].as_str().unwrap().to_string());
                }
            }
        }
    }
    let leaked: Vec<&String> = left.difference(&pinned_by_retained).collect();
    let missing: Vec<&String> = pinned_by_retained.difference(&left).collect();
    assert!(leaked.is_empty(), "{} blobs left that no retained checkpoint pins: {leaked:?}", leaked.len());
    assert!(missing.is_empty(), "{} blobs retained checkpoints pin are gone: {missing:?}", missing.len());
}

/// Sinks write references or bytes, as asked; the reference struct keeps its
/// extension type in the Parquet schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_write_bytes_or_references() {
    let job = Job::new(
        r#"
[job]
name = "sinks"

[[source]]
id = "files"
kind = "blobs"
path = "data"
column = "image"
column_type = "image"

[[sink]]
id = "bytes"
kind = "parquet"
path = "bytes.parquet"
inputs = ["files"]

[[sink]]
id = "refs"
kind = "parquet"
path = "refs.parquet"
blobs = "reference"
inputs = ["files"]
"#,
    );
    std::fs::create_dir_all(job.file("data")).unwrap();
    std::fs::write(job.file("data/a.png"), b"png bytes").unwrap();
    std::fs::write(job.file("data/.hidden"), b"skipped").unwrap();
    job.run().await.unwrap();
    assert_eq!(inline_blobs(&job.file("bytes.parquet"), "image")["data/a.png"], b"png bytes");
    let refs = read_parquet(&job.file("refs.parquet"));
    let field = refs[0].schema().field_with_name("image").unwrap().clone();
    assert_eq!(field.metadata().get("ARROW:extension:name").map(String::as_str), Some("flumen.image"));
    let sizes = refs[0].column_by_name("size").unwrap().as_any().downcast_ref::<UInt64Array>().unwrap().clone();
    assert_eq!(sizes.value(0), 9);
    let col = flumen_batch::media::BlobColumn::new(refs[0].column_by_name("image").unwrap().as_ref()).unwrap();
    let r = col.get(0).unwrap();
    assert_eq!(r.media_type, "image/png");
    assert_eq!(r.size, 9);
    assert_eq!(refs[0].num_rows(), 1, "hidden files are not listed");
    assert!(col.len() == 1 && !col.digests().is_null(0));
}

/// FNV-1a, as the `blob-probe` guest computes it over what it read.
fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// (path → (length, checksum)) from the `blob-probe` read mode's JSONL output.
fn probe_output(path: &Path) -> BTreeMap<String, (u64, u64)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["path"].as_str().unwrap().to_string(),
                (v["read_len"].as_u64().unwrap(), v["checksum"].as_u64().unwrap()),
            )
        })
        .collect()
}

/// A job reading `uris` twice over (two operators on one source).
fn two_readers_of(uris: &[String]) -> Job {
    let list = uris.iter().map(|u| format!("\"{u}\"")).collect::<Vec<_>>().join(", ");
    Job::new(&format!(
        r#"
[job]
name = "uris"

[[source]]
id = "remote"
kind = "blobs"
uris = [{list}]

[[operator]]
id = "first"
plugin = "{{guest:blob-probe}}"
capabilities = ["blobs"]
config = {{ mode = "read" }}
inputs = ["remote"]

[[operator]]
id = "second"
plugin = "{{guest:blob-probe}}"
capabilities = ["blobs"]
config = {{ mode = "read" }}
inputs = ["remote"]

[[sink]]
id = "out1"
kind = "jsonl"
path = "first.jsonl"
inputs = ["first"]

[[sink]]
id = "out2"
kind = "jsonl"
path = "second.jsonl"
inputs = ["second"]
"#
    ))
}

/// Objects named by `http://` URIs are fetched once, when the source reaches
/// them, and every reader after that is served by the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_objects_are_fetched_once_and_read_by_reference() {
    let served = tempfile::tempdir().unwrap();
    let a = random_bytes(300_000, 7);
    std::fs::write(served.path().join("a.bin"), &a).unwrap();
    std::fs::write(served.path().join("b.txt"), b"hello over http").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = std::process::Command::new("python3")
        .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", &port.to_string(), "--directory"])
        .arg(served.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 serves the test files over HTTP");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "the HTTP server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let base = format!("http://127.0.0.1:{port}");
    let job = two_readers_of(&[format!("{base}/a.bin"), format!("{base}/b.txt")]);
    let result = job.run().await;
    let _ = server.kill();
    let out = server.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    let summary = result.unwrap();
    let expected: BTreeMap<String, (u64, u64)> = [
        (format!("{base}/a.bin"), (a.len() as u64, fnv(&a))),
        (format!("{base}/b.txt"), (15, fnv(b"hello over http"))),
    ]
    .into();
    assert_eq!(probe_output(&job.file("first.jsonl")), expected);
    assert_eq!(probe_output(&job.file("second.jsonl")), expected);
    for path in ["/a.bin", "/b.txt"] {
        let gets = log.lines().filter(|l| l.contains(&format!("\"GET {path} "))).count();
        assert_eq!(gets, 1, "{path} fetched {gets} times:\n{log}");
    }
    assert_eq!(summary.blobs.created, 2);
    let missing = two_readers_of(&[format!("{base}/nope.bin")]);
    let err = missing.run_err().await;
    assert_contains(&err, &["remote", "nope.bin", "cannot fetch"]);
}

/// The same from a real S3 server (moto's), when `FLUMEN_S3_TESTS=1`.
#[test]
fn s3_objects_are_read_by_reference() {
    use crate::object_store::{Moto, Store};
    if std::env::var("FLUMEN_S3_TESTS").as_deref() != Ok("1") {
        eprintln!("skipped: set FLUMEN_S3_TESTS=1 with moto_server on PATH");
        return;
    }
    let moto = Moto::start();
    moto.request("PUT", "/flumen", b"").expect_status(200, "create the bucket");
    let bytes = random_bytes(200_000, 9);
    moto.request("PUT", "/flumen/media/a.bin", &bytes).expect_status(200, "put the object");
    let uri = "s3://flumen/media/a.bin".to_string();
    let job = two_readers_of(std::slice::from_ref(&uri));
    let s3 = moto.store("unused");
    let (code, text) = crate::checkpoint::finish(s3.env(flumen(&job, false)).spawn().unwrap(), "run");
    assert_eq!(code, 0, "{text}");
    let expected: BTreeMap<String, (u64, u64)> = [(uri, (bytes.len() as u64, fnv(&bytes)))].into();
    assert_eq!(probe_output(&job.file("first.jsonl")), expected);
    assert_eq!(probe_output(&job.file("second.jsonl")), expected);
}

/// Every file under `dir` (relative path → bytes).
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().display().to_string(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// How the store names its spill directories and their marker files.
const SPILL_DIR_PREFIX: &str = "flumen-spill-";
const SPILL_MARKER: &str = ".flumen-spill";

/// Spill directories of the store in `dir`.
fn spill_dirs(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(SPILL_DIR_PREFIX))
                .collect()
        })
        .unwrap_or_default()
}

const SPILLING_JOB: &str = r#"
[job]
name = "spill-here"
batch_rows = 2

[blobs]
memory_mb = 1
spill_dir = "."

[[source]]
id = "files"
kind = "blobs"
path = "data"

[[operator]]
id = "copy"
plugin = "{guest:blob-probe}"
capabilities = ["blobs"]
config = { mode = "copy-retain" }
inputs = ["files"]

[[sink]]
id = "out"
kind = "parquet"
path = "out.parquet"
inputs = ["copy"]
"#;

/// `spill_dir = "."`: the job's own directory. The store spills into a
/// directory of its own in it and removes only that: the job file, the
/// inputs, an earlier output and anything else there are all kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spilling_into_the_job_directory_removes_nothing_of_the_users() {
    let job = Job::new(SPILLING_JOB);
    std::fs::create_dir_all(job.file("data")).unwrap();
    for i in 0..3u64 {
        std::fs::write(job.file(&format!("data/{i}.bin")), random_bytes(3 << 20, 300 + i)).unwrap();
    }
    std::fs::write(job.file("notes.txt"), b"the user's own file").unwrap();
    std::fs::create_dir_all(job.file("results")).unwrap();
    std::fs::write(job.file("results/earlier.parquet"), b"an earlier output").unwrap();
    let before = tree(job.dir.path());
    let summary = job.run().await.unwrap();
    assert!(summary.blobs.spilled >= 3, "the copies spilled: {:?}", summary.blobs);
    let after = tree(job.dir.path());
    for (path, bytes) in &before {
        assert!(after.get(path) == Some(bytes), "{path} was removed or changed by the run");
    }
    assert_eq!(inline_blobs(&job.file("out.parquet"), "blob").len(), 3);
    assert!(spill_dirs(job.dir.path()).is_empty(), "the store's spill directory is removed at the end");
}

/// A killed run leaves its spill directory behind; the next run using the
/// same `spill_dir` reclaims it (its owner is gone), and nothing else.
#[test]
fn a_killed_runs_spill_directory_is_reclaimed_by_the_next_run() {
    // The copies spill at once; the throttled generator keeps the run going.
    let slow = SPILLING_JOB.replace(
        "[[sink]]",
        r#"[[source]]
id = "ticks"
kind = "generator"
rows = 100000
rows_per_second = 100
columns = [{ name = "id", gen = "sequence" }]

[[sink]]
id = "drop"
kind = "blackhole"
inputs = ["ticks"]

[[sink]]"#,
    );
    let job = Job::new(&slow);
    std::fs::create_dir_all(job.file("data")).unwrap();
    for i in 0..2u64 {
        std::fs::write(job.file(&format!("data/{i}.bin")), random_bytes(2 << 20, 400 + i)).unwrap();
    }
    let unmarked = job.file(&format!("{}not-ours", SPILL_DIR_PREFIX));
    std::fs::create_dir_all(&unmarked).unwrap();
    std::fs::write(unmarked.join("keep.txt"), b"no marker: not the store's").unwrap();
    let mut child = flumen(&job, false).spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let left = loop {
        let spilled: Vec<_> = spill_dirs(job.dir.path())
            .into_iter()
            .filter(|d| d.join(SPILL_MARKER).is_file() && std::fs::read_dir(d).unwrap().count() > 1)
            .collect();
        if !spilled.is_empty() {
            break spilled;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it spilled");
        assert!(std::time::Instant::now() < deadline, "the run did not spill");
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap();
    let _ = child.wait();
    assert!(left.iter().all(|d| d.exists()), "a killed run cannot clean up");
    // The next run (the quick job) reclaims it.
    std::fs::write(
        &job.path,
        SPILLING_JOB.replace("{guest:blob-probe}", &crate::common::guest("blob-probe").display().to_string()),
    )
    .unwrap();
    let (code, text) = crate::checkpoint::finish(flumen(&job, false).spawn().unwrap(), "second run");
    assert_eq!(code, 0, "{text}");
    assert!(left.iter().all(|d| !d.exists()), "the killed run's spill directory is reclaimed: {left:?}");
    assert_eq!(spill_dirs(job.dir.path()), vec![unmarked.clone()], "only the unmarked directory is left");
    assert!(unmarked.join("keep.txt").is_file());
}

const WRITES_REFERENCES: &str = r#"
[job]
name = "writes-references"

[checkpoint]
dir = "ck"
interval_ms = 60000

[[source]]
id = "files"
kind = "blobs"
path = "data"

[[sink]]
id = "out"
kind = "parquet"
path = "refs.parquet"
blobs = "reference"
inputs = ["files"]
"#;

/// Two jobs share a checkpoint directory. References one wrote are refused
/// by the other, even resumed on that directory (each job has its key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_sharing_a_checkpoint_directory_do_not_share_a_key() {
    let writer = Job::new(WRITES_REFERENCES);
    std::fs::create_dir_all(writer.file("data")).unwrap();
    std::fs::write(writer.file("data/a.txt"), b"secret bytes").unwrap();
    writer.run().await.unwrap();
    let reader_path = writer.file("reader.toml");
    std::fs::write(
        &reader_path,
        format!(
            r#"
[job]
name = "reads-them"

[checkpoint]
dir = "ck"
interval_ms = 60000

[[source]]
id = "refs"
kind = "parquet"
path = "refs"

[[operator]]
id = "reader"
plugin = "{}"
capabilities = ["blobs"]
config = {{ mode = "read" }}
inputs = ["refs"]

[[sink]]
id = "read"
kind = "jsonl"
path = "read.jsonl"
inputs = ["reader"]
"#,
            crate::common::guest("blob-probe").display()
        ),
    )
    .unwrap();
    // The checkpoint sink wrote its output as a directory of part files or a file; read either.
    let refs = writer.file("refs.parquet");
    std::fs::create_dir_all(writer.file("refs")).unwrap();
    if refs.is_dir() {
        for e in std::fs::read_dir(&refs).unwrap().flatten() {
            if e.path().is_file() && e.path().extension().is_some_and(|x| x == "parquet") {
                std::fs::copy(e.path(), writer.file("refs").join(e.file_name())).unwrap();
            }
        }
    } else {
        std::fs::copy(&refs, writer.file("refs/part.parquet")).unwrap();
    }
    let engine = crate::common::engine();
    let job = engine.prepare(&reader_path).await.unwrap();
    #[allow(clippy::needless_update, reason = "run options may grow more fields")]
    let options = flumen_engine::RunOptions { resume: true, ..Default::default() };
    let err = job.run_with(options, std::future::pending()).await.unwrap_err().to_string();
    assert_contains(&err, &["reader[0]", "forged or belongs to another job"]);
}

/// The most resident memory `child` had (`VmHWM`, KiB), read until it exits; and its exit code.
fn watch_peak_rss(mut child: std::process::Child) -> (u64, i32, String) {
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status)
            && let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kib);
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (code, text) = crate::checkpoint::finish(child, "run");
    (peak, code, text)
}

/// A 200 MiB file written inline by a Parquet sink under a 16 MiB blob
/// budget: the sink holds the blob and the Parquet page made of it, not five
/// copies (no builder copy, no dictionary, compression or statistics over
/// it, the row group written out at once), so the process's peak resident
/// memory stays within three times the blob plus a fixed allowance for the runtime.
#[test]
fn a_large_blob_is_written_inline_in_bounded_memory() {
    const SIZE: usize = 200 << 20;
    const OVERHEAD_KIB: u64 = 200 << 10;
    let job = Job::new(
        r#"
[job]
name = "big-inline"

[blobs]
memory_mb = 16

[[source]]
id = "files"
kind = "blobs"
path = "data"

[[sink]]
id = "out"
kind = "parquet"
path = "out.parquet"
inputs = ["files"]
"#,
    );
    std::fs::create_dir_all(job.file("data")).unwrap();
    let mut sum = 0xcbf29ce484222325u64;
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(job.file("data/big.bin")).unwrap());
        for i in 0..(SIZE >> 23) as u64 {
            let chunk = random_bytes(8 << 20, 500 + i);
            sum = chunk.iter().fold(sum, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100000001b3));
            f.write_all(&chunk).unwrap();
        }
    }
    let (peak_kib, code, text) = watch_peak_rss(flumen(&job, false).spawn().unwrap());
    assert_eq!(code, 0, "{text}");
    let blob_kib = (SIZE >> 10) as u64;
    assert!(peak_kib >= blob_kib, "the sink read the blob ({peak_kib} KiB peak)");
    let bound = 3 * blob_kib + OVERHEAD_KIB;
    assert!(peak_kib <= bound, "peak resident memory {peak_kib} KiB is more than {bound} KiB");
    let batches = read_parquet(&job.file("out.parquet"));
    let bytes = batches[0].column_by_name("blob").unwrap().as_any().downcast_ref::<LargeBinaryArray>().unwrap();
    assert_eq!(bytes.value(0).len(), SIZE);
    assert_eq!(fnv(bytes.value(0)), sum, "the bytes written are the file's");
}

/// A sink that cannot read a blob names itself, the row within its whole
/// input (not within one batch) and the column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sinks_blob_error_names_the_sink_and_the_row_of_its_input() {
    let job = Job::new(
        r#"
[job]
name = "bad-refs"
batch_rows = 2

[[source]]
id = "refs"
kind = "parquet"
path = "refs.parquet"

[[sink]]
id = "out"
kind = "parquet"
path = "out.parquet"
inputs = ["refs"]
"#,
    );
    write_forged_refs(&job.file("refs.parquet"), 5, 4, 10);
    let err = job.run_err().await;
    assert_contains(&err, &["out: ", "column `blob` of input row 4", "forged or belongs to another job"]);
}

/// `rows` references in a Parquet file (column `blob`, typed `flumen.blob`):
/// forged ones, with a made-up digest and no valid token; row `bad` has size `bad_size`.
fn write_forged_refs(path: &Path, rows: usize, bad: usize, bad_size: u64) {
    use flumen_batch::media::{BlobColumnBuilder, BlobRef, blob_field};
    let mut b = BlobColumnBuilder::new();
    for i in 0..rows {
        let r = BlobRef {
            digest: [i as u8; 32],
            size: if i == bad { bad_size } else { 0 },
            media_type: "image/png".into(),
            token: [0; 16],
        };
        b.append(if i == bad { Some(&r) } else { None });
    }
    let schema = std::sync::Arc::new(arrow_schema_of(vec![blob_field("blob", true)]));
    let batch = arrow_array::RecordBatch::try_new(schema.clone(), vec![std::sync::Arc::new(b.finish())]).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn arrow_schema_of(fields: Vec<arrow::datatypes::Field>) -> arrow::datatypes::Schema {
    arrow::datatypes::Schema::new(fields)
}
