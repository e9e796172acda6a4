//! The box's MQTT session with the hub's broker: the control plane (`wire::mqtt`). It
//! says the box is online (a retained `status`, with a last will that says `offline`),
//! sends telemetry every minute, hands the hub's commands to the daemon and carries acks,
//! receipts and batch notices back, over one persistent session (QoS 1, client id and
//! user name = the device id).
//!
//! Nothing the box must not lose lives here. rumqttc keeps what it has not yet sent in
//! memory and drops it on a clean reconnect (rumqtt#864), and no publish can be waited
//! on until the broker acknowledges it (rumqtt#805), so this session is only ever the
//! quick path: every command is queued on the hub and polled over HTTPS too, acks and
//! receipts have their HTTPS answers, and a batch is sent from the store's outbox
//! whether or not its notice arrived. Losing the broker, or any message on it, costs
//! latency, never data. While it is down, [`MqttHandle::is_up`] is false (the daemon shows
//! "mqtt: down" and polls commands), publishes are refused at once rather than queued,
//! and the session reconnects with a jittered back-off from 1 s, doubling to a minute.
//! Commands can arrive twice (QoS 1): the daemon acts on a command id once.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::BackoffBuilder;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    SubscribeReasonCode, TlsConfiguration, Transport,
};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wire::DeviceId;
use wire::mqtt::{BatchNotice, BrokerAddr, Status, Telemetry, Topic};
use wire::v1::{Command, CommandAck};

const TARGET: &str = "obscura::sync::mqtt";
/// Requests rumqttc may hold for the network. Small on purpose: while the link is slow
/// a publish is refused (the caller has HTTPS) rather than queued in memory.
const QUEUE: usize = 32;

/// How the box checks the broker's certificate on `mqtts://`.
#[derive(Debug, Clone)]
pub enum MqttTls {
    /// A ready client config: the HTTPS client's, which trusts only the hub's pinned
    /// certificate (SHA-256), when the broker presents the hub's certificate.
    Config(Arc<rustls::ClientConfig>),
    /// The CA certificates (PEM) that signed the broker's certificate.
    CaFile(PathBuf),
}

/// What the session needs. [`MqttSettings::new`] gives the production defaults.
#[derive(Clone)]
pub struct MqttSettings {
    /// `mqtts://HOST:PORT`, or `mqtt://127.0.0.1:PORT` on loopback.
    pub broker: String,
    /// The client id and user name.
    pub device: DeviceId,
    /// The password the hub provisioned on the broker for this device.
    pub password: String,
    /// Required with `mqtts://`.
    pub tls: Option<MqttTls>,
    /// 30 s: a dead connection is noticed (and the will published) within 1.5 of it.
    pub keep_alive: Duration,
    /// 60 s.
    pub telemetry_every: Duration,
    /// The back-off between attempts: from `backoff_min` (1 s), doubling, each wait
    /// stretched by up to itself again at random, always under `backoff_max` (60 s).
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How long a TCP + TLS + CONNECT may take (5 s).
    pub connect_timeout: Duration,
}

