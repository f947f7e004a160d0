//! Fuzz target: a checkpoint manifest file as recovery reads it from disk
//! (`chk-<n>.json` of region `r`, checkpoint 1). The first byte picks whether
//! the rest is the whole file, or the manifest content wrapped with its
//! correct checksum (so the fuzzer gets past the checksum to the content).
#![no_main]

use flumen_state::fuzzing::{manifest_file, parse_manifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else { return };
    let file = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let Ok(content) = std::str::from_utf8(rest) else { return };
        manifest_file(content)
    };
    if let Ok(manifest) = parse_manifest(&file, "r", 1) {
        assert_eq!((manifest.region.as_str(), manifest.checkpoint), ("r", 1));
    }
});
