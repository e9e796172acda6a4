//! CVAT for images 1.1: one `annotations.xml` with the task's labels (and each label's
//! attributes, typed from the values used) in `<meta>`, then an `<image>` per frame with
//! its `<box>`es and `<polygon>`s. Images go in `images/`, where CVAT's and datumaro's
//! importers look for them.

use std::collections::BTreeMap;

use quick_xml::events::{BytesDecl, BytesStart, BytesText, Event};
use serde_json::{Map, Value};

use crate::xml::{XmlWriter, element, text};
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
    let xml = crate::xml::document(|w| {
        w.write_event(Event::Decl(BytesDecl::new("1.0", Some("utf-8"), None)))?;
        element(w, "annotations", |w| {
            text(w, "version", "1.1")?;
            element(w, "meta", |w| {
                element(w, "task", |w| task(w, items, meta, labels, &attributes))?;
                text(w, "dumped", &meta.created)
            })?;
            for (n, item) in items.iter().enumerate() {
                w.create_element("image")
                    .with_attributes([
                        ("id", n.to_string().as_str()),
                        ("name", &item.file_name),
                        ("width", &item.width.to_string()),
                        ("height", &item.height.to_string()),
                    ])
                    .write_inner_content(|w| item.shapes.iter().try_for_each(|shape| shape_element(w, shape)))?;
            }
            Ok(())
        })
    });
    put(sink, "annotations.xml", &xml)?;
    Ok(items.iter().map(|i| i.shapes.len()).sum())
}

/// The task's `<meta>`: its name, size and dates, and each label with its attributes.
fn task(
    w: &mut XmlWriter,
    items: &[Item],
    meta: &Meta,
    labels: &[String],
    attributes: &BTreeMap<&str, BTreeMap<&str, &'static str>>,
) -> std::io::Result<()> {
    text(w, "id", "1")?;
    text(w, "name", &meta.name)?;
    text(w, "size", &items.len().to_string())?;
    text(w, "mode", "annotation")?;
    text(w, "overlap", "0")?;
    text(w, "created", &meta.created)?;
    text(w, "updated", &meta.created)?;
    element(w, "labels", |w| {
        labels.iter().enumerate().try_for_each(|(i, label)| {
            element(w, "label", |w| {
                text(w, "name", label)?;
                text(w, "color", PALETTE[i % PALETTE.len()])?;
                text(w, "type", "any")?;
                element(w, "attributes", |w| {
                    attributes.get(label.as_str()).into_iter().flatten().try_for_each(|(name, kind)| {
                        let (default, values) = match *kind {
                            "checkbox" => ("false", "false"),
                            "number" => ("0", "0\n1000000\n1"),
                            _ => ("", ""),
                        };
                        element(w, "attribute", |w| {
                            text(w, "name", name)?;
                            text(w, "mutable", "False")?;
                            text(w, "input_type", kind)?;
                            text(w, "default_value", default)?;
                            text(w, "values", values)
                        })
                    })
                })
            })
        })
    })
}

/// A `<box>` or `<polygon>` with its attributes inside.
fn shape_element(w: &mut XmlWriter, shape: &Shape) -> std::io::Result<()> {
    let element = match &shape.geometry {
        Geometry::Box([x1, y1, x2, y2]) => w.create_element("box").with_attributes([
            ("label", shape.label.as_str()),
            ("source", "manual"),
            ("occluded", "0"),
            ("xtl", &format!("{x1:.2}")),
            ("ytl", &format!("{y1:.2}")),
            ("xbr", &format!("{x2:.2}")),
            ("ybr", &format!("{y2:.2}")),
            ("z_order", "0"),
        ]),
        Geometry::Polygon(points) => {
            let points: Vec<String> = points.iter().map(|[x, y]| format!("{x:.2},{y:.2}")).collect();
            w.create_element("polygon").with_attributes([
                ("label", shape.label.as_str()),
                ("source", "manual"),
                ("occluded", "0"),
                ("points", &points.join(";")),
                ("z_order", "0"),
            ])
        }
    };
    if shape.attributes.is_empty() {
        // `<box ...></box>` on one line, as CVAT writes it.
        element.write_text_content(BytesText::new(""))?;
    } else {
        element.write_inner_content(|w| {
            shape.attributes.iter().try_for_each(|(name, value)| {
                w.create_element("attribute")
                    .with_attribute(("name", name.as_str()))
                    .write_text_content(BytesText::new(&attribute_text(value)))
                    .map(drop)
            })
        })?;
    }
    Ok(())
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
