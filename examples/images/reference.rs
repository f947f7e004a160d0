//! What `job.toml`'s `image` operator computes, written directly against the
//! same crates (`image` to decode, `fast_image_resize` to resample): decode →
//! RGB → shorter side to the target and center crop ("fill") → scale to
//! [0, 1] → subtract the mean, divide by the standard deviation → CHW
//! float32. The integration tests check the job's tensors against it, and
//! the W6 benchmark runs it as the native baseline.

use fast_image_resize as fir;

/// The ImageNet statistics the example normalizes with.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The native pipeline with its reusable buffers.
#[derive(Debug)]
pub struct Reference {
    width: u32,
    height: u32,
    resizer: fir::Resizer,
    resized: Vec<u8>,
    /// `(v / 255 - mean[c]) / std[c]` for every byte `v`, per channel `c`.
    table: [[f32; 256]; 3],
}

impl Reference {
    /// A pipeline to `width × height` with bilinear ("triangle") resampling.
    pub fn new(width: u32, height: u32, mean: [f32; 3], std: [f32; 3]) -> Self {
        let table = std::array::from_fn(|c| std::array::from_fn(|v| (v as f32 / 255.0 - mean[c]) / std[c]));
        Self { width, height, resizer: fir::Resizer::new(), resized: Vec::new(), table }
    }

    /// The same pipeline with the resize on plain scalar code, as it runs in a
    /// component (guests are built without Wasm SIMD).
    #[allow(unsafe_code, reason = "choosing no CPU extension is always sound")]
    pub fn without_simd(mut self) -> Self {
        // SAFETY: the caller of `set_cpu_extensions` must make sure the CPU
        // supports the extensions chosen; `None` asks for none.
        unsafe { self.resizer.set_cpu_extensions(fir::CpuExtensions::None) };
        self
    }

    /// The CHW float32 tensor of the encoded image `bytes`.
    pub fn tensor(&mut self, bytes: &[u8]) -> Result<Vec<f32>, String> {
        let rgb = image::load_from_memory(bytes).map_err(|e| e.to_string())?.into_rgb8();
        let plane = self.width as usize * self.height as usize;
        self.resized.resize(plane * 3, 0);
        let src = fir::images::ImageRef::new(rgb.width(), rgb.height(), rgb.as_raw(), fir::PixelType::U8x3)
            .map_err(|e| e.to_string())?;
        let mut dst =
            fir::images::Image::from_slice_u8(self.width, self.height, &mut self.resized, fir::PixelType::U8x3)
                .map_err(|e| e.to_string())?;
        let options = fir::ResizeOptions::new()
            .resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Bilinear))
            .fit_into_destination(Some((0.5, 0.5)));
        self.resizer.resize(&src, &mut dst, &options).map_err(|e| e.to_string())?;
        let mut out = vec![0f32; plane * 3];
        for (i, px) in self.resized.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * plane + i] = self.table[c][usize::from(px[c])];
            }
        }
        Ok(out)
    }
}
