//! The sync storm (issue 16): nothing acknowledged is lost or duplicated, whatever is
//! cut or killed, and erasure follows the data. A real mosquitto (dynamic security) and
//! a real `obscura hub` on fixed loopback ports, the hub's control plane on the broker,
//! and two boxes (`obscura run`), each syncing over HTTPS through its own misbehaving TCP
//! proxy (`common::proxy`), their MQTT through a third. For `OBSCURA_STORM_CYCLES` cycles
//! the proxies cut connections (mid-upload too), drop the hub's receipts after the commit
//! went through and stall, and one event strikes per cycle: a box's network goes down,
//! a box or the hub is killed with SIGKILL mid-sync and restarted on the same state (the
//! hub on the same port, with the same certificate), every connection is cut, mosquitto
//! restarts (same port, same dynamic-security file), a steward withdraws box b's consent
//! (a new one takes over), or the hub erases box a's frames by id or by camera and time.
//! Then the network heals, the boxes drain, and the hub's own store is compared with
//! each box's.
//!
//! The seed (`OBSCURA_STORM_SEED`, printed at the start) replays the run's decisions; the
//! timing is the real processes'. `OBSCURA_STORM_LOGS=1` prints each box's sync log at
//! the end. `scripts/reliability sync` runs the long version.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hub::HubStore;

mod common;

use common::broker::Broker;
use common::proxy::{Faults, Proxy};
use common::{Daemon, Hub, obscura};

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn box_cli(state: &Path, args: &[&str]) -> Output {
    obscura().args(args).arg("--state-dir").arg(state).stdin(Stdio::null()).output().unwrap()
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name} must be a whole number")))
}

/// Times a command beside a running box or hub was refused with "database is locked"
/// (SQLite's busy, sooner than the store's 5 s busy timeout), and tried again.
static LOCKED: AtomicU64 = AtomicU64::new(0);

/// A steward's `obscura consent …` on a running box: its output.
fn steward(state: &Path, args: &[&str]) -> String {
    unless_locked(args, || box_cli(state, args))
}

