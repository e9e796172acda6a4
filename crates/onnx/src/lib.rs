//! The ONNX detectors, run on the CPU by tract (pure Rust, so it cross-builds to every
//! board) or by ONNX Runtime, loaded at run time when its library is present (2–4×
//! faster on x86-64; see models/README.md). Each model file is checked against the SHA-256 manifest compiled into the
//! binary before it is parsed: a missing or altered model is an error, and the daemon
//! fails closed.
//!
//! Detectors: CenterFace (faces), a RetinaFace-style plate model, PP-OCRv4's text
//! detector (plate text inside vehicles) and NanoDet (COCO objects: vehicles to zoom into,
//! and pre-labels). A user's own pre-label model ([`ConfiguredDetector`]) is checked only
//! against the SHA-256 its config gives, if any: it never redacts, so it cannot make the
//! daemon fail open.
//!
//! Invariant: the only crate that runs ONNX. It implements `anonymize::Detector` and
//! knows nothing of frames, cameras or storage.

mod centerface;
mod custom;
mod decode;
mod detector;
mod error;
mod model;
mod nanodet;
mod ort_backend;
mod plate;
mod text;

pub use centerface::CenterFace;
pub use custom::{Channels, ConfiguredDetector, Convention, Decoding};
pub use error::OnnxError;
pub use model::{Backend, MANIFEST, OnnxModel, Outputs, expected_sha256, load_on_first_use};
pub use nanodet::{COCO_CLASSES, NanoDet, Object};
pub use ort_backend::find_library;
pub use plate::PlateDetector;
pub use text::TextDetector;

/// A detector input size: the largest box the letterboxed image is fitted into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputSize {
    pub width: u32,
    pub height: u32,
}

/// How a detector fits an image into its input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// The largest input; the image is letterboxed into it.
    pub max: InputSize,
    /// Never magnify the image more than this.
    pub max_zoom: f32,
    /// Round input sides up to a multiple of this (a multiple of 32, the models' largest
    /// stride). Crops come in every size; a coarse step bounds how many plans tract
    /// compiles for them.
    pub step: u32,
}

impl From<InputSize> for Fit {
    /// Whole frames: fill `max`, magnifying small images as much as that takes.
    fn from(max: InputSize) -> Fit {
        Fit { max, max_zoom: f32::INFINITY, step: 32 }
    }
}

impl Fit {
    /// Crops of things found in a frame: their longer side magnified up to `side`, at most
    /// `max_zoom` times, padded to 128-pixel steps (ONNX Runtime would take any multiple of
    /// 32: a caller may set `step`).
    pub fn zoom(side: u32, max_zoom: f32) -> Fit {
        Fit { max: InputSize { width: side, height: side }, max_zoom, step: 128 }
    }
}

/// An image letterboxed into a model input, as planar floats.
struct Prepared {
    size: InputSize,
    letterbox: anonymize::Letterbox,
    chw: Vec<f32>,
}

/// Letterboxes `image` into an input fitted to `max` and lays it out as NCHW floats,
/// `pixel` turning each RGB pixel into the model's three input values.
fn prepare(image: anonymize::Rgb<'_>, fit: Fit, pixel: impl Fn([u8; 3]) -> [f32; 3]) -> Prepared {
    let (size, scale) = fitted_input(image.width, image.height, fit);
    letterboxed(image, size, scale, pixel)
}

/// Like [`prepare`], into exactly `size`: for models whose graph fixes the input.
fn letterboxed(
    image: anonymize::Rgb<'_>,
    size: InputSize,
    max_scale: f32,
    pixel: impl Fn([u8; 3]) -> [f32; 3],
) -> Prepared {
    let (rgb, letterbox) = anonymize::letterbox(image, size.width, size.height, max_scale);
    let plane = (size.width * size.height) as usize;
    let mut chw = vec![0f32; plane * 3];
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        let values = pixel([px[0], px[1], px[2]]);
        for c in 0..3 {
            chw[c * plane + i] = values[c];
        }
    }
    Prepared { size, letterbox, chw }
}

/// Output `i` of a model run, or an error naming the model.
fn output<'a>(
    outputs: &'a model::Outputs,
    file: &str,
    i: usize,
) -> Result<&'a tract_onnx::prelude::tract_ndarray::ArrayD<f32>, OnnxError> {
    outputs.get(i).ok_or_else(|| OnnxError::Tract { file: file.into(), message: format!("no output {i}") })
}

/// Fits `width`×`height` into `fit.max` keeping the aspect ratio, then rounds each side
/// up to a multiple of `fit.step`: with the default 32, no compute is spent on padding
/// wider than 31 pixels.
fn fitted_input(width: u32, height: u32, fit: Fit) -> (InputSize, f32) {
    let scale = (fit.max.width as f32 / width as f32).min(fit.max.height as f32 / height as f32).min(fit.max_zoom);
    let w = ((width as f32 * scale).round() as u32).max(1);
    let h = ((height as f32 * scale).round() as u32).max(1);
    let step = fit.step.max(32);
    (InputSize { width: w.div_ceil(step) * step, height: h.div_ceil(step) * step }, scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_follow_the_image_shape() {
        let max = InputSize { width: 640, height: 384 }.into();
        assert_eq!(fitted_input(1280, 720, max).0, InputSize { width: 640, height: 384 });
        assert_eq!(fitted_input(600, 800, max).0, InputSize { width: 288, height: 384 });
        assert_eq!(fitted_input(100, 100, max).0, InputSize { width: 384, height: 384 });
    }

    #[test]
    fn crops_are_magnified_within_limits_on_coarse_steps() {
        let fit = Fit::zoom(512, 4.0);
        assert_eq!(fitted_input(200, 100, fit), (InputSize { width: 512, height: 256 }, 2.56));
        // A tiny crop is magnified 4× and padded to the step, not blown up to 512.
        assert_eq!(fitted_input(40, 30, fit), (InputSize { width: 256, height: 128 }, 4.0));
    }
}
