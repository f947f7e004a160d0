//! `flumen`: run, plan and inspect jobs and components; scaffold and build plugins.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use flumen_engine::{Engine, EngineError, EngineOptions};

mod certs;
mod cluster;
mod control;
mod guests;
mod lock;
mod packages;
mod plugin;

/// Exit codes and environment variables, shown by `--help`.
const EXIT_AND_ENV: &str = "\
Exit codes:
  0    the command succeeded (the job finished and its output is committed)
  1    the job failed while running (an operator, a source or a sink)
  2    the job spec or the command line is invalid; or checkpoints of an
       earlier run exist and --resume was not given; or a region has no
       intact checkpoint left (or committed output exists) and starting over
       would lose output: add --from-scratch to allow it
  3    stopped by Ctrl-C after a final checkpoint; continue with --resume
  130  cancelled (Ctrl-C with no checkpoint): nothing was committed

Environment variables:
  FLUMEN_LOG          log filter for stderr (`tracing` syntax: warn, info,
                      flumen_engine=debug, ...); default: warn
  FLUMEN_CACHE_DIR    where compiled components are cached; default:
                      $XDG_CACHE_HOME/flumen, else ~/.cache/flumen
  FLUMEN_PLUGIN_PATH  extra plugin directories (`:`-separated), searched
                      after --plugin-dir and before the built-in plugins
  FLUMEN_PLUGIN_DIR   the built-in plugins' directory; default: target/plugins
                      of the source checkout this binary was built from, whose
                      plugins not built yet are built into it on first use
  OTEL_EXPORTER_OTLP_ENDPOINT
                      send OpenTelemetry traces (job, region, subtask and
                      checkpoint spans; a cluster job's life) over OTLP/HTTP
                      to this collector; the other OTEL_* variables apply
  FLUMEN_REGISTRY     the local package store (a directory registry);
                      default: $XDG_DATA_HOME/flumen/registry, else
                      ~/.local/share/flumen/registry
  FLUMEN_TRUST        the trust file: which keys may sign which packages;
                      default: ~/.config/flumen/trust.toml if it exists,
                      else nothing is trusted
  FLUMEN_ALLOW_UNSIGNED=1
                      development only: accept unsigned packages (tampered
                      ones are refused all the same)
  FLUMEN_OCI_INSECURE OCI registries (host:port, comma-separated) spoken to
                      over plain HTTP (loopback ones always are)
  FLUMEN_OCI_USERNAME, FLUMEN_OCI_PASSWORD
                      basic-auth credentials for OCI registries
  FLUMEN_CLUSTER      the cluster directory of `submit`, `jobs`, `status`,
                      `stop`, `cancel` and `cluster …` (cluster.json, certs/);
                      default: ./flumen-cluster
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL,
  AWS_ALLOW_HTTP      credentials and endpoint for s3:// checkpoint stores
                      and blob sources";

/// Flumen: dataflow pipelines of sandboxed WebAssembly operators over Arrow.
#[derive(Parser, Debug)]
#[command(name = "flumen", version, about, after_help = EXIT_AND_ENV)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a job to completion on this machine.
    ///
    /// Prints a live progress line on a terminal, then a per-node summary on
    /// stdout. Plugins of this source checkout that are not built yet are
    /// built first; each component is compiled once and cached.
    #[command(after_help = EXIT_AND_ENV)]
    Run {
        /// The job spec (TOML); relative paths in it are relative to its directory.
        job: PathBuf,
        #[command(flatten)]
        plugins: PluginArgs,
        /// Print no progress line.
        #[arg(long)]
        quiet: bool,
        /// Continue from the job's latest checkpoint (after a crash, a kill or
        /// a stop with Ctrl-C) instead of starting over. Damaged checkpoints are
        /// moved into `<checkpoint dir>/<region>/.quarantine/`; when a region has
        /// none intact left, it refuses (exit 2) rather than delete committed
        /// output, unless --from-scratch is given too.
        #[arg(long)]
        resume: bool,
        /// Allow starting over: deletes the job's checkpoints and the committed
        /// part files of its exactly-once sinks, and says what it removed. Alone,
        /// every region starts over; with --resume, only regions that have no
        /// intact checkpoint do.
        #[arg(long)]
        from_scratch: bool,
        /// Listen on this Unix socket for live upgrades of the job's operators
        /// (`flumen job upgrade --control <socket> …`) while it runs.
        #[arg(long, value_name = "SOCKET")]
        control: Option<PathBuf>,
    },
    /// Pin the packages a job names by version (`plugin = "name@^1"`) to
    /// digests in `flumen.lock` beside it, pulling them into the local store.
    Lock(lock::LockArgs),
    /// Act on a running job: upgrade one of its operators live.
    Job {
        #[command(subcommand)]
        command: JobCommand,
    },
    /// Validate a job and print its plan: nodes, edges, regions and schemas.
    ///
    /// Opens every operator (so its config is checked) but reads no data.
    #[command(after_help = EXIT_AND_ENV)]
    Plan {
        /// The job spec (TOML).
        job: PathBuf,
        #[command(flatten)]
        plugins: PluginArgs,
    },
    /// Print a component's world: what it imports and exports.
    ///
    /// Also its digest, whether it is a Flumen operator and the capabilities
    /// it needs. Exit code 0, or 2 when the file is not a valid component.
    Inspect {
        /// The component file (`.wasm`).
        component: PathBuf,
    },
    /// What a model repository holds (the `[inference] models` directory).
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Scaffold and build operator plugins.
    Plugin {
        #[command(subcommand)]
        command: plugin::PluginCommand,
    },
    /// Create a cluster CA and node certificates for mutual TLS between nodes.
    Certs(certs::CertsArgs),
    /// Run a cluster coordinator: places jobs' regions on workers, moves them when a worker is lost.
    Coordinator(cluster::CoordinatorArgs),
    /// Run a cluster worker: joins a coordinator and runs the regions it is given.
    Worker(cluster::WorkerArgs),
    /// A local cluster for development: `up`, `down`, `workers`.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Submit a job to a cluster.
    Submit(cluster::SubmitArgs),
    /// List a cluster's jobs.
    Jobs {
        #[command(flatten)]
        at: cluster::ClusterDir,
    },
    /// A cluster job's state and where its regions run.
    Status {
        job: String,
        #[command(flatten)]
        at: cluster::ClusterDir,
    },
    /// Cancel a cluster job: nothing after its last checkpoint is committed.
    Cancel {
        job: String,
        #[command(flatten)]
        at: cluster::ClusterDir,
    },
    /// Stop a cluster job after a last checkpoint (`flumen submit --resume` continues it).
    Stop {
        job: String,
        /// Wait until it has stopped.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        at: cluster::ClusterDir,
    },
}

