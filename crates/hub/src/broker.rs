//! The hub's side of the MQTT control plane. [`BrokerAdmin`] is what the hub asks of a
//! broker when it approves or revokes a device: credentials, and an ACL that confines
//! the device to its own `obscura/v1/<device>/` topics. [`MosquittoDynsec`] does it on a
//! mosquitto with the dynamic-security plugin, over its `$CONTROL/dynamic-security/v1`
//! JSON API; a clustered broker (EMQX, VerneMQ) gets its own implementation later, which
//! is why the trait is narrow. [`HubMqtt`] is the hub's own client: commands out at
//! QoS 1, and the fleet's status, telemetry, acks and receipts in.
//!
//! Both are synchronous (a `rumqttc::Client` whose connection runs on its own thread),
//! so from async code call them in `spawn_blocking`. Neither holds anything the hub
//! must not lose: a command is in the hub's store (and polled over HTTPS) before it is
//! published here.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rumqttc::{
    Client, ConnectReturnCode, ConnectionError, Event, MqttOptions, Outgoing, Packet, QoS, SubscribeReasonCode,
};
use serde_json::{Value, json};
use wire::DeviceId;
use wire::mqtt::{self as topics, BrokerAddr, Topic};
use wire::v1::{Command, CommandAck};

const TARGET: &str = "obscura::hub::broker";
/// The largest message the hub takes from a device: a telemetry is under 2 KiB, an ack
/// with the device's receipt a few. Anything larger is refused and counted.
pub const MAX_EVENT_BYTES: usize = 64 << 10;
/// The largest MQTT packet the hub's clients read or write (rumqttc's default is 10 KiB
/// both ways, under an erase command for many frames). A larger one makes rumqttc drop
/// the connection, and a retained one would do so at every reconnect, so the broker must
/// refuse it first: `max_packet_size` in mosquitto.conf, at most this (README).
pub const MAX_PACKET_BYTES: usize = 1 << 20;

/// Messages from devices the hub refused since it started: too large, or not a v1
/// message on a v1 topic. Shared with `/metrics`; the hub carries on either way.
#[derive(Debug, Default, Clone)]
pub struct MqttRefusals {
    oversized: Arc<AtomicU64>,
    malformed: Arc<AtomicU64>,
}

impl MqttRefusals {
    pub fn oversized(&self) -> u64 {
        self.oversized.load(Ordering::Relaxed)
    }

    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// Counts a refusal, and logs it when the count is a power of two, so a device
    /// that floods the broker does not flood the log.
    fn count(&self, oversized: bool, topic: &str, bytes: usize) {
        let (counter, why) = if oversized {
            (&self.oversized, "larger than MAX_EVENT_BYTES")
        } else {
            (&self.malformed, "not a v1 message")
        };
        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(target: TARGET, topic, bytes, refused = n, "refused a device's message: {why}");
        }
    }
}
const CONTROL: &str = "$CONTROL/dynamic-security/v1";
const CONTROL_RESPONSE: &str = "$CONTROL/dynamic-security/v1/response";
/// The role every hub client gets from [`MosquittoDynsec::provision_hub`].
pub const HUB_ROLE: &str = "obscura-hub";

/// What the hub asks of the fleet's broker. Both calls are idempotent: approving a
/// device twice sets its password again; revoking an unknown device is done.
pub trait BrokerAdmin: Send + Sync + fmt::Debug {
    /// Lets `device` log in (client id and user name: its id) with `password`, allowed
    /// to publish only its own status, telemetry, batch notices, acks and receipts, and
    /// to subscribe to and receive only its own commands.
    fn provision(&self, device: DeviceId, password: &str) -> Result<(), BrokerError>;

