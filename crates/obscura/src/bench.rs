//! `obscura bench`: throughput measured on this box, for BENCHMARKS.md. Benchmarks, not
//! tests: they report figures and assert nothing about speed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use capture::{BoardCapture, CameraConfig};
use clap::Subcommand;
use health::{CameraHealth, CameraState};
use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, System};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Capture a video file as fast as the box can: decode, convert to RGB, hand over.
    /// Reports frames per second and the CPU share of the whole box, per run and median.
    Capture {
        /// The video file.
        input: PathBuf,
        /// How many times to capture the whole file.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Anonymize a video, or still images, end to end (decode → faces ∥ plates → redact →
    /// encode) and report the median milliseconds of each stage and the frames per second.
    /// Stills go as `obscura blur` takes them: one file per core at a time, no tracker.
    Anonymize {
        /// A video file, or images (JPEG, PNG, WebP) and directories of them.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Video: stop after this many frames.
        #[arg(long, default_value_t = 100)]
        frames: u64,
        /// Also each detector pass's time (whole-frame faces and plates, the proposer,
        /// person and vehicle close-ups, the text detector) and its looks a frame.
        #[arg(long)]
        breakdown: bool,
        /// Stills: timed passes over the images, after one untimed pass that warms up.
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// Stills: files at once [default: the number of cores, as `obscura blur`].
        #[arg(long, short = 'j', value_name = "N")]
        jobs: Option<usize>,
        #[command(flatten)]
        detector: crate::detectors::DetectorArgs,
    },
    /// Pre-label images with NanoDet-g 416 in tract and, when installed, ONNX Runtime, and
    /// report the median milliseconds per image of each.
    Prelabel {
        /// Images (anonymized frames, or any photos).
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Passes over the images per engine.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Where the model files are [default: as for `obscura blur`].
        #[arg(long, value_name = "DIR")]
        models: Option<PathBuf>,
    },
    /// Fill a temporary store with anonymized frames of a video, each with three
    /// annotated shapes, then time `export` in every format (median of runs).
    Export {
        /// The video file the frames come from.
        input: PathBuf,
        /// Frames in the store.
        #[arg(long, default_value_t = 10_000)]
        frames: usize,
        /// Distinct video frames anonymized; the store holds them in turn (equal JPEGs
        /// share a blob, but every frame is decrypted and written on its own).
        #[arg(long, default_value_t = 100)]
        distinct: u64,
        /// Exports per format.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Keep the filled store in this (new) directory, e.g. to time another tool on
        /// the same frames with `obscura export`.
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
        #[command(flatten)]
        detector: crate::detectors::DetectorArgs,
    },
    /// Upload anonymized JPEGs from one box to a hub on loopback (the real `obscura hub`),
    /// and curl the same bytes to the same hub in the same run; also time a resume after
    /// a cut at 90%. Reports MB/s and blobs/s, median of runs.
    Sync {
        /// Anonymized JPEGs, e.g. what `obscura blur photos/ --out anon/` wrote.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Copies of each file a run sends (each made distinct, so none is skipped).
        #[arg(long, default_value_t = 20)]
        copies: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Simulate a fleet: N boxes in this process, each with its own store and outbox,
    /// key, enrolment and sync stage (HTTPS, and MQTT with `--mqtt`), sending signed
    /// batches of real JPEGs to one real hub at once, a share of them content other boxes
    /// send too. Reports the hub's ingest, and with a broker the control plane's.
    Fleet {
        /// Anonymized JPEGs, e.g. what `obscura blur photos/ --out anon/` wrote.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long, default_value_t = 10)]
        devices: usize,
        /// Batches each box sends.
        #[arg(long, default_value_t = 5)]
        batches: usize,
        /// Frames a batch.
        #[arg(long, default_value_t = 10)]
        frames: usize,
        /// Of every ten frames, how many carry content every box sends alike (0-10).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Also the control plane: the hub runs with this broker (a mosquitto with the
        /// dynamic-security plugin, e.g. `mqtt://127.0.0.1:1883`), every box keeps an
        /// MQTT session, and a command goes to every box and back.
        #[arg(long, value_name = "URL", requires = "mqtt_admin_password_file")]
        mqtt: Option<String>,
        /// The broker's dynsec admin password, in a file (the admin is `obscura-admin`).
        #[arg(long, value_name = "FILE")]
        mqtt_admin_password_file: Option<PathBuf>,
    },
    /// Fill a new store with a busy box's frames (one camera, 2 a second up to now), each
    /// with its own JPEG, two pre-labels and a saved annotation, one in ten submitted,
    /// all through the store's API: what `scripts/bench-api` loads the API against.
    ApiStore {
        /// The new store's state directory.
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        frames: u64,
    },
    /// Fill a new hub state directory with approved devices' frames (a small JPEG, an
    /// annotation and a pre-label each), through the hub's own upload and commit logic:
    /// what `scripts/bench-api hub` serves.
    HubStore {
        /// The new hub's state directory.
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
        #[arg(long, default_value_t = 10)]
        devices: u64,
        /// Frames each device.
        #[arg(long, default_value_t = 10_000)]
        frames: u64,
    },
    /// Load a running hub's ingest: new devices, enrolled by token, each uploading new
    /// JPEGs (HEAD, PATCH) and committing them in batches, signed per request, for a
    /// while. Reports each route's requests a second, p50, p99 and errors.
    HubLoad {
        /// The hub, `https://HOST:PORT`.
        #[arg(long)]
        hub: String,
        /// Its certificate's fingerprint, `SHA256:…`, as `obscura hub` prints it.
        #[arg(long)]
        pin: String,
        /// The hub's state directory (for enrolment tokens and its receipt key).
        #[arg(long, value_name = "DIR")]
        hub_state_dir: PathBuf,
        #[arg(long, default_value_t = 20)]
        devices: usize,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Frames a batch.
        #[arg(long, default_value_t = 10)]
        per_batch: usize,
    },
}

pub fn main(command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Capture { input, runs } => capture_file(input, runs),
        BenchCommand::Anonymize { inputs, frames, breakdown, runs, jobs, detector } => match inputs.as_slice() {
            [video] if capture::video::VIDEO_EXTENSIONS.iter().any(|e| has_extension(video, e)) => {
                anonymize_video(video, frames, breakdown, &detector)
            }
            _ => anonymize_stills(&inputs, runs, jobs, breakdown, &detector),
        },
        BenchCommand::Prelabel { images, runs, models } => prelabel_images(&images, runs, models.as_deref()),
        BenchCommand::Export { input, frames, distinct, runs, keep, detector } => {
            export(&input, frames, distinct, runs, keep, &detector)
        }
        BenchCommand::Sync { files, copies, runs } => crate::bench_sync::main(files, copies, runs),
        BenchCommand::Fleet { files, devices, batches, frames, repeat, mqtt, mqtt_admin_password_file } => {
            let broker = mqtt.zip(mqtt_admin_password_file);
            crate::bench_sync::fleet(files, devices, batches, frames, repeat.min(10), broker)
        }
        BenchCommand::ApiStore { state_dir, frames } => crate::bench_api::seed(&state_dir, frames),
        BenchCommand::HubStore { state_dir, devices, frames } => {
            crate::bench_api::hub_seed(&state_dir, devices, frames)
        }
        BenchCommand::HubLoad { hub, pin, hub_state_dir, devices, seconds, per_batch } => crate::bench_api::hub_load(
            hub.parse().map_err(anyhow::Error::msg)?,
            pin.parse().map_err(anyhow::Error::msg)?,
            &hub_state_dir,
            devices,
            seconds,
            per_batch.max(1),
        ),
    }
}

