//! Log output: human-readable text or one JSON object per line, filtered
//! like `RUST_LOG` (default `info`). Every line logged by a camera's
//! supervisor carries its `camera{id=...}` span, as a prefix in text and
//! as `span`/`spans` fields in JSON.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people reading a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global subscriber. Call once, at start. The server logs
/// what it does at `info` on stdout; the one-shot commands print their own
/// report on stdout, so they log only warnings, to stderr. `RUST_LOG`
/// overrides the level either way.
pub fn init(format: LogFormat, serving: bool) {
    let default = if serving { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only for a terminal: escape codes garble log files.
    let terminal = if serving {
        std::io::stdout().is_terminal()
    } else {
        std::io::stderr().is_terminal()
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal);
    match (format, serving) {
        (LogFormat::Text, true) => builder.init(),
        (LogFormat::Json, true) => builder.json().init(),
        (LogFormat::Text, false) => builder.with_writer(std::io::stderr).init(),
        (LogFormat::Json, false) => builder.json().with_writer(std::io::stderr).init(),
    }
}
