//! The parts of the `obscura` command that code outside it calls: the config loader and
//! the still-image decoder, which the fuzz targets (`fuzz/`) and their corpus replay
//! (`tests/fuzz.rs`) drive exactly as the command does. Everything else is in the binary.

pub mod config;
pub mod detectors;
pub mod still;
