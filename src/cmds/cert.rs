//! `camstream cert`: the HTTPS certificate the config describes, made first
//! if it is a self-signed one that does not exist yet (as `serve` would),
//! with the SHA-256 fingerprint and public-key pin to check or pin it by.

use std::io::Write;

use anyhow::bail;

use super::ConfigArgs;
use crate::config::Config;

/// What `camstream cert` takes.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct CertArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Prints the certificate's files, fingerprint, pin, expiry and names.
pub fn run(args: &CertArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let file = args.config.file();
    let config = Config::read(file.as_deref(), &args.config.overrides())?;
    let Some(tls) = &config.server.tls else {
        bail!(
            "{} has no [server.tls]: add cert and key, or self_signed = true (docs/tls.md)",
            file.as_deref()
                .map_or_else(|| "the configuration".into(), |p| p.display().to_string())
        );
    };
    let loaded = crate::tls::load(tls)?;
    writeln!(out, "{}", loaded.info)?;
    Ok(())
}
