//! The pipeline's fifth stage: drains the store's outbox to the hub. Each round, in
//! priority order: erasures (privacy first, whatever the windows), then the due batch
//! (its blobs, skipped when the hub holds them from this box, resumed where a cut left
//! them, then its commit, whose signed receipt goes into the store's audit), then the
//! hub's commands when MQTT cannot bring them. Every step's outcome is written to the
//! store before the next, so a kill at any point resumes from SQLite.
//!
//! Until the box is enrolled it waits; while the hub says "pending" it asks again with
//! back-off; once revoked it stops sending, with a status that says so. Failures back
//! off and show in the status with their fix; capture never waits for sync.
//!
//! Once approved by a hub that has a broker, the stage also keeps the box's MQTT
//! session (`mqtt.rs`) with the login the hub gave: commands pushed there are carried
//! out at once (and polled over HTTPS only as a safety net), and acks, receipts and
//! batch notices go out on it too. Every one of those also has its HTTPS path, which is
//! the one that counts.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use store::{BatchLimits, Store, SyncRules};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wire::mqtt::{BatchNotice, CameraTelemetry, Telemetry};
use wire::v1::{self, DeviceState};

use crate::bucket::Bucket;
use crate::enrolment::Enrolment;
use crate::pin::Pinned;
use crate::window::{self, Window};
use crate::{ClientError, DeviceIdentity, HubClient, MqttHandle, MqttSession, MqttSettings, MqttTls};

/// How often the box asks the hub where it stands while approved (a revocation, a new
/// broker login), besides whenever a request tells it.
const REFRESH_STATUS: Duration = Duration::from_secs(600);
/// Commands remembered with their acks, so a second delivery is answered, not redone.
const DONE_COMMANDS: usize = 256;

/// How sync behaves (`[sync]` in the config).
#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub rules: SyncRules,
    pub limits: BatchLimits,
    /// 0: unlimited.
    pub max_kbps: u64,
    pub windows: Vec<Window>,
    /// How often commands are asked for over HTTPS while MQTT is not up.
    pub poll_every: Duration,
}

/// The sync stage: reads and writes the store, talks to the hub.
#[derive(Debug)]
pub struct SyncStage {
    pub settings: SyncSettings,
    pub state_dir: PathBuf,
    pub identity: Arc<DeviceIdentity>,
}

impl pipeline::Stage for SyncStage {
    type Input = Arc<Store>;
    type Output = ();
    const NAME: &'static str = "sync";

    fn run(self, store: Arc<Store>, (): (), cx: &pipeline::Context) -> u64 {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(target: "obscura::sync", error = %e, "cannot start the sync stage's runtime; nothing will be synced");
                return 0;
            }
        };
        runtime.block_on(self.drive(store, cx.health.clone(), cx.shutdown.clone()))
    }
}

impl SyncStage {
    /// The stage's work on the caller's runtime until `shutdown`: what the pipeline runs
    /// on the stage's own thread, and what `obscura bench fleet` runs for each of many
    /// simulated boxes as tasks of one runtime. Returns the frames sent.
    pub async fn drive(self, store: Arc<Store>, health: Arc<health::Health>, shutdown: CancellationToken) -> u64 {
        let key = self.identity.fingerprint();
        health.update_sync(|s| s.key = key);
        Worker::new(self, store, health).drive(shutdown).await
    }
}

/// What one round did.
#[derive(Debug, PartialEq, Eq)]
enum Round {
    /// Something moved: go again at once.
    Worked,
    /// Nothing to do, or waiting: sleep this long.
    Wait(Duration),
}

