//! Per-camera sampling: a dataset wants distinct moments, not 30 near-identical frames
//! a second. Decisions are pure functions of the frame's time and a small thumbnail, so
//! they are cheap enough to run on the capture thread before anything is copied on.

use std::time::Duration;

use health::DropReason;

use crate::config::SampleConfig;

/// Side of the grey thumbnail that `on_change` compares (THUMB × THUMB cells).
const THUMB: usize = 16;

/// Keeps or skips frames by the camera's `[camera.sample]` rules.
#[derive(Debug)]
pub struct Sampler {
    min_gap: Option<Duration>,
    interval: Option<Duration>,
    on_change: Option<f64>,
    /// Time of the last kept frame, on the source's clock.
    last_kept: Option<Duration>,
    /// Thumbnail of the last kept frame.
    last_thumb: Option<[u8; THUMB * THUMB]>,
}

impl Sampler {
    pub fn new(config: &SampleConfig) -> Self {
        Sampler {
            min_gap: config.fps.map(|r| Duration::from_secs_f64(1.0 / r.0)),
            interval: config.interval.filter(|d| !d.is_zero()),
            on_change: config.on_change.map(|f| f.0),
            last_kept: None,
            last_thumb: None,
        }
    }

    /// Whether any rule is set; without one every frame is kept and no thumbnail is made.
    pub fn is_passthrough(&self) -> bool {
        self.min_gap.is_none() && self.interval.is_none() && self.on_change.is_none()
    }

    /// Decides on one RGB frame taken at `at` (the source's clock). Keeping it updates
    /// the state; skipping it says why.
    pub fn decide(&mut self, at: Duration, width: u32, height: u32, rgb: &[u8]) -> Result<(), DropReason> {
        if let Some(last) = self.last_kept {
            // A clock that went backwards (a looped file, a restarted pipeline) starts afresh.
            if at >= last {
                let gap = at - last;
                if let Some(min_gap) = self.min_gap {
                    // A little slack so a 30 fps source capped at 10 keeps every third frame.
                    if gap + min_gap / 20 < min_gap {
                        return Err(DropReason::FpsCap);
                    }
                }
                if let Some(interval) = self.interval
                    && gap + interval / 100 < interval
                {
                    return Err(DropReason::Interval);
                }
            }
        }
        if let Some(threshold) = self.on_change {
            let thumb = thumbnail(width, height, rgb);
            if let Some(previous) = &self.last_thumb
                && difference(previous, &thumb) < threshold
            {
                return Err(DropReason::Unchanged);
            }
            self.last_thumb = Some(thumb);
        }
        self.last_kept = Some(at);
        Ok(())
    }
}

/// Mean luma over a THUMB × THUMB grid, reading every 4th pixel of every 4th row of a
/// cell: about 1/16 of the frame, enough to tell a passer-by from sensor noise.
fn thumbnail(width: u32, height: u32, rgb: &[u8]) -> [u8; THUMB * THUMB] {
    let (w, h) = (width as usize, height as usize);
    let mut sums = [0u32; THUMB * THUMB];
    let mut counts = [0u32; THUMB * THUMB];
    for y in (0..h).step_by(4) {
        let cy = y * THUMB / h;
        let row = &rgb[y * w * 3..(y + 1) * w * 3];
        for x in (0..w).step_by(4) {
            let cx = x * THUMB / w;
            let p = &row[x * 3..x * 3 + 3];
            // BT.601 luma in integers.
            let luma = (77 * p[0] as u32 + 150 * p[1] as u32 + 29 * p[2] as u32) >> 8;
            sums[cy * THUMB + cx] += luma;
            counts[cy * THUMB + cx] += 1;
        }
    }
    let mut out = [0u8; THUMB * THUMB];
    for i in 0..out.len() {
        out[i] = sums[i].checked_div(counts[i]).unwrap_or(0) as u8;
    }
    out
}

