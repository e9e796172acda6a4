//! The live view: per camera, the newest anonymized frame as a small JPEG, streamed as
//! MJPEG to whoever watches. The daemon publishes only frames that came out of the
//! anonymizer, only while someone watches, and at most [`EVERY`] apart, so the box
//! spends nothing on it otherwise and a tablet on weak Wi-Fi gets a few KB a second.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use crate::{ApiError, AppState};

/// At most two frames a second per camera.
pub const EVERY: Duration = Duration::from_millis(500);
/// Width of the live JPEGs; height follows the aspect ratio.
pub const WIDTH: u32 = 640;

/// A camera's newest live JPEG, and when it was published.
type Channel = (watch::Sender<Option<Bytes>>, Mutex<Option<Instant>>);

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
            tx.send_replace(Some(Bytes::from(jpeg)));
        }
    }
}

/// MJPEG of a camera's anonymized frames (`multipart/x-mixed-replace`), usable as an
/// `<img>` source.
#[utoipa::path(get, path = "/cameras/{id}/live", tag = "device", params(("id" = String, Path)),
    responses((status = 200, content_type = "multipart/x-mixed-replace", body = Vec<u8>), (status = 404, body = ApiError)))]
pub(crate) async fn live(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let Some((tx, _)) = state.live.cameras.get(&id) else {
        return Err(ApiError::not_found(format!("camera `{id}` is not configured on this box")));
    };
    let mut rx = tx.subscribe();
    rx.mark_changed();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            rx.changed().await.ok()?;
            let jpeg = rx.borrow_and_update().clone();
            if let Some(jpeg) = jpeg {
                let head = format!("--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n", jpeg.len());
                let part = [head.as_bytes(), &jpeg, b"\r\n"].concat();
                return Some((Ok::<_, std::convert::Infallible>(Bytes::from(part)), rx));
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "multipart/x-mixed-replace; boundary=frame"), (header::CACHE_CONTROL, "no-store")],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}
