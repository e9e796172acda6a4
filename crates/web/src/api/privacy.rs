//! What stewards answer for: consents, erasure and access requests, the audit log, and
//! the datasets that leave the box. Downloads are built in an unlinked temporary file
//! and streamed, so a large export never sits in memory.

use std::io::Seek;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use store::{Consent, ConsentId, FrameFilter, FrameId, NewConsent, Purpose, Scope};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Authed;
use crate::{ApiError, AppState, Body, blocking};

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
}

/// Every consent record, active or withdrawn, with the frames each covers.
#[utoipa::path(get, path = "/consents", tag = "consent", responses((status = 200, body = Vec<Object>)))]
pub(crate) async fn consents(State(state): State<AppState>) -> Result<Json<Vec<Consent>>, ApiError> {
    blocking(&state, |store| Ok(Json(store.consents()?))).await
}

/// One consent record.
#[utoipa::path(get, path = "/consents/{id}", tag = "consent", params(("id" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = ApiError)))]
pub(crate) async fn consent(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Consent>, ApiError> {
    blocking(&state, move |store| Ok(Json(store.consent(&ConsentId(id))?))).await
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct ConsentRequest {
    /// `device`, `camera:ID` or `zone:NAME`.
    scope: String,
    /// Who is covered, e.g. "site staff".
    covered: String,
    legal_basis: String,
    /// Any of annotate, sync, train.
    purposes: Vec<String>,
    /// Unix ms; now if absent.
    valid_from: Option<i64>,
    valid_until: Option<i64>,
    /// SHA-256 of the signed form or signage photo.
    evidence_sha256: Option<String>,
}

/// Record a consent (stewards).
#[utoipa::path(post, path = "/consents", tag = "consent", request_body = ConsentRequest,
    responses((status = 201, body = Object), (status = 422, body = ApiError)))]
pub(crate) async fn add_consent(
    State(state): State<AppState>,
    axum::Extension(me): axum::Extension<Authed>,
    Body(c): Body<ConsentRequest>,
) -> Result<(StatusCode, Json<Consent>), ApiError> {
    let scope: Scope = c.scope.parse().map_err(invalid)?;
    let purposes = c.purposes.iter().map(|p| p.parse::<Purpose>()).collect::<Result<Vec<_>, _>>().map_err(invalid)?;
    if purposes.is_empty() {
        return Err(invalid("a consent needs at least one purpose: annotate, sync or train"));
    }
    if c.covered.trim().is_empty() || c.legal_basis.trim().is_empty() {
        return Err(invalid("say who is covered and the legal basis"));
    }
    if let Some(sha) = &c.evidence_sha256
        && !(sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(invalid("evidence_sha256 must be 64 hex digits"));
    }
    blocking(&state, move |store| {
        let new = NewConsent {
            scope,
            covered: c.covered,
            legal_basis: c.legal_basis,
            purposes,
            valid_from: c.valid_from.unwrap_or_else(|| store.now_ms()),
            valid_until: c.valid_until,
            evidence_sha256: c.evidence_sha256,
            recorded_by: me.user.name.clone(),
        };
        Ok((StatusCode::CREATED, Json(store.add_consent(new)?)))
    })
    .await
}

/// Withdraw a consent (stewards): its frames stop being eligible at once.
#[utoipa::path(post, path = "/consents/{id}/withdraw", tag = "consent", params(("id" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = ApiError)))]
pub(crate) async fn withdraw(
    State(state): State<AppState>,
    Path(id): Path<String>,
    axum::Extension(me): axum::Extension<Authed>,
) -> Result<Json<Consent>, ApiError> {
    blocking(&state, move |store| Ok(Json(store.withdraw_consent(&ConsentId(id), &me.user.name)?))).await
}

#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct AuditQuery {
    /// Only actions starting with this, e.g. `login` or `export`.
    action: Option<String>,
    /// At most this many (default 100, at most 500).
    limit: Option<u32>,
    /// After this id (the previous page's `next_after`).
    after: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditPage {
    #[schema(value_type = Vec<Object>)]
    items: Vec<store::AuditEntry>,
    next_after: Option<i64>,
}

/// The audit log, read-only, oldest first (`after` is a sequence number).
#[utoipa::path(get, path = "/audit", tag = "audit", params(AuditQuery), responses((status = 200, body = AuditPage)))]
pub(crate) async fn audit(
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = super::limit(q.limit)?;
    let after = q.after.unwrap_or(0);
    blocking(&state, move |store| {
        let items = store.audit_page(after, limit, q.action.as_deref())?;
        let next_after = (items.len() == limit as usize).then(|| items.last().map(|e| e.seq)).flatten();
        Ok(Json(AuditPage { items, next_after }))
    })
    .await
}

