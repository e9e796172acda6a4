//! `obscura export` on a real store of anonymized fixture frames, checked by the real
//! tools dataset engineers load it with: `pycocotools` and `datumaro` (installed by
//! `scripts/test` into a virtual environment named by `OBSCURA_TOOLS_PYTHON`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anonymize::{AnonymizedFrame, Anonymizer, Pass, Proposed, Scope as PassScope, Settings};
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
    let mut passes = vec![Pass { detector: Arc::new(faces), tiles: 0, scope: PassScope::Frame }];
    let models = root().join("models");
    if fixture.starts_with("plate_") {
        // Plates as the daemon finds them: on the whole frame and on each vehicle
        // NanoDet proposes, with the plate areas of distant vehicles covered.
        let input = onnx::InputSize { width: 480, height: 288 };
        let plates = onnx::PlateDetector::load(&models, input, 0.3, &onnx::Backend::Tract).unwrap();
        let close = plates.fitted(onnx::Fit::zoom(512, 4.0));
        passes.push(Pass { detector: Arc::new(plates), tiles: 0, scope: PassScope::Frame });
        passes.push(Pass { detector: Arc::new(close), tiles: 0, scope: PassScope::Proposals(Proposed::Vehicle) });
    }
    let settings = Settings { plate_areas: 96, ..Settings::default() };
    let nanodet = onnx::NanoDet::load(&models, 0.15, &onnx::Backend::Tract).unwrap();
    let anonymizer = Anonymizer::new(passes, settings).with_proposer(Arc::new(nanodet));
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
    export_as("coco", state, out, &[])
}

fn export_as(format: &str, state: &Path, out: &Path, more: &[&str]) -> String {
    let run = obscura(&["export", "--format", format, "--out", out.to_str().unwrap()], state, more);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    String::from_utf8_lossy(&run.stdout).into_owned()
}

fn obscura(args: &[&str], state: &Path, more: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_obscura"))
        .args(args)
        .args(["--state-dir", state.to_str().unwrap()])
        .args(more)
        .output()
        .unwrap()
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

/// Camera `gate`'s staff consent to annotation and training.
fn consent_for_gate(store: &Store) -> store::Consent {
    store
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
        .unwrap()
}

/// A store with two consented, annotated frames (a car with its plate; people), the
/// anonymizer's face boxes, and NanoDet's pre-labels on the car. Returns the consent and
/// the frame ids.
fn fixture_store(state: &Path) -> (store::ConsentId, Vec<store::FrameId>) {
    let store = Store::open(state).unwrap();
    let consent = consent_for_gate(&store);
    let frames = [anonymized("plate_fast-alpr_skoda-CZ.png", 1), anonymized("face_trackingjs_group3.jpg", 2)];
    let ids: Vec<store::FrameId> = frames
        .iter()
        .map(|f| match store.put_frames(&[(f, serde_json::json!({}))], NoConsent::Drop).unwrap()[0] {
            Stored::Kept { id, .. } => id,
            Stored::NoConsent | Stored::Erased => panic!("dropped"),
        })
        .collect();
    let car = serde_json::json!([
        { "type": "box", "label": "car", "points": [20.0, 30.0, 480.0, 320.0], "attributes": { "parked": true } },
        { "type": "polygon", "label": "license_plate", "points": [306.0, 189.0, 388.0, 189.0, 388.0, 211.0, 306.0, 211.0] },
    ]);
    store.save_annotation(ids[0], 0, &car, "ana").unwrap().unwrap();
    let people = serde_json::json!([{ "type": "box", "label": "person", "points": [40.0, 60.0, 160.0, 300.0] }]);
    store.save_annotation(ids[1], 0, &people, "ana").unwrap().unwrap();
    // Real pre-labels: NanoDet on the stored (anonymized) image.
    let nanodet = onnx::NanoDet::load(&root().join("models"), 0.35, &onnx::Backend::Tract).unwrap();
    let stored = image::load_from_memory(&store.frame_jpeg(ids[0]).unwrap()).unwrap().into_rgb8();
    let objects = nanodet
        .objects(anonymize::Rgb { width: stored.width(), height: stored.height(), data: stored.as_raw() })
        .unwrap();
    let labels: Vec<_> = objects.iter().map(|o| (o.label().to_owned(), o.bbox, o.score)).collect();
    assert!(labels.iter().any(|l| l.0 == "car"), "NanoDet sees the car: {labels:?}");
    store.put_prelabels(ids[0], &labels, "nanodet_g416_coco.onnx", "sha").unwrap();
    (consent.id, ids)
}

#[test]
fn coco_and_yolo_exports_load_in_pycocotools_and_datumaro_and_a_withdrawn_consent_empties_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (consent, ids) = fixture_store(&state);

    let out = dir.path().join("coco");
    let said = export(&state, &out);
    assert!(said.contains("exported 2 frame(s), 3 annotation(s)"), "{said}");
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
    assert!(export_as("yolo", &state, &yolo, &[]).contains("3 annotation(s)"));
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
    store.withdraw_consent(&consent, "steward").unwrap();
    let again = dir.path().join("coco-after");
    assert!(export(&state, &again).contains("exported 0 frame(s)"));
    assert_eq!(pycocotools(&again)["images"], 0);
    let exports = store.audit_entries("dataset").unwrap();
    assert_eq!(exports.iter().map(|e| e.detail["frames"].as_i64().unwrap()).collect::<Vec<_>>(), [2, 2, 0]);
}

