//! The model repository: a directory with one folder per model, each holding
//! the model file and a `model.toml` saying how to serve it (batch sizes,
//! queue delay, instances, device, quotas). Read with a file and a line in
//! every error; a model is identified by the SHA-256 of its file.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use flumen_types::inference::{DType, Device, TensorSpec};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

/// The config file in every model folder.
pub const CONFIG_FILE: &str = "model.toml";

/// A model repository that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("model repository {}: {source}", dir.display())]
    Dir { dir: PathBuf, source: std::io::Error },
    #[error("{}: {message}", file.display())]
    Config { file: PathBuf, message: String },
    #[error("{}: cannot read: {source}", file.display())]
    Read { file: PathBuf, source: std::io::Error },
}

/// Where a model runs when its device is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Fallback {
    /// Run on the CPU backend instead, and say so in the plan and summary.
    #[default]
    Cpu,
    /// Fail the job at plan time.
    Fail,
}

/// A tensor as a config declares it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorDecl {
    pub name: String,
    pub dtype: String,
    /// `-1` for a free dimension; the first is rows.
    pub shape: Vec<i64>,
}

/// `model.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The model file, relative to the folder.
    #[serde(default = "default_file")]
    pub file: String,
    /// The backend that runs it.
    #[serde(default = "default_backend")]
    pub backend: String,
    #[serde(default)]
    pub device: DeviceChoice,
    #[serde(default)]
    pub fallback: Fallback,
    /// Most rows in one backend run.
    #[serde(default = "default_max_batch")]
    pub max_batch: u32,
    /// Batch sizes dispatched as soon as that many rows wait; empty: `max_batch`.
    #[serde(default)]
    pub preferred_batch: Vec<u32>,
    /// How long the oldest waiting call may wait for others to join it.
    #[serde(default = "default_delay")]
    pub max_queue_delay_ms: u64,
    /// Copies of the model, each with its own worker thread.
    #[serde(default = "default_instances")]
    pub instances: u32,
    /// Threads each run may use; 0: the machine's cores shared among the instances.
    #[serde(default)]
    pub threads: u32,
    /// Rows that may wait; further callers are held back (backpressure).
    #[serde(default = "default_queue_rows")]
    pub max_queue_rows: u32,
    /// A call with more rows is refused at admission.
    #[serde(default = "default_call_rows")]
    pub max_call_rows: u32,
    /// A call with more input bytes is refused at admission.
    #[serde(default = "default_call_mb")]
    pub max_call_mb: u32,
    /// Deadline of a call that names none, in ms; 0: none.
    #[serde(default)]
    pub deadline_ms: u64,
    /// Memory the model may hold (weights of every instance plus queued
    /// inputs), MiB; 0: no quota.
    #[serde(default)]
    pub memory_mb: u64,
    /// Remember results by input digest, so replays cost nothing.
    #[serde(default)]
    pub memo: bool,
    /// Memo outputs kept in memory, MiB; more are read back from its log.
    #[serde(default = "default_memo_mb")]
    pub memo_mb: u32,
    /// A file of labels, one per line (classification models).
    #[serde(default)]
    pub labels: Option<String>,
    /// The inputs as the model author declares them; checked against the model.
    #[serde(default, rename = "input")]
    pub inputs: Vec<TensorDecl>,
    #[serde(default, rename = "output")]
    pub outputs: Vec<TensorDecl>,
    /// What a human should know.
    #[serde(default)]
    pub description: Option<String>,
    /// Decoding the host does before the model (`[preprocess.image]`, `[preprocess.text]`).
    #[serde(default)]
    pub preprocess: crate::preprocess::PreprocessConfig,
}

/// `device = "cpu" | "gpu"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceChoice {
    #[default]
    Cpu,
    Gpu,
}

impl From<DeviceChoice> for Device {
    fn from(d: DeviceChoice) -> Device {
        match d {
            DeviceChoice::Cpu => Device::Cpu,
            DeviceChoice::Gpu => Device::Gpu,
        }
    }
}

