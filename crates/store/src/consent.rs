//! Consent records (ARCHITECTURE.md, "Consent"): who is covered, where, on what legal
//! basis, for which purposes and when. A frame is linked at capture to every consent
//! then covering its camera; it may be used for a purpose only while one of those gives
//! that purpose, is not withdrawn and has not ended ([`Usable`], the one rule).

use std::fmt;
use std::str::FromStr;

use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

use crate::ConsentId;
use crate::{Store, StoreError, audit};

/// What a consent allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    Annotate,
    Sync,
    Train,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Annotate => "annotate",
            Purpose::Sync => "sync",
            Purpose::Train => "train",
        }
    }
}

/// The one rule for what a frame may be used for (ARCHITECTURE.md, invariant 3): frame `f`
/// may be used for `purpose` at time `at` only if it is not local-only and a consent
/// linked to it at capture gives the purpose, is not withdrawn, and has no end date or
/// one after `at`. Export, the API, queues, retention and sync all ask through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usable {
    pub purpose: Purpose,
    /// Unix milliseconds.
    pub at: i64,
}

impl Usable {
    /// SQL over `frames f`, and its parameters in order.
    pub fn sql(self) -> (String, [rusqlite::types::Value; 2]) {
        (
            format!(
                "f.local_only = 0 AND EXISTS (SELECT 1 FROM frame_consents fc JOIN consents c ON c.id = fc.consent_id
                 WHERE fc.frame_id = f.id AND {IN_FORCE})"
            ),
            self.values(),
        )
    }

    /// Its parameters: the time, then the purpose.
    pub fn values(self) -> [rusqlite::types::Value; 2] {
        [rusqlite::types::Value::Integer(self.at), rusqlite::types::Value::Text(self.purpose.as_str().into())]
    }
}

/// SQL: consent `c` is in force at time `?1` and gives purpose `?2`.
pub(crate) const IN_FORCE: &str = "c.withdrawn_at IS NULL AND (c.valid_until IS NULL OR c.valid_until > ?)
     AND EXISTS (SELECT 1 FROM consent_purposes cp WHERE cp.consent_id = c.id AND cp.purpose = ?)";

impl FromStr for Purpose {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "annotate" => Ok(Purpose::Annotate),
            "sync" => Ok(Purpose::Sync),
            "train" => Ok(Purpose::Train),
            other => Err(format!("unknown purpose `{other}`: use annotate, sync or train")),
        }
    }
}

/// Where a consent applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum Scope {
    /// Every camera of this box.
    Device,
    Camera(String),
    /// Every camera configured with this zone.
    Zone(String),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Device => f.write_str("device"),
            Scope::Camera(c) => write!(f, "camera:{c}"),
            Scope::Zone(z) => write!(f, "zone:{z}"),
        }
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            None if s == "device" => Ok(Scope::Device),
            Some(("camera", c)) if !c.is_empty() => Ok(Scope::Camera(c.to_owned())),
            Some(("zone", z)) if !z.is_empty() => Ok(Scope::Zone(z.to_owned())),
            _ => Err(format!("`{s}` is not a scope: write device, camera:ID or zone:NAME")),
        }
    }
}

/// A consent's terms: what is recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewConsent {
    pub scope: Scope,
    /// Who is covered, e.g. "site staff" or "public under signage".
    pub covered: String,
    pub legal_basis: String,
    pub purposes: Vec<Purpose>,
    /// Unix milliseconds.
    pub valid_from: i64,
    pub valid_until: Option<i64>,
    /// SHA-256 of the signed form, signage photo or contract.
    pub evidence_sha256: Option<String>,
    pub recorded_by: String,
}

/// A recorded consent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Consent {
    pub id: ConsentId,
    #[serde(flatten)]
    pub terms: NewConsent,
    pub recorded_at: i64,
    pub withdrawn_at: Option<i64>,
    /// Frames linked to it.
    pub frames: i64,
}

const COLUMNS: &str = "c.id, c.scope, c.scope_ref, c.covered, c.legal_basis, \
     (SELECT group_concat(purpose, ',') FROM (SELECT purpose FROM consent_purposes p WHERE p.consent_id = c.id ORDER BY purpose)), \
     c.valid_from, c.valid_until, \
     c.evidence_sha256, c.recorded_by, c.recorded_at, c.withdrawn_at, \
     (SELECT COUNT(*) FROM frame_consents fc WHERE fc.consent_id = c.id)";