#[test]
fn cvat_and_voc_exports_import_in_datumaro_with_the_same_counts_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    fixture_store(&state);
    let want =
        serde_json::json!({ "items": 2, "images": 2, "shapes": 3, "labels": ["car", "license_plate", "person"] });
    let cvat = dir.path().join("cvat");
    assert!(export_as("cvat", &state, &cvat, &[]).contains("exported 2 frame(s), 3 annotation(s)"));
    assert_eq!(datumaro(&cvat, "cvat"), want);
    let voc = dir.path().join("voc");
    assert!(export_as("voc", &state, &voc, &[]).contains("exported 2 frame(s), 3 annotation(s)"));
    // VOC's label map starts with `background`, as VOC's own does.
    let mut voc_want = want.clone();
    voc_want["labels"] = serde_json::json!(["background", "car", "license_plate", "person"]);
    assert_eq!(datumaro(&voc, "voc_detection"), voc_want);
}

#[test]
fn label_studio_tasks_carry_pre_labels_as_predictions_and_redactions_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (_, ids) = fixture_store(&state);
    let tasks = |out: &Path| -> Vec<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(out.join("tasks.json")).unwrap()).unwrap()
    };
    let plain = dir.path().join("ls");
    let said = export_as("labelstudio", &state, &plain, &[]);
    assert!(said.contains("pre-label(s)"), "{said}");
    let t = tasks(&plain);
    assert_eq!(t.len(), 2);
    let car = t.iter().find(|t| t["id"] == ids[0].0).unwrap();
    assert_eq!(car["annotations"][0]["result"].as_array().unwrap().len(), 2);
    let predicted = &car["predictions"][0];
    assert_eq!(predicted["model_version"], "nanodet_g416_coco.onnx");
    assert!(predicted["result"].as_array().unwrap().iter().any(|r| r["value"]["rectanglelabels"][0] == "car"));
    assert!(predicted["result"][0]["score"].as_f64().unwrap() >= 0.35);
    let people = t.iter().find(|t| t["id"] == ids[1].0).unwrap();
    assert!(people.get("predictions").is_none(), "no face boxes unless asked: {people}");
    let config = std::fs::read_to_string(plain.join("labeling_config.xml")).unwrap();
    assert!(config.contains("<Label value=\"car\"") && config.contains("<PolygonLabels"), "{config}");

    // A pre-label an annotator rejected is not offered again.
    let store = Store::open(&state).unwrap();
    let detections = store.detections(ids[0]).unwrap();
    let car = detections.iter().find(|d| d.source == store::Source::Prelabel && d.label == "car").unwrap();
    let current = store.annotation(ids[0]).unwrap().unwrap();
    let stranger = detections.iter().find(|d| d.source == store::Source::Anonymizer).map_or(999_999, |d| d.id);
    let refused = store.save_annotation_dismissing(ids[0], current.version, &current.shapes, Some(&[stranger]), "ana");
    assert!(matches!(refused, Err(store::StoreError::Invalid(_))), "only the frame's pre-labels can be dismissed");
    let id = car.id;
    store.save_annotation_dismissing(ids[0], current.version, &current.shapes, Some(&[id]), "ana").unwrap().unwrap();
    // A later save that says nothing of dismissals keeps them.
    store.save_annotation(ids[0], current.version + 1, &current.shapes, "bob").unwrap().unwrap();
    assert_eq!(store.annotation(ids[0]).unwrap().unwrap().dismissed, [id]);
    drop(store);
    let after = dir.path().join("ls-dismissed");
    export_as("labelstudio", &state, &after, &[]);
    let t = tasks(&after);
    let car_task = t.iter().find(|t| t["id"] == ids[0].0).unwrap();
    let offered = car_task["predictions"][0]["result"].as_array().map_or(0, Vec::len);
    assert_eq!(offered, predicted["result"].as_array().unwrap().len() - 1, "{car_task}");

    // With --redactions, the anonymizer's faces come as `face` predictions.
    let with = dir.path().join("ls-redactions");
    export_as("labelstudio", &state, &with, &["--redactions"]);
    let t = tasks(&with);
    let people = t.iter().find(|t| t["id"] == ids[1].0).unwrap();
    let faces = people["predictions"][0]["result"].as_array().unwrap();
    assert!(faces.len() >= 3 && faces.iter().all(|r| r["value"]["rectanglelabels"][0] == "face"), "{people}");
    assert!(people["predictions"][0]["model_version"].as_str().unwrap().contains("centerface"));
    // The car's plate comes as a `license_plate` prediction; the areas covered on the
    // distant cars are not tight boxes, and are never offered.
    let store = Store::open(&state).unwrap();
    let stored = store.detections(ids[0]).unwrap();
    assert!(stored.iter().any(|d| d.label == "plate_area" && d.model == "nanodet_g416_coco.onnx"), "{stored:?}");
    let car = t.iter().find(|t| t["id"] == ids[0].0).unwrap();
    let offered: Vec<&str> = car["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["result"].as_array().unwrap())
        .filter_map(|r| r["value"]["rectanglelabels"][0].as_str())
        .collect();
    assert!(offered.contains(&"license_plate") && !offered.contains(&"plate_area"), "{offered:?}");
}

