//! Which frames a command works on: a camera and a capture-time window, frame ids, or a
//! consent. `obscura erase` and `obscura export` share these options.

use clap::Args;
use store::{ConsentId, FrameFilter, FrameId};

use crate::consent::parse_time;

/// A camera and a capture-time window, each part optional.
#[derive(Debug, Args)]
pub struct Window {
    /// Frames of this camera.
    #[arg(long, value_name = "ID")]
    pub camera: Option<String>,
    /// Captured at or after (UTC), e.g. "2026-11-24 08:00:00".
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub from: Option<i64>,
    /// Captured before (UTC).
    #[arg(long, alias = "to", value_name = "TIME", value_parser = parse_time)]
    pub until: Option<i64>,
}

impl Window {
    pub fn filter(&self) -> FrameFilter {
        FrameFilter { camera: self.camera.clone(), from: self.from, until: self.until, ..Default::default() }
    }
}

/// Which frames: a camera and time window, frame ids, or a consent.
#[derive(Debug, Args)]
pub struct Selection {
    #[command(flatten)]
    window: Window,
    /// These frames (repeatable, or comma-separated).
    #[arg(long = "frame", value_name = "ID", value_delimiter = ',')]
    frames: Vec<i64>,
    /// Frames linked to this consent.
    #[arg(long, value_name = "ID")]
    consent: Option<String>,
}

impl Selection {
    pub fn filter(&self) -> FrameFilter {
        FrameFilter {
            ids: self.frames.iter().copied().map(FrameId).collect(),
            consent: self.consent.clone().map(ConsentId),
            ..self.window.filter()
        }
    }
}
