//! Snapshots of every format on a small fixed dataset, and round trips through the
//! formats that read back.

use serde_json::{Map, json};

use super::*;

fn attributes(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

/// Two frames: a box with attributes and a polygon, one label outside the schema, a
/// pre-label; and a frame with only a pre-label.
fn fixture() -> (Vec<Item>, Meta) {
    let items = vec![
        Item {
            id: 7,
            file_name: "7.jpg".into(),
            width: 640,
            height: 480,
            camera: "gate".into(),
            captured_at: "2026-11-24T08:00:00.000Z".into(),
            shapes: vec![
                Shape {
                    label: "car".into(),
                    geometry: Geometry::Box([10.5, 20.25, 110.0, 90.75]),
                    attributes: attributes(json!({ "colour": "red & blue", "parked": true, "doors": 4 })),
                },
                Shape {
                    label: "person".into(),
                    geometry: Geometry::Polygon(vec![[300.0, 100.0], [340.0, 100.0], [330.0, 220.5]]),
                    attributes: Map::new(),
                },
                Shape {
                    label: "sign <stop>".into(),
                    geometry: Geometry::Box([0.0, 0.0, 5.0, 5.0]),
                    attributes: Map::new(),
                },
            ],
            predictions: vec![Prediction {
                label: "car".into(),
                bbox: [12.0, 21.0, 108.0, 90.0],
                score: 0.8123,
                model: "nanodet_g416_coco.onnx".into(),
            }],
        },
        Item {
            id: 9,
            file_name: "9.jpg".into(),
            width: 320,
            height: 240,
            camera: "yard".into(),
            captured_at: "2026-11-24T08:00:01.500Z".into(),
            shapes: vec![],
            predictions: vec![Prediction {
                label: "license_plate".into(),
                bbox: [100.0, 100.0, 140.0, 112.0],
                score: 0.5,
                model: "plate_det.onnx".into(),
            }],
        },
    ];
    let meta = Meta {
        name: "Obscura export".into(),
        created: "2026-11-24T09:00:00.000Z".into(),
        labels: vec!["person".into(), "car".into(), "bicycle".into()],
    };
    (items, meta)
}

fn written(format: Format) -> (MemorySink, Written) {
    let (items, meta) = fixture();
    let mut sink = MemorySink::default();
    let written = write(format, &items, &meta, &mut sink, &mut |i| Ok(format!("jpeg {}", i.id).into_bytes())).unwrap();
    (sink, written)
}

/// Every file but the images, as one text.
fn text(sink: &MemorySink) -> String {
    sink.files
        .iter()
        .filter(|(path, _)| !path.ends_with(".jpg"))
        .map(|(path, bytes)| format!("=== {path}\n{}", String::from_utf8_lossy(bytes)))
        .collect()
}

#[test]
fn every_format_matches_its_snapshot() {
    for format in Format::ALL {
        let (sink, written) = written(format);
        assert_eq!(written.images, 2);
        let images: Vec<&String> = sink.files.keys().filter(|p| p.ends_with(".jpg")).collect();
        assert_eq!(images.len(), 2, "{format:?}: {images:?}");
        assert_eq!(sink.files[&format.image_path(&fixture().0[0])], b"jpeg 7");
        insta::assert_snapshot!(format.name(), text(&sink));
    }
}

#[test]
fn counts_are_what_each_format_can_hold() {
    assert_eq!(written(Format::Coco).1.shapes, 3);
    assert_eq!(written(Format::Cvat).1.shapes, 3);
    assert_eq!(written(Format::Yolo).1.shapes, 3);
    assert_eq!(written(Format::Voc).1.shapes, 3);
    let ls = written(Format::LabelStudio).1;
    assert_eq!((ls.shapes, ls.predictions), (3, 2));
}

#[test]
fn class_ids_follow_the_schema_then_the_others() {
    let (sink, _) = written(Format::Yolo);
    let yaml = String::from_utf8_lossy(&sink.files["data.yaml"]).into_owned();
    assert!(yaml.contains("  0: \"person\"\n  1: \"car\"\n  2: \"bicycle\"\n  3: \"sign <stop>\"\n"), "{yaml}");
    let labels = String::from_utf8_lossy(&sink.files["labels/train/7.txt"]).into_owned();
    assert!(labels.starts_with("1 0.094141 0.115625 0.155469 0.146875\n0 "), "{labels}");
}

/// What reads back is what was written: same images, labels, geometry and attributes.
#[test]
fn coco_and_cvat_read_back_what_they_wrote() {
    let (items, _) = fixture();
    for (format, import) in [(Format::Coco, ImportFormat::Coco), (Format::Cvat, ImportFormat::Cvat)] {
        let (sink, _) = written(format);
        let dir = tempfile::tempdir().unwrap();
        let mut out = DirSink::new(dir.path());
        for (path, bytes) in &sink.files {
            out.put(path, bytes).unwrap();
        }
        let read = read(import, dir.path()).unwrap();
        assert_eq!(read.len(), 2, "{format:?}");
        for (got, want) in read.iter().zip(&items) {
            assert_eq!(got.file_name, want.file_name, "{format:?}");
            assert_eq!(got.shapes, want.shapes, "{format:?}");
        }
    }
}

#[test]
fn a_zip_holds_the_same_files() {
    let (items, meta) = fixture();
    let mut sink = ZipSink::new(std::io::Cursor::new(Vec::new()));
    write(Format::Cvat, &items, &meta, &mut sink, &mut |_| Ok(vec![0xff, 0xd8])).unwrap();
    let bytes = sink.finish().unwrap().into_inner();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut names: Vec<String> =
        (0..zip.len()).map(|i| zip.by_index(i).unwrap().name().unwrap().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["annotations.xml", "images/7.jpg", "images/9.jpg"]);
    assert_eq!(zip.by_name("images/7.jpg").unwrap().compression(), zip::CompressionMethod::Stored);
}

#[test]
fn broken_files_are_named_with_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let xml = dir.path().join("annotations.xml");
    std::fs::write(
        &xml,
        "<annotations><image id=\"0\" name=\"1.jpg\"><box label=\"car\" xtl=\"a\"/></image></annotations>",
    )
    .unwrap();
    let e = read(ImportFormat::Cvat, &xml).unwrap_err().to_string();
    assert!(e.contains("annotations.xml is not a CVAT 1.1 dataset") && e.contains("`xtl` is `a`"), "{e}");
    let json = dir.path().join("c.json");
    std::fs::write(&json, r#"{"images": [{"id": 1, "file_name": "1.jpg"}], "annotations": [{"id": 3, "image_id": 2, "category_id": 1, "bbox": [0,0,1,1]}], "categories": []}"#).unwrap();
    let e = read(ImportFormat::Coco, &json).unwrap_err().to_string();
    assert!(e.contains("annotation 3 (#0) names no image"), "{e}");
    // Found by the `coco` fuzz target: a polygon of six values, one of them not a number,
    // panicked (index out of bounds) instead of being refused.
    std::fs::write(&json, r#"{"images": [{"id": 1, "file_name": "1.jpg"}], "annotations": [{"id": 3, "image_id": 1, "category_id": 1, "bbox": [0,0,1,1], "segmentation": [[1, 2, "3", 4, 5, 6]]}], "categories": [{"id": 1, "name": "car"}]}"#).unwrap();
    let e = read(ImportFormat::Coco, &json).unwrap_err().to_string();
    assert!(e.contains("annotation 3 (#0) has a segmentation polygon with a value that is not a number"), "{e}");
    let e = read(ImportFormat::Coco, &dir.path().join("missing.json")).unwrap_err().to_string();
    assert!(e.starts_with("cannot read") && e.contains("missing.json"), "{e}");
}

#[test]
fn store_json_converts_both_ways() {
    let v = json!({"type": "polygon", "label": "person", "points": [1, 2, 3.333, 4, 5, 6], "attributes": {"a": 1}});
    let shape = Shape::from_json(&v).unwrap();
    assert_eq!(shape.geometry, Geometry::Polygon(vec![[1.0, 2.0], [3.33, 4.0], [5.0, 6.0]]));
    assert_eq!(Shape::from_json(&shape.to_json()).unwrap(), shape);
    assert_eq!(Shape::from_json(&json!({"type": "box", "label": "x", "points": [1, 2, 3]})), None);
    // A box drawn right to left is normalised.
    let b = Shape::from_json(&json!({"type": "box", "label": "x", "points": [30, 40, 10, 20]})).unwrap();
    assert_eq!(b.geometry, Geometry::Box([10.0, 20.0, 30.0, 40.0]));
}

/// Issue 15, item 17: with no schema and nothing drawn, YOLO names an empty map of
/// classes, not a bare `names:` (null), which readers refuse; the XML formats hold an
/// empty label list.
#[test]
fn no_labels_yet_is_an_empty_label_set_in_every_format() {
    let (mut items, mut meta) = fixture();
    meta.labels.clear();
    for item in &mut items {
        item.shapes.clear();
        item.predictions.clear();
    }
    let files = |format| {
        let mut sink = MemorySink::default();
        write(format, &items, &meta, &mut sink, &mut |_| Ok(Vec::new())).unwrap();
        sink.files
    };
    let yaml = String::from_utf8(files(Format::Yolo)["data.yaml"].clone()).unwrap();
    assert!(yaml.ends_with("\nnames: {}\n"), "{yaml}");
    let cvat = String::from_utf8(files(Format::Cvat)["annotations.xml"].clone()).unwrap();
    assert!(cvat.contains("      <labels>\n      </labels>\n"), "{cvat}");
    let coco: Value = serde_json::from_slice(&files(Format::Coco)["annotations/instances_default.json"]).unwrap();
    assert_eq!(coco["categories"], json!([]));
}
