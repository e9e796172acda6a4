//! Issue 20, items 5 and 6, against real servers: the box's HTTP (`web::serve`) and the
//! hub's HTTPS (`web::tls::serve` with the hub's router and its own certificate), each on
//! a free loopback port, driven by raw sockets bound to chosen loopback addresses
//! (127.0.0.0/8 is all loopback on Linux), so each "client" has an address of its own.
//!
//! What is held, on both: a 100 MB body is refused with 413 before it is sent; a JSON
//! 10,000 levels deep is a 4xx; 500 idle connections with half a request each leave
//! `/healthz` answering; one address holds at most `CONNECTIONS_PER_ADDRESS`
//! connections. On the box also the page size and the body size of a session's request;
//! on both, over HTTPS, the session cookie's attributes and sessions that end on logout,
//! a role change and disabling; on the hub the box's login limits (per address and per
//! account, across a restart).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use store::{Accounts, Role};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "correct horse battery staple";

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A server running on a loopback port, plain or TLS.
struct Server {
    addr: SocketAddr,
    /// The client's TLS settings, trusting the server's certificate only; None for HTTP.
    tls: Option<Arc<rustls::ClientConfig>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// An answer: the status, the head's lines (lowercase names) and the body.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

/// A client address on loopback: 127.0.`net`.`host`.
fn from(net: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, net, host)
}

impl Server {
    async fn connect(&self, from: Ipv4Addr) -> std::io::Result<Box<dyn Io>> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((from, 0)))?;
        let tcp = socket.connect(self.addr).await?;
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                Ok(Box::new(tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp).await?))
            }
        }
    }

    /// One request on a connection of its own from `from`: `head` is the request line
    /// and headers without the blank line; Host, Content-Length and Connection are added.
    async fn call(&self, from: Ipv4Addr, head: &str, body: &str) -> Answer {
        let mut io = self.connect(from).await.unwrap();
        let request =
            format!("{head}\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        // A server that refuses a body may answer and close while it is on its way.
        let _ = io.write_all(request.as_bytes()).await;
        read_answer(&mut io).await.expect("an answer")
    }

    async fn healthz(&self, from: Ipv4Addr) -> (u16, Duration) {
        let started = Instant::now();
        let answer = self.call(from, "GET /healthz HTTP/1.1", "").await;
        (answer.status, started.elapsed())
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task).await.unwrap().unwrap().unwrap();
    }
}

/// Reads an answer to its end (the server closes after it: `Connection: close`).
async fn read_answer(io: &mut Box<dyn Io>) -> Option<Answer> {
    let mut bytes = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(10), io.read_to_end(&mut bytes)).await.expect("answered in 10 s");
    // A TLS peer that closes without close_notify is an error after the bytes arrived.
    if read.is_err() && bytes.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some(Answer { status, head: head.to_owned(), body: body.to_owned() })
}

/// The box's router on a loopback port, over a store in `dir`, over HTTPS with its own
/// certificate (as the daemon serves it beyond loopback) or plain HTTP.
async fn a_box(dir: &Path, https: bool) -> (Server, web::AppState) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store = Arc::new(store::Store::open(dir).unwrap());
    let health = Arc::new(health::Health::new("generic".into(), vec![]));
    let origins = web::client::box_origins(https, addr.port(), ["localhost", "127.0.0.1"]);
    let config = Arc::new(web::AuthConfig { secure_cookies: https, origins, ..Default::default() });
    let state = web::AppState::new(store, health, config, "test");
    let router = web::router(state.clone());
    let server = if https { serve_tls(listener, router, dir) } else { serve_plain(listener, router) };
    (server, state)
}

/// The hub's router over HTTPS with its own certificate on a loopback port, over a hub
/// store in `dir`: what `obscura hub` serves.
async fn a_hub(dir: &Path) -> (Server, Arc<store::HubDb>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let db = Arc::new(store::HubDb::open(dir).unwrap());
    let (identity, _) = hub::HubIdentity::load_or_create(dir).unwrap();
    let hub = hub::Hub::new(db.clone(), Arc::new(identity));
    let origins = web::client::box_origins(true, addr.port(), ["localhost"]);
    let state = web::hub::HubState::new(hub, db.clone(), web::AuthConfig { origins, ..Default::default() });
    (serve_tls(listener, web::hub::hub_router(state), dir), db)
}

