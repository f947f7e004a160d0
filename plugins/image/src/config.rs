//! The `image` operator's configuration, checked against the input schema
//! when the operator opens and turned into a [`Plan`].

use flumen_sdk::arrow_schema::{DataType, Field, Schema};
use flumen_sdk::media::{self, BLOB, IMAGE};
use serde::Deserialize;

use flumen_pixels::{Channels, DIMENSION_MAX, Filter, Layout, Mode, Normalize, Resize};

/// Largest output tensor, in bytes: a `resize` whose tensors could not fit
/// in an instance's memory a few at a time is refused at open.
const TENSOR_BYTES_MAX: usize = 64 << 20;

/// `config = { column = "blob", resize = { width = 224, height = 224 }, normalize = { … } }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The blob-reference column (`flumen.blob` or `flumen.image`).
    #[serde(default = "default_column")]
    column: String,
    /// The tensor column to write.
    #[serde(default = "default_output")]
    output: String,
    /// Remove the reference column from the output.
    #[serde(default)]
    drop_input: bool,
    /// 3 (RGB) or 1 (grey).
    #[serde(default = "default_channels")]
    channels: u32,
    resize: Option<ResizeConfig>,
    normalize: Option<NormalizeConfig>,
    /// `CHW` or `HWC`; applies to resized output.
    layout: Option<Layout>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResizeConfig {
    width: u32,
    height: u32,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    filter: Filter,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NormalizeConfig {
    /// Per-channel mean of pixels scaled to [0, 1]; zeros when absent.
    mean: Option<Vec<f32>>,
    /// Per-channel standard deviation; ones when absent.
    std: Option<Vec<f32>>,
}

fn default_column() -> String {
    "blob".into()
}

fn default_output() -> String {
    "tensor".into()
}

fn default_channels() -> u32 {
    3
}

/// What the output column holds.
#[derive(Debug)]
pub enum Output {
    /// Resized and normalized: a float32 fixed-shape tensor.
    Float { shape: [usize; 3], layout: Layout, normalize: Normalize },
    /// Resized: a uint8 fixed-shape tensor.
    Bytes { shape: [usize; 3], layout: Layout },
    /// Decoded as is: a variable-shape uint8 tensor (`H`, `W`, `C`).
    Images,
}

/// A checked configuration.
#[derive(Debug)]
pub struct Plan {
    /// Index of the reference column in the input.
    pub input: usize,
    pub output_name: String,
    pub drop_input: bool,
    /// The output takes the reference column's name, and its place.
    pub replaces_input: bool,
    pub channels: Channels,
    pub resize: Option<Resize>,
    pub output: Output,
}

impl Config {
    /// Checks the configuration against `input` and says what to do.
    pub fn plan(self, input: &Schema) -> Result<Plan, flumen_sdk::Error> {
        let err = |m: String| flumen_sdk::Error::config(format!("image: {m}"));
        let index = input.index_of(&self.column).map_err(|_| {
            let names: Vec<&str> = input.fields().iter().map(|f| f.name().as_str()).collect();
            err(format!("unknown column `{}`; columns are: {}", self.column, names.join(", ")))
        })?;
        let field = input.field(index);
        let tag = media::extension_name(field);
        if !media::is_blob_ref(field) || !matches!(tag, Some(BLOB) | Some(IMAGE)) {
            let what = tag.map_or_else(|| field.data_type().to_string(), |t| format!("`{t}`"));
            return Err(err(format!(
                "column `{}` is {what}, not a reference to images (`{BLOB}` or `{IMAGE}`, as the `blobs` source makes)",
                self.column
            )));
        }
        if self.output.is_empty() {
            return Err(err("`output` must not be empty".into()));
        }
        let replaces_input = self.output == self.column;
        if !replaces_input && input.index_of(&self.output).is_ok() {
            return Err(err(format!(
                "output column `{}` already exists in the input; choose another `output`",
                self.output
            )));
        }
        let channels = match self.channels {
            1 => Channels::Grey,
            3 => Channels::Rgb,
            n => return Err(err(format!("`channels` must be 1 (grey) or 3 (RGB), not {n}"))),
        };
        let c = channels.count();
        let resize = match self.resize {
            None => None,
            Some(r) => {
                for (name, v) in [("width", r.width), ("height", r.height)] {
                    if v == 0 || v > DIMENSION_MAX {
                        return Err(err(format!("`resize.{name}` must be between 1 and {DIMENSION_MAX}, not {v}")));
                    }
                }
                let bytes = r.width as usize * r.height as usize * c * if self.normalize.is_some() { 4 } else { 1 };
                if bytes > TENSOR_BYTES_MAX {
                    return Err(err(format!(
                        "a {}×{}×{c} tensor is {} MiB, more than the {} MiB one row may hold",
                        r.width,
                        r.height,
                        bytes >> 20,
                        TENSOR_BYTES_MAX >> 20
                    )));
                }
                Some(Resize { width: r.width, height: r.height, mode: r.mode, filter: r.filter })
            }
        };
        let normalize = self.normalize.map(|n| normalize_of(n, c)).transpose().map_err(err)?;
        let output = match (&resize, normalize) {
            (None, Some(_)) => {
                return Err(
                    err("`normalize` needs `resize`: normalized output is a fixed-shape float32 tensor".into()),
                );
            }
            (None, None) => {
                if self.layout.is_some() {
                    return Err(err(
                        "`layout` applies only with `resize`; a decoded image is always HWC (channels last)".into(),
                    ));
                }
                Output::Images
            }
            (Some(r), Some(normalize)) => {
                let layout = self.layout.unwrap_or(Layout::Chw);
                Output::Float { shape: layout.shape(r.height as usize, r.width as usize, c), layout, normalize }
            }
            (Some(r), None) => {
                let layout = self.layout.unwrap_or(Layout::Hwc);
                Output::Bytes { shape: layout.shape(r.height as usize, r.width as usize, c), layout }
            }
        };
        Ok(Plan {
            input: index,
            output_name: self.output,
            drop_input: self.drop_input,
            replaces_input,
            channels,
            resize,
            output,
        })
    }
}

fn normalize_of(n: NormalizeConfig, channels: usize) -> Result<Normalize, String> {
    let mean = n.mean.unwrap_or_else(|| vec![0.0; channels]);
    let std = n.std.unwrap_or_else(|| vec![1.0; channels]);
    for (name, values) in [("mean", &mean), ("std", &std)] {
        if values.len() != channels {
            return Err(format!(
                "`normalize.{name}` has {} values; the output has {channels} channel{}",
                values.len(),
                if channels == 1 { "" } else { "s" }
            ));
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(format!("`normalize.{name}` must hold finite numbers, not {values:?}"));
        }
    }
    if std.contains(&0.0) {
        return Err(format!("`normalize.std` must not contain 0, got {std:?}"));
    }
    Ok(Normalize::new(&mean, &std))
}

impl Plan {
    /// The output column's field (always nullable: a null reference gives a null row).
    pub fn output_field(&self) -> Field {
        let name = &self.output_name;
        match &self.output {
            Output::Float { shape, layout, .. } => {
                media::fixed_shape_tensor_field(name, DataType::Float32, shape, Some(&layout.dim_names()), true)
            }
            Output::Bytes { shape, layout } => {
                media::fixed_shape_tensor_field(name, DataType::UInt8, shape, Some(&layout.dim_names()), true)
            }
            Output::Images => media::decoded_image_field(name, DataType::UInt8, Some(self.channels.count())),
        }
    }
}

#[cfg(test)]
mod tests {
    use flumen_sdk::media::{blob_field, image_field, video_field};

    use super::*;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("path", DataType::Utf8, false),
            image_field("blob", true),
            blob_field("raw", true),
            video_field("clip", true),
        ])
    }

    fn plan(toml_like_json: &str) -> Result<Plan, String> {
        let config: Config = serde_json::from_str(toml_like_json).map_err(|e| e.to_string())?;
        config.plan(&schema()).map_err(|e| e.message)
    }

    #[test]
    fn defaults_decode_rgb_images_without_resizing() {
        let p = plan("{}").unwrap();
        assert_eq!((p.input, p.output_name.as_str(), p.drop_input), (1, "tensor", false));
        assert!(matches!(p.output, Output::Images));
        let f = p.output_field();
        assert_eq!(media::extension_name(&f), Some(media::VARIABLE_SHAPE_TENSOR));
        assert!(media::extension_metadata(&f).contains("\"uniform_shape\":[null,null,3]"));
    }

    #[test]
    fn normalized_output_is_float_chw_and_plain_resize_is_uint8_hwc() {
        let p = plan(
            r#"{"column": "raw", "resize": {"width": 224, "height": 200, "mode": "fill", "filter": "lanczos3"},
                "normalize": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}"#,
        )
        .unwrap();
        assert!(matches!(p.output, Output::Float { shape: [3, 200, 224], layout: Layout::Chw, .. }));
        let meta = media::fixed_shape_tensor_of(&p.output_field()).unwrap();
        assert_eq!(meta.shape, vec![3, 200, 224]);
        assert_eq!(meta.dim_names, Some(vec!["C".into(), "H".into(), "W".into()]));
        assert_eq!(p.output_field().data_type().to_string(), "FixedSizeList(134400 x non-null Float32)");

        let p = plan(r#"{"resize": {"width": 8, "height": 4}, "channels": 1}"#).unwrap();
        assert!(matches!(p.output, Output::Bytes { shape: [4, 8, 1], layout: Layout::Hwc }));
        let r = p.resize.unwrap();
        assert_eq!((r.mode, r.filter), (Mode::Fill, Filter::Triangle));
        let p = plan(r#"{"resize": {"width": 8, "height": 4}, "normalize": {}, "layout": "HWC"}"#).unwrap();
        assert!(matches!(p.output, Output::Float { shape: [4, 8, 3], layout: Layout::Hwc, .. }));
    }

    #[test]
    fn the_output_may_replace_the_reference_column() {
        let p = plan(r#"{"output": "blob"}"#).unwrap();
        assert!(p.replaces_input);
        let err = plan(r#"{"output": "path"}"#).unwrap_err();
        assert!(err.contains("output column `path` already exists"), "{err}");
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        let cases = [
            (r#"{"column": "nope"}"#, "unknown column `nope`; columns are: path, blob, raw, clip"),
            (r#"{"column": "path"}"#, "column `path` is Utf8, not a reference to images"),
            (r#"{"column": "clip"}"#, "column `clip` is `flumen.video`"),
            (r#"{"channels": 4}"#, "`channels` must be 1 (grey) or 3 (RGB), not 4"),
            (r#"{"resize": {"width": 0, "height": 4}}"#, "`resize.width` must be between 1 and 16384, not 0"),
            (r#"{"resize": {"width": 16384, "height": 16384}}"#, "more than the 64 MiB one row may hold"),
            (r#"{"resize": {"width": 4, "height": 4, "mode": "squash"}}"#, "unknown variant `squash`"),
            (r#"{"resize": {"width": 4, "height": 4, "filter": "cubic"}}"#, "unknown variant `cubic`"),
            (r#"{"normalize": {}}"#, "`normalize` needs `resize`"),
            (r#"{"layout": "CHW"}"#, "`layout` applies only with `resize`"),
            (r#"{"resize": {"width": 4, "height": 4}, "layout": "WHC"}"#, "unknown variant `WHC`"),
            (r#"{"resize": {"width": 4, "height": 4}, "normalize": {"mean": [0.5]}}"#, "`normalize.mean` has 1 values"),
            (r#"{"resize": {"width": 4, "height": 4}, "normalize": {"std": [1, 0, 1]}}"#, "must not contain 0"),
            (r#"{"output": ""}"#, "`output` must not be empty"),
            (r#"{"colum": "blob"}"#, "unknown field `colum`"),
        ];
        for (config, expected) in cases {
            let err = plan(config).err().unwrap_or_else(|| panic!("{config} was accepted"));
            assert!(err.contains(expected), "{config}: {err}");
        }
    }
}
