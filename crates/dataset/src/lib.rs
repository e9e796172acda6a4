//! Dataset formats: what leaves the box must open, unchanged, in the tools dataset
//! engineers use. Writes COCO 1.0, CVAT for images 1.1, Ultralytics YOLO, Pascal VOC and
//! Label Studio tasks; reads COCO and CVAT back, for annotations merged after an expert
//! pass elsewhere.
//!
//! Invariant: the formats ([`write`], [`read`]) know nothing of storage or consent; they
//! take [`Item`]s and each image's bytes. [`export`] and [`import`] are the one bridge to
//! the store: they pick the frames a consent lets leave, feed the stored, anonymized
//! JPEGs and audit what went. Output goes to a [`Sink`], a directory or a zip, so the
//! command line and the web API write the same files.

mod coco;
mod cvat;
mod exchange;
mod labelstudio;
mod sink;
mod voc;
mod xml;
mod yolo;

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Map, Value, json};

pub use exchange::{Export, ImportReport, access_export, export, export_with_progress, import, import_with_progress};
pub use sink::{DirSink, MemorySink, Sink, ZipSink};

/// A dataset format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// COCO 1.0 instances JSON, images in `images/`.
    Coco,
    /// CVAT for images 1.1: `annotations.xml`, images in `images/`.
    Cvat,
    /// Ultralytics YOLO detect layout: `images/train/`, `labels/train/`, `data.yaml`.
    Yolo,
    /// Pascal VOC: `Annotations/`, `JPEGImages/`, `ImageSets/Main/default.txt`, `labelmap.txt`.
    Voc,
    /// Label Studio tasks JSON with pre-labels as `predictions`, and the labeling config.
    LabelStudio,
}

impl Format {
    pub const ALL: [Format; 5] = [Format::Coco, Format::Cvat, Format::Yolo, Format::Voc, Format::LabelStudio];

    pub fn name(self) -> &'static str {
        match self {
            Format::Coco => "coco",
            Format::Cvat => "cvat",
            Format::Yolo => "yolo",
            Format::Voc => "voc",
            Format::LabelStudio => "labelstudio",
        }
    }

    /// Where an item's image goes, relative to the dataset's root.
    pub fn image_path(self, item: &Item) -> String {
        match self {
            Format::Coco | Format::Cvat | Format::LabelStudio => format!("images/{}", item.file_name),
            Format::Yolo => format!("images/train/{}", item.file_name),
            Format::Voc => format!("JPEGImages/{}", item.file_name),
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Format::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| format!("`{s}` is not a dataset format: use coco, cvat, yolo, voc or labelstudio"))
    }
}

/// One image and what is labelled on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The frame's id on the box; also the image id in COCO.
    pub id: i64,
    pub file_name: String,
    pub width: u32,
    pub height: u32,
    pub camera: String,
    /// Capture time, RFC 3339.
    pub captured_at: String,
    /// What people drew (or accepted): the ground truth.
    pub shapes: Vec<Shape>,
    /// Machine proposals not yet confirmed; only Label Studio carries them, as predictions.
    pub predictions: Vec<Prediction>,
}

/// A labelled region.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub label: String,
    pub geometry: Geometry,
    pub attributes: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Geometry {
    /// x1, y1, x2, y2 in pixels.
    Box([f64; 4]),
    /// Vertices in pixels, at least three.
    Polygon(Vec<[f64; 2]>),
}

/// A machine proposal with the model that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub label: String,
    /// x1, y1, x2, y2 in pixels.
    pub bbox: [f64; 4],
    pub score: f64,
    pub model: String,
}

