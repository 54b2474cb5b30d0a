//! The only module with GStreamer types: build a camera's pipeline from its
//! rendered description, run it, report its bus events, and hand each
//! encoded frame to the camera's [`FrameHub`].
//!
//! Threading contract: [`Pipeline::build`], [`Pipeline::start`],
//! [`Pipeline::rewind`] and [`Pipeline::stop`] may block (plugin loading,
//! state changes, joining streaming threads) and are called from
//! `spawn_blocking`. The streaming-thread callbacks installed here never
//! block: they publish into a `watch` channel and bump atomics.

mod check;
mod errors;
mod hwdec;
mod jpegdec;
mod packages;
mod probe;
mod snapshot;
mod transport;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::frames::{FrameHub, FrameKind, PipelineStats, pack_size, unpack_size};
use crate::redact::Redactor;
use crate::source::{Credentials, HttpMode, LOWRES_DECODER, PipelinePlan, SNAPSHOT_SOURCE};

pub use check::{PlanCheck, check_plan, is_installed};
use errors::{ErrorContext, bus_error};
pub use hwdec::{
    Decoder, DecoderFallback, DecoderUse, DecoderWatch, Family, HardwareDecoder, HardwareFailure,
    classify, family_installed, survey as hardware_decoders,
};
pub use jpegdec::ELEMENT_NAME as DCT_JPEG_DECODER;
pub use packages::{debian_package, missing_element_hint};
pub use probe::{MEASURE_FOR, ProbeError, ProbeReport, probe};
use snapshot::{SnapshotPoller, SnapshotSource};
pub use transport::{FailureKind, TransportFailure, TransportFallback};

/// The application message camstream's HTTP source posts when the server
/// answers with a single JPEG image instead of an MJPEG stream.
const SINGLE_IMAGES: &str = "camstream-single-images";

/// Initialises GStreamer and registers camstream's own elements, once per
/// process. Safe to call repeatedly.
pub fn init() -> Result<(), PipelineError> {
    static REGISTERED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    gst::init().map_err(|e| PipelineError::Init(e.to_string()))?;
    REGISTERED
        .get_or_init(|| {
            jpegdec::register()
                .map_err(|e| format!("camstream's element {}: {e}", jpegdec::ELEMENT_NAME))
        })
        .clone()
        .map_err(PipelineError::Init)
}

/// Why a pipeline could not be built, started or kept running. Messages are
/// already redacted and say what to fix.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum PipelineError {
    #[error("GStreamer could not be initialised: {0}")]
    Init(String),
    #[error("invalid pipeline: {0}")]
    Syntax(String),
    /// The names of the elements that are not installed; shown with the
    /// Debian package for each.
    #[error("{}", .0.iter().map(|e| missing_element_hint(e)).collect::<Vec<_>>().join("; "))]
    MissingElement(Vec<String>),
    #[error(
        "the pipeline has no appsink named \"sink\": a whole-pipeline override must end in \
         `jpegenc ! appsink name=sink` (see pipelines/README.md)"
    )]
    NoSink,
    #[error("{0}")]
    Start(String),
    #[error("{0}")]
    Runtime(String),
    /// One RTSP lower transport did not work; another may (see
    /// [`TransportFallback`]).
    #[error("{0}")]
    Transport(TransportFailure),
    /// Every transport tried failed: says which, and what to check.
    #[error("{message}")]
    NoTransport { message: String },
    /// A hardware decoder decodebin plugged failed; software may work (see
    /// [`DecoderFallback`]).
    #[error("{0}")]
    HardwareDecoder(HardwareFailure),
}

impl PipelineError {
    /// Errors that retrying cannot fix: the pipeline text itself is wrong or
    /// needs software that is not installed. The camera is marked failed
    /// instead of reconnecting.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            PipelineError::Init(_)
                | PipelineError::Syntax(_)
                | PipelineError::MissingElement(_)
                | PipelineError::NoSink
        )
    }
}

/// What the bus says, reduced to what a camera supervisor acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PipelineEvent {
    Error(PipelineError),
    EndOfStream,
    /// The HTTP source answered with a single JPEG image, not an MJPEG
    /// stream: it serves snapshots, to be polled (`Attempt::snapshots`).
    SingleImages,
}

