//! `obscura hub`: the hub a fleet's boxes sync to. With no subcommand it serves the v1
//! data plane over HTTPS with the hub's own certificate, whose fingerprint it prints at
//! every start (devices pin it at enrolment); `devices list|approve|revoke` and `token`
//! decide who may send. The logic is the `hub` crate's, the routes `web`'s, the storage
//! `store`'s (`HubDb`, in the hub's own state directory, apart from any box's).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use wire::DeviceId;
use wire::v1::DeviceState;

#[derive(Debug, Args)]
pub struct HubArgs {
    /// Where the hub keeps its database, blobs, keys and certificate.
    #[arg(
        long,
        env = "OBSCURA_HUB_STATE_DIR",
        value_name = "DIR",
        default_value = "/var/lib/obscura-hub",
        global = true
    )]
    state_dir: PathBuf,
    /// The HTTPS address to serve on (port 0 picks a free port).
    #[arg(long, env = "OBSCURA_HUB_LISTEN", value_name = "ADDR", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    #[command(subcommand)]
    command: Option<HubCommand>,
}

#[derive(Debug, Subcommand)]
enum HubCommand {
    /// The devices that enrolled, and the decisions on them.
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// Print a one-time enrolment token: the device that enrols with it is approved at once.
    Token,
}

#[derive(Debug, Subcommand)]
enum DevicesCommand {
    /// Every device that enrolled: id, state, hostname, key fingerprint.
    List,
    /// Let a pending device send.
    Approve { id: DeviceId },
    /// Stop a device for good: its requests are refused from now on.
    Revoke { id: DeviceId },
}

fn open(state_dir: &Path) -> anyhow::Result<hub::Hub> {
    let db = store::HubDb::open(state_dir)
        .with_context(|| format!("cannot open the hub's store in {}", state_dir.display()))?;
    let (identity, made) = hub::HubIdentity::load_or_create(state_dir).context("cannot load the hub's key")?;
    if made {
        tracing::info!(target: "obscura", hub = identity.hub_id(), "made the hub's signing key");
    }
    Ok(hub::Hub::new(Arc::new(db), Arc::new(identity)))
}

pub fn main(args: HubArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        None => serve(&args.state_dir, args.listen),
        Some(HubCommand::Token) => {
            let hub = open(&args.state_dir)?;
            let token = hub.new_token(frame::now_unix_ms()).map_err(|e| anyhow::anyhow!(e.message))?;
            println!("{token}");
            eprintln!("a one-time token: give it to `obscura sync enrol --token`; it approves one device");
            Ok(ExitCode::SUCCESS)
        }
        Some(HubCommand::Devices(command)) => devices(&open(&args.state_dir)?, command),
    }
}

fn devices(hub: &hub::Hub, command: DevicesCommand) -> anyhow::Result<ExitCode> {
    let decide = |id: DeviceId, state: DeviceState| -> anyhow::Result<ExitCode> {
        hub.decide(id, state, frame::now_unix_ms()).map_err(|e| anyhow::anyhow!(e.message))?;
        println!("{id} {}", state.as_str());
        Ok(ExitCode::SUCCESS)
    };
    match command {
        DevicesCommand::List => {
            let devices = hub.store().devices().map_err(|e| anyhow::anyhow!("cannot list the devices: {e}"))?;
            if devices.is_empty() {
                eprintln!("no device has enrolled yet: run `obscura sync enrol` on a box");
            }
            for d in devices {
                // As the box shows its own key (`obscura sync status`, doctor, the UI).
                let key = wire::keyfile::public_fingerprint(&d.public_key);
                println!("{} {:<8} {} key {key}", d.id, d.state.as_str(), d.hostname);
            }
            Ok(ExitCode::SUCCESS)
        }
        DevicesCommand::Approve { id } => decide(id, DeviceState::Approved),
        DevicesCommand::Revoke { id } => decide(id, DeviceState::Revoked),
    }
}

fn serve(state_dir: &Path, listen: SocketAddr) -> anyhow::Result<ExitCode> {
    crate::logging::init(crate::config::LogFormat::Text, "info")?;
    let hub = open(state_dir)?;
    let tls_dir = state_dir.join("tls");
    let (identity, _) = web::tls::load_or_create(&tls_dir, &web::tls::host_names())
        .with_context(|| format!("cannot make or load the hub's certificate in {}", tls_dir.display()))?;
    // Printed at every start, on stdout: what a device's `--hub-fingerprint` must say.
    println!("fingerprint SHA256:{}", identity.fingerprint());
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let signals = crate::daemon::Signals::install()?;
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| {
            format!("cannot listen on {listen}: is another hub running there? pick another --listen")
        })?;
        let addr = listener.local_addr().context("cannot read the listening address")?;
        let router = web::hub::hub_router(web::hub::HubState::new(hub));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(web::tls::serve(listener, router, identity, async move {
            let _ = stopped.await;
        }));
        println!("listening on https://{addr}");
        tracing::info!(target: "obscura", %addr, hub = ?state_dir, "hub listening (/v1, /healthz, /metrics)");
        let signal = signals.wait().await;
        tracing::info!(target: "obscura", %signal, "hub shutting down");
        let _ = stop.send(());
        match tokio::time::timeout(std::time::Duration::from_secs(10), server).await {
            Ok(Ok(Ok(()))) => Ok(ExitCode::SUCCESS),
            Ok(Ok(Err(e))) => Err(anyhow::Error::new(e).context("the hub's HTTPS server failed")),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("the hub's HTTPS server panicked")),
            Err(_) => {
                tracing::warn!(target: "obscura", "requests still open after 10 s; stopping anyway");
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}
