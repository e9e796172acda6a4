//! Retention: frames older than their camera's `keep_days` go, and when the disk runs
//! low the oldest go until it has room again. Frames consented for sync and not yet
//! synced are kept until their own retention ends, unless the disk is critical. Every
//! run is recorded (`retention_runs`) and every deletion audited.

use rusqlite::params;
use serde::{Deserialize, Serialize};

use crate::consent::Usable;
use crate::{FrameFilter, FrameId, Purpose, Store, StoreError};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;
/// Days a tombstone is kept once the hub has acknowledged the erasure it carries: long
/// enough to answer "was it erased everywhere?" with the receipt at hand; the audit
/// log's `erase` entry (filter and count) stays for ever. Tombstones not yet
/// acknowledged are never pruned: sync still has to carry them.
pub const TOMBSTONE_KEEP_DAYS: i64 = 30;
/// Frames removed per step while evicting for space, before free space is read again.
const EVICT_STEP: usize = 32;

/// What to do when the disk is critically full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnCritical {
    /// Refuse new frames; keep every stored one.
    #[default]
    RejectNew,
    /// Remove the oldest frames, whatever their consent, to keep capturing.
    EvictOldest,
}

/// The retention policy. Free space is a fraction of the state directory's disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retention {
    /// Days a frame is kept, unless its camera says otherwise.
    pub keep_days: u32,
    /// Below this free fraction, new frames are refused.
    pub low_free: f64,
    /// Eviction for space frees down to this fraction.
    pub high_free: f64,
    /// Below this, the disk is critical: `on_critical` applies.
    pub critical_free: f64,
    pub on_critical: OnCritical,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep_days: 30,
            low_free: 0.05,
            high_free: 0.10,
            critical_free: 0.02,
            on_critical: OnCritical::RejectNew,
        }
    }
}

/// How a retention run ended: the state the status page and `/metrics` show.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetentionOutcome {
    /// Every mark is met.
    #[default]
    Ok,
    /// Below the high mark, and the frames left are consented for sync and not yet synced.
    DiskLow,
    /// Below the critical mark, and every frame left is protected (or `on_critical` is
    /// `reject_new`).
    DiskCritical,
    /// The state directory's free space cannot be read, so it counts as low.
    UnknownFreeSpace(std::path::PathBuf),
    /// The run failed (the store's error).
    Failed(String),
}

impl RetentionOutcome {
    pub fn is_ok(&self) -> bool {
        *self == RetentionOutcome::Ok
    }
}

impl std::fmt::Display for RetentionOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RetentionOutcome::Ok => f.write_str("ok"),
            RetentionOutcome::DiskLow => {
                f.write_str("disk low: the remaining frames are consented for sync and not yet synced")
            }
            RetentionOutcome::DiskCritical => f.write_str(
                "disk critical: every remaining frame is protected (consented, unsynced) or on_critical is reject_new",
            ),
            RetentionOutcome::UnknownFreeSpace(dir) => write!(
                f,
                "disk free space unknown: cannot read the file system of the state directory {}; new frames are \
                 refused until it can be read (check that the directory exists and is readable by the obscura user)",
                dir.display()
            ),
            RetentionOutcome::Failed(error) => write!(f, "failed: {error}"),
        }
    }
}

/// What a retention run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RetentionReport {
    pub finished_at: i64,
    /// Frames past their camera's `keep_days`.
    pub expired: u64,
    /// Frames removed for space.
    pub evicted: u64,
    /// Tombstones pruned, [`TOMBSTONE_KEEP_DAYS`] after the hub acknowledged them.
    pub pruned_tombstones: u64,
    pub freed_bytes: u64,
    /// Whether new frames must be refused until the next run.
    pub refuse_new: bool,
    /// Ok, or what stopped the run short.
    pub outcome: RetentionOutcome,
    /// Why the run could not be recorded in `retention_runs` (a full disk), if so; its
    /// decisions stand all the same.
    pub unrecorded: Option<String>,
}

