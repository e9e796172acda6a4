//! Pascal VOC: an `Annotations/<stem>.xml` per image with integer pixel boxes (polygons
//! as their boxes), `JPEGImages/`, `ImageSets/Main/default.txt` listing the images, and
//! `labelmap.txt` naming the labels, without which VOC readers assume the 20 VOC classes.

use std::fmt::Write as _;

use quick_xml::escape::escape;

use crate::yolo::stem;
use crate::{DatasetError, Item, Meta, Sink, attribute_text, put};

pub(crate) fn write(
    items: &[Item],
    meta: &Meta,
    labels: &[String],
    sink: &mut dyn Sink,
) -> Result<usize, DatasetError> {
    let mut count = 0;
    for item in items {
        let mut xml = format!(
            "<annotation>\n  <folder>JPEGImages</folder>\n  <filename>{}</filename>\n  <source>\n    <database>{}</database>\n    <annotation>camera {}</annotation>\n  </source>\n  <size>\n    <width>{}</width>\n    <height>{}</height>\n    <depth>3</depth>\n  </size>\n  <segmented>0</segmented>\n",
            escape(&item.file_name),
            escape(&meta.name),
            escape(&item.camera),
            item.width,
            item.height
        );
        for shape in &item.shapes {
            // VOC boxes are whole pixels.
            let Some([x1, y1, x2, y2]) = item.clipped(shape).map(|b| b.map(f64::round)) else { continue };
            let _ = write!(
                xml,
                "  <object>\n    <name>{}</name>\n    <pose>Unspecified</pose>\n    <truncated>0</truncated>\n    <difficult>0</difficult>\n    <occluded>0</occluded>\n    <bndbox>\n      <xmin>{x1}</xmin>\n      <ymin>{y1}</ymin>\n      <xmax>{x2}</xmax>\n      <ymax>{y2}</ymax>\n    </bndbox>\n",
                escape(&shape.label)
            );
            if !shape.attributes.is_empty() {
                xml += "    <attributes>\n";
                for (name, value) in &shape.attributes {
                    let _ = write!(
                        xml,
                        "      <attribute>\n        <name>{}</name>\n        <value>{}</value>\n      </attribute>\n",
                        escape(name),
                        escape(attribute_text(value))
                    );
                }
                xml += "    </attributes>\n";
            }
            xml += "  </object>\n";
            count += 1;
        }
        xml += "</annotation>\n";
        put(sink, &format!("Annotations/{}.xml", stem(&item.file_name)), xml.as_bytes())?;
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
