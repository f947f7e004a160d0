//! The cluster as users run it: `flumen cluster up` (a coordinator and workers as real
//! processes talking QUIC with mutual TLS), `flumen submit`, `stop` and `--resume`, `cancel`,
//! and faults: workers and the coordinator SIGKILLed mid-job, a worker paused past its lease
//! or cut off, a peer speaking garbage. Every job is checked by the exactly-once oracle of
//! `checkpoint.rs` (and some against a single-process run).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::checkpoint::check;
use crate::common::{Job, flumen_bin};

/// A lease short enough that failovers take about two seconds.
const LEASE_MS: u64 = 1500;

/// A job of `regions` independent pipelined regions, each generator → keyed-counter → JSONL
/// with checkpoints (`gen<i>` → `count<i>` → `out<i>`), `rows` rows each.
fn regions_job(name: &str, regions: usize, rows: u64, rate: u64) -> Job {
    let mut text = format!(
        r#"
[job]
name = "{name}"
batch_rows = 20
channel_capacity = 4

[checkpoint]
interval_ms = 100
dir = "ck"
retain = 2

[restart]
attempts = 5
delay_ms = 20
"#
    );
    for i in 0..regions {
        text.push_str(&format!(
            r#"
[[source]]
id = "gen{i}"
kind = "generator"
rows = {rows}
rows_per_second = {rate}
columns = [
  {{ name = "key", gen = "modulo", modulus = 16 }},
  {{ name = "seq", gen = "divide", divisor = 16 }},
]

[[operator]]
id = "count{i}"
plugin = "{{guest:keyed-counter}}"
capabilities = ["log", "state"]
inputs = [{{ from = "gen{i}", partition = "hash", keys = ["key"] }}]
config = {{ key = "key" }}

[[sink]]
id = "out{i}"
kind = "jsonl"
path = "out{i}"
inputs = ["count{i}"]
"#
        ));
    }
    Job::new(&text)
}

/// A cluster started with `flumen cluster up`, taken down when dropped (with the
/// processes the test started in place of killed ones).
struct Cluster {
    dir: tempfile::TempDir,
    replacements: Vec<Child>,
    /// What `cluster up` was given beyond the cluster dir; restarted nodes get it too.
    env: Vec<(String, PathBuf)>,
}

impl Cluster {
    fn up(workers: u32, extra: &[&str]) -> Self {
        Self::up_with(workers, extra, &[])
    }

