//! Redaction filters over regions of interest only: a blur strong enough that nothing
//! of a face survives, a mosaic, or a solid fill, each inside a box or its inscribed
//! ellipse. Pixels outside the masks are never touched.

use serde::{Deserialize, Serialize};

use crate::BBox;

/// How a region is redacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Three box-blur passes (close to a Gaussian) with a radius of a sixth of the
    /// region's longer side: the whole region smears into a few soft tones.
    Blur,
    /// A mosaic of at most 8 blocks along the longer side.
    Pixelate,
    /// One colour.
    Solid([u8; 3]),
}

/// Which pixels of a box are redacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    Ellipse,
    Box,
}

/// Redacts every box (already grown and in image coordinates) in packed RGB.
pub fn redact(rgb: &mut [u8], width: u32, height: u32, boxes: &[BBox], mode: Mode, shape: Shape) {
    for b in boxes {
        let b = b.clamped(width, height);
        let (x0, y0) = (b.x1.floor() as usize, b.y1.floor() as usize);
        let (x1, y1) = (b.x2.ceil() as usize, b.y2.ceil() as usize);
        if x1 <= x0 || y1 <= y0 {
            continue;
        }
        let roi = Roi { x0, y0, w: x1 - x0, h: y1 - y0, stride: width as usize };
        let mut patch = roi.copy_out(rgb);
        match mode {
            Mode::Solid(fill) => patch.chunks_exact_mut(3).for_each(|p| p.copy_from_slice(&fill)),
            Mode::Pixelate => pixelate(&mut patch, roi.w, roi.h),
            Mode::Blur => {
                let radius = (roi.w.max(roi.h) / 6).max(2);
                for _ in 0..3 {
                    box_blur_rows(&mut patch, roi.w, roi.h, radius);
                    box_blur_cols(&mut patch, roi.w, roi.h, radius);
                }
            }
        }
        roi.copy_in(rgb, &patch, shape);
    }
}

/// A rectangle of the image, and its row stride in pixels.
struct Roi {
    x0: usize,
    y0: usize,
    w: usize,
    h: usize,
    stride: usize,
}

impl Roi {
    fn copy_out(&self, rgb: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.w * self.h * 3);
        for y in self.y0..self.y0 + self.h {
            let start = (y * self.stride + self.x0) * 3;
            out.extend_from_slice(&rgb[start..start + self.w * 3]);
        }
        out
    }

    /// Writes the patch back, only inside the shape.
    fn copy_in(&self, rgb: &mut [u8], patch: &[u8], shape: Shape) {
        let (a, b) = (self.w as f32 / 2.0, self.h as f32 / 2.0);
        for row in 0..self.h {
            let (from, to) = match shape {
                Shape::Box => (0, self.w),
                Shape::Ellipse => {
                    // Columns inside the ellipse on this row's centre line.
                    let dy = (row as f32 + 0.5 - b) / b;
                    let half = a * (1.0 - dy * dy).max(0.0).sqrt();
                    let from = (a - half).round().max(0.0) as usize;
                    let to = ((a + half).round() as usize).min(self.w);
                    (from, to)
                }
            };
            if to <= from {
                continue;
            }
            let dst = ((self.y0 + row) * self.stride + self.x0 + from) * 3;
            let src = (row * self.w + from) * 3;
            let len = (to - from) * 3;
            rgb[dst..dst + len].copy_from_slice(&patch[src..src + len]);
        }
    }
}

fn pixelate(patch: &mut [u8], w: usize, h: usize) {
    let block = w.max(h).div_ceil(8).max(2);
    for by in (0..h).step_by(block) {
        for bx in (0..w).step_by(block) {
            let (ey, ex) = ((by + block).min(h), (bx + block).min(w));
            let mut sum = [0u32; 3];
            for y in by..ey {
                for x in bx..ex {
                    let p = (y * w + x) * 3;
                    for c in 0..3 {
                        sum[c] += patch[p + c] as u32;
                    }
                }
            }
            let n = ((ey - by) * (ex - bx)) as u32;
            let mean = sum.map(|s| ((s + n / 2) / n) as u8);
            for y in by..ey {
                for x in bx..ex {
                    let p = (y * w + x) * 3;
                    patch[p..p + 3].copy_from_slice(&mean);
                }
            }
        }
    }
}

