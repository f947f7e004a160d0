//! Preprocessing the host does for a model, so encoded inputs never enter a
//! guest: `[preprocess.image]` in a model's config turns image bytes (PNG,
//! JPEG, WebP, by reference) into the normalized `[C, H, W]` float32 tensor
//! the model takes — decoded under the same dimension and allocation limits
//! as the `image` plugin, with the same code (`flumen-pixels`);
//! `[preprocess.text]` turns UTF-8 text into token ids with the model's own
//! `tokenizer.json` (the `tokenizers` crate) and pools the encoder's hidden
//! states into one unit vector per row (sentence-transformers' mean pooling).

use flumen_pixels::{Channels, DIMENSION_MAX, Filter, Layout, Mode, Normalize, Resampler, Resize};
use serde::Deserialize;

/// `[preprocess]` of a model config.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PreprocessConfig {
    pub image: Option<ImageConfig>,
    pub text: Option<TextConfig>,
}

/// `[preprocess.image]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    pub width: u32,
    pub height: u32,
    /// `stretch`, `fill` (cover, then crop the center: the ImageNet way) or `fit` (pad).
    #[serde(default)]
    pub mode: Mode,
    /// `nearest`, `triangle` (bilinear), `catmull-rom`, `lanczos3`.
    #[serde(default)]
    pub filter: Filter,
    /// `rgb` (default) or `grey`.
    #[serde(default = "rgb")]
    pub channels: String,
    /// Per channel, after scaling to [0, 1]; default 0.
    pub mean: Option<Vec<f32>>,
    /// Per channel; default 1.
    pub std: Option<Vec<f32>>,
}

fn rgb() -> String {
    "rgb".to_owned()
}

/// An image preprocessing step, checked.
#[derive(Debug, Clone)]
pub struct ImagePrep {
    resize: Resize,
    channels: Channels,
    normalize: Normalize,
}

impl ImageConfig {
    pub fn check(&self) -> Result<ImagePrep, String> {
        let channels = match self.channels.as_str() {
            "rgb" => Channels::Rgb,
            "grey" | "gray" => Channels::Grey,
            other => return Err(format!("preprocess.image.channels = \"{other}\" (rgb or grey)")),
        };
        for (what, v) in [("width", self.width), ("height", self.height)] {
            if v == 0 || v > DIMENSION_MAX {
                return Err(format!("preprocess.image.{what} = {v} (1 to {DIMENSION_MAX})"));
            }
        }
        let n = channels.count();
        let mean = self.mean.clone().unwrap_or_else(|| vec![0.0; n]);
        let std = self.std.clone().unwrap_or_else(|| vec![1.0; n]);
        if mean.len() != n || std.len() != n {
            return Err(format!("preprocess.image: mean and std need {n} values each ({} channels)", self.channels));
        }
        if std.iter().any(|s| !s.is_finite() || *s == 0.0) || mean.iter().any(|m| !m.is_finite()) {
            return Err("preprocess.image: mean must be finite and std finite and non-zero".into());
        }
        Ok(ImagePrep {
            resize: Resize { width: self.width, height: self.height, mode: self.mode, filter: self.filter },
            channels,
            normalize: Normalize::new(&mean, &std),
        })
    }
}

impl ImagePrep {
    /// The tensor shape one image becomes: `[C, H, W]`.
    pub fn shape(&self) -> [usize; 3] {
        Layout::Chw.shape(self.resize.height as usize, self.resize.width as usize, self.channels.count())
    }

    /// Decodes, converts, resizes and normalizes one image into `out`
    /// (`C × H × W` values). The error says what is wrong with the bytes.
    pub fn image_into(&self, bytes: &[u8], out: &mut [f32]) -> Result<(), String> {
        let image = flumen_pixels::decode(bytes).map_err(|e| e.to_string())?;
        let image = flumen_pixels::convert(image, self.channels);
        let mut resampler = Resampler::new(self.resize);
        let mut hwc = vec![0u8; resampler.out_len(self.channels)];
        resampler.resize_into(&image, &mut hwc)?;
        flumen_pixels::write_f32(&hwc, self.channels.count(), &self.normalize, Layout::Chw, out);
        Ok(())
    }
}

/// `[preprocess.text]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextConfig {
    /// The tokenizer (Hugging Face `tokenizer.json`), relative to the model folder.
    #[serde(default = "tokenizer_json")]
    pub tokenizer: String,
    /// Longest row in tokens (special tokens included); longer text is truncated.
    #[serde(default = "max_length")]
    pub max_length: u32,
    /// `mean` (masked mean over tokens), `cls` (the first token) or `none`
    /// (the model's outputs as they are).
    #[serde(default = "mean")]
    pub pool: String,
    /// Scale each pooled row to unit length (L2).
    #[serde(default)]
    pub normalize: bool,
    /// The output to pool; default the model's first.
    pub output: Option<String>,
}

fn tokenizer_json() -> String {
    "tokenizer.json".to_owned()
}
fn max_length() -> u32 {
    256
}
fn mean() -> String {
    "mean".to_owned()
}

/// How token states become one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    Mean,
    Cls,
    None,
}

/// The token-id inputs a text model may take, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextInput {
    Ids,
    Mask,
    TypeIds,
}

impl TextInput {
    pub fn of(name: &str) -> Option<TextInput> {
        match name {
            "input_ids" => Some(TextInput::Ids),
            "attention_mask" => Some(TextInput::Mask),
            "token_type_ids" => Some(TextInput::TypeIds),
            _ => None,
        }
    }
}

