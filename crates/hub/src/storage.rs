//! What the hub needs kept: the narrow interface its logic runs on. SQLite and a blob
//! directory implement it in `store` (one machine); a later issue puts PostgreSQL and an
//! object store behind it for stateless replicas. So every method is one atomic step
//! that is safe with several hub processes at once: decisions that race (an enrolment
//! token used twice, a nonce seen twice, a batch committed twice) are settled by the
//! storage, never by a hub's memory.

use wire::mqtt::Telemetry;
use wire::v1::{Command, CommandAck, Consent, DeviceState, Manifest};
use wire::{DeviceId, ReceiptKind};

/// A storage failure: the hub answers 500 and logs it (507 when its disk is full).
#[derive(Debug, thiserror::Error)]
#[error("hub storage: {0}")]
pub struct StorageError(pub Box<dyn std::error::Error + Send + Sync>);

impl StorageError {
    /// Whether the storage failed for want of space: a file write that met ENOSPC, or
    /// SQLite's SQLITE_FULL ("database or disk is full"), anywhere in the cause chain.
    pub fn is_full(&self) -> bool {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self.0.as_ref());
        while let Some(e) = cause {
            let io_full = e.downcast_ref::<std::io::Error>().is_some_and(|io| {
                io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(28 /* ENOSPC */)
            });
            if io_full || e.to_string().contains("database or disk is full") {
                return true;
            }
            cause = e.source();
        }
        false
    }
}

pub type StoreResult<T> = Result<T, StorageError>;

/// A device the hub knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    pub id: DeviceId,
    /// The raw 32-byte Ed25519 public key it enrolled with.
    pub public_key: Vec<u8>,
    pub hostname: String,
    pub state: DeviceState,
    pub enrolled_ms: i64,
}

/// How much of a blob one device has sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upload {
    /// Bytes received and kept.
    pub offset: u64,
    /// The blob's whole length, as the first PATCH declared it.
    pub length: u64,
    /// Received whole, its SHA-256 checked, and visible.
    pub complete: bool,
}

/// What appending to an upload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// The bytes are kept; the upload now stands at this.
    Stored(Upload),
    /// The PATCH's offset is not the hub's: nothing was kept.
    OffsetMismatch(Upload),
    /// The PATCH declares another length than the upload began with: nothing was kept.
    LengthMismatch(Upload),
}

/// A blob as stored, for checks and exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub bytes: u64,
    /// Frames (of any device) that refer to it: it is deleted when the last goes.
    pub frames: u64,
}

/// What the hub last heard from a device on the control plane.
#[derive(Debug, Clone, PartialEq)]
pub struct Presence {
    pub online: bool,
    /// When the hub heard it go online or offline (Unix ms).
    pub changed_ms: i64,
    /// The newest telemetry and when it came.
    pub telemetry: Option<(Telemetry, i64)>,
}

/// The hub's storage. Every write that changes what the hub holds about people is
/// audited in the hub's own hash-chained log in the same atomic step.
pub trait HubStore: Send + Sync + std::fmt::Debug {
    fn device(&self, id: DeviceId) -> StoreResult<Option<DeviceRecord>>;
    fn devices(&self) -> StoreResult<Vec<DeviceRecord>>;
    /// Records `device` unless its id is known, and returns the record as it stands
    /// (the earlier one when known, with the same key or not). A new or pending device is
    /// approved when `token_hash` names an unused enrolment token, which it uses up; a new
    /// one without is pending.
    fn enrol(&self, device: &DeviceRecord, token_hash: Option<&str>, now_ms: i64) -> StoreResult<DeviceRecord>;
    /// Sets a known device's state, audited as `actor`'s decision; false when the
    /// device is unknown.
    fn set_state(&self, id: DeviceId, state: DeviceState, actor: &str, now_ms: i64) -> StoreResult<bool>;
    /// Keeps the SHA-256 (hex) of a one-time enrolment token `actor` made.
    fn add_token(&self, token_hash: &str, actor: &str, now_ms: i64) -> StoreResult<()>;
    /// Records `nonce` for `device` until `keep_until_ms`, forgetting expired ones:
    /// false when it was already recorded (a replay).
    fn remember_nonce(&self, device: DeviceId, nonce: &str, now_ms: i64, keep_until_ms: i64) -> StoreResult<bool>;

