//! Version 1 of what a box and its hub send each other over HTTPS (`/v1/…`): enrolment,
//! blob uploads, batch manifests, consent updates, erasure requests, commands and the
//! error shape. These are the contract, not the store's domain types: a field changes
//! only with a new version. The hub reads what it knows and ignores what it does not,
//! so a newer device can add fields without breaking an older hub.

use serde::{Deserialize, Serialize};

use crate::DeviceId;

/// `HEAD`/`PATCH /v1/blobs/{sha256}`: bytes the hub holds of the blob from this device.
pub const UPLOAD_OFFSET: &str = "upload-offset";
/// `PATCH /v1/blobs/{sha256}`: the blob's whole length.
pub const UPLOAD_LENGTH: &str = "upload-length";
/// The largest blob the hub takes (an anonymized JPEG is far smaller); over it, 413.
pub const MAX_BLOB_BYTES: u64 = 32 << 20;

/// `POST /v1/enrol`, signed with the key it presents (keyid = `device`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrol {
    pub version: u32,
    pub device: DeviceId,
    /// Base64 of the raw 32-byte Ed25519 public key.
    pub public_key: String,
    pub hostname: String,
    /// A one-time token from `obscura hub token`: the device is approved at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Where a device stands with the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceState {
    /// Enrolled, waiting for `obscura hub devices approve`.
    Pending,
    Approved,
    /// Refused for good: the device stops sending.
    Revoked,
}

impl DeviceState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Pending => "pending",
            DeviceState::Approved => "approved",
            DeviceState::Revoked => "revoked",
        }
    }

    pub fn parse(text: &str) -> Option<DeviceState> {
        [DeviceState::Pending, DeviceState::Approved, DeviceState::Revoked].into_iter().find(|s| s.as_str() == text)
    }
}

/// The answer to `POST /v1/enrol` and `GET /v1/device`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatus {
    pub state: DeviceState,
    /// Base64 of the hub's raw Ed25519 public key, which signs its receipts.
    pub hub_key: String,
    pub hub_id: String,
    /// The control plane, once the device is approved and the hub has a broker: where
    /// and how this device logs in. Sent only over the pinned, signed HTTPS answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<MqttAccess>,
}

/// A device's login on the hub's MQTT broker (client id and user name: its id).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MqttAccess {
    /// `mqtts://HOST:PORT`, or `mqtt://127.0.0.1:PORT` for a broker on the device's own machine.
    pub broker: String,
    pub password: String,
}

impl std::fmt::Debug for MqttAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttAccess").field("broker", &self.broker).field("password", &"…").finish()
    }
}

/// The device's audit chain head, which the hub's receipt echoes (anchoring it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    pub seq: i64,
    pub hash: String,
}

/// `POST /v1/batches/{batch}`: the frames of one batch and the consents that cover them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    /// The batch id (a ULID, as text); the same as in the path.
    pub batch: String,
    pub device: DeviceId,
    pub created_ms: i64,
    pub audit_head: AuditHead,
    pub frames: Vec<Frame>,
    pub consents: Vec<Consent>,
}

/// One frame of a batch. Its pixels are the blob `sha256`, uploaded before the commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    /// The frame's id on the device.
    pub local: i64,
    pub camera: String,
    pub captured_ms: i64,
    /// Hex SHA-256 of the anonymized JPEG.
    pub sha256: String,
    pub bytes: u64,
    pub width: u32,
    pub height: u32,
    /// Ids of the consents that covered the frame at capture.
    pub consents: Vec<String>,
    /// The accepted annotation version, if any.
    pub annotation: Option<Annotation>,
    /// Machine pre-labels, marked as predictions.
    pub predictions: Vec<Prediction>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Annotation {
    pub version: i64,
    /// The shapes as the device stores them (a JSON array).
    pub shapes: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub label: String,
    pub score: f64,
    /// `[x, y, w, h]` in pixels.
    pub bbox: [f64; 4],
    /// Which model made it.
    pub source: String,
}

/// A consent record as it travels: withdrawals and end dates travel as updates of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    pub id: String,
    pub scope: Scope,
    pub purposes: Vec<Purpose>,
    pub valid_from_ms: i64,
    pub valid_until_ms: Option<i64>,
    pub withdrawn_at_ms: Option<i64>,
    pub basis: String,
    pub evidence_sha256: Option<String>,
}

/// What a consent covers: `kind` is `device`, `camera` or `zone`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    pub kind: String,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    Annotate,
    Sync,
    Train,
}

