//! `obscura bench api-store`: a store the size of a busy box's, for `scripts/bench-api`
//! (issue 20, item 3). Every row goes in through the store's own API, as the daemon and
//! the tablet write them: frames through `Store::put_frames` from `AnonymizedFrame`s
//! (distinct JPEGs, so every frame has its own encrypted blob), pre-labels through
//! `put_prelabels`, annotations through `save_annotation` (audited, versioned) and some
//! submitted for review. Nothing is written in SQL here, so no invariant is bypassed.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::bail;

/// Frames a `put_frames` call, as the daemon's store stage batches them.
const BATCH: usize = 16;
/// The camera the frames are from.
const CAMERA: &str = "yard";
/// Frame size: large enough that a 320-px thumbnail is really scaled down.
const WIDTH: u32 = 640;
const HEIGHT: u32 = 360;

/// A 640×360 frame: smooth shapes (a JPEG of a real scene's size class, not noise),
/// shifted by `n` and stamped with `n` in its top row so each frame's JPEG is its own.
fn picture(n: u64) -> image::RgbImage {
    let shift = (n % 97) as u32;
    let mut img = image::RgbImage::from_fn(WIDTH, HEIGHT, |x, y| {
        let (fx, fy) = (x + shift * 3, y + shift);
        image::Rgb([(fx / 3 % 256) as u8, (fy / 2 % 256) as u8, ((fx + fy) / 5 % 256) as u8])
    });
    for (i, byte) in n.to_be_bytes().iter().enumerate() {
        for x in 0..8 {
            for y in 0..8 {
                img.put_pixel((i * 8 + x) as u32, y, image::Rgb([*byte, byte.wrapping_mul(3), byte.wrapping_mul(7)]));
            }
        }
    }
    img
}

/// What an annotator saves on a frame: the tablet's shapes (boxes with attributes, a
/// polygon), in pixels.
fn shapes(n: u64) -> serde_json::Value {
    let dx = (n % 50) as f64;
    serde_json::json!([
        { "type": "box", "label": "person", "points": [40.0 + dx, 60.0, 120.0 + dx, 300.0], "attributes": { "occluded": false } },
        { "type": "box", "label": "vehicle", "points": [300.0, 180.0 + dx, 560.0, 320.0 + dx / 2.0], "attributes": {} },
        { "type": "polygon", "label": "bicycle", "points": [200.0, 250.0, 240.0, 250.0, 240.0, 300.0, 200.0, 300.0], "attributes": {} },
    ])
}

/// Fills a new store in `state` with `count` frames of one camera, captured 2 a second
/// up to now, each with two pre-labels and an annotation; one in ten is submitted.
pub fn seed(state: &Path, count: u64) -> anyhow::Result<ExitCode> {
    if state.join(store::DATABASE_FILE).exists() {
        bail!("{} holds a store already: name a new directory", state.display());
    }
    let store = Arc::new(store::Store::open(state)?);
    store.add_consent(store::NewConsent {
        scope: store::Scope::Device,
        covered: "benchmark".into(),
        legal_basis: "benchmark".into(),
        purposes: vec![store::Purpose::Annotate],
        valid_from: 0,
        valid_until: None,
        evidence_sha256: None,
        recorded_by: "bench".into(),
    })?;
    let labels: Vec<store::Label> = serde_json::from_value(serde_json::json!([
        { "name": "person" }, { "name": "vehicle" }, { "name": "bicycle" }, { "name": "bag" },
    ]))?;
    store.set_labels(&labels, "bench")?;
    let started = Instant::now();
    let first = SystemTime::now() - Duration::from_millis(count * 500);
    // Two writers, as JPEG encoding (outside the store's lock) is most of the work.
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (store, next) = (store.clone(), next.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                let anonymizer = anonymize::Anonymizer::new(Vec::new(), anonymize::Settings::default());
                loop {
                    let from = next.fetch_add(BATCH as u64, std::sync::atomic::Ordering::Relaxed);
                    if from >= count {
                        return Ok(());
                    }
                    let mut frames = Vec::with_capacity(BATCH);
                    for n in from..(from + BATCH as u64).min(count) {
                        let meta = frame::FrameMeta {
                            camera: Arc::from(CAMERA),
                            seq: n,
                            monotonic: Instant::now(),
                            wall: first + Duration::from_millis(n * 500),
                            media_time: None,
                        };
                        let raw = frame::RawFrame::new(meta, WIDTH, HEIGHT, picture(n).into_raw())?;
                        frames.push((anonymizer.anonymize(raw, None)?, n));
                    }
                    let batch: Vec<_> = frames.iter().map(|(f, _)| (f, serde_json::json!({}))).collect();
                    let stored = store.put_frames(&batch, store::NoConsent::Drop)?;
                    for (kept, (_, n)) in stored.into_iter().zip(&frames) {
                        let store::Stored::Kept { id, .. } = kept else { bail!("frame {n} was not stored: {kept:?}") };
                        annotate(&store, id, *n)?;
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().map_err(|_| anyhow::anyhow!("a writer panicked"))??;
    }
    let usage = store.usage()?;
    println!(
        "stored {} frames ({} MB of JPEG, {} MB on disk) in {:.0} s",
        usage.frames,
        usage.frame_bytes >> 20,
        usage.disk_bytes >> 20,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// The pre-labeller's and an annotator's work on frame `id` (the `n`th).
fn annotate(store: &store::Store, id: store::FrameId, n: u64) -> anyhow::Result<()> {
    let b = |x1, y1, x2, y2| anonymize::BBox { x1, y1, x2, y2 };
    let prelabels = [
        ("person".to_owned(), b(38.0, 58.0, 118.0, 298.0), 0.81),
        ("car".to_owned(), b(298.0, 178.0, 562.0, 318.0), 0.67),
    ];
    store.put_prelabels(id, &prelabels, "nanodet-plus-m-416", "0".repeat(64).as_str())?;
    let version = store.save_annotation(id, 0, &shapes(n), "bench")?.map_err(anyhow::Error::msg)?;
    if n.is_multiple_of(10) {
        store.submit_annotation(id, version, "bench")?;
    }
    Ok(())
}
