//! The conformance suite (tests/conformance/README.md): the same seven
//! operators written in Rust, Python, JavaScript and C, built with `flumen
//! plugin build`, run over the same input; every language's output file must
//! equal the Rust operator's byte for byte, and the Rust output must pass the
//! spec's independent oracle (`check_outputs.py`). Bad input must end the same
//! way in every language. A language whose toolchain is missing is skipped
//! with a message, unless FLUMEN_CONFORMANCE_TESTS=1 (CI) makes it a failure;
//! `sdk/install-toolchains.sh` installs them all.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::common::{assert_contains, engine, flumen_bin};

const LANGS: &[&str] = &["rust", "python", "js", "c"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn suite() -> PathBuf {
    root().join("tests/conformance")
}

fn required() -> bool {
    std::env::var("FLUMEN_CONFORMANCE_TESTS").as_deref() == Ok("1")
}

/// The tool a language's build needs that is missing here, if any.
fn missing_tool(lang: &str) -> Option<String> {
    let tools = root().join("target/sdk-tools/python/bin");
    let on_path = |name: &str| {
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
    };
    let have = |name: &str, local: PathBuf| local.is_file() || on_path(name);
    match lang {
        "python" if !have("componentize-py", tools.join("componentize-py")) => Some("componentize-py".into()),
        "js" if !have("jco", root().join("sdk/js/node_modules/.bin/jco")) => Some("jco".into()),
        "c" if !on_path("clang-16") => Some("clang-16".into()),
        "c" if !have("wasm-tools", tools.join("wasm-tools")) => Some("wasm-tools".into()),
        _ => None,
    }
}

/// The languages to run: all whose toolchain is here (every one under FLUMEN_CONFORMANCE_TESTS=1).
fn languages() -> Vec<&'static str> {
    LANGS
        .iter()
        .copied()
        .filter(|lang| match missing_tool(lang) {
            None => true,
            Some(tool) if required() => panic!(
                "FLUMEN_CONFORMANCE_TESTS=1 but `{tool}` ({lang}) is missing: run sdk/install-toolchains.sh {lang}"
            ),
            Some(tool) => {
                eprintln!(
                    "skipped {lang}: `{tool}` is missing (sdk/install-toolchains.sh {lang}; \
                     FLUMEN_CONFORMANCE_TESTS=1 makes this a failure)"
                );
                false
            }
        })
        .collect()
}

/// Every file under `dir` (sorted, recursively), for build stamps.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == "node_modules" || name == "target" || name.ends_with(".wasm") || name == "__pycache__" {
            continue;
        }
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Builds `tests/conformance/<lang>/<op>` with `flumen plugin build`, unless a
/// build of the same sources (the plugin, its SDK, the WIT) is already there.
fn component(lang: &str, op: &str) -> PathBuf {
    let dir = suite().join(lang).join(op);
    let out_dir = root().join("target/conformance").join(lang);
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(format!("{op}.wasm"));
    let sdk = match lang {
        "rust" => root().join("sdk/rust/src"),
        other => root().join("sdk").join(other),
    };
    let mut files = Vec::new();
    for d in [dir.as_path(), sdk.as_path(), &root().join("wit")] {
        files_under(d, &mut files);
    }
    let mut stamp = String::new();
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_default();
        stamp.push_str(&format!("{} {:016x}\n", f.display(), xxhash_rust::xxh3::xxh3_64(&bytes)));
    }
    let stamp_path = out_dir.join(format!("{op}.stamp"));
    if out.is_file() && std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp.as_str()) {
        return out;
    }
    let result = Command::new(flumen_bin())
        .args(["plugin", "build"])
        .arg(&dir)
        .arg("--out")
        .arg(&out)
        .env("CARGO_TARGET_DIR", env!("FLUMEN_GUEST_TARGET_DIR"))
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "flumen plugin build {} failed:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    std::fs::write(&stamp_path, stamp).unwrap();
    out
}

/// The suite's input, written once per test process by make_input.py.
fn input() -> &'static Path {
    static INPUT: OnceLock<tempfile::TempDir> = OnceLock::new();
    INPUT
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let status = Command::new("python3")
                .arg(suite().join("make_input.py"))
                .arg(dir.path())
                .arg("2000")
                .status()
                .expect("python3 runs make_input.py");
            assert!(status.success(), "make_input.py failed");
            dir
        })
        .path()
}

