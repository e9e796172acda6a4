//! The hub's storage on one machine: `hub::HubStore` over its own SQLite database and
//! blob directory, in `STATE_DIR/store/` of the hub (never a box's database). It reuses
//! the box's machinery: the same connection pragmas (WAL, `synchronous=FULL`,
//! `secure_delete`), the same encrypted, content-addressed blob files under a key made at
//! first start (`store/device.key`: the store's key file, named as on a box), and the
//! same hash-chained, anchored audit log, in its own tables.
//!
//! Blobs are named on the wire by their SHA-256; on disk by the HMAC of the blob
//! machinery, so a file name reveals nothing. A blob is stored once however many devices
//! send it, and is referenced by each device's upload and each frame naming it: it is
//! deleted, inside the transaction that drops its last reference, when none is left.
//! Pieces of an upload under way are blob files too (encrypted at rest like the rest),
//! joined and checked when the last arrives.
//!
//! Every write is one `BEGIN IMMEDIATE` transaction, so several hub processes can share
//! the database: races (a token used twice, a nonce seen twice, a batch committed
//! twice) are settled by SQLite.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use hub::{Appended, BlobInfo, DeviceRecord, HubStore, Presence, StorageError, StoreResult, Upload};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde_json::json;
use wire::mqtt::Telemetry;
use wire::v1::{AckResult, Command, CommandAck, CommandKind, Consent, DeviceState, Manifest};
use wire::{DeviceId, ReceiptKind};

use crate::StoreError;
use crate::audit::{self, ChainBreak};
use crate::blobs::Blobs;
use crate::keys::Keys;

/// The hub's database, in `STATE_DIR/store/`.
pub const HUB_DATABASE_FILE: &str = "hub.db";
/// The folder of the hub's state directory that holds its storage.
pub const HUB_STORE_DIR: &str = "store";

const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/hub/0001_hub.sql"),
    include_str!("../migrations/hub/0002_presence.sql"),
    include_str!("../migrations/hub/0003_accounts.sql"),
    include_str!("../migrations/hub/0004_frame_counts.sql"),
    include_str!("../migrations/hub/0005_blob_files.sql"),
];

/// The hub's schema version this build writes.
pub const HUB_SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Whether a blob file is still named, by a blob or an upload piece: two index lookups
/// (`blobs_by_file`, `upload_parts_blob`).
const NAMED: &str =
    "SELECT EXISTS (SELECT 1 FROM blobs WHERE blob_id = ?1) OR EXISTS (SELECT 1 FROM upload_parts WHERE blob_id = ?1)";

impl From<StoreError> for StorageError {
    fn from(e: StoreError) -> StorageError {
        StorageError(Box::new(e))
    }
}

/// An open hub store.
pub struct HubDb {
    dir: PathBuf,
    /// Before `conn`: closed first, as on a box.
    readers: crate::Readers,
    checkpoints: crate::checkpoint::Checkpointer,
    conn: Mutex<Connection>,
    /// How often the writing connection was taken, for the tests that hold reads off it.
    #[cfg(test)]
    writes: std::sync::atomic::AtomicU64,
    blobs: Blobs,
    anchor: ring::hmac::Key,
    /// Blob files the write under way has left unnamed: removed once it commits, so a
    /// transaction that fails (a full disk) never leaves rows naming a removed file.
    doomed: Mutex<Vec<String>>,
}

impl std::fmt::Debug for HubDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubDb").field("dir", &self.dir).finish_non_exhaustive()
    }
}

fn db_err(e: rusqlite::Error) -> StorageError {
    StoreError::from(e).into()
}

fn device_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRecord> {
    let (id, state): (String, String) = (r.get(0)?, r.get(3)?);
    let bad = |i, what: String| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, what.into());
    Ok(DeviceRecord {
        id: id.parse().map_err(|e: String| bad(0, e))?,
        public_key: r.get(1)?,
        hostname: r.get(2)?,
        state: DeviceState::parse(&state).ok_or_else(|| bad(3, format!("device state `{state}`")))?,
        enrolled_ms: r.get(4)?,
    })
}

fn upload_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Upload> {
    Ok(Upload { offset: r.get::<_, i64>(0)? as u64, length: r.get::<_, i64>(1)? as u64, complete: r.get(2)? })
}

/// The hub's people (dataset engineers, stewards, admins) have accounts as a box's do,
/// in the same tables, worked by the same code.
impl crate::users::AccountTables for HubDb {
    fn tables(&self) -> MutexGuard<'_, Connection> {
        self.conn()
    }

    fn read_tables(&self) -> MutexGuard<'_, Connection> {
        self.readers.get()
    }

    fn clock_ms(&self) -> i64 {
        frame::now_unix_ms()
    }
}

