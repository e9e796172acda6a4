//! Fleet sync end to end, with the real binaries: an `obscura hub` on a free loopback
//! port, a box enrolled with it (pinned to the fingerprint the hub printed) and its
//! daemon capturing a test pattern. Consented frames reach the hub exactly once, with
//! their hashes, and signed receipts land in the box's audit; withdrawing the consent
//! erases the hub's copy; the field engineer's mistakes are refused with their fix.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hub::HubStore;

mod common;

use common::{Daemon, Hub, obscura};

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn box_cli(state: &Path, args: &[&str]) -> Output {
    obscura().args(args).arg("--state-dir").arg(state).stdin(Stdio::null()).output().unwrap()
}

/// `obscura sync status --json` of the box.
fn sync_status(state: &Path, config: &Path) -> serde_json::Value {
    let out = obscura()
        .args(["sync", "status", "--json", "--config"])
        .arg(config)
        .arg("--state-dir")
        .arg(state)
        .output()
        .unwrap();
    serde_json::from_str(&ok(out)).unwrap()
}

fn wait_until<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

const CONFIG: &str = r#"
[[camera]]
id = "yard"
uri = "test://ball"
width = 320
height = 240
framerate = 10
sample = { fps = 2 }

[prelabel]
enabled = false

[sync]
require_review = false
batch_frames = 4
batch_age = "1s"
poll_every = "1s"
"#;

