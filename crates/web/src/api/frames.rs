//! Frames for annotators: lists with filters, the anonymized image (decrypted on the
//! fly, optionally as a thumbnail), machine detections, versioned annotations and
//! reviews. Only frames an active consent lets be annotated are visible; a withdrawal
//! hides them at once.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use store::{FrameFilter, FrameId, FrameRow, FrameStatus, Purpose};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Authed;
use crate::{ApiError, AppState, Body, blocking};

#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct FrameQuery {
    camera: Option<String>,
    /// Captured at or after, Unix ms.
    from: Option<i64>,
    /// Captured before, Unix ms.
    until: Option<i64>,
    /// new, in_progress, annotated (submitted for review), accepted (frames with an
    /// accepted version) or rejected.
    #[param(value_type = Option<String>)]
    status: Option<FrameStatus>,
    /// Only frames with (true) or without (false) pre-labels.
    prelabeled: Option<bool>,
    /// At most this many (default 100, at most 500).
    limit: Option<u32>,
    /// After this id (the previous page's `next_after`).
    after: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct FrameDto {
    id: i64,
    camera: String,
    /// Unix ms.
    captured_at: i64,
    width: u32,
    height: u32,
    /// new, in_progress, annotated (submitted, awaiting review), accepted or rejected.
    #[schema(value_type = String)]
    status: FrameStatus,
    /// The version a review accepted, if any: what exports of accepted frames carry.
    accepted_version: Option<i64>,
    /// How it was anonymized: models, thresholds, counts, timings.
    #[schema(value_type = Object)]
    provenance: Value,
}

impl From<FrameRow> for FrameDto {
    fn from(f: FrameRow) -> FrameDto {
        FrameDto {
            id: f.id.0,
            camera: f.camera,
            captured_at: f.captured_at,
            width: f.width,
            height: f.height,
            status: f.status,
            accepted_version: f.accepted_version,
            provenance: f.provenance,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct FramePage {
    items: Vec<FrameDto>,
    /// Pass as `after` for the next page; null on the last.
    next_after: Option<i64>,
}

/// Frames open to annotation, oldest first, a page at a time.
#[utoipa::path(get, path = "/frames", tag = "frames", params(FrameQuery),
    responses((status = 200, body = FramePage), (status = 400, body = ApiError)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(q): Query<FrameQuery>,
) -> Result<Json<FramePage>, ApiError> {
    let limit = super::limit(q.limit)?;
    let filter = FrameFilter {
        camera: q.camera,
        from: q.from,
        until: q.until,
        status: q.status,
        prelabeled: q.prelabeled,
        purpose: Some(Purpose::Annotate),
        after: q.after.map(FrameId),
        limit: Some(limit),
        ..Default::default()
    };
    let rows = blocking(&state, move |store| Ok(store.frames(&filter)?)).await?;
    let next_after = (rows.len() == limit as usize).then(|| rows.last().map(|f| f.id.0)).flatten();
    Ok(Json(FramePage { items: rows.into_iter().map(FrameDto::from).collect(), next_after }))
}

/// The frame, if it is open to annotation; otherwise 404 (its existence is not told).
pub(super) fn visible(store: &store::Store, id: FrameId) -> Result<FrameRow, ApiError> {
    if !store.usable(id, Purpose::Annotate)? {
        return Err(ApiError::not_found(format!("frame {id} not found, or no consent lets it be annotated")));
    }
    Ok(store.frame(id)?)
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct FrameDetail {
    #[serde(flatten)]
    frame: FrameDto,
    /// The current annotation version (0: none yet).
    version: i64,
    /// The newest review, if any: why a frame came back.
    #[schema(value_type = Option<Object>)]
    last_review: Option<store::Review>,
}

/// One frame with its current annotation version and newest review.
#[utoipa::path(get, path = "/frames/{id}", tag = "frames", params(("id" = i64, Path)),
    responses((status = 200, body = FrameDetail), (status = 404, body = ApiError)))]
pub(crate) async fn get(State(state): State<AppState>, Path(id): Path<FrameId>) -> Result<Json<FrameDetail>, ApiError> {
    blocking(&state, move |store| {
        let frame = visible(store, id)?;
        let version = store.annotation(id)?.map_or(0, |a| a.version);
        let last_review = store.reviews(id)?.into_iter().next();
        Ok(Json(FrameDetail { frame: frame.into(), version, last_review }))
    })
    .await
}

#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct ImageQuery {
    /// Longest side in pixels for a thumbnail (32 to 4096); the full frame without it.
    size: Option<u32>,
}

/// The anonymized image as stored (JPEG), decrypted on the fly; raw pixels never exist
/// on the box to be served.
#[utoipa::path(get, path = "/frames/{id}/image", tag = "frames", params(("id" = i64, Path), ImageQuery),
    responses((status = 200, content_type = "image/jpeg", body = Vec<u8>), (status = 404, body = ApiError)))]
