//! The process's models: a repository's models loaded on first use, once per
//! process, and shared by every operator instance that names them — each
//! behind its own batcher. Implements the `inference` capability
//! (`InferenceService`) that `flumen-wasm` calls.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use flumen_types::inference::{
    DType, Device, EncodedFuture, InferError, InferFuture, InferenceBackend, InferenceService, LoadRequest,
    ModelHandle, ModelInfo, ModelSignature, Tensor,
};

use crate::batcher::{BatchPolicy, BatchStats, Batcher};
use crate::memo::{Memo, RowOutputs, assemble, row_of};
use crate::preprocess::{Pool, TextInput, TextPrep};
use crate::repo::{Fallback, ModelEntry, ModelRepository, RepoError};

/// Gives the backend a model config names, loading it on first use (the
/// engine decides what "onnxruntime" means, so this crate names no runtime).
pub type BackendProvider =
    Arc<dyn Fn(&str, Device) -> Result<Arc<dyn InferenceBackend>, String> + Send + Sync + 'static>;

/// A loaded model: its entry, signature and batcher.
pub struct LoadedModel {
    pub entry: ModelEntry,
    pub info: ModelInfo,
    pub backend: String,
    /// Where it runs, and why if not where its config asked.
    pub device: Device,
    pub fallback_note: Option<String>,
    /// The host's image preprocessing, when the config has `[preprocess.image]`.
    image: Option<crate::preprocess::ImagePrep>,
    /// The host's tokenizer and pooling, when the config has `[preprocess.text]`.
    text: Option<TextModel>,
    batcher: Arc<Batcher>,
}

impl fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedModel").field("name", &self.info.name).field("digest", &self.info.digest).finish()
    }
}

impl LoadedModel {
    pub fn stats(&self) -> &Arc<BatchStats> {
        self.batcher.stats()
    }

    pub fn policy(&self) -> &BatchPolicy {
        self.batcher.policy()
    }
}

impl ModelHandle for LoadedModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn infer(&self, inputs: Vec<Tensor>, deadline: Option<Duration>) -> InferFuture {
        // Checked before queuing, so one caller's wrong tensor never fails a
        // batch it would have shared with others.
        if let Err(detail) = check_inputs(&self.info.signature, &inputs) {
            let model = self.info.name.clone();
            return Box::pin(async move { Err(InferError::Mismatch { model, detail }) });
        }
        let batcher = Arc::clone(&self.batcher);
        Box::pin(async move { batcher.infer(inputs, deadline).await })
    }

    fn infer_encoded(&self, items: Vec<Bytes>, deadline: Option<Duration>) -> EncodedFuture {
        let name = self.info.name.clone();
        if let Some(text) = &self.text {
            return text.infer(name, Arc::clone(&self.batcher), items, deadline);
        }
        let (Some(prep), batcher) = (self.image.clone(), Arc::clone(&self.batcher)) else {
            let detail = "takes tensors only: its model.toml has no [preprocess.image] or [preprocess.text]".to_owned();
            return Box::pin(async move { Err(InferError::Mismatch { model: name, detail }) });
        };
        Box::pin(async move {
            let [c, h, w] = prep.shape();
            let per_row = c * h * w;
            let mut values = vec![0f32; items.len() * per_row];
            let mut failed = Vec::new();
            for (i, (item, out)) in items.iter().zip(values.chunks_exact_mut(per_row)).enumerate() {
                if let Err(e) = prep.image_into(item, out) {
                    out.fill(0.0);
                    failed.push((i as u32, e));
                }
            }
            let tensor = Tensor::from_f32(vec![items.len(), c, h, w], &values)
                .map_err(|message| InferError::Backend { model: name.clone(), message })?;
            let outputs = batcher.infer(vec![tensor], deadline).await?;
            Ok((outputs, failed))
        })
    }
}

/// A text model: its tokenizer, which token input each model input is, and
/// the output it pools.
#[derive(Debug, Clone)]
struct TextModel {
    prep: TextPrep,
    inputs: Vec<TextInput>,
    output: usize,
}