    /// Disconnects `device` and refuses it from now on.
    fn revoke(&self, device: DeviceId) -> Result<(), BrokerError>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    #[error("the broker setting is wrong: {0}")]
    Settings(String),
    #[error(
        "cannot reach the broker at {broker}: {reason}; check that mosquitto runs there and that `--mqtt` names it"
    )]
    Unreachable { broker: String, reason: String },
    #[error(
        "the broker at {broker} refused `{user}`: not authorised; check the broker admin's user name and password \
         (mosquitto_ctrl dynsec init made them)"
    )]
    Refused { broker: String, user: String },
    #[error("the broker at {broker} did not let `{user}` subscribe to {topic}: its role on the broker lacks that ACL")]
    NotAllowed { broker: String, user: String, topic: String },
    #[error(
        "the broker at {broker} did not answer `{command}` within {timeout:?}; is its dynamic-security plugin loaded?"
    )]
    Timeout { broker: String, command: String, timeout: Duration },
    #[error("the broker at {broker} refused `{command}`: {error}")]
    Command { broker: String, command: String, error: String },
    #[error("the MQTT session with {broker} is down; the device gets this by HTTPS polling")]
    Down { broker: String },
    #[error("`{0}` cannot be an MQTT topic level (it is empty or has `/`, `+` or `#`)")]
    BadId(String),
    /// The hub's own store failed while the control plane read or wrote it.
    #[error("the hub's store: {0}")]
    Store(String),
}

/// Who logs in where.
#[derive(Clone)]
pub struct BrokerLogin {
    /// `mqtt://127.0.0.1:1883` (a broker on the hub's machine) or `mqtts://…`.
    pub broker: String,
    pub username: String,
    pub password: String,
    /// How long to wait for the first connect and for each answer (5 s).
    pub timeout: Duration,
}

impl BrokerLogin {
    pub fn new(broker: impl Into<String>, username: impl Into<String>, password: impl Into<String>) -> BrokerLogin {
        BrokerLogin {
            broker: broker.into(),
            username: username.into(),
            password: password.into(),
            timeout: Duration::from_secs(5),
        }
    }
}

impl fmt::Debug for BrokerLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerLogin")
            .field("broker", &self.broker)
            .field("username", &self.username)
            .field("password", &"…")
            .finish_non_exhaustive()
    }
}

/// One client's connection, driven on its own thread; reconnects (1 s, doubling to
/// 30 s) after the first connect succeeded.
struct Link {
    client: Client,
    broker: BrokerAddr,
    user: String,
    up: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link").field("broker", &self.broker).field("user", &self.user).field("up", &self.up).finish()
    }
}

