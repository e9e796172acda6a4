//! The steward's tools for data subjects: `obscura erase` (rows and blobs removed,
//! tombstones left for the hub) and `obscura access-export` (one zip with a person's
//! frames, their metadata and annotations, and the audit entries).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;

use crate::consent::{actor, format_time, parse_time};
use crate::selection::Selection;

#[derive(Debug, Args)]
pub struct EraseArgs {
    #[command(flatten)]
    selection: Selection,
    /// Erase without asking.
    #[arg(long)]
    yes: bool,
    /// Why, for the audit log and the tombstones (e.g. the request's reference).
    #[arg(long, value_name = "TEXT", default_value = "erasure request")]
    reason: String,
    /// Who erases, for the audit log [default: your login name].
    #[arg(long, value_name = "NAME")]
    by: Option<String>,
    #[command(flatten)]
    state: crate::StateDir,
}

#[derive(Debug, Args)]
pub struct AccessExportArgs {
    /// The camera.
    #[arg(long, value_name = "ID")]
    camera: String,
    /// Captured at or after (UTC).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    from: i64,
    /// Captured before (UTC).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    until: i64,
    /// The zip file to write.
    #[arg(long, short = 'o', value_name = "FILE.zip")]
    out: PathBuf,
    /// Who exports, for the audit log [default: your login name].
    #[arg(long, value_name = "NAME")]
    by: Option<String>,
    #[command(flatten)]
    state: crate::StateDir,
}

pub fn erase(args: EraseArgs) -> anyhow::Result<ExitCode> {
    let filter = args.selection.filter();
    if filter.camera.is_none() && filter.ids.is_empty() && filter.consent.is_none() {
        bail!("name what to erase: --camera ID with --from/--until, --frame ID, or --consent ID");
    }
    let store = args.state.open_store()?;
    let matching = store.frames(&filter)?;
    if matching.is_empty() {
        println!("no frames match; nothing erased");
        return Ok(ExitCode::SUCCESS);
    }
    let (first, last) = (matching[0].captured_at, matching[matching.len() - 1].captured_at);
    println!(
        "{} frame(s) match, captured {} – {}, on camera(s) {}",
        matching.len(),
        format_time(first),
        format_time(last),
        cameras(&matching)
    );
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            bail!("erasure needs confirmation: run it in a terminal, or pass --yes");
        }
        print!("erase them, their annotations and their blobs for good? type `erase` to confirm: ");
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != "erase" {
            println!("nothing erased");
            return Ok(ExitCode::FAILURE);
        }
    }
    let erased = store.erase(&filter, &actor(args.by)?, &args.reason)?;
    println!(
        "erased {} frame(s) and {} blob(s), {} bytes; tombstones left for sync to carry to the hub",
        erased.frames, erased.blobs, erased.bytes
    );
    Ok(ExitCode::SUCCESS)
}

fn cameras(frames: &[store::FrameRow]) -> String {
    let mut ids: Vec<&str> = frames.iter().map(|f| f.camera.as_str()).collect();
    ids.sort();
    ids.dedup();
    ids.join(", ")
}

/// One zip for a data subject's access request: `frames/ID.jpg` (anonymized, as
/// stored), `frames.json` (each frame's metadata, provenance, machine detections and
/// annotation versions),
/// `audit.json` (the camera's audit entries in the window) and `README.txt`.
pub fn access_export(args: AccessExportArgs) -> anyhow::Result<ExitCode> {
    let store = args.state.open_store()?;
    let by = actor(args.by)?;
    let (bar, mut progress) = crate::archive::progress("exporting");
    let frames = crate::archive::write_zip(&args.out, |sink| {
        dataset::access_export(&store, &args.camera, args.from, args.until, &by, sink, &mut progress)
    })?;
    bar.finish_and_clear();
    println!("wrote {} with {frames} frame(s)", args.out.display());
    Ok(ExitCode::SUCCESS)
}
