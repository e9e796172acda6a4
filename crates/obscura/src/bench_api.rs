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

/// A small distinct JPEG (160×90, a few KB), the `n`th of device `d`.
fn small_jpeg(d: u64, n: u64) -> anyhow::Result<bytes::Bytes> {
    let img = image::imageops::thumbnail(&picture(d << 40 | n), 160, 90);
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85).encode_image(&img)?;
    Ok(out.into())
}

/// The consent every bench frame at the hub names.
fn hub_consent() -> wire::v1::Consent {
    wire::v1::Consent {
        id: "c1".into(),
        scope: wire::v1::Scope { kind: "device".into(), value: String::new() },
        purposes: vec![wire::v1::Purpose::Annotate, wire::v1::Purpose::Sync],
        valid_from_ms: 0,
        valid_until_ms: None,
        withdrawn_at_ms: None,
        basis: "benchmark".into(),
        evidence_sha256: None,
    }
}

/// A batch id: a new ULID, as the box's outbox names batches.
fn batch_id() -> String {
    use ring::rand::SecureRandom;
    let mut random = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut random).expect("randomness");
    wire::DeviceId::new(frame::now_unix_ms() as u64, random).to_string()
}

/// The manifest of `frames` (local id, JPEG) from `device`, with an annotation each.
fn manifest(device: wire::DeviceId, batch: &str, frames: &[(i64, bytes::Bytes)]) -> wire::v1::Manifest {
    let now = frame::now_unix_ms();
    wire::v1::Manifest {
        version: wire::VERSION,
        batch: batch.to_owned(),
        device,
        created_ms: now,
        audit_head: wire::v1::AuditHead { seq: frames.first().map_or(1, |f| f.0), hash: "0".repeat(64) },
        frames: frames
            .iter()
            .map(|(local, jpeg)| wire::v1::Frame {
                local: *local,
                camera: CAMERA.into(),
                captured_ms: now - 1000,
                sha256: store::sha256_hex(jpeg),
                bytes: jpeg.len() as u64,
                width: 160,
                height: 90,
                consents: vec!["c1".into()],
                annotation: Some(wire::v1::Annotation { version: 1, shapes: shapes(*local as u64) }),
                predictions: vec![wire::v1::Prediction {
                    label: "person".into(),
                    score: 0.8,
                    bbox: [10.0, 10.0, 30.0, 60.0],
                    source: "nanodet-plus-m-416".into(),
                }],
            })
            .collect(),
        consents: vec![hub_consent()],
    }
}

/// Fills a new hub state directory with `devices` approved devices of `frames` frames
/// each, through the hub's own logic (`Hub::patch_blob`, `Hub::commit`: what its routes
/// call once a request's signature is checked), in batches of 100.
pub fn hub_seed(state: &Path, devices: u64, frames: u64) -> anyhow::Result<ExitCode> {
    if state.join(store::HUB_STORE_DIR).exists() {
        bail!("{} holds a hub store already: name a new directory", state.display());
    }
    let db = Arc::new(store::HubDb::open(state)?);
    let (identity, _) = hub::HubIdentity::load_or_create(state)?;
    let hub = hub::Hub::new(db.clone(), Arc::new(identity));
    let started = Instant::now();
    let err = |e: hub::HubError| anyhow::anyhow!(e.message);
    for d in 0..devices {
        use hub::HubStore;
        let now = frame::now_unix_ms();
        let id = wire::DeviceId::new(now as u64, [d as u8; 16]);
        let mut record = hub::DeviceRecord {
            id,
            public_key: vec![d as u8; 32],
            hostname: format!("box-{d}"),
            state: wire::v1::DeviceState::Pending,
            enrolled_ms: now,
        };
        db.enrol(&record, None, now).map_err(|e| anyhow::anyhow!("{e}"))?;
        db.set_state(id, wire::v1::DeviceState::Approved, "bench", now).map_err(|e| anyhow::anyhow!("{e}"))?;
        record.state = wire::v1::DeviceState::Approved;
        for first in (1..=frames as i64).step_by(100) {
            let batch: Vec<(i64, bytes::Bytes)> = (first..(first + 100).min(frames as i64 + 1))
                .map(|local| Ok((local, small_jpeg(d, local as u64)?)))
                .collect::<anyhow::Result<_>>()?;
            for (_, jpeg) in &batch {
                let len = jpeg.len() as u64;
                hub.patch_blob(&record, &store::sha256_hex(jpeg), 0, len, jpeg, now).map_err(err)?;
            }
            let name = batch_id();
            hub.commit(&record, &name, &serde_json::to_vec(&manifest(id, &name, &batch))?, now).map_err(err)?;
        }
    }
    println!("{devices} devices × {frames} frames in {:.0} s", started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

/// Latencies of one route, and its failures.
#[derive(Default)]
struct Route {
    times: Vec<Duration>,
    errors: u64,
}

impl Route {
    fn record<T, E: std::fmt::Display>(&mut self, started: Instant, result: Result<T, E>) -> Option<T> {
        self.times.push(started.elapsed());
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                self.errors += 1;
                if self.errors == 1 {
                    eprintln!("a request failed: {e}");
                }
                None
            }
        }
    }
}

