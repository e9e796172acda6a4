//! The hub's `/metrics` (OpenMetrics, as Prometheus scrapes it): refusals by code, blob
//! bytes received, batches committed and erasures done, counted by this process since
//! it started (each replica is scraped on its own).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::HubState;

/// The hub's counters, registered once.
#[derive(Debug)]
pub struct HubMetrics {
    registry: Registry,
    refusals: Family<Vec<(String, String)>, Counter>,
    bytes: Counter,
    commits: Counter,
    erasures: Counter,
}

impl Default for HubMetrics {
    fn default() -> HubMetrics {
        HubMetrics::new(hub::MqttRefusals::default())
    }
}

/// The device messages the control plane refused, read at scrape time.
#[derive(Debug)]
struct MqttCollector(hub::MqttRefusals);

impl Collector for MqttCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        crate::metrics::family(
            &mut encoder,
            "obscura_hub_mqtt_refused",
            "Messages from devices the control plane refused: over 64 KiB, or not v1.",
            None,
            [
                (vec![("why", "oversized".to_owned())], ConstCounter::new(self.0.oversized())),
                (vec![("why", "malformed".to_owned())], ConstCounter::new(self.0.malformed())),
            ],
        )
    }
}

impl HubMetrics {
    /// The counters, with the control plane's refusals (`Hub::mqtt_refusals`).
    pub fn new(mqtt: hub::MqttRefusals) -> HubMetrics {
        let mut registry = Registry::default();
        let (refusals, bytes, commits, erasures) = (
            Family::<Vec<(String, String)>, Counter>::default(),
            Counter::default(),
            Counter::default(),
            Counter::default(),
        );
        registry.register("obscura_hub_refusals", "Device requests refused, by code.", refusals.clone());
        registry.register("obscura_hub_blob_bytes_received", "Blob bytes received from devices.", bytes.clone());
        registry.register("obscura_hub_batches_committed", "Batch commits answered with a receipt.", commits.clone());
        registry.register("obscura_hub_erasures", "Erasure requests answered with a receipt.", erasures.clone());
        registry.register_collector(Box::new(MqttCollector(mqtt)));
        HubMetrics { registry, refusals, bytes, commits, erasures }
    }

    pub fn refused(&self, code: &str) {
        self.refusals.get_or_create(&vec![("code".to_owned(), code.to_owned())]).inc();
    }

    pub fn received(&self, bytes: usize) {
        self.bytes.inc_by(bytes as u64);
    }

    pub fn committed(&self) {
        self.commits.inc();
    }

    pub fn erased(&self) {
        self.erasures.inc();
    }
}

/// For a scraper on the hub's machine (loopback), or anyone logged in, as on a box: the
/// guard (`Access::SessionOrLoopback`) decides.
pub(super) async fn metrics(State(state): State<HubState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.metrics.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(target: "web", error = %e, "cannot encode the hub's metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
