//! The control plane of a running hub: keeps the broker's logins in step with the
//! devices' states (approved: provisioned with [`HubIdentity::broker_password`];
//! revoked: refused) and publishes every command queued in the store, whichever hub
//! process or `obscura hub` command queued it. It also takes acks that come over MQTT.
//!
//! What it remembers (what it applied, what it published) is only a cache that saves
//! the broker repeated work: every pass is idempotent, the store stays the truth, and
//! a command the broker lost still reaches the device by the HTTPS poll. A hub whose
//! broker is down keeps serving HTTPS and reconnects here with a back-off.
//!
//! [`HubIdentity::broker_password`]: crate::HubIdentity::broker_password

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wire::DeviceId;
use wire::v1::DeviceState;

use crate::{BrokerAdmin, BrokerError, BrokerLogin, FleetEvent, Hub, HubMqtt, MosquittoDynsec};

const TARGET: &str = "obscura::hub::control";
/// The hub's own client on the broker.
pub const HUB_USER: &str = "obscura-hub";
/// Everything is provisioned again this often, in case the broker lost its config.
const REFRESH: Duration = Duration::from_secs(300);

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    pub provisioned: Vec<DeviceId>,
    pub revoked: Vec<DeviceId>,
    pub published: usize,
    /// The first device the broker did not take (tried again at the next pass).
    pub failed: Option<String>,
}

/// The hub's logins on the broker: the admin's and its own client's.
#[derive(Debug)]
pub struct ControlPlane {
    hub: Arc<Hub>,
    admin: MosquittoDynsec,
    mqtt: HubMqtt,
    applied: HashMap<DeviceId, DeviceState>,
    published: HashSet<String>,
    refreshed: Instant,
}

impl ControlPlane {
    /// Logs in as the broker's admin, provisions the hub's own client and logs that in.
    pub fn connect(hub: Arc<Hub>, admin: &BrokerLogin) -> Result<ControlPlane, BrokerError> {
        let dynsec = MosquittoDynsec::connect(admin)?;
        let password = hub.identity().broker_password(HUB_USER);
        dynsec.provision_hub(HUB_USER, &password)?;
        let mut login = BrokerLogin::new(admin.broker.clone(), HUB_USER, password);
        login.timeout = admin.timeout;
        let events = hub.clone();
        let mqtt = HubMqtt::connect_counted(&login, hub.mqtt_refusals().clone(), move |event| heard(&events, event))?;
        Ok(ControlPlane {
            hub,
            admin: dynsec,
            mqtt,
            applied: HashMap::new(),
            published: HashSet::new(),
            refreshed: Instant::now(),
        })
    }

    /// Whether both logins are connected now.
    pub fn is_up(&self) -> bool {
        self.admin.is_up() && self.mqtt.is_up()
    }

