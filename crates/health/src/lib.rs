//! What a field engineer asks about: is each camera up, how many frames came in, how
//! many were dropped and why, and how the box itself is doing.
//!
//! Stages write plain atomics here; the web crate reads [`Health::cameras`] and
//! [`Health::system`] to render `/metrics` and `/api/v1/status`. Nothing here knows
//! GStreamer or HTTP.

mod system;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use system::{SystemSampler, SystemSnapshot, disk_free_share};

/// Why a captured frame did not go on to the next stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Above the camera's `sample.fps` cap.
    FpsCap,
    /// Inside the camera's `sample.interval`.
    Interval,
    /// Too similar to the last kept frame (`sample.on_change`).
    Unchanged,
    /// The next stage was busy; back-pressure drops at capture, never later (later
    /// stages wait for each other).
    QueueFull,
    /// The source delivered a buffer that could not be turned into RGB (corrupt JPEG, bad size).
    BadFrame,
    /// A detector failed on the frame: dropped un-stored (fail closed).
    DetectorError,
    /// Detection missed its deadline: dropped un-stored (fail closed).
    Deadline,
    /// No consent with the `annotate` purpose covered the camera, and the policy drops.
    NoConsent,
    /// The store could not write it (a full disk, a failing card): logged with the fix.
    StoreFailed,
    /// Anonymized, but the store stage had stopped and could not take it (shutdown, or
    /// the stage failed: also an error in the log and a task failure).
    StoreStopped,
    /// Captured inside a window that was erased while the frame was still in the
    /// pipeline: the erasure covers it, so it is never written.
    Erased,
}

impl DropReason {
    pub const ALL: [DropReason; 11] = [
        DropReason::FpsCap,
        DropReason::Interval,
        DropReason::Unchanged,
        DropReason::QueueFull,
        DropReason::BadFrame,
        DropReason::DetectorError,
        DropReason::Deadline,
        DropReason::NoConsent,
        DropReason::StoreFailed,
        DropReason::StoreStopped,
        DropReason::Erased,
    ];

    /// The stable name used in metrics labels and the status API.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::FpsCap => "fps_cap",
            DropReason::Interval => "interval",
            DropReason::Unchanged => "unchanged",
            DropReason::QueueFull => "queue_full",
            DropReason::BadFrame => "bad_frame",
            DropReason::DetectorError => "detector_error",
            DropReason::Deadline => "deadline",
            DropReason::NoConsent => "no_consent",
            DropReason::StoreFailed => "store_failed",
            DropReason::StoreStopped => "store_stopped",
            DropReason::Erased => "erased",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The life of one camera's source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CameraState {
    /// The pipeline is being built or is waiting for its first frame.
    Starting,
    /// Frames are arriving.
    Up,
    /// Not delivering; `reason` says why and what to do. Retried with backoff.
    Down { reason: String },
    /// A file without `loop` reached its end; not retried.
    Ended,
    /// Switched off in the config.
    Disabled,
}

impl CameraState {
    pub fn as_str(&self) -> &'static str {
        match self {
            CameraState::Starting => "starting",
            CameraState::Up => "up",
            CameraState::Down { .. } => "down",
            CameraState::Ended => "ended",
            CameraState::Disabled => "disabled",
        }
    }
}

/// Live counters for one camera. Cheap to update from a capture thread.
#[derive(Debug)]
pub struct CameraHealth {
    id: Arc<str>,
    source: String,
    state: Mutex<(CameraState, Instant)>,
    captured: AtomicU64,
    delivered: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
    restarts: AtomicU64,
    rate: Mutex<RateMeter>,
    anonymized: AtomicU64,
    faces: AtomicU64,
    plates: AtomicU64,
    plate_areas: AtomicU64,
    /// Milliseconds of the last anonymization, as f32 bits.
    anonymize_ms: AtomicU64,
    stored: AtomicU64,
    local_only: AtomicU64,
}

