//! The sync outbox, all inside the store (only the store writes the audit): what must
//! reach the hub, durable beside the data, never a client library's queue.
//!
//! Batches are its unit of data. A batch is formed in one
//! transaction from frames that may leave the box ([`SyncRules`]), its manifest stored
//! as the exact JSON the commit sends, and it moves `pending → uploading → committed`
//! (with the hub's receipt, audited) or `rejected` (with the hub's reason). The sync
//! stage only reads what is due here and reports back; a restart at any point resumes
//! where these rows say, and a resend is harmless because the hub's commit is
//! idempotent per batch id.
//!
//! Erasures travel as tombstones ([`crate::Tombstone`]) not yet acknowledged by the hub,
//! and consent records the hub holds in an older form (a withdrawal) as one update.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use wire::v1;

use crate::consent::Usable;
use crate::{FrameId, Purpose, Store, StoreError, audit};

/// What may leave the box, besides the consent rule (invariant 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncRules {
    /// Only frames a reviewer accepted (`sync.require_review`, on by default).
    pub require_review: bool,
}

/// When a batch closes: whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub frames: u32,
    pub bytes: u64,
    /// A smaller batch is formed once its oldest eligible frame has waited this long.
    pub age_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchState {
    Pending,
    Uploading,
    Committed,
    Rejected,
}

impl BatchState {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchState::Pending => "pending",
            BatchState::Uploading => "uploading",
            BatchState::Committed => "committed",
            BatchState::Rejected => "rejected",
        }
    }
}

impl rusqlite::types::FromSql for BatchState {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        match value.as_str()? {
            "pending" => Ok(BatchState::Pending),
            "uploading" => Ok(BatchState::Uploading),
            "committed" => Ok(BatchState::Committed),
            "rejected" => Ok(BatchState::Rejected),
            other => Err(rusqlite::types::FromSqlError::Other(format!("`{other}` is not a batch state").into())),
        }
    }
}

/// A batch due to be sent.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingBatch {
    pub id: String,
    pub state: BatchState,
    /// The manifest's JSON, exactly as every attempt sends it.
    pub manifest: String,
    /// Each frame and its blob's SHA-256, to upload before the commit.
    pub frames: Vec<(FrameId, String)>,
    pub attempts: u32,
}

/// What is waiting to leave, for status and metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SyncBacklog {
    /// Eligible frames not yet committed at the hub (batched or not).
    pub frames: u64,
    pub bytes: u64,
    /// Capture time of the oldest of them (Unix ms).
    pub oldest_ms: Option<i64>,
    pub batches_pending: u64,
    pub batches_committed: u64,
    pub batches_rejected: u64,
    /// Erasures the hub has not yet confirmed.
    pub erasures_pending: u64,
    /// When the last receipt came in (Unix ms).
    pub last_receipt_ms: Option<i64>,
    /// Frames retention removed before they could be synced.
    pub expired_unsynced: u64,
    /// The last error of a batch still due, for the field engineer.
    pub last_error: Option<String>,
}

/// The first retry waits a second; each further one twice as long, up to ten minutes.
fn backoff_ms(attempts: u32) -> i64 {
    (1_000i64 << attempts.saturating_sub(1).min(10)).min(600_000)
}

/// Frames that may be batched now: usable for sync, reviewed if the rules say so, not
/// synced and in no batch (a rejected batch keeps its frames, so they are not sent again
/// in a loop; a dissolved one is deleted, freeing them). Its parameters: the time, then the purpose.
fn eligible(rules: SyncRules, at: i64) -> (String, [rusqlite::types::Value; 2]) {
    let (usable, values) = Usable { purpose: Purpose::Sync, at }.sql();
    let review = if rules.require_review { "AND f.accepted_version IS NOT NULL" } else { "" };
    (
        format!(
            "{usable} {review} AND f.synced_at IS NULL
             AND NOT EXISTS (SELECT 1 FROM sync_batch_frames bf WHERE bf.frame_id = f.id)"
        ),
        values,
    )
}

