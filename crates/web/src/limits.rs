//! Login limits, what anonymous callers may make the audit log hold, and how many
//! connections one address may hold open ([`PerAddress`]).
//!
//! Failures are kept in SQLite (`login_failures`), so the limits survive a restart. A
//! refused attempt is not written one by one: [`Refusals`] counts them per address in
//! windows, and the first refusal of a window writes the one audit entry of that window,
//! which carries the count of the address's previous window. A name a caller typed is
//! logged bounded and escaped ([`logged_name`]), so no request makes an entry large.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use store::Accounts;

use crate::auth::check_name;
use crate::error::ApiError;

/// Failures counted over this window; refused attempts are counted in windows as long.
pub(crate) const WINDOW_MS: i64 = 15 * 60 * 1000;
/// Failures from one address in the window before it is refused until they age out.
const PER_IP: u32 = 10;
/// Failures against one account (from anywhere) before it is throttled for addresses
/// it has never logged in from.
const PER_ACCOUNT: u32 = 10;
/// How long that throttle lasts after the latest failure: short, so a flood cannot lock
/// an admin out for long.
const ACCOUNT_PAUSE_MS: i64 = 60 * 1000;
/// Addresses an account logged in from within this long are never account-throttled.
const KNOWN_MS: i64 = 30 * 24 * 3600 * 1000;
/// Characters of a name that fails [`check_name`] kept in the audit log.
const LOGGED_CHARS: usize = 32;
/// Addresses whose refusals are counted at once; beyond, stale windows are forgotten
/// first, and a new address's refusals only reach the total.
const TRACKED: usize = 4096;

/// Seconds until this address may try this account again, if it must wait.
pub(crate) fn throttled(store: &dyn Accounts, account: &str, ip: &str) -> Result<Option<i64>, store::StoreError> {
    let now = store.now_ms();
    let by_ip = store.login_failures(None, Some(ip), now - WINDOW_MS)?;
    if by_ip.count >= PER_IP {
        // Refused until the oldest failure that counts ages out: at most the window.
        return Ok(Some(WINDOW_MS / 1000));
    }
    let by_account = store.login_failures(Some(account), None, now - WINDOW_MS)?;
    if by_account.count >= PER_ACCOUNT && !store.login_known(account, ip, KNOWN_MS)? {
        let wait = by_account.last_at.unwrap_or(now) + ACCOUNT_PAUSE_MS - now;
        if wait > 0 {
            return Ok(Some((wait + 999) / 1000));
        }
    }
    Ok(None)
}

pub(crate) fn too_many(seconds: i64) -> Response {
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many failed logins; try again in {seconds} s"),
    )
    .into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// A name a caller submitted, as the audit log and the failure table may hold it: a
/// valid name as it is, anything else escaped, cut to a few characters and marked, so
/// its size is bounded whatever was sent.
pub(crate) fn logged_name(name: &str) -> String {
    if check_name(name).is_ok() {
        return name.to_owned();
    }
    let kept: String = name.chars().take(LOGGED_CHARS).collect();
    let n = name.chars().count();
    let more = if n > LOGGED_CHARS { format!("… ({n} characters)") } else { String::new() };
    format!("(invalid) {}{more}", kept.escape_debug())
}

/// Refused attempts per address, counted in windows of [`WINDOW_MS`] rather than each
/// written to the audit log. Kept in memory: a restart starts new windows.
#[derive(Debug, Default)]
pub struct Refusals {
    windows: Mutex<HashMap<String, Window>>,
    total: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    started_at: i64,
    refused: u64,
}

/// What to audit for a refusal that opens a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Opened {
    /// The address's previous window and how many it refused, if one was counted.
    pub previous: Option<(i64, u64)>,
}

impl Refusals {
    /// Counts one refused attempt from `ip` at `now`; `Some` when it opens a window, so
    /// the caller writes that window's audit entry.
    pub(crate) fn count(&self, ip: &str, now: i64) -> Option<Opened> {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut windows = self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(window) = windows.get_mut(ip) {
            if now < window.started_at + WINDOW_MS {
                window.refused += 1;
                return None;
            }
            let previous = (window.started_at, window.refused);
            *window = Window { started_at: now, refused: 1 };
            return Some(Opened { previous: Some(previous) });
        }
        if windows.len() >= TRACKED {
            windows.retain(|_, w| now < w.started_at + WINDOW_MS);
            if windows.len() >= TRACKED {
                return None;
            }
        }
        windows.insert(ip.to_owned(), Window { started_at: now, refused: 1 });
        Some(Opened { previous: None })
    }

