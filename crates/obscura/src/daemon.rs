//! `obscura run`, the supervisor: builds the pipeline's stages from the config, wires
//! them with bounded channels, serves HTTP, tells systemd when it is ready, and shuts
//! down downstream-first on SIGTERM or SIGINT within one deadline. No stage's logic is
//! here: the stages are the `pipeline` crate's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anonymize::{AnonymizedFrame, Anonymizer, Mode, Settings, Shape, Tracker};
use anyhow::Context;
use capture::{CameraConfig, RawFrame, Source};
use health::{CameraHealth, Health, SystemSampler};
use sd_notify::NotifyState;
use store::{Accounts, Store};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Overrides, Resolved};
use crate::{detectors, logging};

/// How often process, disk and temperature readings are refreshed.
const SYSTEM_SAMPLE_EVERY: Duration = Duration::from_secs(5);

pub fn main(overrides: &Overrides, state_dir: &Path) -> anyhow::Result<ExitCode> {
    let config = config::load(overrides)?;
    logging::init(config.log_format, &config.log_level)?;
    abort_on_panic();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("obscura")
        .build()
        .context("cannot start the async runtime")?;
    let code = runtime.block_on(run(config, state_dir.to_owned()));
    // Anything still running past the shutdown deadline is abandoned, not waited for.
    runtime.shutdown_timeout(Duration::from_millis(500));
    code
}

/// A panic anywhere (a camera thread, a task) must not leave a half-working daemon:
/// log it and abort, so systemd restarts the whole service.
fn abort_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        tracing::error!(target: "obscura", "panic: {info}; aborting so systemd restarts the daemon");
        std::process::abort();
    }));
}

/// With no account yet, a one-time setup code for the first admin, on the console and in
/// the journal: there is no default password. With `open`, also where tablets open the
/// web app and, over HTTPS, the certificate fingerprint to check there, since the
/// tablet's browser cannot vouch for the box's own certificate.
/// The hub's start does the same over its own accounts; `cli` is its `user` command.
pub(crate) fn first_run(store: &dyn Accounts, open: Option<&Open>, cli: &str) -> anyhow::Result<()> {
    if store.user_count()? > 0 {
        return Ok(());
    }
    let code = web::new_setup_code(store).context("cannot make a setup code")?;
    let hint = format!("`{cli} setup-code` makes a new one");
    tracing::warn!(target: "obscura", %code, "no accounts yet: enter this setup code (POST /api/v1/setup, or the web app) to create the first admin (valid 24 h; {hint})");
    eprint!("{}", welcome(&code, open));
    Ok(())
}

/// Where the web app is opened from, for the first-run message.
#[derive(Debug)]
pub(crate) struct Open {
    /// The address the box listens on.
    pub listen: std::net::SocketAddr,
    /// `https` or `http`.
    pub scheme: &'static str,
    /// The URLs a tablet on the LAN opens: the mDNS name first, then the addresses.
    pub urls: Vec<String>,
    /// The SHA-256 fingerprint (`AA:BB:…`) to check before trusting the box, over HTTPS:
    /// its root's when it has its own, else the operator's certificate's.
    pub fingerprint: Option<String>,
    /// The box has its own root, which tablets install from `/trust`.
    pub own_root: bool,
}

impl Open {
    /// The box's own view: its mDNS name and its interfaces' addresses, read now.
    fn of_this_box(
        scheme: &'static str,
        listen: std::net::SocketAddr,
        fingerprint: Option<String>,
        own_root: bool,
    ) -> Self {
        let names = web::tls::host_names();
        let mdns = names.iter().find(|n| n.ends_with(".local")).map(String::as_str);
        let lan = if listen.ip().is_unspecified() { lan_addresses().unwrap_or_default() } else { Vec::new() };
        Self { listen, scheme, urls: tablet_urls(scheme, listen, mdns, &lan), fingerprint, own_root }
    }
}

/// Every interface's addresses.
fn lan_addresses() -> Result<Vec<std::net::IpAddr>, impl std::fmt::Display> {
    sysinfo::Networks::new_with_refreshed_list()
        .map(|networks| networks.values().flat_map(|n| n.ip_networks()).map(|n| n.addr).collect())
}

/// The URLs a tablet opens: none when the box listens on loopback; its mDNS name (which
/// the certificate carries) and then each LAN address when it listens on all of them;
/// else the one address it listens on. Link-local IPv6 is left out (a URL would need
/// the tablet's zone), and IPv6 only when it listens on `[::]`.
pub(crate) fn tablet_urls(
    scheme: &str,
    listen: std::net::SocketAddr,
    mdns: Option<&str>,
    lan: &[std::net::IpAddr],
) -> Vec<String> {
    let port = listen.port();
    let ip = listen.ip();
    if ip.is_loopback() {
        return Vec::new();
    }
    if !ip.is_unspecified() {
        return vec![format!("{scheme}://{}/", std::net::SocketAddr::new(ip, port))];
    }
    let mut addresses: Vec<std::net::IpAddr> = lan
        .iter()
        .copied()
        .filter(|a| !a.is_loopback() && !a.is_unspecified() && !a.is_multicast())
        .filter(|a| match a {
            std::net::IpAddr::V4(_) => true,
            std::net::IpAddr::V6(v6) => ip.is_ipv6() && (v6.segments()[0] & 0xffc0) != 0xfe80,
        })
        .collect();
    addresses.sort_by_key(|a| (a.is_ipv6(), *a));
    addresses.dedup();
    mdns.map(|name| format!("{scheme}://{name}:{port}/"))
        .into_iter()
        .chain(addresses.into_iter().map(|a| format!("{scheme}://{}/", std::net::SocketAddr::new(a, port))))
        .collect()
}

