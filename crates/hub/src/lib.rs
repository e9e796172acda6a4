//! The hub: where a fleet's boxes send their consented, anonymized frames. This crate is
//! its logic with no HTTP and no SQLite: enrolment decisions, request signatures checked
//! against enrolled keys with a nonce cache, resumable uploads whose hash is checked
//! before the blob is visible, idempotent batch commits that refuse missing blobs,
//! receipts signed with the hub's own key, and erasure. `web` serves it over HTTPS;
//! `store` keeps its state behind [`HubStore`].
//!
//! Invariant: no state in memory. Everything a second hub process must see (devices,
//! nonces, uploads, receipts) is in the store, so replicas can share one; the only thing
//! a process holds is the hub's key, which they share too.

mod broker;
pub mod control;
mod identity;
mod storage;

use std::sync::Arc;

use ring::rand::SecureRandom;
use serde_json::json;
use wire::signature::{self, SigError};
use wire::v1::{self, DeviceState, DeviceStatus};
use wire::{DeviceId, Payload, Receipt, ReceiptKind};

pub use broker::{
    BrokerAdmin, BrokerError, BrokerLogin, FleetEvent, HUB_ROLE, HubMqtt, MAX_EVENT_BYTES, MAX_PACKET_BYTES,
    MosquittoDynsec, MqttRefusals,
};
pub use identity::{HubIdentity, IdentityError, KEY_FILE};
pub use storage::{Appended, BlobInfo, DeviceRecord, HubStore, Presence, StorageError, StoreResult, Upload};

/// How an error is answered (`web` maps these to HTTP statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    BadRequest,
    /// 401: the signature, the device or its state.
    Unauthenticated,
    /// 403: a known device not yet approved.
    Forbidden,
    NotFound,
    Conflict,
    TooLarge,
    /// 422: well-formed but wrong (a blob whose hash does not match).
    Unprocessable,
    /// 507: the hub's disk is full; the device keeps its data and tries again later.
    Full,
    Internal,
}

/// A refusal, in the wire's error shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct HubError {
    pub kind: Kind,
    pub code: &'static str,
    pub message: String,
    /// With `missing_blobs`: the blobs to upload first.
    pub missing: Vec<String>,
    /// With `offset_mismatch`: where the hub's upload stands.
    pub upload_offset: Option<u64>,
}

impl HubError {
    pub fn new(kind: Kind, code: &'static str, message: impl Into<String>) -> HubError {
        HubError { kind, code, message: message.into(), missing: Vec::new(), upload_offset: None }
    }

    fn bad_request(message: impl Into<String>) -> HubError {
        HubError::new(Kind::BadRequest, "bad_request", message)
    }

    /// The body as the wire carries it.
    pub fn refusal(&self) -> v1::Refusal {
        v1::Refusal { code: self.code.to_owned(), message: self.message.clone(), missing: self.missing.clone() }
    }
}

impl From<StorageError> for HubError {
    fn from(e: StorageError) -> HubError {
        if e.is_full() {
            tracing::error!(target: "obscura::hub", error = %e, "the hub's disk is full: it takes nothing more until space is freed");
            return HubError::new(
                Kind::Full,
                "hub_full",
                "the hub's disk is full: it takes nothing more until its operator frees space; this box keeps \
                 everything and sends it later",
            );
        }
        tracing::error!(target: "obscura::hub", error = %e, "hub storage failed");
        HubError::new(Kind::Internal, "internal", "the hub could not do this; its log has the cause")
    }
}

#[cfg(test)]
mod full_tests {
    use super::*;

    #[test]
    fn r16_a_full_hub_disk_is_a_507_that_names_the_fix_not_a_500() {
        let enospc = StorageError(Box::new(std::io::Error::from_raw_os_error(28)));
        let e = HubError::from(enospc);
        assert_eq!((e.kind, e.code), (Kind::Full, "hub_full"));
        assert!(e.message.contains("frees space") && e.message.contains("keeps everything"), "{}", e.message);
        #[derive(Debug, thiserror::Error)]
        #[error("sqlite: database or disk is full")]
        struct Sqlite;
        assert_eq!(HubError::from(StorageError(Box::new(Sqlite))).kind, Kind::Full);
        let other = StorageError(Box::new(std::io::Error::from(std::io::ErrorKind::PermissionDenied)));
        assert_eq!(HubError::from(other).kind, Kind::Internal);
    }
}

