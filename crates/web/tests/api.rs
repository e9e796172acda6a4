//! The LAN API driven with `oneshot` on a real store: the authorization matrix built
//! from the router's own route list, CSRF, sessions, rate limits across a restart, the
//! setup code, the error shape, and the annotate → review workflow on real frames.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use store::{Accounts, Role, Store};
use tower::ServiceExt;
use web::{AppState, AuthConfig};

/// A clock the tests move.
#[derive(Debug)]
struct TestClock(AtomicI64);

impl store::Clock for TestClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct Box_ {
    state: AppState,
    clock: Arc<TestClock>,
    dir: tempfile::TempDir,
}

const HOST: &str = "box.local:8443";
const PASSWORD: &str = "correct horse battery staple";

fn boot() -> Box_ {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(TestClock(AtomicI64::new(1_800_000_000_000)));
    let state = app(dir.path(), clock.clone());
    Box_ { state, clock, dir }
}

/// The same state directory opened again: what a restart sees.
fn app(dir: &std::path::Path, clock: Arc<TestClock>) -> AppState {
    app_with(dir, clock, box_config())
}

/// How the daemon configures a box called `box`, serving HTTPS on port 8443.
fn box_config() -> AuthConfig {
    let origins =
        web::client::box_origins(true, 8443, ["box", "box.local", "localhost", "127.0.0.1", "::1", "192.168.1.20"]);
    AuthConfig { origins, ..AuthConfig::default() }
}

fn app_with(dir: &std::path::Path, clock: Arc<TestClock>, config: AuthConfig) -> AppState {
    let store = Arc::new(Store::open_with_clock(dir, clock).unwrap());
    let health = Arc::new(health::Health::new("generic".into(), vec![]));
    let config = Arc::new(config);
    AppState::new(store, health, config, "test")
}

impl Box_ {
    fn user(&self, name: &str, role: Role) -> i64 {
        let hash = web::hash_password(PASSWORD).unwrap();
        self.state.store.add_user(name, role, &hash, "test").unwrap().id
    }

    /// A session for `user` straight in the store (no Argon2 per request): its cookie
    /// and CSRF token.
    fn session(&self, user: i64) -> (String, String) {
        let id = web::auth::random_hex(32);
        let csrf = web::auth::random_hex(32);
        self.state.store.create_session(&store::sha256_hex(id.as_bytes()), user, &csrf, "10.0.0.9").unwrap();
        (format!("{}={id}", web::auth::cookie_name(true)), csrf)
    }
}

struct Call<'a> {
    method: Method,
    path: &'a str,
    cookie: Option<&'a str>,
    body: Option<Value>,
    ip: [u8; 4],
    host: &'a str,
    /// `X-Forwarded-For`, as a proxy sends it.
    forwarded: Option<&'a str>,
    origin: Option<&'a str>,
    csrf: Option<&'a str>,
}

