//! Pre-labels: what an object detector proposes on an anonymized frame, kept to the
//! classes annotators want, so they confirm and correct instead of drawing from scratch.
//!
//! Invariant: sees only anonymized pixels (the daemon feeds it stored frames) and knows
//! nothing of ONNX or storage. Detectors come in through [`ObjectDetector`]; the `onnx`
//! crate implements it for NanoDet.

use anonymize::{BBox, DetectError, Rgb};
use serde::Serialize;

/// A model that finds objects of several classes.
pub trait ObjectDetector: Send + Sync {
    /// The model's file name, for provenance.
    fn model_name(&self) -> &str;
    /// The model file's SHA-256, hex, for provenance.
    fn model_sha256(&self) -> &str;
    /// Class names, by the index [`Found::class`] uses.
    fn class_names(&self) -> &[&str];
    /// Everything above the detector's own floor, in the image's pixel coordinates.
    fn find(&self, image: Rgb<'_>) -> Result<Vec<Found>, DetectError>;
}

/// One object a detector found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Found {
    pub class: usize,
    pub bbox: BBox,
    pub score: f32,
}

/// A proposal for annotators: a label from the schema, a box and the model's score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreLabel {
    pub label: String,
    pub bbox: BBox,
    pub score: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum PrelabelError {
    #[error("pre-label class `{0}` is not one the model knows; it knows: {1}")]
    UnknownClass(String, String),
    #[error("pre-label threshold {0} is not a score: use 0 to 1")]
    Threshold(f32),
}

/// The classes annotators want by default: people and vehicles.
pub const DEFAULT_CLASSES: [&str; 6] = ["person", "bicycle", "car", "motorcycle", "bus", "truck"];

/// Runs a detector and keeps the wanted classes above a threshold.
pub struct Prelabeler {
    detector: Box<dyn ObjectDetector>,
    /// Wanted class indices.
    keep: Vec<usize>,
    threshold: f32,
}

impl std::fmt::Debug for Prelabeler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.keep.iter().map(|&i| self.detector.class_names()[i]).collect();
        f.debug_struct("Prelabeler")
            .field("model", &self.detector.model_name())
            .field("classes", &names)
            .field("threshold", &self.threshold)
            .finish()
    }
}

impl Prelabeler {
    /// Checks every wanted class against the model's and the threshold.
    pub fn new(detector: Box<dyn ObjectDetector>, classes: &[String], threshold: f32) -> Result<Self, PrelabelError> {
        if !(0.0..=1.0).contains(&threshold) {
            return Err(PrelabelError::Threshold(threshold));
        }
        let names = detector.class_names();
        let keep = classes
            .iter()
            .map(|c| {
                names
                    .iter()
                    .position(|n| n == c)
                    .ok_or_else(|| PrelabelError::UnknownClass(c.clone(), names.join(", ")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Prelabeler { detector, keep, threshold })
    }

    pub fn model_name(&self) -> &str {
        self.detector.model_name()
    }

    pub fn model_sha256(&self) -> &str {
        self.detector.model_sha256()
    }

    /// The wanted objects in `image`, best first.
    pub fn label(&self, image: Rgb<'_>) -> Result<Vec<PreLabel>, DetectError> {
        let names = self.detector.class_names();
        let mut found: Vec<PreLabel> = self
            .detector
            .find(image)?
            .into_iter()
            .filter(|f| f.score >= self.threshold && self.keep.contains(&f.class))
            .map(|f| PreLabel { label: names[f.class].to_owned(), bbox: f.bbox, score: f.score })
            .collect();
        found.sort_by(|a, b| b.score.total_cmp(&a.score));
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reports one object of each class at a fixed score: the filter under test.
    struct Each(f32);

    impl ObjectDetector for Each {
        fn model_name(&self) -> &str {
            "each"
        }
        fn model_sha256(&self) -> &str {
            "00"
        }
        fn class_names(&self) -> &[&str] {
            &["person", "car", "kite"]
        }
        fn find(&self, _: Rgb<'_>) -> Result<Vec<Found>, DetectError> {
            let bbox = BBox { x1: 0.0, y1: 0.0, x2: 1.0, y2: 1.0 };
            Ok((0..3).map(|class| Found { class, bbox, score: self.0 + class as f32 * 0.1 }).collect())
        }
    }

    #[test]
    fn keeps_the_wanted_classes_above_the_threshold() {
        let p = Prelabeler::new(Box::new(Each(0.3)), &["car".into(), "kite".into()], 0.45).unwrap();
        let found = p.label(Rgb { width: 1, height: 1, data: &[0, 0, 0] }).unwrap();
        assert_eq!(found.iter().map(|f| f.label.as_str()).collect::<Vec<_>>(), ["kite"]);
    }

    #[test]
    fn an_unknown_class_lists_the_known_ones() {
        let err = Prelabeler::new(Box::new(Each(0.3)), &["lorry".into()], 0.3).unwrap_err().to_string();
        assert!(err.contains("`lorry`") && err.contains("person, car, kite"), "{err}");
    }
}
