//! Ultralytics YOLO detect layout: `images/train/`, a `labels/train/<stem>.txt` per image
//! (class and normalised centre and size per box; polygons as their boxes) and
//! `data.yaml` naming the classes from 0.

use crate::{DatasetError, Item, Meta, Sink, put};

pub(crate) fn write(
    items: &[Item],
    meta: &Meta,
    labels: &[String],
    sink: &mut dyn Sink,
) -> Result<usize, DatasetError> {
    let mut count = 0;
    for item in items {
        let (w, h) = (f64::from(item.width), f64::from(item.height));
        let mut lines = String::new();
        for shape in &item.shapes {
            let class = labels.iter().position(|n| *n == shape.label).expect("labels hold every label used");
            let Some([x1, y1, x2, y2]) = item.clipped(shape) else { continue };
            lines += &format!(
                "{class} {:.6} {:.6} {:.6} {:.6}\n",
                (x1 + x2) / 2.0 / w,
                (y1 + y2) / 2.0 / h,
                (x2 - x1) / w,
                (y2 - y1) / h
            );
            count += 1;
        }
        put(sink, &format!("labels/train/{}.txt", stem(&item.file_name)), lines.as_bytes())?;
    }
    let mut yaml = format!(
        "# {} ({}), written by obscura export.\npath: .\ntrain: images/train\nval: images/train\nnames:{}\n",
        meta.name,
        meta.created,
        // With no labels yet, an empty map: a bare `names:` is null, and readers refuse it.
        if labels.is_empty() { " {}" } else { "" }
    );
    for (i, name) in labels.iter().enumerate() {
        // JSON strings are valid YAML scalars, quoting included.
        yaml += &format!("  {i}: {}\n", serde_json::Value::from(name.as_str()));
    }
    put(sink, "data.yaml", yaml.as_bytes())?;
    Ok(count)
}

pub(crate) fn stem(file_name: &str) -> &str {
    file_name.rsplit_once('.').map_or(file_name, |(stem, _)| stem)
}
