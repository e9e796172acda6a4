//! What may leave the box, and the outbox that carries it (issue 16): eligibility in one
//! place, batches formed and resumed from SQLite, receipts audited, erasures queued for
//! the hub, and retention that removes only the box's copy, counted.

use std::sync::atomic::Ordering;

use store::{BatchLimits, BatchState, FrameFilter, FrameId, NoConsent, Purpose, Scope, Store, SyncRules};

mod common;
use common::{DAY, TestClock, anonymized_cropped, consent, kept};

const REVIEWED: SyncRules = SyncRules { require_review: true };
const ANY: SyncRules = SyncRules { require_review: false };
const NOW: BatchLimits = BatchLimits { frames: 100, bytes: 1 << 30, age_ms: 0 };

fn car() -> serde_json::Value {
    serde_json::json!([{ "type": "box", "label": "car", "points": [1, 2, 30, 40], "attributes": {} }])
}

fn store_frames(store: &Store, n: u32) -> Vec<FrameId> {
    (0..n)
        .map(|i| {
            let frame = anonymized_cropped("gate", u64::from(i), i * 2);
            kept(store.put_frames(&[(&frame, serde_json::json!({}))], NoConsent::Drop).unwrap()[0])
        })
        .collect()
}

fn accept(store: &Store, id: FrameId) {
    store.save_annotation(id, 0, &car(), "ana").unwrap().unwrap();
    store.submit_annotation(id, 1, "ana").unwrap();
    store.review(id, 1, store::Decision::Accept, "", "rita").unwrap();
}

fn manifest(store: &Store) -> wire::v1::Manifest {
    serde_json::from_str(&store.due_batch(ANY).unwrap().expect("a batch is due").manifest).unwrap()
}

/// Invariant 3: a frame leaves only with a consent in force that gives `sync`, and, when
/// review is required, once accepted; its accepted version and its consents go with it.
#[test]
fn only_consented_and_reviewed_frames_are_batched() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // Annotate only: nothing may be synced.
    let annotate_only = store.add_consent(consent(Scope::Camera("gate".into()), &[Purpose::Annotate])).unwrap();
    let ids = store_frames(&store, 2);
    accept(&store, ids[0]);
    assert_eq!(store.form_batch(&NOW, ANY).unwrap(), None, "no consent gives sync");
    store.withdraw_consent(&annotate_only.id, "steward").unwrap();

    let sync = store.add_consent(consent(Scope::Device, &[Purpose::Annotate, Purpose::Sync])).unwrap();
    let ids = store_frames(&store, 3);
    assert_eq!(store.form_batch(&NOW, REVIEWED).unwrap(), None, "nothing reviewed yet");
    accept(&store, ids[1]);
    store.save_annotation(ids[1], 1, &serde_json::json!([]), "ana").unwrap().unwrap();
    let batch = store.form_batch(&NOW, REVIEWED).unwrap().expect("the accepted frame is batched");
    let m = manifest(&store);
    assert_eq!(m.batch, batch);
    assert_eq!(m.device, store.device_id());
    assert_eq!(m.frames.iter().map(|f| f.local).collect::<Vec<_>>(), [ids[1].0]);
    let frame = &m.frames[0];
    assert_eq!(frame.annotation.as_ref().unwrap().version, 1, "the accepted version, not the later draft");
    assert_eq!(frame.consents, std::slice::from_ref(&sync.id.0));
    assert_eq!(frame.sha256, store::sha256_hex(&store.frame_jpeg(ids[1]).unwrap()), "named by the JPEG's SHA-256");
    assert_eq!(m.consents.len(), 1);
    assert_eq!(m.consents[0].purposes, [wire::v1::Purpose::Annotate, wire::v1::Purpose::Sync]);
    assert_eq!(m.audit_head.seq, store.audit_head().unwrap().unwrap().seq - 1, "the head as the batch was formed");
    assert_eq!(store.form_batch(&NOW, REVIEWED).unwrap(), None, "a frame is in one batch");

    // Without review required, the rest of the consented frames go too.
    let rest = store.form_batch(&NOW, ANY).unwrap().unwrap();
    assert_ne!(rest, batch);
    assert_eq!(store.sync_backlog(ANY).unwrap().frames, 3, "batched or not, until the hub has them");
}

