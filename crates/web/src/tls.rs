//! HTTPS for the LAN API: the certificate the box serves, and a TLS listener for
//! `axum::serve`.
//!
//! The certificate is the operator's (`[http] tls_cert` and `tls_key`), or the box's own,
//! made at first start in `<state>/tls/`: a root certificate of the box's own (a CA that
//! signs nothing else, [`load_or_create_own`]) and, signed by it, the serving certificate
//! for its hostname, `<hostname>.local`, its addresses, localhost and loopback. Tablets
//! install the root once (iOS and Android install trust anchors, not a server's
//! certificate); the serving certificate is then renewed, or made anew for a new address,
//! without asking them again. Nothing can vouch for the root itself, so its SHA-256
//! fingerprint is printed at every start and by `obscura doctor`, for the user to compare
//! with what the tablet shows before trusting it. The hub keeps a self-signed certificate
//! ([`load_or_create`]): boxes pin it by its fingerprint.
//!
//! Invariant: rustls with ring as its crypto provider; no OpenSSL and no aws-lc, so
//! building needs no C toolchain beyond ring's.

use std::fmt;
use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::serve::ListenerExt;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::limits::{Counted, PerAddress};

/// The box's own certificate and key, in the directory given to [`load_or_create`].
pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";
/// The box's root certificate and its key, beside them ([`load_or_create_own`]).
pub const ROOT_FILE: &str = "root.pem";
pub const ROOT_KEY_FILE: &str = "root-key.pem";

/// The box's own certificate lasts 825 days from start to end, not ten years: Apple
/// devices refuse TLS server certificates valid for longer (iOS 13 and later,
/// self-signed ones too), and the tablets are often iPads.
const VALIDITY_DAYS: i64 = 825;
/// The box's own certificate is made anew at start-up when it ends within this many days.
pub const RENEW_WITHIN_DAYS: i64 = 30;
/// The box's root lasts twenty years: Apple's 825 days are for server certificates, not
/// for the roots that sign them, and every new root must be trusted again on every tablet.
const ROOT_VALIDITY_DAYS: i64 = 20 * 365 + 5;
/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 256;
/// Handshakes in progress at once from one address: one client alone, sending nothing,
/// would otherwise hold every handshake slot for [`HANDSHAKE_TIMEOUT`].
const HANDSHAKES_PER_ADDRESS: usize = 8;
/// Once a browser trusts the box's certificate, it uses HTTPS only, for a year.
const HSTS: &str = "max-age=31536000";

/// Which file of a certificate and key pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Certificate,
    Key,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Certificate => "certificate",
            Part::Key => "key",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {part} {}: {error}", path.display())]
    Read { part: Part, path: PathBuf, error: io::Error },
    #[error("the TLS {part} {} is not usable: {reason}", path.display())]
    Invalid { part: Part, path: PathBuf, reason: String },
    #[error("the TLS key {} is not the key of the certificate {}: {reason}", key.display(), cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf, reason: String },
    #[error("cannot write {}: {error}", path.display())]
    Write { path: PathBuf, error: io::Error },
    #[error("cannot make a certificate: {0}")]
    Generate(String),
    /// The box's own certificate, made earlier, no longer loads.
    #[error(
        "{error}; delete {} to have a new certificate made at the next start (its fingerprint changes)",
        dir.display()
    )]
    Stored { dir: PathBuf, error: Box<TlsError> },
}

impl TlsError {
    /// The file at fault, when it is one of the pair.
    pub fn part(&self) -> Option<Part> {
        match self {
            TlsError::Read { part, .. } | TlsError::Invalid { part, .. } => Some(*part),
            TlsError::Stored { error, .. } => error.part(),
            _ => None,
        }
    }
}

/// A certificate chain with its private key, known to belong together, ready to serve.
#[derive(Clone)]
pub struct Identity {
    /// Where the chain was read from.
    pub cert_path: PathBuf,
    chain: Vec<CertificateDer<'static>>,
    config: Arc<ServerConfig>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("cert_path", &self.cert_path)
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// The SHA-256 fingerprint of the certificate the box presents, as browsers show it.
    pub fn fingerprint(&self) -> String {
        fingerprint_sha256(&self.chain[0])
    }

    /// The names and validity of the certificate the box presents.
    pub fn info(&self) -> CertInfo {
        // `load` has parsed it already.
        describe(&self.chain[0]).expect("a loaded certificate parses")
    }
}

/// How the box's own certificate came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    /// Made earlier and still good.
    Loaded,
    /// Made now: there was none.
    New,
    /// Made now: the old one was about to end. Its fingerprint changed.
    Renewed,
    /// Made now, signed by the box's root: the old one was not for every name the box
    /// has now (a new address), or was signed by another root.
    Reissued,
    /// Made now, signed by the box's new root: the old one was self-signed (a box from
    /// before the root). Tablets that trusted it trust the root instead, once.
    Migrated,
}

