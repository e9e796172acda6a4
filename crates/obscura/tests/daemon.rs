//! The real `obscura` binary as systemd would run it: readiness and watchdog over the
//! notify socket, HTTP endpoints, and a clean exit on SIGTERM.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;

use common::{Daemon, obscura};

/// `obscura run` in a new temporary directory.
fn start(config: &str, extra_env: &[(&str, &str)]) -> (Daemon, tempfile::TempDir) {
    start_in(tempfile::tempdir().unwrap(), config, extra_env)
}

/// Like `start`, in a directory the test prepared (its state is in `DIR/state`).
fn start_in(dir: tempfile::TempDir, config: &str, extra_env: &[(&str, &str)]) -> (Daemon, tempfile::TempDir) {
    (Daemon::spawn(dir.path(), config, extra_env), dir)
}

/// The address of the `listening on http://ADDR` line.
fn address(daemon: &mut Daemon) -> SocketAddr {
    let line = daemon.wait_for_line("listening on http://", 30);
    let rest = line.split("http://").nth(1).unwrap();
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

/// A plain HTTP/1.1 GET; returns the status code and body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let code = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (code, body)
}

const TWO_CAMERAS: &str = r#"
[[camera]]
id = "pattern"
uri = "test://ball"
width = 160
height = 120
framerate = 30
sample = { fps = 5 }

[[camera]]
id = "missing"
uri = "file:///nonexistent/entrance.webm"
"#;

#[test]
fn runs_reports_and_shuts_down_cleanly_on_sigterm() {
    let notify_dir = tempfile::tempdir().unwrap();
    let socket_path = notify_dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let (mut daemon, _dir) =
        start(TWO_CAMERAS, &[("NOTIFY_SOCKET", socket_path.to_str().unwrap()), ("WATCHDOG_USEC", "400000")]);
    let addr = address(&mut daemon);

    // systemd hears READY=1, then watchdog pings. Like systemd, the test reads every
    // notification as it comes (the daemon's sends block once 10 wait unread).
    let (heard_tx, heard) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok(n) = socket.recv(&mut buf) {
            if heard_tx.send(String::from_utf8_lossy(&buf[..n]).into_owned()).is_err() {
                break;
            }
        }
    });
    let first = heard.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(first.contains("READY=1"), "{first}");
    assert!(heard.recv_timeout(Duration::from_secs(30)).unwrap().contains("WATCHDOG=1"));

    assert_eq!(get(addr, "/healthz").0, 200);
    assert_eq!(get(addr, "/readyz").0, 200);

    // The healthy camera delivers while the broken one is down with its reason.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let (code, body) = get(addr, "/api/v1/status");
        assert_eq!(code, 200);
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        if status["cameras"][0]["delivered"].as_u64().unwrap() >= 3 {
            break status;
        }
        assert!(Instant::now() < deadline, "no frames: {status}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status["cameras"][0]["state"], "up");
    // Every delivered frame went through the anonymizer (or was dropped, fail closed).
    let deadline = Instant::now() + Duration::from_secs(20);
    while get_json(addr, "/api/v1/status")["cameras"][0]["anonymized"].as_u64().unwrap() < 3 {
        assert!(Instant::now() < deadline, "nothing anonymized");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(status["cameras"][1]["state"], "down");
    let reason = status["cameras"][1]["reason"].as_str().unwrap();
    assert!(reason.contains("/nonexistent/entrance.webm: does not exist"), "{reason}");

    let (code, metrics) = get(addr, "/metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains("obscura_camera_up{camera=\"pattern\"} 1"), "{metrics}");
    assert!(metrics.contains("obscura_camera_up{camera=\"missing\"} 0"), "{metrics}");
    assert!(metrics.contains("obscura_frames_dropped_total{camera=\"pattern\",reason=\"fps_cap\"}"));

    let exit = daemon.terminate();
    assert!(exit.success(), "exit {exit:?}; log:\n{}", daemon.log.join("\n"));
    assert!(daemon.log.iter().any(|l| l.contains("shutting down") && l.contains("SIGTERM")));
    assert!(daemon.log.iter().any(|l| l.contains("shutdown complete")), "{}", daemon.log.join("\n"));
    // STOPPING=1 reached systemd before the exit.
    assert!(heard.try_iter().any(|n| n.contains("STOPPING=1")));
}

fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (code, body) = get(addr, path);
    assert_eq!(code, 200);
    serde_json::from_str(&body).unwrap()
}

