//! Accounts and sessions: Argon2id passwords, server-side sessions in SQLite with random
//! 256-bit ids (only their SHA-256 is stored), role checks, CSRF checks against the
//! box's own origins, login rate limits (`limits`), and the one-time setup code that
//! creates the first admin. There is no default password.
//!
//! The handlers and the guard see only a [`Gate`]: the accounts (`store::Accounts`), the
//! session settings and the refusal counts. The box's `AppState` and the hub's
//! `HubState` each give one, so the hub's people log in, hold roles and are limited
//! exactly as a box's are, by this same code.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::Json;
use axum::extract::{FromRef, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use store::{Accounts, Role, User};
use utoipa::ToSchema;

use crate::client::{Client, parse_origin};
use crate::error::ApiError;
use crate::limits::{Refusals, logged_name, throttled, too_many};

/// What the accounts routes and the guard need of a server: its accounts, its session
/// settings, and its refusal counts. Taken from the server's state with `FromRef`.
#[derive(Clone)]
pub struct Gate {
    pub accounts: Arc<dyn Accounts>,
    pub config: Arc<AuthConfig>,
    pub refusals: Arc<Refusals>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").field("config", &self.config).finish_non_exhaustive()
    }
}

impl FromRef<crate::AppState> for Gate {
    fn from_ref(state: &crate::AppState) -> Gate {
        Gate { accounts: state.store.clone(), config: state.config.clone(), refusals: state.refusals.clone() }
    }
}

impl Gate {
    /// Runs account work on the blocking pool: SQLite and Argon2 must not stall the runtime.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&dyn Accounts) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let accounts = self.accounts.clone();
        tokio::task::spawn_blocking(move || work(&*accounts)).await.map_err(ApiError::internal)?
    }
}

/// OWASP's Argon2id parameters: 19 MiB, 2 iterations, 1 lane.
fn argon2() -> argon2::Argon2<'static> {
    let params = argon2::Params::new(19 * 1024, 2, 1, None).expect("OWASP's Argon2 parameters are valid");
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

/// Names are what people type on a tablet and what the audit log shows.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.chars().count())
        && name.chars().all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'));
    if ok { Ok(()) } else { Err(format!("user name `{name}` must be 1 to 64 letters, digits, or . - _ @")) }
}

pub const MIN_PASSWORD: usize = 12;
const MAX_PASSWORD: usize = 256;

/// Checks the password policy and hashes with Argon2id. Slow on purpose: call it off
/// the async runtime.
pub fn hash_password(password: &str) -> Result<String, String> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD {
        return Err(format!("a password needs at least {MIN_PASSWORD} characters; a short sentence works well"));
    }
    if chars > MAX_PASSWORD {
        return Err(format!("a password may have at most {MAX_PASSWORD} characters"));
    }
    let mut salt = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut salt).map_err(|_| "the system random source failed".to_owned())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Ok(argon2().hash_password(password.as_bytes(), &salt).map_err(|e| e.to_string())?.to_string())
}

pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| argon2().verify_password(password.as_bytes(), &h).is_ok())
}

/// A hash no password matches, verified for unknown accounts so a login takes as long
/// whether or not the account exists.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    hash_password("not a password of anyone's").expect("the dummy password fits the policy")
});

/// Random bytes as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new().fill(&mut buf).expect("the system random source works");
    hex::encode(buf)
}

/// A new setup code for the first admin, valid for 24 h; replaces any earlier one.
/// Four groups of four characters from Crockford's base32 (80 bits).
pub fn new_setup_code(store: &dyn Accounts) -> Result<String, store::StoreError> {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut buf = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut buf).expect("the system random source works");
    let chars: String = buf.iter().map(|b| ALPHABET[usize::from(b & 31)] as char).collect();
    let code = format!("{}-{}-{}-{}", &chars[0..4], &chars[4..8], &chars[8..12], &chars[12..16]);
    store.new_setup_code(&store::sha256_hex(normalise_code(&code).as_bytes()), 24 * 3600 * 1000)?;
    Ok(code)
}

/// Codes are typed on tablets: case, spaces and dashes do not matter.
fn normalise_code(code: &str) -> String {
    code.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_uppercase()).collect()
}

/// Who is calling: put in the request's extensions by [`require`].
#[derive(Debug, Clone)]
pub struct Authed {
    pub user: User,
    pub csrf: String,
    /// SHA-256 of the session id.
    pub session: String,
}