fn serve_plain(listener: TcpListener, router: axum::Router) -> Server {
    let (addr, stop) = (listener.local_addr().unwrap(), CancellationToken::new());
    let task = tokio::spawn(web::serve(listener, router, stop.clone().cancelled_owned()));
    Server { addr, tls: None, stop, task }
}

/// Serves over TLS with a certificate for `localhost` made in `dir/tls`; the client
/// trusts that certificate alone.
fn serve_tls(listener: TcpListener, router: axum::Router, dir: &Path) -> Server {
    use rustls::pki_types::pem::PemObject;
    let (addr, stop) = (listener.local_addr().unwrap(), CancellationToken::new());
    let (tls, _) = web::tls::load_or_create(&dir.join("tls"), &["localhost".to_owned()]).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_file(&tls.cert_path).unwrap()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let task = tokio::spawn(web::tls::serve(listener, router, tls, stop.clone().cancelled_owned()));
    Server { addr, tls: Some(Arc::new(client)), stop, task }
}

fn add_user(accounts: &dyn Accounts, name: &str, role: Role) -> i64 {
    accounts.add_user(name, role, &web::hash_password(PASSWORD).unwrap(), "test").unwrap().id
}

/// A session: the cookie pair to send back and the CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

async fn log_in(server: &Server, from: Ipv4Addr, name: &str, password: &str) -> Answer {
    let body = serde_json::json!({ "name": name, "password": password }).to_string();
    server.call(from, "POST /api/v1/auth/login HTTP/1.1\r\nContent-Type: application/json", &body).await
}

async fn session(server: &Server, from: Ipv4Addr, name: &str) -> (Session, Answer) {
    let answer = log_in(server, from, name, PASSWORD).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let cookie = answer.header("set-cookie").unwrap().split(';').next().unwrap().to_owned();
    let csrf = answer.json()["csrf"].as_str().unwrap().to_owned();
    (Session { cookie, csrf }, answer)
}

/// A request with the session's cookie and CSRF token.
async fn as_session(server: &Server, from: Ipv4Addr, s: &Session, line: &str, body: &str) -> Answer {
    let head = format!("{line}\r\nCookie: {}\r\nX-CSRF-Token: {}\r\nContent-Type: application/json", s.cookie, s.csrf);
    server.call(from, &head, body).await
}

/// A JSON object whose one field, unknown to every route, is an array `depth` levels
/// deep: the parser must walk all of it to skip it.
fn deep_json(depth: usize) -> String {
    format!("{{\"deep\":{}{}}}", "[".repeat(depth), "]".repeat(depth))
}

/// Sends the head of a request announcing `announced` bytes and 64 KiB of them; the
/// answer must come while the rest is unsent, and the server must then close.
async fn announce_huge_body(server: &Server, from: Ipv4Addr, line: &str, announced: u64) -> (u16, Duration) {
    let mut io = server.connect(from).await.unwrap();
    let head =
        format!("{line}\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {announced}\r\n\r\n");
    let started = Instant::now();
    io.write_all(head.as_bytes()).await.unwrap();
    // The server may close while these are on their way.
    let _ = io.write_all(&vec![b' '; 64 << 10]).await;
    let answer = read_answer(&mut io).await.expect("an answer before the body was sent");
    (answer.status, started.elapsed())
}