#[test]
fn the_face_in_the_sample_clip_is_redacted_in_the_pipeline() {
    let clip = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../samples/cap12-webcam.webm").canonicalize().unwrap();
    let config = format!("[[camera]]\nid = \"webcam\"\nuri = \"file://{}\"\nsample = {{ fps = 2 }}\n", clip.display());
    let (mut daemon, _dir) = start(&config, &[]);
    let addr = address(&mut daemon);
    let deadline = Instant::now() + Duration::from_secs(60);
    let camera = loop {
        let status = get_json(addr, "/api/v1/status");
        let camera = status["cameras"][0].clone();
        if camera["anonymized"].as_u64().unwrap() >= 10 {
            break camera;
        }
        assert!(Instant::now() < deadline, "too few frames anonymized: {camera}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // One face on screen most of the clip.
    assert!(camera["faces_redacted"].as_u64().unwrap() >= 8, "{camera}");
    let (_, metrics) = get(addr, "/metrics");
    assert!(metrics.contains("obscura_faces_redacted_total{camera=\"webcam\"}"), "{metrics}");
    assert!(metrics.contains("obscura_plate_areas_redacted_total{camera=\"webcam\"}"), "{metrics}");
    assert!(daemon.terminate().success());
}

#[test]
fn consented_frames_are_stored_audited_and_erasable_and_the_rest_dropped() {
    let clip = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../samples/cap12-webcam.webm").canonicalize().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let state_arg = state.to_str().unwrap();
    let add = obscura()
        .args(["consent", "add", "--state-dir", state_arg, "--scope", "camera:webcam", "--covered", "site staff"])
        .args(["--basis", "consent (signed forms)", "--purpose", "annotate"])
        .output()
        .unwrap();
    assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));
    let config = format!(
        "[[camera]]\nid = \"webcam\"\nuri = \"file://{0}\"\nsample = {{ fps = 2 }}\n\
         [[camera]]\nid = \"hall\"\nuri = \"file://{0}\"\nsample = {{ fps = 2 }}\n",
        clip.display()
    );
    let (mut daemon, dir) = start_in(dir, &config, &[]);
    let addr = address(&mut daemon);
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        let status = get_json(addr, "/api/v1/status");
        let (webcam, hall) = (&status["cameras"][0], &status["cameras"][1]);
        let stored = webcam["stored"].as_u64().unwrap() >= 5;
        if stored
            && hall["dropped"]["no_consent"].as_u64().unwrap() >= 5
            && status["prelabel"]["done"].as_u64().unwrap() >= 3
        {
            break status;
        }
        assert!(Instant::now() < deadline, "too few frames stored or dropped: {status}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status["cameras"][1]["stored"], 0, "no consent covers `hall`: {status}");
    assert_eq!(status["storage"]["last_retention"]["outcome"], "ok", "retention ran at start-up: {status}");
    let (_, metrics) = get(addr, "/metrics");
    assert!(metrics.contains("obscura_frames_stored_total{camera=\"webcam\",consent=\"annotate\"}"), "{metrics}");
    assert!(metrics.contains("obscura_frames_dropped_total{camera=\"hall\",reason=\"no_consent\"}"), "{metrics}");
    assert!(metrics.contains("obscura_retention_last_run_timestamp_seconds"), "{metrics}");
    assert!(daemon.terminate().success());

    let verify = obscura().args(["audit", "verify", "--state-dir", state_arg]).output().unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    let zip = dir.path().join("access.zip");
    let export = obscura()
        .args(["access-export", "--state-dir", state_arg, "--camera", "webcam"])
        .args(["--from", "2000-01-01 00:00:00", "--until", "2100-01-01 00:00:00", "-o", zip.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&zip).unwrap()).unwrap();
    let frames: serde_json::Value = serde_json::from_reader(archive.by_name("frames.json").unwrap()).unwrap();
    let frames = frames.as_array().unwrap();
    assert!(frames.len() >= 5);
    assert!(archive.by_name(&format!("frames/{}.jpg", frames[0]["id"])).is_ok());
    // The person on screen, pre-labelled by NanoDet on the stored (anonymized) frame, apart
    // from the anonymizer's own face boxes.
    let sources = |source: &str, label: &str| {
        frames
            .iter()
            .filter(|f| {
                f["detections"].as_array().unwrap().iter().any(|d| d["source"] == source && d["label"] == label)
            })
            .count()
    };
    assert!(sources("prelabel", "person") >= 1, "{frames:?}");
    assert!(sources("anonymizer", "face") >= 3, "{frames:?}");
    let refused = obscura()
        .args(["erase", "--state-dir", state_arg, "--camera", "webcam"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    let erase = obscura().args(["erase", "--state-dir", state_arg, "--camera", "webcam", "--yes"]).output().unwrap();
    let out = String::from_utf8_lossy(&erase.stdout);
    assert!(erase.status.success() && out.contains("erased"), "{out}");
}

#[test]
fn an_altered_model_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let mut bytes = std::fs::read(source.join("centerface.onnx")).unwrap();
    bytes[4096] ^= 0x40;
    std::fs::write(models.join("centerface.onnx"), bytes).unwrap();
    std::fs::copy(source.join("plate_det.onnx"), models.join("plate_det.onnx")).unwrap();
    let out = obscura()
        .args(["run", "--state-dir"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0"])
        .env("OBSCURA_CONFIG", "/dev/null")
        .env("OBSCURA_ANONYMIZE__MODELS", &models)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot start anonymization") && stderr.contains("altered or corrupt"), "{stderr}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let (mut daemon, _dir) = start(TWO_CAMERAS, &[("OBSCURA_LOG__FORMAT", "json")]);
    let line = daemon.wait_for_line("listening on", 30);
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["level"], "INFO");
    assert_eq!(event["target"], "obscura");
    assert!(daemon.terminate().success());
}

#[test]
fn sigterm_right_after_start_is_still_graceful() {
    let (mut daemon, _dir) = start(TWO_CAMERAS, &[]);
    daemon.wait_for_line("starting", 30);
    let exit = daemon.terminate();
    assert!(exit.success(), "exit {exit:?}; log:\n{}", daemon.log.join("\n"));
    assert!(daemon.log.iter().any(|l| l.contains("shutdown complete")));
}

#[test]
fn a_config_typo_stops_start_up_naming_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("obscura.toml");
    std::fs::write(&path, "[http]\nlisen = \"127.0.0.1:0\"\n").unwrap();
    let out = obscura().arg("run").arg("--config").arg(&path).arg("--state-dir").arg(dir.path()).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(stderr.contains("line 2") && stderr.contains("unknown field `lisen`"), "{stderr}");
}

#[test]
fn a_busy_port_is_a_clear_start_up_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = obscura()
        .args(["run", "--state-dir"])
        .arg(dir.path())
        .args(["--listen", &addr])
        .env("OBSCURA_CONFIG", "/dev/null")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("cannot listen on {addr}")), "{stderr}");
}

