//! Fuzz target: an in-flight batch file of an unaligned checkpoint (an Arrow
//! IPC stream) as a restore decodes it. Any bytes give batches or an error,
//! never a panic; decoded batches encode again.
#![no_main]

use flumen_batch::ipc::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(batches) = decode(data) else { return };
    if batches.iter().all(|b| b.schema() == batches[0].schema()) {
        let _ = encode(&batches);
    }
});
