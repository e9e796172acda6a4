//! Pre-labels from a model the user brings: any ONNX detector that follows the YOLO or
//! NanoDet output convention, with its input size, channel order, normalisation and
//! class names given by config. The shipped NanoDet runs through the same
//! [`Convention`], so both read outputs one way.

use std::path::Path;

use anonymize::{DetectError, Rgb};

use crate::decode::{self, NanoDetHead};
use crate::{Backend, InputSize, Object, OnnxError, OnnxModel, Prepared, letterboxed};

/// Class-aware NMS: NanoDet's reference value, between YOLOv5's 0.45 and YOLOv8's 0.7.
const NMS_IOU: f32 = 0.6;

/// The order of the three input planes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channels {
    Rgb,
    Bgr,
}

/// How a model's outputs read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoding {
    /// Boxes as centre and size in input pixels, after the sigmoid: YOLOv8/v11
    /// `[1, 4 + classes, N]` (class scores) or YOLOv5/v7 `[1, N, 5 + classes]`
    /// (objectness, then class scores), told apart by the shape.
    Yolo,
    /// NanoDet-m/g: per cell, class scores and 4 distance distributions of
    /// `reg_max + 1` bins, priors at cell centres.
    NanoDet { strides: Vec<u32>, reg_max: usize },
    /// NanoDet-Plus: the same, with priors at cell corners.
    NanoDetPlus { strides: Vec<u32>, reg_max: usize },
}

/// What a detector expects: its input and how its output reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Convention {
    /// The image is letterboxed (aspect kept, padded right and bottom) into exactly this.
    pub input: InputSize,
    pub channels: Channels,
    /// Per input plane, in the model's channel order and 0–255 pixel units: the model
    /// sees `(pixel − mean) / std`.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub decoding: Decoding,
}

impl Convention {
    /// Ultralytics exports (`yolo export format=onnx`): 640×640 RGB scaled to 0–1.
    pub fn yolo() -> Convention {
        Convention {
            input: InputSize { width: 640, height: 640 },
            channels: Channels::Rgb,
            mean: [0.0; 3],
            std: [255.0; 3],
            decoding: Decoding::Yolo,
        }
    }

    /// NanoDet-g 416 as shipped: BGR with ImageNet's mean and std, strides 8/16/32,
    /// reg_max 10. NanoDet-m uses reg_max 7.
    pub fn nanodet() -> Convention {
        Convention {
            input: InputSize { width: 416, height: 416 },
            channels: Channels::Bgr,
            mean: [103.53, 116.28, 123.675],
            std: [57.375, 57.12, 58.395],
            decoding: Decoding::NanoDet { strides: vec![8, 16, 32], reg_max: 10 },
        }
    }

    /// NanoDet-Plus' export (`tools/export_onnx.py`): as [`Convention::nanodet`], with
    /// strides 8/16/32/64 and reg_max 7.
    pub fn nanodet_plus() -> Convention {
        Convention { decoding: Decoding::NanoDetPlus { strides: vec![8, 16, 32, 64], reg_max: 7 }, ..Self::nanodet() }
    }

    fn pixel(&self, [r, g, b]: [u8; 3]) -> [f32; 3] {
        let planes = match self.channels {
            Channels::Rgb => [r, g, b],
            Channels::Bgr => [b, g, r],
        };
        std::array::from_fn(|c| (f32::from(planes[c]) - self.mean[c]) / self.std[c])
    }

    /// Every object of `classes` scoring above `floor` in `image`, in its pixels, after
    /// class-aware NMS.
    pub(crate) fn detect(
        &self,
        model: &OnnxModel,
        classes: usize,
        image: Rgb<'_>,
        floor: f32,
    ) -> Result<Vec<Object>, OnnxError> {
        let Prepared { letterbox, chw, .. } = letterboxed(image, self.input, f32::INFINITY, |px| self.pixel(px));
        let outputs = model.run(self.input.width, self.input.height, chw)?;
        self.decode(&outputs, classes, letterbox, floor)
            .map_err(|message| OnnxError::Layout { file: model.file().to_owned(), message })
    }

    /// Reads `outputs` and maps what scores above `floor` back through `letterbox`.
    fn decode(
        &self,
        outputs: &crate::Outputs,
        classes: usize,
        letterbox: anonymize::Letterbox,
        floor: f32,
    ) -> Result<Vec<Object>, String> {
        let head =
            |strides, reg_max: &usize, prior| NanoDetHead { input: self.input, strides, bins: reg_max + 1, prior };
        let found = match &self.decoding {
            Decoding::Yolo => decode::yolo(outputs, classes, floor)?,
            Decoding::NanoDet { strides, reg_max } => {
                decode::nanodet(outputs, classes, head(strides, reg_max, 0.5), floor)?
            }
            Decoding::NanoDetPlus { strides, reg_max } => {
                decode::nanodet(outputs, classes, head(strides, reg_max, 0.0), floor)?
            }
        };
        let mapped = found
            .into_iter()
            .filter_map(|o| {
                // Boxes are cut to the image; one wholly in the padding is no object.
                let bbox = o.bbox.clamped(letterbox.width, letterbox.height);
                (bbox.area() > 0.0).then(|| Object { bbox: letterbox.unmap(bbox), ..o })
            })
            .collect();
        Ok(decode::class_nms(mapped, NMS_IOU))
    }
}