/// What a QR code for `url` carries: the URL, with the certificate's fingerprint (hex,
/// no colons: a smaller code) in its fragment, which the browser never sends.
pub(crate) fn qr_payload(url: &str, fingerprint: Option<&str>) -> String {
    match fingerprint {
        Some(fp) => format!("{url}#sha256={}", fp.replace(':', "")),
        None => url.to_owned(),
    }
}

/// A QR code drawn with half blocks, two modules a character row, light modules as
/// blocks: terminals and the journal are mostly light text on dark, and a code must be
/// dark on light to scan.
pub(crate) fn qr_text(payload: &str) -> anyhow::Result<String> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::with_error_correction_level(payload, qrcode::EcLevel::L)
        .context("cannot make a QR code of the URL")?;
    Ok(code.render::<Dense1x2>().dark_color(Dense1x2::Light).light_color(Dense1x2::Dark).quiet_zone(true).build())
}

/// The first-run message: the setup code, where to open the app (and a QR code of it),
/// and the fingerprint to check. `README.md` shows it as printed.
pub(crate) fn welcome(code: &str, open: Option<&Open>) -> String {
    let mut text =
        format!("\n  First start: no accounts yet. Setup code for the first admin (valid 24 h):\n\n      {code}\n\n");
    let Some(open) = open else { return text };
    match open.urls.first() {
        None => {
            let here = format!("{}://{}/", open.scheme, open.listen);
            text += &format!(
                "  The box listens on {} only: open {here} in a browser on this machine.\n  \
                 Tablets cannot reach it there: set [http] listen = \"0.0.0.0:8443\" for them.\n\n",
                open.listen
            );
        }
        Some(first) => {
            text += "  On the tablet (on the same network), open\n\n";
            for url in &open.urls {
                text += &format!("      {url}\n");
            }
            match qr_text(&qr_payload(first, open.fingerprint.as_deref())) {
                Ok(qr) => {
                    let what = if open.fingerprint.is_some() {
                        "the first address and the fingerprint"
                    } else {
                        "the first address"
                    };
                    text += &format!("\n  or scan this code with the tablet's camera ({what}):\n\n");
                    for line in qr.lines() {
                        text += &format!("    {line}\n");
                    }
                }
                Err(error) => tracing::warn!(target: "obscura", %error, "no QR code"),
            }
            text += "\n";
        }
    }
    match &open.fingerprint {
        Some(fingerprint) if open.own_root => {
            let page = open.urls.first().cloned().unwrap_or_else(|| format!("{}://{}/", open.scheme, open.listen));
            text += &format!(
                "  Trust this box once on each tablet ({page}trust: an iOS profile, or the certificate for Android).\n  \
                 Before trusting it, check that the tablet shows this SHA-256 fingerprint for its root:\n\n      {fingerprint}\n\n"
            );
        }
        Some(fingerprint) => {
            text += &format!(
                "  Before trusting the certificate, check that the browser shows this SHA-256 fingerprint:\n\n      {fingerprint}\n\n"
            )
        }
        None => {}
    }
    text
}

/// The certificate HTTPS serves, when the config asks for HTTPS: the operator's, or the
/// box's own from `STATE_DIR/tls/`, signed by the box's root, both made at first start
/// (with the root, which tablets install to trust the box).
fn tls_identity(
    config: &Resolved,
    state_dir: &Path,
    hosts: &[String],
) -> anyhow::Result<Option<(web::tls::Identity, Option<web::tls::RootCa>)>> {
    match &config.tls {
        config::Tls::Off => Ok(None),
        config::Tls::Files { cert, key } => web::tls::load(cert, key).map(|i| Some((i, None))).map_err(|e| {
            let keys = match e.part() {
                Some(web::tls::Part::Certificate) => "tls_cert",
                Some(web::tls::Part::Key) => "tls_key",
                None => "tls_cert and tls_key",
            };
            anyhow::anyhow!("{e}; check [http] {keys}")
        }),
        config::Tls::SelfSigned => {
            let dir = state_dir.join("tls");
            let own = web::tls::load_or_create_own(&dir, &certificate_names(hosts))?;
            let (cert, root) = (own.identity.cert_path.display(), own.root.path.display());
            let names = own.identity.info().names;
            if own.new_root {
                tracing::info!(target: "obscura", %root, fingerprint = %own.root.fingerprint(), "made the box's root certificate: tablets install it once (/trust)")
            }
            match own.made {
                web::tls::Made::Loaded => {}
                web::tls::Made::New => {
                    tracing::info!(target: "obscura", %cert, ?names, "made the box's own HTTPS certificate, signed by its root")
                }
                web::tls::Made::Renewed | web::tls::Made::Reissued => {
                    tracing::info!(target: "obscura", %cert, ?names, made = ?own.made, "made the box's HTTPS certificate anew, signed by the same root: tablets that trust the root notice nothing")
                }
                web::tls::Made::Migrated => {
                    tracing::warn!(target: "obscura", %cert, %root, "the box's self-signed HTTPS certificate was replaced by one signed by the box's new root: tablets ask to trust the box once more; install the root (/trust) and they never ask again")
                }
            }
            Ok(Some((own.identity, Some(own.root))))
        }
    }
}