/// The hub's logic over a store and its identity. Cheap to share behind `Arc`.
#[derive(Debug, Clone)]
pub struct Hub {
    store: Arc<dyn HubStore>,
    identity: Arc<HubIdentity>,
    /// The fleet's broker as devices reach it (`obscura hub --mqtt-public`).
    broker: Option<String>,
    /// Rung when this process queues a command, so the control plane publishes it at
    /// once rather than at its next pass (commands other processes queue wait for it).
    queued: Arc<(std::sync::Mutex<u64>, std::sync::Condvar)>,
    /// Device messages the control plane refused, for `/metrics`: counters of this
    /// process, not state any decision reads.
    mqtt_refusals: MqttRefusals,
}

/// The SHA-256 (hex) of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, HubError> {
    serde_json::from_slice(body).map_err(|e| HubError::bad_request(format!("the {what} is not valid v1 JSON: {e}")))
}

impl Hub {
    pub fn new(store: Arc<dyn HubStore>, identity: Arc<HubIdentity>) -> Hub {
        Hub { store, identity, broker: None, queued: Arc::default(), mqtt_refusals: MqttRefusals::default() }
    }

    /// Waits up to `timeout` until this process has queued a command since the count
    /// `seen`; true (and `seen` brought up to date) if it has.
    pub fn wait_queued(&self, seen: &mut u64, timeout: std::time::Duration) -> bool {
        let (count, rung) = &*self.queued;
        let guard = count.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = rung.wait_timeout_while(guard, timeout, |n| *n == *seen).unwrap_or_else(|p| p.into_inner());
        let queued = *guard != *seen;
        *seen = *guard;
        queued
    }

    /// Tells approved devices to log in to the fleet's broker at `broker` (the address
    /// as devices reach it), with the password [`HubIdentity::broker_password`] gives.
    pub fn with_broker(mut self, broker: impl Into<String>) -> Hub {
        self.broker = Some(broker.into());
        self
    }

    /// The fleet's broker as devices reach it, if the hub has one.
    pub fn broker(&self) -> Option<&str> {
        self.broker.as_deref()
    }

    /// Device messages this process's control plane refused (too large, malformed).
    pub fn mqtt_refusals(&self) -> &MqttRefusals {
        &self.mqtt_refusals
    }

    pub fn store(&self) -> &dyn HubStore {
        self.store.as_ref()
    }

    pub fn identity(&self) -> &HubIdentity {
        &self.identity
    }

    /// What a device is told of where it stands: with its broker login once approved.
    pub fn status(&self, device: DeviceId, state: DeviceState) -> DeviceStatus {
        let mqtt = self.broker.as_ref().filter(|_| state == DeviceState::Approved).map(|broker| v1::MqttAccess {
            broker: broker.clone(),
            password: self.identity.broker_password(&device.to_string()),
        });
        DeviceStatus {
            state,
            hub_key: wire::base64(self.identity.public_key()),
            hub_id: self.identity.hub_id().to_owned(),
            mqtt,
        }
    }

    /// Audits a refusal and returns it.
    fn refuse(&self, device: Option<&str>, request: &signature::Request<'_>, error: HubError, now_ms: i64) -> HubError {
        let subject = format!("device/{}", device.unwrap_or("unknown"));
        let detail = json!({ "code": error.code, "method": request.method, "path": request.path });
        if let Err(e) = self.store.audit("hub", "hub.refused", &subject, &detail, now_ms) {
            tracing::error!(target: "obscura::hub", error = %e, "cannot audit a refusal");
        }
        tracing::info!(target: "obscura::hub", device = device.unwrap_or("unknown"), code = error.code, path = request.path, "refused");
        error
    }

