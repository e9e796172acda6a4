//! The store's rules that sync will carry off the box, each a regression test for a
//! defect a review found (issue 15): consent end dates end use, a review accepts one
//! version, frame ids are never reused, the audit chain's end is anchored, a clean-up
//! never races a writer in another process, and malformed rows are errors.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;

use store::{Accounts, Decision, FrameFilter, FrameId, FrameStatus, NoConsent, Purpose, Scope, Store, StoreError};

mod common;
use common::{DAY, TestClock, anonymized, consent, kept};

fn car(x: f64) -> serde_json::Value {
    serde_json::json!([{ "type": "box", "label": "car", "points": [x, 10, 50, 40], "attributes": {} }])
}

#[test]
fn a_consents_end_date_ends_use_of_its_frames_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let store = Store::open_with_clock(dir.path(), clock.clone()).unwrap();
    let mut terms = consent(Scope::Device, &[Purpose::Annotate, Purpose::Sync, Purpose::Annotate]);
    terms.valid_until = Some(clock.0.load(Ordering::SeqCst) + DAY);
    let recorded = store.add_consent(terms).unwrap();
    assert_eq!(recorded.terms.purposes, [Purpose::Annotate, Purpose::Sync], "a set: each purpose once");
    let ids: Vec<FrameId> = (0..3)
        .map(|i| {
            kept(store.put_frames(&[(&anonymized("gate", i), serde_json::json!({}))], NoConsent::Drop).unwrap()[0])
        })
        .collect();
    let usable = |purpose| store.frames(&FrameFilter { purpose: Some(purpose), ..Default::default() }).unwrap().len();
    assert_eq!((usable(Purpose::Annotate), usable(Purpose::Sync), usable(Purpose::Train)), (3, 3, 0));
    assert!(store.usable(ids[0], Purpose::Sync).unwrap());
    assert!(store.camera_consented("gate", Purpose::Annotate, store.now_ms()).unwrap());

    // The end date passes: nothing may be used any more, for any purpose it gave.
    clock.advance(DAY + 1);
    assert_eq!((usable(Purpose::Annotate), usable(Purpose::Sync)), (0, 0), "ended consents end use");
    assert!(!store.usable(ids[0], Purpose::Annotate).unwrap());
    assert!(!store.camera_consented("gate", Purpose::Annotate, store.now_ms()).unwrap(), "nor live");
    // A queue, which lists frames for annotation, is empty too.
    assert_eq!(store.claim_next(1, "ana", 60_000).unwrap(), None);
}

#[test]
fn a_review_accepts_one_version_and_a_later_draft_reopens_the_frame_without_changing_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.add_consent(consent(Scope::Device, &[Purpose::Annotate])).unwrap();
    let id = kept(store.put_frames(&[(&anonymized("gate", 1), serde_json::json!({}))], NoConsent::Drop).unwrap()[0]);
    let status = || store.frame(id).unwrap().status;
    let accepted = FrameFilter { status: Some(FrameStatus::Accepted), ..Default::default() };

    // Saves are drafts.
    assert_eq!(store.save_annotation(id, 0, &car(10.0), "ana").unwrap(), Ok(1));
    assert_eq!(status(), FrameStatus::InProgress, "a save is a draft, not a submission");
    let refused = store.review(id, 1, Decision::Accept, "", "rita").unwrap_err().to_string();
    assert!(refused.contains("not submitted"), "{refused}");
    assert!(store.submit_annotation(id, 0, "ana").unwrap_err().to_string().contains("newest"));
    assert_eq!(store.submit_annotation(id, 1, "ana").unwrap(), FrameStatus::Annotated);
    assert_eq!(status(), FrameStatus::Annotated);
    store.review(id, 1, Decision::Accept, "", "rita").unwrap();
    assert_eq!((status(), store.frame(id).unwrap().accepted_version), (FrameStatus::Accepted, Some(1)));
    assert!(store.submit_annotation(id, 1, "ana").unwrap_err().to_string().contains("already accepted"));

    // A later draft reopens the frame; version 1 stays what was accepted.
    assert_eq!(store.save_annotation(id, 1, &car(20.0), "bea").unwrap(), Ok(2));
    assert_eq!(status(), FrameStatus::InProgress);
    let frame = store.frame(id).unwrap();
    assert_eq!(frame.accepted_version, Some(1));
    assert_eq!(store.accepted_annotation(id).unwrap().unwrap().shapes, car(10.0), "the accepted shapes, not the draft");
    assert_eq!(store.frames(&accepted).unwrap().len(), 1, "it is still exported as accepted, with version 1");
    assert_eq!(store.annotation(id).unwrap().unwrap().version, 2);

    // Submitted and rejected: back to the annotator, still with version 1 accepted.
    store.submit_annotation(id, 2, "bea").unwrap();
    store.review(id, 2, Decision::Reject, "the car is larger", "rita").unwrap();
    assert_eq!((status(), store.frame(id).unwrap().accepted_version), (FrameStatus::Rejected, Some(1)));
    let trail: Vec<String> =
        store.audit_entries(&format!("camera/gate/frame/{id}")).unwrap().into_iter().map(|e| e.action).collect();
    assert_eq!(
        trail,
        [
            "annotation.save",
            "annotation.submit",
            "review.accept",
            "annotation.save",
            "annotation.submit",
            "review.reject"
        ]
    );
}

