//! `obscura export`: datasets for the tools dataset engineers use. The images are the
//! stored, anonymized JPEGs; a frame is exported only while a consent covering it gives
//! the export's purpose; every export is audited with its filters and count.
//!
//! Annotation shapes are the store's JSON: `{"type": "box", "label": L, "points":
//! [x1, y1, x2, y2], "attributes": {..}}` or `{"type": "polygon", ..., "points": [x, y, x,
//! y, ...]}`, in pixels.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};
use store::{FrameFilter, FrameRow, Purpose};

use crate::consent::{actor, format_time};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// COCO 1.0 instances JSON, images in `images/`.
    Coco,
    /// Ultralytics YOLO detect layout: `images/train/`, `labels/train/` (class and
    /// normalised centre and size per box; polygons as their boxes) and `data.yaml`.
    Yolo,
}

impl Format {
    /// Where the images go, under the output directory.
    fn images(self) -> &'static str {
        match self {
            Format::Coco => "images",
            Format::Yolo => "images/train",
        }
    }
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[arg(long, value_enum)]
    format: Format,
    /// The directory to write (created; must be empty if it exists).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    window: crate::erasure::Window,
    /// Review status: new, in_progress, annotated, accepted or rejected.
    #[arg(long, value_name = "STATUS")]
    status: Option<String>,
    /// The purpose the data leaves for; a frame is exported only if an active consent
    /// covering it gives it.
    #[arg(long, default_value = "train", value_parser = str::parse::<Purpose>)]
    purpose: Purpose,
    /// Who exports, for the audit log [default: $USER].
    #[arg(long, value_name = "NAME")]
    by: Option<String>,
    #[command(flatten)]
    state: crate::StateDir,
}

pub fn main(args: ExportArgs) -> anyhow::Result<ExitCode> {
    if let Some(status) = &args.status
        && !["new", "in_progress", "annotated", "accepted", "rejected"].contains(&status.as_str())
    {
        bail!("--status {status} is not a review status: use new, in_progress, annotated, accepted or rejected");
    }
    if args.out.exists() && args.out.read_dir().map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} is not empty: export into a new or empty directory", args.out.display());
    }
    let store = args.state.open_store()?;
    let filter = FrameFilter { purpose: Some(args.purpose), status: args.status.clone(), ..args.window.filter() };
    let frames = store.frames(&filter)?;
    let images = args.out.join(args.format.images());
    std::fs::create_dir_all(&images).with_context(|| format!("cannot create {}", args.out.display()))?;
    let shapes: Vec<Vec<Value>> = frames
        .iter()
        .map(|f| {
            let current = store.annotation(f.id)?;
            Ok(current.and_then(|a| a.shapes.as_array().cloned()).unwrap_or_default())
        })
        .collect::<anyhow::Result<_>>()?;
    for f in &frames {
        let jpeg = store.frame_jpeg(f.id).with_context(|| format!("frame {}", f.id))?;
        std::fs::write(images.join(file_name(f)), jpeg)?;
    }
    let count = match args.format {
        Format::Coco => {
            let doc = coco(&frames, &shapes);
            let dir = args.out.join("annotations");
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("instances_default.json"), serde_json::to_string_pretty(&doc)?)?;
            doc["annotations"].as_array().map_or(0, Vec::len)
        }
        Format::Yolo => yolo(&args.out, &frames, &shapes)?,
    };
    store.audit(
        &actor(args.by),
        "export",
        "dataset",
        json!({
            "format": format!("{:?}", args.format).to_lowercase(),
            "purpose": args.purpose.as_str(),
            "camera": args.window.camera, "from": args.window.from, "until": args.window.until, "status": args.status,
            "frames": frames.len(), "annotations": count,
        }),
    )?;
    println!(
        "exported {} frame(s) and {count} annotation(s) to {} (only frames consented for {})",
        frames.len(),
        args.out.display(),
        args.purpose.as_str()
    );
    Ok(ExitCode::SUCCESS)
}

fn file_name(f: &FrameRow) -> String {
    format!("{}.jpg", f.id)
}

/// The label names used, sorted: category ids 1.. in that order.
fn categories(shapes: &[Vec<Value>]) -> Vec<String> {
    let mut names: Vec<String> =
        shapes.iter().flatten().filter_map(|s| s["label"].as_str().map(str::to_owned)).collect();
    names.sort();
    names.dedup();
    names
}