    fn sig_error(e: SigError) -> HubError {
        HubError::new(Kind::Unauthenticated, e.code(), e.to_string())
    }

    /// Checks `request`'s signature with `public_key` at `now_ms`, `body` against its
    /// digest (when given: a streamed body is checked after by [`Hub::check_digest`]),
    /// and its nonce against those seen.
    fn check(
        &self,
        device: DeviceId,
        public_key: &[u8],
        request: &signature::Request<'_>,
        body: Option<&[u8]>,
        now_ms: i64,
    ) -> Result<(), HubError> {
        let params = signature::verify(request, public_key, now_ms.div_euclid(1000)).map_err(Hub::sig_error)?;
        if let Some(body) = body {
            signature::check_digest(request.content_digest, body).map_err(Hub::sig_error)?;
        }
        let keep_until = now_ms + signature::NONCE_KEEP_S * 1000;
        if !self.store.remember_nonce(device, &params.nonce, now_ms, keep_until)? {
            return Err(HubError::new(
                Kind::Unauthenticated,
                "replayed",
                "this request's nonce was seen already: a replay, or a device that reuses nonces (draw 16 random bytes per request)",
            ));
        }
        Ok(())
    }

    /// The enrolled device that signed `request` (any state: [`Hub::require_approved`]
    /// decides what it may do), or the refusal, audited.
    pub fn authenticate(
        &self,
        request: &signature::Request<'_>,
        body: Option<&[u8]>,
        now_ms: i64,
    ) -> Result<DeviceRecord, HubError> {
        let params = signature::parse(request).map_err(|e| self.refuse(None, request, Hub::sig_error(e), now_ms))?;
        let keyid = params.keyid.clone();
        let refuse = |e: HubError| self.refuse(Some(&keyid), request, e, now_ms);
        let id = params.device().map_err(|e| refuse(Hub::sig_error(e)))?;
        let Some(device) = self.store.device(id)? else {
            return Err(refuse(HubError::new(
                Kind::Unauthenticated,
                "unknown_device",
                format!("device {id} is not enrolled with this hub: run `obscura sync enrol` on it"),
            )));
        };
        self.check(id, &device.public_key, request, body, now_ms).map_err(refuse)?;
        Ok(device)
    }

    /// Refuses, audited, a device that may not send data: pending (403) or revoked (401).
    pub fn require_approved(
        &self,
        device: &DeviceRecord,
        request: &signature::Request<'_>,
        now_ms: i64,
    ) -> Result<(), HubError> {
        let error = match device.state {
            DeviceState::Approved => return Ok(()),
            DeviceState::Pending => HubError::new(
                Kind::Forbidden,
                "pending",
                format!(
                    "device {} is waiting for approval: run `obscura hub devices approve {}` on the hub",
                    device.id, device.id
                ),
            ),
            DeviceState::Revoked => HubError::new(
                Kind::Unauthenticated,
                "revoked",
                format!("device {} was revoked on this hub; it may send nothing more", device.id),
            ),
        };
        Err(self.refuse(Some(&device.id.to_string()), request, error, now_ms))
    }

    /// Checks a streamed body, whose SHA-256 is `sha256`, against the signed digest once
    /// it is all in; a mismatch is refused and audited.
    pub fn check_streamed_digest(
        &self,
        device: &DeviceRecord,
        request: &signature::Request<'_>,
        sha256: &[u8],
        now_ms: i64,
    ) -> Result<(), HubError> {
        signature::check_sha256(request.content_digest, sha256)
            .map_err(|e| self.refuse(Some(&device.id.to_string()), request, Hub::sig_error(e), now_ms))
    }