fn export(
    input: &std::path::Path,
    count: usize,
    distinct: u64,
    runs: usize,
    keep: Option<PathBuf>,
    detector: &crate::detectors::DetectorArgs,
) -> anyhow::Result<ExitCode> {
    use capture::video::{VideoFrame, VideoReader};
    let anonymizer = detector.anonymizer(anonymize::Mode::Blur, anonymize::Shape::Ellipse)?;
    let mut reader = VideoReader::open(input)?;
    let mut frames = Vec::new();
    while (frames.len() as u64) < distinct {
        let Some(VideoFrame { frame, .. }) = reader.next_frame()? else { break };
        frames.push(anonymizer.anonymize(frame, None)?);
    }
    if frames.is_empty() {
        bail!("{} has no frames", input.display());
    }
    let dir = tempfile::tempdir()?;
    let state = keep.unwrap_or_else(|| dir.path().join("state"));
    if state.exists() {
        bail!("{} exists: name a new directory for the store", state.display());
    }
    let store = store::Store::open(&state)?;
    let camera = frames[0].meta().camera.to_string();
    store.add_consent(store::NewConsent {
        scope: store::Scope::Camera(camera),
        covered: "benchmark".into(),
        legal_basis: "benchmark".into(),
        purposes: vec![store::Purpose::Annotate, store::Purpose::Train],
        valid_from: 0,
        valid_until: None,
        evidence_sha256: None,
        recorded_by: "bench".into(),
    })?;
    let filled = Instant::now();
    let (w, h) = (f64::from(frames[0].width()), f64::from(frames[0].height()));
    let shapes = serde_json::json!([
        { "type": "box", "label": "person", "points": [0.1 * w, 0.2 * h, 0.3 * w, 0.9 * h], "attributes": { "occluded": false } },
        { "type": "box", "label": "car", "points": [0.5 * w, 0.5 * h, 0.9 * w, 0.8 * h], "attributes": {} },
        { "type": "polygon", "label": "bicycle", "points": [0.4 * w, 0.6 * h, 0.45 * w, 0.6 * h, 0.45 * w, 0.7 * h, 0.4 * w, 0.7 * h] },
    ]);
    for chunk in (0..count).collect::<Vec<_>>().chunks(100) {
        let batch: Vec<_> = chunk.iter().map(|&i| (&frames[i % frames.len()], serde_json::json!({}))).collect();
        for stored in store.put_frames(&batch, store::NoConsent::Drop)? {
            if let store::Stored::Kept { id, .. } = stored {
                store.save_annotation(id, 0, &shapes, "bench")?.map_err(anyhow::Error::msg)?;
            }
        }
    }
    println!(
        "export {count} frames ({} distinct, {}x{} from {}); store filled in {:.1} s",
        frames.len(),
        w,
        h,
        input.display(),
        filled.elapsed().as_secs_f64()
    );
    for format in dataset::Format::ALL {
        let mut seconds = Vec::new();
        for _ in 0..runs {
            let out = tempfile::tempdir_in(dir.path())?;
            let started = Instant::now();
            let request = dataset::Export {
                format,
                filter: store::FrameFilter::default(),
                purpose: store::Purpose::Train,
                redactions: false,
                actor: "bench".into(),
            };
            let written = dataset::export(&store, &request, &mut dataset::DirSink::new(out.path()))?;
            seconds.push(started.elapsed().as_secs_f64());
            anyhow::ensure!(written.images == count, "exported {} of {count} frames", written.images);
        }
        let median = median(&mut seconds);
        println!(
            "  {:<12} median {median:>6.2} s  ({:.0} frames/s, {runs} runs)",
            format.name(),
            count as f64 / median
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn prelabel_images(paths: &[PathBuf], runs: usize, models: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    use prelabel::ObjectDetector;
    let models = crate::detectors::models_dir(models)?;
    let images: Vec<image::RgbImage> = paths
        .iter()
        .map(|p| image::open(p).map(|i| i.into_rgb8()).with_context(|| format!("cannot read {}", p.display())))
        .collect::<anyhow::Result<_>>()?;
    let mut engines = vec![onnx::Backend::Tract];
    match onnx::find_library() {
        Some(library) => engines.push(onnx::Backend::Ort(library)),
        None => println!("ONNX Runtime is not installed (scripts/deps installs it): tract only"),
    }
    println!("NanoDet-g 416 on {} image(s), {runs} run(s) each", images.len());
    for backend in engines {
        let nanodet = onnx::NanoDet::load(&models, 0.35, &backend)?;
        // One pass to build plans and warm caches, not counted.
        let mut found = 0;
        for img in &images {
            found +=
                nanodet.find(anonymize::Rgb { width: img.width(), height: img.height(), data: img.as_raw() })?.len();
        }
        let mut ms = Vec::new();
        for _ in 0..runs {
            for img in &images {
                let started = Instant::now();
                nanodet.find(anonymize::Rgb { width: img.width(), height: img.height(), data: img.as_raw() })?;
                ms.push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
        println!(
            "  {:<12} median {:>7.1} ms per image ({found} objects over the images)",
            backend.name(),
            median(&mut ms)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn anonymize_video(
    input: &std::path::Path,
    limit: u64,
    breakdown: bool,
    detector: &crate::detectors::DetectorArgs,
) -> anyhow::Result<ExitCode> {
    use capture::video::{VideoFrame, VideoReader, VideoWriter};
    let anonymizer = detector.anonymizer(anonymize::Mode::Blur, anonymize::Shape::Ellipse)?;
    let out = tempfile::Builder::new().suffix(".webm").tempfile()?;
    let mut reader = VideoReader::open(input)?;
    let mut tracker = anonymize::Tracker::new(5);
    let mut writer: Option<VideoWriter> = None;
    let stages =
        ["decode", "people and vehicles", "faces", "plates", "detect (side by side)", "redact", "encode", "total"];
    let mut ms: Vec<Vec<f64>> = vec![Vec::new(); stages.len()];
    let started = Instant::now();
    let mut frames = 0u64;
    let mut passes = Breakdown::default();
    loop {
        let t0 = Instant::now();
        let Some(VideoFrame { frame, pts, fps }) = reader.next_frame()? else { break };
        let decode = t0.elapsed();
        let (w, h) = (frame.width(), frame.height());
        let anonymized = anonymizer.anonymize(frame, Some(&mut tracker))?;
        let t1 = Instant::now();
        let fps = fps.unwrap_or((25, 1));
        let writer = match &mut writer {
            Some(writer) => writer,
            None => writer.insert(VideoWriter::create(out.path(), w, h, fps)?),
        };
        let duration = std::time::Duration::from_secs_f64(f64::from(fps.1) / f64::from(fps.0.max(1)));
        writer.push(&anonymized, pts, duration)?;
        let encode = t1.elapsed();
        let t = &anonymized.provenance().timings;
        passes.add(t);
        let row = [
            decode.as_secs_f64() * 1e3,
            f64::from(t.propose_ms),
            f64::from(t.faces_ms),
            f64::from(t.plates_ms),
            f64::from(t.detect_ms),
            f64::from(t.redact_ms),
            encode.as_secs_f64() * 1e3,
            t0.elapsed().as_secs_f64() * 1e3,
        ];
        for (column, value) in ms.iter_mut().zip(row) {
            column.push(value);
        }
        frames += 1;
        if frames >= limit {
            break;
        }
    }
    if let Some(writer) = writer {
        writer.finish()?;
    }
    let wall = started.elapsed().as_secs_f64();
    println!("anonymize {} ({frames} frames)", input.display());
    for (stage, values) in stages.iter().zip(ms.iter_mut()) {
        if *stage == "people and vehicles" {
            // In video the proposer skips the frames that reuse its last proposals.
            let ran = values.iter().filter(|&&v| v > 0.0).count();
            values.retain(|&v| v > 0.0);
            println!("  {stage:<24} median {:>8.1} ms, run on {ran} of {frames} frames", median(values));
            continue;
        }
        println!("  {stage:<24} median {:>8.1} ms", median(values));
    }
    println!("end to end: {:.2} frames/s ({frames} frames in {wall:.1} s)", frames as f64 / wall);
    if breakdown {
        passes.print();
    }
    Ok(ExitCode::SUCCESS)
}

fn has_extension(path: &std::path::Path, ext: &str) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

/// The images among `inputs`: files as given, directories' images (not recursive), sorted.
fn still_images(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            for entry in std::fs::read_dir(input).with_context(|| format!("cannot read {}", input.display()))? {
                let path = entry?.path();
                if ["jpg", "jpeg", "png", "webp"].iter().any(|e| has_extension(&path, e)) {
                    files.push(path);
                }
            }
        } else {
            files.push(input.clone());
        }
    }
    files.sort();
    if files.is_empty() {
        bail!("no images in {inputs:?}");
    }
    Ok(files)
}

/// One still's stage times (as in `anonymize_stills`' table) and its timings.
type StillRow = ([f64; 6], anonymize::Timings);

/// Anonymizes still images as `obscura blur` does (read, decode, anonymize without a
/// tracker, encode JPEG at quality 95; `jobs` files at once) and reports each stage,
/// summed over the images, and with `breakdown` each detector pass.
fn anonymize_stills(
    inputs: &[PathBuf],
    runs: usize,
    jobs: Option<usize>,
    breakdown: bool,
    detector: &crate::detectors::DetectorArgs,
) -> anyhow::Result<ExitCode> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let files = still_images(inputs)?;
    let loaded = Instant::now();
    let anonymizer = detector.anonymizer(anonymize::Mode::Blur, anonymize::Shape::Ellipse)?;
    let load_s = loaded.elapsed().as_secs_f64();
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let stages = ["read and decode", "people and vehicles", "detect (side by side)", "redact", "encode", "total"];
    // One image: its stage times and its timings.
    let one = |path: &PathBuf, seq: u64| -> anyhow::Result<StillRow> {
        let t0 = Instant::now();
        let decoded = image::open(path).with_context(|| format!("cannot read {}", path.display()))?.into_rgb8();
        let decode = t0.elapsed().as_secs_f64() * 1e3;
        let (width, height) = decoded.dimensions();
        let meta = frame::FrameMeta {
            camera: Arc::from("bench"),
            seq,
            monotonic: Instant::now(),
            wall: std::time::SystemTime::now(),
            media_time: None,
        };
        let raw = frame::RawFrame::new(meta, width, height, decoded.into_raw())?;
        let anonymized = anonymizer.anonymize(raw, None)?;
        let t1 = Instant::now();
        let mut encoded = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut encoded, 95).encode(
            anonymized.rgb(),
            width,
            height,
            image::ExtendedColorType::Rgb8,
        )?;
        let encode = t1.elapsed().as_secs_f64() * 1e3;
        let t = anonymized.provenance().timings.clone();
        let total = t0.elapsed().as_secs_f64() * 1e3;
        Ok(([decode, f64::from(t.propose_ms), f64::from(t.detect_ms), f64::from(t.redact_ms), encode, total], t))
    };
    // All the images, `jobs` at a time: each image's figures, and the wall time.
    let pass = || -> anyhow::Result<(Vec<StillRow>, f64)> {
        let next = AtomicUsize::new(0);
        let done = Mutex::new(Vec::new());
        let started = Instant::now();
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..jobs.min(files.len()))
                .map(|_| {
                    scope.spawn(|| -> anyhow::Result<()> {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(path) = files.get(i) else { return Ok(()) };
                            let row = one(path, i as u64)?;
                            done.lock().unwrap_or_else(|p| p.into_inner()).push(row);
                        }
                    })
                })
                .collect();
            workers.into_iter().try_for_each(|w| w.join().map_err(|_| anyhow::anyhow!("a worker panicked"))?)
        })?;
        Ok((done.into_inner().unwrap_or_else(|p| p.into_inner()), started.elapsed().as_secs_f64()))
    };
    println!(
        "anonymize {} still image(s), {jobs} at a time, {} backend; models loaded in {load_s:.2} s",
        files.len(),
        detector.backend.resolve()?.name()
    );
    let warm = Instant::now();
    pass()?;
    println!("  warm-up pass (not counted): {:.2} s", warm.elapsed().as_secs_f64());
    let mut walls = Vec::new();
    let mut rows = Vec::new();
    for _ in 0..runs.max(1) {
        let (run, wall) = pass()?;
        walls.push(wall);
        rows.extend(run);
    }
    let n = rows.len() as f64;
    println!("  {:<24} {:>9} {:>12}", "stage", "median ms", "ms an image");
    for (i, stage) in stages.iter().enumerate() {
        let mut values: Vec<f64> = rows.iter().map(|(r, _)| r[i]).collect();
        let mean = values.iter().sum::<f64>() / n;
        println!("  {stage:<24} {:>9.1} {mean:>12.1}", median(&mut values));
    }
    let wall = median(&mut walls);
    println!(
        "end to end: {:.2} images/s ({} images in {wall:.2} s, median of {} run(s))",
        files.len() as f64 / wall,
        files.len(),
        walls.len()
    );
    if breakdown {
        let mut passes = Breakdown::default();
        for (_, t) in &rows {
            passes.add(t);
        }
        passes.print();
    }
    Ok(ExitCode::SUCCESS)
}

