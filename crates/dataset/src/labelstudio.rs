//! Label Studio: `tasks.json` (one task per image, people's shapes as an annotation and
//! machine pre-labels as `predictions`, coordinates in percent) and `labeling_config.xml`
//! for the project's labeling interface. Image URLs use Label Studio's local-files
//! route, so serving the export directory as its document root shows the images.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::{DatasetError, Geometry, Item, Meta, Shape, Sink, put};

pub(crate) fn write(
    items: &[Item],
    _meta: &Meta,
    labels: &[String],
    sink: &mut dyn Sink,
) -> Result<usize, DatasetError> {
    let mut count = 0;
    let mut tasks = Vec::new();
    for item in items {
        let mut task = json!({
            "id": item.id,
            "data": {
                "image": format!("/data/local-files/?d=images/{}", item.file_name),
                "frame": item.id, "camera": item.camera, "captured_at": item.captured_at,
            },
        });
        if !item.shapes.is_empty() {
            let result: Vec<Value> = item.shapes.iter().enumerate().map(|(n, s)| region(item, n, s, None)).collect();
            count += result.len();
            task["annotations"] = json!([{ "result": result, "ground_truth": false }]);
        }
        if !item.predictions.is_empty() {
            let models: BTreeSet<&str> = item.predictions.iter().map(|p| p.model.as_str()).collect();
            let result: Vec<Value> = item
                .predictions
                .iter()
                .enumerate()
                .map(|(n, p)| {
                    let shape = Shape {
                        label: p.label.clone(),
                        geometry: Geometry::Box(p.bbox),
                        attributes: Default::default(),
                    };
                    region(item, n, &shape, Some(p.score))
                })
                .collect();
            let score = item.predictions.iter().map(|p| p.score).sum::<f64>() / item.predictions.len() as f64;
            task["predictions"] = json!([{
                "model_version": models.into_iter().collect::<Vec<_>>().join(", "),
                "score": (score * 1000.0).round() / 1000.0,
                "result": result,
            }]);
        }
        tasks.push(task);
    }
    let text = serde_json::to_string_pretty(&tasks).expect("JSON values serialize");
    put(sink, "tasks.json", text.as_bytes())?;
    let config = crate::xml::document(|w| {
        w.create_element("View").write_inner_content(|w| {
            w.create_element("Image")
                .with_attributes([("name", "image"), ("value", "$image"), ("zoom", "true")])
                .write_empty()?;
            for (tag, name) in [("RectangleLabels", "label"), ("PolygonLabels", "polygon")] {
                w.create_element(tag).with_attributes([("name", name), ("toName", "image")]).write_inner_content(
                    |w| {
                        for (i, label) in labels.iter().enumerate() {
                            let colour = crate::cvat::PALETTE[i % crate::cvat::PALETTE.len()];
                            w.create_element("Label")
                                .with_attributes([("value", label.as_str()), ("background", colour)])
                                .write_empty()?;
                        }
                        Ok(())
                    },
                )?;
            }
            Ok(())
        })?;
        Ok(())
    });
    put(sink, "labeling_config.xml", &config)?;
    Ok(count)
}

/// One result region, in percent of the image.
fn region(item: &Item, n: usize, shape: &Shape, score: Option<f64>) -> Value {
    let (w, h) = (f64::from(item.width), f64::from(item.height));
    let pct = |v: f64, of: f64| (v / of * 100.0 * 1e4).round() / 1e4;
    let (kind, from, value) = match &shape.geometry {
        Geometry::Box([x1, y1, x2, y2]) => (
            "rectanglelabels",
            "label",
            json!({
                "x": pct(*x1, w), "y": pct(*y1, h), "width": pct(x2 - x1, w), "height": pct(y2 - y1, h),
                "rotation": 0, "rectanglelabels": [shape.label],
            }),
        ),
        Geometry::Polygon(points) => (
            "polygonlabels",
            "polygon",
            json!({
                "points": points.iter().map(|[x, y]| [pct(*x, w), pct(*y, h)]).collect::<Vec<_>>(),
                "closed": true, "polygonlabels": [shape.label],
            }),
        ),
    };
    let mut region = json!({
        "id": format!("{}{}-{n}", if score.is_some() { "p" } else { "" }, item.id), "type": kind, "from_name": from, "to_name": "image",
        "original_width": item.width, "original_height": item.height, "image_rotation": 0, "value": value,
    });
    if let Some(score) = score {
        region["score"] = json!((score * 1000.0).round() / 1000.0);
    }
    region
}
