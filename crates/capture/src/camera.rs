//! One camera's thread: open the source, pull and sample frames, and when anything goes
//! wrong, say why, wait, and open it again.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use frame::{FrameMeta, RawFrame};
use health::{CameraHealth, CameraState, DropReason};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;

use crate::config::{BoardCapture, CameraConfig};
use crate::gst::GstSession;
use crate::sample::Sampler;
use crate::source::Source;
use crate::v4l2::V4l2Session;
use crate::{CaptureError, Captured};

/// How long one wait for a frame lasts, which bounds how late a shutdown is noticed.
const POLL: Duration = Duration::from_millis(200);
/// First and longest wait between attempts to reopen a failed source.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A session that delivered frames for this long resets the backoff.
const HEALTHY_FOR: Duration = Duration::from_secs(30);

/// A running camera thread.
#[derive(Debug)]
pub struct CameraHandle {
    id: String,
    thread: JoinHandle<()>,
}

impl CameraHandle {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the thread; a panic inside it is reported as an error.
    pub fn join(self) -> Result<(), String> {
        self.thread.join().map_err(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            format!("camera `{}` thread panicked: {what}", self.id)
        })
    }
}

/// Starts the thread for one camera. It runs until `cancel` fires or the next stage
/// closes its channel; it never returns early on a source error.
pub fn spawn_camera(
    cam: CameraConfig,
    board: Arc<BoardCapture>,
    health: Arc<CameraHealth>,
    tx: mpsc::Sender<RawFrame>,
    cancel: CancellationToken,
) -> std::io::Result<CameraHandle> {
    let id = cam.id.to_string();
    let thread = std::thread::Builder::new()
        .name(format!("cam-{id}"))
        .spawn(move || Camera { cam, board, health, tx, cancel }.run())?;
    Ok(CameraHandle { id, thread })
}

struct Camera {
    cam: CameraConfig,
    board: Arc<BoardCapture>,
    health: Arc<CameraHealth>,
    tx: mpsc::Sender<RawFrame>,
    cancel: CancellationToken,
}

/// How a session ended.
enum End {
    /// Shutdown, or the next stage went away.
    Stop,
    /// A file without `loop` reached its end.
    Ended,
    /// Anything else: reopen after a backoff.
    Failed { error: CaptureError, up_for: Duration },
}

enum Session {
    Gst(GstSession),
    V4l2(V4l2Session),
}

impl Session {
    fn open(source: &Source, cam: &CameraConfig, board: &BoardCapture) -> Result<Self, CaptureError> {
        match source {
            Source::V4l2(path) => V4l2Session::open(path, cam).map(Session::V4l2),
            _ => GstSession::open(source, cam, board).map(Session::Gst),
        }
    }

    fn next_frame(&mut self, timeout: Duration) -> Result<Option<Captured>, CaptureError> {
        match self {
            Session::Gst(s) => s.next_frame(timeout),
            Session::V4l2(s) => s.next_frame(timeout),
        }
    }

    fn rewind(&mut self) -> Result<(), CaptureError> {
        match self {
            Session::Gst(s) => s.rewind(),
            Session::V4l2(_) => Err(CaptureError::EndOfStream),
        }
    }
}