impl TextModel {
    /// Checks the model against `[preprocess.text]`: every input is a token
    /// input (int64 `[rows, tokens]`), and a pooled output is float32
    /// `[rows, tokens, hidden]`.
    fn new(prep: TextPrep, cfg: &crate::preprocess::TextConfig, sig: &ModelSignature) -> Result<TextModel, String> {
        let mut inputs = Vec::with_capacity(sig.inputs.len());
        for i in &sig.inputs {
            let Some(what) = TextInput::of(&i.name) else {
                return Err(format!(
                    "[preprocess.text] feeds input_ids, attention_mask and token_type_ids, but the model also takes `{}`",
                    i.name
                ));
            };
            if i.dtype != DType::I64 || i.shape.len() != 2 {
                return Err(format!(
                    "[preprocess.text] makes int64 [rows, tokens] for `{}`, the model takes {} {}",
                    i.name,
                    i.dtype,
                    i.shape_text()
                ));
            }
            inputs.push(what);
        }
        if !inputs.contains(&TextInput::Ids) {
            return Err("[preprocess.text]: the model has no `input_ids` input".into());
        }
        let output = match &cfg.output {
            None => 0,
            Some(name) => sig
                .outputs
                .iter()
                .position(|o| &o.name == name)
                .ok_or_else(|| format!("[preprocess.text] output `{name}` is not one of the model's outputs"))?,
        };
        let Some(out) = sig.outputs.get(output) else {
            return Err("the model has no outputs".into());
        };
        if prep.pool != Pool::None && (out.dtype != DType::F32 || out.shape.len() != 3) {
            return Err(format!(
                "[preprocess.text] pools a float32 [rows, tokens, hidden] output, `{}` is {} {}",
                out.name,
                out.dtype,
                out.shape_text()
            ));
        }
        Ok(TextModel { prep, inputs, output })
    }

    /// Tokenizes, runs the model through its batcher (calls of different
    /// lengths share batches, padded) and pools: one float32 `[rows, hidden]`
    /// tensor, or the model's outputs with `pool = "none"`. A pooled call
    /// larger than a batch is cut into batch-sized pieces of rows of similar
    /// length (sorted by tokens), so each piece pads only to its own longest
    /// row; the rows come back in the call's order.
    fn infer(
        &self,
        model: String,
        batcher: Arc<Batcher>,
        items: Vec<Bytes>,
        deadline: Option<Duration>,
    ) -> EncodedFuture {
        let this = self.clone();
        Box::pin(async move {
            if items.is_empty() {
                return Ok((Vec::new(), Vec::new()));
            }
            let (tokens, failed) = this.prep.tokenize(&items);
            let max = batcher.policy().max_batch.max(1);
            if this.prep.pool == Pool::None || tokens.ids.len() <= max {
                let inputs: Vec<Tensor> = this.inputs.iter().map(|i| tokens.tensor(*i)).collect();
                let outputs = batcher.infer(inputs, deadline).await?;
                if this.prep.pool == Pool::None {
                    return Ok((outputs, failed));
                }
                let (pooled, shape) = this.pooled(&model, &outputs, &tokens)?;
                let tensor = Tensor::from_f32(shape.to_vec(), &pooled).map_err(|m| backend(&model, m))?;
                return Ok((vec![tensor], failed));
            }
            let started = std::time::Instant::now();
            let mut order: Vec<usize> = (0..tokens.ids.len()).collect();
            order.sort_by_key(|i| tokens.ids[*i].len());
            let mut rows: Vec<Vec<f32>> = vec![Vec::new(); order.len()];
            let mut hidden = 0;
            for piece in order.chunks(max) {
                let sub = crate::preprocess::Tokens {
                    ids: piece.iter().map(|i| tokens.ids[*i].clone()).collect(),
                    types: piece.iter().map(|i| tokens.types[*i].clone()).collect(),
                };
                let inputs: Vec<Tensor> = this.inputs.iter().map(|i| sub.tensor(*i)).collect();
                let left = deadline.map(|d| d.saturating_sub(started.elapsed()));
                let outputs = batcher.infer(inputs, left).await?;
                let (pooled, [_, h]) = this.pooled(&model, &outputs, &sub)?;
                hidden = h;
                for (k, i) in piece.iter().enumerate() {
                    rows[*i] = pooled[k * h..(k + 1) * h].to_vec();
                }
            }
            let flat: Vec<f32> = rows.into_iter().flatten().collect();
            let tensor = Tensor::from_f32(vec![order.len(), hidden], &flat).map_err(|m| backend(&model, m))?;
            Ok((vec![tensor], failed))
        })
    }

