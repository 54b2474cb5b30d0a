//! Hardware decoding: which decoder each `decodebin` plugs, which one it
//! actually used, and falling back to software when a hardware one fails.
//!
//! decodebin picks by rank, and GStreamer 1.22's ranks do not say what
//! camstream wants (as registered by Debian's 1.22.0 plugins): the `va`
//! plugin registers `vah264dec`... at rank NONE, so decodebin never tries
//! them; `nvh264dec` is PRIMARY like `avdec_h264` and loses the tie on its
//! name; `v4l2h264dec` and gstreamer-vaapi's `vaapih264dec` are PRIMARY + 1
//! and win whether they work or not. So camstream makes the choice itself,
//! in each decodebin's `autoplug-sort` (the factories decodebin is about to
//! try, in order): the `decoder` setting decides which hardware decoders go
//! first and which are left out.
//!
//! A hardware decoder can fail three ways. If it fails to start, decodebin
//! swallows its error and tries the next factory; camstream sees the
//! decoder removed again ([`DecoderWatch::failed_to_start`]). If it fails
//! later, its error reaches the bus ([`steered_hardware_decoder`]). Or it
//! takes key frames and decodes nothing ([`DecoderWatch::stalled`]). Each
//! way the camera remembers it ([`DecoderFallback`]) and decodes in
//! software until its configuration changes.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use serde::{Deserialize, Serialize};

use super::PipelineError;

/// The `decoder` setting: which decoders decodebin may plug.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Decoder {
    /// A hardware decoder when one is installed for the stream's codec
    /// (VA-API, then V4L2, then NVIDIA), software otherwise, and software
    /// for good once a hardware decoder fails.
    #[default]
    Auto,
    /// Software decoders only (libav's `avdec_h264`...).
    Software,
    /// VA-API: GStreamer's `va` plugin (`vah264dec`...) or the older
    /// gstreamer-vaapi (`vaapih264dec`...), Intel and AMD GPUs.
    Vaapi,
    /// V4L2 memory-to-memory decoders (`v4l2h264dec`...): Raspberry Pi
    /// and other ARM boards.
    V4l2,
    /// NVIDIA: `nvh264dec`... (nvcodec), `nvv4l2decoder` on Jetson.
    Nvidia,
}

impl Decoder {
    /// As the config and the API write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Decoder::Auto => "auto",
            Decoder::Software => "software",
            Decoder::Vaapi => "vaapi",
            Decoder::V4l2 => "v4l2",
            Decoder::Nvidia => "nvidia",
        }
    }

    /// The hardware family a family setting names.
    pub fn family(self) -> Option<Family> {
        match self {
            Decoder::Vaapi => Some(Family::Vaapi),
            Decoder::V4l2 => Some(Family::V4l2),
            Decoder::Nvidia => Some(Family::Nvidia),
            Decoder::Auto | Decoder::Software => None,
        }
    }
}

impl fmt::Display for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A family of hardware decoders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Vaapi,
    V4l2,
    Nvidia,
    /// Hardware no setting names (Intel Media SDK, OpenMAX, Rockchip MPP...):
    /// used by `auto` only.
    Other,
}

impl Family {
    /// For messages.
    pub fn name(self) -> &'static str {
        match self {
            Family::Vaapi => "VA-API",
            Family::V4l2 => "V4L2",
            Family::Nvidia => "NVIDIA",
            Family::Other => "other hardware",
        }
    }
}

/// Name prefixes of hardware decoders whose klass does not say "Hardware"
/// (gst-omx's `omxh264dec` on old Raspberry Pi OS, NVIDIA's Jetson
/// `nvv4l2decoder`, Rockchip's `mppvideodec`, NXP's `imxvpudec`), or that
/// no family covers.
const OTHER_HARDWARE: &[&str] = &["omx", "msdk", "qsv", "mpp", "imxvpu", "d3d11", "d3d12"];

