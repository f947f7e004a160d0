//! Job spec files (TOML): the job's vocabulary, parsed with a line in every
//! error, and the checks that need only the text. `examples/job-spec.md` is
//! the reference.
//!
//! This crate is light on purpose (serde, toml, no Arrow, no Wasm runtime, no
//! object-store client): anything that must read a job spec — the engine, a
//! future coordinator, the `job_spec` fuzz target — builds it in seconds.
//! The sources' and sinks' tables are in [`connector`]; what they mean is the
//! connectors' business.

use std::path::{Path, PathBuf};

use flumen_state::StoreUrl;
use flumen_types::{FailurePolicy, NodeId, OperatorLimits, Partitioning};
use serde::Deserialize;

pub mod connector;

use connector::{SinkSpec, SourceSpec};

/// A parsed job spec, with the file it came from.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub path: PathBuf,
    pub text: String,
    pub job: JobSection,
    pub sources: Vec<SourceSpec>,
    pub operators: Vec<OperatorSpec>,
    pub sinks: Vec<SinkSpec>,
    /// `[checkpoint]`: present when the job takes checkpoints (and is then exactly-once).
    pub checkpoint: Option<CheckpointSection>,
    pub restart: RestartSection,
    /// `[blobs]`: the job's blob store.
    pub blobs: BlobsSection,
    /// `[inference]`: the job's model repository, for operators granted `inference`.
    pub inference: Option<InferenceSection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobFile {
    job: JobSection,
    checkpoint: Option<CheckpointSection>,
    #[serde(default)]
    restart: RestartSection,
    #[serde(default)]
    blobs: BlobsSection,
    inference: Option<InferenceSection>,
    #[serde(default, rename = "source")]
    sources: Vec<SourceSpec>,
    #[serde(default, rename = "operator")]
    operators: Vec<OperatorSpec>,
    #[serde(default, rename = "sink")]
    sinks: Vec<SinkSpec>,
}

/// The `[job]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSection {
    pub name: String,
    /// Default parallelism of every node (default 1).
    #[serde(default = "one")]
    pub parallelism: u32,
    /// Rows per source batch (default 8192).
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// Batches a channel holds before its producer waits (default 4).
    #[serde(default = "default_channel_capacity")]
    pub channel_capacity: usize,
    /// In a cluster: how many workers each pipelined region runs across
    /// (subtask `i` of every node on the `(i mod spread)`-th), linked over
    /// QUIC; at most [`SPREAD_MAX`]. 1 (the default) keeps a region on one
    /// worker. Fewer workers with room make fewer parts. `flumen run` runs
    /// everything in one process whatever it says.
    #[serde(default = "one")]
    pub spread: u32,
}

/// The most workers one region may run across (`[job] spread`).
pub const SPREAD_MAX: u32 = 64;

/// The `[checkpoint]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSection {
    /// Milliseconds between the starts of two checkpoints (default 10000).
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Where checkpoints are written, relative to the job file (default `checkpoints`).
    #[serde(default = "default_checkpoint_dir")]
    pub dir: String,
    /// Completed checkpoints kept per region (default 3); older ones are deleted.
    #[serde(default = "default_retain")]
    pub retain: usize,
    /// How operators with several inputs align barriers (default `aligned`).
    #[serde(default)]
    pub mode: CheckpointMode,
    /// With `aligned-with-timeout`: alignment time after which a checkpoint
    /// switches to unaligned (default 1000).
    #[serde(default = "default_alignment_timeout_ms")]
    pub alignment_timeout_ms: u64,
    /// A checkpoint not complete after this long is aborted (default 600000).
    #[serde(default = "default_checkpoint_timeout_ms")]
    pub timeout_ms: u64,
    /// An object store holding the durable copy of the checkpoints (`s3://bucket/prefix` or
    /// `file:///absolute/path`); `dir` is then the working area and cache, and a checkpoint is
    /// complete only once its manifest is in the store.
    #[serde(default)]
    pub store: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckpointMode {
    #[default]
    Aligned,
    Unaligned,
    AlignedWithTimeout,
}

