//! Camera sources: what a camera's `source` setting means, and the
//! gst-launch text that opens it.
//!
//! The spec follows OpenCV's `VideoCapture` argument, so a `source` copied
//! from an OpenCV program keeps working: `0` is `/dev/video0`, a URL opens
//! that stream, a path opens a file, and a string with `!` in it is a
//! GStreamer pipeline (OpenCV's `CAP_GSTREAMER`). Everything here is plain
//! strings; GStreamer types live in `pipeline/` only.

mod render;

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use url::Url;

pub use render::{
    DEFAULT_SNAPSHOT_FPS, HttpMode, JpegDecoder, PLACEHOLDERS, PipelinePlan, PipelineText,
    RenderOptions, SNAPSHOT_SOURCE, TemplateError, jpeg_decoder, plan, quote, render_template,
};

/// The test pattern shown by the built-in demo camera and by a bare `test:`.
pub const DEMO_PATTERN: &str = "demo";

/// The patterns `videotestsrc` knows (GStreamer 1.22), plus `demo`.
const TEST_PATTERNS: &[&str] = &[
    DEMO_PATTERN,
    "smpte",
    "snow",
    "black",
    "white",
    "red",
    "green",
    "blue",
    "checkers-1",
    "checkers-2",
    "checkers-4",
    "checkers-8",
    "circular",
    "blink",
    "smpte75",
    "zone-plate",
    "gamut",
    "chroma-zone-plate",
    "solid-color",
    "ball",
    "smpte100",
    "bar",
    "pinwheel",
    "spokes",
    "gradient",
    "colors",
    "smpte-rp-219",
];

/// RTSP schemes rtspsrc accepts: plain, TLS, and the forced-transport forms.
const RTSP_SCHEMES: &[&str] = &["rtsp", "rtsps", "rtspt", "rtspu", "rtspst", "rtspsu"];

/// User name and password taken out of a source URL. They are handed to the
/// source element as properties after parsing, so they never appear in a
/// pipeline string.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &crate::redact::MASK)
            .finish()
    }
}

/// A parsed `source` setting.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A V4L2 capture device (USB webcam), e.g. `/dev/video0`.
    V4l2 { device: String },
    /// An RTSP camera. `url` carries no credentials.
    Rtsp {
        url: Url,
        credentials: Option<Credentials>,
    },
    /// Another server's MJPEG stream (`multipart/x-mixed-replace`), relayed.
    Http {
        url: Url,
        credentials: Option<Credentials>,
    },
    /// A video file, played in a loop at its own frame rate.
    File { path: PathBuf },
    /// A generated test pattern.
    Test {
        pattern: String,
        width: u32,
        height: u32,
        fps: u32,
    },
    /// A gst-launch pipeline, either a fragment that yields raw video or a
    /// whole pipeline ending in `appsink name=sink`.
    Launch { description: String },
}

/// Why a `source` setting could not be understood. Messages never contain
/// a password.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SourceError {
    #[error(
        "the source is empty: set it to a device number (0), an rtsp:// or http:// URL, a file path, or test:"
    )]
    Empty,
    #[error(
        "unknown source scheme \"{scheme}:\": use rtsp://, rtsps://, http://, https://, file://, test:, \
         a V4L2 device (0 or /dev/video0), a file path, or a gst-launch pipeline"
    )]
    UnknownScheme { scheme: String },
    #[error("invalid source URL \"{url}\": {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid test source \"{spec}\": {reason}")]
    InvalidTest { spec: String, reason: String },
    #[error("invalid V4L2 device number {0}: use 0 for /dev/video0, 1 for /dev/video1, ...")]
    InvalidDevice(i64),
}

impl Source {
    /// Parses a source given as a number (OpenCV's camera index).
    pub fn from_index(index: i64) -> Result<Source, SourceError> {
        if !(0..=255).contains(&index) {
            return Err(SourceError::InvalidDevice(index));
        }
        Ok(Source::V4l2 {
            device: format!("/dev/video{index}"),
        })
    }

