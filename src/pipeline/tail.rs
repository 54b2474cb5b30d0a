//! camstream's own part of a camera's pipeline, after the source bin:
//! built from typed elements, linked in code, kept as handles.
//!
//! ```text
//! source bin, raw video ─▶ [videorate] ─────────────────────────────────▶ raw tee
//! source bin, JPEG ─▶ [videorate] ─▶ jpeg tee ─┬─▶ queue ─▶ appsink   passthrough
//!                                              └─▶ queue ─▶ JPEG decoder ─▶ raw tee
//! raw tee ─┬─▶ queue ─▶ videoconvertscale ─▶ capsfilter ─▶ jpegenc ─▶ appsink   default
//!          ├─▶ ... one such branch per size ...                                  thumb, large
//!          └─▶ ... full, one frame per snapshot request ...                      full
//! ```
//!
//! (videorate: `max_fps`, before anything is decoded.) JPEG frames need
//! no parser: every JPEG source camstream builds delivers one whole image
//! per buffer (multipartdemux, v4l2src, rtpjpegdepay, appsrc); the few
//! bytes some cameras put around the image are trimmed, and the size is
//! read from each frame's header, which costs a few hundred bytes of
//! reading where jpegparse scanned every byte of every frame (half the CPU
//! of passing 1080p MJPEG through).
//!
//! Which of the two heads applies is known only from the caps of the
//! source bin's output, which for a bin ending in decodebin exist only once
//! it adds its pad; the head is then linked from that pad's handler.
//! Everything after the raw tee is built up front.
//!
//! Each branch's pad on a tee carries a gate (a buffer probe) that drops
//! every frame while nobody wants that output, so a size nobody watches
//! costs a probe call per frame and a sleeping queue thread; a branch comes
//! back the moment its output is wanted again. Each branch has its own
//! leaky one-buffer queue, hence its own thread: one slow size never delays
//! another, and a slow encoder drops frames rather than queueing them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::{DCT_JPEG_DECODER, PipelineError, scaled_size};
use crate::frames::{PipelineStats, pack_size, unpack_size};
use crate::outputs::{Kind, Output, Outputs};
use crate::source::{JpegDecoder, PipelinePlan};

/// What a source bin's output carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Carries {
    Raw,
    Jpeg,
}

impl Carries {
    /// JPEG when every structure of `caps` is `image/jpeg`; anything else
    /// (raw video, or caps not known yet) goes the raw way, as the
    /// override contract says a fragment ends in raw video.
    pub(super) fn of(caps: &gst::CapsRef) -> Carries {
        let jpeg =
            !caps.is_empty() && !caps.is_any() && caps.iter().all(|s| s.name() == "image/jpeg");
        if jpeg { Carries::Jpeg } else { Carries::Raw }
    }
}

/// One element camstream made, with what it set, for the graph dump.
#[derive(Debug)]
struct Made {
    element: gst::Element,
    factory: String,
    settings: String,
}

/// camstream's part of one pipeline.
#[derive(Debug)]
pub(super) struct Tail {
    pipeline: gst::Pipeline,
    /// The source fragment or override, parsed as a bin.
    source: gst::Bin,
    outputs: Arc<Outputs>,
    stats: Arc<PipelineStats>,
    max_fps: Option<u32>,
    jpeg_decoder: JpegDecoder,
    raw_tee: gst::Element,
    /// Every element made, in order, for [`Tail::graph`].
    made: Mutex<Vec<Made>>,
    /// The head, once linked.
    head: Mutex<Option<Carries>>,
    /// Where frames enter camstream's part (the raw tee's input, or the
    /// JPEG parser's output), once linked.
    entry: Mutex<Option<gst::Pad>>,
}