/// Export, import, export: the same annotations; an expert's edit in CVAT comes back as
/// a new version, and an image the box never had is reported.
#[test]
fn a_round_trip_is_stable_and_an_edited_cvat_file_merges_back() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (_, ids) = fixture_store(&state);
    let annotations = |out: &Path| -> serde_json::Value {
        let mut doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("annotations/instances_default.json")).unwrap())
                .unwrap();
        doc["info"]["date_created"] = serde_json::Value::Null;
        doc
    };
    let first = dir.path().join("first");
    export(&state, &first);
    let run = obscura(&["import", "--format", "coco", first.to_str().unwrap()], &state, &[]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(
        said.contains("matched 2 by file name") && said.contains("updated 0 frame(s)") && said.contains("2 unchanged"),
        "{said}"
    );
    let second = dir.path().join("second");
    export(&state, &second);
    assert_eq!(annotations(&first), annotations(&second));

    // CVAT: an expert adds a bus to the car frame; the file also names an image the box never had.
    let cvat = dir.path().join("cvat");
    export_as("cvat", &state, &cvat, &[]);
    let xml = std::fs::read_to_string(cvat.join("annotations.xml")).unwrap();
    let edited = xml.replacen(
        "  </image>",
        "    <box label=\"bus\" source=\"manual\" occluded=\"0\" xtl=\"1.5\" ytl=\"2\" xbr=\"30\" ybr=\"40.25\" z_order=\"0\"></box>\n  </image>\n  <image id=\"9\" name=\"elsewhere.jpg\" width=\"10\" height=\"10\"></image>",
        1,
    );
    assert_ne!(edited, xml);
    std::fs::write(cvat.join("annotations.xml"), edited).unwrap();
    let run = obscura(&["import", "--format", "cvat", cvat.to_str().unwrap(), "--by", "hq-expert"], &state, &[]);
    assert_eq!(run.status.code(), Some(2), "unmatched images make the exit status 2");
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(said.contains("updated 1 frame(s) with 3 shape(s), 1 unchanged"), "{said}");
    assert!(String::from_utf8_lossy(&run.stderr).contains("not matched: elsewhere.jpg"));
    let store = Store::open(&state).unwrap();
    let now = store.annotation(ids[0]).unwrap().unwrap();
    assert_eq!((now.version, now.author.as_str()), (2, "hq-expert"));
    assert_eq!(
        now.shapes[2],
        serde_json::json!({ "type": "box", "label": "bus", "points": [1.5, 2.0, 30.0, 40.25], "attributes": {} })
    );
    assert_eq!(now.shapes[0]["attributes"], serde_json::json!({ "parked": true }), "attributes survive CVAT");
    assert_eq!(store.annotations(ids[0]).unwrap().len(), 2, "the earlier version is kept");
    assert_eq!(store.audit_entries("dataset").unwrap().iter().filter(|e| e.action == "import").count(), 2);

    // A zip download holds the same dataset.
    let zip = dir.path().join("cvat.zip");
    assert!(export_as("cvat", &state, &zip, &[]).contains("exported 2 frame(s)"));
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&zip).unwrap()).unwrap();
    assert!(archive.by_name("annotations.xml").is_ok());
    assert!(archive.by_name(&format!("images/{}.jpg", ids[0])).is_ok());
}

