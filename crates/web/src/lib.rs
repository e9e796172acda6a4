//! Obscura's HTTP side: the LAN API the tablet app uses (`/api/v1`), health and
//! readiness, the status document and Prometheus metrics.
//!
//! The router is built by one function, [`router`], so tests drive it with
//! `tower::ServiceExt::oneshot` and the daemon serves the same thing. Every route is
//! registered through utoipa-axum in a group with one [`Access`] rule, so the OpenAPI
//! document ([`api_doc`]), the authorization guard and the tests' route list all come
//! from the same registration: a route cannot exist without a rule.
//!
//! Invariant: sees counters (health) and the store's API; never capture internals or
//! raw pixels. Store calls run on the blocking pool.

mod api;
pub mod auth;
pub mod client;
mod error;
pub mod hub;
mod limits;
pub mod live;
mod metrics;
pub mod progress;
mod status;
pub mod tls;
mod trust;
mod ui;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRef, FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use store::{Role, Store};
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::{Access, AuthConfig, Gate, hash_password, new_setup_code, verify_password};
pub use error::ApiError;
pub use limits::{CONNECTIONS_PER_ADDRESS, Refusals};

/// What every handler can see.
#[derive(Debug, Clone)]
pub struct AppState {
    pub health: Arc<health::Health>,
    pub store: Arc<Store>,
    pub config: Arc<AuthConfig>,
    /// The newest anonymized frame per camera, for the live view.
    pub live: Arc<live::LiveHub>,
    /// The daemon's version, reported in `/api/v1/status` and `obscura_build_info`.
    pub version: &'static str,
    /// Logins and setups refused by the rate limits, counted per address and window.
    pub refusals: Arc<limits::Refusals>,
    /// How far the downloads, access exports and imports people started are.
    pub progress: Arc<progress::Progress>,
    /// Thumbnails made lately (`api::frames::Thumbs`).
    pub thumbs: Arc<api::frames::Thumbs>,
}

impl AppState {
    /// A box's state with no live camera, no refusal counted and no work in progress.
    pub fn new(
        store: Arc<Store>,
        health: Arc<health::Health>,
        config: Arc<AuthConfig>,
        version: &'static str,
    ) -> AppState {
        AppState {
            health,
            store,
            config,
            live: Default::default(),
            version,
            refusals: Default::default(),
            progress: Default::default(),
            thumbs: Default::default(),
        }
    }
}

/// Largest request body: annotations of a busy frame fit many times over.
pub(crate) const MAX_BODY: usize = 2 << 20;
/// Largest body of a login or setup, which anyone may send: a name, a password of at
/// most 256 characters and a code fit.
pub(crate) const AUTH_BODY: usize = 4 << 10;
/// A request that takes longer is answered 408; exports stream and are exempt.
const TIMEOUT: Duration = Duration::from_secs(30);

const ANNOTATE: &[Role] = &[Role::Admin, Role::Annotator, Role::Reviewer];
const REVIEW: &[Role] = &[Role::Admin, Role::Reviewer];
pub(crate) const ADMIN: &[Role] = &[Role::Admin];
pub(crate) const OVERSEE: &[Role] = &[Role::Admin, Role::Steward];
pub(crate) const STEWARD: &[Role] = &[Role::Steward];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Obscura LAN API",
        description = "The box's API for the tablet app: frames, annotations, review, consent, users. Sessions are cookies from POST /api/v1/auth/login; state-changing requests need a same-origin Origin header or the session's X-CSRF-Token."
    ),
    components(schemas(ApiError))
)]
struct Doc;