pub(crate) async fn image(
    State(state): State<AppState>,
    Path(id): Path<FrameId>,
    Query(q): Query<ImageQuery>,
) -> Result<Response, ApiError> {
    if let Some(size) = q.size
        && !(32..=4096).contains(&size)
    {
        return Err(ApiError::bad_request("size must be 32 to 4096 pixels"));
    }
    let Some(size) = q.size else {
        let jpeg = blocking(&state, move |store| {
            visible(store, id)?;
            Ok(Bytes::from(store.frame_jpeg(id)?))
        })
        .await?;
        return Ok(jpeg_response(jpeg));
    };
    let thumbs = state.thumbs.clone();
    // Asked first, always: a thumbnail kept from before a withdrawal or an erasure is
    // never served.
    let kept = blocking(&state, move |store| {
        visible(store, id)?;
        Ok(thumbs.get(id, size))
    })
    .await?;
    let jpeg = match kept {
        Some(jpeg) => jpeg,
        None => {
            // Made on half the cores at most: the rest wait here as tasks, not as
            // threads crowding the cores that a save holding the store's writer needs
            // (issue 20, item 3).
            let _turn = state.thumbs.making.acquire().await.map_err(ApiError::internal)?;
            let thumbs = state.thumbs.clone();
            blocking(&state, move |store| {
                visible(store, id)?;
                let jpeg = store.frame_jpeg(id)?;
                let img =
                    image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg).map_err(ApiError::internal)?;
                let thumb = if img.width().max(img.height()) <= size {
                    Bytes::from(jpeg)
                } else {
                    Bytes::from(thumbnail(&img, size)?)
                };
                thumbs.put(id, size, thumb.clone());
                Ok(thumb)
            })
            .await?
        }
    };
    Ok(jpeg_response(jpeg))
}

/// A JPEG made or kept here for one person: never cached on the way.
pub(crate) fn jpeg_response(jpeg: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "private, no-store")], jpeg).into_response()
}

/// Thumbnails made lately. Under load the queue's cards asked to decode and scale the
/// same frames again and again, the most CPU any route took (issue 20, item 3). A
/// stored frame never changes and an erased frame's id never comes back, so an entry
/// never goes stale; what may be shown is asked of the store before the cache. Bounded
/// by bytes, least recently used first out.
#[derive(Debug)]
pub struct Thumbs {
    kept: std::sync::Mutex<Kept>,
    /// Turns to make one: half the cores (one on a two-core box), so that previews,
    /// which can always be made again, never take every core from a tablet's save
    /// (on a box of two cores or more).
    making: tokio::sync::Semaphore,
}

/// The thumbnails by frame and size, and their bytes in all.
type Kept = (lru::LruCache<(FrameId, u32), Bytes>, usize);

/// About 800 thumbnails of 320 px.
const THUMB_BYTES: usize = 16 << 20;

impl Default for Thumbs {
    fn default() -> Thumbs {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        Thumbs {
            kept: std::sync::Mutex::new((lru::LruCache::unbounded(), 0)),
            making: tokio::sync::Semaphore::new((cores / 2).max(1)),
        }
    }
}

