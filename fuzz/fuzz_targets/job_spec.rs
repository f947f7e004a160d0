//! Fuzz target: a job spec file, as `flumen run` and `flumen plan` read it.
//! Whatever the text, parsing returns a spec or an error, never a panic; an
//! error's line is a line of the text; and the lookups the engine makes on an
//! accepted spec (node lines, config errors, edge partitioning, the checkpoint
//! store URL) answer without a panic too.
#![no_main]

use std::path::Path;

use flumen_spec::JobSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let lines = text.lines().count().max(1);
    let spec = match JobSpec::parse(Path::new("job.toml"), text.to_owned()) {
        Ok(spec) => spec,
        Err(err) => {
            if let Some(line) = err.line {
                assert!((1..=lines + 1).contains(&line), "error at line {line} of a {lines}-line file: {err}");
            }
            return;
        }
    };
    let _ = spec.checkpoint_store();
    let _ = spec.checkpoint_dir();
    for op in &spec.operators {
        let line = spec.line_of_id(&op.id);
        assert!(line.is_none_or(|l| (1..=lines).contains(&l)), "{line:?}");
        for message in ["config: unknown field `x`, expected `y` at line 1 column 2", "config: bad `", "`` at line"] {
            let err = spec.config_error(op, message);
            assert!(err.line.is_none_or(|l| (1..=lines + 1).contains(&l)), "{err}");
        }
        for input in &op.inputs {
            let p = spec.parallelism(op.parallelism);
            let _ = input.partitioning(p, p.saturating_add(1));
        }
    }
    for sink in &spec.sinks {
        let _ = spec.error_for(&sink.id, "x");
        let _ = sink.inlines_blobs();
        for input in &sink.inputs {
            let _ = input.partitioning(1, 2);
        }
    }
    for source in &spec.sources {
        let _ = spec.error_for(&source.id, "x");
    }
});
