//! The anonymize stage: CPU-bound, so on its own thread. Each frame is redacted (with
//! its camera's tracker bridging missed detections) or dropped and counted; an
//! `AnonymizedFrame` is all that leaves. Ends when capture closes the channel.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::SyncSender;

use anonymize::{AnonymizeError, AnonymizedFrame, Anonymizer, Tracker};
use frame::RawFrame;
use health::DropReason;
use tokio::sync::mpsc;

use crate::{Context, Flag, LiveTap, Stage};

/// Raw frames in, anonymized frames out to the store stage.
#[derive(Debug)]
pub struct AnonymizeStage {
    /// Each camera's anonymizer (shared detectors, its own settings) and tracker.
    pub cameras: HashMap<Arc<str>, (Anonymizer, Tracker)>,
    /// Set while frames wait here: the pre-label stage stands aside.
    pub busy: Flag,
    /// Where the live view's frames go, if anyone may watch.
    pub live: Option<LiveTap>,
}

impl Stage for AnonymizeStage {
    type Input = mpsc::Receiver<RawFrame>;
    type Output = SyncSender<AnonymizedFrame>;
    const NAME: &'static str = "anonymize";

    fn run(mut self, mut input: Self::Input, output: Self::Output, cx: &Context) -> u64 {
        let mut anonymized = 0;
        let mut store_gone = false;
        while let Some(frame) = input.blocking_recv() {
            self.busy.set(!input.is_empty());
            if cx.shutdown.is_cancelled() {
                // Shutting down: frames still queued are raw, so they are released, not
                // anonymized, which keeps the shutdown within its deadline.
                continue;
            }
            let camera = frame.meta().camera.clone();
            let Some(health) = cx.health.cameras().iter().find(|c| *c.id() == camera) else {
                continue;
            };
            let Some((anonymizer, tracker)) = self.cameras.get_mut(&camera) else {
                continue;
            };
            match anonymizer.anonymize(frame, Some(tracker)) {
                Ok(frame) => {
                    let p = frame.provenance();
                    let millis = f64::from(p.timings.detect_ms + p.timings.redact_ms);
                    health.record_anonymized(u64::from(p.faces), u64::from(p.plates), u64::from(p.plate_areas), millis);
                    anonymized += 1;
                    if let Some(live) = &self.live {
                        live.offer(&frame);
                    }
                    // Waits while the store is busy: back-pressure reaches capture, which
                    // drops (counted) before anonymization. Only a store stage that has
                    // stopped cannot take the frame: counted, and an error the first time.
                    if output.send(frame).is_err() {
                        health.record_drop(DropReason::StoreStopped);
                        if !store_gone {
                            tracing::error!(target: "anonymize", camera = %camera, "the store stage has stopped; anonymized frames are dropped (store_stopped) until the daemon restarts");
                            store_gone = true;
                        }
                    }
                }
                Err(error) => {
                    let reason = match error {
                        AnonymizeError::Detector(_) => DropReason::DetectorError,
                        AnonymizeError::Deadline { .. } => DropReason::Deadline,
                    };
                    health.record_drop(reason);
                    tracing::warn!(target: "anonymize", camera = %camera, %error, "frame dropped un-stored");
                }
            }
        }
        anonymized
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Instant, SystemTime};

    use anonymize::Settings;
    use frame::FrameMeta;
    use health::{CameraHealth, Health};
    use tokio_util::sync::CancellationToken;

    use super::*;

    fn raw(camera: &str, seq: u64) -> RawFrame {
        let meta = FrameMeta {
            camera: Arc::from(camera),
            seq,
            monotonic: Instant::now(),
            wall: SystemTime::now(),
            media_time: None,
        };
        RawFrame::new(meta, 8, 6, vec![128; 8 * 6 * 3]).unwrap()
    }

    /// Issue 15, item 7: a frame anonymized but not taken by the store stage (it has
    /// stopped) is a drop after anonymization, and is counted as one.
    #[test]
    fn frames_the_store_stage_can_no_longer_take_are_counted() {
        let gate = Arc::new(CameraHealth::new("gate", "test://".into()));
        let cx = Context {
            shutdown: CancellationToken::new(),
            health: Arc::new(Health::new("generic".into(), vec![gate.clone()])),
        };
        // An anonymizer with no detectors: every frame comes out, nothing redacted.
        let anonymizer = Anonymizer::new(Vec::new(), Settings::default());
        let stage = AnonymizeStage {
            cameras: HashMap::from([(Arc::from("gate"), (anonymizer, Tracker::new(5)))]),
            busy: Flag::default(),
            live: None,
        };
        let (capture, input) = mpsc::channel(4);
        let (output, store) = std::sync::mpsc::sync_channel(4);
        drop(store);
        capture.blocking_send(raw("gate", 0)).unwrap();
        capture.blocking_send(raw("gate", 1)).unwrap();
        drop(capture);
        assert_eq!(stage.run(input, output, &cx), 2);
        assert_eq!(gate.anonymized(), 2);
        assert_eq!(gate.dropped(DropReason::StoreStopped), 2);
    }
}
