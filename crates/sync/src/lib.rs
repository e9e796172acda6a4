//! The box's side of sync (invariants 3, 5 and 6): its Ed25519 identity, enrolment with
//! a hub whose certificate it pins, the HTTPS data plane (signed requests, blobs
//! resumed by offset, idempotent commits, receipts checked against the hub's key), the
//! MQTT control plane, and [`SyncStage`], the pipeline's fifth stage, which drains the
//! store's outbox. The store decides what may leave and keeps where things stand; this
//! crate only moves it and reports back, so a crash or a cut at any point resumes from
//! SQLite, never from a client library's memory.
//!
//! Invariant: the only crate that speaks to a hub (HTTPS client, MQTT).

pub mod bucket;
pub mod client;
pub mod enrolment;
pub mod identity;
pub mod mqtt;
pub mod pin;
pub mod stage;
pub mod window;

pub use client::{ClientError, HubAddress, HubClient, Uploaded};
pub use enrolment::{ENROLMENT_FILE, Enrolment};
pub use identity::{DeviceIdentity, KEY_FILE};
pub use mqtt::{MqttError, MqttHandle, MqttSession, MqttSettings, MqttTls};
pub use pin::Fingerprint;
pub use stage::{SyncSettings, SyncStage};
pub use window::Window;