/// `run`'s output. Refused as locked, it is said, counted and tried again, as a person
/// would (a known bug, in the figures).
fn unless_locked(args: &[&str], run: impl Fn() -> Output) -> String {
    for _ in 0..5 {
        let began = Instant::now();
        let out = run();
        let said = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !said.contains("database is locked") {
            return ok(out);
        }
        LOCKED.fetch_add(1, Ordering::Relaxed);
        eprintln!("storm: `obscura {}` refused after {:?}: {}", args.join(" "), began.elapsed(), said.trim());
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("`obscura {}` refused as locked five times", args.join(" "));
}

/// `obscura consent add` for `camera` with `purposes`, as a steward does on a running
/// box: the consent's id.
fn add_consent(state: &Path, camera: &str, purposes: &[&str]) -> String {
    let scope = format!("camera:{camera}");
    let mut args = vec!["consent", "add", "--scope", &scope, "--covered", "test subjects", "--basis", "test"];
    for purpose in purposes {
        args.extend(["--purpose", purpose]);
    }
    let said = steward(state, &args);
    said.lines().next().and_then(|l| l.strip_prefix("recorded consent ")).expect("the consent's id").to_owned()
}

/// The cameras (id, test pattern) at 320×240, sampled at 2 fps, with small batches.
fn config(cameras: &[(&str, &str)]) -> String {
    let mut toml = String::new();
    for (id, pattern) in cameras {
        toml += &format!(
            "[[camera]]\nid = \"{id}\"\nuri = \"test://{pattern}\"\nwidth = 320\nheight = 240\nframerate = 10\nsample = {{ fps = 2 }}\n\n"
        );
    }
    toml + "[prelabel]\nenabled = false\n\n[sync]\nrequire_review = false\nbatch_frames = 4\nbatch_age = \"1s\"\npoll_every = \"1s\"\n"
}

const SYNC: &[&str] = &["annotate", "sync"];

/// A box: its folder (`obscura.toml`, `state/`), its daemon and its own proxy to the hub.
struct Member {
    name: &'static str,
    dir: PathBuf,
    config: String,
    daemon: Option<Daemon>,
    proxy: Proxy,
    device: wire::DeviceId,
    /// The consent to sync `yard` in force now, and those withdrawn before it.
    yard_consent: String,
    withdrawn: Vec<String>,
    /// The sync stage's lines from every daemon this box ran, for a failure's message.
    sync_log: Vec<String>,
}

impl Member {
    /// Consent to sync `yard` and `others` (camera, purposes), enrolment through `proxy`
    /// with a one-time token.
    fn enrol(name: &'static str, root: &Path, hub: &Hub, proxy: Proxy, others: &[(&str, &[&str])]) -> Member {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let state = dir.join("state");
        let yard_consent = add_consent(&state, "yard", SYNC);
        for (camera, purposes) in others {
            add_consent(&state, camera, purposes);
        }
        let token = ok(hub.cli(&["token"])).trim().to_owned();
        let url = proxy.url();
        let enrolled = ok(box_cli(
            &state,
            &["sync", "enrol", "--hub", &url, "--hub-fingerprint", &hub.fingerprint, "--token", &token],
        ));
        assert!(enrolled.contains("state    approved"), "{enrolled}");
        let device = enrolled.lines().find_map(|l| l.strip_prefix("device   ")).unwrap().trim().parse().unwrap();
        let enrolment = sync::Enrolment::load(&state).unwrap().unwrap();
        assert!(enrolment.mqtt.is_some(), "box {name}: the hub gave no broker login");
        Member {
            name,
            dir,
            config: String::new(),
            daemon: None,
            proxy,
            device,
            yard_consent,
            withdrawn: Vec::new(),
            sync_log: Vec::new(),
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn start(&mut self, config: &str) {
        self.config = config.to_owned();
        self.daemon = Some(Daemon::spawn(&self.dir, config, &[]));
    }

    /// SIGKILL, reaped.
    fn kill(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            daemon.child.kill().unwrap();
            daemon.child.wait().unwrap();
            self.keep_log(&mut daemon);
        }
    }

    fn keep_log(&mut self, daemon: &mut Daemon) {
        let lines = daemon.collect_log().iter().filter(|l| l.contains("sync")).cloned();
        self.sync_log.extend(lines);
    }

    /// The last of the sync stage's lines.
    fn log_tail(&mut self) -> String {
        if let Some(mut daemon) = self.daemon.take() {
            self.keep_log(&mut daemon);
            self.daemon = Some(daemon);
        }
        self.sync_log[self.sync_log.len().saturating_sub(40)..].join("\n")
    }

    /// SIGTERM, and a clean exit. A box restarted a moment ago is let finish starting
    /// first: until its handlers are in (the first thing `run` does), SIGTERM's default
    /// action ends it, which systemd counts as a clean stop but this check would not.
    fn stop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            if !daemon.collect_log().iter().any(|l| l.contains("ready")) {
                daemon.wait_for_line("ready", 90);
            }
            let status = daemon.terminate();
            assert!(status.success(), "{} exited with {status}:\n{}", self.name, daemon.log.join("\n"));
            self.keep_log(&mut daemon);
        }
    }

    fn backlog(&self) -> serde_json::Value {
        let out = obscura()
            .args(["sync", "status", "--json", "--config"])
            .arg(self.dir.join("obscura.toml"))
            .arg("--state-dir")
            .arg(self.state())
            .output()
            .unwrap();
        let status: serde_json::Value = serde_json::from_str(&ok(out)).unwrap();
        status["backlog"].clone()
    }

    /// A steward's withdrawal on the running box: a new consent for `yard` first, then,
    /// up to 1.5 s later, the old one withdrawn. Frames only the old one covered may not
    /// stay at the hub; those both cover still may.
    fn withdraw(&mut self, rng: &mut fastrand::Rng) {
        let next = add_consent(&self.state(), "yard", SYNC);
        std::thread::sleep(Duration::from_millis(rng.u64(0..1500)));
        let old = std::mem::replace(&mut self.yard_consent, next);
        steward(&self.state(), &["consent", "withdraw", &old, "--by", "steward"]);
        self.withdrawn.push(old);
    }
}

/// An erasure that started at the hub (`obscura hub erase`), of box a's frames.
struct HubErasure {
    command: String,
    /// By id: frames the hub held when it was asked.
    frames: Vec<i64>,
    /// By camera (`yard`) and capture time, `[from, until)` in Unix ms.
    window: Option<(i64, i64)>,
}

/// What strikes once a cycle. Every kind comes round once in each run of `EVENTS.len()`
/// cycles, in an order the seed shuffles.
#[derive(Debug, Clone, Copy)]
enum Event {
    NetworkDown,
    BoxKill,
    HubKill,
    Blip,
    BrokerRestart,
    Withdrawal,
    EraseFrames,
    EraseWindow,
}

const EVENTS: [Event; 8] = [
    Event::NetworkDown,
    Event::BoxKill,
    Event::HubKill,
    Event::Blip,
    Event::BrokerRestart,
    Event::Withdrawal,
    Event::EraseFrames,
    Event::EraseWindow,
];

/// The figures a run ends with.
#[derive(Debug, Default)]
struct Figures {
    box_kills: u32,
    hub_kills: u32,
    downs: u32,
    blips: u32,
    broker_restarts: u32,
    withdrawals: u32,
    erase_frames: u32,
    erase_windows: u32,
}