/// A shape's bounding box (x1, y1, x2, y2) and, for a polygon, its points.
fn geometry(shape: &Value) -> Option<([f64; 4], Option<Vec<f64>>)> {
    let points: Vec<f64> = shape["points"].as_array()?.iter().filter_map(Value::as_f64).collect();
    match shape["type"].as_str()? {
        "box" if points.len() == 4 => Some(([points[0], points[1], points[2], points[3]], None)),
        "polygon" if points.len() >= 6 && points.len().is_multiple_of(2) => {
            let xs: Vec<f64> = points.iter().step_by(2).copied().collect();
            let ys: Vec<f64> = points.iter().skip(1).step_by(2).copied().collect();
            let (min, max) = (
                |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min),
                |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            );
            let bounds = [min(&xs), min(&ys), max(&xs), max(&ys)];
            Some((bounds, Some(points)))
        }
        _ => None,
    }
}

/// COCO 1.0 instances: images, annotations (bbox `[x, y, w, h]`, polygon segmentation),
/// categories from 1.
fn coco(frames: &[FrameRow], shapes: &[Vec<Value>]) -> Value {
    let names = categories(shapes);
    let category: BTreeMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (n.as_str(), i + 1)).collect();
    let mut annotations = Vec::new();
    for (f, shapes) in frames.iter().zip(shapes) {
        for shape in shapes {
            let (Some(label), Some(([x1, y1, x2, y2], polygon))) = (shape["label"].as_str(), geometry(shape)) else {
                continue;
            };
            let (w, h) = ((x2 - x1).max(0.0), (y2 - y1).max(0.0));
            let area = match &polygon {
                Some(p) => shoelace(p),
                None => w * h,
            };
            annotations.push(json!({
                "id": annotations.len() + 1,
                "image_id": f.id,
                "category_id": category[label],
                "bbox": [x1, y1, w, h],
                "area": area,
                "iscrowd": 0,
                "segmentation": polygon.map_or(json!([]), |p| json!([p])),
                "attributes": shape.get("attributes").cloned().unwrap_or(json!({})),
            }));
        }
    }
    json!({
        "info": { "description": "Obscura export: anonymized frames", "version": "1.0", "date_created": format_time(now_ms()) },
        "licenses": [],
        "images": frames.iter().map(|f| json!({
            "id": f.id, "file_name": file_name(f), "width": f.width, "height": f.height,
            "date_captured": format_time(f.captured_at), "camera": f.camera,
        })).collect::<Vec<_>>(),
        "annotations": annotations,
        "categories": names.iter().enumerate().map(|(i, n)| json!({ "id": i + 1, "name": n, "supercategory": "" })).collect::<Vec<_>>(),
    })
}

/// Ultralytics YOLO: a label file per image, `data.yaml` naming the classes from 0.
/// Returns the number of boxes written.
fn yolo(out: &std::path::Path, frames: &[FrameRow], shapes: &[Vec<Value>]) -> anyhow::Result<usize> {
    let names = categories(shapes);
    let labels = out.join("labels/train");
    std::fs::create_dir_all(&labels)?;
    let mut count = 0;
    for (f, shapes) in frames.iter().zip(shapes) {
        let (w, h) = (f64::from(f.width), f64::from(f.height));
        let mut lines = String::new();
        for shape in shapes {
            let (Some(label), Some(([x1, y1, x2, y2], _))) = (shape["label"].as_str(), geometry(shape)) else {
                continue;
            };
            let class = names.iter().position(|n| n == label).expect("categories hold every label");
            let (x1, y1, x2, y2) = (x1.clamp(0.0, w), y1.clamp(0.0, h), x2.clamp(0.0, w), y2.clamp(0.0, h));
            if x2 <= x1 || y2 <= y1 {
                continue;
            }
            lines += &format!(
                "{class} {:.6} {:.6} {:.6} {:.6}\n",
                (x1 + x2) / 2.0 / w,
                (y1 + y2) / 2.0 / h,
                (x2 - x1) / w,
                (y2 - y1) / h
            );
            count += 1;
        }
        std::fs::write(labels.join(format!("{}.txt", f.id)), lines)?;
    }
    let mut yaml = String::from(
        "# Written by obscura export: anonymized frames.\npath: .\ntrain: images/train\nval: images/train\nnames:\n",
    );
    for (i, name) in names.iter().enumerate() {
        // JSON strings are valid YAML scalars, quoting included.
        yaml += &format!("  {i}: {}\n", serde_json::to_string(name)?);
    }
    std::fs::write(out.join("data.yaml"), yaml)?;
    Ok(count)
}

fn shoelace(p: &[f64]) -> f64 {
    let n = p.len() / 2;
    let twice: f64 = (0..n).map(|i| p[2 * i] * p[2 * ((i + 1) % n) + 1] - p[2 * ((i + 1) % n)] * p[2 * i + 1]).sum();
    twice.abs() / 2.0
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