/// Batches close by count, bytes or age; a formed batch survives a restart and resumes;
/// the receipt marks its frames synced and goes into the audit chain; a rejected batch
/// is kept with its reason and its frames are not sent again.
#[test]
fn batches_close_by_count_bytes_or_age_and_move_from_pending_to_committed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let store = Store::open_with_clock(dir.path(), clock.clone()).unwrap();
    store.add_consent(consent(Scope::Device, &[Purpose::Annotate, Purpose::Sync])).unwrap();
    let ids = store_frames(&store, 5);
    let by_age = BatchLimits { frames: 10, bytes: 1 << 30, age_ms: 60_000 };
    assert_eq!(store.form_batch(&by_age, ANY).unwrap(), None, "5 of 10, and young: wait");
    let by_count = BatchLimits { frames: 2, ..by_age };
    let first = store.form_batch(&by_count, ANY).unwrap().unwrap();
    let size = store.frame(ids[2]).unwrap().bytes as u64;
    let by_bytes = BatchLimits { bytes: size + 1, ..by_age };
    let second = store.form_batch(&by_bytes, ANY).unwrap().unwrap();
    clock.advance(120_000);
    let third = store.form_batch(&by_age, ANY).unwrap().unwrap();
    let sizes: Vec<usize> = [&first, &second, &third]
        .iter()
        .map(|b| store.audit_entries(&format!("batch/{b}")).unwrap()[0].detail["frames"].as_u64().unwrap() as usize)
        .collect();
    assert_eq!(sizes, [2, 1, 2], "by count, by bytes, then by age");

    // Restart: the outbox says where things stand.
    drop(store);
    let store = Store::open_with_clock(dir.path(), clock.clone()).unwrap();
    let due = store.due_batch(ANY).unwrap().unwrap();
    assert_eq!((due.id.as_str(), due.state, due.frames.len()), (first.as_str(), BatchState::Pending, 2));
    store.batch_uploading(&first).unwrap();
    store.batch_failed(&first, "connection reset").unwrap();
    let next = store.due_batch(ANY).unwrap().unwrap();
    assert_eq!(next.id, second, "a failed batch waits its back-off; the next is due");
    assert_eq!(store.sync_backlog(ANY).unwrap().last_error.as_deref(), Some("connection reset"));
    clock.advance(1_000);
    let again = store.due_batch(ANY).unwrap().unwrap();
    assert_eq!((again.id.as_str(), again.state, again.attempts), (first.as_str(), BatchState::Uploading, 1));

    store.batch_committed(&first, r#"{"payload":"{}","signature":"s"}"#).unwrap();
    let receipts = store.audit_entries("batch/").unwrap();
    assert!(
        receipts.iter().any(|e| e.action == "sync.receipt" && e.subject == format!("batch/{first}")),
        "{receipts:?}"
    );
    store.batch_rejected(&second, "the hub's disk is full").unwrap();
    let backlog = store.sync_backlog(ANY).unwrap();
    assert_eq!((backlog.batches_committed, backlog.batches_rejected, backlog.batches_pending), (1, 1, 1));
    assert_eq!(backlog.frames, 2, "the third batch's frames; not the committed or rejected ones");
    assert!(backlog.last_receipt_ms.is_some());
    assert_eq!(store.form_batch(&NOW, ANY).unwrap(), None, "committed and rejected frames are not batched again");
    assert!(store.verify_audit().unwrap().is_ok());
}

/// A withdrawal or an erasure after a batch formed dissolves it before anything is sent;
/// the frames that may still go are batched anew.
#[test]
fn a_batch_whose_frames_may_no_longer_leave_is_dissolved_before_it_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let c = store.add_consent(consent(Scope::Device, &[Purpose::Annotate, Purpose::Sync])).unwrap();
    let ids = store_frames(&store, 3);
    store.form_batch(&NOW, ANY).unwrap().unwrap();
    store.erase(&FrameFilter { ids: vec![ids[0]], ..Default::default() }, "steward", "request 4").unwrap();
    assert!(store.tombstones().unwrap().is_empty(), "never sent, so nothing to ask of the hub");
    assert_eq!(store.due_batch(ANY).unwrap(), None, "dissolved");
    let reformed = store.form_batch(&NOW, ANY).unwrap().unwrap();
    assert_eq!(manifest(&store).batch, reformed);
    assert_eq!(manifest(&store).frames.len(), 2);
    store.withdraw_consent(&c.id, "steward").unwrap();
    assert_eq!(store.due_batch(ANY).unwrap(), None, "withdrawn before it left: nothing goes");
    assert_eq!(store.form_batch(&NOW, ANY).unwrap(), None);
}

