//! The per-device key: 32 random bytes in a 0600 file made at first start, from which
//! the blob encryption key, the blob naming key and the audit anchor's signing key are
//! derived (HKDF-SHA256). The key
//! is never logged; losing it makes the blobs unreadable, which is the point.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ring::rand::SecureRandom;
use ring::{aead, hkdf, hmac, rand};

use crate::StoreError;

pub const KEY_FILE: &str = "device.key";
const KEY_LEN: usize = 32;

/// The keys blobs are encrypted and named with, and the audit head is signed with.
pub struct Keys {
    pub(crate) seal: aead::LessSafeKey,
    pub(crate) name: hmac::Key,
    pub(crate) anchor: hmac::Key,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

impl Keys {
    /// Reads `dir/device.key`, creating it (mode 0600) if it is not there.
    pub fn load_or_create(dir: &Path) -> Result<Keys, StoreError> {
        let path = dir.join(KEY_FILE);
        let io = |e: std::io::Error| StoreError::io(&path, e);
        let mut secret = [0u8; KEY_LEN];
        match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
            Ok(mut file) => {
                rand::SystemRandom::new()
                    .fill(&mut secret)
                    .map_err(|_| StoreError::Corrupt("the system random source failed".into()))?;
                file.write_all(&secret).map_err(io)?;
                file.sync_all().map_err(io)?;
                crate::files::sync_dir(dir)?;
                tracing::info!(target: "obscura::store", path = %path.display(), "created the device key");
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let mut file = std::fs::File::open(&path).map_err(io)?;
                let mode = file.metadata().map_err(io)?.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(StoreError::Config(format!(
                        "{} is readable by others (mode {mode:o}); run `chmod 600 {}`",
                        path.display(),
                        path.display()
                    )));
                }
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes).map_err(io)?;
                secret = bytes.try_into().map_err(|b: Vec<u8>| {
                    StoreError::Corrupt(format!(
                        "{} holds {} bytes, not {KEY_LEN}; restore it from backup (without it the stored frames cannot be read)",
                        path.display(),
                        b.len()
                    ))
                })?;
            }
            Err(e) => return Err(io(e)),
        }
        Ok(Keys::derive(&secret))
    }

    fn derive(secret: &[u8; KEY_LEN]) -> Keys {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"obscura device key v1").extract(secret);
        let expand = |info: &'static [u8], out: &mut [u8; 32]| {
            prk.expand(&[info], Len32).and_then(|okm| okm.fill(out)).expect("32 bytes is a valid HKDF length");
        };
        let (mut seal, mut name, mut anchor) = ([0u8; 32], [0u8; 32], [0u8; 32]);
        expand(b"blob encryption", &mut seal);
        expand(b"blob naming", &mut name);
        expand(b"audit anchor", &mut anchor);
        Keys {
            seal: aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, &seal).expect("a 32-byte key")),
            name: hmac::Key::new(hmac::HMAC_SHA256, &name),
            anchor: hmac::Key::new(hmac::HMAC_SHA256, &anchor),
        }
    }
}

struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_file_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let a = Keys::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = Keys::load_or_create(dir.path()).unwrap();
        let tag = |k: &Keys| hmac::sign(&k.name, b"x").as_ref().to_vec();
        assert_eq!(tag(&a), tag(&b), "the same key after a restart");
        assert_eq!(format!("{a:?}"), "Keys(..)");
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        Keys::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Keys::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