    /// This device's upload of blob `sha256` (hex), complete or not; never another's.
    fn upload(&self, device: DeviceId, sha256: &str) -> StoreResult<Option<Upload>>;
    /// Keeps `bytes` at `offset` of this device's upload of `sha256`, durably, if the
    /// offset is where the upload stands (0 for a new one) and `length` is its length.
    fn append_upload(
        &self,
        device: DeviceId,
        sha256: &str,
        length: u64,
        offset: u64,
        bytes: &[u8],
        now_ms: i64,
    ) -> StoreResult<Appended>;
    /// The bytes received so far of this device's upload.
    fn upload_bytes(&self, device: DeviceId, sha256: &str) -> StoreResult<Vec<u8>>;
    /// Makes the (checked) blob visible for this device, storing its content once however
    /// many devices send it, and drops the partial pieces.
    fn finish_upload(&self, device: DeviceId, sha256: &str, bytes: &[u8], now_ms: i64) -> StoreResult<()>;
    /// Forgets this device's partial upload (its hash did not match).
    fn discard_upload(&self, device: DeviceId, sha256: &str) -> StoreResult<()>;
    /// Of `sha256s`, those this device has not uploaded completely.
    fn missing_blobs(&self, device: DeviceId, sha256s: &[&str]) -> StoreResult<Vec<String>>;
    /// The stored blob `sha256`, if any device has completed it.
    fn blob(&self, sha256: &str) -> StoreResult<Option<BlobInfo>>;

    /// The receipt (JSON text) given for (`device`, `kind`, `id`), if any.
    fn receipt(&self, device: DeviceId, kind: ReceiptKind, id: &str) -> StoreResult<Option<String>>;
    /// Commits a batch: its consents upserted, its frames stored (a frame an earlier
    /// batch stored is left as it is) and `receipt` kept, at once. When the batch was
    /// committed already, changes nothing and returns the receipt given then.
    fn commit_batch(&self, device: DeviceId, manifest: &Manifest, receipt: &str, now_ms: i64) -> StoreResult<String>;
    /// Upserts consent records (a withdrawal is never undone) and keeps `receipt` under
    /// `id`, or returns the receipt already kept under it.
    fn upsert_consents(
        &self,
        device: DeviceId,
        consents: &[Consent],
        id: &str,
        receipt: &str,
        now_ms: i64,
    ) -> StoreResult<String>;
    /// Erases this device's `frames` (rows, consent links, their blob references; a
    /// blob goes with its last reference), and its uploads of `blobs` (SHA-256s) that no
    /// frame of its own names, and keeps `receipt` under `request`, or returns the
    /// receipt already kept under it. `actor` asked: the device, or a person at the hub.
    #[allow(clippy::too_many_arguments)]
    fn erase(
        &self,
        device: DeviceId,
        request: &str,
        frames: &[i64],
        blobs: &[String],
        receipt: &str,
        actor: &str,
        now_ms: i64,
    ) -> StoreResult<String>;
    /// What the control plane heard on `status`: online, or offline (its will or goodbye).
    /// Ignored for a device the hub does not know.
    fn record_presence(&self, device: DeviceId, online: bool, now_ms: i64) -> StoreResult<()>;
    /// The newest `telemetry` heard from `device`.
    fn record_telemetry(&self, device: DeviceId, telemetry: &Telemetry, now_ms: i64) -> StoreResult<()>;
    /// What the hub last heard from `device` on the control plane; None: never.
    fn presence(&self, device: DeviceId) -> StoreResult<Option<Presence>>;
    /// The hub's own retention: removes every frame received before `received_before_ms`
    /// (rows, references, a blob with its last reference), audited per device. Not an
    /// erasure: no receipt, and the devices are not told. Returns how many went.
    fn expire(&self, received_before_ms: i64, now_ms: i64) -> StoreResult<u64>;
    /// Frames of this device the hub holds, by device id.
    fn frames(&self, device: DeviceId) -> StoreResult<Vec<i64>>;
    /// How many frames of this device the hub holds: the fleet view's figure, counted
    /// without reading the ids (issue 20, item 3).
    fn frame_count(&self, device: DeviceId) -> StoreResult<u64>;
    /// Frames of this device the hub holds from `camera` (any, when None) captured in
    /// `[from_ms, to_ms)`, by device id: what `obscura hub erase` selects.
    fn select_frames(
        &self,
        device: DeviceId,
        camera: Option<&str>,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
    ) -> StoreResult<Vec<i64>>;

    /// Commands for this device not yet acknowledged, oldest first.
    fn commands(&self, device: DeviceId) -> StoreResult<Vec<Command>>;
    /// Every device's commands not yet acknowledged, oldest first: what the hub also
    /// publishes on the broker, whichever hub process queued them.
    fn unacked_commands(&self) -> StoreResult<Vec<(DeviceId, Command)>>;
    /// The device's answer to a command: its last failure, or its done.
    fn command_ack(&self, device: DeviceId, id: &str) -> StoreResult<Option<CommandAck>>;
    /// Queues `command`, audited as `actor`'s.
    fn add_command(&self, device: DeviceId, command: &Command, actor: &str) -> StoreResult<()>;
    /// Records the device's answer; false when it has no such command. A `failed`
    /// answer is kept and audited, but the command stays unacknowledged, so it is asked
    /// again.
    fn ack_command(&self, device: DeviceId, id: &str, ack: &CommandAck, now_ms: i64) -> StoreResult<bool>;

    /// Appends to the hub's audit log (for refusals; changes audit themselves).
    fn audit(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        detail: &serde_json::Value,
        now_ms: i64,
    ) -> StoreResult<()>;
}
