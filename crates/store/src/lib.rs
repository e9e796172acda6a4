//! The store: one SQLite database (WAL, `synchronous=FULL`, `secure_delete`) for frames,
//! detections, annotations, consent, users, the audit log and the sync outbox, and a
//! directory of encrypted, content-addressed blobs for the pixels.
//!
//! Invariant: the only crate that links SQLite. It takes pixels only as
//! `anonymize::AnonymizedFrame`, so nothing un-redacted can be stored; every change to
//! personal data is audited in the same transaction that makes it.

mod annotations;
mod audit;
mod blobs;
mod checkpoint;
mod consent;
mod files;
mod frames;
mod hub_db;
mod ids;
mod keys;
mod migrations;
mod outbox;
mod retention;
mod tombstones;
mod users;
mod work;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::Connection;

pub use annotations::{Annotation, Conflict};
pub use audit::{AuditEntry, AuditHead, ChainBreak};
pub use consent::{Consent, NewConsent, Purpose, Scope};
pub use frames::{
    Detection, Erased, FrameFilter, FrameRow, FrameStatus, IN_FLIGHT_MS, NoConsent, Source, Stored, Usage,
};
pub use hub_db::{HUB_DATABASE_FILE, HUB_SCHEMA_VERSION, HUB_STORE_DIR, HubDb};
pub use ids::{ConsentId, DeviceId, FleetId, FrameId};
pub use migrations::SCHEMA_VERSION;
pub use outbox::{BatchLimits, BatchState, OutgoingBatch, PendingErasure, SyncBacklog, SyncRules};
pub use retention::{OnCritical, Retention, RetentionOutcome, RetentionReport, TOMBSTONE_KEEP_DAYS};
pub use tombstones::Tombstone;
pub use users::{Accounts, Failures, Role, Session, User};
pub use work::{Decision, Label, LabelAttribute, LabelExample, MAX_INSTRUCTIONS, Queue, Review};

pub const DATABASE_FILE: &str = "obscura.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("blob {0} failed authentication: it was altered or corrupted on disk; the frame cannot be shown")]
    Tampered(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Corrupt(String),
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    fn io(path: &Path, source: std::io::Error) -> StoreError {
        StoreError::Io { path: path.to_owned(), source }
    }
}

/// SHA-256 of `bytes`, hex: for evidence files and export manifests.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

static CORRUPT_READS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Rows read that held malformed JSON, since the process started: each was an error to
/// its caller, never a silent `null` (for `/metrics`).
pub fn corrupt_reads() -> u64 {
    CORRUPT_READS.load(std::sync::atomic::Ordering::Relaxed)
}

pub(crate) fn count_corrupt() {
    CORRUPT_READS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Column `i` of `row`, a JSON text: malformed JSON is an error (counted and logged),
/// never `null`, so a corrupt row cannot quietly widen or empty what reads it.
pub(crate) fn json_column(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<serde_json::Value> {
    let text: String = row.get(i)?;
    serde_json::from_str(&text).map_err(|e| {
        count_corrupt();
        let column = row.as_ref().column_name(i).unwrap_or("?").to_owned();
        tracing::error!(target: "obscura::store", %column, error = %e, "malformed JSON in the database; run `obscura store check`");
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, format!("malformed JSON in column `{column}`: {e}").into())
    })
}

/// Where "now" comes from: the wall clock, or a test's.
pub trait Clock: Send + Sync {
    /// Unix milliseconds.
    fn now_ms(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        frame::now_unix_ms()
    }
}

/// What the start-up sweep found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Sweep {
    /// Temporary blob files a crash left, removed.
    pub temporaries: usize,
    /// Blobs no frame refers to (written before a crash, never committed), removed.
    pub orphan_blobs: usize,
    /// Frame rows whose blob is missing: reported, never silently dropped.
    pub missing_blobs: Vec<FrameId>,
    /// Whether the temporaries and orphans were removed: not while another process
    /// (the daemon) has the store open, since they may be its write in flight.
    pub cleaned: bool,
}