/// Everything running, and what the storm did to it.
struct Storm {
    seed: u64,
    rng: fastrand::Rng,
    broker: Broker,
    /// The boxes' way to the broker (`--mqtt-public`); the hub reaches it directly.
    mqtt: Proxy,
    hub: Hub,
    hub_args: Vec<String>,
    listen: String,
    fingerprint: String,
    /// The hub's store, read beside the running hub (as `obscura hub erase` does).
    db: store::HubDb,
    boxes: [Member; 2],
    figures: Figures,
    erasures: Vec<HubErasure>,
}

#[test]
fn nothing_acknowledged_is_lost_or_duplicated_and_erasure_follows_the_data_whatever_is_cut_or_killed() {
    let seed = env_u64("OBSCURA_STORM_SEED").unwrap_or_else(|| fastrand::u64(..));
    let cycles = env_u64("OBSCURA_STORM_CYCLES").unwrap_or(8);
    eprintln!("storm: seed {seed} (OBSCURA_STORM_SEED={seed} replays it), {cycles} cycles");
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut storm = Storm::start(seed, dir.path());

    let faults = Faults { cut: 0.05, cut_upload: 0.2, drop_answer: 0.3, stall: 0.08, stall_ms: 1500 };
    for member in &storm.boxes {
        member.proxy.set_faults(faults);
    }
    // MQTT's packets are small and few: cuts and stalls only.
    storm.mqtt.set_faults(Faults { cut: 0.05, stall: 0.08, stall_ms: 1500, ..Faults::default() });
    let mut order = EVENTS;
    for cycle in 0..cycles {
        if (cycle as usize).is_multiple_of(EVENTS.len()) {
            storm.rng.shuffle(&mut order);
        }
        std::thread::sleep(Duration::from_millis(storm.rng.u64(500..2500)));
        let event = order[cycle as usize % EVENTS.len()];
        eprintln!("storm: cycle {} of {cycles}: {event:?} at {:.0} s", cycle + 1, started.elapsed().as_secs_f64());
        storm.strike(event);
    }

    let drained = storm.heal_and_drain();
    let Storm { hub, db, mut boxes, broker, mqtt, figures, erasures, .. } = storm;
    for member in &mut boxes {
        member.stop();
        if std::env::var_os("OBSCURA_STORM_LOGS").is_some() {
            eprintln!("storm: box {}'s sync log:\n{}", member.name, member.sync_log.join("\n"));
        }
    }
    hub.stop();
    drop(broker);
    eprintln!("storm: seed {seed}, {cycles} cycles in {:.0} s", started.elapsed().as_secs_f64());
    check(seed, &db, &boxes, &erasures, &mqtt, &figures, drained);
}

impl Storm {
    /// The broker, its proxy, the hub on a fixed port with its control plane, and two
    /// enrolled boxes running.
    fn start(seed: u64, root: &Path) -> Storm {
        let mut rng = fastrand::Rng::with_seed(seed);
        let broker = Broker::start();
        let mqtt = Proxy::start(([127, 0, 0, 1], broker.port).into(), rng.u64(..));
        let secret = root.join("broker-admin");
        std::fs::write(&secret, common::broker::ADMIN_PASSWORD).unwrap();
        let hub_args: Vec<String> = [
            "--mqtt",
            &broker.url(),
            "--mqtt-public",
            &format!("mqtt://{}", mqtt.addr),
            "--mqtt-admin",
            common::broker::ADMIN,
            "--mqtt-admin-password-file",
            secret.to_str().unwrap(),
        ]
        .map(str::to_owned)
        .into();
        // A fixed port, so the restarted hub is where the proxies forward.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let listen = format!("127.0.0.1:{port}");
        let hub_state = root.join("hub");
        let hub = spawn_hub(&hub_state, &listen, &hub_args);
        let fingerprint = hub.fingerprint.clone();

        // Box a: `yard` (snow: large blobs, uploaded in several TLS records, so a cut
        // leaves a part at the hub to resume from) may sync; `lot` may only be annotated.
        // Box b: `yard`, a ball (small blobs, some the same bytes as others).
        let mut boxes = [
            Member::enrol("a", root, &hub, Proxy::start(hub.addr, rng.u64(..)), &[("lot", &["annotate"])]),
            Member::enrol("b", root, &hub, Proxy::start(hub.addr, rng.u64(..)), &[]),
        ];
        let configs = [config(&[("yard", "snow"), ("lot", "ball")]), config(&[("yard", "ball")])];
        for (member, config) in boxes.iter_mut().zip(&configs) {
            member.start(config);
        }
        for member in &mut boxes {
            member.daemon.as_mut().unwrap().wait_for_line("ready", 90);
        }
        let db = store::HubDb::open(&hub_state).unwrap();
        Storm {
            seed,
            rng,
            broker,
            mqtt,
            hub,
            hub_args,
            listen,
            fingerprint,
            db,
            boxes,
            figures: Figures::default(),
            erasures: Vec::new(),
        }
    }

