//! The daemon's stages, each a loop of one shape: [`Stage::run`]`(input, output, cx)`,
//! on its own OS thread, until its input closes or `cx.shutdown` is cancelled (after
//! Vector's components). The supervisor (the `obscura` binary) builds each stage from
//! the config, wires them with channels and [`Flag`]s, and joins them downstream first.
//!
//! ```text
//! capture ──RawFrame──► anonymize ──AnonymizedFrame──► store ──► SQLite + blobs
//!                          │ live view (consented cameras)   ▲ refusing
//!                          └ busy ──► prelabel (store → store) │
//!                                     retention (store) ───────┘
//! ```
//!
//! Adding a stage (sync is the fifth, in the `sync` crate) is a type that implements [`Stage`], a
//! [`spawn`] in the supervisor and a [`Running::stopped`] in its shutdown.
//!
//! Invariant: knows nothing of GStreamer, HTTP or ONNX. The live view is a trait,
//! [`LiveView`], that the supervisor implements over the web crate's hub.

mod anonymize;
mod live;
mod prelabel;
mod retention;
mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use crate::anonymize::AnonymizeStage;
pub use crate::live::{LiveTap, LiveView};
pub use crate::prelabel::PrelabelStage;
pub use crate::retention::RetentionStage;
pub use crate::store::StoreStage;

/// What every stage gets from the supervisor: the shutdown signal and the counters it
/// reports to.
#[derive(Debug, Clone)]
pub struct Context {
    pub shutdown: CancellationToken,
    pub health: Arc<health::Health>,
}

impl Context {
    /// Waits up to `wait`, in short steps so shutdown stays prompt; false once shutdown
    /// began.
    pub fn pause(&self, wait: Duration) -> bool {
        let deadline = std::time::Instant::now() + wait;
        loop {
            if self.shutdown.is_cancelled() {
                return false;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }
}

/// One stage of the pipeline.
pub trait Stage: Send + 'static {
    /// What it reads: a channel from the stage before, or the store.
    type Input: Send + 'static;
    /// Where its results go: a channel to the stage after, or the store.
    type Output: Send + 'static;
    /// Its thread's name, its log target and its name in counters.
    const NAME: &'static str;

    /// Runs until the input closes or `cx.shutdown` is cancelled; returns how many items
    /// it handled.
    fn run(self, input: Self::Input, output: Self::Output, cx: &Context) -> u64;
}

/// Starts `stage` on its own thread.
pub fn spawn<S: Stage>(stage: S, input: S::Input, output: S::Output, cx: Context) -> std::io::Result<Running> {
    let health = cx.health.clone();
    let thread = std::thread::Builder::new().name(S::NAME.into()).spawn(move || stage.run(input, output, &cx))?;
    Ok(Running { name: S::NAME, thread, health })
}

/// A stage's thread, to be joined at shutdown.
#[derive(Debug)]
pub struct Running {
    name: &'static str,
    thread: std::thread::JoinHandle<u64>,
    health: Arc<health::Health>,
}

impl Running {
    /// Waits for the stage to end. A stage that panicked (the daemon's panic hook
    /// normally aborts first) or could not be waited for is logged as an error and
    /// counted in `obscura_task_failures_total`; then None.
    pub async fn stopped(self) -> Option<u64> {
        let (name, health) = (self.name, self.health.clone());
        let thread = self.thread;
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        match joined {
            Ok(Ok(handled)) => {
                tracing::debug!(target: "obscura", stage = name, handled, "stage stopped");
                Some(handled)
            }
            Ok(Err(_panic)) => {
                failed(&health, name, "panicked");
                None
            }
            Err(error) => {
                failed(&health, name, &error.to_string());
                None
            }
        }
    }
}

/// A task or thread that ended badly: an error in the log and a count in the metrics.
pub fn failed(health: &health::Health, task: &'static str, why: &str) {
    health.record_task_failure(task);
    tracing::error!(target: "obscura", task, error = why, "a daemon task failed; its work stopped");
}

/// A yes/no one stage sets and another reads: anonymization is `busy` (the pre-labeller
/// stands aside), the disk is low so the store is `refusing`.
#[derive(Debug, Clone, Default)]
pub struct Flag(Arc<AtomicBool>);

impl Flag {
    pub fn set(&self, on: bool) {
        self.0.store(on, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// How often the stages refresh what they publish in `/api/v1/status`.
const PUBLISH_EVERY: Duration = Duration::from_secs(5);
