//! Anonymization: find faces and licence plates, track them across frames, and redact
//! them in memory. [`AnonymizedFrame`] is the only thing later stages may store or send,
//! and [`Anonymizer`] is the only thing that can make one (ARCHITECTURE.md, invariant 1).
//!
//! Invariant: knows nothing of GStreamer, ONNX, SQLite or MQTT. Detectors come in through
//! the [`Detector`] trait; the `onnx` crate implements it.

mod anonymizer;
mod geometry;
mod redact;
mod track;

pub use anonymizer::{
    AnonymizeError, AnonymizedFrame, Anonymizer, ModelUse, Pass, PassTime, PlateBand, Provenance, Scope, Settings,
    Timings,
};
pub use geometry::{BBox, Letterbox, letterbox, merge, nms};
pub use redact::{Mode, Shape, redact};
pub use track::Tracker;

use serde::{Deserialize, Serialize};

/// What a detection is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Face,
    LicensePlate,
    /// Where a vehicle's plate can be: covered because no detector could see the plate
    /// (too small to find, or the vehicle beyond those looked at closely), yet it may
    /// still be read (see [`Settings::plate_areas`]). Not a tight box, so never offered
    /// as a pre-label.
    PlateArea,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Face => "face",
            Class::LicensePlate => "license_plate",
            Class::PlateArea => "plate_area",
        }
    }
}

/// One thing found in a frame, in the frame's pixel coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub class: Class,
    pub bbox: BBox,
    pub score: f32,
}

/// A borrowed RGB8 image, tightly packed.
#[derive(Debug, Clone, Copy)]
pub struct Rgb<'a> {
    pub width: u32,
    pub height: u32,
    pub data: &'a [u8],
}

impl<'a> Rgb<'a> {
    /// Copies a rectangle out of the image (clamped to it).
    pub fn crop(&self, x: u32, y: u32, width: u32, height: u32) -> Vec<u8> {
        let x = x.min(self.width);
        let y = y.min(self.height);
        let width = width.min(self.width - x) as usize;
        let height = height.min(self.height - y) as usize;
        let mut out = Vec::with_capacity(width * height * 3);
        for row in y as usize..y as usize + height {
            let start = (row * self.width as usize + x as usize) * 3;
            out.extend_from_slice(&self.data[start..start + width * 3]);
        }
        out
    }
}

/// A model that finds one class of thing. Implementations hold their model, input size
/// and threshold; `detect` must be callable from several threads at once.
pub trait Detector: Send + Sync {
    /// What it finds.
    fn class(&self) -> Class;
    /// The model's file name, for provenance.
    fn model_name(&self) -> &str;
    /// The model file's SHA-256, hex, for provenance.
    fn model_sha256(&self) -> &str;
    /// The score a detection needs to be reported.
    fn threshold(&self) -> f32;
    /// The largest input the model is run at: an image that fits needs no tiles.
    fn input_size(&self) -> (u32, u32);
    /// Finds things in `image`, in its pixel coordinates.
    fn detect(&self, image: Rgb<'_>) -> Result<Vec<Detection>, DetectError>;
}

/// A model that proposes regions to look at closely: people, whose faces may be too small
/// for the whole-frame pass, and vehicles, whose plates may be; each is then magnified.
pub trait Proposer: Send + Sync {
    /// The model's file name, for provenance.
    fn model_name(&self) -> &str;
    /// The model file's SHA-256, hex, for provenance.
    fn model_sha256(&self) -> &str;
    /// Regions of `image` worth a closer look, in its pixel coordinates, best first.
    fn propose(&self, image: Rgb<'_>) -> Result<Vec<Proposal>, DetectError>;
}

/// A region worth a closer look.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Proposal {
    pub kind: Proposed,
    pub bbox: BBox,
    /// The proposer's confidence, 0–1.
    pub score: f32,
}

/// What a proposed region holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Proposed {
    /// A person: a face is near the top.
    Person,
    /// A motorcycle, car, bus or truck: a plate is on it.
    Vehicle,
}

/// A detector could not run. The frame it was for must be dropped, never stored.
#[derive(Debug, thiserror::Error)]
#[error("{model}: {message}")]
pub struct DetectError {
    pub model: String,
    pub message: String,
}