/// Issue 15, item 17: frames nobody has annotated yet, exported in every format, load in
/// the tool that checks it, with the label schema as their label set, or an empty one
/// when there is no schema (a YOLO `names:` with nothing after it made datumaro refuse
/// the whole dataset).
#[test]
fn an_export_with_no_annotations_yet_loads_in_every_checker_with_or_without_a_schema() {
    let dir = tempfile::tempdir().unwrap();
    for schema in [&[][..], &["person", "car"][..]] {
        let state = dir.path().join(format!("state-{}", schema.len()));
        let store = Store::open(&state).unwrap();
        consent_for_gate(&store);
        let frame = anonymized("face_trackingjs_group3.jpg", 1);
        assert!(matches!(
            store.put_frames(&[(&frame, serde_json::json!({}))], NoConsent::Drop).unwrap()[0],
            Stored::Kept { .. }
        ));
        let labels: Vec<store::Label> = schema
            .iter()
            .map(|name| store::Label {
                name: (*name).into(),
                color: "#3b82f6".into(),
                shape: "any".into(),
                attributes: Vec::new(),
                instructions: String::new(),
                example: None,
            })
            .collect();
        store.set_labels(&labels, "steward").unwrap();
        drop(store);
        let mut sorted: Vec<&str> = schema.to_vec();
        sorted.sort();
        let want = |labels: &[&str]| serde_json::json!({ "items": 1, "images": 1, "shapes": 0, "labels": labels });
        let case = format!("schema {schema:?}");
        let out = |format: &str| {
            let out = dir.path().join(format!("{format}-{}", schema.len()));
            let said = export_as(format, &state, &out, &[]);
            assert!(said.contains("exported 1 frame(s), 0 annotation(s)"), "{case} {format}: {said}");
            out
        };

        let coco = out("coco");
        assert_eq!(
            pycocotools(&coco),
            serde_json::json!({ "images": 1, "annotations": 0, "categories": sorted }),
            "{case}"
        );
        assert_eq!(datumaro(&coco, "coco_instances"), want(&sorted), "{case}");
        assert_eq!(datumaro(&out("yolo"), "yolo"), want(&sorted), "{case}");
        assert_eq!(datumaro(&out("cvat"), "cvat"), want(&sorted), "{case}");
        let mut voc: Vec<&str> = [&["background"][..], &sorted].concat();
        voc.sort();
        assert_eq!(datumaro(&out("voc"), "voc_detection"), want(&voc), "{case}");
        // datumaro has no Label Studio importer: the tasks and the labeling config parse,
        // the config passes the checks Label Studio makes on import (unique names, each
        // `toName` naming a tag) and it offers the schema's labels.
        let ls = out("labelstudio");
        let script = "import json, sys\nimport xml.etree.ElementTree as ET\n\
                      tasks = json.load(open(sys.argv[1] + '/tasks.json'))\n\
                      config = ET.parse(sys.argv[1] + '/labeling_config.xml').getroot()\n\
                      names = [t.get('name') for t in config.iter() if t.get('name')]\n\
                      assert len(set(names)) == len(names), names\n\
                      assert all(t.get('toName') in names for t in config.iter() if t.get('toName')), names\n\
                      print(json.dumps({'tasks': len(tasks), 'labels': sorted({l.get('value') for l in config.iter('Label')})}))";
        let run = Command::new(python()).args(["-c", script]).arg(&ls).output().unwrap();
        assert!(run.status.success(), "{case}: {}", String::from_utf8_lossy(&run.stderr));
        let read: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
        assert_eq!(read, serde_json::json!({ "tasks": 1, "labels": sorted }), "{case}");
    }
}

