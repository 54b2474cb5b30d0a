//! The camstream command: parse arguments, set up logging, dispatch to the
//! command. `serve` (the default) runs until SIGINT/SIGTERM and reloads its
//! config on SIGHUP; the other commands live in camstream::cmds.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use camstream::App;
use camstream::cmds::cert::CertArgs;
use camstream::cmds::check::CheckArgs;
use camstream::cmds::healthcheck::HealthcheckArgs;
use camstream::cmds::probe::ProbeArgs;
use camstream::cmds::{self, ServeArgs};
use camstream::logging::LogFormat;
use camstream::redact::KnownSecrets;

const EXAMPLES: &str = "\
Examples:
  camstream                           serve camstream.toml, or the demo camera if there is none
  camstream --config cams.toml        serve the cameras in cams.toml
  camstream check --config cams.toml  validate cams.toml and the GStreamer elements its cameras need
  camstream probe rtsp://admin:pass@192.168.1.64/Streaming/Channels/101
                                      print an RTSP camera's codec, resolution and frame rate
  camstream probe 0 --pipeline-file v4l2-mjpeg.pipeline
                                      the same for /dev/video0 through the MJPEG template
  camstream hash-password             prompt for a password, print its password_hash line
  camstream cert --config cams.toml   print the HTTPS certificate's fingerprint and files
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
    /// Log lines as text, or as one JSON object per line (filter with
    /// RUST_LOG, e.g. RUST_LOG=camstream=debug)
    #[arg(long, global = true, env = "CAMSTREAM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
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
    /// Read a password (prompted without echo, or one line of standard
    /// input) and print the argon2 hash to store as password_hash in
    /// [[server.auth.users]]
    HashPassword,
    /// Print the HTTPS certificate's files, SHA-256 fingerprint and
    /// public-key pin (making the self-signed one first if it does not
    /// exist yet)
    Cert(CertArgs),
}

/// Keeps frame-sized allocations in malloc's heaps instead of a fresh
/// mmap each. With glibc's defaults a buffer of a few hundred kilobytes
/// (a 1080p JPEG is ~0.5 MB; souphttpsrc and multipartdemux allocate one
/// or more per frame) is mapped on allocation and unmapped on free, so
/// every frame pays page faults and the kernel zeroing its pages: in a
/// profile of 1080p30 MJPEG passthrough (`perf record -g -p PID` during
/// `cargo bench --bench load -- --scenarios mjpeg-passthrough`), 8.5 % of
/// camstream's CPU was `clear_page_erms`, and with these settings the
/// same 10 s took 40 % fewer samples. The price is that up to 32 MB freed
/// at the top of a heap stays with the process. A `GLIBC_TUNABLES` that
/// sets malloc's own values wins.
fn keep_frame_buffers_in_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tuned = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc."));
        if !tuned {
            // SAFETY: mallopt only sets allocator parameters; called first
            // thing in main, before any other thread exists.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 32 << 20);
            }
        }
    }
}

fn main() -> ExitCode {
    keep_frame_buffers_in_the_heap();
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve(cli.serve));
    // The secrets of the configuration, once read: the log writer masks
    // them, and so does the error printed on the way out.
    let secrets = KnownSecrets::default();
    camstream::logging::init(
        cli.log_format,
        matches!(command, Command::Serve(_)),
        secrets.clone(),
    );
    // Not locked: the server's log lines go to stdout from other threads.
    let mut out = std::io::stdout();
    let result = match command {
        Command::Serve(args) => serve(args, &secrets).map(|()| true),
        Command::Check(args) => cmds::check::run(&args, &secrets, &mut out),
        Command::Probe(args) => cmds::probe::run(&args, &secrets, &mut out).map(|()| true),
        Command::Healthcheck(args) => cmds::healthcheck::run(&args, &mut out).map(|()| true),
        Command::HashPassword => cmds::hash_password::run(&mut out).map(|()| true),
        Command::Cert(args) => cmds::cert::run(&args, &mut out).map(|()| true),
    };
    let _ = out.flush();
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("camstream: {}", secrets.redact(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// Shutdown must finish within 2 s (container runtimes send SIGKILL
/// soon after SIGTERM); whatever is still stopping after this is abandoned.
const SHUTDOWN_LIMIT: Duration = Duration::from_millis(1500);

/// Serves until SIGINT or SIGTERM (a second signal exits at once); SIGHUP
/// reloads the config.
fn serve(args: ServeArgs, secrets: &KnownSecrets) -> anyhow::Result<()> {
    let config = args.load()?;
    // Each viewer holds a socket; the default soft limit of 1024 descriptors
    // would cap a server at about a thousand viewers.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!("cannot raise the open-files limit: {e}");
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        let app = App::build_with(config, secrets.clone()).await?;
        // SIGHUP re-reads the config as at start (same file, same overrides).
        camstream::app::spawn_reload_on_sighup(app.control(), move || args.load())?;
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