impl MqttSettings {
    pub fn new(broker: impl Into<String>, device: DeviceId, password: impl Into<String>) -> MqttSettings {
        MqttSettings {
            broker: broker.into(),
            device,
            password: password.into(),
            tls: None,
            keep_alive: Duration::from_secs(30),
            telemetry_every: Duration::from_secs(60),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl fmt::Debug for MqttSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttSettings")
            .field("broker", &self.broker)
            .field("device", &self.device)
            .field("password", &"…")
            .field("tls", &self.tls)
            .field("keep_alive", &self.keep_alive)
            .field("telemetry_every", &self.telemetry_every)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The settings cannot make a session.
    #[error("sync.mqtt: {0}")]
    Settings(String),
    #[error("the TLS settings for the broker at {broker} are unusable: {reason}")]
    Tls { broker: String, reason: String },
    /// Not connected now: send it over HTTPS instead.
    #[error("the MQTT session with {broker} is down{}; this goes over HTTPS instead", last.as_deref().map(|l| format!(" ({l})")).unwrap_or_default())]
    Down { broker: String, last: Option<String> },
    /// The session's small queue is full (a slow link): send it over HTTPS instead.
    #[error("the MQTT session with {broker} has {QUEUE} messages waiting already; this goes over HTTPS instead")]
    Busy { broker: String },
    #[error("`{0}` cannot be an MQTT topic level (it is empty or has `/`, `+` or `#`)")]
    BadId(String),
}

/// The session's spawner; see [`MqttSession::spawn`].
#[derive(Debug)]
pub struct MqttSession;

/// What the event loop shares with the handle.
#[derive(Debug)]
struct Shared {
    up: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// Woken at every (re)connect: telemetry is sent at once.
    connected: Notify,
}

/// The running session. Its methods never block and never wait for the broker.
#[derive(Debug)]
pub struct MqttHandle {
    client: AsyncClient,
    device: DeviceId,
    broker: BrokerAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    events: JoinHandle<()>,
    telemetry: JoinHandle<()>,
}

impl MqttSession {
    /// Starts the session on the caller's tokio runtime. Only a settings mistake (a bad
    /// address, `mqtts://` without TLS settings, an unreadable CA file) is an error; an
    /// unreachable or refusing broker is retried for as long as the handle lives, and
    /// shows in [`MqttHandle::is_up`] and [`MqttHandle::last_error`].
    ///
    /// `telemetry` is called on a blocking thread every `telemetry_every` while
    /// connected and at each connect. Commands go to `commands` without waiting: when
    /// the channel is full one is dropped (with a warning), and the HTTPS poll brings it.
    pub fn spawn(
        settings: MqttSettings,
        telemetry: impl Fn() -> Telemetry + Send + Sync + 'static,
        commands: mpsc::Sender<Command>,
    ) -> Result<MqttHandle, MqttError> {
        let broker: BrokerAddr = settings.broker.parse().map_err(MqttError::Settings)?;
        let device = settings.device;
        let mut options = MqttOptions::new(device.to_string(), broker.host.clone(), broker.port);
        options
            .set_credentials(device.to_string(), settings.password.clone())
            .set_clean_session(false)
            .set_keep_alive(settings.keep_alive.max(Duration::from_secs(1)))
            .set_request_channel_capacity(QUEUE)
            .set_last_will(LastWill::new(
                Topic::Status.name(device),
                Status::offline(None).to_json(),
                QoS::AtLeastOnce,
                true,
            ));
        if broker.tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls_config(
                &broker,
                settings.tls.as_ref(),
            )?)));
        } else if !broker.is_loopback() {
            return Err(MqttError::Settings(format!(
                "{broker} is plain MQTT to another machine: the device's password would cross the network in clear; use mqtts://{}:8883",
                broker.host
            )));
        }
        let (client, mut eventloop) = AsyncClient::new(options, QUEUE);
        let mut network = rumqttc::NetworkOptions::new();
        network.set_connection_timeout(settings.connect_timeout.as_secs().max(1));
        eventloop.set_network_options(network);

        let shared =
            Arc::new(Shared { up: AtomicBool::new(false), last_error: Mutex::new(None), connected: Notify::new() });
        let cancel = CancellationToken::new();
        let events = tokio::spawn(
            Events {
                client: client.clone(),
                device,
                broker: broker.clone(),
                shared: shared.clone(),
                commands,
                settings: settings.clone(),
            }
            .run(eventloop, cancel.clone()),
        );
        let telemetry = tokio::spawn(send_telemetry(
            client.clone(),
            device,
            shared.clone(),
            Arc::new(telemetry),
            settings.telemetry_every,
        ));
        Ok(MqttHandle { client, device, broker, shared, cancel, events, telemetry })
    }
}

