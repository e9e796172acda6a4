//! `obscura export` on a real store of anonymized fixture frames, checked by the real
//! tools dataset engineers load it with: `pycocotools` and `datumaro` (installed by
//! `scripts/test` into a virtual environment named by `OBSCURA_TOOLS_PYTHON`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anonymize::{AnonymizedFrame, Anonymizer, Pass, Scope as PassScope, Settings};
use frame::{FrameMeta, RawFrame};
use store::{NewConsent, NoConsent, Purpose, Scope, Store, Stored};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn anonymized(fixture: &str, seq: u64) -> AnonymizedFrame {
    let faces = onnx::CenterFace::load(
        &root().join("models"),
        onnx::InputSize { width: 320, height: 320 },
        0.4,
        &onnx::Backend::Tract,
    )
    .unwrap();
    let anonymizer = Anonymizer::new(
        vec![Pass { detector: Arc::new(faces), tiles: 0, scope: PassScope::Frame }],
        Settings::default(),
    );
    let img = image::open(root().join("tests/fixtures").join(fixture)).unwrap().into_rgb8();
    let meta = FrameMeta {
        camera: Arc::from("gate"),
        seq,
        monotonic: Instant::now(),
        wall: SystemTime::now(),
        media_time: None,
    };
    anonymizer.anonymize(RawFrame::new(meta, img.width(), img.height(), img.into_raw()).unwrap(), None).unwrap()
}

fn python() -> PathBuf {
    let python = std::env::var_os("OBSCURA_TOOLS_PYTHON").expect(
        "OBSCURA_TOOLS_PYTHON is not set: run the tests with scripts/test, which installs pycocotools and datumaro",
    );
    PathBuf::from(python)
}

fn export(state: &Path, out: &Path) -> String {
    export_as("coco", state, out)
}

