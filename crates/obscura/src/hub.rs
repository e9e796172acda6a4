//! `obscura hub`: the hub a fleet's boxes sync to. With no subcommand it serves the v1
//! data plane over HTTPS with the hub's own certificate, whose fingerprint it prints at
//! every start (devices pin it at enrolment), and the API for people under `/api/v1`
//! (the fleet view, decisions, erasure, accounts: a first admin by the setup code it
//! prints at first start, as a box does); `devices list|approve|revoke`, `token`, `erase`
//! and `user` do the same from the hub's shell. The logic is the `hub` crate's, the routes `web`'s, the storage
//! `store`'s (`HubDb`, in the hub's own state directory, apart from any box's).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use wire::DeviceId;
use wire::v1::{CommandKind, DeviceState};

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
    /// The hub's own retention: frames it received more than this many days ago are
    /// removed every hour (0: kept until erased). Independent of the boxes' `keep_days`.
    #[arg(long, env = "OBSCURA_HUB_KEEP_DAYS", value_name = "DAYS", default_value_t = 0)]
    keep_days: u32,
    /// The fleet's broker, a mosquitto with the dynamic-security plugin beside the hub
    /// (`mqtt://127.0.0.1:1883`). Without it devices poll their commands over HTTPS.
    #[arg(long, env = "OBSCURA_HUB_MQTT", value_name = "URL")]
    mqtt: Option<String>,
    /// The broker as devices reach it (`mqtts://HUB:8883`); `--mqtt` when not given.
    #[arg(long, env = "OBSCURA_HUB_MQTT_PUBLIC", value_name = "URL", requires = "mqtt")]
    mqtt_public: Option<String>,
    /// The broker's dynamic-security admin (`mosquitto_ctrl dynsec init FILE USER`).
    #[arg(long, env = "OBSCURA_HUB_MQTT_ADMIN", value_name = "USER", default_value = "obscura-admin")]
    mqtt_admin: String,
    /// A file holding that admin's password (kept out of the command line and the environment).
    #[arg(long, env = "OBSCURA_HUB_MQTT_ADMIN_PASSWORD_FILE", value_name = "FILE", requires = "mqtt")]
    mqtt_admin_password_file: Option<PathBuf>,
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
    /// Erase a device's frames here and on the device: the hub's copy goes at once (with
    /// the hub's signed receipt), and the device is told to erase its own and answers
    /// with its receipt.
    Erase(EraseArgs),
    /// The hub's accounts (the same roles as a box's), from its shell.
    #[command(subcommand)]
    User(crate::user::UserCommand),
}

#[derive(Debug, Args)]
struct EraseArgs {
    /// The device whose frames to erase.
    #[arg(long, value_name = "ID")]
    device: DeviceId,
    #[command(flatten)]
    window: crate::selection::Window,
    /// These frames, by the device's ids (repeatable, or comma-separated).
    #[arg(long = "frame", value_name = "ID", value_delimiter = ',')]
    frames: Vec<i64>,
    /// Wait up to this many seconds for the device's receipt, and print it.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    wait: u64,
}

#[derive(Debug, Subcommand)]
enum DevicesCommand {
    /// Every device that enrolled: id, state, hostname, key fingerprint.
    List,
    /// Let a pending device send.
    Approve {
        id: DeviceId,
    },
    /// Stop a device for good: its requests are refused from now on.
    Revoke {
        id: DeviceId,
    },
    /// Ask a device to send what is due now, whatever its batch limits.
    SyncNow {
        id: DeviceId,
    },
    /// Ask a device to stop sending batches (erasures still go) until resumed.
    Pause {
        id: DeviceId,
    },
    Resume {
        id: DeviceId,
    },
}

fn open(state_dir: &Path) -> anyhow::Result<hub::Hub> {
    Ok(open_with_accounts(state_dir)?.0)
}

/// The hub, and its store as the accounts' home.
fn open_with_accounts(state_dir: &Path) -> anyhow::Result<(hub::Hub, Arc<store::HubDb>)> {
    let db = Arc::new(
        store::HubDb::open(state_dir)
            .with_context(|| format!("cannot open the hub's store in {}", state_dir.display()))?,
    );
    let (identity, made) = hub::HubIdentity::load_or_create(state_dir).context("cannot load the hub's key")?;
    if made {
        tracing::info!(target: "obscura", hub = identity.hub_id(), "made the hub's signing key");
    }
    Ok((hub::Hub::new(db.clone(), Arc::new(identity)), db))
}