impl Tail {
    /// Builds the raw tee and one encoding branch per output, in
    /// `pipeline`; the head is linked later by [`Tail::link_source`].
    pub(super) fn build(
        pipeline: &gst::Pipeline,
        source: &gst::Bin,
        plan: &PipelinePlan,
        outputs: Arc<Outputs>,
        stats: Arc<PipelineStats>,
    ) -> Result<Arc<Tail>, PipelineError> {
        let raw_tee = make("tee", "raw-tee", &[])?;
        let tail = Tail {
            pipeline: pipeline.clone(),
            source: source.clone(),
            outputs,
            stats,
            max_fps: plan.max_fps,
            jpeg_decoder: plan.jpeg_decoder,
            raw_tee: raw_tee.clone(),
            made: Mutex::new(Vec::new()),
            head: Mutex::new(None),
            entry: Mutex::new(None),
        };
        tail.add(&raw_tee, "tee", "")?;
        for output in tail.outputs.iter() {
            tail.encode_branch(output)?;
        }
        Ok(Arc::new(tail))
    }

    /// Links the source bin's output `pad` to the head its caps call for:
    /// at build time for a static pad, from the pad-added handler for a
    /// dynamic one. A second output pad (decodebin after a stream change)
    /// of the same kind is taken by the caller retargeting its ghost pad;
    /// one of another kind is an error.
    pub(super) fn link_source(&self, pad: &gst::Pad) -> Result<(), PipelineError> {
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let carries = Carries::of(&caps);
        let mut head = self.head.lock().unwrap_or_else(PoisonError::into_inner);
        match *head {
            Some(linked) if linked == carries => return Ok(()),
            Some(linked) => {
                return Err(PipelineError::Runtime(format!(
                    "the source changed from {linked:?} to {carries:?} output mid-stream; restarting"
                )));
            }
            None => {}
        }
        let first_new = self
            .made
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        match carries {
            Carries::Raw => self.raw_head(pad)?,
            Carries::Jpeg => self.jpeg_head(pad)?,
        }
        for output in self.outputs.iter() {
            output.set_passthrough(
                carries == Carries::Jpeg
                    && (output.kind() == Kind::Snapshot || output.spec().scale >= 1.0),
            );
        }
        *head = Some(carries);
        // Downstream first, so no element receives data before it can
        // take it. (A no-op while the pipeline is still being built.)
        let made = self.made.lock().unwrap_or_else(PoisonError::into_inner);
        for new in made[first_new..].iter().rev() {
            new.element
                .sync_state_with_parent()
                .map_err(|e| PipelineError::Runtime(format!("{}: {e}", new.factory)))?;
        }
        Ok(())
    }

    /// The `max_fps` cap, if the camera has one, after `entry`; returns
    /// what follows it. Before anything is decoded, so a frame over the cap
    /// costs nothing. (JPEG caps without a frame rate get one, 0/1, on
    /// their way in: see [`give_a_frame_rate`].)
    fn rate_cap(&self, entry: &gst::Pad) -> Result<gst::Pad, PipelineError> {
        let Some(fps) = self.max_fps else {
            return Ok(entry.clone());
        };
        let rate = self.make_added(
            "videorate",
            "rate",
            &[("drop-only", "true"), ("max-rate", &fps.to_string())],
        )?;
        fill_in_durations(&rate);
        link(entry, &rate)?;
        static_pad(&rate, "src")
    }

    /// Raw video goes straight to the raw tee; its caps are the source's
    /// real size.
    fn raw_head(&self, entry: &gst::Pad) -> Result<(), PipelineError> {
        let entry = &self.rate_cap(entry)?;
        let sink = static_pad(&self.raw_tee, "sink")?;
        count_source_frames(&sink, &self.stats);
        *self.entry.lock().unwrap_or_else(PoisonError::into_inner) = Some(sink.clone());
        entry
            .link(&sink)
            .map(drop)
            .map_err(|e| PipelineError::Runtime(format!("cannot link the source's output: {e}")))
    }

