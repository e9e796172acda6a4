//! The hub's storage (`HubDb`) under the hub's real logic (`hub::Hub`): content stored
//! once however many devices send it and counted per frame, erasure that removes a blob
//! only with its last reference and leaves no canary in the database, WAL or blob
//! directory, the nonce cache, one-time tokens and idempotent commits.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hub::{Appended, DeviceRecord, Hub, HubIdentity, HubStore};
use store::HubDb;
use wire::v1::{AuditHead, Consent, DeviceState, Frame, Manifest, Purpose, Scope};
use wire::{DeviceId, Receipt, ReceiptKind};

const NOW: i64 = 1_700_000_000_000;

fn device(n: u8) -> DeviceRecord {
    DeviceRecord {
        id: DeviceId::new(1_700_000_000_000, [n; 16]),
        public_key: vec![n; 32],
        hostname: format!("box-{n}"),
        state: DeviceState::Pending,
        enrolled_ms: NOW,
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    db: Arc<HubDb>,
    hub: Hub,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(HubDb::open(dir.path()).unwrap());
    let (identity, _) = HubIdentity::load_or_create(dir.path()).unwrap();
    let hub = Hub::new(db.clone(), Arc::new(identity));
    Fixture { dir, db, hub }
}

/// An approved device.
fn approved(f: &Fixture, n: u8) -> DeviceRecord {
    let d = f.db.enrol(&device(n), None, NOW).unwrap();
    assert!(f.db.set_state(d.id, DeviceState::Approved, "test", NOW).unwrap());
    f.db.device(d.id).unwrap().unwrap()
}

fn upload(f: &Fixture, d: &DeviceRecord, bytes: &[u8]) -> String {
    let sha = hub::sha256_hex(bytes);
    let upload = f.hub.patch_blob(d, &sha, 0, bytes.len() as u64, bytes, NOW).unwrap();
    assert!(upload.complete);
    sha
}

fn frame(local: i64, sha: &str, note: &str) -> Frame {
    Frame {
        local,
        camera: "gate".into(),
        captured_ms: NOW - 1000,
        sha256: sha.into(),
        bytes: 10,
        width: 4,
        height: 3,
        consents: vec!["c1".into()],
        annotation: Some(wire::v1::Annotation {
            version: 2,
            shapes: serde_json::json!([{ "label": "person", "note": note }]),
        }),
        predictions: vec![],
    }
}

fn manifest(d: &DeviceRecord, batch: &str, frames: Vec<Frame>) -> Vec<u8> {
    serde_json::to_vec(&Manifest {
        version: 1,
        batch: batch.into(),
        device: d.id,
        created_ms: NOW,
        audit_head: AuditHead { seq: 4, hash: "ab".repeat(32) },
        frames,
        consents: vec![Consent {
            id: "c1".into(),
            scope: Scope { kind: "camera".into(), value: "gate".into() },
            purposes: vec![Purpose::Annotate, Purpose::Sync],
            valid_from_ms: 0,
            valid_until_ms: None,
            withdrawn_at_ms: None,
            basis: "signage".into(),
            evidence_sha256: None,
        }],
    })
    .unwrap()
}

/// Files under `dir` holding `needle`.
fn grep(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p).unwrap().windows(needle.len()).any(|w| w == needle.as_bytes()) {
                hits.push(p);
            }
        }
    }
    hits
}

