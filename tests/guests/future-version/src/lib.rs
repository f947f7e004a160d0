//! Test guest: a component that targets `flumen:dataflow@0.9.0`, a version of
//! the contract this host does not know; loading it must fail naming both
//! versions.

wit_bindgen::generate!({ path: "wit", world: "operator" });

struct Future;

impl exports::flumen::dataflow::transform::Guest for Future {
    fn open(config: String) -> Result<String, String> {
        Ok(config)
    }
}

export!(Future);
