//! The one key-file format both ends keep: an Ed25519 key pair as PKCS#8, mode 0600,
//! made once at first start and never rewritten. The box signs its requests with one,
//! the hub its receipts. The only I/O in this crate, so that the two cannot differ in
//! how a key is kept or refused.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} is readable by others (mode {mode:o}); run `chmod 600 {}`", path.display(), path.display())]
    Exposed { path: PathBuf, mode: u32 },
    #[error("{} is not an Ed25519 key (PKCS#8): {reason}; restore it from backup ({what})", path.display())]
    Corrupt { path: PathBuf, reason: String, what: &'static str },
}

/// Reads the key at `path`, making it (0600, fsynced, its directory too) when there is
/// none; true when it was made now. `what` tells a user, should the file be damaged,
/// what depends on it (e.g. "the hub knows this box by it").
pub fn load_or_create(path: &Path, what: &'static str) -> Result<(Ed25519KeyPair, bool), KeyFileError> {
    let io = |source| KeyFileError::Io { path: path.to_owned(), source };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|source| KeyFileError::Io { path: dir.to_owned(), source })?;
    let corrupt = |reason: String| KeyFileError::Corrupt { path: path.to_owned(), reason, what };
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(mut file) => {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(|_| corrupt("the system random source failed".into()))?;
            file.write_all(pkcs8.as_ref()).and_then(|()| file.sync_all()).map_err(io)?;
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
            Ok((Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| corrupt(e.to_string()))?, true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyFileError::Exposed { path: path.to_owned(), mode });
            }
            let bytes = std::fs::read(path).map_err(io)?;
            Ok((Ed25519KeyPair::from_pkcs8(&bytes).map_err(|e| corrupt(e.to_string()))?, false))
        }
        Err(e) => Err(io(e)),
    }
}

/// How a public key is shown to people, as OpenSSH does: `SHA256:` and the unpadded
/// base64 of the SHA-256 of its 32 raw bytes.
pub fn fingerprint(key: &Ed25519KeyPair) -> String {
    public_fingerprint(key.public_key().as_ref())
}

/// [`fingerprint`] of a raw public key, as the hub lists an enrolled device's.
pub fn public_fingerprint(public_key: &[u8]) -> String {
    use base64::Engine;
    let digest = ring::digest::digest(&ring::digest::SHA256, public_key);
    format!("SHA256:{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sync/device.key");
        let (first, made) = load_or_create(&path, "test").unwrap();
        assert!(made);
        let (again, made) = load_or_create(&path, "test").unwrap();
        assert!(!made);
        assert_eq!(first.public_key().as_ref(), again.public_key().as_ref());
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let shown = fingerprint(&first);
        assert!(shown.starts_with("SHA256:") && shown.len() == 7 + 43, "{shown}");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_or_create(&path, "test").unwrap_err().to_string().contains("chmod 600"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, b"junk").unwrap();
        let err = load_or_create(&path, "the hub knows this box by it").unwrap_err().to_string();
        assert!(err.contains("not an Ed25519 key") && err.contains("the hub knows this box by it"), "{err}");
    }
}