impl<'a> Call<'a> {
    fn new(method: Method, path: &'a str) -> Call<'a> {
        Call {
            method,
            path,
            cookie: None,
            body: None,
            ip: [10, 0, 0, 9],
            host: HOST,
            forwarded: None,
            origin: Some("https://box.local:8443"),
            csrf: None,
        }
    }
    fn cookie(mut self, c: &'a str) -> Self {
        self.cookie = Some(c);
        self
    }
    fn json(mut self, v: Value) -> Self {
        self.body = Some(v);
        self
    }
    fn ip(mut self, ip: [u8; 4]) -> Self {
        self.ip = ip;
        self
    }
    fn origin(mut self, o: Option<&'a str>) -> Self {
        self.origin = o;
        self
    }
    fn host(mut self, h: &'a str) -> Self {
        self.host = h;
        self
    }
    fn forwarded(mut self, f: &'a str) -> Self {
        self.forwarded = Some(f);
        self
    }
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

async fn call(state: &AppState, c: Call<'_>) -> Answer {
    let mut request = Request::builder().method(c.method).uri(c.path).header(header::HOST, c.host);
    if let Some(forwarded) = c.forwarded {
        request = request.header("x-forwarded-for", forwarded);
    }
    if let Some(cookie) = c.cookie {
        request = request.header(header::COOKIE, cookie);
    }
    if let Some(origin) = c.origin {
        request = request.header(header::ORIGIN, origin);
    }
    if let Some(csrf) = c.csrf {
        request = request.header("x-csrf-token", csrf);
    }
    let body = match c.body {
        Some(v) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let mut request = request.body(body).unwrap();
    request.extensions_mut().insert(ConnectInfo(SocketAddr::from((c.ip, 50000))));
    let response = web::router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
    Answer { status, headers, body }
}

async fn login(state: &AppState, name: &str, password: &str, ip: [u8; 4]) -> Answer {
    call(
        state,
        Call::new(Method::POST, "/api/v1/auth/login").json(json!({ "name": name, "password": password })).ip(ip),
    )
    .await
}

fn set_cookie(a: &Answer) -> String {
    a.headers[header::SET_COOKIE].to_str().unwrap().to_owned()
}

/// `name=value` of a Set-Cookie header.
fn cookie_pair(a: &Answer) -> String {
    set_cookie(a).split(';').next().unwrap().to_owned()
}

fn assert_error_shape(a: &Answer, context: &str) {
    assert!(
        a.headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json")),
        "{context}: {} without a JSON body",
        a.status
    );
    let v = a.json();
    assert!(
        v["code"].as_str().is_some_and(|c| !c.is_empty()) && v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{context}: {} body {v} is not the error shape",
        a.status
    );
}

/// Who may call each route. The list of routes comes from the router (through its
/// OpenAPI document); a route missing here fails the test, so none can be forgotten.
fn expected(method: &str, path: &str) -> Option<Option<&'static [Role]>> {
    use Role::*;
    const ANY: &[Role] = &[Admin, Annotator, Reviewer, Steward];
    const ANNOTATE: &[Role] = &[Admin, Annotator, Reviewer];
    let rule: Option<&'static [Role]> = match (method, path) {
        ("GET", "/healthz")
        | ("GET", "/readyz")
        | ("POST", "/api/v1/auth/login")
        | ("GET", "/api/v1/setup")
        | ("POST", "/api/v1/setup") => None,
        // "Trust this box" (issue 18): the root certificate, before anyone can log in.
        ("GET", "/api/v1/trust")
        | ("GET", "/api/v1/trust/obscura-root.crt")
        | ("GET", "/api/v1/trust/obscura-root.pem")
        | ("GET", "/api/v1/trust/obscura.mobileconfig") => None,
        // The tablet app (issue #7): its files and its screens' deep links.
        ("GET", "/") | ("GET", "/{file}") | ("GET", "/frames/{id}") => None,
        ("GET", "/metrics")
        | ("GET", "/api/v1/status")
        | ("GET", "/api/v1/auth/me")
        | ("POST", "/api/v1/auth/logout")
        | ("POST", "/api/v1/auth/password")
        | ("GET", "/api/v1/cameras")
        | ("GET", "/api/v1/cameras/{id}/live")
        | ("GET", "/api/v1/labels")
        | ("GET", "/api/v1/progress/{token}")
        | ("GET", "/api/v1/openapi.json") => Some(ANY),
        ("GET", "/api/v1/frames")
        | ("GET", "/api/v1/frames/{id}")
        | ("GET", "/api/v1/frames/{id}/image")
        | ("GET", "/api/v1/frames/{id}/detections")
        | ("GET", "/api/v1/frames/{id}/annotations")
        | ("PUT", "/api/v1/frames/{id}/annotations")
        | ("POST", "/api/v1/frames/{id}/submit")
        | ("GET", "/api/v1/frames/{id}/reviews")
        | ("GET", "/api/v1/queues")
        | ("GET", "/api/v1/labels/{name}/example")
        | ("POST", "/api/v1/queues/{id}/claim") => Some(ANNOTATE),
        ("POST", "/api/v1/frames/{id}/reviews") => Some(&[Admin, Reviewer]),
        ("GET", "/api/v1/users")
        | ("POST", "/api/v1/users")
        | ("PATCH", "/api/v1/users/{id}")
        | ("POST", "/api/v1/users/{id}/password")
        | ("PUT", "/api/v1/labels")
        | ("POST", "/api/v1/imports")
        | ("POST", "/api/v1/queues") => Some(&[Admin]),
        ("GET", "/api/v1/consents")
        | ("GET", "/api/v1/consents/{id}")
        | ("GET", "/api/v1/audit")
        | ("GET", "/api/v1/exports") => Some(&[Admin, Steward]),
        ("POST", "/api/v1/consents")
        | ("POST", "/api/v1/consents/{id}/withdraw")
        | ("POST", "/api/v1/erasures")
        | ("POST", "/api/v1/access-exports") => Some(&[Steward]),
        _ => return None,
    };
    Some(rule)
}

/// Every (method, path) the router serves, from its OpenAPI document.
fn routes(state: &AppState) -> Vec<(String, String)> {
    let doc = serde_json::to_value(web::api_doc(state)).unwrap();
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                routes.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes.sort();
    routes
}

#[tokio::test]
async fn every_route_answers_anonymous_each_role_and_expired_sessions_as_its_rule_says() {
    let b = boot();
    let ids: Vec<(Role, i64)> = Role::ALL.iter().map(|&r| (r, b.user(r.as_str(), r))).collect();
    let routes = routes(&b.state);
    assert!(routes.len() >= 35, "{routes:?}");
    let mut errors = 0;
    for (method, path) in &routes {
        let rule = expected(method, path)
            .unwrap_or_else(|| panic!("{method} {path} is served but not in this test's matrix: add its rule"));
        let concrete = path.replace("{id}", "1");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let body = (method != Method::GET).then(|| json!({}));
        let with = |cookie: Option<String>| {
            let mut c = Call::new(method.clone(), &concrete);
            c.body = body.clone();
            c.cookie = cookie.map(|c| &*Box::leak(c.into_boxed_str()));
            c
        };
        let anonymous = call(&b.state, with(None)).await;
        match rule {
            None => assert!(
                ![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&anonymous.status),
                "{method} {path} is public, got {}",
                anonymous.status
            ),
            Some(_) => assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{method} {path} anonymous"),
        }
        if anonymous.status.is_client_error() || anonymous.status.is_server_error() {
            assert_error_shape(&anonymous, &format!("{method} {path} anonymous"));
            errors += 1;
        }
        let Some(roles) = rule else { continue };
        for &(role, user) in &ids {
            let (cookie, _) = b.session(user);
            let a = call(&b.state, with(Some(cookie))).await;
            if roles.contains(&role) {
                assert!(
                    ![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&a.status),
                    "{method} {path} as {role:?}: {} {}",
                    a.status,
                    String::from_utf8_lossy(&a.body)
                );
            } else {
                assert_eq!(a.status, StatusCode::FORBIDDEN, "{method} {path} as {role:?}");
            }
            if a.status.is_client_error() || a.status.is_server_error() {
                assert_error_shape(&a, &format!("{method} {path} as {role:?}"));
                errors += 1;
            }
        }
        // An expired session (idle past its timeout) is no session.
        let (cookie, _) = b.session(ids[0].1);
        b.clock.0.fetch_add(AuthConfig::default().idle_timeout_ms + 1, Ordering::SeqCst);
        let expired = call(&b.state, with(Some(cookie))).await;
        assert_eq!(expired.status, StatusCode::UNAUTHORIZED, "{method} {path} with an expired session");
        assert_error_shape(&expired, &format!("{method} {path} expired"));
    }
    assert!(errors > 50, "the matrix saw {errors} error responses");
}

#[tokio::test]
async fn a_cross_origin_post_with_a_valid_cookie_is_refused() {
    let b = boot();
    let admin = b.user("ada", Role::Admin);
    let (cookie, csrf) = b.session(admin);
    let body = json!({ "name": "q1" });
    let evil = call(
        &b.state,
        Call::new(Method::POST, "/api/v1/queues")
            .cookie(&cookie)
            .json(body.clone())
            .origin(Some("https://evil.example")),
    )
    .await;
    assert_eq!(evil.status, StatusCode::FORBIDDEN);
    assert_eq!(evil.json()["code"], "csrf");
    // No Origin (a script): the session's token is required.
    let bare =
        call(&b.state, Call::new(Method::POST, "/api/v1/queues").cookie(&cookie).json(body.clone()).origin(None)).await;
    assert_eq!(bare.status, StatusCode::FORBIDDEN);
    let mut with_token = Call::new(Method::POST, "/api/v1/queues").cookie(&cookie).json(body.clone()).origin(None);
    with_token.csrf = Some(&csrf);
    assert_eq!(call(&b.state, with_token).await.status, StatusCode::CREATED);
    let same =
        call(&b.state, Call::new(Method::POST, "/api/v1/queues").cookie(&cookie).json(json!({ "name": "q2" }))).await;
    assert_eq!(same.status, StatusCode::CREATED);
    // Cross-origin login is refused too (login CSRF).
    let mut login = Call::new(Method::POST, "/api/v1/auth/login").json(json!({ "name": "ada", "password": PASSWORD }));
    login.origin = Some("http://evil.example");
    assert_eq!(call(&b.state, login).await.status, StatusCode::FORBIDDEN);
}

/// Issue 15, item 15: the Origin is compared, scheme and port included, with the box's
/// own names and addresses, never with the Host the caller wrote.
#[tokio::test]
async fn r15_15_csrf_takes_the_boxs_own_origins_not_the_requests_host() {
    let b = boot();
    let admin = b.user("ada", Role::Admin);
    let (cookie, _) = b.session(admin);
    let put = |origin: &'static str, host: &'static str| {
        Call::new(Method::PUT, "/api/v1/labels").cookie(&cookie).json(json!([])).origin(Some(origin)).host(host)
    };
    for (origin, host) in [
        // A page on evil.example that names itself in Host too.
        ("https://evil.example", "evil.example"),
        // The box's name, but over plain HTTP (an attacker on the LAN path).
        ("http://box.local:8443", HOST),
        ("https://box.local", HOST),
        ("https://box.local:8443.evil.example", HOST),
        ("null", HOST),
    ] {
        let a = call(&b.state, put(origin, host)).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "Origin {origin} with Host {host}");
        assert_eq!(a.json()["code"], "csrf");
        assert!(a.json()["message"].as_str().unwrap().contains("[http] origins"), "{}", a.json());
    }
    // The box's names and addresses pass, whatever Host says.
    for origin in ["https://box.local:8443", "https://BOX:8443", "https://192.168.1.20:8443", "https://[::1]:8443"] {
        let a = call(&b.state, put(origin, "evil.example")).await;
        assert_eq!(a.status, StatusCode::OK, "{origin}: {}", String::from_utf8_lossy(&a.body));
    }
}