/// One horizontal box-blur pass with a running sum over a line padded by repeating its
/// edge pixels: O(1) per pixel, no bounds clamping in the loop, the three channels
/// side by side.
fn box_blur_rows(patch: &mut [u8], w: usize, h: usize, r: usize) {
    let n = 2 * r + 1;
    let inv = 1.0 / n as f32;
    let mut line = vec![0u8; (w + 2 * r) * 3];
    for y in 0..h {
        let row = &mut patch[y * w * 3..(y + 1) * w * 3];
        let (first, last) = ([row[0], row[1], row[2]], [row[w * 3 - 3], row[w * 3 - 2], row[w * 3 - 1]]);
        for i in 0..r {
            line[i * 3..i * 3 + 3].copy_from_slice(&first);
            line[(r + w + i) * 3..(r + w + i) * 3 + 3].copy_from_slice(&last);
        }
        line[r * 3..(r + w) * 3].copy_from_slice(row);
        let mut sum = [0u32; 3];
        for px in line[..n * 3].chunks_exact(3) {
            for c in 0..3 {
                sum[c] += u32::from(px[c]);
            }
        }
        for x in 0..w {
            for c in 0..3 {
                row[x * 3 + c] = (sum[c] as f32 * inv + 0.5) as u8;
            }
            if x + 1 < w {
                for c in 0..3 {
                    sum[c] = sum[c] + u32::from(line[(x + n) * 3 + c]) - u32::from(line[x * 3 + c]);
                }
            }
        }
    }
}