/// Each detector pass's time and looks, summed over frames.
#[derive(Default)]
struct Breakdown {
    frames: u64,
    propose: (f64, u64),
    /// (name, summed ms, summed looks, frames it looked at anything in), by pass.
    passes: Vec<(String, f64, u64, u64)>,
}

impl Breakdown {
    fn add(&mut self, t: &anonymize::Timings) {
        self.frames += 1;
        if t.propose_ms > 0.0 {
            self.propose.0 += f64::from(t.propose_ms);
            self.propose.1 += 1;
        }
        for (i, p) in t.passes.iter().enumerate() {
            if self.passes.len() <= i {
                let scope = match p.scope {
                    anonymize::Scope::Frame => "whole frame",
                    anonymize::Scope::Proposals(anonymize::Proposed::Person) => "person close-ups",
                    anonymize::Scope::Proposals(anonymize::Proposed::Vehicle) => "vehicle close-ups",
                    anonymize::Scope::Unsure(anonymize::Proposed::Person) => "person close-ups, where unsure",
                    anonymize::Scope::Unsure(anonymize::Proposed::Vehicle) => "vehicle close-ups, where unsure",
                };
                let model = p.model.trim_end_matches(".onnx");
                self.passes.push((format!("{} {scope} ({model})", p.class.as_str()), 0.0, 0, 0));
            }
            let row = &mut self.passes[i];
            row.1 += f64::from(p.ms);
            row.2 += u64::from(p.looks);
            row.3 += u64::from(p.looks > 0);
        }
    }