impl TextConfig {
    /// Checks what can be checked without the model folder.
    pub fn check(&self) -> Result<Pool, String> {
        if self.max_length < 2 || self.max_length > 8192 {
            return Err(format!("preprocess.text.max_length = {} (2 to 8192)", self.max_length));
        }
        match self.pool.as_str() {
            "mean" => Ok(Pool::Mean),
            "cls" => Ok(Pool::Cls),
            "none" => Ok(Pool::None),
            other => Err(format!("preprocess.text.pool = \"{other}\" (mean, cls or none)")),
        }
    }

    /// Reads the tokenizer from the model folder `dir`.
    pub fn load(&self, dir: &std::path::Path) -> Result<TextPrep, String> {
        let pool = self.check()?;
        let file = dir.join(&self.tokenizer);
        let mut tokenizer = tokenizers::Tokenizer::from_file(&file)
            .map_err(|e| format!("preprocess.text: tokenizer {}: {e}", file.display()))?;
        tokenizer.with_padding(None);
        let truncation = tokenizers::TruncationParams { max_length: self.max_length as usize, ..Default::default() };
        tokenizer
            .with_truncation(Some(truncation))
            .map_err(|e| format!("preprocess.text: tokenizer {}: {e}", file.display()))?;
        Ok(TextPrep { tokenizer: std::sync::Arc::new(tokenizer), pool, normalize: self.normalize })
    }
}

/// A text preprocessing step, loaded.
#[derive(Clone)]
pub struct TextPrep {
    tokenizer: std::sync::Arc<tokenizers::Tokenizer>,
    pub pool: Pool,
    pub normalize: bool,
}

impl std::fmt::Debug for TextPrep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextPrep").field("pool", &self.pool).field("normalize", &self.normalize).finish()
    }
}

/// Rows of token ids, each as long as its text needs (no padding).
#[derive(Debug, Default)]
pub struct Tokens {
    pub ids: Vec<Vec<u32>>,
    pub types: Vec<Vec<u32>>,
}

impl Tokens {
    /// The longest row, at least 1 (an empty batch still has a shape).
    pub fn width(&self) -> usize {
        self.ids.iter().map(Vec::len).max().unwrap_or(0).max(1)
    }

    /// One input as an int64 `[rows, width]` tensor, zero-padded on the right.
    pub fn tensor(&self, what: TextInput) -> flumen_types::inference::Tensor {
        let width = self.width();
        let mut data = Vec::with_capacity(self.ids.len() * width * 8);
        for (ids, types) in self.ids.iter().zip(&self.types) {
            for j in 0..width {
                let v: i64 = match what {
                    TextInput::Ids => ids.get(j).map_or(0, |v| *v as i64),
                    TextInput::Mask => (j < ids.len()) as i64,
                    TextInput::TypeIds => types.get(j).map_or(0, |v| *v as i64),
                };
                data.extend_from_slice(&v.to_le_bytes());
            }
        }
        flumen_types::inference::Tensor {
            dtype: flumen_types::inference::DType::I64,
            shape: vec![self.ids.len(), width],
            data: bytes::Bytes::from(data),
        }
    }
}

impl TextPrep {
    /// Tokenizes each item (UTF-8 text); an item that is not UTF-8 or cannot
    /// be tokenized becomes an empty row and is listed with its reason.
    pub fn tokenize(&self, items: &[bytes::Bytes]) -> (Tokens, Vec<(u32, String)>) {
        let mut tokens = Tokens::default();
        let mut failed = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let encoded = std::str::from_utf8(item)
                .map_err(|e| format!("not UTF-8 text: {e}"))
                .and_then(|text| self.tokenizer.encode(text, true).map_err(|e| format!("cannot tokenize: {e}")));
            match encoded {
                Ok(e) => {
                    tokens.ids.push(e.get_ids().to_vec());
                    tokens.types.push(e.get_type_ids().to_vec());
                }
                Err(why) => {
                    failed.push((i as u32, why));
                    tokens.ids.push(Vec::new());
                    tokens.types.push(Vec::new());
                }
            }
        }
        (tokens, failed)
    }

    /// Pools `states` (`[rows, width ≥ the tokens' width, hidden]` float32)
    /// into `[rows, hidden]` over each row's own tokens, normalized if asked.
    /// A row with no tokens pools to zeros.
    pub fn pool(&self, states: &[f32], shape: &[usize], tokens: &Tokens) -> Result<(Vec<f32>, [usize; 2]), String> {
        let &[rows, width, hidden] = shape else {
            return Err(format!("pooling needs a [rows, tokens, hidden] output, the model gave {shape:?}"));
        };
        if rows != tokens.ids.len() || width < tokens.ids.iter().map(Vec::len).max().unwrap_or(0) {
            return Err(format!("the model gave {shape:?} for {} rows of text", tokens.ids.len()));
        }
        let mut out = vec![0f32; rows * hidden];
        for (r, (ids, row)) in tokens.ids.iter().zip(out.chunks_exact_mut(hidden)).enumerate() {
            let base = r * width * hidden;
            let used = match self.pool {
                Pool::Cls => ids.len().min(1),
                _ => ids.len(),
            };
            for t in 0..used {
                let state = &states[base + t * hidden..base + (t + 1) * hidden];
                row.iter_mut().zip(state).for_each(|(o, s)| *o += s);
            }
            if used > 0 {
                row.iter_mut().for_each(|v| *v /= used as f32);
            }
            if self.normalize {
                normalize(row);
            }
        }
        Ok((out, [rows, hidden]))
    }
}

/// Scales `row` to unit L2 length (a zero row stays zero).
pub fn normalize(row: &mut [f32]) {
    let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 1e-12 {
        row.iter_mut().for_each(|v| *v /= norm);
    }
}