/// Issue 18: long work shows progress. Exports and access exports tell their caller after
/// each frame (the CLI draws a bar from it on a terminal), ending at all of them.
#[test]
fn exports_report_their_progress_frame_by_frame() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (_, ids) = fixture_store(&state);
    let store = Store::open(&state).unwrap();
    let request = dataset::Export {
        format: dataset::Format::Coco,
        filter: Default::default(),
        purpose: store::Purpose::Annotate,
        redactions: false,
        actor: "test".into(),
    };
    let mut seen = Vec::new();
    let mut sink = dataset::ZipSink::new(tempfile::tempfile().unwrap());
    let written =
        dataset::export_with_progress(&store, &request, &mut sink, &mut |done, total| seen.push((done, total)))
            .unwrap();
    assert_eq!(written.images, ids.len());
    assert_eq!(seen, (1..=ids.len()).map(|done| (done, ids.len())).collect::<Vec<_>>());

    // An access export too.
    seen.clear();
    let mut sink = dataset::ZipSink::new(tempfile::tempfile().unwrap());
    let n = dataset::access_export(&store, "gate", 0, i64::MAX / 2, "test", &mut sink, &mut |done, total| {
        seen.push((done, total))
    })
    .unwrap();
    assert_eq!(n, ids.len());
    assert_eq!(seen, (1..=ids.len()).map(|done| (done, ids.len())).collect::<Vec<_>>());

    // And an import: from 0 of all, one step an image, ending at all of them.
    seen.clear();
    let coco = dir.path().join("coco");
    dataset::export(&store, &request, &mut dataset::DirSink::new(&coco)).unwrap();
    let report = dataset::import_with_progress(
        &store,
        dataset::ImportFormat::Coco,
        &coco,
        "coco upload",
        "test",
        true,
        &mut |done, total| seen.push((done, total)),
    )
    .unwrap();
    assert_eq!(report.images, ids.len());
    let n = ids.len();
    assert_eq!(seen, (0..n).map(|done| (done, n)).chain([(n, n)]).collect::<Vec<_>>());
}