impl Link {
    /// Connects, subscribes to `subscriptions` (each must be granted) and hands every
    /// message to `on_message`, or says why it could not within `login.timeout`.
    fn start(
        login: &BrokerLogin,
        clean_session: bool,
        subscriptions: Vec<String>,
        mut on_message: impl FnMut(&str, &[u8]) + Send + 'static,
    ) -> Result<Link, BrokerError> {
        let broker: BrokerAddr = login.broker.parse().map_err(BrokerError::Settings)?;
        if broker.tls {
            // The hub's broker runs beside it by default; TLS to a remote one is the
            // clustered broker's issue, with its own BrokerAdmin.
            return Err(BrokerError::Settings(format!(
                "{broker}: the hub speaks to its broker in plain MQTT on loopback only for now; use mqtt://127.0.0.1:PORT"
            )));
        }
        let mut options = MqttOptions::new(client_id(&login.username), broker.host.clone(), broker.port);
        options
            .set_credentials(login.username.clone(), login.password.clone())
            .set_clean_session(clean_session)
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
        let (client, mut connection) = Client::new(options, 64);
        let mut network = rumqttc::NetworkOptions::new();
        network.set_connection_timeout(login.timeout.as_secs().max(1));
        connection.eventloop.set_network_options(network);

        let up = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), BrokerError>>();
        let (thread_client, thread_up, thread_stop) = (client.clone(), up.clone(), stop.clone());
        let (thread_broker, user) = (broker.clone(), login.username.clone());
        std::thread::Builder::new()
            .name("hub-mqtt".into())
            .spawn(move || {
                let mut ready = Some(ready_tx);
                let mut waiting: Vec<String> = Vec::new();
                let mut wait = Duration::from_secs(1);
                for event in connection.iter() {
                    if thread_stop.load(Ordering::SeqCst) {
                        break;
                    }
                    match event {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            wait = Duration::from_secs(1);
                            thread_up.store(true, Ordering::SeqCst);
                            waiting = subscriptions.clone();
                            for topic in &subscriptions {
                                let _ = thread_client.try_subscribe(topic.clone(), QoS::AtLeastOnce);
                            }
                            if subscriptions.is_empty()
                                && let Some(ready) = ready.take()
                            {
                                let _ = ready.send(Ok(()));
                            }
                        }
                        Ok(Event::Incoming(Packet::SubAck(ack))) => {
                            // Subscriptions are answered in order, one SubAck each.
                            let topic = if waiting.is_empty() { String::new() } else { waiting.remove(0) };
                            if ack.return_codes.iter().any(|c| matches!(c, SubscribeReasonCode::Failure)) {
                                let error = BrokerError::NotAllowed {
                                    broker: thread_broker.to_string(),
                                    user: user.clone(),
                                    topic,
                                };
                                tracing::error!(target: TARGET, "{error}");
                                if let Some(ready) = ready.take() {
                                    let _ = ready.send(Err(error));
                                    break;
                                }
                            } else if waiting.is_empty()
                                && let Some(ready) = ready.take()
                            {
                                let _ = ready.send(Ok(()));
                            }
                        }
                        Ok(Event::Incoming(Packet::Publish(publish))) => on_message(&publish.topic, &publish.payload),
                        Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                        Ok(_) => {}
                        Err(e) => {
                            thread_up.store(false, Ordering::SeqCst);
                            let error = explain(&thread_broker, &user, &e);
                            if let Some(ready) = ready.take() {
                                let _ = ready.send(Err(error));
                                break;
                            }
                            tracing::warn!(target: TARGET, "{error}; reconnecting in {wait:?}");
                            std::thread::sleep(wait);
                            wait = (wait * 2).min(Duration::from_secs(30));
                            if thread_stop.load(Ordering::SeqCst) {
                                break;
                            }
                        }
                    }
                }
                thread_up.store(false, Ordering::SeqCst);
            })
            .map_err(|e| BrokerError::Settings(format!("cannot start the MQTT thread: {e}")))?;
        let link = Link { client, broker: broker.clone(), user: login.username.clone(), up, stop };
        match ready_rx.recv_timeout(login.timeout) {
            Ok(Ok(())) => Ok(link),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(BrokerError::Unreachable {
                broker: broker.to_string(),
                reason: format!("no answer to CONNECT within {:?}", login.timeout),
            }),
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.client.try_disconnect();
    }
}

/// A client id no other hub process uses: the user name and random bits.
fn client_id(user: &str) -> String {
    use ring::rand::SecureRandom;
    let mut random = [0u8; 6];
    let _ = ring::rand::SystemRandom::new().fill(&mut random);
    format!("{user}-{}", hex::encode(random))
}

fn explain(broker: &BrokerAddr, user: &str, error: &ConnectionError) -> BrokerError {
    match error {
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized,
        ) => BrokerError::Refused { broker: broker.to_string(), user: user.to_owned() },
        other => BrokerError::Unreachable { broker: broker.to_string(), reason: other.to_string() },
    }
}

/// The role that confines a device to its own prefix.
fn device_role(device: DeviceId) -> String {
    format!("obscura-device-{device}")
}

/// mosquitto's dynamic-security plugin, driven as its admin user.
#[derive(Debug)]
pub struct MosquittoDynsec {
    link: Link,
    /// Replies from the broker; the lock also keeps one request in flight at a time.
    replies: Mutex<mpsc::Receiver<Vec<u8>>>,
    timeout: Duration,
    next: AtomicU64,
}

impl MosquittoDynsec {
    /// Logs in as the dynsec admin (`mosquitto_ctrl dynsec init FILE USER PASSWORD`) and
    /// makes the broker deny clients by default: what a role does not allow, a client
    /// may not publish, subscribe to or receive.
    pub fn connect(login: &BrokerLogin) -> Result<MosquittoDynsec, BrokerError> {
        let (tx, rx) = mpsc::channel();
        let link = Link::start(login, true, vec![CONTROL_RESPONSE.to_owned()], move |topic, payload| {
            if topic == CONTROL_RESPONSE {
                let _ = tx.send(payload.to_vec());
            }
        })?;
        let admin = MosquittoDynsec { link, replies: Mutex::new(rx), timeout: login.timeout, next: AtomicU64::new(0) };
        let deny = |acltype: &str| json!({ "acltype": acltype, "allow": false });
        admin.run(
            vec![json!({
                "command": "setDefaultACLAccess",
                "acls": [deny("publishClientSend"), deny("publishClientReceive"), deny("subscribe")],
            })],
            &[],
        )?;
        Ok(admin)
    }

