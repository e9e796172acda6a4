//! Network cameras against real servers on loopback: an HTTP multipart MJPEG stream
//! served here, and an RTSP server (gst-rtsp-server) streaming the bundled real clip.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capture::{BoardCapture, CameraConfig, RawFrame, spawn_camera};
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;
use health::{CameraHealth, CameraState};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn start(entry: &str) -> (Arc<CameraHealth>, mpsc::Receiver<RawFrame>, CancellationToken, capture::CameraHandle) {
    let cam: CameraConfig = toml::from_str(entry).unwrap();
    let board = Arc::new(BoardCapture { convert: "videoconvert".into(), ..Default::default() });
    capture::init(&board).unwrap();
    let health = Arc::new(CameraHealth::new(cam.id.as_str(), String::new()));
    let (tx, rx) = mpsc::channel(256);
    let cancel = CancellationToken::new();
    let handle = spawn_camera(cam, board, health.clone(), tx, cancel.clone()).unwrap();
    (health, rx, cancel, handle)
}

fn wait_for(health: &CameraHealth, secs: u64, what: &str, cond: impl Fn(&CameraHealth) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond(health) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {:?}", health.snapshot());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A 320x240 JPEG whose bright bar moves with `i`.
fn jpeg(i: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(320, 240, |x, y| {
        if (x + i * 8) % 320 < 40 {
            image::Rgb([250, 250, 250])
        } else {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
        }
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// Serves multipart MJPEG: the first client gets `first` frames and then the connection
/// drops (a flaky Wi-Fi camera); later clients get frames until they hang up.
fn mjpeg_server(first: u32) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let head = "HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n";
            if stream.write_all(head.as_bytes()).is_err() {
                continue;
            }
            let limit = if n == 0 { first } else { u32::MAX };
            for i in 0..limit {
                let body = jpeg(i);
                let part = format!("--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n", body.len());
                if stream
                    .write_all(part.as_bytes())
                    .and_then(|_| stream.write_all(&body))
                    .and_then(|_| stream.write_all(b"\r\n"))
                    .is_err()
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(40));
            }
        }
    });
    port
}

#[test]
fn http_mjpeg_delivers_and_survives_a_dropped_connection() {
    let port = mjpeg_server(10);
    let (health, mut rx, cancel, handle) =
        start(&format!("id = \"wifi\"\nuri = \"http://127.0.0.1:{port}/video.mjpg\"\nstall_timeout = \"3s\""));
    wait_for(&health, 20, "the first frames", |h| h.captured() >= 5);
    let frame = rx.try_recv().unwrap();
    assert_eq!((frame.width(), frame.height()), (320, 240));
    // The server drops the first connection after 10 frames; the camera reconnects.
    wait_for(&health, 30, "a reconnect", |h| h.restarts() >= 1 && h.captured() >= 15);
    wait_for(&health, 10, "up again", |h| h.state() == CameraState::Up);
    cancel.cancel();
    handle.join().unwrap();
}

#[test]
fn rtsp_streams_the_real_clip() {
    let clip =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../samples/cap12-webcam.webm").canonicalize().unwrap();
    gstreamer::init().unwrap();
    let main_loop = gstreamer::glib::MainLoop::new(None, false);
    let server = rtsp::RTSPServer::new();
    server.set_address("127.0.0.1");
    server.set_service("0");
    let factory = rtsp::RTSPMediaFactory::new();
    factory.set_launch(&format!(
        "( filesrc location=\"{}\" ! matroskademux ! rtpvp8pay name=pay0 pt=96 )",
        clip.display()
    ));
    factory.set_shared(true);
    server.mount_points().unwrap().add_factory("/clip", factory);
    let source_id = server.attach(None).unwrap();
    let port = server.bound_port();
    let loop_thread = {
        let main_loop = main_loop.clone();
        std::thread::spawn(move || main_loop.run())
    };

    let (health, mut rx, cancel, handle) = start(&format!("id = \"ipcam\"\nuri = \"rtsp://127.0.0.1:{port}/clip\""));
    wait_for(&health, 30, "RTSP frames", |h| h.captured() >= 20);
    assert_eq!(health.state(), CameraState::Up);
    let frame = rx.try_recv().unwrap();
    assert_eq!((frame.width(), frame.height()), (400, 300));
    cancel.cancel();
    handle.join().unwrap();

    source_id.remove();
    main_loop.quit();
    loop_thread.join().unwrap();
}

