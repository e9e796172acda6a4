//! `obscura consent add|list|show|withdraw`: the steward's record of who agreed to what.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use store::{Consent, NewConsent, Purpose, Scope};

#[derive(Debug, Args)]
pub struct ConsentArgs {
    #[command(flatten)]
    state: crate::StateDir,
    #[command(subcommand)]
    command: ConsentCommand,
}

#[derive(Debug, Subcommand)]
enum ConsentCommand {
    /// Record a consent.
    Add(AddArgs),
    /// Every consent, with what it covers.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One consent in full.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Withdraw a consent now: its frames become ineligible at once.
    Withdraw {
        id: String,
        /// Who withdraws it, for the audit log [default: your login name].
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
    },
}

#[derive(Debug, Args)]
struct AddArgs {
    /// `device`, `camera:ID` or `zone:NAME`.
    #[arg(long, value_parser = str::parse::<Scope>)]
    scope: Scope,
    /// Who is covered, e.g. "site staff" or "public under signage".
    #[arg(long, value_name = "WHO")]
    covered: String,
    /// The legal basis, e.g. "consent (signed forms)" or "legitimate interest (DPIA 2026-04)".
    #[arg(long, value_name = "TEXT")]
    basis: String,
    /// What it allows: annotate, sync, train (comma-separated).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = str::parse::<Purpose>, required = true)]
    purpose: Vec<Purpose>,
    /// Valid from, e.g. "2026-11-24 08:00:00" (UTC) [default: now].
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    from: Option<i64>,
    /// Valid until (UTC) [default: until withdrawn].
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    until: Option<i64>,
    /// The evidence (signed form, signage photo): its SHA-256 is recorded, not the file.
    #[arg(long, value_name = "FILE")]
    evidence: Option<PathBuf>,
    /// Who records it, for the audit log [default: your login name].
    #[arg(long, value_name = "NAME")]
    by: Option<String>,
}

/// Unix milliseconds from an RFC 3339 time ("2026-11-24T08:00:00Z", or with a space and
/// no zone, read as UTC).
pub fn parse_time(s: &str) -> Result<i64, String> {
    let t = humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("`{s}` is not a time ({e}): write e.g. 2026-11-24 08:00:00 (UTC)"))?;
    Ok(frame::unix_ms(t))
}

/// An RFC 3339 UTC time for Unix milliseconds.
pub fn format_time(ms: i64) -> String {
    // RFC 3339 ends at year 9999: later (or garbage) times print as its last millisecond.
    humantime::format_rfc3339_seconds(frame::from_unix_ms(ms.clamp(0, 253_402_300_799_999))).to_string()
}

/// Who is acting, for the audit log: `--by`, else the login name (`$USER`, `$LOGNAME`,
/// else the process owner's name in `/etc/passwd`). With none of them it is an error
/// asking for `--by`: an audit entry "by shell" says nothing (issue 18).
pub fn actor(by: Option<String>) -> anyhow::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    login_name(by, |key| std::env::var(key).ok(), uid, &passwd).ok_or_else(|| {
        anyhow::anyhow!(
            "cannot tell who is acting ($USER and $LOGNAME are unset and user id {} has no name in /etc/passwd): pass --by NAME",
            uid.map_or("?".into(), |u| u.to_string())
        )
    })
}

/// The name [`actor`] picks, from its sources given as arguments.
fn login_name(
    by: Option<String>,
    env: impl Fn(&str) -> Option<String>,
    uid: Option<u32>,
    passwd: &str,
) -> Option<String> {
    let named = |n: &String| !n.trim().is_empty();
    by.filter(named).or_else(|| env("USER").filter(named)).or_else(|| env("LOGNAME").filter(named)).or_else(|| {
        let uid = uid?.to_string();
        passwd.lines().find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            (fields.nth(1)? == uid && !name.is_empty()).then(|| name.to_owned())
        })
    })
}

