//! Versioned schema migrations, embedded in the binary. `PRAGMA user_version` holds the
//! version a database is at; each newer migration runs in its own transaction, so a
//! crash mid-upgrade leaves the previous version intact.

use rusqlite::{Connection, OptionalExtension};

use crate::StoreError;

/// The migrations in order; the version after running `MIGRATIONS[i]` is `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_initial.sql"),
    include_str!("../migrations/0002_prelabel.sql"),
    include_str!("../migrations/0003_web.sql"),
    include_str!("../migrations/0004_dismissed.sql"),
    include_str!("../migrations/0005_review.sql"),
    include_str!("../migrations/0006_sync.sql"),
    include_str!("../migrations/0007_consent_updates.sql"),
    include_str!("../migrations/0008_erasure.sql"),
    include_str!("../migrations/0009_label_instructions.sql"),
    include_str!("../migrations/0010_frames_by_camera.sql"),
];

/// The first version whose audit log has a signed head: older logs are anchored as found
/// when they are upgraded.
pub(crate) const ANCHORED: u32 = 5;

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

pub(crate) fn migrate(conn: &mut Connection) -> Result<u32, StoreError> {
    migrate_to(conn, SCHEMA_VERSION)
}

fn migrate_to(conn: &mut Connection, target: u32) -> Result<u32, StoreError> {
    let current: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::Config(format!(
            "the database is at schema version {current}, newer than this build's {SCHEMA_VERSION}; upgrade Obscura"
        )));
    }
    // A migration may rebuild a table others reference (SQLite's way to change a
    // column): foreign keys are off while it runs, so dropping the old table cascades
    // nothing, and checked before it commits. The pragma is a no-op inside a transaction.
    conn.pragma_update(None, "foreign_keys", false)?;
    let result = (|| {
        for (i, sql) in
            MIGRATIONS.iter().enumerate().skip(current as usize).take(target.saturating_sub(current) as usize)
        {
            let version = i as u32 + 1;
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            let broken: Option<String> = tx
                .query_row("SELECT \"table\" || ' row ' || rowid FROM pragma_foreign_key_check LIMIT 1", [], |r| {
                    r.get(0)
                })
                .optional()?;
            if let Some(row) = broken {
                return Err(StoreError::Corrupt(format!(
                    "schema version {version} would leave {row} pointing at nothing; the database was not changed"
                )));
            }
            tx.pragma_update(None, "user_version", version)?;
            tx.commit()?;
            tracing::info!(target: "obscura::store", version, "database schema migrated");
        }
        Ok(target.max(current))
    })();
    conn.pragma_update(None, "foreign_keys", true)?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(conn: &Connection) -> Vec<String> {
        let mut stmt = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn an_empty_database_gets_every_table() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), SCHEMA_VERSION);
        for table in [
            "annotations",
            "audit_log",
            "cameras",
            "consents",
            "detections",
            "frame_consents",
            "frames",
            "label_attributes",
            "labels",
            "queue_items",
            "queues",
            "retention_runs",
            "reviews",
            "sessions",
            "settings",
            "sync_batches",
            "sync_consents_sent",
            "tombstones",
            "users",
        ] {
            assert!(tables(&conn).contains(&table.to_owned()), "{table} missing");
        }
        // Running again is a no-op.
        assert_eq!(migrate(&mut conn).unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn each_version_upgrades_from_the_one_before_keeping_its_data() {
        for from in 0..SCHEMA_VERSION {
            let mut conn = Connection::open_in_memory().unwrap();
            migrate_to(&mut conn, from).unwrap();
            if from >= 1 {
                conn.execute("INSERT INTO settings (key, value) VALUES ('kept', 'yes')", []).unwrap();
                conn.execute("INSERT INTO cameras (id, created_at) VALUES ('gate', 0)", []).unwrap();
                conn.execute(
                    "INSERT INTO frames (camera_id, seq, captured_at, blob_id, bytes, width, height, provenance)
                     VALUES ('gate', 1, 0, 'b', 1, 1, 1, '{}')",
                    [],
                )
                .unwrap();
            }
            assert_eq!(migrate(&mut conn).unwrap(), SCHEMA_VERSION);
            let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
            assert_eq!(version, SCHEMA_VERSION);
            if from >= 1 {
                let kept: String =
                    conn.query_row("SELECT value FROM settings WHERE key = 'kept'", [], |r| r.get(0)).unwrap();
                assert_eq!(kept, "yes");
                // A frame from before version 2 awaits pre-labels.
                let awaiting: i64 = conn
                    .query_row("SELECT COUNT(*) FROM frames WHERE prelabeled_at IS NULL", [], |r| r.get(0))
                    .unwrap();
                assert_eq!(awaiting, 1, "from version {from}");
            }
        }
    }

    #[test]
    fn a_newer_database_is_refused_with_the_fix() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        let err = migrate(&mut conn).unwrap_err().to_string();
        assert!(err.contains("upgrade Obscura"), "{err}");
    }
}
