//! Rendering a camera's gst-launch description: the source fragment for
//! each kind of source and pipeline templates with placeholders. Pure
//! functions of their inputs, so golden tests can pin every string
//! (tests/golden.rs). What comes after the description (the rate cap, the
//! JPEG decoder, one branch per size) is camstream's own code, built from
//! typed elements in `pipeline/`; the plan only says what it needs.

use std::time::Duration;

use super::{Attempt, Credentials, DEMO_PATTERN, LowerTransport, Source};

/// The placeholders a pipeline template may use. Each is replaced by a
/// gst-launch value (quoted where needed) taken from the camera's source.
pub const PLACEHOLDERS: &[(&str, &str)] = &[
    (
        "location",
        "the source URL without credentials, or the file path",
    ),
    ("device", "the V4L2 device, e.g. /dev/video0"),
    (
        "latency",
        "the RTSP jitter-buffer latency in ms (latency_ms)",
    ),
    (
        "protocols",
        "rtspsrc's lower transport for this attempt, tcp or udp (transport)",
    ),
    ("width", "test source width"),
    ("height", "test source height"),
    ("fps", "test source frame rate"),
    ("pattern", "test source videotestsrc pattern"),
    ("source", "camstream's own fragment for this source"),
    (
        "jpeg_decoder",
        "a JPEG decoder inside the template, at full size: camstreamjpegdec, or jpegdec with mjpeg_lowres = false (a template that ends at image/jpeg instead is decoded by camstream, scaled in the DCT, or passed through)",
    ),
];

/// Bounded connect for RTSP: rtspsrc's default TCP timeout is 20 s, far too
/// long to leave a viewer staring at nothing when a camera is unreachable.
const RTSP_TCP_TIMEOUT_US: u64 = 5_000_000;

/// Timeout for blocking reads of an HTTP MJPEG source, in seconds.
const HTTP_TIMEOUT_S: u32 = 5;

/// How often an HTTP source that serves single JPEG images is polled when
/// the camera sets no `max_fps`: a snapshot costs the camera a full-size
/// JPEG encode, which many cameras manage only a few times a second, and
/// two a second is a live enough picture for a status wall.
pub const DEFAULT_SNAPSHOT_FPS: u32 = 2;

/// The name of the `appsrc` that polled JPEG snapshots are pushed into.
pub const SNAPSHOT_SOURCE: &str = "camstream_snapshots";

/// Settings that shape the rendered pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderOptions {
    /// The `transport` setting; which lower transport this attempt uses is
    /// `attempt.transport`.
    pub transport: super::Transport,
    /// rtspsrc's jitter-buffer latency. rtspsrc defaults to 2000 ms, which
    /// a live viewer sees as two seconds of lag.
    pub latency_ms: u32,
    /// Frames above this rate are dropped before they are decoded, scaled
    /// or encoded.
    pub max_fps: Option<u32>,
    /// Decode JPEG sources with camstream's own decoder, straight to the
    /// reduced size the sizes in use allow; jpegdec at full size when off.
    pub mjpeg_lowres: bool,
    /// Verify TLS certificates (`rtsps://`, `https://`) against the
    /// system's trust store.
    pub tls_verify: bool,
    /// The `decoder` setting: which decoders decodebin may plug.
    pub decoder: crate::pipeline::Decoder,
    /// What this attempt chose where the settings leave a choice.
    pub attempt: Attempt,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            transport: super::Transport::default(),
            latency_ms: 100,
            max_fps: None,
            mjpeg_lowres: true,
            tls_verify: true,
            decoder: crate::pipeline::Decoder::default(),
            attempt: Attempt::default(),
        }
    }
}

impl RenderOptions {
    /// The lower transport an RTSP source uses in this attempt.
    fn lower_transport(&self, source: &Source) -> LowerTransport {
        self.attempt
            .transport
            .unwrap_or_else(|| self.transport.order(source.forced_transport(), None)[0])
    }

    /// How often a snapshot source is polled: `max_fps`, else
    /// [`DEFAULT_SNAPSHOT_FPS`].
    pub fn snapshot_interval(&self) -> Duration {
        Duration::from_secs(1) / self.max_fps.unwrap_or(DEFAULT_SNAPSHOT_FPS).max(1)
    }
}

