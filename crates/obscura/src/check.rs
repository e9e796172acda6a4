//! `obscura store check`: the command line around the store's own check (database
//! integrity, crash leftovers, every blob read and authenticated).

use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// `check`: SQLite's integrity check, leftovers of a crash cleaned up (only reported
    /// while the daemon runs), and every
    /// frame's blob read and authenticated.
    #[arg(value_parser = ["check"])]
    action: String,
    /// Print the findings as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    state: crate::StateDir,
}

pub fn main(args: StoreArgs) -> anyhow::Result<ExitCode> {
    let store = args.state.open_store()?;
    let check = store.check()?;
    if args.json {
        println!("{}", serde_json::to_string(&check)?);
    } else {
        println!("integrity      {}", check.integrity);
        println!("frames         {}", check.frames);
        println!(
            "leftovers      {} temporary file(s), {} orphan blob(s) {}",
            check.sweep.temporaries,
            check.sweep.orphan_blobs,
            if check.sweep.cleaned {
                "removed"
            } else {
                "left alone: another process (the daemon) has the store open, so they may be its writes in flight"
            }
        );
        println!("missing blobs  {:?}", check.sweep.missing_blobs);
        println!("unreadable     {:?}", check.unreadable);
    }
    Ok(if check.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
