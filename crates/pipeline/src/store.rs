//! The store stage: takes anonymized frames in batches, one transaction each. Consent
//! is checked per frame; a refused (disk low) or failed write is counted and logged.

use std::sync::Arc;
use std::sync::mpsc::Receiver;

use anonymize::AnonymizedFrame;
use health::DropReason;
use store::{NoConsent, Store, Stored};

use crate::{Context, Flag, PUBLISH_EVERY, Stage};

/// Frames written to the store in one transaction, at most.
const BATCH: usize = 16;

/// Anonymized frames in, rows and blobs out.
#[derive(Debug)]
pub struct StoreStage {
    pub store: Arc<Store>,
    /// What happens to a frame no `annotate` consent covers.
    pub policy: NoConsent,
    /// Set by the retention stage while the disk is below its low mark.
    pub refusing: Flag,
}

impl Stage for StoreStage {
    type Input = Receiver<AnonymizedFrame>;
    /// Nothing yet: the sync stage will read what this one writes from the store.
    type Output = ();
    const NAME: &'static str = "store";

    fn run(self, input: Self::Input, _output: (), cx: &Context) -> u64 {
        let store = &self.store;
        let health = |camera: &str| cx.health.cameras().iter().find(|c| &**c.id() == camera).cloned();
        let mut stored = 0;
        let mut published = std::time::Instant::now();
        while let Ok(first) = input.recv() {
            // How many frames the store holds, for /api/v1/status, at most every few
            // seconds; disk bytes (a walk of the blob directory) are left to retention.
            if published.elapsed() >= PUBLISH_EVERY
                && let Ok(frames) = store.frame_count()
            {
                let mut snapshot = cx.health.storage();
                snapshot.frames = frames;
                cx.health.set_storage(snapshot);
                published = std::time::Instant::now();
            }
            let mut batch = vec![first];
            while batch.len() < BATCH
                && let Ok(next) = input.try_recv()
            {
                batch.push(next);
            }
            if self.refusing.get() {
                for frame in &batch {
                    health(&frame.meta().camera).inspect(|h| h.record_drop(DropReason::StoreFailed));
                }
                tracing::warn!(target: "obscura::store", frames = batch.len(), "disk below its low mark: frames refused; free space or lower store.keep_days");
                continue;
            }
            let items: Vec<_> = batch.iter().map(|f| (f, serde_json::json!({}))).collect();
            match store.put_frames(&items, self.policy) {
                Ok(results) => {
                    for (frame, result) in batch.iter().zip(results) {
                        let Some(h) = health(&frame.meta().camera) else { continue };
                        match result {
                            Stored::Kept { local_only, .. } => {
                                h.record_stored(local_only);
                                stored += 1;
                            }
                            Stored::NoConsent => h.record_drop(DropReason::NoConsent),
                            Stored::Erased => h.record_drop(DropReason::Erased),
                        }
                    }
                }
                Err(error) => {
                    for frame in &batch {
                        health(&frame.meta().camera).inspect(|h| h.record_drop(DropReason::StoreFailed));
                    }
                    tracing::error!(target: "obscura::store", %error, frames = batch.len(), "frames not stored; check the state directory's disk");
                }
            }
        }
        stored
    }
}