    /// JPEG images: passed through to the outputs that take them as they
    /// are, and decoded for the rest.
    fn jpeg_head(&self, entry: &gst::Pad) -> Result<(), PipelineError> {
        give_a_frame_rate(entry);
        let capped = self.rate_cap(entry)?;
        let tee = self.make_added("tee", "jpeg-tee", &[])?;
        link(&capped, &tee)?;
        note_jpeg_frames(&capped, &self.stats);
        *self.entry.lock().unwrap_or_else(PoisonError::into_inner) = Some(capped);

        // Passthrough: the source's frames, untouched but for Huffman
        // tables, for `full` snapshots and sizes at scale 1.
        let queue = self.queue("passthrough-queue")?;
        let sink = self.appsink("passthrough-sink")?;
        link_elements(&queue, &sink)?;
        let outputs = Arc::clone(&self.outputs);
        gate(&tee, &queue, move || {
            outputs
                .iter()
                .any(|o| o.is_passthrough() && o.wants_frames())
        })?;
        let outputs = Arc::clone(&self.outputs);
        let stats = Arc::clone(&self.stats);
        sink.downcast_ref::<gst_app::AppSink>()
            .expect("an appsink")
            .set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        let Some((jpeg, width, height)) =
                            sample.buffer_owned().and_then(passthrough_bytes)
                        else {
                            return Ok(gst::FlowSuccess::Ok);
                        };
                        let frame = stats.source_frames.load(Ordering::Relaxed);
                        for output in outputs.iter() {
                            output.publish_passthrough(frame, &jpeg, width, height);
                        }
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            );