/// Opens `n` connections spread over addresses 127.0.`net`.1…, 10 an address, each with
/// half a request sent, and keeps them open.
async fn half_sent(server: &Server, net: u8, n: usize) -> Vec<Box<dyn Io>> {
    let mut open = Vec::with_capacity(n);
    for i in 0..n {
        let mut io = server.connect(from(net, 1 + (i / 10) as u8)).await.unwrap();
        io.write_all(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Le").await.unwrap();
        io.flush().await.unwrap();
        open.push(io);
    }
    open
}

/// From one address, `CONNECTIONS_PER_ADDRESS` connections are served and the next is
/// closed before TLS or HTTP, while another address is served; a closed one frees its
/// place. Returns how the refused connection ended.
async fn connections_per_address_hold(server: &Server) -> String {
    let crowd = from(3, 1);
    let mut held = Vec::new();
    for _ in 0..web::CONNECTIONS_PER_ADDRESS {
        held.push(server.connect(crowd).await.unwrap());
    }
    // Every held connection is really served: the last one answers.
    let mut last = held.pop().unwrap();
    last.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 12];
    last.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
    held.push(last);
    // One more from the same address: closed before an answer.
    let refused = match server.connect(crowd).await {
        Err(e) => format!("handshake refused ({})", e.kind()),
        Ok(mut io) => {
            let _ = io.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
            let mut bytes = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(5), io.read_to_end(&mut bytes)).await.unwrap();
            assert!(
                bytes.is_empty(),
                "the connection over the limit was answered: {}",
                String::from_utf8_lossy(&bytes)
            );
            format!("closed unanswered ({read:?})")
        }
    };
    assert_eq!(server.healthz(from(3, 2)).await.0, 200, "another address is served");
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Until the server has seen the close, the address is still full.
        if let Ok(mut io) = server.connect(crowd).await {
            let _ = io.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await;
            if read_answer(&mut io).await.is_some_and(|a| a.status == 200) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "a closed connection did not free its place");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    refused
}

/// 100 MB announced to each of `lines`: 413 before it is sent.
async fn huge_bodies_are_refused_unread(server: &Server, who: &str, lines: &[&str]) {
    for line in lines {
        let (status, took) = announce_huge_body(server, from(0, 1), line, 100_000_000).await;
        assert_eq!(status, 413, "{line}");
        println!("limits: {who}: 100 MB to `{line}`: {status} in {took:?}");
    }
}