/// Erasure follows the data: erasing a synced frame queues an erasure for the hub until
/// its receipt is in. Retention is not erasure: it removes the box's copy only, and a
/// frame it removes before it could be synced is counted and audited.
#[test]
fn erasure_queues_hub_erasures_and_retention_counts_what_it_expired_unsynced() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let store = Store::open_with_clock(dir.path(), clock.clone()).unwrap();
    store.add_consent(consent(Scope::Device, &[Purpose::Annotate, Purpose::Sync])).unwrap();
    let ids = store_frames(&store, 4);
    let limits = BatchLimits { frames: 2, ..NOW };
    let batch = store.form_batch(&limits, ANY).unwrap().unwrap();
    store.batch_uploading(&batch).unwrap();
    store.batch_committed(&batch, "{}").unwrap();

    store.erase(&FrameFilter { ids: vec![ids[0]], ..Default::default() }, "steward", "request 5").unwrap();
    let pending = store.pending_erasures(10).unwrap();
    assert_eq!(pending.iter().map(|p| p.frame).collect::<Vec<_>>(), [ids[0]]);
    let sha = pending[0].sha256.as_deref().unwrap_or_default();
    assert!(sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()), "the hub is told its JPEG's SHA-256 too");
    store.erasures_confirmed(&[pending[0].tombstone], r#"{"kind":"erasure"}"#).unwrap();
    assert!(store.pending_erasures(10).unwrap().is_empty());
    assert_eq!(store.sync_backlog(ANY).unwrap().erasures_pending, 0);

    // Retention: the synced frame 1 and the unsynced 2 and 3 pass keep_days.
    clock.advance(31 * DAY);
    let policy = store::Retention::default();
    let report = store.retain(&policy, &|| 0.5).unwrap();
    assert_eq!(report.expired, 3);
    assert!(store.pending_erasures(10).unwrap().is_empty(), "retention asks nothing of the hub");
    let backlog = store.sync_backlog(ANY).unwrap();
    assert_eq!((backlog.expired_unsynced, backlog.frames), (2, 0));
    let audit = store.audit_entries("frames").unwrap();
    assert!(audit.iter().any(|e| e.action == "sync.expired_unsynced"), "never silent");
    let _ = clock.0.load(Ordering::SeqCst);
}

/// A consent the hub took with a batch travels again once it changes (a withdrawal), as
/// one update whose id is its body's hash (a resend is the same request), until a
/// receipt covers it; consents the hub never took are never sent.
#[test]
fn r16_a_withdrawal_after_sync_travels_as_one_consent_update_until_receipted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let sync = store.add_consent(consent(Scope::Device, &[Purpose::Annotate, Purpose::Sync])).unwrap();
    let never_sent = store.add_consent(consent(Scope::Camera("yard".into()), &[Purpose::Annotate])).unwrap();
    store_frames(&store, 2);
    let batch = store.form_batch(&NOW, ANY).unwrap().unwrap();
    assert_eq!(store.consent_update().unwrap(), None, "nothing at the hub yet");
    store.batch_committed(&batch, "{}").unwrap();
    assert_eq!(store.consent_update().unwrap(), None, "the hub holds the record as it is");

    store.withdraw_consent(&never_sent.id, "steward").unwrap();
    assert_eq!(store.consent_update().unwrap(), None, "the hub never had this one");
    store.withdraw_consent(&sync.id, "steward").unwrap();
    let (id, body) = store.consent_update().unwrap().expect("the withdrawal travels");
    assert_eq!(id, store::sha256_hex(&body));
    assert_eq!(store.consent_update().unwrap(), Some((id.clone(), body.clone())), "the same request until receipted");
    let update: wire::v1::ConsentUpdate = serde_json::from_slice(&body).unwrap();
    assert_eq!(update.consents.len(), 1);
    assert_eq!(update.consents[0].id, sync.id.0);
    assert!(update.consents[0].withdrawn_at_ms.is_some());

    // A restart loses nothing; the receipt ends it and is audited.
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.consent_update().unwrap().map(|u| u.0), Some(id));
    store.consent_update_confirmed(&body, r#"{"payload":"x"}"#).unwrap();
    assert_eq!(store.consent_update().unwrap(), None);
    assert!(store.audit_entries("consents").unwrap().iter().any(|e| e.action == "sync.consent_receipt"));
}

