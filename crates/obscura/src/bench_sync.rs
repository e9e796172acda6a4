//! `obscura bench sync`: how fast one box's blobs reach a hub on loopback, against curl
//! sending the same bytes to the same hub over HTTPS in the same run (the practical
//! limit: one kept-alive connection, no signing or resume bookkeeping of its own), and
//! what a resume after a cut at 90% costs against a whole upload. The hub is the real
//! `obscura hub` binary, started here in a temporary state directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use sync::{DeviceIdentity, Fingerprint, HubAddress, HubClient};

/// The hub child, killed when dropped.
struct HubProcess(Child);

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_hub(
    state: &Path,
    extra: &[&std::ffi::OsStr],
) -> anyhow::Result<(HubProcess, Fingerprint, std::net::SocketAddr)> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("hub")
        .arg("--state-dir")
        .arg(state)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start `obscura hub`")?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let hub = HubProcess(child);
    let mut next = || lines.next().and_then(Result::ok).unwrap_or_default();
    let fingerprint = next().strip_prefix("fingerprint ").unwrap_or_default().parse().map_err(anyhow::Error::msg)?;
    let addr = next().strip_prefix("listening on https://").unwrap_or_default().parse()?;
    Ok((hub, fingerprint, addr))
}

/// A device with its own key, enrolled with a one-time token.
pub(crate) async fn device(
    dir: &Path,
    hub_state: &Path,
    address: &HubAddress,
    pin: Fingerprint,
) -> anyhow::Result<(Arc<DeviceIdentity>, HubClient, Option<wire::v1::MqttAccess>)> {
    use ring::rand::SecureRandom;
    let mut random = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut random).map_err(|_| anyhow::anyhow!("no randomness"))?;
    let id = wire::DeviceId::new(frame::now_unix_ms() as u64, random);
    let identity = Arc::new(DeviceIdentity::load_or_create(dir, id)?);
    let (client, status) = enrol_with_token(&identity, hub_state, address, pin).await?;
    Ok((identity, client, status.mqtt))
}

/// Enrols `identity` with a one-time token from the hub in `hub_state`, which approves it.
async fn enrol_with_token(
    identity: &Arc<DeviceIdentity>,
    hub_state: &Path,
    address: &HubAddress,
    pin: Fingerprint,
) -> anyhow::Result<(HubClient, wire::v1::DeviceStatus)> {
    let token = Command::new(std::env::current_exe()?).args(["hub", "token", "--state-dir"]).arg(hub_state).output()?;
    let token = String::from_utf8(token.stdout)?.trim().to_owned();
    let client = HubClient::new(address.clone(), pin, identity.clone(), None);
    let status = client.enrol("bench", Some(&token)).await?;
    if status.state != wire::v1::DeviceState::Approved {
        bail!("the bench device was not approved by its token");
    }
    Ok((client, status))
}

/// Each file `copies` times, each copy made distinct by 8 bytes after the JPEG's end
/// (decoders stop at its end marker), so the hub cannot skip any as already held.
fn blobs(files: &[PathBuf], copies: usize) -> anyhow::Result<Vec<(String, Bytes)>> {
    let mut out = Vec::new();
    for copy in 0..copies as u64 {
        for file in files {
            let mut bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            bytes.extend_from_slice(&copy.to_be_bytes());
            out.push((store::sha256_hex(&bytes), Bytes::from(bytes)));
        }
    }
    Ok(out)
}

