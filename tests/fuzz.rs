//! The fuzz targets' entry points (`fuzz/fuzz_targets/`), shared with the corpus replay
//! (`fuzz_replay.rs`) so the two cannot drift. Each takes the fuzzer's bytes through the
//! code production takes them through: an error is an answer, a panic is a finding.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, header};
use http_body_util::BodyExt;
use hub::HubStore;
use ring::signature::{Ed25519KeyPair, KeyPair};
use store::{Accounts, Role};
use tower::ServiceExt;
use wire::signature::{self, Target};
use wire::{DeviceId, Receipt};

/// The targets, by name: the directory of each one's corpus under `fuzz/corpus/`.
pub const TARGETS: [&str; 8] = ["config", "device_api", "hub_api", "wire", "mqtt", "coco", "cvat", "image"];

/// `config`: the file's text up to the first NUL, then `NAME=value` lines of environment,
/// through every layer and check of `obscura run`'s loader.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (file, env) = text.split_once('\0').unwrap_or((&text, ""));
    let env = env.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    let overrides = obscura::config::Overrides { file: None, listen: None, env };
    let _ = obscura::config::load_text(file, &overrides);
}

/// `coco`: a COCO annotations file as `obscura import` reads it.
pub fn coco(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = dataset::read_text(dataset::ImportFormat::Coco, text);
    }
}

/// `cvat`: a CVAT 1.1 annotations file as `obscura import` reads it.
pub fn cvat(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = dataset::read_text(dataset::ImportFormat::Cvat, text);
    }
}

/// `image`: a still as `obscura blur` decodes it (with its metadata kept, so that is read
/// too), and a camera's MJPEG frame as the daemon's V4L2 source decodes it (for a camera
/// set to 32×24, the seeds' size, so a good frame goes the whole way).
pub fn image(data: &[u8]) {
    let _ = obscura::still::decode(data, true);
    let _ = capture::decode_mjpeg(data, 32, 24);
}

/// The hub key receipts are signed with in `wire`.
fn hub_key() -> &'static Ed25519KeyPair {
    static KEY: std::sync::LazyLock<Ed25519KeyPair> =
        std::sync::LazyLock::new(|| Ed25519KeyPair::from_seed_unchecked(&[7; 32]).expect("a 32-byte seed"));
    &KEY
}

/// `wire`: the first byte picks what the rest is. 0: a receipt as a hub answers it, which
/// the device reads and checks (`sync::HubClient`); 1: a receipt's payload text, signed
/// here so the check reaches the payload's parser; 2: a sync manifest; 3: a consent
/// update; 4: an erasure request (the hub reads these three).
pub fn wire(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else { return };
    let key = hub_key();
    match kind % 5 {
        0 => {
            if let Ok(receipt) = serde_json::from_slice::<Receipt>(rest) {
                let _ = receipt.verify(key.public_key().as_ref());
            }
        }
        1 => {
            let payload = String::from_utf8_lossy(rest).into_owned();
            let signature = wire::base64(key.sign(payload.as_bytes()).as_ref());
            let receipt = Receipt { payload, signature, hub_key: wire::base64(key.public_key().as_ref()) };
            let _ = receipt.verify(key.public_key().as_ref());
        }
        2 => drop(serde_json::from_slice::<wire::v1::Manifest>(rest)),
        3 => drop(serde_json::from_slice::<wire::v1::ConsentUpdate>(rest)),
        _ => drop(serde_json::from_slice::<wire::v1::Erasure>(rest)),
    }
}

/// A request for one of the routers, with its session.
struct Route {
    method: Method,
    path: String,
    session: Option<usize>,
}

fn route(method: Method, path: &str, session: Option<usize>) -> Route {
    Route { method, path: path.to_owned(), session }
}

/// A session: the cookie header and the CSRF token.
type Session = (String, String);

fn session(accounts: &dyn Accounts, user: i64) -> Session {
    let id = web::auth::random_hex(32);
    let csrf = web::auth::random_hex(32);
    accounts.create_session(&store::sha256_hex(id.as_bytes()), user, &csrf, "10.0.0.9").expect("a session");
    (format!("{}={id}", web::auth::cookie_name(true)), csrf)
}

const HOST: &str = "box.local:8443";
const ORIGIN: &str = "https://box.local:8443";

fn request(route: &Route, sessions: &[Session], body: &[u8]) -> Request<Body> {
    let mut request = Request::builder()
        .method(route.method.clone())
        .uri(&route.path)
        .header(header::HOST, HOST)
        .header(header::ORIGIN, ORIGIN)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some((cookie, csrf)) = route.session.map(|i| &sessions[i]) {
        request = request.header(header::COOKIE, cookie).header("x-csrf-token", csrf);
    }
    let mut request = request.body(Body::from(body.to_vec())).expect("a request");
    request.extensions_mut().insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 9], 50000))));
    request
}

