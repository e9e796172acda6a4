//! The licence-plate model: a RetinaFace-style detector (mobilenet-0.25) with priors at
//! strides 8, 16 and 32, BGR minus the mean in, boxes and four corners out.

use anonymize::{BBox, Class, Detection, Rgb, nms};

use crate::detector::{Decode, OnnxDetector};
use crate::{Fit, OnnxError, OnnxModel, Prepared, output, prepare};

pub const FILE: &str = "plate_det.onnx";
const MEAN_BGR: [f32; 3] = [104.0, 117.0, 123.0];
const STEPS: [(u32, [f32; 2]); 3] = [(8, [24.0, 48.0]), (16, [96.0, 192.0]), (32, [384.0, 768.0])];
const VARIANCE: [f32; 2] = [0.1, 0.2];
/// The reference decoder's NMS.
const NMS_IOU: f32 = 0.4;

/// Finds licence plates.
pub type PlateDetector = OnnxDetector<Plates>;

/// The plate model's decoding.
#[derive(Debug)]
pub struct Plates;

impl Decode for Plates {
    const FILE: &'static str = FILE;
    const CLASS: Class = Class::LicensePlate;

    fn decode(model: &OnnxModel, fit: Fit, threshold: f32, image: Rgb<'_>) -> Result<Vec<Detection>, OnnxError> {
        // BGR minus the mean.
        let Prepared { size, letterbox: lb, chw } = prepare(image, fit, |[r, g, b]| {
            [f32::from(b) - MEAN_BGR[0], f32::from(g) - MEAN_BGR[1], f32::from(r) - MEAN_BGR[2]]
        });
        let outputs = model.run(size.width, size.height, chw)?;
        let (loc, conf) = (output(&outputs, FILE, 0)?, output(&outputs, FILE, 1)?);
        let (w, h) = (size.width as f32, size.height as f32);
        let priors = priors(size.width, size.height);
        if priors.len() != loc.shape()[1] {
            return Err(OnnxError::Tract {
                file: FILE.into(),
                message: format!("{} priors for {} outputs", priors.len(), loc.shape()[1]),
            });
        }
        let mut found = Vec::new();
        for (n, prior) in priors.iter().enumerate() {
            let score = conf[[0, n, 1]];
            if score <= threshold {
                continue;
            }
            let cx = prior[0] + loc[[0, n, 0]] * VARIANCE[0] * prior[2];
            let cy = prior[1] + loc[[0, n, 1]] * VARIANCE[0] * prior[3];
            let bw = prior[2] * (loc[[0, n, 2]] * VARIANCE[1]).exp();
            let bh = prior[3] * (loc[[0, n, 3]] * VARIANCE[1]).exp();
            let bbox = BBox {
                x1: (cx - bw / 2.0) * w,
                y1: (cy - bh / 2.0) * h,
                x2: (cx + bw / 2.0) * w,
                y2: (cy + bh / 2.0) * h,
            }
            .clamped(lb.width, lb.height);
            found.push(Detection { class: Class::LicensePlate, bbox: lb.unmap(bbox), score });
        }
        Ok(nms(found, NMS_IOU))
    }
}

/// Priors as (cx, cy, w, h), relative to the input, in the model's output order.
fn priors(width: u32, height: u32) -> Vec<[f32; 4]> {
    let (w, h) = (width as f32, height as f32);
    let mut out = Vec::new();
    for (step, sizes) in STEPS {
        for i in 0..height.div_ceil(step) {
            for j in 0..width.div_ceil(step) {
                for m in sizes {
                    let s = step as f32;
                    out.push([(j as f32 + 0.5) * s / w, (i as f32 + 0.5) * s / h, m / w, m / h]);
                }
            }
        }
    }
    out
}
