//! Helpers the sync crate's integration tests share (each test file includes this
//! module): a real mosquitto on loopback.

pub mod broker;