#[test]
fn the_same_content_from_two_devices_is_stored_once_counted_twice_and_erased_with_its_last_reference() {
    let f = fixture();
    let (a, b) = (approved(&f, 1), approved(&f, 2));
    let jpeg = b"the same anonymized jpeg from two boxes".to_vec();
    let sha = upload(&f, &a, &jpeg);
    assert_eq!(f.db.blob_files().unwrap(), 1);
    // B has not sent it: it is missing for B, whatever A sent.
    assert_eq!(f.db.missing_blobs(b.id, &[&sha]).unwrap(), vec![sha.clone()]);
    assert_eq!(f.db.upload(b.id, &sha).unwrap(), None, "no answer about another device's content");
    upload(&f, &b, &jpeg);
    assert_eq!(f.db.blob_files().unwrap(), 1, "stored once");

    f.hub.commit(&a, "ba", &manifest(&a, "ba", vec![frame(1, &sha, "a")]), NOW).unwrap();
    f.hub.commit(&b, "bb", &manifest(&b, "bb", vec![frame(9, &sha, "b")]), NOW).unwrap();
    assert_eq!(f.db.blob(&sha).unwrap().unwrap().frames, 2, "counted per device and frame");

    let body =
        serde_json::to_vec(&wire::v1::Erasure { frames: vec![1], reason: "withdrawn".into(), blobs: vec![] }).unwrap();
    f.hub.erase(&a, "ea", &body, NOW).unwrap();
    assert_eq!(f.db.frames(a.id).unwrap(), Vec::<i64>::new());
    assert_eq!(f.db.blob(&sha).unwrap().unwrap().frames, 1, "B's frame still refers to it");
    assert_eq!(f.db.blob_files().unwrap(), 1, "the blob stays while B's frame names it");
    assert_eq!(f.db.upload(a.id, &sha).unwrap(), None, "A's upload went with A's last frame of it");

    let body =
        serde_json::to_vec(&wire::v1::Erasure { frames: vec![9], reason: "withdrawn".into(), blobs: vec![] }).unwrap();
    f.hub.erase(&b, "eb", &body, NOW).unwrap();
    assert_eq!(f.db.blob(&sha).unwrap(), None);
    assert_eq!(f.db.blob_files().unwrap(), 0, "gone with its last reference");
    assert_eq!(f.db.verify_audit().unwrap().map(|n| n > 0), Ok(true));
}

#[test]
fn erasure_leaves_no_canary_in_the_hubs_database_wal_or_blob_directory() {
    const CANARY: &str = "CANARY-hub-5d1e-do-not-keep";
    const PIXELS: &str = "PIXELS-CANARY-0b7f";
    let f = fixture();
    let a = approved(&f, 1);
    let jpeg = format!("jpeg bytes {PIXELS} and more bytes").into_bytes();
    let sha = hub::sha256_hex(&jpeg);
    // Sent in two pieces: the first is kept on its own before the second arrives.
    let half = jpeg.len() / 2;
    f.hub.patch_blob(&a, &sha, 0, jpeg.len() as u64, &jpeg[..half], NOW).unwrap();
    assert_eq!(grep(f.dir.path(), PIXELS), Vec::<PathBuf>::new(), "a piece is encrypted at rest");
    f.hub.patch_blob(&a, &sha, half as u64, jpeg.len() as u64, &jpeg[half..], NOW).unwrap();
    f.hub.commit(&a, "b1", &manifest(&a, "b1", vec![frame(7, &sha, CANARY)]), NOW).unwrap();
    assert!(!grep(f.dir.path(), CANARY).is_empty(), "the canary is stored before the erasure");
    assert_eq!(grep(f.dir.path(), PIXELS), Vec::<PathBuf>::new(), "blobs are encrypted at rest");

    let body =
        serde_json::to_vec(&wire::v1::Erasure { frames: vec![7], reason: "request 3".into(), blobs: vec![] }).unwrap();
    let receipt: Receipt = serde_json::from_str(&f.hub.erase(&a, "e1", &body, NOW).unwrap()).unwrap();
    let payload = receipt.verify(f.hub.identity().public_key()).unwrap();
    assert_eq!((payload.kind, payload.frames.as_slice(), payload.id.as_str()), (ReceiptKind::Erasure, &[7][..], "e1"));
    assert_eq!(grep(f.dir.path(), CANARY), Vec::<PathBuf>::new(), "the canary survived the erasure");
    assert_eq!(f.db.blob_files().unwrap(), 0);
    assert_eq!(f.db.integrity_check().unwrap(), "ok");
    // The same request again: the same receipt, nothing else.
    assert_eq!(f.hub.erase(&a, "e1", &body, NOW + 5).unwrap(), serde_json::to_string(&receipt).unwrap());
    assert_eq!(f.db.verify_audit().unwrap().map(|n| n >= 3), Ok(true));
}