    fn strike(&mut self, event: Event) {
        let rng = &mut self.rng;
        match event {
            Event::NetworkDown => {
                // The box's link: its HTTPS, and half the time MQTT too (for both boxes:
                // the hub gives them one broker address).
                self.figures.downs += 1;
                let member = &self.boxes[rng.usize(..self.boxes.len())];
                let mqtt_too = rng.bool();
                member.proxy.down();
                if mqtt_too {
                    self.mqtt.down();
                }
                std::thread::sleep(Duration::from_millis(rng.u64(500..3000)));
                member.proxy.up();
                self.mqtt.up();
            }
            Event::BoxKill => {
                let member = &mut self.boxes[rng.usize(..2)];
                upload_seen(std::slice::from_ref(member));
                member.kill();
                self.figures.box_kills += 1;
                std::thread::sleep(Duration::from_millis(rng.u64(0..1000)));
                let config = member.config.clone();
                member.start(&config);
            }
            Event::HubKill => {
                // While it takes a blob in, or commits what came.
                upload_seen(&self.boxes);
                std::thread::sleep(Duration::from_millis(rng.u64(0..60)));
                self.hub.child.kill().unwrap();
                self.hub.child.wait().unwrap();
                self.figures.hub_kills += 1;
                std::thread::sleep(Duration::from_millis(rng.u64(0..2000)));
                self.hub = spawn_hub(&self.hub.state, &self.listen, &self.hub_args);
                assert_eq!(
                    self.hub.fingerprint, self.fingerprint,
                    "the restarted hub presents the certificate boxes pinned"
                );
            }
            Event::Blip => {
                self.figures.blips += 1;
                for proxy in self.boxes.iter().map(|m| &m.proxy).chain([&self.mqtt]) {
                    proxy.cut_all();
                }
            }
            Event::BrokerRestart => {
                // As systemd restarts it: its sessions and the hub's provisioning are in
                // its persistence and dynamic-security files.
                self.figures.broker_restarts += 1;
                self.broker.stop();
                std::thread::sleep(Duration::from_millis(rng.u64(0..2000)));
                self.broker.restart();
            }
            Event::Withdrawal => {
                self.figures.withdrawals += 1;
                self.boxes[1].withdraw(rng);
            }
            Event::EraseFrames => {
                let held = self.db.frames(self.boxes[0].device).unwrap();
                if held.is_empty() {
                    return self.strike(Event::EraseWindow);
                }
                self.figures.erase_frames += 1;
                let frames: BTreeSet<i64> = (0..rng.usize(1..=3)).map(|_| held[rng.usize(..held.len())]).collect();
                let list = frames.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
                let erasure = self.hub_erase(&["--frame", &list], frames.into_iter().collect(), None);
                self.erasures.push(erasure);
            }
            Event::EraseWindow => {
                // A window that ends now or up to 4 s ago (a frame captured in it and still
                // in the box's pipeline when the command runs is dropped unwritten).
                self.figures.erase_windows += 1;
                let until = frame::now_unix_ms() - rng.i64(0..4_000);
                let from = until - rng.i64(2_000..6_000);
                let time = |ms: i64| humantime::format_rfc3339_millis(frame::from_unix_ms(ms)).to_string();
                let (from_text, until_text) = (time(from), time(until));
                let args = ["--camera", "yard", "--from", &from_text, "--until", &until_text];
                // Usually nothing of the window has reached the hub yet, but a frame
                // synced quickly may have: the receipt names at least those held now.
                let held = self.db.select_frames(self.boxes[0].device, Some("yard"), Some(from), Some(until)).unwrap();
                let erasure = self.hub_erase(&args, held, Some((from, until)));
                self.erasures.push(erasure);
            }
        }
    }