/// Where a pipeline's frames and counters go.
#[derive(Clone, Debug)]
pub struct FrameOutput {
    pub hub: Arc<FrameHub>,
    pub stats: Arc<PipelineStats>,
}

/// A built camera pipeline. Set to NULL by [`Pipeline::stop`] and, as a
/// safety net, on drop.
#[derive(Debug)]
pub struct Pipeline {
    pipeline: gst::Pipeline,
    redactor: Redactor,
    context: ErrorContext,
    snapshots: Mutex<Snapshots>,
    /// Which video decoder decodebin plugged, and whether a hardware one
    /// failed (`hwdec`).
    decoders: DecoderWatch,
}

/// The snapshot poller of a pipeline whose source serves single JPEGs.
#[derive(Debug)]
enum Snapshots {
    None,
    Ready(SnapshotSource),
    Running(SnapshotPoller),
}

impl Pipeline {
    /// Parses the plan's description and wires camstream into it: the
    /// appsink callback, the scale that follows the source's real size, the
    /// frame counters and the credentials.
    pub fn build(
        plan: &PipelinePlan,
        scale: f64,
        output: FrameOutput,
        redactor: Redactor,
    ) -> Result<Pipeline, PipelineError> {
        let (pipeline, sink) = parse(plan, &redactor)?;
        let decoders = hwdec::steer(&pipeline, plan.decoder);
        let context = ErrorContext {
            redactor: redactor.clone(),
            transport: plan.transport,
            tls_refused: Arc::new(AtomicU32::new(0)),
        };
        let mut pipeline = Pipeline {
            pipeline,
            redactor,
            context,
            snapshots: Mutex::new(Snapshots::None),
            decoders,
        };
        if let Some(credentials) = &plan.credentials {
            pipeline.set_credentials(credentials);
        }
        pipeline.watch_certificates(plan.tls_verify);
        pipeline.hide_frames_before_the_first_key_frame();
        match &plan.http {
            Some(HttpMode::Stream) => pipeline.watch_for_single_images(),
            Some(HttpMode::Snapshots { url, interval }) => {
                let appsrc = pipeline
                    .pipeline
                    .by_name(SNAPSHOT_SOURCE)
                    .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
                    .ok_or_else(|| {
                        PipelineError::Syntax(format!("camstream's {SNAPSHOT_SOURCE} is missing"))
                    })?;
                let bus = pipeline
                    .pipeline
                    .bus()
                    .expect("a pipeline always has a bus");
                let source = SnapshotSource::new(
                    appsrc,
                    bus,
                    url,
                    plan.credentials.as_ref(),
                    plan.tls_verify,
                    *interval,
                )?;
                *pipeline.snapshots.get_mut().expect("snapshots lock") = Snapshots::Ready(source);
            }
            None => {}
        }
        if plan.managed {
            pipeline.follow_source_size(scale, &output.stats)?;
        } else {
            // A whole-pipeline override must hand over JPEG; saying so in
            // the caps turns a wrong format into a negotiation error at
            // start rather than garbage in browsers.
            sink.set_caps(Some(&gst::Caps::new_empty_simple("image/jpeg")));
        }
        pipeline.time_encoder(&output.stats);
        install_appsink(&sink, output);
        Ok(pipeline)
    }

    /// Checks that the plan parses, that every element is installed and
    /// that it has `appsink name=sink`, without starting anything: a camera
    /// with a broken pipeline is reported at startup, not at its first
    /// viewer.
    pub fn validate(plan: &PipelinePlan) -> Result<(), PipelineError> {
        parse(plan, &Redactor::default()).map(drop)
    }

    /// Sets every element that takes `user-id`/`user-pw` (rtspsrc,
    /// souphttpsrc) to the source's credentials, unless the override set
    /// them itself.
    fn set_credentials(&self, credentials: &Credentials) {
        let mut elements = self.pipeline.iterate_recurse();
        while let Ok(Some(element)) = elements.next() {
            if element.has_property_with_type("user-id", glib_string_type())
                && element.has_property_with_type("user-pw", glib_string_type())
                && element
                    .property::<Option<String>>("user-id")
                    .is_none_or(|u| u.is_empty())
            {
                element.set_property("user-id", &credentials.user);
                element.set_property("user-pw", &credentials.password);
            }
        }
    }

