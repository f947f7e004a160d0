//! `flumen coordinator`, `flumen worker`, `flumen cluster up|down|workers` and the client
//! commands (`submit`, `jobs`, `status`, `cancel`, `stop`) that talk to a coordinator.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flumen_cluster::{Capacity, JobState, JobView, Request, Response, Timing};
use flumen_transport::{Endpoint, EndpointOptions, NodeCredentials, NodeIdentity};
use serde::{Deserialize, Serialize};

/// The client's certificate name in a cluster made by `flumen cluster up`.
const CLIENT_ID: &str = "client";
const COORDINATOR_ID: &str = "coordinator";
/// The cluster directory when `--cluster` and `FLUMEN_CLUSTER` are not given.
const CLUSTER_DIR_DEFAULT: &str = "flumen-cluster";

/// `cluster.json`: how clients reach the coordinator.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFile {
    /// The coordinator's address.
    coordinator: SocketAddr,
    /// The coordinator's node id (its certificate's name).
    coordinator_id: String,
    /// The certificate directory, relative to the cluster directory or absolute.
    certs: PathBuf,
    /// The node id clients present (`<certs>/<client_id>.pem`).
    client_id: String,
}

#[derive(clap::Args, Debug)]
pub struct CoordinatorArgs {
    /// The certificate directory (`flumen certs`): ca.pem and <id>.pem/<id>.key.
    #[arg(long)]
    certs: PathBuf,
    /// Where the coordinator keeps its state (jobs, leadership): a directory every
    /// coordinator that may take over reaches, or s3://bucket/prefix.
    #[arg(long)]
    state: String,
    /// Address to listen on (UDP).
    #[arg(long, default_value = "127.0.0.1:7700")]
    listen: SocketAddr,
    /// This node's id (its certificate's name).
    #[arg(long, default_value = COORDINATOR_ID)]
    id: String,
    /// Write the address actually bound here (with --listen …:0).
    #[arg(long)]
    addr_file: Option<PathBuf>,
    /// A worker's lease: how long it may commit after its last acknowledged heartbeat.
    #[arg(long, default_value_t = 3000)]
    lease_ms: u64,
    /// Serve Prometheus metrics at this address (`GET /metrics`).
    #[arg(long)]
    metrics: Option<SocketAddr>,
}

#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// The coordinator's address.
    #[arg(long)]
    join: SocketAddr,
    /// The certificate directory: ca.pem and <id>.pem/<id>.key.
    #[arg(long)]
    certs: PathBuf,
    /// This worker's id (its certificate's name).
    #[arg(long)]
    id: String,
    /// The coordinator's id (its certificate's name).
    #[arg(long, default_value = COORDINATOR_ID)]
    coordinator_id: String,
    /// Where this worker keeps working state (default: a directory named after it).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Cores offered (default: the machine's).
    #[arg(long)]
    cores: Option<u32>,
    /// Memory offered, in MiB (default: 4096 per core offered).
    #[arg(long)]
    memory_mb: Option<u64>,
    /// GPUs offered.
    #[arg(long, default_value_t = 0)]
    gpus: u32,
    /// Serve Prometheus metrics at this address (`GET /metrics`).
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Address to listen on (UDP): other workers connect here for regions split across workers.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The address other workers should dial (default: the one bound; give it when
    /// listening on 0.0.0.0 or behind NAT).
    #[arg(long)]
    advertise: Option<SocketAddr>,
    #[command(flatten)]
    plugins: super::PluginArgs,
}