/// The session cookie's name: `__Host-` prefixed over HTTPS, so the browser only
/// accepts it with `Secure`, path `/` and no domain.
pub fn cookie_name(secure: bool) -> &'static str {
    if secure { "__Host-obscura-session" } else { "obscura-session" }
}

fn session_id(headers: &HeaderMap, secure: bool) -> Option<String> {
    let name = cookie_name(secure);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name && c.value().len() == 64 && c.value().bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|c| c.value().to_owned())
}

/// A state-changing request must come from the box's own pages: its `Origin`, scheme
/// and port included, is one of the box's origins (never compared with the request's
/// own `Host`, which the caller writes), or, with no `Origin` (scripts, curl), it
/// carries the session's CSRF token.
fn check_csrf(request: &Request, origins: &BTreeSet<String>, session_csrf: Option<&str>) -> Result<(), ApiError> {
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let headers = request.headers();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let sent = String::from_utf8_lossy(origin.as_bytes());
        return if parse_origin(&sent).is_ok_and(|o| origins.contains(&o)) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "cross-origin request refused: Origin `{}` is not one of this box's own origins (its names and \
                 addresses with its scheme and port); if users reach the box by that name, add it to [http] origins",
                sent.chars().take(100).collect::<String>()
            ))
            .with_code("csrf"))
        };
    }
    match session_csrf {
        None => Ok(()),
        Some(expected) => {
            let sent = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or_default();
            // Compared as digests: equal time whatever the bytes.
            if store::sha256_hex(sent.as_bytes()) == store::sha256_hex(expected.as_bytes()) {
                Ok(())
            } else {
                Err(ApiError::forbidden("a request without Origin needs the session's X-CSRF-Token header")
                    .with_code("csrf"))
            }
        }
    }
}

/// Who may pass: a set of roles, or anyone with a session.
#[derive(Debug, Clone, Copy)]
pub enum Access {
    /// No session needed (health, login, setup, static assets). CSRF still applies.
    Public,
    /// Any valid session, or a caller on the box itself (loopback, and not through a
    /// trusted proxy unless the client it forwards is loopback too): `/metrics` for a
    /// local Prometheus, `/api/v1/status` for scripts on the box.
    SessionOrLoopback,
    /// Any valid session.
    Session,
    /// A session whose role is one of these.
    Roles(&'static [Role]),
}

/// The guard every route passes: session lookup, role check, CSRF.
pub async fn require(State((state, access)): State<(Gate, Access)>, mut request: Request, next: Next) -> Response {
    match authorize(&state, access, &mut request).await {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

async fn authorize(state: &Gate, access: Access, request: &mut Request) -> Result<(), ApiError> {
    let origins = &state.config.origins;
    if let Access::Public = access {
        return check_csrf(request, origins, None);
    }
    let local = Client::of(request, &state.config.trusted_proxies).is_local();
    let id = session_id(request.headers(), state.config.secure_cookies);
    let session = match id {
        Some(id) => {
            let hash = store::sha256_hex(id.as_bytes());
            let (idle, absolute) = (state.config.idle_timeout_ms, state.config.absolute_timeout_ms);
            state.run(move |store| Ok(store.session(&hash, idle, absolute)?.map(|s| (s, hash)))).await?
        }
        None => None,
    };
    let Some((session, hash)) = session else {
        return if matches!(access, Access::SessionOrLoopback) && local {
            Ok(())
        } else {
            Err(ApiError::unauthenticated())
        };
    };
    if let Access::Roles(roles) = access
        && !roles.contains(&session.user.role)
    {
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        return Err(ApiError::forbidden(format!(
            "your role ({}) cannot do this; it needs: {}",
            session.user.role.as_str(),
            names.join(", ")
        )));
    }
    check_csrf(request, origins, Some(&session.csrf))?;
    request.extensions_mut().insert(Authed { user: session.user, csrf: session.csrf, session: hash });
    Ok(())
}

// ---- Handlers ----

#[derive(Debug, Deserialize, ToSchema)]
pub struct Login {
    pub name: String,
    pub password: String,
}

/// The caller's account and the CSRF token to send as `X-CSRF-Token` when a request has
/// no `Origin`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    #[schema(value_type = Object)]
    pub user: User,
    pub csrf: String,
}

/// Log in. Starts a new session (any session id the client held is dropped: no
/// fixation) and sets its cookie.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = Login,
    responses((status = 200, body = Me), (status = 401, body = ApiError), (status = 429, body = ApiError)))]
