//! `flumen`: run, plan and inspect jobs and components; scaffold and build plugins.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use flumen_engine::{Engine, EngineError, EngineOptions};

mod plugin;

/// Flumen: dataflow pipelines of sandboxed WebAssembly operators over Arrow.
#[derive(Parser, Debug)]
#[command(name = "flumen", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a job to completion on this machine.
    Run {
        /// The job spec (TOML).
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
    },
    /// Validate a job and print its plan: nodes, edges, regions and schemas.
    Plan {
        job: PathBuf,
        #[command(flatten)]
        plugins: PluginArgs,
    },
    /// Print a component's world: what it imports and exports.
    Inspect { component: PathBuf },
    /// Scaffold and build operator plugins.
    Plugin {
        #[command(subcommand)]
        command: plugin::PluginCommand,
    },
}

#[derive(clap::Args, Debug)]
struct PluginArgs {
    /// Extra directory searched for plugins named by bare name (repeatable).
    #[arg(long = "plugin-dir")]
    plugin_dirs: Vec<PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLUMEN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Err(e) = flumen_engine::arm_fail_points_from_env() {
        eprintln!("error: FLUMEN_FAILPOINTS: {e}");
        return ExitCode::from(2);
    }
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { job, plugins, quiet, resume, from_scratch } => {
            runtime()?.block_on(run(job, plugins, quiet, flumen_engine::RunOptions { resume, from_scratch }))
        }
        Command::Plan { job, plugins } => runtime()?.block_on(async {
            let engine = engine(plugins)?;
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
        Command::Plugin { command } => plugin::run(command),
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

fn engine(plugins: PluginArgs) -> anyhow::Result<Engine> {
    let mut plugin_dirs = plugins.plugin_dirs;
    if let Some(path) = std::env::var_os("FLUMEN_PLUGIN_PATH") {
        plugin_dirs.extend(std::env::split_paths(&path));
    }
    plugin_dirs.push(PathBuf::from(env!("FLUMEN_PLUGIN_DIR")));
    Ok(Engine::new(EngineOptions { plugin_dirs, cache_dir: cache_dir() })?)
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
    options: flumen_engine::RunOptions,
) -> anyhow::Result<ExitCode> {
    let engine = engine(plugins)?;
    let prepared = match engine.prepare(&job).await {
        Ok(p) => p,
        Err(e) => return Ok(report(e)),
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
