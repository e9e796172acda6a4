//! The router driven with `oneshot`, as the daemon serves it.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use health::{CameraHealth, CameraState, DropReason, Health, SystemSnapshot};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::{AppState, router};

fn state() -> (AppState, Arc<CameraHealth>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(store::Store::open(dir.path()).unwrap());
    let gate = Arc::new(CameraHealth::new("gate", "test://smpte".into()));
    let yard = Arc::new(CameraHealth::new("yard", "file:///srv/x.webm".into()));
    let health = Arc::new(Health::new("generic".into(), vec![gate.clone(), yard.clone()]));
    yard.set_state(CameraState::Down { reason: "/srv/x.webm: does not exist".into() });
    health.set_system(SystemSnapshot {
        rss_bytes: 12_345_678,
        cpu_percent: 12.5,
        disk_free_bytes: 1 << 30,
        disk_total_bytes: 1 << 34,
        soc_temp_celsius: Some(51.0),
        cores: 2,
    });
    let config = Arc::new(crate::AuthConfig::default());
    (AppState::new(store, health, config, "9.9.9"), gate, dir)
}

async fn get(state: &AppState, path: &str) -> (StatusCode, String, String) {
    // From the box itself: status and metrics answer loopback callers without a session.
    let mut request = Request::get(path).body(Body::empty()).unwrap();
    request.extensions_mut().insert(axum::extract::ConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 40000))));
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, content_type, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn healthz_answers_and_readyz_follows_startup() {
    let (state, _, _dir) = state();
    assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
    assert_eq!(get(&state, "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
    state.health.set_ready(true);
    assert_eq!(get(&state, "/readyz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn status_reports_cameras_with_reasons_and_the_system() {
    let (state, gate, _dir) = state();
    gate.set_state(CameraState::Up);
    for _ in 0..5 {
        gate.record_captured(std::time::Instant::now());
    }
    gate.record_drop(DropReason::Unchanged);
    let (code, content_type, body) = get(&state, "/api/v1/status").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(content_type, "application/json");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["version"], "9.9.9");
    assert_eq!(json["board"], "generic");
    assert_eq!(json["cameras"][0]["id"], "gate");
    assert_eq!(json["cameras"][0]["state"], "up");
    assert_eq!(json["cameras"][0]["captured"], 5);
    assert_eq!(json["cameras"][0]["dropped"]["unchanged"], 1);
    assert_eq!(json["cameras"][1]["state"], "down");
    assert_eq!(json["cameras"][1]["reason"], "/srv/x.webm: does not exist");
    assert_eq!(json["system"]["rss_bytes"], 12_345_678);
    assert_eq!(json["system"]["soc_temp_celsius"], 51.0);
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_per_camera_labels() {
    let (state, gate, _dir) = state();
    gate.set_state(CameraState::Up);
    gate.record_captured(std::time::Instant::now());
    gate.record_drop(DropReason::QueueFull);
    gate.record_restart();
    let (code, content_type, body) = get(&state, "/metrics").await;
    assert_eq!(code, StatusCode::OK);
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    for line in [
        "obscura_build_info{version=\"9.9.9\",board=\"generic\"} 1",
        "obscura_camera_up{camera=\"gate\"} 1",
        "obscura_camera_up{camera=\"yard\"} 0",
        "obscura_frames_captured_total{camera=\"gate\"} 1",
        "obscura_frames_dropped_total{camera=\"gate\",reason=\"queue_full\"} 1",
        "obscura_frames_dropped_total{camera=\"yard\",reason=\"fps_cap\"} 0",
        "obscura_camera_restarts_total{camera=\"gate\"} 1",
        "obscura_process_resident_memory_bytes 12345678",
        "obscura_disk_free_bytes 1073741824",
        "obscura_soc_temperature_celsius 51.0",
        "# EOF",
    ] {
        assert!(body.lines().any(|l| l == line), "missing `{line}` in:\n{body}");
    }
}

/// Issue 18, item 1: the box's root certificate, with no session, as DER, PEM and an iOS
/// profile, each with its content type and a download name; without a root of the box's
/// own (the operator's certificate), every one says so.
#[tokio::test]
async fn r18_1_the_root_certificate_is_downloaded_without_a_session() {
    let (mut state, _, dir) = state();
    for path in ["/api/v1/trust", "/api/v1/trust/obscura-root.crt", "/api/v1/trust/obscura.mobileconfig"] {
        let (code, _, body) = get(&state, path).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{path}");
        assert!(body.contains("no root certificate of its own"), "{body}");
    }
    let own = crate::tls::load_or_create_own(&dir.path().join("tls"), &["gatebox.local".to_owned()]).unwrap();
    state.config = Arc::new(crate::AuthConfig { root_ca: Some(Arc::new(own.root.clone())), ..Default::default() });

    let (code, content_type, body) = get(&state, "/api/v1/trust").await;
    assert_eq!((code, content_type.as_str()), (StatusCode::OK, "application/json"));
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["fingerprint"], own.root.fingerprint());
    assert_eq!(json["name"], "Obscura root gatebox.local");
    for (key, content_type, name) in [
        ("crt", "application/x-x509-ca-cert", "obscura-root.crt"),
        ("pem", "application/x-pem-file", "obscura-root.pem"),
        ("mobileconfig", "application/x-apple-aspen-config", "obscura.mobileconfig"),
    ] {
        let path = json[key].as_str().unwrap();
        let response = router(state.clone()).oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.headers()["content-type"], content_type, "{path}");
        assert_eq!(response.headers()["content-disposition"], format!("attachment; filename=\"{name}\""));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        match key {
            "crt" => assert_eq!(&body[..], own.root.der()),
            "pem" => assert_eq!(&body[..], own.root.pem().as_bytes()),
            _ => assert_eq!(&body[..], own.root.mobileconfig().as_bytes()),
        }
    }
}