/// `devices` new devices, enrolled by token with the hub at `address` (its state in
/// `hub_state`), each for `seconds` uploading new JPEGs (HEAD, then PATCH, as the sync
/// stage does) and committing them `per_batch` at a time: each route's p50 and p99.
/// The hub routes are signed per request (RFC 9421) with each device's key, which is
/// why this client is Rust (the sync crate's own `HubClient`) and not wrk.
pub fn hub_load(
    address: sync::HubAddress,
    pin: sync::Fingerprint,
    hub_state: &Path,
    devices: usize,
    seconds: u64,
    per_batch: usize,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let dir = tempfile::tempdir()?;
    let (hub_key, _) = hub::HubIdentity::load_or_create(hub_state)?;
    let hub_key = hub_key.public_key().to_vec();
    let clients = runtime.block_on(async {
        let mut clients = Vec::new();
        for d in 0..devices {
            let (identity, client, _) =
                crate::bench_sync::device(&dir.path().join(format!("device-{d}")), hub_state, &address, pin).await?;
            clients.push((d as u64, identity.device, client));
        }
        anyhow::Ok(clients)
    })?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(d, device, client)| {
            let hub_key = hub_key.clone();
            runtime.spawn(async move {
                let (mut head, mut patch, mut commit) = (Route::default(), Route::default(), Route::default());
                let mut local = 0;
                while Instant::now() < deadline {
                    let mut batch = Vec::with_capacity(per_batch);
                    for _ in 0..per_batch {
                        local += 1;
                        let jpeg = small_jpeg(1000 + d, local as u64).expect("encodes");
                        let sha = store::sha256_hex(&jpeg);
                        let t = Instant::now();
                        head.record(t, client.head_blob(&sha).await);
                        let t = Instant::now();
                        if patch.record(t, client.upload_blob(&sha, &jpeg, false).await).is_some() {
                            batch.push((local, jpeg));
                        }
                    }
                    let name = batch_id();
                    let text = serde_json::to_string(&manifest(device, &name, &batch)).expect("serializes");
                    let t = Instant::now();
                    commit.record(t, client.commit(&name, &text, &hub_key).await);
                }
                [head, patch, commit]
            })
        })
        .collect();
    let mut routes: [Route; 3] = Default::default();
    for task in tasks {
        for (all, one) in routes.iter_mut().zip(runtime.block_on(task)?) {
            all.times.extend(one.times);
            all.errors += one.errors;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!("| route | clients | req/s | p50 ms | p99 ms | errors | requests |");
    println!("|---|---|---|---|---|---|---|");
    for (name, route) in
        ["HEAD /v1/blobs/{sha256}", "PATCH /v1/blobs/{sha256}", "POST /v1/batches/{id}"].iter().zip(routes.iter_mut())
    {
        route.times.sort();
        let at = |q: f64| {
            route.times.get(((route.times.len() as f64 * q) as usize).min(route.times.len().saturating_sub(1)))
        };
        let ms = |d: Option<&Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
        println!(
            "| {name} | {devices} | {:.0} | {:.1} | {:.1} | {} | {} |",
            route.times.len() as f64 / elapsed,
            ms(at(0.5)),
            ms(at(0.99)),
            route.errors,
            route.times.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