/// Whether a factory is a hardware decoder, and of which family, from its
/// name and klass. None: software.
pub fn classify(name: &str, klass: &str) -> Option<Family> {
    let dec = name.contains("dec");
    if name.starts_with("vaapi") && dec {
        // gstreamer-vaapi: vaapih264dec, vaapijpegdec, vaapidecodebin.
        return Some(Family::Vaapi);
    }
    if name.starts_with("va") && name.ends_with("dec") {
        // The va plugin: vah264dec, and for a second GPU varenderD129h264dec.
        return Some(Family::Vaapi);
    }
    if name.starts_with("v4l2") && dec {
        // Stateful v4l2h264dec (and v4l2video10h264dec), stateless v4l2slh264dec.
        return Some(Family::V4l2);
    }
    if name.starts_with("nv") && dec {
        // nvh264dec, nvh264sldec, nvh264device1dec, nvjpegdec; nvv4l2decoder.
        return Some(Family::Nvidia);
    }
    let hardware = klass.split('/').any(|k| k == "Hardware")
        || OTHER_HARDWARE.iter().any(|p| name.starts_with(p));
    hardware.then_some(Family::Other)
}

/// Whether a klass is a picture decoder's ("Codec/Decoder/Video",
/// "Codec/Decoder/Image"), as opposed to a parser, a demuxer, an audio
/// decoder or decodebin itself ("Generic/Bin/Decoder").
pub fn is_video_decoder(klass: &str) -> bool {
    let parts: Vec<&str> = klass.split('/').collect();
    parts.contains(&"Decoder") && (parts.contains(&"Video") || parts.contains(&"Image"))
}

/// An element factory as the ordering sees it.
pub(crate) trait Candidate {
    fn factory_name(&self) -> String;
    fn factory_klass(&self) -> String;
    fn factory_rank(&self) -> i32;
}

impl Candidate for gst::ElementFactory {
    fn factory_name(&self) -> String {
        self.name().to_string()
    }
    fn factory_klass(&self) -> String {
        self.klass().to_string()
    }
    fn factory_rank(&self) -> i32 {
        self.rank().into()
    }
}

/// The hardware family of a candidate if it is a hardware picture decoder.
fn hardware_decoder<T: Candidate>(c: &T) -> Option<Family> {
    let klass = c.factory_klass();
    is_video_decoder(&klass)
        .then(|| classify(&c.factory_name(), &klass))
        .flatten()
}

/// Which hardware decoder goes first when several fit: the va plugin
/// (maintained, and what GStreamer 1.24 ranks first), then V4L2, NVIDIA,
/// gstreamer-vaapi (deprecated upstream), others; then by rank and name.
fn preference<T: Candidate>(c: &T) -> (u8, i32, String) {
    let name = c.factory_name();
    let family = match hardware_decoder(c) {
        Some(Family::Vaapi) if name.starts_with("vaapi") => 3,
        Some(Family::Vaapi) => 0,
        Some(Family::V4l2) => 1,
        Some(Family::Nvidia) => 2,
        Some(Family::Other) | None => 4,
    };
    (family, -c.factory_rank(), name)
}

/// The factories decodebin should try, in order: the ones it found
/// (`given`, rank order, rank MARGINAL and up) and the installed hardware
/// decoders that accept the stream whatever their rank (`hardware`),
/// arranged for `decoder`. Hardware decoders go where the first software
/// decoder was, so a parser that decodebin plugs before decoding still
/// comes first; `software` drops them all, a family keeps only its own.
pub(crate) fn arrange<T: Candidate>(given: Vec<T>, hardware: Vec<T>, decoder: Decoder) -> Vec<T> {
    let (mut chosen, mut rest): (Vec<T>, Vec<T>) = given
        .into_iter()
        .partition(|c| hardware_decoder(c).is_some());
    for c in hardware {
        let name = c.factory_name();
        if hardware_decoder(&c).is_some() && !chosen.iter().any(|h| h.factory_name() == name) {
            chosen.push(c);
        }
    }
    chosen.retain(|c| match decoder {
        Decoder::Software => false,
        Decoder::Auto => true,
        family => hardware_decoder(c) == family.family(),
    });
    chosen.sort_by_cached_key(preference);
    let at = rest
        .iter()
        .position(|c| is_video_decoder(&c.factory_klass()))
        .unwrap_or(rest.len());
    rest.splice(at..at, chosen);
    rest
}

