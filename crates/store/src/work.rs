//! The annotation workflow: the label schema, work queues with claims ("give me the next
//! frame to label"), and review decisions that accept a frame or send it back.

use rusqlite::{OptionalExtension, params, params_from_iter};
use serde::{Deserialize, Serialize};

use crate::FrameId;
use crate::annotations::workflow;
use crate::{FrameFilter, FrameRow, FrameStatus, Store, StoreError, audit};

/// A label annotators can pick, with its attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub name: String,
    /// `#rrggbb`.
    #[serde(default = "default_color")]
    pub color: String,
    /// `any`, `box` or `polygon`.
    #[serde(default = "default_shape")]
    pub shape: String,
    #[serde(default)]
    pub attributes: Vec<LabelAttribute>,
    /// What annotators should know when they pick this label: a short text shown beside
    /// it (up to 2,000 characters).
    #[serde(default)]
    pub instructions: String,
    /// An example of the label: a box on a frame of this box, shown as a crop beside the
    /// label. Absent once that frame is erased or expires.
    #[serde(default)]
    pub example: Option<LabelExample>,
}

/// A label's example: a region of a stored frame, so it is as anonymized and as
/// encrypted as the frame, and erasure takes it along.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LabelExample {
    pub frame: FrameId,
    /// `[x, y, w, h]` in the frame's pixels.
    #[serde(rename = "box")]
    pub bbox: [f64; 4],
}

/// The longest instructions a label carries: a paragraph or two, not a manual.
pub const MAX_INSTRUCTIONS: usize = 2000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelAttribute {
    pub name: String,
    /// `text`, `number`, `checkbox` or `select`.
    pub kind: String,
    /// For `select`.
    #[serde(default)]
    pub choices: Vec<String>,
    #[serde(default)]
    pub default: String,
}

fn default_color() -> String {
    "#3b82f6".into()
}

fn default_shape() -> String {
    "any".into()
}

/// A work queue: the frames its filter selects that still need work, and its progress.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Queue {
    pub id: i64,
    pub name: String,
    /// JSON: `camera`, `from`, `until` (Unix ms).
    pub filter: serde_json::Value,
    /// Frames by status: `new`, `in_progress`, `annotated`, `accepted`, `rejected`.
    pub counts: std::collections::BTreeMap<String, u64>,
}

/// A reviewer's decision on one annotation version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Review {
    pub frame: FrameId,
    pub version: i64,
    /// `accept` or `reject`.
    pub decision: Decision,
    pub comment: String,
    pub reviewer: String,
    pub created_at: i64,
}

