//! The `[[camera]]` section of the config, as the capture stage reads it.
//!
//! Values are checked while they are parsed (newtypes with `try_from`), so a bad value
//! is reported by the TOML parser with its file, line and key.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// One `[[camera]]` entry: an id and exactly one source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Unique name used in logs, metrics labels and the API: letters, digits, `-`, `_`.
    pub id: CameraId,
    /// Where frames come from: `file:///abs/path`, `rtsp://…`, `http(s)://…` (MJPEG),
    /// `v4l2:///dev/videoN`, `csi://N` or `test://PATTERN`.
    pub uri: Option<String>,
    /// A GStreamer pipeline description for experts, used instead of `uri`. It must
    /// produce raw video; Obscura appends the conversion to RGB and its sink.
    pub pipeline: Option<String>,
    /// Set to false to keep the entry but not open the camera.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Output width in pixels. Live sources are asked for it; files are scaled to it.
    pub width: Option<Dimension>,
    /// Output height in pixels, like `width`.
    pub height: Option<Dimension>,
    /// Frames per second asked of live sources (`v4l2`, `csi`, `test`).
    pub framerate: Option<Dimension>,
    /// `v4l2` only: the pixel format asked of the camera.
    pub format: Option<PixelFormat>,
    /// Files only: start again from the beginning at the end, instead of ending.
    #[serde(default, rename = "loop")]
    pub looping: bool,
    /// Files only: deliver frames at the file's own rate, like a camera. Set to false to
    /// decode as fast as the box can (benchmarks, batch jobs).
    #[serde(default = "yes")]
    pub realtime: bool,
    /// No frame for this long restarts the camera's pipeline, e.g. "10s".
    #[serde(default = "default_stall_timeout", with = "humantime_serde")]
    pub stall_timeout: Duration,
    /// Which of the delivered frames go on to anonymization.
    #[serde(default)]
    pub sample: SampleConfig,
}

fn yes() -> bool {
    true
}

fn default_stall_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Per-camera sampling. Every rule that is set must pass for a frame to be kept.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleConfig {
    /// Keep at most this many frames per second, e.g. 2 or 0.5.
    pub fps: Option<Rate>,
    /// Keep at most one frame per this period, e.g. "2s" or "1m".
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Skip a frame unless it differs from the last kept one by at least this share
    /// (0 to 1) of mean pixel difference; 0.02 skips a static scene, keeps a passer-by.
    pub on_change: Option<Fraction>,
}

/// A camera id: non-empty, at most 64 of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct CameraId(String);

impl TryFrom<String> for CameraId {
    type Error = String;
    fn try_from(id: String) -> Result<Self, String> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if id.is_empty() || id.len() > 64 || !id.chars().all(ok_char) {
            return Err(format!(
                "camera id `{id}` must be 1 to 64 letters, digits, `-` or `_` (it names metrics and files)"
            ));
        }
        Ok(CameraId(id))
    }
}

impl CameraId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CameraId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A pixel count or rate between 1 and 16384.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct Dimension(pub u32);

impl TryFrom<i64> for Dimension {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        match u32::try_from(n) {
            Ok(n @ 1..=16384) => Ok(Dimension(n)),
            _ => Err(format!("{n} is out of range: expected 1 to 16384")),
        }
    }
}

/// A positive rate in frames per second.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "f64")]
pub struct Rate(pub f64);

impl TryFrom<f64> for Rate {
    type Error = String;
    fn try_from(r: f64) -> Result<Self, String> {
        if r.is_finite() && r > 0.0 && r <= 1000.0 {
            Ok(Rate(r))
        } else {
            Err(format!("{r} is not a frame rate: expected more than 0 and at most 1000"))
        }
    }
}

/// A share between 0 and 1, exclusive of 0.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "f64")]
pub struct Fraction(pub f64);

impl TryFrom<f64> for Fraction {
    type Error = String;
    fn try_from(x: f64) -> Result<Self, String> {
        if x.is_finite() && x > 0.0 && x <= 1.0 {
            Ok(Fraction(x))
        } else {
            Err(format!("{x} is not a share: expected more than 0 and at most 1 (0.02 = 2 %)"))
        }
    }
}

/// Pixel formats asked of a V4L2 camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    Mjpeg,
    Yuyv,
}

impl PixelFormat {
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Mjpeg => *b"MJPG",
            PixelFormat::Yuyv => *b"YUYV",
        }
    }
}

/// What the board profile decides about capture.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardCapture {
    /// The GStreamer description of a CSI camera, with `{sensor}`, `{width}`, `{height}`
    /// and `{framerate}` filled in; empty on boards without one.
    #[serde(default)]
    pub csi_source: String,
    /// Decoders to prefer over software ones when present (e.g. `v4l2h264dec`).
    #[serde(default)]
    pub prefer_decoders: Vec<String>,
    /// The element that converts decoded video to RGB (`videoconvert`, or a hardware one).
    #[serde(default = "default_convert")]
    pub convert: String,
    /// Elements this board needs; `obscura doctor` checks that each is installed.
    #[serde(default)]
    pub required_elements: Vec<String>,
}

fn default_convert() -> String {
    "videoconvert".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CameraConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_a_full_entry() {
        let cam = parse(
            r#"
            id = "gate-1"
            uri = "test://ball"
            width = 640
            height = 480
            loop = true
            stall_timeout = "3s"
            sample = { fps = 2, interval = "2s", on_change = 0.02 }
            "#,
        )
        .unwrap();
        assert_eq!(cam.id.as_str(), "gate-1");
        assert!(cam.looping);
        assert_eq!(cam.stall_timeout, Duration::from_secs(3));
        assert_eq!(cam.sample.fps, Some(Rate(2.0)));
        assert_eq!(cam.sample.interval, Some(Duration::from_secs(2)));
    }

    #[test]
    fn a_typo_names_the_key() {
        let err = parse("id = \"a\"\nuri = \"test://\"\nstal_timeout = \"3s\"\n").unwrap_err();
        assert!(err.contains("unknown field `stal_timeout`"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn a_bad_value_says_what_is_expected() {
        let err = parse("id = \"a\"\nsample = { on_change = 4.0 }\n").unwrap_err();
        assert!(err.contains("expected more than 0 and at most 1"), "{err}");
        let err = parse("id = \"a b\"\n").unwrap_err();
        assert!(err.contains("letters, digits"), "{err}");
        let err = parse("id = \"a\"\nwidth = 0\n").unwrap_err();
        assert!(err.contains("expected 1 to 16384"), "{err}");
    }
}