/// How camstream reads an HTTP source with its own fragment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpMode {
    /// An MJPEG stream (`multipart/x-mixed-replace`). `pipeline/` watches
    /// the first bytes: a single JPEG instead means the source serves
    /// snapshots.
    Stream,
    /// Single JPEG images, fetched from `url` (no credentials) every
    /// `interval` and pushed into the `appsrc` named [`SNAPSHOT_SOURCE`].
    Snapshots { url: String, interval: Duration },
}

/// A pipeline override, as written in the config or in a file under
/// `pipelines/`.
#[derive(Clone, Copy, Debug)]
pub enum PipelineText<'a> {
    /// No override: camstream's fragment for the source.
    Source,
    /// A template; `origin` names it in errors (a file name or "pipeline").
    Template { text: &'a str, origin: &'a str },
}

/// How camstream decodes a source that sends JPEG (an MJPEG stream, a
/// webcam in MJPEG mode, RTP/JPEG) for the sizes it scales and encodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JpegDecoder {
    /// `camstreamjpegdec`: straight to 1/2, 1/4 or 1/8 of the size in the
    /// DCT, as the largest size in use allows (`mjpeg_lowres = true`).
    Dct,
    /// `jpegdec`, at full size (`mjpeg_lowres = false`).
    Full,
}

/// Everything `pipeline/` needs to build a camera's pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelinePlan {
    /// The gst-launch text GStreamer parses: the source fragment or the
    /// user's override (parsed as a bin whose output camstream's own
    /// elements take), or a whole pipeline with its own appsink. This is
    /// what errors quote and golden tests pin.
    pub description: String,
    /// Whether camstream builds its own part after the description (rate
    /// cap, JPEG decoder, one scale/encode branch per size, passthrough);
    /// false for a whole pipeline ending in `appsink name=sink`.
    pub managed: bool,
    /// camstream's frame-rate cap, before anything is decoded; None for a
    /// snapshot source (polled at that rate already).
    pub max_fps: Option<u32>,
    /// How camstream decodes a source whose output is JPEG.
    pub jpeg_decoder: JpegDecoder,
    /// File sources loop: on end of stream, seek back to the start.
    pub loop_on_eos: bool,
    /// Set on every element with `user-id`/`user-pw` properties after the
    /// description is parsed.
    pub credentials: Option<Credentials>,
    /// The RTP lower transport of an RTSP source in this attempt.
    pub transport: Option<LowerTransport>,
    /// Whether TLS certificates are verified (false: `tls_verify = false`).
    pub tls_verify: bool,
    /// How an HTTP source is read, when camstream's own fragment reads it.
    pub http: Option<HttpMode>,
    /// Which decoders the pipeline's decodebins may plug in this attempt:
    /// the setting, or software after a hardware decoder failed.
    pub decoder: crate::pipeline::Decoder,
}

/// A template that cannot be rendered for this camera.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error(
        "{origin}: unknown placeholder {{{name}}}; known placeholders: {}",
        PLACEHOLDERS.iter().map(|(n, _)| format!("{{{n}}}")).collect::<Vec<_>>().join(", ")
    )]
    UnknownPlaceholder { origin: String, name: String },
    #[error(
        "{origin}: placeholder {{{name}}} has no value for a {kind} source; \
         use a template made for {kind} sources"
    )]
    NoValue {
        origin: String,
        name: String,
        kind: &'static str,
    },
    #[error("{origin}: placeholders need a `source` for the camera")]
    NoSource { origin: String },
    #[error("{origin}: the pipeline is empty")]
    Empty { origin: String },
}