/// The installed hardware decoders that accept `caps`, at any rank.
fn hardware_for(caps: &gst::CapsRef) -> Vec<gst::ElementFactory> {
    gst::ElementFactory::factories_with_type(gst::ElementFactoryType::DECODER, gst::Rank::NONE)
        .into_iter()
        .filter(|f| hardware_decoder(f).is_some() && f.can_sink_any_caps(caps))
        .collect()
}

/// Whether an element autoplugs with `autoplug-sort` (decodebin,
/// uridecodebin): the elements whose choice camstream steers.
fn autoplugs(element: &gst::Element) -> bool {
    glib::subclass::signal::SignalId::lookup("autoplug-sort", element.type_()).is_some()
}

/// Makes every decodebin of `pipeline` choose its decoder by `decoder`,
/// and watches which video decoder the pipeline ends up using. Called once
/// a pipeline is parsed, before it starts.
pub fn steer(pipeline: &gst::Pipeline, decoder: Decoder) -> DecoderWatch {
    let watch = DecoderWatch::default();
    let mut elements = pipeline.iterate_recurse();
    while let Ok(Some(element)) = elements.next() {
        if autoplugs(&element) {
            steer_one(&element, decoder);
        }
        // Decoders the description names itself.
        watch.added(&element);
    }
    let added = watch.clone();
    pipeline.connect_deep_element_added(move |_, _, element| added.added(element));
    let removed = watch.clone();
    pipeline.connect_deep_element_removed(move |_, _, element| removed.removed(element));
    watch
}

fn steer_one(decodebin: &gst::Element, decoder: Decoder) {
    // Runs on a streaming thread, once per pad decodebin autoplugs; every
    // path returns a value (None: keep decodebin's own order), since a
    // handler of a signal with a return type must.
    decodebin.connect("autoplug-sort", false, move |args| {
        let keep = || Some(None::<glib::ValueArray>.to_value());
        let (Some(caps), Some(given)) = (
            args.get(2).and_then(|v| v.get::<gst::Caps>().ok()),
            args.get(3).and_then(|v| v.get::<glib::ValueArray>().ok()),
        ) else {
            return keep();
        };
        let given: Vec<gst::ElementFactory> = given
            .iter()
            .filter_map(|v| v.get::<gst::ElementFactory>().ok())
            .collect();
        let hardware = match decoder {
            Decoder::Software => Vec::new(),
            _ => hardware_for(&caps),
        };
        let arranged = arrange(given, hardware, decoder);
        Some(glib::ValueArray::new(arranged).to_value())
    });
}

/// The video decoder a pipeline uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecoderUse {
    /// Its factory, e.g. `avdec_h264`.
    pub name: String,
    pub hardware: bool,
}

/// A hardware decoder that did not work. The camera decodes in software
/// after one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HardwareFailure {
    /// Its factory, e.g. `vah264dec`.
    pub decoder: String,
    pub reason: String,
}

impl fmt::Display for HardwareFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "hardware decoder {} failed: {}",
            self.decoder, self.reason
        )
    }
}

/// The video decoder a pipeline plugged, followed on the streaming threads
/// (decodebin adds and removes its elements there). Reading it takes a
/// short lock and no GStreamer call, so async code may.
#[derive(Clone, Debug, Default)]
pub struct DecoderWatch(Arc<Mutex<Watched>>);

#[derive(Debug, Default)]
struct Watched {
    current: Option<Tracked>,
    /// A hardware decoder decodebin plugged and removed again: it did not
    /// start, and decodebin went on to the next factory.
    failed_to_start: Option<HardwareFailure>,
}

#[derive(Debug)]
struct Tracked {
    /// The element's address: which element a removal is about.
    id: usize,
    usage: DecoderUse,
    /// Plugged by a decodebin camstream steers (so software can replace it).
    steered: bool,
    /// Key frames into it and pictures out of it (hardware decoders
    /// only). Key frames: a decoder given only the rest of a group of
    /// pictures (joined mid-way) rightly decodes nothing.
    keyframes_in: Arc<AtomicU64>,
    frames_out: Arc<AtomicU64>,
}