#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// Start a coordinator and N workers on this machine, in the background (for development).
    Up {
        /// Workers to start.
        #[arg(short = 'n', long, default_value_t = 3)]
        workers: u32,
        #[command(flatten)]
        at: ClusterDir,
        /// GPUs each worker offers.
        #[arg(long, default_value_t = 0)]
        gpus_per_worker: u32,
        /// Cores each worker offers (default: the machine's).
        #[arg(long)]
        cores_per_worker: Option<u32>,
        /// A worker's lease in milliseconds.
        #[arg(long, default_value_t = 3000)]
        lease_ms: u64,
    },
    /// Stop the processes `cluster up` started.
    Down {
        #[command(flatten)]
        at: ClusterDir,
    },
    /// The workers, what they offer and have free, and their tasks.
    Workers {
        #[command(flatten)]
        at: ClusterDir,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub struct ClusterDir {
    /// The cluster directory (`cluster up` writes it): cluster.json, certs/, logs/.
    #[arg(long = "cluster", env = "FLUMEN_CLUSTER", default_value = CLUSTER_DIR_DEFAULT)]
    dir: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct SubmitArgs {
    /// The job spec; every worker must read it (and its plugins and data) at the same path.
    job: PathBuf,
    /// Continue the job from its checkpoints.
    #[arg(long)]
    resume: bool,
    /// Wait until the job ends; exit as `flumen run` would.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    at: ClusterDir,
    #[command(flatten)]
    plugins: super::PluginArgs,
}

fn credentials(certs: &Path, id: &str) -> anyhow::Result<NodeCredentials> {
    let node = NodeIdentity::new(id)?;
    NodeCredentials::load(certs, &node).with_context(|| format!("loading {id}'s certificate from {}", certs.display()))
}

fn bind(creds: &NodeCredentials, addr: SocketAddr) -> anyhow::Result<Arc<Endpoint>> {
    Ok(Arc::new(Endpoint::bind(addr, creds, EndpointOptions::default())?))
}

fn store_url(text: &str) -> anyhow::Result<flumen_state::StoreUrl> {
    let text = if text.contains("://") {
        text.to_owned()
    } else {
        let path = std::path::absolute(text).with_context(|| format!("--state {text}"))?;
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        format!("file://{}", path.display())
    };
    Ok(flumen_state::StoreUrl::parse(&text)?)
}

pub fn coordinator(args: CoordinatorArgs) -> anyhow::Result<ExitCode> {
    super::runtime()?.block_on(async {
        let creds = credentials(&args.certs, &args.id)?;
        let endpoint = bind(&creds, args.listen)?;
        let bound = endpoint.local_addr()?;
        if let Some(file) = &args.addr_file {
            std::fs::write(file, bound.to_string()).with_context(|| format!("writing {}", file.display()))?;
        }
        eprintln!("coordinator {} listening on {bound}", args.id);
        let lease = Duration::from_millis(args.lease_ms.max(200));
        let timing = Timing { heartbeat: lease / 6, lease, grace: lease / 3 };
        let options =
            flumen_cluster::CoordinatorOptions { state: store_url(&args.state)?, timing, metrics: args.metrics };
        flumen_cluster::coordinator::run(endpoint, options).await?;
        Ok(ExitCode::SUCCESS)
    })
}

pub fn worker(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let packages = crate::lock::engine_packages(&args.plugins.trust)?;
    let trust = args.plugins.trust.policy()?;
    let plugin_dirs = super::plugin_dirs(args.plugins);
    let engine = flumen_engine::Engine::new(flumen_engine::EngineOptions {
        plugin_dirs,
        cache_dir: super::cache_dir(),
        packages: Some(packages),
    })?;
    super::runtime()?.block_on(async {
        let creds = credentials(&args.certs, &args.id)?;
        let endpoint = bind(&creds, args.listen)?;
        let cores = args.cores.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
        let capacity = Capacity { cores, memory_mb: args.memory_mb.unwrap_or(u64::from(cores) * 4096), gpu: args.gpus };
        let data_dir = args.data.unwrap_or_else(|| PathBuf::from(&args.id));
        std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        eprintln!("worker {} joining {} with {}", args.id, args.join, flumen_cluster::placement::describe(&capacity));
        let options = flumen_cluster::WorkerOptions {
            coordinator: args.join,
            coordinator_id: NodeIdentity::new(&args.coordinator_id)?,
            capacity,
            data_dir,
            metrics: args.metrics,
            advertise: args.advertise,
            loader: Some(Arc::new(Loader { trust: Arc::new(trust) })),
        };
        flumen_cluster::worker::run(endpoint, engine, options).await
    })
}

/// The client's endpoint and the coordinator's address and id, from a cluster directory.
struct ClientSide {
    endpoint: Endpoint,
    addr: SocketAddr,
    coordinator: NodeIdentity,
}

fn client(at: &ClusterDir) -> anyhow::Result<ClientSide> {
    let file = at.dir.join("cluster.json");
    let text = std::fs::read_to_string(&file).with_context(|| {
        format!("reading {} (start a cluster with `flumen cluster up`, or give --cluster)", file.display())
    })?;
    let cluster: ClusterFile = serde_json::from_str(&text).with_context(|| format!("{}", file.display()))?;
    let certs = at.dir.join(&cluster.certs);
    let creds = credentials(&certs, &cluster.client_id)?;
    let endpoint = Endpoint::bind("127.0.0.1:0".parse()?, &creds, EndpointOptions::default())?;
    Ok(ClientSide { endpoint, addr: cluster.coordinator, coordinator: NodeIdentity::new(&cluster.coordinator_id)? })
}

async fn ask(side: &ClientSide, request: Request) -> anyhow::Result<Response> {
    Ok(flumen_cluster::ask(&side.endpoint, side.addr, &side.coordinator, request).await?)
}

/// Runs a client command in a fresh runtime.
pub fn request(at: ClusterDir, request: Request) -> anyhow::Result<ExitCode> {
    super::runtime()?.block_on(async {
        let side = client(&at)?;
        Ok(print_response(ask(&side, request).await?))
    })
}

fn print_response(response: Response) -> ExitCode {
    match response {
        Response::Submitted { job } => println!("submitted `{job}` (follow it with `flumen status {job}`)"),
        Response::Jobs { jobs } => {
            if jobs.is_empty() {
                println!("no jobs");
            }
            for j in jobs {
                let placed = j.placement.iter().filter(|(_, w)| w.is_some()).count();
                println!(
                    "{:<24} {:<9} {} region(s), {placed} placed, {} failover(s)  {}",
                    j.job,
                    j.state.as_str(),
                    j.placement.len(),
                    j.failovers,
                    j.spec
                );
            }
        }
        Response::Job { job } => print!("{}", render_job(&job)),
        Response::Workers { workers } => {
            for w in workers {
                println!(
                    "{:<16} {:<5} offers {}; free {}; tasks: {}{}",
                    w.worker,
                    if w.alive { "up" } else { "lost" },
                    flumen_cluster::placement::describe(&w.capacity),
                    flumen_cluster::placement::describe(&w.free),
                    w.tasks.iter().map(|t| format!("{}@{}", t.job, t.epoch)).collect::<Vec<_>>().join(", "),
                    w.metrics.as_deref().map(|m| format!("; metrics {m}")).unwrap_or_default()
                );
            }
        }
        Response::Done { message } => println!("{message}"),
        Response::Loaded { workers } => {
            let mut failed = false;
            for (worker, result) in workers {
                match result {
                    Ok(what) => println!("{worker:<16} {what}"),
                    Err(e) => {
                        failed = true;
                        println!("{worker:<16} FAILED: {e}");
                    }
                }
            }
            if failed {
                return ExitCode::from(1);
            }
        }
        Response::Upgraded { worker, report } => {
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
            eprintln!("(on worker {worker})");
            if matches!(report, flumen_cluster::UpgradeReport::RolledBack { .. }) {
                return ExitCode::from(1);
            }
        }
        Response::Refused { message } => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

fn render_job(j: &JobView) -> String {
    let mut out = format!(
        "job {}: {} (epoch {}, {} failover(s))\n  spec: {}\n",
        j.job,
        j.state.as_str(),
        j.epoch,
        j.failovers,
        j.spec
    );
    for (region, worker) in &j.placement {
        out.push_str(&format!("  region {region}: {}\n", worker.as_deref().unwrap_or("-")));
    }
    if j.state == JobState::Finished {
        out.push_str(&format!("  rows written: {}\n", j.rows_out));
    }
    if let Some(note) = &j.note {
        out.push_str(&format!("  note: {note}\n"));
    }
    out
}

/// The exit code `flumen run` would give a job that ended so.
fn exit_for(state: JobState) -> ExitCode {
    match state {
        JobState::Finished => ExitCode::SUCCESS,
        JobState::Stopped => ExitCode::from(3),
        JobState::Cancelled => ExitCode::from(130),
        JobState::Failed | JobState::Running | JobState::Stopping => ExitCode::from(1),
    }
}

pub fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let job = std::path::absolute(&args.job).with_context(|| format!("{}", args.job.display()))?;
    let trust = args.plugins.trust.policy()?;
    let plugin_dirs = super::plugin_dirs(args.plugins);
    super::build_missing_plugins(&job, &plugin_dirs)?;
    super::runtime()?.block_on(async {
        // The workers load packages from the local store (a shared file system, as for the job's files).
        crate::lock::pull_locked(&job, &trust).await?;
        let side = client(&args.at)?;
        let answer = ask(&side, Request::Submit { spec: job.display().to_string(), resume: args.resume }).await?;
        let Response::Submitted { job } = answer else { return Ok(print_response(answer)) };
        println!("submitted `{job}`");
        if !args.wait {
            return Ok(ExitCode::SUCCESS);
        }
        wait(&side, &job).await
    })
}

async fn wait(side: &ClientSide, job: &str) -> anyhow::Result<ExitCode> {
    let mut last_note = None;
    loop {
        match ask(side, Request::Status { job: job.to_owned() }).await {
            Ok(Response::Job { job: view }) => {
                if view.note != last_note {
                    if let Some(note) = &view.note {
                        eprintln!("{}: {note}", view.job);
                    }
                    last_note = view.note.clone();
                }
                if view.state.is_terminal() {
                    print!("{}", render_job(&view));
                    return Ok(exit_for(view.state));
                }
            }
            Ok(other) => return Ok(print_response(other)),
            // The coordinator may be restarting: keep asking.
            Err(e) => eprintln!("waiting for `{job}`: {e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

pub fn stop(job: String, wait_for: bool, at: ClusterDir) -> anyhow::Result<ExitCode> {
    super::runtime()?.block_on(async {
        let side = client(&at)?;
        let answer = ask(&side, Request::Stop { job: job.clone() }).await?;
        let refused = matches!(answer, Response::Refused { .. });
        let code = print_response(answer);
        if refused || !wait_for {
            return Ok(code);
        }
        wait(&side, &job).await
    })
}

pub fn cluster(command: ClusterCommand) -> anyhow::Result<ExitCode> {
    match command {
        ClusterCommand::Up { workers, at, gpus_per_worker, cores_per_worker, lease_ms } => {
            up(&at.dir, workers, gpus_per_worker, cores_per_worker, lease_ms)
        }
        ClusterCommand::Down { at } => down(&at.dir),
        ClusterCommand::Workers { at } => request(at, Request::Workers),
    }
}

fn up(dir: &Path, workers: u32, gpus: u32, cores: Option<u32>, lease_ms: u64) -> anyhow::Result<ExitCode> {
    if workers == 0 {
        bail!("a cluster needs at least one worker");
    }
    let dir = std::path::absolute(dir)?;
    if dir.join("pids").is_dir() && std::fs::read_dir(dir.join("pids"))?.next().is_some() {
        bail!(
            "{} has a running cluster (or one not taken down): `flumen cluster down --cluster {}` first",
            dir.display(),
            dir.display()
        );
    }
    for sub in ["certs", "state", "logs", "pids", "workers"] {
        std::fs::create_dir_all(dir.join(sub)).with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    let certs = dir.join("certs");
    let mut nodes = vec![NodeIdentity::new(COORDINATOR_ID)?, NodeIdentity::new(CLIENT_ID)?];
    let names: Vec<String> = (1..=workers).map(|i| format!("worker-{i}")).collect();
    for n in &names {
        nodes.push(NodeIdentity::new(n)?);
    }
    flumen_transport::certs::write_cluster_dir(&certs, &nodes, flumen_transport::certs::NODE_VALIDITY_DAYS_DEFAULT)?;
    let exe = std::env::current_exe()?;
    let addr_file = dir.join("coordinator.addr");
    let _ = std::fs::remove_file(&addr_file);
    let lease = lease_ms.to_string();
    let coordinator_args: Vec<String> = vec![
        "coordinator".into(),
        "--certs".into(),
        certs.display().to_string(),
        "--state".into(),
        dir.join("state").display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--addr-file".into(),
        addr_file.display().to_string(),
        "--lease-ms".into(),
        lease,
        "--metrics".into(),
        "127.0.0.1:0".into(),
    ];
    spawn(&exe, &dir, COORDINATOR_ID, &coordinator_args)?;
    let started = Instant::now();
    let addr: SocketAddr = loop {
        if let Ok(text) = std::fs::read_to_string(&addr_file)
            && let Ok(addr) = text.trim().parse()
        {
            break addr;
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the coordinator did not start; see {}", dir.join("logs/coordinator.log").display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let file = ClusterFile {
        coordinator: addr,
        coordinator_id: COORDINATOR_ID.into(),
        certs: PathBuf::from("certs"),
        client_id: CLIENT_ID.into(),
    };
    std::fs::write(dir.join("cluster.json"), serde_json::to_string_pretty(&file)?)?;
    for name in &names {
        let mut args: Vec<String> = vec![
            "worker".into(),
            "--join".into(),
            addr.to_string(),
            "--certs".into(),
            certs.display().to_string(),
            "--id".into(),
            name.clone(),
            "--data".into(),
            dir.join("workers").join(name).display().to_string(),
            "--gpus".into(),
            gpus.to_string(),
            "--metrics".into(),
            "127.0.0.1:0".into(),
        ];
        if let Some(c) = cores {
            args.extend(["--cores".into(), c.to_string()]);
        }
        spawn(&exe, &dir, name, &args)?;
    }
    // Ready when every worker has joined.
    let at = ClusterDir { dir: dir.clone() };
    let runtime = super::runtime()?;
    let side = {
        let _in_runtime = runtime.enter();
        client(&at)?
    };
    loop {
        if let Ok(Response::Workers { workers: joined }) = runtime.block_on(ask(&side, Request::Workers))
            && joined.iter().filter(|w| w.alive).count() >= workers as usize
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("not every worker joined within 60 s; see {}", dir.join("logs").display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "cluster up in {}: coordinator at {addr}, {workers} worker(s); logs in {}\n\
         submit a job: flumen submit --cluster {} <job.toml>; take it down: flumen cluster down --cluster {}",
        dir.display(),
        dir.join("logs").display(),
        dir.display(),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Starts `flumen <args>` in the background, in its own process group (a Ctrl-C at the
/// terminal does not reach it), logging to `logs/<name>.log`, its pid in `pids/<name>`.
fn spawn(exe: &Path, dir: &Path, name: &str, args: &[String]) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let log = std::fs::File::create(dir.join("logs").join(format!("{name}.log")))?;
    let child = std::process::Command::new(exe)
        .args(args)
        .env("FLUMEN_LOG", std::env::var("FLUMEN_LOG").unwrap_or_else(|_| "info".into()))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    std::fs::write(dir.join("pids").join(name), child.id().to_string())?;
    Ok(())
}

fn down(dir: &Path) -> anyhow::Result<ExitCode> {
    let pids = dir.join("pids");
    let Ok(entries) = std::fs::read_dir(&pids) else {
        println!("no cluster in {}", dir.display());
        return Ok(ExitCode::SUCCESS);
    };
    let mut stopped = 0;
    for entry in entries {
        let entry = entry?;
        let pid = std::fs::read_to_string(entry.path())?.trim().to_owned();
        if pid.parse::<u32>().is_err() {
            continue;
        }
        // `kill` from procps: no signal handling of our own to get wrong.
        let ok = std::process::Command::new("kill").args(["-TERM", &pid]).status().is_ok_and(|s| s.success());
        if ok {
            stopped += 1;
        }
        std::fs::remove_file(entry.path())?;
    }
    println!("stopped {stopped} process(es) of the cluster in {}", dir.display());
    Ok(ExitCode::SUCCESS)
}

/// A worker's way to bring a hot-loaded package into its store: pulled from
/// the registry the client named, checked against this worker's trust policy
/// (`packages::pull` refuses and stores nothing otherwise), and held to the
/// digest the client asked for.
#[derive(Debug)]
struct Loader {
    trust: Arc<flumen_package::TrustPolicy>,
}

impl flumen_cluster::PackageLoader for Loader {
    fn fetch<'a>(
        &'a self,
        package: &'a flumen_cluster::PackageId,
        source: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send + 'a>> {
        Box::pin(async move {
            let source = crate::packages::Source::parse(source).map_err(|e| format!("{e:#}"))?;
            let version = semver::Version::parse(&package.version).map_err(|e| format!("version: {e}"))?;
            let pkg = crate::packages::pull(&source, &package.name, &version, &self.trust)
                .await
                .map_err(|e| format!("{e:#}"))?;
            if pkg.digest() != package.digest {
                return Err(format!(
                    "{}@{} at {source} is {}, not the {} asked for",
                    package.name,
                    package.version,
                    pkg.digest(),
                    package.digest
                ));
            }
            Ok(format!("pulled from {source}"))
        })
    }
}

/// Sends a request that workers answer, and prints their answers.
pub async fn ask_workers(at: &ClusterDir, request: Request) -> anyhow::Result<ExitCode> {
    let side = client(at)?;
    Ok(print_response(ask(&side, request).await?))
}