#[test]
fn consented_frames_reach_the_hub_once_with_receipts_and_a_withdrawal_erases_them_there() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::spawn(&dir.path().join("hub"));
    let state = dir.path().join("state");
    let consent = ok(box_cli(
        &state,
        &[
            "consent",
            "add",
            "--scope",
            "camera:yard",
            "--covered",
            "site staff",
            "--basis",
            "consent (signed forms)",
            "--purpose",
            "annotate",
            "--purpose",
            "sync",
        ],
    ));
    let consent_id =
        consent.lines().next().and_then(|l| l.strip_prefix("recorded consent ")).expect("its id").to_owned();

    // Enrol with a one-time token: approved at once.
    let token = ok(hub.cli(&["token"])).trim().to_owned();
    let enrolled = ok(box_cli(
        &state,
        &["sync", "enrol", "--hub", &hub.url(), "--hub-fingerprint", &hub.fingerprint, "--token", &token],
    ));
    assert!(enrolled.contains("state    approved"), "{enrolled}");
    let device: wire::DeviceId =
        enrolled.lines().find_map(|l| l.strip_prefix("device   ")).unwrap().trim().parse().unwrap();
    let key = enrolled.lines().find_map(|l| l.strip_prefix("key      ")).unwrap().trim().to_owned();
    let listed = ok(hub.cli(&["devices", "list"]));
    assert!(listed.contains(&device.to_string()) && listed.contains("approved") && listed.contains(&key), "{listed}");

    // The daemon's state is DIR/state, the enrolled box's.
    let mut daemon = Daemon::spawn(dir.path(), CONFIG, &[]);
    daemon.wait_for_line("ready", 60);
    let config = dir.path().join("obscura.toml");

    let committed = wait_until("three committed batches", 90, || {
        let s = sync_status(&state, &config);
        (s["backlog"]["batches_committed"].as_u64()? >= 3).then_some(s)
    });
    assert_eq!(committed["state"], "approved");
    assert_eq!(committed["key"], key);

    // The hub's own store, not its log: every frame once, with the box's hashes.
    let db = store::HubDb::open(&hub.state).unwrap();
    let at_hub = db.frames(device).unwrap();
    let batches = committed["backlog"]["batches_committed"].as_u64().unwrap() as usize;
    assert!(at_hub.len() >= batches, "each committed batch carried frames: {at_hub:?}");
    let mut unique = at_hub.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), at_hub.len(), "no frame twice");
    let on_box = store::Store::open(&state).unwrap();
    for id in &at_hub {
        let jpeg = on_box.frame_jpeg(store::FrameId(*id)).unwrap();
        let sha = store::sha256_hex(&jpeg);
        assert!(db.blob(&sha).unwrap().is_some(), "frame {id}: the hub holds its JPEG by the same SHA-256");
    }
    let receipts = on_box.audit_entries("batch/").unwrap();
    let receipts: Vec<_> = receipts.iter().filter(|e| e.action == "sync.receipt").collect();
    assert!(receipts.len() >= 3, "{receipts:?}");
    let receipt: wire::Receipt = serde_json::from_value(receipts[0].detail["receipt"].clone()).unwrap();
    let hub_key = wire::unbase64(&receipt.hub_key).unwrap();
    let payload = receipt.verify(&hub_key).expect("a receipt the hub signed");
    assert_eq!(payload.device, device);
    assert!(payload.audit_head.is_some(), "it echoes the box's audit head");
    assert_eq!(on_box.verify_audit().unwrap().map(|n| n > 0), Ok(true));

    // The box's status page and metrics say the same.
    let line = daemon.log.iter().find(|l| l.contains("listening on http://")).cloned().unwrap();
    let addr = line.split("http://").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    let curl = |path: &str| ok(Command::new("curl").args(["-sS", &format!("http://{addr}{path}")]).output().unwrap());
    let status: serde_json::Value = serde_json::from_str(&curl("/api/v1/status")).unwrap();
    assert_eq!(status["sync"]["state"], "approved", "{status}");
    assert!(status["sync"]["commits"].as_u64().unwrap() >= 3, "{status}");
    assert!(status["sync"]["bytes_sent"].as_u64().unwrap() > 0, "{status}");
    let metrics = curl("/metrics");
    assert!(metrics.contains("obscura_sync_commits_total") && metrics.contains("obscura_sync_approved 1"), "{metrics}");

    // Withdrawn: nothing more leaves, and the hub erases what it holds, with a receipt.
    ok(box_cli(&state, &["consent", "withdraw", &consent_id, "--by", "steward"]));
    wait_until("the hub to erase the withdrawn frames", 60, || db.frames(device).unwrap().is_empty().then_some(()));
    // The withdrawal itself travels too, so the hub applies the box's rule to the record.
    let at_hub = wait_until("the withdrawal at the hub", 60, || {
        db.consent(device, &consent_id).unwrap().filter(|c| c.withdrawn_at_ms.is_some())
    });
    assert!(at_hub.purposes.contains(&wire::v1::Purpose::Sync), "{at_hub:?}");
    // The hub answers before the box writes its receipt down: wait for that too.
    wait_until("the consent receipt in the box's audit", 30, || {
        on_box.audit_entries("consents").unwrap().iter().any(|e| e.action == "sync.consent_receipt").then_some(())
    });
    // The hub answers before the box writes its receipt down: wait for that too.
    wait_until("the erasure receipt in the box's audit", 30, || {
        let erasures = on_box.audit_entries("tombstones").unwrap();
        erasures.iter().any(|e| e.action == "sync.erasure_receipt").then_some(())
    });
    wait_until("no erasure pending on the box", 30, || {
        (sync_status(&state, &config)["backlog"]["erasures_pending"] == 0).then_some(())
    });

    assert!(daemon.terminate().success());
    hub.stop();
}

#[test]
fn enrolment_mistakes_are_refused_with_their_fix_and_approval_and_revocation_take_effect() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::spawn(&dir.path().join("hub"));
    let state = dir.path().join("state");
    let refused = |args: &[&str], needle: &str| {
        let out = box_cli(&state, args);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    };
    let wrong = format!("SHA256:{}", ["00"; 32].join(":"));
    refused(&["sync", "enrol", "--hub", &hub.url(), "--hub-fingerprint", &wrong], "not the pinned");
    refused(
        &["sync", "enrol", "--hub", &hub.url().replace("https", "http"), "--hub-fingerprint", &hub.fingerprint],
        "HTTPS only",
    );
    refused(&["sync", "enrol", "--hub", &hub.url(), "--hub-fingerprint", "SHA256:12:34"], "the hub prints at start");
    refused(
        &["sync", "enrol", "--hub", "https://127.0.0.1:1", "--hub-fingerprint", &hub.fingerprint],
        "cannot reach the hub",
    );

    // Without a token: pending until the hub's operator approves.
    let enrolled = ok(box_cli(&state, &["sync", "enrol", "--hub", &hub.url(), "--hub-fingerprint", &hub.fingerprint]));
    assert!(enrolled.contains("obscura hub devices approve"), "{enrolled}");
    let device = enrolled.lines().find_map(|l| l.strip_prefix("device   ")).unwrap().trim().to_owned();
    std::fs::write(dir.path().join("obscura.toml"), CONFIG).unwrap();
    let config = dir.path().join("obscura.toml");
    assert_eq!(sync_status(&state, &config)["state"], "pending");

    let mut daemon = Daemon::spawn(dir.path(), CONFIG, &[]);
    daemon.wait_for_line("ready", 60);
    ok(hub.cli(&["devices", "approve", &device]));
    wait_until("the box to see its approval", 60, || {
        (sync_status(&state, &config)["state"] == "approved").then_some(())
    });
    ok(hub.cli(&["devices", "revoke", &device]));
    wait_until("the box to see its revocation", 60, || {
        (sync_status(&state, &config)["state"] == "revoked").then_some(())
    });
    assert!(daemon.terminate().success(), "the daemon keeps running, and stops cleanly");
    hub.stop();
}

