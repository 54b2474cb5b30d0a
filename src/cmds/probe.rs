//! `camstream probe SOURCE`: open a source exactly as a camera with that
//! `source` would (same parsing, same pipeline), print what it sends, stop.
//! The quick answer to "what does this camera give me, and does camstream
//! read it?" before writing it into the config.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use serde::Deserialize;
use serde::de::IntoDeserializer;

use super::parse_seconds;
use crate::config::{CameraConfig, CameraId, DEFAULT_PIPELINES_DIR, Defaults, SourceValue};
use crate::pipeline::{
    self, DecoderFallback, MEASURE_FOR, ProbeError, ProbeReport, TransportFallback,
};
use crate::redact::{KnownSecrets, Redactor, find_secrets};
use crate::source::{Attempt, HttpMode, LowerTransport, PipelinePlan, Source, Transport};

/// What `camstream probe` takes.
#[derive(Clone, Debug, clap::Args)]
pub struct ProbeArgs {
    /// What to open, written as a camera's `source`: 0 or /dev/video0,
    /// rtsp://user:pass@host/path, http://host/video.mjpg, a file, test:, or
    /// a gst-launch pipeline
    pub source: String,
    /// Open it through this template, as the camera setting pipeline_file
    /// would (e.g. v4l2-mjpeg.pipeline)
    #[arg(long, value_name = "NAME")]
    pub pipeline_file: Option<PathBuf>,
    /// Where --pipeline-file is looked up
    #[arg(long, env = "CAMSTREAM_PIPELINES_DIR", value_name = "DIR", default_value = DEFAULT_PIPELINES_DIR)]
    pub pipelines_dir: PathBuf,
    /// RTSP transport: tcp, udp or auto (as the camera setting)
    #[arg(long, value_parser = parse_transport)]
    pub transport: Option<Transport>,
    /// RTSP jitter buffer in ms (as the camera setting latency_ms)
    #[arg(long, value_name = "MS")]
    pub latency_ms: Option<u32>,
    /// Accept any TLS certificate (rtsps://, https://), as the camera
    /// setting tls_verify = false
    #[arg(long)]
    pub no_tls_verify: bool,
    /// Frame rate cap, and the poll rate of an HTTP snapshot source (as the
    /// camera setting max_fps)
    #[arg(long, value_name = "FPS")]
    pub max_fps: Option<u32>,
    /// Give up when no frame has arrived after this many seconds
    #[arg(long, default_value = "15", value_parser = parse_seconds, value_name = "SECS")]
    pub timeout: Duration,
}

fn parse_transport(text: &str) -> Result<Transport, String> {
    Transport::deserialize(text.into_deserializer())
        .map_err(|_: serde::de::value::Error| format!("\"{text}\" is not tcp, udp or auto"))
}

/// Probes the source and writes the report to `out`. The source's secrets
/// are masked in the report, in errors and (through `secrets`, the log
/// writer's) in log lines.
pub fn run(args: &ProbeArgs, secrets: &KnownSecrets, out: &mut impl Write) -> anyhow::Result<()> {
    secrets.learn(&Redactor::new(find_secrets(&args.source)));
    let mut camera = CameraConfig::new(CameraId::new("probe").expect("a valid id"));
    camera.source = Some(SourceValue::Text(args.source.clone()));
    camera.pipeline_file = args.pipeline_file.clone();
    camera.transport = args.transport;
    camera.latency_ms = args.latency_ms.map(i64::from);
    camera.tls_verify = args.no_tls_verify.then_some(false);
    camera.max_fps = args.max_fps.map(i64::from);
    let settings = camera
        .resolve(&Defaults::default(), &args.pipelines_dir)
        .map_err(|e| anyhow!(e))?;
    secrets.learn(&settings.redactor());
    let redactor = secrets.redactor();
    let shown = settings.source_display();
    writeln!(out, "source:      {shown}")?;
    if let Some(o) = &settings.pipeline {
        writeln!(out, "template:    {}", redactor.redact(&o.origin))?;
    }
    // The same walk as a camera's start: RTSP over TCP, then UDP if the
    // server refuses TCP; an HTTP source answering with one image is
    // polled for snapshots. So a failure reads as the camera's would.
    let source = settings.source.as_ref();
    let mut walk = TransportFallback::new(
        matches!(source, Some(Source::Rtsp { .. })),
        settings.transport,
        source.and_then(Source::forced_transport),
        None,
    );
    let mut snapshots = false;
    // And as a camera, once a hardware decoder fails: software.
    let mut decoding = DecoderFallback::default();
    let deadline = Instant::now() + args.timeout;
    let (report, plan) = loop {
        let attempt = Attempt {
            transport: walk.current(),
            snapshots,
            software_decoding: decoding.software(),
        };
        let plan = settings
            .plan_attempt(attempt)
            .map_err(|e| anyhow!(redactor.redact(&e.to_string())))?;
        let left = deadline.saturating_duration_since(Instant::now());
        match pipeline::probe(&plan, settings.scale, redactor.clone(), left) {
            Ok(report) => break (report, plan),
            Err(ProbeError::SingleImages) if !snapshots => snapshots = true,
            // The whole --timeout, not what was left of it for this attempt.
            Err(ProbeError::Timeout(_)) => {
                return Err(anyhow!(redactor.redact(&format!(
                    "{shown}: {}",
                    ProbeError::Timeout(args.timeout)
                ))));
            }
            Err(ProbeError::Pipeline(error)) => {
                if let Some(error) = decoding.failed(error).and_then(|e| walk.failed(e)) {
                    return Err(anyhow!(redactor.redact(&format!("{shown}: {error}"))));
                }
            }
            Err(error) => return Err(anyhow!(redactor.redact(&format!("{shown}: {error}")))),
        }
    };
    write_transport(&plan, walk.is_fallback(), out)?;
    write_report(&report, plan.managed.then_some(settings.scale), out)?;
    write_decoder(&report, decoding.reason(), &redactor, out)?;
    if plan.transport.is_some() {
        match report.other_tracks.as_slice() {
            [] => writeln!(out, "audio:       none")?,
            tracks => writeln!(
                out,
                "audio:       {} (ignored: camstream shows the video)",
                tracks.join(", ")
            )?,
        }
    }
    Ok(())
}