#[tokio::test]
async fn login_rotates_the_session_and_logout_or_a_password_change_ends_it() {
    let b = boot();
    b.user("ana", Role::Annotator);
    // Fixation: a session id planted before login is not the one login gives.
    let planted = format!("{}={}", web::auth::cookie_name(true), "a".repeat(64));
    let mut call_ = Call::new(Method::POST, "/api/v1/auth/login").json(json!({ "name": "ana", "password": PASSWORD }));
    call_.cookie = Some(&planted);
    let first = call(&b.state, call_).await;
    assert_eq!(first.status, StatusCode::OK, "{}", String::from_utf8_lossy(&first.body));
    let cookie = cookie_pair(&first);
    assert_ne!(cookie, planted);
    let attributes = set_cookie(&first);
    for part in ["__Host-obscura-session=", "Path=/", "HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(attributes.contains(part), "{attributes}");
    }
    assert!(!attributes.contains("Domain"), "{attributes}");
    assert_eq!(
        call(&b.state, Call::new(Method::GET, "/api/v1/auth/me").cookie(&planted)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let me = call(&b.state, Call::new(Method::GET, "/api/v1/auth/me").cookie(&cookie)).await;
    assert_eq!(me.json()["user"]["name"], "ana");
    assert!(me.json()["user"].get("password_hash").is_none());
    // A second login gives another id; the first stays valid until logout.
    let second = cookie_pair(&login(&b.state, "ana", PASSWORD, [10, 0, 0, 9]).await);
    assert_ne!(second, cookie);
    assert_eq!(
        call(&b.state, Call::new(Method::POST, "/api/v1/auth/logout").cookie(&cookie)).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(&b.state, Call::new(Method::GET, "/api/v1/auth/me").cookie(&cookie)).await.status,
        StatusCode::UNAUTHORIZED,
        "replay after logout"
    );
    // A password change ends every session of the account.
    let change = call(
        &b.state,
        Call::new(Method::POST, "/api/v1/auth/password")
            .cookie(&second)
            .json(json!({ "current": PASSWORD, "new": "another long passphrase" })),
    )
    .await;
    assert_eq!(change.status, StatusCode::NO_CONTENT);
    assert_eq!(
        call(&b.state, Call::new(Method::GET, "/api/v1/auth/me").cookie(&second)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(login(&b.state, "ana", PASSWORD, [10, 0, 0, 9]).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(login(&b.state, "ana", "another long passphrase", [10, 0, 0, 9]).await.status, StatusCode::OK);
    // Too short a password is refused with the reason.
    let short = web::hash_password("short").unwrap_err();
    assert!(short.contains("at least 12"), "{short}");
    // The absolute timeout ends even an active session.
    let cookie = cookie_pair(&login(&b.state, "ana", "another long passphrase", [10, 0, 0, 9]).await);
    for _ in 0..30 {
        b.clock.0.fetch_add(25 * 60 * 1000, Ordering::SeqCst);
        if call(&b.state, Call::new(Method::GET, "/api/v1/auth/me").cookie(&cookie)).await.status != StatusCode::OK {
            break;
        }
    }
    let age = 30 * 25 * 60 * 1000;
    assert!(AuthConfig::default().absolute_timeout_ms < age);
    assert_eq!(
        call(&b.state, Call::new(Method::GET, "/api/v1/auth/me").cookie(&cookie)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let actions: Vec<String> = b.state.store.audit_page(0, 500, None).unwrap().into_iter().map(|e| e.action).collect();
    for action in ["login", "login.failed", "logout", "user.password", "user.add"] {
        assert!(actions.iter().any(|a| a == action), "{action} not audited: {actions:?}");
    }
}

#[tokio::test]
async fn login_limits_hold_across_a_restart_and_spare_an_admin_elsewhere() {
    let b = boot();
    b.user("root", Role::Admin);
    let (attacker, home, elsewhere) = ([10, 0, 0, 66], [10, 0, 0, 2], [10, 0, 0, 3]);
    assert_eq!(login(&b.state, "root", PASSWORD, home).await.status, StatusCode::OK);
    for _ in 0..10 {
        assert_eq!(login(&b.state, "root", "guess guess guess", attacker).await.status, StatusCode::UNAUTHORIZED);
    }
    let limited = login(&b.state, "root", PASSWORD, attacker).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS, "even the right password waits");
    assert!(limited.headers.contains_key(header::RETRY_AFTER));
    assert_error_shape(&limited, "rate limited");

    // A restart: the same state directory, a new router.
    let again = app(b.dir.path(), b.clock.clone());
    assert_eq!(login(&again, "root", PASSWORD, attacker).await.status, StatusCode::TOO_MANY_REQUESTS);
    // The admin's usual address is not locked out by the flood against the account.
    assert_eq!(login(&again, "root", PASSWORD, home).await.status, StatusCode::OK);
    // A new address waits at most a minute after the last failure, then gets in.
    let new = login(&again, "root", PASSWORD, elsewhere).await;
    assert_eq!(new.status, StatusCode::TOO_MANY_REQUESTS);
    let wait: i64 = new.headers[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    b.clock.0.fetch_add(61_000, Ordering::SeqCst);
    assert_eq!(login(&again, "root", PASSWORD, elsewhere).await.status, StatusCode::OK);
    // The attacker's address stays refused for the window.
    assert_eq!(login(&again, "root", PASSWORD, attacker).await.status, StatusCode::TOO_MANY_REQUESTS);
    let audit = again.store.audit_page(0, 500, Some("login")).unwrap();
    assert_eq!(audit.iter().filter(|e| e.action == "login.failed").count(), 10);
    assert!(audit.iter().any(|e| e.action == "login.rate_limited"));
}

/// Issue 15, item 5: what anonymous callers make the audit log hold is bounded. Failed
/// logins log the name cut and escaped; refused ones are counted, with one audit entry
/// per address and window saying how many the previous window refused; bodies beyond a
/// few KiB are refused before anything is written.
#[tokio::test]
async fn r15_5_anonymous_logins_grow_the_audit_log_by_a_bounded_amount() {
    let b = boot();
    b.user("root", Role::Admin);
    let audit_bytes = |state: &AppState| -> (usize, usize) {
        let entries = state.store.audit_page(0, 10_000, None).unwrap();
        let bytes = entries.iter().map(|e| e.actor.len() + e.subject.len() + e.detail.to_string().len()).sum();
        (entries.len(), bytes)
    };
    let (entries_before, bytes_before) = audit_bytes(&b.state);
    let attacker = [10, 0, 0, 66];
    // A login body of 2 MiB is refused outright, in the error shape.
    let huge = login(&b.state, &"x".repeat(2 << 20), "p", attacker).await;
    assert_eq!(huge.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error_shape(&huge, "2 MiB login");
    assert_eq!(huge.json()["code"], "payload_too_large");
    // Names as long as a small body allows, with characters a log viewer might act on.
    let name = format!("\u{202e}{}\n", "é".repeat(1500));
    for _ in 0..10 {
        assert_eq!(login(&b.state, &name, "guess guess guess", attacker).await.status, StatusCode::UNAUTHORIZED);
    }
    for _ in 0..200 {
        assert_eq!(login(&b.state, &name, PASSWORD, attacker).await.status, StatusCode::TOO_MANY_REQUESTS);
    }
    let (entries, bytes) = audit_bytes(&b.state);
    assert_eq!(entries - entries_before, 11, "10 failures and one refusal window");
    assert!(bytes - bytes_before < 11 * 400, "{} bytes for 11 entries", bytes - bytes_before);
    let failed = b.state.store.audit_page(0, 500, Some("login.failed")).unwrap();
    assert!(failed[0].actor.starts_with("(invalid) \\u{202e}éé") && failed[0].actor.ends_with("(1502 characters)"));
    // The refusals are counted: in the status, and in the next window's audit entry.
    let status = call(&b.state, Call::new(Method::GET, "/api/v1/status").ip([127, 0, 0, 1])).await;
    assert_eq!(status.json()["logins_refused"], 200);
    b.clock.0.fetch_add(15 * 60 * 1000 + 1000, Ordering::SeqCst);
    for _ in 0..10 {
        assert_eq!(login(&b.state, "root", "guess", attacker).await.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(login(&b.state, "root", PASSWORD, attacker).await.status, StatusCode::TOO_MANY_REQUESTS);
    let refused = b.state.store.audit_page(0, 500, Some("login.rate_limited")).unwrap();
    assert_eq!(refused.len(), 2);
    assert_eq!(refused[0].detail["ip"], "10.0.0.66");
    assert_eq!(refused[1].detail["previous_window"]["refused"], 200);
}

/// Issue 15, item 11: behind a trusted proxy, limits count per real client, and a
/// remote client reached through it is not "on the box"; from anyone else,
/// `X-Forwarded-For` is ignored.
#[tokio::test]
async fn r15_11_a_trusted_proxy_forwards_the_client_and_nobody_else_can() {
    let b = boot();
    b.user("root", Role::Admin);
    let config = AuthConfig { trusted_proxies: vec!["127.0.0.1".parse().unwrap()], ..box_config() };
    let proxied = app_with(b.dir.path(), b.clock.clone(), config);
    let via_proxy = |client: &'static str, name: &'static str, password: &'static str| {
        Call::new(Method::POST, "/api/v1/auth/login")
            .json(json!({ "name": name, "password": password }))
            .ip([127, 0, 0, 1])
            .forwarded(client)
    };
    for _ in 0..10 {
        let guess = call(&proxied, via_proxy("192.168.1.66", "nobody", "guess guess guess")).await;
        assert_eq!(guess.status, StatusCode::UNAUTHORIZED);
    }
    let limited = call(&proxied, via_proxy("192.168.1.66", "root", PASSWORD)).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    // Another client through the same proxy is not caught by the first one's limit.
    let other = call(&proxied, via_proxy("6.6.6.6, 192.168.1.7", "root", PASSWORD)).await;
    assert_eq!(other.status, StatusCode::OK, "{}", String::from_utf8_lossy(&other.body));
    let audit = proxied.store.audit_page(0, 500, Some("login")).unwrap();
    assert!(audit.iter().any(|e| e.action == "login" && e.detail["ip"] == "192.168.1.7"), "{audit:?}");

    // Status and metrics: a client through the proxy needs a session, whether it is
    // remote or the proxy forwards no client or only itself (it cannot tell who is
    // local). Loopback callers that are not the proxy need none.
    for path in ["/metrics", "/api/v1/status"] {
        for forwarded in [Some("192.168.1.7"), None, Some("127.0.0.1")] {
            let mut c = Call::new(Method::GET, path).ip([127, 0, 0, 1]);
            c.forwarded = forwarded;
            let a = call(&proxied, c).await;
            assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{path} through the proxy for {forwarded:?}");
            assert_error_shape(&a, path);
        }
        let local = call(&proxied, Call::new(Method::GET, path).ip([127, 0, 0, 2])).await;
        assert_eq!(local.status, StatusCode::OK, "{path} from the box, not through the proxy");
    }

    // Trusting nobody (the default): what a client forwards is ignored.
    for i in 0..11 {
        let forged = format!("10.1.0.{i}");
        let forged: &'static str = Box::leak(forged.into_boxed_str());
        let a = call(
            &b.state,
            Call::new(Method::POST, "/api/v1/auth/login")
                .json(json!({ "name": "root", "password": "guess guess guess" }))
                .ip([10, 0, 0, 77])
                .forwarded(forged),
        )
        .await;
        let expected = if i < 10 { StatusCode::UNAUTHORIZED } else { StatusCode::TOO_MANY_REQUESTS };
        assert_eq!(a.status, expected, "attempt {i}");
    }
    let forged = call(&b.state, Call::new(Method::GET, "/metrics").ip([10, 0, 0, 77]).forwarded("127.0.0.1")).await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_setup_code_creates_the_first_admin_once() {
    let b = boot();
    assert_eq!(call(&b.state, Call::new(Method::GET, "/api/v1/setup")).await.json()["pending"], false);
    let code = web::new_setup_code(&*b.state.store).unwrap();
    assert_eq!(call(&b.state, Call::new(Method::GET, "/api/v1/setup")).await.json()["pending"], true);
    let setup = |code: String, name: &'static str| {
        Call::new(Method::POST, "/api/v1/setup").json(json!({ "code": code, "name": name, "password": PASSWORD }))
    };
    let wrong = call(&b.state, setup("AAAA-BBBB-CCCC-DDDD".into(), "eve")).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert!(wrong.json()["message"].as_str().unwrap().contains("obscura user setup-code"));
    // Typed on a tablet: lower case and no dashes work.
    let typed = code.replace('-', " ").to_lowercase();
    let first = call(&b.state, setup(typed, "ada")).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&first.body));
    assert_eq!(first.json()["role"], "admin");
    assert_eq!(call(&b.state, setup(code.clone(), "mallory")).await.status, StatusCode::FORBIDDEN, "never again");
    assert_eq!(call(&b.state, Call::new(Method::GET, "/api/v1/setup")).await.json()["pending"], false);
    assert_eq!(login(&b.state, "ada", PASSWORD, [10, 0, 0, 9]).await.status, StatusCode::OK);

    // A code expires after 24 h.
    let other = boot();
    let code = web::new_setup_code(&*other.state.store).unwrap();
    other.clock.0.fetch_add(24 * 3600 * 1000 + 1, Ordering::SeqCst);
    assert_eq!(call(&other.state, setup(code, "late")).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn errors_share_one_shape_and_responses_carry_security_headers() {
    let b = boot();
    let admin = b.user("ada", Role::Admin);
    let (cookie, _) = b.session(admin);
    let cases = [
        call(&b.state, Call::new(Method::GET, "/nope")).await,
        call(&b.state, Call::new(Method::GET, "/api/v1/nope").cookie(&cookie)).await,
        call(&b.state, Call::new(Method::DELETE, "/api/v1/labels").cookie(&cookie)).await,
        call(&b.state, Call::new(Method::POST, "/api/v1/users").cookie(&cookie).json(json!({ "name": 3 }))).await,
        call(
            &b.state,
            Call::new(Method::PUT, "/api/v1/labels").cookie(&cookie).json(json!([{ "name": "car", "color": "red" }])),
        )
        .await,
        call(&b.state, Call::new(Method::GET, "/api/v1/frames?limit=100000").cookie(&cookie)).await,
        call(
            &b.state,
            Call::new(Method::PUT, "/api/v1/labels").cookie(&cookie).json(json!({ "x": "y".repeat(3 << 20) })),
        )
        .await,
    ];
    let statuses: Vec<u16> = cases.iter().map(|a| a.status.as_u16()).collect();
    assert_eq!(statuses, [404, 404, 405, 422, 422, 400, 413]);
    for a in &cases {
        assert_error_shape(a, &format!("{}", a.status));
    }
    let csp = cases[0].headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(cases[0].headers["x-content-type-options"], "nosniff");
    assert_eq!(cases[0].headers["referrer-policy"], "no-referrer");
    assert!(cases[0].headers.contains_key("permissions-policy"));
    // The OpenAPI document is served, and describes the error shape.
    let doc = call(&b.state, Call::new(Method::GET, "/api/v1/openapi.json").cookie(&cookie)).await;
    assert_eq!(doc.status, StatusCode::OK);
    let doc = doc.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["components"]["schemas"]["ApiError"].is_object());
}

/// Issue 15, item 16: a body over the limit is a 413 in the error shape, whether it
/// announced its length or not, for the API's 2 MiB and login's few KiB alike.
#[tokio::test]
async fn r15_16_an_over_limit_body_is_413_in_the_error_shape_with_or_without_a_length() {
    let b = boot();
    let admin = b.user("ada", Role::Admin);
    let (cookie, _) = b.session(admin);
    for (path, size) in [("/api/v1/labels", 3 << 20), ("/api/v1/auth/login", 8 << 10)] {
        for chunked in [false, true] {
            let body = format!("{{\"name\": \"{}\"}}", "y".repeat(size));
            let mut request = Request::builder()
                .method(if path == "/api/v1/labels" { Method::PUT } else { Method::POST })
                .uri(path)
                .header(header::HOST, HOST)
                .header(header::ORIGIN, "https://box.local:8443")
                .header(header::COOKIE, &cookie)
                .header(header::CONTENT_TYPE, "application/json");
            let body = if chunked {
                let chunks =
                    body.into_bytes().chunks(64 << 10).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>();
                Body::from_stream(futures_util::stream::iter(chunks))
            } else {
                request = request.header(header::CONTENT_LENGTH, body.len());
                Body::from(body)
            };
            let mut request = request.body(body).unwrap();
            request.extensions_mut().insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 9], 50000))));
            let response = web::router(b.state.clone()).oneshot(request).await.unwrap();
            let a = Answer {
                status: response.status(),
                headers: response.headers().clone(),
                body: response.into_body().collect().await.unwrap().to_bytes().to_vec(),
            };
            let context = format!("{path} chunked={chunked}");
            assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{context}");
            assert_error_shape(&a, &context);
            assert_eq!(a.json()["code"], "payload_too_large", "{context}");
        }
    }
}

fn stored_frame(store: &Store) -> store::FrameId {
    stored_frame_at(store, 1_799_999_000_000)
}

/// A frame of camera `gate` captured at `wall_ms`, anonymized for real and stored.
fn stored_frame_at(store: &Store, wall_ms: u64) -> store::FrameId {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let faces = onnx::CenterFace::load(
        &root.join("models"),
        onnx::InputSize { width: 320, height: 320 },
        0.4,
        &onnx::Backend::Tract,
    )
    .unwrap();
    let anonymizer = anonymize::Anonymizer::new(
        vec![anonymize::Pass { detector: Arc::new(faces), tiles: 0, scope: anonymize::Scope::Frame }],
        anonymize::Settings::default(),
    );
    let img = image::open(root.join("tests/fixtures/face_trackingjs_group3.jpg")).unwrap().into_rgb8();
    let meta = frame::FrameMeta {
        camera: Arc::from("gate"),
        seq: 1,
        monotonic: std::time::Instant::now(),
        wall: std::time::UNIX_EPOCH + std::time::Duration::from_millis(wall_ms),
        media_time: None,
    };
    let raw = frame::RawFrame::new(meta, img.width(), img.height(), img.into_raw()).unwrap();
    let frame = anonymizer.anonymize(raw, None).unwrap();
    match store.put_frames(&[(&frame, json!({}))], store::NoConsent::Drop).unwrap()[0] {
        store::Stored::Kept { id, .. } => id,
        store::Stored::NoConsent | store::Stored::Erased => panic!("dropped"),
    }
}

/// The next chunk of a streaming body, within 10 s.
async fn next_part(body: &mut Body) -> Vec<u8> {
    let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame()).await;
    frame.expect("a part within 10 s").unwrap().unwrap().into_data().unwrap().to_vec()
}

/// Issue 18, item 9: long work shows progress. A download, an access export and an
/// import carry a token of the caller's; `/progress/{token}` says how far each is, to
/// that caller only. The app uploads COCO and CVAT files as `obscura import` reads them.
#[tokio::test]
async fn r18_9_downloads_access_exports_and_imports_report_their_progress_to_their_caller() {
    let b = boot();
    let (ada, stew) = (b.user("ada", Role::Admin), b.user("stew", Role::Steward));
    let ((ada, _), (stew, _)) = (b.session(ada), b.session(stew));
    let consent = Call::new(Method::POST, "/api/v1/consents").cookie(&stew).json(json!({
        "scope": "camera:gate", "covered": "site staff", "legal_basis": "consent (signed forms)",
        "purposes": ["annotate", "train"], "valid_from": 0,
    }));
    assert_eq!(call(&b.state, consent).await.status, StatusCode::CREATED);
    let id = stored_frame(&b.state.store);
    let progress = |cookie: &str, token: &str| {
        let path = format!("/api/v1/progress/{token}");
        let (state, cookie) = (b.state.clone(), cookie.to_owned());
        async move { call(&state, Call::new(Method::GET, &path).cookie(&cookie)).await }
    };
    // Nothing started under this token yet.
    assert_eq!(progress(&ada, "dl-0001-abcd").await.status, StatusCode::NOT_FOUND);

    let zip =
        call(&b.state, Call::new(Method::GET, "/api/v1/exports?format=coco&progress=dl-0001-abcd").cookie(&ada)).await;
    assert_eq!(zip.status, StatusCode::OK);
    let step = progress(&ada, "dl-0001-abcd").await.json();
    assert_eq!(step, json!({ "what": "export", "done": 1, "total": 1, "finished": true }));
    assert_eq!(progress(&stew, "dl-0001-abcd").await.status, StatusCode::NOT_FOUND, "only its caller sees it");

    let access = Call::new(Method::POST, "/api/v1/access-exports").cookie(&stew).json(json!({
        "camera": "gate", "from": 0, "until": 1_900_000_000_000i64, "progress": "access_0001",
    }));
    assert_eq!(call(&b.state, access).await.status, StatusCode::OK);
    let step = progress(&stew, "access_0001").await.json();
    assert_eq!(step, json!({ "what": "access_export", "done": 1, "total": 1, "finished": true }));

    // An import: a COCO file naming the frame by its file name, and one it does not know.
    let coco = json!({
        "categories": [{ "id": 1, "name": "person" }],
        "images": [{ "id": 1, "file_name": format!("{id}.jpg") }, { "id": 2, "file_name": "elsewhere.jpg" }],
        "annotations": [{ "id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 20, 30, 40] }],
    });
    let import = |query: &str, body: Vec<u8>| {
        let (state, cookie, path) = (b.state.clone(), ada.clone(), format!("/api/v1/imports?{query}"));
        async move {
            let mut request = Request::builder()
                .method(Method::POST)
                .uri(path)
                .header(header::HOST, HOST)
                .header(header::ORIGIN, "https://box.local:8443")
                .header(header::COOKIE, cookie)
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .body(Body::from(body))
                .unwrap();
            request.extensions_mut().insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 9], 50000))));
            let response = web::router(state).oneshot(request).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null))
        }
    };
    let (status, report) =
        import("format=coco&name=site.json&progress=import-0001", coco.to_string().into_bytes()).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (report["images"].clone(), report["by_name"].clone(), report["updated"].clone()),
        (json!(2), json!(1), json!(1))
    );
    assert_eq!(report["unmatched"], json!(["elsewhere.jpg"]));
    let step = progress(&ada, "import-0001").await.json();
    assert_eq!(step, json!({ "what": "import", "done": 2, "total": 2, "finished": true }));
    let saved = call(&b.state, Call::new(Method::GET, &format!("/api/v1/frames/{id}/annotations")).cookie(&ada)).await;
    assert_eq!(saved.json()["shapes"][0]["points"], json!([10.0, 20.0, 40.0, 60.0]));
    assert_eq!(saved.json()["author"], "ada");
    // A file that is not what it says is named, with what is wrong; nothing changes.
    let (status, error) = import("format=cvat&name=site.xml", b"{not xml".to_vec()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert!(error["message"].as_str().unwrap().starts_with("site.xml is not a CVAT"), "{error}");
    let (status, error) = import("format=yolo", b"x".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
}

/// Issue 18, item 7 (the first live frame took 2.1 s): a browser shows a multipart part
/// only once it sees where the part ends, so each part is closed by the next boundary at
/// once; a new watcher is sent the fresh live frame, or the newest recent stored one,
/// without waiting for the camera's next sampled frame.
#[tokio::test]
async fn r18_7_the_live_view_shows_a_picture_at_once_each_part_closed_by_the_next_boundary() {
    const PART: &[u8] = b"--frame\r\nContent-Type: image/jpeg\r\n\r\n";
    let b = boot();
    let (ada, stew) = (b.user("ada", Role::Admin), b.user("stew", Role::Steward));
    let ((ada, _), (stew, _)) = (b.session(ada), b.session(stew));
    let consent = Call::new(Method::POST, "/api/v1/consents").cookie(&stew).json(json!({
        "scope": "camera:gate", "covered": "site staff", "legal_basis": "consent (signed forms)",
        "purposes": ["annotate"], "valid_from": 0,
    }));
    assert_eq!(call(&b.state, consent).await.status, StatusCode::CREATED);
    let watch = |state: AppState| {
        let cookie = ada.clone();
        async move {
            let mut request = Request::builder()
                .uri("/api/v1/cameras/gate/live")
                .header(header::HOST, HOST)
                .header(header::COOKIE, cookie)
                .body(Body::empty())
                .unwrap();
            request.extensions_mut().insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 9], 50000))));
            let response = web::router(state).oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.into_body()
        }
    };
    let live = |state: &AppState| {
        let mut state = state.clone();
        state.live = Arc::new(web::live::LiveHub::new(["gate"]));
        state
    };

    // Nothing live, nothing stored: the stream opens with its first boundary and waits.
    let state = live(&b.state);
    let mut first = watch(state.clone()).await;
    assert_eq!(next_part(&mut first).await, PART);
    // A live frame arrives closed by the next boundary, so a browser shows it now.
    let jpeg = b"\xff\xd8 a live frame \xff\xd9".to_vec();
    state.live.publish("gate", jpeg.clone());
    assert_eq!(next_part(&mut first).await, [&jpeg[..], b"\r\n", PART].concat());
    // A second watcher is sent that fresh frame at once: nothing more is published.
    let mut second = watch(state.clone()).await;
    let mut got = next_part(&mut second).await;
    got.extend(next_part(&mut second).await);
    assert_eq!(got, [PART, &jpeg[..], b"\r\n", PART].concat());

    // Nothing live yet but a frame stored a moment ago: it opens the stream, at most
    // the live width, the anonymized JPEG as stored.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let id = stored_frame_at(&b.state.store, now);
    let mut third = watch(live(&b.state)).await;
    let got = next_part(&mut third).await;
    assert!(got.starts_with(PART) && got.ends_with(&[b"\r\n", PART].concat()), "one whole part, closed");
    let stored = &got[PART.len()..got.len() - PART.len() - 2];
    let shown = image::load_from_memory(stored).unwrap();
    let row = b.state.store.frame(id).unwrap();
    assert!(shown.width() <= web::live::WIDTH && shown.width().min(row.width) == shown.width());
    if row.width <= web::live::WIDTH {
        assert_eq!(stored, b.state.store.frame_jpeg(id).unwrap(), "the stored JPEG, as it is");
    }
}

