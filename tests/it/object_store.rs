//! Checkpoints in an object store (`[checkpoint] store`): a job whose machine lost its local
//! checkpoint directory resumes from the store exactly once, a damaged object in the store is
//! detected and the previous checkpoint used, and a store that goes away fails the checkpoints
//! with an error naming it.
//!
//! Every scenario runs against a `file://` store, and against a real S3 server (moto's) when
//! `FLUMEN_S3_TESTS=1` is set and `moto_server` is on `PATH` (`.ci/run` installs it).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::checkpoint::{check, counting_job, finish, flumen};
use crate::common::Job;

const ROWS: u64 = 3000;

#[test]
fn file_store_restores_a_lost_checkpoint_directory() {
    let store = FileStore::new();
    lost_checkpoint_directory(&store);
}

#[test]
fn file_store_damage_is_detected_and_the_previous_checkpoint_used() {
    let store = FileStore::new();
    damaged_object_in_the_store(&store);
}

#[test]
fn file_store_that_goes_away_fails_the_checkpoint_naming_it() {
    let store = FileStore::new();
    store_goes_away(&store, || {
        // A regular file where the store's directory was: every request fails.
        std::fs::rename(&store.root, store.root.with_extension("gone")).unwrap();
        std::fs::write(&store.root, b"not a directory").unwrap();
    });
}

#[test]
fn file_store_a_crash_between_the_local_and_the_remote_manifest_is_recovered() {
    // The process dies after the local manifest of the second checkpoint is durable and before
    // it is in the store: that checkpoint never completed, and resuming discards it.
    let store = FileStore::new();
    let job = counting_job(ROWS, 4000, &format!("store = \"{}\"", store.url()), "", 2);
    let mut cmd = flumen(&job, false);
    cmd.env("FLUMEN_FAILPOINTS", "checkpoint::after-manifest=1*off->return");
    let (code, text) = finish(cmd.spawn().unwrap(), "crash");
    assert_ne!(code, 0, "the fail point never fired\n{text}");
    assert_eq!(store.manifests().len(), 1, "{text}");

    let text = resume_to_completion(&store, &job);
    assert!(text.contains("not intact in the store"), "the local-only checkpoint was not discarded:\n{text}");
    let o = check(&job.file("out"), ROWS, "crash before upload", true);
    assert!(o.clean() && o.rows == ROWS, "{o:?}");
}

#[test]
fn s3_store_restores_a_lost_disk_detects_damage_and_fails_when_gone() {
    if std::env::var("FLUMEN_S3_TESTS").as_deref() != Ok("1") {
        eprintln!("skipped: set FLUMEN_S3_TESTS=1 with moto_server on PATH");
        return;
    }
    let mut moto = Moto::start();
    moto.request("PUT", "/flumen", b"").expect_status(200, "create the bucket");
    lost_checkpoint_directory(&moto.store("lost-disk"));
    damaged_object_in_the_store(&moto.store("damaged"));
    let store = moto.store("gone");
    store_goes_away(&store, || moto.stop());
}

/// SIGKILL mid-run, then the whole local checkpoint directory is deleted: the resumed job
/// restores from the store and its committed output is exactly once.
fn lost_checkpoint_directory(store: &dyn Store) {
    let what = format!("{}: lost disk", store.url());
    let job = counting_job(ROWS, 2500, &format!("store = \"{}\"", store.url()), "", 2);
    kill_once_stored(store, &job, 1);
    assert!(!store.manifests().is_empty(), "{what}: no checkpoint reached the store");
    std::fs::remove_dir_all(job.file("ck")).unwrap();

    let text = resume_to_completion(store, &job);
    assert!(text.contains("resuming from checkpoint"), "{what}: it did not resume from the store:\n{text}");
    let o = check(&job.file("out"), ROWS, &what, true);
    assert!(o.clean() && o.rows == ROWS, "{what}: {o:?}");
}