pub fn main(files: Vec<PathBuf>, copies: usize, runs: usize) -> anyhow::Result<ExitCode> {
    if files.is_empty() {
        bail!("name some anonymized JPEGs, e.g. what `obscura blur photos/ --out anon/` wrote");
    }
    let dir = tempfile::tempdir()?;
    let hub_state = dir.path().join("hub");
    let (hub, pin, addr) = start_hub(&hub_state, &[])?;
    let hub_pid = hub.0.id();
    let address: HubAddress = format!("https://{addr}").parse().map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let total: u64 = blobs(&files, 1)?.iter().map(|(_, b)| b.len() as u64).sum::<u64>() * copies as u64;
    println!(
        "{} file(s) × {copies} = {} blobs, {:.1} MB a run, to {address} (loopback, the real hub)",
        files.len(),
        files.len() * copies,
        total as f64 / 1e6
    );
    let (mut ours, mut curls) = (Vec::new(), Vec::new());
    // CPU seconds over all runs: each client's own, and the hub's while serving it.
    let (mut ours_cpu, mut curl_cpu) = (Cpu::default(), Cpu::default());
    for run in 0..runs {
        // Each run uploads new content, a fresh set of copies for each client: bytes the
        // hub already holds from another device cost it no encryption or blob write (it
        // deduplicates them), which would flatter whichever client came second.
        let fresh = |client: u64| -> anyhow::Result<Vec<(String, Bytes)>> {
            Ok(blobs(&files, copies)?
                .into_iter()
                .map(|(_, b)| {
                    let mut v = b.to_vec();
                    v.extend_from_slice(&(run as u64 * 2 + client).to_be_bytes());
                    let b = Bytes::from(v);
                    (store::sha256_hex(&b), b)
                })
                .collect())
        };
        let set = fresh(0)?;
        let (_, client, _) =
            runtime.block_on(device(&dir.path().join(format!("obscura-{run}")), &hub_state, &address, pin))?;
        Cpu::settle(hub_pid)?;
        let before = Cpu::now(hub_pid)?;
        let started = Instant::now();

        runtime.block_on(async {
            for (sha, bytes) in &set {
                client.upload_blob(sha, bytes, false).await?;
            }
            Ok::<_, sync::ClientError>(())
        })?;
        ours.push(started.elapsed());
        ours_cpu.add(before, Cpu::now(hub_pid)?);

        let (identity, _, _) =
            runtime.block_on(device(&dir.path().join(format!("curl-{run}")), &hub_state, &address, pin))?;
        let files = dir.path().join(format!("files-{run}"));
        let config = curl_config(&files, &identity, addr, &fresh(1)?)?;
        Cpu::settle(hub_pid)?;
        let before = Cpu::now(hub_pid)?;
        curls.push(curl(&config)?);
        curl_cpu.add(before, Cpu::now(hub_pid)?);
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (ours, curl) = (median(&mut ours), median(&mut curls));
    let mbps = |d: Duration| total as f64 / 1e6 / d.as_secs_f64();
    let n = (files.len() * copies) as f64;
    println!("obscura sync   {:>8.1} MB/s  {:>8.0} blobs/s  (median of {runs})", mbps(ours), n / ours.as_secs_f64());
    println!("curl           {:>8.1} MB/s  {:>8.0} blobs/s", mbps(curl), n / curl.as_secs_f64());
    println!("ratio          {:.2} of curl's MB/s", curl.as_secs_f64() / ours.as_secs_f64());
    let sent = n * runs as f64;
    let ms = |d: Duration| d.as_secs_f64() * 1e3 / sent;
    println!(
        "cpu a blob     obscura {:.2} ms, curl {:.2} ms (the client's own); the hub {:.2} ms serving obscura, {:.2} ms serving curl",
        ms(ours_cpu.client),
        ms(curl_cpu.children),
        ms(ours_cpu.hub),
        ms(curl_cpu.hub)
    );

    // Resume: a blob cut at 90% costs its last 10%, not a new start.
    let big: Vec<u8> = blobs(&files, 1)?.iter().flat_map(|(_, b)| b.to_vec()).cycle().take(16 << 20).collect();
    let (full, resumed) = runtime.block_on(async {
        let (_, client, _) = device(&dir.path().join("resume"), &hub_state, &address, pin).await?;
        let whole = Bytes::from(big.clone());
        let started = Instant::now();
        client.upload_blob(&store::sha256_hex(&whole), &whole, false).await?;
        let full = started.elapsed();
        let mut other = big;
        other.extend_from_slice(b"resume");
        let other = Bytes::from(other);
        let sha = store::sha256_hex(&other);
        client.send_part(&sha, &other, other.len() * 9 / 10).await?;
        let started = Instant::now();
        let done = client.upload_blob(&sha, &other, true).await?;
        let resumed = started.elapsed();
        anyhow::ensure!(done.from as usize == other.len() * 9 / 10, "the upload did not resume at 90%: {done:?}");
        Ok::<_, anyhow::Error>((full, resumed))
    })?;
    println!(
        "resume         a 16 MiB blob cut at 90%: {:.0} ms to finish, against {:.0} ms whole ({:.0} %)",
        resumed.as_secs_f64() * 1e3,
        full.as_secs_f64() * 1e3,
        100.0 * resumed.as_secs_f64() / full.as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// CPU time spent, in clock ticks' resolution from `/proc`: this process's own (the
/// client, on the bench's one-thread runtime), its waited-for children's (curl) and the
/// hub's (all its threads).
#[derive(Debug, Default, Clone, Copy)]
struct Cpu {
    client: Duration,
    children: Duration,
    hub: Duration,
}

impl Cpu {
    fn now(hub: u32) -> anyhow::Result<Cpu> {
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        let fields = |pid: &str| -> anyhow::Result<Vec<f64>> {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
            // After the command's closing parenthesis: state is field 3, utime 14.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            Ok(rest.split_whitespace().skip(11).take(4).map(|t| t.parse().unwrap_or(0.0) / ticks).collect())
        };
        let own = fields("self")?;
        let hub = fields(&hub.to_string())?;
        let secs = |v: &[f64], i: usize| Duration::from_secs_f64(v.get(i).copied().unwrap_or(0.0));
        Ok(Cpu {
            client: secs(&own, 0) + secs(&own, 1),
            children: secs(&own, 2) + secs(&own, 3),
            hub: secs(&hub, 0) + secs(&hub, 1),
        })
    }

    /// Flushes what is written to disk, then waits until the hub has done with the last
    /// run (its CPU time still for 300 ms, at most 5 s), so no run pays for work the one
    /// before it left behind: the hub's, or the kernel's writeback of curl's 17 MB of
    /// request files, which the hub's next `fsync` would otherwise wait for.
    fn settle(hub: u32) -> anyhow::Result<()> {
        rustix::fs::sync();
        let started = Instant::now();
        let mut last = Cpu::now(hub)?.hub;
        while started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(300));
            let now = Cpu::now(hub)?.hub;
            if now == last {
                break;
            }
            last = now;
        }
        Ok(())
    }

    fn add(&mut self, before: Cpu, after: Cpu) {
        self.client += after.client.saturating_sub(before.client);
        self.children += after.children.saturating_sub(before.children);
        self.hub += after.hub.saturating_sub(before.hub);
    }
}

/// Runs curl with `config`, timed.
fn curl(config: &Path) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let out = Command::new("curl").arg("--config").arg(config).output().context("cannot run curl (install it)")?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!("curl failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(took)
}

/// A curl config sending `set` to the hub over one connection (`--next` keeps it
/// alive), each request signed beforehand for `identity` exactly as the box signs its own.
fn curl_config(
    dir: &Path,
    identity: &DeviceIdentity,
    addr: std::net::SocketAddr,
    set: &[(String, Bytes)],
) -> anyhow::Result<PathBuf> {
    use ring::rand::SecureRandom;
    std::fs::create_dir_all(dir)?;
    let random = ring::rand::SystemRandom::new();
    let mut config = String::new();
    let quoted = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
    for (i, (sha, bytes)) in set.iter().enumerate() {
        let file = dir.join(format!("{i}.bin"));
        std::fs::write(&file, bytes)?;
        let mut nonce = [0u8; 16];
        random.fill(&mut nonce).map_err(|_| anyhow::anyhow!("no randomness"))?;
        let path = format!("/v1/blobs/{sha}");
        let target = wire::signature::Target { method: "PATCH", path: &path, query: None };
        let created = frame::now_unix_ms() / 1000;
        let signed = wire::signature::sign(identity.key(), identity.device, target, bytes, created, nonce);
        if i > 0 {
            config.push_str("next\n");
        }
        let headers = [
            "Content-Type:".to_owned(),
            "Expect:".to_owned(),
            "upload-offset: 0".to_owned(),
            format!("upload-length: {}", bytes.len()),
            format!("content-digest: {}", signed.content_digest),
            format!("signature-input: {}", signed.signature_input),
            format!("signature: {}", signed.signature),
        ];
        config.push_str("silent\nshow-error\ninsecure\nfail\nrequest = \"PATCH\"\noutput = \"/dev/null\"\n");
        config.push_str(&format!("data-binary = {}\n", quoted(&format!("@{}", file.display()))));
        for header in headers {
            config.push_str(&format!("header = {}\n", quoted(&header)));
        }
        config.push_str(&format!("url = {}\n", quoted(&format!("https://{addr}{path}"))));
    }
    let args_file = dir.join("curl.config");
    std::fs::write(&args_file, config)?;
    Ok(args_file)
}

/// `obscura bench fleet`: `devices` simulated boxes in this process, each a real box
/// minus its cameras: its own state directory with its own SQLite store and outbox, its
/// own Ed25519 key and enrolment (a one-time token each), and the real sync stage
/// (`sync::SyncStage::drive`, one task each on one runtime) with its own HTTPS client and,
/// when the hub has a broker, its own MQTT session. Each store is filled first with
/// frames made from the given JPEGs (through an anonymizer with no passes: the inputs are
/// already anonymized), `repeat` of every ten carrying content every box sends alike,
/// which the hub stores once. Then the stages start, and the run ends when every box's
/// outbox is empty. Reports the hub's ingest in frames/s, MB/s and commits/s, and with a
/// broker, how long until every box is online and a command's round trip to every box.
pub fn fleet(
    files: Vec<PathBuf>,
    devices: usize,
    batches: usize,
    frames: usize,
    repeat: usize,
    broker: Option<(String, PathBuf)>,
) -> anyhow::Result<ExitCode> {
    if files.is_empty() {
        bail!("name some anonymized JPEGs, e.g. what `obscura blur photos/ --out anon/` wrote");
    }
    let dir = tempfile::tempdir()?;
    let hub_state = dir.path().join("hub");
    let hub_args: Vec<&std::ffi::OsStr> = match &broker {
        Some((url, secret)) => {
            vec!["--mqtt".as_ref(), url.as_ref(), "--mqtt-admin-password-file".as_ref(), secret.as_os_str()]
        }
        None => Vec::new(),
    };
    let (_hub, pin, addr) = start_hub(&hub_state, &hub_args)?;
    let address: HubAddress = format!("https://{addr}").parse().map_err(anyhow::Error::msg)?;
    let images = files
        .iter()
        .map(|f| Ok(image::open(f).with_context(|| format!("cannot decode {}", f.display()))?.into_rgb8()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let images = Arc::new(images);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let made = Instant::now();
    let boxes = runtime.block_on(async {
        // Filled a few at a time: JPEG encoding is the cost here, and it is not measured.
        let limit = Arc::new(tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
        ));
        let mut tasks = Vec::with_capacity(devices);
        for d in 0..devices {
            let (state, hub_state, address) = (dir.path().join(format!("box-{d}")), hub_state.clone(), address.clone());
            let (images, limit) = (images.clone(), limit.clone());
            tasks.push(tokio::spawn(async move {
                let simulated = enrol_box(&state, &hub_state, &address, pin).await?;
                let _turn = limit.acquire().await?;
                let store = simulated.store.clone();
                tokio::task::spawn_blocking(move || fill(&store, &images, d, batches * frames, repeat)).await??;
                Ok::<_, anyhow::Error>(simulated)
            }));
        }
        let mut boxes = Vec::with_capacity(devices);
        for task in tasks {
            boxes.push(task.await??);
        }
        Ok::<_, anyhow::Error>(boxes)
    })?;
    let bytes: u64 = boxes
        .iter()
        .map(|b| b.store.sync_backlog(RULES).map(|s| s.bytes))
        .sum::<Result<u64, _>>()
        .context("cannot read a box's outbox")?;
    println!(
        "{devices} box(es) enrolled and filled in {:.1} s: {} frame(s) each, {repeat} in 10 shared, batches of {frames}",
        made.elapsed().as_secs_f64(),
        batches * frames
    );
    let hub = {
        let db = store::HubDb::open(&hub_state)?;
        let (identity, _) = hub::HubIdentity::load_or_create(&hub_state)?;
        hub::Hub::new(Arc::new(db), Arc::new(identity))
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let started = Instant::now();
    let stages: Vec<_> = boxes
        .iter()
        .map(|b| {
            let stage = sync::SyncStage {
                settings: sync::SyncSettings {
                    rules: RULES,
                    limits: store::BatchLimits { frames: frames as u32, bytes: 64 << 20, age_ms: 0 },
                    max_kbps: 0,
                    windows: Vec::new(),
                    poll_every: Duration::from_secs(5),
                },
                state_dir: b.state.clone(),
                identity: b.identity.clone(),
            };
            let health = Arc::new(health::Health::new("bench".into(), Vec::new()));
            runtime.spawn(stage.drive(b.store.clone(), health, shutdown.clone()))
        })
        .collect();
    // Until every outbox is empty; with a broker, also when every box is online.
    let mut online: Option<Duration> = None;
    let ingest = loop {
        if broker.is_some() && online.is_none() && all_online(&hub, &boxes)? {
            online = Some(started.elapsed());
        }
        let left: u64 = boxes
            .iter()
            .map(|b| b.store.sync_backlog(RULES).map(|s| s.frames))
            .sum::<Result<u64, _>>()
            .context("cannot read a box's outbox")?;
        if left == 0 {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("{left} frame(s) still waiting after 30 minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let held: usize = boxes
        .iter()
        .map(|b| hub.store().frames(b.identity.device).map(|f| f.len()))
        .sum::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("cannot read the hub's frames: {e}"))?;
    let all = devices * batches * frames;
    if held != all {
        bail!("the hub holds {held} frame(s) of the {all} the boxes sent");
    }
    let took = ingest.as_secs_f64();
    let commits: u64 =
        boxes.iter().map(|b| b.store.sync_backlog(RULES).map(|s| s.batches_committed)).sum::<Result<_, _>>()?;
    println!(
        "ingest         {:.0} frames/s, {:.1} MB/s, {:.1} commits/s over {took:.1} s ({commits} batches)",
        all as f64 / took,
        bytes as f64 / 1e6 / took,
        commits as f64 / took
    );
    println!(
        "hub store      {:.1} MB on disk for {:.1} MB sent (shared content is kept once); every frame there once",
        dir_bytes(&hub_state.join("store")) as f64 / 1e6,
        bytes as f64 / 1e6
    );
    if broker.is_some() {
        let online = match online {
            Some(t) => t,
            None => wait_online(&hub, &boxes, started)?,
        };
        println!(
            "mqtt online    {} box(es) online at the hub {:.2} s after their stages started",
            boxes.len(),
            online.as_secs_f64()
        );
        commands(&hub, &boxes)?;
    }
    shutdown.cancel();
    runtime.block_on(async {
        for stage in stages {
            let _ = stage.await;
        }
    });
    Ok(ExitCode::SUCCESS)
}

/// What the simulated boxes sync: reviewed or not.
const RULES: store::SyncRules = store::SyncRules { require_review: false };

/// One simulated box: its state directory, store and key.
struct SimulatedBox {
    state: PathBuf,
    store: Arc<store::Store>,
    identity: Arc<DeviceIdentity>,
}

/// A box's state directory, store, key and consent, enrolled with a one-time token as
/// `obscura sync enrol --token` does (the enrolment file the stage reads).
async fn enrol_box(
    state: &Path,
    hub_state: &Path,
    address: &HubAddress,
    pin: Fingerprint,
) -> anyhow::Result<SimulatedBox> {
    let store = Arc::new(store::Store::open(state)?);
    store.add_consent(store::NewConsent {
        scope: store::Scope::Device,
        covered: "bench".into(),
        legal_basis: "consent (bench)".into(),
        purposes: vec![store::Purpose::Annotate, store::Purpose::Sync],
        valid_from: 0,
        valid_until: None,
        evidence_sha256: None,
        recorded_by: "bench".into(),
    })?;
    let identity = Arc::new(DeviceIdentity::load_or_create(state, store.device_id())?);
    let (_, status) = enrol_with_token(&identity, hub_state, address, pin).await?;
    sync::Enrolment::new(address, pin, status).save(state)?;
    Ok(SimulatedBox { state: state.to_owned(), store, identity })
}

/// `count` frames into box `d`'s store, from `images` in turn, each stamped with a tag
/// in its top row so its JPEG is its own, or (`repeat` of every ten) the same as every
/// other box's at that position.
fn fill(store: &store::Store, images: &[image::RgbImage], d: usize, count: usize, repeat: usize) -> anyhow::Result<()> {
    let anonymizer = anonymize::Anonymizer::new(Vec::new(), anonymize::Settings::default());
    for n in 0..count {
        let shared = n % 10 < repeat;
        let mut img = images[if shared { n } else { d + n } % images.len()].clone();
        let tag = if shared { n as u64 } else { ((d as u64) << 32) | n as u64 | 1 << 63 };
        for (i, byte) in tag.to_be_bytes().iter().enumerate() {
            for x in 0..8 {
                for y in 0..8 {
                    if let Some(p) = img.get_pixel_mut_checked((i * 8 + x) as u32, y) {
                        *p = image::Rgb([*byte, byte.wrapping_mul(3), byte.wrapping_mul(7)]);
                    }
                }
            }
        }
        let meta = frame::FrameMeta {
            camera: Arc::from("yard"),
            seq: n as u64,
            monotonic: Instant::now(),
            wall: std::time::SystemTime::now(),
            media_time: None,
        };
        let (width, height) = img.dimensions();
        let raw = frame::RawFrame::new(meta, width, height, img.into_raw())?;
        let frame = anonymizer.anonymize(raw, None)?;
        store.put_frames(&[(&frame, serde_json::json!({}))], store::NoConsent::Drop)?;
    }
    Ok(())
}

fn all_online(hub: &hub::Hub, boxes: &[SimulatedBox]) -> anyhow::Result<bool> {
    for b in boxes {
        let presence = hub.store().presence(b.identity.device).map_err(|e| anyhow::anyhow!("{e}"))?;
        if !presence.is_some_and(|p| p.online) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn wait_online(hub: &hub::Hub, boxes: &[SimulatedBox], started: Instant) -> anyhow::Result<Duration> {
    while !all_online(hub, boxes)? {
        if started.elapsed() > Duration::from_secs(300) {
            bail!("not every box was online at the hub within 300 s: is the broker up, and `--mqtt` right?");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(started.elapsed())
}

/// A `sync_now` queued for every box in the hub's store (as `obscura hub devices
/// sync-now` does): how long until the hub has recorded each box's ack, the command
/// pushed over MQTT by the hub's control plane and carried out by the box's stage.
fn commands(hub: &hub::Hub, boxes: &[SimulatedBox]) -> anyhow::Result<()> {
    let sent = Instant::now();
    let mut queued = Vec::with_capacity(boxes.len());
    for b in boxes {
        let command = hub
            .command(b.identity.device, wire::v1::CommandKind::SyncNow, Vec::new(), "bench", frame::now_unix_ms())
            .map_err(|e| anyhow::anyhow!(e.message))?;
        queued.push((b.identity.device, command.id, None::<Duration>));
    }
    while queued.iter().any(|q| q.2.is_none()) {
        for (device, id, acked) in queued.iter_mut().filter(|q| q.2.is_none()) {
            if hub.store().command_ack(*device, id).map_err(|e| anyhow::anyhow!("{e}"))?.is_some() {
                *acked = Some(sent.elapsed());
            }
        }
        if sent.elapsed() > Duration::from_secs(120) {
            let missing = queued.iter().filter(|q| q.2.is_none()).count();
            bail!("{missing} box(es) had not acknowledged within 120 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut latencies: Vec<Duration> = queued.iter().filter_map(|q| q.2).collect();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    println!(
        "command        queued at the hub to ack recorded there, every box: median {:.0} ms, p95 {:.0} ms, last {:.0} ms",
        at(0.5),
        at(0.95),
        at(1.0)
    );
    Ok(())
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() { dir_bytes(&path) } else { e.metadata().map_or(0, |m| m.len()) }
        })
        .sum()
}
