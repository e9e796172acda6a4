//! `sync.max_kbps`: one token bucket over every upload byte, so sync on a site's thin
//! uplink never takes more than the operator allowed, however many blobs are in
//! flight. A second's worth of tokens may gather, so short bursts go at line speed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Bucket {
    /// Bytes a second.
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    /// A bucket for `kbps` kilobits a second (1 kbit = 1000 bits); None for unlimited.
    pub fn kbps(kbps: u64) -> Option<Bucket> {
        (kbps > 0).then(|| {
            let rate = kbps as f64 * 1000.0 / 8.0;
            Bucket { rate, state: Mutex::new((rate, Instant::now())) }
        })
    }

    /// Takes up to `want` bytes' tokens: how many it got, or how long to wait for some.
    pub fn take(&self, want: usize) -> Result<usize, Duration> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (tokens, last) = *state;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.rate);
        // Small grants would make tiny frames: wait for at least 1/20 s worth or `want`.
        let least = (self.rate / 20.0).min(want as f64).max(1.0);
        if tokens < least {
            *state = (tokens, now);
            return Err(Duration::from_secs_f64((least - tokens) / self.rate));
        }
        let n = (tokens.floor() as usize).min(want);
        *state = (tokens - n as f64, now);
        Ok(n)
    }

    /// How long `bytes` take at this rate.
    pub fn time_for(&self, bytes: usize) -> Duration {
        Duration::from_secs_f64(bytes as f64 / self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_holds_a_second_and_refills_at_its_rate() {
        let bucket = Bucket::kbps(80).unwrap(); // 10,000 bytes a second
        assert!(Bucket::kbps(0).is_none(), "0: unlimited");
        assert_eq!(bucket.take(50_000), Ok(10_000), "a second's burst");
        let wait = bucket.take(50_000).unwrap_err();
        assert!(wait <= Duration::from_millis(60) && wait > Duration::ZERO, "{wait:?}");
        std::thread::sleep(Duration::from_millis(200));
        let got = bucket.take(50_000).unwrap();
        assert!((1_500..=3_000).contains(&got), "about 0.2 s worth: {got}");
        assert_eq!(bucket.time_for(20_000), Duration::from_secs(2));
    }
}
