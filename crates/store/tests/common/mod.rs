//! What the store's integration tests share: real anonymized frames (CenterFace on a
//! fixture photo), consents, and a clock the test moves.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anonymize::{AnonymizedFrame, Anonymizer, Pass, Scope as PassScope, Settings};
use frame::{FrameMeta, RawFrame};
use store::{NewConsent, Purpose, Scope, Stored};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The astronaut photo, anonymized by CenterFace, as camera `camera` frame `seq`.
pub fn anonymized(camera: &str, seq: u64) -> AnonymizedFrame {
    anonymized_cropped(camera, seq, 0)
}

/// Like [`anonymized`], with `crop` columns cut off the left: different pixels, so a
/// different blob.
pub fn anonymized_cropped(camera: &str, seq: u64, crop: u32) -> AnonymizedFrame {
    thread_local! {
        static ANONYMIZER: Anonymizer = {
            let faces = onnx::CenterFace::load(
                &root().join("models"),
                onnx::InputSize { width: 320, height: 320 },
                0.4,
                &onnx::Backend::Tract,
            )
            .unwrap();
            Anonymizer::new(vec![Pass { detector: Arc::new(faces), tiles: 0, scope: PassScope::Frame }], Settings::default())
        };
    }
    let img = image::open(root().join("tests/fixtures/face_skimage_astronaut.png")).unwrap().into_rgb8();
    let img = image::imageops::crop_imm(&img, crop, 0, img.width() - crop, img.height()).to_image();
    let meta = FrameMeta {
        camera: Arc::from(camera),
        seq,
        monotonic: Instant::now(),
        wall: SystemTime::now(),
        media_time: None,
    };
    let raw = RawFrame::new(meta, img.width(), img.height(), img.into_raw()).unwrap();
    ANONYMIZER.with(|a| a.anonymize(raw, None).unwrap())
}

pub fn consent(scope: Scope, purposes: &[Purpose]) -> NewConsent {
    NewConsent {
        scope,
        covered: "site staff".into(),
        legal_basis: "consent (signed forms)".into(),
        purposes: purposes.to_vec(),
        valid_from: 0,
        valid_until: None,
        evidence_sha256: None,
        recorded_by: "steward".into(),
    }
}

pub fn kept(stored: Stored) -> store::FrameId {
    match stored {
        Stored::Kept { id, .. } => id,
        Stored::NoConsent | Stored::Erased => panic!("the frame was dropped"),
    }
}

/// A clock the test moves.
pub struct TestClock(pub std::sync::atomic::AtomicI64);

impl store::Clock for TestClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

pub const DAY: i64 = 24 * 60 * 60 * 1000;

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as i64
}

impl TestClock {
    pub fn new() -> Arc<TestClock> {
        Arc::new(TestClock(now_ms().into()))
    }

    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}