    /// `POST /v1/enrol`: signed by the key it presents, which proves the device holds it.
    pub fn enrol(&self, request: &signature::Request<'_>, body: &[u8], now_ms: i64) -> Result<DeviceStatus, HubError> {
        let enrol: v1::Enrol = parse_body(body, "enrolment")?;
        let subject = enrol.device.to_string();
        let refuse = |e: HubError| self.refuse(Some(&subject), request, e, now_ms);
        let public_key = wire::unbase64(&enrol.public_key)
            .filter(|k| k.len() == 32)
            .ok_or_else(|| refuse(HubError::bad_request("public_key must be base64 of the raw 32-byte Ed25519 key")))?;
        let params = signature::parse(request).map_err(|e| refuse(Hub::sig_error(e)))?;
        if params.keyid != subject {
            return Err(refuse(HubError::new(
                Kind::Unauthenticated,
                "bad_signature",
                format!("an enrolment must be signed by the device it enrols ({subject}), not {}", params.keyid),
            )));
        }
        self.check(enrol.device, &public_key, request, Some(body), now_ms).map_err(refuse)?;
        let record = DeviceRecord {
            id: enrol.device,
            public_key: public_key.clone(),
            hostname: enrol.hostname.clone(),
            state: DeviceState::Pending,
            enrolled_ms: now_ms,
        };
        let token_hash = enrol.token.as_deref().map(|t| sha256_hex(t.trim().as_bytes()));
        let stored = self.store.enrol(&record, token_hash.as_deref(), now_ms)?;
        if stored.public_key != public_key {
            return Err(refuse(HubError::new(
                Kind::Conflict,
                "key_mismatch",
                format!(
                    "device {subject} is enrolled with another key; if the box was reinstalled, revoke the old \
                     enrolment on the hub and give the box a new device id"
                ),
            )));
        }
        Ok(self.status(stored.id, stored.state))
    }

    /// `HEAD /v1/blobs/{sha256}`: this device's upload only, so no device learns what
    /// another sent.
    pub fn head_blob(&self, device: &DeviceRecord, sha256: &str, now_ms: i64) -> Result<Option<Upload>, HubError> {
        if !is_sha256_hex(sha256) {
            return Ok(None);
        }
        match self.store.upload(device.id, sha256)? {
            Some(upload) => self.settle(device, sha256, upload, now_ms),
            None => Ok(None),
        }
    }

