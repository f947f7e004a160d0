//! `flumen plugin new|build|test`: scaffold an operator in Rust, Python,
//! JavaScript or C, build it into a validated component, and run its sample job;
//! `keygen|package|sign|verify|publish|pull|search|info` (in `package`): operator
//! packages, their signatures and registries.
//!
//! A Rust plugin is a crate (`Cargo.toml`); any other language's plugin is a
//! directory with a `plugin.toml` (`name`, `language`, `capabilities`) and its
//! source. Every language builds against the same `wit/`: Python and
//! JavaScript components are made for a world of exactly `output` and the
//! plugin's capabilities, since their runtimes import every interface of the
//! world they are built for, and the host refuses an import its job did not grant.

mod c;
mod js;
mod package;
mod python;
mod rust;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use clap::Subcommand;
use serde::Deserialize;

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Create a new operator plugin in `<dir>` (default: `./<name>`): a filter
    /// to start from, with a sample job and its expected output.
    New {
        /// The plugin's name: lowercase letters, digits, `-` and `_`.
        name: String,
        /// Guest language: rust, python, js or c.
        #[arg(long, default_value = "rust")]
        lang: String,
        /// Where to create it (default: `./<name>`).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Build the plugin in `<dir>` (default: `.`) into a component, checked
    /// to be a Flumen operator; prints its size, world, version and imports.
    Build {
        /// The plugin's directory (a crate, or a directory with plugin.toml).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Where to write the component (default: `<dir>/<name>.wasm`).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Build the plugin in `<dir>`, run its `sample/job.toml` and compare
    /// what it wrote with `sample/expected.jsonl`.
    Test {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Make an Ed25519 key pair for signing packages; prints its key id and
    /// the trust file entry that trusts it.
    Keygen(package::KeygenArgs),
    /// Package a plugin: its component (built, or --component) and
    /// package.toml into a package directory; prints its digests.
    Package(package::PackageArgs),
    /// Sign a package directory with a private key.
    Sign(package::SignArgs),
    /// Check a package's contents and that the trust policy accepts it; exit 2
    /// with the reason when not.
    Verify(package::VerifyArgs),
    /// Publish a package directory to a registry (a directory or
    /// oci://host[:port]/namespace; default: the local store). Refuses a
    /// package the trust policy would refuse.
    Publish(package::PublishArgs),
    /// Pull `name@version` from a registry into the local store, checking it
    /// against the trust policy first.
    Pull(package::PullArgs),
    /// Make a package ready on every worker of a running cluster (pulled,
    /// verified against each worker's trust policy, compiled), restarting
    /// nothing; jobs and upgrades can then name it.
    Load(package::LoadArgs),
    /// List the packages of a registry whose name or description holds TEXT;
    /// for an OCI registry, the versions of the package TEXT.
    Search(package::SearchArgs),
    /// Show a package's manifest, digests and signatures.
    Info(package::InfoArgs),
}

pub fn run(command: PluginCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::New { name, lang, dir } => {
            let lang = Lang::parse(&lang)?;
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            scaffold(&name, lang, &dir)?;
            println!("created {} ({} operator `{name}`)", dir.display(), lang.name());
            println!("build it:  flumen plugin build {}", dir.display());
            println!("test it:   flumen plugin test {}   (runs sample/job.toml)", dir.display());
            println!("use it:    plugin = \"{}\" in an [[operator]] table", dir.join(format!("{name}.wasm")).display());
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Build { dir, out } => {
            let built = build(&dir, out.as_deref())?;
            print!("{}", built.report());
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Test { dir } => test(&dir),
        PluginCommand::Keygen(args) => package::keygen(args),
        PluginCommand::Load(args) => package::load(args),
        PluginCommand::Package(args) => package::package(args),
        PluginCommand::Sign(args) => package::sign(args),
        PluginCommand::Verify(args) => package::verify(args),
        PluginCommand::Publish(args) => package::publish(args),
        PluginCommand::Pull(args) => package::pull(args),
        PluginCommand::Search(args) => package::search(args),
        PluginCommand::Info(args) => package::info(args),
    }
}

/// A guest language `flumen plugin` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Python,
    Js,
    C,
}

impl Lang {
    fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "rust" | "rs" => Self::Rust,
            "python" | "py" => Self::Python,
            "js" | "javascript" => Self::Js,
            "c" => Self::C,
            other => bail!("unknown language `{other}`: rust, python, js or c"),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Rust => "rust",
            Self::Python => "python",
            Self::Js => "js",
            Self::C => "c",
        }
    }
}

/// Capabilities a plugin may import besides `output`.
const CAPABILITIES: &[&str] = &["log", "state", "blobs", "inference"];