    /// Decides, for every rtspsrc, what to do with a server certificate
    /// that fails validation (rtspsrc's `accept-certificate`, emitted only
    /// then): accept it if `tls_verify` is off, else refuse it and note
    /// why, so the connection error that follows can say so. rtspsrc's
    /// own message is "Failed to connect. (Generic error)".
    fn watch_certificates(&self, tls_verify: bool) {
        let mut elements = self.pipeline.iterate_recurse();
        while let Ok(Some(element)) = elements.next() {
            if element.factory().is_none_or(|f| f.name() != "rtspsrc") {
                continue;
            }
            let refused = Arc::clone(&self.context.tls_refused);
            element.connect("accept-certificate", false, move |args| {
                if !tls_verify {
                    return Some(true.to_value());
                }
                // GTlsCertificateFlags; 0x40 (generic error) if unreadable.
                let flags = args
                    .get(3)
                    .and_then(gst::glib::FlagsValue::from_value)
                    .map(|(_, set)| set.iter().fold(0, |all, v| all | v.value()))
                    .filter(|flags| *flags != 0)
                    .unwrap_or(0x40);
                refused.store(flags, Ordering::Relaxed);
                Some(false.to_value())
            });
        }
    }

    /// A camera joined mid-GOP (every start, since cameras send a key
    /// frame only every 1-10 s) makes FFmpeg's H.264/H.265 decoders output
    /// the frames before the first key frame anyway, concealed: grey smears
    /// that a viewer, and a snapshot, would get as the camera's first
    /// picture. So every libav video decoder the pipeline gets (decodebin
    /// adds them as it finds the codec) starts with `output-corrupt=false`,
    /// and the first frame it lets through turns it back on: after that, a
    /// frame damaged by packet loss is shown smeared rather than dropped,
    /// as a frozen picture until the next key frame could trip the
    /// watchdog on a camera with a long GOP.
    fn hide_frames_before_the_first_key_frame(&self) {
        self.pipeline.connect_deep_element_added(|_, _, element| {
            let is_libav_decoder = element.factory().is_some_and(|f| {
                f.name().starts_with("avdec_")
                    && f.has_type(
                        gst::ElementFactoryType::DECODER | gst::ElementFactoryType::MEDIA_VIDEO,
                    )
            });
            if !is_libav_decoder || !element.has_property("output-corrupt") {
                return;
            }
            element.set_property("output-corrupt", false);
            let Some(src) = element.static_pad("src") else {
                return;
            };
            let decoder = element.downgrade();
            src.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                if let Some(decoder) = decoder.upgrade() {
                    decoder.set_property("output-corrupt", true);
                }
                gst::PadProbeReturn::Remove
            });
        });
    }

    /// camstream's HTTP source expects an MJPEG stream; a server that
    /// answers with one JPEG image (`snapshot.jpg`) serves snapshots
    /// instead. The first bytes tell: a JPEG starts with FF D8, a multipart
    /// body with its boundary. The image is dropped and the supervisor
    /// told, which restarts the camera polling snapshots.
    fn watch_for_single_images(&self) {
        let mut elements = self.pipeline.iterate_recurse();
        let src = loop {
            match elements.next() {
                Ok(Some(e)) if e.factory().is_some_and(|f| f.name() == "souphttpsrc") => break e,
                Ok(Some(_)) => continue,
                _ => return,
            }
        };
        let Some(pad) = src.static_pad("src") else {
            return;
        };
        let posted = AtomicBool::new(false);
        let element = src.downgrade();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let jpeg = info
                .buffer()
                .and_then(|b| b.map_readable().ok())
                .is_some_and(|m| m.starts_with(&[0xFF, 0xD8]));
            if !jpeg {
                return gst::PadProbeReturn::Remove;
            }
            if !posted.swap(true, Ordering::Relaxed)
                && let Some(element) = element.upgrade()
            {
                let message =
                    gst::message::Application::builder(gst::Structure::new_empty(SINGLE_IMAGES))
                        .src(&element)
                        .build();
                let _ = element.post_message(message);
            }
            gst::PadProbeReturn::Drop
        });
    }

    /// Keeps the capsfilter after the scaler at `scale` x the source's real
    /// size. The size is known only once the decoder has negotiated caps,
    /// and can change mid-stream (a camera switching profiles), so a probe
    /// on the scaler's input rewrites the capsfilter before each new caps
    /// event reaches the scaler, which then renegotiates its output.
    fn follow_source_size(
        &self,
        scale: f64,
        stats: &Arc<PipelineStats>,
    ) -> Result<(), PipelineError> {
        let element = |name: &str| {
            self.pipeline.by_name(name).ok_or_else(|| {
                PipelineError::Syntax(format!("camstream's element {name} is missing"))
            })
        };
        let scaler_sink = element("camstream_scale")?
            .static_pad("sink")
            .ok_or_else(|| PipelineError::Syntax("videoconvertscale has no sink pad".into()))?;
        let (real_size, lowres) = self.follow_lowres_decoder();
        // Weak: the probe lives on a pad of the same pipeline; a strong
        // reference would keep the capsfilter alive after teardown.
        let capsfilter = element("camstream_caps")?.downgrade();
        let probe_stats = Arc::clone(stats);
        scaler_sink.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            let Some(gst::PadProbeData::Event(event)) = &info.data else {
                return gst::PadProbeReturn::Ok;
            };
            let gst::EventView::Caps(caps) = event.view() else {
                return gst::PadProbeReturn::Ok;
            };
            let decoded = caps
                .caps()
                .structure(0)
                .and_then(|s| Some((s.get::<i32>("width").ok()?, s.get::<i32>("height").ok()?)));
            // The scale applies to the camera's real size: after a
            // reduced-size decoder that is the size its input declared, or
            // failing that the decoded size times the reduction.
            let size = decoded.map(|(w, h)| {
                unpack_size(real_size.load(Ordering::Relaxed))
                    .map_or((w << lowres, h << lowres), |(w, h)| (w as i32, h as i32))
            });
            if let (Some((w, h)), Some(capsfilter)) = (size, capsfilter.upgrade()) {
                let (w, h) = (w.max(1) as u32, h.max(1) as u32);
                let (tw, th) = scaled_size(w, h, scale);
                probe_stats
                    .input_size
                    .store(pack_size(w, h), Ordering::Relaxed);
                let target = gst::Caps::builder("video/x-raw")
                    .field("width", tw as i32)
                    .field("height", th as i32)
                    .build();
                capsfilter.set_property("caps", &target);
            }
            gst::PadProbeReturn::Ok
        });
        self.fill_in_durations();
        // Count the frames that reach the tail; frames_in - frames_out is
        // what the leaky queue and appsink dropped to stay current.
        let queue_sink = element("camstream_queue")?
            .static_pad("sink")
            .ok_or_else(|| PipelineError::Syntax("queue has no sink pad".into()))?;
        let count_stats = Arc::clone(stats);
        queue_sink.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            count_stats.frames_in.fetch_add(1, Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });
        Ok(())
    }

    /// Gives every frame that reaches the `max_fps` cap a timestamp and a
    /// duration. A source with no frame rate (an HTTP MJPEG stream or
    /// snapshots: the caps say 0/1, the parts carry no duration, now and
    /// then no timestamp) makes GStreamer 1.22's videorate abort the whole
    /// process (gstvideorate.c:739-740, assertions
    /// `GST_BUFFER_PTS_IS_VALID (outbuf)` and `GST_BUFFER_DURATION_IS_VALID
    /// (outbuf)`). A frame without a timestamp gets the pipeline's running
    /// time, as `do-timestamp` would have given it; with one frame interval
    /// at the cap as the duration, videorate passes the next frame no
    /// sooner than that, so the cap holds.
    fn fill_in_durations(&self) {
        let Some(rate) = self.pipeline.by_name("camstream_rate") else {
            return;
        };
        let max_rate = rate.property::<i32>("max-rate").max(1) as u64;
        let Some(pad) = rate.static_pad("sink") else {
            return;
        };
        let interval = gst::ClockTime::SECOND / max_rate;
        let element = rate.downgrade();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let Some(buffer) = info.buffer_mut() else {
                return gst::PadProbeReturn::Ok;
            };
            if buffer.pts().is_none() {
                let Some(now) = element.upgrade().and_then(|e| e.current_running_time()) else {
                    return gst::PadProbeReturn::Drop;
                };
                buffer.make_mut().set_pts(now);
            }
            if buffer.duration().is_none_or(|d| d.is_zero()) {
                buffer.make_mut().set_duration(interval);
            }
            gst::PadProbeReturn::Ok
        });
    }

    /// Finds camstream's reduced-size JPEG decoder, if the pipeline has one,
    /// and follows the real size on its input. Returns that size (packed,
    /// 0 until known) and the decoder's reduction as a shift (1 = 1/2).
    fn follow_lowres_decoder(&self) -> (Arc<AtomicU64>, u32) {
        let real_size = Arc::new(AtomicU64::new(0));
        let Some(decoder) = self.pipeline.by_name(LOWRES_DECODER) else {
            return (real_size, 0);
        };
        // camstream's DCT decoder reduces by the fraction its max-scale
        // picks; avdec_mjpeg (in older templates) says it in `lowres`.
        let lowres = if decoder.has_property("max-scale") {
            crate::jpeg::dct_denominator(decoder.property::<f64>("max-scale")).trailing_zeros()
        } else if decoder.has_property("lowres") {
            decoder
                .property_value("lowres")
                .transform::<i32>()
                .ok()
                .and_then(|v| v.get::<i32>().ok())
                .map_or(0, |v| v.clamp(0, 3) as u32)
        } else {
            0
        };
        if let Some(pad) = decoder.static_pad("sink") {
            let store = Arc::clone(&real_size);
            pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
                if let Some(gst::PadProbeData::Event(event)) = &info.data
                    && let gst::EventView::Caps(caps) = event.view()
                    && let Some(s) = caps.caps().structure(0)
                    && let (Ok(w), Ok(h)) = (s.get::<i32>("width"), s.get::<i32>("height"))
                {
                    store.store(
                        pack_size(w.max(1) as u32, h.max(1) as u32),
                        Ordering::Relaxed,
                    );
                }
                gst::PadProbeReturn::Ok
            });
        }
        (real_size, lowres)
    }

    /// Measures jpegenc's time per frame into `stats.encode_time`: a probe
    /// on its input notes when a frame goes in, one on its output records
    /// the difference. jpegenc encodes inside its chain function and pushes
    /// the result before taking the next frame, so one start time is
    /// enough. Both probes only touch atomics. Pipelines without a jpegenc
    /// (a whole-pipeline override using another encoder) are not timed.
    fn time_encoder(&self, stats: &Arc<PipelineStats>) {
        let encoder = self.pipeline.by_name("camstream_enc").or_else(|| {
            let mut elements = self.pipeline.iterate_recurse();
            let mut found = None;
            while let Ok(Some(element)) = elements.next() {
                if element.factory().is_some_and(|f| f.name() == "jpegenc") {
                    found = Some(element);
                    break;
                }
            }
            found
        });
        let Some(encoder) = encoder else {
            return;
        };
        let (Some(sink), Some(src)) = (encoder.static_pad("sink"), encoder.static_pad("src"))
        else {
            return;
        };
        let epoch = std::time::Instant::now();
        let started = Arc::new(AtomicU64::new(0));
        let mark = Arc::clone(&started);
        sink.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            let now = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
            mark.store(now, Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });
        let stats = Arc::clone(stats);
        src.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            let now = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let began = started.load(Ordering::Relaxed);
            if began != 0 && now >= began {
                stats
                    .encode_time
                    .record(std::time::Duration::from_nanos(now - began));
            }
            gst::PadProbeReturn::Ok
        });
    }

    /// Starts playing. A state change that fails at once (device missing,
    /// element refusing its settings) is reported with the element's reason.
    pub fn start(&self) -> Result<(), PipelineError> {
        if self.pipeline.set_state(gst::State::Playing).is_err() {
            let error = self
                .pipeline
                .bus()
                .and_then(|bus| bus.pop_filtered(&[gst::MessageType::Error]))
                .and_then(|msg| match msg.view() {
                    gst::MessageView::Error(err) => Some(bus_error(err, &self.context)),
                    _ => None,
                });
            return Err(match error {
                Some(PipelineError::Runtime(reason)) => PipelineError::Start(reason),
                Some(other) => other,
                None => PipelineError::Start("the pipeline refused to start".into()),
            });
        }
        let mut snapshots = self.snapshots.lock().expect("snapshots lock");
        if let Snapshots::Ready(_) = &*snapshots
            && let Snapshots::Ready(source) = std::mem::replace(&mut *snapshots, Snapshots::None)
        {
            *snapshots = Snapshots::Running(source.start()?);
        }
        Ok(())
    }

    /// Bus events that matter to the supervisor. Warnings are logged here.
    pub fn events(&self) -> impl Stream<Item = PipelineEvent> + Send + Unpin + use<> {
        let bus = self.pipeline.bus().expect("a pipeline always has a bus");
        let redactor = self.redactor.clone();
        let context = self.context.clone();
        let weak = self.pipeline.downgrade();
        bus.stream().filter_map(move |msg| {
            let event = match msg.view() {
                gst::MessageView::Error(err) => {
                    Some(PipelineEvent::Error(bus_error(err, &context)))
                }
                gst::MessageView::Eos(_) => Some(PipelineEvent::EndOfStream),
                gst::MessageView::Application(app)
                    if app.structure().is_some_and(|s| s.name() == SINGLE_IMAGES) =>
                {
                    Some(PipelineEvent::SingleImages)
                }
                gst::MessageView::Warning(w) => {
                    tracing::warn!(
                        element = %msg.src().map(|s| s.name().to_string()).unwrap_or_default(),
                        "{}",
                        redactor.redact(&w.error().to_string())
                    );
                    None
                }
                // An element's latency changed (e.g. rtspsrc after the
                // first RTCP): redistribute, as gst-launch does.
                gst::MessageView::Latency(_) => {
                    if let Some(pipeline) = weak.upgrade() {
                        let _ = pipeline.recalculate_latency();
                    }
                    None
                }
                _ => None,
            };
            std::future::ready(event)
        })
    }

    /// Seeks back to the start: file sources loop instead of ending.
    pub fn rewind(&self) -> Result<(), PipelineError> {
        self.pipeline
            .seek_simple(
                gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT,
                gst::ClockTime::ZERO,
            )
            .map_err(|_| PipelineError::Runtime("the file cannot be rewound to loop it".into()))
    }

    /// Stops the pipeline and releases its threads, sockets and devices.
    /// Blocks until the streaming threads have stopped.
    pub fn stop(&self) {
        // The poller first: a request in flight is aborted, and nothing is
        // pushed into a pipeline going down.
        if let Snapshots::Running(poller) = &mut *self.snapshots.lock().expect("snapshots lock") {
            poller.stop();
        }
        if let Err(e) = self.pipeline.set_state(gst::State::Null) {
            tracing::warn!("pipeline did not stop cleanly: {e}");
        }
    }

    /// The video decoder this pipeline uses, and how a hardware one fared.
    pub fn decoders(&self) -> &DecoderWatch {
        &self.decoders
    }

    /// The GStreamer pipeline, for tests that poke at a running pipeline
    /// (e.g. changing a test source's resolution mid-stream).
    pub fn gst_pipeline(&self) -> &gst::Pipeline {
        &self.pipeline
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if let Ok(Snapshots::Running(poller)) = self.snapshots.get_mut() {
            poller.stop();
        }
        // Normally already NULL via stop(); a pipeline dropped in another
        // state leaks its threads and sockets.
        if self.pipeline.current_state() != gst::State::Null {
            let _ = self.pipeline.set_state(gst::State::Null);
        }
    }
}