impl HubDb {
    /// Opens (creating if needed) the hub's storage under `state_dir`.
    pub fn open(state_dir: &Path) -> Result<HubDb, StoreError> {
        let dir = state_dir.join(HUB_STORE_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| StoreError::io(&dir, e))?;
        }
        let keys = Keys::load_or_create(&dir)?;
        let path = dir.join(HUB_DATABASE_FILE);
        let mut conn = Connection::open(&path)?;
        crate::configure(&mut conn)?;
        audit::register(&conn, keys.anchor.clone())?;
        migrate(&mut conn)?;
        let anchor = keys.anchor.clone();
        let blobs = Blobs::open(dir.join("blobs"), keys)?;
        let readers = crate::Readers::open(&path)?;
        let checkpoints = crate::checkpoint::Checkpointer::start(&path)?;
        Ok(HubDb {
            dir,
            readers,
            checkpoints,
            conn: Mutex::new(conn),
            #[cfg(test)]
            writes: Default::default(),
            blobs,
            anchor,
            doomed: Mutex::new(Vec::new()),
        })
    }

    /// Where the database and blobs are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        #[cfg(test)]
        self.writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `work` in one write transaction (taken at once, so writers queue rather
    /// than deadlock), committed when it returns Ok.
    fn write<T>(&self, work: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>) -> StoreResult<T> {
        let mut conn = self.conn();
        let doomed = || self.doomed.lock().unwrap_or_else(|p| p.into_inner());
        doomed().clear();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
        let committed = work(&tx).and_then(|out| tx.commit().map(|()| out).map_err(StoreError::from));
        let files = std::mem::take(&mut *doomed());
        let out = committed?;
        // Still under the connection's lock, so no other writer names them meanwhile.
        for blob_id in files {
            if let Err(e) = self.blobs.remove(&blob_id) {
                tracing::warn!(target: "obscura::store", blob = %blob_id, error = %e, "cannot remove a hub blob file no row names any more");
            }
        }
        Ok(out)
    }

    /// Runs `work` on a reading connection: it sees the last commit, and neither waits
    /// for a writer's fsync nor holds one up (issue 20, item 3).
    fn read<T>(&self, work: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        work(&self.readers.get()).map_err(db_err)
    }

    /// Checks the hub's audit chain and its signed head: the number of entries, or the
    /// first bad one.
    pub fn verify_audit(&self) -> Result<Result<u64, ChainBreak>, StoreError> {
        audit::verify(&self.conn(), &self.anchor)
    }

    /// The hub's audit entries whose action starts with `action`, oldest first.
    pub fn audit_actions(&self, action: &str) -> Result<Vec<crate::AuditEntry>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT seq, at, actor, action, subject, detail FROM audit_log WHERE action LIKE ?1 || '%' ESCAPE '\\' ORDER BY seq",
        )?;
        let rows = stmt.query_map([audit::like_literal(action)], |r| {
            Ok(crate::AuditEntry {
                seq: r.get(0)?,
                at: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                subject: r.get(4)?,
                detail: crate::json_column(r, 5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The consent record `id` of `device` as the hub holds it (the newest the device sent).
    pub fn consent(&self, device: DeviceId, id: &str) -> Result<Option<wire::v1::Consent>, StoreError> {
        let record: Option<String> = self
            .conn()
            .query_row(
                "SELECT record FROM consents WHERE device = ?1 AND id = ?2",
                params![device.to_string(), id],
                |r| r.get(0),
            )
            .optional()?;
        record
            .map(|r| serde_json::from_str(&r).map_err(|e| StoreError::Corrupt(format!("hub consent {id}: {e}"))))
            .transpose()
    }

    /// Blob files on disk (whole blobs and pieces of uploads under way).
    pub fn blob_files(&self) -> Result<usize, StoreError> {
        Ok(self.blobs.ids()?.len())
    }

    /// `PRAGMA integrity_check`: "ok", or SQLite's findings.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("PRAGMA integrity_check")?;
        let lines: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        Ok(lines.join("\n"))
    }

    /// Folds the WAL into the database and truncates it, so erased pages (zeroed by
    /// `secure_delete`) are gone from both files.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.checkpoints.truncate(&self.conn(), &self.readers)
    }

    /// Deletes `device`'s `frames` (rows, consent links) and their references to blobs:
    /// its upload goes with its last frame of the blob, and the blob (row and file) with
    /// the last reference of any device. Returns (frames deleted, blob files removed).
    fn drop_frames(&self, tx: &Transaction<'_>, device: &str, frames: &[i64]) -> Result<(usize, u64), StoreError> {
        let mut shas: Vec<String> = Vec::new();
        let mut erased = 0;
        for local in frames {
            let sha: Option<String> = tx
                .query_row("SELECT sha256 FROM frames WHERE device = ?1 AND local = ?2", params![device, local], |r| {
                    r.get(0)
                })
                .optional()?;
            if let Some(sha) = sha {
                erased += tx.execute("DELETE FROM frames WHERE device = ?1 AND local = ?2", params![device, local])?;
                if !shas.contains(&sha) {
                    shas.push(sha);
                }
            }
        }
        let mut blobs_removed = 0;
        for sha in &shas {
            blobs_removed += self.drop_unnamed_upload(tx, device, sha)?;
        }
        Ok((erased, blobs_removed))
    }

    /// Drops this device's upload of `sha` unless a frame of its own names it (an upload
    /// is a reference while one does), with the pieces of one still under way, then the
    /// blob if nothing refers to it any more.
    fn drop_unnamed_upload(&self, tx: &Transaction<'_>, device: &str, sha: &str) -> Result<u64, StoreError> {
        let parts: Vec<String> = {
            let mut stmt = tx.prepare(
                "SELECT p.blob_id FROM upload_parts p WHERE p.device = ?1 AND p.sha256 = ?2
                 AND NOT EXISTS (SELECT 1 FROM frames WHERE device = ?1 AND sha256 = ?2)",
            )?;
            stmt.query_map(params![device, sha], |r| r.get(0))?.collect::<Result<_, _>>()?
        };
        // Its pieces' rows go with it (ON DELETE CASCADE); their files after.
        tx.execute(
            "DELETE FROM uploads WHERE device = ?1 AND sha256 = ?2
             AND NOT EXISTS (SELECT 1 FROM frames WHERE device = ?1 AND sha256 = ?2)",
            params![device, sha],
        )?;
        for part in parts {
            self.drop_file_if_unnamed(tx, &part)?;
        }
        self.drop_blob_if_unreferenced(tx, sha)
    }

    /// Removes blob `sha` (row and file) once no frame and no upload refers to it; 1 when
    /// its file went.
    fn drop_blob_if_unreferenced(&self, tx: &Transaction<'_>, sha: &str) -> Result<u64, StoreError> {
        let unreferenced: bool = tx.query_row(
            "SELECT NOT EXISTS (SELECT 1 FROM frames WHERE sha256 = ?1) AND NOT EXISTS (SELECT 1 FROM uploads WHERE sha256 = ?1)",
            [sha],
            |r| r.get(0),
        )?;
        if !unreferenced {
            return Ok(0);
        }
        let blob_id: Option<String> =
            tx.query_row("SELECT blob_id FROM blobs WHERE sha256 = ?1", [sha], |r| r.get(0)).optional()?;
        tx.execute("DELETE FROM blobs WHERE sha256 = ?1", [sha])?;
        match blob_id {
            Some(blob_id) => Ok(u64::from(self.drop_file_if_unnamed(tx, &blob_id)?)),
            None => Ok(0),
        }
    }

    /// Marks blob file `blob_id` for removal once this write commits, unless a blob or an
    /// upload piece still names it. Inside the write transaction, so no other writer can
    /// name it meanwhile.
    fn drop_file_if_unnamed(&self, tx: &Transaction<'_>, blob_id: &str) -> Result<bool, StoreError> {
        let named: bool = tx.prepare_cached(NAMED)?.query_row([blob_id], |r| r.get(0))?;
        if !named {
            self.doomed.lock().unwrap_or_else(|p| p.into_inner()).push(blob_id.to_owned());
        }
        Ok(!named)
    }

    /// Commands not yet acknowledged, of one device or all, oldest first.
    fn unacked(&self, device: Option<DeviceId>) -> StoreResult<Vec<(DeviceId, Command)>> {
        type Row = (String, String, String, String, Option<String>, i64);
        let rows: Vec<Row> = self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT device, id, kind, frames, erase_window, created_ms FROM commands
                 WHERE acked_ms IS NULL AND (?1 IS NULL OR device = ?1) ORDER BY created_ms, id",
            )?;
            stmt.query_map([device.map(|d| d.to_string())], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
            })?
            .collect()
        })?;
        rows.into_iter()
            .map(|(device, id, kind, frames, window, created_ms)| {
                let corrupt =
                    |what: String| StorageError::from(StoreError::Corrupt(format!("hub command {id}: {what}")));
                let device: DeviceId = device.parse().map_err(|e| corrupt(format!("device: {e}")))?;
                let command = Command {
                    kind: CommandKind::parse(&kind).ok_or_else(|| corrupt(format!("kind `{kind}`")))?,
                    frames: serde_json::from_str(&frames).map_err(|e| corrupt(e.to_string()))?,
                    window: window
                        .map(|w| serde_json::from_str(&w))
                        .transpose()
                        .map_err(|e| corrupt(format!("its window: {e}")))?,
                    created_ms,
                    id,
                };
                Ok((device, command))
            })
            .collect()
    }

    fn stored_receipt(tx: &Connection, device: &str, kind: ReceiptKind, id: &str) -> rusqlite::Result<Option<String>> {
        tx.query_row(
            "SELECT receipt FROM receipts WHERE device = ?1 AND kind = ?2 AND id = ?3",
            params![device, kind.as_str(), id],
            |r| r.get(0),
        )
        .optional()
    }

    fn keep_receipt(
        tx: &Transaction<'_>,
        device: &str,
        kind: ReceiptKind,
        id: &str,
        receipt: &str,
        now_ms: i64,
    ) -> rusqlite::Result<()> {
        tx.execute(
            "INSERT INTO receipts (device, kind, id, receipt, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![device, kind.as_str(), id, receipt, now_ms],
        )?;
        Ok(())
    }
}

