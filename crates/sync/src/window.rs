//! Sync windows (`sync.windows = ["22:00-06:00"]`): when batches may go up, for sites
//! whose uplink is busy by day. Times are UTC, like the logs and the audit; a window may
//! wrap midnight. No windows: always. Erasures, receipts and acks ignore windows, since
//! privacy does not wait for the night.

use std::fmt;

/// One daily window, in minutes since midnight UTC: `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    from: u32,
    to: u32,
}

impl Window {
    /// Whether `unix_ms` falls in the window.
    pub fn contains(&self, unix_ms: i64) -> bool {
        let minute = (unix_ms.rem_euclid(86_400_000) / 60_000) as u32;
        if self.from <= self.to {
            (self.from..self.to).contains(&minute)
        } else {
            minute >= self.from || minute < self.to
        }
    }
}

/// Whether uploads may run now under `windows` (none: always).
pub fn open(windows: &[Window], unix_ms: i64) -> bool {
    windows.is_empty() || windows.iter().any(|w| w.contains(unix_ms))
}

impl std::str::FromStr for Window {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a sync window: write \"HH:MM-HH:MM\" in UTC, e.g. \"22:00-06:00\"");
        let minutes = |t: &str| -> Option<u32> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let (from, to) = s.split_once('-').ok_or_else(bad)?;
        let (from, to) = (minutes(from).ok_or_else(bad)?, minutes(to).ok_or_else(bad)?);
        if from == to {
            return Err(format!("`{s}` is an empty sync window: its start and end are the same"));
        }
        Ok(Window { from, to })
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}-{:02}:{:02}", self.from / 60, self.from % 60, self.to / 60, self.to % 60)
    }
}

impl<'de> serde::Deserialize<'de> for Window {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn windows_are_daily_utc_and_may_wrap_midnight() {
        let night: Window = "22:00-06:00".parse().unwrap();
        let day: Window = "09:30-17:00".parse().unwrap();
        assert_eq!(night.to_string(), "22:00-06:00");
        let at = |h: f64| (h * HOUR as f64) as i64 + 40 * 24 * HOUR;
        assert!(night.contains(at(23.0)) && night.contains(at(2.0)) && !night.contains(at(12.0)));
        assert!(day.contains(at(9.5)) && !day.contains(at(17.0)) && !day.contains(at(9.0)));
        assert!(open(&[], at(12.0)), "no windows: always");
        assert!(open(&[night, day], at(12.0)) && !open(&[night, day], at(8.0)));
        for bad in ["22-06", "25:00-01:00", "10:00-10:00", "night"] {
            assert!(bad.parse::<Window>().is_err(), "{bad}");
        }
    }
}
