//! NanoDet-g 416: the 80 COCO classes, anchor-free, at strides 8, 16 and 32. The
//! anonymizer uses its vehicles as places to look for plates up close; the pre-labeller
//! uses all of it. Its pre- and post-processing is [`Convention::nanodet`].

use std::path::Path;

use anonymize::{BBox, DetectError, Proposal, Proposed, Proposer, Rgb};

use crate::{Backend, Convention, OnnxError, OnnxModel};

pub const FILE: &str = "nanodet_g416_coco.onnx";

/// COCO's 80 class names in the model's output order.
pub const COCO_CLASSES: [&str; 80] = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

const PERSON: usize = 0;
/// The classes that carry licence plates: motorcycle, car, bus, truck.
const VEHICLES: [usize; 4] = [3, 2, 5, 7];

/// One object found, in the image's pixel coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Object {
    /// Index into the model's classes: [`COCO_CLASSES`] for NanoDet.
    pub class: usize,
    pub bbox: BBox,
    pub score: f32,
}

impl Object {
    /// The COCO name of a NanoDet object.
    pub fn label(&self) -> &'static str {
        COCO_CLASSES[self.class]
    }
}

/// Finds COCO objects.
#[derive(Debug)]
pub struct NanoDet {
    model: OnnxModel,
    convention: Convention,
    threshold: f32,
}

impl NanoDet {
    /// Loads the model (checked against its SHA-256) for `backend`; objects scoring at
    /// or under `threshold` are not reported.
    pub fn load(models: &Path, threshold: f32, backend: &Backend) -> Result<Self, OnnxError> {
        Ok(NanoDet { model: OnnxModel::load(models, FILE, backend)?, convention: Convention::nanodet(), threshold })
    }

    /// Every object above the threshold, after class-aware NMS.
    pub fn objects(&self, image: Rgb<'_>) -> Result<Vec<Object>, OnnxError> {
        self.convention.detect(&self.model, COCO_CLASSES.len(), image, self.threshold)
    }
}

impl Proposer for NanoDet {
    fn model_name(&self) -> &str {
        self.model.file()
    }
    fn model_sha256(&self) -> &str {
        self.model.sha256()
    }
    /// People, where faces are, and motorcycles, cars, buses and trucks, where plates are.
    fn propose(&self, image: Rgb<'_>) -> Result<Vec<Proposal>, DetectError> {
        let objects = self.objects(image).map_err(|e| DetectError { model: FILE.into(), message: e.to_string() })?;
        let kind = |class| match class {
            PERSON => Some(Proposed::Person),
            c if VEHICLES.contains(&c) => Some(Proposed::Vehicle),
            _ => None,
        };
        Ok(objects
            .into_iter()
            .filter_map(|o| Some(Proposal { kind: kind(o.class)?, bbox: o.bbox, score: o.score }))
            .collect())
    }
}

impl prelabel::ObjectDetector for NanoDet {
    fn model_name(&self) -> &str {
        self.model.file()
    }
    fn model_sha256(&self) -> &str {
        self.model.sha256()
    }
    fn class_names(&self) -> &[&str] {
        &COCO_CLASSES
    }
    fn find(&self, image: Rgb<'_>) -> Result<Vec<prelabel::Found>, DetectError> {
        let objects = self.objects(image).map_err(|e| DetectError { model: FILE.into(), message: e.to_string() })?;
        Ok(objects.into_iter().map(|o| prelabel::Found { class: o.class, bbox: o.bbox, score: o.score }).collect())
    }
}
