//! The hub's own Ed25519 key, which signs its receipts and which devices pin at
//! enrolment: PKCS#8 in `STATE_DIR/hub.key` (mode 0600), made at first start. Hub
//! replicas share the file (or, at fleet scale, the secret it is mounted from), so every
//! replica signs as the same hub.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

pub const KEY_FILE: &str = "hub.key";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} is readable by others (mode {mode:o}); run `chmod 600 {}`", path.display(), path.display())]
    Exposed { path: PathBuf, mode: u32 },
    #[error(
        "{} is not an Ed25519 key (PKCS#8): {reason}; restore it from backup (devices pin the hub by it)",
        path.display()
    )]
    Corrupt { path: PathBuf, reason: String },
}

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
        let path = dir.join(KEY_FILE);
        let io = |source| IdentityError::Io { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(|source| IdentityError::Io { path: dir.to_owned(), source })?;
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
            Ok(mut file) => {
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| {
                    IdentityError::Corrupt { path: path.clone(), reason: "the system random source failed".into() }
                })?;
                file.write_all(pkcs8.as_ref()).and_then(|()| file.sync_all()).map_err(io)?;
                std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
                Ok((HubIdentity::from_pkcs8(&path, pkcs8.as_ref())?, true))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let mode = std::fs::metadata(&path).map_err(io)?.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(IdentityError::Exposed { path, mode });
                }
                let bytes = std::fs::read(&path).map_err(io)?;
                Ok((HubIdentity::from_pkcs8(&path, &bytes)?, false))
            }
            Err(e) => Err(io(e)),
        }
    }

    fn from_pkcs8(path: &Path, bytes: &[u8]) -> Result<HubIdentity, IdentityError> {
        let key = Ed25519KeyPair::from_pkcs8(bytes)
            .map_err(|e| IdentityError::Corrupt { path: path.to_owned(), reason: e.to_string() })?;
        Ok(HubIdentity::new(key))
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hub_key_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (first, made) = HubIdentity::load_or_create(dir.path()).unwrap();
        assert!(made);
        let path = dir.path().join(KEY_FILE);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let (again, made) = HubIdentity::load_or_create(dir.path()).unwrap();
        assert!(!made);
        assert_eq!(again.public_key(), first.public_key());
        assert_eq!(again.hub_id(), first.hub_id());
        assert!(!format!("{first:?}").contains("key:"), "the key is not in Debug");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = HubIdentity::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, b"not a key").unwrap();
        let err = HubIdentity::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("restore it from backup"), "{err}");
    }
}