    /// The pooled output of one batch of `tokens`.
    fn pooled(
        &self,
        model: &str,
        outputs: &[Tensor],
        tokens: &crate::preprocess::Tokens,
    ) -> Result<(Vec<f32>, [usize; 2]), InferError> {
        let states =
            outputs.get(self.output).ok_or_else(|| backend(model, "the model returned too few outputs".into()))?;
        let values = states.to_f32().ok_or_else(|| backend(model, "the pooled output is not float32".into()))?;
        self.prep.pool(&values, &states.shape, tokens).map_err(|m| backend(model, m))
    }
}

fn backend(model: &str, message: String) -> InferError {
    InferError::Backend { model: model.to_owned(), message }
}

/// Every input present, in order, with the right dtype, rank, fixed
/// dimensions and one row count.
pub fn check_inputs(sig: &ModelSignature, inputs: &[Tensor]) -> Result<(), String> {
    if inputs.len() != sig.inputs.len() {
        let names: Vec<&str> = sig.inputs.iter().map(|s| s.name.as_str()).collect();
        return Err(format!("{} inputs given, the model takes {} ({})", inputs.len(), names.len(), names.join(", ")));
    }
    let rows = inputs.first().map(|t| t.rows()).unwrap_or(0);
    for (spec, t) in sig.inputs.iter().zip(inputs) {
        spec.check(t)?;
        if t.rows() != rows {
            return Err(format!("input `{}` has {} rows, the first input {rows}", spec.name, t.rows()));
        }
    }
    Ok(())
}

/// Loaded models by (canonical model file, digest): one load per process.
static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();

/// (canonical model file, SHA-256) → the model loaded from it.
type Registry = HashMap<(PathBuf, String), Arc<LoadedModel>>;

/// A repository's models as one job sees them.
pub struct ModelHub {
    repo: ModelRepository,
    backends: BackendProvider,
    threads_total: usize,
    /// Models this hub handed out, in first-use order (for the run summary).
    used: Mutex<Vec<Arc<LoadedModel>>>,
    /// Where memo logs go (the job's checkpoint directory); none: in memory.
    memo_dir: Option<PathBuf>,
    /// The memo of each model with `memo = true`, by name.
    memos: Mutex<HashMap<String, Arc<Memo>>>,
}

impl fmt::Debug for ModelHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelHub").field("dir", &self.repo.dir).finish()
    }
}

impl ModelHub {
    /// Reads the repository at `dir`. `threads_total` is the CPU threads
    /// models may use together (the engine's guest workers wait while a
    /// model runs for them, so the default is the machine's cores).
    pub fn open(dir: &Path, backends: BackendProvider, threads_total: usize) -> Result<ModelHub, RepoError> {
        Ok(ModelHub {
            repo: ModelRepository::open(dir)?,
            backends,
            threads_total: threads_total.max(1),
            used: Mutex::new(Vec::new()),
            memo_dir: None,
            memos: Mutex::new(HashMap::new()),
        })
    }

    /// Keeps memo logs under `dir` (one file per model and digest), so they
    /// outlive the process; without it memos live in memory.
    pub fn with_memo_dir(mut self, dir: PathBuf) -> ModelHub {
        self.memo_dir = Some(dir);
        self
    }

