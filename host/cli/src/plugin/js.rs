//! JavaScript plugins: `operator.js` over the SDK in `sdk/js`, made into a
//! component by jco's QuickJS backend with WASI stubbed out (none linked).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use super::{Manifest, find_tool, missing, plugin_world, run_tool, source_root};

pub(super) fn build(dir: &Path, manifest: &Manifest, out: &Path) -> anyhow::Result<()> {
    if !dir.join("operator.js").is_file() {
        bail!("{}: a JavaScript plugin's module is operator.js", dir.display());
    }
    let sdk = source_root().join("sdk/js");
    let jco = find_tool("jco", &[sdk.join("node_modules/.bin/jco")]).with_context(missing("jco", "js"))?;
    let build = tempfile::tempdir().context("making a build directory")?;
    let wit = plugin_world(build.path(), &manifest.capabilities)?;
    // The plugin's modules at the top, the SDK as the package `flumen` (bare
    // imports resolve under node_modules), and the module through which the
    // SDK reaches exactly the host interfaces the world imports.
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "js" || e == "mjs") {
            std::fs::copy(&path, build.path().join(path.file_name().unwrap_or_default()))?;
        }
    }
    let pkg = build.path().join("node_modules/flumen");
    std::fs::create_dir_all(pkg.join("lib"))?;
    std::fs::copy(sdk.join("flumen.js"), pkg.join("index.js")).context("copying the JavaScript SDK")?;
    for entry in std::fs::read_dir(sdk.join("lib"))? {
        let path = entry?.path();
        std::fs::copy(&path, pkg.join("lib").join(path.file_name().unwrap_or_default()))?;
    }
    std::fs::write(pkg.join("capabilities.js"), capabilities_module(&manifest.name, &manifest.capabilities))?;
    let mut cmd = Command::new(jco);
    cmd.args(["componentize", "operator.js", "--backend", "qjs", "--wit"])
        .arg(&wit)
        .args(["--world-name", "plugin", "--backend-qjs-disable-async", "--backend-qjs-stub-wasi", "-o"])
        .arg(std::path::absolute(out)?)
        .current_dir(build.path());
    run_tool(cmd, "jco componentize")
}

/// `capabilities.js`: imports `output` and the listed interfaces; the rest are null.
fn capabilities_module(name: &str, capabilities: &[String]) -> String {
    let mut text = format!("// Written by `flumen plugin build` for `{name}`: the host interfaces it imports.\n");
    text.push_str("import output from \"flumen:dataflow/output@0.2.0\";\n");
    for c in capabilities {
        text.push_str(&format!("import {c} from \"flumen:dataflow/{c}@0.2.0\";\n"));
    }
    text.push_str(&format!("export const name = {};\n", serde_json::Value::String(name.to_string())));
    let slot = |c: &str| if capabilities.iter().any(|x| x == c) { c.to_string() } else { "null".to_string() };
    text.push_str(&format!(
        "export default {{ output, log: {}, state: {}, blobs: {}, inference: {} }};\n",
        slot("log"),
        slot("state"),
        slot("blobs"),
        slot("inference")
    ));
    text
}

pub(super) fn scaffold(name: &str, dir: &Path) -> anyhow::Result<()> {
    std::fs::write(
        dir.join("operator.js"),
        format!(
            r#"// The `{name}` operator: keeps rows whose int64 `column` is at least `min`.
import {{ operator, param }} from "flumen";

class Operator {{
    open(ctx) {{
        // Checked config: unknown, missing or ill-typed keys fail the job before any data flows.
        const cfg = ctx.config({{ column: param.string(), min: param.integer() }});
        ctx.column(cfg.column, "int64");
        this.column = cfg.column;
        this.min = BigInt(cfg.min);
        // Reads one column; every input column is carried through by the host.
        return ctx.plan({{ reads: [cfg.column], carry: "all" }});
    }}

    process(batch, out) {{
        const col = batch.column(this.column);
        const keep = new Uint8Array(batch.numRows);
        for (let i = 0; i < keep.length; i++) keep[i] = !col.isNull(i) && col.values[i] >= this.min ? 1 : 0;
        out.keep(keep);
    }}
}}

export const {{ transform, snapshot, eventTime }} = operator(Operator);
"#
        ),
    )?;
    Ok(())
}