/// A copy of one camera's counters at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraSnapshot {
    pub id: Arc<str>,
    /// The source as configured, with any password removed.
    pub source: String,
    pub state: CameraState,
    /// How long the camera has been in `state`.
    pub state_for: Duration,
    pub captured: u64,
    pub delivered: u64,
    pub dropped: Vec<(DropReason, u64)>,
    pub restarts: u64,
    /// Frames anonymized, and the faces and plates redacted in them.
    pub anonymized: u64,
    pub faces: u64,
    pub plates: u64,
    /// Plate areas covered where no plate could be looked for (fail closed).
    pub plate_areas: u64,
    /// How long the last frame took to anonymize.
    pub anonymize_ms: f64,
    /// Frames stored, and how many of those local-only (no `annotate` consent).
    pub stored: u64,
    pub local_only: u64,
    /// Frames per second arriving from the source, over the last few seconds.
    pub fps: f64,
    /// Time since the last frame arrived, if any did.
    pub last_frame_age: Option<Duration>,
}

impl CameraHealth {
    pub fn new(id: &str, source: String) -> Self {
        CameraHealth {
            id: Arc::from(id),
            source,
            state: Mutex::new((CameraState::Starting, Instant::now())),
            captured: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            dropped: Default::default(),
            restarts: AtomicU64::new(0),
            rate: Mutex::new(RateMeter::default()),
            anonymized: AtomicU64::new(0),
            faces: AtomicU64::new(0),
            plates: AtomicU64::new(0),
            plate_areas: AtomicU64::new(0),
            anonymize_ms: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            local_only: AtomicU64::new(0),
        }
    }

    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    /// A frame arrived from the source. Returns its sequence number.
    pub fn record_captured(&self, now: Instant) -> u64 {
        lock(&self.rate).tick(now);
        self.captured.fetch_add(1, Ordering::Relaxed)
    }

