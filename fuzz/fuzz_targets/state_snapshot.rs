//! Fuzz target: a keyed-state snapshot file (full or delta) as a restore
//! decodes it, record by record. Any bytes give records or a `Corrupt`/`Io`
//! error, never a panic or an allocation the file's own bytes do not back.
#![no_main]

use flumen_state::fuzzing::read_snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = read_snapshot(data);
});