/// `POST /v1/consents`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentUpdate {
    pub consents: Vec<Consent>,
}

/// `POST /v1/erasures/{request}`: frames the device erased, to be erased at the hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Erasure {
    pub frames: Vec<i64>,
    pub reason: String,
    /// The SHA-256s of those frames' JPEGs, where the box knows them: the hub also drops
    /// this device's uploads of them that no frame of its own names (sent for a batch
    /// that never committed). Absent from older boxes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blobs: Vec<String>,
}

/// `GET /v1/commands`: what the hub asks of this device, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commands {
    pub commands: Vec<Command>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub id: String,
    pub kind: CommandKind,
    /// For `erase`: the frames (device ids) to erase.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frames: Vec<i64>,
    /// For `erase` by camera and time: every frame the box holds there, sent to the hub
    /// or not (frames not yet sent must not leave later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<EraseWindow>,
    pub created_ms: i64,
}

/// A camera (any, when absent) and a capture-time range `[from_ms, until_ms)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EraseWindow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camera: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    Erase,
    SyncNow,
    Pause,
    Resume,
}

impl CommandKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Erase => "erase",
            CommandKind::SyncNow => "sync_now",
            CommandKind::Pause => "pause",
            CommandKind::Resume => "resume",
        }
    }

    pub fn parse(text: &str) -> Option<CommandKind> {
        [CommandKind::Erase, CommandKind::SyncNow, CommandKind::Pause, CommandKind::Resume]
            .into_iter()
            .find(|k| k.as_str() == text)
    }
}

/// `POST /v1/commands/{id}/ack`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandAck {
    pub result: AckResult,
    /// What the person reading the hub should know (why it failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For `erase`: the device's own receipt of the erasure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckResult {
    Done,
    Failed,
}

/// Every refusal: `code` for programs, `message` (the problem and the fix) for people.
/// `missing` only with `missing_blobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shapes_on_the_wire_are_the_contracts() {
        let device: DeviceId = "01HZY3V8Q0M5W6ZJ7KX2C9D4FB".parse().unwrap();
        let manifest = Manifest {
            version: 1,
            batch: "01HZY3V8Q0M5W6ZJ7KX2C9D4FC".into(),
            device,
            created_ms: 5,
            audit_head: AuditHead { seq: 3, hash: "ab".into() },
            frames: vec![Frame {
                local: 7,
                camera: "gate".into(),
                captured_ms: 4,
                sha256: "00".repeat(32),
                bytes: 10,
                width: 2,
                height: 1,
                consents: vec!["c1".into()],
                annotation: None,
                predictions: vec![Prediction {
                    label: "car".into(),
                    score: 0.5,
                    bbox: [1.0, 2.0, 3.0, 4.0],
                    source: "nanodet".into(),
                }],
            }],
            consents: vec![Consent {
                id: "c1".into(),
                scope: Scope { kind: "camera".into(), value: "gate".into() },
                purposes: vec![Purpose::Annotate, Purpose::Sync],
                valid_from_ms: 0,
                valid_until_ms: None,
                withdrawn_at_ms: None,
                basis: "signage".into(),
                evidence_sha256: None,
            }],
        };
        let json = serde_json::to_value(&manifest).unwrap();
        assert_eq!(json["device"], "01HZY3V8Q0M5W6ZJ7KX2C9D4FB");
        assert_eq!(json["frames"][0]["annotation"], serde_json::Value::Null);
        assert_eq!(json["frames"][0]["predictions"][0]["bbox"], serde_json::json!([1.0, 2.0, 3.0, 4.0]));
        assert_eq!(json["consents"][0]["purposes"], serde_json::json!(["annotate", "sync"]));
        assert_eq!(serde_json::from_value::<Manifest>(json).unwrap(), manifest);

        let command: Command =
            serde_json::from_str(r#"{"id":"k","kind":"sync_now","created_ms":1,"later":true}"#).unwrap();
        assert_eq!(command.kind, CommandKind::SyncNow);
        assert!(command.frames.is_empty(), "unknown fields are ignored, absent frames are none");
        assert_eq!(serde_json::to_value(DeviceState::Pending).unwrap(), "pending");
        assert_eq!(DeviceState::parse("revoked"), Some(DeviceState::Revoked));
        assert_eq!(CommandKind::parse(CommandKind::Erase.as_str()), Some(CommandKind::Erase));
    }
}
