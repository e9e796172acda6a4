//! Human annotations, versioned: a save names the version it started from, and a save
//! from a stale version is refused as a conflict instead of overwriting someone else's
//! work. Every version is kept, with its author and time.
//!
//! Saves are drafts. A submit puts the newest version up for review; a review accepts
//! one version (`frames.accepted_version`), and that version is what exports of accepted
//! frames and sync carry, whatever is drafted after it.

use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

use crate::FrameId;
use crate::{FrameStatus, Store, StoreError, audit};

/// One saved version of a frame's annotations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Annotation {
    pub frame: FrameId,
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
    pub frame: FrameId,
    pub base: i64,
    pub current: i64,
    pub author: String,
}

const COLUMNS: &str = "frame_id, version, shapes, author, created_at, dismissed";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Annotation> {
    let dismissed = crate::json_column(r, 5)?;
    Ok(Annotation {
        frame: r.get(0)?,
        version: r.get(1)?,
        shapes: crate::json_column(r, 2)?,
        author: r.get(3)?,
        created_at: r.get(4)?,
        dismissed: serde_json::from_value(dismissed)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, Box::new(e)))?,
    })
}

/// Checks a save's shapes against the frame they are drawn on: each is a box
/// `[x1, y1, x2, y2]` with x1 < x2 and y1 < y2, or a polygon of at least three points,
/// with a label, every coordinate finite and inside the image.
fn check_shapes(shapes: &serde_json::Value, width: u32, height: u32) -> Result<(), StoreError> {
    let shapes =
        shapes.as_array().ok_or_else(|| StoreError::Invalid("annotations must be a JSON array of shapes".into()))?;
    let (w, h) = (f64::from(width), f64::from(height));
    for (i, shape) in shapes.iter().enumerate() {
        let bad = |why: String| StoreError::Invalid(format!("shape {i}: {why}"));
        let label = shape["label"].as_str().unwrap_or_default();
        if label.trim().is_empty() {
            return Err(bad("it needs a label".into()));
        }
        if !(shape["attributes"].is_null() || shape["attributes"].is_object()) {
            return Err(bad("`attributes` must be an object".into()));
        }
        let points: Vec<f64> = shape["points"]
            .as_array()
            .map(|p| p.iter().map(|v| v.as_f64().filter(|v| v.is_finite())).collect::<Option<_>>())
            .unwrap_or_default()
            .ok_or_else(|| bad("`points` must be an array of finite numbers".into()))?;
        for xy in points.chunks(2) {
            if let [x, y] = *xy
                && !((0.0..=w).contains(&x) && (0.0..=h).contains(&y))
            {
                return Err(bad(format!("point ({x}, {y}) is outside the {width}×{height} image")));
            }
        }
        match shape["type"].as_str() {
            Some("box") => match points[..] {
                [x1, y1, x2, y2] if x1 < x2 && y1 < y2 => {}
                [_, _, _, _] => return Err(bad("a box is [x1, y1, x2, y2] with x1 < x2 and y1 < y2".into())),
                _ => return Err(bad(format!("a box has 4 coordinates, not {}", points.len()))),
            },
            Some("polygon") if points.len() >= 6 && points.len().is_multiple_of(2) => {}
            Some("polygon") => return Err(bad("a polygon needs at least three x, y points".into())),
            other => return Err(bad(format!("type {other:?} is not a shape: use box or polygon"))),
        }
    }
    Ok(())
}

/// Where frame `frame` stands for a submit or a review: its camera (for the audit
/// subject), its status and its newest annotation version (0 for none).
pub(crate) fn workflow(tx: &rusqlite::Connection, frame: FrameId) -> Result<(String, FrameStatus, i64), StoreError> {
    tx.query_row(
        "SELECT camera_id, status, (SELECT COALESCE(MAX(version), 0) FROM annotations WHERE frame_id = ?1)
         FROM frames WHERE id = ?1",
        [frame],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("frame {frame}")))
}

impl Store {
    /// The newest version of a frame's annotations, if any.
    pub fn annotation(&self, frame: FrameId) -> Result<Option<Annotation>, StoreError> {
        Ok(self
            .reader()
            .query_row(
                &format!("SELECT {COLUMNS} FROM annotations WHERE frame_id = ?1 ORDER BY version DESC LIMIT 1"),
                [frame],
                from_row,
            )
            .optional()?)
    }

