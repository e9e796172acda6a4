//! The sync outbox: what must reach the hub, in order, durable in the same database as
//! the data, so nothing queued is lost by a crash or a reconnect (the client library's
//! own queue is never the source of truth). The sync stage leases due entries, sends
//! them, and acknowledges them once the hub's receipt is in, or retries them with
//! back-off. A lease that lapses (the stage died mid-send) makes its entries due again;
//! the hub deduplicates by (device id, kind, ref), so a resend is harmless.
//!
//! Only the store writes the audit, so acknowledgements are audited here.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use crate::consent::Usable;
use crate::{Purpose, Store, StoreError, audit};

/// What an outbox entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxKind {
    /// A frame: its anonymized image and metadata (`ref` is the frame id).
    Frame,
    /// A frame's accepted annotation version (`ref` is the frame id).
    Annotation,
    /// An erasure for the hub to carry out (`ref` is the tombstone id).
    Tombstone,
}

impl OutboxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxKind::Frame => "frame",
            OutboxKind::Annotation => "annotation",
            OutboxKind::Tombstone => "tombstone",
        }
    }
}

impl rusqlite::types::FromSql for OutboxKind {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        match value.as_str()? {
            "frame" => Ok(OutboxKind::Frame),
            "annotation" => Ok(OutboxKind::Annotation),
            "tombstone" => Ok(OutboxKind::Tombstone),
            other => Err(rusqlite::types::FromSqlError::Other(format!("`{other}` is not an outbox kind").into())),
        }
    }
}

/// An entry leased to the sync stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub id: i64,
    pub kind: OutboxKind,
    pub reference: String,
    /// Sends tried before this one.
    pub attempts: u32,
}

/// The first retry waits this long; each further one twice as long, up to [`MAX_BACKOFF_MS`].
const FIRST_BACKOFF_MS: i64 = 1_000;
const MAX_BACKOFF_MS: i64 = 60 * 60 * 1_000;

/// The wait before retry number `attempts` (1 for the first): doubling from 1 s, capped
/// at an hour, with up to a quarter of jitter from `salt` so a fleet that lost its hub
/// does not come back in step.
fn backoff_ms(attempts: u32, salt: i64) -> i64 {
    let base = FIRST_BACKOFF_MS.saturating_mul(1 << attempts.saturating_sub(1).min(20)).min(MAX_BACKOFF_MS);
    base + (salt.rem_euclid(1_000) * base / 4_000)
}

impl Store {
    /// Queues `kind`/`reference` for the hub; queuing what is already pending is a no-op.
    pub fn enqueue(&self, kind: OutboxKind, reference: &str) -> Result<i64, StoreError> {
        let now = self.now();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let pending: Option<i64> = tx
            .query_row(
                "SELECT id FROM sync_outbox WHERE kind = ?1 AND ref = ?2 AND state != 'acknowledged'",
                params![kind.as_str(), reference],
                |r| r.get(0),
            )
            .optional()?;
        let id = match pending {
            Some(id) => id,
            None => {
                tx.execute(
                    "INSERT INTO sync_outbox (kind, ref, created_at, next_attempt_at) VALUES (?1, ?2, ?3, ?3)",
                    params![kind.as_str(), reference, now],
                )?;
                tx.last_insert_rowid()
            }
        };
        tx.commit()?;
        Ok(id)
    }

