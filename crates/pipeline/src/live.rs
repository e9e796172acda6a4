//! The live view's side of the pipeline: a small JPEG of an anonymized frame, offered
//! to whoever watches, only while a consent with the `annotate` purpose covers its
//! camera. What watching means (a channel per camera, MJPEG over HTTP) is the web
//! crate's; the supervisor implements [`LiveView`] over it.

use std::sync::Arc;

use anonymize::AnonymizedFrame;
use store::{Purpose, Store};

/// Where live frames go.
pub trait LiveView: Send + Sync + std::fmt::Debug {
    /// Whether a frame of `camera` is wanted now (someone watches, the last one is old
    /// enough); claims the slot when it says yes.
    fn due(&self, camera: &str) -> bool;
    /// Hands watchers an anonymized frame's JPEG.
    fn publish(&self, camera: &str, jpeg: Vec<u8>);
    /// Forgets `camera`'s newest frame: its consent ended, so nobody may be shown it.
    fn clear(&self, camera: &str);
    /// The widest JPEG watchers want; narrower frames are sent as they are.
    fn width(&self) -> u32;
}

/// What the anonymize stage offers its frames to.
#[derive(Debug, Clone)]
pub struct LiveTap {
    view: Arc<dyn LiveView>,
    /// Asked whether the camera's consent allows showing the frame.
    store: Arc<Store>,
}

impl LiveTap {
    pub fn new(view: Arc<dyn LiveView>, store: Arc<Store>) -> LiveTap {
        LiveTap { view, store }
    }

    /// Publishes `frame` when its camera is due and a consent with the `annotate`
    /// purpose covers the camera at the frame's capture time.
    pub fn offer(&self, frame: &AnonymizedFrame) {
        let camera = &frame.meta().camera;
        if !self.view.due(camera) {
            return;
        }
        match self.store.camera_consented(camera, Purpose::Annotate, frame::unix_ms(frame.meta().wall)) {
            Ok(true) => {}
            Ok(false) => return self.view.clear(camera),
            Err(error) => {
                tracing::warn!(target: "anonymize", %camera, %error, "cannot check the camera's consent; the live view shows nothing");
                return self.view.clear(camera);
            }
        }
        match jpeg(frame, self.view.width()) {
            Ok(jpeg) => self.view.publish(camera, jpeg),
            Err(error) => tracing::warn!(target: "anonymize", %camera, %error, "cannot encode the live view"),
        }
    }
}

/// A JPEG of an anonymized frame at most `width` wide.
fn jpeg(frame: &AnonymizedFrame, width: u32) -> Result<Vec<u8>, image::ImageError> {
    let full = image::RgbImage::from_raw(frame.width(), frame.height(), frame.rgb().to_vec())
        .expect("an anonymized frame holds width × height RGB pixels");
    let width = width.min(frame.width());
    let height = (u64::from(frame.height()) * u64::from(width) / u64::from(frame.width().max(1))).max(1) as u32;
    let small = image::imageops::resize(&full, width, height, image::imageops::FilterType::Triangle);
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 70).encode_image(&small)?;
    Ok(jpeg)
}
