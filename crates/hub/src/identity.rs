//! The hub's own Ed25519 key, which signs its receipts and which devices pin at
//! enrolment: PKCS#8 in `STATE_DIR/hub.key` (mode 0600), made at first start. Hub
//! replicas share the file (or, at fleet scale, the secret it is mounted from), so every
//! replica signs as the same hub.

use std::path::Path;

use ring::signature::{Ed25519KeyPair, KeyPair};
use wire::keyfile::{self, KeyFileError};

pub const KEY_FILE: &str = "hub.key";

/// Why the hub's key cannot be had (the shared key-file errors).
pub type IdentityError = KeyFileError;

/// The hub's signing key, its public half and the hub's id.
pub struct HubIdentity {
    key: Ed25519KeyPair,
    hub_id: String,
}

impl std::fmt::Debug for HubIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubIdentity").field("hub_id", &self.hub_id).finish_non_exhaustive()
    }
}

impl HubIdentity {
    /// Reads `dir/hub.key`, making it (0600) at first start; true when it was made now.
    pub fn load_or_create(dir: &Path) -> Result<(HubIdentity, bool), IdentityError> {
        let (key, made) = keyfile::load_or_create(&dir.join(KEY_FILE), "devices pin the hub by it")?;
        Ok((HubIdentity::new(key), made))
    }

    /// The identity of `key`; its id is the first 8 bytes of its public key's SHA-256.
    pub fn new(key: Ed25519KeyPair) -> HubIdentity {
        let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key().as_ref());
        HubIdentity { hub_id: format!("hub-{}", hex::encode(&digest.as_ref()[..8])), key }
    }

    pub fn key(&self) -> &Ed25519KeyPair {
        &self.key
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    pub fn hub_id(&self) -> &str {
        &self.hub_id
    }

    /// The broker password of `user` (a device id, or the hub's own client): derived
    /// from the hub's key (Ed25519 signatures are deterministic), so every replica gives
    /// the same one, none is stored, and nobody without the key can work it out.
    pub fn broker_password(&self, user: &str) -> String {
        let signature = self.key.sign(format!("obscura/v1 broker password for {user}").as_bytes());
        let digest = ring::digest::digest(&ring::digest::SHA256, signature.as_ref());
        hex::encode(digest.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_passwords_are_the_same_from_every_replica_and_differ_per_user() {
        let dir = tempfile::tempdir().unwrap();
        let (one, _) = HubIdentity::load_or_create(dir.path()).unwrap();
        let (again, _) = HubIdentity::load_or_create(dir.path()).unwrap();
        assert_eq!(one.broker_password("a"), again.broker_password("a"));
        assert_ne!(one.broker_password("a"), one.broker_password("b"));
        let other = tempfile::tempdir().unwrap();
        let (other, _) = HubIdentity::load_or_create(other.path()).unwrap();
        assert_ne!(one.broker_password("a"), other.broker_password("a"), "another hub's key, another password");
        assert_eq!(one.broker_password("a").len(), 64);
    }

    #[test]
    fn the_hub_key_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (first, made) = HubIdentity::load_or_create(dir.path()).unwrap();
        assert!(made);
        let path = dir.path().join(KEY_FILE);
        let (again, made) = HubIdentity::load_or_create(dir.path()).unwrap();
        assert!(!made);
        assert_eq!(again.public_key(), first.public_key());
        assert_eq!(again.hub_id(), first.hub_id());
        assert!(!format!("{first:?}").contains("key:"), "the key is not in Debug");

        // Mode and damage checks are wire::keyfile's, tested there; the hint is the hub's.
        std::fs::write(&path, b"not a key").unwrap();
        let err = HubIdentity::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("restore it from backup") && err.contains("devices pin the hub by it"), "{err}");
    }
}
