//! The hub's routes driven through `hub_router` with `oneshot`, over the real hub logic
//! and its SQLite store, with requests signed by real Ed25519 device keys: enrolment and
//! approval, a resumed upload, idempotent commits, every refusal by its code, no dedupe
//! oracle, erasure and commands; and the API for people: accounts, roles and sessions as
//! on a box, the fleet view, decisions and erasure.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use hub::{Hub, HubIdentity, HubStore};
use ring::signature::{Ed25519KeyPair, KeyPair};
use store::HubDb;
use tower::ServiceExt;
use wire::DeviceId;
use wire::signature::{self, Target};
use wire::v1::{self, DeviceState};

use super::{HubState, hub_router};

struct Device {
    id: DeviceId,
    key: Ed25519KeyPair,
    nonce: std::cell::Cell<u8>,
}

impl Device {
    fn new(n: u8) -> Device {
        Device {
            id: DeviceId::new(1_700_000_000_000, [n; 16]),
            key: Ed25519KeyPair::from_seed_unchecked(&[n; 32]).unwrap(),
            nonce: std::cell::Cell::new(0),
        }
    }

    /// A request signed now with a fresh nonce.
    fn request(&self, method: &str, path: &str, body: &[u8]) -> axum::http::request::Builder {
        self.request_at(method, path, body, frame::now_unix_ms() / 1000, &self.key)
    }

    /// A request claiming to be this device, signed at `created` with `key`.
    fn request_at(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        created: i64,
        key: &Ed25519KeyPair,
    ) -> axum::http::request::Builder {
        self.nonce.set(self.nonce.get() + 1);
        let mut nonce = [self.id.to_string().as_bytes()[25]; 16];
        nonce[0] = self.nonce.get();
        let (path_only, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let h = signature::sign(key, self.id, Target { method, path: path_only, query }, body, created, nonce);
        Request::builder()
            .method(method)
            .uri(path)
            .header(signature::CONTENT_DIGEST, h.content_digest)
            .header(signature::SIGNATURE_INPUT, h.signature_input)
            .header(signature::SIGNATURE, h.signature)
    }

    fn enrol_body(&self, token: Option<&str>) -> Vec<u8> {
        serde_json::to_vec(&v1::Enrol {
            version: 1,
            device: self.id,
            public_key: wire::base64(self.key.public_key().as_ref()),
            hostname: format!("box-{}", self.id),
            token: token.map(str::to_owned),
        })
        .unwrap()
    }
}

struct Hubs {
    _dir: tempfile::TempDir,
    db: Arc<HubDb>,
    hub: Hub,
    state: HubState,
}

fn hubs() -> Hubs {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(HubDb::open(dir.path()).unwrap());
    let (identity, _) = HubIdentity::load_or_create(dir.path()).unwrap();
    let hub = Hub::new(db.clone(), Arc::new(identity));
    let auth = crate::AuthConfig {
        origins: ["https://hub.example.org:8443".to_owned()].into_iter().collect(),
        ..Default::default()
    };
    Hubs { _dir: dir, db: db.clone(), state: HubState::new(hub.clone(), db, auth), hub }
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }
    fn header(&self, name: &str) -> Option<u64> {
        self.headers.get(name).map(|v| v.to_str().unwrap().parse().unwrap())
    }
}

async fn send(h: &Hubs, request: Request<Body>) -> Answer {
    let response = hub_router(h.state.clone()).oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Answer { status: parts.status, headers: parts.headers, body: body.collect().await.unwrap().to_bytes().to_vec() }
}

async fn call(h: &Hubs, d: &Device, method: &str, path: &str, body: &[u8]) -> Answer {
    send(h, d.request(method, path, body).body(Body::from(body.to_vec())).unwrap()).await
}

async fn patch(h: &Hubs, d: &Device, sha: &str, offset: usize, length: usize, bytes: &[u8]) -> Answer {
    let request = d
        .request("PATCH", &format!("/v1/blobs/{sha}"), bytes)
        .header(v1::UPLOAD_OFFSET, offset)
        .header(v1::UPLOAD_LENGTH, length)
        .body(Body::from(bytes.to_vec()))
        .unwrap();
    send(h, request).await
}

