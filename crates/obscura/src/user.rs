//! `obscura user` (and `obscura hub user`, the same over the hub's accounts): accounts
//! from the shell, for when no admin can log in (or before the first one exists). Passwords are read from the terminal without echo, or
//! from standard input when it is not a terminal; they never appear in arguments, logs
//! or the audit log.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use store::{Accounts, Role};

use crate::consent::{actor, format_time};

#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(subcommand)]
    command: UserCommand,
    #[command(flatten)]
    state: crate::StateDir,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add an account; asks for its password.
    Add {
        name: String,
        /// admin, annotator, reviewer or steward.
        #[arg(long, value_parser = str::parse::<Role>)]
        role: Role,
    },
    /// List accounts.
    List,
    /// Set an account's password; its sessions end.
    Passwd { name: String },
    /// Disable an account (its sessions end), or enable it again with --enable.
    Disable {
        name: String,
        #[arg(long)]
        enable: bool,
    },
    /// Print a new one-time setup code for the first admin (valid 24 h). Only while no
    /// account exists.
    SetupCode,
}

pub fn main(args: UserArgs) -> anyhow::Result<ExitCode> {
    run(&args.state.open_store()?, args.command, "obscura user")
}

/// Does `command` on `store`'s accounts; `cli` is the command as the user types it,
/// for the hints.
pub fn run(store: &dyn Accounts, command: UserCommand, cli: &str) -> anyhow::Result<ExitCode> {
    // Asked only by the commands that are audited.
    let by = || actor(None);
    match command {
        UserCommand::Add { name, role } => {
            web::auth::check_name(&name).map_err(anyhow::Error::msg)?;
            let hash = web::hash_password(&password(&format!("password for {name}: "))?).map_err(anyhow::Error::msg)?;
            let user = store.add_user(&name, role, &hash, &by()?)?;
            println!("added {} ({})", user.name, user.role.as_str());
        }
        UserCommand::List => {
            for u in store.users()? {
                let state = if u.disabled { "disabled" } else { "active" };
                println!("{:<24} {:<10} {:<8} since {}", u.name, u.role.as_str(), state, format_time(u.created_at));
            }
        }
        UserCommand::Passwd { name } => {
            let user =
                store.user_by_name(&name)?.with_context(|| format!("no user named `{name}`: see `{cli} list`"))?;
            let hash =
                web::hash_password(&password(&format!("new password for {name}: "))?).map_err(anyhow::Error::msg)?;
            store.set_password(user.id, &hash, &by()?)?;
            println!("password of {name} changed; its sessions ended");
        }
        UserCommand::Disable { name, enable } => {
            let user =
                store.user_by_name(&name)?.with_context(|| format!("no user named `{name}`: see `{cli} list`"))?;
            store.update_user(user.id, None, Some(!enable), &by()?)?;
            println!("{name} {}", if enable { "enabled" } else { "disabled; its sessions ended" });
        }
        UserCommand::SetupCode => {
            if store.user_count()? > 0 {
                bail!("accounts exist already: an admin adds users (`{cli} add NAME --role ROLE`)");
            }
            let code = web::new_setup_code(store)?;
            println!("setup code for the first admin (valid 24 h; earlier codes no longer work):\n\n    {code}\n");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A password from the terminal (no echo, asked twice) or one line of standard input.
fn password(prompt: &str) -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(prompt)?;
        let again = rpassword::prompt_password("again: ")?;
        if first != again {
            bail!("the two passwords differ; nothing changed");
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("cannot read the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
