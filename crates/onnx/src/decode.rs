//! Reading objects out of detector outputs: the YOLO and NanoDet conventions, shared by
//! the shipped NanoDet and by the models users bring. Plain arithmetic on arrays, so each
//! convention is tested here on outputs built by hand. Boxes come out in input pixels.

use anonymize::BBox;
use tract_onnx::prelude::tract_ndarray::ArrayD;

use crate::{InputSize, Object};

/// How far past 0–1 a score may stray (float rounding in the exported sigmoid) before
/// the model counts as one that outputs logits.
const SCORE_SLACK: f32 = 1e-3;

/// Which YOLO export an output comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum YoloLayout {
    /// YOLOv5/v7 `[1, N, 5 + classes]`: cx, cy, w, h, objectness, class scores.
    V5,
    /// YOLOv8/v11 `[1, 4 + classes, N]`: cx, cy, w, h, class scores; no objectness.
    V8,
}

fn yolo_layout(shape: &[usize], classes: usize) -> Result<YoloLayout, String> {
    if let [1, fields, _] = shape
        && *fields == 4 + classes
    {
        // `[1, 4 + n, 5 + n]` would also read as v5; no real model has that few boxes.
        return Ok(YoloLayout::V8);
    }
    if let [1, _, fields] = shape
        && *fields == 5 + classes
    {
        return Ok(YoloLayout::V5);
    }
    let hint = match shape {
        [1, a, b] if a < b && *a > 4 => format!("; it reads as YOLOv8/v11 with {} classes", a - 4),
        [1, a, b] if a > b && *b > 5 => format!("; it reads as YOLOv5/v7 with {} classes", b - 5),
        _ => String::new(),
    };
    Err(format!(
        "model output shape {shape:?} does not match YOLO with {classes} classes; expected [1, {}, *] (YOLOv8/v11) \
         or [1, *, {}] (YOLOv5/v7){hint}",
        4 + classes,
        5 + classes
    ))
}

/// Objects scoring above `floor` in a YOLO output (the first one), best class per box.
pub(crate) fn yolo(outputs: &[ArrayD<f32>], classes: usize, floor: f32) -> Result<Vec<Object>, String> {
    let output = outputs.first().ok_or("the model has no output")?;
    let layout = yolo_layout(output.shape(), classes)?;
    let (boxes, first_class, box_step, field_step) = match layout {
        YoloLayout::V8 => (output.shape()[2], 4, 1, output.shape()[2]),
        YoloLayout::V5 => (output.shape()[1], 5, 5 + classes, 1),
    };
    let output = output.as_standard_layout();
    let data = output.as_slice().expect("a standard-layout array is one slice");
    let at = |i: usize, field: usize| data[i * box_step + field * field_step];
    let mut found = Vec::new();
    for i in 0..boxes {
        let (class, best) = best_class((0..classes).map(|c| at(i, first_class + c)));
        let score = match layout {
            YoloLayout::V8 => best,
            YoloLayout::V5 => at(i, 4) * best,
        };
        check_score(score)?;
        if score <= floor {
            continue;
        }
        let (cx, cy, half_w, half_h) = (at(i, 0), at(i, 1), at(i, 2) / 2.0, at(i, 3) / 2.0);
        let bbox = BBox { x1: cx - half_w, y1: cy - half_h, x2: cx + half_w, y2: cy + half_h };
        found.push(Object { class, bbox, score });
    }
    Ok(found)
}

/// NanoDet's head: per cell of each stride's grid, class scores (after the sigmoid) and
/// for each box side a distribution over `bins` distances, in strides.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NanoDetHead<'a> {
    pub input: InputSize,
    pub strides: &'a [u32],
    /// `reg_max + 1` in NanoDet's configs: 11 for NanoDet-g, 8 for NanoDet-m and -Plus.
    pub bins: usize,
    /// Where a cell's prior sits, in cells: 0.5 (its centre) for NanoDet-m/g, 0 (its top
    /// left corner) for NanoDet-Plus.
    pub prior: f32,
}

