//! CVAT for images 1.1: one `annotations.xml` with the task's labels (and each label's
//! attributes, typed from the values used) in `<meta>`, then an `<image>` per frame with
//! its `<box>`es and `<polygon>`s. Images go in `images/`, where CVAT's and datumaro's
//! importers look for them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use quick_xml::escape::escape;
use quick_xml::events::{BytesStart, Event};
use serde_json::{Map, Value};

use crate::{DatasetError, Geometry, Imported, Item, Meta, Shape, Sink, attribute_text, attribute_value, put, round};

/// Distinct label colours, as CVAT shows them.
pub(crate) const PALETTE: [&str; 10] =
    ["#3b82f6", "#ef4444", "#22c55e", "#f59e0b", "#a855f7", "#06b6d4", "#ec4899", "#84cc16", "#f97316", "#64748b"];

pub(crate) fn write(
    items: &[Item],
    meta: &Meta,
    labels: &[String],
    sink: &mut dyn Sink,
) -> Result<usize, DatasetError> {
    // Each label's attributes and the CVAT input type their values suit.
    let mut attributes: BTreeMap<&str, BTreeMap<&str, &'static str>> = BTreeMap::new();
    for shape in items.iter().flat_map(|i| &i.shapes) {
        for (name, value) in &shape.attributes {
            let kind = match value {
                Value::Bool(_) => "checkbox",
                Value::Number(_) => "number",
                _ => "text",
            };
            let slot = attributes.entry(&shape.label).or_default().entry(name).or_insert(kind);
            if *slot != kind {
                *slot = "text";
            }
        }
    }
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<annotations>\n  <version>1.1</version>\n");
    let _ = write!(
        xml,
        "  <meta>\n    <task>\n      <id>1</id>\n      <name>{}</name>\n      <size>{}</size>\n      <mode>annotation</mode>\n      <overlap>0</overlap>\n      <created>{created}</created>\n      <updated>{created}</updated>\n      <labels>\n",
        escape(&meta.name),
        items.len(),
        created = escape(&meta.created),
    );
    for (i, label) in labels.iter().enumerate() {
        let _ = write!(
            xml,
            "        <label>\n          <name>{}</name>\n          <color>{}</color>\n          <type>any</type>\n          <attributes>\n",
            escape(label),
            PALETTE[i % PALETTE.len()]
        );
        for (name, kind) in attributes.get(label.as_str()).into_iter().flatten() {
            let (default, values) = match *kind {
                "checkbox" => ("false", "false"),
                "number" => ("0", "0\n1000000\n1"),
                _ => ("", ""),
            };
            let _ = write!(
                xml,
                "            <attribute>\n              <name>{}</name>\n              <mutable>False</mutable>\n              <input_type>{kind}</input_type>\n              <default_value>{default}</default_value>\n              <values>{values}</values>\n            </attribute>\n",
                escape(*name)
            );
        }
        xml += "          </attributes>\n        </label>\n";
    }
    let _ = write!(xml, "      </labels>\n    </task>\n    <dumped>{}</dumped>\n  </meta>\n", escape(&meta.created));
    let mut count = 0;
    for (n, item) in items.iter().enumerate() {
        let _ = writeln!(
            xml,
            "  <image id=\"{n}\" name=\"{}\" width=\"{}\" height=\"{}\">",
            escape(&item.file_name),
            item.width,
            item.height
        );
        for shape in &item.shapes {
            let label = escape(&shape.label);
            match &shape.geometry {
                Geometry::Box([x1, y1, x2, y2]) => {
                    let _ = write!(
                        xml,
                        "    <box label=\"{label}\" source=\"manual\" occluded=\"0\" xtl=\"{x1:.2}\" ytl=\"{y1:.2}\" xbr=\"{x2:.2}\" ybr=\"{y2:.2}\" z_order=\"0\">"
                    );
                }
                Geometry::Polygon(points) => {
                    let points: Vec<String> = points.iter().map(|[x, y]| format!("{x:.2},{y:.2}")).collect();
                    let _ = write!(
                        xml,
                        "    <polygon label=\"{label}\" source=\"manual\" occluded=\"0\" points=\"{}\" z_order=\"0\">",
                        points.join(";")
                    );
                }
            }
            if !shape.attributes.is_empty() {
                xml += "\n";
                for (name, value) in &shape.attributes {
                    let _ = writeln!(
                        xml,
                        "      <attribute name=\"{}\">{}</attribute>",
                        escape(name),
                        escape(attribute_text(value))
                    );
                }
                xml += "    ";
            }
            xml += match shape.geometry {
                Geometry::Box(_) => "</box>\n",
                Geometry::Polygon(_) => "</polygon>\n",
            };
            count += 1;
        }
        xml += "  </image>\n";
    }
    xml += "</annotations>\n";
    put(sink, "annotations.xml", xml.as_bytes())?;
    Ok(count)
}

