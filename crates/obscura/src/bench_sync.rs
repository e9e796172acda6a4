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
async fn device(
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
    let token = Command::new(std::env::current_exe()?).args(["hub", "token", "--state-dir"]).arg(hub_state).output()?;
    let token = String::from_utf8(token.stdout)?.trim().to_owned();
    let client = HubClient::new(address.clone(), pin, identity.clone(), None);
    let status = client.enrol("bench", Some(&token)).await?;
    if status.state != wire::v1::DeviceState::Approved {
        bail!("the bench device was not approved by its token");
    }
    Ok((identity, client, status.mqtt))
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
    let (_hub, pin, addr) = start_hub(&hub_state, &[])?;
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
    for run in 0..runs {
        // Each run uploads new content: a fresh set of copies, for each client.
        let set = blobs(&files, copies)?
            .into_iter()
            .map(|(_, mut b)| {
                let mut v = b.to_vec();
                v.extend_from_slice(&(run as u64).to_be_bytes());
                b = Bytes::from(v);
                (store::sha256_hex(&b), b)
            })
            .collect::<Vec<_>>();
        let (_, client, _) =
            runtime.block_on(device(&dir.path().join(format!("obscura-{run}")), &hub_state, &address, pin))?;
        let started = Instant::now();
        runtime.block_on(async {
            for (sha, bytes) in &set {
                client.upload_blob(sha, bytes, false).await?;
            }
            Ok::<_, sync::ClientError>(())
        })?;
        ours.push(started.elapsed());

        let (identity, _, _) =
            runtime.block_on(device(&dir.path().join(format!("curl-{run}")), &hub_state, &address, pin))?;
        curls.push(curl(&dir.path().join(format!("files-{run}")), &identity, addr, &set)?);
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

/// curl sending `set` to the hub over one connection (`--next` keeps it alive), each
/// request signed beforehand for `identity` exactly as the box signs its own.
fn curl(
    dir: &Path,
    identity: &DeviceIdentity,
    addr: std::net::SocketAddr,
    set: &[(String, Bytes)],
) -> anyhow::Result<Duration> {
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
    let started = Instant::now();
    let out = Command::new("curl").arg("--config").arg(&args_file).output().context("cannot run curl (install it)")?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!("curl failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(took)
}

/// `obscura bench fleet`: `devices` simulated boxes in this process, each with its own
/// Ed25519 key, its own enrolment (a one-time token each) and its own connection,
/// sending signed batches of real anonymized JPEGs to one real hub at once; `repeat` of
/// every ten frames are content another box also sends, which the hub stores once.
/// Reports the hub's ingest in frames/s and MB/s and commits/s.
///
/// Each box builds its manifests in memory: the device's store and MQTT session are not
/// in this loop (they are the daemon's, measured by `bench sync` and the tests).
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
    let base = blobs(&files, 1)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let boxes = runtime.block_on(async {
        let mut boxes = Vec::with_capacity(devices);
        for d in 0..devices {
            boxes.push(device(&dir.path().join(format!("box-{d}")), &hub_state, &address, pin).await?);
        }
        Ok::<_, anyhow::Error>(boxes)
    })?;
    let sessions = match &broker {
        Some(_) => Some(runtime.block_on(control_plane(&boxes, &hub_state))?),
        None => None,
    };
    let boxes: Vec<_> = boxes.into_iter().map(|(identity, client, _)| (identity, client)).collect();
    println!("{devices} box(es) enrolled; each sends {batches} batch(es) of {frames} frame(s), {repeat} in 10 shared");
    let started = Instant::now();
    let results = runtime.block_on(async {
        let mut tasks = Vec::new();
        for (d, (identity, client)) in boxes.into_iter().enumerate() {
            let base = base.clone();
            tasks.push(tokio::spawn(async move {
                let hub_key = wire::unbase64(&client.device().await?.hub_key).unwrap_or_default();
                let (mut bytes, mut sent) = (0u64, 0u64);
                for b in 0..batches {
                    let mut manifest_frames = Vec::new();
                    for f in 0..frames {
                        let (_, jpeg) = &base[(d + f) % base.len()];
                        // A share of the frames carry content every box sends alike.
                        let shared = f % 10 < repeat;
                        let mut v = jpeg.to_vec();
                        let tag = if shared {
                            (b * frames + f) as u64
                        } else {
                            ((d as u64) << 32) | (b * frames + f) as u64 | 1 << 63
                        };
                        v.extend_from_slice(&tag.to_be_bytes());
                        let v = Bytes::from(v);
                        let sha = store::sha256_hex(&v);
                        let up = client.upload_blob(&sha, &v, false).await?;
                        sent += up.sent;
                        bytes += v.len() as u64;
                        manifest_frames.push(wire::v1::Frame {
                            local: (b * frames + f) as i64 + 1,
                            camera: "yard".into(),
                            captured_ms: frame::now_unix_ms(),
                            sha256: sha,
                            bytes: v.len() as u64,
                            width: 0,
                            height: 0,
                            consents: vec!["c1".into()],
                            annotation: None,
                            predictions: Vec::new(),
                        });
                    }
                    let batch = ulid_text();
                    let manifest = wire::v1::Manifest {
                        version: wire::VERSION,
                        batch: batch.clone(),
                        device: identity.device,
                        created_ms: frame::now_unix_ms(),
                        audit_head: wire::v1::AuditHead { seq: b as i64, hash: String::new() },
                        frames: manifest_frames,
                        consents: vec![wire::v1::Consent {
                            id: "c1".into(),
                            scope: wire::v1::Scope { kind: "device".into(), value: String::new() },
                            purposes: vec![wire::v1::Purpose::Annotate, wire::v1::Purpose::Sync],
                            valid_from_ms: 0,
                            valid_until_ms: None,
                            withdrawn_at_ms: None,
                            basis: "bench".into(),
                            evidence_sha256: None,
                        }],
                    };
                    client.commit(&batch, &serde_json::to_string(&manifest)?, &hub_key).await?;
                }
                Ok::<_, anyhow::Error>((bytes, sent))
            }));
        }
        let mut totals = (0u64, 0u64);
        for task in tasks {
            let (bytes, sent) = task.await??;
            totals.0 += bytes;
            totals.1 += sent;
        }
        Ok::<_, anyhow::Error>(totals)
    })?;
    let took = started.elapsed().as_secs_f64();
    let all = (devices * batches * frames) as f64;
    println!(
        "ingest         {:.0} frames/s, {:.1} MB/s, {:.1} commits/s over {took:.1} s",
        all / took,
        results.0 as f64 / 1e6 / took,
        (devices * batches) as f64 / took
    );
    let blobs_dir = hub_state.join("store");
    println!(
        "hub store      {:.1} MB on disk for {:.1} MB sent (shared content is kept once)",
        dir_bytes(&blobs_dir) as f64 / 1e6,
        results.1 as f64 / 1e6
    );
    if let Some(sessions) = sessions {
        runtime.block_on(async {
            for session in sessions {
                session.shutdown(Duration::from_secs(1)).await;
            }
        });
    }
    Ok(ExitCode::SUCCESS)
}

/// Every box's MQTT session with the login its enrolment brought: how long until all
/// are online, then one command queued for every box in the hub's store (as `obscura hub
/// devices sync-now` does), how long until each box has it (pushed by the hub's control
/// plane) and until the hub has recorded every ack that came back over MQTT.
async fn control_plane(
    boxes: &[(Arc<DeviceIdentity>, HubClient, Option<wire::v1::MqttAccess>)],
    hub_state: &Path,
) -> anyhow::Result<Vec<sync::MqttHandle>> {
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(wire::DeviceId, wire::v1::Command)>(boxes.len().max(1) * 2);
    let mut sessions = Vec::with_capacity(boxes.len());
    for (identity, _, access) in boxes {
        let access = access.as_ref().context("the hub gave no broker login: is `--mqtt` right?")?;
        let mut settings = sync::MqttSettings::new(&access.broker, identity.device, &access.password);
        settings.telemetry_every = Duration::from_secs(3600);
        let (commands, mut inbox) = tokio::sync::mpsc::channel(4);
        let (tx, device) = (tx.clone(), identity.device);
        tokio::spawn(async move {
            while let Some(command) = inbox.recv().await {
                let _ = tx.send((device, command)).await;
            }
        });
        sessions.push(sync::MqttSession::spawn(settings, wire::mqtt::Telemetry::default, commands)?);
    }
    while sessions.iter().any(|s| !s.is_up()) {
        if started.elapsed() > Duration::from_secs(120) {
            let down = sessions.iter().filter(|s| !s.is_up()).count();
            bail!("{down} box(es) could not log in to the broker within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let online = started.elapsed();
    let db = store::HubDb::open(hub_state)?;
    let (identity, _) = hub::HubIdentity::load_or_create(hub_state)?;
    let hub = hub::Hub::new(Arc::new(db), Arc::new(identity));
    let sent = Instant::now();
    let mut queued = Vec::with_capacity(boxes.len());
    for (identity, _, _) in boxes {
        let command = hub
            .command(identity.device, wire::v1::CommandKind::SyncNow, Vec::new(), "bench", frame::now_unix_ms())
            .map_err(|e| anyhow::anyhow!(e.message))?;
        queued.push((identity.device, command.id));
    }
    let mut arrived = Vec::with_capacity(boxes.len());
    while arrived.len() < boxes.len() {
        let (device, command) = tokio::time::timeout(Duration::from_secs(120), rx.recv())
            .await
            .context("not every box got its command within 120 s")?
            .context("the sessions ended")?;
        if !queued.iter().any(|(d, id)| *d == device && *id == command.id) || arrived.iter().any(|(d, _)| *d == device)
        {
            continue; // a second delivery (QoS 1)
        }
        arrived.push((device, sent.elapsed()));
        let session = &sessions[boxes.iter().position(|(i, _, _)| i.device == device).expect("one of ours")];
        let ack = wire::v1::CommandAck { result: wire::v1::AckResult::Done, message: None, receipt: None };
        session.publish_ack(&command.id, &ack)?;
    }
    let all_arrived = sent.elapsed();
    loop {
        let mut acked = 0;
        for (device, id) in &queued {
            acked += usize::from(hub.store().command_ack(*device, id).map_err(|e| anyhow::anyhow!("{e}"))?.is_some());
        }
        if acked == queued.len() {
            break;
        }
        if sent.elapsed() > Duration::from_secs(120) {
            bail!("the hub recorded {acked} of {} acks within 120 s", queued.len());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut latencies: Vec<Duration> = arrived.iter().map(|(_, t)| *t).collect();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    println!("mqtt online    {} session(s) in {:.2} s", sessions.len(), online.as_secs_f64());
    println!(
        "command        to every box: median {:.0} ms, p95 {:.0} ms, last {:.0} ms; every ack recorded at the hub after {:.0} ms",
        at(0.5),
        at(0.95),
        all_arrived.as_secs_f64() * 1e3,
        sent.elapsed().as_secs_f64() * 1e3
    );
    Ok(sessions)
}

fn ulid_text() -> String {
    use ring::rand::SecureRandom;
    let mut random = [0u8; 16];
    let _ = ring::rand::SystemRandom::new().fill(&mut random);
    wire::DeviceId::new(frame::now_unix_ms() as u64, random).to_string()
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