/// Applies the hub's migrations in order, each in its own transaction.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > HUB_SCHEMA_VERSION {
        return Err(StoreError::Config(format!(
            "the hub database is at schema version {current}, newer than this build's {HUB_SCHEMA_VERSION}; upgrade Obscura"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as u32 + 1)?;
        tx.commit()?;
        tracing::info!(target: "obscura::store", version = i + 1, "hub database schema migrated");
    }
    Ok(())
}

/// Upserts consent records of `device`; a withdrawal already recorded is kept.
fn upsert_consents(tx: &Transaction<'_>, device: &str, consents: &[Consent], now_ms: i64) -> Result<(), StoreError> {
    for consent in consents {
        let withdrawn: Option<Option<i64>> = tx
            .query_row(
                "SELECT withdrawn_at_ms FROM consents WHERE device = ?1 AND id = ?2",
                params![device, consent.id],
                |r| r.get(0),
            )
            .optional()?;
        let mut record = consent.clone();
        if let Some(Some(at)) = withdrawn {
            record.withdrawn_at_ms = Some(at);
        }
        let text = serde_json::to_string(&record).expect("a consent serialises");
        tx.execute(
            "INSERT INTO consents (device, id, record, withdrawn_at_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (device, id) DO UPDATE SET record = excluded.record, withdrawn_at_ms = excluded.withdrawn_at_ms,
             updated_ms = excluded.updated_ms",
            params![device, record.id, text, record.withdrawn_at_ms, now_ms],
        )?;
    }
    Ok(())
}

impl HubStore for HubDb {
    fn device(&self, id: DeviceId) -> StoreResult<Option<DeviceRecord>> {
        self.read(|c| {
            c.query_row(
                "SELECT id, public_key, hostname, state, enrolled_ms FROM devices WHERE id = ?1",
                [id.to_string()],
                device_row,
            )
            .optional()
        })
    }

    fn devices(&self) -> StoreResult<Vec<DeviceRecord>> {
        self.read(|c| {
            let mut stmt =
                c.prepare("SELECT id, public_key, hostname, state, enrolled_ms FROM devices ORDER BY enrolled_ms, id")?;
            stmt.query_map([], device_row)?.collect()
        })
    }

