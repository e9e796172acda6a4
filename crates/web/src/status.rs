//! `GET /api/v1/status`: the device at a glance, as JSON. The shapes here are a contract
//! with tablets and the hub, so they are DTOs of their own, not the health types.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use health::{CameraSnapshot, CameraState, PrelabelSnapshot, StorageSnapshot, SyncSnapshot, SystemSnapshot};
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
    storage: StorageDto,
    prelabel: PrelabelDto,
    sync: SyncDto,
    /// Logins and setups refused by the rate limits since start (the audit log has one
    /// entry per address and 15 min window).
    logins_refused: u64,
}

#[derive(Debug, Serialize)]
struct PrelabelDto {
    enabled: bool,
    /// Frames pre-labelled since start.
    done: u64,
    /// Stored frames still waiting: grows under load, shrinks when the box is idle.
    backlog: u64,
    /// Times it stood aside for anonymization.
    deferred: u64,
    last_ms: f64,
    /// Writes of pre-labels that failed, and frames set aside after three failures.
    failed: u64,
    set_aside: u64,
}

/// Sync to the hub: where the box stands, what waits, what moved, what is wrong.
#[derive(Debug, Serialize)]
struct SyncDto {
    /// `off`, `not_enrolled`, `pending`, `approved` or `revoked`.
    state: String,
    hub: Option<String>,
    /// The box's key fingerprint, as the hub lists it.
    key: String,
    /// `up`, `down` or `off`; commands are polled over HTTPS when not up.
    mqtt: String,
    paused: bool,
    outside_window: bool,
    backlog_frames: u64,
    backlog_bytes: u64,
    oldest_age_seconds: Option<u64>,
    batches_pending: u64,
    erasures_pending: u64,
    /// Frames retention removed before they could be synced (privacy wins; never silent).
    expired_unsynced: u64,
    bytes_sent: u64,
    blobs_sent: u64,
    blobs_skipped: u64,
    commits: u64,
    rejects: u64,
    retries: u64,
    erasures_confirmed: u64,
    last_receipt_ms: Option<i64>,
    /// The last problem and its fix; null after a success.
    last_error: Option<String>,
}

impl From<SyncSnapshot> for SyncDto {
    fn from(s: SyncSnapshot) -> Self {
        SyncDto {
            state: s.state,
            hub: s.hub,
            key: s.key,
            mqtt: s.mqtt,
            paused: s.paused,
            outside_window: s.outside_window,
            backlog_frames: s.backlog_frames,
            backlog_bytes: s.backlog_bytes,
            oldest_age_seconds: s.oldest_age_s,
            batches_pending: s.batches_pending,
            erasures_pending: s.erasures_pending,
            expired_unsynced: s.expired_unsynced,
            bytes_sent: s.bytes_sent,
            blobs_sent: s.blobs_sent,
            blobs_skipped: s.blobs_skipped,
            commits: s.commits,
            rejects: s.rejects,
            retries: s.retries,
            erasures_confirmed: s.erasures_confirmed,
            last_receipt_ms: s.last_receipt_ms,
            last_error: s.last_error,
        }
    }
}

impl From<PrelabelSnapshot> for PrelabelDto {
    fn from(p: PrelabelSnapshot) -> Self {
        PrelabelDto {
            enabled: p.enabled,
            done: p.done,
            backlog: p.backlog,
            deferred: p.deferred,
            last_ms: (p.last_ms * 10.0).round() / 10.0,
            failed: p.failed,
            set_aside: p.set_aside,
        }
    }
}

#[derive(Debug, Serialize)]
struct StorageDto {
    frames: u64,
    disk_bytes: u64,
    /// New frames are refused: the disk is below its low mark.
    refusing_new_frames: bool,
    /// The last retention run; null until the first one finished.
    last_retention: Option<RetentionDto>,
}

#[derive(Debug, Serialize)]
struct RetentionDto {
    /// Unix milliseconds.
    finished_at_ms: i64,
    seconds_ago: f64,
    removed: u64,
    freed_bytes: u64,
    /// `ok`, or what stopped it short.
    outcome: String,
}

impl From<StorageSnapshot> for StorageDto {
    fn from(s: StorageSnapshot) -> Self {
        let now = frame::now_unix_ms();
        StorageDto {
            frames: s.frames,
            disk_bytes: s.disk_bytes,
            refusing_new_frames: s.refusing,
            last_retention: s.last_retention.map(|r| RetentionDto {
                finished_at_ms: r.finished_at_ms,
                seconds_ago: (now - r.finished_at_ms).max(0) as f64 / 1000.0,
                removed: r.removed,
                freed_bytes: r.freed_bytes,
                outcome: r.outcome,
            }),
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct CameraDto {
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
    stored: u64,
    stored_local_only: u64,
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
            stored: c.stored,
            stored_local_only: c.local_only,
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

/// Device health: cameras, system, storage, pre-labels and sync.
#[utoipa::path(get, path = "/status", tag = "device", responses((status = 200, body = Object)))]
pub(crate) async fn status(State(state): State<AppState>) -> Json<StatusDto> {
    let health = &state.health;
    Json(StatusDto {
        version: state.version,
        board: health.board().to_owned(),
        uptime_seconds: health.uptime().as_secs_f64(),
        ready: health.is_ready(),
        cameras: health.cameras().iter().map(|c| c.snapshot().into()).collect(),
        system: health.system().into(),
        storage: health.storage().into(),
        prelabel: health.prelabel().into(),
        sync: health.sync().into(),
        logins_refused: state.refusals.total(),
    })
}

/// Cameras and their state, fps, drops and counts.
#[utoipa::path(get, path = "/cameras", tag = "device", responses((status = 200, body = Vec<Object>)))]
pub(crate) async fn cameras(State(state): State<AppState>) -> Json<Vec<CameraDto>> {
    Json(state.health.cameras().iter().map(|c| c.snapshot().into()).collect())
}