/// Sends `request` through `router` and reads the whole answer; its status.
fn answer(runtime: &tokio::runtime::Runtime, router: axum::Router, request: Request<Body>) -> Option<u16> {
    runtime.block_on(async {
        let response = router.oneshot(request).await.expect("the router answers");
        let status = response.status().as_u16();
        let _ = response.into_body().collect().await;
        Some(status)
    })
}

/// An admin's and a steward's sessions, in that order, and a third account's id.
fn people(accounts: &dyn Accounts) -> (Vec<Session>, i64) {
    let hash = web::hash_password("correct horse battery staple").expect("a hash");
    let add = |name: &str, role| accounts.add_user(name, role, &hash, "fuzz").expect("a user").id;
    let (admin, steward, other) = (add("admin", Role::Admin), add("stew", Role::Steward), add("ana", Role::Annotator));
    (vec![session(accounts, admin), session(accounts, steward)], other)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime")
}

fn auth_config() -> web::AuthConfig {
    web::AuthConfig { origins: [ORIGIN.to_owned()].into_iter().collect(), ..Default::default() }
}

/// `device_api`: the box's LAN API (`web::router`) over a real store, as an admin and a
/// steward. The first byte picks the route; the rest is its JSON body.
#[derive(Debug)]
pub struct DeviceApi {
    _dir: tempfile::TempDir,
    /// Built once: building it (its OpenAPI document) costs more than most requests.
    router: axum::Router,
    sessions: Vec<Session>,
    runtime: tokio::runtime::Runtime,
    frame: i64,
    other: i64,
}

impl DeviceApi {
    pub fn new() -> DeviceApi {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Arc::new(store::Store::open(dir.path()).expect("a store"));
        let (sessions, other) = people(store.as_ref());
        let frame = stored_frame(&store);
        let health = Arc::new(health::Health::new("generic".into(), vec![]));
        let state = web::AppState::new(store, health, Arc::new(auth_config()), "fuzz");
        DeviceApi { _dir: dir, router: web::router(state), sessions, runtime: runtime(), frame, other }
    }

    fn routes(&self) -> Vec<Route> {
        let (frame, other) = (self.frame, self.other);
        vec![
            route(Method::POST, "/api/v1/auth/login", None),
            route(Method::POST, "/api/v1/setup", None),
            route(Method::POST, "/api/v1/auth/password", Some(0)),
            route(Method::PUT, "/api/v1/labels", Some(0)),
            route(Method::POST, "/api/v1/queues", Some(0)),
            route(Method::PUT, &format!("/api/v1/frames/{frame}/annotations"), Some(0)),
            route(Method::POST, &format!("/api/v1/frames/{frame}/submit"), Some(0)),
            route(Method::POST, &format!("/api/v1/frames/{frame}/reviews"), Some(0)),
            route(Method::POST, "/api/v1/users", Some(0)),
            route(Method::PATCH, &format!("/api/v1/users/{other}"), Some(0)),
            route(Method::POST, &format!("/api/v1/users/{other}/password"), Some(0)),
            route(Method::POST, "/api/v1/consents", Some(1)),
            route(Method::POST, "/api/v1/erasures", Some(1)),
            route(Method::POST, "/api/v1/access-exports", Some(1)),
            // Uploaded annotation files, parsed by the COCO and CVAT importers.
            route(Method::POST, "/api/v1/imports?format=coco&progress=fuzz-import", Some(0)),
            route(Method::POST, "/api/v1/imports?format=cvat&dry_run=true", Some(0)),
        ]
    }

    /// The answer's status (None for an empty input).
    pub fn call(&self, data: &[u8]) -> Option<u16> {
        let (&pick, body) = data.split_first()?;
        let routes = self.routes();
        let request = request(&routes[pick as usize % routes.len()], &self.sessions, body);
        answer(&self.runtime, self.router.clone(), request)
    }
}

impl Default for DeviceApi {
    fn default() -> Self {
        DeviceApi::new()
    }
}

/// A frame in the store for the frame routes: a small grey one, anonymized by an
/// anonymizer with no detector (nothing to find), under a consent to annotate it.
fn stored_frame(store: &store::Store) -> i64 {
    store
        .add_consent(store::NewConsent {
            scope: store::Scope::Camera("gate".into()),
            covered: "site staff".into(),
            legal_basis: "contract".into(),
            purposes: vec![store::Purpose::Annotate],
            valid_from: 0,
            valid_until: None,
            evidence_sha256: None,
            recorded_by: "fuzz".into(),
        })
        .expect("a consent");
    let meta = frame::FrameMeta {
        camera: Arc::from("gate"),
        seq: 1,
        monotonic: std::time::Instant::now(),
        wall: std::time::SystemTime::now(),
        media_time: None,
    };
    let raw = frame::RawFrame::new(meta, 16, 16, vec![128; 16 * 16 * 3]).expect("a frame");
    let anonymizer = anonymize::Anonymizer::new(vec![], anonymize::Settings::default());
    let frame = anonymizer.anonymize(raw, None).expect("nothing to find");
    match store.put_frames(&[(&frame, serde_json::json!({}))], store::NoConsent::Drop).expect("stored")[0] {
        store::Stored::Kept { id, .. } => id.0,
        store::Stored::NoConsent | store::Stored::Erased => panic!("the frame was not kept"),
    }
}