/// The job template `jobs/<op>.toml` with `component`, edited by `edit`.
fn job_text(op: &str, component: &Path, edit: impl Fn(String) -> String) -> String {
    let text = std::fs::read_to_string(suite().join("jobs").join(format!("{op}.toml"))).unwrap();
    let text = text
        .replace("{plugin}", &component.display().to_string())
        .replace("{input}", &input().display().to_string())
        .replace("{models}", &root().join("tests/models").display().to_string());
    edit(text)
}

/// Runs a job in a fresh directory: the summary, or the error's text; and the directory.
async fn run_job(text: &str) -> (Result<flumen_engine::JobSummary, String>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.toml");
    std::fs::write(&path, text).unwrap();
    let result = match engine().prepare(&path).await {
        Ok(job) => job.run(std::future::pending()).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    (result, dir)
}

/// Runs `op` in every language; each output must equal Rust's, which must pass the oracle.
async fn conform(op: &str) {
    let mut reference: Option<(String, Vec<u8>)> = None;
    for lang in languages() {
        let wasm = component(lang, op);
        let (result, dir) = run_job(&job_text(op, &wasm, |t| t)).await;
        if let Err(e) = &result {
            panic!("{lang} `{op}` failed: {e}");
        }
        let out = dir.path().join("out/result.jsonl");
        let bytes = std::fs::read(&out).unwrap_or_else(|e| panic!("{lang} `{op}` wrote no output: {e}"));
        assert!(!bytes.is_empty(), "{lang} `{op}` wrote an empty output");
        match &reference {
            None => {
                // The first language is Rust: check it against the spec's oracle.
                assert_eq!(lang, "rust");
                let check = Command::new("python3")
                    .arg(suite().join("check_outputs.py"))
                    .arg(op)
                    .arg(input())
                    .arg(&out)
                    .output()
                    .expect("python3 runs check_outputs.py");
                assert!(
                    check.status.success(),
                    "the Rust `{op}` output breaks the spec: {}{}",
                    String::from_utf8_lossy(&check.stdout),
                    String::from_utf8_lossy(&check.stderr)
                );
                reference = Some((lang.to_string(), bytes));
            }
            Some((_, want)) => {
                if &bytes != want {
                    let got = String::from_utf8_lossy(&bytes);
                    let want = String::from_utf8_lossy(want);
                    let (n, (g, w)) = got
                        .lines()
                        .zip(want.lines())
                        .enumerate()
                        .find(|(_, (g, w))| g != w)
                        .map(|(i, p)| (i + 1, p))
                        .unwrap_or((0, ("(length differs)", "")));
                    panic!(
                        "{lang} `{op}` differs from Rust ({} vs {} lines); first difference, line {n}:\n  rust: {w}\n  {lang}: {g}",
                        got.lines().count(),
                        want.lines().count()
                    );
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_filter() {
    conform("filter").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_map() {
    conform("map").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_strings() {
    conform("strings").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_count() {
    conform("count").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_blob_size() {
    conform("blob-size").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_window() {
    conform("window").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_infer() {
    if crate::inference::have_ort() {
        conform("infer").await;
    }
}

/// A config or schema error: the job fails before any data flows, naming the
/// operator and `needle`, in every language.
async fn fails_at_open(op: &str, edit: impl Fn(String) -> String, needle: &str) {
    for lang in languages() {
        let wasm = component(lang, op);
        let (result, dir) = run_job(&job_text(op, &wasm, &edit)).await;
        let Err(e) = result else { panic!("{lang} `{op}`: the job should have failed") };
        assert_contains(&e, &["op[0]", "`open` failed", needle]);
        assert!(!dir.path().join("out/result.jsonl").exists(), "{lang} `{op}`: no output may be written: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_missing_config_key_fails_at_open_in_every_language() {
    fails_at_open(
        "filter",
        |t| t.replace("config = { column = \"qty\", min = 3 }", "config = { column = \"qty\" }"),
        "min",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_wrong_column_type_fails_at_open_in_every_language() {
    fails_at_open("filter", |t| t.replace("column = \"qty\"", "column = \"text\""), "text").await;
    fails_at_open("count", |t| t.replace("key = \"key\"", "key = \"qty\""), "qty").await;
}

fn ids(path: &Path) -> Vec<i64> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_a_failing_guest_dead_letters_the_same_row_in_every_language() {
    for lang in languages() {
        let wasm = component(lang, "map");
        let text = job_text("map", &wasm, |t| {
            t.replace("config = { out = \"total\" }", "config = { out = \"total\", fail_on_id = 7 }\non_error = { then = \"dead-letter\", dead_letter = \"dlq\" }")
                + "\n[[sink]]\nid = \"dlq\"\nkind = \"jsonl\"\npath = \"out/dlq.jsonl\"\n"
        });
        let (result, dir) = run_job(&text).await;
        if let Err(e) = result {
            panic!("{lang}: the job must go on past the failing row: {e}");
        }
        let kept = ids(&dir.path().join("out/result.jsonl"));
        assert_eq!(kept, (0..2000).filter(|&i| i != 7).collect::<Vec<i64>>(), "{lang}: every other row, in order");
        let dead = std::fs::read_to_string(dir.path().join("out/dlq.jsonl")).unwrap();
        assert_eq!(ids(&dir.path().join("out/dlq.jsonl")), vec![7], "{lang}: exactly row 7 is dead-lettered");
        // C's abort() is a trap without a message: the host quotes what the
        // guest logged at error level before it (flumen_panic).
        assert!(dead.contains("map: failing on id 7"), "{lang}: the error names the cause: {dead}");
    }
}

/// componentize-py keeps what crosses the boundary: a long run stays under
/// its memory cap because the host recycles the instance between batches,
/// and neither output nor window state notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_operators_run_10000_batches_under_a_memory_cap() {
    if missing_tool("python").is_some() {
        assert!(!required(), "FLUMEN_CONFORMANCE_TESTS=1 but componentize-py is missing");
        eprintln!("skipped: componentize-py is missing (sdk/install-toolchains.sh python)");
        return;
    }
    let map = component("python", "map");
    let rows = 10_000 * 256;
    let text = format!(
        r#"
[job]
name = "python-long-run"
batch_rows = 256

[[source]]
id = "g"
kind = "generator"
rows = {rows}
columns = [{{ name = "id", gen = "sequence" }}, {{ name = "qty", gen = "uniform-int", min = 0, max = 9 }}, {{ name = "amount", gen = "uniform-float", min = 0, max = 10 }}]

[[operator]]
id = "op"
plugin = "{}"
inputs = ["g"]
limits = {{ memory_mb = 40 }}

[[sink]]
id = "out"
kind = "parquet"
path = "out/result.parquet"
inputs = ["op"]
"#,
        map.display()
    );
    let (result, dir) = run_job(&text).await;
    let summary = result.unwrap_or_else(|e| panic!("the long Python run failed: {e}"));
    let op = summary.nodes.iter().find(|n| n.id.as_str() == "op").unwrap();
    assert_eq!(op.batches_in, 10_000);
    assert!(op.recycled >= 1, "a 40 MiB cap must have made the host recycle the Python instance");
    // Every row once, in order, with the right product.
    let file = std::fs::File::open(dir.path().join("out/result.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let mut next = 0i64;
    for batch in reader {
        let batch = batch.unwrap();
        let col = |name: &str| batch.column(batch.schema().index_of(name).unwrap()).clone();
        let id = col("id");
        let id = id.as_any().downcast_ref::<arrow_array::Int64Array>().unwrap();
        let qty = col("qty");
        let qty = qty.as_any().downcast_ref::<arrow_array::Int64Array>().unwrap();
        let amount = col("amount");
        let amount = amount.as_any().downcast_ref::<arrow_array::Float64Array>().unwrap();
        let total = col("total");
        let total = total.as_any().downcast_ref::<arrow_array::Float64Array>().unwrap();
        for i in 0..batch.num_rows() {
            assert_eq!(id.value(i), next, "rows lost, repeated or reordered");
            assert_eq!(total.value(i), amount.value(i) * qty.value(i) as f64);
            next += 1;
        }
    }
    assert_eq!(next, rows as i64);

    // Windows kept in Python memory survive recycling through save/restore.
    let window = component("python", "window");
    let plain = job_text("window", &window, |t| t);
    let recycled = plain
        .replace("config = { size_ms = 1000 }", "config = { size_ms = 1000 }\nlimits = { recycle_after_calls = 3 }");
    assert_ne!(plain, recycled);
    let (a, da) = run_job(&plain).await;
    let (b, db) = run_job(&recycled).await;
    a.unwrap();
    let b = b.unwrap();
    assert!(b.nodes.iter().find(|n| n.id.as_str() == "op").unwrap().recycled >= 3);
    assert_eq!(
        std::fs::read(da.path().join("out/result.jsonl")).unwrap(),
        std::fs::read(db.path().join("out/result.jsonl")).unwrap(),
        "recycling every 3 batches must not change the windows"
    );
}

/// The C SDK's committed bindings were generated from this `wit/` (and not
/// edited since): `sdk/c/check-drift.sh`, which needs no wit-bindgen.
#[test]
fn c_bindings_are_generated_from_this_wit() {
    let out = Command::new("bash").arg(root().join("sdk/c/check-drift.sh")).output().unwrap();
    assert!(
        out.status.success(),
        "sdk/c/gen is out of date with wit/dataflow.wit (run sdk/c/regen.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The JavaScript SDK's own tests under Node (UTF-8, key encoding, builders, views, config errors).
#[test]
fn js_sdk_unit_tests_pass() {
    let Ok(out) = Command::new("node").arg("--test").arg(root().join("sdk/js/test")).output() else {
        assert!(!required(), "FLUMEN_CONFORMANCE_TESTS=1 but node is missing");
        eprintln!("skipped: node is missing");
        return;
    };
    assert!(
        out.status.success(),
        "node --test sdk/js/test failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `flumen plugin new --lang <lang>` gives a working filter in every
/// language: `flumen plugin test` builds it, runs its sample job and finds
/// the expected rows; a wrong expectation makes it fail, naming the line.
#[test]
fn plugin_new_then_test_passes_in_every_language() {
    for lang in languages() {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("keep-{lang}");
        let out = Command::new(flumen_bin())
            .args(["plugin", "new", &name, "--lang", lang])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{lang}: {}", String::from_utf8_lossy(&out.stderr));
        let plugin = dir.path().join(&name);
        let test = || {
            Command::new(flumen_bin())
                .args(["plugin", "test"])
                .arg(&plugin)
                .env("CARGO_TARGET_DIR", env!("FLUMEN_GUEST_TARGET_DIR"))
                .output()
                .unwrap()
        };
        let out = test();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{lang}: plugin test failed:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert_contains(&stdout, &[&format!("{lang} operator"), "matches sample/expected.jsonl (7 rows)"]);

        let expected = plugin.join("sample/expected.jsonl");
        let text = std::fs::read_to_string(&expected).unwrap().replace("\"qty\":3", "\"qty\":4");
        std::fs::write(&expected, text).unwrap();
        let out = test();
        assert!(!out.status.success(), "{lang}: a wrong expectation must fail the test");
        assert_contains(&String::from_utf8_lossy(&out.stderr), &["line ", "FAILED"]);
    }
}

/// `examples/polyglot`: one pipeline of operators in Python, JavaScript, C
/// and Rust, each built from its directory by `flumen run` itself; every
/// output value is recomputed here from the input.
#[test]
fn the_polyglot_example_runs_operators_in_four_languages() {
    if languages().len() < LANGS.len() {
        eprintln!("skipped: the polyglot example needs every guest toolchain");
        return;
    }
    let example = root().join("examples/polyglot");
    let _ = std::fs::remove_dir_all(example.join("out"));
    let out = Command::new(flumen_bin())
        .args(["run", "--quiet", "job.toml"])
        .current_dir(&example)
        .env("CARGO_TARGET_DIR", env!("FLUMEN_GUEST_TARGET_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "flumen run examples/polyglot/job.toml failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for plugin in ["clean/clean.wasm", "score/score.wasm", "fingerprint/fingerprint.wasm", "tally/tally.wasm"] {
        assert!(example.join(plugin).is_file(), "{plugin} was not built by `flumen run`");
    }

    let input = std::fs::read_to_string(example.join("data/reviews.csv")).unwrap();
    let positive = ["great", "love", "excellent", "sturdy", "quiet", "perfect"];
    let negative = ["broken", "noisy", "flimsy", "late", "awful", "refund"];
    let mut tally: std::collections::HashMap<String, i64> = Default::default();
    let mut expected = Vec::new();
    for line in input.lines().skip(1) {
        let mut fields = line.splitn(4, ',');
        let (id, product, _stars, text) =
            (fields.next().unwrap(), fields.next().unwrap(), fields.next().unwrap(), fields.next().unwrap());
        let clean = text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
        if clean.is_empty() {
            continue;
        }
        let words: Vec<String> = clean.split(' ').map(str::to_string).collect();
        let score: i64 = words
            .iter()
            .map(|w| i64::from(positive.contains(&w.as_str())) - i64::from(negative.contains(&w.as_str())))
            .sum();
        let fingerprint =
            clean.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        let count = tally.entry(product.to_string()).or_insert(0);
        *count += 1;
        expected.push((
            id.parse::<i64>().unwrap(),
            clean,
            score as f64 / words.len() as f64,
            fingerprint as i64,
            *count,
        ));
    }
    let got: Vec<serde_json::Value> = std::fs::read_to_string(example.join("out/reviews.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), expected.len(), "rows with no words are dropped, every other row kept");
    for (row, (id, clean, sentiment, fingerprint, count)) in got.iter().zip(&expected) {
        assert_eq!(row["id"].as_i64(), Some(*id));
        assert_eq!(row["clean"].as_str(), Some(clean.as_str()), "Python's clean text, row {id}");
        assert_eq!(row["sentiment"].as_f64(), Some(*sentiment), "JavaScript's score, row {id}");
        assert_eq!(row["fingerprint"].as_i64(), Some(*fingerprint), "C's fingerprint, row {id}");
        assert_eq!(row["product_reviews"].as_i64(), Some(*count), "Rust's tally, row {id}");
    }
}

/// The Python SDK's own tests under CPython (`sdk/python/tests`), over the
/// bindings componentize-py generates from this `wit/`.
#[test]
fn python_sdk_unit_tests_pass() {
    if missing_tool("python").is_some() {
        assert!(!required(), "FLUMEN_CONFORMANCE_TESTS=1 but componentize-py is missing");
        eprintln!("skipped: componentize-py is missing (sdk/install-toolchains.sh python)");
        return;
    }
    let local = root().join("target/sdk-tools/python/bin/componentize-py");
    let componentize = if local.is_file() { local } else { PathBuf::from("componentize-py") };
    let bindings = tempfile::tempdir().unwrap();
    let out = Command::new(componentize)
        .arg("-d")
        .arg(root().join("wit/dataflow.wit"))
        .args(["-w", "operator", "bindings"])
        .arg(bindings.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "componentize-py bindings failed: {}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new("python3")
        .args(["-m", "unittest", "discover", "-s"])
        .arg(root().join("sdk/python/tests"))
        .env("FLUMEN_PY_BINDINGS", bindings.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 runs the Python SDK's tests");
    assert!(
        out.status.success(),
        "the Python SDK's tests failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `flumen plugin build` refuses what it cannot vouch for, naming why: a
/// directory that is no plugin, and a component importing a capability its
/// plugin.toml does not list (the job would grant too little, or too much).
#[test]
fn plugin_build_refuses_a_non_plugin_and_an_unlisted_capability() {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(flumen_bin()).args(["plugin", "build"]).arg(empty.path()).output().unwrap();
    assert!(!out.status.success());
    assert_contains(&String::from_utf8_lossy(&out.stderr), &["is not a plugin", "Cargo.toml", "plugin.toml"]);

    if !languages().contains(&"c") {
        return;
    }
    // The C `count` calls the state functions; its copy here does not list `state`.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(suite().join("c/count/operator.c"), dir.path().join("operator.c")).unwrap();
    std::fs::write(dir.path().join("plugin.toml"), "name = \"count\"\nlanguage = \"c\"\ncapabilities = [\"log\"]\n")
        .unwrap();
    let out = Command::new(flumen_bin()).args(["plugin", "build"]).arg(dir.path()).output().unwrap();
    assert!(!out.status.success(), "a component importing an unlisted capability must be refused");
    assert_contains(&String::from_utf8_lossy(&out.stderr), &["imports `state`", "does not list in `capabilities`"]);
}
