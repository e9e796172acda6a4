//! Frames: stored only from an `AnonymizedFrame`, as an encrypted JPEG blob and a row
//! with the frame's provenance, its anonymizer detections and the consents that covered
//! its camera at capture. Erasure removes rows and blobs and leaves tombstones.

use anonymize::{AnonymizedFrame, Class};
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use serde::Serialize;

use crate::consent::{Usable, covering};
use crate::{ConsentId, FrameId};
use crate::{Purpose, Store, StoreError, audit};

/// JPEG quality of stored frames: high enough for annotation, a fifth of PNG's size.
const JPEG_QUALITY: u8 = 90;

/// What to do with a frame captured while no consent with the `annotate` purpose covers
/// its camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoConsent {
    /// Do not store it (counted).
    #[default]
    Drop,
    /// Store it for the box's own use: never annotated remotely, exported or synced.
    LocalOnly,
}

/// What happened to a frame given to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Kept {
        id: FrameId,
        local_only: bool,
    },
    /// Dropped: no consent covered it and the policy is [`NoConsent::Drop`].
    NoConsent,
    /// Dropped: captured inside a camera and time window erased while it was still in
    /// the pipeline (see [`IN_FLIGHT_MS`]).
    Erased,
}

/// How long an erasure by window keeps covering frames still on their way to the store.
/// The pipeline holds a frame for seconds at most; an hour is far past that.
pub const IN_FLIGHT_MS: i64 = 3600 * 1000;

/// A stored frame's row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrameRow {
    pub id: FrameId,
    pub camera: String,
    pub seq: i64,
    pub captured_at: i64,
    pub blob_id: String,
    pub bytes: i64,
    pub width: u32,
    pub height: u32,
    pub local_only: bool,
    pub status: FrameStatus,
    /// The annotation version a review accepted, if any: what leaves the box.
    pub accepted_version: Option<i64>,
    pub provenance: serde_json::Value,
    pub metadata: serde_json::Value,
}

/// Where a frame is in the annotation workflow. Saves are drafts; a submit asks for
/// review; a review accepts one version or sends the frame back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameStatus {
    /// Nobody has saved annotations yet.
    New,
    /// Drafts saved, not submitted (or edited again after a submit or an accept).
    InProgress,
    /// Submitted: awaiting review.
    Annotated,
    /// A review accepted the submitted version.
    Accepted,
    /// A review sent it back, with a comment.
    Rejected,
}

impl FrameStatus {
    pub const ALL: [FrameStatus; 5] = [
        FrameStatus::New,
        FrameStatus::InProgress,
        FrameStatus::Annotated,
        FrameStatus::Accepted,
        FrameStatus::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FrameStatus::New => "new",
            FrameStatus::InProgress => "in_progress",
            FrameStatus::Annotated => "annotated",
            FrameStatus::Accepted => "accepted",
            FrameStatus::Rejected => "rejected",
        }
    }
}

impl std::fmt::Display for FrameStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for FrameStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        FrameStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a status: use new, in_progress, annotated, accepted or rejected"))
    }
}

impl rusqlite::types::FromSql for FrameStatus {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        value.as_str()?.parse().map_err(|e: String| rusqlite::types::FromSqlError::Other(e.into()))
    }
}

/// Where a machine detection came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The anonymizer's redacted faces and plates.
    Anonymizer,
    /// The pre-labeller's objects, offered to annotators.
    Prelabel,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Anonymizer => "anonymizer",
            Source::Prelabel => "prelabel",
        }
    }
}

impl rusqlite::types::FromSql for Source {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        match value.as_str()? {
            "anonymizer" => Ok(Source::Anonymizer),
            "prelabel" => Ok(Source::Prelabel),
            other => Err(rusqlite::types::FromSqlError::Other(format!("`{other}` is not a detection source").into())),
        }
    }
}

/// A frame's machine detection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    pub id: i64,
    pub source: Source,
    pub label: String,
    #[serde(rename = "box")]
    pub bbox: [f64; 4],
    pub score: f64,
    pub model: String,
    pub model_sha256: String,
}

