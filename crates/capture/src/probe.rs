//! What `obscura doctor` asks of the capture side: which elements are installed, which
//! video devices exist, and which Debian package brings a missing element.

use std::path::PathBuf;

use crate::config::{BoardCapture, CameraConfig};
use crate::{CaptureError, Source};

pub use crate::gst::{has_element, package_for};

/// `/dev/video*` nodes, sorted.
pub fn video_devices() -> Vec<PathBuf> {
    let mut devices: Vec<PathBuf> = std::fs::read_dir("/dev")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("video")))
                .collect()
        })
        .unwrap_or_default();
    devices.sort();
    devices
}

/// The GStreamer library version this process loaded, after [`crate::init`].
pub fn gstreamer_version() -> String {
    gstreamer::version_string().to_string()
}

/// Checks a camera's entry without streaming from it: the URI parses, a file is
/// readable, a V4L2 device answers, and the pipeline's elements are installed. Network
/// sources are not contacted. Returns a line describing what was found.
pub fn check_camera(cam: &CameraConfig, board: &BoardCapture) -> Result<String, CaptureError> {
    let source = Source::from_config(cam)?;
    match &source {
        Source::V4l2(path) => crate::v4l2::describe(path),
        _ => {
            let description = crate::gst::describe(&source, cam, board)?;
            crate::gst::build_only(&description)?;
            Ok(match source {
                Source::Rtsp(_) | Source::HttpMjpeg(_) => {
                    format!("{}: pipeline builds (the stream itself is not contacted)", source.display())
                }
                _ => format!("{}: pipeline builds", source.display()),
            })
        }
    }
}
