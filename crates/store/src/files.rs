//! File-system helpers the store's files share: durable directory updates and the lock
//! that keeps a clean-up from racing a writer in another process.

use std::fs::File;
use std::path::Path;

use crate::StoreError;

/// fsyncs a directory, so a rename or new file in it survives power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StoreError::io(dir, e))
}

pub const LOCK_FILE: &str = "store.lock";

/// `store.lock` in the state directory. Every process with the store open holds a
/// shared `flock` on it for as long as it is open; what removes files nobody refers to
/// (the sweep's temporaries and orphan blobs, which may be another process's write in
/// flight) needs it exclusive, and only reports them when another process holds it.
#[derive(Debug)]
pub(crate) struct StoreLock {
    file: File,
}

impl StoreLock {
    /// Takes the shared lock, waiting only while another process sweeps.
    pub fn shared(dir: &Path) -> Result<StoreLock, StoreError> {
        let path = dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockShared)
            .map_err(|e| StoreError::io(&path, e.into()))?;
        Ok(StoreLock { file })
    }

    /// Runs `f` with the lock exclusive if no other process holds it (`f(true)`), else
    /// with it shared (`f(false)`). The lock is shared again afterwards either way.
    pub fn exclusive_if_alone<T>(&self, f: impl FnOnce(bool) -> T) -> T {
        use rustix::fs::{FlockOperation, flock};
        // Converting a flock is not atomic (Linux drops the shared lock before trying),
        // so on failure it is taken shared again below.
        let alone = flock(&self.file, FlockOperation::NonBlockingLockExclusive).is_ok();
        let out = f(alone);
        if let Err(e) = flock(&self.file, FlockOperation::LockShared) {
            tracing::error!(target: "obscura::store", error = %e, "cannot take the store lock shared again");
        }
        out
    }
}
