//! `camstream probe`: run a camera's pipeline until its first frames and
//! report what the source sends (codec, resolution, frame rate), then stop.
//!
//! The pipeline is built by [`Pipeline::build`] from the same plan a camera
//! uses, so a probe that works means the camera will.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;

use super::{
    DecoderUse, FrameOutput, HardwareFailure, Pipeline, PipelineError, SINGLE_IMAGES, bus_error,
};
use crate::frames::PipelineStats;
use crate::outputs::Output;
use crate::redact::Redactor;
use crate::source::PipelinePlan;

/// How long frames are counted after the first one to measure the rate:
/// two seconds puts a 30 fps measurement within about 1 fps, while a probe
/// still answers in a few seconds.
pub const MEASURE_FOR: Duration = Duration::from_secs(2);

/// How often the bus is polled while waiting for frames: short enough not to
/// add noticeable time to a probe, long enough not to spin.
const POLL: Duration = Duration::from_millis(50);

/// What a source sends, as camstream sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeReport {
    /// The coded format before decoding, e.g. "H.264 (video/x-h264,
    /// profile high)", or "raw video (video/x-raw, format YUY2)".
    pub codec: String,
    /// The decoded picture size, which camstream's scale follows.
    pub width: u32,
    pub height: u32,
    /// The frame rate the stream declares, as a fraction; None when it
    /// declares none (0/1, variable rate).
    pub framerate: Option<(i32, i32)>,
    /// Frames per second counted over [`MEASURE_FOR`].
    pub measured_fps: f64,
    /// The size of the JPEG frames camstream would serve.
    pub output: Option<(u32, u32)>,
    /// The tracks of an RTSP source besides the video camstream shows,
    /// e.g. "audio (PCMA, 8000 Hz)"; camstream sets them up and ignores
    /// them.
    pub other_tracks: Vec<String>,
    /// The video decoder that decoded the first frames, if any.
    pub decoder: Option<DecoderUse>,
    /// A hardware decoder that failed to start before it, if one did
    /// (decodebin then plugged the next decoder by itself).
    pub hardware_failure: Option<HardwareFailure>,
}

/// Why a probe found no picture.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(
        "no frame within {} s: the source accepted the connection but sent nothing camstream \
         could decode in time (a slow camera may need a longer --timeout)",
        .0.as_secs_f64()
    )]
    Timeout(Duration),
    #[error("the source ended before its first frame: it holds no video camstream can decode")]
    Ended,
    /// The HTTP source answered with a single JPEG image: probe it again
    /// polling snapshots.
    #[error("the HTTP source serves single JPEG images, not an MJPEG stream")]
    SingleImages,
}

/// Builds and plays `plan` until the first frame, or until `timeout`, then
/// measures the frame rate for [`MEASURE_FOR`] and stops. Blocks: call it
/// from a plain thread or `spawn_blocking`.
pub fn probe(
    plan: &PipelinePlan,
    scale: f64,
    redactor: Redactor,
    timeout: Duration,
) -> Result<ProbeReport, ProbeError> {
    let output = FrameOutput::standalone(scale);
    let stats = Arc::clone(&output.stats);
    // Watched, as by a viewer, so the default size is encoded.
    let default = Arc::clone(output.outputs.default_output());
    default.attach();
    let pipeline = Pipeline::build(plan, output, redactor)?;
    let tracks = watch_other_tracks(&pipeline);
    let result =
        run(&pipeline, plan.managed, &stats, &default, timeout).map(|report| ProbeReport {
            other_tracks: tracks.lock().map(|t| t.clone()).unwrap_or_default(),
            ..report
        });
    pipeline.stop();
    result
}

