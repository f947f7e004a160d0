//! Job spec files: the vocabulary and its text-only checks live in `flumen-spec`;
//! the engine re-exports them under their old path.

pub use flumen_spec::*;