#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct ExportQuery {
    /// coco, cvat, yolo, voc or labelstudio.
    format: String,
    camera: Option<String>,
    from: Option<i64>,
    until: Option<i64>,
    /// new, in_progress, annotated, accepted (each frame's accepted version) or rejected.
    #[param(value_type = Option<String>)]
    status: Option<store::FrameStatus>,
    /// The purpose the data leaves for (default train): only frames consented for it.
    purpose: Option<String>,
    /// Offer the anonymizer's boxes as face and license_plate pre-labels.
    #[serde(default)]
    redactions: bool,
    /// A token of your own (8 to 64 of A–Z, a–z, 0–9, `-`, `_`) to follow the packing at
    /// `/progress/{token}` while this request runs.
    progress: Option<String>,
}

/// Download a dataset as a zip: the same files as `obscura export`, audited.
#[utoipa::path(get, path = "/exports", tag = "datasets", params(ExportQuery),
    responses((status = 200, content_type = "application/zip", body = Vec<u8>), (status = 400, body = ApiError),
        (status = 409, description = "No frame to export: none matches, or none is consented for the purpose", body = ApiError)))]
pub(crate) async fn export(
    State(state): State<AppState>,
    axum::Extension(me): axum::Extension<Authed>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let format: dataset::Format = q.format.parse().map_err(ApiError::bad_request)?;
    let purpose: Purpose = q.purpose.as_deref().unwrap_or("train").parse().map_err(ApiError::bad_request)?;
    let request = dataset::Export {
        format,
        filter: FrameFilter { camera: q.camera, from: q.from, until: q.until, status: q.status, ..Default::default() },
        purpose,
        redactions: q.redactions,
        actor: me.user.name.clone(),
    };
    let name = format!("obscura-{}-{}.zip", format.name(), purpose.as_str());
    let filter = request.filter.clone();
    blocking(&state, move |store| nothing_to_export(store, filter, purpose)).await?;
    let tracker = state.progress.start(me.user.id, q.progress.as_deref(), "export");
    zip_download(&state, name, move |store, sink| {
        dataset::export_with_progress(store, &request, sink, &mut |done, total| tell(&tracker, done, total)).map(|_| ())
    })
    .await
}