/// Which frames: every set field must match.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FrameFilter {
    pub camera: Option<String>,
    /// Captured at or after, Unix milliseconds.
    pub from: Option<i64>,
    /// Captured before, Unix milliseconds.
    pub until: Option<i64>,
    pub ids: Vec<FrameId>,
    /// Linked to this consent.
    pub consent: Option<ConsentId>,
    /// Eligible for this purpose now: an active linked consent gives it, and the frame
    /// is not local-only.
    pub purpose: Option<crate::Purpose>,
    /// Review status. `Accepted` selects frames with an accepted version, whatever was
    /// drafted since: that version is what exports and sync send.
    pub status: Option<FrameStatus>,
    /// With (true) or without (false) pre-labels.
    pub prelabeled: Option<bool>,
    /// Pages: frames with a larger id than this, in id order.
    pub after: Option<FrameId>,
    /// Pages: at most this many, in id order.
    pub limit: Option<u32>,
}

impl FrameFilter {
    fn is_empty(&self) -> bool {
        self.camera.is_none()
            && self.from.is_none()
            && self.until.is_none()
            && self.ids.is_empty()
            && self.consent.is_none()
    }

    /// A WHERE clause over `frames f` and its parameters, with purposes judged at `now`.
    pub(crate) fn sql(&self, now: i64) -> (String, Vec<rusqlite::types::Value>) {
        use rusqlite::types::Value;
        let mut clauses = vec!["1".to_owned()];
        let mut values = Vec::new();
        if let Some(camera) = &self.camera {
            clauses.push("f.camera_id = ?".into());
            values.push(Value::Text(camera.clone()));
        }
        if let Some(from) = self.from {
            clauses.push("f.captured_at >= ?".into());
            values.push(Value::Integer(from));
        }
        if let Some(until) = self.until {
            clauses.push("f.captured_at < ?".into());
            values.push(Value::Integer(until));
        }
        if !self.ids.is_empty() {
            clauses.push(format!("f.id IN ({})", vec!["?"; self.ids.len()].join(",")));
            values.extend(self.ids.iter().map(|id| Value::Integer(id.0)));
        }
        if let Some(consent) = &self.consent {
            clauses.push("f.id IN (SELECT frame_id FROM frame_consents WHERE consent_id = ?)".into());
            values.push(Value::Text(consent.0.clone()));
        }
        if let Some(purpose) = self.purpose {
            let (clause, params) = Usable { purpose, at: now }.sql();
            clauses.push(clause);
            values.extend(params);
        }
        match self.status {
            Some(FrameStatus::Accepted) => clauses.push("f.accepted_version IS NOT NULL".into()),
            Some(status) => {
                clauses.push("f.status = ?".into());
                values.push(Value::Text(status.as_str().into()));
            }
            None => {}
        }
        if let Some(prelabeled) = self.prelabeled {
            let exists = "EXISTS (SELECT 1 FROM detections d WHERE d.frame_id = f.id AND d.source = 'prelabel')";
            clauses.push(if prelabeled { exists.to_owned() } else { format!("NOT {exists}") });
        }
        if let Some(after) = self.after {
            clauses.push("f.id > ?".into());
            values.push(Value::Integer(after.0));
        }
        (clauses.join(" AND "), values)
    }
}

/// What an erasure removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Erased {
    pub frames: u64,
    pub blobs: u64,
    pub bytes: u64,
    /// Erasures for sync to carry to the hub: frames it may hold a copy of.
    pub tombstones: u64,
}

/// How much is stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub frames: u64,
    /// Encoded frame bytes, as recorded.
    pub frame_bytes: u64,
    /// Bytes on disk: blobs, database and WAL.
    pub disk_bytes: u64,
}

const COLUMNS: &str = "f.id, f.camera_id, f.seq, f.captured_at, f.blob_id, f.bytes, f.width, f.height, f.local_only, \
     f.status, f.provenance, f.metadata, f.accepted_version";

fn from_row(r: &Row<'_>) -> rusqlite::Result<FrameRow> {
    let json = |i: usize| crate::json_column(r, i);
    Ok(FrameRow {
        id: r.get(0)?,
        camera: r.get(1)?,
        seq: r.get(2)?,
        captured_at: r.get(3)?,
        blob_id: r.get(4)?,
        bytes: r.get(5)?,
        width: r.get(6)?,
        height: r.get(7)?,
        local_only: r.get(8)?,
        status: r.get(9)?,
        provenance: json(10)?,
        metadata: json(11)?,
        accepted_version: r.get(12)?,
    })
}