impl MqttHandle {
    /// Whether the session is connected now. False while the broker is unreachable or
    /// refuses the device: then the daemon shows "mqtt: down" and polls over HTTPS.
    pub fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::SeqCst)
    }

    /// Why the last attempt failed, with the fix, while down (None while up).
    pub fn last_error(&self) -> Option<String> {
        if self.is_up() { None } else { lock(&self.shared.last_error).clone() }
    }

    /// `acks/<id>`: the answer to a command. Best effort (see the module docs): an error
    /// means it did not go, and the HTTPS ack must carry it.
    pub fn publish_ack(&self, command: &str, ack: &CommandAck) -> Result<(), MqttError> {
        let payload = serde_json::to_vec(ack).expect("an ack serialises");
        self.publish(Topic::Ack(checked(command)?), payload)
    }

    /// `receipts/<id>`: the hub's receipt (its JSON text) for batch or request `id`.
    pub fn publish_receipt(&self, id: &str, receipt_json: &str) -> Result<(), MqttError> {
        self.publish(Topic::Receipt(checked(id)?), receipt_json.as_bytes().to_vec())
    }

    /// `batches/<id>`: a notice that batch `id` is ready (it goes over HTTPS anyway).
    pub fn notify_batch(&self, batch: &str, notice: &BatchNotice) -> Result<(), MqttError> {
        let payload = serde_json::to_vec(notice).expect("a notice serialises");
        self.publish(Topic::Batch(checked(batch)?), payload)
    }

    fn publish(&self, topic: Topic, payload: Vec<u8>) -> Result<(), MqttError> {
        if !self.is_up() {
            return Err(MqttError::Down { broker: self.broker.to_string(), last: self.last_error() });
        }
        self.client
            .try_publish(topic.name(self.device), QoS::AtLeastOnce, false, payload)
            .map_err(|_| MqttError::Busy { broker: self.broker.to_string() })
    }

    /// Says goodbye: a retained `offline` status (the broker sends no will after a clean
    /// DISCONNECT) and the DISCONNECT, waiting at most `within` for them to go. The
    /// persistent session stays on the broker, so commands sent meanwhile wait there.
    pub async fn shutdown(mut self, within: Duration) {
        if self.is_up() {
            let goodbye = Status::offline(Some(frame::now_unix_ms())).to_json();
            let _ = self.client.try_publish(Topic::Status.name(self.device), QoS::AtLeastOnce, true, goodbye);
            let _ = self.client.try_disconnect();
            if tokio::time::timeout(within, &mut self.events).await.is_err() {
                tracing::warn!(target: TARGET, broker = %self.broker, "the broker did not take the goodbye in time; it will publish the last will");
            }
        }
        self.shared.up.store(false, Ordering::SeqCst);
        // Drop cancels and aborts what is left.
    }
}

impl Drop for MqttHandle {
    fn drop(&mut self) {
        // Dropped without `shutdown`: the connection just ends, and the broker publishes the will.
        self.cancel.cancel();
        self.events.abort();
        self.telemetry.abort();
    }
}

fn checked(id: &str) -> Result<String, MqttError> {
    if Topic::is_valid_id(id) { Ok(id.to_owned()) } else { Err(MqttError::BadId(id.to_owned())) }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The rustls config for `mqtts://`, with ring as its provider (never aws-lc).
fn tls_config(broker: &BrokerAddr, tls: Option<&MqttTls>) -> Result<Arc<rustls::ClientConfig>, MqttError> {
    let error = |reason: String| MqttError::Tls { broker: broker.to_string(), reason };
    match tls {
        None => Err(error(
            "mqtts:// needs the broker's certificate: the hub's pinned fingerprint (enrol with --hub-fingerprint) or a CA file"
                .into(),
        )),
        Some(MqttTls::Config(config)) => Ok(config.clone()),
        Some(MqttTls::CaFile(path)) => {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<_, _>>())
                .map_err(|e| error(format!("cannot read the CA file {}: {e}", path.display())))?;
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(error(format!("{} holds no usable CA certificate (PEM)", path.display())));
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| error(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Arc::new(config))
        }
    }
}

/// The event loop's side: connects, reconnects, reads commands.
struct Events {
    client: AsyncClient,
    device: DeviceId,
    broker: BrokerAddr,
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    settings: MqttSettings,
}

impl Events {
    fn backoff(&self) -> backon::ExponentialBackoff {
        // The jitter adds up to the wait again, so the doubling stops at half the longest.
        backon::ExponentialBuilder::new()
            .with_min_delay(self.settings.backoff_min)
            .with_max_delay(self.settings.backoff_max / 2)
            .with_jitter()
            .without_max_times()
            .build()
    }