fn run(
    pipeline: &Pipeline,
    managed: bool,
    stats: &PipelineStats,
    default: &Output,
    timeout: Duration,
) -> Result<ProbeReport, ProbeError> {
    let bus = pipeline
        .pipeline
        .bus()
        .expect("a pipeline always has a bus");
    // Frames reaching camstream, before any size's leaky queue: the
    // source's own rate.
    let counter = &stats.source_frames;
    pipeline.start()?;

    let deadline = Instant::now() + timeout;
    while default.stats().frames_out.load(Ordering::Relaxed) == 0 {
        if Instant::now() >= deadline {
            return Err(ProbeError::Timeout(timeout));
        }
        if poll_bus(&bus, pipeline)? {
            return Err(ProbeError::Ended);
        }
    }

    let first = counter.load(Ordering::Relaxed);
    let started = Instant::now();
    while started.elapsed() < MEASURE_FOR {
        // A short file may end while being measured: count what it played.
        if poll_bus(&bus, pipeline)? {
            break;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let measured_fps = (counter.load(Ordering::Relaxed) - first) as f64 / elapsed;

    let input_caps = if managed {
        pipeline.input_caps()
    } else {
        pad_caps(pipeline, "sink", "sink")
    };
    let input = input_caps.as_ref().and_then(|c| c.structure(0));
    // The source's real size, as camstream's part noted it where frames
    // enter it (a JPEG's own size, before any reduced-size decode).
    let (width, height) = managed
        .then(|| stats.input())
        .flatten()
        .or_else(|| input.and_then(size_of))
        .unwrap_or_default();
    let framerate = input
        .and_then(|s| s.get::<gst::Fraction>("framerate").ok())
        .filter(|f| f.numer() > 0)
        .map(|f| (f.numer(), f.denom()));
    let codec = coded_caps(pipeline)
        .or(input_caps)
        .and_then(|caps| caps.structure(0).map(describe_codec))
        .unwrap_or_else(|| "unknown".into());
    let output = default.stats().output();
    Ok(ProbeReport {
        codec,
        width,
        height,
        framerate,
        measured_fps,
        output,
        other_tracks: Vec::new(),
        decoder: pipeline.decoders().in_use(),
        hardware_failure: pipeline.decoders().failed_to_start(),
    })
}

/// Waits up to [`POLL`] for an error or the end of the stream; true when
/// the stream ended.
fn poll_bus(bus: &gst::Bus, pipeline: &Pipeline) -> Result<bool, ProbeError> {
    let Some(msg) = bus.timed_pop_filtered(
        gst::ClockTime::from_mseconds(POLL.as_millis() as u64),
        &[
            gst::MessageType::Error,
            gst::MessageType::Eos,
            gst::MessageType::Application,
        ],
    ) else {
        return Ok(false);
    };
    match msg.view() {
        gst::MessageView::Error(err) => {
            Err(ProbeError::Pipeline(bus_error(err, &pipeline.context)))
        }
        gst::MessageView::Application(app) => {
            if app.structure().is_some_and(|s| s.name() == SINGLE_IMAGES) {
                Err(ProbeError::SingleImages)
            } else {
                Ok(false)
            }
        }
        _ => Ok(true),
    }
}

/// Notes the RTP streams an RTSP source offers besides video (an audio
/// track), from the caps rtspsrc's `select-stream` gives for each stream
/// of the SDP before setting them up: "audio (PCMA, 8000 Hz)". Every
/// stream is still set up, as for a camera.
fn watch_other_tracks(pipeline: &Pipeline) -> Arc<Mutex<Vec<String>>> {
    let tracks = Arc::new(Mutex::new(Vec::new()));
    let mut elements = pipeline.pipeline.iterate_recurse();
    while let Ok(Some(element)) = elements.next() {
        if element.factory().is_none_or(|f| f.name() != "rtspsrc") {
            continue;
        }
        let tracks = Arc::clone(&tracks);
        element.connect("select-stream", false, move |args| {
            let caps = args.get(2).and_then(|v| v.get::<gst::Caps>().ok());
            if let Some(s) = caps.as_ref().and_then(|c| c.structure(0)) {
                let media = s.get::<&str>("media").unwrap_or("unknown");
                if media != "video" {
                    let encoding = s.get::<&str>("encoding-name").unwrap_or("unknown codec");
                    let track = match s.get::<i32>("clock-rate") {
                        Ok(rate) => format!("{media} ({encoding}, {rate} Hz)"),
                        Err(_) => format!("{media} ({encoding})"),
                    };
                    if let Ok(mut tracks) = tracks.lock() {
                        tracks.push(track);
                    }
                }
            }
            Some(true.to_value())
        });
    }
    tracks
}

/// The negotiated caps on a named element's pad.
fn pad_caps(pipeline: &Pipeline, element: &str, pad: &str) -> Option<gst::Caps> {
    pipeline
        .pipeline
        .by_name(element)?
        .static_pad(pad)?
        .current_caps()
}

/// The caps going into the first decoder, wherever decodebin put it: the
/// stream as the source sends it. ("Codec/Decoder", as decodebin itself is
/// a "Generic/Bin/Decoder" whose input may still be RTP.)
fn coded_caps(pipeline: &Pipeline) -> Option<gst::Caps> {
    let mut elements = pipeline.pipeline.iterate_recurse();
    while let Ok(Some(element)) = elements.next() {
        let is_decoder = element
            .factory()
            .is_some_and(|f| f.klass().contains("Codec/Decoder"));
        if is_decoder && let Some(caps) = element.static_pad("sink").and_then(|p| p.current_caps())
        {
            return Some(caps);
        }
    }
    None
}

fn size_of(s: &gst::StructureRef) -> Option<(u32, u32)> {
    let w = s.get::<i32>("width").ok()?;
    let h = s.get::<i32>("height").ok()?;
    Some((w.max(0) as u32, h.max(0) as u32))
}

/// "H.264 (video/x-h264, profile high)": a name people know, then the caps
/// name and the detail that tells streams apart.
fn describe_codec(s: &gst::StructureRef) -> String {
    let media = s.name().as_str();
    let name = match media {
        "video/x-h264" => "H.264",
        "video/x-h265" => "H.265",
        "image/jpeg" => "JPEG",
        "video/x-vp8" => "VP8",
        "video/x-vp9" => "VP9",
        "video/x-av1" => "AV1",
        "video/mpeg" => "MPEG video",
        "video/x-raw" => "raw video",
        other => other,
    };
    let mut detail = vec![media.to_string()];
    if let Ok(profile) = s.get::<&str>("profile") {
        detail.push(format!("profile {profile}"));
    }
    if let Ok(version) = s.get::<i32>("mpegversion") {
        detail.push(format!("mpegversion {version}"));
    }
    if let Ok(format) = s.get::<&str>("format") {
        detail.push(format!("format {format}"));
    }
    format!("{name} ({})", detail.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codecs_are_named() {
        super::super::init().unwrap();
        let caps = gst::Caps::builder("video/x-h264")
            .field("profile", "high")
            .build();
        assert_eq!(
            describe_codec(caps.structure(0).unwrap()),
            "H.264 (video/x-h264, profile high)"
        );
        let caps = gst::Caps::builder("video/x-raw")
            .field("format", "YUY2")
            .build();
        assert_eq!(
            describe_codec(caps.structure(0).unwrap()),
            "raw video (video/x-raw, format YUY2)"
        );
    }
}