    /// Whether the admin session is connected now.
    pub fn is_up(&self) -> bool {
        self.link.up.load(Ordering::SeqCst)
    }

    /// Lets the hub's own client `username` in, as [`HubMqtt`] needs: publish any
    /// device's commands, and subscribe to and receive everything under `obscura/v1/`.
    pub fn provision_hub(&self, username: &str, password: &str) -> Result<(), BrokerError> {
        let prefix = topics::PREFIX;
        let acls = [
            ("publishClientSend", format!("{prefix}/+/commands/+")),
            ("subscribePattern", format!("{prefix}/#")),
            ("publishClientReceive", format!("{prefix}/#")),
        ];
        self.provision_user(username, password, HUB_ROLE, &acls)
    }

    fn provision_user(
        &self,
        username: &str,
        password: &str,
        role: &str,
        acls: &[(&str, String)],
    ) -> Result<(), BrokerError> {
        let mut commands = vec![json!({ "command": "createRole", "rolename": role })];
        commands.extend(acls.iter().map(|(acltype, topic)| {
            json!({ "command": "addRoleACL", "rolename": role, "acltype": acltype, "topic": topic, "allow": true })
        }));
        commands.push(json!({
            "command": "createClient", "username": username, "password": password,
            "roles": [{ "rolename": role }],
        }));
        let answers = self
            .run(commands, &["Role already exists", "ACL with this topic already exists", "Client already exists"])?;
        if answers.last().is_some_and(|a| a.as_deref() == Some("Client already exists")) {
            // Approved again (or its password changed): the same client, with this
            // password, this role and enabled.
            self.run(
                vec![
                    // modifyClient, not addClientRole: mosquitto 2.0.11 answers "Internal
                    // error" to adding a role the client has.
                    json!({
                        "command": "modifyClient", "username": username, "password": password,
                        "roles": [{ "rolename": role }],
                    }),
                    json!({ "command": "enableClient", "username": username }),
                ],
                &[],
            )?;
        }
        Ok(())
    }

    /// Sends `commands` in one request and waits for the answer. Each answer's error is
    /// returned when it is one of `benign`, and is the call's error otherwise.
    fn run(&self, commands: Vec<Value>, benign: &[&str]) -> Result<Vec<Option<String>>, BrokerError> {
        let broker = self.link.broker.to_string();
        let replies = self.replies.lock().unwrap_or_else(|p| p.into_inner());
        while replies.try_recv().is_ok() {} // late answers to requests that timed out
        let tag = self.next.fetch_add(1, Ordering::SeqCst);
        let names: Vec<String> = commands.iter().map(|c| c["command"].as_str().unwrap_or("?").to_owned()).collect();
        let commands: Vec<Value> = commands
            .into_iter()
            .enumerate()
            .map(|(i, mut c)| {
                c["correlationData"] = json!(format!("{tag}.{i}"));
                c
            })
            .collect();
        let request = serde_json::to_vec(&json!({ "commands": commands })).expect("a request serialises");
        self.link
            .client
            .try_publish(CONTROL, QoS::AtLeastOnce, false, request)
            .map_err(|_| BrokerError::Down { broker: broker.clone() })?;
        let deadline = std::time::Instant::now() + self.timeout;
        let first = format!("{tag}.0");
        let responses = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let timeout =
                || BrokerError::Timeout { broker: broker.clone(), command: names.join(", "), timeout: self.timeout };
            let reply = replies.recv_timeout(left).map_err(|_| timeout())?;
            let Ok(reply) = serde_json::from_slice::<Value>(&reply) else { continue };
            let responses = reply["responses"].as_array().cloned().unwrap_or_default();
            if responses.first().and_then(|r| r["correlationData"].as_str()) == Some(first.as_str()) {
                break responses;
            }
        };
        let mut answers = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let tag = format!("{tag}.{i}");
            let response = responses.iter().find(|r| r["correlationData"].as_str() == Some(tag.as_str()));
            let error = response.and_then(|r| r["error"].as_str()).map(str::to_owned);
            if let Some(error) = &error
                && !benign.contains(&error.as_str())
            {
                return Err(BrokerError::Command { broker, command: name.clone(), error: error.clone() });
            }
            answers.push(error);
        }
        Ok(answers)
    }
}