impl Item {
    /// A shape's bounding box cut to the image, or None if nothing of it is inside: the
    /// box-only formats (YOLO, VOC) cannot hold coordinates outside the image.
    pub fn clipped(&self, shape: &Shape) -> Option<[f64; 4]> {
        let (w, h) = (f64::from(self.width), f64::from(self.height));
        let [x1, y1, x2, y2] = shape.geometry.bounds();
        let b = [x1.clamp(0.0, w), y1.clamp(0.0, h), x2.clamp(0.0, w), y2.clamp(0.0, h)];
        (b[2] > b[0] && b[3] > b[1]).then_some(b)
    }
}

impl Geometry {
    /// The bounding box, x1, y1, x2, y2.
    pub fn bounds(&self) -> [f64; 4] {
        match self {
            Geometry::Box(b) => *b,
            Geometry::Polygon(points) => points.iter().fold(
                [f64::INFINITY, f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY],
                |[x1, y1, x2, y2], [x, y]| [x1.min(*x), y1.min(*y), x2.max(*x), y2.max(*y)],
            ),
        }
    }

    /// Area in square pixels (the polygon's own, not its box's).
    pub fn area(&self) -> f64 {
        match self {
            Geometry::Box([x1, y1, x2, y2]) => (x2 - x1).max(0.0) * (y2 - y1).max(0.0),
            Geometry::Polygon(p) => {
                let n = p.len();
                let twice: f64 = (0..n).map(|i| p[i][0] * p[(i + 1) % n][1] - p[(i + 1) % n][0] * p[i][1]).sum();
                twice.abs() / 2.0
            }
        }
    }
}

/// Coordinates are kept to 1/100 px, so a round trip through text formats is exact.
pub fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

impl Shape {
    /// A shape from the store's JSON: `{"type": "box", "label": L, "points": [x1, y1, x2,
    /// y2], "attributes": {..}}` or `{"type": "polygon", ..., "points": [x, y, x, y, ...]}`.
    /// None for anything else.
    pub fn from_json(v: &Value) -> Option<Shape> {
        let label = v["label"].as_str()?.to_owned();
        let points: Vec<f64> = v["points"].as_array()?.iter().map(Value::as_f64).collect::<Option<_>>()?;
        let geometry = match v["type"].as_str()? {
            "box" if points.len() == 4 => {
                let [x1, y1, x2, y2] = [points[0], points[1], points[2], points[3]].map(round);
                Geometry::Box([x1.min(x2), y1.min(y2), x1.max(x2), y1.max(y2)])
            }
            "polygon" if points.len() >= 6 && points.len().is_multiple_of(2) => {
                Geometry::Polygon(points.chunks(2).map(|p| [round(p[0]), round(p[1])]).collect())
            }
            _ => return None,
        };
        let attributes = v["attributes"].as_object().cloned().unwrap_or_default();
        Some(Shape { label, geometry, attributes })
    }

    /// The store's JSON for this shape.
    pub fn to_json(&self) -> Value {
        let (kind, points): (&str, Vec<f64>) = match &self.geometry {
            Geometry::Box(b) => ("box", b.to_vec()),
            Geometry::Polygon(p) => ("polygon", p.iter().flatten().copied().collect()),
        };
        json!({ "type": kind, "label": self.label, "points": points, "attributes": self.attributes })
    }
}

/// Names the dataset and fixes its timestamps, so the same frames give the same files.
#[derive(Debug, Clone)]
pub struct Meta {
    pub name: String,
    /// RFC 3339.
    pub created: String,
    /// The label schema's names, in order; class ids follow it, and labels used but not
    /// in it come after, sorted.
    pub labels: Vec<String>,
}

/// What a write produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Written {
    pub images: usize,
    pub shapes: usize,
    pub predictions: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("cannot read the image of frame {id}: {message}")]
    Image { id: i64, message: String },
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("{path} is not a {format} dataset: {message}")]
    Parse { path: String, format: &'static str, message: String },
}

