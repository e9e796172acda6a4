//! Identities that outlive one box: the device id (a ULID made at first start and kept
//! in the state directory) and the fleet-wide ids built on it. Local ids (`frames.id`,
//! consent ids like `c1`) stay short in SQLite, the API and file names; on the wire to
//! a hub, which sees many boxes, a thing is named by (device id, local id).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ring::rand::SecureRandom;

pub use wire::{DeviceId, FleetId};

use crate::StoreError;

pub const DEVICE_ID_FILE: &str = "device.id";

/// Reads `dir/device.id`, making it at first start, so that the box keeps its name
/// (on which the hub knows it) across restarts and upgrades.
pub(crate) fn load_or_create_device_id(dir: &Path) -> Result<DeviceId, StoreError> {
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
            let id = DeviceId::new(frame::now_unix_ms() as u64, random);
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

/// A frame on this box: `frames.id`, never reused (AUTOINCREMENT, started past every
/// erased frame's id), so tombstones, outbox rows, audit subjects and exports cannot
/// come to name another frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct FrameId(pub i64);

impl std::fmt::Display for FrameId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for FrameId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse().map(FrameId).map_err(|_| format!("`{s}` is not a frame id (a whole number)"))
    }
}

/// A consent record on this box, such as `c1`. Short and local; across a fleet it is
/// `FleetId<ConsentId>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ConsentId(pub String);

impl ConsentId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ConsentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ConsentId {
    fn from(s: &str) -> Self {
        ConsentId(s.to_owned())
    }
}

impl rusqlite::ToSql for FrameId {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        self.0.to_sql()
    }
}

impl rusqlite::types::FromSql for FrameId {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        i64::column_result(value).map(FrameId)
    }
}

impl rusqlite::ToSql for ConsentId {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        self.0.to_sql()
    }
}

impl rusqlite::types::FromSql for ConsentId {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        String::column_result(value).map(ConsentId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_device_id(dir.path()).unwrap();
        assert_eq!(load_or_create_device_id(dir.path()).unwrap(), first);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create_device_id(other.path()).unwrap(), first, "random per box");
        let text = std::fs::read_to_string(dir.path().join(DEVICE_ID_FILE)).unwrap();
        assert_eq!(text.trim().len(), 26, "a ULID: {text}");

        std::fs::write(dir.path().join(DEVICE_ID_FILE), "not an id\n").unwrap();
        let err = load_or_create_device_id(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a device id") && err.contains("restore it"), "{err}");
    }
}
