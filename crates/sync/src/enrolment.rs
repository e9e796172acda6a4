//! Where this box stands with its hub, kept in `STATE_DIR/sync/hub.json`: the hub's
//! address and pinned certificate (from `obscura sync enrol`), the hub's receipt key it
//! answered with (trusted because it came over the pinned connection), and the state
//! the hub last gave (pending, approved, revoked). The daemon rereads it, so enrolling
//! while it runs needs no restart.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wire::v1::DeviceState;

use crate::{Fingerprint, HubAddress};

pub const ENROLMENT_FILE: &str = "sync/hub.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolment {
    /// `https://HOST:PORT`.
    pub hub: String,
    pub fingerprint: Fingerprint,
    pub state: DeviceState,
    /// Base64 of the hub's Ed25519 receipt key.
    pub hub_key: String,
    pub hub_id: String,
    pub enrolled_ms: i64,
    /// The box's login on the hub's broker, as the hub last gave it (absent until
    /// approved, or when the hub has no broker). The file is 0600 for this password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<wire::v1::MqttAccess>,
    /// The hub asked this box to pause (until it asks to resume): kept here so a
    /// restart does not undo it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EnrolmentError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} is damaged ({reason}); enrol again with `obscura sync enrol`", path.display())]
    Corrupt { path: PathBuf, reason: String },
}

impl Enrolment {
    /// What the hub at `hub` (pinned to `fingerprint`) answered to an enrolment, now.
    pub fn new(hub: &HubAddress, fingerprint: Fingerprint, status: wire::v1::DeviceStatus) -> Enrolment {
        Enrolment {
            hub: hub.to_string(),
            fingerprint,
            state: status.state,
            hub_key: status.hub_key,
            hub_id: status.hub_id,
            enrolled_ms: frame::now_unix_ms(),
            mqtt: status.mqtt,
            paused: false,
        }
    }

    /// The enrolment in `state_dir`, if the box was enrolled.
    pub fn load(state_dir: &Path) -> Result<Option<Enrolment>, EnrolmentError> {
        let path = state_dir.join(ENROLMENT_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| EnrolmentError::Corrupt { path, reason: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(EnrolmentError::Io { path, source }),
        }
    }

    /// Writes it whole (temporary file, fsync, rename), so a crash keeps the old one.
    pub fn save(&self, state_dir: &Path) -> Result<(), EnrolmentError> {
        let path = state_dir.join(ENROLMENT_FILE);
        let io = |source| EnrolmentError::Io { path: path.clone(), source };
        let dir = path.parent().expect("the file is in a directory");
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = dir.join("hub.json.tmp");
        let mut file =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
        let text = serde_json::to_vec_pretty(self).expect("an enrolment serializes");
        file.write_all(&text).and_then(|()| file.sync_all()).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
    }

    pub fn address(&self) -> Result<HubAddress, String> {
        self.hub.parse()
    }

    /// The hub's receipt key, raw.
    pub fn hub_key(&self) -> Vec<u8> {
        wire::unbase64(&self.hub_key).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_enrolment_is_kept_whole_in_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Enrolment::load(dir.path()).unwrap(), None);
        let e = Enrolment {
            hub: "https://hub.local:8443".into(),
            fingerprint: Fingerprint([1; 32]),
            state: DeviceState::Pending,
            hub_key: wire::base64(&[2; 32]),
            hub_id: "hub-1".into(),
            enrolled_ms: 5,
            mqtt: None,
            paused: false,
        };
        e.save(dir.path()).unwrap();
        assert_eq!(Enrolment::load(dir.path()).unwrap(), Some(e.clone()));
        assert_eq!(e.hub_key(), vec![2; 32]);
        std::fs::write(dir.path().join(ENROLMENT_FILE), "{").unwrap();
        assert!(Enrolment::load(dir.path()).unwrap_err().to_string().contains("enrol again"));
    }
}