impl DecoderWatch {
    fn lock(&self) -> std::sync::MutexGuard<'_, Watched> {
        // A poisoned lock only means a panic elsewhere; the data is plain.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn added(&self, element: &gst::Element) {
        let Some(factory) = element.factory() else {
            return;
        };
        if !is_video_decoder(factory.klass()) {
            return;
        }
        let name = factory.name().to_string();
        let hardware = classify(&name, factory.klass()).is_some();
        let (keyframes_in, frames_out) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        if hardware {
            count_buffers(element, "sink", true, &keyframes_in);
            count_buffers(element, "src", false, &frames_out);
        }
        self.lock().current = Some(Tracked {
            id: element.as_ptr() as usize,
            usage: DecoderUse { name, hardware },
            steered: in_steered_bin(element),
            keyframes_in,
            frames_out,
        });
    }

    fn removed(&self, element: &gst::Element) {
        let mut watched = self.lock();
        let Some(current) = watched
            .current
            .take_if(|t| t.id == element.as_ptr() as usize)
        else {
            return;
        };
        let never_decoded = current.frames_out.load(Ordering::Relaxed) == 0;
        if current.usage.hardware && current.steered && never_decoded {
            watched.failed_to_start = Some(HardwareFailure {
                decoder: current.usage.name,
                reason: "it did not start, and GStreamer went on to the next decoder".into(),
            });
        }
    }

    /// The video decoder in the pipeline now (the last one plugged).
    pub fn in_use(&self) -> Option<DecoderUse> {
        self.lock().current.as_ref().map(|t| t.usage.clone())
    }

    /// A hardware decoder that was plugged and failed to start (decodebin
    /// then plugged the next decoder by itself).
    pub fn failed_to_start(&self) -> Option<HardwareFailure> {
        self.lock().failed_to_start.clone()
    }

    /// The hardware decoder in the pipeline if it has been given key
    /// frames and decoded nothing: asked when a first frame is overdue.
    pub fn stalled(&self) -> Option<HardwareFailure> {
        let watched = self.lock();
        let t = watched.current.as_ref()?;
        let taken = t.keyframes_in.load(Ordering::Relaxed);
        (t.usage.hardware && t.steered && taken > 0 && t.frames_out.load(Ordering::Relaxed) == 0)
            .then(|| HardwareFailure {
                decoder: t.usage.name.clone(),
                reason: format!("it was given {taken} key frames and decoded none"),
            })
    }
}

/// Counts the buffers through one of `element`'s pads; `keyframes`: only
/// those that start a group of pictures (no DELTA_UNIT flag).
fn count_buffers(element: &gst::Element, pad: &str, keyframes: bool, counter: &Arc<AtomicU64>) {
    if let Some(pad) = element.static_pad(pad) {
        let counter = Arc::clone(counter);
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let counts = !keyframes
                || info
                    .buffer()
                    .is_some_and(|b| !b.flags().contains(gst::BufferFlags::DELTA_UNIT));
            if counts {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            gst::PadProbeReturn::Ok
        });
    }
}

/// Whether a decodebin camstream steers plugged `element`.
fn in_steered_bin(element: &gst::Element) -> bool {
    let mut parent = element.parent();
    while let Some(object) = parent {
        if let Some(bin) = object.downcast_ref::<gst::Element>()
            && autoplugs(bin)
        {
            return true;
        }
        parent = object.parent();
    }
    false
}

/// The factory of the element an error came from, if it is a hardware
/// decoder that a steered decodebin plugged: software can replace it.
pub fn steered_hardware_decoder(err: &gst::message::Error) -> Option<String> {
    let element = err.src()?.clone().downcast::<gst::Element>().ok()?;
    let factory = element.factory()?;
    (is_video_decoder(factory.klass())
        && classify(&factory.name(), factory.klass()).is_some()
        && in_steered_bin(&element))
    .then(|| factory.name().to_string())
}

/// A camera's hardware decoding across its restarts: once a hardware
/// decoder failed, it decodes in software until its configuration changes
/// (the camera starts a new one then), so a flaky GPU or driver cannot make
/// it flap between the two.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecoderFallback {
    failure: Option<HardwareFailure>,
}