    /// Applies every device's state to the broker and publishes unacknowledged commands
    /// not yet published by this process.
    pub fn pass(&mut self) -> Result<Pass, BrokerError> {
        if self.refreshed.elapsed() > REFRESH || !self.is_up() {
            // After a broker restart (or lost config) apply everything again.
            self.applied.clear();
            self.published.clear();
            self.refreshed = Instant::now();
        }
        let mut pass = Pass::default();
        let devices = self.hub.store().devices().map_err(|e| store_error(&e))?;
        // One device the broker refuses to set up must not hold up the rest of the fleet:
        // its error is reported and it is tried again at the next pass.
        let mut first_error = None;
        for device in devices {
            if self.applied.get(&device.id) == Some(&device.state) {
                continue;
            }
            let applied = match device.state {
                DeviceState::Approved => self
                    .admin
                    .provision(device.id, &self.hub.identity().broker_password(&device.id.to_string()))
                    .map(|()| pass.provisioned.push(device.id)),
                DeviceState::Revoked => self.admin.revoke(device.id).map(|()| {
                    // The broker kicks it; its will is not delivered (its ACL is gone).
                    let store = self.hub.store();
                    if store.presence(device.id).ok().flatten().is_some_and(|p| p.online)
                        && let Err(e) = store.record_presence(device.id, false, now_ms())
                    {
                        tracing::warn!(target: TARGET, device = %device.id, error = %e, "cannot mark a revoked device offline");
                    }
                    pass.revoked.push(device.id);
                }),
                DeviceState::Pending => Ok(()),
            };
            match applied {
                Ok(()) => {
                    self.applied.insert(device.id, device.state);
                }
                Err(e) => {
                    tracing::warn!(target: TARGET, device = %device.id, error = %e, "the broker did not take this device's state; trying again");
                    first_error.get_or_insert(e);
                }
            }
        }
        let commands = self.hub.store().unacked_commands().map_err(|e| store_error(&e))?;
        for (device, command) in commands {
            if self.published.contains(&command.id) || self.applied.get(&device) != Some(&DeviceState::Approved) {
                continue;
            }
            self.mqtt.publish_command(device, &command)?;
            self.published.insert(command.id);
            pass.published += 1;
        }
        match first_error {
            // Not up: the caller logs in afresh. Up: the rest went; the error is said.
            Some(e) if !self.is_up() => Err(e),
            Some(e) => {
                pass.failed = Some(e.to_string());
                Ok(pass)
            }
            None => Ok(pass),
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn store_error(e: &dyn std::fmt::Display) -> BrokerError {
    BrokerError::Store(e.to_string())
}

/// What the hub does with what it hears: acks count as over HTTPS; presence and the
/// newest telemetry are kept for the fleet view; the rest is logged. Public (hidden) for
/// the fuzz target and its corpus replay.
#[doc(hidden)]
pub fn heard(hub: &Hub, event: FleetEvent) {
    let now = now_ms();
    match event {
        FleetEvent::Ack { device, command, ack } => match hub.store().ack_command(device, &command, &ack, now) {
            Ok(_) => {
                tracing::info!(target: TARGET, %device, command, result = ?ack.result, "a device answered over MQTT")
            }
            Err(e) => {
                tracing::warn!(target: TARGET, %device, command, error = %e, "cannot record an ack heard over MQTT; the HTTPS ack brings it again")
            }
        },
        FleetEvent::Status { device, status } => {
            tracing::info!(target: TARGET, %device, state = ?status.state, "device status");
            let online = status.state == wire::mqtt::Presence::Online;
            if let Err(e) = hub.store().record_presence(device, online, now) {
                tracing::warn!(target: TARGET, %device, error = %e, "cannot keep a device's status");
            }
        }
        FleetEvent::Telemetry { device, telemetry } => {
            tracing::debug!(target: TARGET, %device, backlog = telemetry.backlog_frames, "telemetry");
            if let Err(e) = hub.store().record_telemetry(device, &telemetry, now) {
                tracing::warn!(target: TARGET, %device, error = %e, "cannot keep a device's telemetry");
            }
        }
        FleetEvent::Receipt { device, id, .. } => tracing::debug!(target: TARGET, %device, id, "receipt echoed"),
        FleetEvent::Batch { device, batch, notice } => {
            tracing::debug!(target: TARGET, %device, batch, frames = notice.frames, "batch notice");
        }
    }
}

/// Runs the control plane until `stop`: connects (again) with a back-off from 1 s to a
/// minute while the broker is unreachable, and makes a pass every `every`.
pub fn run(hub: Arc<Hub>, admin: BrokerLogin, every: Duration, stop: Arc<AtomicBool>) {
    let mut plane: Option<ControlPlane> = None;
    let mut wait = Duration::from_secs(1);
    let mut last_error: Option<String> = None;
    let mut queued = 0;
    while !stop.load(Ordering::SeqCst) {
        let result = match plane.as_mut() {
            Some(p) => p.pass().map(|pass| {
                if !pass.provisioned.is_empty() || !pass.revoked.is_empty() || pass.published > 0 {
                    tracing::info!(target: TARGET, provisioned = pass.provisioned.len(), revoked = pass.revoked.len(),
                        commands = pass.published, "broker brought in step");
                }
            }),
            None => ControlPlane::connect(hub.clone(), &admin).map(|p| {
                tracing::info!(target: TARGET, broker = %admin.broker, "the hub is on its broker");
                plane = Some(p);
            }),
        };
        let pause = match result {
            Ok(()) => {
                wait = Duration::from_secs(1);
                last_error = None;
                every
            }
            Err(e) => {
                let message = e.to_string();
                if last_error.as_deref() != Some(&message) {
                    tracing::warn!(target: TARGET, "{message}; devices poll their commands over HTTPS meanwhile");
                }
                last_error = Some(message);
                if plane.as_ref().is_some_and(|p| !p.is_up()) {
                    plane = None; // log in afresh
                }
                wait = (wait * 2).min(Duration::from_secs(60));
                wait
            }
        };
        // A command this process queues ends the pause at once (while the plane is up).
        let until = Instant::now() + pause;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            let slice = until.saturating_duration_since(Instant::now()).min(Duration::from_millis(100));
            if hub.wait_queued(&mut queued, slice) && plane.is_some() {
                break;
            }
        }
    }
}
