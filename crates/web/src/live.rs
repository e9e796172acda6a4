//! The live view: per camera, the newest anonymized frame as a small JPEG, streamed as
//! MJPEG to whoever watches. The daemon publishes only frames that came out of the
//! anonymizer, only while someone watches, and at most [`EVERY`] apart, so the box
//! spends nothing on it otherwise and a tablet on weak Wi-Fi gets a few KB a second.
//!
//! A new watcher sees a picture at once: the newest live frame if it is fresh, else the
//! camera's newest stored frame (anonymized like every stored one) if it is recent, and
//! each part ends with the next part's boundary, because a browser shows a part only
//! once it sees where the part ends.
//!
//! Consent gates it twice: the daemon publishes a camera's frames only while a consent
//! with the `annotate` purpose covers the camera, and this endpoint answers `no_consent`
//! without one and checks again before every frame it sends, so a withdrawal ends the
//! stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use store::{Purpose, Store};
use tokio::sync::watch;

use crate::{ApiError, AppState};

/// At most two frames a second per camera.
pub const EVERY: Duration = Duration::from_millis(500);
/// Width of the live JPEGs; height follows the aspect ratio.
pub const WIDTH: u32 = 640;
/// How long a stream waits for a frame before it asks about the consent again.
const RECHECK: Duration = Duration::from_secs(1);
/// A live frame published this recently is shown to a new watcher at once; an older one
/// is no longer live (nobody watched, so none was made since).
const FRESH: Duration = Duration::from_secs(2);
/// A stored frame captured this recently starts a stream while its first live frame is
/// made (the next sampled frame, through the anonymizer).
const RECENT_MS: i64 = 30_000;
/// What opens every part; it also closes the part before it.
const PART: &[u8] = b"--frame\r\nContent-Type: image/jpeg\r\n\r\n";

/// A camera's newest live JPEG and when it was published, and when one was last due.
type Channel = (watch::Sender<Option<(Instant, Bytes)>>, Mutex<Option<Instant>>);

/// One channel per configured camera.
#[derive(Debug, Default)]
pub struct LiveHub {
    cameras: HashMap<String, Channel>,
}

impl LiveHub {
    pub fn new<'a>(cameras: impl IntoIterator<Item = &'a str>) -> LiveHub {
        LiveHub {
            cameras: cameras.into_iter().map(|c| (c.to_owned(), (watch::channel(None).0, Mutex::new(None)))).collect(),
        }
    }

    /// Whether a frame of `camera` should be published now: someone watches and the
    /// last one is old enough. Claims the slot when it says yes.
    pub fn due(&self, camera: &str) -> bool {
        let Some((tx, last)) = self.cameras.get(camera) else { return false };
        if tx.receiver_count() == 0 {
            return false;
        }
        let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Hands watchers an anonymized frame's JPEG.
    pub fn publish(&self, camera: &str, jpeg: Vec<u8>) {
        if let Some((tx, _)) = self.cameras.get(camera) {
            tx.send_replace(Some((Instant::now(), Bytes::from(jpeg))));
        }
    }

    /// Forgets `camera`'s newest frame, so nobody is shown it (its consent ended).
    pub fn clear(&self, camera: &str) {
        if let Some((tx, _)) = self.cameras.get(camera) {
            tx.send_replace(None);
        }
    }
}

/// Whether a consent with the `annotate` purpose covers `camera` now.
async fn consented(store: &Arc<Store>, camera: &str) -> Result<bool, ApiError> {
    let (store, camera) = (store.clone(), camera.to_owned());
    let now = frame::now_unix_ms();
    let answer = tokio::task::spawn_blocking(move || store.camera_consented(&camera, Purpose::Annotate, now))
        .await
        .map_err(ApiError::internal)?;
    Ok(answer?)
}