    /// Completing an upload is two store steps (keep the last piece, then check and
    /// finish the whole), so a hub killed between them, or whose disk filled as it wrote
    /// the whole, leaves every byte held and the blob not complete. Told "all held", a
    /// device skips the blob and each commit is refused `missing_blobs` for good: so such
    /// an upload is finished when a device asks about it (HEAD, or a PATCH at another
    /// offset), or discarded (None: send it again) if its bytes are wrong.
    fn settle(
        &self,
        device: &DeviceRecord,
        sha256: &str,
        upload: Upload,
        now_ms: i64,
    ) -> Result<Option<Upload>, HubError> {
        match self.finish(device, sha256, upload, now_ms) {
            Ok(upload) => Ok(Some(upload)),
            Err(e) if e.code == "digest_mismatch" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One piece of `PATCH /v1/blobs/{sha256}`: `bytes` at `offset` of a blob of
    /// `length`. The piece that completes it has the whole checked against `sha256`
    /// before the blob becomes visible; a mismatch discards the upload.
    pub fn patch_blob(
        &self,
        device: &DeviceRecord,
        sha256: &str,
        offset: u64,
        length: u64,
        bytes: &[u8],
        now_ms: i64,
    ) -> Result<Upload, HubError> {
        if !is_sha256_hex(sha256) {
            return Err(HubError::bad_request(format!(
                "`{sha256}` is not a blob id: blobs are named by the lower-case hex SHA-256 of their bytes"
            )));
        }
        if length > v1::MAX_BLOB_BYTES {
            return Err(HubError::new(
                Kind::TooLarge,
                "payload_too_large",
                format!("a blob of {length} bytes is over the hub's limit of {} bytes", v1::MAX_BLOB_BYTES),
            ));
        }
        if offset.saturating_add(bytes.len() as u64) > length {
            return Err(HubError::bad_request(format!(
                "{} bytes at offset {offset} run past the blob's Upload-Length {length}",
                bytes.len()
            )));
        }
        let upload = match self.store.append_upload(device.id, sha256, length, offset, bytes, now_ms)? {
            Appended::Stored(upload) => upload,
            Appended::OffsetMismatch(upload) => {
                let held = self.settle(device, sha256, upload, now_ms)?.map_or(0, |u| u.offset);
                return Err(HubError {
                    upload_offset: Some(held),
                    ..HubError::new(
                        Kind::Conflict,
                        "offset_mismatch",
                        format!("the hub holds {held} bytes of this blob, not {offset}: resume from Upload-Offset"),
                    )
                });
            }
            Appended::LengthMismatch(upload) => {
                return Err(HubError::new(
                    Kind::Conflict,
                    "length_mismatch",
                    format!("this upload began with Upload-Length {}, not {length}", upload.length),
                ));
            }
        };
        self.finish(device, sha256, upload, now_ms)
    }

    /// An upload with every byte in is checked against its name and made visible, or
    /// discarded (`digest_mismatch`); any other is returned as it is.
    fn finish(&self, device: &DeviceRecord, sha256: &str, upload: Upload, now_ms: i64) -> Result<Upload, HubError> {
        if upload.complete || upload.offset < upload.length {
            return Ok(upload);
        }
        let whole = self.store.upload_bytes(device.id, sha256)?;
        if sha256_hex(&whole) != sha256 {
            // Finished meanwhile by another request (a HEAD after a cut PATCH): its pieces
            // are gone because they are in the blob, not because they were wrong.
            if let Some(done) = self.store.upload(device.id, sha256)?.filter(|u| u.complete) {
                return Ok(done);
            }
            self.store.discard_upload(device.id, sha256)?;
            let detail = json!({ "sha256": sha256, "bytes": whole.len() });
            self.store.audit(
                &format!("device:{}", device.id),
                "hub.blob_rejected",
                &format!("blob/{sha256}"),
                &detail,
                now_ms,
            )?;
            return Err(HubError::new(
                Kind::Unprocessable,
                "digest_mismatch",
                "the uploaded bytes do not hash to the blob's name; the upload was discarded: send it again from offset 0",
            ));
        }
        self.store.finish_upload(device.id, sha256, &whole, now_ms)?;
        Ok(Upload { complete: true, ..upload })
    }

    fn payload(&self, kind: ReceiptKind, id: &str, device: DeviceId, frames: Vec<i64>, now_ms: i64) -> Payload {
        Payload {
            version: wire::VERSION,
            kind,
            id: id.to_owned(),
            device,
            frames,
            consents: Vec::new(),
            audit_head: None,
            received_ms: now_ms,
            hub_id: self.identity.hub_id().to_owned(),
        }
    }

    fn receipt_text(&self, payload: &Payload) -> String {
        serde_json::to_string(&Receipt::sign(self.identity.key(), payload)).expect("a receipt serialises")
    }

    /// `POST /v1/batches/{batch}`: the receipt (JSON text), the same bytes for the same
    /// batch every time.
    pub fn commit(&self, device: &DeviceRecord, batch: &str, body: &[u8], now_ms: i64) -> Result<String, HubError> {
        if let Some(receipt) = self.store.receipt(device.id, ReceiptKind::Batch, batch)? {
            return Ok(receipt);
        }
        let manifest: v1::Manifest = parse_body(body, "manifest")?;
        if manifest.version != wire::VERSION {
            return Err(HubError::bad_request(format!("manifest version {} is not 1", manifest.version)));
        }
        if manifest.batch != batch || manifest.device != device.id {
            return Err(HubError::bad_request(format!(
                "the manifest is batch {} of device {}, but was sent as batch {batch} by {}",
                manifest.batch, manifest.device, device.id
            )));
        }
        if let Some(frame) = manifest.frames.iter().find(|f| !is_sha256_hex(&f.sha256)) {
            return Err(HubError::bad_request(format!(
                "frame {}: `{}` is not a hex SHA-256",
                frame.local, frame.sha256
            )));
        }
        let shas: Vec<&str> = manifest.frames.iter().map(|f| f.sha256.as_str()).collect();
        let missing = self.store.missing_blobs(device.id, &shas)?;
        if !missing.is_empty() {
            return Err(HubError {
                missing,
                ..HubError::new(
                    Kind::Conflict,
                    "missing_blobs",
                    "the manifest names blobs this device has not uploaded whole: upload them, then commit again",
                )
            });
        }
        let mut payload = self.payload(
            ReceiptKind::Batch,
            batch,
            device.id,
            manifest.frames.iter().map(|f| f.local).collect(),
            now_ms,
        );
        payload.audit_head = Some(manifest.audit_head.clone());
        Ok(self.store.commit_batch(device.id, &manifest, &self.receipt_text(&payload), now_ms)?)
    }

    /// `POST /v1/consents`: the receipt, under the body's SHA-256 (the same update twice
    /// gets the same receipt).
    pub fn consents(&self, device: &DeviceRecord, body: &[u8], now_ms: i64) -> Result<String, HubError> {
        let id = sha256_hex(body);
        if let Some(receipt) = self.store.receipt(device.id, ReceiptKind::Consents, &id)? {
            return Ok(receipt);
        }
        let update: v1::ConsentUpdate = parse_body(body, "consent update")?;
        let mut payload = self.payload(ReceiptKind::Consents, &id, device.id, Vec::new(), now_ms);
        payload.consents = update.consents.iter().map(|c| c.id.clone()).collect();
        Ok(self.store.upsert_consents(device.id, &update.consents, &id, &self.receipt_text(&payload), now_ms)?)
    }

    /// `POST /v1/erasures/{request}`: the erasure receipt. Its frames are those the hub
    /// no longer holds, whether it had them or not.
    pub fn erase(&self, device: &DeviceRecord, request: &str, body: &[u8], now_ms: i64) -> Result<String, HubError> {
        if let Some(receipt) = self.store.receipt(device.id, ReceiptKind::Erasure, request)? {
            return Ok(receipt);
        }
        let erasure: v1::Erasure = parse_body(body, "erasure request")?;
        let payload = self.payload(ReceiptKind::Erasure, request, device.id, erasure.frames.clone(), now_ms);
        let actor = format!("device:{}", device.id);
        let receipt = self.receipt_text(&payload);
        Ok(self.store.erase(device.id, request, &erasure.frames, &erasure.blobs, &receipt, &actor, now_ms)?)
    }

    /// `GET /v1/commands`.
    pub fn commands(&self, device: &DeviceRecord) -> Result<v1::Commands, HubError> {
        Ok(v1::Commands { commands: self.store.commands(device.id)? })
    }

    /// `POST /v1/commands/{id}/ack`.
    pub fn ack(&self, device: &DeviceRecord, id: &str, body: &[u8], now_ms: i64) -> Result<(), HubError> {
        let ack: v1::CommandAck = parse_body(body, "acknowledgement")?;
        if self.store.ack_command(device.id, id, &ack, now_ms)? {
            Ok(())
        } else {
            Err(HubError::new(Kind::NotFound, "not_found", format!("device {} has no command {id}", device.id)))
        }
    }

    /// Approves or revokes a device (`obscura hub devices approve|revoke`, or a hub
    /// admin's request); `actor` decided.
    pub fn decide(&self, id: DeviceId, state: DeviceState, actor: &str, now_ms: i64) -> Result<(), HubError> {
        self.known(id)?;
        self.store.set_state(id, state, actor, now_ms)?;
        Ok(())
    }

    /// Queues `kind` for `device` (`obscura hub devices sync-now|pause|resume`, and
    /// erasure): kept in the store, polled over HTTPS and published over MQTT.
    pub fn command(
        &self,
        device: DeviceId,
        kind: v1::CommandKind,
        frames: Vec<i64>,
        actor: &str,
        now_ms: i64,
    ) -> Result<v1::Command, HubError> {
        self.queue(device, kind, frames, None, actor, now_ms)
    }

    fn queue(
        &self,
        device: DeviceId,
        kind: v1::CommandKind,
        frames: Vec<i64>,
        window: Option<v1::EraseWindow>,
        actor: &str,
        now_ms: i64,
    ) -> Result<v1::Command, HubError> {
        self.known(device)?;
        let command = v1::Command {
            id: format!("{}-{}", kind.as_str().replace('_', "-"), random_hex()?),
            kind,
            frames,
            window,
            created_ms: now_ms,
        };
        self.store.add_command(device, &command, actor)?;
        let (count, rung) = &*self.queued;
        *count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        rung.notify_all();
        Ok(command)
    }

    /// Erasure that starts at the hub (`obscura hub erase`): the device is told to erase
    /// `frames` and whatever it holds in `window` (sent or not) first, so a crash
    /// between the two steps still erases everywhere (the device's erasure comes back as
    /// a request); then the hub's copy of `frames` goes, with the hub's signed erasure
    /// receipt. Returns the receipt (JSON text) and the command, whose acknowledgement
    /// carries the device's own receipt. A device not approved gets the command once it
    /// is.
    pub fn erase_central(
        &self,
        device: DeviceId,
        frames: Vec<i64>,
        window: Option<v1::EraseWindow>,
        actor: &str,
        now_ms: i64,
    ) -> Result<(String, v1::Command), HubError> {
        let command = self.queue(device, v1::CommandKind::Erase, frames.clone(), window, actor, now_ms)?;
        let request = format!("hub-{}", command.id);
        let payload = self.payload(ReceiptKind::Erasure, &request, device, frames.clone(), now_ms);
        let receipt = self.store.erase(device, &request, &frames, &[], &self.receipt_text(&payload), actor, now_ms)?;
        Ok((receipt, command))
    }

    /// Erasure a person asks for at the hub (`obscura hub erase`, `POST /api/v1/erasures`):
    /// `frames` by the device's ids, and whatever the hub holds in `window`, go here at
    /// once; the device is told the window itself, so what it has not sent yet goes too.
    pub fn erase_selected(
        &self,
        device: DeviceId,
        mut frames: Vec<i64>,
        window: Option<v1::EraseWindow>,
        actor: &str,
        now_ms: i64,
    ) -> Result<CentralErasure, HubError> {
        let record = self.known(device)?;
        if window.is_none() && frames.is_empty() {
            return Err(HubError::new(
                Kind::Unprocessable,
                "invalid",
                "name what to erase: frames by id, or a window (camera, from, until)",
            ));
        }
        if let Some(w) = &window {
            frames.extend(self.store.select_frames(device, w.camera.as_deref(), w.from_ms, w.until_ms)?);
        }
        frames.sort_unstable();
        frames.dedup();
        let held: std::collections::BTreeSet<i64> = self.store.frames(device)?.into_iter().collect();
        let erased = frames.iter().filter(|f| held.contains(f)).count();
        let (receipt, command) = self.erase_central(device, frames, window, actor, now_ms)?;
        Ok(CentralErasure { receipt, command, erased, device_state: record.state })
    }

    fn known(&self, device: DeviceId) -> Result<DeviceRecord, HubError> {
        self.store.device(device)?.ok_or_else(|| {
            HubError::new(
                Kind::NotFound,
                "not_found",
                format!("no device {device} has enrolled; `obscura hub devices list` shows those that have"),
            )
        })
    }

    /// A new one-time enrolment token: printed once, kept only as its hash.
    pub fn new_token(&self, actor: &str, now_ms: i64) -> Result<String, HubError> {
        let token = random_hex()?;
        self.store.add_token(&sha256_hex(token.as_bytes()), actor, now_ms)?;
        Ok(token)
    }
}

/// What [`Hub::erase_selected`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct CentralErasure {
    /// The hub's signed erasure receipt (JSON text).
    pub receipt: String,
    /// The erase command sent to the device; its acknowledgement carries the device's
    /// own receipt.
    pub command: v1::Command,
    /// Frames the hub held of those named, now gone.
    pub erased: usize,
    /// The device's state: a device not approved gets the command once it is.
    pub device_state: DeviceState,
}

/// 16 random bytes, in hex.
fn random_hex() -> Result<String, HubError> {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| HubError::new(Kind::Internal, "internal", "the system random source failed"))?;
    Ok(hex::encode(bytes))
}