impl BrokerAdmin for MosquittoDynsec {
    fn provision(&self, device: DeviceId, password: &str) -> Result<(), BrokerError> {
        let own = |topic: Topic| topic.name(device);
        let id = || "+".to_owned();
        let acls = [
            ("publishClientSend", own(Topic::Status)),
            ("publishClientSend", own(Topic::Telemetry)),
            ("publishClientSend", own(Topic::Batch(id()))),
            ("publishClientSend", own(Topic::Ack(id()))),
            ("publishClientSend", own(Topic::Receipt(id()))),
            ("subscribeLiteral", topics::commands_filter(device)),
            ("subscribePattern", topics::commands_filter(device)),
            ("publishClientReceive", topics::commands_filter(device)),
        ];
        self.provision_user(&device.to_string(), password, &device_role(device), &acls)?;
        tracing::info!(target: TARGET, %device, "the broker lets the device in, under its own topics");
        Ok(())
    }

    fn revoke(&self, device: DeviceId) -> Result<(), BrokerError> {
        let username = device.to_string();
        self.run(
            vec![
                // Disabling kicks its connection; deleting forgets the password.
                json!({ "command": "disableClient", "username": username }),
                json!({ "command": "deleteClient", "username": username }),
                json!({ "command": "deleteRole", "rolename": device_role(device) }),
            ],
            &["Client not found", "Role not found"],
        )?;
        tracing::info!(target: TARGET, %device, "the broker refuses the device from now on");
        Ok(())
    }
}

/// What the hub hears from the fleet.
#[derive(Debug, Clone, PartialEq)]
pub enum FleetEvent {
    Status {
        device: DeviceId,
        status: topics::Status,
    },
    Telemetry {
        device: DeviceId,
        telemetry: topics::Telemetry,
    },
    Ack {
        device: DeviceId,
        command: String,
        ack: CommandAck,
    },
    /// The receipt's JSON text, as the device echoed it.
    Receipt {
        device: DeviceId,
        id: String,
        receipt: String,
    },
    Batch {
        device: DeviceId,
        batch: String,
        notice: topics::BatchNotice,
    },
}

impl FleetEvent {
    /// The event `payload` on `topic` is, or None (with a debug log) for anything else.
    /// Public (hidden) so the fuzz target and its corpus replay read as the hub does.
    #[doc(hidden)]
    pub fn read(topic: &str, payload: &[u8]) -> Option<FleetEvent> {
        let (device, topic) = Topic::parse(topic)?;
        let event = match topic {
            Topic::Status => FleetEvent::Status { device, status: serde_json::from_slice(payload).ok()? },
            Topic::Telemetry => FleetEvent::Telemetry { device, telemetry: serde_json::from_slice(payload).ok()? },
            Topic::Ack(command) => FleetEvent::Ack { device, command, ack: serde_json::from_slice(payload).ok()? },
            Topic::Receipt(id) => {
                FleetEvent::Receipt { device, id, receipt: String::from_utf8(payload.to_vec()).ok()? }
            }
            Topic::Batch(batch) => FleetEvent::Batch { device, batch, notice: serde_json::from_slice(payload).ok()? },
            Topic::Command(_) => return None,
        };
        Some(event)
    }
}

/// The hub's own client: commands out, the fleet's news in.
#[derive(Debug)]
pub struct HubMqtt {
    link: Link,
    refusals: MqttRefusals,
}

