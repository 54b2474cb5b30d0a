//! The only module with GStreamer types: build a camera's pipeline from its
//! rendered description (parsed as a bin) and camstream's own elements
//! after it (`tail`), run it, report its bus events, and hand each encoded
//! frame to the camera's outputs, one [`FrameHub`] per size.
//!
//! [`FrameHub`]: crate::frames::FrameHub
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
mod tail;
mod transport;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::frames::PipelineStats;
use crate::outputs::Outputs;
use crate::redact::Redactor;
use crate::source::{Credentials, HttpMode, PipelinePlan, SNAPSHOT_SOURCE};
use tail::Tail;

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
    crate::logging::mask_gstreamer_output();
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
    /// A fragment whose output camstream cannot find.
    #[error("{0}")]
    NoOutput(String),
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
                | PipelineError::NoOutput(_)
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

/// Where a pipeline's frames and counters go: one output per size, and
/// the camera's counters.
#[derive(Clone, Debug)]
pub struct FrameOutput {
    pub outputs: Arc<Outputs>,
    pub stats: Arc<PipelineStats>,
}

impl FrameOutput {
    /// Outputs for a camera's settings, nobody watching: for building its
    /// pipeline outside a camera (tests, tools).
    pub fn for_settings(settings: &crate::config::CameraSettings, managed: bool) -> FrameOutput {
        FrameOutput {
            outputs: Arc::new(Outputs::new(
                Outputs::wanted(settings, managed),
                &tokio_util::sync::CancellationToken::new(),
            )),
            stats: Arc::default(),
        }
    }

    /// Outputs nobody reads: a default size at `scale` and `full`, for
    /// checking that a plan builds, and for probing.
    pub fn standalone(scale: f64) -> FrameOutput {
        let quality = crate::config::DEFAULT_QUALITY;
        FrameOutput {
            outputs: Arc::new(Outputs::new(
                Outputs::wanted_for(scale, quality),
                &tokio_util::sync::CancellationToken::new(),
            )),
            stats: Arc::default(),
        }
    }
}