#[test]
fn a_nonce_is_refused_the_second_time_until_it_expires() {
    let f = fixture();
    let a = approved(&f, 1);
    assert!(f.db.remember_nonce(a.id, "n1", NOW, NOW + 600_000).unwrap());
    assert!(!f.db.remember_nonce(a.id, "n1", NOW + 1, NOW + 600_001).unwrap(), "a replay");
    let b = approved(&f, 2);
    assert!(f.db.remember_nonce(b.id, "n1", NOW, NOW + 600_000).unwrap(), "per device");
    // A second process on the same files sees the first's nonces.
    let other = HubDb::open(f.dir.path()).unwrap();
    assert!(!other.remember_nonce(a.id, "n1", NOW + 2, NOW + 600_002).unwrap());
    assert!(other.remember_nonce(a.id, "n1", NOW + 600_001, NOW + 1_200_001).unwrap(), "forgotten once expired");
}

#[test]
fn a_commit_is_idempotent_refuses_missing_blobs_and_never_duplicates_a_frame() {
    let f = fixture();
    let a = approved(&f, 1);
    let sha = upload(&f, &a, b"frame one");
    let body = manifest(&a, "b1", vec![frame(1, &sha, "x")]);
    let first = f.hub.commit(&a, "b1", &body, NOW).unwrap();
    assert_eq!(f.hub.commit(&a, "b1", &body, NOW + 60_000).unwrap(), first, "the same receipt bytes");
    let payload = serde_json::from_str::<Receipt>(&first).unwrap().verify(f.hub.identity().public_key()).unwrap();
    assert_eq!(payload.frames, vec![1]);
    assert_eq!(payload.audit_head, Some(AuditHead { seq: 4, hash: "ab".repeat(32) }), "the device's head echoed");

    // A blob that is only half there is missing.
    let other = b"frame two, only half sent".to_vec();
    let other_sha = hub::sha256_hex(&other);
    f.hub.patch_blob(&a, &other_sha, 0, other.len() as u64, &other[..5], NOW).unwrap();
    let err = f
        .hub
        .commit(&a, "b2", &manifest(&a, "b2", vec![frame(1, &sha, "x"), frame(2, &other_sha, "y")]), NOW)
        .unwrap_err();
    assert_eq!((err.code, err.missing.clone()), ("missing_blobs", vec![other_sha.clone()]));
    assert_eq!(f.db.receipt(a.id, ReceiptKind::Batch, "b2").unwrap(), None, "nothing committed");

    f.hub.patch_blob(&a, &other_sha, 5, other.len() as u64, &other[5..], NOW).unwrap();
    f.hub.commit(&a, "b2", &manifest(&a, "b2", vec![frame(1, &sha, "x"), frame(2, &other_sha, "y")]), NOW).unwrap();
    assert_eq!(f.db.frames(a.id).unwrap(), vec![1, 2], "frame 1, in both batches, is there once");
    assert_eq!(f.db.frame_count(a.id).unwrap(), 2, "and counted once");
    assert_eq!(f.db.blob(&sha).unwrap().unwrap().frames, 1);
}

