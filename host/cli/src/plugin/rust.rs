//! `flumen plugin new` and `flumen plugin build`: scaffold a Rust operator and
//! build it into a component.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use clap::Subcommand;

const TARGET: &str = "wasm32-wasip2";

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Create a new operator plugin crate in `<dir>` (default: `./<name>`).
    New {
        /// The plugin's name: lowercase letters, digits, `-` and `_`.
        name: String,
        /// Guest language; `rust` today (Python, JavaScript and C follow).
        #[arg(long, default_value = "rust")]
        lang: String,
        /// Where to create the crate (default: `./<name>`).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Build the plugin crate in `<dir>` (default: `.`) into `<dir>/<name>.wasm`.
    Build {
        /// The plugin crate's directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
}

pub fn run(command: PluginCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::New { name, lang, dir } => {
            if lang != "rust" {
                bail!("`--lang {lang}` is not supported yet; supported: rust");
            }
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            scaffold(&name, &dir)?;
            println!("created {}", dir.display());
            println!("build it:  flumen plugin build {}", dir.display());
            println!("use it:    plugin = \"{}\" in an [[operator]] table", dir.join(format!("{name}.wasm")).display());
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Build { dir } => {
            let out = build(&dir)?;
            println!("built {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
}

fn scaffold(name: &str, dir: &Path) -> anyhow::Result<()> {
    if !valid_name(name) {
        bail!(
            "plugin name `{name}` must start with a lowercase letter and hold only lowercase letters, digits, `-` and `_`"
        );
    }
    if dir.exists() && std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} already exists and is not empty", dir.display());
    }
    std::fs::create_dir_all(dir.join("src")).with_context(|| format!("creating {}", dir.display()))?;
    let sdk = sdk_dependency(dir);
    let manifest = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
{sdk}
serde = {{ version = "1", features = ["derive"] }}

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
panic = "abort"
strip = true

# A plugin is its own workspace.
[workspace]
"#,
    );
    let type_name: String = name
        .split(['-', '_'])
        .map(|p| {
            let mut c = p.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect();
    let lib = format!(
        r#"//! The `{name}` operator: keeps rows whose `column` is at least `min`.

use flumen_sdk::arrow_array::{{Array, BooleanArray, Int64Array}};
use flumen_sdk::{{Context, Emitter, Error, Operator, RecordBatch, SchemaRef, Shape, export_operator}};

/// The operator's `config` table in the job spec.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {{
    column: String,
    min: i64,
}}

struct {type_name} {{
    schema: SchemaRef,
    column: usize,
    min: i64,
}}

impl Operator for {type_name} {{
    type Config = Config;

    fn open(ctx: &Context, config: Config) -> Result<Self, Error> {{
        let schema = ctx.input(0)?.clone();
        let column = schema
            .index_of(&config.column)
            .map_err(|_| Error::config(format!("{name}: no column `{{}}` in the input", config.column)))?;
        Ok(Self {{ schema, column, min: config.min }})
    }}

    fn schema(&self) -> SchemaRef {{
        self.schema.clone()
    }}

    /// Reads one column and carries every input column through: only that
    /// column enters the guest, and only a bitmap of kept rows leaves it.
    fn shape(&self) -> Shape {{
        Shape::new().reads(0, [self.column]).carries((0..self.schema.fields().len()).map(Some))
    }}

    /// `batch` holds only the column `shape` reads.
    fn process(&mut self, _port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error> {{
        let values = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| Error::input("{name}: the column must be int64"))?;
        let keep: BooleanArray = values.iter().map(|v| Some(v.is_some_and(|v| v >= self.min))).collect();
        out.keep(&keep)
    }}
}}

export_operator!({type_name});
"#
    );
    std::fs::write(dir.join("Cargo.toml"), manifest)?;
    std::fs::write(dir.join("src/lib.rs"), lib)?;
    std::fs::write(dir.join(".gitignore"), "/target\n*.wasm\n")?;
    Ok(())
}

/// The `flumen-sdk` dependency line of a new crate in `dir`: a path relative
/// to the crate when it is inside the Flumen checkout (the repository stays
/// movable), else the checkout's absolute path, with a note on what to change.
fn sdk_dependency(dir: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let sdk = root.join("sdk/rust");
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    match dir.strip_prefix(&root) {
        Ok(inside) => {
            let up = "../".repeat(inside.components().count());
            format!("flumen-sdk = {{ path = \"{up}sdk/rust\" }}")
        }
        Err(_) => format!(
            "# The SDK of the Flumen checkout that made this crate: change the path\n\
             # when the checkout moves (a crate inside the checkout gets a relative one).\n\
             flumen-sdk = {{ path = {} }}",
            // A JSON string is a valid TOML basic string.
            serde_json::Value::String(sdk.display().to_string())
        ),
    }
}

/// Builds the crate in `dir` for `wasm32-wasip2` and copies the component next to its manifest.
fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let name = text
        .lines()
        .find(|l| l.trim_start().starts_with("name"))
        .and_then(|l| l.split('"').nth(1))
        .with_context(|| format!("{}: no package name", manifest.display()))?
        .to_string();
    ensure_target()?;
    let status = Command::new("cargo")
        .args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(&manifest)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("cargo build failed for {}", manifest.display());
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| dir.join("target"));
    let built = target_dir.join(TARGET).join("release").join(format!("{}.wasm", name.replace('-', "_")));
    let out = dir.join(format!("{name}.wasm"));
    std::fs::copy(&built, &out).with_context(|| format!("copying {}", built.display()))?;
    let info = flumen_engine::inspect_component(&out)?;
    if !info.contains("Flumen operator") {
        bail!(
            "{} built, but it does not export flumen:dataflow/transform: is `export_operator!` called?",
            out.display()
        );
    }
    Ok(out)
}

fn ensure_target() -> anyhow::Result<()> {
    let out = Command::new("rustc").args(["--print", "target-libdir", "--target", TARGET]).output();
    if out.is_ok_and(|o| o.status.success() && Path::new(String::from_utf8_lossy(&o.stdout).trim()).exists()) {
        return Ok(());
    }
    let status = Command::new("rustup").args(["target", "add", TARGET]).status().context("running rustup")?;
    if !status.success() {
        bail!("the `{TARGET}` target is missing and `rustup target add {TARGET}` failed");
    }
    Ok(())
}