/// Parses a plan's description into a pipeline and finds its appsink.
fn parse(
    plan: &PipelinePlan,
    redactor: &Redactor,
) -> Result<(gst::Pipeline, gst_app::AppSink), PipelineError> {
    init()?;
    let mut context = gst::ParseContext::new();
    let parsed = gst::parse::launch_full(
        &plan.description,
        Some(&mut context),
        // Without FATAL_ERRORS, a missing element yields a half-built
        // pipeline and a warning instead of an error.
        gst::ParseFlags::FATAL_ERRORS,
    )
    .map_err(|e| {
        let missing = context.missing_elements();
        if missing.is_empty() {
            PipelineError::Syntax(redactor.redact(&format!(
                "{} in \"{}\": check the gst-launch syntax (elements joined by !, properties as name=value)",
                e.message(),
                plan.body
            )))
        } else {
            PipelineError::MissingElement(missing)
        }
    })?;
    let pipeline = match parsed.downcast::<gst::Pipeline>() {
        Ok(pipeline) => pipeline,
        // A description of a single element parses to that element.
        Err(element) => {
            let pipeline = gst::Pipeline::new();
            pipeline
                .add(&element)
                .map_err(|e| PipelineError::Syntax(e.to_string()))?;
            pipeline
        }
    };
    let sink = pipeline
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or(PipelineError::NoSink)?;
    Ok((pipeline, sink))
}