    /// `obscura hub erase --device A ARGS` beside the running hub: the hub's signed
    /// receipt names exactly `frames` (for a `window`, at least them: a batch may
    /// commit more in it before the erasure runs), and the command is queued for the box.
    fn hub_erase(&self, args: &[&str], frames: Vec<i64>, window: Option<(i64, i64)>) -> HubErasure {
        let device = self.boxes[0].device.to_string();
        let args = [&["hub", "erase", "--device", device.as_str()][..], args].concat();
        let said = unless_locked(&args, || self.hub.cli(&args[1..]));
        let receipt: wire::Receipt =
            serde_json::from_str(said.lines().find_map(|l| l.strip_prefix("receipt ")).unwrap()).unwrap();
        let payload = receipt.verify(&wire::unbase64(&receipt.hub_key).unwrap()).expect("signed by the hub");
        assert_eq!(payload.kind, wire::ReceiptKind::Erasure);
        match window {
            None => assert_eq!(payload.frames, frames, "{said}"),
            Some(_) => {
                assert!(frames.iter().all(|f| payload.frames.contains(f)), "{frames:?} held in the window: {said}")
            }
        }
        let command = said
            .lines()
            .find_map(|l| l.strip_prefix("command "))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("no command in {said}"))
            .to_owned();
        HubErasure { command, frames: payload.frames, window }
    }

    /// The network heals, each box restarts with only its `lot` camera (so nothing new
    /// may leave), and everything drains: no frame, batch or erasure waiting on a box,
    /// every command acknowledged, every withdrawal at the hub, both boxes online on the
    /// broker. How long it took.
    fn heal_and_drain(&mut self) -> Duration {
        let healed = Instant::now();
        self.mqtt.set_faults(Faults::default());
        self.mqtt.up();
        for member in &mut self.boxes {
            member.proxy.set_faults(Faults::default());
            member.proxy.up();
            member.stop();
            member.start(&config(&[("lot", "ball")]));
        }
        let deadline = Instant::now() + Duration::from_secs(240);
        for member in &mut self.boxes {
            loop {
                let backlog = member.backlog();
                let commands = self.db.commands(member.device).unwrap();
                let presence = self.db.presence(member.device).unwrap();
                let withdrawals_behind: Vec<String> = member
                    .withdrawn
                    .iter()
                    .filter(|c| self.db.consent(member.device, c).unwrap().is_some_and(|c| c.withdrawn_at_ms.is_none()))
                    .cloned()
                    .collect();
                if backlog["frames"] == 0
                    && backlog["batches_pending"] == 0
                    && backlog["erasures_pending"] == 0
                    && commands.is_empty()
                    && withdrawals_behind.is_empty()
                    && presence.as_ref().is_some_and(|p| p.online)
                {
                    assert_eq!(backlog["batches_rejected"], 0, "box {}: a batch was refused: {backlog}", member.name);
                    assert_eq!(backlog["expired_unsynced"], 0, "box {}: {backlog}", member.name);
                    break;
                }
                if Instant::now() > deadline {
                    let tail = member.log_tail();
                    panic!(
                        "seed {}: box {} did not drain in 240 s: {backlog}; commands unacknowledged {commands:?}; \
                         withdrawals the hub lacks {withdrawals_behind:?}; presence {presence:?}\n{tail}\n{}",
                        self.seed,
                        member.name,
                        self.broker.log().lines().rev().take(20).collect::<Vec<_>>().join("\n")
                    );
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        healed.elapsed()
    }
}

fn spawn_hub(state: &Path, listen: &str, args: &[String]) -> Hub {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Hub::spawn_with(state, listen, &args)
}

/// What one box's store says, against the hub's.
#[derive(Debug, Default)]
struct Tally {
    synced: usize,
    duplicates: usize,
    lost: usize,
    /// At the hub but not eligible (`lot`, withdrawn, erased).
    extra: usize,
    /// Frames in a second batch the hub committed, beyond those a dissolved batch explains.
    resent: u64,
    /// Committed at the hub, then dissolved on the box before its receipt came.
    dissolved_committed: usize,
    /// Frames the hub erased (its audit), and the box erased on the hub's commands.
    erased_at_hub: u64,
    erased_on_box: u64,
    /// Frames whose consents were all withdrawn; of them, those the hub had held.
    recalled: usize,
    recalled_sent: usize,
    /// Recalled frames put in a batch formed after their withdrawal.
    sent_after_withdrawal: usize,
    /// Recalled frames the hub had held without an erasure receipt on the box.
    recalled_unreceipted: usize,
}

/// The hub's own store, not its log, against each box's.
#[allow(clippy::too_many_arguments)]
fn check(
    seed: u64,
    db: &store::HubDb,
    boxes: &[Member],
    erasures: &[HubErasure],
    mqtt: &Proxy,
    figures: &Figures,
    drained: Duration,
) {
    assert_eq!(db.integrity_check().unwrap(), "ok");
    let hub_audit = db.verify_audit().unwrap().expect("the hub's audit chain verifies");
    let committed = db.audit_actions("hub.batch_committed").unwrap();
    let hub_erased = db.audit_actions("hub.erased").unwrap();
    let mut total = Tally::default();
    // How many frames, over every box, name each blob: the hub's count must agree.
    let mut per_blob: BTreeMap<String, u64> = BTreeMap::new();
    // Blobs of frames no longer held anywhere at the hub that it still keeps.
    let mut gone_blobs: BTreeSet<String> = BTreeSet::new();
    for member in boxes {
        let on_box = store::Store::open(&member.state()).unwrap();
        on_box.verify_audit().unwrap().unwrap_or_else(|e| panic!("box {}: the audit chain breaks: {e:?}", member.name));
        assert!(on_box.check().unwrap().is_ok(), "box {}: the store check fails", member.name);
        tally(db, &on_box, member, &committed, &hub_erased, &mut total, &mut per_blob, &mut gone_blobs);
    }
    let erasure_failures = check_hub_erasures(db, &boxes[0], erasures, &hub_erased);

    let mut blob_mismatches = 0;
    for (sha, frames) in &per_blob {
        match db.blob(sha).unwrap() {
            Some(info) if info.frames == *frames => {}
            other => {
                blob_mismatches += 1;
                eprintln!("storm: blob {sha}: {frames} frames on the boxes, the hub has {other:?}");
            }
        }
    }
    let kept: Vec<&String> =
        gone_blobs.iter().filter(|sha| !per_blob.contains_key(*sha) && db.blob(sha).unwrap().is_some()).collect();
    let orphan_files = db.blob_files().unwrap() as i64 - per_blob.len() as i64;

    let sum = |f: fn(&common::proxy::Counts) -> &std::sync::atomic::AtomicU64| -> u64 {
        boxes.iter().map(|m| f(m.proxy.counts()).load(Ordering::Relaxed)).sum()
    };
    let mqtt_counts = mqtt.counts();
    eprintln!(
        "storm: connections {}, cuts {}, cut mid-upload {}, receipts dropped after the commit {}, stalls {}",
        sum(|c| &c.connections),
        sum(|c| &c.cuts),
        sum(|c| &c.upload_cuts),
        sum(|c| &c.answers_dropped),
        sum(|c| &c.stalls)
    );
    eprintln!(
        "storm: mqtt connections {}, cuts {}, stalls {}; mosquitto restarts {}",
        mqtt_counts.connections.load(Ordering::Relaxed),
        mqtt_counts.cuts.load(Ordering::Relaxed),
        mqtt_counts.stalls.load(Ordering::Relaxed),
        figures.broker_restarts
    );
    eprintln!(
        "storm: network down {} times, blips {}, box kills (SIGKILL) {}, hub kills (SIGKILL) {}, commands beside \
         them refused as locked {}",
        figures.downs,
        figures.blips,
        figures.box_kills,
        figures.hub_kills,
        LOCKED.load(Ordering::Relaxed)
    );
    eprintln!(
        "storm: withdrawals {}, frames recalled {} (of which the hub had held {}), hub erasures by frame {} and by \
         window {}; frames erased at the hub {}, on box a by the hub's command {}",
        figures.withdrawals,
        total.recalled,
        total.recalled_sent,
        figures.erase_frames,
        figures.erase_windows,
        total.erased_at_hub,
        total.erased_on_box
    );
    eprintln!(
        "storm: frames synced {}, duplicates found {}, lost found {}, at the hub but not eligible {}, sent again in \
         another batch {}, batches committed then dissolved {}, blobs miscounted {blob_mismatches}",
        total.synced, total.duplicates, total.lost, total.extra, total.resent, total.dissolved_committed
    );
    eprintln!(
        "storm: recalled frames sent after their withdrawal {}, held without an erasure receipt {}; hub erasures \
         not carried out on both sides {erasure_failures}; blobs of erased frames the hub keeps {}",
        total.sent_after_withdrawal,
        total.recalled_unreceipted,
        kept.len()
    );
    eprintln!(
        "storm: drained {:.0} s after healing; hub audit {hub_audit} entries; hub blob files beyond those named \
         {orphan_files}",
        drained.as_secs_f64()
    );
    assert!(total.synced > 0, "nothing was synced: the storm proved nothing");
    assert_eq!(
        (total.duplicates, total.lost, total.extra, total.resent, blob_mismatches),
        (0, 0, 0, 0, 0),
        "seed {seed}: duplicates, lost, ineligible at the hub, resent, blobs miscounted"
    );
    assert_eq!(
        (total.sent_after_withdrawal, total.recalled_unreceipted, erasure_failures),
        (0, 0, 0),
        "seed {seed}: sent after withdrawal, recalled without receipt, hub erasures not carried out"
    );
}

/// One box against the hub: counts added to `t`, and the assertions that name the box.
#[allow(clippy::too_many_arguments)]
fn tally(
    db: &store::HubDb,
    on_box: &store::Store,
    member: &Member,
    committed: &[store::AuditEntry],
    hub_erased: &[store::AuditEntry],
    t: &mut Tally,
    per_blob: &mut BTreeMap<String, u64>,
    gone_blobs: &mut BTreeSet<String>,
) {
    let name = member.name;
    let ids = |filter: &store::FrameFilter| -> BTreeSet<i64> {
        on_box.frames(filter).unwrap().iter().map(|f| f.id.0).collect()
    };
    let existing = ids(&store::FrameFilter::default());
    let synced: BTreeSet<i64> = on_box.synced_frames().unwrap().into_iter().map(|f| f.0).collect();
    let eligible = ids(&store::FrameFilter { purpose: Some(store::Purpose::Sync), ..Default::default() });
    let at_hub = db.frames(member.device).unwrap();
    let held: BTreeSet<i64> = at_hub.iter().copied().collect();
    t.duplicates += at_hub.len() - held.len();

    // The box's batches: formed (audit seq), receipted (the frames the hub signed for),
    // dissolved.
    let entries = on_box.audit_entries("batch/").unwrap();
    let batch_of = |e: &store::AuditEntry| e.subject.trim_start_matches("batch/").to_owned();
    let formed: BTreeMap<String, i64> =
        entries.iter().filter(|e| e.action == "sync.batch").map(|e| (batch_of(e), e.seq)).collect();
    let dissolved: BTreeSet<String> =
        entries.iter().filter(|e| e.action == "sync.batch_dissolved").map(batch_of).collect();
    let mut receipts: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut receipted: BTreeMap<i64, u32> = BTreeMap::new();
    for entry in entries.iter().filter(|e| e.action == "sync.receipt") {
        let payload = verified(&entry.detail["receipt"], member.device);
        for frame in &payload.frames {
            *receipted.entry(*frame).or_default() += 1;
        }
        receipts.insert(batch_of(entry), payload.frames);
    }
    t.duplicates += receipted.values().filter(|n| **n > 1).count();
    // A receipted frame no longer on the box was erased there on the hub's command.
    let receipted_here: BTreeSet<i64> = receipted.keys().copied().filter(|f| existing.contains(f)).collect();
    assert_eq!(receipted_here, synced, "box {name}: receipts vs synced");
    let gone = receipted.len() - receipted_here.len();
    let erased_on_box: u64 = on_box
        .audit_entries("frames")
        .unwrap()
        .iter()
        .filter(|e| e.action == "erase" && e.actor == "hub")
        .map(|e| e.detail["frames"].as_u64().unwrap())
        .sum();
    assert!(
        gone as u64 <= erased_on_box,
        "box {name}: {gone} receipted frames gone, {erased_on_box} erased by the hub"
    );
    t.erased_on_box += erased_on_box;

    let live: BTreeSet<i64> = synced.intersection(&eligible).copied().collect();
    let lost = live.difference(&held).count() + eligible.difference(&synced).count();
    let extra = held.difference(&eligible).count();
    eprintln!(
        "storm: box {name}: {} frames synced, {} eligible, {} at the hub; lost {lost}, not eligible at the hub {extra}",
        synced.len(),
        eligible.len(),
        held.len()
    );
    t.lost += lost;
    t.extra += extra;
    for id in synced.intersection(&held) {
        let frame = on_box.frame(store::FrameId(*id)).unwrap();
        assert_eq!(frame.camera, "yard", "box {name}: frame {id} of `{}` left the box", frame.camera);
        *per_blob.entry(store::sha256_hex(&on_box.frame_jpeg(frame.id).unwrap())).or_default() += 1;
    }

    // Withdrawals: a frame is recalled once every consent it was linked to is withdrawn
    // (from that audit entry on); none may go out in a batch formed after that, and each
    // the hub took has the hub's erasure receipt on the box.
    let withdrawn_at: BTreeMap<String, i64> = on_box
        .audit_entries("consent/")
        .unwrap()
        .iter()
        .filter(|e| e.action == "consent.withdraw")
        .map(|e| (e.subject.trim_start_matches("consent/").to_owned(), e.seq))
        .collect();
    let mut recalled_since: BTreeMap<i64, i64> = BTreeMap::new();
    for consent in &member.withdrawn {
        let seq = withdrawn_at[consent];
        let linked =
            ids(&store::FrameFilter { consent: Some(store::ConsentId(consent.clone())), ..Default::default() });
        for frame in linked.difference(&eligible) {
            let since = recalled_since.entry(*frame).or_default();
            *since = (*since).max(seq);
        }
        let at_hub = db.consent(member.device, consent).unwrap();
        assert!(
            at_hub.is_none_or(|c| c.withdrawn_at_ms.is_some()),
            "box {name}: the hub lacks the withdrawal of {consent}"
        );
    }
    t.recalled += recalled_since.len();
    for (batch, frames) in &receipts {
        let formed = formed[batch];
        t.sent_after_withdrawal += frames.iter().filter(|f| recalled_since.get(f).is_some_and(|s| *s < formed)).count();
    }
    let erasure_receipted: BTreeSet<i64> = on_box
        .audit_entries("tombstones")
        .unwrap()
        .iter()
        .filter(|e| e.action == "sync.erasure_receipt")
        .flat_map(|e| verified(&e.detail["receipt"], member.device).frames)
        .collect();
    let recalled_sent: Vec<i64> = recalled_since.keys().copied().filter(|f| receipted.contains_key(f)).collect();
    t.recalled_sent += recalled_sent.len();
    t.recalled_unreceipted += recalled_sent.iter().filter(|f| !erasure_receipted.contains(f)).count();
    for frame in recalled_since.keys() {
        gone_blobs.insert(store::sha256_hex(&on_box.frame_jpeg(store::FrameId(*frame)).unwrap()));
    }

    // Each batch the box holds a receipt for was committed once at the hub; one the hub
    // committed without the box hearing of it was dissolved on the box (a frame in it
    // erased or withdrawn meanwhile), and only its frames may come again in another.
    let subject = format!("batch/{}/", member.device);
    let mine: BTreeMap<String, (u64, u64)> = committed
        .iter()
        .filter_map(|e| {
            let batch = e.subject.strip_prefix(&subject)?.to_owned();
            Some((batch, (e.detail["frames"].as_u64().unwrap(), e.detail["new"].as_u64().unwrap())))
        })
        .collect();
    for batch in receipts.keys() {
        assert!(mine.contains_key(batch), "box {name}: batch {batch} receipted on the box, not committed at the hub");
    }
    let mut explained = 0;
    for (batch, (sent, _)) in mine.iter().filter(|(b, _)| !receipts.contains_key(*b)) {
        assert!(
            dissolved.contains(batch),
            "box {name}: batch {batch} committed at the hub, neither receipted nor dissolved"
        );
        t.dissolved_committed += 1;
        explained += sent;
    }
    let (sent, new) = mine.values().fold((0, 0), |(s, n), (sent, new)| (s + sent, n + new));
    t.resent += (sent - new).saturating_sub(explained);
    let erased_at_hub: u64 = hub_erased
        .iter()
        .filter(|e| e.subject.starts_with(&format!("erasure/{}/", member.device)))
        .map(|e| e.detail["erased"].as_u64().unwrap())
        .sum();
    assert_eq!(new, held.len() as u64 + erased_at_hub, "box {name}: frames new at the hub vs held and erased there");
    t.erased_at_hub += erased_at_hub;
    t.synced += synced.len();
}

/// A receipt as a box's audit keeps it, checked against the key it names, for `device`.
fn verified(receipt: &serde_json::Value, device: wire::DeviceId) -> wire::Payload {
    let receipt: wire::Receipt = serde_json::from_value(receipt.clone()).unwrap();
    let payload = receipt.verify(&wire::unbase64(&receipt.hub_key).unwrap()).expect("a receipt the hub signed");
    assert_eq!(payload.device, device);
    payload
}

/// Each erasure that started at the hub: gone there and on the box, the box's answer
/// (with its receipt) kept at the hub and its erasure in the box's audit. How many fail.
fn check_hub_erasures(
    db: &store::HubDb,
    member: &Member,
    erasures: &[HubErasure],
    hub_erased: &[store::AuditEntry],
) -> usize {
    let on_box = store::Store::open(&member.state()).unwrap();
    let box_erasures = on_box.audit_entries("frames").unwrap();
    let held: BTreeSet<i64> = db.frames(member.device).unwrap().into_iter().collect();
    let mut failures = 0;
    for erasure in erasures {
        let mut problems = Vec::new();
        let ack = db.command_ack(member.device, &erasure.command).unwrap();
        match &ack {
            Some(ack) if ack.result == wire::v1::AckResult::Done && ack.receipt.is_some() => {}
            other => problems.push(format!("the box's answer: {other:?}")),
        }
        let request = format!("erasure/{}/hub-{}", member.device, erasure.command);
        if !hub_erased.iter().any(|e| e.subject == request) {
            problems.push("no hub.erased entry in the hub's audit".into());
        }
        let reason = format!("hub erasure command {}", erasure.command);
        if !box_erasures.iter().any(|e| e.action == "erase" && e.detail["reason"] == reason.as_str()) {
            problems.push("no erase entry in the box's audit".into());
        }
        for frame in &erasure.frames {
            if held.contains(frame) {
                problems.push(format!("frame {frame} still at the hub"));
            }
            if on_box.frame(store::FrameId(*frame)).is_ok() {
                problems.push(format!("frame {frame} still on the box"));
            }
        }
        if let Some((from, until)) = erasure.window {
            let at_hub = db.select_frames(member.device, Some("yard"), Some(from), Some(until)).unwrap();
            let filter = store::FrameFilter {
                camera: Some("yard".into()),
                from: Some(from),
                until: Some(until),
                ..Default::default()
            };
            let on_box = on_box.frames(&filter).unwrap().len();
            if !at_hub.is_empty() || on_box > 0 {
                problems.push(format!("in the window: {} at the hub, {on_box} on the box", at_hub.len()));
            }
        }
        if !problems.is_empty() {
            failures += 1;
            eprintln!("storm: hub erasure {}: {}", erasure.command, problems.join("; "));
        }
    }
    failures
}

/// Mid-sync: waits until the next blob bytes of one of `boxes` go through, or 4 s.
fn upload_seen(boxes: &[Member]) {
    let seen =
        |boxes: &[Member]| -> u64 { boxes.iter().map(|m| m.proxy.counts().uploads_seen.load(Ordering::Relaxed)).sum() };
    let (before, deadline) = (seen(boxes), Instant::now() + Duration::from_secs(4));
    while seen(boxes) == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
}
