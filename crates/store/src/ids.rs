//! Identities that outlive one box: the device id (a ULID made at first start and kept
//! in the state directory) and the fleet-wide ids built on it. Local ids (`frames.id`,
//! consent ids like `c1`) stay short in SQLite, the API and file names; on the wire to
//! a hub, which sees many boxes, a thing is named by (device id, local id).

use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::str::FromStr;

use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

use crate::StoreError;

pub const DEVICE_ID_FILE: &str = "device.id";

/// This box among a fleet's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(ulid::Ulid);

impl DeviceId {
    /// Reads `dir/device.id`, making it at first start (a ULID: creation time and 80
    /// random bits, so ids sort by when boxes were set up).
    pub(crate) fn load_or_create(dir: &Path) -> Result<DeviceId, StoreError> {
        let path = dir.join(DEVICE_ID_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map_err(|e| {
                StoreError::Corrupt(format!(
                    "{}: {e}; restore it from backup (the hub knows this box by it)",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut random = [0u8; 16];
                ring::rand::SystemRandom::new()
                    .fill(&mut random)
                    .map_err(|_| StoreError::Corrupt("the system random source failed".into()))?;
                let id = DeviceId(ulid::Ulid::from_parts(frame::now_unix_ms() as u64, u128::from_be_bytes(random)));
                // Written whole, then renamed, so a crash never leaves half an id.
                let tmp = dir.join(format!("{DEVICE_ID_FILE}.tmp"));
                let io = |e| StoreError::io(&path, e);
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o644)
                    .open(&tmp)
                    .map_err(io)?;
                writeln!(file, "{id}").and_then(|()| file.sync_all()).map_err(io)?;
                std::fs::rename(&tmp, &path).map_err(io)?;
                crate::files::sync_dir(dir)?;
                tracing::info!(target: "obscura::store", device = %id, "made this box's device id");
                Ok(id)
            }
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for DeviceId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ulid::Ulid::from_string(s).map(DeviceId).map_err(|e| format!("`{s}` is not a device id (a ULID): {e}"))
    }
}

impl Serialize for DeviceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A thing's name across the fleet: the box it was made on and its id there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FleetId<T> {
    pub device: DeviceId,
    pub local: T,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = DeviceId::load_or_create(dir.path()).unwrap();
        assert_eq!(DeviceId::load_or_create(dir.path()).unwrap(), first);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(DeviceId::load_or_create(other.path()).unwrap(), first, "random per box");
        let text = std::fs::read_to_string(dir.path().join(DEVICE_ID_FILE)).unwrap();
        assert_eq!(text.trim().len(), 26, "a ULID: {text}");
        let wire = serde_json::to_value(FleetId { device: first, local: 7 }).unwrap();
        assert_eq!(wire, serde_json::json!({ "device": first.to_string(), "local": 7 }));

        std::fs::write(dir.path().join(DEVICE_ID_FILE), "not an id\n").unwrap();
        let err = DeviceId::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a device id") && err.contains("restore it"), "{err}");
    }
}