    /// With `env` set for the coordinator and workers (a worker's package store and trust file).
    fn up_with(workers: u32, extra: &[&str], env: &[(&str, &Path)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_path_buf())).collect();
        let cluster = Self { dir, replacements: Vec::new(), env };
        let (n, lease) = (workers.to_string(), LEASE_MS.to_string());
        let args = [&["cluster", "up", "-n", n.as_str(), "--lease-ms", lease.as_str()], extra].concat();
        let out = Command::new(flumen_bin())
            .args(&args)
            .env("FLUMEN_CLUSTER", cluster.dir.path())
            .envs(cluster.env.iter().map(|(k, v)| (k.as_str(), v.as_path())))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "cluster up failed: {}", String::from_utf8_lossy(&out.stderr));
        cluster
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn flumen(&self, args: &[&str]) -> Output {
        Command::new(flumen_bin())
            .args(args)
            .env("FLUMEN_CLUSTER", self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn submit(&self, job: &Job) -> String {
        let out = self.flumen(&["submit", job.path.to_str().unwrap()]);
        assert!(out.status.success(), "submit failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the job ends; its `flumen status` text, and whether it finished.
    fn wait(&self, job: &str, within: Duration) -> (String, bool) {
        let deadline = Instant::now() + within;
        loop {
            let out = self.flumen(&["status", job]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if let Some(first) = text.lines().next() {
                for state in ["finished", "failed", "stopped", "cancelled"] {
                    if first.contains(&format!(": {state} ")) {
                        return (text, state == "finished");
                    }
                }
            }
            assert!(Instant::now() < deadline, "job {job} did not end within {within:?}:\n{text}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Region → worker, from `flumen status`.
    fn placement(&self, job: &str) -> BTreeMap<String, String> {
        let out = self.flumen(&["status", job]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().strip_prefix("region "))
            .filter_map(|l| l.split_once(": "))
            .filter(|(_, w)| *w != "-")
            .map(|(r, w)| (r.to_owned(), w.to_owned()))
            .collect()
    }

    /// Up to `kills` times, within `within`: waits a seeded random time in `pause` (ms), then
    /// SIGKILLs and restarts a worker that runs a region of `job` (or a part of a split one:
    /// `worker-1+worker-2` in `flumen status`), picked by the seeded generator. Returns how
    /// many it killed (fewer when the job ended first).
    fn kill_busy_workers(
        &mut self,
        job: &str,
        kills: usize,
        seed: u64,
        pause: std::ops::Range<u64>,
        within: Duration,
    ) -> usize {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let mut killed = 0;
        let started = Instant::now();
        while killed < kills && started.elapsed() < within {
            std::thread::sleep(Duration::from_millis(rng.random_range(pause.clone())));
            let placement = self.placement(job);
            let busy: Vec<String> = placement.values().flat_map(|w| w.split('+').map(str::to_owned)).collect();
            if busy.is_empty() {
                continue;
            }
            let victim = busy[rng.random_range(0..busy.len())].clone();
            self.kill_and_restart(&victim);
            killed += 1;
        }
        killed
    }

    fn pid(&self, node: &str) -> String {
        std::fs::read_to_string(self.path(&format!("pids/{node}"))).unwrap().trim().to_owned()
    }

    fn signal(&self, node: &str, signal: &str) {
        let ok = Command::new("kill").args([signal, &self.pid(node)]).status().unwrap().success();
        assert!(ok, "kill {signal} {node}");
    }

    /// SIGKILLs `node` and starts it again with the same arguments `cluster up` gave it.
    fn kill_and_restart(&mut self, node: &str) {
        self.signal(node, "-KILL");
        std::thread::sleep(Duration::from_millis(20));
        let cluster: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(self.path("cluster.json")).unwrap()).unwrap();
        let addr = cluster["coordinator"].as_str().unwrap().to_owned();
        let certs = self.path("certs").display().to_string();
        let log = std::fs::OpenOptions::new().append(true).open(self.path(&format!("logs/{node}.log"))).unwrap();
        let args: Vec<String> = if node == "coordinator" {
            let state = self.path("state").display().to_string();
            [
                "coordinator",
                "--certs",
                &certs,
                "--state",
                &state,
                "--listen",
                &addr,
                "--lease-ms",
                &LEASE_MS.to_string(),
            ]
            .map(String::from)
            .to_vec()
        } else {
            let data = self.path(&format!("workers/{node}")).display().to_string();
            ["worker", "--join", &addr, "--certs", &certs, "--id", node, "--data", &data].map(String::from).to_vec()
        };
        let child = Command::new(flumen_bin())
            .args(&args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_path())))
            .env("FLUMEN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        std::fs::write(self.path(&format!("pids/{node}")), child.id().to_string()).unwrap();
        self.replacements.push(child);
    }

    fn log(&self, node: &str) -> String {
        std::fs::read_to_string(self.path(&format!("logs/{node}.log"))).unwrap_or_default()
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(self.path("logs")).unwrap().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            all.push_str(&format!("--- {}\n", entry.file_name().to_string_lossy()));
            for line in tail.into_iter().rev() {
                all.push_str(line);
                all.push('\n');
            }
        }
        all
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Paused processes must be continued to die of SIGTERM.
        for entry in std::fs::read_dir(self.path("pids")).into_iter().flatten().flatten() {
            if let Ok(pid) = std::fs::read_to_string(entry.path()) {
                let _ = Command::new("kill").args(["-CONT", pid.trim()]).status();
            }
        }
        let _ = self.flumen(&["cluster", "down"]);
        for child in &mut self.replacements {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Every sink's committed rows, sorted, per sink directory.
fn committed(dir: &Path, sinks: usize) -> Vec<Vec<String>> {
    (0..sinks)
        .map(|i| {
            let mut rows = Vec::new();
            for entry in std::fs::read_dir(dir.join(format!("out{i}"))).unwrap().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("part-") {
                    rows.extend(std::fs::read_to_string(entry.path()).unwrap().lines().map(str::to_owned));
                }
            }
            rows.sort();
            rows
        })
        .collect()
}

fn assert_exactly_once(job: &Job, regions: usize, rows: u64, context: &str) {
    for i in 0..regions {
        let o = check(&job.file(&format!("out{i}")), rows, context, true);
        assert!(o.clean() && o.rows == rows, "{context}: region {i}: {o:?}");
    }
}

#[test]
fn three_workers_commit_what_one_process_commits() {
    let cluster = Cluster::up(3, &[]);
    let (regions, rows) = (3, 3000);
    let job = regions_job("three", regions, rows, 20_000);
    assert!(cluster.submit(&job).contains("submitted `three`"));
    let (status, finished) = cluster.wait("three", Duration::from_secs(120));
    assert!(finished, "{status}\n{}", cluster.logs());
    // One region per worker: the scheduler spreads them.
    let workers: BTreeSet<&str> =
        status.lines().filter_map(|l| l.trim().strip_prefix("region ")).filter_map(|l| l.split(": ").nth(1)).collect();
    assert_eq!(workers.len(), 3, "{status}");
    assert_exactly_once(&job, regions, rows, "cluster");

    let alone = regions_job("three", regions, rows, 20_000);
    let out = Command::new(flumen_bin()).args(["run", alone.path.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(committed(job.dir.path(), regions), committed(alone.dir.path(), regions));

    // A second submission of the same job over its checkpoints is refused without --resume.
    let again = cluster.flumen(&["submit", job.path.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"), "{}", String::from_utf8_lossy(&again.stderr));
    let jobs = String::from_utf8_lossy(&cluster.flumen(&["jobs"]).stdout).into_owned();
    assert!(jobs.contains("three") && jobs.contains("finished"), "{jobs}");
}

#[test]
fn sigkilled_workers_lose_and_duplicate_nothing() {
    let mut cluster = Cluster::up(3, &[]);
    let (regions, rows) = (3, 24_000);
    let job = regions_job("kills", regions, rows, 1500);
    cluster.submit(&job);
    let kills = cluster.kill_busy_workers("kills", 20, 0x5eed_c1a5, 150..700, Duration::from_secs(150));
    assert!(kills >= 20, "only {kills} kills: the job ended first");
    let (status, finished) = cluster.wait("kills", Duration::from_secs(240));
    assert!(finished, "{status}\n{}", cluster.logs());
    assert!(!status.contains(" 0 failover(s)"), "{status}");
    assert_exactly_once(&job, regions, rows, "after 20 worker kills");
}

#[test]
fn a_killed_coordinator_comes_back_and_its_jobs_finish() {
    let mut cluster = Cluster::up(2, &[]);
    let (regions, rows) = (2, 8000);
    let job = regions_job("phoenix", regions, rows, 1500);
    cluster.submit(&job);
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(900));
        cluster.kill_and_restart("coordinator");
    }
    let (status, finished) = cluster.wait("phoenix", Duration::from_secs(180));
    assert!(finished, "{status}\n{}", cluster.logs());
    assert_exactly_once(&job, regions, rows, "after 3 coordinator kills");
    // Each restart took the next leadership epoch.
    let epochs = std::fs::read_dir(cluster.path("state/leader")).unwrap().count();
    assert_eq!(epochs, 4, "one leadership epoch per coordinator start");
}

#[test]
fn a_worker_paused_past_its_lease_is_fenced_and_commits_nothing_more() {
    let cluster = Cluster::up(2, &[]);
    let (regions, rows) = (2, 9000);
    let job = regions_job("paused", regions, rows, 1500);
    cluster.submit(&job);
    let deadline = Instant::now() + Duration::from_secs(60);
    let victim = loop {
        if let Some(w) = cluster.placement("paused").get("gen0") {
            break w.clone();
        }
        assert!(Instant::now() < deadline, "never placed:\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(800));
    cluster.signal(&victim, "-STOP");
    // Past the lease and the coordinator's grace: its region moves to the other worker.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if cluster.placement("paused").get("gen0").is_some_and(|w| *w != victim) {
            break;
        }
        assert!(Instant::now() < deadline, "region never moved:\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    cluster.signal(&victim, "-CONT");
    let (status, finished) = cluster.wait("paused", Duration::from_secs(120));
    assert!(finished, "{status}\n{}", cluster.logs());
    assert_exactly_once(&job, regions, rows, "after a paused worker");
    let log = cluster.log(&victim);
    assert!(log.contains("fenced by the coordinator"), "the paused worker never learnt it was fenced:\n{log}");
    assert!(cluster.log("coordinator").contains(&format!("worker lost: no heartbeat for 2000 ms worker={victim}")));
}

#[test]
fn jobs_that_cannot_be_placed_are_refused_with_the_reason() {
    let cluster = Cluster::up(1, &["--cores-per-worker", "2"]);
    let job = Job::new(
        r#"
[job]
name = "greedy"

[checkpoint]
interval_ms = 100
dir = "ck"

[[source]]
id = "gen"
kind = "generator"
rows = 10
columns = [{ name = "key", gen = "sequence" }]

[[operator]]
id = "embed"
plugin = "{guest:keyed-counter}"
capabilities = ["log", "state"]
parallelism = 2
inputs = ["gen"]
config = { key = "key" }
resources = { gpu = 1, memory_mb = 512 }

[[sink]]
id = "out"
kind = "jsonl"
path = "out"
inputs = ["embed"]
"#,
    );
    let out = cluster.flumen(&["submit", job.path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot be placed") && err.contains("memory_mb=1024, gpu=2"), "{err}");
    assert!(err.contains("worker-1 has cores=2"), "{err}");
    // An unknown resource is a spec error with its line.
    let typo = Job::new(&std::fs::read_to_string(&job.path).unwrap().replace("gpu = 1", "gpus = 1"));
    let out = cluster.flumen(&["submit", typo.path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("gpus") && err.contains("job.toml"), "{err}");
}

/// A UDP relay between one worker and the coordinator whose two directions can be cut:
/// a network partition without privileges (QUIC runs over UDP, so dropping datagrams is
/// exactly what a dead link or a silent one-way drop does to it).
struct Relay {
    addr: std::net::SocketAddr,
    drop_up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    drop_down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    fn start(upstream: std::net::SocketAddr) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let front = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let back = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        back.connect(upstream).unwrap();
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        }
        let addr = front.local_addr().unwrap();
        let (drop_up, drop_down, stop) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let peer: Arc<std::sync::Mutex<Option<std::net::SocketAddr>>> = Arc::default();
        {
            let (front, back) = (front.try_clone().unwrap(), back.try_clone().unwrap());
            let (drop_up, stop, peer) = (drop_up.clone(), stop.clone(), peer.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = front.recv_from(&mut buf) {
                        *peer.lock().unwrap() = Some(from);
                        if !drop_up.load(Ordering::Relaxed) {
                            let _ = back.send(&buf[..n]);
                        }
                    }
                }
            });
        }
        {
            let (drop_down, stop) = (drop_down.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = back.recv(&mut buf)
                        && !drop_down.load(Ordering::Relaxed)
                        && let Some(to) = *peer.lock().unwrap()
                    {
                        let _ = front.send_to(&buf[..n], to);
                    }
                }
            });
        }
        Self { addr, drop_up, drop_down, stop }
    }

    fn cut(&self, up: bool, down: bool) {
        self.drop_up.store(up, std::sync::atomic::Ordering::SeqCst);
        self.drop_down.store(down, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// One run of the partition test: a second worker joins through a relay, runs a region,
/// and is cut off (`up`: its datagrams to the coordinator dropped; `down`: the
/// coordinator's to it) for longer than its lease while its region keeps running.
fn partition(name: &str, up: bool, down: bool) {
    let mut cluster = Cluster::up(1, &[]);
    let certs = cluster.path("certs");
    let out = cluster.flumen(&["certs", "--dir", certs.to_str().unwrap(), "--nodes", "worker-9"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cluster_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cluster.path("cluster.json")).unwrap()).unwrap();
    let relay = Relay::start(cluster_json["coordinator"].as_str().unwrap().parse().unwrap());
    let log = std::fs::File::create(cluster.path("logs/worker-9.log")).unwrap();
    let data = cluster.path("workers/worker-9");
    let child = Command::new(flumen_bin())
        .args(["worker", "--join", &relay.addr.to_string(), "--certs", certs.to_str().unwrap(), "--id", "worker-9"])
        .args(["--data", data.to_str().unwrap()])
        .env("FLUMEN_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    std::fs::write(cluster.path("pids/worker-9"), child.id().to_string()).unwrap();
    cluster.replacements.push(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !String::from_utf8_lossy(&cluster.flumen(&["cluster", "workers"]).stdout).contains("worker-9         up") {
        assert!(Instant::now() < deadline, "worker-9 never joined:\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (regions, rows) = (2, 9000);
    let job = regions_job(name, regions, rows, 1500);
    cluster.submit(&job);
    let deadline = Instant::now() + Duration::from_secs(60);
    let region = loop {
        if let Some((r, _)) = cluster.placement(name).into_iter().find(|(_, w)| w == "worker-9") {
            break r;
        }
        assert!(Instant::now() < deadline, "nothing placed on worker-9:\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(50));
    };
    // Let it checkpoint and commit a while, then cut it off mid-run, for well past its lease.
    std::thread::sleep(Duration::from_millis(1000));
    relay.cut(up, down);
    std::thread::sleep(Duration::from_millis(3 * LEASE_MS));
    if up {
        // The coordinator heard nothing: the region runs elsewhere now.
        assert_eq!(cluster.placement(name).get(&region).map(String::as_str), Some("worker-1"), "{}", cluster.logs());
    }
    relay.cut(false, false);
    let (status, finished) = cluster.wait(name, Duration::from_secs(180));
    assert!(finished, "{status}\n{}", cluster.logs());
    assert_exactly_once(&job, regions, rows, name);
    let log = cluster.log("worker-9");
    // Its own fence stopped the region (the lease ran out at a checkpoint), before the
    // coordinator could have placed it elsewhere: not a failure, not a late commit.
    assert!(log.contains("outcome=Fenced") && log.contains("lease ran out"), "worker-9 never fenced itself:\n{log}");
}

#[test]
fn a_worker_cut_off_by_a_partition_commits_nothing_and_the_job_heals() {
    partition("cut-off", true, true);
}

#[test]
fn a_silent_one_way_drop_fences_the_worker_that_hears_nothing() {
    partition("one-way", false, true);
}

/// The committed part files of sink `out<sink>` of the job in `dir`.
fn part_files_of(dir: &Path, sink: usize) -> usize {
    std::fs::read_dir(dir.join(format!("out{sink}")))
        .map(|entries| entries.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("part-")).count())
        .unwrap_or(0)
}

/// The committed part files of sinks `out0..out<sinks>`.
fn part_files(dir: &Path, sinks: usize) -> usize {
    (0..sinks).map(|i| part_files_of(dir, i)).sum()
}

impl Cluster {
    /// Waits until every one of the job's `regions` is placed and every sink has committed
    /// a part file (a checkpoint completed in each region).
    fn wait_committing(&self, job: &Job, name: &str, regions: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let placed = self.placement(name).len() == regions;
            let committing = (0..regions).all(|i| part_files_of(job.dir.path(), i) > 0);
            if placed && committing {
                return;
            }
            assert!(Instant::now() < deadline, "{name} never placed and committed:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The first line of `flumen status <job>`.
    fn state_line(&self, job: &str) -> String {
        let out = self.flumen(&["status", job]);
        String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_owned()
    }
}

#[test]
fn a_stopped_job_resumes_and_stays_exactly_once() {
    let cluster = Cluster::up(2, &[]);
    let (regions, rows) = (2, 6000);
    let job = regions_job("pause-me", regions, rows, 1500);
    cluster.submit(&job);
    cluster.wait_committing(&job, "pause-me", regions);

    let out = cluster.flumen(&["stop", "pause-me", "--wait"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(3), "{text}{}\n{}", String::from_utf8_lossy(&out.stderr), cluster.logs());
    assert!(text.contains("job pause-me: stopped"), "{text}");
    assert!(cluster.state_line("pause-me").contains(": stopped "), "{}", cluster.state_line("pause-me"));
    let before: usize = committed(job.dir.path(), regions).iter().map(Vec::len).sum();
    assert!(before > 0 && before < regions * rows as usize, "{before} rows committed at the stop");

    // Its checkpoints are there: starting it over is refused, resuming it is not.
    let out = cluster.flumen(&["submit", job.path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--resume"), "{err}");
    let out = cluster.flumen(&["submit", "--resume", "--wait", job.path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        cluster.logs()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("job pause-me: finished"));
    assert_exactly_once(&job, regions, rows, "stopped, then resumed");
}

#[test]
fn a_cancelled_job_commits_nothing_more() {
    let cluster = Cluster::up(2, &[]);
    let (regions, rows) = (2, 9000);
    let job = regions_job("cancel-me", regions, rows, 1500);
    cluster.submit(&job);
    cluster.wait_committing(&job, "cancel-me", regions);

    let out = cluster.flumen(&["cancel", "cancel-me"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cancelled `cancel-me`"));
    assert!(cluster.state_line("cancel-me").contains(": cancelled "), "{}", cluster.state_line("cancel-me"));
    let again = cluster.flumen(&["cancel", "cancel-me"]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(2), "{err}");
    assert!(err.contains("already cancelled"), "{err}");

    // The answer to `cancel` may reach the client before the Cancel reaches the workers:
    // count from when each worker has reported its task cancelled.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = cluster.log("coordinator");
        let ended = log
            .lines()
            .filter(|l| l.contains("job=cancel-me") && l.contains("outcome=Cancelled"))
            .map(|l| l.split("worker=").nth(1).and_then(|w| w.split_whitespace().next()).unwrap_or_default().to_owned())
            .collect::<BTreeSet<_>>();
        if ended.len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the workers never reported their tasks cancelled:\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    let parts = part_files(job.dir.path(), regions);
    let rows_then = committed(job.dir.path(), regions);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(part_files(job.dir.path(), regions), parts, "a cancelled job committed more");
    assert_eq!(committed(job.dir.path(), regions), rows_then, "a cancelled job committed more");
    assert!(rows_then.iter().map(Vec::len).sum::<usize>() < regions * rows as usize);
}

#[test]
fn a_job_without_checkpoints_runs_whole_on_one_worker() {
    let cluster = Cluster::up(2, &[]);
    let (regions, rows) = (2, 2000);
    let checkpointed = regions_job("whole", regions, rows, 20_000);
    let text = std::fs::read_to_string(&checkpointed.path)
        .unwrap()
        .replace("[checkpoint]\ninterval_ms = 100\ndir = \"ck\"\nretain = 2\n", "");
    assert!(!text.contains("[checkpoint]"), "{text}");
    let job = Job::new(&text);
    cluster.submit(&job);
    let (status, finished) = cluster.wait("whole", Duration::from_secs(120));
    assert!(finished, "{status}\n{}", cluster.logs());
    let placement = cluster.placement("whole");
    assert_eq!(placement.len(), regions, "{status}");
    let workers: BTreeSet<&String> = placement.values().collect();
    assert_eq!(workers.len(), 1, "a job without checkpoints is one unit:\n{status}");
    // Without checkpoints a sink writes one file, committed at the end: each holds every row once.
    for i in 0..regions {
        let out = job.file(&format!("out{i}"));
        assert!(out.is_file(), "{} is no file", out.display());
        let dir = job.file(&format!("oracle{i}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::copy(&out, dir.join("part-0000-000000000000.jsonl")).unwrap();
        let o = check(&dir, rows, "a job without checkpoints", true);
        assert!(o.clean() && o.rows == rows, "region {i}: {o:?}");
    }
}

#[test]
fn a_peer_speaking_garbage_is_closed_and_the_coordinator_keeps_serving() {
    use flumen_transport::{Endpoint, EndpointOptions, NodeCredentials, NodeIdentity};

    let cluster = Cluster::up(1, &[]);
    let cluster_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cluster.path("cluster.json")).unwrap()).unwrap();
    let addr: std::net::SocketAddr = cluster_json["coordinator"].as_str().unwrap().parse().unwrap();
    let creds = NodeCredentials::load(&cluster.path("certs"), &NodeIdentity::new("client").unwrap()).unwrap();
    let coordinator = NodeIdentity::new("coordinator").unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    runtime.block_on(async {
        let endpoint = Endpoint::bind("127.0.0.1:0".parse().unwrap(), &creds, EndpointOptions::default()).unwrap();
        // Sends `hello`, then reads until the coordinator closes the connection: the reason,
        // and the messages it sent before.
        let speak = |hello: serde_json::Value| {
            let endpoint = &endpoint;
            let coordinator = &coordinator;
            async move {
                let conn = endpoint.connect(addr, coordinator).await.unwrap();
                conn.send_message(&hello).await.unwrap();
                let mut said = Vec::new();
                let closed = tokio::time::timeout(Duration::from_secs(10), async {
                    loop {
                        match conn.recv_message::<serde_json::Value>().await {
                            Ok(message) => said.push(message),
                            Err(e) => return e.to_string(),
                        }
                    }
                })
                .await
                .expect("the coordinator neither answered nor closed the connection");
                (closed, said)
            }
        };

        let (closed, said) = speak(serde_json::json!({"hello": "worker", "protocol": 1, "bogus": true})).await;
        assert!(said.is_empty(), "{said:?}");
        assert!(closed.contains("closed by the peer") && closed.contains("bogus"), "{closed}");

        let (closed, said) = speak(serde_json::json!({
            "hello": "worker",
            "protocol": 99,
            "capacity": {"cores": 1, "memory_mb": 1024, "gpu": 0},
            "running": [],
        }))
        .await;
        let why = "cluster protocol 99 is not spoken here";
        assert!(closed.contains("closed by the peer") && closed.contains(why), "{closed}");
        // The Fenced telling it so may or may not arrive before the close.
        for message in &said {
            assert_eq!(message["type"], "fenced", "{said:?}");
            assert!(message["reason"].as_str().unwrap().contains(why), "{said:?}");
        }

        // Not even an object.
        let (closed, said) = speak(serde_json::json!("garbage")).await;
        assert!(said.is_empty() && closed.contains("closed by the peer"), "{closed} {said:?}");

        // A well-formed worker hello from a client's certificate: clients never get work.
        let (closed, said) = speak(serde_json::json!({
            "hello": "worker",
            "protocol": flumen_cluster::protocol::CLUSTER_PROTOCOL,
            "capacity": {"cores": 64, "memory_mb": 1 << 20, "gpu": 8},
            "running": [],
        }))
        .await;
        let both = format!("{closed} {said:?}");
        assert!(both.contains("client may not join as a worker"), "{both}");

        // A client of another version is answered, not left hanging.
        let conn = endpoint.connect(addr, &coordinator).await.unwrap();
        conn.send_message(&serde_json::json!({"hello": "client", "protocol": 99, "request": {"request": "jobs"}}))
            .await
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(10), conn.recv_message::<serde_json::Value>())
            .await
            .expect("no answer")
            .unwrap();
        assert_eq!(answer["response"], "refused", "{answer}");
        assert!(answer["message"].as_str().unwrap().contains(why), "{answer}");
        conn.close("done");
    });
    drop(runtime);

    // The coordinator still answers, and still runs jobs.
    let jobs = cluster.flumen(&["jobs"]);
    assert!(jobs.status.success(), "{}", String::from_utf8_lossy(&jobs.stderr));
    assert!(String::from_utf8_lossy(&jobs.stdout).contains("no jobs"));
    let workers = String::from_utf8_lossy(&cluster.flumen(&["cluster", "workers"]).stdout).into_owned();
    assert!(workers.contains("worker-1") && !workers.contains("client"), "{workers}");
    let (regions, rows) = (1, 1000);
    let job = regions_job("after-garbage", regions, rows, 20_000);
    cluster.submit(&job);
    let (status, finished) = cluster.wait("after-garbage", Duration::from_secs(120));
    assert!(finished, "{status}\n{}", cluster.logs());
    assert_exactly_once(&job, regions, rows, "after a peer spoke garbage");
}

#[test]
fn a_job_stopped_while_a_worker_is_paused_stops_and_resumes() {
    let cluster = Cluster::up(2, &[]);
    let (regions, rows) = (2, 9000);
    let job = regions_job("stop-paused", regions, rows, 1500);
    cluster.submit(&job);
    cluster.wait_committing(&job, "stop-paused", regions);
    let victim = cluster.placement("stop-paused")["gen0"].clone();
    cluster.signal(&victim, "-STOP");
    // The paused worker never hears the Stop; once its lease has run out its region has
    // nothing newer than its last checkpoint, so it counts as stopped.
    let out = cluster.flumen(&["stop", "stop-paused"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (status, finished) = cluster.wait("stop-paused", Duration::from_secs(30));
    assert!(!finished && status.contains("stop-paused: stopped"), "{status}\n{}", cluster.logs());
    cluster.signal(&victim, "-CONT");
    // It learns it was fenced, and its late end of the task changes nothing.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cluster.log(&victim).contains("fenced by the coordinator") {
        assert!(Instant::now() < deadline, "{victim} never learnt it was fenced:\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(cluster.state_line("stop-paused").contains(": stopped "), "{}", cluster.state_line("stop-paused"));

    let out = cluster.flumen(&["submit", "--resume", "--wait", job.path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        cluster.logs()
    );
    assert_exactly_once(&job, regions, rows, "stopped while a worker was paused, then resumed");
}

/// `GET <url>` over plain HTTP/1.1 (the metrics endpoints speak nothing else): the body.
fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(s, "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()
}

/// The value of the first sample whose line starts with `prefix`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

#[test]
fn every_node_serves_prometheus_metrics_of_what_it_runs() {
    let cluster = Cluster::up(2, &[]);
    let (regions, rows) = (2, 6000);
    let job = regions_job("scraped", regions, rows, 1500);
    cluster.submit(&job);
    let deadline = Instant::now() + Duration::from_secs(60);
    let on = loop {
        let placement = cluster.placement("scraped");
        if placement.len() == 2 {
            break placement;
        }
        assert!(Instant::now() < deadline, "never placed:\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(50));
    };
    // Each worker's URL, as `cluster workers` shows it.
    let workers = String::from_utf8_lossy(&cluster.flumen(&["cluster", "workers"]).stdout).into_owned();
    let url_of = |worker: &str| -> String {
        let line = workers.lines().find(|l| l.starts_with(worker)).unwrap_or_else(|| panic!("{workers}"));
        line.rsplit("metrics ").next().unwrap().trim().to_owned()
    };
    let worker = &on["gen0"];
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let text = http_get(&url_of(worker));
        let done = sample(&text, "flumen_checkpoints_completed_total{job=\"scraped\",region=\"gen0\"}").unwrap_or(0.0);
        if done >= 2.0 {
            break text;
        }
        assert!(Instant::now() < deadline, "no checkpoints in the metrics of {worker}:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let rows_in = sample(&text, "flumen_rows_in_total{job=\"scraped\",node=\"count0\",kind=\"operator\"}");
    assert!(rows_in.is_some_and(|r| r > 0.0 && r <= rows as f64), "{text}");
    assert!(text.contains("flumen_guest_bytes_in_total{job=\"scraped\",node=\"count0\""), "{text}");
    let waited = sample(&text, "flumen_backpressure_seconds_total{job=\"scraped\",node=\"gen0\",kind=\"source\"}");
    assert!(waited.is_some_and(|s| s >= 0.0), "a source's backpressure is exposed: {text}");
    assert!(sample(&text, "flumen_worker_lease_seconds_left").is_some_and(|s| s > 0.0), "{text}");
    assert!(sample(&text, "flumen_worker_tasks").is_some_and(|t| t >= 1.0), "{text}");
    // A worker shows only the nodes it runs.
    if on["gen1"] != *worker {
        assert!(!text.contains("node=\"count1\""), "{text}");
    }
    // The coordinator's endpoint, from its log.
    let log = cluster.log("coordinator");
    let url = log.split("metrics on ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().to_owned();
    let text = http_get(&url);
    assert_eq!(sample(&text, "flumen_cluster_workers{state=\"up\"}"), Some(2.0), "{text}");
    assert_eq!(sample(&text, "flumen_cluster_jobs{state=\"running\"}"), Some(1.0), "{text}");
    assert!(sample(&text, "flumen_cluster_placements_total").is_some_and(|p| p >= 1.0), "{text}");
    let (status, finished) = cluster.wait("scraped", Duration::from_secs(120));
    assert!(finished, "{status}");
    assert_exactly_once(&job, regions, rows, "scraped");
}

/// `flumen <args>` against `cluster` must be refused (exit 2) with every one of `needles`
/// in its message.
fn assert_refused(cluster: &Cluster, args: &[&str], needles: &[&str]) {
    let out = cluster.flumen(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?} was not refused: {err}");
    for needle in needles {
        assert!(err.contains(needle), "{args:?}: no `{needle}` in {err}");
    }
}

#[test]
fn client_requests_the_coordinator_cannot_honour_are_refused_with_the_reason() {
    let cluster = Cluster::up(1, &[]);
    // A job name a cluster cannot key jobs by.
    let badly_named = regions_job("Bad_Name", 1, 10, 1000);
    let path = badly_named.path.to_str().unwrap().to_owned();
    assert_refused(&cluster, &["submit", &path], &["[job] name", "lowercase", "Bad_Name"]);
    // --resume of a job that takes no checkpoints.
    let text = std::fs::read_to_string(&regions_job("plain", 1, 10, 1000).path)
        .unwrap()
        .replace("[checkpoint]\ninterval_ms = 100\ndir = \"ck\"\nretain = 2\n", "");
    let plain = Job::new(&text);
    let plain_path = plain.path.to_str().unwrap().to_owned();
    assert_refused(&cluster, &["submit", "--resume", &plain_path], &["--resume needs a job with [checkpoint]"]);
    // The same name twice while the first runs; stop of a job without checkpoints.
    let slow_text =
        text.replace("rows = 10\n", "rows = 100000\n").replace("rows_per_second = 1000", "rows_per_second = 50");
    let slow = Job::new(&slow_text);
    cluster.submit(&slow);
    let again = Job::new(&slow_text);
    assert_refused(&cluster, &["submit", again.path.to_str().unwrap()], &["job `plain` is running already"]);
    assert_refused(&cluster, &["stop", "plain"], &["has no [checkpoint]", "cancel it instead"]);
    // Questions about a job that does not exist.
    assert_refused(&cluster, &["status", "nope"], &["no job `nope`"]);
    assert_refused(&cluster, &["cancel", "nope"], &["no job `nope`"]);
    let out = cluster.flumen(&["cancel", "plain"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// One region (generator → keyed-counter ×4 → JSONL ×4, checkpointed) that asks to run
/// across `spread` workers (`[job] spread`): `gen0` → `count0` → `out0`.
fn spread_job(name: &str, rows: u64, rate: u64, spread: u32) -> Job {
    let text = regions_job(name, 1, rows, rate);
    let text = std::fs::read_to_string(&text.path).unwrap();
    let text = text
        .replace("channel_capacity = 4\n", &format!("channel_capacity = 4\nspread = {spread}\n"))
        .replace("capabilities = [\"log\", \"state\"]", "parallelism = 4\ncapabilities = [\"log\", \"state\"]")
        .replace("path = \"out0\"", "path = \"out0\"\nparallelism = 4");
    Job::new(&text)
}

#[test]
fn a_region_spread_over_two_workers_commits_what_one_process_commits() {
    let cluster = Cluster::up(3, &[]);
    let rows = 6000;
    let job = spread_job("spread", rows, 6000, 2);
    assert!(cluster.submit(&job).contains("submitted `spread`"));
    // Placed across two workers while it runs.
    let deadline = Instant::now() + Duration::from_secs(60);
    let placed = loop {
        let placement = cluster.placement("spread");
        if let Some(on) = placement.get("gen0") {
            break on.clone();
        }
        assert!(Instant::now() < deadline, "not placed in time:\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(50));
    };
    let parts: Vec<&str> = placed.split('+').collect();
    assert_eq!(parts.len(), 2, "the region runs across two workers: {placed}");
    assert_ne!(parts[0], parts[1], "{placed}");
    let (status, finished) = cluster.wait("spread", Duration::from_secs(120));
    assert!(finished, "{status}\n{}", cluster.logs());
    assert_exactly_once(&job, 1, rows, "spread over two workers");
    assert!(status.contains(&format!("rows written: {rows}")), "both parts' rows are counted:\n{status}");
    for worker in &parts {
        assert!(cluster.log(worker).contains("task ended"), "{worker} ran a part:\n{}", cluster.logs());
    }
    // Batches crossed between the two workers, and each worker's metrics say how many bytes.
    let workers = String::from_utf8_lossy(&cluster.flumen(&["cluster", "workers"]).stdout).into_owned();
    let url_of = |worker: &str| -> String {
        let line = workers.lines().find(|l| l.starts_with(worker)).unwrap_or_else(|| panic!("{workers}"));
        line.rsplit("metrics ").next().unwrap().trim().to_owned()
    };
    let (a, b) = (parts[0], parts[1]);
    let (text_a, text_b) = (http_get(&url_of(a)), http_get(&url_of(b)));
    let edge = |text: &str, what: &str, me: &str, peer: &str| {
        sample(text, &format!("flumen_worker_mesh_{what}_total{{worker=\"{me}\",peer=\"{peer}\"}}")).unwrap_or(0.0)
    };
    let (a_to_b, b_from_a) = (edge(&text_a, "bytes_sent", a, b), edge(&text_b, "bytes_received", b, a));
    let (b_to_a, a_from_b) = (edge(&text_b, "bytes_sent", b, a), edge(&text_a, "bytes_received", a, b));
    assert!(a_to_b > 0.0 && a_to_b == b_from_a, "{a} → {b}: sent {a_to_b}, received {b_from_a}\n{text_a}\n{text_b}");
    assert_eq!(b_to_a, a_from_b, "{b} → {a}");

    let alone = spread_job("spread", rows, 6000, 2);
    let out = Command::new(flumen_bin()).args(["run", alone.path.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(committed(job.dir.path(), 1), committed(alone.dir.path(), 1));
}

/// Spread over all three workers: every kill of any part's worker cancels the other parts,
/// waits for them to end and places all three again, restoring the last checkpoint.
#[test]
fn sigkilled_workers_of_a_spread_region_lose_and_duplicate_nothing() {
    let mut cluster = Cluster::up(3, &[]);
    let rows = 12_000;
    let job = spread_job("spread-kills", rows, 1500, 3);
    cluster.submit(&job);
    let kills = cluster.kill_busy_workers("spread-kills", 6, 0x5eed_5b1d, 800..1600, Duration::from_secs(120));
    assert!(kills >= 6, "only {kills} kills: the job ended first");
    let (status, finished) = cluster.wait("spread-kills", Duration::from_secs(240));
    assert!(finished, "{status}\n{}", cluster.logs());
    assert!(!status.contains(" 0 failover(s)"), "{status}");
    assert_exactly_once(&job, 1, rows, "after killing workers of a spread region");
    let placed = cluster.log("coordinator").matches("region placed across workers").count();
    assert!(placed >= 2, "the region was placed across workers again after losses ({placed} placements)");
}

/// `flumen plugin load` makes a package ready on all three workers (each
/// pulls it into its own store from the registry, checks it against its trust
/// policy, compiles it) while another job keeps running untouched; a job then
/// runs that package, and `flumen job upgrade <job>` swaps it to a newer
/// version through the coordinator, live, exactly-once.
#[test]
fn packages_hot_load_into_a_running_cluster_and_a_cluster_job_upgrades_live() {
    use crate::package_jobs::{World, job};
    let w = World::new();
    w.publish("1.0.0", "");
    w.publish("2.0.0", "state_schema = 2\nmigrates_from = [1]");
    let registry = w.path("registry");
    let workers_store = w.path("workers-store");
    let trust = w.path("trust.toml");
    let mut cluster = Cluster::up_with(3, &[], &[("FLUMEN_REGISTRY", &workers_store), ("FLUMEN_TRUST", &trust)]);
    let client = |args: &[&str]| -> (i32, String) {
        let out = w.flumen(args).env("FLUMEN_CLUSTER", cluster.dir.path()).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    };

    // Another job, running before, during and after the loads.
    let (other_rows, other_regions) = (6000, 2);
    let other = regions_job("bystander", other_regions, other_rows, 1000);
    assert!(cluster.submit(&other).contains("submitted"));
    cluster.wait_committing(&other, "bystander", other_regions);
    let (before, placed) = (cluster.state_line("bystander"), cluster.placement("bystander"));

    let (code, text) = client(&["plugin", "load", "counter@1.0.0", "--registry", registry.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}\n{}", cluster.logs());
    assert_eq!(text.matches("ready (compiled").count(), 3, "every worker answers: {text}");
    assert!(text.contains("pulled from dir:"), "a worker pulled it into its store: {text}");

    // A job on the loaded package.
    let rows = 9000;
    let counted = job("counter@1.0.0", r#"{ key = "key" }"#, rows, 1500);
    let spec = counted.path.to_str().unwrap();
    w.ok(&["lock", spec, "--registry", registry.to_str().unwrap()]);
    let (code, text) = client(&["submit", spec]);
    assert_eq!(code, 0, "{text}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(counted.file("out")).map_or(0, |d| d.count()) == 0 {
        assert!(Instant::now() < deadline, "the packaged job never committed:\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(50));
    }

    // v2: loaded while both jobs run, then swapped in through the coordinator.
    let (code, text) = client(&["plugin", "load", "counter@2.0.0", "--registry", registry.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}\n{}", cluster.logs());
    let (code, text) = client(&["job", "upgrade", "packaged", "--operator", "count", "--to", "counter@2.0.0"]);
    assert_eq!(code, 0, "{text}\n{}", cluster.logs());
    assert!(text.contains("\"outcome\":\"applied\""), "{text}");
    // Refusals name the reason.
    let (code, text) = client(&["job", "upgrade", "packaged", "--operator", "nope", "--to", "counter@2.0.0"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("no operator `nope`"), "{text}");

    let (status, finished) = cluster.wait("packaged", Duration::from_secs(120));
    assert!(finished, "{status}\n{}", cluster.logs());
    let o = check(&counted.file("out"), rows, "cluster upgrade", true);
    assert!(o.clean() && o.rows == rows, "{o:?}");
    let (status, finished) = cluster.wait("bystander", Duration::from_secs(120));
    assert!(finished, "{status}\n{}", cluster.logs());
    // Never moved nor placed again: the same task epoch on the same workers, throughout.
    let epoch = |line: &str| line.split("(epoch ").nth(1).and_then(|r| r.split(',').next()).map(str::to_owned);
    assert_eq!(epoch(&before), epoch(status.lines().next().unwrap_or_default()), "{before}\n{status}");
    assert!(status.contains("0 failover(s)"), "{status}");
    assert_eq!(cluster.placement("bystander"), placed, "{status}");
    assert_exactly_once(&other, other_regions, other_rows, "bystander");

    // A worker that (re)joins is asked to load what was loaded before it came.
    cluster.kill_and_restart("worker-3");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = cluster.log("worker-3");
        let reloaded = log.lines().filter(|l| l.contains("package load") && l.contains("request=0")).count();
        if reloaded >= 2 {
            assert!(log.contains("counter@sha256:") && !log.contains("Err("), "{log}");
            break;
        }
        assert!(Instant::now() < deadline, "the rejoined worker did not load both packages:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// 20 live upgrades of a cluster job through the coordinator, alternating
/// two package versions (and the tag each stamps on its rows), with the
/// worker running it SIGKILLed every five: an upgrade asked while the
/// region moves is refused and asked again; one a kill interrupts rolls
/// back. The output is exactly-once and no committed epoch mixes versions.
#[test]
fn twenty_cluster_upgrades_with_worker_kills_between_stay_exactly_once() {
    use crate::package_jobs::{World, job};
    let w = World::new();
    w.publish("1.0.0", "");
    w.publish("2.0.0", "state_schema = 2\nmigrates_from = [1]");
    w.publish("2.1.0", "state_schema = 2\nmigrates_from = [1]");
    let (registry, store, trust) = (w.path("registry"), w.path("workers-store"), w.path("trust.toml"));
    let mut cluster = Cluster::up_with(2, &[], &[("FLUMEN_REGISTRY", &store), ("FLUMEN_TRUST", &trust)]);
    let client = |cluster: &Cluster, args: &[&str]| -> (i32, String) {
        let out = w.flumen(args).env("FLUMEN_CLUSTER", cluster.dir.path()).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    };
    for v in ["1.0.0", "2.0.0", "2.1.0"] {
        let (code, text) =
            client(&cluster, &["plugin", "load", &format!("counter@{v}"), "--registry", registry.to_str().unwrap()]);
        assert_eq!(code, 0, "{text}");
    }
    let rows = 75_000;
    let counted = job("counter@1.0.0", r#"{ key = "key", tag = "1.0.0" }"#, rows, 2500);
    let spec = counted.path.to_str().unwrap();
    w.ok(&["lock", spec, "--registry", registry.to_str().unwrap()]);
    let (code, text) = client(&cluster, &["submit", spec]);
    assert_eq!(code, 0, "{text}");

    let (mut applied, mut rolled_back, mut refused, mut kills) = (0, 0, 0, 0);
    let started = Instant::now();
    while applied < 20 {
        assert!(started.elapsed() < Duration::from_secs(240), "20 upgrades took too long:\n{}", cluster.logs());
        assert!(!cluster.state_line("packaged").contains("finished"), "the job ended after {applied} upgrades");
        let version = if applied % 2 == 0 { "2.0.0" } else { "2.1.0" };
        let config = format!(r#"{{"key": "key", "tag": "{version}"}}"#);
        let to = format!("counter@{version}");
        let (code, text) =
            client(&cluster, &["job", "upgrade", "packaged", "--operator", "count", "--to", &to, "--config", &config]);
        match code {
            0 => applied += 1,
            1 => rolled_back += 1,
            // The region is between workers (or not placed yet): ask again.
            2 if text.contains("not running now")
                || text.contains("not connected")
                || text.contains("runs no task") =>
            {
                refused += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            _ => panic!("upgrade {applied}: exit {code}: {text}\n{}", cluster.logs()),
        }
        if code == 0 && applied % 5 == 4 {
            let busy = cluster.placement("packaged").into_values().next();
            if let Some(worker) = busy {
                cluster.kill_and_restart(&worker);
                kills += 1;
            }
        }
    }
    eprintln!("{applied} applied, {rolled_back} rolled back, {refused} refused while moving, {kills} kills");
    assert_eq!(kills, 4);
    let (status, finished) = cluster.wait("packaged", Duration::from_secs(180));
    assert!(finished, "{status}\n{}", cluster.logs());
    let o = check(&counted.file("out"), rows, "cluster upgrades", true);
    assert!(o.clean() && o.rows == rows, "{o:?}");
    let tags = crate::upgrade::tags_by_subtask(&counted.file("out"));
    let seen: BTreeSet<&String> = tags.values().flatten().collect();
    assert!(seen.len() >= 3, "rows of every version were committed: {seen:?}");
}
