//! NanoDet-g 416: the 80 COCO classes, anchor-free, at strides 8, 16 and 32. The
//! anonymizer uses its vehicles as places to look for plates up close; the pre-labeller
//! uses all of it.

use std::path::Path;

use anonymize::{BBox, DetectError, Proposal, Proposed, Proposer, Rgb};

use crate::{Backend, Fit, InputSize, OnnxError, OnnxModel, Prepared, prepare};

pub const FILE: &str = "nanodet_g416_coco.onnx";
const SIDE: u32 = 416;
const MEAN_BGR: [f32; 3] = [103.53, 116.28, 123.675];
const STD_BGR: [f32; 3] = [57.375, 57.12, 58.395];
const STRIDES: [u32; 3] = [8, 16, 32];
/// Distance bins per box side.
const BINS: usize = 11;
/// Class-aware NMS (the reference decoder's value).
const NMS_IOU: f32 = 0.6;

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
    /// Index into [`COCO_CLASSES`].
    pub class: usize,
    pub bbox: BBox,
    pub score: f32,
}

impl Object {
    pub fn label(&self) -> &'static str {
        COCO_CLASSES[self.class]
    }
}

/// Finds COCO objects.
#[derive(Debug)]
pub struct NanoDet {
    model: OnnxModel,
    threshold: f32,
}

impl NanoDet {
    /// Loads the model (checked against its SHA-256) for `backend`; objects scoring at
    /// or under `threshold` are not reported.
    pub fn load(models: &Path, threshold: f32, backend: &Backend) -> Result<Self, OnnxError> {
        Ok(NanoDet { model: OnnxModel::load(models, FILE, backend)?, threshold })
    }

    /// Every object above the threshold, after class-aware NMS.
    pub fn objects(&self, image: Rgb<'_>) -> Result<Vec<Object>, OnnxError> {
        // The graph's input is fixed at 416×416: letterbox into exactly that.
        let fit = Fit { max: InputSize { width: SIDE, height: SIDE }, max_zoom: f32::INFINITY, step: SIDE };
        let Prepared { letterbox: lb, chw, .. } = prepare(image, fit, |[r, g, b]| {
            let bgr = [b, g, r];
            std::array::from_fn(|c| (f32::from(bgr[c]) - MEAN_BGR[c]) / STD_BGR[c])
        });
        let outputs = self.model.run(SIDE, SIDE, chw)?;
        let mut found: Vec<Object> = Vec::new();
        for stride in STRIDES {
            let grid = (SIDE / stride) as usize;
            let cells = grid * grid;
            // Outputs are matched by shape: the converted graph does not keep them in
            // stride order.
            let find = |width: usize| {
                outputs.iter().find(|o| o.shape() == [1, cells, width]).and_then(|o| o.as_slice()).ok_or_else(|| {
                    OnnxError::Tract { file: FILE.into(), message: format!("no [1, {cells}, {width}] output") }
                })
            };
            let (scores, dists) = (find(COCO_CLASSES.len())?, find(4 * BINS)?);
            for cell in 0..cells {
                let row = &scores[cell * 80..(cell + 1) * 80];
                let (class, &score) = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).expect("80 classes");
                if score <= self.threshold {
                    continue;
                }
                let s = stride as f32;
                let (cx, cy) = (((cell % grid) as f32 + 0.5) * s, ((cell / grid) as f32 + 0.5) * s);
                let d: [f32; 4] = std::array::from_fn(|side| {
                    expected_bin(&dists[cell * 44 + side * BINS..cell * 44 + (side + 1) * BINS]) * s
                });
                let bbox =
                    BBox { x1: cx - d[0], y1: cy - d[1], x2: cx + d[2], y2: cy + d[3] }.clamped(lb.width, lb.height);
                found.push(Object { class, bbox: lb.unmap(bbox), score });
            }
        }
        Ok(class_nms(found))
    }
}

/// The softmax-weighted mean bin of one side's distance distribution.
fn expected_bin(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let (mut total, mut weighted) = (0.0, 0.0);
    for (bin, &l) in logits.iter().enumerate() {
        let p = (l - max).exp();
        total += p;
        weighted += p * bin as f32;
    }
    weighted / total
}

/// Greedy NMS within each class, best first.
fn class_nms(mut objects: Vec<Object>) -> Vec<Object> {
    objects.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Object> = Vec::new();
    for o in objects {
        if kept.iter().all(|k| k.class != o.class || k.bbox.iou(&o.bbox) <= NMS_IOU) {
            kept.push(o);
        }
    }
    kept
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
        Ok(objects.into_iter().filter_map(|o| Some(Proposal { kind: kind(o.class)?, bbox: o.bbox })).collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expected_bin_of_a_peak_is_that_bin() {
        let mut logits = [-20.0f32; BINS];
        logits[3] = 20.0;
        assert!((expected_bin(&logits) - 3.0).abs() < 1e-3);
    }

    #[test]
    fn nms_keeps_overlapping_objects_of_different_classes() {
        let b = BBox { x1: 0.0, y1: 0.0, x2: 10.0, y2: 10.0 };
        let kept = class_nms(vec![
            Object { class: 0, bbox: b, score: 0.9 },
            Object { class: 0, bbox: b, score: 0.8 },
            Object { class: 3, bbox: b, score: 0.7 },
        ]);
        assert_eq!(kept.iter().map(|o| o.class).collect::<Vec<_>>(), [0, 3]);
    }
}