/// Objects scoring above `floor` in NanoDet outputs, which come either as one
/// `[1, cells, classes + 4 × bins]` tensor over all strides in order (NanoDet-Plus'
/// export) or per stride as a `[1, cells, classes]` score and a `[1, cells, 4 × bins]`
/// distance tensor, in any order (matched by shape: converted graphs shuffle them).
pub(crate) fn nanodet(
    outputs: &[ArrayD<f32>],
    classes: usize,
    head: NanoDetHead<'_>,
    floor: f32,
) -> Result<Vec<Object>, String> {
    let bins = head.bins;
    // Grids round up: a 416 input at stride 64 has 7×7 cells.
    let grids: Vec<(usize, usize)> = head
        .strides
        .iter()
        .map(|&s| (head.input.width.div_ceil(s) as usize, head.input.height.div_ceil(s) as usize))
        .collect();
    let total: usize = grids.iter().map(|(w, h)| w * h).sum();
    let width = classes + 4 * bins;
    let mut found = Vec::new();
    if let Some(output) = outputs.iter().find(|o| o.shape() == [1, total, width]) {
        let output = output.as_standard_layout();
        let data = output.as_slice().expect("a standard-layout array is one slice");
        let mut first = 0;
        for (&stride, &(grid_w, grid_h)) in head.strides.iter().zip(&grids) {
            for cell in 0..grid_w * grid_h {
                let row = &data[(first + cell) * width..(first + cell + 1) * width];
                let at = ((cell % grid_w) as f32 + head.prior, (cell / grid_w) as f32 + head.prior);
                found.extend(nanodet_cell(&row[..classes], &row[classes..], bins, at, stride, floor)?);
            }
            first += grid_w * grid_h;
        }
        return Ok(found);
    }
    for (&stride, &(grid_w, grid_h)) in head.strides.iter().zip(&grids) {
        let cells = grid_w * grid_h;
        // With exactly 4 × bins classes both shapes are one: they are taken in output order.
        let scores = outputs.iter().position(|o| o.shape() == [1, cells, classes]);
        let dists =
            outputs.iter().enumerate().position(|(i, o)| Some(i) != scores && o.shape() == [1, cells, 4 * bins]);
        let (Some(scores), Some(dists)) = (scores, dists) else {
            let shapes: Vec<&[usize]> = outputs.iter().map(|o| o.shape()).collect();
            // A joined output of another width, or a per-stride one that is not the
            // distances, most likely holds another number of classes.
            let joined = shapes.iter().find(|s| matches!(s, [1, c, w] if *c == total && *w > 4 * bins));
            let split = shapes.iter().find(|s| matches!(s, [1, c, w] if *c == cells && *w != 4 * bins));
            let hint = match (joined, split) {
                (Some([_, _, w]), _) => format!("; its [1, {total}, {w}] output reads as {} classes", w - 4 * bins),
                (_, Some([_, _, w])) => format!("; its [1, {cells}, {w}] output reads as {w} classes"),
                _ => String::new(),
            };
            return Err(format!(
                "model outputs {shapes:?} do not match NanoDet with {classes} classes and {bins} bins (reg_max {}) at \
                 strides {:?} for a {}x{} input; expected one [1, {total}, {width}] output, or per stride a [1, \
                 cells, {classes}] score and a [1, cells, {}] distance output ({cells} cells at stride {stride}){hint}",
                bins - 1,
                head.strides,
                head.input.width,
                head.input.height,
                4 * bins,
            ));
        };
        let (scores, dists) = (outputs[scores].as_standard_layout(), outputs[dists].as_standard_layout());
        let (scores, dists) = (scores.as_slice().expect("one slice"), dists.as_slice().expect("one slice"));
        for cell in 0..cells {
            let at = ((cell % grid_w) as f32 + head.prior, (cell / grid_w) as f32 + head.prior);
            let (s, d) = (&scores[cell * classes..][..classes], &dists[cell * 4 * bins..][..4 * bins]);
            found.extend(nanodet_cell(s, d, bins, at, stride, floor)?);
        }
    }
    Ok(found)
}

/// One NanoDet cell: its best class, and the box around its prior `at` (in cells).
fn nanodet_cell(
    scores: &[f32],
    dists: &[f32],
    bins: usize,
    at: (f32, f32),
    stride: u32,
    floor: f32,
) -> Result<Option<Object>, String> {
    let (class, score) = best_class(scores.iter().copied());
    check_score(score)?;
    if score <= floor {
        return Ok(None);
    }
    let s = stride as f32;
    let (cx, cy) = (at.0 * s, at.1 * s);
    let d: [f32; 4] = std::array::from_fn(|side| expected_bin(&dists[side * bins..(side + 1) * bins]) * s);
    Ok(Some(Object { class, bbox: BBox { x1: cx - d[0], y1: cy - d[1], x2: cx + d[2], y2: cy + d[3] }, score }))
}