fn default_file() -> String {
    "model.onnx".to_owned()
}
fn default_backend() -> String {
    "onnxruntime".to_owned()
}
fn default_max_batch() -> u32 {
    32
}
fn default_delay() -> u64 {
    2
}
fn default_instances() -> u32 {
    1
}
fn default_queue_rows() -> u32 {
    4096
}
fn default_call_rows() -> u32 {
    4096
}
fn default_memo_mb() -> u32 {
    64
}
fn default_call_mb() -> u32 {
    256
}

impl ModelConfig {
    /// Reads and checks a `model.toml`.
    pub fn parse(text: &str, file: &Path) -> Result<ModelConfig, RepoError> {
        let bad = |message: String| RepoError::Config { file: file.to_owned(), message };
        let c: ModelConfig = toml::from_str(text).map_err(|e| bad(locate(text, &e)))?;
        if c.max_batch == 0 {
            return Err(bad("max_batch must be at least 1".into()));
        }
        if let Some(p) = c.preferred_batch.iter().find(|p| **p == 0 || **p > c.max_batch) {
            return Err(bad(format!("preferred_batch {p} is not between 1 and max_batch ({})", c.max_batch)));
        }
        if c.instances == 0 || c.instances > 64 {
            return Err(bad(format!("instances = {} (1 to 64)", c.instances)));
        }
        if c.max_queue_rows < c.max_batch {
            return Err(bad(format!(
                "max_queue_rows ({}) is less than max_batch ({}): no batch could form",
                c.max_queue_rows, c.max_batch
            )));
        }
        if c.max_call_rows == 0 || c.max_call_mb == 0 {
            return Err(bad("max_call_rows and max_call_mb must be at least 1".into()));
        }
        if c.max_queue_delay_ms > 60_000 {
            return Err(bad(format!("max_queue_delay_ms = {} (at most 60000)", c.max_queue_delay_ms)));
        }
        if let Some(image) = &c.preprocess.image {
            image.check().map_err(bad)?;
        }
        if let Some(text) = &c.preprocess.text {
            if c.preprocess.image.is_some() {
                return Err(bad("a model takes [preprocess.image] or [preprocess.text], not both".into()));
            }
            text.check().map_err(bad)?;
        }
        if c.backend != "onnxruntime" {
            return Err(bad(format!("unknown backend `{}` (known: onnxruntime)", c.backend)));
        }
        for d in c.inputs.iter().chain(&c.outputs) {
            if DType::parse(&d.dtype).is_none() {
                let known: Vec<_> = DType::ALL.iter().map(|d| d.name()).collect();
                return Err(bad(format!("`{}`: unknown dtype `{}` (known: {})", d.name, d.dtype, known.join(", "))));
            }
        }
        Ok(c)
    }

    /// The declared signature, if the config declares one.
    pub fn declared(&self) -> (Vec<TensorSpec>, Vec<TensorSpec>) {
        let conv = |d: &TensorDecl| TensorSpec {
            name: d.name.clone(),
            dtype: DType::parse(&d.dtype).unwrap_or(DType::F32),
            shape: d.shape.clone(),
        };
        (self.inputs.iter().map(conv).collect(), self.outputs.iter().map(conv).collect())
    }

    /// Batch sizes the batcher aims for, ascending; `[max_batch]` when none.
    pub fn targets(&self) -> Vec<usize> {
        let mut t: Vec<usize> = self.preferred_batch.iter().map(|p| *p as usize).collect();
        if t.is_empty() {
            t.push(self.max_batch as usize);
        }
        t.sort_unstable();
        t.dedup();
        t
    }
}

/// A TOML error with its line.
fn locate(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {}", e.message())
        }
        None => e.message().to_owned(),
    }
}

/// One model folder, read.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    pub name: String,
    pub dir: PathBuf,
    pub config: ModelConfig,
    /// The model file.
    pub file: PathBuf,
    pub file_size: u64,
    /// SHA-256 of the model file, hex.
    pub digest: String,
    pub labels: Option<Vec<String>>,
}

impl ModelEntry {
    pub fn short_digest(&self) -> &str {
        &self.digest[..12.min(self.digest.len())]
    }
}

