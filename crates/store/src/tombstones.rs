//! Tombstones: what was erased, by id only, so sync can ask the hub to erase its copy.
//! Only frames the hub may hold get one (sent, acknowledged or not); each is kept until
//! the hub acknowledges it and [`crate::retention::TOMBSTONE_KEEP_DAYS`] more, then
//! pruned by retention. The audit log's `erase` entry stays for ever.

use rusqlite::params;
use serde::Serialize;

use crate::FrameId;
use crate::{Store, StoreError};

/// An erasure for the hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tombstone {
    pub id: i64,
    /// The erased frame's local id.
    pub frame: FrameId,
    pub erased_at: i64,
    pub reason: String,
    /// When the hub acknowledged it.
    pub synced_at: Option<i64>,
}

impl Store {
    /// Every tombstone still kept, oldest first.
    pub fn tombstones(&self) -> Result<Vec<Tombstone>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, frame_id, erased_at, reason, synced_at FROM tombstones WHERE kind = 'frame' ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Tombstone {
                id: r.get(0)?,
                frame: r.get(1)?,
                erased_at: r.get(2)?,
                reason: r.get(3)?,
                synced_at: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The hub erased its copies for tombstones `ids`; returns how many were pending.
    pub fn acknowledge_tombstones(&self, ids: &[i64]) -> Result<u64, StoreError> {
        let now = self.now();
        let conn = self.conn();
        let mut done = 0;
        for id in ids {
            done += conn.execute(
                "UPDATE tombstones SET synced_at = ?2 WHERE id = ?1 AND synced_at IS NULL",
                params![id, now],
            )?;
        }
        Ok(done as u64)
    }
}