fn manifest(d: &Device, batch: &str, frames: &[(i64, &str)]) -> Vec<u8> {
    serde_json::to_vec(&v1::Manifest {
        version: 1,
        batch: batch.into(),
        device: d.id,
        created_ms: 1,
        audit_head: v1::AuditHead { seq: 12, hash: "cd".repeat(32) },
        frames: frames
            .iter()
            .map(|(local, sha)| v1::Frame {
                local: *local,
                camera: "gate".into(),
                captured_ms: 1,
                sha256: (*sha).into(),
                bytes: 3,
                width: 2,
                height: 2,
                consents: vec!["c1".into()],
                annotation: None,
                predictions: vec![],
            })
            .collect(),
        consents: vec![],
    })
    .unwrap()
}

async fn enrolled(h: &Hubs, d: &Device) {
    let answer = call(h, d, "POST", "/v1/enrol", &d.enrol_body(None)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
    h.hub.decide(d.id, DeviceState::Approved, "test", 0).unwrap();
}

#[tokio::test]
async fn a_device_enrols_uploads_with_a_cut_commits_once_and_erases() {
    let h = hubs();
    let a = Device::new(1);

    // Enrolment: pending, with the hub's key to pin.
    let answer = call(&h, &a, "POST", "/v1/enrol", &a.enrol_body(None)).await;
    assert_eq!(answer.status, StatusCode::OK);
    let status: v1::DeviceStatus = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(status.state, DeviceState::Pending);
    assert_eq!(status.hub_key, wire::base64(h.hub.identity().public_key()));
    assert_eq!(status.hub_id, h.hub.identity().hub_id());
    assert_eq!(call(&h, &a, "GET", "/v1/device", b"").await.json()["state"], "pending");
    let refused = call(&h, &a, "POST", "/v1/batches/b0", &manifest(&a, "b0", &[])).await;
    assert_eq!((refused.status, refused.code()), (StatusCode::FORBIDDEN, "pending".into()));

    h.hub.decide(a.id, DeviceState::Approved, "test", 0).unwrap();
    assert_eq!(call(&h, &a, "GET", "/v1/device", b"").await.json()["state"], "approved");
    // Enrolling again with the same key changes nothing.
    assert_eq!(call(&h, &a, "POST", "/v1/enrol", &a.enrol_body(None)).await.json()["state"], "approved");

    // An upload cut at half: the hub keeps the half, says so, and takes the rest.
    let jpeg: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
    let sha = hub::sha256_hex(&jpeg);
    let blob = format!("/v1/blobs/{sha}");
    assert_eq!(call(&h, &a, "HEAD", &blob, b"").await.status, StatusCode::NOT_FOUND);
    let half = jpeg.len() / 2;
    let answer = patch(&h, &a, &sha, 0, jpeg.len(), &jpeg[..half]).await;
    assert_eq!((answer.status, answer.header(v1::UPLOAD_OFFSET)), (StatusCode::NO_CONTENT, Some(half as u64)));
    let answer = call(&h, &a, "HEAD", &blob, b"").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        (answer.header(v1::UPLOAD_OFFSET), answer.header(v1::UPLOAD_LENGTH)),
        (Some(half as u64), Some(jpeg.len() as u64))
    );
    // Not from zero again: 409 with where the hub stands.
    let answer = patch(&h, &a, &sha, 0, jpeg.len(), &jpeg).await;
    assert_eq!((answer.status, answer.code()), (StatusCode::CONFLICT, "offset_mismatch".into()));
    assert_eq!(answer.header(v1::UPLOAD_OFFSET), Some(half as u64));
    // A commit before the blob is whole names what is missing.
    let answer = call(&h, &a, "POST", "/v1/batches/b1", &manifest(&a, "b1", &[(1, &sha)])).await;
    assert_eq!((answer.status, answer.code()), (StatusCode::CONFLICT, "missing_blobs".into()));
    assert_eq!(answer.json()["missing"], serde_json::json!([sha]));
    let answer = patch(&h, &a, &sha, half, jpeg.len(), &jpeg[half..]).await;
    assert_eq!((answer.status, answer.header(v1::UPLOAD_OFFSET)), (StatusCode::NO_CONTENT, Some(jpeg.len() as u64)));
    let answer = call(&h, &a, "HEAD", &blob, b"").await;
    assert_eq!(answer.header(v1::UPLOAD_OFFSET), answer.header(v1::UPLOAD_LENGTH), "complete");

    // Commit: a signed receipt, the same bytes the second time.
    let body = manifest(&a, "b1", &[(1, &sha)]);
    let first = call(&h, &a, "POST", "/v1/batches/b1", &body).await;
    assert_eq!(first.status, StatusCode::OK, "{}", String::from_utf8_lossy(&first.body));
    let receipt: wire::Receipt = serde_json::from_slice(&first.body).unwrap();
    let payload = receipt.verify(h.hub.identity().public_key()).unwrap();
    assert_eq!(
        (payload.kind, payload.frames.clone(), payload.audit_head.clone().unwrap().seq),
        (wire::ReceiptKind::Batch, vec![1], 12)
    );
    let again = call(&h, &a, "POST", "/v1/batches/b1", &body).await;
    assert_eq!(again.body, first.body, "the same receipt bytes");
    // A batch naming a blob never sent.
    let never = hub::sha256_hex(b"never sent");
    let answer = call(&h, &a, "POST", "/v1/batches/b2", &manifest(&a, "b2", &[(1, &sha), (2, &never)])).await;
    assert_eq!((answer.status, answer.code()), (StatusCode::CONFLICT, "missing_blobs".into()));
    assert_eq!(answer.json()["missing"], serde_json::json!([never]));

    // Another device with the same content: no oracle, but stored once.
    let b = Device::new(2);
    enrolled(&h, &b).await;
    assert_eq!(call(&h, &b, "HEAD", &blob, b"").await.status, StatusCode::NOT_FOUND);
    assert_eq!(patch(&h, &b, &sha, 0, jpeg.len(), &jpeg).await.status, StatusCode::NO_CONTENT);
    assert_eq!(h.db.blob_files().unwrap(), 1);

    // Consents travel as updates, with a receipt.
    let update = serde_json::to_vec(&v1::ConsentUpdate {
        consents: vec![v1::Consent {
            id: "c1".into(),
            scope: v1::Scope { kind: "camera".into(), value: "gate".into() },
            purposes: vec![v1::Purpose::Sync],
            valid_from_ms: 0,
            valid_until_ms: None,
            withdrawn_at_ms: Some(5),
            basis: "signage".into(),
            evidence_sha256: None,
        }],
    })
    .unwrap();
    let answer = call(&h, &a, "POST", "/v1/consents", &update).await;
    let receipt: wire::Receipt = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(receipt.verify(h.hub.identity().public_key()).unwrap().consents, vec!["c1"]);

    // Erasure: a receipt; the frame is gone, the blob stays for B's upload.
    let erasure =
        serde_json::to_vec(&v1::Erasure { frames: vec![1], reason: "consent withdrawn".into(), blobs: vec![] })
            .unwrap();
    let answer = call(&h, &a, "POST", "/v1/erasures/e1", &erasure).await;
    assert_eq!(answer.status, StatusCode::OK);
    let receipt: wire::Receipt = serde_json::from_slice(&answer.body).unwrap();
    let payload = receipt.verify(h.hub.identity().public_key()).unwrap();
    assert_eq!(
        (payload.kind, payload.id.as_str(), payload.frames.as_slice()),
        (wire::ReceiptKind::Erasure, "e1", &[1][..])
    );
    assert_eq!(h.db.frames(a.id).unwrap(), Vec::<i64>::new());
    assert_eq!(h.db.frame_count(a.id).unwrap(), 0);
    assert_eq!(call(&h, &a, "HEAD", &blob, b"").await.status, StatusCode::NOT_FOUND);
    assert_eq!(call(&h, &b, "HEAD", &blob, b"").await.status, StatusCode::OK);
}