impl Thumbs {
    fn get(&self, id: FrameId, size: u32) -> Option<Bytes> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner()).0.get(&(id, size)).cloned()
    }

    fn put(&self, id: FrameId, size: u32, jpeg: Bytes) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let (cache, bytes) = &mut *kept;
        *bytes += jpeg.len();
        if let Some(old) = cache.put((id, size), jpeg) {
            *bytes -= old.len();
        }
        while *bytes > THUMB_BYTES {
            let Some((_, out)) = cache.pop_lru() else { break };
            *bytes -= out.len();
        }
    }
}

/// `img` scaled to fit `side` by `side` (its aspect kept), as a JPEG. fast_image_resize's
/// SIMD convolution: image's own `thumbnail` took a quarter of the daemon's CPU under
/// the load benchmark.
pub(crate) fn thumbnail(img: &image::DynamicImage, side: u32) -> Result<Vec<u8>, ApiError> {
    use fast_image_resize as fir;
    let rgb = img.to_rgb8();
    let (width, height) = rgb.dimensions();
    let scale = f64::from(side) / f64::from(width.max(height));
    let fit = |n: u32| ((f64::from(n) * scale).round() as u32).clamp(1, side);
    let src = fir::images::Image::from_vec_u8(width, height, rgb.into_raw(), fir::PixelType::U8x3)
        .map_err(ApiError::internal)?;
    let mut dst = fir::images::Image::new(fit(width), fit(height), fir::PixelType::U8x3);
    let bilinear = fir::ResizeOptions::new().resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Bilinear));
    fir::Resizer::new().resize(&src, &mut dst, &bilinear).map_err(ApiError::internal)?;
    let (w, h) = (dst.width(), dst.height());
    let small = image::RgbImage::from_raw(w, h, dst.into_vec()).expect("the resizer's buffer is w × h × 3");
    jpeg_of(&image::DynamicImage::ImageRgb8(small))
}

/// A derived picture (a thumbnail, a label's example) as a JPEG.
pub(crate) fn jpeg_of(img: &image::DynamicImage) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
        .encode_image(&img.to_rgb8())
        .map_err(ApiError::internal)?;
    Ok(out)
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Detections {
    /// The pre-labeller's proposals: label, box, score, model and its SHA-256.
    #[schema(value_type = Vec<Object>)]
    prelabels: Vec<store::Detection>,
    /// The regions the anonymizer redacted (faces, plates): shown as such, never revealable.
    #[schema(value_type = Vec<Object>)]
    redactions: Vec<store::Detection>,
}

/// Machine boxes on a frame, kept apart from what people draw.
#[utoipa::path(get, path = "/frames/{id}/detections", tag = "frames", params(("id" = i64, Path)),
    responses((status = 200, body = Detections), (status = 404, body = ApiError)))]
pub(crate) async fn detections(
    State(state): State<AppState>,
    Path(id): Path<FrameId>,
) -> Result<Json<Detections>, ApiError> {
    blocking(&state, move |store| {
        visible(store, id)?;
        let (prelabels, redactions) =
            store.detections(id)?.into_iter().partition(|d| d.source == store::Source::Prelabel);
        Ok(Json(Detections { prelabels, redactions }))
    })
    .await
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Annotations {
    /// 0 when nothing was saved yet.
    version: i64,
    /// Boxes `{"type": "box", "label", "points": [x1, y1, x2, y2], "attributes"}` and
    /// polygons `{"type": "polygon", "label", "points": [x, y, ...], "attributes"}`, in pixels.
    #[schema(value_type = Vec<Object>)]
    shapes: Value,
    author: Option<String>,
    saved_at: Option<i64>,
    /// Ids of the frame's pre-labels (detections) people rejected.
    dismissed: Vec<i64>,
}

/// The frame's current annotations.
#[utoipa::path(get, path = "/frames/{id}/annotations", tag = "annotations", params(("id" = i64, Path)),
    responses((status = 200, body = Annotations), (status = 404, body = ApiError)))]
