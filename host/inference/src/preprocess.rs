//! Preprocessing the host does for a model, so encoded inputs never enter a
//! guest: `[preprocess.image]` in a model's config turns image bytes (PNG,
//! JPEG, WebP, by reference) into the normalized `[C, H, W]` float32 tensor
//! the model takes — decoded under the same dimension and allocation limits
//! as the `image` plugin, with the same code (`flumen-pixels`).

use flumen_pixels::{Channels, DIMENSION_MAX, Filter, Layout, Mode, Normalize, Resampler, Resize};
use serde::Deserialize;

/// `[preprocess]` of a model config.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PreprocessConfig {
    pub image: Option<ImageConfig>,
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
