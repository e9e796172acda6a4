//! The hub's HTTPS side (`obscura hub`): the v1 data plane devices sync over
//! (`/v1/…`, every request signed with the device key, RFC 9421), the API for people
//! (`/api/v1/…`, [`fleet`]: accounts and sessions as on a box), `/healthz` and
//! `/metrics`, built by one function, [`hub_router`], so tests drive it with `oneshot`
//! and `obscura hub` serves the same thing over [`crate::tls::serve`] with the hub's own
//! certificate.
//!
//! The handlers only translate: headers and bodies in, `hub::Hub`'s decisions out, on
//! the blocking pool (the hub's store is SQLite). A blob upload is streamed: its bytes
//! are kept in pieces of [`PIECE`] as they arrive, so a connection cut at 90 % leaves
//! the hub's offset at what it received, and the device resumes from there.

pub mod fleet;
mod metrics;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRef, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, head, patch, post};
use futures_util::StreamExt;
use hub::{DeviceRecord, Hub, HubError, Kind};
use tower_http::set_header::SetResponseHeaderLayer;
use wire::signature;
use wire::v1::{MAX_BLOB_BYTES, UPLOAD_LENGTH, UPLOAD_OFFSET};

use crate::auth::{self, Access, AuthConfig, Gate};
use crate::limits::Refusals;

pub use metrics::HubMetrics;

/// The largest JSON body (a manifest of a big batch with its annotations).
const MAX_JSON: usize = 8 << 20;
/// Bytes of an upload kept at a time while it streams in.
pub const PIECE: usize = 1 << 20;

/// What every hub handler sees.
#[derive(Debug, Clone)]
pub struct HubState {
    /// Shared with the hub's control plane (`hub::control`), which runs beside the routes.
    pub hub: Arc<Hub>,
    pub metrics: Arc<HubMetrics>,
    /// The hub's people: their accounts (in the hub's store), sessions and limits.
    pub gate: Gate,
}

impl HubState {
    pub fn new(hub: impl Into<Arc<Hub>>, accounts: Arc<dyn store::Accounts>, config: AuthConfig) -> HubState {
        let gate = Gate { accounts, config: Arc::new(config), refusals: Arc::new(Refusals::default()) };
        let hub: Arc<Hub> = hub.into();
        let metrics = Arc::new(HubMetrics::new(hub.mqtt_refusals().clone()));
        HubState { hub, metrics, gate }
    }
}

impl FromRef<HubState> for Gate {
    fn from_ref(state: &HubState) -> Gate {
        state.gate.clone()
    }
}

fn guarded(state: &HubState, access: Access, routes: Router<HubState>) -> Router<HubState> {
    routes.route_layer(axum::middleware::from_fn_with_state((state.gate.clone(), access), auth::require))
}

/// The API for people, each group behind its access rule: the box's roles, sessions and
/// guard ([`auth::require`]).
fn people(state: &HubState) -> Router<HubState> {
    use crate::{ADMIN, OVERSEE, STEWARD};
    let guard = |access: Access, routes: Router<HubState>| guarded(state, access, routes);
    Router::new()
        .merge(guard(
            Access::Public,
            Router::new()
                .route("/auth/login", post(auth::login))
                .route("/setup", get(auth::setup_state).post(auth::setup))
                .layer(axum::extract::DefaultBodyLimit::max(crate::AUTH_BODY)),
        ))
        .merge(guard(
            Access::Session,
            Router::new()
                .route("/auth/me", get(auth::me))
                .route("/auth/logout", post(auth::logout))
                .route("/auth/password", post(auth::change_password))
                .route("/devices", get(fleet::devices))
                .route("/devices/{id}", get(fleet::device)),
        ))
        .merge(guard(
            Access::Roles(ADMIN),
            Router::new()
                .route("/devices/{id}/approve", post(fleet::approve))
                .route("/devices/{id}/revoke", post(fleet::revoke))
                .route("/devices/{id}/commands", post(fleet::command))
                .route("/tokens", post(fleet::token))
                .route("/users", get(crate::api::users::list).post(crate::api::users::add))
                .route("/users/{id}", patch(crate::api::users::update))
                .route("/users/{id}/password", post(crate::api::users::reset_password)),
        ))
        .merge(guard(
            Access::Roles(OVERSEE),
            Router::new().route("/devices/{id}/commands/{command}", get(fleet::command_state)),
        ))
        .merge(guard(Access::Roles(STEWARD), Router::new().route("/erasures", post(fleet::erase))))
}

