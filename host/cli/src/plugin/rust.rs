//! Rust plugins: a crate over `flumen-sdk`, built for `wasm32-wasip2` by cargo.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

const TARGET: &str = "wasm32-wasip2";

pub(super) fn scaffold(name: &str, dir: &Path) -> anyhow::Result<()> {
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

/// Builds the crate in `dir` for `wasm32-wasip2` into `out` (default: next to its manifest).
pub(super) fn build(dir: &Path, out: Option<&Path>) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let name = text
        .lines()
        .find(|l| l.trim_start().starts_with("name"))
        .and_then(|l| l.split('"').nth(1))
        .with_context(|| format!("{}: no package name", manifest.display()))?
        .to_string();
    ensure_target()?;
    let target_dir = target_dir(dir)?;
    let status = Command::new("cargo")
        .args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("cargo build failed for {}", manifest.display());
    }
    let built = target_dir.join(TARGET).join("release").join(format!("{}.wasm", name.replace('-', "_")));
    let out = out.map(Path::to_path_buf).unwrap_or_else(|| dir.join(format!("{name}.wasm")));
    std::fs::copy(&built, &out).with_context(|| format!("copying {}", built.display()))?;
    Ok(out)
}

/// Where cargo puts the crate's artifacts: `CARGO_TARGET_DIR`; for a member
/// of this checkout's guest workspace (`plugins/`), the directory the
/// built-in plugins are built in (their dependencies are built once); else
/// the `target` directory of its workspace (cargo says which).
fn target_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return Ok(PathBuf::from(t));
    }
    let out = Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed for {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).context("reading cargo metadata")?;
    let guests = super::source_root().join("plugins");
    let in_guests = meta["workspace_root"]
        .as_str()
        .is_some_and(|root| Path::new(root).canonicalize().ok() == guests.canonicalize().ok());
    if in_guests {
        return Ok(PathBuf::from(env!("FLUMEN_GUEST_TARGET_DIR")));
    }
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .with_context(|| format!("cargo metadata names no target directory for {}", dir.display()))
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
