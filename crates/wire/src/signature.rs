//! Request signatures: the subset of RFC 9421 (HTTP Message Signatures) with RFC 9530
//! digests that every device request to the hub carries, as pure functions over a
//! [`Request`] view, so the device's client and the hub's routes sign and check the same
//! bytes.
//!
//! ```text
//! Content-Digest: sha-256=:<base64 SHA-256 of the body>:
//! Signature-Input: obscura=("@method" "@path" "@query" "content-digest");created=<unix s>;nonce="<base64 16 bytes>";keyid="<device ULID>";alg="ed25519"
//! Signature: obscura=:<base64 ed25519 signature>:
//! ```
//!
//! The signature base is RFC 9421 §2.5's: one line per covered component, then the
//! `@signature-params` line, joined by `\n` with no newline at the end.
//!
//! Hand-written rather than the `httpsig` crate: that crate (0.0.x, "work in progress")
//! brings a second cryptography stack beside ring (ed25519-compact, ecdsa, p256, p384,
//! hmac, sha2, rand, pkcs8, spki, sec1) and a structured-field parser (sfv) for what is
//! here one label, four fixed components and one algorithm. A request outside this
//! subset is refused, never half-understood.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::{ED25519, Ed25519KeyPair, UnparsedPublicKey};

use crate::DeviceId;

/// The signature's label in `Signature-Input` and `Signature`.
pub const LABEL: &str = "obscura";
/// The components every request covers, in this order.
pub const COMPONENTS: &str = r#"("@method" "@path" "@query" "content-digest")"#;
/// The one algorithm.
pub const ALG: &str = "ed25519";
/// A signature made further than this from the hub's clock, either way, is stale.
pub const MAX_SKEW_S: i64 = 300;
/// How long the hub remembers a nonce: longer than any signature stays fresh on either
/// side of its clock, so a replay is caught whenever it would otherwise be accepted.
pub const NONCE_KEEP_S: i64 = 600;

/// Header names (lower case, as HTTP/2 and `http` spell them).
pub const CONTENT_DIGEST: &str = "content-digest";
pub const SIGNATURE_INPUT: &str = "signature-input";
pub const SIGNATURE: &str = "signature";

/// What is signed of a request, as the device sends it or the hub receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// `POST`, `GET`, ...
    pub method: &'a str,
    /// The absolute path, e.g. `/v1/batches/01H…`.
    pub path: &'a str,
    /// The query string without its `?`, if the target has one.
    pub query: Option<&'a str>,
    /// The `Content-Digest` header.
    pub content_digest: Option<&'a str>,
    /// The `Signature-Input` header.
    pub signature_input: Option<&'a str>,
    /// The `Signature` header.
    pub signature: Option<&'a str>,
}

/// Where a request goes: what the signature covers besides its body's digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The query string without its `?`, if any.
    pub query: Option<&'a str>,
}

/// The three headers a signed request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub content_digest: String,
    pub signature_input: String,
    pub signature: String,
}

/// The signature's parameters, as read from `Signature-Input`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Unix seconds.
    pub created: i64,
    /// Base64 of 16 random bytes, as sent.
    pub nonce: String,
    /// The device id, as sent.
    pub keyid: String,
}

impl Params {
    /// The device that claims to have signed.
    pub fn device(&self) -> Result<DeviceId, SigError> {
        self.keyid.parse().map_err(|e: String| malformed(SIGNATURE_INPUT, format!("keyid: {e}")))
    }
}

/// Why a request's signature or digest is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    #[error("the request has no `{0}` header: every request to the hub is signed with the device key (RFC 9421)")]
    Missing(&'static str),
    #[error("the `{header}` header is not in the form the hub accepts: {reason}")]
    Malformed { header: &'static str, reason: String },
    #[error(
        "the signature does not verify with the key enrolled for device {keyid}: forged, altered on the way, or made with another device's key"
    )]
    BadSignature { keyid: String },
    #[error(
        "the signature was made at {created} (Unix s), {skew} s away from the hub's clock; more than {MAX_SKEW_S} s is refused: set the device's clock (NTP)"
    )]
    Stale { created: i64, skew: i64 },
    #[error("the body does not match its Content-Digest: it was altered on the way, or the digest is of other bytes")]
    BadDigest,
}