impl HubMqtt {
    /// Logs in (a user made by [`MosquittoDynsec::provision_hub`]), subscribes to every
    /// device's status (retained: the whole fleet arrives at once), telemetry, acks,
    /// receipts and batch notices, and calls `on_event` with each, on the connection's
    /// thread (hand it on; do not block there).
    pub fn connect(
        login: &BrokerLogin,
        on_event: impl FnMut(FleetEvent) + Send + 'static,
    ) -> Result<HubMqtt, BrokerError> {
        HubMqtt::connect_counted(login, MqttRefusals::default(), on_event)
    }

    /// [`HubMqtt::connect`], counting the messages it refuses in `refusals`: over
    /// [`MAX_EVENT_BYTES`], or not a v1 message on a v1 topic. Neither reaches
    /// `on_event`, and neither stops the connection.
    pub fn connect_counted(
        login: &BrokerLogin,
        refusals: MqttRefusals,
        mut on_event: impl FnMut(FleetEvent) + Send + 'static,
    ) -> Result<HubMqtt, BrokerError> {
        let counted = refusals.clone();
        let subscriptions = [
            topics::FLEET_STATUS,
            topics::FLEET_TELEMETRY,
            topics::FLEET_ACKS,
            topics::FLEET_RECEIPTS,
            topics::FLEET_BATCHES,
        ];
        let link = Link::start(login, true, subscriptions.map(str::to_owned).to_vec(), move |topic, payload| {
            if payload.len() > MAX_EVENT_BYTES {
                return counted.count(true, topic, payload.len());
            }
            match FleetEvent::read(topic, payload) {
                Some(event) => on_event(event),
                None => counted.count(false, topic, payload.len()),
            }
        })?;
        Ok(HubMqtt { link, refusals })
    }

    /// What this client refused so far.
    pub fn refusals(&self) -> &MqttRefusals {
        &self.refusals
    }

    pub fn is_up(&self) -> bool {
        self.link.up.load(Ordering::SeqCst)
    }

    /// Publishes `command` to `obscura/v1/<device>/commands/<id>` at QoS 1. A device that
    /// is offline gets it when it reconnects (its session is persistent); the command
    /// must be in the hub's store already, since that is what the HTTPS poll serves.
    pub fn publish_command(&self, device: DeviceId, command: &Command) -> Result<(), BrokerError> {
        if !Topic::is_valid_id(&command.id) {
            return Err(BrokerError::BadId(command.id.clone()));
        }
        if !self.is_up() {
            return Err(BrokerError::Down { broker: self.link.broker.to_string() });
        }
        let payload = serde_json::to_vec(command).expect("a command serialises");
        self.link
            .client
            .try_publish(Topic::Command(command.id.clone()).name(device), QoS::AtLeastOnce, false, payload)
            .map_err(|_| BrokerError::Down { broker: self.link.broker.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_events_are_read_from_their_topics_and_nothing_else() {
        let device: DeviceId = "01HZY3V8Q0M5W6ZJ7KX2C9D4FB".parse().unwrap();
        let status = Topic::Status.name(device);
        assert_eq!(
            FleetEvent::read(&status, br#"{"state":"offline"}"#),
            Some(FleetEvent::Status { device, status: topics::Status::offline(None) })
        );
        let ack = Topic::Ack("c1".into()).name(device);
        let Some(FleetEvent::Ack { command, ack, .. }) = FleetEvent::read(&ack, br#"{"result":"done"}"#) else {
            panic!("an ack")
        };
        assert_eq!((command.as_str(), ack.result), ("c1", wire::v1::AckResult::Done));
        assert_eq!(FleetEvent::read(&status, b"not json"), None);
        assert_eq!(FleetEvent::read(&Topic::Command("c1".into()).name(device), b"{}"), None);
        assert_eq!(FleetEvent::read("elsewhere/status", b"{}"), None);
    }

    #[test]
    fn a_login_hides_its_password_and_tls_is_refused_for_now() {
        let login = BrokerLogin::new("mqtts://hub:8883", "admin", "s3cret");
        assert!(!format!("{login:?}").contains("s3cret"));
        let err = MosquittoDynsec::connect(&login).unwrap_err().to_string();
        assert!(err.contains("mqtt://127.0.0.1"), "{err}");
    }
}