    /// The version a review accepted, if any: what leaves the box for this frame.
    pub fn accepted_annotation(&self, frame: FrameId) -> Result<Option<Annotation>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM annotations a WHERE frame_id = ?1
                     AND version = (SELECT accepted_version FROM frames WHERE id = ?1)"
                ),
                [frame],
                from_row,
            )
            .optional()?)
    }

    /// Every saved version of a frame's annotations, oldest first.
    pub fn annotations(&self, frame: FrameId) -> Result<Vec<Annotation>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM annotations WHERE frame_id = ?1 ORDER BY version"))?;
        let rows = stmt.query_map([frame], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Puts version `version`, which must be the newest, up for review: the frame
    /// becomes `annotated`. Submitting what is already awaiting review is a no-op.
    pub fn submit_annotation(&self, frame: FrameId, version: i64, actor: &str) -> Result<FrameStatus, StoreError> {
        let now = self.now();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let (camera, status, current) = workflow(&tx, frame)?;
        if current == 0 {
            return Err(StoreError::Invalid(format!("frame {frame} has no annotations to submit: save them first")));
        }
        if current != version {
            return Err(StoreError::Invalid(format!(
                "frame {frame}: version {version} was submitted, but version {current} is the newest; reload and submit again"
            )));
        }
        match status {
            FrameStatus::Annotated => return Ok(status),
            FrameStatus::Accepted => {
                return Err(StoreError::Invalid(format!(
                    "frame {frame}: version {version} is already accepted; edit it to reopen the frame"
                )));
            }
            _ => {}
        }
        tx.execute("UPDATE frames SET status = 'annotated' WHERE id = ?1", [frame])?;
        audit::append(
            &tx,
            now,
            actor,
            "annotation.submit",
            &format!("camera/{camera}/frame/{frame}"),
            &serde_json::json!({ "version": version }),
        )?;
        tx.commit()?;
        Ok(FrameStatus::Annotated)
    }

    /// Saves a new draft version of a frame's annotations, started from version `base`
    /// (0 for none), keeping the pre-labels dismissed so far. Returns the new version, or
    /// the conflict if someone saved since `base`. A draft moves a new frame to
    /// `in_progress`; on a frame awaiting review or accepted it reopens the frame (to
    /// `in_progress`, to be submitted again), leaving what was accepted as it was.
    pub fn save_annotation(
        &self,
        frame: FrameId,
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
        frame: FrameId,
        base: i64,
        shapes: &serde_json::Value,
        dismissed: Option<&[i64]>,
        author: &str,
    ) -> Result<Result<i64, Conflict>, StoreError> {
        if !shapes.is_array() {
            return Err(StoreError::Invalid("annotations must be a JSON array of shapes".into()));
        }
        let (answer, answered) = std::sync::mpsc::sync_channel(2);
        let save = PendingSave {
            frame,
            base,
            shapes: shapes.clone(),
            dismissed: dismissed.map(<[i64]>::to_vec),
            author: author.to_owned(),
            now: self.now(),
            answer,
        };
        // Group commit: one save at a time leads, taking the writer and committing every
        // save queued by then in one transaction, each in a savepoint of its own, so
        // fifty tablets saving at once pay one fsync, not fifty in a row. The others wait
        // for their answer alone, not for the writer: a save answered by a batch never
        // queues for the mutex just to learn so, which under load made a convoy of
        // wake-ups, one after another (issue 20, item 3).
        let lead = {
            let mut queue = self.saves.lock().unwrap_or_else(|p| p.into_inner());
            queue.waiting.push(save);
            !std::mem::replace(&mut queue.leading, true)
        };
        if lead {
            self.lead_saves();
        }
        loop {
            match answered.recv().expect("a queued save is answered or handed the lead") {
                Turn::Answer(done) => return done,
                Turn::Lead => self.lead_saves(),
            }
        }
    }

    /// Commits every queued save as one batch, then hands the lead to the first save
    /// queued since, if any. Its own save is in the batch (queued before it led).
    fn lead_saves(&self) {
        /// Hands the lead on even if the batch panicked, so no save waits forever.
        struct HandOn<'a>(&'a Store);
        impl Drop for HandOn<'_> {
            fn drop(&mut self) {
                let mut queue = self.0.saves.lock().unwrap_or_else(|p| p.into_inner());
                match queue.waiting.first() {
                    // Its waiter is blocked on its channel, which has room: the lead is
                    // the only message a queued save can get.
                    Some(next) => {
                        let _ = next.answer.send(Turn::Lead);
                    }
                    None => queue.leading = false,
                }
            }
        }
        let _hand_on = HandOn(self);
        let mut conn = self.conn();
        let batch = std::mem::take(&mut self.saves.lock().unwrap_or_else(|p| p.into_inner()).waiting);
        #[cfg(test)]
        self.save_batches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut results = Vec::with_capacity(batch.len());
        let committed = (|| -> Result<(), rusqlite::Error> {
            let mut tx = conn.transaction()?;
            for save in &batch {
                let mut point = tx.savepoint()?;
                let result = save_one(&point, save);
                if matches!(result, Ok(Ok(_))) {
                    point.commit()?;
                } else {
                    point.rollback()?;
                }
                results.push(result);
            }
            tx.commit()
        })();
        drop(conn);
        let failed = committed.err().map(|e| e.to_string());
        for (i, save) in batch.iter().enumerate() {
            let result = match (&failed, results.get_mut(i)) {
                // The transaction did not commit: no save of it happened.
                (Some(why), _) => Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                    Some(format!("the save was not committed: {why}")),
                ))),
                (None, Some(result)) => std::mem::replace(result, Ok(Ok(0))),
                (None, None) => unreachable!("one result per save"),
            };
            // A waiter is gone only if its thread panicked, and then nobody needs it.
            let _ = save.answer.send(Turn::Answer(result));
        }
    }
}