/// A built camera pipeline. Set to NULL by [`Pipeline::stop`] and, as a
/// safety net, on drop.
#[derive(Debug)]
pub struct Pipeline {
    pipeline: gst::Pipeline,
    /// camstream's own part; None for a whole-pipeline override.
    tail: Option<Arc<Tail>>,
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
    /// Parses the plan's description as the source bin and builds
    /// camstream's part after it (or, for a whole-pipeline override, parses
    /// it and takes its appsink), then wires in the credentials, the
    /// certificate policy and the HTTP source's checks.
    pub fn build(
        plan: &PipelinePlan,
        output: FrameOutput,
        redactor: Redactor,
    ) -> Result<Pipeline, PipelineError> {
        init()?;
        let (pipeline, tail) = if plan.managed {
            let pipeline = gst::Pipeline::new();
            let source = parse_source(plan, &redactor)?;
            pipeline
                .add(&source)
                .map_err(|e| PipelineError::Syntax(e.to_string()))?;
            let tail = Tail::build(&pipeline, &source, plan, output.outputs, output.stats)?;
            connect_source(&source, &tail, plan, &redactor)?;
            (pipeline, Some(tail))
        } else {
            let (pipeline, sink) = parse_whole(plan, &redactor)?;
            whole_pipeline_output(&pipeline, &sink, &output);
            (pipeline, None)
        };
        let decoders = hwdec::steer(&pipeline, plan.decoder);
        let context = ErrorContext {
            redactor: redactor.clone(),
            transport: plan.transport,
            tls_refused: Arc::new(AtomicU32::new(0)),
        };
        let mut pipeline = Pipeline {
            pipeline,
            tail,
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
        Ok(pipeline)
    }

    /// Checks that the plan parses, that every element (the plan's and
    /// camstream's own) is installed and that a whole pipeline has
    /// `appsink name=sink`, without starting anything: a camera with a
    /// broken pipeline is reported at startup, not at its first viewer.
    pub fn validate(plan: &PipelinePlan) -> Result<(), PipelineError> {
        Pipeline::build(plan, FrameOutput::standalone(1.0), Redactor::default()).map(drop)
    }

    /// camstream's own elements and their links, one per line, in the order
    /// they were made (none for a whole-pipeline override): pinned by the
    /// golden tests. A head linked only once a dynamic source pad appears
    /// is not there before the pipeline runs.
    pub fn graph(&self) -> String {
        match &self.tail {
            Some(tail) => tail.graph(),
            None => "a whole pipeline: camstream adds no element; its appsink name=sink hands \
                     over the JPEG frames of the one size\n"
                .to_string(),
        }
    }

    /// The caps of the frames entering camstream's part once they flow:
    /// raw video, or the source's JPEG images.
    pub fn input_caps(&self) -> Option<gst::Caps> {
        self.tail.as_ref()?.input_caps()
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

/// The error for a description GStreamer could not parse.
fn parse_error(
    plan: &PipelinePlan,
    redactor: &Redactor,
    error: &gst::glib::Error,
    context: &gst::ParseContext,
) -> PipelineError {
    // GStreamer also lists an installed element as missing when one of
    // its properties could not be set (no such property, a value it does
    // not take): only a parse that failed for want of an element is one.
    let missing = context.missing_elements();
    match error.kind::<gst::ParseError>() {
        Some(gst::ParseError::NoSuchElement) if !missing.is_empty() => {
            PipelineError::MissingElement(missing)
        }
        Some(gst::ParseError::NoSuchProperty | gst::ParseError::CouldNotSetProperty) => {
            PipelineError::Syntax(redactor.redact(&format!(
                "{} in \"{}\": `gst-inspect-1.0 ELEMENT` lists an element's properties and the values each takes",
                error.message(),
                plan.description
            )))
        }
        _ => PipelineError::Syntax(redactor.redact(&format!(
            "{} in \"{}\": check the gst-launch syntax (elements joined by !, properties as name=value)",
            error.message(),
            plan.description
        ))),
    }
}

/// Parses a whole-pipeline override and finds its appsink.
fn parse_whole(
    plan: &PipelinePlan,
    redactor: &Redactor,
) -> Result<(gst::Pipeline, gst_app::AppSink), PipelineError> {
    let mut context = gst::ParseContext::new();
    let parsed = gst::parse::launch_full(
        &plan.description,
        Some(&mut context),
        // Without FATAL_ERRORS, a missing element yields a half-built
        // pipeline and a warning instead of an error.
        gst::ParseFlags::FATAL_ERRORS,
    )
    .map_err(|e| parse_error(plan, redactor, &e, &context))?;
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

/// Parses the source fragment or the user's override as a bin named
/// `source`, its unlinked output pad ghosted as `src`. Only the output:
/// gst_parse would also ghost an input pad that is unlinked only until a
/// delayed link (the capsfilter after multipartdemux or decodebin), which
/// that link then could not take.
fn parse_source(plan: &PipelinePlan, redactor: &Redactor) -> Result<gst::Bin, PipelineError> {
    let mut context = gst::ParseContext::new();
    let bin = gst::parse::bin_from_description_with_name_full(
        &plan.description,
        false,
        "source",
        Some(&mut context),
        gst::ParseFlags::FATAL_ERRORS,
    )
    .map_err(|e| parse_error(plan, redactor, &e, &context))?
    .downcast::<gst::Bin>()
    .map_err(|_| PipelineError::Syntax("the description did not parse to a bin".into()))?;
    if let Some(pad) = unlinked_output(&bin) {
        let ghost = gst::GhostPad::builder_with_target(&pad)
            .map_err(|e| PipelineError::Syntax(e.to_string()))?
            .name("src")
            .build();
        bin.add_pad(&ghost)
            .map_err(|e| PipelineError::Syntax(e.to_string()))?;
    }
    Ok(bin)
}

/// An output pad of one of the bin's own elements that nothing is linked
/// to. Not `gst_bin_find_unlinked_pad`, which also looks inside child bins
/// and would take decodebin's internal typefind output.
fn unlinked_output(bin: &gst::Bin) -> Option<gst::Pad> {
    let mut elements = bin.iterate_elements();
    while let Ok(Some(element)) = elements.next() {
        if let Some(pad) = element.src_pads().into_iter().find(|p| !p.is_linked()) {
            return Some(pad);
        }
    }
    None
}

/// Links the source bin's output to camstream's part. A bin whose last
/// element creates its output pad only while playing (decodebin,
/// multipartdemux, rtspsrc alone) gets a ghost pad now and its target, and
/// camstream's head, once the pad appears.
fn connect_source(
    source: &gst::Bin,
    tail: &Arc<Tail>,
    plan: &PipelinePlan,
    redactor: &Redactor,
) -> Result<(), PipelineError> {
    if let Some(pad) = source.static_pad("src") {
        return tail.link_source(&pad);
    }
    let Some(element) = dynamic_output(source) else {
        return Err(PipelineError::NoOutput(redactor.redact(&format!(
            "\"{}\" has no output for camstream: end it with an element that outputs raw video \
             (e.g. ! videoconvert) or JPEG images (e.g. ! image/jpeg), or make it a whole pipeline \
             ending in appsink name=sink (see pipelines/README.md)",
            plan.description
        ))));
    };
    let ghost = gst::GhostPad::builder(gst::PadDirection::Src)
        .name("src")
        .build();
    source
        .add_pad(&ghost)
        .map_err(|e| PipelineError::Syntax(e.to_string()))?;
    // Weak: the handler lives on an element of the same pipeline, and the
    // tail holds the pipeline.
    let tail = Arc::downgrade(tail);
    let ghost = ghost.downgrade();
    element.connect_pad_added(move |element, pad| {
        let (Some(tail), Some(ghost)) = (tail.upgrade(), ghost.upgrade()) else {
            return;
        };
        // One output: a second pad (another stream of the source) is
        // left alone while the first one is there.
        if pad.direction() != gst::PadDirection::Src || ghost.target().is_some() {
            return;
        }
        let linked = ghost
            .set_target(Some(pad))
            .map_err(|e| PipelineError::Runtime(e.to_string()))
            .and_then(|()| tail.link_source(ghost.upcast_ref()));
        if let Err(error) = linked {
            let message =
                gst::message::Error::builder(gst::CoreError::Negotiation, &error.to_string())
                    .src(element)
                    .build();
            let _ = element.post_message(message);
        }
    });
    Ok(())
}

/// The element of a source bin whose output pad appears while playing:
/// one with a "sometimes" source pad and no linked output. Of several
/// (`rtspsrc ! ... ! decodebin`), the one that takes an input: the source
/// element's pads will be linked to it by the parser's delayed link.
fn dynamic_output(source: &gst::Bin) -> Option<gst::Element> {
    let mut candidates = Vec::new();
    let mut elements = source.iterate_elements();
    while let Ok(Some(element)) = elements.next() {
        let sometimes = element.pad_template_list().iter().any(|t| {
            t.direction() == gst::PadDirection::Src && t.presence() == gst::PadPresence::Sometimes
        });
        let linked = element.src_pads().iter().any(|p| p.is_linked());
        if sometimes && !linked {
            let downstream = !element.sink_pads().is_empty();
            candidates.push((element, downstream));
        }
    }
    let downstream: Vec<_> = candidates.iter().filter(|(_, d)| *d).collect();
    match (downstream.as_slice(), candidates.as_slice()) {
        ([(element, _)], _) | ([], [(element, _)]) => Some(element.clone()),
        _ => None,
    }
}

/// The appsink of a whole-pipeline override hands its frames to the
/// camera's one output. It must hand over JPEG; saying so in the caps
/// turns a wrong format into a negotiation error at start rather than
/// garbage in browsers. Its jpegenc, if it has one, is timed.
fn whole_pipeline_output(pipeline: &gst::Pipeline, sink: &gst_app::AppSink, output: &FrameOutput) {
    sink.set_caps(Some(&gst::Caps::new_empty_simple("image/jpeg")));
    // A bounded appsink that drops: if camstream ever falls behind, old
    // frames are discarded, never queued (the contract for overrides too).
    sink.set_max_buffers(1);
    sink.set_drop(true);
    sink.set_sync(false);
    let default = Arc::clone(output.outputs.default_output());
    let mut elements = pipeline.iterate_recurse();
    while let Ok(Some(element)) = elements.next() {
        if element.factory().is_some_and(|f| f.name() == "jpegenc") {
            let _ = tail::time_encoder(&element, &default);
            break;
        }
    }
    let stats = Arc::clone(&output.stats);
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                stats.source_frames.fetch_add(1, Ordering::Relaxed);
                let (width, height) = sample
                    .caps()
                    .and_then(|caps| caps.structure(0))
                    .and_then(tail::size_of)
                    .unwrap_or((0, 0));
                let Some(buffer) = sample.buffer_owned() else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let mapped = buffer
                    .into_mapped_buffer_readable()
                    .map_err(|_| gst::FlowError::Error)?;
                // The pipeline encodes whether watched or not (it is the
                // user's); what nobody watches is not published.
                if default.wants_frames() {
                    default.stats().frames_in.fetch_add(1, Ordering::Relaxed);
                    default.publish(Bytes::from_owner(mapped), width, height);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
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
