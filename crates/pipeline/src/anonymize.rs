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
                    // drops (counted) before anonymization, never after.
                    if output.send(frame).is_err() {
                        tracing::error!(target: "anonymize", "the store stage has stopped; frames are no longer kept");
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
