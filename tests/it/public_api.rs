//! The engine's public-API boundary: `flumen-engine` exposes only Flumen's own
//! types plus Arrow's `RecordBatch` and `Schema`. Checked with rustc's
//! `exported_private_dependencies` lint, which names every type of a dependency
//! that appears in a crate's public interface (cargo marks dependencies private
//! under `-Zpublic-dependency`; `RUSTC_BOOTSTRAP=1` enables that flag on a
//! stable toolchain, for this check only).

use std::path::Path;
use std::process::Command;

/// The types from dependencies outside Flumen that the engine may expose.
const ALLOWED: &[(&str, &str)] =
    &[("arrow_array", "RecordBatch"), ("arrow_schema", "Schema"), ("arrow_schema", "SchemaRef")];

/// `type `X` from private dependency 'krate' in public interface` (and the
/// `is re-exported` form) as (krate, X).
fn leak_of(message: &str) -> Option<(String, String)> {
    let item = message.split('`').nth(1)?;
    let krate = message.split('\'').nth(1)?;
    // `flumen_spec::SpecError` and `SpecError` are the same item.
    let name = item.rsplit("::").next()?.split('<').next()?;
    Some((krate.to_owned(), name.to_owned()))
}

#[test]
fn the_engine_exposes_only_its_own_types_and_arrow_batches() {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    // A target dir of its own: its cached diagnostics always come from a run with
    // the lint on, so a fresh unit replays them instead of hiding them.
    let target = tmp.parent().expect("the target tmp dir is inside the target dir").join("public-api");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(["check", "--quiet", "-p", "flumen-engine", "--lib", "-Zpublic-dependency", "--message-format", "json"])
        .arg("--target-dir")
        .arg(&target)
        .env("RUSTC_BOOTSTRAP", "1")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "cargo check failed:\n{}", String::from_utf8_lossy(&out.stderr));

    let (mut leaks, mut allowed) = (Vec::new(), 0);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if msg["reason"] != "compiler-message" || msg["target"]["name"] != "flumen_engine" {
            continue;
        }
        let diagnostic = &msg["message"];
        if diagnostic["code"]["code"] != "exported_private_dependencies" {
            continue;
        }
        let text = diagnostic["message"].as_str().unwrap_or_default();
        let (krate, name) = leak_of(text).unwrap_or_else(|| panic!("unexpected lint text: {text}"));
        if krate.starts_with("flumen_") || ALLOWED.contains(&(krate.as_str(), name.as_str())) {
            allowed += 1;
        } else {
            let at = &diagnostic["spans"][0];
            leaks.push(format!("{}:{}: {text}", at["file_name"].as_str().unwrap_or("?"), at["line_start"]));
        }
    }
    // The engine re-exports `RecordBatch` on purpose: seeing it proves the lint ran.
    assert!(allowed > 0, "the lint reported nothing, not even the deliberate RecordBatch re-export");
    assert!(leaks.is_empty(), "dependency types in flumen-engine's public API:\n{}", leaks.join("\n"));
}

#[test]
fn lint_messages_are_read_as_crate_and_item() {
    assert_eq!(
        leak_of("type `toml::map::Map<String, Value>` from private dependency 'toml' in public interface"),
        Some(("toml".into(), "Map".into()))
    );
    assert_eq!(
        leak_of("struct `RecordBatch` from private dependency 'arrow_array' is re-exported"),
        Some(("arrow_array".into(), "RecordBatch".into()))
    );
    assert_eq!(leak_of("something else"), None);
}