/// The hub's whole HTTP API.
pub fn hub_router(state: HubState) -> Router {
    let header = |name: &'static str, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(header::HeaderName::from_static(name), HeaderValue::from_static(value))
    };
    // Bodies: a Content-Length over the limit is a 413 before any byte is read, and a
    // body without one is cut off at the limit (tower-http); the device's JSON may be a
    // big batch's manifest, people's requests are the box's size. Blob uploads stream in
    // pieces up to `Upload-Length`, checked against `MAX_BLOB_BYTES` by the handler.
    let json = |limit: usize| tower_http::limit::RequestBodyLimitLayer::new(limit);
    let device_json = Router::new()
        .route("/v1/enrol", post(enrol))
        .route("/v1/device", get(device))
        .route("/v1/batches/{batch}", post(commit))
        .route("/v1/consents", post(consents))
        .route("/v1/erasures/{request}", post(erase))
        .route("/v1/commands", get(commands))
        .route("/v1/commands/{id}/ack", post(ack))
        .layer(json(MAX_JSON));
    Router::new()
        .merge(device_json)
        .route("/v1/blobs/{sha256}", head(head_blob).patch(patch_blob))
        .nest("/api/v1", people(&state).layer(json(crate::MAX_BODY)))
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(guarded(&state, Access::SessionOrLoopback, Router::new().route("/metrics", get(metrics::metrics))))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(axum::middleware::from_fn(crate::error::shape_errors))
        .layer(header("x-content-type-options", "nosniff"))
        .layer(header("cache-control", "no-store"))
        .with_state(state)
}

/// A refusal as the wire shapes it: `{code, message, missing?}`, with the hub's
/// `Upload-Offset` on an offset mismatch.
#[derive(Debug)]
pub struct Refused(pub HubError);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let status = match self.0.kind {
            Kind::BadRequest => StatusCode::BAD_REQUEST,
            Kind::Unauthenticated => StatusCode::UNAUTHORIZED,
            Kind::Forbidden => StatusCode::FORBIDDEN,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::Conflict => StatusCode::CONFLICT,
            Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            Kind::Full => StatusCode::INSUFFICIENT_STORAGE,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut response = (status, axum::Json(self.0.refusal())).into_response();
        if let Some(offset) = self.0.upload_offset {
            response.headers_mut().insert(UPLOAD_OFFSET, HeaderValue::from(offset));
        }
        response
    }
}

fn now_ms() -> i64 {
    frame::now_unix_ms()
}

/// What the signature covers, read from the request.
fn view<'a>(method: &'a Method, uri: &'a Uri, headers: &'a HeaderMap) -> signature::Request<'a> {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    signature::Request {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query(),
        content_digest: h(signature::CONTENT_DIGEST),
        signature_input: h(signature::SIGNATURE_INPUT),
        signature: h(signature::SIGNATURE),
    }
}

/// Runs hub work on the blocking pool, counting a refusal by its code.
async fn blocking<T: Send + 'static>(
    state: &HubState,
    work: impl FnOnce(&Hub) -> Result<T, HubError> + Send + 'static,
) -> Result<T, Refused> {
    let hub = state.hub.clone();
    let out = tokio::task::spawn_blocking(move || work(&hub)).await.unwrap_or_else(|e| {
        tracing::error!(target: "web", error = %e, "hub work panicked");
        Err(HubError::new(Kind::Internal, "internal", "the hub could not do this; its log has the cause"))
    });
    out.map_err(|e| {
        state.metrics.refused(e.code);
        Refused(e)
    })
}

/// Which devices may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum May {
    /// Any enrolled device, pending and revoked too (to learn where it stands).
    Enrolled,
    /// Approved devices only.
    Approved,
    /// Approved, or revoked: erasure of what the hub holds is never refused for a
    /// device's state.
    Erase,
}