pub fn main(args: HubArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        None => {
            let broker = match &args.mqtt {
                None => None,
                Some(url) => Some(broker_login(url, &args.mqtt_admin, args.mqtt_admin_password_file.as_deref())?),
            };
            if let (Some(url), None) = (&args.mqtt, &args.mqtt_public)
                && url.parse::<wire::mqtt::BrokerAddr>().is_ok_and(|a| a.is_loopback())
            {
                eprintln!(
                    "warning: boxes are told to reach the broker at {url}, their own machine: boxes elsewhere \
                     need --mqtt-public mqtts://THIS-HUB:8883 (they poll commands over HTTPS until then)"
                );
            }
            let public = args.mqtt_public.or(args.mqtt);
            serve(&args.state_dir, args.listen, args.keep_days, broker.zip(public))
        }
        Some(HubCommand::Erase(erase)) => erase_central(&open(&args.state_dir)?, erase),
        Some(HubCommand::Token) => {
            let hub = open(&args.state_dir)?;
            let token = hub.new_token(&shell_actor()?, frame::now_unix_ms()).map_err(|e| anyhow::anyhow!(e.message))?;
            println!("{token}");
            eprintln!("a one-time token: give it to `obscura sync enrol --token`; it approves one device");
            Ok(ExitCode::SUCCESS)
        }
        Some(HubCommand::Devices(command)) => devices(&open(&args.state_dir)?, command),
        Some(HubCommand::User(command)) => {
            crate::user::run(&*open_with_accounts(&args.state_dir)?.1, command, "obscura hub user")
        }
    }
}

fn devices(hub: &hub::Hub, command: DevicesCommand) -> anyhow::Result<ExitCode> {
    let decide = |id: DeviceId, state: DeviceState| -> anyhow::Result<ExitCode> {
        hub.decide(id, state, &shell_actor()?, frame::now_unix_ms()).map_err(|e| anyhow::anyhow!(e.message))?;
        println!("{id} {}", state.as_str());
        Ok(ExitCode::SUCCESS)
    };
    match command {
        DevicesCommand::List => {
            let devices = hub.store().devices().map_err(|e| anyhow::anyhow!("cannot list the devices: {e}"))?;
            if devices.is_empty() {
                eprintln!("no device has enrolled yet: run `obscura sync enrol` on a box");
            }
            let now = frame::now_unix_ms();
            for d in devices {
                // As the box shows its own key (`obscura sync status`, doctor, the UI).
                let key = wire::keyfile::public_fingerprint(&d.public_key);
                let presence = hub.store().presence(d.id).map_err(|e| anyhow::anyhow!("{e}"))?;
                println!("{} {:<8} {} key {key}; {}", d.id, d.state.as_str(), d.hostname, presence_text(presence, now));
            }
            Ok(ExitCode::SUCCESS)
        }
        DevicesCommand::Approve { id } => decide(id, DeviceState::Approved),
        DevicesCommand::Revoke { id } => decide(id, DeviceState::Revoked),
        DevicesCommand::SyncNow { id } => queue(hub, id, CommandKind::SyncNow),
        DevicesCommand::Pause { id } => queue(hub, id, CommandKind::Pause),
        DevicesCommand::Resume { id } => queue(hub, id, CommandKind::Resume),
    }
}

/// What the control plane last heard from a device, for `devices list`.
fn presence_text(presence: Option<hub::Presence>, now: i64) -> String {
    let ago = |t: i64| format!("{} s ago", (now - t).max(0) / 1000);
    let Some(p) = presence else { return "never on the broker".into() };
    let mut text =
        if p.online { format!("online since {}", ago(p.changed_ms)) } else { format!("offline {}", ago(p.changed_ms)) };
    if let Some((t, at)) = p.telemetry {
        text += &format!(
            "; telemetry {}: backlog {} frame(s), {} byte(s), last receipt {}, {} camera(s)",
            ago(at),
            t.backlog_frames,
            t.backlog_bytes,
            t.last_receipt_age_s.map_or("never".into(), |s| format!("{s} s before")),
            t.cameras.len()
        );
    }
    text
}

/// Who acts from the hub's shell, for its audit log: the login, as `shell:NAME`.
fn shell_actor() -> anyhow::Result<String> {
    Ok(format!("shell:{}", crate::consent::actor(None)?))
}

fn queue(hub: &hub::Hub, device: DeviceId, kind: CommandKind) -> anyhow::Result<ExitCode> {
    let command = hub
        .command(device, kind, Vec::new(), &shell_actor()?, frame::now_unix_ms())
        .map_err(|e| anyhow::anyhow!(e.message))?;
    println!("command {} queued for {device}", command.id);
    Ok(ExitCode::SUCCESS)
}

/// The broker admin's login, its password read from its file.
fn broker_login(url: &str, admin: &str, password_file: Option<&Path>) -> anyhow::Result<hub::BrokerLogin> {
    let file = password_file
        .context("--mqtt needs --mqtt-admin-password-file FILE: the password given to `mosquitto_ctrl dynsec init`")?;
    let password = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the broker admin's password from {}", file.display()))?;
    url.parse::<wire::mqtt::BrokerAddr>().map_err(|e| anyhow::anyhow!("--mqtt {url}: {e}"))?;
    Ok(hub::BrokerLogin::new(url, admin, password.trim()))
}