/// Issue 20, item 3: the fleet view's frame counts are kept by triggers (hub schema 4)
/// instead of counting every row on each request; they follow commits, repeats,
/// erasures and retention, and a hub from before is counted as it is upgraded.
#[test]
fn r20_3_frame_counts_follow_every_change_and_an_older_hub_is_counted_on_upgrade() {
    let f = fixture();
    let (a, b) = (approved(&f, 1), approved(&f, 2));
    let (one, two) = (upload(&f, &a, b"frame one"), upload(&f, &a, b"frame two"));
    upload(&f, &b, b"frame one");
    f.hub.commit(&a, "a1", &manifest(&a, "a1", vec![frame(1, &one, "x"), frame(2, &two, "y")]), NOW).unwrap();
    f.hub.commit(&a, "a1", &manifest(&a, "a1", vec![frame(1, &one, "x"), frame(2, &two, "y")]), NOW).unwrap();
    f.hub.commit(&b, "b1", &manifest(&b, "b1", vec![frame(7, &one, "z")]), NOW).unwrap();
    let counts = |f: &Fixture| (f.db.frame_count(a.id).unwrap(), f.db.frame_count(b.id).unwrap());
    assert_eq!(counts(&f), (2, 1), "a repeated batch is counted once");
    let body =
        serde_json::to_vec(&wire::v1::Erasure { frames: vec![2], reason: "withdrawn".into(), blobs: vec![] }).unwrap();
    f.hub.erase(&a, "e1", &body, NOW).unwrap();
    assert_eq!(counts(&f), (1, 1));
    assert_eq!(f.db.frame_count(DeviceId::new(NOW as u64, [9; 16])).unwrap(), 0, "a device the hub does not know");

    // The same hub as schema 3 left it: no count column, no triggers.
    drop(f.hub);
    let Fixture { dir, db, .. } = f;
    drop(db);
    let conn =
        rusqlite::Connection::open(dir.path().join(store::HUB_STORE_DIR).join(store::HUB_DATABASE_FILE)).unwrap();
    conn.execute_batch(
        "DROP TRIGGER frames_count_in; DROP TRIGGER frames_count_out; DROP INDEX blobs_by_file;
         ALTER TABLE devices DROP COLUMN frames; PRAGMA user_version = 3;",
    )
    .unwrap();
    drop(conn);
    let db = HubDb::open(dir.path()).unwrap();
    assert_eq!((db.frame_count(a.id).unwrap(), db.frame_count(b.id).unwrap()), (1, 1), "counted on upgrade");
    assert_eq!(db.expire(NOW + 1, NOW + 2).unwrap(), 2, "retention takes both frames");
    assert_eq!((db.frame_count(a.id).unwrap(), db.frame_count(b.id).unwrap()), (0, 0));
}

#[test]
fn uploads_resume_at_the_hubs_offset_and_a_wrong_hash_is_discarded() {
    let f = fixture();
    let a = approved(&f, 1);
    let jpeg = vec![7u8; 1000];
    let sha = hub::sha256_hex(&jpeg);
    assert_eq!(
        f.db.append_upload(a.id, &sha, 1000, 0, &jpeg[..400], NOW).unwrap(),
        Appended::Stored(hub::Upload { offset: 400, length: 1000, complete: false })
    );
    let err = f.hub.patch_blob(&a, &sha, 0, 1000, &jpeg, NOW).unwrap_err();
    assert_eq!((err.code, err.upload_offset), ("offset_mismatch", Some(400)));
    assert!(f.hub.patch_blob(&a, &sha, 400, 1000, &jpeg[400..], NOW).unwrap().complete);
    assert_eq!(f.db.missing_blobs(a.id, &[&sha]).unwrap(), Vec::<String>::new());

    // Bytes that do not hash to the name are discarded, and the blob never shows.
    let named = hub::sha256_hex(b"what was promised");
    let err = f.hub.patch_blob(&a, &named, 0, 17, b"something else!!!"[..17].as_ref(), NOW).unwrap_err();
    assert_eq!(err.code, "digest_mismatch");
    assert_eq!(f.db.upload(a.id, &named).unwrap(), None);
    assert_eq!(f.db.blob(&named).unwrap(), None);
    assert_eq!(f.db.blob_files().unwrap(), 1, "only the good blob's file; the bad pieces are gone");
    let err = f.hub.patch_blob(&a, &sha, 0, wire::v1::MAX_BLOB_BYTES + 1, b"", NOW).unwrap_err();
    assert_eq!(err.code, "payload_too_large");
}