/// A pre-label detector from a user's ONNX file, read by a configured [`Convention`].
#[derive(Debug)]
pub struct ConfiguredDetector {
    model: OnnxModel,
    convention: Convention,
    classes: &'static [&'static str],
    threshold: f32,
}

impl ConfiguredDetector {
    /// Loads the model at `path` (checked against `sha256` when given) for `backend`, and
    /// runs it once on a blank image so a model whose outputs do not fit `convention` and
    /// `classes` fails here, at start-up, not on the first frame. Objects scoring at or
    /// under `threshold` are not reported.
    pub fn load(
        path: &Path,
        sha256: Option<&str>,
        convention: Convention,
        classes: Vec<String>,
        threshold: f32,
        backend: &Backend,
    ) -> Result<Self, OnnxError> {
        let model = OnnxModel::load_path(path, sha256, backend)?;
        if classes.is_empty() {
            return Err(OnnxError::Layout { file: model.file().to_owned(), message: "no class names given".into() });
        }
        let InputSize { width, height } = convention.input;
        let blank = vec![0u8; (width * height * 3) as usize];
        convention.detect(&model, classes.len(), Rgb { width, height, data: &blank }, 1.0)?;
        // `ObjectDetector` lends `&str`s. A model is loaded once per process, so its few
        // names may live as long as the process.
        let classes = classes.into_iter().map(|c| &*Box::leak(c.into_boxed_str())).collect::<Vec<&'static str>>();
        Ok(ConfiguredDetector { model, convention, classes: Box::leak(classes.into_boxed_slice()), threshold })
    }
}

impl prelabel::ObjectDetector for ConfiguredDetector {
    fn model_name(&self) -> &str {
        self.model.file()
    }
    fn model_sha256(&self) -> &str {
        self.model.sha256()
    }
    fn class_names(&self) -> &[&str] {
        self.classes
    }
    fn find(&self, image: Rgb<'_>) -> Result<Vec<prelabel::Found>, DetectError> {
        let objects = self
            .convention
            .detect(&self.model, self.classes.len(), image, self.threshold)
            .map_err(|e| DetectError { model: self.model.file().to_owned(), message: e.to_string() })?;
        Ok(objects.into_iter().map(|o| prelabel::Found { class: o.class, bbox: o.bbox, score: o.score }).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anonymize::BBox;
    use tract_onnx::prelude::tract_ndarray::Array3;

    #[test]
    fn presets_normalise_pixels_as_their_models_were_trained() {
        let [r, g, b] = Convention::yolo().pixel([255, 51, 0]);
        assert_eq!([r, g, b], [1.0, 0.2, 0.0]);
        let bgr = Convention::nanodet().pixel([123, 116, 104]);
        assert!((bgr[0] - 0.47f32 / 57.375).abs() < 1e-6 && bgr[1].abs() < 0.02 && bgr[2].abs() < 0.02, "{bgr:?}");
    }

    /// A 1280×720 image in a 640×640 YOLO input: scale 0.5, the image in the top 360 rows.
    #[test]
    fn yolo_boxes_map_back_through_the_letterbox() {
        let letterbox = anonymize::Letterbox { scale: 0.5, width: 640, height: 360 };
        #[rustfmt::skip]
        let boxes: [[f32; 6]; 4] = [
            // cx, cy, w, h, class 0, class 1
            [320.0, 180.0, 100.0, 50.0, 0.9, 0.1],
            [330.0, 185.0, 100.0, 50.0, 0.8, 0.0],  // the same object again: suppressed
            [630.0, 350.0, 40.0, 40.0, 0.0, 0.7],   // crosses the bottom right edge: cut
            [320.0, 500.0, 40.0, 40.0, 0.95, 0.0],  // wholly in the padding: dropped
        ];
        let mut v8 = vec![0.0f32; 6 * 4];
        for (i, b) in boxes.iter().enumerate() {
            for (field, v) in b.iter().enumerate() {
                v8[field * 4 + i] = *v;
            }
        }
        let v5: Vec<f32> = boxes.iter().flat_map(|b| [&b[..4], &[1.0], &b[4..]].concat()).collect();
        let outputs = [Array3::from_shape_vec([1, 6, 4], v8).unwrap(), Array3::from_shape_vec([1, 4, 7], v5).unwrap()];
        for output in outputs {
            let found = Convention::yolo().decode(&vec![output.into_dyn()], 2, letterbox, 0.3).unwrap();
            assert_eq!(
                found,
                [
                    Object { class: 0, bbox: BBox::from([540.0, 310.0, 740.0, 410.0]), score: 0.9 },
                    Object { class: 1, bbox: BBox::from([1220.0, 660.0, 1280.0, 720.0]), score: 0.7 },
                ]
            );
        }
    }
}