/// What [`flaky_server`] does at the moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Frames at 25 a second.
    Serve,
    /// Connections stay open and nothing more is sent (a hung encoder).
    Stall,
    /// Parts arrive on time, framed correctly, holding no JPEG.
    Corrupt,
    /// The listener is closed and every connection cut (a camera rebooting).
    Killed,
}

/// A multipart MJPEG server whose behaviour the test switches at any moment.
fn flaky_server() -> (u16, Arc<std::sync::Mutex<Mode>>) {
    use std::sync::Mutex;
    let mode = Arc::new(Mutex::new(Mode::Serve));
    let bind = |port: u16| {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        listener
    };
    let first = bind(0);
    let port = first.local_addr().unwrap().port();
    let shared = mode.clone();
    std::thread::spawn(move || {
        let mut listener = Some(first);
        loop {
            let now = *shared.lock().unwrap();
            if now == Mode::Killed {
                listener = None;
            } else if listener.is_none() {
                listener = Some(bind(port));
            }
            let Some(accepted) = listener.as_ref().and_then(|l| l.accept().ok()) else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            let mode = shared.clone();
            std::thread::spawn(move || serve_flaky(accepted.0, &mode));
        }
    });
    (port, mode)
}

/// One client of [`flaky_server`]: served until the server is killed or the client leaves.
fn serve_flaky(mut stream: std::net::TcpStream, mode: &std::sync::Mutex<Mode>) {
    stream.set_nonblocking(false).unwrap();
    let mut request = [0u8; 1024];
    let _ = stream.read(&mut request);
    let mut head_sent = false;
    for i in 0.. {
        let body = match *mode.lock().unwrap() {
            Mode::Killed => return,
            Mode::Stall => {
                std::thread::sleep(Duration::from_millis(40));
                continue;
            }
            Mode::Serve => jpeg(i),
            // The JPEG start marker, then bytes that mean nothing.
            Mode::Corrupt => [0xFF, 0xD8].into_iter().chain((0..4000u32).map(|n| (n * 7919 + i) as u8)).collect(),
        };
        let mut out = Vec::new();
        if !head_sent {
            out.extend_from_slice(
                b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n",
            );
            head_sent = true;
        }
        out.extend_from_slice(
            format!("--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(),
        );
        out.extend_from_slice(&body);
        out.extend_from_slice(b"\r\n");
        if stream.write_all(&out).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(40));
    }
}

/// A small seeded generator, so a failing run can be replayed (`OBSCURA_FLAP_SEED`).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn between(&mut self, low: f64, high: f64) -> Duration {
        Duration::from_secs_f64(low + (high - low) * (self.next() % 1000) as f64 / 1000.0)
    }
}