/// The box's own root certificate: what tablets install to trust the box.
#[derive(Clone)]
pub struct RootCa {
    /// Where it was read from.
    pub path: PathBuf,
    der: CertificateDer<'static>,
    pem: String,
}

impl fmt::Debug for RootCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootCa").field("path", &self.path).field("fingerprint", &self.fingerprint()).finish()
    }
}

impl RootCa {
    /// Its DER encoding, as a `.crt` download carries it.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// Its PEM encoding.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// Its SHA-256 fingerprint, as iOS, Android and browsers show it.
    pub fn fingerprint(&self) -> String {
        fingerprint_sha256(&self.der)
    }

    /// Its validity and fingerprint (a root carries no names).
    pub fn info(&self) -> CertInfo {
        describe(&self.der).expect("a loaded root parses")
    }

    /// Its common name, e.g. "Obscura root gatebox".
    pub fn name(&self) -> String {
        common_name(&self.der).unwrap_or_else(|| "Obscura root".into())
    }

    /// An iOS and iPadOS configuration profile that installs the root (a
    /// `com.apple.security.root` payload). Unsigned: iOS shows it as "Not Signed", and
    /// the root is used for TLS only once turned on under Certificate Trust Settings.
    pub fn mobileconfig(&self) -> String {
        let name = xml_escape(&self.name());
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.der);
        let id: String = digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
        let uuid = |salt: u8| {
            let d = ring::digest::digest(&ring::digest::SHA256, &[&[salt][..], &self.der].concat());
            let mut b: [u8; 16] = d.as_ref()[..16].try_into().expect("16 of 32 bytes");
            // An RFC 9562 version 8 (name-based, own hash) UUID: the same root, the same id.
            b[6] = (b[6] & 0x0f) | 0x80;
            b[8] = (b[8] & 0x3f) | 0x80;
            let h: String = b.iter().map(|x| format!("{x:02X}")).collect();
            format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
        };
        // The PEM body is the base64 of the DER, which a plist's <data> holds.
        let data: String =
            self.pem.lines().filter(|l| !l.starts_with("-----")).map(|l| format!("\t\t\t{l}\n")).collect();
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>PayloadContent</key>
	<array>
		<dict>
			<key>PayloadCertificateFileName</key>
			<string>obscura-root.crt</string>
			<key>PayloadContent</key>
			<data>
{data}			</data>
			<key>PayloadDescription</key>
			<string>Adds the root certificate of {name}, so this device trusts the box's HTTPS.</string>
			<key>PayloadDisplayName</key>
			<string>{name}</string>
			<key>PayloadIdentifier</key>
			<string>local.obscura.{id}.root</string>
			<key>PayloadType</key>
			<string>com.apple.security.root</string>
			<key>PayloadUUID</key>
			<string>{payload}</string>
			<key>PayloadVersion</key>
			<integer>1</integer>
		</dict>
	</array>
	<key>PayloadDescription</key>
	<string>Trust {name}: the tablet app then opens without warnings and works offline. Check its SHA-256 fingerprint against the one the box prints.</string>
	<key>PayloadDisplayName</key>
	<string>{name}</string>
	<key>PayloadIdentifier</key>
	<string>local.obscura.{id}</string>
	<key>PayloadOrganization</key>
	<string>Obscura</string>
	<key>PayloadRemovalDisallowed</key>
	<false/>
	<key>PayloadType</key>
	<string>Configuration</string>
	<key>PayloadUUID</key>
	<string>{profile}</string>
	<key>PayloadVersion</key>
	<integer>1</integer>
</dict>
</plist>
"#,
            payload = uuid(1),
            profile = uuid(2),
        )
    }
}

/// `&`, `<`, `>` and quotes as XML entities.
fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}

/// The box's own certificate as [`load_or_create_own`] leaves it: the serving certificate,
/// signed by the box's root.
#[derive(Debug)]
pub struct Own {
    pub identity: Identity,
    pub root: RootCa,
    /// How the serving certificate came to be.
    pub made: Made,
    /// The root was made now (first start, a box from before the root, or the old root
    /// was about to end): tablets must trust it (again).
    pub new_root: bool,
}

/// What `obscura doctor` shows of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub fingerprint: String,
    /// Its subject alternative names: DNS names and IP addresses.
    pub names: Vec<String>,
    /// The start of its validity, in seconds since the Unix epoch.
    pub not_before: i64,
    /// The end of its validity, in seconds since the Unix epoch.
    pub not_after: i64,
}