/// The newest checkpoint's own state file is overwritten in the store (same size, other
/// bytes) and the local directory is lost: the damage is reported, the checkpoint before it is
/// restored, and the output is exactly once.
fn damaged_object_in_the_store(store: &dyn Store) {
    let what = format!("{}: damaged object", store.url());
    let job = counting_job(ROWS, 2500, &format!("store = \"{}\"", store.url()), "", 1);
    kill_once_stored(store, &job, 2);
    let manifests = store.manifests();
    assert!(manifests.len() >= 2, "{what}: need two checkpoints in the store, have {manifests:?}");
    let newest = manifests.last().unwrap();
    let envelope: serde_json::Value = serde_json::from_slice(&store.read(newest)).unwrap();
    let m = &envelope["manifest"];
    let victim = m["participants"]["count[0]"]["files"]
        .as_array()
        .expect("state files")
        .iter()
        .find(|f| f["checkpoint"] == m["checkpoint"])
        .expect("a file written for the newest checkpoint");
    let key = format!("{}/files/{}", newest.rsplit_once('/').unwrap().0, victim["name"].as_str().unwrap());
    let mut bytes = store.read(&key);
    let i = bytes.len() / 2;
    bytes[i] ^= 0x10;
    store.write(&key, &bytes);
    std::fs::remove_dir_all(job.file("ck")).unwrap();

    let text = resume_to_completion(store, &job);
    let newest_name = newest.rsplit_once('/').unwrap().1;
    assert!(
        text.contains("damaged checkpoint") && text.contains(newest_name),
        "{what}: the damage to {key} was not reported:\n{text}"
    );
    assert!(text.contains("resuming from checkpoint"), "{what}: it did not resume from the store:\n{text}");
    let o = check(&job.file("out"), ROWS, &what, true);
    assert!(o.clean() && o.rows == ROWS, "{what}: {o:?}");
}

/// The store disappears mid-run: the next checkpoint fails, the region restarts per
/// `[restart]`, and the job fails with an error that names the store.
fn store_goes_away(store: &dyn Store, take_away: impl FnOnce()) {
    let what = format!("{}: store gone", store.url());
    let job = counting_job(ROWS, 2500, &format!("store = \"{}\"", store.url()), "", 1);
    let mut child = store.env(flumen(&job, false)).spawn().unwrap();
    let started = Instant::now();
    while store.manifests().is_empty() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!store.manifests().is_empty(), "{what}: no checkpoint reached the store");
    take_away();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "{what}: the job kept running without its store");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, text) = finish(child, &what);
    assert_eq!(code, 1, "{what}: {text}");
    assert!(
        text.contains(&format!("checkpoint store {}", store.url())),
        "{what}: the error must name the store:\n{text}"
    );
}

/// Runs the job and SIGKILLs it once the store holds `manifests` checkpoints (unless it ended
/// first): mid-run, however slowly the machine starts it.
fn kill_once_stored(store: &dyn Store, job: &Job, manifests: usize) {
    let mut child = store.env(flumen(job, false)).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.manifests().len() < manifests && Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if child.try_wait().unwrap().is_none() {
        child.kill().unwrap();
    }
    let _ = child.wait();
}

/// `--resume` until the job completes by itself (bounded), with engine logs.
fn resume_to_completion(store: &dyn Store, job: &Job) -> String {
    let mut all = String::new();
    for _ in 0..5 {
        let mut cmd = store.env(flumen(job, true));
        cmd.env("FLUMEN_LOG", "warn,flumen_engine=info");
        let (code, text) = finish(cmd.spawn().unwrap(), "resume");
        all.push_str(&text);
        if code == 0 {
            return all;
        }
        assert_ne!(code, 2, "resume refused: {text}");
        eprintln!("resume attempt ended with {code}: {text}");
    }
    panic!("the job did not complete after 5 resumes:\n{all}");
}

/// What the scenarios need of a store: its URL, the environment to reach it, and direct access
/// to its objects (keys relative to the URL).
pub(crate) trait Store {
    fn url(&self) -> String;
    fn env(&self, cmd: Command) -> Command;
    /// The keys of every manifest, oldest first.
    fn manifests(&self) -> Vec<String>;
    fn read(&self, key: &str) -> Vec<u8>;
    fn write(&self, key: &str, bytes: &[u8]);
}

fn is_manifest(key: &str) -> bool {
    let name = key.rsplit('/').next().unwrap_or(key);
    name.starts_with("chk-") && name.ends_with(".json")
}