    async fn run(self, mut eventloop: EventLoop, cancel: CancellationToken) {
        let mut waits = self.backoff();
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => break,
                event = eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    waits = self.backoff();
                    self.connected(ack.session_present);
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => self.received(&publish.topic, &publish.payload),
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if ack.return_codes.iter().any(|c| matches!(c, SubscribeReasonCode::Failure)) {
                        tracing::error!(
                            target: TARGET, broker = %self.broker, device = %self.device,
                            "the broker refused this box's subscription to its own commands: its ACL on the broker is wrong; \
                             revoke and approve the device again on the hub (commands still come by HTTPS polling)"
                        );
                    }
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => {
                    let was_up = self.shared.up.swap(false, Ordering::SeqCst);
                    let message = self.explain(&e);
                    let repeated =
                        lock(&self.shared.last_error).replace(message.clone()).as_deref() == Some(message.as_str());
                    if was_up || !repeated {
                        tracing::warn!(target: TARGET, broker = %self.broker, "{message}");
                    } else {
                        tracing::debug!(target: TARGET, broker = %self.broker, "{message}");
                    }
                    let wait = waits.next().unwrap_or(self.settings.backoff_max).min(self.settings.backoff_max);
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        self.shared.up.store(false, Ordering::SeqCst);
    }

    fn connected(&self, session_present: bool) {
        tracing::info!(target: TARGET, broker = %self.broker, session_present, "connected to the broker");
        *lock(&self.shared.last_error) = None;
        let online = Status::online(frame::now_unix_ms()).to_json();
        // Should the queue be full, the status waits for the next connect and the
        // subscription is the session's (persistent) already.
        let _ = self.client.try_publish(Topic::Status.name(self.device), QoS::AtLeastOnce, true, online);
        let _ = self.client.try_subscribe(wire::mqtt::commands_filter(self.device), QoS::AtLeastOnce);
        self.shared.up.store(true, Ordering::SeqCst);
        self.shared.connected.notify_one();
    }

    fn received(&self, topic: &str, payload: &[u8]) {
        let command = match read_command(self.device, topic, payload) {
            Ok(command) => command,
            Err(Ignored::NotCommand) => {
                tracing::debug!(target: TARGET, topic, "ignored a message on a topic that is not a command");
                return;
            }
            Err(Ignored::OtherDevice) => {
                tracing::warn!(target: TARGET, topic, "ignored a command for another device (the broker's ACL should not allow this)");
                return;
            }
            Err(Ignored::NotJson(e)) => {
                tracing::warn!(target: TARGET, topic, error = %e, "ignored a command that is not v1 JSON (the HTTPS poll has it in a form this box reads, if it is one)");
                return;
            }
            Err(Ignored::WrongId(id)) => {
                tracing::warn!(target: TARGET, topic, id = %id, "ignored a command whose id is not its topic's");
                return;
            }
        };
        let id = command.id.clone();
        if let Err(e) = self.commands.try_send(command) {
            tracing::warn!(target: TARGET, id, error = %e, "the daemon is not taking commands now; this one comes again by HTTPS polling");
        }
    }

    /// A failure, in words that name the fix.
    fn explain(&self, error: &ConnectionError) -> String {
        let (broker, device) = (&self.broker, self.device);
        match error {
            ConnectionError::ConnectionRefused(
                ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized,
            ) => {
                format!(
                    "the broker at {broker} refused `{device}`: not authorised; approve the device on the hub \
                     (`obscura hub devices approve {device}`); if it was revoked, it stays refused"
                )
            }
            ConnectionError::ConnectionRefused(code) => format!("the broker at {broker} refused `{device}`: {code:?}"),
            ConnectionError::Io(e) => format!(
                "cannot reach the broker at {broker}: {e}; check that it runs and that the box's sync settings name it \
                 (commands are polled over HTTPS meanwhile)"
            ),
            ConnectionError::NetworkTimeout => format!(
                "the broker at {broker} did not answer within {:?}; check the network between the box and the hub",
                self.settings.connect_timeout
            ),
            ConnectionError::Tls(e) => format!(
                "TLS with the broker at {broker} failed: {e}; check the broker's certificate against the pinned \
                 fingerprint or CA file"
            ),
            other => format!("the MQTT session with {broker} broke: {other}; reconnecting"),
        }
    }
}

/// Sends telemetry at each connect and every `every` while connected.
async fn send_telemetry(
    client: AsyncClient,
    device: DeviceId,
    shared: Arc<Shared>,
    telemetry: Arc<dyn Fn() -> Telemetry + Send + Sync>,
    every: Duration,
) {
    loop {
        tokio::select! {
            _ = shared.connected.notified() => {}
            _ = tokio::time::sleep(every) => {}
        }
        if !shared.up.load(Ordering::SeqCst) {
            continue;
        }
        let read = telemetry.clone();
        let Ok(reading) = tokio::task::spawn_blocking(move || read()).await else {
            tracing::error!(target: TARGET, "reading the telemetry panicked");
            continue;
        };
        let payload = serde_json::to_vec(&reading).expect("telemetry serialises");
        if client.try_publish(Topic::Telemetry.name(device), QoS::AtLeastOnce, false, payload).is_err() {
            tracing::debug!(target: TARGET, "skipped a telemetry message: the session's queue is full");
        }
    }
}

/// Why a message that reached this box is not a command for it.
#[doc(hidden)]
#[derive(Debug)]
pub enum Ignored {
    NotCommand,
    OtherDevice,
    NotJson(serde_json::Error),
    /// The command's own id, which is not its topic's.
    WrongId(String),
}

/// The command a message on `topic` carries for `device`. Public (hidden) so the fuzz
/// target and its corpus replay run the handler's own checks.
#[doc(hidden)]
pub fn read_command(device: DeviceId, topic: &str, payload: &[u8]) -> Result<Command, Ignored> {
    let Some((to, Topic::Command(id))) = Topic::parse(topic) else {
        return Err(Ignored::NotCommand);
    };
    if to != device {
        return Err(Ignored::OtherDevice);
    }
    let command: Command = serde_json::from_slice(payload).map_err(Ignored::NotJson)?;
    if command.id != id {
        return Err(Ignored::WrongId(command.id));
    }
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> DeviceId {
        "01HZY3V8Q0M5W6ZJ7KX2C9D4FB".parse().unwrap()
    }

    #[tokio::test]
    async fn settings_mistakes_are_refused_with_the_fix() {
        let (tx, _rx) = mpsc::channel(1);
        let spawn =
            |url: &str| MqttSession::spawn(MqttSettings::new(url, device(), "pw"), Telemetry::default, tx.clone());
        let err = spawn("mqtts://hub.example:8883").unwrap_err().to_string();
        assert!(err.contains("fingerprint"), "{err}");
        let err = spawn("mqtt://hub.example:1883").unwrap_err().to_string();
        assert!(err.contains("in clear") && err.contains("mqtts://hub.example:8883"), "{err}");
        let err = spawn("tcp://x").unwrap_err().to_string();
        assert!(err.contains("mqtts://"), "{err}");
        let mut settings = MqttSettings::new("mqtts://hub.example", device(), "pw");
        settings.tls = Some(MqttTls::CaFile("/nonexistent/ca.pem".into()));
        let err = MqttSession::spawn(settings, Telemetry::default, tx.clone()).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        let settings = MqttSettings::new("mqtt://127.0.0.1:1", device(), "secret-pw");
        assert!(!format!("{settings:?}").contains("secret-pw"), "the password is not in Debug");
    }

    #[tokio::test]
    async fn an_unreachable_broker_is_down_and_publishes_are_refused_at_once() {
        let (tx, _rx) = mpsc::channel(1);
        let mut settings = MqttSettings::new("mqtt://127.0.0.1:1", device(), "pw");
        settings.backoff_min = Duration::from_millis(20);
        let handle = MqttSession::spawn(settings, Telemetry::default, tx).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while handle.last_error().is_none() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!handle.is_up());
        let why = handle.last_error().expect("a reason");
        assert!(why.contains("cannot reach the broker at mqtt://127.0.0.1:1"), "{why}");
        let ack = CommandAck { result: wire::v1::AckResult::Done, message: None, receipt: None };
        let err = handle.publish_ack("c1", &ack).unwrap_err();
        assert!(matches!(err, MqttError::Down { .. }) && err.to_string().contains("HTTPS"), "{err}");
        assert!(matches!(handle.publish_receipt("a/b", "{}"), Err(MqttError::BadId(_))));
        handle.shutdown(Duration::from_secs(1)).await;
    }
}