    fn print(&self) {
        let total: f64 = self.passes.iter().map(|p| p.1).sum::<f64>() + self.propose.0;
        let frames = self.frames.max(1) as f64;
        println!("detector passes over {} frame(s) (each pass's own time; they run side by side)", self.frames);
        println!(
            "  {:<48} {:>10} {:>7} {:>12} {:>11} {:>9}",
            "pass", "ms a frame", "share", "looks a frame", "ms a look", "frames"
        );
        let mut rows: Vec<(String, f64, u64, u64)> = self.passes.clone();
        rows.insert(
            0,
            ("proposer: people and vehicles (nanodet)".into(), self.propose.0, self.propose.1, self.propose.1),
        );
        for (name, ms, looks, seen) in rows {
            let per_look = if looks > 0 { ms / looks as f64 } else { 0.0 };
            println!(
                "  {name:<48} {:>10.1} {:>6.0}% {:>12.2} {per_look:>11.1} {seen:>9}",
                ms / frames,
                100.0 * ms / total.max(f64::EPSILON),
                looks as f64 / frames,
            );
        }
        println!("  {:<48} {:>10.1}", "all passes", total / frames);
    }
}

fn capture_file(input: PathBuf, runs: usize) -> anyhow::Result<ExitCode> {
    let path = input.canonicalize().with_context(|| format!("cannot open {}", input.display()))?;
    let board = Arc::new(BoardCapture { convert: "videoconvert".into(), ..Default::default() });
    capture::init(&board)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut system = System::new().context("sysinfo cannot read this platform")?;
    let pid = sysinfo::get_current_pid().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut cpu_ms = || {
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            true,
            ProcessRefreshKind::nothing().with_cpu(),
        );
        system.process(pid).map_or(0, |p| p.accumulated_cpu_time())
    };
    println!("capture {} ({} runs, {cores} cores)", path.display(), runs.max(1));
    let (mut fps, mut share) = (Vec::new(), Vec::new());
    for run in 1..=runs.max(1) {
        let cam: CameraConfig = toml::from_str(&format!(
            "id = \"bench\"\nuri = {}\nrealtime = false",
            toml::Value::String(format!("file://{}", path.display()))
        ))?;
        let health = Arc::new(CameraHealth::new("bench", String::new()));
        let (tx, mut rx) = mpsc::channel(4);
        let stop = CancellationToken::new();
        let cpu_before = cpu_ms();
        let started = Instant::now();
        let handle = capture::spawn_camera(cam, board.clone(), health.clone(), tx, stop.clone())?;
        let mut frames = 0u64;
        let mut size = (0, 0);
        while let Some(frame) = rx.blocking_recv() {
            frames += 1;
            size = (frame.width(), frame.height());
        }
        let wall = started.elapsed().as_secs_f64();
        let cpu = (cpu_ms() - cpu_before) as f64 / 1000.0;
        stop.cancel();
        handle.join().map_err(|e| anyhow::anyhow!(e))?;
        if let CameraState::Down { reason } = health.state() {
            bail!("capture failed: {reason}");
        }
        let run_fps = frames as f64 / wall;
        let run_share = 100.0 * cpu / wall / cores as f64;
        println!(
            "  run {run}: {frames} frames of {}x{} in {wall:.2} s = {run_fps:.1} fps, CPU {run_share:.0} % of the box ({cpu:.2} CPU-s)",
            size.0, size.1
        );
        fps.push(run_fps);
        share.push(run_share);
    }
    println!("median: {:.1} fps, CPU {:.0} % of the box", median(&mut fps), median(&mut share));
    Ok(ExitCode::SUCCESS)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}