impl DecoderFallback {
    /// Whether to decode in software, whatever the setting says.
    pub fn software(&self) -> bool {
        self.failure.is_some()
    }

    /// The failure that made it fall back.
    pub fn reason(&self) -> Option<&HardwareFailure> {
        self.failure.as_ref()
    }

    /// Falls back to software after `failure`; true the first time (say
    /// so then), false once already in software.
    pub fn fall_back(&mut self, failure: HardwareFailure) -> bool {
        if self.failure.is_some() {
            return false;
        }
        self.failure = Some(failure);
        true
    }

    /// Takes a failed run's error. A hardware decoder's failure, the first
    /// one, is taken and None returned: restart at once, in software.
    /// Anything else is returned as it is.
    pub fn failed(&mut self, error: PipelineError) -> Option<PipelineError> {
        match error {
            PipelineError::HardwareDecoder(failure) if !self.software() => {
                self.fall_back(failure);
                None
            }
            other => Some(other),
        }
    }
}

/// A hardware decoder installed here, as `camstream check` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HardwareDecoder {
    pub name: String,
    pub family: Family,
    /// What it decodes: "H.264", "H.265, VP9".
    pub codecs: String,
    /// Ok if it opened (went to PAUSED, which opens its device); else the
    /// reason it gave.
    pub opens: Result<(), String>,
}

/// The hardware decoders installed here, each tried, and what keeps
/// VA-API from working when the `va` plugin is installed but offers no
/// decoder. Opens devices: for `camstream check`, not for a running
/// server.
pub fn survey() -> (Vec<HardwareDecoder>, Option<String>) {
    let mut factories: Vec<gst::ElementFactory> =
        gst::ElementFactory::factories_with_type(gst::ElementFactoryType::DECODER, gst::Rank::NONE)
            .into_iter()
            .filter(|f| hardware_decoder(f).is_some())
            .collect();
    factories.sort_by_cached_key(preference);
    let decoders: Vec<HardwareDecoder> = factories
        .iter()
        .map(|f| HardwareDecoder {
            name: f.name().to_string(),
            family: hardware_decoder(f).unwrap_or(Family::Other),
            codecs: codecs(f),
            opens: try_open(f),
        })
        .collect();
    let has_va = decoders.iter().any(|d| d.family == Family::Vaapi);
    let va_installed = gst::Registry::get().find_plugin("va").is_some();
    let note = (va_installed && !has_va).then(va_problem);
    (decoders, note)
}

/// Whether any decoder of `family` is installed here.
pub fn family_installed(family: Family) -> bool {
    gst::ElementFactory::factories_with_type(gst::ElementFactoryType::DECODER, gst::Rank::NONE)
        .iter()
        .any(|f| hardware_decoder(f) == Some(family))
}

