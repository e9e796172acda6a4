//! `GET /api/v1/status`: the device at a glance, as JSON. The shapes here are a contract
//! with tablets and the hub, so they are DTOs of their own, not the health types.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use health::{CameraSnapshot, CameraState, SystemSnapshot};
use serde::Serialize;

use crate::AppState;

#[derive(Debug, Serialize)]
pub(crate) struct StatusDto {
    version: &'static str,
    board: String,
    uptime_seconds: f64,
    ready: bool,
    cameras: Vec<CameraDto>,
    system: SystemDto,
}

#[derive(Debug, Serialize)]
struct CameraDto {
    id: String,
    source: String,
    /// `starting`, `up`, `down`, `ended` or `disabled`.
    state: &'static str,
    /// Why the camera is down, and what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    state_for_seconds: f64,
    fps: f64,
    captured: u64,
    delivered: u64,
    dropped: BTreeMap<&'static str, u64>,
    restarts: u64,
    anonymized: u64,
    faces_redacted: u64,
    plates_redacted: u64,
    anonymize_ms: f64,
    last_frame_age_seconds: Option<f64>,
}

#[derive(Debug, Serialize)]
struct SystemDto {
    rss_bytes: u64,
    cpu_percent: f32,
    cores: usize,
    disk_free_bytes: u64,
    disk_total_bytes: u64,
    soc_temp_celsius: Option<f32>,
}

impl From<CameraSnapshot> for CameraDto {
    fn from(c: CameraSnapshot) -> Self {
        CameraDto {
            id: c.id.to_string(),
            source: c.source,
            state: c.state.as_str(),
            reason: match c.state {
                CameraState::Down { reason } => Some(reason),
                _ => None,
            },
            state_for_seconds: c.state_for.as_secs_f64(),
            fps: (c.fps * 100.0).round() / 100.0,
            captured: c.captured,
            delivered: c.delivered,
            dropped: c.dropped.into_iter().map(|(r, n)| (r.as_str(), n)).collect(),
            restarts: c.restarts,
            anonymized: c.anonymized,
            faces_redacted: c.faces,
            plates_redacted: c.plates,
            anonymize_ms: (c.anonymize_ms * 10.0).round() / 10.0,
            last_frame_age_seconds: c.last_frame_age.map(|d| d.as_secs_f64()),
        }
    }
}

impl From<SystemSnapshot> for SystemDto {
    fn from(s: SystemSnapshot) -> Self {
        SystemDto {
            rss_bytes: s.rss_bytes,
            cpu_percent: s.cpu_percent,
            cores: s.cores,
            disk_free_bytes: s.disk_free_bytes,
            disk_total_bytes: s.disk_total_bytes,
            soc_temp_celsius: s.soc_temp_celsius,
        }
    }
}

pub(crate) async fn status(State(state): State<AppState>) -> Json<StatusDto> {
    let health = &state.health;
    Json(StatusDto {
        version: state.version,
        board: health.board().to_owned(),
        uptime_seconds: health.uptime().as_secs_f64(),
        ready: health.is_ready(),
        cameras: health.cameras().iter().map(|c| c.snapshot().into()).collect(),
        system: health.system().into(),
    })
}