/// 500 idle connections with half a request leave `/healthz` answering, and so do 64
/// silent ones from one address (on the hub, before their TLS handshake); then one
/// address holds at most its share of connections.
async fn idle_connections_leave_healthz_answering(server: &Server, who: &str) {
    let idle = half_sent(server, 1, 500).await;
    let (status, took) = server.healthz(from(0, 1)).await;
    assert_eq!(status, 200);
    println!("limits: {who}: /healthz with {} half-sent requests open: {took:?}", idle.len());
    assert!(took < Duration::from_secs(2), "{took:?}");
    drop(idle);
    let mut silent = Vec::new();
    for _ in 0..web::CONNECTIONS_PER_ADDRESS {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((from(2, 1), 0))).unwrap();
        silent.push(socket.connect(server.addr).await.unwrap());
    }
    let (status, took) = server.healthz(from(0, 1)).await;
    assert_eq!(status, 200);
    println!("limits: {who}: /healthz with {} silent connections from one address: {took:?}", silent.len());
    assert!(took < Duration::from_secs(2), "{took:?}");
    drop(silent);
    let refused = connections_per_address_hold(server).await;
    println!("limits: {who}: connection {} from one address: {refused}", web::CONNECTIONS_PER_ADDRESS + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r20_6_the_box_refuses_huge_and_deep_bodies_and_big_pages_and_stays_up_under_idle_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (server, state) = a_box(dir.path(), false).await;
    add_user(&*state.store, "ada", Role::Admin);
    let me = from(0, 1);

    // Public route or not: the limit comes before the guard.
    let lines = ["POST /api/v1/auth/login HTTP/1.1", "POST /api/v1/users HTTP/1.1", "PUT /api/v1/labels HTTP/1.1"];
    huge_bodies_are_refused_unread(&server, "box", &lines).await;
    // A JSON 10,000 levels deep: over the 4 KiB a login may be; from a session, the
    // parser's depth limit.
    let deep = deep_json(10_000);
    let answer = server.call(me, "POST /api/v1/auth/login HTTP/1.1\r\nContent-Type: application/json", &deep).await;
    assert_eq!(answer.status, 413);
    let (admin, _) = session(&server, me, "ada").await;
    let answer = as_session(&server, me, &admin, "POST /api/v1/users HTTP/1.1", &deep).await;
    assert!((400..500).contains(&answer.status), "{answer:?}");
    println!("limits: box: 10,000-deep JSON from a session: {} {}", answer.status, answer.body);
    // A session's body over 2 MiB, announced or not, is 413; just under is read.
    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(2 << 20));
    let answer = as_session(&server, me, &admin, "POST /api/v1/users HTTP/1.1", &big).await;
    assert_eq!((answer.status, answer.json()["code"].as_str()), (413, Some("payload_too_large")));
    let fits = format!("{{\"name\":\"{}\"}}", "x".repeat((2 << 20) - 100));
    let answer = as_session(&server, me, &admin, "POST /api/v1/users HTTP/1.1", &fits).await;
    assert_eq!(answer.status, 422, "read and judged: {}", answer.body);
    // Pages: at most 500.
    let answer = as_session(&server, me, &admin, "GET /api/v1/frames?limit=501 HTTP/1.1", "").await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(answer.body.contains("at most 500"), "{}", answer.body);
    assert_eq!(as_session(&server, me, &admin, "GET /api/v1/frames?limit=500 HTTP/1.1", "").await.status, 200);

    idle_connections_leave_healthz_answering(&server, "box").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r20_6_the_hubs_https_holds_the_boxes_limits() {
    let dir = tempfile::tempdir().unwrap();
    let (server, db) = a_hub(dir.path()).await;
    add_user(&*db, "ada", Role::Admin);
    let me = from(0, 1);

    let lines = ["POST /api/v1/auth/login HTTP/1.1", "POST /api/v1/users HTTP/1.1", "POST /v1/enrol HTTP/1.1"];
    huge_bodies_are_refused_unread(&server, "hub", &lines).await;
    let deep = deep_json(10_000);
    let answer = server.call(me, "POST /v1/enrol HTTP/1.1\r\nContent-Type: application/json", &deep).await;
    assert!((400..500).contains(&answer.status), "{answer:?}");
    let (admin, _) = session(&server, me, "ada").await;
    let answer = as_session(&server, me, &admin, "POST /api/v1/users HTTP/1.1", &deep).await;
    assert!((400..500).contains(&answer.status), "{answer:?}");
    println!("limits: hub: 10,000-deep JSON from a session: {} {}", answer.status, answer.body);
    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(2 << 20));
    let answer = as_session(&server, me, &admin, "POST /api/v1/users HTTP/1.1", &big).await;
    assert_eq!(answer.status, 413, "{answer:?}");
    idle_connections_leave_healthz_answering(&server, "hub (TLS)").await;
    // What the control plane refused from devices (crates/sync/tests/mqtt.rs) is scraped.
    let metrics = server.call(me, "GET /metrics HTTP/1.1", "").await;
    assert_eq!(metrics.status, 200);
    for why in ["oversized", "malformed"] {
        let line = format!("obscura_hub_mqtt_refused_total{{why=\"{why}\"}} 0");
        assert!(metrics.body.lines().any(|l| l == line), "{line} missing: {}", metrics.body);
    }
    server.stop().await;
}

