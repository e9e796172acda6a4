//! `obscura bench fleet` as a check, not a timing: three simulated boxes, each with its
//! own store, outbox, key, enrolment, sync stage and MQTT session, against the real hub
//! and a real mosquitto. The bench itself fails unless the hub ends up holding every
//! frame once, every box came online and every box acknowledged a command.

use std::process::Stdio;

mod common;

use common::broker::{ADMIN_PASSWORD, Broker};
use common::obscura;

#[test]
fn simulated_boxes_sync_through_their_own_stores_and_answer_a_command() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("admin-password");
    std::fs::write(&secret, ADMIN_PASSWORD).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = obscura()
        .args(["bench", "fleet", "--devices", "3", "--batches", "2", "--frames", "3", "--repeat", "5", "--mqtt"])
        .arg(broker.url())
        .arg("--mqtt-admin-password-file")
        .arg(&secret)
        .arg(root.join("tests/fixtures/face_face-recognition_obama.jpg"))
        .arg(root.join("tests/fixtures/face_skimage_astronaut.png"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("3 box(es) enrolled"), "{text}");
    assert!(text.contains("(6 batches)") && text.contains("every frame there once"), "{text}");
    assert!(text.contains("3 box(es) online at the hub"), "{text}");
    assert!(text.contains("command        queued at the hub to ack recorded there"), "{text}");
}