impl CertInfo {
    /// The last day of its validity, e.g. "2028-03-01".
    pub fn expires(&self) -> String {
        match time::OffsetDateTime::from_unix_timestamp(self.not_after) {
            Ok(t) => format!("{}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()),
            Err(_) => format!("{} s after 1970", self.not_after),
        }
    }

    /// Whole days until it ends, negative once it has.
    pub fn days_left(&self) -> i64 {
        (self.not_after - time::OffsetDateTime::now_utc().unix_timestamp()).div_euclid(86_400)
    }
}

/// The certificate's SHA-256 fingerprint as browsers show it: upper-case hex, colons
/// between bytes.
pub fn fingerprint_sha256(cert_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert_der);
    digest.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// A certificate chain (PEM, the box's own certificate first) and its
/// private key (PEM: PKCS#8, PKCS#1 or SEC1; not encrypted).
pub fn load(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
    let chain = read_chain(cert)?;
    let key_der = read_key(key)?;
    let config = server_config(chain.clone(), key_der).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            TlsError::Mismatch { cert: cert.to_owned(), key: key.to_owned(), reason: "their public keys differ".into() }
        }
        other => TlsError::Invalid { part: Part::Key, path: key.to_owned(), reason: other.to_string() },
    })?;
    Ok(Identity { cert_path: cert.to_owned(), chain, config: Arc::new(config) })
}

/// The names, validity and fingerprint of the first certificate in a PEM file, without
/// its key (which `obscura doctor` may not be allowed to read).
pub fn inspect(cert: &Path) -> Result<CertInfo, TlsError> {
    let chain = read_chain(cert)?;
    Ok(describe(&chain[0]).expect("read_chain parsed it"))
}

/// The box's own certificate from `dir`, made (and written there) when there is none or
/// it ends within [`RENEW_WITHIN_DAYS`]. `names` are what it is for; see [`host_names`].
pub fn load_or_create(dir: &Path, names: &[String]) -> Result<(Identity, Made), TlsError> {
    let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
    let made = if cert.exists() && key.exists() {
        let identity = load(&cert, &key).map_err(|e| TlsError::Stored { dir: dir.to_owned(), error: Box::new(e) })?;
        if identity.info().days_left() > RENEW_WITHIN_DAYS {
            return Ok((identity, Made::Loaded));
        }
        Made::Renewed
    } else {
        Made::New
    };
    let (cert_pem, key_pem) = generate(names)?;
    write_whole(dir, KEY_FILE, &key_pem, 0o600)?;
    write_whole(dir, CERT_FILE, &cert_pem, 0o644)?;
    Ok((load(&cert, &key)?, made))
}

/// The box's own serving certificate and its root, from `dir`. The root is made when
/// there is none (or it ends within [`RENEW_WITHIN_DAYS`]); the serving certificate is
/// made, signed by the root, when there is none, it ends within [`RENEW_WITHIN_DAYS`],
/// it does not verify against the root for every one of `names` (webpki, as a client
/// would check it), or it is the self-signed one of a box from before the root. The
/// served chain is the serving certificate then the root, so a browser shows both.
pub fn load_or_create_own(dir: &Path, names: &[String]) -> Result<Own, TlsError> {
    let stored = |e| TlsError::Stored { dir: dir.to_owned(), error: Box::new(e) };
    let (root, root_key, new_root) = load_or_create_root(dir, names)?;
    let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
    let made = if cert.exists() && key.exists() {
        let identity = load(&cert, &key).map_err(stored)?;
        if identity.info().days_left() <= RENEW_WITHIN_DAYS {
            Made::Renewed
        } else if is_self_signed(&identity.chain[0]) {
            Made::Migrated
        } else if verifies_for(&identity, &root, names) {
            return Ok(Own { identity, root, made: Made::Loaded, new_root });
        } else {
            Made::Reissued
        }
    } else {
        Made::New
    };
    let (cert_pem, key_pem) = generate_signed(names, &root, root_key)?;
    write_whole(dir, KEY_FILE, &key_pem, 0o600)?;
    write_whole(dir, CERT_FILE, &format!("{cert_pem}{}", root.pem), 0o644)?;
    Ok(Own { identity: load(&cert, &key)?, root, made, new_root })
}