/// What [`Store::check`] found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// "ok", or SQLite's findings.
    pub integrity: String,
    pub frames: u64,
    pub sweep: Sweep,
    /// Frames whose blob fails authentication.
    pub unreadable: Vec<i64>,
}

impl Check {
    pub fn is_ok(&self) -> bool {
        self.integrity == "ok" && self.sweep.missing_blobs.is_empty() && self.unreadable.is_empty()
    }
}

/// Connections that only read, beside the one that writes (box and hub alike): in WAL
/// mode a read sees the last commit and neither waits for the writer nor holds it up.
pub(crate) struct Readers {
    conns: Vec<Mutex<Connection>>,
    next: std::sync::atomic::AtomicUsize,
}

impl Readers {
    /// Four: the API's reads are short, and the box has two to four cores.
    const COUNT: usize = 4;

    /// Opens them on the database at `path`, which the writer has opened (WAL) and
    /// migrated. Each is `query_only`: a write through one is an error.
    fn open(path: &Path) -> Result<Readers, StoreError> {
        let open = || -> Result<Mutex<Connection>, StoreError> {
            let conn = Connection::open(path)?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.execute_batch("PRAGMA query_only=ON; PRAGMA foreign_keys=ON;")?;
            conn.set_prepared_statement_cache_capacity(64);
            Ok(Mutex::new(conn))
        };
        Ok(Readers { conns: (0..Readers::COUNT).map(|_| open()).collect::<Result<_, _>>()?, next: Default::default() })
    }

    /// A free one if any, else the next in turn. Never held while the writing
    /// connection is taken, so the two cannot wait for each other.
    fn get(&self) -> MutexGuard<'_, Connection> {
        let first = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for i in 0..self.conns.len() {
            match self.conns[(first + i) % self.conns.len()].try_lock() {
                Ok(conn) => return conn,
                Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        self.conns[first % self.conns.len()].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every one, for a checkpoint that truncates the WAL: none of this process's reads
    /// then holds a snapshot that keeps erased pages in it. Taken after the writing
    /// connection (never the other way round), so it cannot deadlock with a read.
    fn all(&self) -> Vec<MutexGuard<'_, Connection>> {
        self.conns.iter().map(|c| c.lock().unwrap_or_else(|p| p.into_inner())).collect()
    }
}

/// An open store. Cheap to share behind `Arc`. One connection writes, serialised by a
/// mutex, which is all a box with one writer needs; the reads the API serves most (frame
/// lists, a frame, its annotations, sessions) go to a few connections of their own, so
/// they neither wait for a commit's fsync nor hold one up (WAL: a read sees the last
/// commit). Issue 20, item 3: with one connection, 50 tablets' reads queued behind every
/// save's commit.
pub struct Store {
    dir: PathBuf,
    /// Before `conn`, so they close first and the configured writer is the last
    /// connection (the one that folds the WAL in as it closes).
    readers: Readers,
    /// Before `conn` too: its connection closes with it.
    checkpoints: checkpoint::Checkpointer,
    conn: Mutex<Connection>,
    /// Annotation saves waiting for the writer, committed together (group commit).
    saves: Mutex<annotations::SaveQueue>,
    /// How often the writing connection was taken, for the tests that hold reads off it.
    #[cfg(test)]
    writes: std::sync::atomic::AtomicU64,
    /// How many transactions committed queued saves, for the group commit's test.
    #[cfg(test)]
    save_batches: std::sync::atomic::AtomicU64,
    blobs: blobs::Blobs,
    clock: Arc<dyn Clock>,
    device: DeviceId,
    /// Signs and checks the audit chain's head.
    anchor: ring::hmac::Key,
    lock: files::StoreLock,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl users::AccountTables for Store {
    fn tables(&self) -> MutexGuard<'_, Connection> {
        self.conn()
    }