/// Writes `items` as a `format` dataset into `sink`; `image` gives each item's JPEG.
pub fn write(
    format: Format,
    items: &[Item],
    meta: &Meta,
    sink: &mut dyn Sink,
    image: &mut dyn FnMut(&Item) -> Result<Vec<u8>, String>,
) -> Result<Written, DatasetError> {
    let labels = labels(items, meta, format == Format::LabelStudio);
    for item in items {
        let bytes = image(item).map_err(|message| DatasetError::Image { id: item.id, message })?;
        put(sink, &format.image_path(item), &bytes)?;
    }
    let shapes = match format {
        Format::Coco => coco::write(items, meta, &labels, sink)?,
        Format::Cvat => cvat::write(items, meta, &labels, sink)?,
        Format::Yolo => yolo::write(items, meta, &labels, sink)?,
        Format::Voc => voc::write(items, meta, &labels, sink)?,
        Format::LabelStudio => labelstudio::write(items, meta, &labels, sink)?,
    };
    let predictions = if format == Format::LabelStudio { items.iter().map(|i| i.predictions.len()).sum() } else { 0 };
    Ok(Written { images: items.len(), shapes, predictions })
}

/// The schema's labels, then any others used, sorted. Predictions count only where they
/// are written.
fn labels(items: &[Item], meta: &Meta, predictions: bool) -> Vec<String> {
    let mut labels = meta.labels.clone();
    let mut extra = BTreeSet::new();
    for item in items {
        let used = item.shapes.iter().map(|s| &s.label);
        let predicted = item.predictions.iter().filter(|_| predictions).map(|p| &p.label);
        extra.extend(used.chain(predicted).filter(|l| !meta.labels.contains(l)).cloned());
    }
    labels.extend(extra);
    labels
}

fn put(sink: &mut dyn Sink, path: &str, bytes: &[u8]) -> Result<(), DatasetError> {
    sink.put(path, bytes).map_err(|source| DatasetError::Write { path: path.to_owned(), source })
}

/// A format annotations can be read back from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportFormat {
    Coco,
    Cvat,
}

/// One image's annotations as read from a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// The image's id in the file (COCO `id`; CVAT `id`).
    pub id: Option<i64>,
    pub file_name: String,
    pub shapes: Vec<Shape>,
}

/// Reads the annotations of a COCO or CVAT dataset: `path` is the JSON or XML file, or
/// a directory holding it where this crate's export puts it.
pub fn read(format: ImportFormat, path: &Path) -> Result<Vec<Imported>, DatasetError> {
    let file = if path.is_dir() {
        match format {
            ImportFormat::Coco => path.join("annotations/instances_default.json"),
            ImportFormat::Cvat => path.join("annotations.xml"),
        }
    } else {
        path.to_owned()
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|source| DatasetError::Read { path: file.display().to_string(), source })?;
    read_text(format, &text).map_err(|(format, message)| DatasetError::Parse {
        path: file.display().to_string(),
        format,
        message,
    })
}

/// [`read`] on the file's text: the format's name and what is wrong, on an error. Public
/// (hidden) so the fuzz targets and their corpus replay parse as the import does.
#[doc(hidden)]
pub fn read_text(format: ImportFormat, text: &str) -> Result<Vec<Imported>, (&'static str, String)> {
    match format {
        ImportFormat::Coco => coco::read(text).map_err(|m| ("COCO", m)),
        ImportFormat::Cvat => cvat::read(text).map_err(|m| ("CVAT 1.1", m)),
    }
}

/// An attribute's value as text, for the XML formats.
fn attribute_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

/// Text that fits an attribute's likely type back: booleans and numbers as themselves.
fn attribute_value(text: &str) -> Value {
    match text {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        // Only text that prints back the same, so "007" stays text.
        _ => text
            .parse::<i64>()
            .ok()
            .filter(|v| v.to_string() == text)
            .map(Value::from)
            .or_else(|| text.parse::<f64>().ok().filter(|v| v.to_string() == text).map(Value::from))
            .unwrap_or_else(|| Value::String(text.to_owned())),
    }
}

#[cfg(test)]
mod tests;
