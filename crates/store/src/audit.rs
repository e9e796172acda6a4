//! The audit log: append-only (triggers refuse UPDATE and DELETE) and hash-chained.
//! Each entry's hash is SHA-256 over the previous hash and a canonical JSON encoding of
//! the entry, so an edited, removed or reordered entry breaks the chain from there on.

use ring::digest;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::StoreError;
use crate::blobs::hex;

/// The hash before the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub detail: serde_json::Value,
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("audit entry {seq}: {problem}")]
pub struct ChainBreak {
    pub seq: i64,
    pub problem: String,
}

fn hash(prev: &str, seq: i64, at: i64, actor: &str, action: &str, subject: &str, detail: &str) -> String {
    // A JSON array: every field delimited and escaped, so no two entries encode the same.
    let canonical = serde_json::to_string(&(seq, at, actor, action, subject, detail)).expect("strings serialize");
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(prev.as_bytes());
    ctx.update(canonical.as_bytes());
    hex(ctx.finish().as_ref())
}

/// Appends an entry; call inside the transaction that makes the change it records.
pub(crate) fn append(
    conn: &Connection,
    at: i64,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &serde_json::Value,
) -> Result<i64, StoreError> {
    let last: Option<(i64, String)> = conn
        .query_row("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (seq, prev) = last.map_or((1, GENESIS.to_owned()), |(s, h)| (s + 1, h));
    let detail = detail.to_string();
    let h = hash(&prev, seq, at, actor, action, subject, &detail);
    conn.execute(
        "INSERT INTO audit_log (seq, at, actor, action, subject, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![seq, at, actor, action, subject, detail, prev, h],
    )?;
    Ok(seq)
}

/// Walks the chain from the start; returns the number of entries, or the first bad one.
pub(crate) fn verify(conn: &Connection) -> Result<Result<u64, ChainBreak>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT seq, at, actor, action, subject, detail, prev_hash, hash FROM audit_log ORDER BY seq")?;
    let mut rows = stmt.query([])?;
    let (mut expected_seq, mut prev, mut n) = (1i64, GENESIS.to_owned(), 0u64);
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        let (at, actor, action, subject, detail): (i64, String, String, String, String) =
            (row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?);
        let (stored_prev, stored): (String, String) = (row.get(6)?, row.get(7)?);
        let bad = |problem: &str| Ok(Err(ChainBreak { seq, problem: problem.to_owned() }));
        if seq != expected_seq {
            return Ok(Err(ChainBreak {
                seq: expected_seq,
                problem: format!("missing (the next entry is {seq}): removed"),
            }));
        }
        if stored_prev != prev {
            return bad("does not follow the entry before it: removed or reordered");
        }
        if hash(&prev, seq, at, &actor, &action, &subject, &detail) != stored {
            return bad("its content does not match its hash: edited");
        }
        prev = stored;
        expected_seq += 1;
        n += 1;
    }
    Ok(Ok(n))
}

/// Entries about `subject` prefixes, for access exports.
/// An `audit_log` row selected as seq, at, actor, action, subject, detail.
fn entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    let detail: String = r.get(5)?;
    Ok(AuditEntry {
        seq: r.get(0)?,
        at: r.get(1)?,
        actor: r.get(2)?,
        action: r.get(3)?,
        subject: r.get(4)?,
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
    })
}

pub(crate) fn entries(conn: &Connection, subject_like: &str) -> Result<Vec<AuditEntry>, StoreError> {
    let mut stmt = conn
        .prepare("SELECT seq, at, actor, action, subject, detail FROM audit_log WHERE subject LIKE ?1 ORDER BY seq")?;
    let rows = stmt.query_map([subject_like], entry)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

impl crate::Store {
    /// A page of the audit log, oldest first: entries after `after` (a seq), at most
    /// `limit`, optionally only actions starting with `action`.
    pub fn audit_page(&self, after: i64, limit: u32, action: Option<&str>) -> Result<Vec<AuditEntry>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, at, actor, action, subject, detail FROM audit_log
             WHERE seq > ?1 AND (?2 IS NULL OR action LIKE ?2 || '%') ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(rusqlite::params![after, action, limit], entry)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