#[test]
fn shapes_outside_the_image_or_inverted_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.add_consent(consent(Scope::Device, &[Purpose::Annotate])).unwrap();
    let frame = anonymized("gate", 1);
    let (w, h) = (frame.width() as f64, frame.height() as f64);
    let id = kept(store.put_frames(&[(&frame, serde_json::json!({}))], NoConsent::Drop).unwrap()[0]);
    let save = |shapes: serde_json::Value| store.save_annotation(id, 0, &shapes, "ana").map(|r| r.unwrap());
    for (shapes, why) in [
        (serde_json::json!([{ "type": "box", "label": "car", "points": [-1e9, 1e12, -5, -5] }]), "outside"),
        (serde_json::json!([{ "type": "box", "label": "car", "points": [40, 10, 20, 30] }]), "x1 < x2"),
        (serde_json::json!([{ "type": "box", "label": "car", "points": [0, 0, w + 1.0, 10] }]), "outside"),
        (serde_json::json!([{ "type": "box", "label": "", "points": [0, 0, 5, 5] }]), "label"),
        (serde_json::json!([{ "type": "polygon", "label": "car", "points": [0, 0, 5, 5] }]), "three"),
        (serde_json::json!([{ "type": "circle", "label": "car", "points": [0, 0, 5, 5] }]), "box or polygon"),
    ] {
        let err = save(shapes).unwrap_err();
        assert!(matches!(&err, StoreError::Invalid(m) if m.contains(why)), "{why}: {err}");
    }
    // The whole image, edges included, is fine.
    assert_eq!(save(serde_json::json!([{ "type": "box", "label": "car", "points": [0, 0, w, h] }])).unwrap(), 1);
}

#[test]
fn an_erased_frames_id_never_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.add_consent(consent(Scope::Device, &[Purpose::Annotate])).unwrap();
    let put =
        |seq| kept(store.put_frames(&[(&anonymized("gate", seq), serde_json::json!({}))], NoConsent::Drop).unwrap()[0]);
    let (first, newest) = (put(1), put(2));
    store.erase(&FrameFilter { ids: vec![newest], ..Default::default() }, "steward", "asked").unwrap();
    let next = put(3);
    assert!(next > newest, "frame {next} reuses the erased frame {newest}'s id");
    drop(store);
    // Nor after a restart.
    let store = Store::open(dir.path()).unwrap();
    store.erase(&FrameFilter { ids: vec![next], ..Default::default() }, "steward", "asked").unwrap();
    let again = kept(store.put_frames(&[(&anonymized("gate", 4), serde_json::json!({}))], NoConsent::Drop).unwrap()[0]);
    assert!(again > next && first < newest);
    assert_eq!(store.device_id(), Store::open(dir.path()).unwrap().device_id(), "one device id for good");
}

#[test]
fn erasing_by_a_consent_that_does_not_exist_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let filter = FrameFilter { consent: Some("c9".into()), ..Default::default() };
    assert!(matches!(store.erase(&filter, "steward", "asked"), Err(StoreError::NotFound(m)) if m.contains("c9")));
}

