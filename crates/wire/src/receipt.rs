//! The hub's receipts: what it signs when it has a batch, a consent update or an
//! erasure, so the device can prove arrival end to end and keep the proof in its own
//! audit chain. The payload travels as the exact JSON text that was signed, so nobody
//! needs to re-serialise it the same way to check it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use crate::DeviceId;
use crate::v1::AuditHead;

/// A signed receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The [`Payload`] as the JSON text that was signed.
    pub payload: String,
    /// Base64 of the Ed25519 signature over the payload's bytes.
    pub signature: String,
    /// Base64 of the hub's raw public key.
    pub hub_key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptKind {
    Batch,
    Consents,
    Erasure,
}

impl ReceiptKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptKind::Batch => "batch",
            ReceiptKind::Consents => "consents",
            ReceiptKind::Erasure => "erasure",
        }
    }
}

/// What the hub vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    pub version: u32,
    pub kind: ReceiptKind,
    /// The batch id, the erasure request id, or for consents the body's SHA-256.
    pub id: String,
    pub device: DeviceId,
    /// A batch's frames (device ids), all now held by the hub; an erasure's, none of
    /// which the hub holds any more.
    pub frames: Vec<i64>,
    /// A consent update's consent ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consents: Vec<String>,
    /// The device's audit head from the manifest, echoed (batches only).
    pub audit_head: Option<AuditHead>,
    pub received_ms: i64,
    pub hub_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("the receipt is signed by hub key {found}, not the enrolled hub's {expected}: it is from another hub")]
    OtherHub { found: String, expected: String },
    #[error("the receipt's signature does not verify: it was altered or forged")]
    BadSignature,
    #[error("the receipt's payload is not a receipt: {0}")]
    Malformed(String),
}

impl Receipt {
    /// Signs `payload` with the hub's `key`.
    pub fn sign(key: &Ed25519KeyPair, payload: &Payload) -> Receipt {
        let payload = serde_json::to_string(payload).expect("a receipt serialises");
        Receipt {
            signature: B64.encode(key.sign(payload.as_bytes())),
            hub_key: B64.encode(key.public_key().as_ref()),
            payload,
        }
    }

    /// Checks the receipt against the hub key the device enrolled with (32 raw bytes)
    /// and returns what it vouches for.
    pub fn verify(&self, hub_key: &[u8]) -> Result<Payload, ReceiptError> {
        let expected = B64.encode(hub_key);
        if self.hub_key != expected {
            return Err(ReceiptError::OtherHub { found: self.hub_key.clone(), expected });
        }
        let signature = B64.decode(&self.signature).map_err(|_| ReceiptError::BadSignature)?;
        UnparsedPublicKey::new(&ED25519, hub_key)
            .verify(self.payload.as_bytes(), &signature)
            .map_err(|_| ReceiptError::BadSignature)?;
        serde_json::from_str(&self.payload).map_err(|e| ReceiptError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload() -> Payload {
        Payload {
            version: 1,
            kind: ReceiptKind::Batch,
            id: "b1".into(),
            device: "01HZY3V8Q0M5W6ZJ7KX2C9D4FB".parse().unwrap(),
            frames: vec![1, 2],
            consents: vec![],
            audit_head: Some(AuditHead { seq: 9, hash: "cd".into() }),
            received_ms: 77,
            hub_id: "h".into(),
        }
    }

    #[test]
    fn a_receipt_verifies_with_its_hub_key_only_and_not_once_altered() {
        let hub = Ed25519KeyPair::from_seed_unchecked(&[5; 32]).unwrap();
        let receipt = Receipt::sign(&hub, &payload());
        assert_eq!(receipt.verify(hub.public_key().as_ref()).unwrap(), payload());
        let text: serde_json::Value = serde_json::from_str(&receipt.payload).unwrap();
        assert_eq!(text["kind"], "batch");
        assert_eq!(text["audit_head"], serde_json::json!({ "seq": 9, "hash": "cd" }));
        assert!(text.get("consents").is_none());

        let other = Ed25519KeyPair::from_seed_unchecked(&[6; 32]).unwrap();
        assert!(matches!(receipt.verify(other.public_key().as_ref()), Err(ReceiptError::OtherHub { .. })));
        let mut altered = receipt.clone();
        altered.payload = altered.payload.replace("[1,2]", "[1,2,3]");
        assert_eq!(altered.verify(hub.public_key().as_ref()), Err(ReceiptError::BadSignature));
        // Another hub's receipt presented under this hub's key.
        let mut forged = Receipt::sign(&other, &payload());
        forged.hub_key = receipt.hub_key.clone();
        assert_eq!(forged.verify(hub.public_key().as_ref()), Err(ReceiptError::BadSignature));
    }
}