/// The box's root and its key from `dir`, made there when missing or ending; true when
/// made now.
fn load_or_create_root(dir: &Path, names: &[String]) -> Result<(RootCa, rcgen::KeyPair, bool), TlsError> {
    let (path, key_path) = (dir.join(ROOT_FILE), dir.join(ROOT_KEY_FILE));
    if path.exists() && key_path.exists() {
        let stored = |e| TlsError::Stored { dir: dir.to_owned(), error: Box::new(e) };
        let der = read_chain(&path).map_err(stored)?.swap_remove(0);
        let key_text = std::fs::read_to_string(&key_path)
            .map_err(|error| stored(TlsError::Read { part: Part::Key, path: key_path.clone(), error }))?;
        let invalid = |reason: String| stored(TlsError::Invalid { part: Part::Key, path: key_path.clone(), reason });
        let key = rcgen::KeyPair::from_pem(&key_text).map_err(|e| invalid(e.to_string()))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).map_err(|e| invalid(e.to_string()))?;
        if parsed.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
            return Err(stored(TlsError::Mismatch {
                cert: path,
                key: key_path,
                reason: "their public keys differ".into(),
            }));
        }
        let pem = std::fs::read_to_string(&path)
            .map_err(|error| stored(TlsError::Read { part: Part::Certificate, path: path.clone(), error }))?;
        let root = RootCa { path: path.clone(), der, pem };
        if root.info().days_left() > RENEW_WITHIN_DAYS {
            return Ok((root, key, false));
        }
    }
    let failed = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let key = rcgen::KeyPair::generate().map_err(failed)?;
    let mut params = root_params(&format!("Obscura root {}", names.first().map_or("box", String::as_str)));
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    params.not_after = params.not_before + time::Duration::days(ROOT_VALIDITY_DAYS);
    let pem = params.self_signed(&key).map_err(failed)?.pem();
    write_whole(dir, ROOT_KEY_FILE, &key.serialize_pem(), 0o600)?;
    write_whole(dir, ROOT_FILE, &pem, 0o644)?;
    let der = read_chain(&path)?.swap_remove(0);
    Ok((RootCa { path, der, pem }, key, true))
}

/// What the box's root is, beyond its validity: a CA that may sign server certificates
/// and nothing below them (path length 0), named `name`. The same `name` gives the same
/// subject, which the certificates it signs name as their issuer.
fn root_params(name: &str) -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::default();
    let mut subject = rcgen::DistinguishedName::new();
    subject.push(rcgen::DnType::CommonName, name);
    params.distinguished_name = subject;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    params
}

/// A serving certificate for `names` (ECDSA P-256, CA:FALSE, serverAuth, 825 days) signed
/// by `root`, and its key, both PEM.
fn generate_signed(names: &[String], root: &RootCa, root_key: rcgen::KeyPair) -> Result<(String, String), TlsError> {
    let failed = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let issuer = rcgen::Issuer::new(root_params(&root.name()), root_key);
    let mut params = server_params(names).map_err(failed)?;
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    let key = rcgen::KeyPair::generate().map_err(failed)?;
    let cert = params.signed_by(&key, &issuer).map_err(failed)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Whether `identity`'s chain verifies against `root` alone for every one of `names`,
/// as a TLS client that trusts the root checks it (rustls's webpki verifier, now).
pub fn verifies_for(identity: &Identity, root: &RootCa, names: &[String]) -> bool {
    use rustls::client::danger::ServerCertVerifier;
    let mut roots = rustls::RootCertStore::empty();
    if roots.add(root.der.clone()).is_err() {
        return false;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Ok(verifier) = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build()
    else {
        return false;
    };
    let now = rustls::pki_types::UnixTime::now();
    names.iter().all(|name| {
        let Ok(server) = rustls::pki_types::ServerName::try_from(name.as_str()) else {
            // A name no client could ask for does not count against the certificate.
            return true;
        };
        verifier.verify_server_cert(&identity.chain[0], &identity.chain[1..], &server, &[], now).is_ok()
    })
}

/// A certificate that names itself as its issuer: the box's serving certificate from
/// before the root.
fn is_self_signed(cert: &CertificateDer<'_>) -> bool {
    x509_parser::parse_x509_certificate(cert).is_ok_and(|(_, c)| c.issuer() == c.subject())
}

/// The first common name of a certificate's subject.
fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    parsed.subject().iter_common_name().next()?.as_str().ok().map(str::to_owned)
}

/// What the box's own certificate is for: its hostname, `<hostname>.local` (mDNS, as
/// tablets find the box), localhost and the loopback addresses.
pub fn host_names() -> Vec<String> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_ascii_lowercase());
    names_for(host.as_deref())
}

fn names_for(host: Option<&str>) -> Vec<String> {
    let mut names = Vec::new();
    // A name a certificate cannot carry (not ASCII, say) is left out rather than
    // stopping start-up: the `.local` and loopback names still work.
    let usable = |h: &&str| {
        !h.is_empty() && *h != "localhost" && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    };
    if let Some(host) = host.filter(usable) {
        names.push(host.to_owned());
        // box.example.org answers mDNS as box.local.
        let short = host.split('.').next().unwrap_or(host);
        names.push(format!("{short}.local"));
    }
    names.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
    names.dedup();
    names
}

