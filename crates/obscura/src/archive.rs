//! Zip files the commands write (`obscura export`, `obscura access-export`), made beside
//! their target and renamed into place.

use std::path::Path;

use anyhow::Context;
use dataset::ZipSink;

/// Writes a zip at `out` through `fill`, beside the target and renamed into place, so a
/// failure leaves no half-written zip.
pub fn write_zip<T>(
    out: &Path,
    fill: impl FnOnce(&mut dyn dataset::Sink) -> Result<T, dataset::DatasetError>,
) -> anyhow::Result<T> {
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".obscura-")
        .suffix(".zip")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    let mut sink = ZipSink::new(tmp.as_file());
    let value = fill(&mut sink)?;
    sink.finish()?.sync_all()?;
    tmp.persist(out).map_err(|e| e.error).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(value)
}

/// A progress bar on stderr for `what` (nothing when stderr is not a terminal), and the
/// `(done, total)` callback the dataset functions report to.
pub fn progress(what: &str) -> (indicatif::ProgressBar, impl FnMut(usize, usize)) {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!("{what} {{bar:40}} {{pos}}/{{len}} frames"))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let shown = bar.clone();
    (bar, move |done: usize, total: usize| {
        shown.set_length(total as u64);
        shown.set_position(done as u64);
    })
}
