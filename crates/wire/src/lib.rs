//! The contract a box and its hub both speak, versioned so that a hub keeps talking to
//! boxes a release behind. Types and pure functions only (and [`keyfile`], the one key
//! format both ends keep): the device's client lives in
//! `sync`, the hub's routes in `web`, and neither may change a shape here without a new
//! version.

mod ids;
pub mod keyfile;
pub mod mqtt;
pub mod receipt;
pub mod signature;
pub mod v1;

pub use ids::{DeviceId, FleetId};
pub use receipt::{Payload, Receipt, ReceiptError, ReceiptKind};

/// The contract's version: the `/v1/` of every path and the `obscura/v1/` of every topic.
pub const VERSION: u32 = 1;

/// Base64 (standard alphabet, padded) as every key, digest and signature on the wire
/// is written.
pub fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The bytes of standard base64 `text`, or None when it is not base64.
pub fn unbase64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}
