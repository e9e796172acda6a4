//! Obscura's HTTP side. For now: liveness, readiness, the status document and
//! Prometheus metrics, all read-only views of [`health::Health`].
//!
//! The router is built by one function, [`router`], so tests drive it with
//! `tower::ServiceExt::oneshot` and the daemon serves the same thing.
//! Invariant: this crate never touches capture internals; it sees counters only.

mod metrics;
mod status;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

/// What every handler can see.
#[derive(Debug, Clone)]
pub struct AppState {
    pub health: Arc<health::Health>,
    /// The daemon's version, reported in `/api/v1/status` and `obscura_build_info`.
    pub version: &'static str,
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/status", get(status::status))
        .route("/metrics", get(metrics::metrics))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` resolves, then finishes open requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

/// The process is alive and answering.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Start-up finished and shutdown has not begun.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.health.is_ready() { (StatusCode::OK, "ready\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready\n") }
}

#[cfg(test)]
mod tests;