/// "H.264, H.265" from a decoder's sink templates.
fn codecs(factory: &gst::ElementFactory) -> String {
    let mut names: Vec<String> = Vec::new();
    for template in factory.static_pad_templates() {
        if template.direction() != gst::PadDirection::Sink {
            continue;
        }
        let caps = template.caps();
        for s in caps.iter() {
            let name = codec_name(s.name()).to_string();
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names.join(", ")
}

/// The codec a coded media type carries, for messages.
fn codec_name(media: &str) -> &str {
    match media {
        "video/x-h264" => "H.264",
        "video/x-h265" => "H.265",
        "image/jpeg" => "JPEG",
        "video/x-vp8" => "VP8",
        "video/x-vp9" => "VP9",
        "video/x-av1" => "AV1",
        "video/mpeg" => "MPEG",
        other => other,
    }
}

/// Sets a lone decoder to PAUSED and back: hardware decoders open their
/// device (a DRM render node, a V4L2 node, a CUDA context) on the way.
fn try_open(factory: &gst::ElementFactory) -> Result<(), String> {
    let element = factory
        .create()
        .build()
        .map_err(|e| format!("it cannot be created: {e}"))?;
    let pipeline = gst::Pipeline::new();
    pipeline
        .add(&element)
        .map_err(|e| format!("it cannot be added to a pipeline: {e}"))?;
    let changed = pipeline.set_state(gst::State::Paused);
    let reason = pipeline
        .bus()
        .and_then(|bus| bus.pop_filtered(&[gst::MessageType::Error]))
        .and_then(|msg| match msg.view() {
            gst::MessageView::Error(err) => Some(match err.debug() {
                Some(debug) => format!("{} ({})", err.error(), last_line(&debug)),
                None => err.error().to_string(),
            }),
            _ => None,
        });
    let _ = pipeline.set_state(gst::State::Null);
    match changed {
        Ok(_) => Ok(()),
        Err(_) => Err(reason.unwrap_or_else(|| "it refused to start".into())),
    }
}

fn last_line(debug: &str) -> &str {
    debug.lines().last().map(str::trim).unwrap_or(debug)
}

/// Why the installed `va` plugin offers no decoder: it registers decoders
/// only for the DRM render nodes it can open whose driver decodes.
fn va_problem() -> String {
    let mut nodes: Vec<std::path::PathBuf> = std::fs::read_dir("/dev/dri")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("renderD"))
                })
                .collect()
        })
        .unwrap_or_default();
    nodes.sort();
    if nodes.is_empty() {
        return "VA-API (Intel and AMD GPUs) finds no render node (/dev/dri/renderD*): a \
                container needs it given with --device /dev/dri"
            .into();
    }
    for node in &nodes {
        if let Err(e) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(node)
        {
            return format!(
                "VA-API (Intel and AMD GPUs) cannot open {} ({e}): run camstream in the group that \
                 owns it, render; in a container, --group-add its gid (stat -c %g {})",
                node.display(),
                node.display()
            );
        }
    }
    format!(
        "VA-API (Intel and AMD GPUs): {} opens, but its VA driver offers no decoder: install \
         the driver for this GPU, intel-media-va-driver or mesa-va-drivers for AMD",
        nodes[0].display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug)]
    struct F(&'static str, &'static str, i32);

    impl Candidate for F {
        fn factory_name(&self) -> String {
            self.0.into()
        }
        fn factory_klass(&self) -> String {
            self.1.into()
        }
        fn factory_rank(&self) -> i32 {
            self.2
        }
    }

    const HW: &str = "Codec/Decoder/Video/Hardware";
    const SW: &str = "Codec/Decoder/Video";
    const PARSER: &str = "Codec/Parser/Converter/Video";

    fn names(list: Vec<F>) -> Vec<&'static str> {
        list.into_iter().map(|f| f.0).collect()
    }

    #[test]
    fn factories_are_classified_by_name_and_klass() {
        assert_eq!(classify("vah264dec", HW), Some(Family::Vaapi));
        assert_eq!(classify("varenderD129h265dec", HW), Some(Family::Vaapi));
        assert_eq!(classify("vaapih264dec", SW), Some(Family::Vaapi));
        assert_eq!(classify("v4l2h264dec", HW), Some(Family::V4l2));
        assert_eq!(classify("v4l2slh264dec", HW), Some(Family::V4l2));
        assert_eq!(classify("nvh264dec", HW), Some(Family::Nvidia));
        // Jetson's decoder does not say Hardware in its klass.
        assert_eq!(classify("nvv4l2decoder", SW), Some(Family::Nvidia));
        assert_eq!(classify("omxh264dec", SW), Some(Family::Other));
        assert_eq!(classify("msdkh264dec", HW), Some(Family::Other));
        assert_eq!(classify("somethingdec", HW), Some(Family::Other));
        for software in ["avdec_h264", "jpegdec", "openh264dec", "camstreamjpegdec"] {
            assert_eq!(classify(software, SW), None, "{software}");
        }
        assert!(is_video_decoder(HW) && is_video_decoder("Codec/Decoder/Image"));
        assert!(!is_video_decoder("Generic/Bin/Decoder"));
        assert!(!is_video_decoder("Codec/Decoder/Audio"));
        assert!(!is_video_decoder(PARSER));
    }

    #[test]
    fn auto_puts_hardware_first_after_the_parser_whatever_its_rank() {
        // What decodebin 1.22 finds for H.264 on an Intel box with the va
        // plugin: vah264dec is rank NONE, so only the registry lookup has it.
        let given = vec![
            F("h264parse", PARSER, 257),
            F("avdec_h264", SW, 256),
            F("openh264dec", SW, 64),
        ];
        let hardware = vec![F("vah264dec", HW, 0)];
        assert_eq!(
            names(arrange(given.clone(), hardware.clone(), Decoder::Auto)),
            ["h264parse", "vah264dec", "avdec_h264", "openh264dec"]
        );
        assert_eq!(
            names(arrange(given.clone(), hardware.clone(), Decoder::Vaapi)),
            ["h264parse", "vah264dec", "avdec_h264", "openh264dec"]
        );
        assert_eq!(
            names(arrange(given.clone(), hardware, Decoder::Software)),
            ["h264parse", "avdec_h264", "openh264dec"]
        );
        // No hardware decoder: decodebin's own order, untouched.
        assert_eq!(
            names(arrange(given, Vec::new(), Decoder::Auto)),
            ["h264parse", "avdec_h264", "openh264dec"]
        );
    }

    #[test]
    fn software_drops_hardware_decodebin_would_rank_first() {
        // v4l2h264dec and nvh264dec come in decodebin's own list (PRIMARY+1
        // and PRIMARY); software takes them out, a family keeps its own.
        let given = vec![
            F("v4l2h264dec", HW, 257),
            F("avdec_h264", SW, 256),
            F("nvh264dec", HW, 256),
        ];
        assert_eq!(
            names(arrange(given.clone(), Vec::new(), Decoder::Software)),
            ["avdec_h264"]
        );
        assert_eq!(
            names(arrange(given.clone(), Vec::new(), Decoder::Nvidia)),
            ["nvh264dec", "avdec_h264"]
        );
        assert_eq!(
            names(arrange(given.clone(), Vec::new(), Decoder::Vaapi)),
            ["avdec_h264"]
        );
        // Auto: by family (V4L2 before NVIDIA), not by rank.
        let hardware = vec![F("nvh264dec", HW, 256), F("vaapih264dec", HW, 257)];
        assert_eq!(
            names(arrange(given, hardware, Decoder::Auto)),
            ["v4l2h264dec", "nvh264dec", "vaapih264dec", "avdec_h264"]
        );
    }

    #[test]
    fn lists_without_decoders_keep_their_order() {
        let given = vec![
            F("rtph264depay", "Codec/Depayloader/Network/RTP", 257),
            F("rtpsomething", "Codec/Depayloader/Network/RTP", 128),
        ];
        assert_eq!(
            names(arrange(given, Vec::new(), Decoder::Auto)),
            ["rtph264depay", "rtpsomething"]
        );
    }

    #[test]
    fn a_camera_falls_back_once_and_stays() {
        let failure = |reason: &str| HardwareFailure {
            decoder: "vah264dec".into(),
            reason: reason.into(),
        };
        let mut fallback = DecoderFallback::default();
        assert!(!fallback.software());
        let other = PipelineError::Runtime("401".into());
        assert_eq!(fallback.failed(other.clone()), Some(other));
        assert_eq!(
            fallback.failed(PipelineError::HardwareDecoder(failure("first"))),
            None
        );
        assert!(fallback.software());
        // A second one is an ordinary error, and the first reason stays.
        let again = PipelineError::HardwareDecoder(failure("second"));
        assert_eq!(fallback.failed(again.clone()), Some(again));
        assert!(!fallback.fall_back(failure("third")));
        assert_eq!(fallback.reason(), Some(&failure("first")));
        assert_eq!(
            failure("x").to_string(),
            "hardware decoder vah264dec failed: x"
        );
    }

    #[test]
    fn settings_name_their_family() {
        assert_eq!(Decoder::default(), Decoder::Auto);
        assert_eq!(Decoder::Vaapi.family(), Some(Family::Vaapi));
        assert_eq!(Decoder::Software.family(), None);
        assert_eq!(Decoder::V4l2.as_str(), "v4l2");
        assert_eq!(codec_name("video/x-h265"), "H.265");
    }
}