impl Store {
    /// Forms one batch, if enough is waiting (by `limits`), in one transaction: picks
    /// eligible frames oldest first, writes the manifest with their consent records and
    /// the audit head, and audits the batch. Returns its id.
    pub fn form_batch(&self, limits: &BatchLimits, rules: SyncRules) -> Result<Option<String>, StoreError> {
        let now = self.now();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let (clause, [at, purpose]) = eligible(rules, now);
        let candidates: Vec<(FrameId, i64, i64)> = {
            let mut stmt = tx.prepare(&format!(
                "SELECT f.id, f.bytes, f.captured_at FROM frames f WHERE {clause} ORDER BY f.id LIMIT ?3"
            ))?;
            stmt.query_map(params![at, purpose, limits.frames], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?
        };
        let mut chosen = Vec::new();
        let mut bytes = 0u64;
        for (id, size, _) in &candidates {
            if !chosen.is_empty() && bytes + *size as u64 > limits.bytes {
                break;
            }
            chosen.push(*id);
            bytes += *size as u64;
        }
        let full = chosen.len() as u32 >= limits.frames || chosen.len() < candidates.len() || bytes >= limits.bytes;
        let old = candidates.first().is_some_and(|(_, _, captured)| now - captured >= limits.age_ms);
        if chosen.is_empty() || !(full || old) {
            return Ok(None);
        }
        let mut frames = Vec::with_capacity(chosen.len());
        let mut consent_ids = std::collections::BTreeSet::new();
        for id in &chosen {
            let frame = self.manifest_frame(&tx, *id, rules)?;
            consent_ids.extend(frame.consents.iter().cloned());
            frames.push(frame);
        }
        let consents = consent_ids.iter().map(|c| wire_consent(&tx, c)).collect::<Result<Vec<_>, _>>()?;
        let batch = new_batch_id(now)?;
        let head = audit::head(&tx)?
            .map_or(v1::AuditHead { seq: 0, hash: String::new() }, |h| v1::AuditHead { seq: h.seq, hash: h.hash });
        let manifest = v1::Manifest {
            version: wire::VERSION,
            batch: batch.clone(),
            device: self.device_id(),
            created_ms: now,
            audit_head: head,
            frames,
            consents,
        };
        let text = serde_json::to_string(&manifest).expect("a manifest serializes");
        tx.execute(
            "INSERT INTO sync_batches (id, manifest, frames, bytes, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![batch, text, chosen.len() as i64, bytes as i64, now],
        )?;
        for frame in &manifest.frames {
            tx.execute(
                "INSERT INTO sync_batch_frames (batch_id, frame_id, sha256) VALUES (?1, ?2, ?3)",
                params![batch, frame.local, frame.sha256],
            )?;
        }
        audit::append(
            &tx,
            now,
            "sync",
            "sync.batch",
            &format!("batch/{batch}"),
            &serde_json::json!({ "frames": chosen.len(), "bytes": bytes, "first": chosen.first(), "last": chosen.last() }),
        )?;
        tx.commit()?;
        Ok(Some(batch))
    }

    /// One frame as the manifest carries it, its SHA-256 filled in if it lacks one.
    fn manifest_frame(
        &self,
        tx: &rusqlite::Connection,
        id: FrameId,
        rules: SyncRules,
    ) -> Result<v1::Frame, StoreError> {
        let (camera, captured_ms, bytes, width, height, sha256, blob, accepted): (
            String,
            i64,
            i64,
            u32,
            u32,
            Option<String>,
            String,
            Option<i64>,
        ) = tx.query_row(
            "SELECT camera_id, captured_at, bytes, width, height, sha256, blob_id, accepted_version FROM frames WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?)),
        )?;
        let sha256 = match sha256 {
            Some(hash) => hash,
            None => {
                let hash = crate::sha256_hex(&self.blobs.get(&blob)?);
                tx.execute("UPDATE frames SET sha256 = ?2 WHERE id = ?1", params![id, hash])?;
                hash
            }
        };
        let consents: Vec<String> = {
            let mut stmt =
                tx.prepare_cached("SELECT consent_id FROM frame_consents WHERE frame_id = ?1 ORDER BY consent_id")?;
            stmt.query_map([id], |r| r.get(0))?.collect::<Result<_, _>>()?
        };
        // The accepted version travels; without review required, the newest does.
        let version = if rules.require_review { accepted } else { accepted.or(latest_version(tx, id)?) };
        let annotation = match version {
            Some(version) => {
                let shapes: String = tx.query_row(
                    "SELECT shapes FROM annotations WHERE frame_id = ?1 AND version = ?2",
                    params![id, version],
                    |r| r.get(0),
                )?;
                let shapes = serde_json::from_str(&shapes).map_err(|e| {
                    crate::count_corrupt();
                    StoreError::Corrupt(format!("frame {id} annotation version {version}: {e}"))
                })?;
                Some(v1::Annotation { version, shapes })
            }
            None => None,
        };
        let predictions = {
            let mut stmt = tx.prepare_cached(
                "SELECT label, score, x1, y1, x2, y2, model FROM detections WHERE frame_id = ?1 AND source = 'prelabel' ORDER BY id",
            )?;
            stmt.query_map([id], |r| {
                let (x1, y1, x2, y2): (f64, f64, f64, f64) = (r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?);
                Ok(v1::Prediction {
                    label: r.get(0)?,
                    score: r.get(1)?,
                    bbox: [x1, y1, x2 - x1, y2 - y1],
                    source: r.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?
        };
        Ok(v1::Frame {
            local: id.0,
            camera,
            captured_ms,
            sha256,
            bytes: bytes as u64,
            width,
            height,
            consents,
            annotation,
            predictions,
        })
    }

    /// The oldest batch due to be sent, after checking that every frame in it may still
    /// leave (a consent withdrawn or ended, or a frame erased, since it was formed): if
    /// not, the batch is dissolved and its frames that may still go are batched anew.
    pub fn due_batch(&self, rules: SyncRules) -> Result<Option<OutgoingBatch>, StoreError> {
        let now = self.now();
        loop {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            let row: Option<(String, BatchState, String, i64, u32)> = tx
                .query_row(
                    "SELECT id, state, manifest, frames, attempts FROM sync_batches
                     WHERE state IN ('pending', 'uploading') AND next_attempt_at <= ?1 ORDER BY created_at, rowid LIMIT 1",
                    [now],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()?;
            let Some((id, state, manifest, count, attempts)) = row else { return Ok(None) };
            let (usable, [at, purpose]) = Usable { purpose: Purpose::Sync, at: now }.sql();
            let review = if rules.require_review { "AND f.accepted_version IS NOT NULL" } else { "" };
            let frames: Vec<(FrameId, String)> = {
                let mut stmt = tx.prepare(&format!(
                    "SELECT bf.frame_id, bf.sha256 FROM sync_batch_frames bf JOIN frames f ON f.id = bf.frame_id
                     WHERE {usable} {review} AND bf.batch_id = ?3 ORDER BY bf.frame_id"
                ))?;
                stmt.query_map(params![at, purpose, id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
            };
            if frames.len() as i64 == count {
                return Ok(Some(OutgoingBatch { id, state, manifest, frames, attempts }));
            }
            // Its commit may have reached the hub with the receipt lost on the way back:
            // then the hub holds its frames and consent records, and the box must not
            // forget that.
            let recalled = if state == BatchState::Uploading {
                let manifest = parse_manifest(&id, &manifest)?;
                consents_maybe_sent(&tx, &manifest.consents, now)?;
                recall(&tx, &manifest, now, "left the box's batch before the hub's receipt came")?
            } else {
                0
            };
            tx.execute("DELETE FROM sync_batches WHERE id = ?1", [&id])?;
            audit::append(
                &tx,
                now,
                "sync",
                "sync.batch_dissolved",
                &format!("batch/{id}"),
                &serde_json::json!({ "frames": count, "still_eligible": frames.len(), "hub_erasures_requested": recalled,
                    "why": "frames were erased, or their consent withdrawn or ended, before the hub took them" }),
            )?;
            tx.commit()?;
        }
    }

    /// The batch's blobs are going up.
    pub fn batch_uploading(&self, id: &str) -> Result<(), StoreError> {
        let now = self.now();
        self.conn().execute(
            "UPDATE sync_batches SET state = 'uploading', updated_at = ?2 WHERE id = ?1 AND state = 'pending'",
            params![id, now],
        )?;
        Ok(())
    }

    /// The hub's receipt for batch `id` is in, checked by the caller against the hub's
    /// key: the batch is committed, its frames synced, and the receipt (which echoes the
    /// audit head the manifest carried) goes into the audit chain.
    pub fn batch_committed(&self, id: &str, receipt: &str) -> Result<(), StoreError> {
        let now = self.now();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let changed = tx.execute(
            "UPDATE sync_batches SET state = 'committed', receipt = ?2, updated_at = ?3, last_error = NULL
             WHERE id = ?1 AND state IN ('pending', 'uploading')",
            params![id, receipt, now],
        )?;
        if changed == 0 {
            return Ok(());
        }
        let frames = tx.execute(
            "UPDATE frames SET synced_at = ?2 WHERE id IN (SELECT frame_id FROM sync_batch_frames WHERE batch_id = ?1)",
            params![id, now],
        )?;
        // The consent records the manifest carried are now the hub's.
        let manifest: String = tx.query_row("SELECT manifest FROM sync_batches WHERE id = ?1", [id], |r| r.get(0))?;
        let manifest = parse_manifest(id, &manifest)?;
        consents_sent(&tx, &manifest.consents, now)?;
        // A frame withdrawn or erased while its batch was on its way is at the hub now.
        let recalled = recall(&tx, &manifest, now, "withdrawn or erased while its batch was on its way to the hub")?;
        let receipt = receipt_json(receipt);
        audit::append(
            &tx,
            now,
            "sync",
            "sync.receipt",
            &format!("batch/{id}"),
            &serde_json::json!({ "frames": frames, "receipt": receipt, "hub_erasures_requested": recalled }),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The hub refused batch `id` for good (`reason`, from it): kept, with the reason,
    /// for the status page; its frames are not batched again.
    pub fn batch_rejected(&self, id: &str, reason: &str) -> Result<(), StoreError> {
        let now = self.now();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE sync_batches SET state = 'rejected', reason = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, reason, now],
        )?;
        audit::append(
            &tx,
            now,
            "sync",
            "sync.rejected",
            &format!("batch/{id}"),
            &serde_json::json!({ "reason": reason }),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Sending batch `id` failed (`error`: the network, the hub): due again after a
    /// back-off that doubles from a second to ten minutes.
    pub fn batch_failed(&self, id: &str, error: &str) -> Result<(), StoreError> {
        let now = self.now();
        let error: String = error.chars().take(500).collect();
        let conn = self.conn();
        let attempts: u32 = conn
            .query_row("SELECT attempts FROM sync_batches WHERE id = ?1", [id], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        conn.execute(
            "UPDATE sync_batches SET attempts = ?2, next_attempt_at = ?3, last_error = ?4, updated_at = ?5 WHERE id = ?1",
            params![id, attempts + 1, now + backoff_ms(attempts + 1), error, now],
        )?;
        Ok(())
    }

    /// Makes every batch due now (the hub's `sync_now`, or a reconnect).
    pub fn batches_due_now(&self) -> Result<(), StoreError> {
        self.conn()
            .execute("UPDATE sync_batches SET next_attempt_at = 0 WHERE state IN ('pending', 'uploading')", [])?;
        Ok(())
    }

    /// Erasures the hub has not confirmed, oldest first.
    pub fn pending_erasures(&self, limit: u32) -> Result<Vec<PendingErasure>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, frame_id, reason, sha256 FROM tombstones
             WHERE kind = 'frame' AND synced_at IS NULL AND frame_id IS NOT NULL ORDER BY id LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit], |r| {
            Ok(PendingErasure { tombstone: r.get(0)?, frame: r.get(1)?, reason: r.get(2)?, sha256: r.get(3)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The hub's erasure receipt for tombstones `ids` is in: acknowledged and audited.
    pub fn erasures_confirmed(&self, ids: &[i64], receipt: &str) -> Result<(), StoreError> {
        let now = self.now();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for id in ids {
            tx.execute("UPDATE tombstones SET synced_at = ?2 WHERE id = ?1 AND synced_at IS NULL", params![id, now])?;
        }
        let receipt = receipt_json(receipt);
        audit::append(
            &tx,
            now,
            "sync",
            "sync.erasure_receipt",
            "tombstones",
            &serde_json::json!({ "tombstones": ids, "receipt": receipt }),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// What waits to leave the box.
    pub fn sync_backlog(&self, rules: SyncRules) -> Result<SyncBacklog, StoreError> {
        let now = self.now();
        // A reader: the first count walks every unsynced frame (most of a box's store
        // until sync is set up), which on the writer held every save behind it.
        let conn = self.reader();
        let (usable, [at, purpose]) = Usable { purpose: Purpose::Sync, at: now }.sql();
        let review = if rules.require_review { "AND f.accepted_version IS NOT NULL" } else { "" };
        let (frames, bytes, oldest_ms): (i64, i64, Option<i64>) = conn.query_row(
            &format!(
                "SELECT COUNT(*), COALESCE(SUM(f.bytes), 0), MIN(f.captured_at) FROM frames f
                 WHERE f.synced_at IS NULL AND {usable} {review} AND NOT EXISTS (
                     SELECT 1 FROM sync_batch_frames bf JOIN sync_batches b ON b.id = bf.batch_id
                     WHERE bf.frame_id = f.id AND b.state = 'rejected')"
            ),
            params![at, purpose],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let count = |state: &str| -> Result<u64, StoreError> {
            let n: i64 = conn.query_row("SELECT COUNT(*) FROM sync_batches WHERE state = ?1", [state], |r| r.get(0))?;
            Ok(n as u64)
        };
        let erasures: i64 =
            conn.query_row("SELECT COUNT(*) FROM tombstones WHERE kind = 'frame' AND synced_at IS NULL", [], |r| {
                r.get(0)
            })?;
        let last_receipt_ms: Option<i64> =
            conn.query_row("SELECT MAX(updated_at) FROM sync_batches WHERE state = 'committed'", [], |r| r.get(0))?;
        let expired: i64 = conn.query_row("SELECT COUNT(*) FROM sync_expired", [], |r| r.get(0))?;
        let last_error: Option<String> = conn
            .query_row(
                "SELECT last_error FROM sync_batches WHERE state IN ('pending', 'uploading') AND last_error IS NOT NULL
                 ORDER BY updated_at DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok(SyncBacklog {
            frames: frames as u64,
            bytes: bytes as u64,
            oldest_ms,
            batches_pending: count("pending")? + count("uploading")?,
            batches_committed: count("committed")?,
            batches_rejected: count("rejected")?,
            erasures_pending: erasures as u64,
            last_receipt_ms,
            expired_unsynced: expired as u64,
            last_error,
        })
    }

    /// The frames the box counts as held by the hub (a checked receipt for their batch
    /// came in), in id order: what must be at the hub exactly once.
    pub fn synced_frames(&self) -> Result<Vec<FrameId>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id FROM frames WHERE synced_at IS NOT NULL ORDER BY id")?;
        Ok(stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?)
    }
}

fn latest_version(tx: &rusqlite::Connection, id: FrameId) -> Result<Option<i64>, StoreError> {
    Ok(tx.query_row("SELECT MAX(version) FROM annotations WHERE frame_id = ?1", [id], |r| r.get(0))?)
}

impl Store {
    /// Consent records the hub holds in an older form (withdrawn since), as one update
    /// and its id (the SHA-256 of its body, which the hub keys its receipt by, so a
    /// resend is the same request). None when the hub is up to date.
    pub fn consent_update(&self) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        let conn = self.conn();
        let sent: Vec<(String, String)> = {
            let mut stmt =
                conn.prepare_cached("SELECT consent_id, record_sha256 FROM sync_consents_sent ORDER BY consent_id")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
        };
        let mut consents = Vec::new();
        for (id, sha) in sent {
            let record = wire_consent(&conn, &id)?;
            if record_sha256(&record) != sha {
                consents.push(record);
            }
        }
        if consents.is_empty() {
            return Ok(None);
        }
        let body = serde_json::to_vec(&v1::ConsentUpdate { consents }).expect("an update serializes");
        Ok(Some((crate::sha256_hex(&body), body)))
    }

    /// The hub's receipt for consent update `body` is in (checked by the caller): its
    /// records are the hub's now, and the receipt goes into the audit chain.
    pub fn consent_update_confirmed(&self, body: &[u8], receipt: &str) -> Result<(), StoreError> {
        let update: v1::ConsentUpdate =
            serde_json::from_slice(body).map_err(|e| StoreError::Corrupt(format!("a consent update: {e}")))?;
        let now = self.now();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        consents_sent(&tx, &update.consents, now)?;
        let receipt = receipt_json(receipt);
        let ids: Vec<&str> = update.consents.iter().map(|c| c.id.as_str()).collect();
        audit::append(
            &tx,
            now,
            "sync",
            "sync.consent_receipt",
            "consents",
            &serde_json::json!({ "consents": ids, "receipt": receipt }),
        )?;
        tx.commit()?;
        Ok(())
    }
}

/// A receipt as the audit keeps it: its JSON, or the text as it came if it is not JSON.
fn receipt_json(receipt: &str) -> serde_json::Value {
    serde_json::from_str(receipt).unwrap_or_else(|_| serde_json::Value::String(receipt.into()))
}

fn record_sha256(record: &v1::Consent) -> String {
    crate::sha256_hex(&serde_json::to_vec(record).expect("a consent record serializes"))
}

/// Records that the hub holds `consents` as they are.
fn consents_sent(tx: &rusqlite::Connection, consents: &[v1::Consent], now: i64) -> Result<(), StoreError> {
    for record in consents {
        tx.execute(
            "INSERT INTO sync_consents_sent (consent_id, record_sha256, sent_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (consent_id) DO UPDATE SET record_sha256 = excluded.record_sha256, sent_at = excluded.sent_at",
            params![record.id, record_sha256(record), now],
        )?;
    }
    Ok(())
}

/// Records that the hub may hold `consents` (a batch whose receipt never came), unless
/// the box knows what it holds already: a later change (a withdrawal) then travels.
fn consents_maybe_sent(tx: &rusqlite::Connection, consents: &[v1::Consent], now: i64) -> Result<(), StoreError> {
    for record in consents {
        tx.execute(
            "INSERT INTO sync_consents_sent (consent_id, record_sha256, sent_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (consent_id) DO NOTHING",
            params![record.id, record_sha256(record), now],
        )?;
    }
    Ok(())
}

fn parse_manifest(id: &str, text: &str) -> Result<v1::Manifest, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("sync batch {id}: its manifest: {e}")))
}

/// A tombstone the hub has not confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingErasure {
    pub tombstone: i64,
    pub frame: FrameId,
    pub reason: String,
    /// The frame's JPEG's SHA-256, where known (tombstones from schema 8 on).
    pub sha256: Option<String>,
}

/// Erasure follows the data: each frame of `manifest` (which the hub may hold) that may
/// no longer leave the box gets a tombstone, so the hub erases its copy, unless one
/// already waits for it (or, for a frame erased here, was ever made). Returns how many.
fn recall(tx: &rusqlite::Connection, manifest: &v1::Manifest, now: i64, why: &str) -> Result<u64, StoreError> {
    let (usable, [at, purpose]) = Usable { purpose: Purpose::Sync, at: now }.sql();
    let mut recalled = 0;
    for frame in &manifest.frames {
        // `usable` comes first: its anonymous parameters are ?1 and ?2.
        let (sendable, exists, tombstoned): (bool, bool, bool) = tx.query_row(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM frames f WHERE {usable} AND f.id = ?3),
                        EXISTS (SELECT 1 FROM frames f WHERE f.id = ?3),
                        EXISTS (SELECT 1 FROM tombstones t WHERE t.kind = 'frame' AND t.frame_id = ?3
                                AND (t.synced_at IS NULL OR NOT EXISTS (SELECT 1 FROM frames f WHERE f.id = ?3)))"
            ),
            params![at, purpose, frame.local],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        if sendable || tombstoned {
            continue;
        }
        let reason =
            if exists { format!("its consent no longer allows sync: {why}") } else { format!("erased: {why}") };
        tx.execute(
            "INSERT INTO tombstones (kind, ref, frame_id, erased_at, reason, sha256) VALUES ('frame', ?1, ?2, ?3, ?4, ?5)",
            params![frame.local.to_string(), frame.local, now, reason, frame.sha256],
        )?;
        recalled += 1;
    }
    Ok(recalled)
}

/// A consent record as the wire carries it.
fn wire_consent(tx: &rusqlite::Connection, id: &str) -> Result<v1::Consent, StoreError> {
    let consent = crate::consent::read(tx, id)?;
    let (kind, value) = match &consent.terms.scope {
        crate::Scope::Device => ("device", String::new()),
        crate::Scope::Camera(c) => ("camera", c.clone()),
        crate::Scope::Zone(z) => ("zone", z.clone()),
    };
    Ok(v1::Consent {
        id: consent.id.0,
        scope: v1::Scope { kind: kind.into(), value },
        purposes: consent
            .terms
            .purposes
            .iter()
            .map(|p| match p {
                Purpose::Annotate => v1::Purpose::Annotate,
                Purpose::Sync => v1::Purpose::Sync,
                Purpose::Train => v1::Purpose::Train,
            })
            .collect(),
        valid_from_ms: consent.terms.valid_from,
        valid_until_ms: consent.terms.valid_until,
        withdrawn_at_ms: consent.withdrawn_at,
        basis: consent.terms.legal_basis,
        evidence_sha256: consent.terms.evidence_sha256,
    })
}

/// A batch id: a ULID, so batches sort by when they were formed.
fn new_batch_id(now: i64) -> Result<String, StoreError> {
    use ring::rand::SecureRandom;
    let mut random = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut random)
        .map_err(|_| StoreError::Corrupt("the system random source failed".into()))?;
    Ok(ulid::Ulid::from_parts(now as u64, u128::from_be_bytes(random)).to_string())
}
