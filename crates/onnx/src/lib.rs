//! The ONNX detectors, run on the CPU by tract (pure Rust, so it cross-builds to every
//! board) or by ONNX Runtime, loaded at run time when its library is present (2–4×
//! faster on x86-64; see models/README.md). Each model file is checked against the SHA-256 manifest compiled into the
//! binary before it is parsed: a missing or altered model is an error, and the daemon
//! fails closed.
//!
//! Invariant: the only crate that runs ONNX. It implements `anonymize::Detector` and
//! knows nothing of frames, cameras or storage.

mod centerface;
mod model;
mod ort_backend;
mod plate;

pub use centerface::CenterFace;
pub use model::{Backend, MANIFEST, OnnxError, OnnxModel, Outputs, expected_sha256};
pub use ort_backend::find_library;
pub use plate::PlateDetector;

/// A detector input size: the largest box the letterboxed image is fitted into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputSize {
    pub width: u32,
    pub height: u32,
}

/// An image letterboxed into a model input, as planar floats.
struct Prepared {
    size: InputSize,
    letterbox: anonymize::Letterbox,
    chw: Vec<f32>,
}

/// Letterboxes `image` into an input fitted to `max` and lays it out as NCHW floats,
/// `pixel` turning each RGB pixel into the model's three input values.
fn prepare(image: anonymize::Rgb<'_>, max: InputSize, pixel: impl Fn([u8; 3]) -> [f32; 3]) -> Prepared {
    let (size, _) = fitted_input(image.width, image.height, max);
    let (rgb, letterbox) = anonymize::letterbox(image, size.width, size.height);
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

/// Fits `width`×`height` into `max` keeping the aspect ratio, then rounds each side up
/// to a multiple of 32: no compute is spent on padding wider than 31 pixels.
fn fitted_input(width: u32, height: u32, max: InputSize) -> (InputSize, f32) {
    let scale = (max.width as f32 / width as f32).min(max.height as f32 / height as f32);
    let w = ((width as f32 * scale).round() as u32).max(1);
    let h = ((height as f32 * scale).round() as u32).max(1);
    (InputSize { width: w.div_ceil(32) * 32, height: h.div_ceil(32) * 32 }, scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_follow_the_image_shape() {
        let max = InputSize { width: 640, height: 384 };
        assert_eq!(fitted_input(1280, 720, max).0, InputSize { width: 640, height: 384 });
        assert_eq!(fitted_input(600, 800, max).0, InputSize { width: 288, height: 384 });
        assert_eq!(fitted_input(100, 100, max).0, InputSize { width: 384, height: 384 });
    }
}