#[test]
fn doctor_names_each_broken_camera_and_its_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("obscura.toml");
    std::fs::write(
        &path,
        "[[camera]]\nid = \"ok\"\nuri = \"test://smpte\"\n\n[[camera]]\nid = \"typo\"\nuri = \"rtps://cam/1\"\n\n[[camera]]\nid = \"usb\"\nuri = \"v4l2:///dev/video97\"\n",
    )
    .unwrap();
    let out = obscura().arg("doctor").arg("--config").arg(&path).arg("--state-dir").arg(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    let line = |needle: &str| {
        stdout.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no `{needle}` in\n{stdout}"))
    };
    assert!(line("camera ok").contains("ok  "));
    assert!(line("camera typo").contains("FAIL") && line("camera typo").contains("unknown URI scheme `rtps://`"));
    assert!(line("camera usb").contains("FAIL") && line("camera usb").contains("/dev/video97: does not exist"));
    assert!(line("element videoconvert").contains("installed"));
    assert!(line("disk").contains("GiB free"));
    assert!(stdout.contains("2 problem(s) to fix"), "{stdout}");
}

#[test]
fn help_and_version_are_useful() {
    let out = obscura().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["run", "doctor", "bench"] {
        assert!(help.contains(cmd), "{help}");
    }
    let out = obscura().arg("--version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("obscura {}", env!("CARGO_PKG_VERSION")));
}

/// One raw HTTP/1.1 request; returns the status, the headers and the body bytes.
fn http(addr: SocketAddr, request: &str) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, head, response[split + 4..].to_vec())
}

