//! The camstream command: parse arguments, set up logging, load the config,
//! run until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use camstream::App;
use camstream::config::{Config, DEFAULT_CONFIG_FILE};

/// Stream cameras (RTSP, V4L2 webcams, files, test patterns) to browsers as
/// MJPEG.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "Examples:\n  camstream                       serve camstream.toml, or the demo camera if there is none\n  camstream --config cams.toml    serve the cameras in cams.toml"
)]
struct Args {
    /// Config file [default: camstream.toml if it exists, else a demo camera]
    #[arg(long, short, env = "CAMSTREAM_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address, overriding [server] listen (e.g. 127.0.0.1:8000)
    #[arg(long, env = "CAMSTREAM_LISTEN")]
    listen: Option<std::net::SocketAddr>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("camstream: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(args: &Args) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None if std::path::Path::new(DEFAULT_CONFIG_FILE).exists() => {
            Config::load(std::path::Path::new(DEFAULT_CONFIG_FILE))?
        }
        None => {
            tracing::info!("no {DEFAULT_CONFIG_FILE}: serving the built-in demo camera");
            Config::demo()
        }
    };
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    Ok(config.with_demo_if_empty())
}

/// Shutdown must finish within 2 s (container runtimes send SIGKILL
/// soon after SIGTERM); whatever is still stopping after this is abandoned.
const SHUTDOWN_LIMIT: Duration = Duration::from_millis(1500);

fn run(args: Args) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    // Each viewer holds a socket; the default soft limit of 1024 descriptors
    // would cap a server at about a thousand viewers.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!("cannot raise the open-files limit: {e}");
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        let app = App::build(config).await?;
        shutdown_signal().await;
        // A second signal means "now": exit without waiting for cleanup.
        tokio::spawn(async {
            shutdown_signal().await;
            eprintln!("camstream: second signal, exiting at once");
            std::process::exit(130);
        });
        if tokio::time::timeout(SHUTDOWN_LIMIT, app.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("shutdown took over {SHUTDOWN_LIMIT:?}; exiting anyway");
        }
        Ok(())
    });
    // Blocking tasks still stopping a pipeline must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(200));
    result
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = int.recv() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
}