impl SigError {
    /// The stable code the hub answers with.
    pub fn code(&self) -> &'static str {
        match self {
            SigError::Stale { .. } => "stale_signature",
            SigError::BadDigest => "bad_digest",
            _ => "bad_signature",
        }
    }
}

fn malformed(header: &'static str, reason: impl Into<String>) -> SigError {
    SigError::Malformed { header, reason: reason.into() }
}

/// `Content-Digest` of `body` (RFC 9530): `sha-256=:<base64>:`, also for an empty body.
pub fn content_digest(body: &[u8]) -> String {
    format!("sha-256=:{}:", B64.encode(ring::digest::digest(&ring::digest::SHA256, body)))
}

/// The `@signature-params` value, as it also stands in `Signature-Input` after the label.
pub fn signature_params(created: i64, nonce: &str, keyid: &str) -> String {
    format!("{COMPONENTS};created={created};nonce=\"{nonce}\";keyid=\"{keyid}\";alg=\"{ALG}\"")
}

/// The signature base (RFC 9421 §2.5) of `method`, `path`, `query` and `content_digest`
/// under `params` (the `@signature-params` value).
pub fn signature_base(method: &str, path: &str, query: Option<&str>, content_digest: &str, params: &str) -> String {
    // §2.2.6: an empty path is `/`; §2.2.7: no query is `?` alone.
    let path = if path.is_empty() { "/" } else { path };
    let query = query.unwrap_or("");
    format!(
        "\"@method\": {method}\n\"@path\": {path}\n\"@query\": ?{query}\n\"content-digest\": {content_digest}\n\"@signature-params\": {params}"
    )
}

/// Signs a request to `target` with `body`, as `device` with its `key`, at `created`
/// (Unix s) with `nonce` (16 bytes the caller draws from a secure random source).
pub fn sign(
    key: &Ed25519KeyPair,
    device: DeviceId,
    target: Target<'_>,
    body: &[u8],
    created: i64,
    nonce: [u8; 16],
) -> SignedHeaders {
    let content_digest = content_digest(body);
    let params = signature_params(created, &B64.encode(nonce), &device.to_string());
    let base = signature_base(target.method, target.path, target.query, &content_digest, &params);
    let signature = B64.encode(key.sign(base.as_bytes()));
    SignedHeaders {
        content_digest,
        signature_input: format!("{LABEL}={params}"),
        signature: format!("{LABEL}=:{signature}:"),
    }
}

/// The parameters of `request`'s signature, checked for form only: the hub reads the
/// key id from them to find the key to [`verify`] with.
pub fn parse(request: &Request<'_>) -> Result<Params, SigError> {
    Ok(read_input(request)?.1)
}

/// Checks `request`'s signature with `public_key` (32 raw bytes) at `now` (Unix s): the
/// signature first, so a forgery is `bad_signature` whatever its time, then its age.
/// The body's digest is [`check_digest`]'s, and the nonce the caller's to remember.
pub fn verify(request: &Request<'_>, public_key: &[u8], now: i64) -> Result<Params, SigError> {
    let (params_text, params) = read_input(request)?;
    let digest = request.content_digest.ok_or(SigError::Missing(CONTENT_DIGEST))?;
    let signature = request.signature.ok_or(SigError::Missing(SIGNATURE))?;
    let signature = member(signature, LABEL).ok_or_else(|| malformed(SIGNATURE, format!("no `{LABEL}` signature")))?;
    let signature = byte_sequence(signature).ok_or_else(|| malformed(SIGNATURE, "not a base64 byte sequence `:…:`"))?;
    let base = signature_base(request.method, request.path, request.query, digest, params_text);
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(base.as_bytes(), &signature)
        .map_err(|_| SigError::BadSignature { keyid: params.keyid.clone() })?;
    let skew = now - params.created;
    if skew.abs() > MAX_SKEW_S {
        return Err(SigError::Stale { created: params.created, skew });
    }
    Ok(params)
}

