//! The one `anonymize::Detector` for every redacting model (CenterFace, the plate model,
//! PP-OCR's text detector): a verified model, how images fit its input and the score a
//! detection needs. What differs between them, the file, the class and the decoding, is
//! a [`Decode`].

use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;

use anonymize::{Class, DetectError, Detection, Detector, Rgb};

use crate::{Backend, Fit, OnnxError, OnnxModel};

/// How one model is fed and read.
pub trait Decode: Send + Sync + 'static {
    /// The model's file name in the manifest.
    const FILE: &'static str;
    /// What it finds.
    const CLASS: Class;
    /// Runs `model` on `image` fitted by `fit` and returns what scores above `threshold`,
    /// in the image's pixel coordinates.
    fn decode(model: &OnnxModel, fit: Fit, threshold: f32, image: Rgb<'_>) -> Result<Vec<Detection>, OnnxError>;
}

/// A redacting model with its fit and threshold.
pub struct OnnxDetector<D> {
    model: Arc<OnnxModel>,
    fit: Fit,
    threshold: f32,
    decode: PhantomData<D>,
}

impl<D> std::fmt::Debug for OnnxDetector<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxDetector")
            .field("model", &self.model)
            .field("fit", &self.fit)
            .field("threshold", &self.threshold)
            .finish()
    }
}

impl<D: Decode> OnnxDetector<D> {
    /// Loads the model (checked against its SHA-256) for `backend`. `fit` is an input size
    /// for whole frames, or a [`Fit`] for crops.
    pub fn load(models: &Path, fit: impl Into<Fit>, threshold: f32, backend: &Backend) -> Result<Self, OnnxError> {
        let model = Arc::new(OnnxModel::load(models, D::FILE, backend)?);
        Ok(OnnxDetector { model, fit: fit.into(), threshold, decode: PhantomData })
    }

    /// The same model, fitting images another way (crops of people or vehicles, magnified).
    pub fn fitted(&self, fit: Fit) -> Self {
        OnnxDetector { model: self.model.clone(), fit, threshold: self.threshold, decode: PhantomData }
    }
}

impl<D: Decode> Detector for OnnxDetector<D> {
    fn class(&self) -> Class {
        D::CLASS
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
        D::decode(&self.model, self.fit, self.threshold, image)
            .map_err(|e| DetectError { model: D::FILE.into(), message: e.to_string() })
    }
}