#[derive(Subcommand, Debug)]
enum JobCommand {
    /// Swap an operator of a running job to another version at its next
    /// checkpoint barrier, with no restart: every subtask snapshots, the new
    /// version opens on that state, and processing goes on. A version that
    /// fails to open, restore or process its first batches rolls back by
    /// itself. Prints the outcome; exit 0 when applied, 1 when rolled back,
    /// 2 when refused.
    Upgrade {
        /// A cluster job's name (`flumen jobs`); the coordinator asks the
        /// worker that runs the operator. Leave it out with --control.
        job: Option<String>,
        /// The control socket of a single-process run (`flumen run --control <socket>`).
        #[arg(long, value_name = "SOCKET", conflicts_with = "job")]
        control: Option<PathBuf>,
        #[command(flatten)]
        at: cluster::ClusterDir,
        /// The operator's id in the job spec.
        #[arg(long)]
        operator: String,
        /// The new version: a package in the local store (`name@1.2.0`,
        /// `name@^1`, `name@sha256:…`), checked by the trust policy and for
        /// state compatibility; or a component file (`.wasm`).
        #[arg(long, value_name = "VERSION")]
        to: String,
        #[command(flatten)]
        trust: lock::TrustArgs,
        /// The new version's config as JSON (default: the spec's).
        #[arg(long)]
        config: Option<String>,
        /// Batches the new version must process without an error before it is kept.
        #[arg(long, default_value_t = flumen_engine::HEALTH_BATCHES_DEFAULT)]
        health_batches: u32,
    },
}

#[derive(Subcommand, Debug)]
enum ModelsCommand {
    /// One line per model: file, digest, size, backend, device, batching. Loads nothing.
    List {
        /// The model repository: one folder per model, each with a model.toml.
        dir: PathBuf,
    },
    /// Load each model (or only NAME) and print its inputs, outputs and settings.
    Inspect {
        dir: PathBuf,
        name: Option<String>,
        /// The ONNX Runtime library (default: ORT_DYLIB_PATH, Python's onnxruntime, system paths).
        #[arg(long)]
        runtime: Option<PathBuf>,
    },
}