/// The names and addresses a tablet reaches the box by: its host names (see
/// `web::tls::host_names`) and the addresses it listens on (every interface's when it
/// listens on all). Read once at start-up, for its certificate and its CSRF origins alike:
/// an address the box gains later needs a restart (or its name, or `[http] origins`).
pub(crate) fn own_hosts(listen: std::net::SocketAddr) -> Vec<String> {
    let mut hosts = web::tls::host_names();
    if listen.ip().is_unspecified() {
        match lan_addresses() {
            Ok(addresses) => hosts.extend(addresses.iter().map(ToString::to_string)),
            Err(error) => {
                tracing::warn!(target: "obscura", %error, "cannot list the box's addresses: its certificate does not name them and pages opened by address fail the CSRF check; open them by name, or list the addresses in [http] origins")
            }
        }
    } else {
        hosts.push(listen.ip().to_string());
    }
    hosts
}

/// What the box's own certificate is for: `hosts` but for addresses no client connects
/// to (unspecified, multicast, link-local IPv6), each once.
fn certificate_names(hosts: &[String]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for host in hosts {
        let unusable = host.parse::<std::net::IpAddr>().is_ok_and(|address| {
            let link_local = matches!(address, std::net::IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
            address.is_unspecified() || address.is_multicast() || link_local
        });
        if !unusable && !names.contains(host) {
            names.push(host.clone());
        }
    }
    names
}

/// The origins of the box's own pages, for CSRF: its `hosts` ([`own_hosts`]) with its
/// scheme and port, and then `[http] origins`.
pub(crate) fn own_origins(
    https: bool,
    port: u16,
    hosts: &[String],
    extra: &[String],
) -> std::collections::BTreeSet<String> {
    let mut origins = web::client::box_origins(https, port, hosts.iter().map(String::as_str));
    origins.extend(extra.iter().cloned());
    origins
}

/// How a camera's source is shown in the status API before it has started.
fn source_label(cam: &CameraConfig) -> String {
    match Source::from_config(cam) {
        Ok(source) => source.display(),
        Err(_) => cam.uri.clone().or(cam.pipeline.clone()).unwrap_or_default(),
    }
}

async fn run(config: Resolved, state_dir: PathBuf) -> anyhow::Result<ExitCode> {
    // Handlers first: a SIGTERM during start-up must still mean a graceful shutdown.
    let signals = Signals::install()?;
    std::fs::create_dir_all(&state_dir).with_context(|| {
        format!(
            "cannot create the state directory {}; create it for the obscura user or pass --state-dir",
            state_dir.display()
        )
    })?;
    let hosts = own_hosts(config.listen);
    let identity = tls_identity(&config, &state_dir, &hosts)?;
    capture::init(&config.gstreamer)?;
    if config.cameras.is_empty() {
        // Nothing to anonymize until a camera is configured (and the daemon restarted):
        // the models are checked now but held in memory only if something runs them.
        onnx::load_on_first_use();
    }
    let anonymizer = anonymizer(&config)?;
    let store = Arc::new(open_store(&config, &state_dir)?);
    let prelabeler = prelabeler(&config)?;
    seed_labels(&store, prelabeler.as_ref().map_or(&[][..], |(_, classes)| classes.as_slice()))?;
    let prelabeler = prelabeler.map(|(prelabeler, _)| prelabeler);
    tracing::info!(target: "obscura", anonymizer = ?anonymizer, "models loaded and verified");
    tracing::info!(target: "obscura", version = env!("CARGO_PKG_VERSION"), board = %config.board, detect = %config.detect, layers = ?config.sources, "starting");

    let cameras: Vec<Arc<CameraHealth>> =
        config.cameras.iter().map(|c| Arc::new(CameraHealth::new(c.id.as_str(), source_label(c)))).collect();
    let health = Arc::new(Health::new(config.board.clone(), cameras.clone()));

    // HTTP comes up first, so /healthz answers while cameras connect, and goes down last.
    let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| {
        format!("cannot listen on {}; is another obscura running? Set --listen or http.listen", config.listen)
    })?;
    let addr = listener.local_addr()?;
    let scheme = if identity.is_some() { "https" } else { "http" };
    let root = identity.as_ref().and_then(|(_, root)| root.clone()).map(Arc::new);
    // What a person checks before trusting the box: its root when it has its own, else
    // the operator's certificate.
    let fingerprint = root
        .as_ref()
        .map(|root| root.fingerprint())
        .or_else(|| identity.as_ref().map(|(identity, _)| identity.fingerprint()));
    match &identity {
        Some((identity, _)) => {
            let served = identity.fingerprint();
            tracing::info!(target: "obscura", fingerprint = %served, "https://{addr} certificate SHA-256 {served}");
            eprintln!("  https://{addr} certificate SHA-256 {served}");
            if let Some(root) = &root {
                let root = root.fingerprint();
                tracing::info!(target: "obscura", fingerprint = %root, "https://{addr} root SHA-256 {root}");
                eprintln!("  https://{addr} root SHA-256 {root}");
            }
        }
        None if !addr.ip().is_loopback() => {
            tracing::warn!(target: "obscura", %addr, "plain HTTP beyond loopback ([http] allow_plain_http): safe only behind your own TLS proxy")
        }
        None => {}
    }
    first_run(&*store, Some(&Open::of_this_box(scheme, addr, fingerprint, root.is_some())), "obscura user")?;
    let http_stop = CancellationToken::new();
    let live = Arc::new(web::live::LiveHub::new(config.cameras.iter().map(|c| c.id.as_str())));
    let origins = own_origins(identity.is_some(), addr.port(), &hosts, &config.origins);
    tracing::info!(target: "obscura", ?origins, trusted_proxies = ?config.trusted_proxies, "the web app's origins");
    let router = web::router(web::AppState {
        health: health.clone(),
        store: store.clone(),
        live: live.clone(),
        config: Arc::new(web::AuthConfig {
            // `__Host-` and `Secure` cookies exactly when the browser talks HTTPS.
            secure_cookies: identity.is_some(),
            root_ca: root,
            origins,
            trusted_proxies: config.trusted_proxies.clone(),
            ..Default::default()
        }),
        version: env!("CARGO_PKG_VERSION"),
        refusals: Default::default(),
        progress: Default::default(),
        thumbs: Default::default(),
    });
    let shutdown = http_stop.clone().cancelled_owned();
    let http = match identity {
        Some((identity, _)) => tokio::spawn(web::tls::serve(listener, router, identity, shutdown)),
        None => tokio::spawn(web::serve(listener, router, shutdown)),
    };
    tracing::info!(target: "obscura", "listening on {scheme}://{addr} (/api/v1, /healthz, /readyz, /metrics)");

    // The topology: capture → anonymize → store over bounded channels; pre-label and
    // retention beside them on the store; see the pipeline crate for each stage's shape.
    let stop = CancellationToken::new();
    let cx = pipeline::Context { shutdown: stop.clone(), health: health.clone() };
    let (capture_tx, capture_rx) = mpsc::channel::<RawFrame>(config.queue);
    let (store_tx, store_rx) = std::sync::mpsc::sync_channel::<AnonymizedFrame>(config.queue);
    let (busy, refusing) = (pipeline::Flag::default(), pipeline::Flag::default());
    let board = Arc::new(config.gstreamer.clone());
    let mut cameras_running = Vec::new();
    let anonymize = pipeline::AnonymizeStage {
        cameras: per_camera(&config, &anonymizer)?,
        busy: busy.clone(),
        live: Some(pipeline::LiveTap::new(Arc::new(Live(live.clone())), store.clone())),
    };
    let store_stage = pipeline::StoreStage {
        store: store.clone(),
        policy: config.store.no_consent.unwrap_or_else(|| config::default_of("store.no_consent")),
        refusing: refusing.clone(),
    };
    let retention = pipeline::RetentionStage {
        policy: config.store.retention(),
        every: config.store.retention_every.unwrap_or_else(|| config::default_duration("store.retention_every")),
        state_dir: state_dir.clone(),
    };
    for (cam, cam_health) in config.cameras.into_iter().zip(&cameras) {
        let handle = capture::spawn_camera(cam, board.clone(), cam_health.clone(), capture_tx.clone(), stop.clone())
            .context("cannot start a camera thread")?;
        cameras_running.push(handle);
    }
    drop(capture_tx);
    let spawn_failed = |stage: &str| format!("cannot start the {stage} thread");
    let anonymize =
        pipeline::spawn(anonymize, capture_rx, store_tx, cx.clone()).with_context(|| spawn_failed("anonymize"))?;
    let writer = pipeline::spawn(store_stage, store_rx, (), cx.clone()).with_context(|| spawn_failed("store"))?;
    let prelabel = match prelabeler {
        Some(prelabeler) => {
            let cameras = config.prelabel.cameras.clone().unwrap_or_default();
            let stage = pipeline::PrelabelStage { prelabeler, cameras, busy };
            Some(
                pipeline::spawn(stage, store.clone(), store.clone(), cx.clone())
                    .with_context(|| spawn_failed("prelabel"))?,
            )
        }
        None => None,
    };
    let retention =
        pipeline::spawn(retention, store.clone(), refusing, cx.clone()).with_context(|| spawn_failed("retention"))?;
    let sync = if config.sync.enabled() {
        let identity = sync::DeviceIdentity::load_or_create(&state_dir, store.device_id())
            .context("cannot load the box's sync key (STATE_DIR/sync/device.key)")?;
        let stage = sync::SyncStage {
            settings: config.sync.settings(),
            state_dir: state_dir.clone(),
            identity: Arc::new(identity),
        };
        Some(pipeline::spawn(stage, store.clone(), (), cx.clone()).with_context(|| spawn_failed("sync"))?)
    } else {
        None
    };
    let system = tokio::spawn(sample_system(health.clone(), state_dir, stop.clone()));

    health.set_ready(true);
    let status = format!("{} camera(s), {scheme}://{addr}", cameras.len());
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    if let Some(period) = sd_notify::watchdog_enabled() {
        watchdog(period, stop.clone())?;
    }
    tracing::info!(target: "obscura", cameras = cameras.len(), "ready");

    let signal = signals.wait().await;
    tracing::info!(target: "obscura", %signal, deadline = ?config.shutdown_timeout, "shutting down");
    health.set_ready(false);
    notify(&[NotifyState::Stopping]);
    stop.cancel();

    // Downstream first: capture stops, the anonymize stage drains and ends when its input
    // closes, then the store, the stages beside it, and last the HTTP server finishes its
    // open requests.
    let shutdown = async {
        for handle in cameras_running {
            let id = handle.id().to_owned();
            match tokio::task::spawn_blocking(move || handle.join()).await {
                Ok(Ok(())) => tracing::debug!(target: "obscura", camera = %id, "camera stopped"),
                Ok(Err(panic)) => pipeline::failed(&health, "camera", &format!("camera {id}: {panic}")),
                Err(e) => pipeline::failed(&health, "camera", &format!("cannot join camera {id}: {e}")),
            }
        }
        anonymize.stopped().await;
        // The store drains what anonymize handed it, then ends.
        writer.stopped().await;
        if let Some(prelabel) = prelabel {
            prelabel.stopped().await;
        }
        if let Err(error) = store.flush_capture_summaries() {
            tracing::error!(target: "obscura::store", %error, "cannot write the last capture summaries to the audit log");
        }
        retention.stopped().await;
        if let Some(sync) = sync {
            sync.stopped().await;
        }
        joined(&health, "system", system).await;
        http_stop.cancel();
        match http.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => pipeline::failed(&health, "http", &format!("HTTP server failed: {e}")),
            Err(e) => pipeline::failed(&health, "http", &e.to_string()),
        }
    };
    match tokio::time::timeout(config.shutdown_timeout, shutdown).await {
        Ok(()) => {
            tracing::info!(target: "obscura", "shutdown complete");
            Ok(ExitCode::SUCCESS)
        }
        Err(_) => {
            tracing::error!(target: "obscura", deadline = ?config.shutdown_timeout, "shutdown did not finish in time; exiting anyway");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Waits for a task of the supervisor's own; one that panicked is an error, counted.
async fn joined(health: &Health, task: &'static str, handle: tokio::task::JoinHandle<()>) {
    if let Err(e) = handle.await {
        pipeline::failed(health, task, &e.to_string());
    }
}

/// The web crate's live hub, as the pipeline's live view.
#[derive(Debug)]
struct Live(Arc<web::live::LiveHub>);

impl pipeline::LiveView for Live {
    fn due(&self, camera: &str) -> bool {
        self.0.due(camera)
    }
    fn publish(&self, camera: &str, jpeg: Vec<u8>) {
        self.0.publish(camera, jpeg);
    }
    fn clear(&self, camera: &str) {
        self.0.clear(camera);
    }
    fn width(&self) -> u32 {
        web::live::WIDTH
    }
}

async fn sample_system(health: Arc<Health>, state_dir: PathBuf, stop: CancellationToken) {
    let mut sampler = SystemSampler::new(&state_dir);
    let mut tick = tokio::time::interval(SYSTEM_SAMPLE_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => health.set_system(sampler.sample()),
        }
    }
}

/// Pings systemd at half its watchdog period until shutdown, on a thread of its own: a
/// notification blocks while the manager's queue is full, and must never hold up a
/// runtime worker (the HTTP server, the signal handlers). Not joined: it holds nothing.
fn watchdog(period: Duration, stop: CancellationToken) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            while !stop.is_cancelled() {
                notify(&[NotifyState::Watchdog]);
                let next = std::time::Instant::now() + period / 2;
                while !stop.is_cancelled() && std::time::Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(50).min(period / 2));
                }
            }
        })
        .context("cannot start the watchdog thread")?;
    Ok(())
}