/// A non-Rust plugin's `plugin.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub language: Option<String>,
    #[serde(default = "default_capabilities")]
    pub capabilities: Vec<String>,
}

fn default_capabilities() -> Vec<String> {
    vec!["log".into()]
}

impl Manifest {
    fn read(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("plugin.toml");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let m: Manifest = toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start].lines().count().max(1));
            match line {
                Some(line) => anyhow::anyhow!("{}:{line}: {}", path.display(), e.message()),
                None => anyhow::anyhow!("{}: {}", path.display(), e.message()),
            }
        })?;
        if !valid_name(&m.name) {
            bail!("{}: {}", path.display(), name_rule(&m.name));
        }
        for c in &m.capabilities {
            if !CAPABILITIES.contains(&c.as_str()) {
                bail!("{}: unknown capability `{c}` (known: {})", path.display(), CAPABILITIES.join(", "));
            }
        }
        Ok(m)
    }
}

/// Which language the plugin in `dir` is written in: `Cargo.toml` is Rust;
/// otherwise plugin.toml's `language`, or the source file beside it.
pub fn detect(dir: &Path) -> anyhow::Result<Lang> {
    if dir.join("Cargo.toml").is_file() {
        return Ok(Lang::Rust);
    }
    if !dir.join("plugin.toml").is_file() {
        bail!(
            "{} is not a plugin: it has neither a Cargo.toml (Rust) nor a plugin.toml (Python, JavaScript, C); \
             `flumen plugin new --lang <rust|python|js|c> <name>` makes one",
            dir.display()
        );
    }
    let manifest = Manifest::read(dir)?;
    if let Some(lang) = &manifest.language {
        return Lang::parse(lang).with_context(|| format!("{}: `language`", dir.join("plugin.toml").display()));
    }
    let found: Vec<Lang> = [("app.py", Lang::Python), ("operator.js", Lang::Js), ("operator.c", Lang::C)]
        .into_iter()
        .filter(|(f, _)| dir.join(f).is_file())
        .map(|(_, l)| l)
        .collect();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => bail!(
            "{}: no app.py (Python), operator.js (JavaScript) or operator.c (C); or set `language`",
            dir.display()
        ),
        _ => bail!("{}: sources of several languages; set `language` in plugin.toml", dir.display()),
    }
}

/// A component `flumen plugin build` made, with what inspecting it found.
#[derive(Debug)]
pub struct Built {
    pub path: PathBuf,
    pub lang: Lang,
    pub bytes: u64,
    pub target: String,
    pub imports: Vec<String>,
    pub seconds: f64,
}

impl Built {
    fn report(&self) -> String {
        let flumen: Vec<&str> = self.imports.iter().filter(|i| i.starts_with("flumen:")).map(String::as_str).collect();
        let wasi = self.imports.iter().filter(|i| i.starts_with("wasi:")).count();
        let mut out = format!(
            "built {} ({} operator, {:.1} MB, {:.1} s)\n  world   operator, flumen:dataflow@{}\n  imports {}\n",
            self.path.display(),
            self.lang.name(),
            self.bytes as f64 / 1e6,
            self.seconds,
            self.target,
            if flumen.is_empty() { "none".to_string() } else { flumen.join(", ") }
        );
        if wasi > 0 {
            out.push_str(&format!(
                "  wasi    {wasi} WASI interfaces (the host links them without files, sockets or environment)\n"
            ));
        }
        out
    }
}

/// Builds the plugin in `dir` (any language) into `out` and checks the result.
pub fn build(dir: &Path, out: Option<&Path>) -> anyhow::Result<Built> {
    let started = std::time::Instant::now();
    let lang = detect(dir)?;
    let (path, allowed) = match lang {
        Lang::Rust => (rust::build(dir, out)?, None),
        other => {
            let manifest = Manifest::read(dir)?;
            let out = out.map(Path::to_path_buf).unwrap_or_else(|| dir.join(format!("{}.wasm", manifest.name)));
            if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
            }
            match other {
                Lang::Python => python::build(dir, &manifest, &out)?,
                Lang::Js => js::build(dir, &manifest, &out)?,
                Lang::C => c::build(dir, &manifest, &out)?,
                Lang::Rust => unreachable!("handled above"),
            }
            (out, Some(manifest.capabilities))
        }
    };
    let info = flumen_engine::inspect_component(&path)?;
    let target = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("targets flumen:dataflow@"))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string);
    let Some(target) = target else {
        bail!(
            "{} was built, but it does not export flumen:dataflow/transform: {}",
            path.display(),
            match lang {
                Lang::Rust => "is `export_operator!` called?",
                Lang::Python => "does app.py end with `Transform, Snapshot, EventTime = flumen.export(MyOperator)`?",
                Lang::Js =>
                    "does operator.js export `transform`, `snapshot` and `eventTime` from `operator(MyOperator)`?",
                Lang::C => "is flumen.c compiled in and `flumen_operator` defined?",
            }
        );
    };
    let imports: Vec<String> = info
        .split("\nimports:\n")
        .nth(1)
        .and_then(|rest| rest.split("\nexports:").next())
        .map(|s| s.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect())
        .unwrap_or_default();
    if let Some(allowed) = allowed {
        for import in imports.iter().filter_map(|i| i.strip_prefix("flumen:dataflow/")) {
            let iface = import.split('@').next().unwrap_or(import);
            if !matches!(iface, "types" | "output") && !allowed.iter().any(|c| c == iface) {
                bail!(
                    "{} imports `{iface}`, which plugin.toml does not list in `capabilities`: add it there (and grant \
                     it in the job)",
                    path.display()
                );
            }
        }
    }
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    Ok(Built { path, lang, bytes, target, imports, seconds: started.elapsed().as_secs_f64() })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
}