/// The pipeline plan for a camera: its source fragment or override, and
/// what camstream's own part after it needs.
pub fn plan(
    source: Option<&Source>,
    text: PipelineText<'_>,
    opts: &RenderOptions,
) -> Result<PipelinePlan, TemplateError> {
    let description = match (text, source) {
        (PipelineText::Template { text, origin }, _) => {
            render_template(text, origin, source, opts)?
        }
        // camstream's own fragment ends where the source's frames are: raw
        // video, or the JPEG images themselves, so they can be passed
        // through untouched or decoded at the size in use.
        (PipelineText::Source, Some(source)) => fragment(source, opts, Output::AsSent),
        (PipelineText::Source, None) => {
            return Err(TemplateError::NoSource {
                origin: "camera".into(),
            });
        }
    };
    // A whole pipeline names its own appsink; anything else yields video
    // for camstream's part (see pipelines/README.md for the contract).
    let managed = !description.contains("appsink");
    let description = if managed {
        trailing_caps_as_capsfilter(&description)
    } else {
        description
    };
    let snapshots = matches!(
        (source, text),
        (Some(Source::Http { .. }), PipelineText::Source)
    ) && opts.attempt.snapshots;
    let http = match (source, text) {
        (Some(Source::Http { url, .. }), PipelineText::Source) => Some(if snapshots {
            HttpMode::Snapshots {
                url: url.to_string(),
                interval: opts.snapshot_interval(),
            }
        } else {
            HttpMode::Stream
        }),
        _ => None,
    };
    Ok(PipelinePlan {
        description,
        managed,
        // Snapshots are polled at `max_fps` already; a rate cap on top
        // would only drop those whose answer came back early.
        max_fps: opts.max_fps.filter(|_| !snapshots),
        jpeg_decoder: if opts.mjpeg_lowres {
            JpegDecoder::Dct
        } else {
            JpegDecoder::Full
        },
        loop_on_eos: matches!(source, Some(Source::File { .. })),
        credentials: source.and_then(Source::credentials).cloned(),
        transport: source
            .filter(|s| matches!(s, Source::Rtsp { .. }))
            .map(|s| opts.lower_transport(s)),
        tls_verify: opts.tls_verify,
        http,
        decoder: if opts.attempt.software_decoding {
            crate::pipeline::Decoder::Software
        } else {
            opts.decoder
        },
    })
}

/// What a source fragment hands on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    /// What the source sends, raw video or JPEG images: camstream's own
    /// part takes either (the whole description of a camera without an
    /// override).
    AsSent,
    /// Raw video: `{source}` in a template, which the template may extend
    /// with elements that take raw video.
    Raw,
}

/// The caps at which decodebin stops: raw video (in any memory, so a
/// hardware decoder's output still fits), or JPEG images, which camstream
/// passes through or decodes itself, scaled in the DCT.
const RAW_OR_JPEG: &str = "video/x-raw(ANY);image/jpeg";

/// camstream's source fragment for `source`: gst-launch text that ends in
/// raw video, or with `Output::AsSent` in JPEG images where the source
/// sends them.
fn fragment(source: &Source, opts: &RenderOptions, output: Output) -> String {
    let decodebin = match output {
        Output::AsSent => format!("decodebin caps={}", quote(RAW_OR_JPEG)),
        Output::Raw => "decodebin".to_string(),
    };
    // After an MJPEG source's parts: nothing more (camstream decodes), or,
    // for a template that extends the fragment, a decoder at full size.
    let jpeg = match output {
        Output::AsSent => String::new(),
        Output::Raw => format!(" ! jpegparse ! {}", jpeg_decoder(opts)),
    };
    match source {
        // decodebin takes whatever the webcam offers, raw or MJPEG; the
        // pipelines/ templates pin one when a camera needs it.
        Source::V4l2 { device } => format!("v4l2src device={} ! {decodebin}", quote(device)),
        // The caps filter keeps an audio track, if the camera has one, out
        // of the video path: its pad stays unlinked, and rtspsrc carries on.
        Source::Rtsp { url, .. } => format!(
            "rtspsrc location={} latency={} protocols={} tcp-timeout={RTSP_TCP_TIMEOUT_US} \
             drop-on-latency=true ! application/x-rtp,media=video ! {decodebin}",
            quote(url.as_str()),
            opts.latency_ms,
            opts.lower_transport(source),
        ),
        // Single JPEG images, fetched by `pipeline/` at the poll rate and
        // pushed in here; do-timestamp stamps each with its arrival time.
        // The caps filter says JPEG before the pipeline plays: until then
        // appsrc answers a caps query with ANY.
        Source::Http { .. } if opts.attempt.snapshots => format!(
            "appsrc name={SNAPSHOT_SOURCE} is-live=true do-timestamp=true format=time \
             caps=image/jpeg{}",
            match output {
                Output::AsSent => " ! capsfilter caps=image/jpeg".to_string(),
                Output::Raw => jpeg,
            }
        ),
        // Another MJPEG server's stream: split the multipart parts.
        // do-timestamp gives the parts the capture times a live source
        // needs; the caps filter gives the fragment an output pad before
        // the first part arrives.
        Source::Http { url, .. } => format!(
            "souphttpsrc location={} is-live=true do-timestamp=true timeout={HTTP_TIMEOUT_S}{} \
             ! multipartdemux single-stream=true ! {}",
            quote(url.as_str()),
            if opts.tls_verify {
                ""
            } else {
                " ssl-strict=false"
            },
            match output {
                Output::AsSent => "capsfilter caps=image/jpeg".to_string(),
                Output::Raw => format!("jpegparse ! {}", jpeg_decoder(opts)),
            }
        ),
        // A file is not live: without `identity sync=true` it would be
        // decoded as fast as the CPU allows instead of at its frame rate.
        Source::File { path } => format!(
            "filesrc location={} ! decodebin ! video/x-raw ! identity sync=true",
            quote(&path.to_string_lossy())
        ),
        Source::Test {
            pattern,
            width,
            height,
            fps,
        } => {
            // Pin I420: left open, videotestsrc fixates on its first format (a
            // 16-bit-per-channel RGB) and every stage after it pays for that.
            let caps =
                format!("video/x-raw,format=I420,width={width},height={height},framerate={fps}/1");
            if pattern == DEMO_PATTERN {
                // Scrolling colour bars with the wall-clock time: visibly
                // live, and sized to stay legible at a quarter scale.
                format!(
                    "videotestsrc is-live=true pattern=smpte horizontal-speed=2 ! {caps} \
                     ! clockoverlay halignment=right valignment=top time-format={} font-desc={}",
                    quote("%H:%M:%S"),
                    quote("Sans 48")
                )
            } else {
                format!("videotestsrc is-live=true pattern={pattern} ! {caps}")
            }
        }
        Source::Launch { description } => description.trim().to_string(),
    }
}

