//! Human annotations, versioned: a save names the version it started from, and a save
//! from a stale version is refused as a conflict instead of overwriting someone else's
//! work. Every version is kept, with its author and time.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use crate::{Store, StoreError, audit};

/// One saved version of a frame's annotations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Annotation {
    pub frame: i64,
    pub version: i64,
    /// The shapes, as the client sent them (boxes and polygons with label and attributes).
    pub shapes: serde_json::Value,
    pub author: String,
    pub created_at: i64,
    /// Ids of the frame's pre-label detections people rejected.
    pub dismissed: Vec<i64>,
}

/// A save that started from a version that is no longer the newest.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[error(
    "frame {frame}: the annotations changed since version {base} (now version {current}, by {author}); reload and redo the edit"
)]
pub struct Conflict {
    pub frame: i64,
    pub base: i64,
    pub current: i64,
    pub author: String,
}

impl Store {
    /// The newest version of a frame's annotations, if any.
    pub fn annotation(&self, frame: i64) -> Result<Option<Annotation>, StoreError> {
        let row = self
            .conn()
            .query_row(
                "SELECT version, shapes, author, created_at, dismissed FROM annotations WHERE frame_id = ?1
                 ORDER BY version DESC LIMIT 1",
                [frame],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                },
            )
            .optional()?;
        Ok(row.map(|(version, shapes, author, created_at, dismissed)| Annotation {
            frame,
            version,
            shapes: serde_json::from_str(&shapes).unwrap_or(serde_json::Value::Null),
            author,
            created_at,
            dismissed: serde_json::from_str(&dismissed).unwrap_or_default(),
        }))
    }

    /// Saves a new version of a frame's annotations, started from version `base` (0 for
    /// none), keeping the pre-labels dismissed so far. Returns the new version, or the
    /// conflict if someone saved since `base`.
    pub fn save_annotation(
        &self,
        frame: i64,
        base: i64,
        shapes: &serde_json::Value,
        author: &str,
    ) -> Result<Result<i64, Conflict>, StoreError> {
        self.save_annotation_dismissing(frame, base, shapes, None, author)
    }

    /// Like [`Store::save_annotation`], also setting which of the frame's pre-labels
    /// (detection ids) are dismissed; `None` keeps the current version's. Ids that are
    /// not the frame's pre-labels are refused.
    pub fn save_annotation_dismissing(
        &self,
        frame: i64,
        base: i64,
        shapes: &serde_json::Value,
        dismissed: Option<&[i64]>,
        author: &str,
    ) -> Result<Result<i64, Conflict>, StoreError> {
        if !shapes.is_array() {
            return Err(StoreError::Invalid("annotations must be a JSON array of shapes".into()));
        }
        let now = self.now();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let (camera, local_only): (String, bool) = tx
            .query_row("SELECT camera_id, local_only FROM frames WHERE id = ?1", [frame], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("frame {frame}")))?;
        if local_only {
            return Err(StoreError::Invalid(format!(
                "frame {frame} is local-only: no consent to annotate covered it when it was captured"
            )));
        }
        let current: Option<(i64, String, String)> = tx
            .query_row(
                "SELECT version, author, dismissed FROM annotations WHERE frame_id = ?1 ORDER BY version DESC LIMIT 1",
                [frame],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let (current, by, kept) = current.unwrap_or((0, String::new(), "[]".into()));
        if current != base {
            return Ok(Err(Conflict { frame, base, current, author: by }));
        }
        let dismissed = match dismissed {
            None => kept,
            Some(ids) => {
                let mut stmt = tx.prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM detections WHERE id = ?1 AND frame_id = ?2 AND source = 'prelabel')",
                )?;
                for &id in ids {
                    if !stmt.query_row(params![id, frame], |r| r.get::<_, bool>(0))? {
                        return Err(StoreError::Invalid(format!("detection {id} is not a pre-label of frame {frame}")));
                    }
                }
                let mut ids = ids.to_vec();
                ids.sort_unstable();
                ids.dedup();
                serde_json::to_string(&ids).expect("ids serialize")
            }
        };
        let version = current + 1;
        tx.execute(
            "INSERT INTO annotations (frame_id, version, shapes, author, created_at, dismissed) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![frame, version, shapes.to_string(), author, now, dismissed],
        )?;
        tx.execute(
            "UPDATE frames SET status = 'annotated' WHERE id = ?1 AND status IN ('new', 'in_progress', 'rejected')",
            [frame],
        )?;
        audit::append(
            &tx,
            now,
            author,
            "annotation.save",
            &format!("camera/{camera}/frame/{frame}"),
            &serde_json::json!({ "version": version, "shapes": shapes.as_array().map_or(0, Vec::len) }),
        )?;
        tx.commit()?;
        Ok(Ok(version))
    }
}

impl Store {
    /// The label schema's names, in the order they were added: exports number classes by it.
    pub fn label_names(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT name FROM labels ORDER BY id")?;
        let names = stmt.query_map([], |r| r.get(0))?;
        Ok(names.collect::<Result<_, _>>()?)
    }
}