fn name_rule(name: &str) -> String {
    format!(
        "plugin name `{name}` must start with a lowercase letter and hold only lowercase letters, digits, `-` and `_`"
    )
}

fn scaffold(name: &str, lang: Lang, dir: &Path) -> anyhow::Result<()> {
    if !valid_name(name) {
        bail!("{}", name_rule(name));
    }
    if dir.exists() && std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} already exists and is not empty", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    match lang {
        Lang::Rust => rust::scaffold(name, dir)?,
        Lang::Python => python::scaffold(name, dir)?,
        Lang::Js => js::scaffold(name, dir)?,
        Lang::C => c::scaffold(name, dir)?,
    }
    if lang != Lang::Rust {
        std::fs::write(
            dir.join("plugin.toml"),
            format!(
                "# The `{name}` operator: what `flumen plugin build` needs to know.\nname = \"{name}\"\nlanguage = \"{}\"\n\
                 # Host interfaces it imports besides `output`: log, state, blobs, inference.\n\
                 # A job that runs it must grant each of them in the operator's `capabilities`.\n\
                 capabilities = [\"log\"]\n",
                lang.name()
            ),
        )?;
        std::fs::write(dir.join(".gitignore"), "*.wasm\n/sample/out/\n")?;
    }
    write_sample(name, dir)
}

/// The sample job every scaffold gets: ten rows through the new filter, and
/// the rows it must keep.
fn write_sample(name: &str, dir: &Path) -> anyhow::Result<()> {
    let sample = dir.join("sample");
    std::fs::create_dir_all(&sample)?;
    let mut input = String::from("id,qty\n");
    let mut expected = String::new();
    for id in 0..10 {
        let qty = (id * 7) % 10;
        input.push_str(&format!("{id},{qty}\n"));
        if qty >= 3 {
            expected.push_str(&format!("{{\"id\":{id},\"qty\":{qty}}}\n"));
        }
    }
    std::fs::write(sample.join("input.csv"), input)?;
    std::fs::write(sample.join("expected.jsonl"), expected)?;
    std::fs::write(
        sample.join("job.toml"),
        format!(
            "# A sample job for `{name}`: `flumen plugin test` builds the plugin, runs this job and\n\
             # compares out/result.jsonl with expected.jsonl.\n\
             [job]\nname = \"{name}-sample\"\n\n\
             [[source]]\nid = \"rows\"\nkind = \"csv\"\npath = \"input.csv\"\n\n\
             [[operator]]\nid = \"{name}\"\nplugin = \"../{name}.wasm\"\nconfig = {{ column = \"qty\", min = 3 }}\ninputs = [\"rows\"]\n\n\
             [[sink]]\nid = \"out\"\nkind = \"jsonl\"\npath = \"out/result.jsonl\"\ninputs = [\"{name}\"]\n"
        ),
    )?;
    Ok(())
}

/// `flumen plugin test`: build, run `sample/job.toml` with this binary, and
/// compare `sample/out/result.jsonl` with `sample/expected.jsonl`.
fn test(dir: &Path) -> anyhow::Result<ExitCode> {
    let sample = dir.join("sample");
    let job = sample.join("job.toml");
    let expected_path = sample.join("expected.jsonl");
    if !job.is_file() || !expected_path.is_file() {
        bail!("{} needs sample/job.toml and sample/expected.jsonl (`flumen plugin new` writes both)", dir.display());
    }
    let built = build(dir, None)?;
    print!("{}", built.report());
    let out_dir = sample.join("out");
    let _ = std::fs::remove_dir_all(&out_dir);
    let exe = std::env::current_exe().context("finding the flumen binary")?;
    let status = Command::new(exe)
        .args(["run", "--quiet", "job.toml"])
        .current_dir(&sample)
        .status()
        .context("running the sample job")?;
    if !status.success() {
        bail!("the sample job failed ({status})");
    }
    let got = std::fs::read_to_string(out_dir.join("result.jsonl")).context("reading sample/out/result.jsonl")?;
    let want = std::fs::read_to_string(&expected_path)?;
    if got == want {
        println!("ok: sample/out/result.jsonl matches sample/expected.jsonl ({} rows)", want.lines().count());
        return Ok(ExitCode::SUCCESS);
    }
    for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        if g != w {
            eprintln!("line {}: expected {w}\n         got      {g}", i + 1);
            break;
        }
    }
    eprintln!(
        "FAILED: sample/out/result.jsonl ({} rows) differs from sample/expected.jsonl ({} rows)",
        got.lines().count(),
        want.lines().count()
    );
    Ok(ExitCode::FAILURE)
}

