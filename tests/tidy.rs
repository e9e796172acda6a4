//! The rules ARCHITECTURE.md promises, checked on every `cargo test` (after
//! rust-analyzer's `tidy.rs`).

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() && name != "target" && name != "node_modules" && !name.to_string_lossy().starts_with('.') {
            files(&path, ext, out);
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
}

fn crate_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(root().join("crates")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    dirs
}

#[test]
fn every_rust_file_starts_with_module_docs() {
    let mut rs = Vec::new();
    files(&root().join("crates"), "rs", &mut rs);
    files(&root().join("tests"), "rs", &mut rs);
    let undocumented: Vec<_> = rs
        .iter()
        .filter(|p| !std::fs::read_to_string(p).unwrap().trim_start().starts_with("//!"))
        .map(|p| p.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    assert!(undocumented.is_empty(), "these files need a `//!` comment saying why they exist: {undocumented:?}");
}

/// One crate per outside world: the crates allowed to depend on each outside library.
const OUTSIDE_WORLDS: &[(&str, &[&str])] = &[
    ("gstreamer", &["capture"]),
    ("gstreamer-app", &["capture"]),
    ("gstreamer-pbutils", &["capture"]),
    ("gstreamer-video", &["capture"]),
    ("v4l", &["capture"]),
    ("axum", &["web"]),
    ("rustls", &["web", "sync"]),
    ("tokio-rustls", &["web", "sync"]),
    ("rcgen", &["web"]),
    ("x509-parser", &["web", "sync"]),
    ("cookie", &["web"]),
    ("rusqlite", &["store"]),
    ("rumqttc", &["sync", "hub"]),
    ("hyper", &["sync"]),
    ("hyper-util", &["sync"]),
    ("tract-onnx", &["onnx"]),
    ("ort", &["onnx"]),
];

/// The names a manifest's lines start with, up to its `[dev-dependencies]`: what it
/// links, among other keys. A test may use another world's library (a certificate made
/// by rcgen to check the sync client's pin), the product may not.
fn dependencies(manifest: &str) -> Vec<&str> {
    manifest
        .lines()
        .take_while(|l| l.trim() != "[dev-dependencies]")
        .filter_map(|l| l.split(['=', '.']).next())
        .map(str::trim)
        .collect()
}

#[test]
fn each_outside_world_is_linked_by_one_crate() {
    for dir in crate_dirs() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let deps = dependencies(&manifest);
        for (world, owners) in OUTSIDE_WORLDS {
            if deps.contains(world) {
                assert!(owners.contains(&name.as_str()), "crate `{name}` depends on `{world}`; only {owners:?} may");
            }
        }
    }
}

#[test]
fn crate_folders_match_crate_names_and_the_architecture_lists_each() {
    let architecture = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    for dir in crate_dirs() {
        let folder = dir.file_name().unwrap().to_string_lossy().to_string();
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(manifest.contains(&format!("name = \"{folder}\"")), "crates/{folder} must be the crate `{folder}`");
        assert!(
            architecture.contains(&format!("### `crates/{folder}`")),
            "ARCHITECTURE.md needs a `### `crates/{folder}`` entry in its code map"
        );
    }
}

// Raw frames cannot be copied, serialised or made into anything else: checked by the
// compiler, not by reading lines. The only way on from a `RawFrame` is
// `Anonymizer::anonymize`, which consumes it; the store and the live view accept only
// `AnonymizedFrame`.
static_assertions::assert_not_impl_any!(
    frame::RawFrame: Clone,
    Copy,
    serde::Serialize,
    serde::de::DeserializeOwned,
    std::fmt::Display,
    Into<Vec<u8>>,
    AsRef<[u8]>,
);

/// Internal crates a crate must not depend on, because the boundary is the point.
const KEPT_APART: &[(&str, &[&str])] = &[
    // The stages see traits and plain types: no GStreamer (capture), HTTP (web) or ONNX.
    ("pipeline", &["capture", "web", "onnx"]),
    ("anonymize", &["capture", "store", "web", "onnx", "pipeline"]),
    // The hub's logic sees its storage as the `HubStore` trait and speaks no HTTP: the
    // SQLite implementation (store) and the routes (web) depend on it, not it on them.
    ("hub", &["store", "web"]),
    // The wire contract is types and pure functions that both sides use.
    ("wire", &["store", "web", "hub", "pipeline", "capture"]),
];

#[test]
fn crates_kept_apart_do_not_depend_on_each_other() {
    for (name, forbidden) in KEPT_APART {
        let manifest = std::fs::read_to_string(root().join("crates").join(name).join("Cargo.toml")).unwrap();
        let deps = dependencies(&manifest);
        for dep in *forbidden {
            assert!(!deps.contains(dep), "crate `{name}` depends on `{dep}`; ARCHITECTURE.md keeps them apart");
        }
    }
}
