//! The audit log: append-only (triggers refuse UPDATE and DELETE) and hash-chained.
//! Each entry's hash is SHA-256 over the previous hash and a canonical JSON encoding of
//! the entry, so an edited, removed or reordered entry breaks the chain from there on.

use ring::{digest, hmac};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::StoreError;

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
    hex::encode(ctx.finish())
}

/// The settings key of the chain's head, signed with the device's anchor key.
const HEAD: &str = "audit.head";

/// The chain's newest entry: what the head anchor records and sync receipts carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditHead {
    pub seq: i64,
    pub hash: String,
}

fn sign(key: &hmac::Key, seq: i64, hash: &str) -> String {
    hex::encode(hmac::sign(key, format!("{seq}:{hash}").as_bytes()))
}

/// The SQL function that signs a head, registered on the store's connection with the
/// device's anchor key (so no other connection, such as the sqlite3 shell, can sign).
const SIGN_FN: &str = "obscura_sign_head";

/// Registers [`SIGN_FN`] on `conn`.
pub(crate) fn register(conn: &Connection, key: hmac::Key) -> Result<(), StoreError> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        SIGN_FN,
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        move |ctx| Ok(sign(&key, ctx.get::<i64>(0)?, &ctx.get::<String>(1)?)),
    )?;
    Ok(())
}

/// Records `seq`/`hash` as the chain's head, signed, in the same transaction as the
/// entry: cutting entries off the end then no longer goes unnoticed.
pub(crate) fn anchor(conn: &Connection, seq: i64, hash: &str) -> Result<(), StoreError> {
    conn.prepare_cached(&format!(
        "INSERT INTO settings (key, value) VALUES (?1, ?2 || ' ' || ?3 || ' ' || {SIGN_FN}(?2, ?3))
             ON CONFLICT (key) DO UPDATE SET value = excluded.value"
    ))?
    .execute(params![HEAD, seq, hash])?;
    Ok(())
}

/// The newest entry, if any.
pub(crate) fn head(conn: &Connection) -> Result<Option<AuditHead>, StoreError> {
    Ok(conn
        .query_row("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1", [], |r| {
            Ok(AuditHead { seq: r.get(0)?, hash: r.get(1)? })
        })
        .optional()?)
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
        .prepare_cached("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (seq, prev) = last.map_or((1, GENESIS.to_owned()), |(s, h)| (s + 1, h));
    let detail = detail.to_string();
    let h = hash(&prev, seq, at, actor, action, subject, &detail);
    conn.prepare_cached(
        "INSERT INTO audit_log (seq, at, actor, action, subject, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![seq, at, actor, action, subject, detail, prev, h])?;
    anchor(conn, seq, &h)?;
    Ok(seq)
}

/// Walks the chain from the start, then checks its end against the signed head anchor;
/// returns the number of entries, or the first bad one.
pub(crate) fn verify(conn: &Connection, key: &hmac::Key) -> Result<Result<u64, ChainBreak>, StoreError> {
    let n = match walk(conn)? {
        Ok(n) => n,
        broken => return Ok(broken),
    };
    let anchored: Option<String> =
        conn.query_row("SELECT value FROM settings WHERE key = ?1", [HEAD], |r| r.get(0)).optional()?;
    let head = head(conn)?;
    let Some(anchored) = anchored else {
        return Ok(match head {
            None => Ok(n),
            Some(head) => Err(ChainBreak {
                seq: head.seq,
                problem:
                    "the chain's signed head anchor is missing: it was removed, or the log was written outside Obscura"
                        .into(),
            }),
        });
    };
    let mut parts = anchored.split(' ');
    let (seq, hash, mac) = (parts.next().and_then(|s| s.parse::<i64>().ok()), parts.next(), parts.next());
    let (Some(seq), Some(hash), Some(mac)) = (seq, hash, mac) else {
        return Ok(Err(ChainBreak { seq: 0, problem: format!("the head anchor `{anchored}` is malformed") }));
    };
    if hmac::verify(key, format!("{seq}:{hash}").as_bytes(), &hex::decode(mac).unwrap_or_default()).is_err() {
        return Ok(Err(ChainBreak {
            seq,
            problem: "the head anchor's signature is wrong: it was forged or copied from another box".into(),
        }));
    }
    Ok(match head {
        Some(h) if h.seq == seq && h.hash == hash => Ok(n),
        Some(h) if h.seq > seq => Err(ChainBreak {
            seq: seq + 1,
            problem: format!("entries {} to {} were added after the signed head, outside Obscura", seq + 1, h.seq),
        }),
        Some(h) if h.seq == seq => {
            Err(ChainBreak { seq, problem: "differs from the signed head: the log's end was rewritten".into() })
        }
        _ => Err(ChainBreak {
            seq: head.map_or(1, |h| h.seq + 1),
            problem: format!("missing: the signed head is entry {seq}, so the log's end was cut off"),
        }),
    })
}

/// The chain itself, from the genesis hash.
fn walk(conn: &Connection) -> Result<Result<u64, ChainBreak>, StoreError> {
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

/// An `audit_log` row selected as seq, at, actor, action, subject, detail.
fn entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        seq: r.get(0)?,
        at: r.get(1)?,
        actor: r.get(2)?,
        action: r.get(3)?,
        subject: r.get(4)?,
        detail: crate::json_column(r, 5)?,
    })
}

/// `text` as a LIKE pattern that matches itself only: `\\`, `%` and `_` escaped, for a
/// query that says `ESCAPE '\\'`.
pub(crate) fn like_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl crate::Store {
    /// Audit entries whose subject starts with `prefix` (taken literally), oldest first:
    /// for access exports.
    pub fn audit_entries(&self, prefix: &str) -> Result<Vec<AuditEntry>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, at, actor, action, subject, detail FROM audit_log WHERE subject LIKE ?1 ESCAPE '\\' ORDER BY seq",
        )?;
        let rows = stmt.query_map([format!("{}%", like_literal(prefix))], entry)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A page of the audit log, oldest first: entries after `after` (a seq), at most
    /// `limit`, optionally only actions starting with `action`.
    pub fn audit_page(&self, after: i64, limit: u32, action: Option<&str>) -> Result<Vec<AuditEntry>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, at, actor, action, subject, detail FROM audit_log
             WHERE seq > ?1 AND (?2 IS NULL OR action LIKE ?2 || '%' ESCAPE '\\') ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(rusqlite::params![after, action.map(like_literal), limit], entry)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