fn export_as(format: &str, state: &Path, out: &Path) -> String {
    let run = Command::new(env!("CARGO_BIN_EXE_obscura"))
        .args(["export", "--format", format, "--state-dir", state.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    String::from_utf8_lossy(&run.stdout).into_owned()
}

/// Images, annotations and category names as pycocotools reads them.
fn pycocotools(out: &Path) -> serde_json::Value {
    let script = "import json, sys\nfrom pycocotools.coco import COCO\nc = COCO(sys.argv[1])\n\
                  print(json.dumps({'images': len(c.getImgIds()), 'annotations': len(c.getAnnIds()), \
                  'categories': sorted(x['name'] for x in c.loadCats(c.getCatIds()))}))";
    let run = Command::new(python())
        .args(["-c", script])
        .arg(out.join("annotations/instances_default.json"))
        .output()
        .unwrap();
    assert!(run.status.success(), "pycocotools refused the export: {}", String::from_utf8_lossy(&run.stderr));
    let stdout = String::from_utf8_lossy(&run.stdout);
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

/// Items, shapes and label names as datumaro imports the dataset in `format`.
fn datumaro(out: &Path, format: &str) -> serde_json::Value {
    let script = "import json, sys, warnings\nwarnings.filterwarnings('ignore')\nimport datumaro as dm\n\
                  ds = dm.Dataset.import_from(sys.argv[1], sys.argv[2])\n\
                  labels = [l.name for l in ds.categories()[dm.AnnotationType.label]]\n\
                  shapes = sum(1 for i in ds for a in i.annotations if a.type in (dm.AnnotationType.bbox, dm.AnnotationType.polygon))\n\
                  print(json.dumps({'items': len(ds), 'shapes': shapes, 'labels': sorted(labels), \
                  'images': sum(1 for i in ds if i.media is not None and i.media.has_data)}))";
    let run = Command::new(python()).args(["-c", script]).arg(out).arg(format).output().unwrap();
    assert!(run.status.success(), "datumaro refused the export: {}", String::from_utf8_lossy(&run.stderr));
    let stdout = String::from_utf8_lossy(&run.stdout);
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[test]
fn coco_and_yolo_exports_load_in_pycocotools_and_datumaro_and_a_withdrawn_consent_empties_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let store = Store::open(&state).unwrap();
    let consent = store
        .add_consent(NewConsent {
            scope: Scope::Camera("gate".into()),
            covered: "site staff".into(),
            legal_basis: "consent (signed forms)".into(),
            purposes: vec![Purpose::Annotate, Purpose::Train],
            valid_from: 0,
            valid_until: None,
            evidence_sha256: None,
            recorded_by: "steward".into(),
        })
        .unwrap();
    let frames = [anonymized("plate_fast-alpr_skoda-CZ.png", 1), anonymized("face_trackingjs_group3.jpg", 2)];
    let ids: Vec<i64> = frames
        .iter()
        .map(|f| match store.put_frames(&[(f, serde_json::json!({}))], NoConsent::Drop).unwrap()[0] {
            Stored::Kept { id, .. } => id,
            Stored::NoConsent => panic!("dropped"),
        })
        .collect();
    let car = serde_json::json!([
        { "type": "box", "label": "car", "points": [20.0, 30.0, 480.0, 320.0], "attributes": { "parked": true } },
        { "type": "polygon", "label": "license_plate", "points": [306.0, 189.0, 388.0, 189.0, 388.0, 211.0, 306.0, 211.0] },
    ]);
    store.save_annotation(ids[0], 0, &car, "ana").unwrap().unwrap();
    let people = serde_json::json!([{ "type": "box", "label": "person", "points": [40.0, 60.0, 160.0, 300.0] }]);
    store.save_annotation(ids[1], 0, &people, "ana").unwrap().unwrap();
    drop(store);

    let out = dir.path().join("coco");
    let said = export(&state, &out);
    assert!(said.contains("exported 2 frame(s) and 3 annotation(s)"), "{said}");
    let read = pycocotools(&out);
    assert_eq!(
        read,
        serde_json::json!({ "images": 2, "annotations": 3, "categories": ["car", "license_plate", "person"] })
    );
    let imported = datumaro(&out, "coco_instances");
    assert_eq!(imported["items"], 2, "{imported}");
    assert_eq!(imported["images"], 2, "datumaro finds both images: {imported}");
    assert_eq!(imported["labels"], serde_json::json!(["car", "license_plate", "person"]), "{imported}");
    assert!(imported["shapes"].as_u64().unwrap() >= 3, "{imported}");

    // The same data in the Ultralytics YOLO layout, as datumaro reads it.
    let yolo = dir.path().join("yolo");
    assert!(export_as("yolo", &state, &yolo).contains("3 annotation(s)"));
    let imported = datumaro(&yolo, "yolo");
    assert_eq!(
        imported,
        serde_json::json!({ "items": 2, "images": 2, "shapes": 3, "labels": ["car", "license_plate", "person"] })
    );
    let plate_line = std::fs::read_to_string(yolo.join(format!("labels/train/{}.txt", ids[0]))).unwrap();
    assert!(plate_line.lines().any(|l| l.starts_with("1 ")), "the plate, class 1: {plate_line}");
    // The images are the stored, anonymized JPEGs.
    let store = Store::open(&state).unwrap();
    assert_eq!(std::fs::read(out.join(format!("images/{}.jpg", ids[0]))).unwrap(), store.frame_jpeg(ids[0]).unwrap());
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("annotations/instances_default.json")).unwrap())
            .unwrap();
    let plate =
        doc["annotations"].as_array().unwrap().iter().find(|a| a["segmentation"] != serde_json::json!([])).unwrap();
    assert_eq!(plate["bbox"], serde_json::json!([306.0, 189.0, 82.0, 22.0]));
    assert_eq!(plate["area"], 82.0 * 22.0);

    // Withdrawn: the next export has none of its frames; every export is audited.
    store.withdraw_consent(&consent.id, "steward").unwrap();
    let again = dir.path().join("coco-after");
    assert!(export(&state, &again).contains("exported 0 frame(s)"));
    assert_eq!(pycocotools(&again)["images"], 0);
    let exports = store.audit_entries("dataset").unwrap();
    assert_eq!(exports.iter().map(|e| e.detail["frames"].as_i64().unwrap()).collect::<Vec<_>>(), [2, 2, 0]);
}