/// The vertical pass, row by row: one running sum per column and channel, so every
/// loop walks whole rows and the compiler vectorises it.
fn box_blur_cols(patch: &mut [u8], w: usize, h: usize, r: usize) {
    let stride = w * 3;
    let inv = 1.0 / (2 * r + 1) as f32;
    let src = patch.to_vec();
    let row = |y: isize| {
        let y = y.clamp(0, h as isize - 1) as usize;
        &src[y * stride..(y + 1) * stride]
    };
    let mut sums = vec![0u32; stride];
    for k in -(r as isize)..=r as isize {
        for (s, &v) in sums.iter_mut().zip(row(k)) {
            *s += u32::from(v);
        }
    }
    for y in 0..h {
        for (o, &s) in patch[y * stride..(y + 1) * stride].iter_mut().zip(&sums) {
            *o = (s as f32 * inv + 0.5) as u8;
        }
        let (add, sub) = (row((y + r + 1) as isize), row(y as isize - r as isize));
        for ((s, &a), &b) in sums.iter_mut().zip(add).zip(sub) {
            *s = *s + u32::from(a) - u32::from(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u32 = 120;
    const H: u32 = 100;

    /// A fine checkerboard: the hardest thing to blur away.
    fn checker() -> Vec<u8> {
        let mut rgb = vec![0u8; (W * H * 3) as usize];
        for y in 0..H {
            for x in 0..W {
                let v = if (x / 2 + y / 2) % 2 == 0 { 255 } else { 0 };
                let p = ((y * W + x) * 3) as usize;
                rgb[p..p + 3].copy_from_slice(&[v, v / 2, 255 - v]);
            }
        }
        rgb
    }

    const FACE: BBox = BBox { x1: 30.0, y1: 20.0, x2: 90.0, y2: 80.0 };

    fn inside_box(x: u32, y: u32) -> bool {
        (x as f32) >= FACE.x1 && (x as f32) < FACE.x2 && (y as f32) >= FACE.y1 && (y as f32) < FACE.y2
    }

    fn std_dev_inside(rgb: &[u8], x0: u32, y0: u32, x1: u32, y1: u32) -> f64 {
        let values: Vec<f64> =
            (y0..y1).flat_map(|y| (x0..x1).map(move |x| ((y * W + x) * 3) as usize)).map(|p| rgb[p] as f64).collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64).sqrt()
    }

    fn check_outside_unchanged(before: &[u8], after: &[u8]) {
        for y in 0..H {
            for x in 0..W {
                if !inside_box(x, y) {
                    let p = ((y * W + x) * 3) as usize;
                    assert_eq!(before[p..p + 3], after[p..p + 3], "pixel ({x},{y}) outside the mask changed");
                }
            }
        }
    }

    #[test]
    fn blur_destroys_detail_inside_and_leaves_the_rest() {
        for shape in [Shape::Box, Shape::Ellipse] {
            let before = checker();
            let mut after = before.clone();
            redact(&mut after, W, H, &[FACE], Mode::Blur, shape);
            check_outside_unchanged(&before, &after);
            // The centre of the region: the checkerboard's contrast is gone.
            let was = std_dev_inside(&before, 45, 35, 75, 65);
            let now = std_dev_inside(&after, 45, 35, 75, 65);
            assert!(now < was * 0.05, "{shape:?}: std dev {now:.1} of {was:.1} left");
        }
    }

    /// A box blur the slow, obvious way: the mean of the window, edges repeated.
    fn reference_pass(src: &[u8], w: usize, h: usize, r: usize, horizontal: bool) -> Vec<u8> {
        let mut out = vec![0u8; src.len()];
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    let sum: u32 = (-(r as isize)..=r as isize)
                        .map(|k| {
                            let (xx, yy) =
                                if horizontal { (x as isize + k, y as isize) } else { (x as isize, y as isize + k) };
                            let (xx, yy) = (xx.clamp(0, w as isize - 1) as usize, yy.clamp(0, h as isize - 1) as usize);
                            u32::from(src[(yy * w + xx) * 3 + c])
                        })
                        .sum();
                    out[(y * w + x) * 3 + c] = ((sum as f32) / (2 * r + 1) as f32 + 0.5) as u8;
                }
            }
        }
        out
    }

    #[test]
    fn the_fast_passes_match_the_obvious_box_blur() {
        let (w, h) = (37, 23);
        let src: Vec<u8> = (0..w * h * 3).map(|i| ((i * 7919) % 251) as u8).collect();
        for r in [1, 2, 5, 30] {
            let mut rows = src.clone();
            box_blur_rows(&mut rows, w, h, r);
            let mut cols = src.clone();
            box_blur_cols(&mut cols, w, h, r);
            let close = |a: &[u8], b: &[u8]| a.iter().zip(b).all(|(x, y)| x.abs_diff(*y) <= 1);
            assert!(close(&rows, &reference_pass(&src, w, h, r, true)), "rows, radius {r}");
            assert!(close(&cols, &reference_pass(&src, w, h, r, false)), "columns, radius {r}");
        }
    }

    #[test]
    fn ellipse_keeps_the_corners_of_the_box() {
        let before = checker();
        let mut after = before.clone();
        redact(&mut after, W, H, &[FACE], Mode::Solid([1, 2, 3]), Shape::Ellipse);
        let px = |rgb: &[u8], x: u32, y: u32| rgb[((y * W + x) * 3) as usize..((y * W + x) * 3 + 3) as usize].to_vec();
        assert_eq!(px(&after, 31, 21), px(&before, 31, 21), "corner untouched");
        assert_eq!(px(&after, 60, 50), vec![1, 2, 3], "centre filled");
        assert_eq!(px(&after, 60, 21), vec![1, 2, 3], "top of the ellipse filled");
    }

    #[test]
    fn pixelate_makes_uniform_blocks() {
        let before = checker();
        let mut after = before.clone();
        redact(&mut after, W, H, &[FACE], Mode::Pixelate, Shape::Box);
        check_outside_unchanged(&before, &after);
        // 60 px region, blocks of 8: the first block is one colour.
        let first = &after[((20 * W + 30) * 3) as usize..((20 * W + 30) * 3 + 3) as usize].to_vec();
        for y in 20..28 {
            for x in 30..38 {
                let p = ((y * W + x) * 3) as usize;
                assert_eq!(&after[p..p + 3], first.as_slice());
            }
        }
    }

    #[test]
    fn boxes_beyond_the_image_are_clamped() {
        let before = checker();
        let mut rgb = before.clone();
        // Overhangs the left, right and bottom edges: what is inside the image (from row 90
        // down, every column) is redacted, and nothing above it changes.
        redact(
            &mut rgb,
            W,
            H,
            &[BBox { x1: -50.0, y1: 90.0, x2: 500.0, y2: 300.0 }],
            Mode::Solid([1, 2, 3]),
            Shape::Box,
        );
        for y in 0..H {
            for x in 0..W {
                let p = ((y * W + x) * 3) as usize;
                let want = if y >= 90 { &[1, 2, 3][..] } else { &before[p..p + 3] };
                assert_eq!(&rgb[p..p + 3], want, "pixel ({x},{y})");
            }
        }
        // Wholly outside: nothing to redact, and no pixel changes.
        let clamped = rgb.clone();
        redact(&mut rgb, W, H, &[BBox { x1: 500.0, y1: 500.0, x2: 600.0, y2: 600.0 }], Mode::Blur, Shape::Box);
        assert_eq!(rgb, clamped);
    }
}