/// The consents covering `camera` at `at`, and whether one gives `annotate`.
/// Whether a frame of `camera` captured `at` falls in a window erased while it was in
/// flight.
fn erased_in_flight(conn: &Connection, camera: &str, at: i64, now: i64) -> Result<bool, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM erased_windows WHERE (camera_id IS NULL OR camera_id = ?1)
           AND (from_at IS NULL OR from_at <= ?2) AND ?2 < until_at AND erased_at >= ?3)",
    )?;
    Ok(stmt.query_row(params![camera, at, now - IN_FLIGHT_MS], |r| r.get(0))?)
}

fn plan(conn: &Connection, camera: &str, at: i64) -> Result<(Vec<String>, bool), StoreError> {
    let consents = covering(conn, camera, at)?;
    let annotate = consents.iter().any(|(_, purposes)| purposes.contains(&Purpose::Annotate));
    Ok((consents.into_iter().map(|(id, _)| id).collect(), annotate))
}

const MINUTE_MS: i64 = 60_000;

/// A camera's frames not yet summarized (past id ?2) by minute, up to ?3. Runs with
/// every stored batch, so it must cost the unsummarized tail and nothing more: one range
/// of `frames_by_camera` (camera, rowid). The unary `+` keeps SQLite off the time
/// indexes, which would walk the camera's whole history; the rowid range alone (before
/// schema 10) walked every camera's frames since ?2: the whole table for a new camera,
/// 60 to 240 ms with the writer held, on a store of 100k frames.
pub(crate) const UNSUMMARIZED: &str = "SELECT captured_at / 60000, COUNT(*), SUM(json_extract(provenance, '$.faces')),
        SUM(json_extract(provenance, '$.plates')), SUM(local_only), MIN(id), MAX(id)
     FROM frames WHERE camera_id = ?1 AND id > ?2 AND +captured_at < ?3
     GROUP BY captured_at / 60000 ORDER BY 1";

/// Appends one `capture.summary` audit entry per camera and minute for the frames not
/// yet summarized that were captured before `before`. Which frames are summarized is
/// kept in `settings` in the same transaction, so a crash neither loses nor repeats one.
fn summarize_captures(tx: &Connection, now: i64, before: i64) -> Result<(), StoreError> {
    let cameras: Vec<String> = {
        let mut stmt = tx.prepare_cached("SELECT id FROM cameras ORDER BY id")?;
        stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
    };
    for camera in cameras {
        let key = format!("audit.summarized.{camera}");
        let last: i64 = tx
            .query_row("SELECT CAST(value AS INTEGER) FROM settings WHERE key = ?1", [&key], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        let minutes: Vec<(i64, i64, i64, i64, i64, i64, i64)> = {
            let mut stmt = tx.prepare_cached(UNSUMMARIZED)?;
            stmt.query_map(params![camera, last, before], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
            })?
            .collect::<Result<_, _>>()?
        };
        let mut newest = last;
        for (minute, frames, faces, plates, local_only, first, last_id) in minutes {
            audit::append(
                tx,
                now,
                "capture",
                "capture.summary",
                &format!("camera/{camera}/minute/{}", minute * MINUTE_MS),
                &serde_json::json!({
                    "frames": frames, "faces": faces, "plates": plates, "local_only": local_only,
                    "first_frame": first, "last_frame": last_id,
                }),
            )?;
            newest = newest.max(last_id);
        }
        if newest > last {
            tx.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, newest.to_string()],
            )?;
        }
    }
    Ok(())
}

fn encode_jpeg(frame: &AnonymizedFrame) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY)
        .encode(frame.rgb(), frame.width(), frame.height(), image::ExtendedColorType::Rgb8)
        .map_err(|e| StoreError::Invalid(format!("cannot encode the frame: {e}")))?;
    Ok(out)
}

