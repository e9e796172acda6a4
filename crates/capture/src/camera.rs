//! One camera's thread: open the source, pull and sample frames, and when anything goes
//! wrong, say why, wait, and open it again.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
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
/// The longest wait before reopening a network source that answers a TCP connect (a
/// stalled or garbled stream): a camera that flaps is back this soon after it heals.
const ANSWERING_MAX: Duration = Duration::from_secs(8);
/// How often a down network source is probed with a TCP connect (jittered by a quarter),
/// and how long one probe may take.
const PROBE_EVERY: Duration = Duration::from_secs(2);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// A session that delivered frames for this long resets the backoff.
const HEALTHY_FOR: Duration = Duration::from_secs(30);

/// The waits between attempts to reopen a failed source: from [`BACKOFF_MIN`], doubling,
/// each stretched by up to itself again at random (under `max`), so cameras that fail
/// together (an NVR rebooting, a switch going down) do not all retry at one instant.
#[derive(Debug)]
struct Backoff {
    max: Duration,
    waits: ExponentialBackoff,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        let waits = ExponentialBuilder::new()
            .with_min_delay(BACKOFF_MIN)
            // The jitter adds up to the wait again: half the longest wait, before it.
            .with_max_delay(max / 2)
            .with_jitter()
            .without_max_times()
            .build();
        Backoff { max, waits }
    }

    /// The next wait.
    fn next(&mut self) -> Duration {
        self.waits.next().unwrap_or(self.max).min(self.max)
    }

    /// After a healthy session: start again from the shortest wait.
    fn reset(&mut self) {
        *self = Backoff::new(self.max);
    }
}

/// A network source's address, probed with a TCP connect while its camera is down, so
/// the camera reopens when the source answers again rather than when a back-off grown
/// long while it flapped runs out. A connect costs a SYN and a FIN; a pipeline costs
/// threads, sockets and a codec.
#[derive(Debug)]
struct Probe {
    host: String,
    port: u16,
}

impl Probe {
    fn of(source: &Source) -> Option<Probe> {
        source.network_address().map(|(host, port)| Probe { host, port })
    }

    /// Whether any of the host's addresses accepts a TCP connection now.
    fn answers(&self) -> bool {
        use std::net::{TcpStream, ToSocketAddrs};
        let Ok(addrs) = (self.host.as_str(), self.port).to_socket_addrs() else { return false };
        addrs.into_iter().any(|addr| TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).is_ok())
    }
}

/// A jittered probe interval: from 3/4 to 5/4 of [`PROBE_EVERY`], so cameras behind one
/// NVR do not knock together.
fn probe_interval() -> Duration {
    let nanos = u64::from(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().subsec_nanos());
    PROBE_EVERY * 3 / 4 + PROBE_EVERY / 2 * (nanos % 1000) as u32 / 1000
}

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
        let probe = Probe::of(&source);
        let (mut backoff, mut answering) = (Backoff::new(BACKOFF_MAX), Backoff::new(ANSWERING_MAX));
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
                        backoff.reset();
                        answering.reset();
                    }
                    let permanent = matches!(error, CaptureError::Config(_) | CaptureError::MissingElement { .. });
                    let (wait, soon) = (backoff.next(), answering.next());
                    let reason = match &probe {
                        _ if permanent => error.to_string(),
                        Some(probe) => format!(
                            "{error}; retrying once {}:{} answers (probed every {}s; up to {:.1}s while it does), at the latest in {:.1}s",
                            probe.host,
                            probe.port,
                            PROBE_EVERY.as_secs(),
                            soon.min(wait).as_secs_f32(),
                            wait.as_secs_f32()
                        ),
                        None => format!("{error}; retrying in {:.1}s", wait.as_secs_f32()),
                    };
                    tracing::warn!(target: "capture", camera = %id, source = %source.display(), "camera down: {reason}");
                    self.health.set_state(CameraState::Down { reason });
                    if permanent {
                        return;
                    }
                    let go_on = match &probe {
                        Some(probe) => self.wait_for_source(probe, soon, wait),
                        None => self.sleep(wait),
                    };
                    if !go_on {
                        return;
                    }
                    self.health.record_restart();
                }
            }
        }
    }

    /// Waits to reopen a network source, probing it every [`PROBE_EVERY`]: reopens at once
    /// when it answers after it did not (it is back), after `soon` while it answers (a
    /// stalled or garbled stream may heal any moment), and after `wait` whatever the probes
    /// say (a proxy or a firewall may refuse the probe and pass GStreamer). Returns false
    /// if shutdown began.
    fn wait_for_source(&self, probe: &Probe, soon: Duration, wait: Duration) -> bool {
        let start = Instant::now();
        let mut refused = false;
        loop {
            let mut until = (Instant::now() + probe_interval()).min(start + wait);
            if probe.answers() {
                if refused || start.elapsed() >= soon {
                    return !self.cancel.is_cancelled();
                }
                // Answering: look again when `soon` is up rather than at the next probe.
                until = until.min(start + soon);
            } else {
                refused = true;
            }
            if !self.sleep(until.saturating_duration_since(Instant::now())) {
                return false;
            }
            if start.elapsed() >= wait {
                return true;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Cameras that fail together (an NVR rebooting, a switch going down) must not all
    /// retry at the same instant, again and again: each wait is jittered.
    #[test]
    fn waits_double_from_one_second_to_a_minute_with_jitter() {
        let waits = |b: &mut Backoff| (0..10).map(|_| b.next()).collect::<Vec<_>>();
        let (mut one, mut two) = (Backoff::new(BACKOFF_MAX), Backoff::new(BACKOFF_MAX));
        let (a, b) = (waits(&mut one), waits(&mut two));
        assert!(a[0] >= BACKOFF_MIN && a[0] < BACKOFF_MIN * 2, "{a:?}");
        assert!(a.windows(2).all(|w| w[1] >= w[0] || w[1] >= BACKOFF_MAX / 2), "{a:?}");
        assert!(a[9] >= BACKOFF_MAX / 2 && a.iter().all(|w| *w < BACKOFF_MAX), "{a:?}");
        assert_ne!(a, b, "two cameras' waits are the same to the nanosecond");
        one.reset();
        let again = one.next();
        assert!(again >= BACKOFF_MIN && again < BACKOFF_MIN * 2, "{again:?}");
        let mut answering = Backoff::new(ANSWERING_MAX);
        let short = waits(&mut answering);
        assert!(short.iter().all(|w| *w <= ANSWERING_MAX) && short[9] >= ANSWERING_MAX / 2, "{short:?}");
    }

    /// Issue 20: a down network camera is probed with a TCP connect, which tells a source
    /// that is back from one that is not.
    #[test]
    fn a_probe_tells_a_listening_source_from_a_closed_one() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let probe = Probe::of(&Source::parse_uri(&format!("rtsp://u:p@127.0.0.1:{port}/s")).unwrap()).unwrap();
        assert!(probe.answers());
        drop(listener);
        assert!(!probe.answers());
        assert!(Probe::of(&Source::parse_uri("test://ball").unwrap()).is_none());
        let every = probe_interval();
        assert!(every >= PROBE_EVERY * 3 / 4 && every <= PROBE_EVERY * 5 / 4, "{every:?}");
    }
}