#[test]
fn first_start_prints_a_setup_code_that_makes_the_admin_who_then_watches_the_live_view() {
    let config = looping_clip();
    let (mut daemon, dir) = start(&config, &[]);
    let (addr, cookie) = admin_session(&mut daemon);
    // The live view shows only a camera a consent with the `annotate` purpose covers.
    let add = obscura()
        .args(["consent", "add", "--scope", "camera:webcam", "--covered", "site staff"])
        .args(["--basis", "consent (signed forms)", "--purpose", "annotate", "--state-dir"])
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));
    // Plain HTTP on loopback: the cookie is not `__Host-` (that needs HTTPS).
    assert!(cookie.starts_with("obscura-session="), "{cookie}");
    // The live view: MJPEG parts, each a JPEG of a frame the anonymizer made.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(stream, "GET /api/v1/cameras/webcam/live HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\n\r\n").unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 65536];
    while seen.windows(8).filter(|w| *w == b"--frame\r").count() < 3 {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the live stream ended");
        seen.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("multipart/x-mixed-replace; boundary=frame"), "{}", &text[..200.min(text.len())]);
    let start = seen.windows(2).position(|w| w == [0xff, 0xd8]).unwrap();
    let jpeg = image::load_from_memory(&seen[start..]).or_else(|_| {
        let end = seen[start..].windows(2).position(|w| w == [0xff, 0xd9]).unwrap() + start + 2;
        image::load_from_memory(&seen[start..end])
    });
    // At most 640 wide (the clip is 400 wide, so as it is).
    assert_eq!(jpeg.unwrap().width(), 400);
    // Without a session there is no live view.
    let (status, _, _) =
        http(addr, &format!("GET /api/v1/cameras/webcam/live HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"));
    assert_eq!(status, 401);
    drop(stream);
    assert!(daemon.terminate().success());
}

/// Like `http`, but what arrived within `wait` if the answer goes on (a stream).
fn http_within(addr: SocketAddr, request: &str, wait: Duration) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let (deadline, mut response, mut buf) = (Instant::now() + wait, Vec::new(), [0u8; 65536]);
    while let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
        }
    }
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, head, response[split + 4..].to_vec())
}

/// One camera, `webcam`, playing the bundled clip in a loop at 5 frames a second.
fn looping_clip() -> String {
    let clip = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../samples/cap12-webcam.webm").canonicalize().unwrap();
    format!("[[camera]]\nid = \"webcam\"\nuri = \"file://{}\"\nloop = true\nsample = {{ fps = 5 }}\n", clip.display())
}

/// The daemon's address, and the session cookie of a first admin made with the setup
/// code it prints at first start.
fn admin_session(daemon: &mut Daemon) -> (SocketAddr, String) {
    let line = daemon.wait_for_line("setup code", 60);
    assert!(line.contains("no accounts yet"), "{line}");
    let is_code = |t: &&str| {
        t.len() == 19
            && t.split('-').count() == 4
            && t.chars().all(|c| c == '-' || c.is_ascii_digit() || c.is_ascii_uppercase())
    };
    let code = line
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .find(is_code)
        .unwrap_or_else(|| panic!("no setup code in `{line}`"))
        .to_owned();
    let addr = address(daemon);
    let post = |path: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let setup = format!(r#"{{"code": "{code}", "name": "ada", "password": "a long enough passphrase"}}"#);
    let (status, _, answer) = http(addr, &post("/api/v1/setup", &setup));
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&answer));
    let login = r#"{"name": "ada", "password": "a long enough passphrase"}"#;
    let (status, head, _) = http(addr, &post("/api/v1/auth/login", login));
    assert_eq!(status, 200);
    let cookie = head.lines().find_map(|l| l.strip_prefix("set-cookie: ")).unwrap().split(';').next().unwrap();
    (addr, cookie.to_owned())
}

/// Issue 15, item 4: the live view shows a camera only while a consent with the
/// `annotate` purpose covers it. Without one it answers `no_consent` and names the fix;
/// with one it streams; when the consent is withdrawn the stream ends.
#[test]
fn the_live_view_follows_the_cameras_annotate_consent() {
    let config = looping_clip();
    let (mut daemon, dir) = start(&config, &[]);
    let (addr, cookie) = admin_session(&mut daemon);
    let live = format!(
        "GET /api/v1/cameras/webcam/live HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    );

    let (status, _, body) = http_within(addr, &live, Duration::from_secs(5));
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["code"], "no_consent");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("annotate") && message.contains("webcam"), "{message}");

    let state = dir.path().join("state");
    let consent = |args: &[&str]| {
        let out = obscura().arg("consent").args(args).arg("--state-dir").arg(&state).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let added = consent(&[
        "add",
        "--scope",
        "camera:webcam",
        "--covered",
        "site staff",
        "--basis",
        "consent (signed forms)",
        "--purpose",
        "annotate",
    ]);
    let id = added.split_whitespace().nth(2).unwrap().to_owned();

    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream.write_all(live.as_bytes()).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 65536];
    while seen.windows(8).filter(|w| *w == b"--frame\r").count() < 2 {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the live stream ended: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"));

    consent(&["withdraw", &id]);
    let withdrawn = Instant::now();
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => assert!(withdrawn.elapsed() < Duration::from_secs(10), "frames still stream after the withdrawal"),
            Err(e) => panic!("the stream neither ended nor streamed: {e}"),
        }
    }
    assert_eq!(http_within(addr, &live, Duration::from_secs(5)).0, 409);
    assert!(daemon.terminate().success());
}
