//! `GET /metrics` in the OpenMetrics text format that Prometheus scrapes. The values are
//! read from [`health::Health`] at scrape time by a collector, so the stages keep plain
//! atomics and know nothing of Prometheus.

use std::fmt::Error;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use health::{CameraState, DropReason, Health};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::AppState;

/// Prometheus metrics: for a session, or for a scraper on the box itself (loopback).
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, content_type = "application/openmetrics-text", body = String)))]
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(HealthCollector { health: state.health.clone(), version: state.version }));
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &registry) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(target: "web", error = %e, "cannot encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[derive(Debug)]
struct HealthCollector {
    health: Arc<Health>,
    version: &'static str,
}

/// Writes one metric family with one sample per label set.
pub(crate) fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: impl IntoIterator<Item = (Vec<(&'static str, String)>, M)>,
) -> Result<(), Error> {
    let mut samples = samples.into_iter().peekable();
    let Some((_, first)) = samples.peek() else {
        return Ok(());
    };
    let mut family = encoder.encode_descriptor(name, help, unit, first.metric_type())?;
    for (labels, metric) in samples {
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for HealthCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), Error> {
        let health = &self.health;
        let cams: Vec<_> = health.cameras().iter().map(|c| c.snapshot()).collect();
        let cam = |c: &health::CameraSnapshot| vec![("camera", c.id.to_string())];

        family(
            &mut enc,
            "obscura_build_info",
            "Version and board profile of the running daemon.",
            None,
            [(vec![("version", self.version.to_owned()), ("board", health.board().to_owned())], ConstGauge::new(1i64))],
        )?;
        family(
            &mut enc,
            "obscura_uptime",
            "Time since the daemon started.",
            Some(&Unit::Seconds),
            [(vec![], ConstGauge::new(health.uptime().as_secs_f64()))],
        )?;
        family(
            &mut enc,
            "obscura_camera_up",
            "1 while the camera delivers frames, else 0.",
            None,
            cams.iter().map(|c| (cam(c), ConstGauge::new(i64::from(c.state == CameraState::Up)))),
        )?;
        family(
            &mut enc,
            "obscura_camera_fps",
            "Frames per second arriving from the camera over the last seconds.",
            None,
            cams.iter().map(|c| (cam(c), ConstGauge::new(c.fps))),
        )?;
        family(
            &mut enc,
            "obscura_frames_captured",
            "Frames that arrived from the camera.",
            None,
            cams.iter().map(|c| (cam(c), ConstCounter::new(c.captured))),
        )?;
        family(
            &mut enc,
            "obscura_frames_delivered",
            "Frames handed on to anonymization.",
            None,
            cams.iter().map(|c| (cam(c), ConstCounter::new(c.delivered))),
        )?;
        family(
            &mut enc,
            "obscura_frames_dropped",
            "Frames not kept, by reason: fps_cap, interval, unchanged (sampling), queue_full (back-pressure), bad_frame, detector_error or deadline (dropped un-stored by the anonymizer: fail closed), no_consent (no annotate consent, policy drop), store_failed (disk low or unknown, or a write failed), store_stopped (anonymized, but the store stage had stopped), erased (captured in a window erased while it was in the pipeline).",
            None,
            cams.iter().flat_map(|c| {
                DropReason::ALL.iter().zip(&c.dropped).map(move |(reason, (_, n))| {
                    (vec![("camera", c.id.to_string()), ("reason", reason.as_str().to_owned())], ConstCounter::new(*n))
                })
            }),
        )?;
        family(
            &mut enc,
            "obscura_frames_anonymized",
            "Frames that came out of the anonymizer, redacted.",
            None,
            cams.iter().map(|c| (cam(c), ConstCounter::new(c.anonymized))),
        )?;
        family(
            &mut enc,
            "obscura_faces_redacted",
            "Faces redacted, counting tracked ones kept after their detection was lost.",
            None,
            cams.iter().map(|c| (cam(c), ConstCounter::new(c.faces))),
        )?;
        family(
            &mut enc,
            "obscura_plates_redacted",
            "Licence plates redacted.",
            None,
            cams.iter().map(|c| (cam(c), ConstCounter::new(c.plates))),
        )?;
        family(
            &mut enc,
            "obscura_plate_areas_redacted",
            "Plate areas covered where a vehicle's plate can be, on vehicles too small for the detectors or not looked at closely yet (fail closed). Many against plates found: the box cannot look at every vehicle in time; raise [detect] vehicle_looks if the CPU allows.",
            None,
            cams.iter().map(|c| (cam(c), ConstCounter::new(c.plate_areas))),
        )?;
        family(
            &mut enc,
            "obscura_anonymize_last_milliseconds",
            "Time the camera's last frame took to detect and redact.",
            None,
            cams.iter().map(|c| (cam(c), ConstGauge::new(c.anonymize_ms))),
        )?;
        family(
            &mut enc,
            "obscura_frames_stored",
            "Anonymized frames written to the store, by consent: annotate (covered) or local_only.",
            None,
            cams.iter().flat_map(|c| {
                [("annotate", c.stored - c.local_only), ("local_only", c.local_only)].map(|(kind, n)| {
                    (vec![("camera", c.id.to_string()), ("consent", kind.to_owned())], ConstCounter::new(n))
                })
            }),
        )?;
        family(
            &mut enc,
            "obscura_camera_restarts",
            "Times the camera's source was reopened after an error, end of stream or stall.",
            None,
            cams.iter().map(|c| (cam(c), ConstCounter::new(c.restarts))),
        )?;
        family(
            &mut enc,
            "obscura_task_failures",
            "Daemon tasks and threads that ended badly (panicked, or could not be joined), by task; each is also an error in the log.",
            None,
            health.task_failures().into_iter().map(|(task, n)| (vec![("task", task.to_owned())], ConstCounter::new(n))),
        )?;

        let sys = health.system();
        family(
            &mut enc,
            "obscura_process_resident_memory",
            "Resident memory of the daemon.",
            Some(&Unit::Bytes),
            [(vec![], ConstGauge::new(sys.rss_bytes as i64))],
        )?;
        family(
            &mut enc,
            "obscura_process_cpu_percent",
            "CPU use of the daemon in percent of one core, over the last sampling period.",
            None,
            [(vec![], ConstGauge::new(f64::from(sys.cpu_percent)))],
        )?;
        family(
            &mut enc,
            "obscura_disk_free",
            "Free space on the file system that holds the state directory.",
            Some(&Unit::Bytes),
            [(vec![], ConstGauge::new(sys.disk_free_bytes as i64))],
        )?;
        let storage = health.storage();
        family(
            &mut enc,
            "obscura_store_frames",
            "Frames held in the store.",
            None,
            [(vec![], ConstGauge::new(storage.frames as i64))],
        )?;
        family(
            &mut enc,
            "obscura_store_disk",
            "Bytes the store uses on disk: blobs, database and WAL.",
            Some(&Unit::Bytes),
            [(vec![], ConstGauge::new(storage.disk_bytes as i64))],
        )?;
        family(
            &mut enc,
            "obscura_store_refusing",
            "1 while new frames are refused because the disk is below its low mark.",
            None,
            [(vec![], ConstGauge::new(i64::from(storage.refusing)))],
        )?;
        family(
            &mut enc,
            "obscura_retention_last_run_timestamp",
            "When retention last finished, Unix seconds; absent until it has run. Alert if it stops advancing.",
            Some(&Unit::Seconds),
            storage.last_retention.as_ref().map(|r| (vec![], ConstGauge::new(r.finished_at_ms as f64 / 1000.0))),
        )?;
        family(
            &mut enc,
            "obscura_retention_last_run_ok",
            "1 if the last retention run finished with outcome ok, else 0.",
            None,
            storage.last_retention.as_ref().map(|r| (vec![], ConstGauge::new(i64::from(r.ok)))),
        )?;
        family(
            &mut enc,
            "obscura_retention_last_run_removed",
            "Frames the last retention run removed.",
            None,
            storage.last_retention.as_ref().map(|r| (vec![], ConstGauge::new(r.removed as i64))),
        )?;
        let pre = health.prelabel();
        if pre.enabled {
            family(
                &mut enc,
                "obscura_prelabel_frames",
                "Frames pre-labelled since start.",
                None,
                [(vec![], ConstCounter::new(pre.done))],
            )?;
            family(
                &mut enc,
                "obscura_prelabel_backlog",
                "Stored frames waiting for pre-labels; it grows while anonymization needs the CPU.",
                None,
                [(vec![], ConstGauge::new(pre.backlog as i64))],
            )?;
            family(
                &mut enc,
                "obscura_prelabel_write_failures",
                "Writes of pre-labels that failed; the pre-labeller backs off after each, and sets a frame aside after three (see the log).",
                None,
                [(vec![], ConstCounter::new(pre.failed))],
            )?;
            family(
                &mut enc,
                "obscura_prelabel_deferred",
                "Times the pre-labeller stood aside because anonymization had frames waiting.",
                None,
                [(vec![], ConstCounter::new(pre.deferred))],
            )?;
        }
        let sync = health.sync();
        if sync.state != "off" {
            let gauges: [(&str, &str, i64); 5] = [
                ("obscura_sync_backlog_frames", "Eligible frames not yet at the hub.", sync.backlog_frames as i64),
                (
                    "obscura_sync_backlog_bytes",
                    "Bytes of eligible frames not yet at the hub.",
                    sync.backlog_bytes as i64,
                ),
                ("obscura_sync_batches_pending", "Batches formed and not yet committed.", sync.batches_pending as i64),
                (
                    "obscura_sync_erasures_pending",
                    "Erasures the hub has not yet confirmed.",
                    sync.erasures_pending as i64,
                ),
                (
                    "obscura_sync_expired_unsynced",
                    "Frames retention removed before they could be synced.",
                    sync.expired_unsynced as i64,
                ),
            ];
            for (name, help, value) in gauges {
                family(&mut enc, name, help, None, [(vec![], ConstGauge::new(value))])?;
            }
            let counters: [(&str, &str, u64); 6] = [
                ("obscura_sync_bytes_sent", "Blob bytes uploaded to the hub since start.", sync.bytes_sent),
                (
                    "obscura_sync_commits",
                    "Batches the hub committed, with a checked receipt, since start.",
                    sync.commits,
                ),
                (
                    "obscura_sync_rejects",
                    "Batches the hub refused for good since start (see the status).",
                    sync.rejects,
                ),
                ("obscura_sync_retries", "Sync steps that failed and will be tried again, since start.", sync.retries),
                ("obscura_sync_blobs_skipped", "Blobs the hub already held from this box.", sync.blobs_skipped),
                ("obscura_sync_erasures_confirmed", "Erasures the hub confirmed since start.", sync.erasures_confirmed),
            ];
            for (name, help, value) in counters {
                family(&mut enc, name, help, None, [(vec![], ConstCounter::new(value))])?;
            }
            family(
                &mut enc,
                "obscura_sync_last_receipt_age",
                "Seconds since the hub's last receipt; absent until the first. Alert if it grows while the backlog does.",
                Some(&Unit::Seconds),
                sync.last_receipt_ms
                    .map(|t| (vec![], ConstGauge::new(((frame::now_unix_ms() - t).max(0) / 1000) as i64))),
            )?;
            family(
                &mut enc,
                "obscura_sync_approved",
                "1 while the hub has approved this box; 0 while pending, revoked or not enrolled.",
                None,
                [(vec![], ConstGauge::new(i64::from(sync.state == "approved")))],
            )?;
        }
        family(
            &mut enc,
            "obscura_soc_temperature_celsius",
            "Hottest CPU or SoC temperature sensor; absent where none is readable.",
            None,
            sys.soc_temp_celsius.map(|t| (vec![], ConstGauge::new(f64::from(t)))),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use health::CameraHealth;

    use super::*;

    fn scrape(health: Arc<Health>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(HealthCollector { health, version: "test" }));
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &registry).unwrap();
        body
    }

    /// Issue 15, items 7 and 8: a drop after anonymization (the store stage stopped) and
    /// a failed daemon task are counters a field engineer can see.
    #[test]
    fn drops_after_anonymization_and_failed_tasks_are_exported() {
        let gate = Arc::new(CameraHealth::new("gate", "test://".into()));
        let health = Arc::new(Health::new("generic".into(), vec![gate.clone()]));
        gate.record_drop(DropReason::StoreStopped);
        health.record_task_failure("prelabel");
        health.record_task_failure("prelabel");
        let body = scrape(health);
        for line in [
            "obscura_frames_dropped_total{camera=\"gate\",reason=\"store_stopped\"} 1",
            "obscura_task_failures_total{task=\"prelabel\"} 2",
        ] {
            assert!(body.lines().any(|l| l == line), "missing `{line}` in:\n{body}");
        }
    }
}