/// What a hub killed between keeping an upload's last piece and finishing it (or whose
/// disk filled as it wrote the whole) leaves: every byte held, the blob not complete. The
/// device, told "all held", must not be refused `missing_blobs` for ever.
#[tokio::test]
async fn an_upload_left_whole_but_unfinished_is_finished_when_the_device_asks() {
    let h = hubs();
    let a = Device::new(1);
    enrolled(&h, &a).await;
    let left_whole = |n: u32| {
        let jpeg: Vec<u8> = (0..3000u32).map(|i| (i * n % 251) as u8).collect();
        let sha = hub::sha256_hex(&jpeg);
        // The first step only, as the killed hub did it.
        h.db.append_upload(a.id, &sha, jpeg.len() as u64, 0, &jpeg, 1).unwrap();
        (jpeg, sha)
    };
    let whole = |answer: &Answer, jpeg: &[u8]| {
        let length = Some(jpeg.len() as u64);
        (answer.header(v1::UPLOAD_OFFSET), answer.header(v1::UPLOAD_LENGTH)) == (length, length)
    };

    // The device asks first (HEAD): the hub finishes it, and the commit goes through.
    let (jpeg, sha) = left_whole(7);
    let answer = call(&h, &a, "POST", "/v1/batches/b1", &manifest(&a, "b1", &[(1, &sha)])).await;
    assert_eq!(answer.code(), "missing_blobs");
    let answer = call(&h, &a, "HEAD", &format!("/v1/blobs/{sha}"), b"").await;
    assert!(answer.status == StatusCode::OK && whole(&answer, &jpeg));
    let answer = call(&h, &a, "POST", "/v1/batches/b1", &manifest(&a, "b1", &[(1, &sha)])).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));

    // It sends from 0 without asking: told the hub holds it all, which is now true.
    let (jpeg, sha) = left_whole(11);
    let answer = patch(&h, &a, &sha, 0, jpeg.len(), &jpeg).await;
    assert!(answer.status == StatusCode::CONFLICT && answer.header(v1::UPLOAD_OFFSET) == Some(jpeg.len() as u64));
    let answer = call(&h, &a, "POST", "/v1/batches/b2", &manifest(&a, "b2", &[(2, &sha)])).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));

    // Bytes that do not hash to the name: discarded, so the device sends it again whole.
    let jpeg: Vec<u8> = (0..3000u32).map(|i| (i * 13 % 251) as u8).collect();
    let sha = hub::sha256_hex(&jpeg);
    h.db.append_upload(a.id, &sha, jpeg.len() as u64, 0, &vec![0; jpeg.len()], 1).unwrap();
    assert_eq!(call(&h, &a, "HEAD", &format!("/v1/blobs/{sha}"), b"").await.status, StatusCode::NOT_FOUND);
    assert_eq!(patch(&h, &a, &sha, 0, jpeg.len(), &jpeg).await.status, StatusCode::NO_CONTENT);
    let answer = call(&h, &a, "POST", "/v1/batches/b3", &manifest(&a, "b3", &[(3, &sha)])).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(h.db.frames(a.id).unwrap(), vec![1, 2, 3]);
    assert_eq!(h.db.frame_count(a.id).unwrap(), 3);
}