impl Camera {
    fn run(self) {
        let id = self.cam.id.clone();
        if !self.cam.enabled {
            self.health.set_state(CameraState::Disabled);
            return;
        }
        let source = match Source::from_config(&self.cam) {
            Ok(source) => source,
            Err(error) => {
                // A wrong URI does not fix itself: report it once and stay down.
                tracing::error!(target: "capture", camera = %id, %error, "camera cannot start; fix its entry in the config");
                self.health.set_state(CameraState::Down { reason: error.to_string() });
                return;
            }
        };
        let mut sampler = Sampler::new(&self.cam.sample);
        let clock_start = Instant::now();
        let mut backoff = BACKOFF_MIN;
        loop {
            self.health.set_state(CameraState::Starting);
            match self.session(&source, &mut sampler, clock_start) {
                End::Stop => return,
                End::Ended => {
                    tracing::info!(target: "capture", camera = %id, "file ended; set `loop = true` to play it again");
                    self.health.set_state(CameraState::Ended);
                    return;
                }
                End::Failed { error, up_for } => {
                    if up_for >= HEALTHY_FOR {
                        backoff = BACKOFF_MIN;
                    }
                    let permanent = matches!(error, CaptureError::Config(_) | CaptureError::MissingElement { .. });
                    let reason = if permanent {
                        error.to_string()
                    } else {
                        format!("{error}; retrying in {}s", backoff.as_secs())
                    };
                    tracing::warn!(target: "capture", camera = %id, source = %source.display(), "camera down: {reason}");
                    self.health.set_state(CameraState::Down { reason });
                    if permanent {
                        return;
                    }
                    if !self.sleep(backoff) {
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    self.health.record_restart();
                }
            }
        }
    }

    /// Runs one session of the source until it fails, ends, or we are told to stop.
    fn session(&self, source: &Source, sampler: &mut Sampler, clock_start: Instant) -> End {
        let mut session = match Session::open(source, &self.cam, &self.board) {
            Ok(session) => session,
            Err(error) => {
                return End::Failed { error, up_for: Duration::ZERO };
            }
        };
        let mut last_frame = Instant::now();
        let mut up_since: Option<Instant> = None;
        let up_for = |up_since: Option<Instant>| up_since.map_or(Duration::ZERO, |t| t.elapsed());
        loop {
            if self.cancel.is_cancelled() {
                return End::Stop;
            }
            match session.next_frame(POLL) {
                Ok(Some(captured)) => {
                    let now = Instant::now();
                    last_frame = now;
                    if up_since.is_none() {
                        up_since = Some(now);
                        self.health.set_state(CameraState::Up);
                        tracing::info!(target: "capture", camera = %self.cam.id, width = captured.width, height = captured.height, "camera up");
                    }
                    if !self.deliver(captured, sampler, now, clock_start) {
                        return End::Stop;
                    }
                }
                Ok(None) => {
                    if last_frame.elapsed() >= self.cam.stall_timeout {
                        let error = CaptureError::Stalled(self.cam.stall_timeout);
                        return End::Failed { error, up_for: up_for(up_since) };
                    }
                }
                Err(CaptureError::BadFrame(why)) => {
                    self.health.record_drop(DropReason::BadFrame);
                    tracing::debug!(target: "capture", camera = %self.cam.id, %why, "frame dropped");
                }
                Err(CaptureError::EndOfStream) if source.is_file() => {
                    if !self.cam.looping {
                        return End::Ended;
                    }
                    if let Err(error) = session.rewind() {
                        return End::Failed { error, up_for: up_for(up_since) };
                    }
                    last_frame = Instant::now();
                }
                Err(error) => {
                    return End::Failed { error, up_for: up_for(up_since) };
                }
            }
        }
    }

    /// Counts, samples and sends one frame. Returns false once the next stage is gone.
    fn deliver(&self, c: Captured, sampler: &mut Sampler, now: Instant, clock_start: Instant) -> bool {
        let seq = self.health.record_captured(now);
        let at = c.media_time.unwrap_or_else(|| now - clock_start);
        if let Err(reason) = sampler.decide(at, c.width, c.height, &c.rgb) {
            self.health.record_drop(reason);
            return true;
        }
        let meta = FrameMeta {
            camera: self.health.id().clone(),
            seq,
            monotonic: now,
            wall: SystemTime::now(),
            media_time: c.media_time,
        };
        let frame = match RawFrame::new(meta, c.width, c.height, c.rgb) {
            Ok(frame) => frame,
            Err(e) => {
                self.health.record_drop(DropReason::BadFrame);
                tracing::debug!(target: "capture", camera = %self.cam.id, error = %e, "frame dropped");
                return true;
            }
        };
        match self.tx.try_send(frame) {
            Ok(()) => {
                self.health.record_delivered();
                true
            }
            Err(TrySendError::Full(_)) => {
                self.health.record_drop(DropReason::QueueFull);
                true
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }

    /// Sleeps, waking early on shutdown. Returns false if shutdown began.
    fn sleep(&self, total: Duration) -> bool {
        let until = Instant::now() + total;
        while Instant::now() < until {
            if self.cancel.is_cancelled() {
                return false;
            }
            std::thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
        }
        !self.cancel.is_cancelled()
    }
}
