//! Every input in `fuzz/seeds/<target>/` and `fuzz/corpus/<target>/` through the entry point its fuzz target calls
//! (`workspace_tests::fuzz`), on stable: CI replays what the fuzzers found and kept, and a
//! crash a fuzzer found stays fixed. An input passes when it does not panic.

use std::path::{Path, PathBuf};

use workspace_tests::fuzz;

/// The inputs of `target`: its seeds (`fuzz/seeds/`, made by hand or taken from the repo,
/// and every input that once failed) and what the fuzzer kept (`fuzz/corpus/`, minimised).
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files: Vec<PathBuf> = ["seeds", "corpus"]
        .iter()
        .map(|dir| fuzz.join(dir).join(target))
        .filter(|dir| dir.is_dir())
        .flat_map(|dir| std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{target} has no seeds: add some to fuzz/seeds/{target}");
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
}

fn seed(target: &str, name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds").join(target).join(name)).unwrap()
}

/// Runs `call` on each input of `target`, naming the input that panics.
fn replay(target: &str, call: impl Fn(&[u8])) -> usize {
    let inputs = corpus(target);
    for (path, data) in &inputs {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call(data)));
        assert!(outcome.is_ok(), "{target}: {} panicked", path.display());
    }
    inputs.len()
}

#[test]
fn every_target_has_a_corpus_and_a_replay() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/fuzz_targets");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path().file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut targets = fuzz::TARGETS.map(str::to_owned).to_vec();
    targets.sort();
    assert_eq!(names, targets, "a fuzz target without a replay here, or the reverse");
}

#[test]
fn config_corpus() {
    replay("config", fuzz::config);
}

#[test]
fn device_api_corpus() {
    let api = fuzz::DeviceApi::new();
    replay("device_api", |data| {
        api.call(data);
    });
}

#[test]
fn hub_api_corpus() {
    let api = fuzz::HubApi::new();
    replay("hub_api", |data| {
        api.call(data);
    });
}

#[test]
fn wire_corpus() {
    replay("wire", fuzz::wire);
}

#[test]
fn mqtt_corpus() {
    let api = fuzz::HubApi::new();
    replay("mqtt", |data| api.mqtt(data));
}

#[test]
fn coco_corpus() {
    replay("coco", fuzz::coco);
}

#[test]
fn cvat_corpus() {
    replay("cvat", fuzz::cvat);
}

#[test]
fn image_corpus() {
    replay("image", fuzz::image);
}

/// The routers' targets get past the sessions and signatures to the handlers: a fuzzer
/// that only ever met 401 would find nothing.
#[test]
fn the_api_targets_reach_the_handlers() {
    let device = fuzz::DeviceApi::new();
    assert_eq!(device.call(&seed("device_api", "save")), Some(200));
    let hub = fuzz::HubApi::new();
    assert_eq!(hub.call(&seed("hub_api", "manifest-empty")), Some(200));
}