struct Worker {
    stage: SyncStage,
    store: Arc<Store>,
    health: Arc<health::Health>,
    bucket: Option<Arc<Bucket>>,
    /// The client for the enrolment it was made for.
    client: Option<(Enrolment, HubClient)>,
    last_poll: Option<tokio::time::Instant>,
    /// Consecutive failures, for back-off.
    failures: u32,
    /// No answer from the hub since this process started, or since it was out of reach:
    /// the next answer makes every batch due at once, since their own back-off (to ten
    /// minutes, kept across restarts) counted the network's failures, not theirs.
    out_of_touch: bool,
    sent: u64,
    /// Blobs this process has uploaded (bounded), so a repeat of the same bytes asks first.
    uploaded: std::collections::HashSet<String>,
    /// The MQTT session, for the broker login it was made with.
    mqtt: Option<(v1::MqttAccess, MqttHandle)>,
    /// A broker login the session could not be made with (said once, not every round).
    mqtt_unusable: Option<v1::MqttAccess>,
    /// Commands the MQTT session hands over.
    pushed_tx: mpsc::Sender<v1::Command>,
    pushed: mpsc::Receiver<v1::Command>,
    done: VecDeque<(String, v1::CommandAck)>,
    last_refresh: Option<tokio::time::Instant>,
}

impl Worker {
    fn new(stage: SyncStage, store: Arc<Store>, health: Arc<health::Health>) -> Worker {
        let bucket = Bucket::kbps(stage.settings.max_kbps).map(Arc::new);
        let (pushed_tx, pushed) = mpsc::channel(64);
        Worker {
            stage,
            store,
            health,
            bucket,
            client: None,
            last_poll: None,
            failures: 0,
            out_of_touch: true,
            sent: 0,
            uploaded: Default::default(),
            mqtt: None,
            mqtt_unusable: None,
            pushed_tx,
            pushed,
            done: VecDeque::new(),
            last_refresh: None,
        }
    }