#[derive(clap::Args, Debug)]
struct PluginArgs {
    /// Extra directory searched for plugins named by bare name (repeatable).
    #[arg(long = "plugin-dir")]
    plugin_dirs: Vec<PathBuf>,
    /// Who may sign the packages a job names (`plugin = "name@version"`).
    #[command(flatten)]
    trust: lock::TrustArgs,
}

fn main() -> ExitCode {
    let traces = init_logging();
    let cli = Cli::parse();
    if let Err(e) = flumen_engine::arm_fail_points_from_env() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let code = match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            ExitCode::from(2)
        }
    };
    if let Some(provider) = traces {
        // Sends the spans still batched; an unreachable collector costs only its timeout.
        if let Err(e) = provider.shutdown() {
            eprintln!("warning: sending the last traces: {e}");
        }
    }
    code
}

/// An error and its causes on one line, each cause once: library errors often
/// quote their source in their own message as well as returning it as the source.
fn chain(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// OpenTelemetry traces over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
/// `…_TRACES_ENDPOINT`) is set: every `tracing` span (job, region, subtask,
/// checkpoint, a cluster task, a cluster job's life) becomes a span, batched and
/// sent by the SDK's own thread. The standard `OTEL_*` variables apply
/// (service name, resource attributes, batch delay).
fn otel_provider() -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
    let set = |v: &str| std::env::var_os(v).is_some_and(|x| !x.is_empty());
    if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return None;
    }
    // The exporter's HTTPS client is rustls on ring, like the object stores'.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("warning: no OpenTelemetry traces: {e}");
            return None;
        }
    };
    let mut resource = opentelemetry_sdk::Resource::builder();
    if !set("OTEL_SERVICE_NAME") {
        resource = resource.with_service_name("flumen");
    }
    Some(
        opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    )
}