    pub fn record_delivered(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_drop(&self, reason: DropReason) {
        self.dropped[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// A frame came out of the anonymizer with this many faces, plates and plate areas
    /// redacted.
    pub fn record_anonymized(&self, faces: u64, plates: u64, plate_areas: u64, millis: f64) {
        self.anonymized.fetch_add(1, Ordering::Relaxed);
        self.faces.fetch_add(faces, Ordering::Relaxed);
        self.plates.fetch_add(plates, Ordering::Relaxed);
        self.plate_areas.fetch_add(plate_areas, Ordering::Relaxed);
        self.anonymize_ms.store(millis.to_bits(), Ordering::Relaxed);
    }

    pub fn anonymized(&self) -> u64 {
        self.anonymized.load(Ordering::Relaxed)
    }

    pub fn record_stored(&self, local_only: bool) {
        self.stored.fetch_add(1, Ordering::Relaxed);
        if local_only {
            self.local_only.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn record_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// Moves to `state`; a repeated state keeps its original `since`.
    pub fn set_state(&self, state: CameraState) {
        let mut guard = lock(&self.state);
        if guard.0 != state {
            *guard = (state, Instant::now());
        }
    }

    pub fn state(&self) -> CameraState {
        lock(&self.state).0.clone()
    }

    pub fn captured(&self) -> u64 {
        self.captured.load(Ordering::Relaxed)
    }

    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()].load(Ordering::Relaxed)
    }

    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> CameraSnapshot {
        let now = Instant::now();
        let (state, since) = lock(&self.state).clone();
        let rate = lock(&self.rate);
        CameraSnapshot {
            id: self.id.clone(),
            source: self.source.clone(),
            state,
            state_for: now.saturating_duration_since(since),
            captured: self.captured(),
            delivered: self.delivered(),
            dropped: DropReason::ALL.iter().map(|&r| (r, self.dropped(r))).collect(),
            restarts: self.restarts(),
            anonymized: self.anonymized(),
            faces: self.faces.load(Ordering::Relaxed),
            plates: self.plates.load(Ordering::Relaxed),
            plate_areas: self.plate_areas.load(Ordering::Relaxed),
            anonymize_ms: f64::from_bits(self.anonymize_ms.load(Ordering::Relaxed)),
            stored: self.stored.load(Ordering::Relaxed),
            local_only: self.local_only.load(Ordering::Relaxed),
            fps: rate.fps(now),
            last_frame_age: rate.last.map(|t| now.saturating_duration_since(t)),
        }
    }
}

/// Frames per second over a window of about two seconds.
#[derive(Debug, Default)]
struct RateMeter {
    window_start: Option<Instant>,
    in_window: u64,
    last_fps: f64,
    last: Option<Instant>,
}

impl RateMeter {
    const WINDOW: Duration = Duration::from_secs(2);

    fn tick(&mut self, now: Instant) {
        self.last = Some(now);
        // A window counts the frames that arrived after its first one.
        let Some(start) = self.window_start else {
            self.window_start = Some(now);
            return;
        };
        self.in_window += 1;
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= Self::WINDOW {
            self.last_fps = self.in_window as f64 / elapsed.as_secs_f64();
            self.window_start = Some(now);
            self.in_window = 0;
        }
    }

    /// The last full window's rate, or zero once frames stop for longer than a window.
    fn fps(&self, now: Instant) -> f64 {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < Self::WINDOW => self.last_fps,
            _ => 0.0,
        }
    }
}

/// Everything the daemon reports, shared by the stages and the web server.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    ready: AtomicBool,
    board: String,
    cameras: Vec<Arc<CameraHealth>>,
    system: Mutex<SystemSnapshot>,
    storage: Mutex<StorageSnapshot>,
    prelabel: Mutex<PrelabelSnapshot>,
    sync: Mutex<SyncSnapshot>,
    /// Tasks and threads that ended badly (a panic, a failed join), by name.
    task_failures: Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

/// What the store holds and how its retention is doing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StorageSnapshot {
    pub frames: u64,
    /// Blobs, database and WAL on disk.
    pub disk_bytes: u64,
    /// The last retention run: when it finished (Unix ms), what it removed, and its
    /// outcome ("ok" or the problem). None until the first run.
    pub last_retention: Option<RetentionRun>,
    /// Whether new frames are being refused (the disk is below its low mark).
    pub refusing: bool,
}

/// How the pre-labeller is keeping up.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrelabelSnapshot {
    pub enabled: bool,
    /// Frames pre-labelled since start.
    pub done: u64,
    /// Frames stored and still waiting for pre-labels.
    pub backlog: u64,
    /// Times the pre-labeller stood aside because anonymization had frames waiting.
    pub deferred: u64,
    /// Milliseconds the last frame took.
    pub last_ms: f64,
    /// Writes of pre-labels that failed (each an error or warning in the log).
    pub failed: u64,
    /// Frames whose pre-labels failed to be written three times, left until restart.
    pub set_aside: u64,
}

/// How sync to the hub is doing: the sync stage's counters and the outbox's backlog.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncSnapshot {
    /// `off` (no hub configured), `not_enrolled`, `pending`, `approved` or `revoked`.
    pub state: String,
    /// The hub's address, once enrolled.
    pub hub: Option<String>,
    /// The box's key fingerprint (`SHA256:…`), as the hub shows it.
    pub key: String,
    /// `up`, `down` or `off` (no broker configured): commands are polled over HTTPS
    /// when it is not up.
    pub mqtt: String,
    /// Paused by the hub, or outside the configured sync windows.
    pub paused: bool,
    pub outside_window: bool,
    /// Eligible frames not yet at the hub, their bytes and the oldest's age.
    pub backlog_frames: u64,
    pub backlog_bytes: u64,
    pub oldest_age_s: Option<u64>,
    pub batches_pending: u64,
    pub erasures_pending: u64,
    /// Frames retention removed before they could be synced.
    pub expired_unsynced: u64,
    /// Since start.
    pub bytes_sent: u64,
    pub blobs_sent: u64,
    pub blobs_skipped: u64,
    pub commits: u64,
    pub rejects: u64,
    pub retries: u64,
    pub erasures_confirmed: u64,
    /// When the last receipt came in (Unix ms).
    pub last_receipt_ms: Option<i64>,
    /// The last problem, with its fix, until the next success.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetentionRun {
    pub finished_at_ms: i64,
    pub removed: u64,
    pub freed_bytes: u64,
    /// Whether every mark was met (the `obscura_retention_ok` gauge).
    pub ok: bool,
    /// "ok", or what stopped the run short, with the fix, for people.
    pub outcome: String,
}

