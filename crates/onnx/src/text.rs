//! PP-OCRv4's text detector (a DB-net): a per-pixel text probability map, cut into
//! connected regions. Inside a vehicle, the text is its plate: this finds the one- and
//! two-line plates (motorcycles, older European and Asian formats) that the plate model,
//! trained on Chinese plates, misses.

use anonymize::{BBox, Class, Detection, Rgb};

use crate::detector::{Decode, OnnxDetector};
use crate::{Fit, OnnxError, OnnxModel, Prepared, output, prepare};

pub const FILE: &str = "ppocr_det.onnx";
/// A pixel is text above this probability (PaddleOCR's `thresh`).
const PIXEL_THRESHOLD: f32 = 0.3;
/// DB-net regions are the shrunk core of the text; they are grown back by
/// `area × ratio / perimeter` (PaddleOCR's `unclip_ratio`).
const UNCLIP_RATIO: f32 = 1.6;
/// Regions thinner than this, in map pixels, are noise (PaddleOCR's `min_size`).
const MIN_SIDE: u32 = 3;

/// Finds lines of text, each reported as a licence-plate detection. Its threshold is the
/// mean probability a region needs (PaddleOCR's `box_thresh`, 0.5 there).
pub type TextDetector = OnnxDetector<Text>;

/// PP-OCR's text detector's decoding.
#[derive(Debug)]
pub struct Text;

impl Decode for Text {
    const FILE: &'static str = FILE;
    const CLASS: Class = Class::LicensePlate;

    fn decode(model: &OnnxModel, fit: Fit, threshold: f32, image: Rgb<'_>) -> Result<Vec<Detection>, OnnxError> {
        // BGR, scaled to −1…1.
        let Prepared { size, letterbox: lb, chw } =
            prepare(image, fit, |[r, g, b]| [b, g, r].map(|v| f32::from(v) / 127.5 - 1.0));
        let outputs = model.run(size.width, size.height, chw)?;
        let map = output(&outputs, FILE, 0)?;
        let (h, w) = (map.shape()[2], map.shape()[3]);
        let prob =
            map.as_slice().ok_or_else(|| OnnxError::Tract { file: FILE.into(), message: "strided output".into() })?;
        let found = regions(prob, w, h)
            .into_iter()
            .filter(|r| r.mean() > threshold && r.width().min(r.height()) >= MIN_SIDE)
            .map(|r| {
                let (bw, bh) = (r.width() as f32, r.height() as f32);
                let grow = bw * bh * UNCLIP_RATIO / (2.0 * (bw + bh));
                let bbox = BBox {
                    x1: r.x1 as f32 - grow,
                    y1: r.y1 as f32 - grow,
                    x2: r.x2 as f32 + 1.0 + grow,
                    y2: r.y2 as f32 + 1.0 + grow,
                }
                .clamped(lb.width, lb.height);
                Detection { class: Class::LicensePlate, bbox: lb.unmap(bbox), score: r.mean() }
            })
            .collect();
        Ok(found)
    }
}

/// A connected region of text pixels: its bounds (inclusive) and probability mass.
#[derive(Debug, Clone, Copy)]
struct Region {
    x1: u32,
    y1: u32,
    x2: u32,
    y2: u32,
    sum: f32,
    pixels: u32,
}

impl Region {
    fn width(&self) -> u32 {
        self.x2 - self.x1 + 1
    }
    fn height(&self) -> u32 {
        self.y2 - self.y1 + 1
    }
    fn mean(&self) -> f32 {
        self.sum / self.pixels as f32
    }
}

/// 8-connected regions of pixels above [`PIXEL_THRESHOLD`], after a 2×2 dilation that
/// joins characters split by a pixel (PaddleOCR's `use_dilation`).
fn regions(prob: &[f32], w: usize, h: usize) -> Vec<Region> {
    let text = |x: usize, y: usize| prob[y * w + x] > PIXEL_THRESHOLD;
    // Dilated with a 2×2 kernel anchored at the top left, as OpenCV's `dilate` does.
    let mut on = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            on[y * w + x] = text(x, y)
                || (x > 0 && text(x - 1, y))
                || (y > 0 && text(x, y - 1))
                || (x > 0 && y > 0 && text(x - 1, y - 1));
        }
    }
    let mut seen = vec![false; w * h];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for start in 0..w * h {
        if !on[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (sx, sy) = ((start % w) as u32, (start / w) as u32);
        let mut r = Region { x1: sx, y1: sy, x2: sx, y2: sy, sum: 0.0, pixels: 0 };
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            r.x1 = r.x1.min(x as u32);
            r.x2 = r.x2.max(x as u32);
            r.y1 = r.y1.min(y as u32);
            r.y2 = r.y2.max(y as u32);
            r.sum += prob[i];
            r.pixels += 1;
            for (dx, dy) in [(-1i32, -1i32), (0, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (0, 1), (1, 1)] {
                let (nx, ny) = (x as i32 + dx, y as i32 + dy);
                if nx < 0 || ny < 0 || nx >= w as i32 || ny >= h as i32 {
                    continue;
                }
                let j = ny as usize * w + nx as usize;
                if on[j] && !seen[j] {
                    seen[j] = true;
                    stack.push(j);
                }
            }
        }
        out.push(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_connected_text_pixels() {
        #[rustfmt::skip]
        let prob = [
            0.9, 0.9, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.9, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0, 0.8,
        ];
        let found = regions(&prob, 6, 4);
        assert_eq!(found.len(), 2, "{found:?}");
        // Dilation grows each region right and down by one pixel.
        assert_eq!((found[0].x1, found[0].y1, found[0].x2, found[0].y2), (0, 0, 2, 2));
        assert_eq!((found[1].x1, found[1].y1, found[1].x2, found[1].y2), (5, 3, 5, 3));
    }
}