        // Decoding, for every size camstream scales and encodes. Its own
        // thread (the queue), so passthrough never waits for a decode.
        let queue = self.queue("decode-queue")?;
        let decoder = match self.jpeg_decoder {
            JpegDecoder::Dct => {
                let largest = self.largest_encoded_scale().unwrap_or(1.0);
                let decoder = self.make_added(
                    DCT_JPEG_DECODER,
                    "decoder",
                    &[("max-scale", &largest.to_string())],
                )?;
                self.follow_largest_size(&queue, &decoder)?;
                decoder
            }
            JpegDecoder::Full => self.make_added("jpegdec", "decoder", &[])?,
        };
        link_elements(&queue, &decoder)?;
        link_elements(&decoder, &self.raw_tee)?;
        let outputs = Arc::clone(&self.outputs);
        gate(&tee, &queue, move || {
            outputs
                .iter()
                .any(|o| !o.is_passthrough() && o.wants_frames())
        })?;
        Ok(())
    }

    /// Keeps the DCT decoder's `max-scale` at the largest size being
    /// encoded now, checked before each frame is decoded, so it decodes no
    /// more than that size needs (it renegotiates when the fraction
    /// changes; every branch's scale follows the real size).
    fn follow_largest_size(
        &self,
        queue: &gst::Element,
        decoder: &gst::Element,
    ) -> Result<(), PipelineError> {
        let outputs = Arc::clone(&self.outputs);
        let decoder = decoder.downgrade();
        let current = AtomicU64::new(f64::NAN.to_bits());
        static_pad(queue, "src")?.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            let wanted = outputs
                .iter()
                .filter(|o| !o.is_passthrough() && o.wants_frames())
                .map(|o| o.spec().scale)
                .fold(None, |max: Option<f64>, s| {
                    Some(max.map_or(s, |m| m.max(s)))
                });
            if let (Some(scale), Some(decoder)) = (wanted, decoder.upgrade())
                && current.swap(scale.to_bits(), Ordering::Relaxed) != scale.to_bits()
            {
                decoder.set_property("max-scale", scale.clamp(0.0, 1.0));
            }
            gst::PadProbeReturn::Ok
        });
        Ok(())
    }

    /// The largest scale of a size camstream decodes and encodes for a
    /// JPEG source (below 1: scale 1 is passed through), where the DCT
    /// decoder starts before any size is watched.
    fn largest_encoded_scale(&self) -> Option<f64> {
        self.outputs
            .iter()
            .filter(|o| o.kind() == Kind::Stream)
            .map(|o| o.spec().scale)
            .filter(|s| *s < 1.0)
            .reduce(f64::max)
    }

    /// One output's encoding branch off the raw tee: queue, scaler,
    /// capsfilter (the output's scale x the source's real size), jpegenc,
    /// appsink publishing into the output.
    fn encode_branch(&self, output: &Arc<Output>) -> Result<(), PipelineError> {
        let name = output.name();
        let spec = output.spec();
        let queue = self.queue(&format!("{name}-queue"))?;
        let scale = self.make_added("videoconvertscale", &format!("{name}-scale"), &[])?;
        let caps = self.make_added("capsfilter", &format!("{name}-caps"), &[])?;
        let encoder = self.make_added(
            "jpegenc",
            &format!("{name}-encoder"),
            &[("quality", &spec.quality.to_string())],
        )?;
        let sink = self.appsink(&format!("{name}-sink"))?;
        link_elements(&queue, &scale)?;
        link_elements(&scale, &caps)?;
        link_elements(&caps, &encoder)?;
        link_elements(&encoder, &sink)?;
        follow_source_size(&scale, &caps, spec.scale, &self.stats)?;
        time_encoder(&encoder, output)?;
        let admitted = Arc::clone(output);
        let stats = Arc::clone(&self.stats);
        gate(&self.raw_tee, &queue, move || {
            admitted.admit_for_encoding(stats.source_frames.load(Ordering::Relaxed))
        })?;
        let publish = Arc::clone(output);
        sink.downcast_ref::<gst_app::AppSink>()
            .expect("an appsink")
            .set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        let (width, height) = sample_size(&sample);
                        let Some(buffer) = sample.buffer_owned() else {
                            return Ok(gst::FlowSuccess::Ok);
                        };
                        let mapped = buffer
                            .into_mapped_buffer_readable()
                            .map_err(|_| gst::FlowError::Error)?;
                        publish.publish(Bytes::from_owner(mapped), width, height);
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            );
        Ok(())
    }

    /// A leaky one-buffer queue: if what follows falls behind, the oldest
    /// frame is discarded, never queued.
    fn queue(&self, name: &str) -> Result<gst::Element, PipelineError> {
        self.make_added(
            "queue",
            name,
            &[
                ("leaky", "downstream"),
                ("max-size-buffers", "1"),
                ("max-size-bytes", "0"),
                ("max-size-time", "0"),
            ],
        )
    }

    /// An appsink that holds one buffer and drops: if camstream ever falls
    /// behind, old frames are discarded, never queued. Not async: a sink
    /// added to a playing pipeline must not wait for a preroll.
    fn appsink(&self, name: &str) -> Result<gst::Element, PipelineError> {
        self.make_added(
            "appsink",
            name,
            &[
                ("max-buffers", "1"),
                ("drop", "true"),
                ("sync", "false"),
                ("async", "false"),
            ],
        )
    }

    /// Makes an element, adds it to the pipeline and notes it for the dump.
    fn make_added(
        &self,
        factory: &str,
        name: &str,
        settings: &[(&str, &str)],
    ) -> Result<gst::Element, PipelineError> {
        let element = make(factory, name, settings)?;
        let shown = settings
            .iter()
            .map(|(k, v)| format!(" {k}={v}"))
            .collect::<String>();
        self.add(&element, factory, &shown)?;
        Ok(element)
    }

    fn add(&self, element: &gst::Element, factory: &str, shown: &str) -> Result<(), PipelineError> {
        self.pipeline
            .add(element)
            .map_err(|e| PipelineError::Runtime(format!("{factory}: {e}")))?;
        self.made
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Made {
                element: element.clone(),
                factory: factory.to_string(),
                settings: shown.to_string(),
            });
        Ok(())
    }

    /// The caps of the frames entering camstream's part, once negotiated.
    pub(super) fn input_caps(&self) -> Option<gst::Caps> {
        self.entry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()?
            .current_caps()
    }

    /// camstream's elements and their links, one line each, in the order
    /// they were made: what tests/golden pins.
    pub(super) fn graph(&self) -> String {
        let made = self.made.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::from("source: the description, parsed as a bin\n");
        match self.source.static_pad("src").and_then(|p| p.peer()) {
            Some(peer) => out.push_str(&format!("  src -> {}\n", pad_path(&peer))),
            None => out.push_str("  src -> (linked when the source adds its output pad)\n"),
        }
        for m in made.iter() {
            out.push_str(&format!(
                "{}: {}{}\n",
                m.element.name(),
                m.factory,
                m.settings
            ));
            for pad in m.element.src_pads() {
                if let Some(peer) = pad.peer() {
                    out.push_str(&format!("  {} -> {}\n", pad.name(), pad_path(&peer)));
                }
            }
        }
        out
    }
}

