//! The pre-label stage: an object detector on stored frames, oldest first, whenever
//! anonymization has nothing waiting. It falls behind under load and catches up from the
//! database; anonymization never waits for it.

use std::sync::Arc;
use std::time::Duration;

use health::PrelabelSnapshot;
use store::Store;

use crate::{Context, Flag, Stage};

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
            let waiting = match input.awaiting_prelabel(4, cameras) {
                Ok(ids) => ids,
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
            for id in waiting {
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
                        tracing::warn!(target: "prelabel", frame = id, %error, "frame skipped");
                        Vec::new()
                    }
                };
                match output.put_prelabels(id, &labels, prelabeler.model_name(), prelabeler.model_sha256()) {
                    Ok(()) => {
                        snap.done += 1;
                        snap.last_ms = started.elapsed().as_secs_f64() * 1000.0;
                    }
                    // Erased meanwhile: nothing to label.
                    Err(error) => tracing::debug!(target: "prelabel", frame = id, %error, "pre-labels not stored"),
                }
            }
        }
        cx.health.set_prelabel(snap.clone());
        snap.done
    }
}