/// `hub_api` and `mqtt`: a hub over a real store, one approved device, and people's
/// sessions (an admin and a steward).
#[derive(Debug)]
pub struct HubApi {
    _dir: tempfile::TempDir,
    hub: hub::Hub,
    router: axum::Router,
    sessions: Vec<Session>,
    runtime: tokio::runtime::Runtime,
    device: DeviceId,
    key: Ed25519KeyPair,
    nonce: AtomicU64,
}

impl HubApi {
    pub fn new() -> HubApi {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = Arc::new(store::HubDb::open(dir.path()).expect("a hub store"));
        let (identity, _) = hub::HubIdentity::load_or_create(dir.path()).expect("a hub key");
        let hub = hub::Hub::new(db.clone(), Arc::new(identity));
        let device = DeviceId::new(1_700_000_000_000, [3; 16]);
        let key = Ed25519KeyPair::from_seed_unchecked(&[3; 32]).expect("a 32-byte seed");
        let record = hub::DeviceRecord {
            id: device,
            public_key: key.public_key().as_ref().to_vec(),
            hostname: "box".into(),
            state: wire::v1::DeviceState::Pending,
            enrolled_ms: 1_700_000_000_000,
        };
        db.enrol(&record, None, 1_700_000_000_000).expect("enrolled");
        db.set_state(device, wire::v1::DeviceState::Approved, "fuzz", 1_700_000_000_000).expect("approved");
        let (sessions, _) = people(db.as_ref());
        let router = web::hub::hub_router(web::hub::HubState::new(hub.clone(), db, auth_config()));
        HubApi { _dir: dir, hub, router, sessions, runtime: runtime(), device, key, nonce: AtomicU64::new(0) }
    }

    /// The first byte picks the route; the rest is its JSON body. Device routes are signed
    /// by the approved device, as its sync client signs them.
    /// The answer's status (None for an empty input).
    pub fn call(&self, data: &[u8]) -> Option<u16> {
        let (&pick, body) = data.split_first()?;
        let device = self.device;
        let routes = [
            route(Method::POST, "/v1/enrol", None),
            route(Method::POST, "/v1/batches/01JBATCH", None),
            route(Method::POST, "/v1/consents", None),
            route(Method::POST, "/v1/erasures/01JERASE", None),
            route(Method::POST, "/v1/commands/c1/ack", None),
            route(Method::POST, "/api/v1/auth/login", None),
            route(Method::POST, "/api/v1/auth/password", Some(0)),
            route(Method::POST, &format!("/api/v1/devices/{device}/commands"), Some(0)),
            route(Method::POST, "/api/v1/users", Some(0)),
            route(Method::POST, "/api/v1/erasures", Some(1)),
        ];
        let route = &routes[pick as usize % routes.len()];
        // Bodies name this device, so a fuzzed manifest gets past the check that it is
        // the sender's; `{device}` in a body stands for its id.
        let body = match std::str::from_utf8(body) {
            Ok(text) if text.contains("{device}") => text.replace("{device}", &device.to_string()).into_bytes(),
            _ => body.to_vec(),
        };
        let body = body.as_slice();
        let mut request = request(route, &self.sessions, body);
        if route.path.starts_with("/v1/") {
            let n = self.nonce.fetch_add(1, Ordering::Relaxed);
            let mut nonce = [0; 16];
            nonce[..8].copy_from_slice(&n.to_le_bytes());
            let target = Target { method: route.method.as_str(), path: &route.path, query: None };
            let h = signature::sign(&self.key, device, target, body, frame::now_unix_ms() / 1000, nonce);
            let headers = request.headers_mut();
            headers.insert(signature::CONTENT_DIGEST, h.content_digest.parse().expect("a header value"));
            headers.insert(signature::SIGNATURE_INPUT, h.signature_input.parse().expect("a header value"));
            headers.insert(signature::SIGNATURE, h.signature.parse().expect("a header value"));
        }
        answer(&self.runtime, self.router.clone(), request)
    }

    /// `mqtt`: the topic up to the first newline, then the payload. The device reads it as
    /// a command (`sync::mqtt`); the hub reads it as a device's event and acts on it as its
    /// control plane does (`hub::control`).
    pub fn mqtt(&self, data: &[u8]) {
        let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
        let topic = String::from_utf8_lossy(&data[..split]).into_owned();
        let payload = data.get(split + 1..).unwrap_or_default();
        // Topics name this device, so a fuzzed payload reaches the handlers behind the
        // topic check; `{device}` stands for its id.
        let topic = topic.replace("{device}", &self.device.to_string());
        let _ = sync::mqtt::read_command(self.device, &topic, payload);
        if let Some(event) = hub::FleetEvent::read(&topic, payload) {
            hub::control::heard(&self.hub, event);
        }
    }
}

impl Default for HubApi {
    fn default() -> Self {
        HubApi::new()
    }
}