/// Logs (`FLUMEN_LOG`, default `warn`) to stderr, coloured only on a
/// terminal; and notices for the user (target `flumen::notice`, such as "compiling
/// plugin …") as plain lines whatever the filter, unless it names that target.
fn init_logging() -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer, filter::Targets, fmt};

    let (filter, notices) = match std::env::var("FLUMEN_LOG") {
        Ok(spec) if spec.contains("flumen::notice") => (EnvFilter::new(spec), Targets::new()),
        Ok(spec) => (
            EnvFilter::new(format!("{spec},flumen::notice=off")),
            Targets::new().with_target("flumen::notice", tracing::Level::INFO),
        ),
        Err(_) => (
            EnvFilter::new("warn,flumen::notice=off"),
            Targets::new().with_target("flumen::notice", tracing::Level::INFO),
        ),
    };
    let ansi = std::io::stderr().is_terminal();
    let traces = otel_provider();
    let otel = traces.as_ref().map(|provider| {
        use opentelemetry::trace::TracerProvider;
        // Spans at info and above (debug spans stay local), whatever FLUMEN_LOG says.
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("flumen"))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    tracing_subscriber::registry()
        .with(otel)
        .with(fmt::layer().with_writer(std::io::stderr).with_ansi(ansi).with_filter(filter))
        .with(
            fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .without_time()
                .with_level(false)
                .with_target(false)
                .with_filter(notices),
        )
        .init();
    traces
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { job, plugins, quiet, resume, from_scratch, control } => runtime()?.block_on(run(
            job,
            plugins,
            quiet,
            flumen_engine::RunOptions { resume, from_scratch, ..Default::default() },
            control,
        )),
        Command::Job { command } => runtime()?.block_on(job_command(command)),
        Command::Lock(args) => runtime()?.block_on(async {
            lock::lock(args).await?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Plan { job, plugins } => runtime()?.block_on(async {
            let engine = engine(plugins, &job).await?;
            let prepared = match engine.prepare(&job).await {
                Ok(p) => p,
                Err(e) => return Ok(report(e)),
            };
            print!("{}", prepared.describe());
            Ok(ExitCode::SUCCESS)
        }),
        Command::Inspect { component } => {
            print!("{}", flumen_wasm_inspect(&component)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Models { command } => {
            let out = match command {
                ModelsCommand::List { dir } => flumen_engine::list_models(&dir),
                ModelsCommand::Inspect { dir, name, runtime } => {
                    flumen_engine::inspect_models(&dir, name.as_deref(), runtime.as_deref())
                }
            };
            match out {
                Ok(text) => {
                    print!("{text}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(2))
                }
            }
        }
        Command::Plugin { command } => plugin::run(command),
        Command::Certs(args) => certs::run(args),
        Command::Coordinator(args) => cluster::coordinator(args),
        Command::Worker(args) => cluster::worker(args),
        Command::Cluster { command } => cluster::cluster(command),
        Command::Submit(args) => cluster::submit(args),
        Command::Jobs { at } => cluster::request(at, flumen_cluster::Request::Jobs),
        Command::Status { job, at } => cluster::request(at, flumen_cluster::Request::Status { job }),
        Command::Cancel { job, at } => cluster::request(at, flumen_cluster::Request::Cancel { job }),
        Command::Stop { job, wait, at } => cluster::stop(job, wait, at),
    }
}

fn flumen_wasm_inspect(path: &Path) -> anyhow::Result<String> {
    Ok(flumen_engine::inspect_component(path)?)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("flumen-worker")
        .build()
        .context("starting the runtime")
}

fn plugin_dirs(plugins: PluginArgs) -> Vec<PathBuf> {
    let mut plugin_dirs = plugins.plugin_dirs;
    if let Some(path) = std::env::var_os("FLUMEN_PLUGIN_PATH") {
        plugin_dirs.extend(std::env::split_paths(&path));
    }
    plugin_dirs.push(builtin_plugin_dir());
    plugin_dirs
}

/// `$FLUMEN_PLUGIN_DIR`, else the checkout's `target/plugins` (set by the build script).
fn builtin_plugin_dir() -> PathBuf {
    std::env::var_os("FLUMEN_PLUGIN_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("FLUMEN_PLUGIN_DIR")))
}

/// An engine over `job`'s plugins, building those it needs from source
/// first and pulling the packages its lockfile pins that are not local.
async fn engine(plugins: PluginArgs, job: &Path) -> anyhow::Result<Engine> {
    let packages = lock::engine_packages(&plugins.trust)?;
    lock::pull_locked(job, &packages.trust).await?;
    let plugin_dirs = plugin_dirs(plugins);
    build_missing_plugins(job, &plugin_dirs)?;
    Ok(Engine::new(EngineOptions { plugin_dirs, cache_dir: cache_dir(), packages: Some(packages) })?)
}

/// Builds the plugins `job` names by bare name that are in no plugin
/// directory but are in the source checkout this binary was built from (the
/// media plugins are built on first use, not with the CLI), into the default
/// plugin directory. A job that does not load is left to `prepare` to report.
fn build_missing_plugins(job: &Path, plugin_dirs: &[PathBuf]) -> anyhow::Result<()> {
    let Ok(spec) = flumen_spec::JobSpec::load(job) else { return Ok(()) };
    let source = Path::new(env!("FLUMEN_SOURCE_DIR"));
    let dest = builtin_plugin_dir();
    let mut missing: Vec<(guests::Guest, PathBuf)> = Vec::new();
    for op in &spec.operators {
        let name = op.plugin.as_str();
        // `dir/name.wasm` beside its source (a crate or a plugin.toml): built
        // when missing or older than its sources.
        if name.ends_with(".wasm") {
            let wasm = spec.base_dir().join(name);
            if let Some(dir) =
                wasm.parent().filter(|d| d.join("Cargo.toml").is_file() || d.join("plugin.toml").is_file())
                && plugin::is_stale(dir, &wasm)
            {
                eprintln!("building plugin {} from {} (sources changed or not built yet)…", op.id, dir.display());
                plugin::build(dir, Some(&wasm)).map_err(|e| e.context(format!("building plugin `{}`", op.id)))?;
            }
            continue;
        }
        if name.contains('/') || name.ends_with(".wasm") || missing.iter().any(|(g, _)| g.name == name) {
            continue;
        }
        if plugin_dirs.iter().any(|d| d.join(format!("{name}.wasm")).is_file()) {
            continue;
        }
        if let Some(g) = guests::plugin_source(source, name) {
            missing.push((g, dest.clone()));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let names = missing.iter().map(|(g, _)| format!("`{}`", g.name)).collect::<Vec<_>>().join(", ");
    eprintln!("building plugin {names} from source (first use; later runs reuse it)…");
    guests::build(source, Path::new(env!("FLUMEN_GUEST_TARGET_DIR")), &missing, guests::Progress::Stderr)
        .map_err(|e| anyhow::anyhow!("plugin {names} is not built yet: {e}"))
}

/// `$FLUMEN_CACHE_DIR`, else `$XDG_CACHE_HOME/flumen`, else `~/.cache/flumen`.
fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("FLUMEN_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("flumen"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/flumen"))
}

async fn run(
    job: PathBuf,
    plugins: PluginArgs,
    quiet: bool,
    mut options: flumen_engine::RunOptions,
    control: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let engine = engine(plugins, &job).await?;
    let prepared = match engine.prepare(&job).await {
        Ok(p) => p,
        Err(e) => return Ok(report(e)),
    };
    let _socket = match control {
        Some(path) => {
            let handle = flumen_engine::JobControl::new();
            options.control = Some(handle.clone());
            Some(control::serve(&path, handle)?)
        }
        None => None,
    };
    let metrics = prepared.metrics();
    let started = Instant::now();
    let show_progress = !quiet && std::io::stderr().is_terminal();
    let progress = tokio::spawn(async move {
        if !show_progress {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            eprint!("\r\x1b[2K{}", metrics.progress_line(started.elapsed()));
            let _ = std::io::stderr().flush();
        }
    });
    // The first Ctrl-C stops the job (with a final checkpoint when it takes
    // checkpoints); a second one exits at once.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        let _ = stop_tx.send(());
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\ninterrupted again: exiting now");
            std::process::exit(130);
        }
    });
    let stop = async {
        if stop_rx.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let result = prepared.run_with(options, stop).await;
    progress.abort();
    if show_progress {
        eprint!("\r\x1b[2K");
    }
    match result {
        Ok(summary) => {
            print!("{}", summary.render());
            Ok(ExitCode::SUCCESS)
        }
        Err(EngineError::Cancelled) => {
            eprintln!("cancelled; no output was committed");
            Ok(ExitCode::from(130))
        }
        Err(EngineError::Stopped { checkpoint }) => {
            eprintln!(
                "stopped after checkpoint {checkpoint}; its output is committed. Continue with: flumen run --resume {}",
                job.display()
            );
            Ok(ExitCode::from(3))
        }
        Err(e) => Ok(report(e)),
    }
}

async fn job_command(command: JobCommand) -> anyhow::Result<ExitCode> {
    match command {
        JobCommand::Upgrade { job, control: socket, at, operator, to, config, health_batches, trust } => {
            let config: Option<serde_json::Value> = match config {
                None => None,
                Some(text) => Some(serde_json::from_str(&text).context("--config is not JSON")?),
            };
            let (component, reference, package) = upgrade_target(&to, &trust)?;
            let Some(socket) = socket else {
                let Some(job) = job else {
                    anyhow::bail!("name the cluster job to upgrade, or give --control <socket> for a single process");
                };
                if package.is_none() {
                    anyhow::bail!("--to {to}: a cluster upgrades to packages (`name@version`), which workers load");
                }
                let config = config.map(|c| c.to_string());
                let request = flumen_cluster::Request::Upgrade { job, operator, reference, config, health_batches };
                return cluster::ask_workers(&at, request).await;
            };
            let request =
                control::ControlRequest::Upgrade { operator, component, reference, config, health_batches, package };
            match control::send(&socket, &request).await? {
                control::ControlReply::Upgraded(outcome) => {
                    println!("{}", serde_json::to_string(&outcome)?);
                    Ok(match outcome {
                        flumen_engine::UpgradeOutcome::Applied { .. } => ExitCode::SUCCESS,
                        flumen_engine::UpgradeOutcome::RolledBack { .. } => ExitCode::from(1),
                    })
                }
                control::ControlReply::Error(e) => {
                    eprintln!("error: upgrade refused: {e}");
                    Ok(ExitCode::from(2))
                }
            }
        }
    }
}

/// The component an upgrade's `--to` names, the reference checkpoints
/// record, and its package manifest when it is a package.
fn upgrade_target(
    to: &str,
    trust: &lock::TrustArgs,
) -> anyhow::Result<(PathBuf, String, Option<flumen_engine::PackageManifest>)> {
    let path = PathBuf::from(to);
    if path.is_file() {
        let path = std::path::absolute(&path)?;
        return Ok((path.clone(), path.display().to_string(), None));
    }
    if !to.contains('@') {
        anyhow::bail!("--to {to}: no such component file, nor a package (`name@version`)");
    }
    let reference = flumen_package::PluginRef::parse(to).with_context(|| format!("--to {to}"))?;
    let (component, pinned, pkg) = lock::upgrade_package(&reference, &trust.policy()?)?;
    Ok((component, pinned, Some(pkg.manifest().clone())))
}

fn report(e: EngineError) -> ExitCode {
    match e {
        EngineError::Spec(_) | EngineError::Resume(_) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        other => {
            eprintln!("error: job failed: {other}");
            ExitCode::from(1)
        }
    }
}