    /// Parses a source string. See docs/config.md for every form.
    pub fn parse(spec: &str) -> Result<Source, SourceError> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(SourceError::Empty);
        }
        if let Ok(index) = spec.parse::<i64>() {
            return Source::from_index(index);
        }
        // OpenCV treats any string containing '!' as a GStreamer pipeline
        // when built with GStreamer; do the same before looking for a scheme,
        // since a pipeline may well contain "rtsp://". Except a URL alone:
        // a password may hold a '!' (`rtsp://admin:Pass1!@cam/x`), and a
        // pipeline has more than one word.
        let url_alone = scheme_of(spec).is_some() && !spec.contains(char::is_whitespace);
        if spec.contains('!') && !url_alone {
            return Ok(Source::Launch {
                description: spec.to_string(),
            });
        }
        if spec.starts_with("/dev/") {
            return Ok(Source::V4l2 {
                device: spec.to_string(),
            });
        }
        if let Some(rest) = spec.strip_prefix("test:") {
            return parse_test(spec, rest);
        }
        if let Some(scheme) = scheme_of(spec) {
            let lower = scheme.to_ascii_lowercase();
            if RTSP_SCHEMES.contains(&lower.as_str()) {
                let (url, credentials) = parse_url(spec)?;
                return Ok(Source::Rtsp { url, credentials });
            }
            if lower == "http" || lower == "https" {
                let (url, credentials) = parse_url(spec)?;
                return Ok(Source::Http { url, credentials });
            }
            if lower == "file" {
                let (url, _) = parse_url(spec)?;
                let path = url.to_file_path().map_err(|()| SourceError::InvalidUrl {
                    url: crate::redact::redact_text(spec).into_owned(),
                    reason: "a file:// URI needs an absolute path, e.g. file:///videos/clip.mp4"
                        .into(),
                })?;
                return Ok(Source::File { path });
            }
            if lower == "v4l2" {
                // GStreamer's own v4l2:///dev/video0 URI form.
                let device = spec[scheme.len() + 1..].trim_start_matches("//");
                return Ok(Source::V4l2 {
                    device: device.to_string(),
                });
            }
            return Err(SourceError::UnknownScheme { scheme });
        }
        Ok(Source::File {
            path: PathBuf::from(spec),
        })
    }

    /// The kind of source, as the API and metrics name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::V4l2 { .. } => "v4l2",
            Source::Rtsp { .. } => "rtsp",
            Source::Http { .. } => "http",
            Source::File { .. } => "file",
            Source::Test { .. } => "test",
            Source::Launch { .. } => "pipeline",
        }
    }

    /// The credentials taken out of the URL, if any.
    pub fn credentials(&self) -> Option<&Credentials> {
        match self {
            Source::Rtsp { credentials, .. } | Source::Http { credentials, .. } => {
                credentials.as_ref()
            }
            _ => None,
        }
    }

    /// The secrets this source holds, for a [`crate::redact::Redactor`]:
    /// the URL's password (and its Basic form), credential query
    /// parameters, and what the rules find in a pipeline or path.
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets = Vec::new();
        if let Some(c) = self.credentials() {
            secrets.push(c.password.clone());
            secrets.push(crate::redact::basic_credentials(&c.user, &c.password));
        }
        let text = match self {
            Source::Rtsp { url, .. } | Source::Http { url, .. } => url.to_string(),
            Source::Launch { description } => description.clone(),
            Source::File { path } => path.to_string_lossy().into_owned(),
            Source::V4l2 { .. } | Source::Test { .. } => String::new(),
        };
        secrets.extend(crate::redact::find_secrets(&text));
        secrets
    }
}

/// Shown with every secret masked (the URL's password, credential query
/// parameters, secret properties): this is the form for logs and the API.
impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.unmasked_display();
        f.write_str(&crate::redact::redact_text(&shown))
    }
}

impl Source {
    /// The source as [`fmt::Display`] shows it, before the redactor's
    /// rules run; only the URL's own credentials are replaced here.
    fn unmasked_display(&self) -> String {
        match self {
            Source::Rtsp { url, credentials } | Source::Http { url, credentials } => {
                let mut shown = url.clone();
                if let Some(c) = credentials {
                    // Both setters only fail for URLs that cannot carry
                    // credentials, which parse_url has already ruled out.
                    let _ = shown.set_username(&c.user);
                    let _ = shown.set_password(Some(crate::redact::MASK));
                }
                shown.to_string()
            }
            Source::V4l2 { device } => device.clone(),
            Source::File { path } => path.display().to_string(),
            Source::Test {
                pattern,
                width,
                height,
                fps,
            } => format!("test:{pattern}?width={width}&height={height}&fps={fps}"),
            Source::Launch { description } => description.clone(),
        }
    }
}