/// Checks that `body` is what `content_digest` (the header) says: its `sha-256` member.
pub fn check_digest(content_digest: Option<&str>, body: &[u8]) -> Result<(), SigError> {
    check_sha256(content_digest, ring::digest::digest(&ring::digest::SHA256, body).as_ref())
}

/// Checks that a body whose SHA-256 is `sha256` (computed as it streamed in) is what
/// `content_digest` (the header) says.
pub fn check_sha256(content_digest: Option<&str>, sha256: &[u8]) -> Result<(), SigError> {
    let header = content_digest.ok_or(SigError::Missing(CONTENT_DIGEST))?;
    let value = member(header, "sha-256").ok_or_else(|| malformed(CONTENT_DIGEST, "no `sha-256` digest"))?;
    let sent = byte_sequence(value).ok_or_else(|| malformed(CONTENT_DIGEST, "not a base64 byte sequence `:…:`"))?;
    if sent.as_slice() == sha256 { Ok(()) } else { Err(SigError::BadDigest) }
}

/// The `@signature-params` text of the `obscura` signature, and what it says.
fn read_input<'a>(request: &Request<'a>) -> Result<(&'a str, Params), SigError> {
    let header = request.signature_input.ok_or(SigError::Missing(SIGNATURE_INPUT))?;
    let text = member(header, LABEL).ok_or_else(|| malformed(SIGNATURE_INPUT, format!("no `{LABEL}` signature")))?;
    let rest = text
        .strip_prefix(COMPONENTS)
        .ok_or_else(|| malformed(SIGNATURE_INPUT, format!("the covered components must be exactly {COMPONENTS}")))?;
    let (mut created, mut nonce, mut keyid, mut alg) = (None, None, None, None);
    for param in split_outside_quotes(rest, ';').into_iter().skip(1) {
        let (name, value) = param
            .split_once('=')
            .ok_or_else(|| malformed(SIGNATURE_INPUT, format!("parameter `{param}` has no value")))?;
        match name {
            "created" => {
                created =
                    Some(value.parse::<i64>().map_err(|_| malformed(SIGNATURE_INPUT, "created is not an integer"))?)
            }
            "nonce" => nonce = Some(string(value)?),
            "keyid" => keyid = Some(string(value)?),
            "alg" => alg = Some(string(value)?),
            // Other parameters (`expires`, `tag`) are covered by the signature as sent.
            _ => {}
        }
    }
    let missing = |name: &str| malformed(SIGNATURE_INPUT, format!("no `{name}` parameter"));
    let (created, nonce, keyid) = (
        created.ok_or_else(|| missing("created"))?,
        nonce.ok_or_else(|| missing("nonce"))?,
        keyid.ok_or_else(|| missing("keyid"))?,
    );
    match alg {
        Some(a) if a == ALG => {}
        Some(a) => return Err(malformed(SIGNATURE_INPUT, format!("alg `{a}`: only `{ALG}` is accepted"))),
        None => return Err(missing("alg")),
    }
    if B64.decode(&nonce).map(|n| n.len()) != Ok(16) {
        return Err(malformed(SIGNATURE_INPUT, "the nonce must be base64 of 16 random bytes"));
    }
    Ok((text, Params { created, nonce, keyid }))
}

/// A structured-field string `"…"`, without escapes (nothing this subset sends has any).
fn string(value: &str) -> Result<String, SigError> {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .filter(|v| !v.contains(['"', '\\']))
        .map(str::to_owned)
        .ok_or_else(|| malformed(SIGNATURE_INPUT, format!("`{value}` is not a plain quoted string")))
}

/// A structured-field byte sequence `:<base64>:`.
fn byte_sequence(value: &str) -> Option<Vec<u8>> {
    B64.decode(value.strip_prefix(':')?.strip_suffix(':')?).ok()
}

/// The value of dictionary member `label` in a structured-field dictionary header
/// (`a=…, b=…`), trimmed.
fn member<'a>(header: &'a str, label: &str) -> Option<&'a str> {
    split_outside_quotes(header, ',').into_iter().find_map(|m| m.strip_prefix(label)?.strip_prefix('='))
}