/// `element.pad` for a pad, or `source.src` for the source bin's ghost pad.
fn pad_path(pad: &gst::Pad) -> String {
    let parent = pad
        .parent()
        .map(|p| p.name().to_string())
        .unwrap_or_default();
    format!("{parent}.{}", pad.name())
}

fn make(
    factory: &str,
    name: &str,
    settings: &[(&str, &str)],
) -> Result<gst::Element, PipelineError> {
    let mut builder = gst::ElementFactory::make(factory).name(name);
    for (key, value) in settings {
        builder = builder.property_from_str(key, value);
    }
    builder
        .build()
        .map_err(|_| PipelineError::MissingElement(vec![factory.to_string()]))
}

fn static_pad(element: &gst::Element, name: &str) -> Result<gst::Pad, PipelineError> {
    element
        .static_pad(name)
        .ok_or_else(|| PipelineError::Runtime(format!("{} has no {name} pad", element.name())))
}

fn link(pad: &gst::Pad, to: &gst::Element) -> Result<(), PipelineError> {
    pad.link(&static_pad(to, "sink")?)
        .map(drop)
        .map_err(|e| PipelineError::Runtime(format!("cannot link to {}: {e}", to.name())))
}

fn link_elements(from: &gst::Element, to: &gst::Element) -> Result<(), PipelineError> {
    from.link(to).map_err(|e| {
        PipelineError::Runtime(format!("cannot link {} to {}: {e}", from.name(), to.name()))
    })
}

/// Links a new pad of `tee` to `queue`, behind a gate: each buffer goes
/// through only if `open` says so. Events (caps, segments) always pass, so
/// a closed branch stays negotiated and opens at once.
fn gate(
    tee: &gst::Element,
    queue: &gst::Element,
    open: impl Fn() -> bool + Send + Sync + 'static,
) -> Result<(), PipelineError> {
    let pad = tee
        .request_pad_simple("src_%u")
        .ok_or_else(|| PipelineError::Runtime("tee gave no pad".into()))?;
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        if open() {
            gst::PadProbeReturn::Ok
        } else {
            gst::PadProbeReturn::Drop
        }
    });
    link(&pad, queue)
}