pub async fn login(State(state): State<Gate>, request: Request) -> Response {
    let ip = Client::of(&request, &state.config.trusted_proxies).key();
    let old = session_id(request.headers(), state.config.secure_cookies);
    let body = match crate::json_body::<Login>(request).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let secure = state.config.secure_cookies;
    let refusals = state.refusals.clone();
    let result = state
        .run(move |store| {
            if let Some(old) = old {
                store.delete_session(&store::sha256_hex(old.as_bytes()))?;
            }
            // Anonymous callers choose the name: what is recorded of it is bounded.
            let name = logged_name(&body.name);
            if let Some(wait) = throttled(store, &name, &ip)? {
                refused(store, &refusals, "login.rate_limited", (&name, &format!("user/{name}")), &ip)?;
                return Ok(Err(wait));
            }
            let user = store.user_by_name(&body.name)?;
            let ok = match &user {
                Some(u) => verify_password(&u.password_hash, &body.password) && !u.disabled,
                None => {
                    verify_password(&DUMMY_HASH, &body.password);
                    false
                }
            };
            let Some(user) = user.filter(|_| ok) else {
                store.record_login_failure(&name, &ip)?;
                store.audit(&name, "login.failed", &format!("user/{name}"), serde_json::json!({ "ip": ip }))?;
                return Ok(Ok(None));
            };
            store.record_login_success(&user, &ip)?;
            let (id, csrf) = (random_hex(32), random_hex(32));
            store.create_session(&store::sha256_hex(id.as_bytes()), user.id, &csrf, &ip)?;
            store.audit(&user.name, "login", &format!("user/{}", user.name), serde_json::json!({ "ip": ip }))?;
            Ok(Ok(Some((user, id, csrf))))
        })
        .await;
    match result {
        Err(e) => e.into_response(),
        Ok(Err(wait)) => too_many(wait),
        Ok(Ok(None)) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "bad_credentials", "wrong name or password").into_response()
        }
        Ok(Ok(Some((user, id, csrf)))) => {
            let mut response = Json(Me { user, csrf }).into_response();
            response.headers_mut().insert(header::SET_COOKIE, session_cookie(&id, secure, &state));
            response
        }
    }
}

/// A refused attempt: counted, and audited only when it opens its address's window,
/// with how many the address's previous window refused.
fn refused(
    store: &dyn Accounts,
    refusals: &crate::limits::Refusals,
    action: &str,
    (actor, subject): (&str, &str),
    ip: &str,
) -> Result<(), store::StoreError> {
    let Some(opened) = refusals.count(ip, store.now_ms()) else { return Ok(()) };
    let mut detail = serde_json::json!({ "ip": ip, "window_s": crate::limits::WINDOW_MS / 1000 });
    if let Some((started_at, refused)) = opened.previous {
        detail["previous_window"] = serde_json::json!({ "started_at": started_at, "refused": refused });
    }
    store.audit(actor, action, subject, detail)?;
    Ok(())
}

/// The session cookie: `HttpOnly`, `SameSite=Strict`, path `/`, and over HTTPS `Secure`
/// (its `__Host-` name demands it). `max_age` zero removes it.
fn cookie_header(value: &str, secure: bool, max_age: time::Duration) -> HeaderValue {
    let cookie = cookie::Cookie::build((cookie_name(secure), value))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .max_age(max_age)
        .secure(secure)
        .build();
    HeaderValue::from_str(&cookie.to_string()).expect("the cookie is ASCII")
}

fn session_cookie(id: &str, secure: bool, state: &Gate) -> HeaderValue {
    cookie_header(id, secure, time::Duration::milliseconds(state.config.absolute_timeout_ms))
}

fn clear_cookie(secure: bool) -> HeaderValue {
    cookie_header("", secure, time::Duration::ZERO)
}

/// Log out: the session ends on the server, so its id is useless from now on.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", responses((status = 204)))]
pub async fn logout(
    State(state): State<Gate>,
    axum::Extension(me): axum::Extension<Authed>,
) -> Result<Response, ApiError> {
    state
        .run(move |store| {
            store.delete_session(&me.session)?;
            store.audit(&me.user.name, "logout", &format!("user/{}", me.user.name), serde_json::json!({}))?;
            Ok(())
        })
        .await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::SET_COOKIE, clear_cookie(state.config.secure_cookies));
    Ok(response)
}

/// The caller's account and CSRF token.
#[utoipa::path(get, path = "/auth/me", tag = "auth", responses((status = 200, body = Me)))]
pub async fn me(axum::Extension(me): axum::Extension<Authed>) -> Json<Me> {
    Json(Me { user: me.user, csrf: me.csrf })
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PasswordChange {
    pub current: String,
    pub new: String,
}

/// Change one's own password. Every session of the account ends, this one included.
#[utoipa::path(post, path = "/auth/password", tag = "auth", request_body = PasswordChange,
    responses((status = 204), (status = 403, body = ApiError), (status = 422, body = ApiError)))]