#[test]
fn tombstones_are_kept_only_for_what_the_hub_may_hold_and_pruned_after_its_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let store = Store::open_with_clock(dir.path(), clock.clone()).unwrap();
    store.add_consent(consent(Scope::Device, &[Purpose::Annotate, Purpose::Sync])).unwrap();
    let ids: Vec<FrameId> = (0..40)
        .map(|i| {
            kept(store.put_frames(&[(&anonymized("gate", i), serde_json::json!({}))], NoConsent::Drop).unwrap()[0])
        })
        .collect();
    // One frame reached the hub.
    let one = store::BatchLimits { frames: 1, bytes: 1 << 30, age_ms: 0 };
    let batch = store.form_batch(&one, store::SyncRules { require_review: false }).unwrap().unwrap();
    store.batch_committed(&batch, "receipt-1").unwrap();
    assert_eq!(store.synced_frames().unwrap(), [ids[0]], "the oldest frame went alone");

    // A steward erases it and the next one, never sent.
    store.erase(&FrameFilter { ids: vec![ids[0], ids[1]], ..Default::default() }, "steward", "request 3").unwrap();
    // Retention is not erasure (issue 16): it removes the box's copy and asks nothing of the hub.
    clock.advance(31 * DAY);
    let report = store.retain(&store::Retention::default(), &|| 0.5).unwrap();
    assert_eq!(report.expired, 38);
    let tombstones = store.tombstones().unwrap();
    assert_eq!(tombstones.len(), 1, "only the erased synced frame needs one: {tombstones:?}");
    assert_eq!(tombstones[0].frame, ids[0]);

    // The hub acknowledges the erasure; 30 days on, the tombstone goes.
    store.acknowledge_tombstones(&[tombstones[0].id]).unwrap();
    clock.advance(29 * DAY);
    assert_eq!(store.retain(&store::Retention::default(), &|| 0.5).unwrap().pruned_tombstones, 0);
    clock.advance(2 * DAY);
    assert_eq!(store.retain(&store::Retention::default(), &|| 0.5).unwrap().pruned_tombstones, 1);
    assert!(store.tombstones().unwrap().is_empty());
    assert_eq!(store.verify_audit().unwrap().map(|n| n > 0), Ok(true));
}

#[test]
fn like_patterns_in_a_subject_match_only_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for subject in ["camera/a_b/frame/1", "camera/axb/frame/2", "camera/a%b/frame/3", "camera/a%bc/frame/4"] {
        store.audit("tester", "note", subject, serde_json::json!({})).unwrap();
    }
    let subjects =
        |prefix: &str| -> Vec<String> { store.audit_entries(prefix).unwrap().into_iter().map(|e| e.subject).collect() };
    assert_eq!(subjects("camera/a_b/"), ["camera/a_b/frame/1"], "`_` is not a wildcard");
    assert_eq!(subjects("camera/a%b/"), ["camera/a%b/frame/3"], "`%` is not a wildcard");
    assert_eq!(store.audit_page(0, 10, Some("no_")).unwrap().len(), 0);
    assert_eq!(store.audit_page(0, 10, Some("no")).unwrap().len(), 4);
}

/// The audit log with its triggers lifted, as someone with the database file would.
fn tamper(dir: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(dir.join(store::DATABASE_FILE)).unwrap();
    conn.execute_batch(&format!(
        "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete; {sql};
         CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
         CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;"
    ))
    .unwrap();
}

#[test]
fn cutting_off_the_audit_logs_end_is_caught_by_its_signed_head() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        for i in 0..6 {
            store.audit("tester", "note", &format!("thing/{i}"), serde_json::json!({ "i": i })).unwrap();
        }
        assert_eq!(store.verify_audit().unwrap(), Ok(6));
        assert_eq!(store.audit_head().unwrap().unwrap().seq, 6);
    }
    // The last two entries cut off: the rest of the chain is intact.
    tamper(dir.path(), "DELETE FROM audit_log WHERE seq > 4");
    let store = Store::open(dir.path()).unwrap();
    let broken = store.verify_audit().unwrap().unwrap_err();
    assert!(broken.problem.contains("cut off") && broken.seq == 5, "{broken}");
    drop(store);

    // Nor can the anchor be rewritten to match, without the device key.
    let conn = rusqlite::Connection::open(dir.path().join(store::DATABASE_FILE)).unwrap();
    let hash: String = conn.query_row("SELECT hash FROM audit_log WHERE seq = 4", [], |r| r.get(0)).unwrap();
    conn.execute("UPDATE settings SET value = ?1 WHERE key = 'audit.head'", [format!("4 {hash} {}", "00".repeat(32))])
        .unwrap();
    drop(conn);
    let store = Store::open(dir.path()).unwrap();
    assert!(store.verify_audit().unwrap().unwrap_err().problem.contains("signature"));
    drop(store);

    // Removing the anchor is caught too.
    rusqlite::Connection::open(dir.path().join(store::DATABASE_FILE))
        .unwrap()
        .execute("DELETE FROM settings WHERE key = 'audit.head'", [])
        .unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(store.verify_audit().unwrap().unwrap_err().problem.contains("missing"));
}