/// Draws the picture viewers see while a camera is offline: `text`
/// centred on dark grey at the camera's output size, as a JPEG. Runs a
/// one-frame pipeline, so call it from a blocking thread.
pub fn render_placeholder(width: u32, height: u32, text: &str) -> Result<Bytes, PipelineError> {
    init()?;
    let description = format!(
        "videotestsrc pattern=solid-color foreground-color=0xff303030 num-buffers=1 \
         ! video/x-raw,width={width},height={height} \
         ! textoverlay name=text valignment=center halignment=center line-alignment=center \
           wrap-mode=word font-desc=\"Sans Bold 18\" shaded-background=false \
         ! jpegenc quality=80 ! appsink name=sink"
    );
    let pipeline = gst::parse::launch(&description)
        .map_err(|e| PipelineError::Runtime(format!("placeholder: {e}")))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| PipelineError::Runtime("placeholder: not a pipeline".into()))?;
    // Set as a property, not in the description: no quoting to get wrong.
    if let Some(overlay) = pipeline.by_name("text") {
        overlay.set_property("text", text);
    }
    let sink = pipeline
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or(PipelineError::NoSink)?;
    let result = pipeline
        .set_state(gst::State::Playing)
        .map_err(|_| PipelineError::Runtime("placeholder pipeline did not start".into()))
        .and_then(|_| {
            sink.try_pull_sample(gst::ClockTime::from_seconds(5))
                .and_then(|s| s.buffer_owned())
                .ok_or_else(|| PipelineError::Runtime("placeholder pipeline made no frame".into()))
        })
        .and_then(|buffer| {
            buffer
                .into_mapped_buffer_readable()
                .map(Bytes::from_owner)
                .map_err(|_| PipelineError::Runtime("placeholder frame unreadable".into()))
        });
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn glib_string_type() -> gst::glib::Type {
    gst::glib::Type::STRING
}

