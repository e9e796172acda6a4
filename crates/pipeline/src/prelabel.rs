//! The pre-label stage: an object detector on stored frames, oldest first, whenever
//! anonymization has nothing waiting. It falls behind under load and catches up from the
//! database; anonymization never waits for it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use health::PrelabelSnapshot;
use store::{FrameId, Store};

use crate::{Context, Flag, Stage};

/// Frames looked at in one round.
const BATCH: usize = 4;
/// Failed writes of one frame's pre-labels before it is set aside until restart.
const TRIES: u32 = 3;
/// The wait after a failed write: doubling from the first, up to the most.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MOST: Duration = Duration::from_secs(60);

/// Stored frames in, pre-label detections back into the store.
#[derive(Debug)]
pub struct PrelabelStage {
    pub prelabeler: prelabel::Prelabeler,
    /// The cameras whose frames are pre-labelled; empty: all.
    pub cameras: Vec<String>,
    /// Set while anonymization has frames waiting.
    pub busy: Flag,
}

impl Stage for PrelabelStage {
    /// The frames awaiting pre-labels.
    type Input = Arc<Store>;
    /// Where the labels go: the same store.
    type Output = Arc<Store>;
    const NAME: &'static str = "prelabel";

    fn run(self, input: Arc<Store>, output: Arc<Store>, cx: &Context) -> u64 {
        let (prelabeler, cameras) = (&self.prelabeler, &self.cameras);
        let mut snap = PrelabelSnapshot { enabled: true, ..Default::default() };
        let mut retries = Retries::default();
        let mut published: Option<std::time::Instant> = None;
        while !cx.shutdown.is_cancelled() {
            if published.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                snap.backlog = input.prelabel_backlog(cameras).unwrap_or(snap.backlog);
                cx.health.set_prelabel(snap.clone());
                published = Some(std::time::Instant::now());
            }
            if self.busy.get() {
                snap.deferred += 1;
                cx.pause(Duration::from_millis(50));
                continue;
            }
            // Frames set aside are still the oldest awaiting: ask for that many more.
            let waiting = match input.awaiting_prelabel(BATCH + retries.set_aside(), cameras) {
                Ok(ids) => retries.wanted(ids),
                Err(error) => {
                    tracing::error!(target: "prelabel", %error, "cannot read the frames awaiting pre-labels");
                    cx.pause(Duration::from_secs(5));
                    continue;
                }
            };
            if waiting.is_empty() {
                cx.pause(Duration::from_millis(250));
                continue;
            }
            for id in waiting.into_iter().take(BATCH) {
                if cx.shutdown.is_cancelled() || self.busy.get() {
                    break;
                }
                let started = std::time::Instant::now();
                let labels = input
                    .frame_jpeg(id)
                    .map_err(|e| e.to_string())
                    .and_then(|jpeg| image::load_from_memory(&jpeg).map_err(|e| e.to_string()))
                    .and_then(|img| {
                        let img = img.into_rgb8();
                        let image = anonymize::Rgb { width: img.width(), height: img.height(), data: img.as_raw() };
                        prelabeler.label(image).map_err(|e| e.to_string())
                    });
                let labels: Vec<(String, anonymize::BBox, f32)> = match labels {
                    Ok(found) => found.into_iter().map(|p| (p.label, p.bbox, p.score)).collect(),
                    Err(error) => {
                        // Marked done with no labels, so one bad frame cannot stall the rest.
                        tracing::warn!(target: "prelabel", frame = id.0, %error, "frame skipped");
                        Vec::new()
                    }
                };
                match output.put_prelabels(id, &labels, prelabeler.model_name(), prelabeler.model_sha256()) {
                    Ok(()) => {
                        retries.succeeded(id);
                        snap.done += 1;
                        snap.last_ms = started.elapsed().as_secs_f64() * 1000.0;
                    }
                    Err(error) => {
                        snap.failed += 1;
                        let (wait, set_aside) = retries.failed(id);
                        if set_aside {
                            snap.set_aside += 1;
                            tracing::error!(target: "prelabel", frame = id.0, %error, tries = TRIES,
                                "pre-labels cannot be stored; the frame is set aside until the daemon restarts; check the state directory's disk");
                        } else {
                            tracing::warn!(target: "prelabel", frame = id.0, %error, retry_in = ?wait, "pre-labels not stored; trying again");
                        }
                        cx.health.set_prelabel(snap.clone());
                        cx.pause(wait);
                        break;
                    }
                }
            }
        }
        cx.health.set_prelabel(snap.clone());
        snap.done
    }
}

/// What the stage remembers of failed writes: how many in a row (for the back-off) and
/// per frame (to set aside one that keeps failing). Kept in memory: a restart tries
/// every frame again.
#[derive(Debug, Default)]
struct Retries {
    streak: u32,
    tries: HashMap<FrameId, u32>,
    aside: HashSet<FrameId>,
}

impl Retries {
    /// A write of `frame`'s pre-labels failed: how long to wait, and whether the frame
    /// is now set aside.
    fn failed(&mut self, frame: FrameId) -> (Duration, bool) {
        let wait = BACKOFF_FIRST.saturating_mul(1 << self.streak.min(16)).min(BACKOFF_MOST);
        self.streak += 1;
        let tries = self.tries.entry(frame).or_default();
        *tries += 1;
        let set_aside = *tries >= TRIES;
        if set_aside {
            self.tries.remove(&frame);
            self.aside.insert(frame);
        }
        (wait, set_aside)
    }

    fn succeeded(&mut self, frame: FrameId) {
        self.streak = 0;
        self.tries.remove(&frame);
    }

    /// The frames of `waiting` that are not set aside.
    fn wanted(&self, waiting: Vec<FrameId>) -> Vec<FrameId> {
        waiting.into_iter().filter(|id| !self.aside.contains(id)).collect()
    }

    fn set_aside(&self) -> usize {
        self.aside.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(ids: &[i64]) -> Vec<FrameId> {
        ids.iter().copied().map(FrameId).collect()
    }

    /// Issue 15, item 8: a failing write backs off (1 s, doubling, at most a minute)
    /// instead of retrying in a hot loop, and one frame that keeps failing is set aside
    /// after three tries so it cannot hold up the frames behind it.
    #[test]
    fn failed_writes_back_off_and_a_frame_that_keeps_failing_is_set_aside() {
        let mut retries = Retries::default();
        assert_eq!(retries.failed(FrameId(7)), (Duration::from_secs(1), false));
        assert_eq!(retries.failed(FrameId(7)), (Duration::from_secs(2), false));
        assert_eq!(retries.wanted(ids(&[7, 8])), ids(&[7, 8]));
        assert_eq!(retries.failed(FrameId(7)), (Duration::from_secs(4), true));
        assert_eq!(retries.wanted(ids(&[7, 8])), ids(&[8]));
        assert_eq!(retries.set_aside(), 1);
        // Failures of other frames keep doubling the wait, up to a minute.
        let waits: Vec<Duration> = (100..110).map(|id| retries.failed(FrameId(id)).0).collect();
        assert_eq!(waits[0], Duration::from_secs(8));
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(60)), "{waits:?}");
        assert_eq!(*waits.last().unwrap(), Duration::from_secs(60));
        // A write that works ends the streak; the set-aside frame stays aside.
        retries.succeeded(FrameId(108));
        assert_eq!(retries.failed(FrameId(200)), (Duration::from_secs(1), false));
        assert_eq!(retries.wanted(ids(&[7])), ids(&[]));
    }
}