#[test]
fn an_enrolment_token_approves_one_device_once() {
    let f = fixture();
    let token = f.hub.new_token("test", NOW).unwrap();
    let hash = hub::sha256_hex(token.as_bytes());
    assert_eq!(f.db.enrol(&device(1), Some(&hash), NOW).unwrap().state, DeviceState::Approved);
    assert_eq!(f.db.enrol(&device(2), Some(&hash), NOW).unwrap().state, DeviceState::Pending, "used up");
    assert_eq!(f.db.enrol(&device(3), None, NOW).unwrap().state, DeviceState::Pending);
    // A pending device that comes back with a fresh token is approved.
    let fresh = hub::sha256_hex(f.hub.new_token("test", NOW).unwrap().as_bytes());
    assert_eq!(f.db.enrol(&device(3), Some(&fresh), NOW).unwrap().state, DeviceState::Approved);
    // Another key for a known id changes nothing.
    let mut impostor = device(1);
    impostor.public_key = vec![9; 32];
    assert_eq!(f.db.enrol(&impostor, None, NOW).unwrap().public_key, vec![1; 32]);
    assert_eq!(f.db.devices().unwrap().len(), 3);
}

/// Issue 16: the hub keeps its own retention, apart from the boxes': what it received
/// before the cut-off goes, a shared blob with its last reference, audited, no receipt.
#[test]
fn r16_hub_retention_removes_what_it_received_before_the_cutoff_and_a_blob_with_its_last_reference() {
    let f = fixture();
    let (a, b) = (approved(&f, 1), approved(&f, 2));
    let jpeg = b"one anonymized jpeg, sent by two boxes a day apart".to_vec();
    let sha = upload(&f, &a, &jpeg);
    upload(&f, &b, &jpeg);
    let day = 86_400_000;
    f.hub.commit(&a, "ra", &manifest(&a, "ra", vec![frame(1, &sha, "a")]), NOW).unwrap();
    f.hub.commit(&b, "rb", &manifest(&b, "rb", vec![frame(9, &sha, "b")]), NOW + day).unwrap();
    // Sent, but no batch ever named it (dissolved on the box): it goes too.
    let orphan = upload(&f, &a, b"a blob whose batch never came");
    assert_eq!(f.db.blob_files().unwrap(), 2);

    assert_eq!(f.db.expire(NOW + 1, NOW + 2 * day).unwrap(), 1);
    assert_eq!(f.db.blob(&orphan).unwrap(), None, "the upload no frame names is gone");
    assert_eq!(f.db.upload(a.id, &orphan).unwrap(), None);
    assert_eq!(f.db.frames(a.id).unwrap(), Vec::<i64>::new(), "A's frame was older");
    assert_eq!(f.db.frames(b.id).unwrap(), vec![9]);
    assert_eq!(f.db.blob_files().unwrap(), 1, "B's frame still names the blob");
    assert_eq!(f.db.expire(NOW + 1, NOW + 2 * day).unwrap(), 0, "nothing more is that old");

    assert_eq!(f.db.expire(NOW + day + 1, NOW + 3 * day).unwrap(), 1);
    assert_eq!(f.db.blob(&sha).unwrap(), None);
    assert_eq!(f.db.blob_files().unwrap(), 0, "gone with its last reference");
    let audited = f.db.audit_actions("hub.expired").unwrap();
    assert_eq!(audited.len(), 3, "two of frames, one of uploads: {audited:?}");
    assert_eq!(f.db.verify_audit().unwrap().map(|n| n > 0), Ok(true));
}