    async fn drive(&mut self, shutdown: CancellationToken) -> u64 {
        tracing::info!(target: "obscura::sync", "sync stage started");
        while !shutdown.is_cancelled() {
            let wait = match self.round().await {
                Round::Worked => {
                    self.failures = 0;
                    // A command pushed meanwhile goes before the next batch of a backlog.
                    if let Ok(command) = self.pushed.try_recv() {
                        self.pushed_command(command).await;
                    }
                    continue;
                }
                Round::Wait(wait) => wait,
            };
            self.refresh_backlog();
            let pushed = tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(wait) => None,
                Some(command) = self.pushed.recv() => Some(command),
            };
            if let Some(command) = pushed {
                self.pushed_command(command).await;
            }
        }
        if let Some((_, mqtt)) = self.mqtt.take() {
            mqtt.shutdown(Duration::from_secs(2)).await;
        }
        self.sent
    }

    /// A command the MQTT session brought: carried out and acknowledged while approved.
    async fn pushed_command(&mut self, command: v1::Command) {
        if self.client.as_ref().is_some_and(|(e, _)| e.state == DeviceState::Approved)
            && let Err(e) = self.answer(&command).await
        {
            // The HTTPS poll brings it again; a done ack is remembered, so it is not redone.
            tracing::info!(target: "obscura::sync", command = %command.id, error = %e, "cannot acknowledge a command over HTTPS yet");
        }
    }

    fn failed(&mut self, what: &str, error: &dyn std::fmt::Display) -> Duration {
        self.failures += 1;
        let message = format!("{what}: {error}");
        tracing::warn!(target: "obscura::sync", "{message}");
        self.health.update_sync(|s| {
            s.last_error = Some(message);
            s.retries += 1;
        });
        Duration::from_millis((500u64 << self.failures.min(7)).min(60_000))
    }

    fn refresh_backlog(&self) {
        match self.store.sync_backlog(self.stage.settings.rules) {
            Ok(b) => {
                let now = self.store.now_ms();
                self.health.update_sync(|s| {
                    s.backlog_frames = b.frames;
                    s.backlog_bytes = b.bytes;
                    s.oldest_age_s = b.oldest_ms.map(|t| ((now - t).max(0) / 1000) as u64);
                    s.batches_pending = b.batches_pending;
                    s.erasures_pending = b.erasures_pending;
                    s.expired_unsynced = b.expired_unsynced;
                    s.last_receipt_ms = b.last_receipt_ms.or(s.last_receipt_ms);
                });
            }
            Err(e) => tracing::warn!(target: "obscura::sync", error = %e, "cannot read the sync backlog"),
        }
    }

    /// The client for the current enrolment, rebuilt when `obscura sync enrol` changed it.
    fn enrolment(&mut self) -> Result<Option<&(Enrolment, HubClient)>, String> {
        let current = Enrolment::load(&self.stage.state_dir).map_err(|e| e.to_string())?;
        let Some(current) = current else {
            self.client = None;
            return Ok(None);
        };
        if self.client.as_ref().is_none_or(|(e, _)| *e != current) {
            let address = current.address()?;
            let client = HubClient::new(address, current.fingerprint, self.stage.identity.clone(), self.bucket.clone());
            self.client = Some((current, client));
        }
        Ok(self.client.as_ref())
    }

    async fn round(&mut self) -> Round {
        let enrolment = match self.enrolment() {
            Ok(Some((e, _))) => e.clone(),
            Ok(None) => {
                self.keep_mqtt(None); // no hub: nothing more goes to any hub's broker
                self.health.update_sync(|s| s.state = "not_enrolled".into());
                return Round::Wait(Duration::from_secs(5));
            }
            Err(e) => {
                self.health.update_sync(|s| s.state = "not_enrolled".into());
                return Round::Wait(self.failed("the enrolment cannot be read", &e));
            }
        };
        self.health.update_sync(|s| {
            s.state = enrolment.state.as_str().into();
            s.hub = Some(enrolment.hub.clone());
        });
        match enrolment.state {
            DeviceState::Revoked => {
                self.keep_mqtt(None);
                return Round::Wait(Duration::from_secs(30));
            }
            DeviceState::Pending => {
                self.keep_mqtt(None);
                return self.ask_approval(enrolment).await;
            }
            DeviceState::Approved => {}
        }
        if let Some(round) = self.refresh_status(&enrolment).await {
            return round;
        }
        self.keep_mqtt(Some(&enrolment));
        let hub_key = enrolment.hub_key();
        match self.erasures(&hub_key).await {
            Ok(true) => return Round::Worked,
            Ok(false) => {}
            Err(e) => return self.client_failed("sending erasures to the hub", e).await,
        }
        match self.consent_update(&hub_key).await {
            Ok(true) => return Round::Worked,
            Ok(false) => {}
            Err(e) => return self.client_failed("sending consent withdrawals to the hub", e).await,
        }
        if let Err(e) = self.commands().await {
            return self.client_failed("asking the hub for commands", e).await;
        }
        let outside = !window::open(&self.stage.settings.windows, self.store.now_ms());
        // As the commands just carried out left it (a pause acked "done" holds from now).
        let paused = self.client.as_ref().is_some_and(|(e, _)| e.paused);
        let outside_window = outside;
        self.health.update_sync(|s| {
            s.paused = paused;
            s.outside_window = outside_window;
        });
        if paused || outside {
            return Round::Wait(Duration::from_secs(5));
        }
        match self.batch(&hub_key).await {
            Ok(true) => Round::Worked,
            Ok(false) => Round::Wait(Duration::from_secs(1)),
            Err(e) => self.client_failed("sending a batch to the hub", e).await,
        }
    }

    /// A request failed: a revoked device stops, others back off.
    async fn client_failed(&mut self, what: &str, error: ClientError) -> Round {
        if error.code() == Some("revoked") {
            self.set_state(DeviceState::Revoked);
            let message = "the hub revoked this box: it sends nothing more; ask the hub's operator, then enrol again";
            tracing::error!(target: "obscura::sync", "{message}");
            self.health.update_sync(|s| s.last_error = Some(message.into()));
            return Round::Wait(Duration::from_secs(30));
        }
        if error.code() == Some("pending") {
            self.set_state(DeviceState::Pending);
            return Round::Wait(Duration::from_secs(1));
        }
        self.out_of_touch |= matches!(error, ClientError::Unreachable { .. });
        if let Some((_, client)) = &self.client {
            client.disconnect().await;
        }
        Round::Wait(self.failed(what, &error))
    }

    fn set_state(&mut self, state: DeviceState) {
        if let Some((enrolment, _)) = &mut self.client {
            enrolment.state = state;
            if let Err(e) = enrolment.save(&self.stage.state_dir) {
                tracing::warn!(target: "obscura::sync", error = %e, "cannot record the hub's decision");
            }
            self.client = None;
        }
    }

    fn client(&self) -> &HubClient {
        &self.client.as_ref().expect("called after enrolment()").1
    }

    /// While approved, asks the hub now and then where this box stands: a revocation
    /// stops it, and a new broker login (the hub gained a broker) is kept. Some when the
    /// state changed.
    async fn refresh_status(&mut self, enrolment: &Enrolment) -> Option<Round> {
        if self.last_refresh.is_some_and(|t| t.elapsed() < REFRESH_STATUS) {
            return None;
        }
        let status = self.client().device().await.ok()?; // a failure shows in the requests that follow
        self.last_refresh = Some(tokio::time::Instant::now());
        if status.state != enrolment.state {
            self.set_state(status.state);
            return Some(Round::Worked);
        }
        if status.mqtt != enrolment.mqtt {
            let mut updated = enrolment.clone();
            updated.mqtt = status.mqtt;
            if let Err(e) = updated.save(&self.stage.state_dir) {
                tracing::warn!(target: "obscura::sync", error = %e, "cannot record the broker login the hub gave");
            }
            self.client = None;
            return Some(Round::Worked);
        }
        None
    }

    /// Keeps the MQTT session in step with the broker login the hub gave (none: none).
    fn keep_mqtt(&mut self, enrolment: Option<&Enrolment>) {
        let access = enrolment.and_then(|e| e.mqtt.as_ref());
        if self.mqtt.as_ref().map(|(a, _)| a) != access && self.mqtt_unusable.as_ref() != access {
            self.mqtt = None; // dropping a session ends it (the broker publishes its will)
            if let (Some(enrolment), Some(access)) = (enrolment, access) {
                let mut settings = MqttSettings::new(&access.broker, self.stage.identity.device, &access.password);
                if access.broker.starts_with("mqtts://") {
                    // The broker presents the hub's certificate, which the box pinned.
                    settings.tls = Some(MqttTls::Config(Arc::new(Pinned::new(enrolment.fingerprint).client_config())));
                }
                match MqttSession::spawn(settings, telemetry(self.health.clone()), self.pushed_tx.clone()) {
                    Ok(handle) => self.mqtt = Some((access.clone(), handle)),
                    Err(e) => {
                        let message = format!(
                            "the hub's broker login cannot be used: {e}; commands are polled over HTTPS (the hub's \
                             operator sets the address boxes reach with `obscura hub --mqtt-public`)"
                        );
                        tracing::error!(target: "obscura::sync", "{message}");
                        self.health.update_sync(|s| s.last_error = Some(message));
                        self.mqtt_unusable = Some(access.clone());
                    }
                }
            }
        }
        let state = match &self.mqtt {
            None => "off",
            Some((_, handle)) if handle.is_up() => "up",
            Some(_) => "down",
        };
        self.health.update_sync(|s| s.mqtt = state.into());
    }

    /// Pending: ask again, with back-off, until the hub decides.
    async fn ask_approval(&mut self, enrolment: Enrolment) -> Round {
        match self.client().device().await {
            Ok(status) if status.state != DeviceState::Pending => {
                tracing::info!(target: "obscura::sync", state = status.state.as_str(), hub = %enrolment.hub, "the hub decided");
                if let Some((enrolment, _)) = &mut self.client {
                    enrolment.mqtt = status.mqtt;
                }
                self.last_refresh = Some(tokio::time::Instant::now());
                self.set_state(status.state);
                Round::Worked
            }
            Ok(_) => {
                self.failures += 1;
                self.health.update_sync(|s| {
                    s.last_error = Some(format!(
                        "waiting for approval: on the hub, run `obscura hub devices approve {}`",
                        self.stage.identity.device
                    ));
                });
                Round::Wait(Duration::from_millis((1000u64 << self.failures.min(6)).min(60_000)))
            }
            Err(e) => self.client_failed("asking the hub whether this box is approved", e).await,
        }
    }

    /// Sends pending erasures, as one request. True when some went.
    async fn erasures(&mut self, hub_key: &[u8]) -> Result<bool, ClientError> {
        let pending = self.store.pending_erasures(500).map_err(store_failed)?;
        let (Some(first), Some(last)) = (pending.first(), pending.last()) else { return Ok(false) };
        // The same tombstones make the same request id, so a resend is idempotent.
        let request = format!("t{}-{}-{}", first.tombstone, last.tombstone, pending.len());
        let mut blobs: Vec<String> = pending.iter().filter_map(|p| p.sha256.clone()).collect();
        blobs.sort();
        blobs.dedup();
        let erasure = v1::Erasure {
            frames: pending.iter().map(|p| p.frame.0).collect(),
            blobs,
            reason: pending
                .iter()
                .map(|p| p.reason.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join("; "),
        };
        let (receipt, payload) = self.client().erase(&request, &erasure, hub_key).await?;
        let ids: Vec<i64> = pending.iter().map(|p| p.tombstone).collect();
        let text = serde_json::to_string(&receipt).expect("a receipt serializes");
        self.store.erasures_confirmed(&ids, &text).map_err(store_failed)?;
        tracing::info!(target: "obscura::sync", request, frames = payload.frames.len(), "the hub confirmed an erasure");
        self.health.update_sync(|s| {
            s.erasures_confirmed += ids.len() as u64;
            s.last_error = None;
        });
        Ok(true)
    }

    /// Sends consent records that changed (a withdrawal) since the hub took them, so the
    /// hub applies the same rule as the box. True when one went.
    async fn consent_update(&mut self, hub_key: &[u8]) -> Result<bool, ClientError> {
        let Some((id, body)) = self.store.consent_update().map_err(store_failed)? else { return Ok(false) };
        let (receipt, payload) = self.client().consents(body.clone(), hub_key).await?;
        let text = serde_json::to_string(&receipt).expect("a receipt serializes");
        self.store.consent_update_confirmed(&body, &text).map_err(store_failed)?;
        tracing::info!(target: "obscura::sync", update = %id, consents = payload.consents.len(), "the hub took a consent update");
        Ok(true)
    }

    /// Forms a batch if one is ready, and sends the due one. True when one committed.
    async fn batch(&mut self, hub_key: &[u8]) -> Result<bool, ClientError> {
        let settings = &self.stage.settings;
        self.store.form_batch(&settings.limits, settings.rules).map_err(store_failed)?;
        let Some(batch) = self.store.due_batch(settings.rules).map_err(store_failed)? else { return Ok(false) };
        if batch.attempts == 0
            && batch.state != store::BatchState::Uploading
            && let Some((_, mqtt)) = &self.mqtt
        {
            let notice = BatchNotice { frames: batch.frames.len() as u64, bytes: 0, created_ms: self.store.now_ms() };
            let _ = mqtt.notify_batch(&batch.id, &notice); // best effort: the batch goes over HTTPS anyway
        }
        self.store.batch_uploading(&batch.id).map_err(store_failed)?;
        let result = self.send_batch(&batch, hub_key).await;
        match result {
            Ok(()) => Ok(true),
            Err(e) if e.is_transient() || e.code() == Some("revoked") || e.code() == Some("pending") => {
                self.store.batch_failed(&batch.id, &e.to_string()).map_err(store_failed)?;
                Err(e)
            }
            Err(ClientError::Refused { status, refusal }) => {
                let reason = format!("{status} {}: {}", refusal.code, refusal.message);
                tracing::error!(target: "obscura::sync", batch = %batch.id, %reason, "the hub refused a batch; it is kept, rejected, with the reason");
                self.store.batch_rejected(&batch.id, &reason).map_err(store_failed)?;
                self.health.update_sync(|s| {
                    s.rejects += 1;
                    s.last_error = Some(format!("the hub refused batch {}: {reason}", batch.id));
                });
                Ok(true)
            }
            Err(e) => {
                self.store.batch_failed(&batch.id, &e.to_string()).map_err(store_failed)?;
                Err(e)
            }
        }
    }

    async fn send_batch(&mut self, batch: &store::OutgoingBatch, hub_key: &[u8]) -> Result<(), ClientError> {
        let mut missing: Vec<String> = batch.frames.iter().map(|(_, sha)| sha.clone()).collect();
        // Upload, commit; if the hub names blobs it lacks (lost with its disk), once more.
        for _ in 0..2 {
            for (frame, sha) in batch.frames.iter().filter(|(_, sha)| missing.contains(sha)) {
                let jpeg = Bytes::from(self.store.frame_jpeg(*frame).map_err(store_failed)?);
                // Ask first only where the hub may hold it: a batch tried before (or cut
                // off by a crash while uploading), or bytes this process sent already.
                let probe =
                    batch.state == store::BatchState::Uploading || batch.attempts > 0 || self.uploaded.contains(sha);
                let done = self.client().upload_blob(sha, &jpeg, probe).await?;
                if self.uploaded.len() > 10_000 {
                    self.uploaded.clear();
                }
                self.uploaded.insert(sha.clone());
                self.sent += done.sent;
                self.health.update_sync(|s| {
                    s.bytes_sent += done.sent;
                    if done.skipped {
                        s.blobs_skipped += 1;
                    } else {
                        s.blobs_sent += 1;
                    }
                });
            }
            match self.client().commit(&batch.id, &batch.manifest, hub_key).await {
                Ok((receipt, payload)) => {
                    let text = serde_json::to_string(&receipt).expect("a receipt serializes");
                    self.store.batch_committed(&batch.id, &text).map_err(store_failed)?;
                    if let Some((_, mqtt)) = &self.mqtt {
                        let _ = mqtt.publish_receipt(&batch.id, &text);
                    }
                    tracing::info!(target: "obscura::sync", batch = %batch.id, frames = payload.frames.len(), "the hub's receipt is in");
                    self.health.update_sync(|s| {
                        s.commits += 1;
                        s.last_receipt_ms = Some(payload.received_ms);
                        s.last_error = None;
                    });
                    return Ok(());
                }
                Err(ClientError::Refused { refusal, .. }) if refusal.code == "missing_blobs" => {
                    missing = refusal.missing;
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::Protocol(format!("batch {}: the hub still lacks blobs after they were uploaded", batch.id)))
    }

    /// Polls the hub's commands over HTTPS, at most every `poll_every` (ten times less
    /// often while MQTT is up and pushes them), and carries them out. Out of touch, it
    /// asks at once whatever MQTT says: the answer is what makes backed-off batches due.
    async fn commands(&mut self) -> Result<(), ClientError> {
        let mqtt_up = self.mqtt.as_ref().is_some_and(|(_, m)| m.is_up());
        let every = if mqtt_up { self.stage.settings.poll_every * 10 } else { self.stage.settings.poll_every };
        if !self.out_of_touch && self.last_poll.is_some_and(|t| t.elapsed() < every) {
            return Ok(());
        }
        self.last_poll = Some(tokio::time::Instant::now());
        let commands = self.client().commands().await?;
        if std::mem::take(&mut self.out_of_touch) {
            // In touch (again): what backed off while out of reach goes now.
            self.store.batches_due_now().map_err(store_failed)?;
        }
        for command in commands.commands {
            self.answer(&command).await?;
        }
        Ok(())
    }

    /// Carries out `command` once (a second delivery gets the first answer again) and
    /// acknowledges it: on MQTT when up, and over HTTPS, which is what the hub keeps.
    async fn answer(&mut self, command: &v1::Command) -> Result<(), ClientError> {
        let ack = match self.done.iter().find(|(id, _)| *id == command.id) {
            Some((_, ack)) => ack.clone(),
            None => {
                let ack = self.carry_out(command);
                // A failure is not remembered: the next delivery tries again.
                if ack.result == v1::AckResult::Done {
                    if self.done.len() >= DONE_COMMANDS {
                        self.done.pop_front();
                    }
                    self.done.push_back((command.id.clone(), ack.clone()));
                }
                ack
            }
        };
        if let Some((_, mqtt)) = &self.mqtt {
            let _ = mqtt.publish_ack(&command.id, &ack);
        }
        self.client().ack(&command.id, &ack).await
    }

    fn carry_out(&mut self, command: &v1::Command) -> v1::CommandAck {
        let done =
            |receipt: Option<serde_json::Value>| v1::CommandAck { result: v1::AckResult::Done, message: None, receipt };
        tracing::info!(target: "obscura::sync", command = %command.id, kind = command.kind.as_str(), "the hub asks");
        match command.kind {
            v1::CommandKind::SyncNow => match self.store.batches_due_now() {
                Ok(()) => done(None),
                Err(e) => failed_ack(&e),
            },
            v1::CommandKind::Pause | v1::CommandKind::Resume => {
                let paused = command.kind == v1::CommandKind::Pause;
                let Some((enrolment, _)) = &mut self.client else { return failed_ack(&"not enrolled") };
                enrolment.paused = paused;
                match enrolment.save(&self.stage.state_dir) {
                    Ok(()) => done(None),
                    Err(e) => failed_ack(&e),
                }
            }
            v1::CommandKind::Erase => {
                // The named frames, and everything held in the window, sent or not.
                let mut filters = Vec::new();
                if !command.frames.is_empty() {
                    let ids = command.frames.iter().copied().map(store::FrameId).collect();
                    filters.push(store::FrameFilter { ids, ..Default::default() });
                }
                if let Some(w) = &command.window {
                    filters.push(store::FrameFilter {
                        camera: w.camera.clone(),
                        from: w.from_ms,
                        until: w.until_ms,
                        ..Default::default()
                    });
                }
                if filters.is_empty() {
                    return failed_ack(&"an erase command must name frames or a camera and time window");
                }
                let reason = format!("hub erasure command {}", command.id);
                let mut erased = store::Erased::default();
                for filter in &filters {
                    match self.store.erase(filter, "hub", &reason) {
                        Ok(e) => {
                            erased.frames += e.frames;
                            erased.blobs += e.blobs;
                        }
                        Err(e) => return failed_ack(&e),
                    }
                }
                let head = self.store.audit_head().ok().flatten();
                done(Some(serde_json::json!({
                    "kind": "device_erasure", "command": command.id, "device": self.stage.identity.device,
                    "frames_erased": erased.frames, "blobs_removed": erased.blobs,
                    "audit_head": head.map(|h| serde_json::json!({ "seq": h.seq, "hash": h.hash })),
                })))
            }
        }
    }
}

fn failed_ack(e: &dyn std::fmt::Display) -> v1::CommandAck {
    v1::CommandAck { result: v1::AckResult::Failed, message: Some(e.to_string()), receipt: None }
}

/// The store failing is not the hub's fault, but it stops this round the same way.
fn store_failed(e: store::StoreError) -> ClientError {
    ClientError::Protocol(format!("the store: {e}"))
}

/// What the box says on `telemetry`, read from its health counters.
fn telemetry(health: Arc<health::Health>) -> impl Fn() -> Telemetry + Send + Sync + 'static {
    move || {
        let (sync, system) = (health.sync(), health.system());
        let now = frame::now_unix_ms();
        Telemetry {
            backlog_frames: sync.backlog_frames,
            backlog_bytes: sync.backlog_bytes,
            oldest_age_s: sync.oldest_age_s,
            last_receipt_age_s: sync.last_receipt_ms.map(|t| ((now - t).max(0) / 1000) as u64),
            cameras: health
                .cameras()
                .iter()
                .map(|c| {
                    let c = c.snapshot();
                    CameraTelemetry { id: c.id.to_string(), fps: c.fps }
                })
                .collect(),
            rss_bytes: system.rss_bytes,
            disk_free_bytes: system.disk_free_bytes,
            temperature_c: system.soc_temp_celsius,
            sent_at_ms: now,
        }
    }
}