/// The scheme of `spec` if it looks like `scheme:...` with a plausible
/// scheme name. A Windows-style `C:\...` path is not a URL.
fn scheme_of(spec: &str) -> Option<String> {
    let colon = spec.find(':')?;
    let scheme = &spec[..colon];
    let plausible = scheme.len() >= 2
        && scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (plausible && spec[colon + 1..].starts_with("//")).then(|| scheme.to_string())
}

/// Parses a URL and takes its credentials out of it.
fn parse_url(spec: &str) -> Result<(Url, Option<Credentials>), SourceError> {
    let invalid = |reason: String| SourceError::InvalidUrl {
        url: crate::redact::redact_text(spec).into_owned(),
        reason,
    };
    let mut url = Url::parse(spec).map_err(|e| invalid(e.to_string()))?;
    if url.scheme() != "file" && url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("the URL has no host".into()));
    }
    let user = percent_decode(url.username());
    let password = url.password().map(percent_decode);
    let credentials = match (user.is_empty(), password) {
        (true, None) => None,
        (_, password) => Some(Credentials {
            user,
            password: password.unwrap_or_default(),
        }),
    };
    if credentials.is_some() {
        // Infallible for URLs with a host, checked above.
        let _ = url.set_username("");
        let _ = url.set_password(None);
    }
    Ok((url, credentials))
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// `test:`, `test:smpte`, `test:ball?width=1920&height=1080&fps=30`.
fn parse_test(spec: &str, rest: &str) -> Result<Source, SourceError> {
    let invalid = |reason: String| SourceError::InvalidTest {
        spec: spec.to_string(),
        reason,
    };
    let (pattern, query) = rest.split_once('?').unwrap_or((rest, ""));
    let pattern = pattern.trim_start_matches("//");
    let pattern = if pattern.is_empty() {
        DEMO_PATTERN
    } else {
        pattern
    };
    if !TEST_PATTERNS.contains(&pattern) {
        return Err(invalid(format!(
            "unknown pattern \"{pattern}\"; known patterns: {}",
            TEST_PATTERNS.join(", ")
        )));
    }
    let (mut width, mut height, mut fps) = (1280u32, 720u32, 30u32);
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match key.as_ref() {
            "width" => &mut width,
            "height" => &mut height,
            "fps" => &mut fps,
            other => {
                return Err(invalid(format!(
                    "unknown option \"{other}\"; use width, height and fps"
                )));
            }
        };
        *slot = value
            .parse()
            .ok()
            .filter(|v| (1..=16384).contains(v))
            .ok_or_else(|| invalid(format!("{key}={value} is not a number from 1 to 16384")))?;
    }
    Ok(Source::Test {
        pattern: pattern.to_string(),
        width,
        height,
        fps,
    })
}

/// How an RTSP camera's packets travel: the `transport` setting.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// RTP over TCP first; if the server sets up no stream over TCP (it
    /// answers 461 Unsupported Transport, as UDP-only servers and older
    /// cameras do), RTP over UDP at once. What worked is remembered for the
    /// camera's later restarts. The default: a camera works without anyone
    /// knowing which transports it allows.
    #[default]
    Auto,
    /// Only RTP interleaved on the RTSP TCP connection.
    Tcp,
    /// Only RTP over UDP.
    Udp,
}

/// The lower transport RTP rides on for one attempt to open an RTSP
/// camera (rtspsrc's `protocols`).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum LowerTransport {
    /// Interleaved on the RTSP TCP connection: one connection, through NAT
    /// and firewalls, no loss.
    Tcp,
    /// RTP and RTCP on UDP ports of their own.
    Udp,
}