/// Issue 18, item 3: a label carries instructions and an example cut from a frame
/// annotators can see; the example follows its frame's erasure.
#[tokio::test]
async fn r18_3_labels_carry_instructions_and_an_example_that_erasure_takes_along() {
    let b = boot();
    let (ada, ana, stew) = (b.user("ada", Role::Admin), b.user("ana", Role::Annotator), b.user("stew", Role::Steward));
    let ((ada, _), (ana, _), (stew, _)) = (b.session(ada), b.session(ana), b.session(stew));
    let consent = |purpose: &str| {
        Call::new(Method::POST, "/api/v1/consents").cookie(&stew).json(json!({
            "scope": "camera:gate", "covered": "site staff", "legal_basis": "consent (signed forms)",
            "purposes": [purpose], "valid_from": 0,
        }))
    };
    assert_eq!(call(&b.state, consent("annotate")).await.status, StatusCode::CREATED);
    let id = stored_frame(&b.state.store);
    let put = |labels: Value| Call::new(Method::PUT, "/api/v1/labels").cookie(&ada).json(labels);
    let person = |example: Value| {
        json!([{ "name": "person", "color": "#e69f00", "shape": "box",
                 "instructions": "The whole visible body, tight to its edges.", "example": example }])
    };
    // A frame annotators cannot open cannot be their example.
    let closed = call(&b.state, put(person(json!({ "frame": id.0 + 1000, "box": [10, 20, 100, 200] })))).await;
    assert_eq!(closed.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        closed.json()["message"].as_str().unwrap().contains("no consent lets annotators see it"),
        "{}",
        closed.json()
    );
    // A box outside the frame, and instructions past the limit, are refused with why.
    let width = b.state.store.frame(id).unwrap().width;
    let outside = call(&b.state, put(person(json!({ "frame": id.0, "box": [width - 10, 0, 50, 50] })))).await;
    assert_eq!(outside.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(outside.json()["message"].as_str().unwrap().contains("is not inside frame"), "{}", outside.json());
    let long = json!([{ "name": "person", "instructions": "x".repeat(store::MAX_INSTRUCTIONS + 1) }]);
    let long = call(&b.state, put(long)).await;
    assert_eq!(long.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(long.json()["message"].as_str().unwrap().contains("keep them to 2000"), "{}", long.json());

    let saved = call(&b.state, put(person(json!({ "frame": id.0, "box": [10, 20, 100, 200] })))).await;
    assert_eq!(saved.status, StatusCode::OK, "{}", String::from_utf8_lossy(&saved.body));
    let labels = call(&b.state, Call::new(Method::GET, "/api/v1/labels").cookie(&ana)).await.json();
    assert_eq!(labels[0]["instructions"], "The whole visible body, tight to its edges.");
    assert_eq!(labels[0]["example"], json!({ "frame": id.0, "box": [10.0, 20.0, 100.0, 200.0] }));
    // The example is the box and a fifth around it, cut from the anonymized frame.
    let example = call(&b.state, Call::new(Method::GET, "/api/v1/labels/person/example").cookie(&ana)).await;
    assert_eq!(example.status, StatusCode::OK);
    assert_eq!(example.headers[header::CONTENT_TYPE], "image/jpeg");
    let crop = image::load_from_memory(&example.body).unwrap();
    assert_eq!((crop.width(), crop.height()), (131, 261), "x 0..131 (10 - 20 clamped to 0), y 0..261");
    let none = call(&b.state, Call::new(Method::GET, "/api/v1/labels/nobody/example").cookie(&ana)).await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);

    // Erasing the frame takes the example with it; the instructions stay.
    let erased = call(
        &b.state,
        Call::new(Method::POST, "/api/v1/erasures").cookie(&stew).json(json!({ "frames": [id.0], "reason": "DSR-18" })),
    )
    .await;
    assert_eq!(erased.status, StatusCode::OK, "{}", String::from_utf8_lossy(&erased.body));
    let labels = call(&b.state, Call::new(Method::GET, "/api/v1/labels").cookie(&ana)).await.json();
    assert_eq!(labels[0]["example"], Value::Null);
    assert_eq!(labels[0]["instructions"], "The whole visible body, tight to its edges.");
    let gone = call(&b.state, Call::new(Method::GET, "/api/v1/labels/person/example").cookie(&ana)).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn annotators_claim_save_and_conflict_and_reviewers_send_work_back() {
    let b = boot();
    let (ana, bob, rev, stew) = (
        b.user("ana", Role::Annotator),
        b.user("bob", Role::Annotator),
        b.user("rev", Role::Reviewer),
        b.user("stew", Role::Steward),
    );
    let (ana, _) = b.session(ana);
    let (bob, _) = b.session(bob);
    let (rev, _) = b.session(rev);
    let (stew, _) = b.session(stew);
    let consent = call(
        &b.state,
        Call::new(Method::POST, "/api/v1/consents").cookie(&stew).json(json!({
            "scope": "camera:gate", "covered": "site staff", "legal_basis": "consent (signed forms)",
            "purposes": ["annotate", "train"], "valid_from": 0,
        })),
    )
    .await;
    assert_eq!(consent.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&consent.body));
    let consent_id = consent.json()["id"].as_str().unwrap().to_owned();
    let id = stored_frame(&b.state.store);

    let list = call(&b.state, Call::new(Method::GET, "/api/v1/frames?camera=gate").cookie(&ana)).await.json();
    assert_eq!(list["items"][0]["id"], id.0);
    let claimed = call(&b.state, Call::new(Method::POST, "/api/v1/queues/1/claim").cookie(&ana)).await;
    assert_eq!(claimed.json()["id"], id.0);
    // Bob finds nothing: the frame is Ana's while her claim lasts.
    assert_eq!(
        call(&b.state, Call::new(Method::POST, "/api/v1/queues/1/claim").cookie(&bob)).await.status,
        StatusCode::NO_CONTENT
    );

    // The image is the stored, anonymized JPEG; a thumbnail is smaller.
    let image = call(&b.state, Call::new(Method::GET, &format!("/api/v1/frames/{id}/image")).cookie(&ana)).await;
    assert_eq!(image.headers[header::CONTENT_TYPE], "image/jpeg");
    assert_eq!(image.body, b.state.store.frame_jpeg(id).unwrap());
    let thumb =
        call(&b.state, Call::new(Method::GET, &format!("/api/v1/frames/{id}/image?size=64")).cookie(&ana)).await;
    let small = image::load_from_memory(&thumb.body).unwrap();
    assert_eq!(small.width().max(small.height()), 64);
    let detections =
        call(&b.state, Call::new(Method::GET, &format!("/api/v1/frames/{id}/detections")).cookie(&ana)).await.json();
    assert!(detections["redactions"].as_array().unwrap().len() >= 3, "the redacted faces are marked: {detections}");

    let path = format!("/api/v1/frames/{id}/annotations");
    let shapes = json!([{ "type": "box", "label": "person", "points": [10, 20, 110, 220], "attributes": {} }]);
    let saved =
        call(&b.state, Call::new(Method::PUT, &path).cookie(&ana).json(json!({ "base": 0, "shapes": shapes }))).await;
    assert_eq!(saved.json()["version"], 1);
    // Bob started from nothing too: told, not overwritten.
    let stale =
        call(&b.state, Call::new(Method::PUT, &path).cookie(&bob).json(json!({ "base": 0, "shapes": [] }))).await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    assert_eq!(stale.json()["details"], json!({ "current": 1, "author": "ana" }));
    assert_eq!(call(&b.state, Call::new(Method::GET, &path).cookie(&bob)).await.json()["shapes"], shapes);
    let bad = call(
        &b.state,
        Call::new(Method::PUT, &path)
            .cookie(&ana)
            .json(json!({ "base": 1, "shapes": [{ "type": "box", "points": [1] }] })),
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);

    // A save is a draft: nothing to review until it is submitted.
    let reviews = format!("/api/v1/frames/{id}/reviews");
    let submit = format!("/api/v1/frames/{id}/submit");
    let early = call(
        &b.state,
        Call::new(Method::POST, &reviews).cookie(&rev).json(json!({ "version": 1, "decision": "accept" })),
    )
    .await;
    assert_eq!(early.status, StatusCode::UNPROCESSABLE_ENTITY, "a draft is not reviewed");
    let submitted = call(&b.state, Call::new(Method::POST, &submit).cookie(&ana).json(json!({ "version": 1 }))).await;
    assert_eq!((submitted.status, submitted.json()["status"].clone()), (StatusCode::OK, json!("annotated")));

    // Review: rejected with a comment, the frame returns to the queue with the reason.
    let reject = call(
        &b.state,
        Call::new(Method::POST, &reviews)
            .cookie(&rev)
            .json(json!({ "version": 1, "decision": "reject", "comment": "box the cyclist too" })),
    )
    .await;
    assert_eq!(reject.status, StatusCode::CREATED);
    let back = call(&b.state, Call::new(Method::POST, "/api/v1/queues/1/claim").cookie(&bob)).await.json();
    assert_eq!(back["id"], id.0, "a rejected frame is offered first");
    let detail = call(&b.state, Call::new(Method::GET, &format!("/api/v1/frames/{id}")).cookie(&bob)).await.json();
    assert_eq!(detail["status"], "rejected");
    assert_eq!(detail["last_review"]["comment"], "box the cyclist too");
    let more =
        json!([shapes[0], { "type": "box", "label": "bicycle", "points": [200, 200, 260, 280], "attributes": {} }]);
    assert_eq!(
        call(&b.state, Call::new(Method::PUT, &path).cookie(&bob).json(json!({ "base": 1, "shapes": more })))
            .await
            .json()["version"],
        2
    );
    assert_eq!(
        call(&b.state, Call::new(Method::POST, &submit).cookie(&bob).json(json!({ "version": 2 }))).await.status,
        StatusCode::OK
    );
    let stale_review = call(
        &b.state,
        Call::new(Method::POST, &reviews).cookie(&rev).json(json!({ "version": 1, "decision": "accept" })),
    )
    .await;
    assert_eq!(stale_review.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        call(
            &b.state,
            Call::new(Method::POST, &reviews).cookie(&rev).json(json!({ "version": 2, "decision": "accept" }))
        )
        .await
        .status,
        StatusCode::CREATED
    );
    let queues = call(&b.state, Call::new(Method::GET, "/api/v1/queues").cookie(&ana)).await.json();
    assert_eq!(queues[0]["counts"]["accepted"], 1);
    // An edit after acceptance reopens the frame; the accepted version is what exports.
    let edit = json!([{ "type": "box", "label": "person", "points": [11, 20, 110, 220], "attributes": {} }]);
    assert_eq!(
        call(&b.state, Call::new(Method::PUT, &path).cookie(&ana).json(json!({ "base": 2, "shapes": edit })))
            .await
            .json()["version"],
        3
    );
    let detail = call(&b.state, Call::new(Method::GET, &format!("/api/v1/frames/{id}")).cookie(&ana)).await.json();
    assert_eq!((detail["status"].clone(), detail["accepted_version"].clone()), (json!("in_progress"), json!(2)));

    // The steward downloads the dataset as a zip; it is audited.
    let zip = call(&b.state, Call::new(Method::GET, "/api/v1/exports?format=coco&status=accepted").cookie(&stew)).await;
    assert_eq!(zip.headers[header::CONTENT_TYPE], "application/zip");
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip.body)).unwrap();
    let coco: Value = serde_json::from_reader(archive.by_name("annotations/instances_default.json").unwrap()).unwrap();
    assert_eq!(coco["annotations"].as_array().unwrap().len(), 2, "version 2's two boxes, not the draft's one");
    assert!(b.state.store.audit_page(0, 500, Some("export")).unwrap().len() == 1);

    // Absurd times are answered, not a crash (found by schemathesis: RFC 3339 ends at 9999).
    let far = call(
        &b.state,
        Call::new(Method::POST, "/api/v1/access-exports")
            .cookie(&stew)
            .json(json!({ "camera": "gate", "from": 0, "until": i64::MAX - 1 })),
    )
    .await;
    assert_eq!(far.status, StatusCode::OK);

    // Erasing by a consent that does not exist is not a success that erased nothing.
    let missing = call(
        &b.state,
        Call::new(Method::POST, "/api/v1/erasures")
            .cookie(&stew)
            .json(json!({ "consent": "c99", "reason": "ticket 7" })),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.json()["message"].as_str().unwrap().contains("c99"));

    // Withdrawn: the frame is gone from annotators' view at once.
    let w =
        call(&b.state, Call::new(Method::POST, &format!("/api/v1/consents/{consent_id}/withdraw")).cookie(&stew)).await;
    assert_eq!(w.status, StatusCode::OK);
    assert_eq!(
        call(&b.state, Call::new(Method::GET, &format!("/api/v1/frames/{id}")).cookie(&ana)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(call(&b.state, Call::new(Method::GET, "/api/v1/frames").cookie(&ana)).await.json()["items"], json!([]));
}

/// Issue 18: a dataset export with no frame in it was an empty zip and "Dataset
/// downloaded". It is refused, saying why and what to do.
#[tokio::test]
async fn an_export_with_no_frame_says_why_instead_of_an_empty_zip() {
    let b = boot();
    let (stew, _) = b.session(b.user("stew", Role::Steward));
    let export = |query: &'static str| {
        let stew = stew.clone();
        let state = b.state.clone();
        async move { call(&state, Call::new(Method::GET, &format!("/api/v1/exports?{query}")).cookie(&stew)).await }
    };
    let none = export("format=coco").await;
    assert_eq!(none.status, StatusCode::CONFLICT);
    assert_error_shape(&none, "an empty box");
    assert_eq!(none.json()["code"], "no_frames");

    let consent = call(
        &b.state,
        Call::new(Method::POST, "/api/v1/consents").cookie(&stew).json(json!({
            "scope": "camera:gate", "covered": "site staff", "legal_basis": "consent (signed forms)",
            "purposes": ["annotate"], "valid_from": 0,
        })),
    )
    .await;
    assert_eq!(consent.status, StatusCode::CREATED);
    stored_frame(&b.state.store);
    let refused = export("format=coco&purpose=train").await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(refused.json()["code"], "no_consent");
    let message = refused.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("no frame here is consented for `train`"), "{message}");
    assert!(message.contains("obscura consent add --purpose train"), "{message}");
    assert!(message.contains("frames captured from its start"), "{message}");
    assert!(b.state.store.audit_page(0, 500, Some("export")).unwrap().is_empty(), "nothing was exported");

    let zip = export("format=coco&purpose=annotate").await;
    assert_eq!(zip.status, StatusCode::OK);
    assert_eq!(zip.headers[header::CONTENT_TYPE], "application/zip");
    let none = export("format=coco&purpose=annotate&camera=yard").await;
    assert_eq!(none.json()["code"], "no_frames");
}