    fn read_tables(&self) -> MutexGuard<'_, Connection> {
        self.reader()
    }

    fn clock_ms(&self) -> i64 {
        self.now()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`: the device key, the database
    /// (migrated to [`SCHEMA_VERSION`]) and the blob directory.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with_clock(dir, Arc::new(SystemClock))
    }

    pub fn open_with_clock(dir: &Path, clock: Arc<dyn Clock>) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let lock = files::StoreLock::shared(dir)?;
        let keys = keys::Keys::load_or_create(dir)?;
        let device = ids::load_or_create_device_id(dir)?;
        let anchor = keys.anchor.clone();
        let path = dir.join(DATABASE_FILE);
        let mut conn = Connection::open(&path)?;
        // The database holds metadata about people: owner-only, like the key (SQLite
        // gives its WAL the same mode).
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| StoreError::io(&path, e))?;
        }
        configure(&mut conn)?;
        audit::register(&conn, anchor.clone())?;
        let from: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        migrations::migrate(&mut conn)?;
        if (1..migrations::ANCHORED).contains(&from) {
            // The log was written before its head was anchored: anchor it as found.
            let tx = conn.transaction()?;
            if let Some(head) = audit::head(&tx)? {
                audit::anchor(&tx, head.seq, &head.hash)?;
                tracing::info!(target: "obscura::store", seq = head.seq, "the audit chain's head is now anchored");
            }
            tx.commit()?;
        }
        let blobs = blobs::Blobs::open(dir.join("blobs"), keys)?;
        let readers = Readers::open(&path)?;
        let checkpoints = checkpoint::Checkpointer::start(&path)?;
        Ok(Store {
            dir: dir.to_owned(),
            readers,
            checkpoints,
            conn: Mutex::new(conn),
            saves: Default::default(),
            #[cfg(test)]
            writes: Default::default(),
            #[cfg(test)]
            save_batches: Default::default(),
            blobs,
            clock,
            device,
            anchor,
            lock,
        })
    }

    /// This box's id among a fleet's (`device.id` in the state directory).
    pub fn device_id(&self) -> DeviceId {
        self.device
    }

    /// The audit chain's newest entry, if any: sync sends it with every receipt.
    pub fn audit_head(&self) -> Result<Option<AuditHead>, StoreError> {
        audit::head(&self.conn())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        #[cfg(test)]
        self.writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A reading connection ([`Readers`]).
    fn reader(&self) -> MutexGuard<'_, Connection> {
        self.readers.get()
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The store's clock (the system's, or a test's), Unix ms.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Removes what a crash left half-done and reports frames that lost their blob. Run
    /// at start-up. Removes nothing while another process has the store open (the
    /// daemon, while `obscura store check` runs): a temporary or unreferenced blob may
    /// then be its write in flight, so it is only counted.
    pub fn sweep(&self) -> Result<Sweep, StoreError> {
        self.lock.exclusive_if_alone(|alone| {
            // Rows first, then files: a blob is durable before its row commits, so a row
            // read here has its file on disk unless something is really wrong.
            let rows: Vec<(FrameId, String)> = {
                let conn = self.conn();
                let mut stmt = conn.prepare("SELECT id, blob_id FROM frames ORDER BY id")?;
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
            };
            let temporaries = self.blobs.sweep_temporaries(alone)?;
            let on_disk: std::collections::HashSet<String> = self.blobs.ids()?.into_iter().collect();
            let referenced: std::collections::HashSet<&str> = rows.iter().map(|(_, b)| b.as_str()).collect();
            let mut orphan_blobs = 0;
            for id in on_disk.iter().filter(|id| !referenced.contains(id.as_str())) {
                if alone {
                    // Not referenced now, even by a row committed since the read above.
                    if self.blob_referenced(id)? {
                        continue;
                    }
                    self.blobs.remove(id)?;
                }
                orphan_blobs += 1;
            }
            let mut missing_blobs = Vec::new();
            for (id, blob) in &rows {
                // An erasure since the read removes the row before the file.
                if !on_disk.contains(blob) && self.frame_exists(*id)? && !self.blobs.exists(blob) {
                    missing_blobs.push(*id);
                }
            }
            if !missing_blobs.is_empty() {
                tracing::error!(target: "obscura::store", frames = ?missing_blobs, "frame rows whose blob is missing");
            }
            Ok(Sweep { temporaries, orphan_blobs, missing_blobs, cleaned: alone })
        })
    }

    fn blob_referenced(&self, blob: &str) -> Result<bool, StoreError> {
        Ok(self.conn().query_row("SELECT EXISTS (SELECT 1 FROM frames WHERE blob_id = ?1)", [blob], |r| r.get(0))?)
    }

    fn frame_exists(&self, id: FrameId) -> Result<bool, StoreError> {
        Ok(self.conn().query_row("SELECT EXISTS (SELECT 1 FROM frames WHERE id = ?1)", [id], |r| r.get(0))?)
    }

    /// A full check: SQLite's integrity check, the start-up sweep, and every frame's blob
    /// read and authenticated.
    pub fn check(&self) -> Result<Check, StoreError> {
        let integrity = self.integrity_check()?;
        let sweep = self.sweep()?;
        let blobs: Vec<(i64, String)> = {
            let conn = self.conn();
            let mut stmt = conn.prepare("SELECT id, blob_id FROM frames ORDER BY id")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
        };
        let mut unreadable = Vec::new();
        for (id, blob) in &blobs {
            match self.blobs.get(blob) {
                Ok(_) => {}
                // Erased since the list was read.
                Err(StoreError::NotFound(_)) => {}
                Err(_) => unreadable.push(*id),
            }
        }
        Ok(Check { integrity, frames: blobs.len() as u64, sweep, unreadable })
    }

    /// Appends to the audit log in its own transaction.
    pub fn audit(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        detail: serde_json::Value,
    ) -> Result<i64, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let seq = audit::append(&tx, self.now(), actor, action, subject, &detail)?;
        tx.commit()?;
        Ok(seq)
    }

    /// Checks the whole audit chain and its signed head: the number of entries, or the
    /// first bad one (an end cut off included).
    pub fn verify_audit(&self) -> Result<Result<u64, ChainBreak>, StoreError> {
        audit::verify(&self.conn(), &self.anchor)
    }

    /// `PRAGMA integrity_check`: "ok", or SQLite's findings.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("PRAGMA integrity_check")?;
        let lines: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        Ok(lines.join("\n"))
    }

    /// Folds the WAL into the database and truncates it, so deleted pages are gone
    /// from both files (with `secure_delete`, zeroed).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.checkpoints.truncate(&self.conn(), &self.readers)
    }
}

/// The pragmas every connection needs: durability first.
fn configure(conn: &mut Connection) -> Result<(), StoreError> {
    // First: switching to WAL needs the database to itself, so it waits for others too.
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Writers take the write lock when their transaction begins. A transaction that read
    // first and then wrote would be refused at once ("database is locked") whenever
    // another process (the CLI beside the daemon) wrote in between; begun this way it
    // waits its turn instead.
    conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Config(format!(
            "the database refused WAL mode ({mode}); put the state directory on a local filesystem"
        )));
    }
    // A small WAL, checkpointed often (in the background, `checkpoint`; the writer's own
    // automatic checkpoint is the backstop) and truncated after: on a nearly full card
    // the WAL is what a deletion needs room for.
    conn.execute_batch(&format!(
        "PRAGMA synchronous=FULL; PRAGMA secure_delete=ON; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000;
         PRAGMA wal_autocheckpoint={}; PRAGMA journal_size_limit=2097152;",
        checkpoint::BACKSTOP_PAGES
    ))?;
    // The hot paths (a save, its audit entry, a session's check) keep their statements
    // parsed; SQLite's parse of each was a share of every save's hold of the writer.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_is_durable_and_private_by_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let conn = store.conn();
        let get = |pragma: &str| conn.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get::<_, i64>(0)).unwrap();
        assert_eq!(conn.query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0)).unwrap(), "wal");
        assert_eq!(get("synchronous"), 2, "FULL");
        assert_eq!(get("secure_delete"), 1);
        assert_eq!(get("foreign_keys"), 1);
        assert_eq!(get("busy_timeout"), 5000);
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join(DATABASE_FILE)), 0o600);
        assert_eq!(mode(&dir.path().join("blobs")), 0o700);
    }

    /// Issue 20, item 3: the WAL is folded into the database by a thread of its own, not
    /// by a commit on the writer (which held every save queued behind it); and an
    /// erasure's truncating checkpoint is never the one refused because that thread's
    /// was running.
    #[test]
    fn r20_3_checkpoints_run_beside_the_writer_and_never_refuse_an_erasures() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let backstop: u32 = store.conn().query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0)).unwrap();
        assert_eq!(backstop, checkpoint::BACKSTOP_PAGES, "the writer's own checkpoint is only the backstop");
        let marker = "a basis written once, 7d1f0c";
        consent_to_annotate_on(&store, marker);
        // A few pages, far below the backstop: only the thread folds them in.
        let db = dir.path().join(DATABASE_FILE);
        let in_file = || std::fs::read(&db).unwrap().windows(marker.len()).any(|w| w == marker.as_bytes());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !in_file() {
            assert!(std::time::Instant::now() < deadline, "the commit never reached the database file");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // Each round leaves a WAL of a thousand pages (the thread's checkpoint of it takes
        // a while), then truncates at a moment that falls inside that checkpoint about
        // one round in eight: SQLite refuses a checkpoint while another runs.
        let wal = dir.path().join(format!("{DATABASE_FILE}-wal"));
        store.conn().execute_batch("CREATE TABLE ballast (x BLOB)").unwrap();
        for round in 0..40 {
            store
                .conn()
                .execute_batch(
                    "DELETE FROM ballast;
                     WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
                     INSERT INTO ballast SELECT randomblob(4000) FROM n;",
                )
                .unwrap();
            yard_frames(&store, 1);
            std::thread::sleep(std::time::Duration::from_millis(round * 37 % 250));
            store.checkpoint().unwrap();
            assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0, "round {round}: the WAL was not truncated");
        }
    }

    /// A consent to annotate everything the box captures, from the start.
    fn consent_to_annotate(store: &Store) {
        consent_to_annotate_on(store, "test");
    }

    /// The same, on the legal basis given.
    fn consent_to_annotate_on(store: &Store, legal_basis: &str) {
        store
            .add_consent(NewConsent {
                scope: Scope::Device,
                covered: "test".into(),
                legal_basis: legal_basis.into(),
                purposes: vec![Purpose::Annotate],
                valid_from: 0,
                valid_until: None,
                evidence_sha256: None,
                recorded_by: "test".into(),
            })
            .unwrap();
    }

    /// `count` frames of the camera `yard`, stored one a transaction.
    fn yard_frames(store: &Store, count: u64) -> Vec<FrameId> {
        let anonymizer = anonymize::Anonymizer::new(Vec::new(), anonymize::Settings::default());
        (0..count)
            .map(|seq| {
                let meta = frame::FrameMeta {
                    camera: Arc::from("yard"),
                    seq,
                    monotonic: std::time::Instant::now(),
                    wall: std::time::SystemTime::now(),
                    media_time: None,
                };
                let raw = frame::RawFrame::new(meta, 64, 48, vec![128; 64 * 48 * 3]).unwrap();
                let frame = anonymizer.anonymize(raw, None).unwrap();
                match store.put_frames(&[(&frame, serde_json::json!({}))], NoConsent::Drop).unwrap()[0] {
                    Stored::Kept { id, .. } => id,
                    _ => panic!("not kept"),
                }
            })
            .collect()
    }

    /// Issue 20, item 3: saves that queue while the writer is busy commit together, each
    /// in a savepoint of its own: one conflicting or invalid save is answered as such and
    /// the others land, every one with its own answer, and the audit chain holds.
    #[test]
    fn r20_3_saves_queued_behind_the_writer_commit_together_each_with_its_own_answer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        consent_to_annotate(&store);
        let ids = yard_frames(&store, 8);
        // The writer is held while 25 saves queue: three tablets on each frame from
        // version 0, and one shape outside its frame.
        let held = store.conn();
        let threads: Vec<_> = (0..25)
            .map(|i| {
                let (store, frame) = (store.clone(), ids[i % ids.len()]);
                std::thread::spawn(move || {
                    let points = if i == 24 { [1, 1, 900, 9] } else { [1, 1, 9, 9] };
                    let shapes = serde_json::json!([{ "type": "box", "label": "person", "points": points }]);
                    (frame, store.save_annotation(frame, 0, &shapes, &format!("tablet-{i}")))
                })
            })
            .collect();
        while store.saves.lock().unwrap().waiting.len() < 25 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop(held);
        let answers: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let saved = answers.iter().filter(|(_, a)| matches!(a, Ok(Ok(1)))).count();
        let conflicts = answers.iter().filter(|(_, a)| matches!(a, Ok(Err(c)) if c.current == 1)).count();
        let invalid = answers.iter().filter(|(_, a)| matches!(a, Err(StoreError::Invalid(_)))).count();
        assert_eq!((saved, conflicts, invalid), (8, 16, 1), "{answers:?}");
        for id in &ids {
            assert_eq!(store.annotation(*id).unwrap().unwrap().version, 1);
        }
        assert!(store.verify_audit().unwrap().is_ok());
        assert!(store.saves.lock().unwrap().waiting.is_empty());
        assert_eq!(store.save_batches.load(std::sync::atomic::Ordering::Relaxed), 1, "one commit for all 25");
    }

    /// The lead passes from save to save: sixteen tablets saving twenty versions each,
    /// while another writer takes the store now and then, all get their own answer (no
    /// save is left waiting for a lead nobody holds) and every version lands once.
    #[test]
    fn r20_3_under_a_storm_of_saves_each_is_answered_and_lands_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        consent_to_annotate(&store);
        let ids = yard_frames(&store, 16);
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let other = {
            let (store, done) = (store.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let _held = store.conn();
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            })
        };
        let tablets: Vec<_> = ids
            .iter()
            .map(|&frame| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let shapes = serde_json::json!([{ "type": "box", "label": "person", "points": [1, 1, 9, 9] }]);
                    (0..20)
                        .map(|base| store.save_annotation(frame, base, &shapes, "tablet").unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for tablet in tablets {
            assert_eq!(tablet.join().unwrap(), (1..=20).map(Ok).collect::<Vec<_>>());
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        other.join().unwrap();
        for id in &ids {
            assert_eq!(store.annotation(*id).unwrap().unwrap().version, 20);
        }
        let queue = store.saves.lock().unwrap();
        assert!(queue.waiting.is_empty());
        drop(queue);
        assert!(store.verify_audit().unwrap().is_ok());
    }

    /// Issue 20, item 3: with one connection, every read the tablets make (lists, a
    /// frame, its annotations, the session each request carries) waited for whatever held
    /// it, a save's fsync or the capture's batch. They go to the readers now: none takes
    /// the writing connection, and one runs while a write transaction is open.
    #[test]
    fn r20_3_the_api_reads_never_take_the_writing_connection() {
        use std::sync::atomic::Ordering::Relaxed;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        consent_to_annotate(&store);
        let meta = frame::FrameMeta {
            camera: Arc::from("yard"),
            seq: 0,
            monotonic: std::time::Instant::now(),
            wall: std::time::SystemTime::now(),
            media_time: None,
        };
        let raw = frame::RawFrame::new(meta, 64, 48, vec![128; 64 * 48 * 3]).unwrap();
        let anonymized =
            anonymize::Anonymizer::new(Vec::new(), anonymize::Settings::default()).anonymize(raw, None).unwrap();
        let Stored::Kept { id, .. } =
            store.put_frames(&[(&anonymized, serde_json::json!({}))], NoConsent::Drop).unwrap()[0]
        else {
            panic!("not kept")
        };
        let shapes = serde_json::json!([{ "type": "box", "label": "person", "points": [1, 1, 9, 9] }]);
        assert_eq!(store.save_annotation(id, 0, &shapes, "ann").unwrap(), Ok(1));
        let user = store.add_user("ann", Role::Annotator, "hash", "test").unwrap();
        store.create_session("abc", user.id, "csrf", "127.0.0.1").unwrap();

        let writes = store.writes.load(Relaxed);
        let filter = FrameFilter { purpose: Some(Purpose::Annotate), limit: Some(48), ..Default::default() };
        assert_eq!(store.frames(&filter).unwrap().len(), 1);
        assert_eq!(store.frames(&FrameFilter { after: Some(id), ..filter }).unwrap().len(), 0);
        assert_eq!(store.frame(id).unwrap().id, id);
        assert!(store.usable(id, Purpose::Annotate).unwrap());
        assert_eq!(store.annotation(id).unwrap().unwrap().version, 1);
        assert!(store.detections(id).unwrap().is_empty());
        assert!(store.reviews(id).unwrap().is_empty());
        assert!(store.label_names().unwrap().is_empty());
        assert!(store.labels().unwrap().is_empty());
        assert!(store.queues().unwrap().iter().all(|q| q.counts.values().sum::<u64>() == 1));
        assert!(store.camera_consented("yard", Purpose::Annotate, store.now_ms()).unwrap());
        assert_eq!(store.session("abc", 60_000, 3_600_000).unwrap().unwrap().user.name, "ann");
        // And what the daemon's stages poll for the status page, every second or so.
        assert_eq!(store.sync_backlog(SyncRules { require_review: false }).unwrap().frames, 0);
        assert_eq!(store.frame_count().unwrap(), 1);
        assert_eq!(store.usage().unwrap().frames, 1);
        assert_eq!(store.awaiting_prelabel(8, &[]).unwrap(), vec![id]);
        assert_eq!(store.prelabel_backlog(&["yard".into()]).unwrap(), 1);
        assert_eq!(store.writes.load(Relaxed), writes, "a read took the writing connection");

        // A read beside an open write transaction sees the last commit, and does not wait.
        let mut writer = store.conn();
        let tx = writer.transaction().unwrap();
        tx.execute("UPDATE annotations SET author = 'uncommitted' WHERE frame_id = ?1", [id]).unwrap();
        assert_eq!(store.annotation(id).unwrap().unwrap().author, "ann");
        drop(tx);
        drop(writer);
        // And a reader cannot write.
        let refused = store.reader().execute("DELETE FROM annotations", []).unwrap_err();
        assert!(refused.to_string().contains("readonly"), "{refused}");
    }

    /// Every stored batch summarizes each camera's frames past its last summary, on the
    /// writer. That must cost the camera's unsummarized frames alone, not every frame any
    /// camera stored since: on 100k frames, a new camera's batches held the writer 60 to
    /// 240 ms each, and the saves queued behind them.
    #[test]
    fn r20_3_the_capture_summary_reads_only_the_cameras_unsummarized_frames() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        consent_to_annotate(&store);
        let anonymizer = anonymize::Anonymizer::new(Vec::new(), anonymize::Settings::default());
        // An hour ago, on a minute's start: 500 frames, two a second, are five minutes.
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let long_ago = std::time::UNIX_EPOCH + std::time::Duration::from_millis(now_ms - now_ms % 60_000 - 3_600_000);
        let frames: Vec<_> = (0..500)
            .map(|seq| {
                let meta = frame::FrameMeta {
                    camera: Arc::from("yard"),
                    seq,
                    monotonic: std::time::Instant::now(),
                    wall: long_ago + std::time::Duration::from_millis(seq * 500),
                    media_time: None,
                };
                anonymizer.anonymize(frame::RawFrame::new(meta, 16, 16, vec![128; 16 * 16 * 3]).unwrap(), None).unwrap()
            })
            .collect();
        let batch: Vec<_> = frames.iter().map(|f| (f, serde_json::json!({}))).collect();
        store.put_frames(&batch, NoConsent::Drop).unwrap();

        // A camera with nothing summarized yet (the yard's 500 frames all are) ...
        let conn = store.conn();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", frames::UNSUMMARIZED))
            .unwrap()
            .query_map(rusqlite::params!["gate", 0, i64::MAX], |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter().any(|step| step.contains("USING INDEX frames_by_camera (camera_id=? AND rowid>?)")),
            "{plan:?}"
        );
        // ... steps through none of the yard's.
        let mut stmt = conn.prepare(frames::UNSUMMARIZED).unwrap();
        assert_eq!(stmt.query_map(rusqlite::params!["gate", 0, i64::MAX], |_| Ok(())).unwrap().count(), 0);
        let steps = stmt.get_status(rusqlite::StatementStatus::VmStep);
        assert!(steps < 100, "{steps} steps of the virtual machine for no frame");
        drop(stmt);
        drop(conn);
        let summaries = store.audit_entries("camera/yard").unwrap();
        assert_eq!(summaries.iter().filter(|e| e.action == "capture.summary").count(), 5, "minutes of 120 frames");
    }

    #[test]
    fn the_audit_chain_catches_an_edited_a_removed_and_a_reordered_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for i in 0..5 {
            store.audit("tester", "note", &format!("thing/{i}"), serde_json::json!({ "i": i })).unwrap();
        }
        assert_eq!(store.verify_audit().unwrap(), Ok(5));
        // The triggers refuse edits through SQL.
        let refused = store.conn().execute("UPDATE audit_log SET actor = 'x' WHERE seq = 2", []).unwrap_err();
        assert!(refused.to_string().contains("append-only"), "{refused}");

        let tamper = |sql: &str| {
            let conn = store.conn();
            conn.execute_batch(&format!(
                "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete; {sql};
                 CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
                 CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;"
            ))
            .unwrap();
        };
        tamper("UPDATE audit_log SET detail = '{\"i\":99}' WHERE seq = 3");
        let broken = store.verify_audit().unwrap().unwrap_err();
        assert_eq!(broken.seq, 3);
        assert!(broken.problem.contains("edited"), "{broken}");

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for i in 0..5 {
            store.audit("tester", "note", &format!("thing/{i}"), serde_json::json!({ "i": i })).unwrap();
        }
        let conn = store.conn();
        conn.execute_batch("DROP TRIGGER audit_log_no_delete; DELETE FROM audit_log WHERE seq = 4;").unwrap();
        drop(conn);
        let broken = store.verify_audit().unwrap().unwrap_err();
        assert_eq!(broken.seq, 4, "{broken}");
        assert!(broken.problem.contains("removed"), "{broken}");

        // Swap two entries' contents (seq kept): the chain no longer follows.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for i in 0..4 {
            store.audit("tester", "note", &format!("thing/{i}"), serde_json::json!({ "i": i })).unwrap();
        }
        let conn = store.conn();
        conn.execute_batch(
            "DROP TRIGGER audit_log_no_update;
             UPDATE audit_log SET seq = 100 WHERE seq = 2; UPDATE audit_log SET seq = 2 WHERE seq = 3;
             UPDATE audit_log SET seq = 3 WHERE seq = 100;",
        )
        .unwrap();
        drop(conn);
        let broken = store.verify_audit().unwrap().unwrap_err();
        assert_eq!(broken.seq, 2, "{broken}");
    }
}