/// The saves waiting for the writer, and whether one of them leads (is committing a
/// batch or about to).
#[derive(Default)]
pub(crate) struct SaveQueue {
    pub(crate) waiting: Vec<PendingSave>,
    leading: bool,
}

/// What a queued save hears: its answer, or that it leads the next batch.
enum Turn {
    Answer(Result<Result<i64, Conflict>, StoreError>),
    Lead,
}

/// A save queued for the next commit, and where its answer goes.
pub(crate) struct PendingSave {
    frame: FrameId,
    base: i64,
    shapes: serde_json::Value,
    dismissed: Option<Vec<i64>>,
    author: String,
    now: i64,
    answer: std::sync::mpsc::SyncSender<Turn>,
}

/// One save inside the batch's transaction: checks, the new version, the frame's status
/// and the audit entry.
fn save_one(tx: &rusqlite::Connection, save: &PendingSave) -> Result<Result<i64, Conflict>, StoreError> {
    let PendingSave { frame, base, shapes, author, now, .. } = save;
    let (frame, base, now) = (*frame, *base, *now);
    let (camera, local_only, width, height): (String, bool, u32, u32) = tx
        .prepare_cached("SELECT camera_id, local_only, width, height FROM frames WHERE id = ?1")?
        .query_row([frame], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("frame {frame}")))?;
    check_shapes(shapes, width, height).map_err(|e| match e {
        StoreError::Invalid(why) => StoreError::Invalid(format!("frame {frame}: {why}")),
        other => other,
    })?;
    if local_only {
        return Err(StoreError::Invalid(format!(
            "frame {frame} is local-only: no consent to annotate covered it when it was captured"
        )));
    }
    let current: Option<(i64, String, String)> = tx
        .prepare_cached(
            "SELECT version, author, dismissed FROM annotations WHERE frame_id = ?1 ORDER BY version DESC LIMIT 1",
        )?
        .query_row([frame], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let (current, by, kept) = current.unwrap_or((0, String::new(), "[]".into()));
    if current != base {
        return Ok(Err(Conflict { frame, base, current, author: by }));
    }
    let dismissed = match &save.dismissed {
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
            let mut ids = ids.clone();
            ids.sort_unstable();
            ids.dedup();
            serde_json::to_string(&ids).expect("ids serialize")
        }
    };
    let version = current + 1;
    tx.prepare_cached(
        "INSERT INTO annotations (frame_id, version, shapes, author, created_at, dismissed) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![frame, version, shapes.to_string(), author, now, dismissed])?;
    // A draft: new frames start, submitted or accepted ones reopen; a rejected frame
    // stays rejected (with its comment) until it is submitted again.
    tx.prepare_cached(
        "UPDATE frames SET status = 'in_progress' WHERE id = ?1 AND status IN ('new', 'annotated', 'accepted')",
    )?
    .execute([frame])?;
    audit::append(
        tx,
        now,
        author,
        "annotation.save",
        &format!("camera/{camera}/frame/{frame}"),
        &serde_json::json!({ "version": version, "shapes": shapes.as_array().map_or(0, Vec::len) }),
    )?;
    Ok(Ok(version))
}

impl Store {
    /// The label schema's names, in the order they were added: exports number classes by it.
    pub fn label_names(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached("SELECT name FROM labels ORDER BY id")?;
        let names = stmt.query_map([], |r| r.get(0))?;
        Ok(names.collect::<Result<_, _>>()?)
    }
}