impl LowerTransport {
    /// "tcp" / "udp", as the config, the API and rtspsrc write it.
    pub fn as_str(self) -> &'static str {
        match self {
            LowerTransport::Tcp => "tcp",
            LowerTransport::Udp => "udp",
        }
    }

    /// "TCP" / "UDP", for messages.
    pub fn name(self) -> &'static str {
        match self {
            LowerTransport::Tcp => "TCP",
            LowerTransport::Udp => "UDP",
        }
    }

    /// The other one.
    pub fn other(self) -> LowerTransport {
        match self {
            LowerTransport::Tcp => LowerTransport::Udp,
            LowerTransport::Udp => LowerTransport::Tcp,
        }
    }
}

impl fmt::Display for LowerTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<LowerTransport> for Transport {
    fn from(lower: LowerTransport) -> Transport {
        match lower {
            LowerTransport::Tcp => Transport::Tcp,
            LowerTransport::Udp => Transport::Udp,
        }
    }
}

impl Transport {
    /// The lower transports to try, in order, for one (re)start of an RTSP
    /// camera: a pinned one alone; for `auto`, the one that worked last
    /// (`remembered`) first, else TCP first; a URL scheme that forces one
    /// (`rtspt://`, `rtspu://`) wins over `auto`.
    pub fn order(
        self,
        forced: Option<LowerTransport>,
        remembered: Option<LowerTransport>,
    ) -> Vec<LowerTransport> {
        match (self, forced) {
            (Transport::Tcp, _) => vec![LowerTransport::Tcp],
            (Transport::Udp, _) => vec![LowerTransport::Udp],
            (Transport::Auto, Some(forced)) => vec![forced],
            (Transport::Auto, None) => {
                let first = remembered.unwrap_or(LowerTransport::Tcp);
                vec![first, first.other()]
            }
        }
    }
}

impl Source {
    /// The lower transport an RTSP URL's scheme forces, if it does:
    /// `rtspt://` (and `rtspst://`) TCP, `rtspu://` (and `rtspsu://`) UDP.
    pub fn forced_transport(&self) -> Option<LowerTransport> {
        let Source::Rtsp { url, .. } = self else {
            return None;
        };
        match url.scheme() {
            "rtspt" | "rtspst" => Some(LowerTransport::Tcp),
            "rtspu" | "rtspsu" => Some(LowerTransport::Udp),
            _ => None,
        }
    }
}