    /// Leases up to `n` due entries, oldest first, for `lease_ms`. Frames and annotations
    /// are checked against the consent rule ([`Usable`], for `sync`) as they are leased:
    /// those no longer usable (withdrawn, ended) leave the outbox instead, so nothing
    /// ineligible is ever handed to the sender.
    pub fn lease(&self, n: u32, lease_ms: i64) -> Result<Vec<Lease>, StoreError> {
        let now = self.now();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let due: Vec<Lease> = {
            let mut stmt = tx.prepare_cached(
                "SELECT id, kind, ref, attempts FROM sync_outbox
                 WHERE (state = 'pending' AND COALESCE(next_attempt_at, 0) <= ?1)
                    OR (state = 'sent' AND leased_until <= ?1)
                 ORDER BY id LIMIT ?2",
            )?;
            stmt.query_map(params![now, n], |r| {
                Ok(Lease { id: r.get(0)?, kind: r.get(1)?, reference: r.get(2)?, attempts: r.get(3)? })
            })?
            .collect::<Result<_, _>>()?
        };
        let (usable, [at, purpose]) = Usable { purpose: Purpose::Sync, at: now }.sql();
        let mut leased = Vec::with_capacity(due.len());
        for lease in due {
            if lease.kind != OutboxKind::Tombstone {
                let ok: bool = tx.query_row(
                    &format!("SELECT EXISTS (SELECT 1 FROM frames f WHERE f.id = CAST(? AS INTEGER) AND {usable})"),
                    params![lease.reference, at, purpose],
                    |r| r.get(0),
                )?;
                if !ok {
                    tx.execute("DELETE FROM sync_outbox WHERE id = ?1", [lease.id])?;
                    continue;
                }
            }
            tx.execute(
                "UPDATE sync_outbox SET state = 'sent', leased_until = ?2 WHERE id = ?1",
                params![lease.id, now + lease_ms],
            )?;
            leased.push(lease);
        }
        tx.commit()?;
        Ok(leased)
    }

    /// The hub's receipt for entries `ids` is in: they are done, their frames and
    /// tombstones marked synced, and the batch audited. Returns how many were leased.
    pub fn acknowledge(&self, ids: &[i64], receipt: &str) -> Result<u64, StoreError> {
        let now = self.now();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut done = 0;
        for &id in ids {
            let entry: Option<(OutboxKind, String)> = tx
                .query_row("SELECT kind, ref FROM sync_outbox WHERE id = ?1 AND state = 'sent'", [id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            let Some((kind, reference)) = entry else { continue };
            tx.execute("UPDATE sync_outbox SET state = 'acknowledged', leased_until = NULL WHERE id = ?1", [id])?;
            match kind {
                OutboxKind::Frame => tx.execute(
                    "UPDATE frames SET synced_at = ?2 WHERE id = CAST(?1 AS INTEGER)",
                    params![reference, now],
                )?,
                OutboxKind::Tombstone => tx.execute(
                    "UPDATE tombstones SET synced_at = ?2 WHERE id = CAST(?1 AS INTEGER)",
                    params![reference, now],
                )?,
                OutboxKind::Annotation => 0,
            };
            done += 1;
        }
        if done > 0 {
            audit::append(
                &tx,
                now,
                "sync",
                "sync.ack",
                "outbox",
                &serde_json::json!({ "entries": done, "receipt": receipt }),
            )?;
        }
        tx.commit()?;
        Ok(done)
    }

    /// Sending entry `id` failed: it is due again after a back-off that doubles with
    /// each attempt (1 s to 1 h, jittered), with the error kept for `sync status`.
    pub fn retry(&self, id: i64, error: &str) -> Result<(), StoreError> {
        let now = self.now();
        let conn = self.conn();
        let attempts: Option<u32> = conn
            .query_row("SELECT attempts FROM sync_outbox WHERE id = ?1 AND state != 'acknowledged'", [id], |r| r.get(0))
            .optional()?;
        let Some(attempts) = attempts else { return Err(StoreError::NotFound(format!("outbox entry {id}"))) };
        let attempts = attempts + 1;
        let error: String = error.chars().take(500).collect();
        conn.execute(
            "UPDATE sync_outbox SET state = 'pending', attempts = ?2, next_attempt_at = ?3, leased_until = NULL, last_error = ?4
             WHERE id = ?1",
            params![id, attempts, now + backoff_ms(attempts, now ^ id), error],
        )?;
        Ok(())
    }

    /// Entries not yet acknowledged.
    pub fn outbox_backlog(&self) -> Result<u64, StoreError> {
        let n: i64 =
            self.conn()
                .query_row("SELECT COUNT(*) FROM sync_outbox WHERE state != 'acknowledged'", [], |r| r.get(0))?;
        Ok(n as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_second_to_an_hour_with_bounded_jitter() {
        assert_eq!(backoff_ms(1, 0), 1_000);
        assert_eq!(backoff_ms(2, 0), 2_000);
        assert_eq!(backoff_ms(30, 0), MAX_BACKOFF_MS);
        for salt in [1, 499, 999, -7] {
            let wait = backoff_ms(3, salt);
            assert!((4_000..=5_000).contains(&wait), "{wait}");
        }
    }
}