fn erase_central(hub: &hub::Hub, args: EraseArgs) -> anyhow::Result<ExitCode> {
    let store = hub.store();
    let w = &args.window;
    let window = (w.camera.is_some() || w.from.is_some() || w.until.is_some()).then(|| wire::v1::EraseWindow {
        camera: w.camera.clone(),
        from_ms: w.from,
        until_ms: w.until,
    });
    if window.is_none() && args.frames.is_empty() {
        anyhow::bail!("name what to erase: --camera ID and/or --from/--to, or --frame ID");
    }
    let done = hub
        .erase_selected(args.device, args.frames.clone(), window, &shell_actor()?, frame::now_unix_ms())
        .map_err(|e| anyhow::anyhow!(e.message))?;
    let command = done.command;
    println!("erased {} frame(s) of {} at the hub", done.erased, args.device);
    println!("receipt {}", done.receipt);
    match done.device_state {
        DeviceState::Approved => {
            println!("command {} sent: the device erases its copy and answers with its receipt", command.id)
        }
        state => println!(
            "command {} queued: the device is {}, and gets it only once approved (`obscura hub devices approve {}`)",
            command.id,
            state.as_str(),
            args.device
        ),
    }
    if args.wait == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(args.wait);
    loop {
        let ack = store.command_ack(args.device, &command.id).map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(ack) = ack {
            println!("device answered {}", serde_json::to_string(&ack)?);
            if ack.result == wire::v1::AckResult::Done {
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!("the device could not erase yet; the hub asks again at its next poll");
            return Ok(ExitCode::FAILURE);
        }
        if std::time::Instant::now() >= deadline {
            eprintln!("the device has not answered yet; it will when it is next online (the hub keeps the command)");
            return Ok(ExitCode::from(3));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn serve(
    state_dir: &Path,
    listen: SocketAddr,
    keep_days: u32,
    broker: Option<(hub::BrokerLogin, String)>,
) -> anyhow::Result<ExitCode> {
    crate::logging::init(crate::config::LogFormat::Text, "info")?;
    let (mut hub, accounts) = open_with_accounts(state_dir)?;
    if let Some((_, public)) = &broker {
        hub = hub.with_broker(public.clone());
    }
    let hub = Arc::new(hub);
    // The control plane beside the routes: the broker's logins and commands. A pass is
    // two reads of the store when nothing changed; commands this process queues (the API)
    // go at once, those other processes queue (the CLI) at the next pass.
    let stop_control = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let control = broker.map(|(login, _)| {
        let (hub, stop) = (hub.clone(), stop_control.clone());
        std::thread::Builder::new()
            .name("hub-control".into())
            .spawn(move || hub::control::run(hub, login, std::time::Duration::from_millis(250), stop))
    });
    let control = control.transpose().context("cannot start the control plane's thread")?;
    let retention = (keep_days > 0).then(|| {
        let (hub, stop) = (hub.clone(), stop_control.clone());
        std::thread::Builder::new().name("hub-retention".into()).spawn(move || retain(&hub, keep_days, &stop))
    });
    let retention = retention.transpose().context("cannot start the retention thread")?;
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
        // The hub has no pages: the code goes to `POST /api/v1/setup`, over HTTPS pinned
        // to the fingerprint printed above.
        crate::daemon::first_run(&*accounts, None, "obscura hub user")?;
        let auth = web::AuthConfig {
            origins: crate::daemon::own_origins(true, addr.port(), &crate::daemon::own_hosts(addr), &[]),
            ..Default::default()
        };
        let router = web::hub::hub_router(web::hub::HubState::new(hub, accounts, auth));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(web::tls::serve(listener, router, identity, async move {
            let _ = stopped.await;
        }));
        println!("listening on https://{addr}");
        tracing::info!(target: "obscura", %addr, hub = ?state_dir, "hub listening (/v1, /healthz, /metrics)");
        let signal = signals.wait().await;
        tracing::info!(target: "obscura", %signal, "hub shutting down");
        let _ = stop.send(());
        stop_control.store(true, std::sync::atomic::Ordering::SeqCst);
        for thread in control.into_iter().chain(retention) {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
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

/// The hub's retention, at start and every hour until `stop`.
fn retain(hub: &hub::Hub, keep_days: u32, stop: &std::sync::atomic::AtomicBool) {
    const DAY_MS: i64 = 86_400_000;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let now = frame::now_unix_ms();
        match hub.store().expire(now - i64::from(keep_days) * DAY_MS, now) {
            Ok(0) => {}
            Ok(n) => tracing::info!(target: "obscura", frames = n, keep_days, "hub retention removed old frames"),
            Err(e) => tracing::error!(target: "obscura", error = %e, "hub retention failed; it runs again in an hour"),
        }
        for _ in 0..36_000 {
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}