pub(crate) async fn annotations(
    State(state): State<AppState>,
    Path(id): Path<FrameId>,
) -> Result<Json<Annotations>, ApiError> {
    blocking(&state, move |store| {
        visible(store, id)?;
        Ok(Json(match store.annotation(id)? {
            Some(a) => Annotations {
                version: a.version,
                shapes: a.shapes,
                author: Some(a.author),
                saved_at: Some(a.created_at),
                dismissed: a.dismissed,
            },
            None => Annotations { version: 0, shapes: json!([]), author: None, saved_at: None, dismissed: vec![] },
        }))
    })
    .await
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct Save {
    /// The version the edit started from (0 for none). If another was saved since, the
    /// save is refused with 409 and nothing is overwritten.
    base: i64,
    #[schema(value_type = Vec<Object>)]
    shapes: Value,
    /// Ids of pre-labels rejected as of this version; absent keeps the current ones.
    dismissed: Option<Vec<i64>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Saved {
    version: i64,
}

/// Save a new version of the frame's annotations (optimistic concurrency).
#[utoipa::path(put, path = "/frames/{id}/annotations", tag = "annotations", params(("id" = i64, Path)), request_body = Save,
    responses((status = 200, body = Saved), (status = 409, body = ApiError), (status = 422, body = ApiError)))]
pub(crate) async fn save_annotations(
    State(state): State<AppState>,
    Path(id): Path<FrameId>,
    axum::Extension(me): axum::Extension<Authed>,
    Body(save): Body<Save>,
) -> Result<Json<Saved>, ApiError> {
    let Some(shapes) = save.shapes.as_array() else {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "shapes must be a list"));
    };
    if shapes.len() > 2000 {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "at most 2000 shapes per frame"));
    }
    for (i, shape) in shapes.iter().enumerate() {
        if dataset::Shape::from_json(shape).is_none() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!(
                    "shape {i} is not a box {{\"type\": \"box\", \"label\", \"points\": [x1, y1, x2, y2]}} or a polygon of 3 or more points"
                ),
            ));
        }
    }
    let used: Vec<String> = shapes.iter().filter_map(|s| s["label"].as_str().map(str::to_owned)).collect();
    blocking(&state, move |store| {
        visible(store, id)?;
        let labels = store.label_names()?;
        if !labels.is_empty()
            && let Some(unknown) = used.iter().find(|l| !labels.contains(l))
        {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_label",
                format!("label `{unknown}` is not in the label schema; an admin can add it"),
            ));
        }
        match store.save_annotation_dismissing(id, save.base, &save.shapes, save.dismissed.as_deref(), &me.user.name)? {
            Ok(version) => Ok(Json(Saved { version })),
            Err(conflict) => Err(ApiError::new(StatusCode::CONFLICT, "conflict", conflict.to_string())
                .with_details(json!({ "current": conflict.current, "author": conflict.author }))),
        }
    })
    .await
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct Submit {
    /// The version submitted: it must be the newest, so what the reviewer sees is what
    /// was submitted.
    version: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Submitted {
    /// `annotated`: awaiting review.
    #[schema(value_type = String)]
    status: FrameStatus,
}

/// Submit the frame's newest annotation version for review. Saves are drafts until then.
#[utoipa::path(post, path = "/frames/{id}/submit", tag = "annotations", params(("id" = i64, Path)), request_body = Submit,
    responses((status = 200, body = Submitted), (status = 404, body = ApiError), (status = 422, body = ApiError)))]
pub(crate) async fn submit(
    State(state): State<AppState>,
    Path(id): Path<FrameId>,
    axum::Extension(me): axum::Extension<Authed>,
    Body(s): Body<Submit>,
) -> Result<Json<Submitted>, ApiError> {
    blocking(&state, move |store| {
        visible(store, id)?;
        Ok(Json(Submitted { status: store.submit_annotation(id, s.version, &me.user.name)? }))
    })
    .await
}

