//! The retention stage: runs the store's retention at start-up and every
//! `store.retention_every`, tells the store stage whether to refuse new frames, and
//! publishes what the store holds and how its last run went.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use health::RetentionRun;
use store::{RetentionOutcome, Store};

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
        // Free space that cannot be read counts as low: new frames are refused. Nothing
        // is evicted for space meanwhile, since how much to free is unknown too.
        let unknown = std::cell::Cell::new(false);
        let free = || {
            health::disk_free_share(dir).unwrap_or_else(|| {
                unknown.set(true);
                policy.high_free
            })
        };
        let report = store.retain(policy, &free);
        let mut snapshot = cx.health.storage();
        match report {
            Ok(mut report) => {
                if unknown.get() {
                    report.refuse_new = true;
                    report.outcome = RetentionOutcome::UnknownFreeSpace(dir.clone());
                    tracing::error!(target: "obscura::store", dir = %dir.display(), "{}", report.outcome);
                }
                if let Some(why) = &report.unrecorded {
                    tracing::warn!(target: "obscura::store", error = %why, "the retention run could not be recorded (its decisions stand)");
                }
                refusing.set(report.refuse_new);
                if !report.outcome.is_ok() || report.expired + report.evicted > 0 {
                    tracing::info!(target: "obscura::store", expired = report.expired, evicted = report.evicted,
                        freed_bytes = report.freed_bytes, refuse_new = report.refuse_new, outcome = %report.outcome, "retention ran");
                }
                snapshot.refusing = report.refuse_new;
                snapshot.last_retention = Some(RetentionRun {
                    finished_at_ms: report.finished_at,
                    removed: report.expired + report.evicted,
                    freed_bytes: report.freed_bytes,
                    ok: report.outcome.is_ok(),
                    outcome: report.outcome.to_string(),
                });
            }
            Err(error) => {
                // Whatever failed (a full disk cannot even record deletions), the low
                // mark still decides whether new frames are refused.
                let low = health::disk_free_share(dir).is_none_or(|f| f < policy.low_free);
                refusing.set(low);
                snapshot.refusing = low;
                tracing::error!(target: "obscura::store", %error, refusing = low, "retention failed; it will run again");
                snapshot.last_retention = Some(RetentionRun {
                    finished_at_ms: frame::now_unix_ms(),
                    removed: 0,
                    freed_bytes: 0,
                    ok: false,
                    outcome: RetentionOutcome::Failed(error.to_string()).to_string(),
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

#[cfg(test)]
mod tests {
    use health::Health;
    use tokio_util::sync::CancellationToken;

    use super::*;

    fn context() -> Context {
        Context { shutdown: CancellationToken::new(), health: Arc::new(Health::new("generic".into(), vec![])) }
    }

    fn stage(state_dir: PathBuf) -> RetentionStage {
        RetentionStage { policy: store::Retention::default(), every: Duration::from_secs(3600), state_dir }
    }

    #[test]
    fn known_free_space_above_the_low_mark_takes_frames() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (cx, refusing) = (context(), Flag::default());
        // Some test machines' disks are nearly full; this one must not be for the check.
        let free = health::disk_free_share(dir.path()).unwrap();
        if free < store::Retention::default().high_free {
            eprintln!("skipped: the test disk has only {:.0} % free", free * 100.0);
            return;
        }
        stage(dir.path().to_owned()).run_once(&store, &refusing, &cx);
        assert!(!refusing.get());
        let storage = cx.health.storage();
        assert!(!storage.refusing);
        assert_eq!(storage.last_retention.unwrap().outcome, "ok");
    }

    /// Issue 15, item 6: free space that cannot be read counts as low (frames refused,
    /// with a status naming the state directory), never as plenty.
    #[test]
    fn unknown_free_space_counts_as_low() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (cx, refusing) = (context(), Flag::default());
        let unreadable = dir.path().join("not-there");
        stage(unreadable.clone()).run_once(&store, &refusing, &cx);
        assert!(refusing.get(), "the store stage was not told to refuse");
        let storage = cx.health.storage();
        assert!(storage.refusing);
        let outcome = storage.last_retention.unwrap().outcome;
        assert!(outcome.contains("free space") && outcome.contains("unknown"), "{outcome}");
        assert!(outcome.contains(&unreadable.display().to_string()), "{outcome}");
    }
}
