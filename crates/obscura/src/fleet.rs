//! `obscura sync`: the box's side of fleet sync, for the field engineer. `enrol` pins the
//! hub's certificate, presents the box's key and records where it stands; `status`
//! says what waits to leave and what is wrong. The work itself is the daemon's sync
//! stage (`sync::SyncStage`), which rereads the enrolment, so no restart is needed.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use sync::{DeviceIdentity, Enrolment, Fingerprint, HubAddress, HubClient};
use wire::v1::DeviceState;

use crate::CommonArgs;

#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(subcommand)]
    command: SyncCommand,
}

#[derive(Debug, Subcommand)]
enum SyncCommand {
    /// Enrol this box with a hub: pin its certificate and present the box's key.
    Enrol(EnrolArgs),
    /// Where sync stands: the hub, the box's key, what waits to leave, the last problem.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
struct EnrolArgs {
    /// The hub, https://HOST:PORT.
    #[arg(long, value_name = "URL")]
    hub: String,
    /// The hub certificate's SHA-256, as `obscura hub` prints it at start
    /// (SHA256:AB:CD:…). Required: the box trusts that certificate and nothing else.
    #[arg(long, value_name = "SHA256:…")]
    hub_fingerprint: String,
    /// A one-time token from `obscura hub token`: the hub approves the box at once.
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: CommonArgs,
}

pub fn main(args: SyncArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        SyncCommand::Enrol(args) => enrol(args),
        SyncCommand::Status(args) => status(args),
    }
}

fn identity(args: &CommonArgs) -> anyhow::Result<(store::Store, Arc<DeviceIdentity>)> {
    let store = args.state.open_store()?;
    let identity = DeviceIdentity::load_or_create(&args.state.state_dir, store.device_id())
        .context("cannot load the box's sync key")?;
    Ok((store, Arc::new(identity)))
}

fn enrol(args: EnrolArgs) -> anyhow::Result<ExitCode> {
    let address: HubAddress = args.hub.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let pin: Fingerprint = args.hub_fingerprint.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let (store, identity) = identity(&args.common)?;
    let hostname = sysinfo::System::host_name().unwrap_or_else(|_| "unknown".into());
    let client = HubClient::new(address.clone(), pin, identity.clone(), None);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let status = runtime
        .block_on(client.enrol(&hostname, args.token.as_deref()))
        .with_context(|| format!("cannot enrol with the hub at {address}"))?;
    let enrolment = Enrolment::new(&address, pin, status);
    enrolment.save(&args.common.state.state_dir).context("cannot record the enrolment")?;
    store.audit(
        "sync",
        "sync.enrol",
        &format!("hub/{}", enrolment.hub_id),
        serde_json::json!({ "hub": enrolment.hub, "fingerprint": pin.to_string(), "state": enrolment.state.as_str() }),
    )?;
    println!("device   {}", identity.device);
    println!("key      {}", identity.fingerprint());
    println!("hub      {} ({})", enrolment.hub, enrolment.hub_id);
    match enrolment.state {
        DeviceState::Approved => println!("state    approved: the daemon sends consented frames from now on"),
        DeviceState::Pending => println!(
            "state    pending: on the hub, compare the key above and run `obscura hub devices approve {}`",
            identity.device
        ),
        DeviceState::Revoked => {
            println!("state    revoked: the hub refuses this box; ask its operator");
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let config = crate::config::load(&args.common.overrides(None))?;
    let (store, identity) = identity(&args.common)?;
    let enrolment = Enrolment::load(&args.common.state.state_dir)?;
    let backlog = store.sync_backlog(config.sync.settings().rules)?;
    let state = match (&enrolment, config.sync.enabled()) {
        (_, false) => "off",
        (None, true) => "not_enrolled",
        (Some(e), true) => e.state.as_str(),
    };
    if args.json {
        let value = serde_json::json!({
            "state": state, "device": identity.device, "key": identity.fingerprint(),
            "hub": enrolment.as_ref().map(|e| &e.hub), "hub_fingerprint": enrolment.as_ref().map(|e| e.fingerprint),
            "mqtt_broker": enrolment.as_ref().and_then(|e| e.mqtt.as_ref()).map(|m| &m.broker),
            "backlog": backlog,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    let now = store.now_ms();
    let ago = |ms: Option<i64>| ms.map_or("never".to_owned(), |t| format!("{} s ago", (now - t).max(0) / 1000));
    println!("state      {state}");
    println!("device     {}", identity.device);
    println!("key        {}", identity.fingerprint());
    match &enrolment {
        Some(e) => println!("hub        {} ({}, pinned {})", e.hub, e.hub_id, e.fingerprint),
        None => {
            println!("hub        none: run `obscura sync enrol --hub https://HOST:PORT --hub-fingerprint SHA256:…`")
        }
    }
    if let Some(e) = &enrolment {
        match &e.mqtt {
            Some(m) => println!("broker     {} (whether the daemon is on it: `sync.mqtt` in /api/v1/status)", m.broker),
            None => println!("broker     none given by the hub: commands are polled over HTTPS"),
        }
    }
    println!(
        "backlog    {} frame(s), {} bytes, oldest captured {}",
        backlog.frames,
        backlog.bytes,
        ago(backlog.oldest_ms)
    );
    println!(
        "batches    {} pending, {} committed, {} rejected; {} erasure(s) pending",
        backlog.batches_pending, backlog.batches_committed, backlog.batches_rejected, backlog.erasures_pending
    );
    println!("receipt    last {}", ago(backlog.last_receipt_ms));
    if backlog.expired_unsynced > 0 {
        println!("expired    {} frame(s) retention removed before they could be synced", backlog.expired_unsynced);
    }
    if let Some(error) = &backlog.last_error {
        println!("problem    {error}");
    }
    Ok(ExitCode::SUCCESS)
}