/// The camera's newest stored frame captured in the last [`RECENT_MS`] and open to
/// annotators, as a live-sized JPEG.
async fn stored(store: &Arc<Store>, camera: &str) -> Result<Option<Bytes>, ApiError> {
    let (store, camera) = (store.clone(), camera.to_owned());
    let since = frame::now_unix_ms() - RECENT_MS;
    tokio::task::spawn_blocking(move || {
        let Some(row) = store.newest_frame(&camera, since, Purpose::Annotate)? else { return Ok(None) };
        let jpeg = store.frame_jpeg(row.id)?;
        if row.width <= WIDTH {
            return Ok(Some(Bytes::from(jpeg)));
        }
        let img = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg).map_err(ApiError::internal)?;
        let height = (u64::from(row.height) * u64::from(WIDTH) / u64::from(row.width)).max(1) as u32;
        let small = img.resize_exact(WIDTH, height, image::imageops::FilterType::Triangle);
        Ok(Some(Bytes::from(crate::api::frames::jpeg_of(&small)?)))
    })
    .await
    .map_err(ApiError::internal)?
}

/// The answer for a camera nothing may be shown of: what is missing and who can fix it.
fn no_consent(camera: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "no_consent",
        format!(
            "camera `{camera}` has no active consent with the `annotate` purpose, so nothing of it is shown live; \
             a steward records one for this camera (the web app's consents, or `obscura consent add --scope \
             camera:{camera} --purpose annotate`)"
        ),
    )
}

/// MJPEG of a camera's anonymized frames (`multipart/x-mixed-replace`), usable as an
/// `<img>` source. Without an active `annotate` consent for the camera: 409 `no_consent`;
/// the stream ends when the consent does.
#[utoipa::path(get, path = "/cameras/{id}/live", tag = "device", params(("id" = String, Path)),
    responses((status = 200, content_type = "multipart/x-mixed-replace", body = Vec<u8>), (status = 404, body = ApiError),
        (status = 409, description = "no consent with the annotate purpose covers the camera", body = ApiError)))]
pub(crate) async fn live(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let Some((tx, _)) = state.live.cameras.get(&id) else {
        return Err(ApiError::not_found(format!("camera `{id}` is not configured on this box")));
    };
    if !consented(&state.store, &id).await? {
        return Err(no_consent(&id));
    }
    let mut rx = tx.subscribe();
    // The first part: the newest live frame if fresh (the loop sends it), else the newest
    // recent stored one; either way the part is closed at once by the next boundary. A
    // stale live frame is marked seen now, so one published meanwhile still goes next.
    let fresh = rx.borrow_and_update().as_ref().is_some_and(|(at, _)| at.elapsed() < FRESH);
    if fresh {
        rx.mark_changed();
    }
    let mut first = PART.to_vec();
    if !fresh && let Some(jpeg) = stored(&state.store, &id).await? {
        first.extend_from_slice(&jpeg);
        first.extend_from_slice(b"\r\n");
        first.extend_from_slice(PART);
    }
    let first = futures_util::stream::once(std::future::ready(Ok::<_, std::convert::Infallible>(Bytes::from(first))));
    let stream = futures_util::stream::unfold((rx, state.store.clone(), id), |(mut rx, store, id)| async move {
        loop {
            // A frame, or a while without one: either way the consent is asked again, so
            // a withdrawal ends the stream even when the daemon stopped publishing.
            let changed = tokio::time::timeout(RECHECK, rx.changed()).await;
            if matches!(changed, Ok(Err(_))) || !consented(&store, &id).await.unwrap_or(false) {
                return None;
            }
            if changed.is_err() {
                continue;
            }
            let jpeg = rx.borrow_and_update().clone();
            if let Some((_, jpeg)) = jpeg {
                let part = [&jpeg[..], b"\r\n", PART].concat();
                return Some((Ok::<_, std::convert::Infallible>(Bytes::from(part)), (rx, store, id)));
            }
        }
    });
    let stream = futures_util::StreamExt::chain(first, stream);
    Ok((
        [(header::CONTENT_TYPE, "multipart/x-mixed-replace; boundary=frame"), (header::CACHE_CONTROL, "no-store")],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}
