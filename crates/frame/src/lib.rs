//! The frame types that flow between stages, with no outside world attached.
//!
//! A [`RawFrame`] holds un-redacted pixels. It deliberately implements neither
//! `Clone`, `Serialize` nor a `Debug` that prints pixels: the only thing a later
//! stage may do with it is hand it to the anonymizer (ARCHITECTURE.md, invariant 1).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A wall-clock time as Unix milliseconds, the one form the store, the API and the
/// audit log write times in. Times before 1970 read as 0.
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Now, as Unix milliseconds.
pub fn now_unix_ms() -> i64 {
    unix_ms(SystemTime::now())
}

/// The wall-clock time of Unix milliseconds; negative ones read as 1970.
pub fn from_unix_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Where and when a frame was captured.
#[derive(Debug, Clone)]
pub struct FrameMeta {
    /// The `id` of the `[[camera]]` entry that produced the frame.
    pub camera: Arc<str>,
    /// Counts up from 0 for every frame the camera delivered since the daemon started,
    /// across pipeline restarts, so gaps reveal sampling and drops.
    pub seq: u64,
    /// Monotonic arrival time: what stall detection and rate limits use.
    pub monotonic: Instant,
    /// Wall-clock arrival time: what consent windows and retention use.
    pub wall: SystemTime,
    /// The source's own presentation time, when it has one (files, RTSP).
    pub media_time: Option<Duration>,
}

/// An un-redacted RGB frame. Lives in memory only.
pub struct RawFrame {
    meta: FrameMeta,
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

/// The pixel buffer does not match the stated size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeMismatch {
    pub width: u32,
    pub height: u32,
    pub len: usize,
}

impl std::error::Error for SizeMismatch {}

impl fmt::Display for SizeMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "an RGB frame of {}x{} needs {} bytes, got {}",
            self.width,
            self.height,
            rgb_len(self.width, self.height),
            self.len
        )
    }
}

fn rgb_len(width: u32, height: u32) -> usize {
    width as usize * height as usize * 3
}

impl RawFrame {
    /// Wraps tightly packed RGB8 pixels (no row padding).
    pub fn new(meta: FrameMeta, width: u32, height: u32, rgb: Vec<u8>) -> Result<Self, SizeMismatch> {
        if rgb.len() != rgb_len(width, height) || width == 0 || height == 0 {
            return Err(SizeMismatch { width, height, len: rgb.len() });
        }
        Ok(RawFrame { meta, width, height, rgb })
    }

    pub fn meta(&self) -> &FrameMeta {
        &self.meta
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// Tightly packed RGB8, `width * height * 3` bytes, row-major.
    pub fn rgb(&self) -> &[u8] {
        &self.rgb
    }

    /// Gives up the pixels, for the anonymizer to redact in place.
    pub fn into_parts(self) -> (FrameMeta, u32, u32, Vec<u8>) {
        (self.meta, self.width, self.height, self.rgb)
    }
}

impl fmt::Debug for RawFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawFrame")
            .field("camera", &self.meta.camera)
            .field("seq", &self.meta.seq)
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> FrameMeta {
        FrameMeta {
            camera: Arc::from("gate"),
            seq: 7,
            monotonic: Instant::now(),
            wall: SystemTime::now(),
            media_time: None,
        }
    }

    #[test]
    fn rejects_a_buffer_of_the_wrong_size() {
        let err = RawFrame::new(meta(), 4, 2, vec![0; 23]).unwrap_err();
        assert_eq!(err.to_string(), "an RGB frame of 4x2 needs 24 bytes, got 23");
    }

    #[test]
    fn unix_milliseconds_round_trip_and_clamp_before_1970() {
        let t = UNIX_EPOCH + Duration::from_millis(1_800_000_000_123);
        assert_eq!(unix_ms(t), 1_800_000_000_123);
        assert_eq!(from_unix_ms(1_800_000_000_123), t);
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_secs(5)), 0);
        assert_eq!(from_unix_ms(-5), UNIX_EPOCH);
        assert!(now_unix_ms() > 1_700_000_000_000);
    }

    #[test]
    fn debug_never_prints_pixels() {
        let frame = RawFrame::new(meta(), 2, 1, vec![42, 43, 44, 45, 46, 47]).unwrap();
        let shown = format!("{frame:?}");
        assert!(shown.contains("seq: 7"), "{shown}");
        assert!(!shown.contains("42"), "pixels leaked into Debug: {shown}");
    }
}
