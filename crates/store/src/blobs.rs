//! Encrypted, content-addressed blobs. A blob's id is the HMAC-SHA256 of its plaintext
//! under the device's naming key, so equal frames share a file and a file's name reveals
//! nothing about its content. The file is `OBSCURA1 ‖ nonce ‖ AES-256-GCM(plaintext)`,
//! with the id as associated data: a flipped byte, a truncated file or a file renamed to
//! another id fails to open, and never yields garbage pixels.
//!
//! Writes go to `tmp/`, are fsynced, renamed into place and the directory fsynced, so a
//! crash leaves either the whole blob or a temporary file the start-up sweep removes.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use ring::aead::{Aad, NONCE_LEN, Nonce};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::StoreError;
use crate::files::sync_dir;
use crate::keys::Keys;

const MAGIC: &[u8; 8] = b"OBSCURA1";

/// The blob directory.
#[derive(Debug)]
pub struct Blobs {
    root: PathBuf,
    keys: Keys,
    random: SystemRandom,
}

impl Blobs {
    pub fn open(root: PathBuf, keys: Keys) -> Result<Blobs, StoreError> {
        std::fs::create_dir_all(root.join("tmp")).map_err(|e| StoreError::io(&root, e))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| StoreError::io(&root, e))?;
        }
        Ok(Blobs { root, keys, random: SystemRandom::new() })
    }

    /// The id `plaintext` is stored under.
    pub fn id_of(&self, plaintext: &[u8]) -> String {
        hex::encode(hmac::sign(&self.keys.name, plaintext))
    }

    /// Whether blob `id` is on disk.
    pub fn exists(&self, id: &str) -> bool {
        id.len() == 64 && self.path(id).exists()
    }

    fn path(&self, id: &str) -> PathBuf {
        self.root.join(&id[..2]).join(id)
    }

    /// Stores `plaintext` durably and returns its id; storing the same bytes again is free.
    pub fn put(&self, plaintext: &[u8]) -> Result<String, StoreError> {
        let id = self.id_of(plaintext);
        let path = self.path(&id);
        if path.exists() {
            return Ok(id);
        }
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).map_err(|_| StoreError::Corrupt("the system random source failed".into()))?;
        let mut sealed = plaintext.to_vec();
        self.keys
            .seal
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(id.as_bytes()), &mut sealed)
            .map_err(|_| StoreError::Corrupt("encryption failed".into()))?;
        let mut suffix = [0u8; 8];
        self.random.fill(&mut suffix).map_err(|_| StoreError::Corrupt("the system random source failed".into()))?;
        let tmp = self.root.join("tmp").join(format!("{}.tmp", hex::encode(suffix)));
        let dir = path.parent().expect("blob paths have a parent");
        let written = (|| {
            let mut file = File::create(&tmp)?;
            file.write_all(MAGIC)?;
            file.write_all(&nonce)?;
            file.write_all(&sealed)?;
            file.sync_all()?;
            std::fs::create_dir_all(dir)?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(StoreError::io(&path, e));
        }
        sync_dir(dir)?;
        Ok(id)
    }

    /// The plaintext of blob `id`, or an error if it is missing or fails authentication.
    pub fn get(&self, id: &str) -> Result<Vec<u8>, StoreError> {
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::NotFound(format!("blob `{id}`")));
        }
        let path = self.path(id);
        let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::NotFound(format!("blob {id}")),
            _ => StoreError::io(&path, e),
        })?;
        let tampered = || StoreError::Tampered(path.display().to_string());
        if bytes.len() < MAGIC.len() + NONCE_LEN || &bytes[..MAGIC.len()] != MAGIC {
            return Err(tampered());
        }
        let nonce: [u8; NONCE_LEN] = bytes[MAGIC.len()..MAGIC.len() + NONCE_LEN].try_into().expect("sliced to length");
        let mut sealed = bytes[MAGIC.len() + NONCE_LEN..].to_vec();
        let plain = self
            .keys
            .seal
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(id.as_bytes()), &mut sealed)
            .map_err(|_| tampered())?;
        Ok(plain.to_vec())
    }

    /// Removes blob `id` (no error if it is already gone).
    pub fn remove(&self, id: &str) -> Result<(), StoreError> {
        let path = self.path(id);
        match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(path.parent().expect("blob paths have a parent")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    /// Every blob id on disk.
    pub fn ids(&self) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        let io = |e| StoreError::io(&self.root, e);
        for shard in std::fs::read_dir(&self.root).map_err(io)? {
            let shard = shard.map_err(io)?;
            let name = shard.file_name().to_string_lossy().into_owned();
            if name.len() != 2 || !shard.path().is_dir() {
                continue;
            }
            for blob in std::fs::read_dir(shard.path()).map_err(io)? {
                ids.push(blob.map_err(io)?.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(ids)
    }

    /// Temporary files a crash left behind (or a write in flight), removed if `remove`;
    /// returns how many.
    pub fn sweep_temporaries(&self, remove: bool) -> Result<usize, StoreError> {
        let tmp = self.root.join("tmp");
        let mut found = 0;
        for entry in std::fs::read_dir(&tmp).map_err(|e| StoreError::io(&tmp, e))? {
            let path = entry.map_err(|e| StoreError::io(&tmp, e))?.path();
            if remove {
                std::fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
            }
            found += 1;
        }
        Ok(found)
    }

    /// Bytes on disk under the blob directory.
    pub fn disk_bytes(&self) -> u64 {
        fn walk(dir: &Path) -> u64 {
            std::fs::read_dir(dir).into_iter().flatten().flatten().fold(0, |sum, e| match e.metadata() {
                Ok(m) if m.is_dir() => sum + walk(&e.path()),
                Ok(m) => sum + m.len(),
                Err(_) => sum,
            })
        }
        walk(&self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs(dir: &Path) -> Blobs {
        Blobs::open(dir.join("blobs"), Keys::load_or_create(dir).unwrap()).unwrap()
    }

    #[test]
    fn a_blob_round_trips_and_its_file_holds_no_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let b = blobs(dir.path());
        let id = b.put(b"the anonymized jpeg bytes").unwrap();
        assert_eq!(b.get(&id).unwrap(), b"the anonymized jpeg bytes");
        let raw = std::fs::read(b.path(&id)).unwrap();
        assert!(!raw.windows(9).any(|w| w == b"anonymized"));
        assert_eq!(b.put(b"the anonymized jpeg bytes").unwrap(), id, "content-addressed");
        assert_eq!(b.ids().unwrap(), [id]);
    }

    #[test]
    fn a_flipped_byte_is_an_error_not_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let b = blobs(dir.path());
        let id = b.put(&[7u8; 1000]).unwrap();
        let path = b.path(&id);
        let mut raw = std::fs::read(&path).unwrap();
        raw[500] ^= 0x01;
        std::fs::write(&path, &raw).unwrap();
        assert!(matches!(b.get(&id), Err(StoreError::Tampered(_))));
        // Truncated, or moved to another name, also fails.
        std::fs::write(&path, &raw[..10]).unwrap();
        assert!(matches!(b.get(&id), Err(StoreError::Tampered(_))));
    }

    #[test]
    fn names_depend_on_the_device_key() {
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        assert_ne!(blobs(one.path()).id_of(b"same"), blobs(two.path()).id_of(b"same"));
    }

    #[test]
    fn the_sweep_removes_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let b = blobs(dir.path());
        std::fs::write(dir.path().join("blobs/tmp/abandoned.tmp"), b"half").unwrap();
        assert_eq!(b.sweep_temporaries(false).unwrap(), 1, "only counted");
        assert_eq!(b.sweep_temporaries(true).unwrap(), 1);
        assert_eq!(b.sweep_temporaries(true).unwrap(), 0);
    }
}