pub async fn change_password(
    State(state): State<Gate>,
    axum::Extension(me): axum::Extension<Authed>,
    body: crate::Body<PasswordChange>,
) -> Result<Response, ApiError> {
    let body = body.0;
    state
        .run(move |store| {
            if !verify_password(&me.user.password_hash, &body.current) {
                return Err(ApiError::forbidden("the current password is wrong"));
            }
            let hash = hash_password(&body.new)
                .map_err(|m| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "weak_password", m))?;
            store.set_password(me.user.id, &hash, &me.user.name)?;
            Ok(())
        })
        .await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::SET_COOKIE, clear_cookie(state.config.secure_cookies));
    Ok(response)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SetupState {
    /// True until the first admin exists and while a setup code is valid.
    pub pending: bool,
}

/// Whether first-run setup is waiting for its code.
#[utoipa::path(get, path = "/setup", tag = "auth", responses((status = 200, body = SetupState)))]
pub async fn setup_state(State(state): State<Gate>) -> Result<Json<SetupState>, ApiError> {
    let pending = state.run(|store| Ok(store.setup_pending()?)).await?;
    Ok(Json(SetupState { pending }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct Setup {
    /// The code the daemon printed at first start (or `obscura user setup-code`).
    pub code: String,
    pub name: String,
    pub password: String,
}

/// First-run setup: the code creates the first admin, once. Failed tries count against
/// the caller's address like failed logins.
#[utoipa::path(post, path = "/setup", tag = "auth", request_body = Setup,
    responses((status = 201, body = Object), (status = 403, body = ApiError), (status = 429, body = ApiError)))]
pub async fn setup(State(state): State<Gate>, request: Request) -> Response {
    let ip = Client::of(&request, &state.config.trusted_proxies).key();
    let refusals = state.refusals.clone();
    let body = match crate::json_body::<Setup>(request).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let result = state
        .run(move |store| {
            if let Some(wait) = throttled(store, "(setup)", &ip)? {
                refused(store, &refusals, "setup.rate_limited", ("anonymous", "setup"), &ip)?;
                return Ok(Err(too_many(wait)));
            }
            if let Err(why) = check_name(&body.name) {
                return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", why));
            }
            let hash = hash_password(&body.password)
                .map_err(|m| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "weak_password", m))?;
            let code = store::sha256_hex(normalise_code(&body.code).as_bytes());
            match store.first_admin(&code, &body.name, &hash)? {
                Some(user) => Ok(Ok(user)),
                None => {
                    store.record_login_failure("(setup)", &ip)?;
                    store.audit("anonymous", "setup.failed", "setup", serde_json::json!({ "ip": ip }))?;
                    Ok(Err(ApiError::forbidden(
                    "that setup code is wrong, expired or used; run `obscura user setup-code` on the box for a new one",
                )
                .into_response()))
                }
            }
        })
        .await;
    match result {
        Ok(Ok(user)) => (StatusCode::CREATED, Json(user)).into_response(),
        Ok(Err(response)) => response,
        Err(e) => e.into_response(),
    }
}

/// Sessions, origins and proxies, as the daemon works them out at start-up.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Serving HTTPS: cookies are `__Host-` and `Secure`.
    pub secure_cookies: bool,
    pub idle_timeout_ms: i64,
    pub absolute_timeout_ms: i64,
    /// The origins of the box's own pages, as [`crate::client::box_origins`] and
    /// [`crate::client::parse_origin`] write them: a state-changing request that sends
    /// an `Origin` must name one. Empty: every `Origin` is refused.
    pub origins: BTreeSet<String>,
    /// Proxies whose `X-Forwarded-For` is believed (`[http] trusted_proxies`). Empty:
    /// none, and every client is the connection's peer.
    pub trusted_proxies: Vec<IpAddr>,
    /// The box's own root certificate, which tablets install to trust the box (served
    /// by `/api/v1/trust`); none with the operator's certificate or plain HTTP.
    pub root_ca: Option<std::sync::Arc<crate::tls::RootCa>>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            secure_cookies: true,
            idle_timeout_ms: 30 * 60 * 1000,
            absolute_timeout_ms: 12 * 3600 * 1000,
            origins: BTreeSet::new(),
            trusted_proxies: Vec::new(),
            root_ca: None,
        }
    }
}
