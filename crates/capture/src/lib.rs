//! Cameras in, RGB frames out.
//!
//! Each enabled `[[camera]]` gets its own OS thread ([`spawn_camera`]) that opens the
//! source, pulls frames, samples them, and `try_send`s [`RawFrame`]s to the next stage.
//! A thread per camera means one stuck camera (a hung RTSP server, a wedged USB device)
//! never blocks another. The thread is its own watchdog: an error, an end of stream or a
//! stall tears the session down and opens it again with backoff.
//!
//! `video` reads and writes whole video files for `obscura blur`.
//!
//! This is the only crate that links GStreamer or `v4l`.

mod camera;
pub mod config;
mod gst;
pub mod probe;
mod sample;
mod source;
mod v4l2;
pub mod video;

use std::path::PathBuf;
use std::time::Duration;

pub use camera::{CameraHandle, spawn_camera};
pub use config::{BoardCapture, CameraConfig, SampleConfig};
pub use frame::RawFrame;
pub use gst::init;
pub use sample::Sampler;
pub use source::Source;
#[doc(hidden)]
pub use v4l2::decode_mjpeg;

/// Why a camera is not delivering. Each message says what to do about it; the camera's
/// id is added by whoever reports it.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{0}")]
    Config(String),
    #[error("{}: {problem}", path.display())]
    File { path: PathBuf, problem: String },
    #[error("{}: {problem}", path.display())]
    Device { path: PathBuf, problem: String },
    #[error("GStreamer element `{element}` is not installed; install {package}")]
    MissingElement { element: String, package: &'static str },
    #[error("{0}")]
    Gstreamer(String),
    #[error("stream error: {0}")]
    Stream(String),
    #[error("end of stream (a network source closed the connection, or a test source ran out)")]
    EndOfStream,
    #[error("no frame for {0:?} (stall_timeout); restarting the source")]
    Stalled(Duration),
    #[error("unusable frame: {0}")]
    BadFrame(String),
}

/// One frame as a source delivers it, before it gets a camera id and sequence number.
#[derive(Debug)]
struct Captured {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
    media_time: Option<Duration>,
    /// Frames per second as the source declares them, when it does.
    fps: Option<(i32, i32)>,
}
