//! A TCP proxy that misbehaves like a bad network, for the sync storm test: boxes enrol
//! against it (the TLS pin is the hub certificate's, so a TCP-level proxy is
//! transparent) and, driven by a seeded RNG, it cuts connections after a random number
//! of bytes (inside a blob's upload too), drops the hub's answer after a request went
//! through, stalls them, and refuses new ones while "the network is down".
//!
//! Plain threads: two pumps per connection, blocking reads, `shutdown` to cut. Each
//! connection draws its own RNG from the proxy's seeded one, so a seed replays the same
//! decisions (their timing is the real processes').

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// How often each fault strikes, per chunk read. All zero: a faithful proxy.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Cut both sides after forwarding a random part of the chunk.
    pub cut: f64,
    /// Cut inside a large client write (a blob's bytes): a mid-upload cut.
    pub cut_upload: f64,
    /// Forward the client's request, then drop the hub's large answer (a receipt) and
    /// cut: the hub did the work, the box never hears of it.
    pub drop_answer: f64,
    /// Hold the chunk for up to `stall_ms` before forwarding it.
    pub stall: f64,
    pub stall_ms: u64,
}

/// What the proxy did, for the test's figures.
#[derive(Debug, Default)]
pub struct Counts {
    pub connections: AtomicU64,
    pub cuts: AtomicU64,
    pub upload_cuts: AtomicU64,
    pub answers_dropped: AtomicU64,
    pub stalls: AtomicU64,
    /// Large client writes forwarded (blob bytes), so a test can kill mid-upload.
    pub uploads_seen: AtomicU64,
}

/// A client write at least this large carries a blob's bytes (a request's headers and
/// the manifests of small batches are smaller).
const UPLOAD_CHUNK: usize = 2048;
/// The hub's answers are small (a 204, a HEAD's headers, the empty command list), but
/// for a receipt: a signed JSON payload.
const RECEIPT_CHUNK: usize = 600;

struct Shared {
    upstream: SocketAddr,
    faults: Mutex<Faults>,
    rng: Mutex<fastrand::Rng>,
    down: AtomicBool,
    stop: AtomicBool,
    live: Mutex<Vec<Weak<Conn>>>,
    counts: Counts,
}

/// One proxied connection: both sockets, for cutting from either pump.
struct Conn {
    client: TcpStream,
    server: TcpStream,
    cut: AtomicBool,
    /// Client writes so far: the first is the TLS ClientHello; answers before the
    /// second are the handshake, never a receipt.
    client_writes: AtomicU64,
    /// Armed by a `drop_answer` draw: the next large answer is dropped.
    drop_next_answer: AtomicBool,
}

impl Conn {
    fn cut(&self) {
        if !self.cut.swap(true, Ordering::SeqCst) {
            let _ = self.client.shutdown(Shutdown::Both);
            let _ = self.server.shutdown(Shutdown::Both);
        }
    }
}

/// A running proxy on a free loopback port, to `upstream`.
pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr, seed: u64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream,
            faults: Mutex::new(Faults::default()),
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            down: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            live: Mutex::new(Vec::new()),
            counts: Counts::default(),
        });
        let accepting = shared.clone();
        std::thread::spawn(move || accept(listener, addr, &accepting));
        Proxy { addr, shared }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap() = faults;
    }

    pub fn counts(&self) -> &Counts {
        &self.shared.counts
    }

    /// The network goes down: live connections are cut and new ones refused (the port
    /// is closed) until [`Proxy::up`].
    pub fn down(&self) {
        self.shared.down.store(true, Ordering::SeqCst);
        self.cut_all();
    }

    pub fn up(&self) {
        self.shared.down.store(false, Ordering::SeqCst);
    }

    /// Cuts every live connection (a blip: the box reconnects at once).
    pub fn cut_all(&self) {
        let live: Vec<Arc<Conn>> = self.shared.live.lock().unwrap().iter().filter_map(Weak::upgrade).collect();
        for conn in live {
            conn.cut();
            self.shared.counts.cuts.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.cut_all();
    }
}

