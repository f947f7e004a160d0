//! OpenTelemetry: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, `flumen run` sends its spans
//! (job, region, subtask, checkpoint) over OTLP/HTTP. A minimal collector in the test
//! takes the requests; span names and attribute values are plain strings inside the
//! protobuf body, so finding them there is enough to know what was sent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};

use crate::common::{Job, flumen_bin};

/// The requests a collector took: each one's path and body.
type Requests = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Accepts OTLP/HTTP requests on 127.0.0.1 and keeps each request's path and body.
fn collector() -> (String, Requests) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let seen: Requests = Arc::default();
    let keep = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let keep = keep.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut out = stream;
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = request_line.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let mut length = 0usize;
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 {
                            return;
                        }
                        let header = header.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    keep.lock().unwrap().push((path, body));
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if out.write_all(ok).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (endpoint, seen)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn a_run_sends_its_job_region_subtask_and_checkpoint_spans_over_otlp() {
    let (endpoint, seen) = collector();
    let job = Job::new(
        r#"
[job]
name = "traced"
batch_rows = 20

[checkpoint]
interval_ms = 50
dir = "ck"

[[source]]
id = "gen"
kind = "generator"
rows = 600
rows_per_second = 2000
columns = [{ name = "key", gen = "modulo", modulus = 4 }, { name = "seq", gen = "sequence" }]

[[operator]]
id = "count"
plugin = "{guest:keyed-counter}"
capabilities = ["log", "state"]
inputs = [{ from = "gen", partition = "hash", keys = ["key"] }]
config = { key = "key" }

[[sink]]
id = "out"
kind = "jsonl"
path = "out"
inputs = ["count"]
"#,
    );
    let out = Command::new(flumen_bin())
        .args(["run", job.path.to_str().unwrap()])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_SERVICE_NAME", "flumen-test")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let requests = seen.lock().unwrap().clone();
    assert!(!requests.is_empty(), "no OTLP request reached the collector at {endpoint}");
    assert!(
        requests.iter().all(|(path, _)| path == "/v1/traces"),
        "{:?}",
        requests.iter().map(|r| &r.0).collect::<Vec<_>>()
    );
    let body: Vec<u8> = requests.into_iter().flat_map(|(_, b)| b).collect();
    for needle in ["flumen-test", "job", "traced", "region", "gen", "subtask", "count", "checkpoint", "committed"] {
        assert!(contains(&body, needle), "no `{needle}` in the spans sent");
    }
    // Without the variable nothing is sent and nothing is tried.
    let quiet =
        Command::new(flumen_bin()).args(["run", "--from-scratch", job.path.to_str().unwrap()]).output().unwrap();
    assert!(quiet.status.success(), "{}", String::from_utf8_lossy(&quiet.stderr));
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("traces"), "{}", String::from_utf8_lossy(&quiet.stderr));
}