/// The frame's reviews, newest first: annotators see why a frame came back.
#[utoipa::path(get, path = "/frames/{id}/reviews", tag = "review", params(("id" = i64, Path)),
    responses((status = 200, body = Vec<Object>), (status = 404, body = ApiError)))]
pub(crate) async fn reviews(
    State(state): State<AppState>,
    Path(id): Path<FrameId>,
) -> Result<Json<Vec<store::Review>>, ApiError> {
    blocking(&state, move |store| {
        visible(store, id)?;
        Ok(Json(store.reviews(id)?))
    })
    .await
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct Decision {
    /// The annotation version reviewed.
    version: i64,
    /// `accept` or `reject`.
    decision: String,
    /// Required to reject: what to fix.
    #[serde(default)]
    comment: String,
}

/// Accept the frame's submitted annotation version (what exports of accepted frames and
/// sync then carry), or reject it with a comment that returns the frame to the queue.
#[utoipa::path(post, path = "/frames/{id}/reviews", tag = "review", params(("id" = i64, Path)), request_body = Decision,
    responses((status = 201, body = Object), (status = 422, body = ApiError)))]
pub(crate) async fn review(
    State(state): State<AppState>,
    Path(id): Path<FrameId>,
    axum::Extension(me): axum::Extension<Authed>,
    Body(d): Body<Decision>,
) -> Result<(StatusCode, Json<store::Review>), ApiError> {
    let decision = match d.decision.as_str() {
        "accept" => store::Decision::Accept,
        "reject" => store::Decision::Reject,
        other => return Err(ApiError::bad_request(format!("decision `{other}` is not accept or reject"))),
    };
    blocking(&state, move |store| {
        visible(store, id)?;
        Ok((StatusCode::CREATED, Json(store.review(id, d.version, decision, &d.comment, &me.user.name)?)))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_are_kept_to_a_byte_budget_least_recently_used_out_first() {
        let thumbs = Thumbs::default();
        let jpeg = |n: usize| Bytes::from(vec![0u8; n]);
        thumbs.put(FrameId(1), 320, jpeg(THUMB_BYTES / 2));
        thumbs.put(FrameId(2), 320, jpeg(THUMB_BYTES / 4));
        assert!(thumbs.get(FrameId(1), 320).is_some(), "1 is now the most recent");
        assert!(thumbs.get(FrameId(1), 64).is_none(), "another size is another thumbnail");
        thumbs.put(FrameId(3), 320, jpeg(THUMB_BYTES / 2));
        assert!(thumbs.get(FrameId(2), 320).is_none(), "the least recent went to make room");
        assert_eq!(thumbs.get(FrameId(3), 320).map(|b| b.len()), Some(THUMB_BYTES / 2));
        assert_eq!(thumbs.kept.lock().unwrap().1, THUMB_BYTES, "the count of bytes follows");
    }

    #[test]
    fn a_thumbnail_fits_the_side_keeps_the_aspect_and_the_picture() {
        // Red on the left, blue on the right, 1280 × 720.
        let img =
            image::RgbImage::from_fn(
                1280,
                720,
                |x, _| if x < 640 { [220, 20, 20].into() } else { [20, 20, 220].into() },
            );
        let img = image::DynamicImage::ImageRgb8(img);
        for (side, want) in [(320, (320, 180)), (64, (64, 36)), (100, (100, 56))] {
            let thumb = image::load_from_memory(&thumbnail(&img, side).unwrap()).unwrap().to_rgb8();
            assert_eq!(thumb.dimensions(), want);
            let (left, right) = (thumb.get_pixel(2, want.1 / 2), thumb.get_pixel(want.0 - 3, want.1 / 2));
            assert!(left[0] > 180 && left[2] < 60, "{left:?}");
            assert!(right[2] > 180 && right[0] < 60, "{right:?}");
        }
        // A tall one.
        let tall = image::DynamicImage::ImageRgb8(image::RgbImage::new(300, 900));
        let thumb = image::load_from_memory(&thumbnail(&tall, 90).unwrap()).unwrap();
        assert_eq!((thumb.width(), thumb.height()), (30, 90));
    }
}
