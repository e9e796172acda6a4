//! COCO 1.0 instances: `annotations/instances_default.json` (the name CVAT and datumaro
//! use), bbox `[x, y, w, h]`, polygons as segmentation, categories from 1.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::{DatasetError, Geometry, Imported, Item, Meta, Shape, Sink, put, round};

pub(crate) fn write(
    items: &[Item],
    meta: &Meta,
    labels: &[String],
    sink: &mut dyn Sink,
) -> Result<usize, DatasetError> {
    let category: BTreeMap<&str, usize> = labels.iter().enumerate().map(|(i, n)| (n.as_str(), i + 1)).collect();
    let mut annotations = Vec::new();
    for item in items {
        for shape in &item.shapes {
            let [x1, y1, x2, y2] = shape.geometry.bounds();
            let segmentation = match &shape.geometry {
                Geometry::Polygon(p) => json!([p.iter().flatten().collect::<Vec<_>>()]),
                Geometry::Box(_) => json!([]),
            };
            annotations.push(json!({
                "id": annotations.len() + 1,
                "image_id": item.id,
                "category_id": category[shape.label.as_str()],
                "bbox": [x1, y1, round(x2 - x1), round(y2 - y1)],
                "area": round(shape.geometry.area()),
                "iscrowd": 0,
                "segmentation": segmentation,
                "attributes": shape.attributes,
            }));
        }
    }
    let count = annotations.len();
    let doc = json!({
        "info": { "description": meta.name, "version": "1.0", "date_created": meta.created },
        "licenses": [],
        "images": items.iter().map(|i| json!({
            "id": i.id, "file_name": i.file_name, "width": i.width, "height": i.height,
            "date_captured": i.captured_at, "camera": i.camera,
        })).collect::<Vec<_>>(),
        "annotations": annotations,
        "categories": labels.iter().enumerate()
            .map(|(i, n)| json!({ "id": i + 1, "name": n, "supercategory": "" }))
            .collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&doc).expect("JSON values serialize");
    put(sink, "annotations/instances_default.json", text.as_bytes())?;
    Ok(count)
}

pub(crate) fn read(text: &str) -> Result<Vec<Imported>, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let list = |key: &str| doc[key].as_array().ok_or_else(|| format!("it has no `{key}` list"));
    let categories: BTreeMap<i64, &str> =
        list("categories")?.iter().filter_map(|c| Some((c["id"].as_i64()?, c["name"].as_str()?))).collect();
    let mut images: Vec<Imported> = Vec::new();
    let mut index = BTreeMap::new();
    for image in list("images")? {
        let id = image["id"].as_i64().ok_or("an image has no integer `id`")?;
        index.insert(id, images.len());
        let file_name = image["file_name"].as_str().unwrap_or_default().to_owned();
        images.push(Imported { id: Some(id), file_name, shapes: Vec::new() });
    }
    for (n, a) in list("annotations")?.iter().enumerate() {
        let at = |what: &str| format!("annotation {} (#{n}) {what}", a["id"]);
        let image = a["image_id"].as_i64().and_then(|id| index.get(&id)).ok_or_else(|| at("names no image"))?;
        let label = a["category_id"]
            .as_i64()
            .and_then(|c| categories.get(&c))
            .ok_or_else(|| at("names no category"))?
            .to_string();
        let polygon = a["segmentation"].as_array().and_then(|s| s.first()).and_then(Value::as_array);
        let geometry = match polygon {
            Some(p) if p.len() >= 6 && p.len().is_multiple_of(2) => {
                // Every value a number: dropping one would pair x with the next y (and
                // an odd count panicked, found by the `coco` fuzz target).
                let values: Vec<f64> = p
                    .iter()
                    .map(Value::as_f64)
                    .collect::<Option<_>>()
                    .ok_or_else(|| at("has a segmentation polygon with a value that is not a number"))?;
                Geometry::Polygon(values.chunks_exact(2).map(|c| [round(c[0]), round(c[1])]).collect())
            }
            _ => {
                let b: Vec<f64> =
                    a["bbox"].as_array().ok_or_else(|| at("has no bbox"))?.iter().filter_map(Value::as_f64).collect();
                let [x, y, w, h] = b[..].try_into().map_err(|_| at("has a bbox that is not [x, y, w, h]"))?;
                Geometry::Box([round(x), round(y), round(x + w), round(y + h)])
            }
        };
        let attributes = a["attributes"].as_object().cloned().unwrap_or_default();
        images[*image].shapes.push(Shape { label, geometry, attributes });
    }
    Ok(images)
}
