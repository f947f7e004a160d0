//! `flumen inspect`: what a component is, imports and exports, as WIT text.

use std::fmt::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::WasmError;

/// Describes the component at `path`: size, digest, whether it is a Flumen
/// operator and which capabilities it needs, then its world as WIT.
pub fn inspect(path: &Path) -> Result<String, WasmError> {
    let err = |message: String| WasmError::Component { path: path.to_path_buf(), message };
    let len = std::fs::metadata(path).map_err(|e| err(format!("cannot read: {e}")))?.len();
    if len > flumen_types::COMPONENT_BYTES_MAX {
        return Err(err(format!("{len} bytes is over the limit of {} bytes", flumen_types::COMPONENT_BYTES_MAX)));
    }
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
    crate::runtime::check_header(&bytes).map_err(err)?;
    // wit-parser decodes from a reader and preallocates each section by the
    // length the file claims (a forged 0xFFFFFFFF asks for 4 GiB). Validating
    // the bytes in memory first refuses any length past the end of the file,
    // so every allocation the decoder makes is bounded by the file's size.
    wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
        .validate_all(&bytes)
        .map_err(|e| err(format!("not a valid component: {e}")))?;
    let decoded = wit_parser::decoding::decode(&bytes).map_err(|e| err(format!("cannot decode: {e:#}")))?;
    let resolve = decoded.resolve();
    let world = match &decoded {
        wit_parser::decoding::DecodedWasm::Component(_, world) => &resolve.worlds[*world],
        wit_parser::decoding::DecodedWasm::WitPackage(..) => {
            return Err(err("is a WIT package, not a component".into()));
        }
    };
    let name_of = |key: &wit_parser::WorldKey| resolve.name_world_key(key);
    let imports: Vec<String> = world.imports.keys().map(name_of).collect();
    let exports: Vec<String> = world.exports.keys().map(name_of).collect();
    let mut out = String::new();
    let _ = writeln!(out, "component {}", path.display());
    let _ = writeln!(out, "  size    {len} bytes");
    let _ = writeln!(out, "  sha256  {}", hex::encode(Sha256::digest(&bytes)));
    let target = exports.iter().find_map(|e| e.strip_prefix("flumen:dataflow/transform@"));
    let _ = writeln!(
        out,
        "  kind    {}",
        if target.is_some() { "Flumen operator (world `operator`)" } else { "not a Flumen operator" }
    );
    if let Some(version) = target {
        let runs = if crate::WitVersion::parse(version).is_some() { "runs here" } else { "NOT run by this host" };
        let _ = writeln!(
            out,
            "  targets flumen:dataflow@{version} ({runs}; this host runs {})",
            crate::WIT_VERSIONS.join(", ")
        );
    }
    let capabilities: Vec<&str> = imports
        .iter()
        .filter_map(|i| i.strip_prefix("flumen:dataflow/"))
        .map(|i| i.split('@').next().unwrap_or(i))
        .filter(|i| !matches!(*i, "types" | "output"))
        .collect();
    let _ = writeln!(
        out,
        "  needs   {}",
        if capabilities.is_empty() { "no capabilities".to_string() } else { capabilities.join(", ") }
    );
    let wasi = imports.iter().filter(|i| i.starts_with("wasi:")).count();
    if wasi > 0 {
        let _ = writeln!(
            out,
            "  wasi    {wasi} WASI imports (linked without files, sockets or environment: no ambient I/O)"
        );
    }
    let _ = writeln!(out, "imports:");
    for i in &imports {
        let _ = writeln!(out, "  {i}");
    }
    let _ = writeln!(out, "exports:");
    for e in &exports {
        let _ = writeln!(out, "  {e}");
    }
    let mut printer = wit_component::WitPrinter::default();
    if printer.print(resolve, decoded.package(), &[]).is_ok() {
        let _ = writeln!(out, "\nworld (WIT):\n{}", printer.output);
    }
    Ok(out)
}