impl Store {
    /// The label schema, in order.
    pub fn labels(&self) -> Result<Vec<Label>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            "SELECT id, name, color, shape, instructions, example_frame, example_box FROM labels ORDER BY id",
        )?;
        let labels: Vec<(i64, Label)> = stmt
            .query_map([], |r| {
                let frame: Option<i64> = r.get(5)?;
                let bbox: Option<String> = r.get(6)?;
                // A box that does not parse is no example, not a failed schema read.
                let example = frame
                    .zip(bbox.and_then(|b| serde_json::from_str(&b).ok()))
                    .map(|(frame, bbox)| LabelExample { frame: FrameId(frame), bbox });
                Ok((
                    r.get(0)?,
                    Label {
                        name: r.get(1)?,
                        color: r.get(2)?,
                        shape: r.get(3)?,
                        attributes: Vec::new(),
                        instructions: r.get(4)?,
                        example,
                    },
                ))
            })?
            .collect::<Result<_, _>>()?;
        let mut attrs = conn.prepare(
            "SELECT name, kind, choices, default_value FROM label_attributes WHERE label_id = ?1 ORDER BY id",
        )?;
        labels
            .into_iter()
            .map(|(id, mut label)| {
                label.attributes = attrs
                    .query_map([id], |r| {
                        let choices = crate::json_column(r, 2)?;
                        Ok(LabelAttribute {
                            name: r.get(0)?,
                            kind: r.get(1)?,
                            choices: serde_json::from_value(choices).map_err(|e| {
                                crate::count_corrupt();
                                rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
                            })?,
                            default: r.get(3)?,
                        })
                    })?
                    .collect::<Result<_, _>>()?;
                Ok(label)
            })
            .collect()
    }

    /// Replaces the label schema. Annotations keep their label names, so removing a
    /// label loses no work.
    pub fn set_labels(&self, labels: &[Label], actor: &str) -> Result<(), StoreError> {
        for (i, l) in labels.iter().enumerate() {
            let bad = |why: String| Err(StoreError::Invalid(format!("label {} (`{}`): {why}", i + 1, l.name)));
            if l.name.trim().is_empty() || l.name.len() > 64 {
                return bad("a name needs 1 to 64 characters".into());
            }
            if labels[..i].iter().any(|o| o.name == l.name) {
                return bad("the name is used twice".into());
            }
            if !(l.color.len() == 7 && l.color.starts_with('#') && l.color[1..].chars().all(|c| c.is_ascii_hexdigit()))
            {
                return bad(format!("colour `{}` is not #rrggbb", l.color));
            }
            if !["any", "box", "polygon"].contains(&l.shape.as_str()) {
                return bad(format!("shape `{}` is not any, box or polygon", l.shape));
            }
            for a in &l.attributes {
                if !["text", "number", "checkbox", "select"].contains(&a.kind.as_str()) {
                    return bad(format!(
                        "attribute `{}` has kind `{}`: use text, number, checkbox or select",
                        a.name, a.kind
                    ));
                }
                if a.kind == "select" && a.choices.is_empty() {
                    return bad(format!("attribute `{}` is a select with no choices", a.name));
                }
            }
            if l.instructions.chars().count() > MAX_INSTRUCTIONS {
                return bad(format!(
                    "the instructions have {} characters; keep them to {MAX_INSTRUCTIONS} (a paragraph or two)",
                    l.instructions.chars().count()
                ));
            }
            if let Some(e) = &l.example {
                self.check_example(e).or_else(bad)?;
            }
        }
        let now = self.now();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM labels", [])?;
        for l in labels {
            tx.execute(
                "INSERT INTO labels (name, color, shape, instructions, example_frame, example_box) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    l.name,
                    l.color,
                    l.shape,
                    l.instructions.trim(),
                    l.example.map(|e| e.frame.0),
                    l.example.map(|e| serde_json::to_string(&e.bbox).expect("numbers serialize")),
                ],
            )?;
            let id = tx.last_insert_rowid();
            for a in &l.attributes {
                tx.execute(
                    "INSERT INTO label_attributes (label_id, name, kind, choices, default_value) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![id, a.name, a.kind, serde_json::to_string(&a.choices).expect("strings serialize"), a.default],
                )?;
            }
        }
        let names: Vec<&str> = labels.iter().map(|l| l.name.as_str()).collect();
        audit::append(&tx, now, actor, "labels.set", "labels", &serde_json::json!({ "labels": names }))?;
        tx.commit()?;
        Ok(())
    }

    /// Why `e` cannot be a label's example: its frame is gone or closed to annotators (they
    /// could not see it), or its box is not inside the frame.
    fn check_example(&self, e: &LabelExample) -> Result<(), String> {
        let frame = e.frame;
        let closed = || {
            format!(
                "the example's frame {frame} does not exist, or no consent lets annotators see it: pick one they can open"
            )
        };
        if !self.usable(frame, crate::Purpose::Annotate).map_err(|e| e.to_string())? {
            return Err(closed());
        }
        let row = self.frame(frame).map_err(|_| closed())?;
        let [x, y, w, h] = e.bbox;
        let inside = [x, y, w, h].iter().all(|v| v.is_finite())
            && x >= 0.0
            && y >= 0.0
            && w >= 4.0
            && h >= 4.0
            && x + w <= f64::from(row.width) + 0.5
            && y + h <= f64::from(row.height) + 0.5;
        if !inside {
            return Err(format!(
                "the example's box [{x}, {y}, {w}, {h}] is not inside frame {frame} ({}×{}), or is under 4 pixels a side",
                row.width, row.height
            ));
        }
        Ok(())
    }

    pub fn queues(&self) -> Result<Vec<Queue>, StoreError> {
        let rows: Vec<(i64, String, String)> = {
            let conn = self.reader();
            let mut stmt = conn.prepare("SELECT id, name, filter FROM queues ORDER BY id")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<_, _>>()?
        };
        rows.into_iter()
            .map(|(id, name, text)| {
                let (clause, values) = queue_filter(&name, &text)?.sql(self.now());
                let filter = serde_json::from_str(&text).expect("queue_filter parsed it");
                let conn = self.reader();
                let mut stmt =
                    conn.prepare(&format!("SELECT f.status, COUNT(*) FROM frames f WHERE {clause} GROUP BY f.status"))?;
                let counts = stmt
                    .query_map(params_from_iter(values), |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?
                    .collect::<Result<_, _>>()?;
                Ok(Queue { id, name, filter, counts })
            })
            .collect()
    }

    /// Adds a queue over the frames `filter` (`camera`, `from`, `until`) selects.
    pub fn add_queue(&self, name: &str, filter: &serde_json::Value, actor: &str) -> Result<i64, StoreError> {
        if let Some(key) =
            filter.as_object().and_then(|o| o.keys().find(|k| !["camera", "from", "until"].contains(&k.as_str())))
        {
            return Err(StoreError::Invalid(format!("queue filter key `{key}` is unknown: use camera, from, until")));
        }
        let now = self.now();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let taken: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM queues WHERE name = ?1)", [name], |r| r.get(0))?;
        if taken {
            return Err(StoreError::Invalid(format!("a queue named `{name}` exists")));
        }
        tx.execute("INSERT INTO queues (name, filter) VALUES (?1, ?2)", params![name, filter.to_string()])?;
        let id = tx.last_insert_rowid();
        audit::append(&tx, now, actor, "queue.add", &format!("queue/{name}"), filter)?;
        tx.commit()?;
        Ok(id)
    }

    /// Claims the next frame of a queue that needs work for `user`: their own unexpired
    /// claim first, then frames sent back by review, then the oldest new frame. Claims
    /// by others expire after `claim_ms`, so an abandoned frame returns to the queue.
    pub fn claim_next(&self, queue: i64, user: &str, claim_ms: i64) -> Result<Option<FrameRow>, StoreError> {
        let now = self.now();
        let filter: String = self
            .conn()
            .query_row("SELECT filter FROM queues WHERE id = ?1", [queue], |r| r.get(0))
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("queue {queue}")))?;
        let (clause, mut values) = queue_filter(queue, &filter)?.sql(now);
        use rusqlite::types::Value;
        values.extend([Value::Text(user.into()), Value::Integer(now - claim_ms), Value::Text(user.into())]);
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let id: Option<FrameId> = tx
            .query_row(
                &format!(
                    "SELECT f.id FROM frames f WHERE {clause} AND f.status IN ('new', 'in_progress', 'rejected')
                     AND NOT EXISTS (SELECT 1 FROM queue_items q WHERE q.frame_id = f.id AND q.claimed_by != ? AND q.claimed_at >= ?)
                     ORDER BY EXISTS (SELECT 1 FROM queue_items q WHERE q.frame_id = f.id AND q.claimed_by = ?) DESC,
                              f.status = 'rejected' DESC, f.id
                     LIMIT 1"
                ),
                params_from_iter(values),
                |r| r.get(0),
            )
            .optional()?;
        let Some(id) = id else { return Ok(None) };
        tx.execute("UPDATE queue_items SET claimed_by = NULL, claimed_at = NULL WHERE frame_id = ?1", [id])?;
        tx.execute(
            "INSERT INTO queue_items (queue_id, frame_id, claimed_by, claimed_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (queue_id, frame_id) DO UPDATE SET claimed_by = excluded.claimed_by, claimed_at = excluded.claimed_at",
            params![queue, id, user, now],
        )?;
        tx.execute("UPDATE frames SET status = 'in_progress' WHERE id = ?1 AND status = 'new'", [id])?;
        tx.commit()?;
        drop(conn);
        Ok(Some(self.frame(id)?))
    }

    /// Records a review of the submitted annotation version `version`: `accept` marks
    /// the frame accepted with that version as its accepted one; `reject` (with a
    /// comment) returns it to the queue. Reviewing a version that is not current, or a
    /// frame not submitted, is refused.
    pub fn review(
        &self,
        frame: FrameId,
        version: i64,
        decision: Decision,
        comment: &str,
        reviewer: &str,
    ) -> Result<Review, StoreError> {
        let accept = decision == Decision::Accept;
        if !accept && comment.trim().is_empty() {
            return Err(StoreError::Invalid("a rejection needs a comment saying what to fix".into()));
        }
        let now = self.now();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let (camera, status, current) = workflow(&tx, frame)?;
        if current == 0 {
            return Err(StoreError::Invalid(format!("frame {frame} has no annotations to review")));
        }
        if current != version {
            return Err(StoreError::Invalid(format!(
                "frame {frame}: version {version} was reviewed, but version {current} is current; reload and review again"
            )));
        }
        if status != FrameStatus::Annotated {
            return Err(StoreError::Invalid(format!(
                "frame {frame} is {status}, not submitted for review: the annotator submits it first"
            )));
        }
        tx.execute(
            "INSERT INTO reviews (frame_id, version, decision, comment, reviewer, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![frame, version, decision.as_str(), comment, reviewer, now],
        )?;
        if accept {
            tx.execute(
                "UPDATE frames SET status = 'accepted', accepted_version = ?2 WHERE id = ?1",
                params![frame, version],
            )?;
        } else {
            tx.execute("UPDATE frames SET status = 'rejected' WHERE id = ?1", [frame])?;
        }
        // A rejected frame goes back to whoever takes it next.
        tx.execute("UPDATE queue_items SET claimed_by = NULL, claimed_at = NULL WHERE frame_id = ?1", [frame])?;
        audit::append(
            &tx,
            now,
            reviewer,
            &format!("review.{}", decision.as_str()),
            &format!("camera/{camera}/frame/{frame}"),
            &serde_json::json!({ "version": version, "comment": comment }),
        )?;
        tx.commit()?;
        Ok(Review { frame, version, decision, comment: comment.into(), reviewer: reviewer.into(), created_at: now })
    }

    /// A frame's reviews, newest first.
    pub fn reviews(&self, frame: FrameId) -> Result<Vec<Review>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT version, decision, comment, reviewer, created_at FROM reviews WHERE frame_id = ?1 ORDER BY id DESC",
        )?;
        let rows = stmt.query_map([frame], |r| {
            Ok(Review {
                frame,
                version: r.get(0)?,
                decision: r.get(1)?,
                comment: r.get(2)?,
                reviewer: r.get(3)?,
                created_at: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// A reviewer's verdict on one submitted version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The version becomes the frame's accepted one: what export `--status accepted`
    /// and sync carry.
    Accept,
    /// Back to the queue, with a comment saying what to fix.
    Reject,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Accept => "accept",
            Decision::Reject => "reject",
        }
    }
}

impl rusqlite::types::FromSql for Decision {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        match value.as_str()? {
            "accept" => Ok(Decision::Accept),
            "reject" => Ok(Decision::Reject),
            other => Err(rusqlite::types::FromSqlError::Other(format!("`{other}` is not a review decision").into())),
        }
    }
}

/// What a queue's stored filter may say.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueFilter {
    camera: Option<String>,
    from: Option<i64>,
    until: Option<i64>,
}

/// The frames a queue holds: its camera and time window, among frames consented for
/// annotation. A filter that does not parse is an error, never every frame.
fn queue_filter(queue: impl std::fmt::Display, text: &str) -> Result<FrameFilter, StoreError> {
    let filter: QueueFilter = serde_json::from_str(text).map_err(|e| {
        crate::count_corrupt();
        StoreError::Corrupt(format!("queue {queue}: its filter `{text}` is not valid ({e}); recreate the queue"))
    })?;
    Ok(FrameFilter {
        camera: filter.camera,
        from: filter.from,
        until: filter.until,
        purpose: Some(crate::Purpose::Annotate),
        ..Default::default()
    })
}