    fn enrol(&self, device: &DeviceRecord, token_hash: Option<&str>, now_ms: i64) -> StoreResult<DeviceRecord> {
        let id = device.id.to_string();
        self.write(|tx| {
            let existing = tx
                .query_row(
                    "SELECT id, public_key, hostname, state, enrolled_ms FROM devices WHERE id = ?1",
                    [&id],
                    device_row,
                )
                .optional()?;
            let use_token = |tx: &Transaction<'_>| -> rusqlite::Result<bool> {
                let Some(hash) = token_hash else { return Ok(false) };
                let used = tx.execute(
                    "UPDATE enrol_tokens SET used_by = ?1, used_ms = ?2 WHERE hash = ?3 AND used_by IS NULL",
                    params![id, now_ms, hash],
                )?;
                Ok(used == 1)
            };
            let actor = format!("device:{id}");
            let subject = format!("device/{id}");
            match existing {
                Some(mut known) => {
                    if known.state == DeviceState::Pending && known.public_key == device.public_key && use_token(tx)? {
                        tx.execute(
                            "UPDATE devices SET state = 'approved', decided_ms = ?1 WHERE id = ?2",
                            params![now_ms, id],
                        )?;
                        audit::append(tx, now_ms, &actor, "hub.device_approved", &subject, &json!({ "by": "token" }))?;
                        known.state = DeviceState::Approved;
                    }
                    Ok(known)
                }
                None => {
                    let state = if use_token(tx)? { DeviceState::Approved } else { DeviceState::Pending };
                    tx.execute(
                        "INSERT INTO devices (id, public_key, hostname, state, enrolled_ms, decided_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, CASE WHEN ?4 = 'approved' THEN ?5 END)",
                        params![id, device.public_key, device.hostname, state.as_str(), now_ms],
                    )?;
                    let detail = json!({ "state": state.as_str(), "hostname": device.hostname, "by_token": state == DeviceState::Approved });
                    audit::append(tx, now_ms, &actor, "hub.device_enrolled", &subject, &detail)?;
                    Ok(DeviceRecord { state, enrolled_ms: now_ms, ..device.clone() })
                }
            }
        })
    }

    fn set_state(&self, id: DeviceId, state: DeviceState, actor: &str, now_ms: i64) -> StoreResult<bool> {
        let id = id.to_string();
        self.write(|tx| {
            let changed = tx.execute(
                "UPDATE devices SET state = ?1, decided_ms = ?2 WHERE id = ?3",
                params![state.as_str(), now_ms, id],
            )?;
            if changed == 1 {
                let action = format!("hub.device_{}", state.as_str());
                audit::append(tx, now_ms, actor, &action, &format!("device/{id}"), &json!({}))?;
            }
            Ok(changed == 1)
        })
    }

    fn add_token(&self, token_hash: &str, actor: &str, now_ms: i64) -> StoreResult<()> {
        self.write(|tx| {
            tx.execute("INSERT INTO enrol_tokens (hash, created_ms) VALUES (?1, ?2)", params![token_hash, now_ms])?;
            audit::append(tx, now_ms, actor, "hub.token_made", "token", &json!({}))?;
            Ok(())
        })
    }

    fn remember_nonce(&self, device: DeviceId, nonce: &str, now_ms: i64, keep_until_ms: i64) -> StoreResult<bool> {
        // Every signed request commits its nonce before anything else, and that commit
        // was an fsync of its own: half of the ingest's (issue 20, item 3). It is now
        // written without one (`synchronous=NORMAL` for this transaction alone). In WAL
        // mode it still survives the hub's process dying, and the commit that makes the
        // request's own effect durable (a piece, a batch: `FULL`) syncs it with that
        // effect, since it comes after it in the WAL. Only a request that changed nothing
        // (a `HEAD`, a refusal) can lose its nonce, and only to a power cut; replayed,
        // it changes nothing either.
        let mut conn = self.conn();
        conn.execute_batch("PRAGMA synchronous=NORMAL").map_err(db_err)?;
        let added = (|| -> rusqlite::Result<bool> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.prepare_cached("DELETE FROM nonces WHERE expires_ms < ?1")?.execute([now_ms])?;
            let added = tx
                .prepare_cached("INSERT OR IGNORE INTO nonces (device, nonce, expires_ms) VALUES (?1, ?2, ?3)")?
                .execute(params![device.to_string(), nonce, keep_until_ms])?;
            tx.commit()?;
            Ok(added == 1)
        })();
        // Back to FULL whatever happened: every other write is fsync'd.
        let restored = conn.execute_batch("PRAGMA synchronous=FULL");
        let added = added.map_err(db_err)?;
        restored.map_err(db_err)?;
        Ok(added)
    }

    fn upload(&self, device: DeviceId, sha256: &str) -> StoreResult<Option<Upload>> {
        self.read(|c| {
            c.query_row(
                "SELECT received, length, complete FROM uploads WHERE device = ?1 AND sha256 = ?2",
                params![device.to_string(), sha256],
                upload_row,
            )
            .optional()
        })
    }

    fn append_upload(
        &self,
        device: DeviceId,
        sha256: &str,
        length: u64,
        offset: u64,
        bytes: &[u8],
        now_ms: i64,
    ) -> StoreResult<Appended> {
        let device = device.to_string();
        self.write(|tx| {
            let existing = tx
                .query_row(
                    "SELECT received, length, complete FROM uploads WHERE device = ?1 AND sha256 = ?2",
                    params![device, sha256],
                    upload_row,
                )
                .optional()?;
            let upload = match existing {
                None if offset != 0 => {
                    return Ok(Appended::OffsetMismatch(Upload { offset: 0, length, complete: false }));
                }
                None => {
                    tx.execute(
                        "INSERT INTO uploads (device, sha256, length, received, updated_ms) VALUES (?1, ?2, ?3, 0, ?4)",
                        params![device, sha256, length as i64, now_ms],
                    )?;
                    Upload { offset: 0, length, complete: false }
                }
                Some(u) if u.length != length => return Ok(Appended::LengthMismatch(u)),
                Some(u) if u.offset != offset => return Ok(Appended::OffsetMismatch(u)),
                Some(u) => u,
            };
            if bytes.is_empty() || upload.complete {
                return Ok(Appended::Stored(upload));
            }
            // The piece is durable before the row that names it commits.
            let blob_id = self.blobs.put(bytes)?;
            tx.execute(
                "INSERT INTO upload_parts (device, sha256, at, bytes, blob_id) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![device, sha256, offset as i64, bytes.len() as i64, blob_id],
            )?;
            let received = offset + bytes.len() as u64;
            tx.execute(
                "UPDATE uploads SET received = ?1, updated_ms = ?2 WHERE device = ?3 AND sha256 = ?4",
                params![received as i64, now_ms, device, sha256],
            )?;
            Ok(Appended::Stored(Upload { offset: received, ..upload }))
        })
    }

    fn upload_bytes(&self, device: DeviceId, sha256: &str) -> StoreResult<Vec<u8>> {
        let parts: Vec<String> = self.read(|c| {
            let mut stmt =
                c.prepare("SELECT blob_id FROM upload_parts WHERE device = ?1 AND sha256 = ?2 ORDER BY at")?;
            stmt.query_map(params![device.to_string(), sha256], |r| r.get(0))?.collect()
        })?;
        let mut whole = Vec::new();
        for part in parts {
            whole.extend_from_slice(&self.blobs.get(&part)?);
        }
        Ok(whole)
    }

    fn finish_upload(&self, device: DeviceId, sha256: &str, bytes: &[u8], now_ms: i64) -> StoreResult<()> {
        let device = device.to_string();
        self.write(|tx| {
            let known: bool =
                tx.query_row("SELECT EXISTS (SELECT 1 FROM blobs WHERE sha256 = ?1)", [sha256], |r| r.get(0))?;
            if !known {
                let blob_id = self.blobs.put(bytes)?;
                tx.execute(
                    "INSERT INTO blobs (sha256, blob_id, bytes, stored_ms) VALUES (?1, ?2, ?3, ?4)",
                    params![sha256, blob_id, bytes.len() as i64, now_ms],
                )?;
            }
            let parts: Vec<String> = {
                let mut stmt = tx.prepare("SELECT blob_id FROM upload_parts WHERE device = ?1 AND sha256 = ?2")?;
                stmt.query_map(params![device, sha256], |r| r.get(0))?.collect::<Result<_, _>>()?
            };
            tx.execute("DELETE FROM upload_parts WHERE device = ?1 AND sha256 = ?2", params![device, sha256])?;
            tx.execute(
                "UPDATE uploads SET complete = 1, received = length, updated_ms = ?1 WHERE device = ?2 AND sha256 = ?3",
                params![now_ms, device, sha256],
            )?;
            for part in parts {
                self.drop_file_if_unnamed(tx, &part)?;
            }
            let detail = json!({ "bytes": bytes.len(), "stored_before": known });
            audit::append(
                tx,
                now_ms,
                &format!("device:{device}"),
                "hub.blob_received",
                &format!("blob/{sha256}"),
                &detail,
            )?;
            Ok(())
        })
    }

    fn discard_upload(&self, device: DeviceId, sha256: &str) -> StoreResult<()> {
        let device = device.to_string();
        self.write(|tx| {
            let parts: Vec<String> = {
                let mut stmt = tx.prepare("SELECT blob_id FROM upload_parts WHERE device = ?1 AND sha256 = ?2")?;
                stmt.query_map(params![device, sha256], |r| r.get(0))?.collect::<Result<_, _>>()?
            };
            tx.execute(
                "DELETE FROM uploads WHERE device = ?1 AND sha256 = ?2 AND complete = 0",
                params![device, sha256],
            )?;
            for part in parts {
                self.drop_file_if_unnamed(tx, &part)?;
            }
            Ok(())
        })
    }

    fn missing_blobs(&self, device: DeviceId, sha256s: &[&str]) -> StoreResult<Vec<String>> {
        let device = device.to_string();
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM uploads u JOIN blobs b USING (sha256)
                 WHERE u.device = ?1 AND u.sha256 = ?2 AND u.complete = 1)",
            )?;
            let mut missing: Vec<String> = Vec::new();
            for sha in sha256s {
                if !stmt.query_row(params![device, sha], |r| r.get::<_, bool>(0))? && !missing.iter().any(|m| m == sha)
                {
                    missing.push((*sha).to_owned());
                }
            }
            Ok(missing)
        })
    }

    fn blob(&self, sha256: &str) -> StoreResult<Option<BlobInfo>> {
        self.read(|c| {
            c.query_row(
                "SELECT bytes, (SELECT COUNT(*) FROM frames WHERE sha256 = ?1) FROM blobs WHERE sha256 = ?1",
                [sha256],
                |r| Ok(BlobInfo { bytes: r.get::<_, i64>(0)? as u64, frames: r.get::<_, i64>(1)? as u64 }),
            )
            .optional()
        })
    }

    fn receipt(&self, device: DeviceId, kind: ReceiptKind, id: &str) -> StoreResult<Option<String>> {
        self.read(|c| HubDb::stored_receipt(c, &device.to_string(), kind, id))
    }

    fn commit_batch(&self, device: DeviceId, manifest: &Manifest, receipt: &str, now_ms: i64) -> StoreResult<String> {
        let device = device.to_string();
        self.write(|tx| {
            if let Some(given) = HubDb::stored_receipt(tx, &device, ReceiptKind::Batch, &manifest.batch)? {
                return Ok(given);
            }
            upsert_consents(tx, &device, &manifest.consents, now_ms)?;
            let mut new = 0;
            for frame in &manifest.frames {
                let annotation = frame.annotation.as_ref().map(|a| serde_json::to_string(a).expect("JSON serialises"));
                let predictions = serde_json::to_string(&frame.predictions).expect("JSON serialises");
                let added = tx.execute(
                    "INSERT OR IGNORE INTO frames (device, local, batch, camera, captured_ms, sha256, bytes, width, height,
                     annotation, predictions, received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                    params![
                        device,
                        frame.local,
                        manifest.batch,
                        frame.camera,
                        frame.captured_ms,
                        frame.sha256,
                        frame.bytes as i64,
                        frame.width,
                        frame.height,
                        annotation,
                        predictions,
                        now_ms
                    ],
                )?;
                if added == 1 {
                    new += 1;
                    for consent in &frame.consents {
                        tx.execute(
                            "INSERT OR IGNORE INTO frame_consents (device, local, consent) VALUES (?1, ?2, ?3)",
                            params![device, frame.local, consent],
                        )?;
                    }
                }
            }
            HubDb::keep_receipt(tx, &device, ReceiptKind::Batch, &manifest.batch, receipt, now_ms)?;
            let detail = json!({
                "frames": manifest.frames.len(),
                "new": new,
                "audit_head": { "seq": manifest.audit_head.seq, "hash": manifest.audit_head.hash },
            });
            let subject = format!("batch/{device}/{}", manifest.batch);
            audit::append(tx, now_ms, &format!("device:{device}"), "hub.batch_committed", &subject, &detail)?;
            Ok(receipt.to_owned())
        })
    }

    fn upsert_consents(
        &self,
        device: DeviceId,
        consents: &[Consent],
        id: &str,
        receipt: &str,
        now_ms: i64,
    ) -> StoreResult<String> {
        let device = device.to_string();
        self.write(|tx| {
            if let Some(given) = HubDb::stored_receipt(tx, &device, ReceiptKind::Consents, id)? {
                return Ok(given);
            }
            upsert_consents(tx, &device, consents, now_ms)?;
            HubDb::keep_receipt(tx, &device, ReceiptKind::Consents, id, receipt, now_ms)?;
            let ids: Vec<&str> = consents.iter().map(|c| c.id.as_str()).collect();
            audit::append(
                tx,
                now_ms,
                &format!("device:{device}"),
                "hub.consents_updated",
                &format!("consents/{device}"),
                &json!({ "consents": ids }),
            )?;
            Ok(receipt.to_owned())
        })
    }

    fn erase(
        &self,
        device: DeviceId,
        request: &str,
        frames: &[i64],
        blobs: &[String],
        receipt: &str,
        actor: &str,
        now_ms: i64,
    ) -> StoreResult<String> {
        let device = device.to_string();
        let receipt = self.write(|tx| {
            if let Some(given) = HubDb::stored_receipt(tx, &device, ReceiptKind::Erasure, request)? {
                return Ok(given);
            }
            let (erased, mut blobs_removed) = self.drop_frames(tx, &device, frames)?;
            // Uploads for a batch that never committed: no frame names them.
            for sha in blobs {
                blobs_removed += self.drop_unnamed_upload(tx, &device, sha)?;
            }
            HubDb::keep_receipt(tx, &device, ReceiptKind::Erasure, request, receipt, now_ms)?;
            let detail = json!({ "requested": frames.len(), "erased": erased, "blobs_removed": blobs_removed });
            audit::append(tx, now_ms, actor, "hub.erased", &format!("erasure/{device}/{request}"), &detail)?;
            Ok(receipt.to_owned())
        })?;
        // Erased rows are zeroed in the database; fold the WAL in so no copy stays there.
        // Best effort: a reader in another process can hold it back until the next time.
        if let Err(e) = self.checkpoint() {
            tracing::warn!(target: "obscura::store", error = %e, "cannot checkpoint the hub database after an erasure");
        }
        Ok(receipt)
    }

    fn record_presence(&self, device: DeviceId, online: bool, now_ms: i64) -> StoreResult<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO presence (device, online, changed_ms) SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM devices WHERE id = ?1)
                 ON CONFLICT (device) DO UPDATE SET online = excluded.online, changed_ms = excluded.changed_ms",
                params![device.to_string(), online, now_ms],
            )?;
            Ok(())
        })
    }

    fn record_telemetry(&self, device: DeviceId, telemetry: &Telemetry, now_ms: i64) -> StoreResult<()> {
        let text = serde_json::to_string(telemetry).expect("telemetry serialises");
        self.write(|tx| {
            tx.execute(
                "INSERT INTO presence (device, online, changed_ms, telemetry, telemetry_ms)
                 SELECT ?1, 1, ?3, ?2, ?3 WHERE EXISTS (SELECT 1 FROM devices WHERE id = ?1)
                 ON CONFLICT (device) DO UPDATE SET telemetry = excluded.telemetry, telemetry_ms = excluded.telemetry_ms",
                params![device.to_string(), text, now_ms],
            )?;
            Ok(())
        })
    }

    fn presence(&self, device: DeviceId) -> StoreResult<Option<Presence>> {
        let row: Option<(bool, i64, Option<String>, Option<i64>)> = self.read(|c| {
            c.query_row(
                "SELECT online, changed_ms, telemetry, telemetry_ms FROM presence WHERE device = ?1",
                [device.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
        })?;
        Ok(row.map(|(online, changed_ms, telemetry, telemetry_ms)| Presence {
            online,
            changed_ms,
            // Telemetry the hub cannot read is shown as none, never an error for the fleet view.
            telemetry: telemetry.and_then(|t| serde_json::from_str(&t).ok()).zip(telemetry_ms),
        }))
    }

    fn expire(&self, received_before_ms: i64, now_ms: i64) -> StoreResult<u64> {
        let expired = self.write(|tx| {
            let due: Vec<(String, i64)> = {
                let mut stmt =
                    tx.prepare("SELECT device, local FROM frames WHERE received_ms < ?1 ORDER BY device, local")?;
                stmt.query_map([received_before_ms], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
            };
            let mut by_device: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
            for (device, local) in due {
                by_device.entry(device).or_default().push(local);
            }
            let mut expired = 0;
            for (device, frames) in by_device {
                let (n, blobs_removed) = self.drop_frames(tx, &device, &frames)?;
                expired += n as u64;
                let detail =
                    json!({ "frames": n, "blobs_removed": blobs_removed, "received_before_ms": received_before_ms });
                audit::append(tx, now_ms, "hub", "hub.expired", &format!("frames/{device}"), &detail)?;
            }
            // Uploads no frame names (a batch dissolved or refused after its blobs went
            // up, or an upload given up half-way) go too, with their pieces and, with
            // its last reference, the blob.
            let orphans: Vec<(String, String)> = {
                let mut stmt = tx.prepare(
                    "SELECT device, sha256 FROM uploads u WHERE updated_ms < ?1
                     AND NOT EXISTS (SELECT 1 FROM frames f WHERE f.device = u.device AND f.sha256 = u.sha256)",
                )?;
                stmt.query_map([received_before_ms], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
            };
            let mut files_removed = 0;
            for (device, sha) in &orphans {
                let parts: Vec<String> = {
                    let mut stmt = tx.prepare("SELECT blob_id FROM upload_parts WHERE device = ?1 AND sha256 = ?2")?;
                    stmt.query_map(params![device, sha], |r| r.get(0))?.collect::<Result<_, _>>()?
                };
                tx.execute("DELETE FROM uploads WHERE device = ?1 AND sha256 = ?2", params![device, sha])?;
                for part in parts {
                    files_removed += u64::from(self.drop_file_if_unnamed(tx, &part)?);
                }
                files_removed += self.drop_blob_if_unreferenced(tx, sha)?;
            }
            if !orphans.is_empty() {
                let detail = json!({ "uploads": orphans.len(), "files_removed": files_removed, "received_before_ms": received_before_ms });
                audit::append(tx, now_ms, "hub", "hub.expired_uploads", "uploads", &detail)?;
            }
            Ok(expired)
        })?;
        if expired > 0
            && let Err(e) = self.checkpoint()
        {
            tracing::warn!(target: "obscura::store", error = %e, "cannot checkpoint the hub database after retention");
        }
        Ok(expired)
    }

    fn frames(&self, device: DeviceId) -> StoreResult<Vec<i64>> {
        self.read(|c| {
            let mut stmt = c.prepare("SELECT local FROM frames WHERE device = ?1 ORDER BY local")?;
            stmt.query_map([device.to_string()], |r| r.get(0))?.collect()
        })
    }

    fn frame_count(&self, device: DeviceId) -> StoreResult<u64> {
        self.read(|c| {
            // Kept by triggers (hub schema 4): counting the rows was a walk of them all.
            c.query_row("SELECT frames FROM devices WHERE id = ?1", [device.to_string()], |r| r.get::<_, i64>(0))
                .optional()
                .map(Option::unwrap_or_default)
        })
        .map(|n| n as u64)
    }

    fn select_frames(
        &self,
        device: DeviceId,
        camera: Option<&str>,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
    ) -> StoreResult<Vec<i64>> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT local FROM frames WHERE device = ?1 AND (?2 IS NULL OR camera = ?2)
                 AND (?3 IS NULL OR captured_ms >= ?3) AND (?4 IS NULL OR captured_ms < ?4) ORDER BY local",
            )?;
            stmt.query_map(params![device.to_string(), camera, from_ms, to_ms], |r| r.get(0))?.collect()
        })
    }

    fn commands(&self, device: DeviceId) -> StoreResult<Vec<Command>> {
        Ok(self.unacked(Some(device))?.into_iter().map(|(_, command)| command).collect())
    }

    fn unacked_commands(&self) -> StoreResult<Vec<(DeviceId, Command)>> {
        self.unacked(None)
    }

    fn command_ack(&self, device: DeviceId, id: &str) -> StoreResult<Option<CommandAck>> {
        let result: Option<Option<String>> = self.read(|c| {
            c.query_row(
                "SELECT result FROM commands WHERE id = ?1 AND device = ?2",
                params![id, device.to_string()],
                |r| r.get(0),
            )
            .optional()
        })?;
        match result.flatten() {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("hub command {id}: its acknowledgement: {e}")).into()),
        }
    }

    fn add_command(&self, device: DeviceId, command: &Command, actor: &str) -> StoreResult<()> {
        let device = device.to_string();
        self.write(|tx| {
            let frames = serde_json::to_string(&command.frames).expect("JSON serialises");
            let window = command.window.as_ref().map(|w| serde_json::to_string(w).expect("JSON serialises"));
            tx.execute(
                "INSERT INTO commands (id, device, kind, frames, erase_window, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![command.id, device, command.kind.as_str(), frames, window, command.created_ms],
            )?;
            let detail = json!({ "kind": command.kind.as_str(), "frames": command.frames.len() });
            audit::append(
                tx,
                command.created_ms,
                actor,
                "hub.command_sent",
                &format!("command/{device}/{}", command.id),
                &detail,
            )?;
            Ok(())
        })
    }

    fn ack_command(&self, device: DeviceId, id: &str, ack: &CommandAck, now_ms: i64) -> StoreResult<bool> {
        let device = device.to_string();
        self.write(|tx| {
            let known: Option<Option<i64>> = tx
                .query_row("SELECT acked_ms FROM commands WHERE id = ?1 AND device = ?2", params![id, device], |r| {
                    r.get(0)
                })
                .optional()?;
            match known {
                None => Ok(false),
                // Acknowledged before: the same answer again is no news.
                Some(Some(_)) => Ok(true),
                Some(None) => {
                    let result = serde_json::to_string(ack).expect("JSON serialises");
                    // A failure is kept, but the command stays due: the device is asked
                    // again (a full disk on the box must not end an erasure for good).
                    let acked = (ack.result == AckResult::Done).then_some(now_ms);
                    tx.execute(
                        "UPDATE commands SET acked_ms = ?1, result = ?2 WHERE id = ?3",
                        params![acked, result, id],
                    )?;
                    let detail = json!({ "result": ack.result, "message": ack.message });
                    audit::append(
                        tx,
                        now_ms,
                        &format!("device:{device}"),
                        "hub.command_acked",
                        &format!("command/{device}/{id}"),
                        &detail,
                    )?;
                    Ok(true)
                }
            }
        })
    }

    fn audit(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        detail: &serde_json::Value,
        now_ms: i64,
    ) -> StoreResult<()> {
        self.write(|tx| {
            audit::append(tx, now_ms, actor, action, subject, detail)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use super::*;
    use crate::{Accounts, Role};

    /// Issue 20, item 3: with one connection, the fleet view, every signed request's
    /// device lookup and every session check waited behind the ingest's commits (each
    /// upload piece and batch is an fsync'd transaction). They read on the readers now.
    #[test]
    fn r20_3_the_hubs_reads_never_take_the_writing_connection() {
        let dir = tempfile::tempdir().unwrap();
        let db = HubDb::open(dir.path()).unwrap();
        let id = DeviceId::new(1, [7; 16]);
        let record = DeviceRecord {
            id,
            public_key: vec![1; 32],
            hostname: "box".into(),
            state: DeviceState::Pending,
            enrolled_ms: 1,
        };
        db.enrol(&record, None, 1).unwrap();
        let user = db.add_user("eng", Role::Admin, "hash", "test").unwrap();
        db.create_session("abc", user.id, "csrf", "127.0.0.1").unwrap();

        let writes = db.writes.load(Relaxed);
        assert_eq!(db.devices().unwrap().len(), 1);
        assert_eq!(db.device(id).unwrap().unwrap().hostname, "box");
        assert!(db.frames(id).unwrap().is_empty());
        assert_eq!(db.frame_count(id).unwrap(), 0);
        assert!(db.upload(id, &"0".repeat(64)).unwrap().is_none());
        assert!(db.presence(id).unwrap().is_none());
        assert!(db.commands(id).unwrap().is_empty());
        assert_eq!(db.session("abc", 60_000, 3_600_000).unwrap().unwrap().user.name, "eng");
        assert_eq!(db.writes.load(Relaxed), writes, "a read took the writing connection");

        // A read beside an open write transaction sees the last commit, and does not wait.
        let mut writer = db.conn();
        let tx = writer.transaction().unwrap();
        tx.execute("UPDATE devices SET hostname = 'uncommitted'", []).unwrap();
        assert_eq!(db.device(id).unwrap().unwrap().hostname, "box");
    }

    /// Issue 20, item 3: whether a file is still named is asked for every piece of
    /// every upload as it completes; it walked every blob the hub holds (schema 5 indexes
    /// them by file), so the ingest slowed as the hub filled.
    #[test]
    fn r20_3_whether_a_file_is_still_named_is_two_index_lookups() {
        let dir = tempfile::tempdir().unwrap();
        let db = HubDb::open(dir.path()).unwrap();
        let conn = db.conn();
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {NAMED}")).unwrap();
        let plan: Vec<String> = stmt.query_map(["x"], |r| r.get(3)).unwrap().collect::<Result<_, _>>().unwrap();
        assert!(plan.iter().any(|step| step.contains("blobs USING COVERING INDEX blobs_by_file")), "{plan:?}");
        assert!(
            plan.iter().any(|step| step.contains("upload_parts USING COVERING INDEX upload_parts_blob")),
            "{plan:?}"
        );
        assert!(!plan.iter().any(|step| step.starts_with("SCAN") && step != "SCAN CONSTANT ROW"), "a walk: {plan:?}");
    }

    /// Issue 20, item 3: a nonce's commit alone goes without an fsync; the writer is back
    /// to `synchronous=FULL` after it, whether it was new, a replay, or failed.
    #[test]
    fn r20_3_a_nonce_is_committed_without_an_fsync_and_every_other_write_keeps_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = HubDb::open(dir.path()).unwrap();
        let synchronous = |db: &HubDb| db.conn().query_row("PRAGMA synchronous", [], |r| r.get::<_, i64>(0)).unwrap();
        let id = DeviceId::new(1, [7; 16]);
        assert_eq!(synchronous(&db), 2, "FULL");
        assert!(db.remember_nonce(id, "n1", 1, 600_001).unwrap());
        assert_eq!(synchronous(&db), 2, "FULL after a new nonce");
        assert!(!db.remember_nonce(id, "n1", 2, 600_002).unwrap(), "a replay");
        assert_eq!(synchronous(&db), 2, "FULL after a replay");
        // A failed one (the table gone) is an error, and the writer is FULL after it too.
        db.conn().execute_batch("ALTER TABLE nonces RENAME TO nonces_gone").unwrap();
        assert!(db.remember_nonce(id, "n2", 3, 600_003).is_err());
        assert_eq!(synchronous(&db), 2, "FULL after a failure");
        db.conn().execute_batch("ALTER TABLE nonces_gone RENAME TO nonces").unwrap();
        // And the nonce outlives the process that wrote it (WAL, no fsync needed for that).
        drop(db);
        let db = HubDb::open(dir.path()).unwrap();
        assert!(!db.remember_nonce(id, "n1", 4, 600_004).unwrap(), "remembered across a restart");
    }
}