/// The JPEG decoder `{jpeg_decoder}` and `{source}` put inside a template,
/// which then goes on with raw video: camstream's own `camstreamjpegdec` at
/// full size (it drops truncated and corrupt frames instead of failing),
/// or with `mjpeg_lowres = false` jpegdec. A template that ends at
/// `image/jpeg` instead lets camstream decode, straight to the size in use
/// in the DCT, or pass the JPEGs through.
pub fn jpeg_decoder(opts: &RenderOptions) -> String {
    if opts.mjpeg_lowres {
        crate::pipeline::DCT_JPEG_DECODER.to_string()
    } else {
        "jpegdec".to_string()
    }
}

/// A source fragment or override is parsed on its own, as a bin, and
/// gst-launch reads caps written between two elements (`a ! video/x-raw !
/// b`) but not at the end, where they name nothing to link to: so caps
/// that end the text become the capsfilter they stand for. Element names
/// never hold a `/`, and a media type always does.
pub fn trailing_caps_as_capsfilter(description: &str) -> String {
    let Some(cut) = last_link(description) else {
        return description.to_string();
    };
    let tail = description[cut + 1..].trim();
    let media_type = tail
        .split(|c: char| c == ',' || c.is_whitespace())
        .next()
        .unwrap_or("");
    if !media_type.contains('/') {
        return description.to_string();
    }
    format!(
        "{} ! capsfilter caps={}",
        description[..cut].trim_end(),
        quote(tail)
    )
}

/// The byte offset of the last `!` outside double quotes.
fn last_link(description: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    let mut last = None;
    for (i, c) in description.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            '!' if !quoted => last = Some(i),
            _ => {}
        }
    }
    last
}