/// Every route with its access rule, and the OpenAPI document built from them.
fn parts(state: &AppState) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let guard = |access: Access, routes: OpenApiRouter<AppState>| {
        routes.route_layer(axum::middleware::from_fn_with_state((auth::Gate::from_ref(state), access), auth::require))
    };
    let timed = |routes: OpenApiRouter<AppState>| {
        routes.layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, TIMEOUT))
    };
    let api = OpenApiRouter::new()
        .merge(timed(guard(
            Access::Public,
            OpenApiRouter::new()
                .routes(routes!(auth::login))
                .routes(routes!(auth::setup_state, auth::setup))
                // "Trust this box": the root certificate, before anyone logs in.
                .routes(routes!(trust::info))
                .routes(routes!(trust::crt))
                .routes(routes!(trust::pem))
                .routes(routes!(trust::mobileconfig))
                // The extractors' limit, not a second limiting layer: nested limits hide
                // which one was hit, and the answer would not be a 413.
                .layer(axum::extract::DefaultBodyLimit::max(AUTH_BODY)),
        )))
        // Device health: for sessions, and for the box's own shell (scripts, curl).
        .merge(timed(guard(Access::SessionOrLoopback, OpenApiRouter::new().routes(routes!(status::status)))))
        .merge(timed(guard(
            Access::Session,
            OpenApiRouter::new()
                .routes(routes!(auth::me))
                .routes(routes!(auth::logout))
                .routes(routes!(auth::change_password))
                .routes(routes!(progress::progress))
                .routes(routes!(status::cameras))
                .routes(routes!(api::work::labels))
                .routes(routes!(openapi_json)),
        )))
        .merge(timed(guard(
            Access::Roles(ANNOTATE),
            OpenApiRouter::new()
                .routes(routes!(api::frames::list))
                .routes(routes!(api::frames::get))
                .routes(routes!(api::frames::image))
                .routes(routes!(api::frames::detections))
                .routes(routes!(api::frames::annotations, api::frames::save_annotations))
                .routes(routes!(api::frames::submit))
                .routes(routes!(api::frames::reviews))
                .routes(routes!(api::work::queues))
                .routes(routes!(api::work::example))
                .routes(routes!(api::work::claim)),
        )))
        .merge(timed(guard(Access::Roles(REVIEW), OpenApiRouter::new().routes(routes!(api::frames::review)))))
        .merge(timed(guard(
            Access::Roles(ADMIN),
            OpenApiRouter::new()
                .routes(routes!(api::users::list, api::users::add))
                .routes(routes!(api::users::update))
                .routes(routes!(api::users::reset_password))
                .routes(routes!(api::work::set_labels))
                .routes(routes!(api::work::add_queue)),
        )))
        .merge(timed(guard(
            Access::Roles(OVERSEE),
            OpenApiRouter::new()
                .routes(routes!(api::privacy::consents))
                .routes(routes!(api::privacy::consent))
                .routes(routes!(api::privacy::audit)),
        )))
        .merge(guard(Access::Roles(OVERSEE), OpenApiRouter::new().routes(routes!(api::privacy::export))))
        // Imports write an annotation version a frame: long for a big file, so untimed too.
        .merge(guard(Access::Roles(ADMIN), OpenApiRouter::new().routes(routes!(api::privacy::import))))
        // Streams: no timeout.
        .merge(guard(Access::Session, OpenApiRouter::new().routes(routes!(live::live))))
        .merge(timed(guard(
            Access::Roles(STEWARD),
            OpenApiRouter::new()
                .routes(routes!(api::privacy::add_consent))
                .routes(routes!(api::privacy::withdraw))
                .routes(routes!(api::privacy::erase)),
        )))
        .merge(guard(Access::Roles(STEWARD), OpenApiRouter::new().routes(routes!(api::privacy::access_export))));
    let (api, mut doc) = OpenApiRouter::with_openapi(Doc::openapi()).nest("/api/v1", api).split_for_parts();
    let probes = OpenApiRouter::new()
        .merge(guard(Access::Public, OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz))))
        // The tablet app: its files, and its screens for deep links.
        .merge(timed(guard(
            Access::Public,
            OpenApiRouter::new().routes(routes!(ui::index)).routes(routes!(ui::file)).routes(routes!(ui::frame)),
        )))
        .merge(guard(Access::SessionOrLoopback, OpenApiRouter::new().routes(routes!(metrics::metrics))));
    let (probes, probe_doc) = probes.split_for_parts();
    doc.merge(probe_doc);
    (api.merge(probes), with_error_responses(doc))
}

/// Every operation answers errors in the one shape: say so in the document, as `4XX`
/// and `5XX` responses with the `ApiError` schema, so clients and checkers (schemathesis
/// in `scripts/api-fuzz`) hold every error response to it.
fn with_error_responses(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let error = ResponseBuilder::new()
        .description("An error: `code` for programs, `message` for people.")
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ApiError"))).build())
        .build();
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
            &mut item.options,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            for range in ["4XX", "5XX"] {
                operation.responses.responses.entry(range.into()).or_insert_with(|| RefOr::T(error.clone()));
            }
        }
    }
    doc
}

/// The OpenAPI 3 document of every route, as served at `/api/v1/openapi.json`.
pub fn api_doc(state: &AppState) -> utoipa::openapi::OpenApi {
    parts(state).1
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    let (routes, doc) = parts(&state);
    let doc = Arc::new(doc);
    let header = |name: &'static str, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(header::HeaderName::from_static(name), HeaderValue::from_static(value))
    };
    routes
        .layer(axum::Extension(doc))
        .fallback(|| async { StatusCode::NOT_FOUND })
        // Inside the error shaping, so a 413 for a Content-Length over the limit has the
        // error shape too.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY))
        .layer(axum::middleware::from_fn(error::shape_errors))
        .layer(header(
            "content-security-policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; \
             object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'; manifest-src 'self'",
        ))
        .layer(header("x-content-type-options", "nosniff"))
        .layer(header("referrer-policy", "no-referrer"))
        .layer(header("permissions-policy", "camera=(), microphone=(), geolocation=(), payment=(), usb=()"))
        .layer(header("x-frame-options", "DENY"))
        .layer(header("cache-control", "no-store"))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` resolves, then finishes open requests.
/// Handlers see the client's address (for login rate limits); an address holds at most
/// [`limits::CONNECTIONS_PER_ADDRESS`] connections at once.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = limits::LimitedListener { listener, limits: Default::default() }
        .tap_io(|tcp: &mut limits::Counted<tokio::net::TcpStream>| drop(tcp.io.set_nodelay(true)));
    axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}

/// Runs store work on the blocking pool: SQLite and Argon2 must not stall the runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&Store) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || work(&store)).await.map_err(ApiError::internal)?
}

/// A JSON body whose rejection is in the error shape and says what was wrong.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        axum::Json::<T>::from_request(request, state).await.map(|axum::Json(v)| Body(v)).map_err(|e| {
            let status = e.status();
            // A body that grew past the limit while being read (chunked, or no length)
            // says so as a Content-Length over it does.
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE { error::TOO_LARGE.into() } else { e.body_text() };
            ApiError::new(status, error::code_for(status), message)
        })
    }
}

pub(crate) async fn json_body<T: serde::de::DeserializeOwned>(request: Request) -> Result<T, ApiError> {
    Body::<T>::from_request(request, &()).await.map(|b| b.0)
}

/// The OpenAPI 3 document of this API.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", responses((status = 200, body = Object)))]
async fn openapi_json(axum::Extension(doc): axum::Extension<Arc<utoipa::openapi::OpenApi>>) -> impl IntoResponse {
    axum::Json(doc.as_ref().clone())
}

/// The process is alive and answering.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = String)))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Start-up finished and shutdown has not begun.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, body = String), (status = 503, body = String)))]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.health.is_ready() { (StatusCode::OK, "ready\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready\n") }
}

#[cfg(test)]
mod tests;