/// `text` split at `sep` where it is outside quotes and parentheses, each part trimmed.
fn split_outside_quotes(text: &str, sep: char) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut depth) = (Vec::new(), 0, false, 0u32);
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth = depth.saturating_sub(1),
            c if c == sep && !quoted && depth == 0 => {
                parts.push(text[start..i].trim());
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(text[start..].trim());
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9421 Appendix B.1.4's `test-key-ed25519`: the seed from its PKCS#8 private key.
    const RFC_SEED_B64: &str = "n4Ni+HpISpVObnQMW0wOhCKROaIKqKtW/2ZYb2p9KcU=";
    /// Its public key, from the RFC's SubjectPublicKeyInfo
    /// (`MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=`).
    const RFC_PUBLIC_B64: &str = "JrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=";

    fn rfc_key() -> Ed25519KeyPair {
        let seed = B64.decode(RFC_SEED_B64).unwrap();
        Ed25519KeyPair::from_seed_and_public_key(&seed, &B64.decode(RFC_PUBLIC_B64).unwrap()).unwrap()
    }

    fn device() -> DeviceId {
        "01HZY3V8Q0M5W6ZJ7KX2C9D4FB".parse().unwrap()
    }

    fn view<'a>(method: &'a str, path: &'a str, query: Option<&'a str>, h: &'a SignedHeaders) -> Request<'a> {
        Request {
            method,
            path,
            query,
            content_digest: Some(&h.content_digest),
            signature_input: Some(&h.signature_input),
            signature: Some(&h.signature),
        }
    }

    /// Worked by hand from RFC 9421 §2.5 and RFC 9530, and checked with openssl: the
    /// digest of `{"hello": "world"}` is RFC 9530's own example, and the signature was
    /// made from the base below with `openssl pkeyutl -sign -rawin` and the RFC's key.
    #[test]
    fn the_signature_base_and_signature_match_a_vector_worked_by_hand() {
        let body = br#"{"hello": "world"}"#;
        let nonce = [0u8; 16];
        let headers = sign(
            &rfc_key(),
            device(),
            Target { method: "POST", path: "/v1/batches/b1", query: Some("x=1") },
            body,
            1_618_884_473,
            nonce,
        );
        assert_eq!(headers.content_digest, "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:");
        assert_eq!(
            headers.signature_input,
            r#"obscura=("@method" "@path" "@query" "content-digest");created=1618884473;nonce="AAAAAAAAAAAAAAAAAAAAAA==";keyid="01HZY3V8Q0M5W6ZJ7KX2C9D4FB";alg="ed25519""#
        );
        let params = headers.signature_input.strip_prefix("obscura=").unwrap();
        let base = signature_base("POST", "/v1/batches/b1", Some("x=1"), &headers.content_digest, params);
        assert_eq!(
            base,
            "\"@method\": POST\n\"@path\": /v1/batches/b1\n\"@query\": ?x=1\n\"content-digest\": sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:\n\"@signature-params\": (\"@method\" \"@path\" \"@query\" \"content-digest\");created=1618884473;nonce=\"AAAAAAAAAAAAAAAAAAAAAA==\";keyid=\"01HZY3V8Q0M5W6ZJ7KX2C9D4FB\";alg=\"ed25519\""
        );
        assert_eq!(headers.signature, format!("obscura=:{OPENSSL_SIGNATURE}:"));
        let public = B64.decode(RFC_PUBLIC_B64).unwrap();
        let params =
            verify(&view("POST", "/v1/batches/b1", Some("x=1"), &headers), &public, 1_618_884_473 + 10).unwrap();
        assert_eq!(params.device().unwrap(), device());
        assert_eq!(params.nonce, "AAAAAAAAAAAAAAAAAAAAAA==");
        check_digest(Some(&headers.content_digest), body).unwrap();
    }

    /// `openssl pkeyutl -sign -rawin -inkey rfc-ed25519.pem -in base | base64 -w0`.
    const OPENSSL_SIGNATURE: &str =
        "4a0EhictZipVGnRGKaC6iMRGmojUn8i7tGPDuSkCloaz7zTaOa64DD9sFZrfxw3RUisPM/3su1Y+fwgddcboAw==";

    #[test]
    fn no_query_is_a_lone_question_mark_and_an_empty_body_has_a_digest() {
        let base = signature_base("GET", "", None, &content_digest(b""), "()");
        assert!(base.starts_with("\"@method\": GET\n\"@path\": /\n\"@query\": ?\n"), "{base}");
        assert_eq!(content_digest(b""), "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:");
    }

    #[test]
    fn a_tampered_request_another_key_and_a_stale_signature_are_refused_each_as_itself() {
        let now = 1_700_000_000;
        let key = rfc_key();
        let public = B64.decode(RFC_PUBLIC_B64).unwrap();
        let h = sign(&key, device(), Target { method: "POST", path: "/v1/consents", query: None }, b"{}", now, [9; 16]);
        assert!(verify(&view("POST", "/v1/consents", None, &h), &public, now).is_ok());

        // Another path, method or query: the base differs.
        for (method, path, query) in
            [("POST", "/v1/erasures/x", None), ("PUT", "/v1/consents", None), ("POST", "/v1/consents", Some("a=b"))]
        {
            let err = verify(&view(method, path, query, &h), &public, now).unwrap_err();
            assert_eq!(err.code(), "bad_signature", "{method} {path} {query:?}: {err}");
        }
        // Another body under the signed digest: the digest check catches it.
        assert_eq!(check_digest(Some(&h.content_digest), b"{\"x\":1}"), Err(SigError::BadDigest));
        // Another digest header: the signature covers it.
        let mut forged = h.clone();
        forged.content_digest = content_digest(b"{\"x\":1}");
        assert_eq!(
            verify(&view("POST", "/v1/consents", None, &forged), &public, now).unwrap_err().code(),
            "bad_signature"
        );
        // Another device's key.
        let other = Ed25519KeyPair::from_seed_unchecked(&[3; 32]).unwrap();
        let h2 =
            sign(&other, device(), Target { method: "POST", path: "/v1/consents", query: None }, b"{}", now, [9; 16]);
        assert!(matches!(
            verify(&view("POST", "/v1/consents", None, &h2), &public, now),
            Err(SigError::BadSignature { .. })
        ));
        // Stale either way, reported as stale, not bad.
        for skew in [MAX_SKEW_S + 1, -(MAX_SKEW_S + 1)] {
            let err = verify(&view("POST", "/v1/consents", None, &h), &public, now + skew).unwrap_err();
            assert_eq!(err, SigError::Stale { created: now, skew });
            assert_eq!(err.code(), "stale_signature");
        }
        assert!(verify(&view("POST", "/v1/consents", None, &h), &public, now + MAX_SKEW_S).is_ok(), "300 s is fresh");
    }

    #[test]
    fn requests_outside_the_subset_are_refused_with_what_is_wrong() {
        let now = 1_700_000_000;
        let public = B64.decode(RFC_PUBLIC_B64).unwrap();
        let h =
            sign(&rfc_key(), device(), Target { method: "GET", path: "/v1/device", query: None }, b"", now, [1; 16]);
        let mut missing = view("GET", "/v1/device", None, &h);
        missing.signature = None;
        assert_eq!(verify(&missing, &public, now), Err(SigError::Missing(SIGNATURE)));
        for input in [
            h.signature_input.replace("\"content-digest\"", "\"content-type\""),
            h.signature_input.replace("ed25519", "hmac-sha256"),
            h.signature_input.replace("nonce=\"AQEBAQEBAQEBAQEBAQEBAQ==\";", ""),
            h.signature_input.replace("AQEBAQEBAQEBAQEBAQEBAQ==", "AQE="),
            h.signature_input.replace("obscura=", "other="),
        ] {
            let mut v = view("GET", "/v1/device", None, &h);
            v.signature_input = Some(&input);
            let err = parse(&v).unwrap_err();
            assert!(matches!(err, SigError::Malformed { .. }), "{input}: {err}");
            assert_eq!(err.code(), "bad_signature");
        }
        // Other members of the dictionaries are skipped, ours is found.
        let input = format!("sig0=(\"@method\");created=1, {}", h.signature_input);
        let signature = format!("sig0=:AAAA:, {}", h.signature);
        let mut v = view("GET", "/v1/device", None, &h);
        v.signature_input = Some(&input);
        v.signature = Some(&signature);
        assert!(verify(&v, &public, now).is_ok());
    }
}