/// Quotes a value for gst-launch syntax when it needs it.
pub fn quote(value: &str) -> String {
    let bare = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '/' | '+' | '-'));
    if bare {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Renders a pipeline template: drops `#` comment lines, joins the rest into
/// one line, and replaces `{placeholder}`s with values from `source`.
///
/// Only `{name}` with a lowercase name counts as a placeholder, so caps
/// lists such as `format={ I420, NV12 }` pass through untouched.
pub fn render_template(
    text: &str,
    origin: &str,
    source: Option<&Source>,
    opts: &RenderOptions,
) -> Result<String, TemplateError> {
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect::<Vec<_>>()
        .join(" ");
    if joined.is_empty() {
        return Err(TemplateError::Empty {
            origin: origin.into(),
        });
    }
    let mut out = String::with_capacity(joined.len() + 64);
    let mut rest = joined.as_str();
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(after.len());
        if name_len == 0 || !after[name_len..].starts_with('}') {
            out.push('{');
            rest = after;
            continue;
        }
        let name = &after[..name_len];
        out.push_str(&placeholder(name, origin, source, opts)?);
        rest = &after[name_len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn placeholder(
    name: &str,
    origin: &str,
    source: Option<&Source>,
    opts: &RenderOptions,
) -> Result<String, TemplateError> {
    if !PLACEHOLDERS.iter().any(|(n, _)| *n == name) {
        return Err(TemplateError::UnknownPlaceholder {
            origin: origin.into(),
            name: name.into(),
        });
    }
    let source = source.ok_or_else(|| TemplateError::NoSource {
        origin: origin.into(),
    })?;
    let value = match (name, source) {
        ("source", source) => Some(fragment(source, opts, Output::Raw)),
        ("jpeg_decoder", _) => Some(jpeg_decoder(opts)),
        ("location", Source::Rtsp { url, .. } | Source::Http { url, .. }) => {
            Some(quote(url.as_str()))
        }
        ("location", Source::File { path }) => Some(quote(&path.to_string_lossy())),
        ("device", Source::V4l2 { device }) => Some(quote(device)),
        ("latency", Source::Rtsp { .. }) => Some(opts.latency_ms.to_string()),
        ("protocols", Source::Rtsp { .. }) => Some(opts.lower_transport(source).to_string()),
        ("width", Source::Test { width, .. }) => Some(width.to_string()),
        ("height", Source::Test { height, .. }) => Some(height.to_string()),
        ("fps", Source::Test { fps, .. }) => Some(fps.to_string()),
        ("pattern", Source::Test { pattern, .. }) => Some(if pattern == DEMO_PATTERN {
            "smpte".to_string()
        } else {
            pattern.clone()
        }),
        _ => None,
    };
    value.ok_or_else(|| TemplateError::NoValue {
        origin: origin.into(),
        name: name.into(),
        kind: source.kind(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> RenderOptions {
        RenderOptions::default()
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("/dev/video0"), "/dev/video0");
        assert_eq!(quote("rtsp://h:554/a?b=c"), "\"rtsp://h:554/a?b=c\"");
        assert_eq!(quote("a \"b\" \\c"), "\"a \\\"b\\\" \\\\c\"");
        assert_eq!(quote(""), "\"\"");
    }

    #[test]
    fn templates_fill_placeholders_and_keep_caps_lists() {
        let source = Source::parse("rtsp://u:pw@cam/h264").unwrap();
        let text = "# comment\nrtspsrc location={location} latency={latency}\n  ! video/x-raw,format={ I420, NV12 }";
        let out = render_template(text, "t", Some(&source), &opts()).unwrap();
        assert_eq!(
            out,
            "rtspsrc location=rtsp://cam/h264 latency=100 ! video/x-raw,format={ I420, NV12 }"
        );
    }

    #[test]
    fn template_errors_name_the_placeholder() {
        let source = Source::parse("rtsp://cam/x").unwrap();
        let err = render_template(
            "v4l2src device={device}",
            "v4l2.pipeline",
            Some(&source),
            &opts(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("{device}"), "{err}");
        assert!(err.to_string().contains("rtsp source"), "{err}");
        let err = render_template("x {nope}", "f", Some(&source), &opts()).unwrap_err();
        assert!(matches!(err, TemplateError::UnknownPlaceholder { .. }));
        assert!(matches!(
            render_template("# only a comment", "f", Some(&source), &opts()),
            Err(TemplateError::Empty { .. })
        ));
    }

    #[test]
    fn whole_pipelines_are_not_managed() {
        let full = "videotestsrc ! jpegenc ! appsink name=sink";
        let plan = plan(
            None,
            PipelineText::Template {
                text: full,
                origin: "pipeline",
            },
            &opts(),
        )
        .unwrap();
        assert!(!plan.managed);
        assert_eq!(plan.description, full);
    }

    #[test]
    fn jpeg_decoders_follow_the_option() {
        let decoder = |on| {
            jpeg_decoder(&RenderOptions {
                mjpeg_lowres: on,
                ..opts()
            })
        };
        assert_eq!(decoder(true), "camstreamjpegdec");
        assert_eq!(decoder(false), "jpegdec");
        let source = Source::parse("http://cam/video.mjpg").unwrap();
        let own = plan(Some(&source), PipelineText::Source, &opts()).unwrap();
        assert_eq!(own.jpeg_decoder, JpegDecoder::Dct);
        assert!(
            own.description
                .ends_with("multipartdemux single-stream=true ! capsfilter caps=image/jpeg"),
            "camstream's own fragment ends at the JPEG parts: {}",
            own.description
        );
        // `{source}` in a template is followed by the template's own
        // elements, which take raw video.
        let wrapped = plan(
            Some(&source),
            PipelineText::Template {
                text: "{source} ! videoflip method=rotate-180",
                origin: "t",
            },
            &RenderOptions {
                mjpeg_lowres: false,
                ..opts()
            },
        )
        .unwrap();
        assert!(
            wrapped
                .description
                .ends_with("jpegparse ! jpegdec ! videoflip method=rotate-180"),
            "{}",
            wrapped.description
        );
        assert_eq!(wrapped.jpeg_decoder, JpegDecoder::Full);
    }

    #[test]
    fn a_hardware_fallback_decodes_in_software_whatever_the_setting() {
        use crate::pipeline::Decoder;
        let source = Source::parse("rtsp://cam/x").unwrap();
        let vaapi = RenderOptions {
            decoder: Decoder::Vaapi,
            ..opts()
        };
        let plan_with = |opts: &RenderOptions| plan(Some(&source), PipelineText::Source, opts);
        assert_eq!(plan_with(&vaapi).unwrap().decoder, Decoder::Vaapi);
        let fallen_back = RenderOptions {
            attempt: Attempt {
                software_decoding: true,
                ..Attempt::default()
            },
            ..vaapi.clone()
        };
        let fell = plan_with(&fallen_back).unwrap();
        assert_eq!(fell.decoder, Decoder::Software);
        // The text is the same: decodebin's choice is steered, not written.
        assert_eq!(fell.description, plan_with(&vaapi).unwrap().description);
    }

    #[test]
    fn snapshots_are_polled_at_max_fps_without_a_second_cap() {
        let source = Source::parse("http://u:pw@cam/snapshot.jpg").unwrap();
        let snapshots = RenderOptions {
            max_fps: Some(4),
            attempt: Attempt {
                snapshots: true,
                ..Attempt::default()
            },
            ..opts()
        };
        let plan = plan(Some(&source), PipelineText::Source, &snapshots).unwrap();
        assert_eq!(
            plan.http,
            Some(HttpMode::Snapshots {
                url: "http://cam/snapshot.jpg".into(),
                interval: Duration::from_millis(250),
            })
        );
        assert_eq!(plan.max_fps, None, "no second cap on snapshots");
        assert_eq!(
            opts().snapshot_interval(),
            Duration::from_secs(1) / DEFAULT_SNAPSHOT_FPS
        );
        let stream = super::plan(Some(&source), PipelineText::Source, &opts()).unwrap();
        assert_eq!(stream.http, Some(HttpMode::Stream));
        assert_eq!(stream.transport, None);
    }

    #[test]
    fn caps_that_end_a_fragment_become_a_capsfilter() {
        assert_eq!(
            trailing_caps_as_capsfilter("videotestsrc ! video/x-raw,width=800, height=600"),
            "videotestsrc ! capsfilter caps=\"video/x-raw,width=800, height=600\""
        );
        assert_eq!(
            trailing_caps_as_capsfilter("v4l2src ! image/jpeg"),
            "v4l2src ! capsfilter caps=image/jpeg"
        );
        for unchanged in [
            "videotestsrc ! video/x-raw ! videoflip",
            "rtspsrc location=\"rtsp://h/a!b/c\"",
            "filesrc location=/a/b.mp4 ! decodebin",
            "videotestsrc",
        ] {
            assert_eq!(trailing_caps_as_capsfilter(unchanged), unchanged);
        }
    }

    #[test]
    fn credentials_never_enter_the_description() {
        let source = Source::parse("rtsp://admin:hunter2@cam/x").unwrap();
        let plan = plan(Some(&source), PipelineText::Source, &opts()).unwrap();
        assert!(!plan.description.contains("hunter2"));
        assert_eq!(plan.credentials.unwrap().password, "hunter2");
    }
}
