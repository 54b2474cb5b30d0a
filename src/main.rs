//! The camstream command: parse arguments, set up logging, dispatch to the
//! command. `serve` (the default) runs until SIGINT/SIGTERM; the other
//! commands live in camstream::cmds.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use camstream::App;
use camstream::cmds::check::CheckArgs;
use camstream::cmds::healthcheck::HealthcheckArgs;
use camstream::cmds::probe::ProbeArgs;
use camstream::cmds::{self, ServeArgs};

const EXAMPLES: &str = "\
Examples:
  camstream                           serve camstream.toml, or the demo camera if there is none
  camstream --config cams.toml        serve the cameras in cams.toml
  camstream check --config cams.toml  validate cams.toml and the GStreamer elements its cameras need
  camstream probe rtsp://admin:pass@192.168.1.64/Streaming/Channels/101
                                      print an RTSP camera's codec, resolution and frame rate
  camstream probe 0 --pipeline-file v4l2-mjpeg.pipeline
                                      the same for /dev/video0 through the MJPEG template
  CAMSTREAM_LISTEN=127.0.0.1:9000 camstream
                                      every option has an environment variable, for containers";

/// Stream cameras (RTSP, V4L2 webcams, files, test patterns) to browsers as
/// MJPEG.
#[derive(Debug, Parser)]
#[command(version, about, after_help = EXAMPLES, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no command: serve
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the configured cameras (what camstream does with no command)
    Serve(ServeArgs),
    /// Validate a config and check that every GStreamer element its cameras
    /// need is installed; exits non-zero on any error
    Check(CheckArgs),
    /// Open a source the way a camera would and print its codec, resolution
    /// and frame rate
    Probe(ProbeArgs),
    /// Exit 0 when the camstream the config describes answers GET /healthz
    /// (the container's HEALTHCHECK)
    Healthcheck(HealthcheckArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve(cli.serve));
    init_logging(matches!(command, Command::Serve(_)));
    // Not locked: the server's log lines go to stdout from other threads.
    let mut out = std::io::stdout();
    let result = match command {
        Command::Serve(args) => serve(args).map(|()| true),
        Command::Check(args) => cmds::check::run(&args, &mut out),
        Command::Probe(args) => cmds::probe::run(&args, &mut out).map(|()| true),
        Command::Healthcheck(args) => cmds::healthcheck::run(&args, &mut out).map(|()| true),
    };
    let _ = out.flush();
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("camstream: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The server logs what it does at info; the one-shot commands print their
/// own report on stdout, so only warnings are logged, to stderr. RUST_LOG
/// overrides both.
fn init_logging(serving: bool) {
    let default = if serving { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let logger = tracing_subscriber::fmt().with_env_filter(filter);
    if serving {
        logger.init();
    } else {
        logger.with_writer(std::io::stderr).init();
    }
}

/// Serves until SIGINT or SIGTERM.
fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.load()?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let app = App::build(config).await?;
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