    /// Refused attempts since start, every address together.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// Connections one address may hold open at once, on the box and on the hub. A tablet
/// uses a handful; a TLS proxy in front (`trusted_proxies`) passes at most this many at
/// once. One laptop, however curious, cannot take every socket the daemon may open.
pub const CONNECTIONS_PER_ADDRESS: usize = 64;

/// Open connections per address. [`PerAddress::admit`] hands out a [`Slot`] that frees
/// itself when the connection is dropped; past [`CONNECTIONS_PER_ADDRESS`] the
/// connection is refused (closed at once, before TLS or HTTP).
#[derive(Debug, Clone)]
pub struct PerAddress {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    cap: usize,
}

impl Default for PerAddress {
    fn default() -> Self {
        PerAddress::with_cap(CONNECTIONS_PER_ADDRESS)
    }
}

impl PerAddress {
    /// At most `cap` at once an address (TLS handshakes have a cap of their own).
    pub fn with_cap(cap: usize) -> Self {
        PerAddress { open: Arc::default(), cap }
    }

    pub fn admit(&self, ip: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let n = open.entry(ip).or_default();
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(Slot { table: self.open.clone(), ip })
    }
}

/// One admitted connection's place in its address's count.
#[derive(Debug)]
pub struct Slot {
    table: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A connection that holds its address's [`Slot`] until it closes.
#[derive(Debug)]
pub struct Counted<S> {
    pub io: S,
    _slot: Slot,
}

impl<S> Counted<S> {
    pub fn new(io: S, slot: Slot) -> Self {
        Counted { io, _slot: slot }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Plain TCP connections, each admitted by [`PerAddress`] (what [`crate::serve`] listens
/// with); accept errors are waited out as axum's own listener does.
#[derive(Debug)]
pub struct LimitedListener {
    pub listener: tokio::net::TcpListener,
    pub limits: PerAddress,
}

impl axum::serve::Listener for LimitedListener {
    type Io = Counted<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.listener.accept().await {
                Ok((tcp, peer)) => {
                    if let Some(slot) = self.limits.admit(peer.ip()) {
                        return (Counted::new(tcp, slot), peer);
                    }
                    tracing::debug!(%peer, "connection refused: too many open from this address");
                }
                Err(error) => crate::tls::accept_failed(error).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_logged_bounded_and_escaped() {
        assert_eq!(logged_name("maria.k@site"), "maria.k@site");
        assert_eq!(logged_name("a b"), "(invalid) a b");
        assert_eq!(logged_name("\u{202e}x\n"), "(invalid) \\u{202e}x\\n");
        let long = logged_name(&"é".repeat(1 << 20));
        assert!(long.len() < 300 && long.ends_with("… (1048576 characters)"), "{long}");
    }

    #[test]
    fn refusals_open_one_window_per_address_and_count_the_rest() {
        let r = Refusals::default();
        assert_eq!(r.count("10.0.0.1", 0), Some(Opened { previous: None }));
        for t in 1..100 {
            assert_eq!(r.count("10.0.0.1", t), None);
        }
        assert_eq!(r.count("10.0.0.2", 50), Some(Opened { previous: None }));
        assert_eq!(r.count("10.0.0.1", WINDOW_MS), Some(Opened { previous: Some((0, 100)) }));
        assert_eq!(r.total(), 102);
        // Bounded memory: stale windows go first when the table is full.
        for i in 0..TRACKED {
            r.count(&format!("a{i}"), 0);
        }
        assert!(r.count("new", 2 * WINDOW_MS).is_some());
        assert_eq!(r.windows.lock().unwrap().len(), 1);
    }

    #[test]
    fn an_address_holds_at_most_its_share_of_connections_and_gets_them_back() {
        let limits = PerAddress::default();
        let (one, two): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let mut held: Vec<Slot> = (0..CONNECTIONS_PER_ADDRESS).map(|_| limits.admit(one).unwrap()).collect();
        assert!(limits.admit(one).is_none());
        assert!(limits.admit(two).is_some(), "another address is not held up");
        held.pop();
        assert!(limits.admit(one).is_some(), "a closed connection frees its place");
        drop(held);
        assert!(limits.open.lock().unwrap().get(&one).is_none_or(|n| *n <= 1));
    }
}