/// Accepts while up; while down the listener is dropped, so connecting is refused as
/// on a dead link, and bound again on the same port when the network comes back.
fn accept(listener: TcpListener, addr: SocketAddr, shared: &Arc<Shared>) {
    listener.set_nonblocking(true).unwrap();
    let mut listener = Some(listener);
    while !shared.stop.load(Ordering::SeqCst) {
        if shared.down.load(Ordering::SeqCst) {
            listener = None;
        } else if listener.is_none() {
            // std sets SO_REUSEADDR, so the port is ours again at once.
            listener = TcpListener::bind(addr).ok();
            if let Some(l) = &listener {
                l.set_nonblocking(true).unwrap();
            }
        }
        match listener.as_ref().map(TcpListener::accept) {
            Some(Ok((client, _))) => {
                client.set_nonblocking(false).unwrap();
                shared.counts.connections.fetch_add(1, Ordering::Relaxed);
                let seed = shared.rng.lock().unwrap().u64(..);
                let shared = shared.clone();
                std::thread::spawn(move || connect(client, seed, &shared));
            }
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn connect(client: TcpStream, seed: u64, shared: &Arc<Shared>) {
    // The hub down: the box sees its connection closed at once.
    let Ok(server) = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(2)) else { return };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let conn = Arc::new(Conn {
        client: client.try_clone().unwrap(),
        server: server.try_clone().unwrap(),
        cut: AtomicBool::new(false),
        client_writes: AtomicU64::new(0),
        drop_next_answer: AtomicBool::new(false),
    });
    {
        let mut live = shared.live.lock().unwrap();
        live.retain(|w| w.strong_count() > 0);
        live.push(Arc::downgrade(&conn));
    }
    if shared.down.load(Ordering::SeqCst) {
        conn.cut();
    }
    let up = {
        let (conn, shared) = (conn.clone(), shared.clone());
        let (from, to) = (client, server.try_clone().unwrap());
        std::thread::spawn(move || pump(from, to, true, fastrand::Rng::with_seed(seed), &conn, &shared))
    };
    let from = server;
    let to = conn.client.try_clone().unwrap();
    pump(from, to, false, fastrand::Rng::with_seed(seed ^ 0x5eed), &conn, shared);
    let _ = up.join();
}

/// Forwards one direction (`upward`: box to hub), striking as the faults say.
fn pump(mut from: TcpStream, mut to: TcpStream, upward: bool, mut rng: fastrand::Rng, conn: &Conn, shared: &Shared) {
    let counts = &shared.counts;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if conn.cut.load(Ordering::SeqCst) {
            break;
        }
        let faults = *shared.faults.lock().unwrap();
        let chunk = &buf[..n];
        if upward {
            let writes = conn.client_writes.fetch_add(1, Ordering::SeqCst) + 1;
            if writes > 1 && rng.f64() < faults.drop_answer {
                conn.drop_next_answer.store(true, Ordering::SeqCst);
            }
            if n >= UPLOAD_CHUNK {
                counts.uploads_seen.fetch_add(1, Ordering::Relaxed);
                if rng.f64() < faults.cut_upload {
                    let _ = to.write_all(&chunk[..rng.usize(1..n)]);
                    counts.upload_cuts.fetch_add(1, Ordering::Relaxed);
                    conn.cut();
                    break;
                }
            }
        } else if n >= RECEIPT_CHUNK
            && conn.client_writes.load(Ordering::SeqCst) > 1
            && conn.drop_next_answer.swap(false, Ordering::SeqCst)
        {
            counts.answers_dropped.fetch_add(1, Ordering::Relaxed);
            conn.cut();
            break;
        }
        if rng.f64() < faults.cut {
            let _ = to.write_all(&chunk[..rng.usize(0..n)]);
            counts.cuts.fetch_add(1, Ordering::Relaxed);
            conn.cut();
            break;
        }
        if faults.stall_ms > 0 && rng.f64() < faults.stall {
            counts.stalls.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(rng.u64(1..=faults.stall_ms)));
        }
        if to.write_all(chunk).is_err() {
            break;
        }
    }
    // Half-close, as TCP does: the other direction may still be answering.
    let _ = to.shutdown(Shutdown::Write);
    if conn.cut.load(Ordering::SeqCst) {
        conn.cut();
    }
}