/// Counts the JPEG frames reaching camstream on `pad`, trims the few bytes
/// some cameras send around an image (a CRLF inside a multipart part:
/// passthrough would otherwise take the frame for cut short), and notes
/// the source's real size from each frame's header (the caps of an MJPEG
/// stream over HTTP carry none, and a camera may change size mid-stream).
/// A buffer that is not a JPEG goes on: the decoder drops and counts it,
/// passthrough drops it.
fn note_jpeg_frames(pad: &gst::Pad, stats: &Arc<PipelineStats>) {
    let stats = Arc::clone(stats);
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(buffer) = info.buffer() else {
            return gst::PadProbeReturn::Ok;
        };
        stats.source_frames.fetch_add(1, Ordering::Relaxed);
        let (bounds, size) = match buffer.map_readable() {
            Ok(map) => {
                let bounds = crate::jpeg::image_bounds(&map);
                let image = bounds.clone().map_or(&map[..], |b| &map[b]);
                let size = crate::jpeg::read_header(image)
                    .ok()
                    .map(|h| (h.width, h.height));
                (bounds.filter(|b| *b != (0..map.len())), size)
            }
            Err(_) => (None, None),
        };
        if let Some((w, h)) = size {
            stats
                .input_size
                .store(pack_size(w.max(1), h.max(1)), Ordering::Relaxed);
        }
        // Only a frame to trim is made writable (which may copy the
        // buffer's header, never its memory).
        if let Some(bounds) = bounds
            && let Some(buffer) = info.buffer_mut()
            && let Ok(trimmed) = buffer.copy_region(
                // Not DEEP: the region shares the memory, nothing is copied.
                gst::BufferCopyFlags::FLAGS
                    | gst::BufferCopyFlags::TIMESTAMPS
                    | gst::BufferCopyFlags::META
                    | gst::BufferCopyFlags::MEMORY,
                bounds.start..bounds.end,
            )
        {
            *buffer = trimmed;
        }
        gst::PadProbeReturn::Ok
    });
}

/// JPEG caps without a frame rate (an MJPEG stream over HTTP says only
/// `image/jpeg`) get `framerate=0/1`, unknown, as jpegparse would give
/// them: the `max_fps` cap's videorate refuses caps without one.
fn give_a_frame_rate(pad: &gst::Pad) {
    pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, |_, info| {
        if let Some(gst::PadProbeData::Event(event)) = &mut info.data
            && let gst::EventView::Caps(caps) = event.view()
            && caps.caps().iter().any(|s| !s.has_field("framerate"))
        {
            let mut caps = caps.caps_owned();
            for s in caps.make_mut().iter_mut() {
                if !s.has_field("framerate") {
                    s.set("framerate", gst::Fraction::new(0, 1));
                }
            }
            *event = gst::event::Caps::new(&caps);
        }
        gst::PadProbeReturn::Ok
    });
}

/// Counts the frames reaching camstream on `pad` and notes the source's
/// real size from its caps.
fn count_source_frames(pad: &gst::Pad, stats: &Arc<PipelineStats>) {
    let stats = Arc::clone(stats);
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            match &info.data {
                Some(gst::PadProbeData::Buffer(_)) => {
                    stats.source_frames.fetch_add(1, Ordering::Relaxed);
                }
                Some(gst::PadProbeData::Event(event)) => {
                    if let gst::EventView::Caps(caps) = event.view()
                        && let Some((w, h)) = caps.caps().structure(0).and_then(size_of)
                    {
                        stats
                            .input_size
                            .store(pack_size(w.max(1), h.max(1)), Ordering::Relaxed);
                    }
                }
                _ => {}
            }
            gst::PadProbeReturn::Ok
        },
    );
}

/// Keeps `capsfilter` at `scale` x the source's real size. The size is
/// known only once caps are negotiated, and can change mid-stream (a camera
/// switching profiles; the DCT decoder changing its fraction), so a probe
/// on the scaler's input rewrites the capsfilter before each new caps event
/// reaches the scaler, which then renegotiates its output. The real size is
/// the one noted where frames enter camstream (the JPEG's own size before a
/// reduced-size decode), else what arrives here.
fn follow_source_size(
    scaler: &gst::Element,
    capsfilter: &gst::Element,
    scale: f64,
    stats: &Arc<PipelineStats>,
) -> Result<(), PipelineError> {
    // Weak: the probe lives on a pad of the same pipeline; a strong
    // reference would keep the capsfilter alive after teardown.
    let capsfilter = capsfilter.downgrade();
    let stats = Arc::clone(stats);
    static_pad(scaler, "sink")?.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
        let Some(gst::PadProbeData::Event(event)) = &info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let gst::EventView::Caps(caps) = event.view() else {
            return gst::PadProbeReturn::Ok;
        };
        let decoded = caps.caps().structure(0).and_then(size_of);
        let real = unpack_size(stats.input_size.load(Ordering::Relaxed)).or(decoded);
        if let (Some((w, h)), Some(capsfilter)) = (real, capsfilter.upgrade()) {
            let (tw, th) = scaled_size(w.max(1), h.max(1), scale);
            let target = gst::Caps::builder("video/x-raw")
                .field("width", tw as i32)
                .field("height", th as i32)
                .build();
            capsfilter.set_property("caps", &target);
        }
        gst::PadProbeReturn::Ok
    });
    Ok(())
}

