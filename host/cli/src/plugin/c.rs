//! C (and Zig) plugins: every `*.c` of the plugin compiled with the SDK in
//! `sdk/c` and its generated bindings by clang for wasm32-wasi, then made a
//! component by `wasm-tools component new`. The linker keeps only the imports
//! the code calls, so the one full-world binding serves every plugin.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use super::{Manifest, find_tool, missing, run_tool, source_root, wasm_tools};

pub(super) fn build(dir: &Path, manifest: &Manifest, out: &Path) -> anyhow::Result<()> {
    let mut sources: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "c"))
        .collect();
    sources.sort();
    if sources.is_empty() {
        bail!("{}: no *.c files", dir.display());
    }
    let cc = std::env::var_os("CC")
        .map(PathBuf::from)
        .filter(|p| p.components().count() > 1 || find_tool(&p.to_string_lossy(), &[]).is_some())
        .or_else(|| find_tool("clang-16", &[]))
        .with_context(missing("clang-16", "c"))?;
    let wasm_tools = wasm_tools()?;
    let sdk = source_root().join("sdk/c");
    let build = tempfile::tempdir().context("making a build directory")?;
    let core = build.path().join("core.wasm");
    let mut cmd = Command::new(&cc);
    // LTO lets the SDK's small per-row functions (flumen_push_i32, …) inline into the operator.
    cmd.args(["--target=wasm32-wasi", "-O2", "-flto", "-mexec-model=reactor", "-Wl,--strip-debug"])
        .args(["-Wall", "-Wextra", "-Wno-unused-parameter"])
        .arg("-I")
        .arg(&sdk)
        .arg("-I")
        .arg(sdk.join("gen"))
        .arg(format!("-DFLUMEN_OPERATOR_NAME=\"{}\"", manifest.name))
        .arg("-o")
        .arg(&core)
        .args(&sources)
        .arg(sdk.join("flumen.c"))
        .arg(sdk.join("gen/operator.c"))
        .arg(sdk.join("gen/operator_component_type.o"));
    run_tool(cmd, &format!("{} (compiling for wasm32-wasi)", cc.display())).map_err(|e| {
        e.context("clang-16 needs wasi-libc and libclang-rt-16-dev-wasm32: sdk/install-toolchains.sh c")
    })?;
    let mut cmd = Command::new(&wasm_tools);
    cmd.args(["component", "new"]).arg(&core).arg("-o").arg(out);
    run_tool(cmd, "wasm-tools component new")
}

pub(super) fn scaffold(name: &str, dir: &Path) -> anyhow::Result<()> {
    std::fs::write(
        dir.join("operator.c"),
        format!(
            r#"/* The `{name}` operator: keeps rows whose int64 `column` is at least `min`. */
#include "flumen.h"

static char *column;
static int64_t min;
static uint32_t col;

flumen_status flumen_open(const flumen_ctx *ctx) {{
    /* Checked config: unknown, missing or ill-typed keys fail the job before any data flows. */
    flumen_cfg_key keys[] = {{
        {{"column", FLUMEN_CFG_STRING, &column, true, NULL}},
        {{"min", FLUMEN_CFG_INT, &min, true, NULL}},
    }};
    if (flumen_config_parse(ctx, keys, 2)) return FLUMEN_ERR;
    if (flumen_input_column(ctx, 0, column, FLUMEN_INT64, &col)) return FLUMEN_ERR;
    /* Reads one column; every input column is carried through by the host. */
    return flumen_plan_shape(ctx, 0, &col, 1, true);
}}

flumen_status flumen_process(uint32_t port, const flumen_batch *batch) {{
    (void)port;
    const flumen_col *c = flumen_batch_column(batch, col);
    size_t rows = flumen_batch_rows(batch);
    flumen_mask keep;
    flumen_mask_init(&keep, rows);
    for (size_t i = 0; i < rows; i++)
        if (flumen_is_valid(c, i) && flumen_i64(c, i) >= min) flumen_mask_set(&keep, i);
    flumen_status st = flumen_keep(&keep);
    flumen_mask_free(&keep);
    return st;
}}
"#
        ),
    )?;
    Ok(())
}
