//! `obscura export` and `obscura import`: datasets for the tools dataset engineers use,
//! and annotations merged back from them. The formats and the consent gate are the
//! `dataset` crate's; this is the command line around them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use dataset::{DirSink, Export, Format, ImportFormat};
use store::{FrameFilter, Purpose};

use crate::consent::actor;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// coco (1.0 instances), cvat (for images 1.1), yolo (Ultralytics detect), voc
    /// (Pascal VOC) or labelstudio (tasks, pre-labels as predictions).
    #[arg(long, value_parser = str::parse::<Format>)]
    format: Format,
    /// The directory to write (created; must be empty if it exists), or a file ending
    /// in `.zip`.
    #[arg(long, value_name = "DIR|FILE.zip")]
    out: PathBuf,
    #[command(flatten)]
    window: crate::selection::Window,
    /// Review status: new, in_progress, annotated, accepted or rejected.
    #[arg(long, value_name = "STATUS")]
    status: Option<String>,
    /// The purpose the data leaves for; a frame is exported only if an active consent
    /// covering it gives it.
    #[arg(long, default_value = "train", value_parser = str::parse::<Purpose>)]
    purpose: Purpose,
    /// Also offer the anonymizer's own boxes as `face` and `license_plate` pre-labels
    /// (Label Studio predictions); those regions are already redacted in the images.
    #[arg(long)]
    redactions: bool,
    /// Who exports, for the audit log [default: your login name].
    #[arg(long, value_name = "NAME")]
    by: Option<String>,
    #[command(flatten)]
    state: crate::StateDir,
}

pub fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let status = args
        .status
        .as_deref()
        .map(str::parse::<store::FrameStatus>)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--status: {e}"))?;
    let zip = args.out.extension().is_some_and(|e| e == "zip");
    if zip && args.out.exists() {
        bail!("{} exists: name a new file, or remove it first", args.out.display());
    }
    if !zip && args.out.exists() && args.out.read_dir().map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} is not empty: export into a new or empty directory", args.out.display());
    }
    let store = args.state.open_store()?;
    let request = Export {
        format: args.format,
        filter: FrameFilter { status, ..args.window.filter() },
        purpose: args.purpose,
        redactions: args.redactions,
        actor: actor(args.by)?,
    };
    // A bar on a terminal (nothing when stderr is not one): long exports show progress.
    let (bar, mut progress) = crate::archive::progress("exporting");
    let written = if zip {
        crate::archive::write_zip(&args.out, |sink| {
            dataset::export_with_progress(&store, &request, sink, &mut progress)
        })?
    } else {
        std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
        dataset::export_with_progress(&store, &request, &mut DirSink::new(&args.out), &mut progress)?
    };
    bar.finish_and_clear();
    let predictions =
        if written.predictions > 0 { format!(" and {} pre-label(s)", written.predictions) } else { String::new() };
    println!(
        "exported {} frame(s), {} annotation(s){predictions} to {} (only frames consented for {})",
        written.images,
        written.shapes,
        args.out.display(),
        args.purpose.as_str()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ImportFormatArg {
    Coco,
    Cvat,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[arg(long, value_enum)]
    format: ImportFormatArg,
    /// The COCO JSON or CVAT XML file, or an export directory holding it.
    path: PathBuf,
    /// Report what would change, and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Who imports, for the annotation versions and the audit log [default: your login name].
    #[arg(long, value_name = "NAME")]
    by: Option<String>,
    #[command(flatten)]
    state: crate::StateDir,
}

pub fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let store = args.state.open_store()?;
    let format = match args.format {
        ImportFormatArg::Coco => ImportFormat::Coco,
        ImportFormatArg::Cvat => ImportFormat::Cvat,
    };
    let (bar, mut progress) = crate::archive::progress("importing");
    let source = args.path.display().to_string();
    let report = dataset::import_with_progress(
        &store,
        format,
        &args.path,
        &source,
        &actor(args.by)?,
        args.dry_run,
        &mut progress,
    )?;
    bar.finish_and_clear();
    let verb = if args.dry_run { "would update" } else { "updated" };
    println!(
        "{} image(s) in {}: matched {} by file name and {} by id; {verb} {} frame(s) with {} shape(s), {} unchanged",
        report.images,
        args.path.display(),
        report.by_name,
        report.by_id,
        report.updated,
        report.shapes,
        report.unchanged
    );
    for name in &report.unmatched {
        eprintln!("not matched: {name} (no frame has this file name or id)");
    }
    for why in &report.refused {
        eprintln!("refused: {why}");
    }
    Ok(if report.unmatched.is_empty() && report.refused.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(2) })
}