/// What one attempt to open a camera uses, beyond its settings: the choices
/// camstream makes (and remembers) for a camera that did not pin them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attempt {
    /// The RTSP lower transport; None renders the setting's first choice.
    pub transport: Option<LowerTransport>,
    /// The HTTP source serves single JPEG images, not an MJPEG stream:
    /// poll it.
    pub snapshots: bool,
    /// A hardware decoder failed for this camera: decode in software,
    /// whatever the `decoder` setting allows.
    pub software_decoding: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtsp(url: &str) -> (String, Option<Credentials>) {
        match Source::parse(url).unwrap() {
            Source::Rtsp { url, credentials } => (url.to_string(), credentials),
            other => panic!("not rtsp: {other:?}"),
        }
    }

    #[test]
    fn opencv_indices_are_v4l2_devices() {
        let dev0 = Source::V4l2 {
            device: "/dev/video0".into(),
        };
        assert_eq!(Source::parse("0").unwrap(), dev0);
        assert_eq!(Source::from_index(0).unwrap(), dev0);
        assert_eq!(
            Source::parse("/dev/video2").unwrap(),
            Source::V4l2 {
                device: "/dev/video2".into()
            }
        );
        assert_eq!(
            Source::parse("v4l2:///dev/video1").unwrap(),
            Source::V4l2 {
                device: "/dev/video1".into()
            }
        );
        assert_eq!(Source::from_index(-1), Err(SourceError::InvalidDevice(-1)));
    }

    #[test]
    fn rtsp_credentials_leave_the_url() {
        let (url, creds) = rtsp("rtsp://admin:12345@192.168.1.64:554/Streaming/Channels/101");
        assert_eq!(url, "rtsp://192.168.1.64:554/Streaming/Channels/101");
        let creds = creds.unwrap();
        assert_eq!(
            (creds.user.as_str(), creds.password.as_str()),
            ("admin", "12345")
        );
        // Percent-encoded characters in the password are decoded for the
        // element, and never shown.
        let (_, creds) = rtsp("rtsp://admin:p%40ss+w%3Ad@cam/x");
        assert_eq!(creds.unwrap().password, "p@ss+w:d");
        // A '!' in the password leaves a URL a URL.
        let (url, creds) = rtsp("rtsp://admin:Pass1!@cam/x");
        assert_eq!(
            (url.as_str(), creds.unwrap().password.as_str()),
            ("rtsp://cam/x", "Pass1!")
        );
        let shown = Source::parse("rtsp://admin:12345@cam/x")
            .unwrap()
            .to_string();
        assert_eq!(shown, "rtsp://admin:***@cam/x");
        assert!(
            format!("{:?}", Source::parse("rtsp://admin:12345@cam/x"))
                .find("12345")
                .is_none()
        );
    }

    #[test]
    fn other_schemes() {
        assert!(matches!(
            Source::parse("rtsps://h/x").unwrap(),
            Source::Rtsp { .. }
        ));
        assert!(matches!(
            Source::parse("http://u:p@h:8080/video.mjpg").unwrap(),
            Source::Http {
                credentials: Some(_),
                ..
            }
        ));
        assert_eq!(
            Source::parse("file:///videos/a%20b.mp4").unwrap(),
            Source::File {
                path: "/videos/a b.mp4".into()
            }
        );
        assert_eq!(
            Source::parse("clips/door.mkv").unwrap(),
            Source::File {
                path: "clips/door.mkv".into()
            }
        );
        assert!(matches!(
            Source::parse("videotestsrc ! videoconvert").unwrap(),
            Source::Launch { .. }
        ));
        assert_eq!(
            Source::parse("rtmp://h/live"),
            Err(SourceError::UnknownScheme {
                scheme: "rtmp".into()
            })
        );
        assert_eq!(Source::parse("  "), Err(SourceError::Empty));
        let err = Source::parse("rtsp://admin:secret@/x")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret"), "{err}");
        // Query parameters carrying credentials are masked when shown.
        let shown = Source::parse("http://cam/videostream.cgi?user=admin&pwd=Foscam1")
            .unwrap()
            .to_string();
        assert_eq!(shown, "http://cam/videostream.cgi?user=admin&pwd=***");
        let secrets = Source::parse("http://u:p4ss@cam/v.cgi?loginpas=Dahua1")
            .unwrap()
            .secrets();
        for secret in [
            "p4ss",
            "Dahua1",
            &crate::redact::basic_credentials("u", "p4ss"),
        ] {
            assert!(secrets.iter().any(|s| s == secret), "{secret}: {secrets:?}");
        }
    }

    #[test]
    fn transports_to_try() {
        use LowerTransport::{Tcp, Udp};
        assert_eq!(Transport::default(), Transport::Auto);
        assert_eq!(Transport::Auto.order(None, None), [Tcp, Udp]);
        assert_eq!(Transport::Auto.order(None, Some(Udp)), [Udp, Tcp]);
        assert_eq!(Transport::Auto.order(Some(Udp), Some(Tcp)), [Udp]);
        assert_eq!(Transport::Tcp.order(None, Some(Udp)), [Tcp]);
        assert_eq!(Transport::Udp.order(None, None), [Udp]);
        let forced = |url: &str| Source::parse(url).unwrap().forced_transport();
        assert_eq!(forced("rtsp://cam/x"), None);
        assert_eq!(forced("rtspt://cam/x"), Some(Tcp));
        assert_eq!(forced("rtspu://cam/x"), Some(Udp));
        assert_eq!(forced("rtspsu://cam/x"), Some(Udp));
        assert_eq!(forced("http://cam/x"), None);
    }

    #[test]
    fn test_patterns() {
        assert_eq!(
            Source::parse("test:").unwrap(),
            Source::Test {
                pattern: "demo".into(),
                width: 1280,
                height: 720,
                fps: 30
            }
        );
        assert_eq!(
            Source::parse("test:smpte?width=1920&height=1080&fps=25").unwrap(),
            Source::Test {
                pattern: "smpte".into(),
                width: 1920,
                height: 1080,
                fps: 25
            }
        );
        assert!(
            Source::parse("test:nope")
                .unwrap_err()
                .to_string()
                .contains("known patterns")
        );
        assert!(Source::parse("test:ball?width=0").is_err());
        assert!(Source::parse("test:ball?depth=3").is_err());
    }
}