#[tokio::test]
async fn forged_replayed_stale_and_other_device_requests_are_refused_and_audited() {
    let h = hubs();
    let (a, b) = (Device::new(1), Device::new(2));
    enrolled(&h, &a).await;
    enrolled(&h, &b).await;
    let path = "/v1/commands";

    // Forged: A's signature of another request, put on this one.
    let mut request = a.request("GET", path, b"").body(Body::empty()).unwrap();
    let other = a.request("GET", "/v1/device", b"").body(Body::empty()).unwrap();
    request.headers_mut().insert(signature::SIGNATURE, other.headers()[signature::SIGNATURE].clone());
    let answer = send(&h, request).await;
    assert_eq!((answer.status, answer.code()), (StatusCode::UNAUTHORIZED, "bad_signature".into()));

    // Another device's key under A's id.
    let answer =
        send(&h, a.request_at("GET", path, b"", frame::now_unix_ms() / 1000, &b.key).body(Body::empty()).unwrap())
            .await;
    assert_eq!((answer.status, answer.code()), (StatusCode::UNAUTHORIZED, "bad_signature".into()));

    // Stale: made 400 s ago, and so reported, not as a bad signature.
    let answer = send(
        &h,
        a.request_at("GET", path, b"", frame::now_unix_ms() / 1000 - 400, &a.key).body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!((answer.status, answer.code()), (StatusCode::UNAUTHORIZED, "stale_signature".into()));

    // Replayed: the same signed request twice.
    let once = a.request("GET", path, b"");
    let headers = once.headers_ref().unwrap().clone();
    let first = send(&h, once.body(Body::empty()).unwrap()).await;
    assert_eq!(first.status, StatusCode::OK);
    let mut replay = Request::builder().method("GET").uri(path).body(Body::empty()).unwrap();
    *replay.headers_mut() = headers;
    let answer = send(&h, replay).await;
    assert_eq!((answer.status, answer.code()), (StatusCode::UNAUTHORIZED, "replayed".into()));

    // Another body under the signed digest.
    let body = manifest(&a, "b9", &[]);
    let request = a.request("POST", "/v1/batches/b9", &body).body(Body::from(b"{}".to_vec())).unwrap();
    let answer = send(&h, request).await;
    assert_eq!((answer.status, answer.code()), (StatusCode::UNAUTHORIZED, "bad_digest".into()));

    // A device the hub never enrolled; a request with no signature.
    let c = Device::new(3);
    assert_eq!(call(&h, &c, "GET", path, b"").await.code(), "unknown_device");
    let answer = send(&h, Request::builder().uri(path).body(Body::empty()).unwrap()).await;
    assert_eq!((answer.status, answer.code()), (StatusCode::UNAUTHORIZED, "bad_signature".into()));

    // A revoked device is told so, and may still ask where it stands.
    h.hub.decide(b.id, DeviceState::Revoked, "test", 0).unwrap();
    let answer = call(&h, &b, "GET", path, b"").await;
    assert_eq!((answer.status, answer.code()), (StatusCode::UNAUTHORIZED, "revoked".into()));
    assert_eq!(call(&h, &b, "GET", "/v1/device", b"").await.json()["state"], "revoked");

    // Another key for A's id at enrolment: a conflict, not a takeover.
    let impostor = Device { id: a.id, key: Ed25519KeyPair::from_seed_unchecked(&[9; 32]).unwrap(), nonce: 200.into() };
    let answer = call(&h, &impostor, "POST", "/v1/enrol", &impostor.enrol_body(None)).await;
    assert_eq!((answer.status, answer.code()), (StatusCode::CONFLICT, "key_mismatch".into()));

    let codes: Vec<String> =
        h.db.audit_actions("hub.refused")
            .unwrap()
            .iter()
            .map(|e| e.detail["code"].as_str().unwrap().to_owned())
            .collect();
    for code in
        ["bad_signature", "stale_signature", "replayed", "bad_digest", "unknown_device", "revoked", "key_mismatch"]
    {
        assert!(codes.iter().any(|c| c == code), "{code} not audited: {codes:?}");
    }
    assert_eq!(h.db.verify_audit().unwrap().map(|n| n as usize >= codes.len()), Ok(true));

    // Counted in the metrics, for the hub's own machine (or a session) only.
    let mut request = Request::builder().uri("/metrics").body(Body::empty()).unwrap();
    request.extensions_mut().insert(axum::extract::ConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 9))));
    let metrics = String::from_utf8(send(&h, request).await.body).unwrap();
    assert!(metrics.contains("obscura_hub_refusals_total{code=\"replayed\"} 1"), "{metrics}");
    let answer = send(&h, Request::builder().uri("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(send(&h, Request::builder().uri("/healthz").body(Body::empty()).unwrap()).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_token_pre_approves_and_commands_are_polled_and_acknowledged() {
    let h = hubs();
    let a = Device::new(1);
    let token = h.hub.new_token("test", 0).unwrap();
    let answer = call(&h, &a, "POST", "/v1/enrol", &a.enrol_body(Some(&token))).await;
    assert_eq!(answer.json()["state"], "approved");
    let b = Device::new(2);
    assert_eq!(
        call(&h, &b, "POST", "/v1/enrol", &b.enrol_body(Some(&token))).await.json()["state"],
        "pending",
        "one-time"
    );

    h.db.add_command(
        a.id,
        &v1::Command { id: "k1".into(), kind: v1::CommandKind::Erase, frames: vec![4, 5], window: None, created_ms: 1 },
        "test",
    )
    .unwrap();
    let commands: v1::Commands = serde_json::from_slice(&call(&h, &a, "GET", "/v1/commands", b"").await.body).unwrap();
    assert_eq!(commands.commands.len(), 1);
    assert_eq!((commands.commands[0].kind, commands.commands[0].frames.clone()), (v1::CommandKind::Erase, vec![4, 5]));
    let ack =
        serde_json::to_vec(&v1::CommandAck { result: v1::AckResult::Done, message: None, receipt: None }).unwrap();
    assert_eq!(call(&h, &a, "POST", "/v1/commands/k1/ack", &ack).await.status, StatusCode::NO_CONTENT);
    assert_eq!(call(&h, &a, "POST", "/v1/commands/nope/ack", &ack).await.status, StatusCode::NOT_FOUND);
    let commands: v1::Commands = serde_json::from_slice(&call(&h, &a, "GET", "/v1/commands", b"").await.body).unwrap();
    assert!(commands.commands.is_empty());

    // Over the cap: 413 before a byte is kept.
    let answer = patch(&h, &a, &"ab".repeat(32), 0, (v1::MAX_BLOB_BYTES + 1) as usize, b"x").await;
    assert_eq!((answer.status, answer.code()), (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large".into()));
    // A blob whose bytes do not hash to its name is refused and not kept.
    let named = hub::sha256_hex(b"promised");
    let answer = patch(&h, &a, &named, 0, 8, b"delivered"[..8].as_ref()).await;
    assert_eq!((answer.status, answer.code()), (StatusCode::UNPROCESSABLE_ENTITY, "digest_mismatch".into()));
    assert_eq!(call(&h, &a, "HEAD", &format!("/v1/blobs/{named}"), b"").await.status, StatusCode::NOT_FOUND);
}

/// A person's request: with the session's cookie and CSRF token when logged in.
async fn person(
    h: &Hubs,
    method: &str,
    path: &str,
    login: Option<&(String, String)>,
    body: serde_json::Value,
) -> Answer {
    let mut request = Request::builder().method(method).uri(path).header("content-type", "application/json");
    if let Some((cookie, csrf)) = login {
        request = request.header("cookie", format!("__Host-obscura-session={cookie}")).header("x-csrf-token", csrf);
    }
    let body = if body.is_null() { Body::empty() } else { Body::from(body.to_string()) };
    send(h, request.body(body).unwrap()).await
}

async fn log_in(h: &Hubs, name: &str, password: &str) -> (String, String) {
    let answer =
        person(h, "POST", "/api/v1/auth/login", None, serde_json::json!({ "name": name, "password": password })).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
    let cookie = answer.headers.get("set-cookie").unwrap().to_str().unwrap();
    let id = cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_owned();
    (id, answer.json()["csrf"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn people_log_in_with_the_boxes_roles_see_the_fleet_decide_and_erase() {
    use store::{Accounts, Role};
    let h = hubs();
    let (a, b) = (Device::new(1), Device::new(2));

    // No default password: nothing but login and setup without a session, and setup
    // only with the code the hub printed.
    assert_eq!(
        person(&h, "GET", "/api/v1/devices", None, serde_json::Value::Null).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(person(&h, "GET", "/api/v1/setup", None, serde_json::Value::Null).await.json()["pending"], false);
    let code = crate::new_setup_code(&*h.db).unwrap();
    let wrong =
        serde_json::json!({ "code": "0000-0000-0000-0000", "name": "ada", "password": "a long hub passphrase" });
    assert_eq!(person(&h, "POST", "/api/v1/setup", None, wrong).await.status, StatusCode::FORBIDDEN);
    let setup = serde_json::json!({ "code": code, "name": "ada", "password": "a long hub passphrase" });
    assert_eq!(person(&h, "POST", "/api/v1/setup", None, setup.clone()).await.status, StatusCode::CREATED);
    assert_eq!(person(&h, "POST", "/api/v1/setup", None, setup).await.status, StatusCode::FORBIDDEN, "once");
    let bad = serde_json::json!({ "name": "ada", "password": "not the passphrase" });
    assert_eq!(person(&h, "POST", "/api/v1/auth/login", None, bad).await.status, StatusCode::UNAUTHORIZED);
    let admin = log_in(&h, "ada", "a long hub passphrase").await;
    assert_eq!(
        person(&h, "GET", "/api/v1/auth/me", Some(&admin), serde_json::Value::Null).await.json()["user"]["role"],
        "admin"
    );

    // Accounts, as on a box.
    for (name, role) in [("sam", "steward"), ("ann", "annotator")] {
        let user = serde_json::json!({ "name": name, "role": role, "password": format!("{name}'s long passphrase") });
        let answer = person(&h, "POST", "/api/v1/users", Some(&admin), user).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&answer.body));
    }
    assert_eq!(
        h.db.users().unwrap().iter().map(|u| u.role).collect::<Vec<_>>(),
        [Role::Admin, Role::Steward, Role::Annotator]
    );
    let steward = log_in(&h, "sam", "sam's long passphrase").await;
    let annotator = log_in(&h, "ann", "ann's long passphrase").await;

    // The fleet view: a pending device, with its key as the box shows it.
    let answer = call(&h, &a, "POST", "/v1/enrol", &a.enrol_body(None)).await;
    assert_eq!(answer.status, StatusCode::OK);
    let fleet = person(&h, "GET", "/api/v1/devices", Some(&annotator), serde_json::Value::Null).await.json();
    assert_eq!(fleet[0]["id"], a.id.to_string());
    assert_eq!(fleet[0]["state"], "pending");
    assert!(fleet[0]["key"].as_str().unwrap().starts_with("SHA256:"), "{fleet}");

    // Decisions are the admin's, audited under their name; others are refused.
    let approve = format!("/api/v1/devices/{}/approve", a.id);
    let refused = person(&h, "POST", &approve, Some(&annotator), serde_json::Value::Null).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(
        person(&h, "POST", &approve, Some(&steward), serde_json::Value::Null).await.status,
        StatusCode::FORBIDDEN
    );
    let answer = person(&h, "POST", &approve, Some(&admin), serde_json::Value::Null).await;
    assert_eq!((answer.status, answer.json()["state"].clone()), (StatusCode::OK, "approved".into()));
    let decided = h.db.audit_actions("hub.device_approved").unwrap();
    assert_eq!(decided.last().unwrap().actor, "ada");
    // A state-changing request from another site's page is refused, session or not.
    let foreign = Request::builder()
        .method("POST")
        .uri(format!("/api/v1/devices/{}/revoke", a.id))
        .header("cookie", format!("__Host-obscura-session={}", admin.0))
        .header("origin", "https://evil.example.com")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&h, foreign).await.status, StatusCode::FORBIDDEN);
    let unknown =
        person(&h, "POST", &format!("/api/v1/devices/{}/approve", b.id), Some(&admin), serde_json::Value::Null).await;
    assert_eq!((unknown.status, unknown.code()), (StatusCode::NOT_FOUND, "not_found".into()));
    let command = serde_json::json!({ "kind": "sync_now" });
    let commands = format!("/api/v1/devices/{}/commands", a.id);
    let answer = person(&h, "POST", &commands, Some(&admin), command).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&answer.body));
    let erase_by_command = person(&h, "POST", &commands, Some(&admin), serde_json::json!({ "kind": "erase" })).await;
    assert_eq!(erase_by_command.status, StatusCode::UNPROCESSABLE_ENTITY, "erasure has its own route");
    let token = person(&h, "POST", "/api/v1/tokens", Some(&admin), serde_json::Value::Null).await;
    assert_eq!(token.status, StatusCode::CREATED);
    let answer = call(&h, &b, "POST", "/v1/enrol", &b.enrol_body(token.json()["token"].as_str())).await;
    assert_eq!(answer.json()["state"], "approved", "the API's token pre-approves");

    // Erasure is the steward's: the hub's copy goes at once, the device is told.
    let jpeg = b"jpeg of frame 7".to_vec();
    let sha = hub::sha256_hex(&jpeg);
    assert_eq!(patch(&h, &a, &sha, 0, jpeg.len(), &jpeg).await.status, StatusCode::NO_CONTENT);
    let committed = call(&h, &a, "POST", "/v1/batches/b1", &manifest(&a, "b1", &[(7, &sha)])).await;
    assert_eq!(committed.status, StatusCode::OK, "{}", String::from_utf8_lossy(&committed.body));
    let fleet = person(&h, "GET", &format!("/api/v1/devices/{}", a.id), Some(&admin), serde_json::Value::Null).await;
    assert_eq!(fleet.json()["frames"], 1);
    let erasure = serde_json::json!({ "device": a.id.to_string(), "frames": [7] });
    let refused = person(&h, "POST", "/api/v1/erasures", Some(&admin), erasure.clone()).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "an admin is not a steward");
    let done = person(&h, "POST", "/api/v1/erasures", Some(&steward), erasure).await;
    assert_eq!(done.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&done.body));
    let done = done.json();
    assert_eq!(done["erased"], 1);
    let payload: serde_json::Value = serde_json::from_str(done["receipt"]["payload"].as_str().unwrap()).unwrap();
    assert_eq!((payload["kind"].clone(), payload["frames"].clone()), ("erasure".into(), serde_json::json!([7])));
    assert!(h.db.frames(a.id).unwrap().is_empty());
    assert_eq!(h.db.frame_count(a.id).unwrap(), 0);
    let fleet = person(&h, "GET", &format!("/api/v1/devices/{}", a.id), Some(&admin), serde_json::Value::Null).await;
    assert_eq!(fleet.json()["frames"], 0);
    assert_eq!(h.db.audit_actions("hub.erased").unwrap().last().unwrap().actor, "sam");
    // The device's answer, through the people's API.
    let id = done["command"]["id"].as_str().unwrap().to_owned();
    let state = format!("/api/v1/devices/{}/commands/{id}", a.id);
    let waiting = person(&h, "GET", &state, Some(&steward), serde_json::Value::Null).await;
    assert_eq!((waiting.status, waiting.code()), (StatusCode::NOT_FOUND, "not_answered".into()));
    let ack =
        serde_json::to_vec(&v1::CommandAck { result: v1::AckResult::Done, message: None, receipt: None }).unwrap();
    let answered = call(&h, &a, "POST", &format!("/v1/commands/{id}/ack"), &ack).await;
    assert_eq!(answered.status, StatusCode::NO_CONTENT);
    let state = person(&h, "GET", &state, Some(&steward), serde_json::Value::Null).await;
    assert_eq!(state.json()["ack"]["result"], "done", "{}", String::from_utf8_lossy(&state.body));
    let nothing =
        person(&h, "POST", "/api/v1/erasures", Some(&steward), serde_json::json!({ "device": a.id.to_string() })).await;
    assert_eq!(nothing.status, StatusCode::UNPROCESSABLE_ENTITY);

    // Logging out ends the session on the hub.
    assert_eq!(
        person(&h, "POST", "/api/v1/auth/logout", Some(&admin), serde_json::Value::Null).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        person(&h, "GET", "/api/v1/devices", Some(&admin), serde_json::Value::Null).await.status,
        StatusCode::UNAUTHORIZED
    );
}