/// The box's `/api/v1/status`, through the loopback address its log printed.
fn box_status(daemon: &Daemon) -> serde_json::Value {
    let line = daemon.log.iter().find(|l| l.contains("listening on http://")).cloned().unwrap();
    let addr = line.split("http://").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    let out = Command::new("curl").args(["-sS", &format!("http://{addr}/api/v1/status")]).output().unwrap();
    serde_json::from_str(&ok(out)).unwrap()
}

#[test]
fn r16_with_a_broker_the_hub_pushes_commands_and_its_erasure_reaches_the_box_with_both_receipts() {
    let broker = common::broker::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("broker-admin");
    std::fs::write(&secret, common::broker::ADMIN_PASSWORD).unwrap();
    let hub = Hub::spawn_with(
        &dir.path().join("hub"),
        "127.0.0.1:0",
        &[
            "--mqtt",
            &broker.url(),
            "--mqtt-admin",
            common::broker::ADMIN,
            "--mqtt-admin-password-file",
            secret.to_str().unwrap(),
        ],
    );
    let state = dir.path().join("state");
    ok(box_cli(
        &state,
        &["consent", "add", "--scope", "camera:yard", "--covered", "site staff", "--basis", "signed forms"]
            .into_iter()
            .chain(["--purpose", "annotate", "--purpose", "sync"])
            .collect::<Vec<_>>(),
    ));
    let token = ok(hub.cli(&["token"])).trim().to_owned();
    let enrolled = ok(box_cli(
        &state,
        &["sync", "enrol", "--hub", &hub.url(), "--hub-fingerprint", &hub.fingerprint, "--token", &token],
    ));
    let device: wire::DeviceId =
        enrolled.lines().find_map(|l| l.strip_prefix("device   ")).unwrap().trim().parse().unwrap();
    let enrolment = sync::Enrolment::load(&state).unwrap().unwrap();
    assert_eq!(
        enrolment.mqtt.as_ref().map(|m| m.broker.as_str()),
        Some(broker.url().as_str()),
        "the hub gave its broker"
    );

    // Commands are polled over HTTPS only once an hour: what arrives sooner came by MQTT.
    let config = CONFIG.replace("poll_every = \"1s\"", "poll_every = \"1h\"");
    let mut daemon = Daemon::spawn(dir.path(), &config, &[]);
    daemon.wait_for_line("ready", 60);
    wait_until("the box on the broker", 60, || (box_status(&daemon)["sync"]["mqtt"] == "up").then_some(()));
    // The hub keeps what its control plane hears: the box online, and its telemetry.
    let device_text = device.to_string();
    let listed = wait_until("the box online at the hub", 30, || {
        let listed = ok(hub.cli(&["devices", "list"]));
        let line = listed.lines().find(|l| l.contains(&device_text))?.to_owned();
        (line.contains("online since") && line.contains("telemetry")).then_some(line)
    });
    assert!(listed.contains("1 camera(s)"), "{listed}");
    let doctor = obscura()
        .arg("doctor")
        .arg("--config")
        .arg(dir.path().join("obscura.toml"))
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&doctor.stdout).into_owned() + &String::from_utf8_lossy(&doctor.stderr);
    assert!(said.lines().any(|l| l.contains("sync mqtt") && l.contains("answers")), "{said}");
    let db = store::HubDb::open(&hub.state).unwrap();
    let held = wait_until("frames at the hub", 90, || {
        let held = db.frames(device).unwrap();
        (held.len() >= 2).then_some(held)
    });

    // Paused from the hub: the box says so within seconds.
    ok(hub.cli(&["devices", "pause", &device.to_string()]));
    wait_until("the box to pause", 30, || (box_status(&daemon)["sync"]["paused"] == true).then_some(()));
    assert!(sync::Enrolment::load(&state).unwrap().unwrap().paused, "kept, so a restart does not undo it");
    ok(hub.cli(&["devices", "resume", &device.to_string()]));
    wait_until("the box to resume", 30, || (box_status(&daemon)["sync"]["paused"] == false).then_some(()));
    assert!(!sync::Enrolment::load(&state).unwrap().unwrap().paused);

    // Erased at the hub: the hub's copy at once, the box's on the command, both receipted.
    let victim = held[0];
    let erased =
        ok(hub.cli(&["erase", "--device", &device.to_string(), "--frame", &victim.to_string(), "--wait", "30"]));
    assert!(erased.contains("erased 1 frame(s)"), "{erased}");
    let hub_receipt: wire::Receipt =
        serde_json::from_str(erased.lines().find_map(|l| l.strip_prefix("receipt ")).unwrap()).unwrap();
    let payload = hub_receipt.verify(&wire::unbase64(&hub_receipt.hub_key).unwrap()).expect("signed by the hub");
    assert_eq!(payload.frames, vec![victim]);
    let answer = erased.lines().find_map(|l| l.strip_prefix("device answered ")).expect("the box's answer");
    let answer: serde_json::Value = serde_json::from_str(answer).unwrap();
    assert_eq!(answer["result"], "done", "{answer}");
    assert_eq!(answer["receipt"]["frames_erased"], 1, "{answer}");
    assert!(!db.frames(device).unwrap().contains(&victim), "gone from the hub");
    let on_box = store::Store::open(&state).unwrap();
    assert!(on_box.frame_jpeg(store::FrameId(victim)).is_err(), "gone from the box");
    let audit = on_box.audit_entries("").unwrap();
    assert!(audit.iter().any(|e| e.action == "erase" && e.actor == "hub"), "the box audited the hub's erasure");

    // Erased by camera and time: the box erases what it holds there, sent or not.
    // A window that ended a few seconds ago, after the box has captured for a while:
    // frames captured in it are stored by now (one still in the pipeline when the
    // command runs would be stored after it).
    std::thread::sleep(Duration::from_secs(5));
    let now = String::from_utf8(
        Command::new("date").args(["-u", "-d", "4 seconds ago", "+%Y-%m-%d %H:%M:%S"]).output().unwrap().stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    let erased =
        ok(hub.cli(&["erase", "--device", &device.to_string(), "--camera", "yard", "--to", &now, "--wait", "30"]));
    let answer: serde_json::Value =
        serde_json::from_str(erased.lines().find_map(|l| l.strip_prefix("device answered ")).unwrap()).unwrap();
    assert_eq!(answer["result"], "done", "{answer}");
    assert!(answer["receipt"]["frames_erased"].as_u64().unwrap() > 0, "{answer}");
    let cut = store::FrameFilter { camera: Some("yard".into()), until: Some(now_ms_of(&now)), ..Default::default() };
    assert!(on_box.frames(&cut).unwrap().is_empty(), "nothing the box held in the window is left");

    // Revoked: the broker refuses the box from now on.
    ok(hub.cli(&["devices", "revoke", &device.to_string()]));
    wait_until("the box to stop", 60, || (box_status(&daemon)["sync"]["mqtt"] != "up").then_some(()));
    wait_until("the hub to hear the box go", 60, || {
        let listed = ok(hub.cli(&["devices", "list"]));
        listed.lines().any(|l| l.contains(&device_text) && l.contains("offline")).then_some(())
    });
    assert!(daemon.terminate().success());
    hub.stop();
}

/// Unix ms of `YYYY-MM-DD HH:MM:SS` (UTC), as `date -u` printed it.
fn now_ms_of(text: &str) -> i64 {
    let out = Command::new("date").args(["-u", "-d", text, "+%s"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().parse::<i64>().unwrap() * 1000
}
