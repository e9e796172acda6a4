//! `obscura run`: builds the stages from the config, wires them with bounded channels,
//! tells systemd when it is ready, and shuts down downstream-first on SIGTERM or SIGINT
//! within one deadline.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use capture::{CameraConfig, RawFrame, Source};
use health::{CameraHealth, Health, SystemSampler};
use sd_notify::NotifyState;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Overrides, Resolved};
use crate::logging;

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
    capture::init(&config.gstreamer)?;
    tracing::info!(target: "obscura", version = env!("CARGO_PKG_VERSION"), board = %config.board, detect = %config.detect, layers = ?config.sources, "starting");

    let cameras: Vec<Arc<CameraHealth>> = config
        .cameras
        .iter()
        .map(|c| Arc::new(CameraHealth::new(c.id.as_str(), source_label(c))))
        .collect();
    let health = Arc::new(Health::new(config.board.clone(), cameras.clone()));

    // HTTP comes up first, so /healthz answers while cameras connect, and goes down last.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}; is another obscura running? Set --listen or http.listen",
                config.listen
            )
        })?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        tracing::warn!(target: "obscura", %addr, "HTTP listens beyond loopback; it serves health and metrics only, without TLS");
    }
    let http_stop = CancellationToken::new();
    let router = web::router(web::AppState {
        health: health.clone(),
        version: env!("CARGO_PKG_VERSION"),
    });
    let http = tokio::spawn(web::serve(
        listener,
        router,
        http_stop.clone().cancelled_owned(),
    ));
    tracing::info!(target: "obscura", "listening on http://{addr} (/healthz, /readyz, /api/v1/status, /metrics)");

    // capture → frames, over one bounded channel shared by all cameras.
    let stop = CancellationToken::new();
    let (tx, rx) = mpsc::channel::<RawFrame>(config.queue);
    let board = Arc::new(config.gstreamer.clone());
    let mut threads = Vec::new();
    for (cam, cam_health) in config.cameras.into_iter().zip(&cameras) {
        let handle = capture::spawn_camera(
            cam,
            board.clone(),
            cam_health.clone(),
            tx.clone(),
            stop.clone(),
        )
        .context("cannot start a camera thread")?;
        threads.push(handle);
    }
    drop(tx);
    let frames = tokio::spawn(frames(rx));
    let system = tokio::spawn(sample_system(health.clone(), state_dir, stop.clone()));

    health.set_ready(true);
    let status = format!("{} camera(s), http://{addr}", cameras.len());
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    let watchdog =
        sd_notify::watchdog_enabled().map(|period| tokio::spawn(watchdog(period, stop.clone())));
    tracing::info!(target: "obscura", cameras = cameras.len(), "ready");

    let signal = signals.wait().await;
    tracing::info!(target: "obscura", %signal, deadline = ?config.shutdown_timeout, "shutting down");
    health.set_ready(false);
    notify(&[NotifyState::Stopping]);
    stop.cancel();

    // Downstream first: capture stops, the frame stage drains and ends when its input
    // closes, then the HTTP server finishes its open requests.
    let shutdown = async {
        for handle in threads {
            let id = handle.id().to_owned();
            match tokio::task::spawn_blocking(move || handle.join()).await {
                Ok(Ok(())) => tracing::debug!(target: "obscura", camera = %id, "camera stopped"),
                Ok(Err(panic)) => tracing::error!(target: "obscura", "{panic}"),
                Err(e) => {
                    tracing::error!(target: "obscura", camera = %id, error = %e, "cannot join camera")
                }
            }
        }
        let delivered = frames.await.unwrap_or_default();
        tracing::debug!(target: "obscura", delivered, "frame stage stopped");
        let _ = system.await;
        if let Some(watchdog) = watchdog {
            let _ = watchdog.await;
        }
        http_stop.cancel();
        match http.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(target: "obscura", error = %e, "HTTP server failed"),
            Err(e) => tracing::error!(target: "obscura", error = %e, "HTTP task failed"),
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

/// The stage after capture. Until the anonymizer is wired in, frames end here: they are
/// released from memory and nothing is written anywhere. Returns how many it received.
async fn frames(mut rx: mpsc::Receiver<RawFrame>) -> u64 {
    let mut received = 0;
    while let Some(frame) = rx.recv().await {
        received += 1;
        drop(frame);
    }
    received
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

/// Pings systemd at half its watchdog period while the runtime is alive.
async fn watchdog(period: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(period / 2);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => notify(&[NotifyState::Watchdog]),
        }
    }
}

fn notify(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(target: "obscura", error = %e, "cannot notify systemd");
    }
}

/// SIGTERM and SIGINT, caught from the moment they are installed.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        })
    }

    async fn wait(mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
