//! Pascal VOC: an `Annotations/<stem>.xml` per image with integer pixel boxes (polygons
//! as their boxes), `JPEGImages/`, `ImageSets/Main/default.txt` listing the images, and
//! `labelmap.txt` naming the labels, without which VOC readers assume the 20 VOC classes.

use std::fmt::Write as _;

use crate::xml::{XmlWriter, element, text};
use crate::yolo::stem;
use crate::{DatasetError, Item, Meta, Shape, Sink, attribute_text, put};

pub(crate) fn write(
    items: &[Item],
    meta: &Meta,
    labels: &[String],
    sink: &mut dyn Sink,
) -> Result<usize, DatasetError> {
    let mut count = 0;
    for item in items {
        let boxes: Vec<(&Shape, [f64; 4])> = item
            .shapes
            .iter()
            // VOC boxes are whole pixels.
            .filter_map(|shape| Some((shape, item.clipped(shape)?.map(f64::round))))
            .collect();
        count += boxes.len();
        let xml = crate::xml::document(|w| {
            element(w, "annotation", |w| {
                text(w, "folder", "JPEGImages")?;
                text(w, "filename", &item.file_name)?;
                element(w, "source", |w| {
                    text(w, "database", &meta.name)?;
                    text(w, "annotation", &format!("camera {}", item.camera))
                })?;
                element(w, "size", |w| {
                    text(w, "width", &item.width.to_string())?;
                    text(w, "height", &item.height.to_string())?;
                    text(w, "depth", "3")
                })?;
                text(w, "segmented", "0")?;
                boxes.iter().try_for_each(|(shape, bbox)| object(w, shape, *bbox))
            })
        });
        put(sink, &format!("Annotations/{}.xml", stem(&item.file_name)), &xml)?;
    }
    let list: String = items.iter().map(|i| format!("{}\n", stem(&i.file_name))).collect();
    put(sink, "ImageSets/Main/default.txt", list.as_bytes())?;
    let mut labelmap = String::from("# label:color_rgb:parts:actions\nbackground:0,0,0::\n");
    for (i, label) in labels.iter().enumerate() {
        let hex = crate::cvat::PALETTE[i % crate::cvat::PALETTE.len()];
        let rgb = u32::from_str_radix(&hex[1..], 16).expect("palette colours are hex");
        let _ = writeln!(labelmap, "{label}:{},{},{}::", rgb >> 16, (rgb >> 8) & 0xff, rgb & 0xff);
    }
    put(sink, "labelmap.txt", labelmap.as_bytes())?;
    Ok(count)
}

/// One `<object>`: its label, box and attributes.
fn object(w: &mut XmlWriter, shape: &Shape, [x1, y1, x2, y2]: [f64; 4]) -> std::io::Result<()> {
    element(w, "object", |w| {
        text(w, "name", &shape.label)?;
        text(w, "pose", "Unspecified")?;
        text(w, "truncated", "0")?;
        text(w, "difficult", "0")?;
        text(w, "occluded", "0")?;
        element(w, "bndbox", |w| {
            text(w, "xmin", &x1.to_string())?;
            text(w, "ymin", &y1.to_string())?;
            text(w, "xmax", &x2.to_string())?;
            text(w, "ymax", &y2.to_string())
        })?;
        if shape.attributes.is_empty() {
            return Ok(());
        }
        element(w, "attributes", |w| {
            shape.attributes.iter().try_for_each(|(name, value)| {
                element(w, "attribute", |w| {
                    text(w, "name", name)?;
                    text(w, "value", &attribute_text(value))
                })
            })
        })
    })
}