/// The index and score of the best class.
fn best_class(scores: impl Iterator<Item = f32>) -> (usize, f32) {
    scores.enumerate().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap_or((0, f32::NEG_INFINITY))
}

/// Thresholds are probabilities: a model that outputs logits would pass or fail them by
/// accident, so it is refused.
fn check_score(score: f32) -> Result<(), String> {
    if (-SCORE_SLACK..=1.0 + SCORE_SLACK).contains(&score) || score == f32::NEG_INFINITY {
        Ok(())
    } else {
        Err(format!("a class score is {score}, not a probability (0 to 1); export the model with its final sigmoid"))
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
pub(crate) fn class_nms(mut objects: Vec<Object>, iou: f32) -> Vec<Object> {
    objects.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Object> = Vec::new();
    for o in objects {
        if kept.iter().all(|k| k.class != o.class || k.bbox.iou(&o.bbox) <= iou) {
            kept.push(o);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::prelude::tract_ndarray::{Array3, IxDyn};

    fn array(shape: [usize; 3], data: Vec<f32>) -> ArrayD<f32> {
        Array3::from_shape_vec(shape, data).unwrap().into_dyn()
    }

    /// A YOLOv8 output `[1, 4 + classes, boxes]` from rows of (cx, cy, w, h, scores…).
    fn v8(classes: usize, boxes: &[&[f32]]) -> ArrayD<f32> {
        let mut data = vec![0.0; (4 + classes) * boxes.len()];
        for (i, b) in boxes.iter().enumerate() {
            for (field, &v) in b.iter().enumerate() {
                data[field * boxes.len() + i] = v;
            }
        }
        array([1, 4 + classes, boxes.len()], data)
    }

    #[test]
    fn yolov8_boxes_are_centre_and_size_with_the_best_class() {
        let out = v8(3, &[&[100.0, 50.0, 40.0, 20.0, 0.1, 0.9, 0.2], &[10.0, 10.0, 4.0, 4.0, 0.2, 0.1, 0.3]]);
        let found = yolo(&[out], 3, 0.3).unwrap();
        assert_eq!(found, [Object { class: 1, bbox: BBox::from([80.0, 40.0, 120.0, 60.0]), score: 0.9 }]);
    }

    #[test]
    fn yolov5_scores_are_objectness_times_class() {
        #[rustfmt::skip]
        let out = array([1, 3, 7], vec![
            // cx,  cy,   w,    h,   obj, class scores
            320.0, 240.0, 64.0, 32.0, 0.8, 0.5, 0.75,
            10.0, 10.0, 4.0, 4.0, 0.3, 0.9, 0.1,   // 0.27: under the floor
            50.0, 60.0, 10.0, 20.0, 0.9, 1.0, 0.0,
        ]);
        let found = yolo(&[out], 2, 0.5).unwrap();
        assert_eq!(
            found,
            [
                Object { class: 1, bbox: BBox::from([288.0, 224.0, 352.0, 256.0]), score: 0.6 },
                Object { class: 0, bbox: BBox::from([45.0, 50.0, 55.0, 70.0]), score: 0.9 },
            ]
        );
    }

    #[test]
    fn a_yolo_shape_that_fits_neither_layout_says_what_would() {
        let out = ArrayD::zeros(IxDyn(&[1, 84, 8400]));
        let err = yolo(&[out], 20, 0.3).unwrap_err();
        assert!(err.contains("[1, 84, 8400] does not match YOLO with 20 classes"), "{err}");
        assert!(err.contains("expected [1, 24, *] (YOLOv8/v11) or [1, *, 25] (YOLOv5/v7)"), "{err}");
        assert!(err.contains("reads as YOLOv8/v11 with 80 classes"), "{err}");
        let err = yolo(&[ArrayD::zeros(IxDyn(&[1, 25200, 85]))], 2, 0.3).unwrap_err();
        assert!(err.contains("reads as YOLOv5/v7 with 80 classes"), "{err}");
    }

    #[test]
    fn logits_are_refused() {
        let out = v8(1, &[&[10.0, 10.0, 4.0, 4.0, 3.2]]);
        let err = yolo(&[out], 1, 0.3).unwrap_err();
        assert!(err.contains("not a probability") && err.contains("sigmoid"), "{err}");
    }

    /// Distance logits that put every side of a box `d` bins from its prior.
    fn sides_at(d: usize, bins: usize) -> Vec<f32> {
        (0..4 * bins).map(|i| if i % bins == d { 30.0 } else { -30.0 }).collect()
    }

    #[test]
    fn nanodet_split_and_joined_outputs_decode_alike() {
        // A 64×32 input at strides 16 and 32: grids 4×2 and 2×1, 10 cells.
        let (classes, bins) = (2, 8);
        let head = NanoDetHead { input: InputSize { width: 64, height: 32 }, strides: &[16, 32], bins, prior: 0.5 };
        let mut scores = vec![0.0f32; 10 * classes];
        let mut dists = Vec::new();
        for cell in 0..10 {
            dists.extend(sides_at(cell % 3, bins));
        }
        // Stride 16, cell (1, 1): prior at (24, 24), 2 bins = 32 px each side.
        scores[5 * classes + 1] = 0.8;
        // Stride 32, cell (1, 0): prior at (48, 16), 0 bins: a point.
        scores[9 * classes] = 0.6;
        let joined: Vec<f32> = (0..10)
            .flat_map(|c| [&scores[c * classes..][..classes], &dists[c * 4 * bins..][..4 * bins]].concat())
            .collect();
        let joined = nanodet(&[array([1, 10, classes + 4 * bins], joined)], classes, head, 0.5).unwrap();
        let (s16, s32) = scores.split_at(8 * classes);
        let (d16, d32) = dists.split_at(8 * 4 * bins);
        let split = [
            array([1, 2, 4 * bins], d32.to_vec()),
            array([1, 8, classes], s16.to_vec()),
            array([1, 2, classes], s32.to_vec()),
            array([1, 8, 4 * bins], d16.to_vec()),
        ];
        let split = nanodet(&split, classes, head, 0.5).unwrap();
        let expected = [
            Object { class: 1, bbox: BBox::from([-8.0, -8.0, 56.0, 56.0]), score: 0.8 },
            Object { class: 0, bbox: BBox::from([48.0, 16.0, 48.0, 16.0]), score: 0.6 },
        ];
        for found in [joined, split] {
            assert_eq!(found.len(), 2, "{found:?}");
            for (f, e) in found.iter().zip(&expected) {
                let close =
                    <[f32; 4]>::from(f.bbox).iter().zip(<[f32; 4]>::from(e.bbox)).all(|(a, b)| (a - b).abs() < 1e-3);
                assert!(close && f.class == e.class && f.score == e.score, "{f:?} vs {e:?}");
            }
        }
    }

    #[test]
    fn nanodet_plus_priors_sit_at_cell_corners() {
        let head = NanoDetHead { input: InputSize { width: 32, height: 32 }, strides: &[32], bins: 8, prior: 0.0 };
        let out = array([1, 1, 1 + 4 * 8], [vec![0.9], sides_at(1, 8)].concat());
        let found = nanodet(&[out], 1, head, 0.5).unwrap();
        let b = <[f32; 4]>::from(found[0].bbox);
        assert!(b.iter().zip([-32.0, -32.0, 32.0, 32.0]).all(|(a, e)| (a - e).abs() < 1e-3), "{b:?}");
    }

    #[test]
    fn nanodet_outputs_of_another_class_count_are_named() {
        let head =
            NanoDetHead { input: InputSize { width: 416, height: 416 }, strides: &[8, 16, 32], bins: 11, prior: 0.5 };
        let out = ArrayD::zeros(IxDyn(&[1, 3549, 80 + 44]));
        let err = nanodet(&[out], 20, head, 0.3).unwrap_err();
        assert!(
            err.contains("[[1, 3549, 124]] do not match NanoDet with 20 classes and 11 bins (reg_max 10)"),
            "{err}"
        );
        assert!(err.contains("expected one [1, 3549, 64] output"), "{err}");
        assert!(err.contains("its [1, 3549, 124] output reads as 80 classes"), "{err}");
    }

    #[test]
    fn the_expected_bin_of_a_peak_is_that_bin() {
        let mut logits = [-20.0f32; 11];
        logits[3] = 20.0;
        assert!((expected_bin(&logits) - 3.0).abs() < 1e-3);
    }

    #[test]
    fn nms_keeps_overlapping_objects_of_different_classes() {
        let b = BBox { x1: 0.0, y1: 0.0, x2: 10.0, y2: 10.0 };
        let kept = class_nms(
            vec![
                Object { class: 0, bbox: b, score: 0.9 },
                Object { class: 0, bbox: b, score: 0.8 },
                Object { class: 3, bbox: b, score: 0.7 },
            ],
            0.6,
        );
        assert_eq!(kept.iter().map(|o| o.class).collect::<Vec<_>>(), [0, 3]);
    }
}