/// A self-signed ECDSA P-256 certificate for `names` and its key, both PEM (the hub's).
fn generate(names: &[String]) -> Result<(String, String), TlsError> {
    let failed = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let params = server_params(names).map_err(failed)?;
    let key = rcgen::KeyPair::generate().map_err(failed)?;
    let cert = params.self_signed(&key).map_err(failed)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A TLS server certificate for `names` as Apple requires one: the names in its subject
/// alternative names, serverAuth, at most 825 days from start to end.
fn server_params(names: &[String]) -> Result<rcgen::CertificateParams, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    let mut subject = rcgen::DistinguishedName::new();
    subject.push(rcgen::DnType::CommonName, format!("Obscura {}", names.first().map_or("box", String::as_str)));
    params.distinguished_name = subject;
    // A day's grace for a tablet whose clock is behind, inside the 825 days: Apple
    // counts from the start, not from now.
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    params.not_after = params.not_before + time::Duration::days(VALIDITY_DAYS);
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    Ok(params)
}

/// Writes `dir/name` whole or not at all, with `mode`.
fn write_whole(dir: &Path, name: &str, text: &str, mode: u32) -> Result<(), TlsError> {
    let path = dir.join(name);
    let failed = |error: io::Error| TlsError::Write { path: path.clone(), error };
    std::fs::create_dir_all(dir).map_err(|error| TlsError::Write { path: dir.to_owned(), error })?;
    // Made 0600, so the key is never readable by others, not even while being written.
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(failed)?;
    file.write_all(text.as_bytes()).map_err(failed)?;
    file.as_file().set_permissions(std::fs::Permissions::from_mode(mode)).map_err(failed)?;
    file.as_file().sync_all().map_err(failed)?;
    file.persist(&path).map_err(|e| failed(e.error))?;
    Ok(())
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |reason: String| TlsError::Invalid { part: Part::Certificate, path: path.to_owned(), reason };
    let pem = std::fs::read(path).map_err(|error| TlsError::Read {
        part: Part::Certificate,
        path: path.to_owned(),
        error,
    })?;
    let chain =
        CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().map_err(|e| invalid(e.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(invalid("it holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into()));
    };
    if describe(leaf).is_none() {
        return Err(invalid("its first certificate is not an X.509 certificate".into()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|error| TlsError::Read { part: Part::Key, path: path.to_owned(), error })?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Invalid {
        part: Part::Key,
        path: path.to_owned(),
        reason: match e {
            rustls::pki_types::pem::Error::NoItemsFound => "it holds no unencrypted PEM private key (PKCS#8, PKCS#1 \
                or SEC1); decrypt an encrypted one with `openssl pkey -in KEY -out key.pem`"
                .into(),
            other => other.to_string(),
        },
    })
}

/// TLS 1.2 and 1.3 with ring, HTTP/1.1 (all the router speaks).
fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves, then finishes open
/// requests, like [`crate::serve`]; handlers see the client's address the same way.
/// Every response carries HSTS.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    identity: Identity,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let router = router.layer(SetResponseHeaderLayer::if_not_present(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static(HSTS),
    ));
    // axum hands a custom listener's address to `ConnectInfo` through `tap_io`.
    let listener = TlsListener::spawn(listener, identity.config)?.tap_io(|tls: &mut Counted<TlsStream<TcpStream>>| {
        // Small JSON answers go out at once.
        let _ = tls.io.get_ref().0.set_nodelay(true);
    });
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}

/// Connections after their TLS handshake. Handshakes run in their own tasks, each with
/// a deadline, so a slow or silent client holds up no one else; an address with
/// [`CONNECTIONS_PER_ADDRESS`](crate::limits::CONNECTIONS_PER_ADDRESS) open (handshaking
/// or not), or [`HANDSHAKES_PER_ADDRESS`] handshaking, has further ones closed before
/// any TLS. Dropping the listener (axum does when
/// shutdown begins) stops accepting and abandons handshakes under way.
struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(Counted<TlsStream<TcpStream>>, SocketAddr)>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    fn spawn(listener: TcpListener, config: Arc<ServerConfig>) -> io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(MAX_HANDSHAKES);
        let acceptor = TlsAcceptor::from(config);
        let (limits, handshaking) = (PerAddress::default(), PerAddress::with_cap(HANDSHAKES_PER_ADDRESS));
        let task = tokio::spawn(async move {
            let mut handshakes = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept(), if handshakes.len() < MAX_HANDSHAKES => {
                        let (tcp, peer) = match accepted {
                            Ok(connection) => connection,
                            Err(error) => {
                                accept_failed(error).await;
                                continue;
                            }
                        };
                        let (Some(slot), Some(handshake)) = (limits.admit(peer.ip()), handshaking.admit(peer.ip())) else {
                            tracing::debug!(%peer, "connection refused: too many open or handshaking from this address");
                            continue;
                        };
                        let (acceptor, tx) = (acceptor.clone(), tx.clone());
                        handshakes.spawn(async move {
                            let accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                            drop(handshake);
                            match accepted {
                                Ok(Ok(tls)) => {
                                    let _ = tx.send((Counted::new(tls, slot), peer)).await;
                                }
                                // Browsers that do not trust the certificate yet end here.
                                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                            }
                        });
                    }
                    Some(_) = handshakes.join_next() => {}
                }
            }
        });
        Ok(TlsListener { local, ready, task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = Counted<TlsStream<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept task ended, which only a panic does, and a panic aborts the daemon.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// As axum does for plain TCP: a client that gave up is no error; anything else (too
/// many open files) is logged and waited out.
pub(crate) async fn accept_failed(error: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(error.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::error!(%error, "cannot accept HTTPS connections; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The subject alternative names and validity of a DER certificate, or None when it is
/// not one.
fn describe(cert: &CertificateDer<'_>) -> Option<CertInfo> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let mut names = Vec::new();
    if let Some(san) = parsed.subject_alternative_name().ok()? {
        for name in &san.value.general_names {
            match *name {
                GeneralName::DNSName(dns) => names.push(dns.to_owned()),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => names.push(Ipv4Addr::from(<[u8; 4]>::try_from(ip).ok()?).to_string()),
                    16 => names.push(Ipv6Addr::from(<[u8; 16]>::try_from(ip).ok()?).to_string()),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    let validity = parsed.validity();
    Some(CertInfo {
        fingerprint: fingerprint_sha256(cert),
        names,
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::Read;

    use axum::extract::ConnectInfo;
    use axum::routing::get;

    fn names() -> Vec<String> {
        names_for(Some("gatebox"))
    }

    #[test]
    fn fingerprints_read_like_a_browsers() {
        // SHA-256 of nothing.
        let fp = fingerprint_sha256(b"");
        assert!(fp.starts_with("E3:B0:C4:42:98:FC:1C:14:9A:FB:F4:C8"), "{fp}");
        assert_eq!(fp.len(), 32 * 3 - 1);
    }

    #[test]
    fn the_box_is_named_by_its_hostname_its_mdns_name_and_loopback() {
        assert_eq!(names(), ["gatebox", "gatebox.local", "localhost", "127.0.0.1", "::1"]);
        assert_eq!(names_for(Some("gate.example.org"))[..2], ["gate.example.org", "gate.local"]);
        assert_eq!(names_for(Some("gate.local"))[..2], ["gate.local", "localhost"]);
        assert_eq!(names_for(Some("café")), ["localhost", "127.0.0.1", "::1"]);
        assert_eq!(names_for(None), ["localhost", "127.0.0.1", "::1"]);
    }

    #[test]
    fn the_boxs_own_certificate_is_made_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        let (first, made) = load_or_create(&tls, &names()).unwrap();
        assert_eq!(made, Made::New);
        let mode = |name: &str| std::fs::metadata(tls.join(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(KEY_FILE), mode(CERT_FILE)), (0o600, 0o644));
        let info = first.info();
        assert_eq!(info.names, names());
        assert!((VALIDITY_DAYS - 2..VALIDITY_DAYS).contains(&info.days_left()), "{info:?}");
        assert_eq!(info.fingerprint, first.fingerprint());
        assert_eq!(inspect(&tls.join(CERT_FILE)).unwrap(), info);

        let (again, made) = load_or_create(&tls, &names()).unwrap();
        assert_eq!((made, again.fingerprint()), (Made::Loaded, first.fingerprint()));
    }

    /// Issue 15, item 14: iPads refuse a server certificate whose validity, start to end,
    /// exceeds 825 days; the day's grace for slow clocks counts in it.
    #[test]
    fn r15_14_the_boxs_own_certificate_spans_at_most_825_days() {
        let dir = tempfile::tempdir().unwrap();
        let (identity, _) = load_or_create(dir.path(), &names()).unwrap();
        let pem = std::fs::read(dir.path().join(CERT_FILE)).unwrap();
        let der = CertificateDer::pem_slice_iter(&pem).next().unwrap().unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let validity = cert.validity();
        let span = validity.not_after.timestamp() - validity.not_before.timestamp();
        assert!(span <= 825 * 86_400, "valid {} days, iPads allow 825", span as f64 / 86_400.0);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        assert!(now - validity.not_before.timestamp() >= 86_400 - 60, "a tablet a day behind accepts it");
        assert_eq!(identity.info().not_before, validity.not_before.timestamp());
    }

    /// Issue 18, item 1: iOS and Android install trust anchors, so the box has a root
    /// (CA:TRUE, keyCertSign, twenty years) that signs its serving certificate (CA:FALSE,
    /// serverAuth, its names, at most 825 days), and the chain verifies against the root
    /// for every name, by webpki as a client checks it.
    #[test]
    fn r18_1_the_boxs_root_signs_its_serving_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let names = [names(), vec!["192.168.1.20".to_owned()]].concat();
        let own = load_or_create_own(dir.path(), &names).unwrap();
        assert_eq!((own.made, own.new_root), (Made::New, true));
        let mode = |name: &str| std::fs::metadata(dir.path().join(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            [mode(ROOT_KEY_FILE), mode(ROOT_FILE), mode(KEY_FILE), mode(CERT_FILE)],
            [0o600, 0o644, 0o600, 0o644]
        );

        let (_, root) = x509_parser::parse_x509_certificate(own.root.der()).unwrap();
        let constraints = root.basic_constraints().unwrap().unwrap().value;
        assert!(constraints.ca && constraints.path_len_constraint == Some(0), "{constraints:?}");
        let usage = root.key_usage().unwrap().unwrap().value;
        assert!(usage.key_cert_sign() && usage.crl_sign() && !usage.digital_signature(), "{usage:?}");
        assert!(own.root.info().days_left() > 19 * 365, "{:?}", own.root.info());
        assert_eq!(own.root.name(), "Obscura root gatebox");

        let (_, leaf) = x509_parser::parse_x509_certificate(&own.identity.chain[0]).unwrap();
        assert!(!leaf.basic_constraints().unwrap().unwrap().value.ca);
        assert!(leaf.extended_key_usage().unwrap().unwrap().value.server_auth);
        assert_eq!(leaf.issuer(), root.subject());
        let span = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
        assert!(span <= 825 * 86_400, "valid {} days", span / 86_400);
        assert_eq!(own.identity.info().names, names);
        // The chain served is the serving certificate, then the root.
        assert_eq!(own.identity.chain.len(), 2);
        assert_eq!(own.identity.chain[1].as_ref(), own.root.der());
        assert!(verifies_for(&own.identity, &own.root, &names));
        assert!(!verifies_for(&own.identity, &own.root, &["gate.example.org".to_owned()]), "not for another name");
        let other = tempfile::tempdir().unwrap();
        let stranger = load_or_create_own(other.path(), &names).unwrap();
        assert!(!verifies_for(&own.identity, &stranger.root, &names), "not against another box's root");

        // Again: both reused.
        let again = load_or_create_own(dir.path(), &names).unwrap();
        assert_eq!((again.made, again.new_root), (Made::Loaded, false));
        assert_eq!(
            (again.identity.fingerprint(), again.root.fingerprint()),
            (own.identity.fingerprint(), own.root.fingerprint())
        );
        // A new address: a new serving certificate under the same root, which tablets trust already.
        let moved = [names.clone(), vec!["10.0.0.7".to_owned()]].concat();
        let reissued = load_or_create_own(dir.path(), &moved).unwrap();
        assert_eq!((reissued.made, reissued.new_root), (Made::Reissued, false));
        assert_eq!(reissued.root.fingerprint(), own.root.fingerprint());
        assert_ne!(reissued.identity.fingerprint(), own.identity.fingerprint());
        assert!(verifies_for(&reissued.identity, &own.root, &moved));
    }

    /// Issue 18, item 1: a box from before the root (a self-signed serving certificate in
    /// `tls/`) gains a root at its next start, and a serving certificate signed by it;
    /// the self-signed one is replaced, once.
    #[test]
    fn r18_1_a_box_with_the_old_self_signed_certificate_migrates_once() {
        let dir = tempfile::tempdir().unwrap();
        let (old, _) = load_or_create(dir.path(), &names()).unwrap();
        assert!(is_self_signed(&old.chain[0]));
        let own = load_or_create_own(dir.path(), &names()).unwrap();
        assert_eq!((own.made, own.new_root), (Made::Migrated, true));
        assert_ne!(own.identity.fingerprint(), old.fingerprint());
        assert!(!is_self_signed(&own.identity.chain[0]));
        assert!(verifies_for(&own.identity, &own.root, &names()));
        let again = load_or_create_own(dir.path(), &names()).unwrap();
        assert_eq!((again.made, again.identity.fingerprint()), (Made::Loaded, own.identity.fingerprint()));
    }

    /// Issue 18, item 1: the iOS profile, read by a real plist parser (Python's
    /// plistlib), is a Configuration profile with one `com.apple.security.root` payload
    /// holding the root's DER, and the keys iOS requires.
    #[test]
    fn r18_1_the_ios_profile_is_a_plist_with_the_root_in_a_root_payload() {
        let dir = tempfile::tempdir().unwrap();
        let own = load_or_create_own(dir.path(), &names()).unwrap();
        let profile = dir.path().join("obscura.mobileconfig");
        std::fs::write(&profile, own.root.mobileconfig()).unwrap();
        let script = r#"
import hashlib, json, plistlib, sys
with open(sys.argv[1], "rb") as f:
    p = plistlib.load(f)
payloads = p["PayloadContent"]
print(json.dumps({
    "top": {k: p[k] for k in ["PayloadType", "PayloadVersion", "PayloadIdentifier", "PayloadUUID", "PayloadDisplayName", "PayloadRemovalDisallowed"]},
    "payloads": [{k: (hashlib.sha256(v).hexdigest() if isinstance(v, bytes) else v) for k, v in q.items()} for q in payloads],
}))
"#;
        let out = std::process::Command::new("python3").arg("-c").arg(script).arg(&profile).output().expect("python3");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let top = &parsed["top"];
        assert_eq!(top["PayloadType"], "Configuration");
        assert_eq!(top["PayloadVersion"], 1);
        assert_eq!(top["PayloadRemovalDisallowed"], false);
        assert_eq!(top["PayloadDisplayName"], "Obscura root gatebox");
        let payloads = parsed["payloads"].as_array().unwrap();
        assert_eq!(payloads.len(), 1);
        let root = &payloads[0];
        assert_eq!(root["PayloadType"], "com.apple.security.root");
        assert_eq!(root["PayloadVersion"], 1);
        // Python prints the payload's bytes as their SHA-256.
        let der = own.root.fingerprint().replace(':', "").to_ascii_lowercase();
        assert_eq!(root["PayloadContent"], der.as_str(), "the payload is the root's DER");
        let uuid = |v: &serde_json::Value| v.as_str().unwrap().to_owned();
        let (a, b) = (uuid(&top["PayloadUUID"]), uuid(&root["PayloadUUID"]));
        assert_ne!(a, b);
        for id in [&a, &b] {
            let groups: Vec<usize> = id.split('-').map(str::len).collect();
            assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
        }
        assert!(root["PayloadIdentifier"].as_str().unwrap().starts_with(top["PayloadIdentifier"].as_str().unwrap()));
        // The same root, the same profile: a tablet that installs it again replaces it.
        assert_eq!(own.root.mobileconfig(), load_or_create_own(dir.path(), &names()).unwrap().root.mobileconfig());
    }

    #[test]
    fn a_broken_stored_certificate_says_how_to_get_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path(), &names()).unwrap();
        std::fs::write(dir.path().join(CERT_FILE), "garbage").unwrap();
        let err = load_or_create(dir.path(), &names()).unwrap_err();
        assert_eq!(err.part(), Some(Part::Certificate));
        let err = err.to_string();
        assert!(err.contains("holds no PEM certificate") && err.contains("delete"), "{err}");
    }

    #[test]
    fn an_operators_pair_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        load_or_create(&a, &names()).unwrap();
        load_or_create(&b, &names()).unwrap();
        let err = load(&a.join(CERT_FILE), &b.join(KEY_FILE)).unwrap_err();
        assert!(matches!(err, TlsError::Mismatch { .. }), "{err}");
        assert!(err.to_string().contains("is not the key of the certificate"), "{err}");

        let missing = dir.path().join("nope.pem");
        let err = load(&a.join(CERT_FILE), &missing).unwrap_err();
        assert_eq!(err.part(), Some(Part::Key));
        assert!(err.to_string().starts_with(&format!("cannot read the TLS key {}: ", missing.display())), "{err}");
        // A certificate where the key should be.
        let err = load(&a.join(CERT_FILE), &a.join(CERT_FILE)).unwrap_err();
        assert!(err.to_string().contains("holds no unencrypted PEM private key"), "{err}");
    }

    /// A real TLS client against [`serve`]: the handshake verifies against the box's root, handlers see the client's address, responses carry HSTS, and shutdown
    /// ends the server.
    #[tokio::test]
    async fn serves_https_with_the_clients_address_and_hsts() {
        let dir = tempfile::tempdir().unwrap();
        let own = load_or_create_own(dir.path(), &names()).unwrap();
        let identity = own.identity;
        let router = Router::new()
            .route("/peer", get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(serve(listener, router, identity.clone(), stop.clone().cancelled_owned()));

        // The client trusts the box's root only, as a tablet that installed it does.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(own.root.der().to_vec())).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("gatebox.local").unwrap();
        let response = tokio::task::spawn_blocking(move || {
            let connection = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
            let mut tls = rustls::StreamOwned::new(connection, std::net::TcpStream::connect(addr).unwrap());
            tls.write_all(b"GET /peer HTTP/1.1\r\nHost: gatebox.local\r\nConnection: close\r\n\r\n").unwrap();
            let mut response = String::new();
            tls.read_to_string(&mut response).unwrap();
            response
        })
        .await
        .unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.to_ascii_lowercase().contains("strict-transport-security: max-age=31536000"), "{response}");
        assert!(response.ends_with("127.0.0.1"), "{response}");

        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap().unwrap();
    }
}
