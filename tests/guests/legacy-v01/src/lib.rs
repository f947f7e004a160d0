//! Test guest: an operator built against `flumen:dataflow@0.1.0` (the frozen
//! `wit/v0.1`), without the SDK, as components built for that version are:
//! it emits every input batch unchanged. Proves the host still runs 0.1
//! components beside 0.2 ones.

wit_bindgen::generate!({ path: "../../../wit/v0.1", world: "operator" });

use exports::flumen::dataflow::transform::{Context, Guest};
use flumen::dataflow::output;
use flumen::dataflow::types::{Batch, Error, ErrorKind, Schema};

struct Legacy;

impl Guest for Legacy {
    fn open(ctx: Context) -> Result<Schema, Error> {
        ctx.inputs.into_iter().next().ok_or(Error { kind: ErrorKind::InvalidConfig, message: "needs one input".into() })
    }

    fn process(_port: u32, input: Batch) -> Result<(), Error> {
        output::emit(&input)
    }

    fn finish() -> Result<(), Error> {
        Ok(())
    }
}

impl exports::flumen::dataflow::snapshot::Guest for Legacy {
    fn save() -> Result<Vec<u8>, Error> {
        Ok(Vec::new())
    }
    fn restore(_data: Vec<u8>) -> Result<(), Error> {
        Ok(())
    }
}

impl exports::flumen::dataflow::event_time::Guest for Legacy {
    fn on_watermark(_watermark: i64) -> Result<(), Error> {
        Ok(())
    }
}

export!(Legacy);