pub(crate) fn read(text: &str) -> Result<Vec<Imported>, String> {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut images = Vec::new();
    let mut image: Option<Imported> = None;
    let mut shape: Option<Shape> = None;
    // An attribute's name and its text so far: quick-xml reports entities apart.
    let mut attribute: Option<(String, String)> = None;
    let mut root = false;
    loop {
        let event = reader.read_event().map_err(|e| format!("at byte {}: {e}", reader.buffer_position()))?;
        match event {
            Event::Start(e) | Event::Empty(e) if !root => {
                if e.name().as_ref() != b"annotations" {
                    return Err("its root element is not <annotations>".into());
                }
                root = true;
            }
            Event::Start(e) => match e.name().as_ref() {
                b"image" => image = Some(start_image(&e)?),
                b"box" | b"polygon" => shape = Some(start_shape(&e)?),
                b"attribute" if shape.is_some() => attribute = Some((attr(&e, "name")?, String::new())),
                _ => {}
            },
            Event::Empty(e) => match e.name().as_ref() {
                b"image" => images.push(start_image(&e)?),
                b"box" | b"polygon" => {
                    let image = image.as_mut().ok_or("a shape is outside any <image>")?;
                    image.shapes.push(start_shape(&e)?);
                }
                _ => {}
            },
            Event::Text(t) => {
                if let Some((_, text)) = attribute.as_mut() {
                    text.push_str(&t.decode().map_err(|e| e.to_string())?);
                }
            }
            Event::GeneralRef(r) => {
                if let Some((_, text)) = attribute.as_mut() {
                    let name = r.decode().map_err(|e| e.to_string())?;
                    let resolved = match r.resolve_char_ref().map_err(|e| e.to_string())? {
                        Some(c) => c.to_string(),
                        None => quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| format!("`&{name};` is not an XML entity"))?
                            .to_owned(),
                    };
                    text.push_str(&resolved);
                }
            }
            Event::End(e) => match e.name().as_ref() {
                b"attribute" => {
                    if let (Some((name, text)), Some(shape)) = (attribute.take(), shape.as_mut()) {
                        shape.attributes.insert(name, attribute_value(&text));
                    }
                }
                b"box" | b"polygon" => {
                    let done = shape.take().ok_or("a shape closes twice")?;
                    image.as_mut().ok_or("a shape is outside any <image>")?.shapes.push(done);
                }
                b"image" => images.extend(image.take()),
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    if !root {
        return Err("it has no <annotations> element".into());
    }
    Ok(images)
}

fn attr(e: &BytesStart<'_>, name: &str) -> Result<String, String> {
    let a = e
        .try_get_attribute(name)
        .map_err(|err| err.to_string())?
        .ok_or_else(|| format!("<{}> has no `{name}`", String::from_utf8_lossy(e.name().as_ref())))?;
    Ok(a.unescape_value().map_err(|err| err.to_string())?.into_owned())
}

fn number(e: &BytesStart<'_>, name: &str) -> Result<f64, String> {
    let text = attr(e, name)?;
    text.parse::<f64>().map(round).map_err(|_| format!("`{name}` is `{text}`, not a number"))
}

fn start_image(e: &BytesStart<'_>) -> Result<Imported, String> {
    let id = attr(e, "id").ok().and_then(|id| id.parse().ok());
    Ok(Imported { id, file_name: attr(e, "name")?, shapes: Vec::new() })
}

fn start_shape(e: &BytesStart<'_>) -> Result<Shape, String> {
    let label = attr(e, "label")?;
    let geometry = if e.name().as_ref() == b"box" {
        Geometry::Box([number(e, "xtl")?, number(e, "ytl")?, number(e, "xbr")?, number(e, "ybr")?])
    } else {
        let text = attr(e, "points")?;
        let points = text
            .split(';')
            .map(|p| {
                let (x, y) = p.split_once(',')?;
                Some([round(x.trim().parse().ok()?), round(y.trim().parse().ok()?)])
            })
            .collect::<Option<Vec<_>>>()
            .filter(|p| p.len() >= 3)
            .ok_or_else(|| format!("polygon points `{text}` are not `x,y;x,y;x,y...`"))?;
        Geometry::Polygon(points)
    };
    Ok(Shape { label, geometry, attributes: Map::new() })
}