/// The `[blobs]` table: the job's blob store (large objects by reference).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobsSection {
    /// Blob bytes kept in memory, in MiB (default 512); more are spilled to disk.
    #[serde(default = "default_blob_memory_mb")]
    pub memory_mb: u64,
    /// Where spilled blobs go, relative to the job file (default: beside the
    /// checkpoints, else a temporary directory); removed at the end of the run.
    pub spill_dir: Option<String>,
}

/// The `[inference]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceSection {
    /// The model repository: a directory with one folder per model,
    /// relative to the job file.
    pub models: String,
    /// The ONNX Runtime shared library to load (default: ORT_DYLIB_PATH, then
    /// Python's `onnxruntime` package, then the system library path).
    pub runtime: Option<String>,
    /// CPU threads all models may use together (default: the machine's cores).
    pub threads: Option<u32>,
}

impl Default for BlobsSection {
    fn default() -> Self {
        Self { memory_mb: default_blob_memory_mb(), spill_dir: None }
    }
}

fn default_blob_memory_mb() -> u64 {
    512
}

/// The `[restart]` table: what happens when a region fails.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartSection {
    /// Restarts of one region from its last checkpoint before the job fails
    /// (default 3; only with `[checkpoint]`).
    #[serde(default = "default_restart_attempts")]
    pub attempts: u32,
    /// Pause before a restart, in milliseconds (default 100).
    #[serde(default = "default_restart_delay_ms")]
    pub delay_ms: u64,
}

impl Default for RestartSection {
    fn default() -> Self {
        Self { attempts: default_restart_attempts(), delay_ms: default_restart_delay_ms() }
    }
}

fn default_interval_ms() -> u64 {
    10_000
}
fn default_checkpoint_dir() -> String {
    "checkpoints".into()
}
fn default_retain() -> usize {
    3
}
fn default_alignment_timeout_ms() -> u64 {
    1000
}
fn default_checkpoint_timeout_ms() -> u64 {
    600_000
}
fn default_restart_attempts() -> u32 {
    3
}
fn default_restart_delay_ms() -> u64 {
    100
}

fn one() -> u32 {
    1
}
fn default_batch_rows() -> usize {
    8192
}
fn default_channel_capacity() -> usize {
    4
}

/// An `[[operator]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorSpec {
    pub id: String,
    /// A plugin name (looked up in the plugin directories) or a path to a
    /// `.wasm` component, relative to the job file.
    pub plugin: String,
    /// Handed to the operator's `open` as JSON; the span locates its errors.
    #[serde(default)]
    pub config: Option<toml::Spanned<toml::Table>>,
    pub parallelism: Option<u32>,
    #[serde(default)]
    pub inputs: Vec<InputSpec>,
    #[serde(default)]
    pub limits: OperatorLimits,
    #[serde(default)]
    pub on_error: FailurePolicy,
    /// Host capabilities granted to the operator (default: `["log"]`).
    pub capabilities: Option<Vec<String>>,
    /// What each subtask needs of the worker it runs on (a cluster places it accordingly).
    #[serde(default)]
    pub resources: ResourceNeeds,
}

/// `resources = { cores = 1, memory_mb = 512, gpu = 1 }` of an operator: what one of its
/// subtasks needs of a worker. A cluster's scheduler adds these up per pipelined region and
/// places the region on a worker that has them free; a single process ignores them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceNeeds {
    /// CPU cores (0: no reservation).
    #[serde(default)]
    pub cores: u32,
    /// Memory in MiB (0: no reservation).
    #[serde(default)]
    pub memory_mb: u64,
    /// Whole GPUs.
    #[serde(default)]
    pub gpu: u32,
}

