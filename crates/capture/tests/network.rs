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
