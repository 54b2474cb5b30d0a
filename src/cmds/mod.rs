//! The commands of the `camstream` binary, as library code so tests can
//! call them; src/main.rs parses the command line and dispatches here.
//!
//! Every option that a container sets has an environment variable, so an
//! image or a compose file configures camstream without a command line.

pub mod cert;
pub mod check;
pub mod hash_password;
pub mod healthcheck;
pub mod probe;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Config, DEFAULT_CONFIG_FILE, Overrides};

/// Which config file to read, and the settings that override it: what
/// `serve`, `check` and `healthcheck` share.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ConfigArgs {
    /// Config file [default: camstream.toml in the working directory, if it
    /// exists]
    #[arg(long, short, env = "CAMSTREAM_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory of pipeline templates, overriding `[server] pipelines_dir`
    #[arg(long, env = "CAMSTREAM_PIPELINES_DIR", value_name = "DIR")]
    pub pipelines_dir: Option<PathBuf>,
}

impl ConfigArgs {
    /// The file to read: `--config`, else camstream.toml in the working
    /// directory when there is one.
    pub fn file(&self) -> Option<PathBuf> {
        self.config.clone().or_else(|| {
            let default = Path::new(DEFAULT_CONFIG_FILE);
            default.exists().then(|| default.to_path_buf())
        })
    }

    /// The settings given outside the file that these options carry.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: None,
            pipelines_dir: self.pipelines_dir.clone(),
        }
    }
}

/// What `camstream serve` (and `camstream` alone) takes.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Listen address, overriding `[server] listen` (e.g. 127.0.0.1:8000)
    #[arg(long, env = "CAMSTREAM_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
}

impl ServeArgs {
    /// The settings given outside the file.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen,
            ..self.config.overrides()
        }
    }

    /// The configuration the server runs: the file with the overrides
    /// applied, or the built-in demo camera when there is no file or it
    /// configures no camera.
    pub fn load(&self) -> anyhow::Result<Config> {
        let file = self.config.file();
        match &file {
            Some(path) => tracing::info!("reading {}", path.display()),
            None => tracing::info!("no {DEFAULT_CONFIG_FILE}: serving the built-in demo camera"),
        }
        Ok(Config::read(file.as_deref(), &self.overrides())?)
    }
}

/// Parses a number of seconds, e.g. `10` or `2.5`, for duration options.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("\"{text}\" is not a number of seconds above 0, e.g. 10 or 2.5"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("2.5"), Ok(Duration::from_millis(2500)));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("soon").unwrap_err().contains("soon"));
    }
}