    /// The memo of model `name`, once it has been used with `memo = true`.
    pub fn memo_of(&self, name: &str) -> Option<Arc<Memo>> {
        self.memos.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    /// Makes every memo's log durable (called at checkpoints and at the end).
    pub fn sync_memos(&self) -> std::io::Result<()> {
        let memos: Vec<Arc<Memo>> = self.memos.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        memos.iter().try_for_each(|m| m.sync())
    }

    /// The memo of `model`, opened on first use.
    fn memo_for(&self, model: &LoadedModel) -> Result<Arc<Memo>, InferError> {
        let mut memos = self.memos.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = memos.get(&model.info.name) {
            return Ok(Arc::clone(m));
        }
        let budget = (model.entry.config.memo_mb as usize) << 20;
        let memo = match &self.memo_dir {
            None => Memo::in_memory(&model.info.digest, budget),
            Some(dir) => {
                let file = dir.join(format!("{}-{}.memo", model.info.name, model.entry.short_digest()));
                Memo::open(&file, &model.info.digest, budget).map_err(|e| InferError::Load {
                    model: model.info.name.clone(),
                    message: format!("memo {}: {e}", file.display()),
                })?
            }
        };
        let memo = Arc::new(memo);
        memos.insert(model.info.name.clone(), Arc::clone(&memo));
        Ok(memo)
    }

    pub fn repository(&self) -> &ModelRepository {
        &self.repo
    }

    /// The models this hub handed out, in first-use order.
    pub fn used(&self) -> Vec<Arc<LoadedModel>> {
        self.used.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The model called `name`, loaded (or the one already loaded).
    pub fn load(&self, name: &str) -> Result<Arc<LoadedModel>, InferError> {
        let model = self.load_shared(name)?;
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if !used.iter().any(|m| Arc::ptr_eq(m, &model)) {
            used.push(Arc::clone(&model));
        }
        Ok(model)
    }

    fn load_shared(&self, name: &str) -> Result<Arc<LoadedModel>, InferError> {
        let entry = self
            .repo
            .get(name)
            .ok_or_else(|| InferError::UnknownModel { model: name.to_owned(), known: self.repo.known() })?;
        let key = (std::fs::canonicalize(&entry.file).unwrap_or_else(|_| entry.file.clone()), entry.digest.clone());
        let registry = REGISTRY.get_or_init(|| Mutex::new(HashMap::new()));
        let mut models = registry.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = models.get(&key) {
            return Ok(Arc::clone(m));
        }
        let model = Arc::new(self.load_entry(entry)?);
        models.insert(key, Arc::clone(&model));
        Ok(model)
    }

    fn load_entry(&self, entry: &ModelEntry) -> Result<LoadedModel, InferError> {
        let c = &entry.config;
        let fail = |message: String| InferError::Load { model: entry.name.clone(), message };
        let wanted = Device::from(c.device);
        let (backend, device, fallback_note) = match (self.backends)(&c.backend, wanted) {
            Ok(b) => (b, wanted, None),
            Err(why) if wanted == Device::Gpu && c.fallback == Fallback::Cpu => {
                let b = (self.backends)(&c.backend, Device::Cpu).map_err(fail)?;
                let note = format!("wants the GPU, which is unavailable ({why}); running on the CPU");
                tracing::warn!(model = %entry.name, "{note}");
                (b, Device::Cpu, Some(note))
            }
            Err(why) => return Err(fail(why)),
        };
        if c.memory_mb > 0 {
            let weights = entry.file_size.saturating_mul(c.instances as u64);
            if weights > c.memory_mb << 20 {
                return Err(fail(format!(
                    "{} instances of a {} byte model exceed memory_mb = {}",
                    c.instances, entry.file_size, c.memory_mb
                )));
            }
        }
        let threads =
            if c.threads > 0 { c.threads as usize } else { (self.threads_total / c.instances as usize).max(1) };
        let mut instances = Vec::with_capacity(c.instances as usize);
        for _ in 0..c.instances {
            let req = LoadRequest { name: &entry.name, path: &entry.file, device, threads };
            instances.push(backend.load(&req).map_err(fail)?);
        }
        let signature = instances.first().map(|i| i.signature().clone()).unwrap_or_default();
        check_declared(entry, &signature).map_err(fail)?;
        let queue_cap_bytes = if c.memory_mb > 0 {
            ((c.memory_mb << 20).saturating_sub(entry.file_size * c.instances as u64)) as usize
        } else {
            usize::MAX
        };
        let policy = BatchPolicy {
            max_batch: c.max_batch as usize,
            targets: c.targets(),
            max_queue_delay: Duration::from_millis(c.max_queue_delay_ms),
            max_queue_rows: c.max_queue_rows as usize,
            max_call_rows: c.max_call_rows as usize,
            max_call_bytes: ((c.max_call_mb as usize) << 20).min(queue_cap_bytes),
            default_deadline: (c.deadline_ms > 0).then(|| Duration::from_millis(c.deadline_ms)),
            pad_sequences: c.preprocess.text.is_some(),
        };
        let text = match &c.preprocess.text {
            None => None,
            Some(cfg) => {
                let dir = entry.file.parent().unwrap_or(Path::new("."));
                let prep = cfg.load(dir).map_err(fail)?;
                Some(TextModel::new(prep, cfg, &signature).map_err(fail)?)
            }
        };
        let image = match &c.preprocess.image {
            None => None,
            Some(cfg) => {
                let prep = cfg.check().map_err(fail)?;
                let [ch, h, w] = prep.shape();
                let input = signature.inputs.first();
                let fits = signature.inputs.len() == 1
                    && input.is_some_and(|i| {
                        i.dtype == DType::F32
                            && i.shape.len() == 4
                            && i.shape[1..].iter().zip([ch, h, w]).all(|(d, v)| *d < 0 || *d as usize == v)
                    });
                if !fits {
                    let takes: Vec<String> = signature
                        .inputs
                        .iter()
                        .map(|i| format!("`{}` {} {}", i.name, i.dtype, i.shape_text()))
                        .collect();
                    return Err(fail(format!(
                        "[preprocess.image] makes float32 [?, {ch}, {h}, {w}], but the model takes {}",
                        takes.join(", ")
                    )));
                }
                Some(prep)
            }
        };
        let info = ModelInfo {
            name: entry.name.clone(),
            digest: entry.digest.clone(),
            signature,
            max_batch: c.max_batch,
            labels: entry.labels.clone().unwrap_or_default(),
            accepts: if image.is_some() { Some("image".to_owned()) } else { text.as_ref().map(|_| "text".to_owned()) },
        };
        tracing::info!(
            model = %entry.name, digest = %entry.short_digest(), backend = backend.name(), %device,
            instances = c.instances, threads, "model loaded"
        );
        Ok(LoadedModel {
            entry: entry.clone(),
            info,
            backend: format!("{} {}", backend.name(), backend.version()),
            device,
            fallback_note,
            image,
            text,
            batcher: Arc::new(Batcher::start(&entry.name, policy, instances)),
        })
    }
}

/// A config's declared inputs and outputs must be the model's own.
fn check_declared(entry: &ModelEntry, sig: &ModelSignature) -> Result<(), String> {
    let (inputs, outputs) = entry.config.declared();
    for (role, declared, actual) in [("input", inputs, &sig.inputs), ("output", outputs, &sig.outputs)] {
        for d in declared {
            let Some(a) = actual.iter().find(|a| a.name == d.name) else {
                let names: Vec<&str> = actual.iter().map(|a| a.name.as_str()).collect();
                return Err(format!(
                    "{role} `{}` is declared in model.toml but the model has ({})",
                    d.name,
                    names.join(", ")
                ));
            };
            let dims_agree =
                a.shape.len() == d.shape.len() && a.shape.iter().zip(&d.shape).all(|(x, y)| *x < 0 || *y < 0 || x == y);
            if a.dtype != d.dtype || !dims_agree {
                return Err(format!(
                    "{role} `{}` is declared {} {} in model.toml, the model has {} {}",
                    d.name,
                    d.dtype,
                    d.shape_text(),
                    a.dtype,
                    a.shape_text()
                ));
            }
        }
    }
    Ok(())
}

impl InferenceService for ModelHub {
    fn model(&self, name: &str) -> Result<Arc<dyn ModelHandle>, InferError> {
        let model = self.load(name)?;
        if model.entry.config.memo {
            let memo = self.memo_for(&model)?;
            return Ok(Arc::new(Memoized { model, memo }));
        }
        Ok(model as Arc<dyn ModelHandle>)
    }
}

/// A model behind its memo: rows seen before are answered from the memo;
/// only the others reach the batcher, and their outputs are remembered.
#[derive(Debug)]
struct Memoized {
    model: Arc<LoadedModel>,
    memo: Arc<Memo>,
}

impl ModelHandle for Memoized {
    fn info(&self) -> &ModelInfo {
        &self.model.info
    }

    fn infer(&self, inputs: Vec<Tensor>, deadline: Option<Duration>) -> InferFuture {
        if let Err(detail) = check_inputs(&self.model.info.signature, &inputs) {
            let model = self.model.info.name.clone();
            return Box::pin(async move { Err(InferError::Mismatch { model, detail }) });
        }
        let rows = inputs.first().map(|t| t.rows()).unwrap_or(0);
        let keys: Vec<u128> = (0..rows).map(|r| self.memo.key(&inputs, r)).collect();
        let (mut found, missing) = self.memo.lookup(&keys);
        let (model, memo) = (Arc::clone(&self.model), Arc::clone(&self.memo));
        Box::pin(async move {
            let name = model.info.name.clone();
            let fail = |message: String| InferError::Backend { model: name.clone(), message };
            if missing.is_empty() {
                let all: Vec<RowOutputs> = found.into_iter().flatten().collect();
                return assemble(&all).map_err(fail);
            }
            let sub = if missing.len() == rows {
                inputs
            } else {
                inputs
                    .iter()
                    .map(|t| {
                        let parts: Vec<Tensor> = missing.iter().map(|r| t.slice_rows(*r, 1)).collect();
                        Tensor::concat_rows(&parts)
                    })
                    .collect::<Result<Vec<_>, String>>()
                    .map_err(fail)?
            };
            let outputs = model.infer(sub, deadline).await?;
            for (j, r) in missing.iter().enumerate() {
                let row = row_of(&outputs, j);
                memo.put(keys[*r], row.clone());
                found[*r] = Some(row);
            }
            if missing.len() == rows {
                return Ok(outputs);
            }
            let all: Vec<RowOutputs> = found.into_iter().flatten().collect();
            assemble(&all).map_err(fail)
        })
    }

    /// Encoded rows are remembered by their bytes; a row that failed to
    /// preprocess is not remembered (it fails again, with its reason).
    fn infer_encoded(&self, items: Vec<Bytes>, deadline: Option<Duration>) -> EncodedFuture {
        if self.model.text.as_ref().is_some_and(|t| t.prep.pool == Pool::None) {
            // Unpooled token states are as wide as their batch: rows from
            // different batches would not join.
            return self.model.infer_encoded(items, deadline);
        }
        let keys: Vec<u128> = items
            .iter()
            .map(|b| {
                let t = Tensor { dtype: DType::U8, shape: vec![1, b.len()], data: b.clone() };
                self.memo.key(&[t], 0)
            })
            .collect();
        let (mut found, missing) = self.memo.lookup(&keys);
        let (model, memo) = (Arc::clone(&self.model), Arc::clone(&self.memo));
        Box::pin(async move {
            let name = model.info.name.clone();
            let fail = |message: String| InferError::Backend { model: name.clone(), message };
            let mut failed = Vec::new();
            if !missing.is_empty() {
                let sub: Vec<Bytes> = missing.iter().map(|r| items[*r].clone()).collect();
                let (outputs, sub_failed) = model.infer_encoded(sub, deadline).await?;
                for (j, r) in missing.iter().enumerate() {
                    let row = row_of(&outputs, j);
                    match sub_failed.iter().find(|(f, _)| *f as usize == j) {
                        Some((_, why)) => failed.push((*r as u32, why.clone())),
                        None => memo.put(keys[*r], row.clone()),
                    }
                    found[*r] = Some(row);
                }
            }
            let all: Vec<RowOutputs> = found.into_iter().flatten().collect();
            Ok((assemble(&all).map_err(fail)?, failed))
        })
    }
}