fn tell(tracker: &Option<crate::progress::Tracker>, done: usize, total: usize) {
    if let Some(t) = tracker {
        t.set(done, total);
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct ImportQuery {
    /// coco (COCO JSON) or cvat (CVAT for images XML).
    format: String,
    /// Say what would change, and change nothing.
    #[serde(default)]
    dry_run: bool,
    /// The file's name, for the audit log.
    name: Option<String>,
    /// A token of your own to follow the import at `/progress/{token}`.
    progress: Option<String>,
}

/// Merge a COCO or CVAT file's annotations into the frames it names (admins), as
/// `obscura import` does: each matched frame gets the file's shapes as a new annotation
/// version, older versions kept; audited. The file is the body, up to 2 MiB (larger
/// files: `obscura import` on the box).
#[utoipa::path(post, path = "/imports", tag = "datasets", params(ImportQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = Object), (status = 400, body = ApiError), (status = 422, body = ApiError)))]
pub(crate) async fn import(
    State(state): State<AppState>,
    axum::Extension(me): axum::Extension<Authed>,
    Query(q): Query<ImportQuery>,
    file: axum::body::Bytes,
) -> Result<Json<dataset::ImportReport>, ApiError> {
    let (format, file_name) = match q.format.as_str() {
        "coco" => (dataset::ImportFormat::Coco, "annotations.json"),
        "cvat" => (dataset::ImportFormat::Cvat, "annotations.xml"),
        other => return Err(ApiError::bad_request(format!("format `{other}` is not coco or cvat"))),
    };
    if file.is_empty() {
        return Err(invalid("the file is empty: send the COCO JSON or CVAT XML file as the body"));
    }
    let name = q.name.unwrap_or_else(|| file_name.into());
    let tracker = state.progress.start(me.user.id, q.progress.as_deref(), "import");
    blocking(&state, move |store| {
        let dir = tempfile::tempdir().map_err(ApiError::internal)?;
        let path = dir.path().join(file_name);
        std::fs::write(&path, &file).map_err(ApiError::internal)?;
        let source = format!("upload {name}");
        let mut told = |done, total| tell(&tracker, done, total);
        match dataset::import_with_progress(store, format, &path, &source, &me.user.name, q.dry_run, &mut told) {
            Ok(report) => Ok(Json(report)),
            Err(dataset::DatasetError::Parse { format, message, .. }) => {
                Err(invalid(format!("{name} is not a {format} dataset: {message}")))
            }
            Err(e) => Err(e.into()),
        }
    })
    .await
}

/// An export with no frame in it is refused with why and what to do (issue 18: it was
/// an empty zip and "Dataset downloaded"): no frame matches the filters, or frames do
/// but no active consent gives them the purpose.
fn nothing_to_export(store: &store::Store, filter: FrameFilter, purpose: Purpose) -> Result<(), ApiError> {
    let one = |purpose: Option<Purpose>| {
        store.frames(&FrameFilter { purpose, limit: Some(1), ..filter.clone() }).map(|f| f.is_empty())
    };
    if !one(Some(purpose))? {
        return Ok(());
    }
    let p = purpose.as_str();
    Err(if one(None)? {
        ApiError::new(
            StatusCode::CONFLICT,
            "no_frames",
            "no frame matches these filters (camera, time, status): widen them, or wait for the cameras to store frames",
        )
    } else {
        ApiError::new(
            StatusCode::CONFLICT,
            "no_consent",
            format!(
                "no frame here is consented for `{p}`: a steward records a consent with the `{p}` purpose for these \
                 cameras (Consent, Record a consent; or `obscura consent add --purpose {p}`). A consent covers the \
                 frames captured from its start, so frames taken before it stay out"
            ),
        )
    })
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct Erasure {
    camera: Option<String>,
    from: Option<i64>,
    until: Option<i64>,
    #[serde(default)]
    frames: Vec<i64>,
    consent: Option<String>,
    /// Why: the request's reference, for the audit log and the hub's tombstones.
    reason: String,
}

/// Erase frames (stewards): a camera and time window, frame ids, or a consent's frames.
/// Rows, blobs and WAL pages go; a tombstone stays for each frame the hub may hold.
/// A consent that does not exist is 404.
#[utoipa::path(post, path = "/erasures", tag = "consent", request_body = Erasure,
    responses((status = 200, body = Object), (status = 404, body = ApiError), (status = 422, body = ApiError)))]
pub(crate) async fn erase(
    State(state): State<AppState>,
    axum::Extension(me): axum::Extension<Authed>,
    Body(e): Body<Erasure>,
) -> Result<Json<store::Erased>, ApiError> {
    if e.reason.trim().is_empty() {
        return Err(invalid("say why (the request's reference): it goes in the audit log"));
    }
    if e.camera.is_none() && e.from.is_none() && e.until.is_none() && e.frames.is_empty() && e.consent.is_none() {
        return Err(invalid("name what to erase: a camera and time window, frame ids, or a consent"));
    }
    let filter = FrameFilter {
        camera: e.camera,
        from: e.from,
        until: e.until,
        ids: e.frames.iter().copied().map(FrameId).collect(),
        consent: e.consent.clone().map(ConsentId),
        ..Default::default()
    };
    blocking(&state, move |store| Ok(Json(store.erase(&filter, &me.user.name, &e.reason)?))).await
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct AccessRequest {
    camera: String,
    /// Unix ms.
    from: i64,
    until: i64,
    /// A token of your own to follow the packing at `/progress/{token}`.
    progress: Option<String>,
}

/// A data subject's access request (stewards): one zip of the camera's frames in the
/// window (anonymized, as stored), their metadata and audit entries.
#[utoipa::path(post, path = "/access-exports", tag = "consent", request_body = AccessRequest,
    responses((status = 200, content_type = "application/zip", body = Vec<u8>), (status = 422, body = ApiError)))]
pub(crate) async fn access_export(
    State(state): State<AppState>,
    axum::Extension(me): axum::Extension<Authed>,
    Body(r): Body<AccessRequest>,
) -> Result<Response, ApiError> {
    if r.until <= r.from {
        return Err(invalid("until must be after from"));
    }
    let name = format!("access-{}-{}.zip", r.camera, r.from);
    let tracker = state.progress.start(me.user.id, r.progress.as_deref(), "access_export");
    zip_download(&state, name, move |store, sink| {
        let mut told = |done, total| tell(&tracker, done, total);
        dataset::access_export(store, &r.camera, r.from, r.until, &me.user.name, sink, &mut told).map(|_| ())
    })
    .await
}

/// Builds a zip in an unlinked temporary file on the blocking pool and streams it.
async fn zip_download(
    state: &AppState,
    name: String,
    fill: impl FnOnce(&store::Store, &mut dyn dataset::Sink) -> Result<(), dataset::DatasetError> + Send + 'static,
) -> Result<Response, ApiError> {
    let file = blocking(state, move |store| {
        let file = tempfile::tempfile().map_err(ApiError::internal)?;
        let mut sink = dataset::ZipSink::new(file);
        fill(store, &mut sink)?;
        let mut file = sink.finish().map_err(ApiError::internal)?;
        file.rewind().map_err(ApiError::internal)?;
        Ok(file)
    })
    .await?;
    let length = file.metadata().map_err(ApiError::internal)?.len();
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_owned()),
            (header::CONTENT_LENGTH, length.to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}
