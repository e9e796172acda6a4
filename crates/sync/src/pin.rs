//! The hub's certificate, pinned: the box trusts exactly the certificate whose SHA-256
//! the field engineer gave at enrolment (`--hub-fingerprint`), as the hub prints it at
//! every start, and no CA. A hub self-signs on a LAN, so names and CAs prove nothing
//! there; the pin does. A wrong pin or an expired certificate is refused with a message
//! that says which, and what to do.

use std::fmt;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// A certificate's SHA-256.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of(der: &[u8]) -> Fingerprint {
        let mut out = [0; 32];
        out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, der).as_ref());
        Fingerprint(out)
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = String;
    /// `SHA256:AB:CD:…` as the hub prints it, `AB:CD:…` as `openssl x509 -fingerprint
    /// -sha256` does, or 64 hex digits; any case.
    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.trim();
        let text = text.strip_prefix("SHA256:").or_else(|| text.strip_prefix("sha256:")).unwrap_or(text);
        let text = text.strip_prefix("sha256 Fingerprint=").unwrap_or(text);
        let hex: String = text.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(&hex).ok().filter(|b| b.len() == 32).ok_or_else(|| {
            format!(
                "`{s}` is not a certificate fingerprint: give the SHA256:AB:CD:… the hub prints at start (32 bytes in hex)"
            )
        })?;
        let mut out = [0; 32];
        out.copy_from_slice(&bytes);
        Ok(Fingerprint(out))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex: Vec<String> = self.0.iter().map(|b| format!("{b:02X}")).collect();
        write!(f, "SHA256:{}", hex.join(":"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Accepts only the pinned certificate, in its validity period; remembers why it last
/// refused one, for the client's error.
#[derive(Debug)]
pub struct Pinned {
    pin: Fingerprint,
    provider: Arc<rustls::crypto::CryptoProvider>,
    refused: Mutex<Option<String>>,
}

impl Pinned {
    pub fn new(pin: Fingerprint) -> Arc<Pinned> {
        Arc::new(Pinned {
            pin,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            refused: Mutex::new(None),
        })
    }

    /// Why the last handshake's certificate was refused, if it was.
    pub fn take_refusal(&self) -> Option<String> {
        self.refused.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// A client config that trusts only this pin.
    pub fn client_config(self: &Arc<Self>) -> rustls::ClientConfig {
        rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports TLS 1.2 and 1.3")
            .dangerous()
            .with_custom_certificate_verifier(self.clone())
            .with_no_client_auth()
    }

    fn refuse(&self, why: String) -> rustls::Error {
        *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
        rustls::Error::General(why)
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let found = Fingerprint::of(end_entity);
        if found != self.pin {
            return Err(self.refuse(format!(
                "the hub's certificate is {found}, not the pinned {}: if the hub's certificate was replaced, \
                 check the new fingerprint with its operator and enrol again with --hub-fingerprint; otherwise \
                 something else answers at this address",
                self.pin
            )));
        }
        let (_, cert) = x509_parser::parse_x509_certificate(end_entity)
            .map_err(|e| self.refuse(format!("the hub's certificate does not parse: {e}")))?;
        let now = now.as_secs() as i64;
        let validity = cert.validity();
        if now > validity.not_after.timestamp() {
            return Err(self.refuse(format!(
                "the hub's certificate expired on {}: renew it on the hub (a hub makes a new one 30 days before the \
                 end; restart it), then enrol again with the new fingerprint",
                validity.not_after
            )));
        }
        if now < validity.not_before.timestamp() {
            return Err(self.refuse(format!(
                "the hub's certificate is valid only from {}: set this box's clock (NTP)",
                validity.not_before
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_read_as_the_hub_and_openssl_print_them() {
        let f = Fingerprint([0xab; 32]);
        let shown = f.to_string();
        assert!(shown.starts_with("SHA256:AB:AB:"), "{shown}");
        assert_eq!(shown.parse::<Fingerprint>().unwrap(), f);
        assert_eq!(shown.trim_start_matches("SHA256:").to_lowercase().parse::<Fingerprint>().unwrap(), f);
        assert_eq!("ab".repeat(32).parse::<Fingerprint>().unwrap(), f);
        let err = "SHA256:AB:CD".parse::<Fingerprint>().unwrap_err();
        assert!(err.contains("the hub prints at start"), "{err}");
    }

    /// A certificate valid over `[from, to]` (Unix seconds), in DER.
    fn certificate(from: i64, to: i64) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["hub.local".to_owned()]).unwrap();
        let at = |s: i64| rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(s as u64);
        params.not_before = at(from);
        params.not_after = at(to);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn r16_an_expired_or_future_hub_certificate_is_refused_with_its_fix_even_when_pinned() {
        let day = 86_400;
        let now = 1_800_000_000;
        let check = |der: &[u8], pin: Fingerprint| {
            let pinned = Pinned::new(pin);
            let name = ServerName::try_from("hub.local").unwrap();
            let cert = CertificateDer::from(der.to_vec());
            let result = pinned.verify_server_cert(
                &cert,
                &[],
                &name,
                &[],
                UnixTime::since_unix_epoch(std::time::Duration::from_secs(now as u64)),
            );
            result.map(|_| ()).map_err(|_| pinned.take_refusal().expect("the reason is kept for the status"))
        };
        let good = certificate(now - day, now + day);
        assert_eq!(check(&good, Fingerprint::of(&good)), Ok(()));
        let expired = certificate(now - 10 * day, now - day);
        let why = check(&expired, Fingerprint::of(&expired)).unwrap_err();
        assert!(why.contains("expired") && why.contains("renew it on the hub"), "{why}");
        let early = certificate(now + day, now + 10 * day);
        let why = check(&early, Fingerprint::of(&early)).unwrap_err();
        assert!(why.contains("clock"), "{why}");
        let why = check(&good, Fingerprint::of(&expired)).unwrap_err();
        assert!(why.contains("not the pinned") && why.contains("--hub-fingerprint"), "{why}");
    }
}