/// The signed JSON body of `request`, its device authenticated and allowed, handed to
/// `work` with the time.
async fn signed<T: Send + 'static>(
    state: &HubState,
    request: Request,
    may: May,
    work: impl FnOnce(&Hub, &DeviceRecord, &[u8], i64) -> Result<T, HubError> + Send + 'static,
) -> Result<T, Refused> {
    let (parts, body) = request.into_parts();
    let body = read_json(body).await.inspect_err(|e| state.metrics.refused(e.0.code))?;
    blocking(state, move |hub| {
        let now = now_ms();
        let request = view(&parts.method, &parts.uri, &parts.headers);
        let device = hub.authenticate(&request, Some(&body), now)?;
        if may == May::Approved || (may == May::Erase && device.state != wire::v1::DeviceState::Revoked) {
            hub.require_approved(&device, &request, now)?;
        }
        work(hub, &device, &body, now)
    })
    .await
}

async fn read_json(body: Body) -> Result<Bytes, Refused> {
    axum::body::to_bytes(body, MAX_JSON).await.map_err(|_| {
        Refused(HubError::new(
            Kind::TooLarge,
            "payload_too_large",
            format!("the body is over the hub's limit of {MAX_JSON} bytes (or was cut off); send smaller batches"),
        ))
    })
}

