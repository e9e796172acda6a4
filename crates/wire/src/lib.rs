//! The contract a box and its hub both speak, versioned so that a hub keeps talking to
//! boxes a release behind. Types and pure functions only: the device's client lives in
//! `sync`, the hub's routes in `web`, and neither may change a shape here without a new
//! version.

mod ids;

pub use ids::{DeviceId, FleetId};

/// The contract's version: the `/v1/` of every path and the `obscura/v1/` of every topic.
pub const VERSION: u32 = 1;
