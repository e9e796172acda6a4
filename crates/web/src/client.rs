//! Where a request comes from: the client's address, believed from `X-Forwarded-For`
//! only when the connection is from a proxy the operator trusts (`[http]
//! trusted_proxies`), and the origins the box's own pages are served from, which CSRF
//! checks an `Origin` against. Neither ever comes from the request's `Host`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::extract::{ConnectInfo, Request};
use axum::http::Uri;

/// The calling client, as far as the box can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Client {
    /// What login limits count against and sessions record: the peer, or behind a
    /// trusted proxy the address it forwarded. None without a connection (tests).
    pub addr: Option<IpAddr>,
    /// False when a trusted proxy sent the request but forwarded no usable client
    /// address: `addr` is then the proxy's, which is not the client.
    pub known: bool,
}

impl Client {
    /// Of `request`, believing `X-Forwarded-For` only from `trusted` peers: the rightmost
    /// address that is not itself a trusted proxy (the one a trusted proxy saw).
    pub fn of(request: &Request, trusted: &[IpAddr]) -> Client {
        let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() else {
            return Client { addr: None, known: true };
        };
        // A listener on `::` sees IPv4 clients as `::ffff:a.b.c.d`.
        let peer = peer.ip().to_canonical();
        if !trusted.contains(&peer) {
            return Client { addr: Some(peer), known: true };
        }
        let forwarded = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("?").split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in forwarded.into_iter().rev() {
            match parse_hop(hop) {
                Some(ip) if trusted.contains(&ip) => continue,
                Some(ip) => return Client { addr: Some(ip), known: true },
                // What a trusted proxy wrote is unreadable: the client is unknown.
                None => break,
            }
        }
        Client { addr: Some(peer), known: false }
    }

    /// On the box itself: the peer is loopback and no proxy stands between.
    pub fn is_local(&self) -> bool {
        self.known && self.addr.is_some_and(|a| a.is_loopback())
    }

    /// As login limits, sessions and the audit log record it.
    pub fn key(&self) -> String {
        match (self.addr, self.known) {
            (Some(addr), true) => addr.to_string(),
            (Some(proxy), false) => format!("{proxy} (proxy, no X-Forwarded-For)"),
            (None, _) => "unknown".to_owned(),
        }
    }
}

/// One `X-Forwarded-For` entry: an address, maybe with a port (`[v6]:port`, `v4:port`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let ip = hop.parse::<IpAddr>().ok().or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))?;
    Some(ip.to_canonical())
}

/// The origin (`scheme://host[:port]`, lower case, the scheme's default port left out)
/// of the box's pages at `host` (a name or an address) and `port`.
pub fn origin_of(https: bool, host: &str, port: u16) -> String {
    let (scheme, default) = if https { ("https", 443) } else { ("http", 80) };
    let host = match host.trim_matches(['[', ']']).parse::<Ipv6Addr>() {
        Ok(v6) => format!("[{v6}]"),
        Err(_) => host.to_ascii_lowercase(),
    };
    if port == default { format!("{scheme}://{host}") } else { format!("{scheme}://{host}:{port}") }
}

/// The origins of the box's own pages: each of `hosts` (its names and addresses) with
/// the scheme it serves and the port it listens on.
pub fn box_origins<'a>(https: bool, port: u16, hosts: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    hosts.into_iter().map(|host| origin_of(https, host, port)).collect()
}

/// An origin as a browser sends it in `Origin`, or as `[http] origins` lists it,
/// normalised as [`origin_of`] writes it.
pub fn parse_origin(text: &str) -> Result<String, String> {
    let bad = |why: &str| {
        format!(
            "`{text}` is not an origin ({why}): write scheme, host and port only, e.g. https://box.example.org:8443"
        )
    };
    let uri: Uri = text.parse().map_err(|_| bad("it does not parse"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(bad("the scheme must be http or https")),
    };
    let authority = uri.authority().ok_or_else(|| bad("it names no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("it carries a user name"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("it has a path"));
    }
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    Ok(origin_of(https, authority.host(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::body::Body;

    fn request(peer: [u8; 4], forwarded: &[&str]) -> Request {
        let mut request = Request::get("/").body(Body::empty()).unwrap();
        for f in forwarded {
            request.headers_mut().append("x-forwarded-for", f.parse().unwrap());
        }
        request.extensions_mut().insert(ConnectInfo(SocketAddr::from((peer, 40000))));
        request
    }

    const PROXY: [IpAddr; 2] =
        [IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1))];

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let addr = |c: Client| (c.addr.map(|a| a.to_string()), c.known, c.is_local());
        // Nobody trusted: the peer, whatever it forwards.
        let direct = Client::of(&request([192, 168, 1, 7], &["127.0.0.1"]), &[]);
        assert_eq!(addr(direct), (Some("192.168.1.7".into()), true, false));
        assert!(Client::of(&request([127, 0, 0, 1], &["192.168.1.7"]), &[]).is_local());
        // From a trusted proxy: the rightmost address that is not a trusted proxy, over
        // several headers; what the client wrote on the left is not believed.
        let proxied = Client::of(&request([127, 0, 0, 1], &["6.6.6.6, 192.168.1.7", "10.0.0.1"]), &PROXY);
        assert_eq!(addr(proxied), (Some("192.168.1.7".into()), true, false));
        let with_port = Client::of(&request([127, 0, 0, 1], &["[2001:db8::7]:5000"]), &PROXY);
        assert_eq!(addr(with_port).0.as_deref(), Some("2001:db8::7"));
        // A trusted proxy that forwards nothing usable: its own address, never local.
        for forwarded in [&[][..], &["garbage"], &["127.0.0.1, 10.0.0.1"]] {
            let unknown = Client::of(&request([127, 0, 0, 1], forwarded), &PROXY);
            assert!(!unknown.known && !unknown.is_local(), "{forwarded:?}");
        }
        assert_eq!(Client::of(&request([127, 0, 0, 1], &[]), &PROXY).key(), "127.0.0.1 (proxy, no X-Forwarded-For)");
    }

    #[test]
    fn origins_are_normalised_and_checked() {
        assert_eq!(origin_of(true, "Box.Local", 443), "https://box.local");
        assert_eq!(origin_of(true, "::1", 8443), "https://[::1]:8443");
        assert_eq!(origin_of(false, "127.0.0.1", 8080), "http://127.0.0.1:8080");
        assert_eq!(parse_origin("https://BOX.example.org:443/").unwrap(), "https://box.example.org");
        assert_eq!(parse_origin("http://[::1]:8080").unwrap(), "http://[::1]:8080");
        for bad in ["box.local", "ftp://box.local", "https://box.local/app", "https://u@box.local", "null", ""] {
            let err = parse_origin(bad).unwrap_err();
            assert!(err.contains("e.g. https://"), "{bad}: {err}");
        }
    }
}