/// One input of an operator or sink: an upstream id, or a table naming the
/// partitioning of the edge.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum InputSpec {
    Name(String),
    Edge(EdgeSpec),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeSpec {
    pub from: String,
    /// `forward`, `hash`, `round-robin` or `broadcast`.
    pub partition: Option<String>,
    /// Key columns, with `partition = "hash"`.
    #[serde(default)]
    pub keys: Vec<String>,
}

impl InputSpec {
    pub fn from(&self) -> &str {
        match self {
            InputSpec::Name(n) => n,
            InputSpec::Edge(e) => &e.from,
        }
    }

    /// The partitioning of this edge; without one, forward when the
    /// parallelism matches and round-robin otherwise.
    pub fn partitioning(&self, from_p: u32, to_p: u32) -> Result<Partitioning, PartitionError> {
        let default = if from_p == to_p { Partitioning::Forward } else { Partitioning::RoundRobin };
        let InputSpec::Edge(e) = self else { return Ok(default) };
        let keys_allowed = matches!(e.partition.as_deref(), Some("hash"));
        if !keys_allowed && !e.keys.is_empty() {
            return Err(PartitionError::KeysWithoutHash { input: e.from.clone() });
        }
        Ok(match e.partition.as_deref() {
            None => default,
            Some("forward") => Partitioning::Forward,
            Some("hash") => Partitioning::Hash(e.keys.clone()),
            Some("round-robin") | Some("rebalance") => Partitioning::RoundRobin,
            Some("broadcast") => Partitioning::Broadcast,
            Some(other) => {
                return Err(PartitionError::Unknown { input: e.from.clone(), partition: other.to_owned() });
            }
        })
    }
}

/// An input edge whose partitioning cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionError {
    #[error("input `{input}`: `keys` only applies with partition = \"hash\"")]
    KeysWithoutHash { input: String },
    #[error("input `{input}`: unknown partition `{partition}`; expected forward, hash, round-robin or broadcast")]
    Unknown { input: String, partition: String },
}

