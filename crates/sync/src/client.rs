//! The HTTPS data plane to the hub (wire v1): every request signed with the box's key
//! (RFC 9421, `wire::signature`), over one kept-alive HTTP/1.1 connection to a hub whose
//! certificate is pinned ([`crate::pin`]). Blobs go up resumably, like tus: a `HEAD`
//! asks how much of this box's upload the hub holds, and a `PATCH` sends the rest from
//! there, so a connection cut at 90% costs 10% on the next try. Every upload byte passes
//! the shared token bucket (`sync.max_kbps`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use ring::rand::SecureRandom;
use wire::signature::{self, Target};
use wire::v1;
use wire::{Payload, Receipt};

use crate::DeviceIdentity;
use crate::bucket::Bucket;
use crate::pin::{Fingerprint, Pinned};

/// Why a request to the hub did not get through, each with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the hub at {hub}: {reason}; check the hub address (`obscura sync enrol --hub`) and that the hub runs"
    )]
    Unreachable { hub: String, reason: String },
    #[error("the hub at {hub} is not the one this box enrolled with: {reason}")]
    Certificate { hub: String, reason: String },
    #[error("the hub refused ({status} {}): {}", refusal.code, refusal.message)]
    Refused { status: u16, refusal: v1::Refusal },
    #[error("the hub's answer makes no sense: {0}")]
    Protocol(String),
}

impl ClientError {
    /// Worth retrying as is (the network, a busy or restarting hub); the others need a
    /// person (a wrong pin, a revoked device, a refused batch).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } | ClientError::Protocol(_) => true,
            ClientError::Certificate { .. } => false,
            ClientError::Refused { status, refusal } => {
                // A blob whose bytes arrived damaged (`digest_mismatch`, `bad_digest`) was
                // discarded by the hub: it is sent again from 0, the batch is not refused.
                *status >= 500
                    || *status == 429
                    || matches!(
                        refusal.code.as_str(),
                        "offset_mismatch" | "missing_blobs" | "digest_mismatch" | "bad_digest"
                    )
            }
        }
    }

    /// The refusal's code, if the hub answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { refusal, .. } => Some(&refusal.code),
            _ => None,
        }
    }
}

/// Where the hub is: `https://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubAddress {
    pub host: String,
    pub port: u16,
}

impl std::str::FromStr for HubAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("`{s}` is not a hub address: {why}; write https://HOST:PORT, e.g. https://hub.local:8443")
        };
        let uri: hyper::Uri = s.trim().parse().map_err(|_| bad("it does not parse"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("the hub is reached over HTTPS only"));
        }
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| bad("it names no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(bad("it has a path; give the address only"));
        }
        Ok(HubAddress { host, port: uri.port_u16().unwrap_or(443) })
    }
}

impl std::fmt::Display for HubAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "https://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "https://{}:{}", self.host, self.port)
        }
    }
}

/// A request body, sent in chunks as the token bucket allows.
struct Upload {
    data: Bytes,
    bucket: Option<Arc<Bucket>>,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Body for Upload {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.data.is_empty() {
            return Poll::Ready(None);
        }
        if let Some(wait) = self.wait.as_mut() {
            if wait.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.wait = None;
        }
        const CHUNK: usize = 64 << 10;
        let want = self.data.len().min(CHUNK);
        let n = match &self.bucket {
            None => want,
            Some(bucket) => match bucket.take(want) {
                Ok(n) => n,
                Err(wait) => {
                    let mut sleep = Box::pin(tokio::time::sleep(wait));
                    let _ = sleep.as_mut().poll(cx);
                    self.wait = Some(sleep);
                    return Poll::Pending;
                }
            },
        };
        Poll::Ready(Some(Ok(Frame::data(self.data.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.len() as u64)
    }
}

/// An answer: status, the headers the protocol reads, and the body.
#[derive(Debug)]
struct Answer {
    status: u16,
    upload_offset: Option<u64>,
    upload_length: Option<u64>,
    body: Bytes,
}

/// What an upload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uploaded {
    /// The hub already held all of it from this box.
    pub skipped: bool,
    /// Where this upload started (0, or what the hub held of an earlier cut one).
    pub from: u64,
    /// Bytes sent now.
    pub sent: u64,
}

/// A connection to one hub, as one enrolled box.
pub struct HubClient {
    hub: HubAddress,
    pinned: Arc<Pinned>,
    tls: tokio_rustls::TlsConnector,
    identity: Arc<DeviceIdentity>,
    bucket: Option<Arc<Bucket>>,
    conn: tokio::sync::Mutex<Option<SendRequest<Upload>>>,
    timeout: Duration,
    random: ring::rand::SystemRandom,
}

impl std::fmt::Debug for HubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubClient").field("hub", &self.hub).field("device", &self.identity.device).finish()
    }
}