/// How camstream reads the source, for RTSP and HTTP sources.
fn write_transport(
    plan: &PipelinePlan,
    fell_back: bool,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let after = if fell_back {
        ", after the server refused the other"
    } else {
        ""
    };
    match (&plan.transport, &plan.http) {
        (Some(LowerTransport::Tcp), _) => writeln!(
            out,
            "transport:   tcp (RTP interleaved on the RTSP connection{after})"
        ),
        (Some(LowerTransport::Udp), _) => writeln!(out, "transport:   udp (RTP over UDP{after})"),
        (None, Some(HttpMode::Stream)) => {
            writeln!(
                out,
                "transport:   mjpeg (a multipart/x-mixed-replace stream)"
            )
        }
        (None, Some(HttpMode::Snapshots { interval, .. })) => writeln!(
            out,
            "transport:   snapshots (single JPEG images, polled every {} ms; max_fps sets the rate)",
            interval.as_millis()
        ),
        (None, None) => Ok(()),
    }
}

/// The video decoder the probe used, and the hardware one that failed
/// before it, if one did.
fn write_decoder(
    report: &ProbeReport,
    failed: Option<&pipeline::HardwareFailure>,
    redactor: &Redactor,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let Some(decoder) = &report.decoder else {
        return Ok(());
    };
    let kind = if decoder.hardware {
        "hardware"
    } else {
        "software"
    };
    writeln!(out, "decoder:     {} ({kind})", decoder.name)?;
    if let Some(failure) = failed.or(report.hardware_failure.as_ref()) {
        writeln!(
            out,
            "             after {}; a camera decodes in software from then on",
            redactor.redact(&failure.to_string())
        )?;
    }
    Ok(())
}

/// `scale` is None for a whole pipeline, which encodes its own frames.
fn write_report(
    report: &ProbeReport,
    scale: Option<f64>,
    out: &mut impl Write,
) -> std::io::Result<()> {
    writeln!(out, "codec:       {}", report.codec)?;
    writeln!(out, "resolution:  {}x{}", report.width, report.height)?;
    let declared = match report.framerate {
        Some((n, 1)) => format!("{n} fps"),
        Some((n, d)) => format!("{:.2} fps ({n}/{d})", f64::from(n) / f64::from(d)),
        None => "not declared (variable)".into(),
    };
    writeln!(
        out,
        "frame rate:  {declared}; measured {:.1} fps over {} s",
        report.measured_fps,
        MEASURE_FOR.as_secs()
    )?;
    if let Some((w, h)) = report.output {
        match scale {
            Some(scale) => writeln!(out, "camstream:   {w}x{h} JPEG frames (scale {scale})")?,
            None => writeln!(
                out,
                "camstream:   {w}x{h} JPEG frames, as the pipeline encodes them"
            )?,
        }
    }
    Ok(())
}
