//! `obscura audit verify`: the audit log's hash chain, checked end to end.

use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// `verify`: check the whole hash chain and name the first bad entry.
    #[arg(value_parser = ["verify"])]
    action: String,
    #[command(flatten)]
    state: crate::StateDir,
}

pub fn main(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let store = args.state.open_store()?;
    match store.verify_audit()? {
        Ok(n) => {
            println!("audit log intact: {n} entries, each chained to the one before");
            Ok(ExitCode::SUCCESS)
        }
        Err(broken) => {
            println!("audit log BROKEN at {broken}");
            Ok(ExitCode::FAILURE)
        }
    }
}