impl HubClient {
    /// A client for `hub`, trusting only the certificate `pin`; uploads share `bucket`.
    pub fn new(
        hub: HubAddress,
        pin: Fingerprint,
        identity: Arc<DeviceIdentity>,
        bucket: Option<Arc<Bucket>>,
    ) -> HubClient {
        let pinned = Pinned::new(pin);
        let tls = tokio_rustls::TlsConnector::from(Arc::new(pinned.client_config()));
        HubClient {
            hub,
            pinned,
            tls,
            identity,
            bucket,
            conn: tokio::sync::Mutex::new(None),
            timeout: Duration::from_secs(30),
            random: ring::rand::SystemRandom::new(),
        }
    }

    pub fn hub(&self) -> &HubAddress {
        &self.hub
    }

    /// Drops the kept-alive connection, so the next request dials anew.
    pub async fn disconnect(&self) {
        *self.conn.lock().await = None;
    }

    async fn connect(&self) -> Result<SendRequest<Upload>, ClientError> {
        let unreachable = |reason: String| ClientError::Unreachable { hub: self.hub.to_string(), reason };
        let tcp =
            tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect((self.hub.host.as_str(), self.hub.port)))
                .await
                .map_err(|_| unreachable(format!("no answer within {} s", self.timeout.as_secs())))?
                .map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let name = rustls::pki_types::ServerName::try_from(self.hub.host.clone())
            .map_err(|_| unreachable(format!("`{}` is not a host name or address", self.hub.host)))?;
        let tls = tokio::time::timeout(self.timeout, self.tls.connect(name, tcp))
            .await
            .map_err(|_| unreachable("the TLS handshake timed out".into()))?
            .map_err(|e| match self.pinned.take_refusal() {
                Some(reason) => ClientError::Certificate { hub: self.hub.to_string(), reason },
                None => unreachable(format!("TLS: {e}")),
            })?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| unreachable(format!("HTTP: {e}")))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// Sends one signed request; `extra` are further headers.
    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Bytes,
        extra: &[(&str, String)],
    ) -> Result<Answer, ClientError> {
        let unreachable = |reason: String| ClientError::Unreachable { hub: self.hub.to_string(), reason };
        let mut nonce = [0u8; 16];
        self.random.fill(&mut nonce).map_err(|_| unreachable("the system random source failed".into()))?;
        let created =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let (path_only, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let signed = signature::sign(
            self.identity.key(),
            self.identity.device,
            Target { method, path: path_only, query },
            &body,
            created,
            nonce,
        );
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, format!("{}:{}", self.hub.host, self.hub.port))
            .header(hyper::header::CONTENT_LENGTH, body.len())
            .header(signature::CONTENT_DIGEST, signed.content_digest)
            .header(signature::SIGNATURE_INPUT, signed.signature_input)
            .header(signature::SIGNATURE, signed.signature);
        if method == "POST" {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in extra {
            request = request.header(*name, value);
        }
        let bucket = if method == "PATCH" { self.bucket.clone() } else { None };
        let request = request
            .body(Upload { data: body, bucket, wait: None })
            .map_err(|e| ClientError::Protocol(format!("cannot build the request: {e}")))?;

        let mut slot = self.conn.lock().await;
        let mut sender = match slot.take() {
            Some(mut kept) => match kept.ready().await {
                Ok(()) => kept,
                Err(_) => self.connect().await?,
            },
            None => self.connect().await?,
        };
        let sent = tokio::time::timeout(self.timeout + self.transfer_time(request.body().data.len()), async {
            let response = sender.send_request(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, hyper::Error>((parts, body))
        })
        .await;
        let (parts, body) = match sent {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Err(unreachable(format!("the connection failed mid-request: {e}"))),
            Err(_) => return Err(unreachable("the hub did not answer in time".into())),
        };
        *slot = Some(sender);
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        Ok(Answer {
            status: parts.status.as_u16(),
            upload_offset: header(v1::UPLOAD_OFFSET),
            upload_length: header(v1::UPLOAD_LENGTH),
            body,
        })
    }

    /// How long `bytes` may take at the bucket's rate (none without one).
    fn transfer_time(&self, bytes: usize) -> Duration {
        self.bucket.as_ref().map_or(Duration::ZERO, |b| b.time_for(bytes))
    }

    /// The answer, if 2xx; else the hub's refusal.
    fn ok(answer: Answer) -> Result<Answer, ClientError> {
        if (200..300).contains(&answer.status) {
            return Ok(answer);
        }
        let refusal = serde_json::from_slice::<v1::Refusal>(&answer.body).unwrap_or_else(|_| v1::Refusal {
            code: format!("http_{}", answer.status),
            message: String::from_utf8_lossy(&answer.body).chars().take(300).collect(),
            missing: Vec::new(),
        });
        Err(ClientError::Refused { status: answer.status, refusal })
    }

    fn json<T: serde::de::DeserializeOwned>(answer: &Answer) -> Result<T, ClientError> {
        serde_json::from_slice(&answer.body).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// `POST /v1/enrol`: presents this box and its key; the hub answers where it stands.
    pub async fn enrol(&self, hostname: &str, token: Option<&str>) -> Result<v1::DeviceStatus, ClientError> {
        let body = v1::Enrol {
            version: wire::VERSION,
            device: self.identity.device,
            public_key: wire::base64(self.identity.public_key()),
            hostname: hostname.to_owned(),
            token: token.map(str::to_owned),
        };
        let body = serde_json::to_vec(&body).expect("an enrolment serializes");
        let answer = Self::ok(self.send("POST", "/v1/enrol", body.into(), &[]).await?)?;
        Self::json(&answer)
    }

    /// `GET /v1/device`: where this box stands now.
    pub async fn device(&self) -> Result<v1::DeviceStatus, ClientError> {
        let answer = Self::ok(self.send("GET", "/v1/device", Bytes::new(), &[]).await?)?;
        Self::json(&answer)
    }

    /// How much of blob `sha256` the hub holds from this box: (offset, length).
    pub async fn head_blob(&self, sha256: &str) -> Result<Option<(u64, u64)>, ClientError> {
        let answer = self.send("HEAD", &format!("/v1/blobs/{sha256}"), Bytes::new(), &[]).await?;
        match answer.status {
            404 => Ok(None),
            200..=299 => match (answer.upload_offset, answer.upload_length) {
                (Some(offset), Some(length)) => Ok(Some((offset, length))),
                _ => Err(ClientError::Protocol("a HEAD answer without Upload-Offset and Upload-Length".into())),
            },
            _ => Self::ok(answer).map(|_| None),
        }
    }

    /// Uploads blob `sha256` (`data`), resuming what the hub holds of it from this box.
    /// With `probe`, a `HEAD` first asks what the hub holds, so a blob that may have been
    /// sent before (a batch tried already, a resend after a crash) costs no bytes again;
    /// without it the first `PATCH` goes at once, and a hub holding some of it answers
    /// 409 with its offset, from which the rest follows: one request for a new blob.
    pub async fn upload_blob(&self, sha256: &str, data: &Bytes, probe: bool) -> Result<Uploaded, ClientError> {
        let total = data.len() as u64;
        let held = if probe { self.head_blob(sha256).await? } else { None };
        let mut from = match held {
            Some((offset, length)) if offset == length && length == total => {
                return Ok(Uploaded { skipped: true, from: offset, sent: 0 });
            }
            Some((offset, _)) if offset < total => offset,
            _ => 0,
        };
        let start = from;
        let mut sent = 0;
        // At most one correction: the hub says where it stands and the rest follows.
        for _ in 0..2 {
            let headers = [(v1::UPLOAD_OFFSET, from.to_string()), (v1::UPLOAD_LENGTH, total.to_string())];
            let body = data.slice(from as usize..);
            let n = body.len() as u64;
            let answer = self.send("PATCH", &format!("/v1/blobs/{sha256}"), body, &headers).await?;
            if answer.status == 409 && answer.upload_offset.is_some_and(|o| o != from && o <= total) {
                from = answer.upload_offset.unwrap_or(0);
                if from == total && sent == 0 && start == 0 && !probe {
                    // It already held all of it (e.g. the same bytes in an earlier frame).
                    return Ok(Uploaded { skipped: true, from, sent: 0 });
                }
                continue;
            }
            Self::ok(answer)?;
            sent += n;
            return Ok(Uploaded { skipped: false, from: start, sent });
        }
        Err(ClientError::Protocol(format!("the hub's offset for blob {sha256} kept moving")))
    }

    /// Sends bytes `[0, upto)` of blob `sha256` and stops, as a connection cut at `upto`
    /// leaves an upload: for benchmarks and tests of resuming.
    pub async fn send_part(&self, sha256: &str, data: &Bytes, upto: usize) -> Result<(), ClientError> {
        let headers = [(v1::UPLOAD_OFFSET, "0".to_owned()), (v1::UPLOAD_LENGTH, data.len().to_string())];
        Self::ok(self.send("PATCH", &format!("/v1/blobs/{sha256}"), data.slice(..upto), &headers).await?)?;
        Ok(())
    }

    /// Commits a batch with its manifest (`POST /v1/batches/{id}`); the hub's receipt,
    /// checked against its key. A `missing_blobs` refusal lists what to upload first.
    pub async fn commit(&self, batch: &str, manifest: &str, hub_key: &[u8]) -> Result<(Receipt, Payload), ClientError> {
        let answer = self.send("POST", &format!("/v1/batches/{batch}"), Bytes::from(manifest.to_owned()), &[]).await?;
        self.receipt(Self::ok(answer)?, hub_key)
    }

    /// Asks the hub to erase frames this box erased (`POST /v1/erasures/{request}`).
    pub async fn erase(
        &self,
        request: &str,
        erasure: &v1::Erasure,
        hub_key: &[u8],
    ) -> Result<(Receipt, Payload), ClientError> {
        let body = serde_json::to_vec(erasure).expect("an erasure serializes");
        let answer = self.send("POST", &format!("/v1/erasures/{request}"), body.into(), &[]).await?;
        self.receipt(Self::ok(answer)?, hub_key)
    }

    /// Sends consent records the hub holds in an older form (`POST /v1/consents`); the
    /// hub's receipt, checked against its key.
    pub async fn consents(&self, body: Vec<u8>, hub_key: &[u8]) -> Result<(Receipt, Payload), ClientError> {
        let answer = self.send("POST", "/v1/consents", body.into(), &[]).await?;
        self.receipt(Self::ok(answer)?, hub_key)
    }

    /// `GET /v1/commands`: what the hub asks of this box (polled when MQTT is down).
    pub async fn commands(&self) -> Result<v1::Commands, ClientError> {
        let answer = Self::ok(self.send("GET", "/v1/commands", Bytes::new(), &[]).await?)?;
        Self::json(&answer)
    }

    /// `POST /v1/commands/{id}/ack`.
    pub async fn ack(&self, id: &str, ack: &v1::CommandAck) -> Result<(), ClientError> {
        let body = serde_json::to_vec(ack).expect("an ack serializes");
        Self::ok(self.send("POST", &format!("/v1/commands/{id}/ack"), body.into(), &[]).await?)?;
        Ok(())
    }

    fn receipt(&self, answer: Answer, hub_key: &[u8]) -> Result<(Receipt, Payload), ClientError> {
        let receipt: Receipt = Self::json(&answer)?;
        let payload = receipt.verify(hub_key).map_err(|e| ClientError::Certificate {
            hub: self.hub.to_string(),
            reason: format!("its receipt does not check out: {e}"),
        })?;
        if payload.device != self.identity.device {
            return Err(ClientError::Protocol(format!("a receipt for device {}, not this box", payload.device)));
        }
        Ok((receipt, payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r16_a_damaged_blob_is_sent_again_not_a_refused_batch() {
        let refused = |status: u16, code: &str| ClientError::Refused {
            status,
            refusal: v1::Refusal { code: code.into(), message: String::new(), missing: Vec::new() },
        };
        assert!(refused(422, "digest_mismatch").is_transient());
        assert!(refused(401, "bad_digest").is_transient());
        assert!(refused(507, "hub_full").is_transient(), "a full hub disk: later");
        assert!(!refused(400, "bad_request").is_transient(), "a malformed batch is refused for good");
        assert!(!refused(401, "revoked").is_transient());
    }

    #[test]
    fn hub_addresses_are_https_host_and_port() {
        let a: HubAddress = "https://hub.local:8443".parse().unwrap();
        assert_eq!((a.host.as_str(), a.port), ("hub.local", 8443));
        assert_eq!(a.to_string(), "https://hub.local:8443");
        let v6: HubAddress = "https://[::1]:9000".parse().unwrap();
        assert_eq!((v6.host.as_str(), v6.to_string().as_str()), ("::1", "https://[::1]:9000"));
        assert_eq!("https://10.0.0.2".parse::<HubAddress>().unwrap().port, 443);
        for bad in ["http://hub:80", "hub:8443", "https://hub:8443/v1", "https://:8443"] {
            let err = bad.parse::<HubAddress>().unwrap_err();
            assert!(err.contains("https://HOST:PORT"), "{bad}: {err}");
        }
    }
}