#[test]
fn malformed_json_in_a_row_is_an_error_and_counted_never_null() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.add_consent(consent(Scope::Device, &[Purpose::Annotate])).unwrap();
    let id = kept(store.put_frames(&[(&anonymized("gate", 1), serde_json::json!({}))], NoConsent::Drop).unwrap()[0]);
    let conn = rusqlite::Connection::open(dir.path().join(store::DATABASE_FILE)).unwrap();
    conn.execute("UPDATE frames SET metadata = '{not json' WHERE id = ?1", [id]).unwrap();
    // A queue whose filter is corrupt would otherwise widen to every frame.
    conn.execute("INSERT INTO queues (name, filter) VALUES ('yard only', '{\"camera\": ')", []).unwrap();
    drop(conn);
    let before = store::corrupt_reads();
    let err = store.frame(id).unwrap_err().to_string();
    assert!(err.contains("malformed JSON") && err.contains("metadata"), "{err}");
    assert!(store::corrupt_reads() > before, "counted");
    let queue: i64 = store.queues().map(|_| 0).unwrap_or(2);
    assert_eq!(queue, 2, "listing queues with a corrupt filter is an error");
    let err = store.claim_next(2, "ana", 60_000).unwrap_err().to_string();
    assert!(err.contains("yard only") || err.contains("queue 2"), "{err}");
}

/// The writer half of the lock test: a daemon-like process that stores a frame, each a
/// new blob, whenever it reads a line, prints each committed id, and keeps the store
/// open until its input closes. Run only by the test below.
#[test]
#[ignore = "run as a child process by the lock test"]
fn child_fast_writer() {
    let Some(dir) = std::env::var_os("OBSCURA_LOCK_DIR") else { return };
    let store = Store::open(Path::new(&dir)).unwrap();
    let frames: Vec<_> = (0..20).map(|i| common::anonymized_cropped("gate", i, i as u32 * 3)).collect();
    println!("ready");
    let mut input = std::io::stdin().lines();
    for (round, frame) in frames.iter().enumerate() {
        if input.next().is_none() {
            return;
        }
        for stored in store.put_frames(&[(frame, serde_json::json!({ "round": round }))], NoConsent::Drop).unwrap() {
            println!("committed {}", kept(stored));
        }
    }
    println!("done");
    for _ in input {}
}

#[test]
fn store_check_never_removes_a_live_writers_files() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path()).unwrap().add_consent(consent(Scope::Device, &[Purpose::Annotate])).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_fast_writer", "--nocapture", "--test-threads=1"])
        .env("OBSCURA_LOCK_DIR", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The test harness prints its own lines first.
    assert!(lines.by_ref().any(|l| l.unwrap().ends_with("ready")), "the writer did not start");
    // `obscura store check` in a loop, beside the writer, as a user would run it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checker = std::thread::spawn({
        let (dir, stop) = (dir.path().to_owned(), stop.clone());
        move || {
            let mut checks = 0;
            while !stop.load(Ordering::SeqCst) {
                let check = Store::open(&dir).unwrap().check().unwrap();
                assert!(!check.sweep.cleaned, "the writer holds the store: nothing may be removed");
                assert!(check.sweep.missing_blobs.is_empty() && check.unreadable.is_empty(), "{check:?}");
                checks += 1;
            }
            checks
        }
    });
    let mut input = child.stdin.take().unwrap();
    let mut committed = Vec::new();
    for _ in 0..20 {
        writeln!(input, "go").unwrap();
        let id = loop {
            let line = lines.next().expect("the writer stopped").unwrap();
            if let Some(id) = line.strip_prefix("committed ") {
                break id.parse::<FrameId>().unwrap();
            }
        };
        committed.push(id);
    }
    stop.store(true, Ordering::SeqCst);
    let checks = checker.join().expect("a check failed");
    drop(input);
    child.kill().unwrap();
    child.wait().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for id in &committed {
        store.frame_jpeg(*id).unwrap_or_else(|e| panic!("frame {id} lost its blob while checks ran: {e}"));
    }
    // Alone, the sweep cleans what the killed writer left.
    assert!(store.sweep().unwrap().cleaned);
    assert!(checks >= 1, "{checks} checks ran");
}