/// Issue 20, item 5: the hub's people log in as on a box: 10 failures from an address
/// refuse it, 10 against an account throttle it for addresses it never logged in from,
/// both across a restart; its usual address still gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r20_5_the_hubs_login_limits_hold_per_address_and_per_account_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (server, db) = a_hub(dir.path()).await;
    add_user(&*db, "ada", Role::Admin);
    add_user(&*db, "sam", Role::Steward);
    let (home, attacker) = (from(0, 2), from(0, 66));
    assert_eq!(log_in(&server, home, "ada", PASSWORD).await.status, 200);
    for _ in 0..10 {
        assert_eq!(log_in(&server, attacker, "ada", "guess guess guess").await.status, 401);
    }
    let limited = log_in(&server, attacker, "sam", PASSWORD).await;
    assert_eq!(limited.status, 429, "the address is refused, whichever account: {limited:?}");
    assert!(limited.header("retry-after").is_some());
    // The account: one failure each from ten addresses.
    for i in 0..10 {
        assert_eq!(log_in(&server, from(4, 1 + i), "sam", "guess guess guess").await.status, 401);
    }
    server.stop().await;

    // A restart: the same store, a new server.
    let (server, _db) = a_hub(dir.path()).await;
    assert_eq!(log_in(&server, attacker, "ada", PASSWORD).await.status, 429, "the address, after a restart");
    let new = log_in(&server, from(4, 99), "sam", PASSWORD).await;
    assert_eq!(new.status, 429, "the account, from an address it never used: {new:?}");
    let wait: i64 = new.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(log_in(&server, home, "ada", PASSWORD).await.status, 200, "ada's usual address");
    assert_eq!(db.audit_actions("login.failed").unwrap().len(), 20);
    assert!(!db.audit_actions("login.rate_limited").unwrap().is_empty());
    server.stop().await;
}

/// A session cookie is `__Host-`, `Secure`, `HttpOnly`, `SameSite=Strict`; a session
/// ends on logout, on a role change and when the account is disabled (which also
/// refuses its logins); the admin's own is untouched.
async fn sessions_hold(server: &Server, accounts: &dyn Accounts) {
    add_user(accounts, "ada", Role::Admin);
    let ann = add_user(accounts, "ann", Role::Annotator);
    let me = from(0, 1);
    let (admin, answer) = session(server, me, "ada").await;
    let cookie = answer.header("set-cookie").unwrap();
    assert!(cookie.starts_with("__Host-obscura-session="), "{cookie}");
    for attribute in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.split("; ").any(|a| a == attribute), "{attribute} missing: {cookie}");
    }
    assert!(!cookie.to_ascii_lowercase().contains("domain="), "{cookie}");
    let me_now = |s: &Session| {
        let head = format!("GET /api/v1/auth/me HTTP/1.1\r\nCookie: {}", s.cookie);
        async move { server.call(me, &head, "").await.status }
    };

    // Logout.
    let (annotator, _) = session(server, me, "ann").await;
    assert_eq!(me_now(&annotator).await, 200);
    assert_eq!(as_session(server, me, &annotator, "POST /api/v1/auth/logout HTTP/1.1", "").await.status, 204);
    assert_eq!(me_now(&annotator).await, 401, "logged out");
    // A role change.
    let (annotator, _) = session(server, me, "ann").await;
    let change = format!("PATCH /api/v1/users/{ann} HTTP/1.1");
    let answer = as_session(server, me, &admin, &change, r#"{"role":"reviewer"}"#).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(me_now(&annotator).await, 401, "the role changed");
    // Disabling.
    let (reviewer, _) = session(server, me, "ann").await;
    assert_eq!(me_now(&reviewer).await, 200);
    let answer = as_session(server, me, &admin, &change, r#"{"disabled":true}"#).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(me_now(&reviewer).await, 401, "disabled");
    assert_eq!(log_in(server, me, "ann", PASSWORD).await.status, 401, "a disabled account cannot log in");
    assert_eq!(me_now(&admin).await, 200, "the admin's own session is untouched");
}

/// Issue 20, item 5, on the box over HTTPS, as tablets reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r20_5_the_boxs_sessions_have_strict_cookies_and_end_on_logout_role_change_and_disable() {
    let dir = tempfile::tempdir().unwrap();
    let (server, state) = a_box(dir.path(), true).await;
    sessions_hold(&server, &*state.store).await;
    server.stop().await;
}

/// Issue 20, item 5, on the hub: the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r20_5_the_hubs_sessions_have_strict_cookies_and_end_on_logout_role_change_and_disable() {
    let dir = tempfile::tempdir().unwrap();
    let (server, db) = a_hub(dir.path()).await;
    sessions_hold(&server, &*db).await;
    server.stop().await;
}
