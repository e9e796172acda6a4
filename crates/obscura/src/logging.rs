//! tracing to stderr: plain text without timestamps under journald (it adds its own),
//! with timestamps on a terminal, or one JSON object per line.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// `OBSCURA_LOG` (or `RUST_LOG`) wins over the config's `log.level`.
pub fn init(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let directive =
        std::env::var("OBSCURA_LOG").or_else(|_| std::env::var("RUST_LOG")).unwrap_or_else(|_| level.to_owned());
    let filter = EnvFilter::try_new(&directive).map_err(|e| {
        anyhow::anyhow!("log level `{directive}` is not a tracing filter ({e}); try \"info\" or \"info,capture=debug\"")
    })?;
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match (format, under_journald) {
        (LogFormat::Json, _) => builder.json().flatten_event(true).try_init(),
        (LogFormat::Text, true) => builder.without_time().with_ansi(false).try_init(),
        (LogFormat::Text, false) => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))
}