/// Issue 16: a device that could not carry out a command (its disk full) is asked again;
/// only a done answer ends it.
#[test]
fn r16_a_failed_ack_keeps_the_command_due_and_a_done_ack_ends_it() {
    let f = fixture();
    let a = approved(&f, 1);
    let window = wire::v1::EraseWindow { camera: Some("gate".into()), from_ms: None, until_ms: Some(NOW) };
    let (_, command) = f.hub.erase_central(a.id, vec![3], Some(window.clone()), "test", NOW).unwrap();
    let due = f.db.commands(a.id).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].window, Some(window), "the window travels with the command");
    let failed = wire::v1::CommandAck {
        result: wire::v1::AckResult::Failed,
        message: Some("database or disk is full".into()),
        receipt: None,
    };
    assert!(f.db.ack_command(a.id, &command.id, &failed, NOW).unwrap());
    assert_eq!(f.db.commands(a.id).unwrap().len(), 1, "still due");
    assert_eq!(f.db.command_ack(a.id, &command.id).unwrap().map(|a| a.result), Some(wire::v1::AckResult::Failed));
    let done = wire::v1::CommandAck { result: wire::v1::AckResult::Done, message: None, receipt: None };
    assert!(f.db.ack_command(a.id, &command.id, &done, NOW).unwrap());
    assert!(f.db.commands(a.id).unwrap().is_empty());
    assert_eq!(f.db.unacked_commands().unwrap(), vec![]);
}

/// The control plane waits on this between passes: a command this process queues ends
/// the wait, so it is published at once.
#[test]
fn queuing_a_command_wakes_whoever_waits_for_one() {
    let f = fixture();
    let d = approved(&f, 1);
    let mut seen = 0;
    assert!(!f.hub.wait_queued(&mut seen, std::time::Duration::from_millis(10)), "nothing queued yet");
    let hub = f.hub.clone();
    let queue = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        hub.command(d.id, wire::v1::CommandKind::SyncNow, Vec::new(), "test", NOW).unwrap();
    });
    assert!(f.hub.wait_queued(&mut seen, std::time::Duration::from_secs(60)));
    assert_eq!(seen, 1);
    queue.join().unwrap();
    assert!(!f.hub.wait_queued(&mut seen, std::time::Duration::from_millis(10)), "seen already");
}

/// A batch that never committed (the box recalled its frames: a consent withdrawn while
/// it was in flight) leaves uploads no frame names; the erasure request names their
/// SHA-256s, and they go, whole or in pieces, unless a frame of the device names them.
#[test]
fn an_erasure_drops_uploads_no_frame_names_whole_or_in_pieces() {
    let f = fixture();
    let a = approved(&f, 1);
    let (whole, kept) = (b"jpeg sent for a batch that never committed".to_vec(), b"jpeg of a committed frame".to_vec());
    let (whole_sha, kept_sha) = (upload(&f, &a, &whole), upload(&f, &a, &kept));
    f.hub.commit(&a, "b1", &manifest(&a, "b1", vec![frame(2, &kept_sha, "kept")]), NOW).unwrap();
    // Half of a third, cut off.
    let cut = b"jpeg cut off halfway through its upload".to_vec();
    let cut_sha = hub::sha256_hex(&cut);
    f.hub.patch_blob(&a, &cut_sha, 0, cut.len() as u64, &cut[..10], NOW).unwrap();
    assert_eq!(f.db.blob_files().unwrap(), 3, "two blobs and a piece");

    let body = serde_json::to_vec(&wire::v1::Erasure {
        frames: vec![5, 6, 7],
        reason: "consent c1 withdrawn".into(),
        blobs: vec![whole_sha.clone(), cut_sha.clone(), kept_sha.clone()],
    })
    .unwrap();
    f.hub.erase(&a, "recall", &body, NOW).unwrap();
    assert_eq!(f.db.upload(a.id, &whole_sha).unwrap(), None);
    assert_eq!(f.db.upload(a.id, &cut_sha).unwrap(), None);
    assert!(f.db.blob(&whole_sha).unwrap().is_none());
    assert!(f.db.upload(a.id, &kept_sha).unwrap().is_some(), "frame 2 still names it");
    assert_eq!(f.db.blob_files().unwrap(), 1, "only the committed frame's blob is left");
    assert_eq!(f.db.frames(a.id).unwrap(), [2]);
}