impl Store {
    /// Runs retention now. `free` reads the free fraction of the disk; it is called
    /// again after each eviction step.
    pub fn retain(&self, policy: &Retention, free: &dyn Fn() -> f64) -> Result<RetentionReport, StoreError> {
        let started = self.now();
        let mut report = RetentionReport::default();
        // 1. Age: each camera's own keep_days, else the policy's.
        let expired: Vec<FrameId> = {
            let conn = self.conn();
            let mut stmt = conn.prepare(
                "SELECT f.id FROM frames f LEFT JOIN cameras c ON c.id = f.camera_id
                 WHERE f.captured_at < ?1 - COALESCE(c.keep_days, ?2) * ?3",
            )?;
            stmt.query_map(params![started, policy.keep_days, DAY_MS], |r| r.get(0))?.collect::<Result<_, _>>()?
        };
        for chunk in expired.chunks(256) {
            let erased = self.expire(&FrameFilter { ids: chunk.to_vec(), ..Default::default() }, "keep_days passed")?;
            report.expired += erased.frames;
            report.freed_bytes += erased.bytes;
        }
        // 2. Space: oldest first, sparing unsynced frames with a sync consent unless critical.
        let mut outcome = RetentionOutcome::Ok;
        while free() < policy.high_free {
            let critical = free() < policy.critical_free;
            let any = critical && policy.on_critical == OnCritical::EvictOldest;
            let victims = self.oldest(EVICT_STEP, any)?;
            if victims.is_empty() {
                outcome = if critical { RetentionOutcome::DiskCritical } else { RetentionOutcome::DiskLow };
                break;
            }
            let reason = if any { "disk critical" } else { "disk low" };
            let erased = self.expire(&FrameFilter { ids: victims, ..Default::default() }, reason)?;
            report.evicted += erased.frames;
            report.freed_bytes += erased.bytes;
        }
        report.pruned_tombstones = self.conn().execute(
            "DELETE FROM tombstones WHERE synced_at IS NOT NULL AND synced_at < ?1",
            [self.now() - TOMBSTONE_KEEP_DAYS * DAY_MS],
        )? as u64;
        let now_free = free();
        report.refuse_new = now_free < policy.low_free
            || (now_free < policy.critical_free && policy.on_critical == OnCritical::RejectNew);
        report.finished_at = self.now();
        report.outcome = outcome;
        // On a full disk even this row may not fit; the decision above still stands.
        let recorded = self.conn().execute(
            "INSERT INTO retention_runs (started_at, finished_at, removed, freed_bytes, outcome) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                started,
                report.finished_at,
                (report.expired + report.evicted) as i64,
                report.freed_bytes as i64,
                report.outcome.to_string()
            ],
        );
        if let Err(e) = recorded {
            report.unrecorded = Some(e.to_string());
        }
        Ok(report)
    }

    /// The oldest `n` frames that may be evicted for space (`any`: every frame).
    fn oldest(&self, n: usize, any: bool) -> Result<Vec<FrameId>, StoreError> {
        let (usable, [at, purpose]) = Usable { purpose: Purpose::Sync, at: self.now() }.sql();
        // The first parameter: whether every frame may go.
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT f.id FROM frames f WHERE ? OR NOT (f.synced_at IS NULL AND {usable})
             ORDER BY f.captured_at, f.id LIMIT ?"
        ))?;
        Ok(stmt.query_map(params![any, at, purpose, n as i64], |r| r.get(0))?.collect::<Result<_, _>>()?)
    }

    /// The last retention run, if any: (finished_at, removed, freed_bytes, outcome).
    pub fn last_retention(&self) -> Result<Option<(i64, u64, u64, String)>, StoreError> {
        use rusqlite::OptionalExtension;
        Ok(self
            .conn()
            .query_row(
                "SELECT finished_at, removed, freed_bytes, outcome FROM retention_runs ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64, r.get(3)?)),
            )
            .optional()?)
    }
}
