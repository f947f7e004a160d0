//! Python plugins: `app.py` over the SDK in `sdk/python`, made into a component
//! by componentize-py with its WASI imports stubbed out (none linked).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use super::{Manifest, find_tool, missing, plugin_world, run_tool, source_root, tools_dir};

pub(super) fn build(dir: &Path, manifest: &Manifest, out: &Path) -> anyhow::Result<()> {
    if !dir.join("app.py").is_file() {
        bail!(
            "{}: a Python plugin's module is app.py (not operator.py, which hides the standard `operator` module)",
            dir.display()
        );
    }
    let componentize = find_tool("componentize-py", &[tools_dir().join("python/bin/componentize-py")])
        .with_context(missing("componentize-py", "python"))?;
    let build = tempfile::tempdir().context("making a build directory")?;
    let wit = plugin_world(build.path(), &manifest.capabilities)?;
    let dir = std::path::absolute(dir)?;
    let mut cmd = Command::new(componentize);
    cmd.arg("-d")
        .arg(&wit)
        .args(["-w", "plugin", "componentize", "app", "--stub-wasi", "-p"])
        .arg(&dir)
        .arg("-p")
        .arg(source_root().join("sdk/python"))
        .arg("-o")
        .arg(std::path::absolute(out)?)
        // componentize-py writes its own caches beside the sources otherwise.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(build.path());
    run_tool(cmd, "componentize-py")
}

pub(super) fn scaffold(name: &str, dir: &Path) -> anyhow::Result<()> {
    let class: String = name
        .split(['-', '_'])
        .map(|p| {
            let mut c = p.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect();
    std::fs::write(
        dir.join("app.py"),
        format!(
            r#"# The `{name}` operator: keeps rows whose int64 `column` is at least `min`.
import flumen


class {class}(flumen.Operator):
    name = "{name}"

    def open(self, ctx):
        # Checked config: unknown, missing or ill-typed keys fail the job before any data flows.
        cfg = ctx.config(column=str, min=int)
        self.column = ctx.column(cfg.column, flumen.INT64)
        self.min = cfg.min
        # Reads one column; every input column is carried through by the host.
        return ctx.plan(reads=[self.column], carry=True)

    def process(self, port, batch, out):
        # `batch` holds only the column the plan reads.
        least = self.min
        out.keep([v is not None and v >= least for v in batch[0].to_list()])


Transform, Snapshot, EventTime = flumen.export({class})
"#
        ),
    )?;
    Ok(())
}