/// A job spec that cannot be used, located in its file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct SpecError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl JobSpec {
    /// Reads and parses the job spec at `path`.
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| SpecError {
            path: path.to_path_buf(),
            line: None,
            message: format!("cannot read job spec: {e}"),
        })?;
        Self::parse(path, text)
    }

    /// Parses `text` as the job spec of file `path`.
    pub fn parse(path: &Path, text: String) -> Result<Self, SpecError> {
        let file: JobFile = toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|s| line_of_offset(&text, s.start));
            SpecError { path: path.to_path_buf(), line, message: e.message().trim().to_string() }
        })?;
        let spec = Self {
            path: path.to_path_buf(),
            text,
            job: file.job,
            sources: file.sources,
            operators: file.operators,
            sinks: file.sinks,
            checkpoint: file.checkpoint,
            restart: file.restart,
            blobs: file.blobs,
            inference: file.inference,
        };
        if let Some(c) = &spec.checkpoint {
            if c.interval_ms == 0 {
                return Err(spec.error_at(Some("interval_ms"), "[checkpoint] interval_ms must be at least 1"));
            }
            if c.retain == 0 {
                return Err(spec.error_at(Some("retain"), "[checkpoint] retain must be at least 1"));
            }
            if c.dir.trim().is_empty() {
                return Err(spec.error_at(Some("dir"), "[checkpoint] dir must not be empty"));
            }
            spec.checkpoint_store()?;
        }
        if spec.job.batch_rows == 0 {
            return Err(spec.error_at(Some("batch_rows"), "[job] batch_rows must be at least 1"));
        }
        if spec.job.channel_capacity == 0 {
            return Err(spec.error_at(Some("channel_capacity"), "[job] channel_capacity must be at least 1"));
        }
        for op in &spec.operators {
            let l = &op.limits;
            if l.memory_mb == 0
                || l.call_timeout_ms == 0
                || l.output_mb_per_call == 0
                || l.output_batches_per_call == 0
                || l.output_rows_per_call == 0
                || l.host_memory_mb == 0
            {
                return Err(spec.error_for(&op.id, format!("operator `{}`: every limit must be at least 1", op.id)));
            }
            if l.memory_mb > flumen_types::MEMORY_MB_MAX {
                return Err(spec.error_for(
                    &op.id,
                    format!(
                        "operator `{}`: `limits.memory_mb = {}` is over the limit of {} MiB (`MEMORY_MB_MAX`: a 32-bit \
                         linear memory addresses at most 4 GiB)",
                        op.id,
                        l.memory_mb,
                        flumen_types::MEMORY_MB_MAX
                    ),
                ));
            }
            if l.recycle_memory_pct > 100 {
                return Err(spec.error_for(
                    &op.id,
                    format!(
                        "operator `{}`: `limits.recycle_memory_pct = {}` is a percentage: 0 (never) to 100",
                        op.id, l.recycle_memory_pct
                    ),
                ));
            }
            if op.on_error.then == flumen_types::FailureAction::DeadLetter && op.on_error.dead_letter.is_none() {
                return Err(spec.error_for(
                    &op.id,
                    format!(
                        "operator `{}`: on_error.then = \"dead-letter\" needs `dead_letter = \"<sink id>\"`",
                        op.id
                    ),
                ));
            }
        }
        if !(1..=SPREAD_MAX).contains(&spec.job.spread) {
            return Err(spec.error_at(
                Some("spread"),
                &format!("[job] `spread = {}`: a region runs across 1 to {SPREAD_MAX} workers", spec.job.spread),
            ));
        }
        let instances: u64 = spec.operators.iter().map(|op| u64::from(spec.parallelism(op.parallelism))).sum();
        if instances > u64::from(flumen_types::OPERATOR_INSTANCES_MAX) {
            let id = spec.operators.iter().max_by_key(|op| spec.parallelism(op.parallelism)).map(|op| op.id.clone());
            let message = format!(
                "the operators' parallelism adds up to {instances} instances, over the limit of {} operator \
                 instances per process (`OPERATOR_INSTANCES_MAX`); lower `parallelism`",
                flumen_types::OPERATOR_INSTANCES_MAX
            );
            return Err(match id {
                Some(id) => spec.error_for(&id, message),
                None => spec.error_at(None, &message),
            });
        }
        Ok(spec)
    }

    /// The directory relative paths in the spec resolve against.
    pub fn base_dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."))
    }

    /// An error located at the table that defines node `id`.
    pub fn error_for(&self, id: &str, message: impl Into<String>) -> SpecError {
        SpecError { path: self.path.clone(), line: self.line_of_id(id), message: message.into() }
    }

    /// An error in operator `op`'s `config`, reported by the operator itself:
    /// located at the line of the config key the message names (`` `key` ``),
    /// else at the line where `config` starts, never at a position in the
    /// JSON the operator was handed (which the user never wrote).
    pub fn config_error(&self, op: &OperatorSpec, message: &str) -> SpecError {
        let message = strip_json_position(message);
        let Some(config) = &op.config else { return self.error_for(&op.id, message) };
        let span = config.span();
        let start = span.start.min(self.text.len());
        let end = span.end.clamp(start, self.text.len());
        // An `[operator.config]` table's keys follow its header, up to the next header.
        let table_end = self.text[start..]
            .match_indices("\n[")
            .map(|(i, _)| start + i)
            .find(|&i| i >= end)
            .unwrap_or(self.text.len());
        let key_at = |text: &str| {
            // A key the message names, written as `key =`.
            message.split('`').skip(1).step_by(2).find_map(|key| {
                let key = key.trim();
                if key.is_empty() || !key.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-') {
                    return None;
                }
                text.match_indices(key).find_map(|(i, _)| {
                    let before = text[..i].chars().next_back();
                    let after = text[i + key.len()..].trim_start();
                    let boundary = before.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '-'));
                    (boundary && after.starts_with('=')).then_some(i)
                })
            })
        };
        let named = key_at(&self.text[start..end]).or_else(|| key_at(&self.text[start..table_end.max(end)]));
        let line = line_of_offset(&self.text, start + named.unwrap_or(0));
        SpecError { path: self.path.clone(), line: Some(line), message }
    }

    fn error_at(&self, key: Option<&str>, message: &str) -> SpecError {
        let line = key.and_then(|k| {
            self.text.lines().position(|l| l.trim_start().starts_with(k) && l.contains('=')).map(|i| i + 1)
        });
        SpecError { path: self.path.clone(), line, message: message.to_string() }
    }

    /// The line of `id = "<id>"` in the spec text.
    pub fn line_of_id(&self, id: &str) -> Option<usize> {
        self.text
            .lines()
            .position(|l| {
                let l = l.trim();
                l.strip_prefix("id").map(str::trim_start).and_then(|r| r.strip_prefix('=')).is_some_and(|r| {
                    let v = r.trim();
                    v == format!("\"{id}\"") || v == format!("'{id}'")
                })
            })
            .map(|i| i + 1)
    }

    /// The checkpoint directory, resolved against the job file.
    pub fn checkpoint_dir(&self) -> Option<PathBuf> {
        self.checkpoint.as_ref().map(|c| self.base_dir().join(&c.dir))
    }

    /// The object store of `[checkpoint] store`, when there is one; a URL that is not one is an
    /// error at its line.
    pub fn checkpoint_store(&self) -> Result<Option<StoreUrl>, SpecError> {
        let Some(text) = self.checkpoint.as_ref().and_then(|c| c.store.as_deref()) else { return Ok(None) };
        StoreUrl::parse(text)
            .map(Some)
            .map_err(|message| self.error_at(Some("store"), &format!("[checkpoint] store: {message}")))
    }

    /// The effective parallelism of a node.
    pub fn parallelism(&self, explicit: Option<u32>) -> u32 {
        explicit.unwrap_or(self.job.parallelism)
    }

    pub fn node_id(id: &str) -> NodeId {
        NodeId::new(id)
    }
}

