//! Progress of long work a person started from the app: a dataset download, an access
//! export, an import. The request that does the work carries a token the app made up
//! (`progress=`); while it runs, the app asks `GET /api/v1/progress/{token}` how far it
//! is. Kept in memory, per user, a few at a time: it is a progress bar, not a job queue,
//! so a restart forgets it and the work's own answer is what counts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Authed;
use crate::{ApiError, AppState};

/// Work tracked at once over all users; the oldest finished entries make room.
const MAX: usize = 64;
/// How long a finished entry stays to be read.
const KEEP: Duration = Duration::from_secs(600);

/// How far one piece of work is.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Step {
    /// `export`, `access_export` or `import`.
    pub what: &'static str,
    /// Frames or images done, and in all (0 until the work knows).
    pub done: u64,
    pub total: u64,
    /// The work ended, well or not (its own answer says which).
    pub finished: bool,
}

#[derive(Debug, Default)]
pub struct Progress {
    entries: Mutex<HashMap<(i64, String), (Step, Instant)>>,
}

impl Progress {
    /// Starts tracking `token` for `user`; `None` for a malformed token, which the work
    /// then runs without (the token is only ever a progress bar's).
    pub(crate) fn start(self: &Arc<Self>, user: i64, token: Option<&str>, what: &'static str) -> Option<Tracker> {
        let token = token.filter(|t| valid(t))?.to_owned();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, (step, at)| !step.finished || at.elapsed() < KEEP);
        while entries.len() >= MAX {
            let Some(oldest) =
                entries.iter().min_by_key(|(_, (step, at))| (!step.finished, *at)).map(|(k, _)| k.clone())
            else {
                break;
            };
            entries.remove(&oldest);
        }
        let key = (user, token);
        entries.insert(key.clone(), (Step { what, done: 0, total: 0, finished: false }, Instant::now()));
        Some(Tracker { progress: self.clone(), key })
    }

    fn get(&self, user: i64, token: &str) -> Option<Step> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(&(user, token.to_owned())).map(|(step, _)| step.clone())
    }

    fn update(&self, key: &(i64, String), f: impl FnOnce(&mut Step)) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((step, at)) = entries.get_mut(key) {
            f(step);
            *at = Instant::now();
        }
    }
}

/// 8 to 64 letters, digits, `-` or `_`: what the app's random tokens look like.
fn valid(token: &str) -> bool {
    (8..=64).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// One piece of work's entry: tells it how far the work is, and marks it finished when
/// dropped, whether the work succeeded, failed or panicked.
pub(crate) struct Tracker {
    progress: Arc<Progress>,
    key: (i64, String),
}

impl Tracker {
    pub fn set(&self, done: usize, total: usize) {
        self.progress.update(&self.key, |s| (s.done, s.total) = (done as u64, total as u64));
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.progress.update(&self.key, |s| s.finished = true);
    }
}

/// How far a download, access export or import you started is (`progress=` on that
/// request). 404 until the work starts, and for anyone else's token.
#[utoipa::path(get, path = "/progress/{token}", tag = "datasets", params(("token" = String, Path)),
    responses((status = 200, body = Step), (status = 404, body = ApiError)))]
pub(crate) async fn progress(
    State(state): State<AppState>,
    axum::Extension(me): axum::Extension<Authed>,
    Path(token): Path<String>,
) -> Result<Json<Step>, ApiError> {
    state.progress.get(me.user.id, &token).map(Json).ok_or_else(|| {
        ApiError::not_found(
            "no work with this progress token is yours: it has not started, or ended over ten minutes ago",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_is_tracked_per_user_until_it_ends_and_a_while_after() {
        let p = Arc::new(Progress::default());
        assert!(p.start(1, Some("short"), "export").is_none(), "too short");
        assert!(p.start(1, Some("has spaces in it"), "export").is_none());
        let t = p.start(1, Some("abcdefgh12"), "export").unwrap();
        t.set(3, 10);
        assert_eq!(p.get(1, "abcdefgh12"), Some(Step { what: "export", done: 3, total: 10, finished: false }));
        assert_eq!(p.get(2, "abcdefgh12"), None, "another user's token is not theirs");
        drop(t);
        assert!(p.get(1, "abcdefgh12").unwrap().finished);
        // Never more than MAX entries: finished ones make room first.
        let running: Vec<_> = (0..MAX).map(|i| p.start(1, Some(&format!("token-{i:04}")), "import").unwrap()).collect();
        assert_eq!(p.entries.lock().unwrap().len(), MAX);
        assert_eq!(p.get(1, "abcdefgh12"), None, "the finished one made room");
        drop(running);
    }
}
