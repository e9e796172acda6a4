//! Who this box is to a hub: its device id (a ULID the store made at first start) and
//! an Ed25519 key pair made beside it, `STATE_DIR/sync/device.key` (PKCS#8, 0600). Every
//! request to the hub is signed with the key; the hub knows the box by the pair.

use std::path::Path;

use ring::signature::{Ed25519KeyPair, KeyPair};
use wire::DeviceId;
use wire::keyfile::{self, KeyFileError};

/// Where the key is kept, under the state directory.
pub const KEY_FILE: &str = "sync/device.key";

/// The box's identity: its id and signing key.
pub struct DeviceIdentity {
    pub device: DeviceId,
    key: Ed25519KeyPair,
}

impl std::fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceIdentity").field("device", &self.device).field("key", &self.fingerprint()).finish()
    }
}

impl DeviceIdentity {
    /// Reads the key from `state_dir`, making it at first start.
    pub fn load_or_create(state_dir: &Path, device: DeviceId) -> Result<DeviceIdentity, KeyFileError> {
        let (key, made) = keyfile::load_or_create(&state_dir.join(KEY_FILE), "the hub knows this box by it")?;
        let identity = DeviceIdentity { device, key };
        if made {
            tracing::info!(target: "obscura::sync", key = %identity.fingerprint(), "made this box's sync key");
        }
        Ok(identity)
    }

    pub fn key(&self) -> &Ed25519KeyPair {
        &self.key
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    /// `SHA256:…` of the public key, as `obscura doctor`, `sync status` and the hub show it.
    pub fn fingerprint(&self) -> String {
        keyfile::fingerprint(&self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sync_key_lives_in_the_state_dir_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let device = DeviceId::new(1, [3; 16]);
        let first = DeviceIdentity::load_or_create(dir.path(), device).unwrap();
        let again = DeviceIdentity::load_or_create(dir.path(), device).unwrap();
        assert_eq!(first.public_key(), again.public_key());
        assert_eq!(first.fingerprint(), again.fingerprint());
        assert!(dir.path().join(KEY_FILE).exists());
    }
}