/// Consent `id`, read inside a caller's transaction.
pub(crate) fn read(conn: &rusqlite::Connection, id: &str) -> Result<Consent, StoreError> {
    conn.query_row(&format!("SELECT {COLUMNS} FROM consents c WHERE c.id = ?1"), [id], from_row)
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("consent `{id}`")))
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<Consent> {
    let (kind, name): (String, Option<String>) = (r.get(1)?, r.get(2)?);
    let scope = match (kind.as_str(), name) {
        ("camera", Some(c)) => Scope::Camera(c),
        ("zone", Some(z)) => Scope::Zone(z),
        _ => Scope::Device,
    };
    let purposes: Option<String> = r.get(5)?;
    let purposes = purposes.unwrap_or_default();
    Ok(Consent {
        id: r.get(0)?,
        terms: NewConsent {
            scope,
            covered: r.get(3)?,
            legal_basis: r.get(4)?,
            // The column's CHECK keeps every value a purpose.
            purposes: purposes.split(',').filter_map(|p| p.parse().ok()).collect(),
            valid_from: r.get(6)?,
            valid_until: r.get(7)?,
            evidence_sha256: r.get(8)?,
            recorded_by: r.get(9)?,
        },
        recorded_at: r.get(10)?,
        withdrawn_at: r.get(11)?,
        frames: r.get(12)?,
    })
}

impl Store {
    /// Records a consent; returns it with its new id.
    pub fn add_consent(&self, new: NewConsent) -> Result<Consent, StoreError> {
        if new.purposes.is_empty() {
            return Err(StoreError::Invalid("a consent needs at least one purpose: annotate, sync or train".into()));
        }
        if new.covered.trim().is_empty() || new.legal_basis.trim().is_empty() {
            return Err(StoreError::Invalid("a consent needs who is covered and its legal basis".into()));
        }
        if let Some(until) = new.valid_until
            && until <= new.valid_from
        {
            return Err(StoreError::Invalid("the consent ends before it starts".into()));
        }
        if let Some(e) = &new.evidence_sha256
            && (e.len() != 64 || !e.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(StoreError::Invalid(format!("evidence `{e}` is not a SHA-256 in hex (64 digits)")));
        }
        let now = self.now();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n: i64 = tx.query_row("SELECT COUNT(*) FROM consents", [], |r| r.get(0))?;
        let id = ConsentId(format!("c{}", n + 1));
        let (kind, name) = match &new.scope {
            Scope::Device => ("device", None),
            Scope::Camera(c) => ("camera", Some(c.as_str())),
            Scope::Zone(z) => ("zone", Some(z.as_str())),
        };
        let mut purposes: Vec<&str> = new.purposes.iter().map(|p| p.as_str()).collect();
        purposes.sort_unstable();
        purposes.dedup();
        tx.execute(
            "INSERT INTO consents (id, scope, scope_ref, covered, legal_basis, valid_from, valid_until,
                                   evidence_sha256, recorded_by, recorded_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                id,
                kind,
                name,
                new.covered,
                new.legal_basis,
                new.valid_from,
                new.valid_until,
                new.evidence_sha256,
                new.recorded_by,
                now
            ],
        )?;
        for purpose in &purposes {
            tx.execute("INSERT INTO consent_purposes (consent_id, purpose) VALUES (?1, ?2)", params![id, purpose])?;
        }
        audit::append(
            &tx,
            now,
            &new.recorded_by,
            "consent.add",
            &format!("consent/{id}"),
            &serde_json::json!({ "scope": new.scope.to_string(), "purposes": purposes, "legal_basis": new.legal_basis }),
        )?;
        tx.commit()?;
        drop(conn);
        self.consent(&id)
    }

    pub fn consent(&self, id: &ConsentId) -> Result<Consent, StoreError> {
        self.conn()
            .query_row(&format!("SELECT {COLUMNS} FROM consents c WHERE c.id = ?1"), [id], from_row)
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("consent `{id}`")))
    }

    pub fn consents(&self) -> Result<Vec<Consent>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM consents c ORDER BY c.recorded_at, c.id"))?;
        Ok(stmt.query_map([], from_row)?.collect::<Result<_, _>>()?)
    }

    /// Withdraws a consent now. Its frames become ineligible for every purpose it gave
    /// (unless another consent covers them), their pending sync entries are dropped, and
    /// frames already synced get tombstones asking the hub to erase its copy.
    pub fn withdraw_consent(&self, id: &ConsentId, actor: &str) -> Result<Consent, StoreError> {
        let now = self.now();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let changed = tx.execute(
            "UPDATE consents SET withdrawn_at = ?2 WHERE id = ?1 AND withdrawn_at IS NULL",
            params![id, now],
        )?;
        if changed == 0 {
            let exists: bool =
                tx.query_row("SELECT EXISTS (SELECT 1 FROM consents WHERE id = ?1)", [id], |r| r.get(0))?;
            return Err(if exists {
                StoreError::Invalid(format!("consent `{id}` is already withdrawn"))
            } else {
                StoreError::NotFound(format!("consent `{id}`"))
            });
        }
        // Frames of this consent that no consent still in force lets sync.
        let (usable, [at, purpose]) = Usable { purpose: Purpose::Sync, at: now }.sql();
        let unsyncable: Vec<(i64, bool, Option<String>)> = {
            let mut stmt = tx.prepare(&format!(
                "SELECT f.id, f.synced_at IS NOT NULL, f.sha256 FROM frames f JOIN frame_consents own ON own.frame_id = f.id
                 WHERE own.consent_id = ?1 AND NOT ({usable})"
            ))?;
            stmt.query_map(params![id, at, purpose], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?
        };
        let (mut dropped, mut recalled) = (0, 0);
        for (frame, synced, sha256) in unsyncable {
            // A batch not yet sent dissolves before it goes (`due_batch` checks again).
            dropped += tx.query_row(
                "SELECT COUNT(*) FROM sync_batch_frames bf JOIN sync_batches b ON b.id = bf.batch_id
                 WHERE bf.frame_id = ?1 AND b.state = 'pending'",
                [frame],
                |r| r.get::<_, i64>(0),
            )?;
            if synced {
                recalled += tx.execute(
                    "INSERT INTO tombstones (kind, ref, frame_id, erased_at, reason, sha256) VALUES ('frame', ?1, ?2, ?3, ?4, ?5)",
                    params![frame.to_string(), frame, now, format!("consent {id} withdrawn"), sha256],
                )?;
            }
        }
        audit::append(
            &tx,
            now,
            actor,
            "consent.withdraw",
            &format!("consent/{id}"),
            &serde_json::json!({ "pending_sync_dropped": dropped, "hub_erasures_requested": recalled }),
        )?;
        tx.commit()?;
        drop(conn);
        self.consent(id)
    }
}