/// A store with a consent to sync everything and three frames in one batch.
fn three_frames_batched() -> (tempfile::TempDir, Store, store::Consent, Vec<FrameId>, String) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let c = store.add_consent(consent(Scope::Device, &[Purpose::Annotate, Purpose::Sync])).unwrap();
    let ids = store_frames(&store, 3);
    let batch = store.form_batch(&NOW, ANY).unwrap().unwrap();
    (dir, store, c, ids, batch)
}

/// Found by the sync storm: a commit can reach the hub while its receipt is lost on the
/// way back. A withdrawal then dissolves the batch, but the hub holds its frames and its
/// consent records: each frame that may no longer leave is recalled (a tombstone) and
/// the withdrawal travels, rather than staying at the hub for good.
#[test]
fn r16_a_batch_dissolved_after_its_commit_may_have_gone_recalls_its_frames_and_sends_the_withdrawal() {
    let (_dir, store, c, ids, batch) = three_frames_batched();
    store.batch_uploading(&batch).unwrap();
    // The commit went; the receipt did not come back.
    store.withdraw_consent(&c.id, "steward").unwrap();
    assert!(store.pending_erasures(10).unwrap().is_empty(), "nothing synced yet as far as the withdrawal knows");
    assert_eq!(store.due_batch(ANY).unwrap(), None, "dissolved: its frames may not leave");
    let recalled: Vec<FrameId> = store.pending_erasures(10).unwrap().iter().map(|p| p.frame).collect();
    assert_eq!(recalled, ids, "the hub may hold them: recalled");
    let (_, body) = store.consent_update().unwrap().expect("the hub may hold the record: the withdrawal travels");
    let update: wire::v1::ConsentUpdate = serde_json::from_slice(&body).unwrap();
    assert!(update.consents.iter().any(|u| u.id == c.id.0 && u.withdrawn_at_ms.is_some()));

    // A batch never sent (still pending) recalls nothing.
    let d = store.add_consent(consent(Scope::Device, &[Purpose::Annotate, Purpose::Sync])).unwrap();
    store_frames(&store, 2);
    store.form_batch(&NOW, ANY).unwrap().unwrap();
    store.withdraw_consent(&d.id, "steward").unwrap();
    assert_eq!(store.due_batch(ANY).unwrap(), None);
    assert_eq!(store.pending_erasures(10).unwrap().len(), 3, "no more than before");
}

/// Found by the sync storm: a frame withdrawn or erased after its batch was taken to be
/// sent, but before the receipt, is at the hub once the receipt comes: it is recalled.
#[test]
fn r16_a_receipt_for_frames_withdrawn_or_erased_meanwhile_recalls_them() {
    let (_dir, store, c, ids, batch) = three_frames_batched();
    assert_eq!(store.due_batch(ANY).unwrap().unwrap().id, batch);
    // Between taking the batch and marking it uploading: no tombstone yet for either.
    store.erase(&FrameFilter { ids: vec![ids[0]], ..Default::default() }, "steward", "request 6").unwrap();
    store.withdraw_consent(&c.id, "steward").unwrap();
    assert!(store.pending_erasures(10).unwrap().is_empty());
    store.batch_uploading(&batch).unwrap();
    store.batch_committed(&batch, "{}").unwrap();
    let recalled: Vec<FrameId> = store.pending_erasures(10).unwrap().iter().map(|p| p.frame).collect();
    assert_eq!(recalled, ids, "the erased frame and the withdrawn ones");
    store.batch_committed(&batch, "{}").unwrap();
    assert_eq!(store.pending_erasures(10).unwrap().len(), 3, "once");
}