fn notify(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(target: "obscura", error = %e, "cannot notify systemd");
    }
}

/// SIGTERM and SIGINT, caught from the moment they are installed.
pub(crate) struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        })
    }

    pub(crate) async fn wait(mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// The anonymizer the config asks for. A missing or altered model stops start-up: the
/// daemon fails closed rather than capture what it cannot redact.
fn anonymizer(config: &Resolved) -> anyhow::Result<Anonymizer> {
    let a = &config.anonymize;
    let input = |size: Option<config::InputSize>, key| {
        let size: config::InputSize = size.unwrap_or_else(|| config::default_of(key));
        onnx::InputSize { width: size.width, height: size.height }
    };
    let on = |v: Option<bool>, key| v.unwrap_or_else(|| config::default_of(key));
    let threshold = |t: Option<config::Fraction>, key| t.unwrap_or_else(|| config::default_of(key)).0;
    let tiles = config.detect.tiles.unwrap_or_else(|| config::default_of("detect.tiles")).0;
    let settings = settings(a, &config.detect, None)?;
    let spec = detectors::Spec {
        models: detectors::models_dir(a.models.as_deref())?,
        backend: backend(config)?,
        faces: on(a.faces, "anonymize.faces").then(|| {
            let size = input(config.detect.face_input, "detect.face_input");
            (size, threshold(a.face_threshold, "anonymize.face_threshold"), tiles)
        }),
        plates: on(a.plates, "anonymize.plates").then(|| {
            let size = input(config.detect.plate_input, "detect.plate_input");
            (size, threshold(a.plate_threshold, "anonymize.plate_threshold"), tiles)
        }),
        vehicle_zoom: Some(zoom(config.detect.vehicle_zoom, "detect.vehicle_zoom")).filter(|&z| z > 0),
        person_zoom: Some(zoom(config.detect.person_zoom, "detect.person_zoom")).filter(|&z| z > 0),
        text_everywhere: false,
        text_zoom: None,
        settings,
    };
    tracing::info!(target: "obscura", engine = spec.backend.name(), models = %spec.models.display(), "loading models");
    detectors::build(&spec).context("cannot start anonymization, so nothing will be captured")
}

/// The inference engine `[anonymize] backend` names, for every model.
fn backend(config: &Resolved) -> anyhow::Result<onnx::Backend> {
    let name: detectors::BackendArg =
        config.anonymize.backend.unwrap_or_else(|| config::default_of("anonymize.backend"));
    name.resolve()
}

/// A close-look side, 0 when off.
fn zoom(z: Option<config::Zoom>, key: &str) -> u32 {
    z.unwrap_or_else(|| config::default_of(key)).0
}

/// Redaction settings from `[anonymize]`, with a camera's `[anonymize.camera.ID]` on top.
fn settings(
    a: &config::AnonymizeConfig,
    detect: &config::DetectConfig,
    camera: Option<&config::CameraAnonymize>,
) -> anyhow::Result<Settings> {
    let mask_scale = camera
        .and_then(|c| c.mask_scale)
        .or(a.mask_scale)
        .unwrap_or_else(|| config::default_of("anonymize.mask_scale"));
    if !(1.0..=3.0).contains(&mask_scale) {
        anyhow::bail!("config error in [anonymize]: mask_scale {mask_scale} is out of range; use 1.0 to 3.0");
    }
    let fill = camera.and_then(|c| c.fill).or(a.fill).unwrap_or_else(|| config::default_of("anonymize.fill"));
    let mode = match camera.and_then(|c| c.mode).or(a.mode).unwrap_or_else(|| config::default_of("anonymize.mode")) {
        config::ModeName::Blur => Mode::Blur,
        config::ModeName::Pixelate => Mode::Pixelate,
        config::ModeName::Solid => Mode::Solid(fill),
    };
    let shape = match camera.and_then(|c| c.shape).or(a.shape).unwrap_or_else(|| config::default_of("anonymize.shape"))
    {
        config::ShapeName::Ellipse => Shape::Ellipse,
        config::ShapeName::Box => Shape::Box,
    };
    let proposal_ttl = detect.proposal_ttl.unwrap_or_else(|| config::default_duration("detect.proposal_ttl"));
    let plate_areas = detect.plate_areas.unwrap_or_else(|| config::default_of("detect.plate_areas")).0;
    let looks = |l: Option<config::LooksPerSecond>, key| l.unwrap_or_else(|| config::default_of(key)).0;
    Ok(Settings {
        mode,
        shape,
        mask_scale,
        deadline: a.deadline,
        proposal_ttl,
        plate_areas,
        person_looks: looks(detect.person_looks, "detect.person_looks"),
        vehicle_looks: looks(detect.vehicle_looks, "detect.vehicle_looks"),
        skip_when_sure: true,
    })
}

/// Each camera's anonymizer (shared detectors, its own settings) and tracker.
fn per_camera(config: &Resolved, anonymizer: &Anonymizer) -> anyhow::Result<HashMap<Arc<str>, (Anonymizer, Tracker)>> {
    let a = &config.anonymize;
    config
        .cameras
        .iter()
        .map(|cam| {
            let own = a.camera.get(cam.id.as_str());
            let settings = settings(a, &config.detect, own).with_context(|| format!("camera `{}`", cam.id))?;
            let track_frames = own
                .and_then(|c| c.track_frames)
                .or(a.track_frames)
                .unwrap_or_else(|| config::default_of("anonymize.track_frames"));
            Ok((Arc::from(cam.id.as_str()), (anonymizer.with_settings(settings), Tracker::new(track_frames))))
        })
        .collect()
}

/// Opens the store in the state directory, cleans up after any crash, and registers
/// the cameras with their zones and retention.
fn open_store(config: &Resolved, state_dir: &Path) -> anyhow::Result<Store> {
    let store = Store::open(state_dir).with_context(|| format!("cannot open the store in {}", state_dir.display()))?;
    let sweep = store.sweep().context("cannot check the store after start-up")?;
    tracing::info!(target: "obscura::store", dir = %state_dir.display(), temporaries = sweep.temporaries,
        orphan_blobs = sweep.orphan_blobs, missing_blobs = sweep.missing_blobs.len(), "store opened");
    // A crash may have left minutes without their capture summary.
    store.flush_capture_summaries().context("cannot complete the audit log")?;
    for cam in &config.cameras {
        let own = config.store.camera.get(cam.id.as_str());
        store.ensure_camera(cam.id.as_str(), own.and_then(|c| c.zone.as_deref()), own.and_then(|c| c.keep_days))?;
    }
    Ok(store)
}

/// The pre-labeller the config asks for, or None when it is off: the shipped NanoDet, or
/// the `[prelabel.model]` the user brings. A model that is missing, altered, or whose
/// outputs do not fit its config stops start-up, like the anonymizer's.
fn prelabeler(config: &Resolved) -> anyhow::Result<Option<(prelabel::Prelabeler, Vec<String>)>> {
    let p = &config.prelabel;
    if !p.enabled.unwrap_or_else(|| config::default_of("prelabel.enabled")) {
        return Ok(None);
    }
    let backend = backend(config)?;
    let threshold = p.threshold.unwrap_or_else(|| config::default_of("prelabel.threshold")).0;
    // The model reports down to a low floor; the pre-labeller keeps what passes `threshold`.
    let floor = threshold.min(0.2);
    let (detector, all): (Box<dyn prelabel::ObjectDetector>, Vec<String>) = match &config.prelabel_model {
        None => {
            let models = detectors::models_dir(config.anonymize.models.as_deref())?;
            let nanodet = onnx::NanoDet::load(&models, floor, &backend).context("cannot load the pre-label model")?;
            (Box::new(nanodet), prelabel::DEFAULT_CLASSES.iter().map(|c| c.to_string()).collect())
        }
        Some(m) => {
            let detector = onnx::ConfiguredDetector::load(
                &m.path,
                m.sha256.as_deref(),
                m.convention.clone(),
                m.classes.clone(),
                floor,
                &backend,
            )
            .context("cannot load the pre-label model of [prelabel.model]")?;
            (Box::new(detector), m.classes.clone())
        }
    };
    let classes = p.classes.clone().unwrap_or(all);
    let prelabeler = prelabel::Prelabeler::new(detector, &classes, threshold).context("config error in [prelabel]")?;
    tracing::info!(target: "obscura", ?prelabeler, "pre-labels on");
    Ok(Some((prelabeler, classes)))
}

/// Colours told apart with every common colour-vision deficiency: Okabe and Ito's
/// palette (black last, as it hides on dark frames). The app gives new labels the first
/// one not in use (`ui/src/screens.ts` holds the same list, then Paul Tol's muted one).
const PALETTE: [&str; 8] = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"];

/// The label set a new box starts with, so the first boxes are not all "object":
/// person, vehicle, bicycle, bag, then the pre-labeller's classes (so an accepted
/// pre-label has its label), each a colour of its own while the palette lasts.
pub(crate) fn starter_labels(prelabel_classes: &[String]) -> Vec<store::Label> {
    let mut names: Vec<&str> = vec!["person", "vehicle", "bicycle", "bag"];
    for class in prelabel_classes {
        if !names.contains(&class.as_str()) {
            names.push(class);
        }
    }
    names
        .iter()
        .enumerate()
        .map(|(i, name)| store::Label {
            name: (*name).to_owned(),
            color: PALETTE[i % PALETTE.len()].to_ascii_lowercase(),
            shape: "any".into(),
            attributes: Vec::new(),
            instructions: starter_instructions(name).into(),
            example: None,
        })
        .collect()
}

/// What the starter labels tell annotators; an admin rewrites them under Labels.
fn starter_instructions(name: &str) -> &'static str {
    match name {
        "person" => {
            "Box every person, the whole visible body, tight to its edges; a blurred face is still a person. \
             Someone mostly hidden gets a box over what shows."
        }
        "vehicle" => {
            "Cars, vans, lorries, buses and motorbikes, parked or moving. Include the mirrors, not the shadow."
        }
        "bicycle" => "The bicycle itself; its rider is a separate person box.",
        "bag" => "Bags, backpacks and suitcases someone carries or left behind.",
        _ => "",
    }
}