fn json_text(text: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

async fn enrol(State(state): State<HubState>, request: Request) -> Result<Response, Refused> {
    let (parts, body) = request.into_parts();
    let body = read_json(body).await?;
    let status =
        blocking(&state, move |hub| hub.enrol(&view(&parts.method, &parts.uri, &parts.headers), &body, now_ms()))
            .await?;
    Ok(axum::Json(status).into_response())
}

async fn device(State(state): State<HubState>, request: Request) -> Result<Response, Refused> {
    let status =
        signed(&state, request, May::Enrolled, |hub, device, _, _| Ok(hub.status(device.id, device.state))).await?;
    Ok(axum::Json(status).into_response())
}

async fn commit(
    State(state): State<HubState>,
    Path(batch): Path<String>,
    request: Request,
) -> Result<Response, Refused> {
    let receipt =
        signed(&state, request, May::Approved, move |hub, device, body, now| hub.commit(device, &batch, body, now))
            .await?;
    state.metrics.committed();
    Ok(json_text(receipt))
}

async fn consents(State(state): State<HubState>, request: Request) -> Result<Response, Refused> {
    Ok(json_text(
        signed(&state, request, May::Approved, |hub, device, body, now| hub.consents(device, body, now)).await?,
    ))
}

async fn erase(State(state): State<HubState>, Path(id): Path<String>, request: Request) -> Result<Response, Refused> {
    let receipt =
        signed(&state, request, May::Erase, move |hub, device, body, now| hub.erase(device, &id, body, now)).await?;
    state.metrics.erased();
    Ok(json_text(receipt))
}

async fn commands(State(state): State<HubState>, request: Request) -> Result<Response, Refused> {
    let commands = signed(&state, request, May::Approved, |hub, device, _, _| hub.commands(device)).await?;
    Ok(axum::Json(commands).into_response())
}

async fn ack(State(state): State<HubState>, Path(id): Path<String>, request: Request) -> Result<Response, Refused> {
    signed(&state, request, May::Approved, move |hub, device, body, now| hub.ack(device, &id, body, now)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn upload_headers(status: StatusCode, offset: u64, length: Option<u64>) -> Response {
    let mut response = status.into_response();
    response.headers_mut().insert(UPLOAD_OFFSET, HeaderValue::from(offset));
    if let Some(length) = length {
        response.headers_mut().insert(UPLOAD_LENGTH, HeaderValue::from(length));
    }
    response
}

/// `HEAD /v1/blobs/{sha256}`: this device's upload only; 404 for what it never sent,
/// whoever else did.
async fn head_blob(
    State(state): State<HubState>,
    Path(sha): Path<String>,
    request: Request,
) -> Result<Response, Refused> {
    let upload =
        signed(&state, request, May::Approved, move |hub, device, _, now| hub.head_blob(device, &sha, now)).await?;
    Ok(match upload {
        Some(u) => upload_headers(StatusCode::OK, u.offset, Some(u.length)),
        None => StatusCode::NOT_FOUND.into_response(),
    })
}

fn header_u64(headers: &HeaderMap, name: &'static str) -> Result<u64, Refused> {
    headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok()).ok_or_else(|| {
        Refused(HubError::new(
            Kind::BadRequest,
            "bad_request",
            format!("a blob PATCH needs `{name}: N` (bytes, a whole number); resume from HEAD's Upload-Offset"),
        ))
    })
}

/// `PATCH /v1/blobs/{sha256}`: bytes from `Upload-Offset`, kept as they arrive. The
/// signature is checked before any byte is kept; the body's digest once it is all in,
/// before its last piece (the one that can complete the blob) is kept.
async fn patch_blob(
    State(state): State<HubState>,
    Path(sha): Path<String>,
    request: Request,
) -> Result<Response, Refused> {
    let (parts, body) = request.into_parts();
    let parts = Arc::new(parts);
    let (offset, length) = match (header_u64(&parts.headers, UPLOAD_OFFSET), header_u64(&parts.headers, UPLOAD_LENGTH))
    {
        (Ok(o), Ok(l)) => (o, l),
        (Err(e), _) | (_, Err(e)) => {
            state.metrics.refused(e.0.code);
            return Err(e);
        }
    };
    let device = {
        let parts = parts.clone();
        blocking(&state, move |hub| {
            let now = now_ms();
            let request = view(&parts.method, &parts.uri, &parts.headers);
            let device = hub.authenticate(&request, None, now)?;
            hub.require_approved(&device, &request, now)?;
            if length > MAX_BLOB_BYTES {
                return Err(HubError::new(
                    Kind::TooLarge,
                    "payload_too_large",
                    format!("a blob of {length} bytes is over the hub's limit of {MAX_BLOB_BYTES} bytes"),
                ));
            }
            Ok(device)
        })
        .await?
    };
    let device = Arc::new(device);
    let keep = |at: u64, piece: Vec<u8>| {
        let (device, sha) = (device.clone(), sha.clone());
        blocking(&state, move |hub| hub.patch_blob(&device, &sha, at, length, &piece, now_ms()))
    };
    let mut stream = body.into_data_stream();
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let (mut at, mut piece) = (offset, Vec::new());
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(error) => {
                // Cut off: keep what arrived, so the device resumes from there.
                tracing::info!(target: "web", %error, device = %device.id, kept = at + piece.len() as u64, "upload cut off");
                if !piece.is_empty() {
                    keep(at, piece).await?;
                }
                return Err(Refused(HubError::new(
                    Kind::BadRequest,
                    "cut_off",
                    "the upload was cut off; resume from HEAD's Upload-Offset",
                )));
            }
        };
        digest.update(&chunk);
        piece.extend_from_slice(&chunk);
        state.metrics.received(chunk.len());
        let end = at + piece.len() as u64;
        if end > length {
            return Err(Refused(HubError::new(
                Kind::BadRequest,
                "bad_request",
                format!(
                    "the body runs past Upload-Length {length}: send the bytes from Upload-Offset to the end, no more"
                ),
            )));
        }
        if piece.len() >= PIECE && end < length {
            keep(at, std::mem::take(&mut piece)).await?;
            at = end;
        }
    }
    let sent = digest.finish();
    {
        let (parts, device, sha) = (parts.clone(), device.clone(), sha.clone());
        let whole_digest = sent.as_ref().to_vec();
        blocking(&state, move |hub| {
            let request = view(&parts.method, &parts.uri, &parts.headers);
            if let Err(e) = hub.check_streamed_digest(&device, &request, &whole_digest, now_ms()) {
                // What this request kept may be anything: start the blob again.
                hub.store().discard_upload(device.id, &sha)?;
                return Err(e);
            }
            Ok(())
        })
        .await?;
    }
    let upload = keep(at, piece).await?;
    Ok(upload_headers(StatusCode::NO_CONTENT, upload.offset, None))
}