/// A model repository, read (configs checked, files hashed); models are
/// loaded by the hub on first use.
#[derive(Debug, Clone)]
pub struct ModelRepository {
    pub dir: PathBuf,
    pub models: BTreeMap<String, ModelEntry>,
}

impl ModelRepository {
    /// Reads every folder of `dir` that holds a `model.toml`.
    pub fn open(dir: &Path) -> Result<ModelRepository, RepoError> {
        let io = |source| RepoError::Dir { dir: dir.to_owned(), source };
        let mut models = BTreeMap::new();
        let mut folders: Vec<PathBuf> =
            std::fs::read_dir(dir).map_err(io)?.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        folders.sort();
        for folder in folders.into_iter().filter(|p| p.join(CONFIG_FILE).is_file()) {
            let entry = read_entry(&folder)?;
            models.insert(entry.name.clone(), entry);
        }
        Ok(ModelRepository { dir: dir.to_owned(), models })
    }

    pub fn get(&self, name: &str) -> Option<&ModelEntry> {
        self.models.get(name)
    }

    /// "known: a, b" for messages.
    pub fn known(&self) -> String {
        if self.models.is_empty() {
            format!(" (the repository {} holds no models)", self.dir.display())
        } else {
            format!(" (known: {})", self.models.keys().cloned().collect::<Vec<_>>().join(", "))
        }
    }
}

fn read_entry(folder: &Path) -> Result<ModelEntry, RepoError> {
    let cfg_file = folder.join(CONFIG_FILE);
    let text =
        std::fs::read_to_string(&cfg_file).map_err(|source| RepoError::Read { file: cfg_file.clone(), source })?;
    let config = ModelConfig::parse(&text, &cfg_file)?;
    let name = folder.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
    let bad = |message: String| RepoError::Config { file: cfg_file.clone(), message };
    if name.is_empty() || name.len() > 128 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(bad(format!("model folder name `{name}` must be 1-128 letters, digits, `-`, `_` or `.`")));
    }
    if config.file.contains("..") || Path::new(&config.file).is_absolute() {
        return Err(bad(format!("file = \"{}\" must name a file inside the model folder", config.file)));
    }
    let file = folder.join(&config.file);
    let bytes = std::fs::read(&file).map_err(|source| RepoError::Read { file: file.clone(), source })?;
    let digest = hex::encode(Sha256::digest(&bytes));
    let labels = match &config.labels {
        None => None,
        Some(l) => {
            let lf = folder.join(l);
            let text = std::fs::read_to_string(&lf).map_err(|source| RepoError::Read { file: lf.clone(), source })?;
            Some(text.lines().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
        }
    };
    Ok(ModelEntry { name, dir: folder.to_owned(), config, file, file_size: bytes.len() as u64, digest, labels })
}

impl fmt::Display for ModelEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        write!(
            f,
            "{}  {}  sha256:{}  {} bytes  {} on {}  max_batch {}  delay {} ms  instances {}",
            self.name,
            c.file,
            self.short_digest(),
            self.file_size,
            c.backend,
            Device::from(c.device),
            c.max_batch,
            c.max_queue_delay_ms,
            c.instances
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_line() {
        let f = Path::new("m/model.toml");
        let err = ModelConfig::parse("max_batch = 8\nmax_bacth = 3\n", f).expect_err("typo");
        assert!(err.to_string().contains("m/model.toml: line 2"), "{err}");
        let err = ModelConfig::parse("max_batch = 8\npreferred_batch = [4, 16]\n", f).expect_err("too big");
        assert!(err.to_string().contains("preferred_batch 16"), "{err}");
        let err =
            ModelConfig::parse("[[input]]\nname = \"x\"\ndtype = \"float99\"\nshape = [-1]\n", f).expect_err("dtype");
        assert!(err.to_string().contains("unknown dtype `float99`"), "{err}");
        let ok = ModelConfig::parse("max_batch = 8\npreferred_batch = [8, 4]\n", f).expect("ok");
        assert_eq!(ok.targets(), vec![4, 8]);
    }
}