/// `scale` x the source's size, rounded to even numbers (4:2:0 JPEG needs
/// even dimensions) and at least 2x2.
pub fn scaled_size(width: u32, height: u32, scale: f64) -> (u32, u32) {
    let even = |v: u32| ((((v as f64) * scale) / 2.0).round() as u32 * 2).max(2);
    (even(width), even(height))
}

/// The appsink hands each encoded frame to the hub: the GStreamer buffer is
/// mapped once and shared by every viewer as `Bytes`, no copy.
fn install_appsink(sink: &gst_app::AppSink, output: FrameOutput) {
    // A bounded appsink that drops: if camstream ever falls behind, old
    // frames are discarded, never queued (the contract for overrides too).
    sink.set_max_buffers(1);
    sink.set_drop(true);
    sink.set_sync(false);
    let FrameOutput { hub, stats } = output;
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let Some(buffer) = sample.buffer_owned() else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let (width, height) = sample
                    .caps()
                    .and_then(|caps| caps.structure(0))
                    .and_then(|s| Some((s.get::<i32>("width").ok()?, s.get::<i32>("height").ok()?)))
                    .map_or((0, 0), |(w, h)| (w.max(0) as u32, h.max(0) as u32));
                let mapped = buffer
                    .into_mapped_buffer_readable()
                    .map_err(|_| gst::FlowError::Error)?;
                let len = mapped.len() as u64;
                stats.frames_out.fetch_add(1, Ordering::Relaxed);
                stats.bytes_out.fetch_add(len, Ordering::Relaxed);
                stats
                    .output_size
                    .store(pack_size(width, height), Ordering::Relaxed);
                hub.publish(Bytes::from_owner(mapped), width, height, FrameKind::Live);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_follows_the_source_and_stays_even() {
        assert_eq!(scaled_size(1920, 1080, 0.25), (480, 270));
        assert_eq!(scaled_size(1280, 720, 0.25), (320, 180));
        assert_eq!(scaled_size(640, 480, 0.5), (320, 240));
        assert_eq!(scaled_size(2560, 1440, 0.3), (768, 432));
        assert_eq!(scaled_size(4, 4, 0.1), (2, 2));
        // Odd results round to the nearest even number.
        assert_eq!(scaled_size(1000, 562, 0.25), (250, 140));
    }
}