/// Whether `wasm` is missing or older than a source file of the plugin in
/// `dir` (build outputs, dependencies and samples aside).
pub fn is_stale(dir: &Path, wasm: &Path) -> bool {
    let Ok(built) = std::fs::metadata(wasm).and_then(|m| m.modified()) else { return true };
    fn newer(dir: &Path, than: std::time::SystemTime) -> bool {
        let Ok(rd) = std::fs::read_dir(dir) else { return false };
        rd.filter_map(|e| e.ok()).any(|e| {
            let path = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            if matches!(name.as_ref(), "target" | "node_modules" | "sample" | "__pycache__" | "out")
                || name.starts_with('.')
                || name.ends_with(".wasm")
            {
                return false;
            }
            if path.is_dir() {
                return newer(&path, than);
            }
            e.metadata().and_then(|m| m.modified()).is_ok_and(|t| t > than)
        })
    }
    newer(dir, built)
}

/// The Flumen checkout this binary was built from (its SDKs and `wit/`).
pub fn source_root() -> PathBuf {
    PathBuf::from(env!("FLUMEN_SOURCE_DIR"))
}

/// A tool: the first of `candidates` that exists, else `name` on `PATH`.
pub fn find_tool(name: &str, candidates: &[PathBuf]) -> Option<PathBuf> {
    if let Some(found) = candidates.iter().find(|c| c.is_file()) {
        return Some(found.clone());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// The directory the toolchain script installs into (`target/sdk-tools`), or `FLUMEN_SDK_TOOLS`.
pub fn tools_dir() -> PathBuf {
    std::env::var_os("FLUMEN_SDK_TOOLS").map(PathBuf::from).unwrap_or_else(|| source_root().join("target/sdk-tools"))
}

/// `wasm-tools`, from the toolchain script's venv or `PATH`.
pub fn wasm_tools() -> anyhow::Result<PathBuf> {
    find_tool("wasm-tools", &[tools_dir().join("python/bin/wasm-tools")]).with_context(missing("wasm-tools", "python"))
}

/// The message for a missing tool: what it is and the one command that installs it.
pub fn missing(tool: &'static str, lang: &'static str) -> impl FnOnce() -> String {
    move || {
        format!(
            "`{tool}` is missing: run `{}/sdk/install-toolchains.sh {lang}` (it installs from PyPI, npm or Debian), \
             or put `{tool}` on PATH",
            source_root().display()
        )
    }
}

/// A directory holding a copy of `wit/dataflow.wit` and a world `plugin`
/// that imports exactly `output` and `capabilities`, and exports the operator.
pub fn plugin_world(build_dir: &Path, capabilities: &[String]) -> anyhow::Result<PathBuf> {
    let wit = build_dir.join("wit");
    std::fs::create_dir_all(&wit)?;
    let source = source_root().join("wit/dataflow.wit");
    std::fs::copy(&source, wit.join("dataflow.wit")).with_context(|| format!("copying {}", source.display()))?;
    let mut world = String::from(
        "package flumen:dataflow@0.2.0;\n// Written by `flumen plugin build`: output plus the plugin's capabilities.\nworld plugin {\n    import output;\n",
    );
    for c in capabilities {
        world.push_str(&format!("    import {c};\n"));
    }
    world.push_str("    export transform;\n    export snapshot;\n    export event-time;\n}\n");
    std::fs::write(wit.join("plugin.wit"), world)?;
    Ok(wit)
}

/// Runs `cmd`, failing with its output (the tool's own words) when it fails.
pub fn run_tool(mut cmd: Command, what: &str) -> anyhow::Result<()> {
    let out = cmd.env("RUST_BACKTRACE", "0").output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        // A tool's own stack trace says nothing about the plugin.
        if let Some(cut) = text.find("\nStack backtrace:") {
            text.truncate(cut);
        }
        bail!("{what} failed ({}):\n{}", out.status, text.trim_end());
    }
    Ok(())
}