/// Issue 20, item 4. A camera whose source is killed, stalled or handed a corrupt stream
/// is reported `down` with a reason, and is `up` again within 20 s of its source coming
/// back, however often it flapped before (the reconnect follows the source, not a
/// back-off grown to a minute); a second camera keeps its rate throughout. CI runs one
/// event of each kind; `scripts/reliability cameras` runs `OBSCURA_FLAP_EVENTS` of them
/// at random, with random lengths.
#[test]
fn r20_a_camera_killed_stalled_or_garbled_is_down_with_a_reason_and_back_soon_after_its_source() {
    let events: usize = std::env::var("OBSCURA_FLAP_EVENTS").map_or(3, |n| n.parse().unwrap());
    let seed: u64 = std::env::var("OBSCURA_FLAP_SEED").map_or_else(
        |_| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1,
        |s| s.parse().unwrap(),
    );
    println!("flap: seed {seed}, {events} events");
    let mut rng = Rng(seed);
    let (port, mode) = flaky_server();
    let set = |m: Mode| *mode.lock().unwrap() = m;
    let (flaky, _flaky_rx, flaky_cancel, flaky_handle) =
        start(&format!("id = \"flaky\"\nuri = \"http://127.0.0.1:{port}/video.mjpg\"\nstall_timeout = \"1s\""));
    let steady_fps = 10.0;
    let (steady, _steady_rx, steady_cancel, steady_handle) =
        start("id = \"steady\"\nuri = \"test://ball\"\nwidth = 320\nheight = 240\nframerate = 10");
    wait_for(&flaky, 30, "the flaky camera's first frames", |h| h.state() == CameraState::Up && h.captured() >= 5);
    wait_for(&steady, 30, "the steady camera's first frames", |h| h.state() == CameraState::Up);

    let started = Instant::now();
    let steady_before = steady.captured();
    let (mut worst, mut slowest_steady) = (Duration::ZERO, f64::MAX);
    let mut reasons = std::collections::BTreeMap::<&str, std::collections::BTreeSet<String>>::new();
    for event in 0..events {
        let kind = if events <= 3 {
            [Mode::Killed, Mode::Stall, Mode::Corrupt][event % 3]
        } else {
            [Mode::Killed, Mode::Stall, Mode::Corrupt][(rng.next() % 3) as usize]
        };
        // A stall or a garbled stream is noticed after `stall_timeout` (1 s) at the latest.
        let hold = match (events <= 3, kind) {
            (true, Mode::Killed) => Duration::from_secs(1),
            (true, _) => Duration::from_millis(2500),
            (false, Mode::Killed) => rng.between(0.3, 6.0),
            (false, _) => rng.between(2.0, 8.0),
        };
        let (steady_at, event_start) = (steady.captured(), Instant::now());
        set(kind);
        let mut down = None;
        while event_start.elapsed() < hold {
            if let CameraState::Down { reason } = flaky.state() {
                down.get_or_insert(reason);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let Some(reason) = down else {
            panic!("event {event}: {kind:?} for {hold:?} and the camera never went down: {:?}", flaky.snapshot());
        };
        set(Mode::Serve);
        let back = Instant::now();
        let captured_at = flaky.captured();
        wait_for(&flaky, 30, "the camera to recover", |h| h.state() == CameraState::Up && h.captured() > captured_at);
        let recovery = back.elapsed();
        // The steady camera over the event and the recovery.
        let fps = (steady.captured() - steady_at) as f64 / event_start.elapsed().as_secs_f64();
        println!(
            "flap: event {event}: {kind:?} for {:.1} s, down ({reason}), back {:.2} s after its source; steady camera {fps:.1} fps",
            hold.as_secs_f64(),
            recovery.as_secs_f64()
        );
        reasons.entry(format!("{kind:?}").leak()).or_default().insert(reason);
        worst = worst.max(recovery);
        slowest_steady = slowest_steady.min(fps);
        assert!(recovery <= Duration::from_secs(20), "event {event}: {kind:?}: back only after {recovery:?}");
        // Up for a while before the next event, as a flapping camera is.
        let up = if events <= 3 { Duration::from_millis(500) } else { rng.between(0.5, 4.0) };
        std::thread::sleep(up);
    }
    let steady_fps_overall = (steady.captured() - steady_before) as f64 / started.elapsed().as_secs_f64();
    println!(
        "flap: {events} events in {:.0} s; worst recovery {:.2} s; the steady camera {steady_fps_overall:.1} fps overall, {slowest_steady:.1} at its slowest event; reasons {reasons:?}",
        started.elapsed().as_secs_f64(),
        worst.as_secs_f64()
    );
    assert!(steady_fps_overall >= steady_fps * 0.8, "the steady camera slowed to {steady_fps_overall:.1} fps");
    assert_eq!(steady.restarts(), 0, "the steady camera restarted: {:?}", steady.snapshot());
    flaky_cancel.cancel();
    steady_cancel.cancel();
    flaky_handle.join().unwrap();
    steady_handle.join().unwrap();
}
