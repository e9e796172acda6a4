//! The retention stage: runs the store's retention at start-up and every
//! `store.retention_every`, tells the store stage whether to refuse new frames, and
//! publishes what the store holds and how its last run went.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use health::RetentionRun;
use store::Store;

use crate::{Context, Flag, Stage};

/// The store in, the `refusing` flag out.
#[derive(Debug)]
pub struct RetentionStage {
    pub policy: store::Retention,
    /// How often it runs.
    pub every: Duration,
    /// Whose file system's free space counts.
    pub state_dir: PathBuf,
}

impl Stage for RetentionStage {
    type Input = Arc<Store>;
    /// Read by the store stage.
    type Output = Flag;
    const NAME: &'static str = "retention";

    fn run(self, store: Arc<Store>, refusing: Flag, cx: &Context) -> u64 {
        let mut runs = 0;
        loop {
            self.run_once(&store, &refusing, cx);
            runs += 1;
            if !cx.pause(self.every) {
                return runs;
            }
        }
    }
}

impl RetentionStage {
    fn run_once(&self, store: &Store, refusing: &Flag, cx: &Context) {
        let (policy, dir) = (&self.policy, &self.state_dir);
        let free = || health::disk_free_share(dir).unwrap_or(1.0);
        let report = store.retain(policy, &free);
        let mut snapshot = cx.health.storage();
        match report {
            Ok(report) => {
                refusing.set(report.refuse_new);
                if report.outcome != "ok" || report.expired + report.evicted > 0 {
                    tracing::info!(target: "obscura::store", expired = report.expired, evicted = report.evicted,
                        freed_bytes = report.freed_bytes, refuse_new = report.refuse_new, outcome = %report.outcome, "retention ran");
                }
                snapshot.refusing = report.refuse_new;
                snapshot.last_retention = Some(RetentionRun {
                    finished_at_ms: report.finished_at,
                    removed: report.expired + report.evicted,
                    freed_bytes: report.freed_bytes,
                    outcome: report.outcome,
                });
            }
            Err(error) => {
                // Whatever failed (a full disk cannot even record deletions), the low
                // mark still decides whether new frames are refused.
                let low = health::disk_free_share(dir).is_some_and(|f| f < policy.low_free);
                refusing.set(low);
                snapshot.refusing = low;
                tracing::error!(target: "obscura::store", %error, refusing = low, "retention failed; it will run again");
                snapshot.last_retention = Some(RetentionRun {
                    finished_at_ms: frame::now_unix_ms(),
                    removed: 0,
                    freed_bytes: 0,
                    outcome: format!("failed: {error}"),
                });
            }
        }
        if let Ok(usage) = store.usage() {
            snapshot.frames = usage.frames;
            snapshot.disk_bytes = usage.disk_bytes;
        }
        cx.health.set_storage(snapshot);
    }
}