impl Store {
    /// Whether a frame of `camera` captured at `at` would be usable for `purpose`: a
    /// consent covering the camera then (device, camera or its zone) gives it and is in
    /// force. The live view asks this, since its frames are never stored.
    pub fn camera_consented(&self, camera: &str, purpose: Purpose, at_ms: i64) -> Result<bool, StoreError> {
        Ok(covering(&self.reader(), camera, at_ms)?.iter().any(|(_, purposes)| purposes.contains(&purpose)))
    }
}

/// The consents covering `camera` at `at`, in force then, with the purposes each gives.
pub(crate) fn covering(
    conn: &rusqlite::Connection,
    camera: &str,
    at: i64,
) -> Result<Vec<(String, Vec<Purpose>)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT c.id, (SELECT group_concat(purpose, ',') FROM consent_purposes p WHERE p.consent_id = c.id)
         FROM consents c
         WHERE c.withdrawn_at IS NULL AND c.valid_from <= ?2 AND (c.valid_until IS NULL OR c.valid_until > ?2)
           AND (c.scope = 'device'
                OR (c.scope = 'camera' AND c.scope_ref = ?1)
                OR (c.scope = 'zone' AND c.scope_ref = (SELECT zone FROM cameras WHERE id = ?1)))
         ORDER BY c.id",
    )?;
    let rows = stmt.query_map(params![camera, at], |r| {
        let purposes: Option<String> = r.get(1)?;
        Ok((
            r.get::<_, String>(0)?,
            purposes.unwrap_or_default().split(',').filter_map(|p| p.parse().ok()).collect::<Vec<Purpose>>(),
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_purposes_parse_and_name_the_fix() {
        assert_eq!("camera:gate".parse::<Scope>(), Ok(Scope::Camera("gate".into())));
        assert_eq!("device".parse::<Scope>(), Ok(Scope::Device));
        assert!("camera:".parse::<Scope>().unwrap_err().contains("camera:ID"));
        assert!("store".parse::<Purpose>().unwrap_err().contains("annotate, sync or train"));
    }
}