/// A state directory written by the release before this schema (version 4, made by
/// `make_state_fixture` at commit 8766303; see `tests/fixtures/README.md`).
#[test]
fn a_state_directory_from_the_previous_release_migrates_keeping_everything() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = common::root().join("crates/store/tests/fixtures/state-v4");
    copy_dir(&fixture, dir.path());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path().join("device.key"), std::fs::Permissions::from_mode(0o600)).unwrap();

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.verify_audit().unwrap().map(|n| n > 10), Ok(true), "the old chain verifies, now anchored");
    assert_eq!(store.integrity_check().unwrap(), "ok");
    let frames = store.frames(&FrameFilter::default()).unwrap();
    assert_eq!(frames.iter().map(|f| f.id).collect::<Vec<_>>(), [1, 2, 3, 4, 5].map(FrameId), "frame 6 was erased");
    for f in &frames {
        store.frame_jpeg(f.id).unwrap();
        assert_eq!(f.metadata["n"], f.seq, "metadata kept");
    }
    let consents = store.consents().unwrap();
    assert_eq!(consents.len(), 2);
    assert_eq!(consents[0].terms.purposes, [Purpose::Annotate, Purpose::Sync]);
    assert_eq!(
        (consents[1].terms.purposes.as_slice(), consents[1].terms.valid_until),
        ([Purpose::Annotate].as_slice(), Some(4_102_444_800_000))
    );
    assert!(store.usable(FrameId(1), Purpose::Sync).unwrap());
    // The accepted frame keeps its accepted version; the rest their status.
    assert_eq!((frames[0].status, frames[0].accepted_version), (FrameStatus::Accepted, Some(2)));
    assert_eq!(store.accepted_annotation(FrameId(1)).unwrap().unwrap().version, 2);
    assert_eq!(frames[1].status, FrameStatus::Rejected);
    assert_eq!(store.reviews(FrameId(2)).unwrap()[0].comment, "the car is larger");
    assert_eq!(frames[2].status, FrameStatus::Annotated);
    assert_eq!(store.annotations(FrameId(1)).unwrap().len(), 2);
    assert_eq!(store.users().unwrap().len(), 1);
    // The erased frame's tombstone names it, and its id is never given again.
    assert_eq!(store.tombstones().unwrap().iter().map(|t| t.frame).collect::<Vec<_>>(), [FrameId(6)]);
    let next = kept(store.put_frames(&[(&anonymized("gate", 9), serde_json::json!({}))], NoConsent::Drop).unwrap()[0]);
    assert_eq!(next, FrameId(7));
    assert_eq!(store.verify_audit().unwrap().map(|n| n > 10), Ok(true));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Identical JPEG bytes share one blob. An erasure that removes the blob of the last
/// frame using it must not race a writer storing the same bytes again: afterwards every
/// stored frame still has its pixels.
#[test]
fn storing_the_same_bytes_while_they_are_erased_never_loses_a_blob() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(dir.path()).unwrap());
    store.add_consent(consent(Scope::Device, &[Purpose::Annotate])).unwrap();
    let frame = anonymized("gate", 1);
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for _ in 0..60 {
                store.put_frames(&[(&frame, serde_json::json!({}))], NoConsent::Drop).unwrap();
            }
        })
    };
    let mut erased = 0;
    while !writer.is_finished() {
        // By id: an erasure by window would also cover the frame still being written
        // (its capture time is in it), which is not the race under test.
        let ids: Vec<FrameId> = store.frames(&FrameFilter::default()).unwrap().iter().map(|f| f.id).collect();
        if !ids.is_empty() {
            erased += store.erase(&FrameFilter { ids, ..Default::default() }, "steward", "request 9").unwrap().frames;
        }
    }
    writer.join().unwrap();
    assert!(erased > 0, "the erasures ran beside the writes");
    let sweep = store.sweep().unwrap();
    assert!(sweep.missing_blobs.is_empty(), "frames lost their pixels: {sweep:?}");
    for f in store.frames(&FrameFilter::default()).unwrap() {
        store.frame_jpeg(f.id).unwrap_or_else(|e| panic!("frame {} lost its blob: {e}", f.id));
    }
}