pub fn main(args: ConsentArgs) -> anyhow::Result<ExitCode> {
    let store = args.state.open_store()?;
    match args.command {
        ConsentCommand::Add(a) => {
            let evidence_sha256 = match &a.evidence {
                Some(path) => {
                    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
                    Some(store::sha256_hex(&bytes))
                }
                None => None,
            };
            let now = frame::now_unix_ms();
            let consent = store.add_consent(NewConsent {
                scope: a.scope,
                covered: a.covered,
                legal_basis: a.basis,
                purposes: a.purpose,
                valid_from: a.from.unwrap_or(now),
                valid_until: a.until,
                evidence_sha256,
                recorded_by: actor(a.by)?,
            })?;
            println!("recorded consent {}", consent.id);
            print_one(&consent);
        }
        ConsentCommand::List { json } => {
            let all = store.consents()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if all.is_empty() {
                println!("no consents recorded: frames are dropped (or kept local-only) until one covers their camera");
            } else {
                println!(
                    "{:<6} {:<10} {:<18} {:<20} {:<26} {:>7}",
                    "id", "state", "scope", "purposes", "covered", "frames"
                );
                for c in &all {
                    let purposes: Vec<&str> = c.terms.purposes.iter().map(|p| p.as_str()).collect();
                    let state = if c.withdrawn_at.is_some() { "withdrawn" } else { "active" };
                    println!(
                        "{:<6} {:<10} {:<18} {:<20} {:<26} {:>7}",
                        c.id,
                        state,
                        c.terms.scope.to_string(),
                        purposes.join(","),
                        c.terms.covered,
                        c.frames
                    );
                }
            }
        }
        ConsentCommand::Show { id, json } => {
            let consent = store.consent(&store::ConsentId(id))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&consent)?);
            } else {
                print_one(&consent);
            }
        }
        ConsentCommand::Withdraw { id, by } => {
            let consent = store.withdraw_consent(&store::ConsentId(id), &actor(by)?)?;
            println!(
                "withdrew consent {}: its {} frame(s) are no longer eligible for {}",
                consent.id,
                consent.frames,
                consent.terms.purposes.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_one(c: &Consent) {
    let purposes: Vec<&str> = c.terms.purposes.iter().map(|p| p.as_str()).collect();
    println!("  scope        {}", c.terms.scope);
    println!("  covered      {}", c.terms.covered);
    println!("  legal basis  {}", c.terms.legal_basis);
    println!("  purposes     {}", purposes.join(", "));
    println!(
        "  valid        {} – {}",
        format_time(c.terms.valid_from),
        c.terms.valid_until.map_or("until withdrawn".into(), format_time)
    );
    println!("  evidence     {}", c.terms.evidence_sha256.as_deref().unwrap_or("none recorded"));
    println!("  recorded     {} by {}", format_time(c.recorded_at), c.terms.recorded_by);
    println!("  withdrawn    {}", c.withdrawn_at.map_or("no".into(), format_time));
    println!("  frames       {}", c.frames);
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nmaria:x:1000:1000:Maria:/home/maria:/bin/bash\n";

    /// Issue 18: a consent recorded from a shell without `$USER` said "by shell".
    #[test]
    fn the_actor_is_the_login_name_or_an_error_asking_for_by() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |key: &str| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| (*v).to_owned())
        };
        assert_eq!(login_name(Some("sam".into()), env(&[("USER", "maria")]), Some(0), PASSWD).as_deref(), Some("sam"));
        assert_eq!(login_name(None, env(&[("USER", "maria")]), Some(0), PASSWD).as_deref(), Some("maria"));
        assert_eq!(login_name(None, env(&[("LOGNAME", "ops")]), Some(0), PASSWD).as_deref(), Some("ops"));
        // No environment at all (cron, systemd units, `env -i`): the uid's login name.
        assert_eq!(login_name(None, env(&[]), Some(1000), PASSWD).as_deref(), Some("maria"));
        assert_eq!(login_name(None, env(&[("USER", " ")]), Some(0), PASSWD).as_deref(), Some("root"));
        // Nothing names the person: no default, the caller must say who.
        assert_eq!(login_name(None, env(&[]), Some(4242), PASSWD), None);
        assert_eq!(login_name(None, env(&[]), None, PASSWD), None);
    }
}
