//! The label schema and work queues: what annotators pick from and what they do next.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Authed;
use crate::{ApiError, AppState, Body, blocking};

/// The label schema: names, colours, shapes and attributes, in picker order.
#[utoipa::path(get, path = "/labels", tag = "labels", responses((status = 200, body = Vec<Object>)))]
pub(crate) async fn labels(State(state): State<AppState>) -> Result<Json<Vec<store::Label>>, ApiError> {
    blocking(&state, |store| Ok(Json(store.labels()?))).await
}

/// Replace the label schema (admins). Saved annotations keep their label names.
#[utoipa::path(put, path = "/labels", tag = "labels", request_body = Vec<Object>,
    responses((status = 200, body = Vec<Object>), (status = 422, body = ApiError)))]
pub(crate) async fn set_labels(
    State(state): State<AppState>,
    axum::Extension(me): axum::Extension<Authed>,
    Body(labels): Body<Vec<store::Label>>,
) -> Result<Json<Vec<store::Label>>, ApiError> {
    blocking(&state, move |store| {
        store.set_labels(&labels, &me.user.name)?;
        Ok(Json(store.labels()?))
    })
    .await
}

/// The longest side of a label's example as served: a picture beside the label, not a
/// second frame to label.
const EXAMPLE_SIDE: u32 = 320;

/// A label's example: its frame cut around its box, with a margin for context. 404 when
/// the label has none, or its frame is erased or closed to annotators.
#[utoipa::path(get, path = "/labels/{name}/example", tag = "labels", params(("name" = String, Path)),
    responses((status = 200, content_type = "image/jpeg", body = Vec<u8>), (status = 404, body = ApiError)))]
pub(crate) async fn example(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let jpeg = blocking(&state, move |store| {
        let example = store.labels()?.into_iter().find(|l| l.name == name).and_then(|l| l.example);
        let Some(e) = example else {
            return Err(ApiError::not_found(format!("label `{name}` has no example (an admin sets one under Labels)")));
        };
        super::frames::visible(store, e.frame)?;
        let jpeg = store.frame_jpeg(e.frame)?;
        let img = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg).map_err(ApiError::internal)?;
        let [x0, y0, x1, y1] = around(e.bbox, img.width(), img.height());
        let crop = img.crop_imm(x0, y0, x1 - x0, y1 - y0);
        let fits = crop.width().max(crop.height()) <= EXAMPLE_SIDE;
        if fits { super::frames::jpeg_of(&crop) } else { super::frames::thumbnail(&crop, EXAMPLE_SIDE) }
    })
    .await?;
    Ok(super::frames::jpeg_response(axum::body::Bytes::from(jpeg)))
}

/// The region shown for an example box: the box and a fifth of its size on each side,
/// inside the frame and never empty, as `[x0, y0, x1, y1]`.
fn around([x, y, w, h]: [f64; 4], width: u32, height: u32) -> [u32; 4] {
    let (mx, my) = (w / 5.0, h / 5.0);
    let clamp = |v: f64, max: u32| (v.max(0.0) as u32).min(max.saturating_sub(1));
    let (x0, y0) = (clamp(x - mx, width), clamp(y - my, height));
    let x1 = (clamp(x + w + mx, width) + 1).max(x0 + 1).min(width.max(1));
    let y1 = (clamp(y + h + my, height) + 1).max(y0 + 1).min(height.max(1));
    [x0, y0, x1, y1]
}

/// Work queues with their progress by status.
#[utoipa::path(get, path = "/queues", tag = "queues", responses((status = 200, body = Vec<Object>)))]
pub(crate) async fn queues(State(state): State<AppState>) -> Result<Json<Vec<store::Queue>>, ApiError> {
    blocking(&state, |store| Ok(Json(store.queues()?))).await
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewQueue {
    name: String,
    /// `camera`, `from`, `until` (Unix ms); empty for every frame.
    #[serde(default)]
    #[schema(value_type = Object)]
    filter: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Created {
    id: i64,
}

/// Add a work queue (admins).
#[utoipa::path(post, path = "/queues", tag = "queues", request_body = NewQueue,
    responses((status = 201, body = Created), (status = 422, body = ApiError)))]
pub(crate) async fn add_queue(
    State(state): State<AppState>,
    axum::Extension(me): axum::Extension<Authed>,
    Body(q): Body<NewQueue>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    if q.name.trim().is_empty() {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "a queue needs a name"));
    }
    let filter = if q.filter.is_null() { serde_json::json!({}) } else { q.filter };
    blocking(&state, move |store| {
        let id = store.add_queue(&q.name, &filter, &me.user.name)?;
        Ok((StatusCode::CREATED, Json(Created { id })))
    })
    .await
}

/// How long a claim holds a frame for its annotator before others may take it.
const CLAIM_MS: i64 = 15 * 60 * 1000;

/// Claim the next frame to label in a queue: one's own open claim first, then frames
/// sent back by review, then the oldest new one. 204 when the queue is done.
#[utoipa::path(post, path = "/queues/{id}/claim", tag = "queues", params(("id" = i64, Path)),
    responses((status = 200, body = Object), (status = 204), (status = 404, body = ApiError)))]
pub(crate) async fn claim(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    axum::Extension(me): axum::Extension<Authed>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let frame = blocking(&state, move |store| Ok(store.claim_next(id, &me.user.name, CLAIM_MS)?)).await?;
    Ok(match frame {
        Some(f) => Json(super::frames::FrameDto::from(f)).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}