/// `message` without serde_json's trailing ` at line L column C`.
fn strip_json_position(message: &str) -> String {
    if let Some(i) = message.rfind(" at line ") {
        let rest = &message[i + " at line ".len()..];
        let mut words = rest.split(' ');
        let is_number = |w: Option<&str>| w.is_some_and(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()));
        if is_number(words.next())
            && words.next() == Some("column")
            && is_number(words.next())
            && words.next().is_none()
        {
            return message[..i].to_string();
        }
    }
    message.to_string()
}

fn line_of_offset(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<JobSpec, SpecError> {
        JobSpec::parse(Path::new("job.toml"), text.to_string())
    }

    const OK: &str = r#"
[job]
name = "t"

[[source]]
id = "in"
kind = "csv"
path = "x.csv"

[[operator]]
id = "f"
plugin = "filter"
config = { predicate = "a > 1" }
inputs = ["in"]

[[sink]]
id = "out"
kind = "blackhole"
inputs = [{ from = "f", partition = "hash", keys = ["a"] }]
"#;

    #[test]
    fn spread_is_one_to_the_maximum_with_its_line() {
        assert_eq!(parse(OK).expect("parses").job.spread, 1, "a region stays on one worker by default");
        let two = parse(&OK.replace("name = \"t\"", "name = \"t\"\nspread = 2")).expect("parses");
        assert_eq!(two.job.spread, 2);
        for bad in ["0", "65"] {
            let err = parse(&OK.replace("name = \"t\"", &format!("name = \"t\"\nspread = {bad}"))).unwrap_err();
            assert_eq!(err.line, Some(4), "the `spread` line: {err}");
            assert!(
                err.to_string().contains(&format!("`spread = {bad}`: a region runs across 1 to 64 workers")),
                "{err}"
            );
        }
    }

    #[test]
    fn parses_a_job() {
        let spec = parse(OK).unwrap();
        assert_eq!(spec.job.batch_rows, 8192);
        assert_eq!(spec.operators[0].inputs[0].from(), "in");
        assert_eq!(spec.line_of_id("f"), Some(11));
        let p = spec.sinks[0].inputs[0].partitioning(1, 1).unwrap();
        assert_eq!(p, Partitioning::Hash(vec!["a".into()]));
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let err = parse("[job]\nname = \"t\"\n[[source]\nid = 1\n").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(err.to_string().starts_with("job.toml:3: "), "{err}");
    }

    #[test]
    fn unknown_keys_are_errors_with_a_line() {
        let text = OK.replace("plugin = \"filter\"", "plugin = \"filter\"\nparalelism = 2");
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("paralelism"), "{err}");
        assert_eq!(err.line, Some(13), "{err}");
    }

    #[test]
    fn wrong_types_name_the_key() {
        let err = parse(&OK.replace("path = \"x.csv\"", "path = \"x.csv\"\nparallelism = \"two\"")).unwrap_err();
        assert_eq!(err.line, Some(9), "{err}");
        assert!(err.message.contains("invalid type"), "{err}");
    }

    #[test]
    fn dead_letter_needs_a_sink() {
        let text = OK.replace("inputs = [\"in\"]", "inputs = [\"in\"]\non_error = { then = \"dead-letter\" }");
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("dead_letter"), "{err}");
        assert_eq!(err.line, Some(11));
    }

    #[test]
    fn checkpoint_store_urls_are_checked_at_their_line() {
        let with = |store: &str| parse(&format!("{OK}\n[checkpoint]\ninterval_ms = 100\nstore = \"{store}\"\n"));
        assert!(with("s3://bucket/jobs/t").unwrap().checkpoint_store().unwrap().is_some());
        assert!(with("file:///mnt/checkpoints").unwrap().checkpoint_store().unwrap().is_some());
        for (bad, says) in
            [("gs://bucket/x", "unsupported scheme `gs:`"), ("not a url", "not a URL"), ("s3:///x", "bucket")]
        {
            let err = with(bad).unwrap_err();
            assert_eq!(err.line, Some(23), "{err}");
            assert!(err.message.starts_with("[checkpoint] store: ") && err.message.contains(says), "{err}");
        }
        assert!(parse(OK).unwrap().checkpoint_store().unwrap().is_none());
    }

    #[test]
    fn config_errors_point_at_the_toml_not_the_json() {
        let spec = parse(OK).unwrap();
        let err = spec.config_error(
            &spec.operators[0],
            "config: invalid type: integer `3`, expected a string at line 1 column 9",
        );
        assert_eq!(
            (err.line, err.message.as_str()),
            (Some(13), "config: invalid type: integer `3`, expected a string")
        );
        let sub = OK
            .replace("config = { predicate = \"a > 1\" }\n", "")
            .replace("[[sink]]", "[operator.config]\npredicate = \"a > 1\"\nlimit = 3\n\n[[sink]]");
        let spec = parse(&sub).unwrap();
        let op = &spec.operators[0];
        let err = spec
            .config_error(op, "operator `f`: config: unknown field `limit`, expected `predicate` at line 1 column 30");
        assert_eq!(
            (err.line, err.message.as_str()),
            (Some(17), "operator `f`: config: unknown field `limit`, expected `predicate`")
        );
        let err = spec.config_error(op, "config: bad `predicate`: no column `x`");
        assert_eq!(err.line, Some(16), "{err}");
    }

    #[test]
    fn unknown_partition_is_named() {
        let input = InputSpec::Edge(EdgeSpec { from: "a".into(), partition: Some("shuffle".into()), keys: vec![] });
        assert!(input.partitioning(1, 2).unwrap_err().to_string().contains("unknown partition `shuffle`"));
    }
}