/// Mean absolute difference of two thumbnails, as a share of full scale.
fn difference(a: &[u8; THUMB * THUMB], b: &[u8; THUMB * THUMB]) -> f64 {
    let total: u32 = a.iter().zip(b).map(|(&x, &y)| x.abs_diff(y) as u32).sum();
    total as f64 / (a.len() as f64 * 255.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Fraction, Rate};

    const W: u32 = 64;
    const H: u32 = 48;

    fn grey(level: u8) -> Vec<u8> {
        vec![level; (W * H * 3) as usize]
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Feeds 30 fps for `seconds` and returns how many frames were kept.
    fn kept_at_30fps(sampler: &mut Sampler, seconds: u64) -> usize {
        let frame = grey(100);
        (0..seconds * 30)
            .filter(|i| sampler.decide(Duration::from_secs_f64(*i as f64 / 30.0), W, H, &frame).is_ok())
            .count()
    }

    #[test]
    fn no_rules_keep_every_frame() {
        let mut sampler = Sampler::new(&SampleConfig::default());
        assert!(sampler.is_passthrough());
        assert_eq!(kept_at_30fps(&mut sampler, 2), 60);
    }

    #[test]
    fn fps_cap_keeps_exactly_the_capped_rate() {
        let mut sampler = Sampler::new(&SampleConfig { fps: Some(Rate(10.0)), ..Default::default() });
        assert_eq!(kept_at_30fps(&mut sampler, 3), 30);
        assert_eq!(sampler.decide(ms(100_000), W, H, &grey(0)), Ok(()));
        assert_eq!(sampler.decide(ms(100_050), W, H, &grey(0)), Err(DropReason::FpsCap));
    }

    #[test]
    fn interval_keeps_one_frame_per_period() {
        let mut sampler = Sampler::new(&SampleConfig { interval: Some(Duration::from_secs(2)), ..Default::default() });
        // 0 s, 2 s, 4 s, 6 s, 8 s out of ten seconds.
        assert_eq!(kept_at_30fps(&mut sampler, 10), 5);
    }

    #[test]
    fn on_change_skips_a_static_scene_and_keeps_a_change() {
        let mut sampler = Sampler::new(&SampleConfig { on_change: Some(Fraction(0.02)), ..Default::default() });
        assert_eq!(sampler.decide(ms(0), W, H, &grey(100)), Ok(()));
        assert_eq!(sampler.decide(ms(40), W, H, &grey(101)), Err(DropReason::Unchanged));
        // Someone walks in: a quarter of the picture turns bright.
        let mut changed = grey(100);
        for px in changed.chunks_mut((W * 3) as usize).take((H / 2) as usize) {
            px[..(W as usize / 2) * 3].fill(250);
        }
        assert_eq!(sampler.decide(ms(80), W, H, &changed), Ok(()));
        // Compared with the last *kept* frame, so a slow drift is still caught eventually.
        assert_eq!(sampler.decide(ms(120), W, H, &changed), Err(DropReason::Unchanged));
    }

    #[test]
    fn a_clock_that_goes_back_starts_afresh() {
        let mut sampler = Sampler::new(&SampleConfig { interval: Some(Duration::from_secs(5)), ..Default::default() });
        assert_eq!(sampler.decide(ms(50_000), W, H, &grey(0)), Ok(()));
        assert_eq!(sampler.decide(ms(0), W, H, &grey(0)), Ok(()), "a looped file restarts its clock");
        assert_eq!(sampler.decide(ms(1_000), W, H, &grey(0)), Err(DropReason::Interval));
    }

    #[test]
    fn rules_combine() {
        let mut sampler =
            Sampler::new(&SampleConfig { fps: Some(Rate(5.0)), on_change: Some(Fraction(0.02)), ..Default::default() });
        assert_eq!(sampler.decide(ms(0), W, H, &grey(10)), Ok(()));
        assert_eq!(sampler.decide(ms(50), W, H, &grey(200)), Err(DropReason::FpsCap));
        assert_eq!(sampler.decide(ms(200), W, H, &grey(10)), Err(DropReason::Unchanged));
        assert_eq!(sampler.decide(ms(400), W, H, &grey(200)), Ok(()));
    }
}