/// Measures jpegenc's time per frame into the output's `encode_time`: a
/// probe on its input notes when a frame goes in, one on its output records
/// the difference. jpegenc encodes inside its chain function and pushes the
/// result before taking the next frame, so one start time is enough. Both
/// probes only touch atomics.
pub(super) fn time_encoder(
    encoder: &gst::Element,
    output: &Arc<Output>,
) -> Result<(), PipelineError> {
    let epoch = Instant::now();
    let started = Arc::new(AtomicU64::new(0));
    let mark = Arc::clone(&started);
    static_pad(encoder, "sink")?.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        let now = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        mark.store(now, Ordering::Relaxed);
        gst::PadProbeReturn::Ok
    });
    let output = Arc::clone(output);
    static_pad(encoder, "src")?.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        let now = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let began = started.load(Ordering::Relaxed);
        if began != 0 && now >= began {
            output
                .stats()
                .encode_time
                .record(Duration::from_nanos(now - began));
        }
        gst::PadProbeReturn::Ok
    });
    Ok(())
}

/// Gives every frame that reaches the `max_fps` cap a timestamp and a
/// duration. A source with no frame rate (an HTTP MJPEG stream: the caps
/// say 0/1, the parts carry no duration, now and then no timestamp) makes
/// GStreamer 1.22's videorate abort the whole process (gstvideorate.c:
/// 739-740, assertions `GST_BUFFER_PTS_IS_VALID (outbuf)` and
/// `GST_BUFFER_DURATION_IS_VALID (outbuf)`). A frame without a timestamp
/// gets the pipeline's running time, as `do-timestamp` would have given
/// it; with one frame interval at the cap as the duration, videorate
/// passes the next frame no sooner than that, so the cap holds.
fn fill_in_durations(rate: &gst::Element) {
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

/// A passed-through JPEG as it goes to viewers: the GStreamer buffer
/// itself, or, for a frame without Huffman tables (AVI1, from UVC webcams),
/// a copy with the standard tables inserted, since Safari paints nothing
/// without them. A frame whose header cannot be read, or that is cut
/// short, is dropped.
fn passthrough_bytes(buffer: gst::Buffer) -> Option<(Bytes, u32, u32)> {
    let mapped = buffer.into_mapped_buffer_readable().ok()?;
    // A frame cut short (webcams and lossy links send them) would show
    // grey in its missing part: skip it, as the decoder does.
    if !crate::jpeg::is_complete(&mapped) {
        return None;
    }
    let info = crate::jpeg::read_header(&mapped).ok()?;
    let (width, height) = (info.width, info.height);
    match crate::jpeg::with_huffman_tables_of(&mapped, &info) {
        std::borrow::Cow::Borrowed(_) => Some((Bytes::from_owner(mapped), width, height)),
        std::borrow::Cow::Owned(fixed) => Some((Bytes::from(fixed), width, height)),
    }
}

fn sample_size(sample: &gst::Sample) -> (u32, u32) {
    sample
        .caps()
        .and_then(|caps| caps.structure(0))
        .and_then(size_of)
        .unwrap_or((0, 0))
}

pub(super) fn size_of(s: &gst::StructureRef) -> Option<(u32, u32)> {
    let w = s.get::<i32>("width").ok()?;
    let h = s.get::<i32>("height").ok()?;
    Some((w.max(0) as u32, h.max(0) as u32))
}