struct FileStore {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl FileStore {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        Self { _dir: dir, root }
    }
}

impl Store for FileStore {
    fn url(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn env(&self, cmd: Command) -> Command {
        cmd
    }

    fn manifests(&self) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, keys: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else { return };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(root, &path, keys);
                } else if let Ok(key) = path.strip_prefix(root) {
                    keys.push(key.to_string_lossy().into_owned());
                }
            }
        }
        let mut keys = Vec::new();
        walk(&self.root, &self.root, &mut keys);
        keys.retain(|k| is_manifest(k));
        keys.sort();
        keys
    }

    fn read(&self, key: &str) -> Vec<u8> {
        std::fs::read(self.root.join(key)).unwrap()
    }

    fn write(&self, key: &str, bytes: &[u8]) {
        std::fs::write(self.root.join(key), bytes).unwrap()
    }
}

/// A moto S3 server, a child process killed when this is dropped (a failed test included).
pub(crate) struct Moto {
    child: Option<Child>,
    port: u16,
}

/// A prefix of moto's bucket `flumen`.
pub(crate) struct S3Store {
    port: u16,
    prefix: String,
}

impl Moto {
    pub(crate) fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("FLUMEN_S3_TESTS=1 needs moto_server on PATH (pip install 'moto[server]'): {e}")
            });
        let moto = Self { child: Some(child), port };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(reply) = http(port, "GET", "/moto-api/", b"")
                && reply.status != 0
            {
                return moto;
            }
            assert!(Instant::now() < deadline, "moto_server did not answer on port {port} within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn store(&self, prefix: &str) -> S3Store {
        S3Store { port: self.port, prefix: format!("jobs/{prefix}") }
    }

    pub(crate) fn request(&self, method: &str, path: &str, body: &[u8]) -> Reply {
        http(self.port, method, path, body).unwrap_or_else(|| panic!("moto did not answer {method} {path}"))
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Store for S3Store {
    fn url(&self) -> String {
        format!("s3://flumen/{}", self.prefix)
    }

    fn env(&self, mut cmd: Command) -> Command {
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", self.port))
            .env("AWS_ALLOW_HTTP", "true");
        cmd
    }

    fn manifests(&self) -> Vec<String> {
        let Some(reply) = http(self.port, "GET", &format!("/flumen?list-type=2&prefix={}/", self.prefix), b"") else {
            return Vec::new();
        };
        let text = String::from_utf8_lossy(&reply.body);
        let mut keys: Vec<String> = text
            .split("<Key>")
            .skip(1)
            .filter_map(|s| s.split_once("</Key>"))
            .filter_map(|(key, _)| key.strip_prefix(&format!("{}/", self.prefix)).map(str::to_owned))
            .filter(|k| is_manifest(k))
            .collect();
        keys.sort();
        keys
    }

    fn read(&self, key: &str) -> Vec<u8> {
        let path = format!("/flumen/{}/{key}", self.prefix);
        let reply = http(self.port, "GET", &path, b"").unwrap_or_else(|| panic!("GET {path}"));
        reply.expect_status(200, &path).body
    }

    fn write(&self, key: &str, bytes: &[u8]) {
        let path = format!("/flumen/{}/{key}", self.prefix);
        http(self.port, "PUT", &path, bytes).unwrap_or_else(|| panic!("PUT {path}")).expect_status(200, &path);
    }
}

#[derive(Debug)]
pub(crate) struct Reply {
    status: u16,
    body: Vec<u8>,
}

impl Reply {
    #[track_caller]
    pub(crate) fn expect_status(self, status: u16, what: &str) -> Self {
        assert_eq!(self.status, status, "{what}: {}", String::from_utf8_lossy(&self.body));
        self
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port`; `None` when nothing answers. Moto checks no
/// signatures, but serves objects only to requests that carry one.
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> Option<Reply> {
    const AUTHORIZATION: &str = "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, \
                                 SignedHeaders=host, Signature=0";
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {AUTHORIZATION}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body)?;
    }
    Some(Reply { status, body })
}

fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&raw[..line_end]).ok()?.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}
