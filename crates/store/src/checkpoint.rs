//! Checkpoints off the writer's path (box and hub alike).
//!
//! SQLite's own automatic checkpoint runs inside the commit that crosses its threshold,
//! on the writing connection: that commit, and every save or batch queued behind the
//! writer's mutex, waits while pages are copied into the database and it is fsync'd.
//! Under 50 tablets' autosaves that was a checkpoint every fraction of a second, each a
//! stall of the one writer (issue 20, item 3). Here a thread with a connection of its
//! own folds the WAL in (`PASSIVE`: it never waits for, nor holds up, a reader or the
//! writer), a few times a second. The writer keeps SQLite's automatic checkpoint only as
//! a backstop, at a threshold the thread keeps the WAL far below.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::Connection;

use crate::{Readers, StoreError};

/// The writer's own automatic checkpoint, in pages: reached only if this thread falls
/// behind or is gone (16 MiB of WAL).
pub(crate) const BACKSTOP_PAGES: u32 = 4096;

/// The background checkpoint of one database; stopped, and its connection closed, when
/// dropped.
pub(crate) struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    /// Held while a checkpoint runs, by this thread or by [`Checkpointer::truncate`]:
    /// SQLite refuses a second checkpoint while one runs, and an erasure's truncation
    /// must not be the one refused.
    running: Mutex<()>,
    stop: Mutex<bool>,
    wake: Condvar,
}

impl Checkpointer {
    /// How often the WAL is folded in: at a few hundred pages a second written under
    /// load, the WAL stays within a MiB or so.
    const EVERY: Duration = Duration::from_millis(250);

    /// Starts the thread on the database at `path`, which is open (WAL) and migrated.
    pub(crate) fn start(path: &Path) -> Result<Checkpointer, StoreError> {
        let conn = Connection::open(path)?;
        // The checkpoint's fsyncs follow its connection's setting: the database file is
        // synced before the WAL may be reused.
        conn.execute_batch("PRAGMA synchronous=FULL;")?;
        let shared = Arc::new(Shared { running: Mutex::new(()), stop: Mutex::new(false), wake: Condvar::new() });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("store-checkpoint".into())
                .spawn(move || run(&conn, &shared))
                .map_err(|e| StoreError::Config(format!("cannot start the store's checkpoint thread: {e}")))?
        };
        Ok(Checkpointer { shared, thread: Some(thread) })
    }

    fn running(&self) -> MutexGuard<'_, ()> {
        self.shared.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `PRAGMA wal_checkpoint(TRUNCATE)` on the writing connection, with this process's
    /// readers held so none of their snapshots keeps it from finishing, and the
    /// background checkpoint held off. A reader in another process (the CLI beside the
    /// daemon) still can: that is logged, and the next checkpoint folds the rest in.
    pub(crate) fn truncate(&self, writer: &Connection, readers: &Readers) -> Result<(), StoreError> {
        let _idle = readers.all();
        let _alone = self.running();
        let busy: i64 = writer.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy != 0 {
            tracing::warn!(target: "obscura::store", "the WAL was not truncated: another process was reading the database");
        }
        Ok(())
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        *self.shared.stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(conn: &Connection, shared: &Shared) {
    let mut failing = false;
    loop {
        {
            let stop = shared.stop.lock().unwrap_or_else(|p| p.into_inner());
            let (stop, _) = shared
                .wake
                .wait_timeout_while(stop, Checkpointer::EVERY, |stop| !*stop)
                .unwrap_or_else(|p| p.into_inner());
            if *stop {
                return;
            }
        }
        let _running = shared.running.lock().unwrap_or_else(|p| p.into_inner());
        // (busy, pages in the WAL, pages folded in); PASSIVE is never busy-waited.
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0)) {
            Ok(_) => failing = false,
            // Said once per failing spell (a full disk fails every tick); the writer's
            // backstop checkpoint still runs meanwhile.
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(target: "obscura::store", error = %e, "the background checkpoint failed; the writer's own takes over until it recovers");
            }
            Err(_) => {}
        }
    }
}
