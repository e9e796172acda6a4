//! Export from and import into the store: the one place that decides which frames may
//! leave (an active consent covering each gives the export's purpose), what each carries
//! and how imported annotations merge. The command line and the web API both call it.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;
use serde_json::{Value, json};
use store::{FrameFilter, FrameId, FrameRow, FrameStatus, Purpose, Source, Store};

use crate::{DatasetError, Format, ImportFormat, Item, Meta, Prediction, Shape, Sink, Written};

/// What to export.
#[derive(Debug, Clone)]
pub struct Export {
    pub format: Format,
    /// Camera, time window and review status; `purpose` is set from [`Export::purpose`].
    pub filter: FrameFilter,
    /// The purpose the data leaves for: only frames consented for it go.
    pub purpose: Purpose,
    /// Offer the anonymizer's own boxes as `face` and `license_plate` pre-labels (those
    /// regions are already redacted in the images).
    pub redactions: bool,
    /// Who exports, for the audit log.
    pub actor: String,
}

/// Writes the export into `sink` and audits it with its filters and counts.
pub fn export(store: &Store, request: &Export, sink: &mut dyn Sink) -> Result<Written, DatasetError> {
    export_with_progress(store, request, sink, &mut |_, _| {})
}

/// [`export`], telling `progress` (images written, images in all) after each image, for
/// a progress bar on long exports.
pub fn export_with_progress(
    store: &Store,
    request: &Export,
    sink: &mut dyn Sink,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Written, DatasetError> {
    let filter = FrameFilter { purpose: Some(request.purpose), ..request.filter.clone() };
    let frames = store.frames(&filter)?;
    // Accepted frames carry the version a review accepted, not what was drafted since.
    let accepted = request.filter.status == Some(FrameStatus::Accepted);
    let items = frames.iter().map(|f| item(store, f, accepted, request.redactions)).collect::<Result<Vec<_>, _>>()?;
    let meta = Meta { name: "Obscura export".into(), created: rfc3339(now_ms()), labels: store.label_names()? };
    let (mut done, total) = (0, items.len());
    let written = crate::write(request.format, &items, &meta, sink, &mut |item| {
        let jpeg = store.frame_jpeg(FrameId(item.id)).map_err(|e| e.to_string());
        done += 1;
        progress(done, total);
        jpeg
    })?;
    let f = &request.filter;
    store.audit(
        &request.actor,
        "export",
        "dataset",
        json!({
            "format": request.format.name(), "purpose": request.purpose.as_str(),
            "camera": f.camera, "from": f.from, "until": f.until, "status": f.status,
            "frames": written.images, "annotations": written.shapes, "predictions": written.predictions,
        }),
    )?;
    Ok(written)
}

fn item(store: &Store, f: &FrameRow, accepted: bool, redactions: bool) -> Result<Item, DatasetError> {
    let current = if accepted { store.accepted_annotation(f.id)? } else { store.annotation(f.id)? };
    let shapes = current
        .as_ref()
        .and_then(|a| a.shapes.as_array().map(|s| s.iter().filter_map(Shape::from_json).collect()))
        .unwrap_or_default();
    // Pre-labels people rejected are not offered again.
    let dismissed = current.map(|a| a.dismissed).unwrap_or_default();
    let predictions = store
        .detections(f.id)?
        .iter()
        .filter(|d| d.source == Source::Prelabel || (redactions && d.label != "plate_area"))
        .filter(|d| !dismissed.contains(&d.id))
        .map(|d| Prediction {
            label: d.label.clone(),
            bbox: d.bbox.map(crate::round),
            score: d.score,
            model: d.model.clone(),
        })
        .collect();
    Ok(Item {
        id: f.id.0,
        file_name: format!("{}.jpg", f.id),
        width: f.width,
        height: f.height,
        camera: f.camera.clone(),
        captured_at: rfc3339(f.captured_at),
        shapes,
        predictions,
    })
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ImportReport {
    /// Images in the file.
    pub images: usize,
    /// Matched to a frame by file name (`<frame id>.<ext>`), or by id when the name
    /// matched none.
    pub by_name: usize,
    pub by_id: usize,
    /// Frames given a new annotation version.
    pub updated: usize,
    /// Frames whose annotations were already what the file says.
    pub unchanged: usize,
    /// Shapes written.
    pub shapes: usize,
    /// File names that matched no frame.
    pub unmatched: Vec<String>,
    /// Frames that refused the annotations (local-only, or saved concurrently).
    pub refused: Vec<String>,
}

/// Merges a COCO or CVAT dataset's annotations into the store: each matched frame gets
/// the file's shapes as a new annotation version (older versions stay, so nothing is
/// lost), unless they are already its current ones. With `dry_run` nothing is written.
pub fn import(
    store: &Store,
    format: ImportFormat,
    path: &Path,
    actor: &str,
    dry_run: bool,
) -> Result<ImportReport, DatasetError> {
    import_with_progress(store, format, path, &path.display().to_string(), actor, dry_run, &mut |_, _| {})
}

/// [`import`] of a file the audit log calls `source` (an upload's name), telling
/// `progress` (images done, images in all) after each image, for a progress bar.
pub fn import_with_progress(
    store: &Store,
    format: ImportFormat,
    path: &Path,
    source: &str,
    actor: &str,
    dry_run: bool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ImportReport, DatasetError> {
    let images = crate::read(format, path)?;
    let mut report = ImportReport { images: images.len(), ..Default::default() };
    let total = images.len();
    let ids: Vec<FrameId> =
        images.iter().flat_map(|i| [frame_id(&i.file_name), i.id].into_iter().flatten()).map(FrameId).collect();
    let known: HashMap<FrameId, FrameRow> =
        store.frames(&FrameFilter { ids, ..Default::default() })?.into_iter().map(|f| (f.id, f)).collect();
    for (done, image) in images.into_iter().enumerate() {
        progress(done, total);
        let by_name = frame_id(&image.file_name).map(FrameId);
        let frame = match (by_name.filter(|id| known.contains_key(id)), image.id.map(FrameId)) {
            (Some(id), _) => {
                report.by_name += 1;
                id
            }
            (None, Some(id)) if known.contains_key(&id) && by_name.is_none() => {
                report.by_id += 1;
                id
            }
            _ => {
                report.unmatched.push(image.file_name);
                continue;
            }
        };
        let shapes = Value::Array(image.shapes.iter().map(Shape::to_json).collect());
        let current = store.annotation(frame)?;
        let same = current.as_ref().is_some_and(|a| {
            let theirs: Vec<Shape> = a.shapes.as_array().into_iter().flatten().filter_map(Shape::from_json).collect();
            theirs == image.shapes
        }) || (current.is_none() && image.shapes.is_empty());
        if same {
            report.unchanged += 1;
            continue;
        }
        if dry_run {
            report.updated += 1;
            report.shapes += image.shapes.len();
            continue;
        }
        let base = current.map_or(0, |a| a.version);
        match store.save_annotation(frame, base, &shapes, actor) {
            Ok(Ok(_)) => {
                report.updated += 1;
                report.shapes += image.shapes.len();
            }
            Ok(Err(conflict)) => report.refused.push(conflict.to_string()),
            Err(store::StoreError::Invalid(why)) => report.refused.push(why),
            Err(e) => return Err(e.into()),
        }
    }
    progress(total, total);
    if !dry_run {
        store.audit(
            actor,
            "import",
            "dataset",
            json!({
                "format": match format { ImportFormat::Coco => "coco", ImportFormat::Cvat => "cvat" },
                "file": source, "images": report.images, "updated": report.updated,
                "unchanged": report.unchanged, "unmatched": report.unmatched.len(), "refused": report.refused.len(),
            }),
        )?;
    }
    Ok(report)
}

/// The frame id in a file name this crate wrote: `123.jpg`, possibly under a directory.
fn frame_id(file_name: &str) -> Option<i64> {
    let name = file_name.rsplit(['/', '\\']).next()?;
    name.split_once('.').map_or(name, |(stem, _)| stem).parse().ok()
}

pub(crate) fn rfc3339(ms: i64) -> String {
    // RFC 3339 ends at year 9999: later (or garbage) times print as its last millisecond.
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.clamp(0, 253_402_300_799_999) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A data subject's access request: every frame of `camera` captured in [`from`,
/// `until`) as `frames/ID.jpg` (anonymized, as stored), `frames.json` (each frame's
/// metadata, provenance, machine detections and annotation versions), `audit.json` (the
/// camera's audit entries in the window) and `README.txt`. Audited. Returns the frame
/// count; tells `progress` (frames written, frames in all) after each frame.
pub fn access_export(
    store: &Store,
    camera: &str,
    from: i64,
    until: i64,
    actor: &str,
    sink: &mut dyn Sink,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<usize, DatasetError> {
    let filter =
        FrameFilter { camera: Some(camera.to_owned()), from: Some(from), until: Some(until), ..Default::default() };
    let frames = store.frames(&filter)?;
    let mut records = Vec::new();
    for f in &frames {
        crate::put(sink, &format!("frames/{}.jpg", f.id), &store.frame_jpeg(f.id)?)?;
        let mut record = serde_json::to_value(f).expect("frame rows serialize");
        record["detections"] = serde_json::to_value(store.detections(f.id)?).expect("detections serialize");
        record["annotations"] = serde_json::to_value(store.annotations(f.id)?).expect("annotations serialize");
        records.push(record);
        progress(records.len(), frames.len());
    }
    // The camera's entries in the window: capture summaries are per minute.
    let audit: Vec<_> = store
        .audit_entries(&format!("camera/{camera}/"))?
        .into_iter()
        .filter(|e| {
            let minute = e.subject.rsplit('/').next().and_then(|m| m.parse::<i64>().ok());
            minute.is_none_or(|m| m + 60_000 > from && m < until)
        })
        .collect();
    let records = serde_json::to_string_pretty(&records).expect("JSON values serialize");
    crate::put(sink, "frames.json", records.as_bytes())?;
    let audit = serde_json::to_string_pretty(&audit).expect("audit entries serialize");
    crate::put(sink, "audit.json", audit.as_bytes())?;
    let readme = format!(
        "Access export from Obscura\ncamera {camera}, captured {} to {} (UTC)\n{} frame(s), anonymized as stored: faces and licence plates were redacted on the device before storage.\nframes.json: each frame's metadata and how it was anonymized.\naudit.json: every recorded action on these frames.\n",
        rfc3339(from),
        rfc3339(until),
        frames.len()
    );
    crate::put(sink, "README.txt", readme.as_bytes())?;
    store.audit(
        actor,
        "access_export",
        &format!("camera/{camera}"),
        json!({ "from": from, "until": until, "frames": frames.len() }),
    )?;
    Ok(frames.len())
}