impl Health {
    pub fn new(board: String, cameras: Vec<Arc<CameraHealth>>) -> Self {
        Health {
            started: Instant::now(),
            ready: AtomicBool::new(false),
            board,
            cameras,
            system: Mutex::new(SystemSnapshot::default()),
            storage: Mutex::new(StorageSnapshot::default()),
            prelabel: Mutex::new(PrelabelSnapshot::default()),
            sync: Mutex::new(SyncSnapshot { state: "off".into(), mqtt: "off".into(), ..Default::default() }),
            task_failures: Mutex::new(std::collections::BTreeMap::new()),
        }
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn board(&self) -> &str {
        &self.board
    }

    /// Set once start-up is complete, cleared when shutdown begins: drives `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn cameras(&self) -> &[Arc<CameraHealth>] {
        &self.cameras
    }

    pub fn system(&self) -> SystemSnapshot {
        lock(&self.system).clone()
    }

    pub fn set_system(&self, snapshot: SystemSnapshot) {
        *lock(&self.system) = snapshot;
    }

    pub fn storage(&self) -> StorageSnapshot {
        lock(&self.storage).clone()
    }

    pub fn set_storage(&self, snapshot: StorageSnapshot) {
        *lock(&self.storage) = snapshot;
    }

    pub fn prelabel(&self) -> PrelabelSnapshot {
        lock(&self.prelabel).clone()
    }

    pub fn set_prelabel(&self, snapshot: PrelabelSnapshot) {
        *lock(&self.prelabel) = snapshot;
    }

    pub fn sync(&self) -> SyncSnapshot {
        lock(&self.sync).clone()
    }

    /// Changes the sync snapshot in place (the stage updates a few fields at a time).
    pub fn update_sync(&self, f: impl FnOnce(&mut SyncSnapshot)) {
        f(&mut lock(&self.sync));
    }

    /// A task or thread (`anonymize`, `camera`, `http`…) ended badly: it panicked, or
    /// it could not be joined.
    pub fn record_task_failure(&self, task: &'static str) {
        *lock(&self.task_failures).entry(task).or_default() += 1;
    }

    /// How often each task failed, by name; tasks that never failed are absent.
    pub fn task_failures(&self) -> Vec<(&'static str, u64)> {
        lock(&self.task_failures).iter().map(|(&t, &n)| (t, n)).collect()
    }
}

/// Counters stay readable even if a thread panicked while holding the lock.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_counted_per_reason() {
        let cam = CameraHealth::new("gate", "test://".into());
        cam.record_drop(DropReason::Unchanged);
        cam.record_drop(DropReason::Unchanged);
        cam.record_drop(DropReason::QueueFull);
        let snap = cam.snapshot();
        assert_eq!(snap.dropped[DropReason::Unchanged.index()], (DropReason::Unchanged, 2));
        assert_eq!(snap.dropped[DropReason::QueueFull.index()], (DropReason::QueueFull, 1));
        assert_eq!(snap.dropped[DropReason::FpsCap.index()], (DropReason::FpsCap, 0));
    }

    #[test]
    fn rate_meter_measures_and_then_decays_to_zero() {
        let mut meter = RateMeter::default();
        let t0 = Instant::now();
        for i in 0..=50 {
            meter.tick(t0 + Duration::from_millis(40 * i));
        }
        let now = t0 + Duration::from_millis(2000);
        assert!((meter.fps(now) - 25.0).abs() < 0.5, "{}", meter.fps(now));
        assert_eq!(meter.fps(now + Duration::from_secs(5)), 0.0);
    }

    #[test]
    fn state_since_survives_a_repeated_state() {
        let cam = CameraHealth::new("gate", "test://".into());
        cam.set_state(CameraState::Up);
        std::thread::sleep(Duration::from_millis(20));
        cam.set_state(CameraState::Up);
        assert!(cam.snapshot().state_for >= Duration::from_millis(20));
    }
}