/// At first start (no account, no label yet), the starter label set; the first admin
/// edits it under Labels. Later starts leave the schema alone, even an emptied one.
fn seed_labels(store: &Store, prelabel_classes: &[String]) -> anyhow::Result<()> {
    if store.user_count()? == 0 && store.labels()?.is_empty() {
        store.set_labels(&starter_labels(prelabel_classes), "obscura").context("cannot store the starter labels")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AnonymizeConfig, CameraAnonymize, ModeName, ShapeName};

    #[test]
    fn a_camera_override_wins_over_the_global_settings() {
        let global = AnonymizeConfig {
            mode: Some(ModeName::Solid),
            fill: Some([9, 9, 9]),
            shape: Some(ShapeName::Box),
            mask_scale: Some(1.5),
            ..Default::default()
        };
        let own = CameraAnonymize { mode: Some(ModeName::Pixelate), mask_scale: Some(2.0), ..Default::default() };
        let base = settings(&global, &Default::default(), None).unwrap();
        assert_eq!((base.mode, base.shape, base.mask_scale), (Mode::Solid([9, 9, 9]), Shape::Box, 1.5));
        let camera = settings(&global, &Default::default(), Some(&own)).unwrap();
        assert_eq!((camera.mode, camera.shape, camera.mask_scale), (Mode::Pixelate, Shape::Box, 2.0));
        let bad = CameraAnonymize { mask_scale: Some(9.0), ..Default::default() };
        assert!(
            settings(&global, &Default::default(), Some(&bad))
                .unwrap_err()
                .to_string()
                .contains("mask_scale 9 is out of range")
        );
    }

    /// Issue 18: the first-run message said "Open https://127.0.0.1:PORT" on a box that
    /// listens on every address: the tablet needs the box's LAN name and addresses.
    #[test]
    fn first_run_names_the_lan_addresses_and_the_mdns_name_not_loopback() {
        let lan: Vec<std::net::IpAddr> = ["127.0.0.1", "192.168.1.20", "10.0.0.7", "::1", "fe80::1", "2001:db8::20"]
            .map(|a| a.parse().unwrap())
            .into();
        let all4 = "0.0.0.0:8443".parse().unwrap();
        assert_eq!(
            tablet_urls("https", all4, Some("gate.local"), &lan),
            ["https://gate.local:8443/", "https://10.0.0.7:8443/", "https://192.168.1.20:8443/"]
        );
        assert_eq!(
            tablet_urls("https", "[::]:443".parse().unwrap(), None, &lan),
            ["https://10.0.0.7:443/", "https://192.168.1.20:443/", "https://[2001:db8::20]:443/"]
        );
        assert_eq!(
            tablet_urls("https", "192.168.1.20:8443".parse().unwrap(), Some("gate.local"), &lan),
            ["https://192.168.1.20:8443/"]
        );
        assert!(tablet_urls("http", "127.0.0.1:8080".parse().unwrap(), Some("gate.local"), &lan).is_empty());

        let fingerprint =
            "06:72:F3:0B:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:28:6D";
        let open = Open {
            listen: all4,
            scheme: "https",
            urls: tablet_urls("https", all4, Some("gate.local"), &lan),
            fingerprint: Some(fingerprint.into()),
            own_root: true,
        };
        let text = welcome("ABCD-EFGH-JKMN-PQRS", Some(&open));
        // The box's own root: where tablets get it, and the root's fingerprint to check.
        assert!(text.contains("Trust this box once on each tablet (https://gate.local:8443/trust"), "{text}");
        assert!(text.contains("shows this SHA-256 fingerprint for its root"), "{text}");
        assert!(text.contains("      ABCD-EFGH-JKMN-PQRS\n"), "{text}");
        for url in &open.urls {
            assert!(text.contains(&format!("      {url}\n")), "{text}");
        }
        assert!(!text.contains("127.0.0.1") && !text.contains("0.0.0.0"), "{text}");
        assert!(text.contains(&format!("      {fingerprint}\n")), "{text}");
        // The QR code in the text carries the first URL and the fingerprint.
        let payload =
            "https://gate.local:8443/#sha256=0672F30BAABBCCDDEEFF00112233445566778899AABBCCDDEEFF00112233286D";
        assert_eq!(read_qr(&text), payload);

        // On loopback: say so, and how tablets get in.
        let local = Open {
            listen: "127.0.0.1:8080".parse().unwrap(),
            scheme: "http",
            urls: Vec::new(),
            fingerprint: None,
            own_root: false,
        };
        let text = welcome("ABCD-EFGH-JKMN-PQRS", Some(&local));
        assert!(text.contains("open http://127.0.0.1:8080/ in a browser on this machine"), "{text}");
        assert!(text.contains("set [http] listen = \"0.0.0.0:8443\""), "{text}");
    }

    /// Reads back the QR code drawn in `text` (half blocks, light modules drawn), as a
    /// phone's camera would.
    fn read_qr(text: &str) -> String {
        let rows: Vec<Vec<char>> =
            text.lines().filter(|l| l.contains('█')).map(|l| l.trim_start_matches("    ").chars().collect()).collect();
        let width = rows.iter().map(Vec::len).max().unwrap();
        // Each character is two modules, top and bottom; `light` says which are drawn.
        let light = |x: usize, y: usize| {
            let c = rows.get(y / 2).and_then(|r| r.get(x)).copied().unwrap_or(' ');
            matches!((c, y % 2), ('█', _) | ('▀', 0) | ('▄', 1))
        };
        // Scaled up 4× with a white margin, as a camera sees it.
        let (scale, margin) = (4, 16);
        let (w, h) = (width * scale + 2 * margin, rows.len() * 2 * scale + 2 * margin);
        let mut image = rqrr::PreparedImage::prepare_from_bitmap(w, h, |x, y| {
            let inside = x >= margin && y >= margin && x < w - margin && y < h - margin;
            inside && !light((x - margin) / scale, (y - margin) / scale)
        });
        let grids = image.detect_grids();
        assert_eq!(grids.len(), 1, "one QR code in\n{text}");
        grids[0].decode().unwrap().1
    }

    /// Issue 18: a new box had no labels, so the first boxes were saved as "object", and
    /// every label the app added got the same colour.
    #[test]
    fn a_new_box_starts_with_distinct_starter_labels_once() {
        let classes: Vec<String> = prelabel::DEFAULT_CLASSES.iter().map(|c| c.to_string()).collect();
        let labels = starter_labels(&classes);
        let names: Vec<&str> = labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["person", "vehicle", "bicycle", "bag", "car", "motorcycle", "bus", "truck"]);
        let colours: std::collections::BTreeSet<&str> = labels.iter().map(|l| l.color.as_str()).collect();
        assert_eq!(colours.len(), labels.len(), "each its own colour: {colours:?}");

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        seed_labels(&store, &classes).unwrap();
        assert_eq!(store.labels().unwrap(), labels);
        // An admin's edits stay, even an emptied schema once there is an account.
        store.set_labels(&labels[..1], "ada").unwrap();
        seed_labels(&store, &classes).unwrap();
        assert_eq!(store.labels().unwrap().len(), 1);
        store.add_user("ada", store::Role::Admin, "x", "test").unwrap();
        store.set_labels(&[], "ada").unwrap();
        seed_labels(&store, &classes).unwrap();
        assert!(store.labels().unwrap().is_empty());
    }

    /// Issue 15: a value no layer sets comes from defaults.toml, not from a constant in
    /// code (the code said plate areas off and 640x384 inputs where the defaults say 96
    /// px and 480x288).
    #[test]
    fn unset_values_take_the_embedded_defaults() {
        let detect: config::DetectConfig = Default::default();
        let unset = settings(&Default::default(), &detect, None).unwrap();
        assert_eq!(unset.plate_areas, 96);
        assert_eq!((unset.mode, unset.shape, unset.mask_scale), (Mode::Blur, Shape::Ellipse, 1.3));
        assert_eq!(unset.proposal_ttl, Duration::from_millis(80));
        assert_eq!((unset.person_looks, unset.vehicle_looks), (100.0, 12.5));
        let size: config::InputSize = config::default_of("detect.face_input");
        assert_eq!((size.width, size.height), (480, 288));
    }
}
