//! The camstream command: parse arguments, set up logging, load the config,
//! run until SIGINT/SIGTERM, reload on SIGHUP.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use camstream::App;
use camstream::config::{Config, DEFAULT_CONFIG_FILE};
use camstream::logging::LogFormat;

/// Stream cameras (RTSP, V4L2 webcams, files, test patterns) to browsers as
/// MJPEG.
#[derive(Clone, Debug, Parser)]
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
    /// Log lines as text, or as one JSON object per line (filter with
    /// RUST_LOG, e.g. RUST_LOG=camstream=debug)
    #[arg(long, env = "CAMSTREAM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let args = Args::parse();
    camstream::logging::init(args.log_format);
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

fn run(args: Args) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let app = App::build(config).await?;
        // SIGHUP re-reads the config as at start (same file, same --listen).
        let reload_args = args.clone();
        camstream::app::spawn_reload_on_sighup(app.control(), move || load_config(&reload_args))?;
        app.run_until(shutdown_signal()).await;
        Ok(())
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
}