impl Store {
    /// Registers a camera (or updates its zone and retention).
    pub fn ensure_camera(&self, id: &str, zone: Option<&str>, keep_days: Option<u32>) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO cameras (id, zone, keep_days, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO UPDATE SET zone = excluded.zone, keep_days = excluded.keep_days",
            params![id, zone, keep_days, self.now()],
        )?;
        Ok(())
    }

    /// Stores anonymized frames, each with its free-form metadata, in one transaction
    /// (blobs are durable before it commits). Consent is checked per frame at its
    /// capture time.
    pub fn put_frames(
        &self,
        frames: &[(&AnonymizedFrame, serde_json::Value)],
        policy: NoConsent,
    ) -> Result<Vec<Stored>, StoreError> {
        // Erasure and consent first: a dropped frame is never encoded or written.
        let (plans, erased): (Vec<(Vec<String>, bool)>, Vec<bool>) = {
            let (conn, now) = (self.conn(), self.now());
            let each = |f: &AnonymizedFrame| -> Result<_, StoreError> {
                let (camera, at) = (&f.meta().camera, frame::unix_ms(f.meta().wall));
                Ok((plan(&conn, camera, at)?, erased_in_flight(&conn, camera, at, now)?))
            };
            frames.iter().map(|(f, _)| each(f)).collect::<Result<Vec<_>, _>>()?.into_iter().unzip()
        };
        let mut blobs = Vec::with_capacity(frames.len());
        for (((frame, _), (_, annotate)), erased) in frames.iter().zip(&plans).zip(&erased) {
            if *erased || (!annotate && policy == NoConsent::Drop) {
                blobs.push(None);
                continue;
            }
            let jpeg = encode_jpeg(frame)?;
            blobs.push(Some((self.blobs.put(&jpeg)?, jpeg)));
        }
        let now = self.now();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut out = Vec::with_capacity(frames.len());
        for ((((frame, metadata), (consents, annotate)), blob), erased) in
            frames.iter().zip(plans).zip(blobs).zip(erased)
        {
            let Some((blob_id, jpeg)) = blob else {
                out.push(if erased { Stored::Erased } else { Stored::NoConsent });
                continue;
            };
            // Again under the lock the erasure takes: one that ran while this frame was
            // being encoded covers it too.
            if erased_in_flight(&tx, &frame.meta().camera, frame::unix_ms(frame.meta().wall), now)? {
                out.push(Stored::Erased);
                continue;
            }
            // The same bytes may be an erased frame's, whose blob an erasure removed
            // after the put above found it (erasure removes files under this lock).
            if !self.blobs.exists(&blob_id) {
                self.blobs.put(&jpeg)?;
            }
            let bytes = jpeg.len();
            let meta = frame.meta();
            let provenance = serde_json::to_string(frame.provenance()).expect("provenance serializes");
            tx.execute("INSERT OR IGNORE INTO cameras (id, created_at) VALUES (?1, ?2)", params![&*meta.camera, now])?;
            tx.execute(
                "INSERT INTO frames (camera_id, seq, captured_at, blob_id, bytes, width, height, provenance, local_only, metadata, sha256)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    &*meta.camera,
                    meta.seq as i64,
                    frame::unix_ms(meta.wall),
                    blob_id,
                    bytes as i64,
                    frame.width(),
                    frame.height(),
                    provenance,
                    !annotate,
                    metadata.to_string(),
                    crate::sha256_hex(&jpeg)
                ],
            )?;
            let id = FrameId(tx.last_insert_rowid());
            let made = frame.provenance();
            for d in frame.detections() {
                // A plate area comes from the proposer's vehicle, not a detector.
                let model = match d.class {
                    Class::PlateArea => made.proposer.as_ref().map(|p| (p.model.as_str(), p.sha256.as_str())),
                    class => {
                        made.models.iter().find(|m| m.class == class).map(|m| (m.model.as_str(), m.sha256.as_str()))
                    }
                };
                tx.execute(
                    "INSERT INTO detections (frame_id, source, label, x1, y1, x2, y2, score, model, model_sha256)
                     VALUES (?1, 'anonymizer', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        id,
                        d.class.as_str(),
                        d.bbox.x1,
                        d.bbox.y1,
                        d.bbox.x2,
                        d.bbox.y2,
                        d.score,
                        model.map_or("", |m| m.0),
                        model.map_or("", |m| m.1)
                    ],
                )?;
            }
            for consent in &consents {
                tx.execute("INSERT INTO frame_consents (frame_id, consent_id) VALUES (?1, ?2)", params![id, consent])?;
            }
            out.push(Stored::Kept { id, local_only: !annotate });
        }
        // Minutes that have ended get their audit summary, in this same transaction.
        summarize_captures(&tx, now, now - now.rem_euclid(MINUTE_MS))?;
        tx.commit()?;
        Ok(out)
    }

    /// Writes the audit summaries of every minute not yet summarized, the current one
    /// included: at shutdown, so the log is complete.
    pub fn flush_capture_summaries(&self) -> Result<(), StoreError> {
        let now = self.now();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        summarize_captures(&tx, now, i64::MAX)?;
        tx.commit()?;
        Ok(())
    }

    pub fn frame(&self, id: FrameId) -> Result<FrameRow, StoreError> {
        self.reader()
            .query_row(&format!("SELECT {COLUMNS} FROM frames f WHERE f.id = ?1"), [id], from_row)
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("frame {id}")))
    }

    /// Frames matching `filter`, oldest first (in id order when paged).
    pub fn frames(&self, filter: &FrameFilter) -> Result<Vec<FrameRow>, StoreError> {
        let (clause, values) = filter.sql(self.now());
        let conn = self.reader();
        let order = match filter.limit {
            Some(limit) => format!("f.id LIMIT {limit}"),
            None if filter.after.is_some() => "f.id".to_owned(),
            None => "f.captured_at, f.id".to_owned(),
        };
        let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM frames f WHERE {clause} ORDER BY {order}"))?;
        Ok(stmt.query_map(params_from_iter(values), from_row)?.collect::<Result<_, _>>()?)
    }

    /// The anonymized JPEG of frame `id`, decrypted.
    pub fn frame_jpeg(&self, id: FrameId) -> Result<Vec<u8>, StoreError> {
        let blob = self.frame(id)?.blob_id;
        self.blobs.get(&blob)
    }

    /// Whether frame `id` may be used for `purpose` now, by the one rule ([`Usable`]):
    /// a consent linked to it at capture gives the purpose, is not withdrawn and has not
    /// ended, and the frame is not local-only.
    /// The newest frame of `camera` captured at or after `since` (Unix ms) that `purpose`
    /// may use now: what the live view shows a new watcher while its first live frame is
    /// made.
    pub fn newest_frame(&self, camera: &str, since: i64, purpose: Purpose) -> Result<Option<FrameRow>, StoreError> {
        let (clause, [at, purpose]) = Usable { purpose, at: self.now() }.sql();
        let sql = format!(
            "SELECT {COLUMNS} FROM frames f WHERE f.camera_id = ? AND f.captured_at >= ? AND {clause} \
             ORDER BY f.id DESC LIMIT 1"
        );
        Ok(self.reader().query_row(&sql, params![camera, since, at, purpose], from_row).optional()?)
    }

    pub fn usable(&self, id: FrameId, purpose: Purpose) -> Result<bool, StoreError> {
        let (clause, [at, purpose]) = Usable { purpose, at: self.now() }.sql();
        let sql = format!("SELECT EXISTS (SELECT 1 FROM frames f WHERE f.id = ? AND {clause})");
        Ok(self.reader().query_row(&sql, params![id, at, purpose], |r| r.get(0))?)
    }

    /// Erases the frames matching `filter` (which must name something): rows, their
    /// detections, annotations, consent links and outbox entries, and blobs no other
    /// frame uses; leaves a tombstone per frame for sync to carry to the hub, and
    /// checkpoints so nothing of them stays in the WAL.
    pub fn erase(&self, filter: &FrameFilter, actor: &str, reason: &str) -> Result<Erased, StoreError> {
        self.erase_as(filter, actor, reason, false)
    }

    /// Erases like [`Store::erase`] for retention, which is not erasure: only this box's
    /// copy goes, nothing is asked of the hub (it keeps its own retention), and frames
    /// that could have been synced but were not are counted and audited as "expired
    /// unsynced" (privacy wins over sync, never silently).
    pub(crate) fn expire(&self, filter: &FrameFilter, reason: &str) -> Result<Erased, StoreError> {
        self.erase_as(filter, "retention", reason, true)
    }

    fn erase_as(&self, filter: &FrameFilter, actor: &str, reason: &str, retention: bool) -> Result<Erased, StoreError> {
        if filter.is_empty() {
            return Err(StoreError::Invalid(
                "name what to erase: a camera and time window, frame ids or a consent".into(),
            ));
        }
        let now = self.now();
        let (clause, values) = filter.sql(now);
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if let Some(consent) = &filter.consent {
            let known: bool =
                tx.query_row("SELECT EXISTS (SELECT 1 FROM consents WHERE id = ?1)", [consent], |r| r.get(0))?;
            if !known {
                return Err(StoreError::NotFound(format!("consent `{consent}`")));
            }
        }
        // A frame may be on the hub once sync has sent it (acknowledged or not): only
        // those leave a tombstone, which sync carries there (crate::tombstones).
        let (usable, [at, purpose]) = Usable { purpose: Purpose::Sync, at: now }.sql();
        let mut params: Vec<rusqlite::types::Value> =
            vec![rusqlite::types::Value::Integer(retention.into()), at, purpose];
        params.extend(values);
        type Victim = (FrameId, String, i64, bool, bool, String, i64, Option<String>);
        let victims: Vec<Victim> = {
            let mut stmt = tx.prepare(&format!(
                "SELECT f.id, f.blob_id, f.bytes, ? = 0 AND (f.synced_at IS NOT NULL
                   OR EXISTS (SELECT 1 FROM sync_batch_frames bf JOIN sync_batches b ON b.id = bf.batch_id
                     WHERE bf.frame_id = f.id AND b.state IN ('uploading', 'committed'))),
                   f.synced_at IS NULL AND {usable}, f.camera_id, f.captured_at, f.sha256
                 FROM frames f WHERE {clause}"
            ))?;
            stmt.query_map(params_from_iter(params), |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?))
            })?
            .collect::<Result<_, _>>()?
        };
        // A window (no ids, no consent) also covers frames still in the pipeline; kept an
        // hour. Retention is by age, and new frames are never old.
        if !retention && filter.ids.is_empty() && filter.consent.is_none() {
            tx.execute("DELETE FROM erased_windows WHERE erased_at < ?1", [now - IN_FLIGHT_MS])?;
            tx.execute(
                "INSERT INTO erased_windows (camera_id, from_at, until_at, erased_at) VALUES (?1, ?2, ?3, ?4)",
                params![filter.camera, filter.from, filter.until.unwrap_or(now), now],
            )?;
        }
        let mut erased = Erased::default();
        let mut expired_unsynced = 0;
        for (id, blob, bytes, shared, unsynced, camera, captured, sha256) in &victims {
            if retention && *unsynced {
                tx.execute(
                    "INSERT OR IGNORE INTO sync_expired (frame_id, camera_id, captured_at, expired_at) VALUES (?1, ?2, ?3, ?4)",
                    params![id, camera, captured, now],
                )?;
                expired_unsynced += 1;
            }
            tx.execute("DELETE FROM frames WHERE id = ?1", [id])?;
            if *shared {
                tx.execute(
                    "INSERT INTO tombstones (kind, ref, frame_id, erased_at, reason, sha256) VALUES ('frame', ?1, ?2, ?3, ?4, ?5)",
                    params![format!("{id}:{blob}"), id, now, reason, sha256],
                )?;
                erased.tombstones += 1;
            }
            erased.frames += 1;
            erased.bytes += *bytes as u64;
        }
        audit::append(
            &tx,
            now,
            actor,
            "erase",
            "frames",
            &serde_json::json!({ "filter": filter, "frames": erased.frames, "reason": reason }),
        )?;
        if expired_unsynced > 0 {
            audit::append(
                &tx,
                now,
                actor,
                "sync.expired_unsynced",
                "frames",
                &serde_json::json!({ "frames": expired_unsynced, "reason": reason,
                    "why": "retention removed frames consented for sync before they reached the hub" }),
            )?;
        }
        let unused: Vec<String> = {
            let mut blobs: Vec<&String> = victims.iter().map(|v| &v.1).collect();
            blobs.sort();
            blobs.dedup();
            let mut still = tx.prepare("SELECT EXISTS (SELECT 1 FROM frames WHERE blob_id = ?1)")?;
            let mut unused = Vec::new();
            for blob in blobs {
                if !still.query_row([blob], |r| r.get::<_, bool>(0))? {
                    unused.push(blob.clone());
                }
            }
            unused
        };
        tx.commit()?;
        // Removed while the connection is held, so a writer storing the same bytes
        // either sees the file gone and writes it again, or commits its row first and
        // keeps the blob from being unused.
        for blob in &unused {
            self.blobs.remove(blob)?;
            erased.blobs += 1;
        }
        drop(conn);
        self.checkpoint()?;
        Ok(erased)
    }

    /// How many frames are stored: cheaper than [`Store::usage`], which walks the blobs.
    pub fn frame_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self.reader().query_row("SELECT COUNT(*) FROM frames", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    pub fn usage(&self) -> Result<Usage, StoreError> {
        let (frames, frame_bytes): (i64, i64) =
            self.reader().query_row("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM frames", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        let file = |name: &str| std::fs::metadata(self.dir.join(name)).map_or(0, |m| m.len());
        let db = file(crate::DATABASE_FILE) + file(&format!("{}-wal", crate::DATABASE_FILE));
        Ok(Usage { frames: frames as u64, frame_bytes: frame_bytes as u64, disk_bytes: self.blobs.disk_bytes() + db })
    }

    /// Up to `limit` frames awaiting pre-labels, oldest first, from `cameras` (all if
    /// empty).
    pub fn awaiting_prelabel(&self, limit: usize, cameras: &[String]) -> Result<Vec<FrameId>, StoreError> {
        let conn = self.reader();
        let mut stmt =
            conn.prepare_cached("SELECT id, camera_id FROM frames WHERE prelabeled_at IS NULL ORDER BY id")?;
        let mut out = Vec::new();
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let camera: String = row.get(1)?;
            if cameras.is_empty() || cameras.contains(&camera) {
                out.push(row.get(0)?);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// How many frames await pre-labels, from `cameras` (all if empty).
    pub fn prelabel_backlog(&self, cameras: &[String]) -> Result<u64, StoreError> {
        let conn = self.reader();
        let n: i64 = if cameras.is_empty() {
            conn.query_row("SELECT COUNT(*) FROM frames WHERE prelabeled_at IS NULL", [], |r| r.get(0))?
        } else {
            let sql = format!(
                "SELECT COUNT(*) FROM frames WHERE prelabeled_at IS NULL AND camera_id IN ({})",
                vec!["?"; cameras.len()].join(",")
            );
            conn.query_row(&sql, params_from_iter(cameras), |r| r.get(0))?
        };
        Ok(n as u64)
    }

    /// Stores a frame's pre-labels, `(label, box, score)`, from `model`, and marks it
    /// pre-labelled. Kept apart from annotations (`detections.source = 'prelabel'`).
    pub fn put_prelabels(
        &self,
        frame: FrameId,
        labels: &[(String, anonymize::BBox, f32)],
        model: &str,
        sha256: &str,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for (label, b, score) in labels {
            tx.execute(
                "INSERT INTO detections (frame_id, source, label, x1, y1, x2, y2, score, model, model_sha256)
                 VALUES (?1, 'prelabel', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![frame, label, b.x1, b.y1, b.x2, b.y2, score, model, sha256],
            )?;
        }
        // The frame may have been erased meanwhile: then nothing is marked, and the
        // inserts above fail their foreign key first.
        tx.execute("UPDATE frames SET prelabeled_at = ?2 WHERE id = ?1", params![frame, now])?;
        tx.commit()?;
        Ok(())
    }

    /// A frame's machine detections, in the order they were stored.
    pub fn detections(&self, frame: FrameId) -> Result<Vec<Detection>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT source, label, x1, y1, x2, y2, score, model, model_sha256, id FROM detections WHERE frame_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([frame], |r| {
            Ok(Detection {
                id: r.get(9)?,
                source: r.get(0)?,
                label: r.get(1)?,
                bbox: [r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?],
                score: r.get(6)?,
                model: r.get(7)?,
                model_sha256: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
