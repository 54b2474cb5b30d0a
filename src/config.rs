//! The configuration: one serde tree read from TOML, every default named and
//! documented (docs/config.md is the reference, camstream.example.toml the
//! starter file).
//!
//! Errors come in two sizes. A file that cannot be read or parsed, or a bad
//! `[server]` / `[defaults]` table, stops camstream with the file, line and
//! column. A bad camera only fails that camera: it is still listed, in state
//! `failed` with the reason, and every other camera runs.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::AuthConfig;
use crate::pipeline::Decoder;
use crate::redact::{Redactor, redact_text};
use crate::source::{self, Attempt, PipelinePlan, PipelineText, RenderOptions, Source, Transport};
use crate::tls::TlsConfig;
use crate::upstream::{RelaySource, RemoteCamera, Upstream, UpstreamConfig};

/// The config file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "camstream.toml";
/// The port the Django backend this replaces listened on, so existing front
/// ends keep their URLs.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8000";
/// The OpenCV pattern's `resize(fx=0.25, fy=0.25)`: a quarter of the
/// camera's width and height, which kept Hikvision streams responsive.
pub const DEFAULT_SCALE: f64 = 0.25;
/// JPEG quality: visually clean at a quarter of a 1080p frame, ~20 KB.
pub const DEFAULT_QUALITY: u8 = 80;
/// How long a camera keeps running after its last viewer leaves, so a page
/// reload does not pay for a reconnect.
pub const DEFAULT_IDLE_TIMEOUT_S: f64 = 10.0;
/// rtspsrc's jitter buffer; its own default of 2000 ms is two seconds of lag.
pub const DEFAULT_LATENCY_MS: u32 = 100;
/// Where `pipeline_file` names are looked up, relative to the config file.
pub const DEFAULT_PIPELINES_DIR: &str = "pipelines";
/// The built-in demo camera served when no camera is configured.
pub const DEMO_CAMERA_ID: &str = "demo";
/// No frame for this long while streaming means the source hung (rtspsrc
/// can stall without posting an error): tear down and restart.
pub const DEFAULT_WATCHDOG_S: f64 = 5.0;
/// Time from (re)start to the first frame before the attempt counts as
/// failed: an RTSP connect (bounded at 5 s), a fall back from TCP to UDP
/// (up to another 5 s when no UDP packet arrives), and the wait for a key
/// frame, which cameras send every 1-4 s (some every 10 s on a long GOP).
pub const DEFAULT_FIRST_FRAME_TIMEOUT_S: f64 = 20.0;
/// A viewer whose socket accepts nothing for this long is dropped: long
/// enough for a phone switching networks, short enough to free its slot.
pub const DEFAULT_WRITE_TIMEOUT_S: f64 = 30.0;
/// Viewers of one camera. A guard against runaway clients, not a tuning
/// knob: one camera's stream costs ~0.1% of a core per viewer.
pub const DEFAULT_MAX_VIEWERS_PER_CAMERA: usize = 1000;
/// Viewers of all cameras together; each holds a socket and a file
/// descriptor (camstream raises its descriptor limit to the hard limit).
pub const DEFAULT_MAX_VIEWERS: usize = 4000;
/// From accept to a complete request head: a browser on a LAN needs
/// milliseconds; a phone on a bad link a few seconds.
pub const DEFAULT_HEADER_TIMEOUT_S: f64 = 10.0;
/// A connection with no byte moving either way for this long is closed.
/// Longer than anything camstream itself waits for (a camera's first
/// frame, 10 s; a stream's placeholder, 1 s).
pub const DEFAULT_IDLE_CONNECTION_TIMEOUT_S: f64 = 60.0;
/// Open connections in total: every viewer the server admits, plus room
/// for the page, API calls and connections not yet past the header
/// timeout.
pub const DEFAULT_MAX_CONNECTIONS: usize = DEFAULT_MAX_VIEWERS + 1000;
/// Open connections from one address. Behind a reverse proxy or a relay
/// every viewer comes from the proxy's address, so this must fit a proxy
/// with several hundred viewers; on a LAN without one, lower it.
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 1000;

/// The size a bare URL serves: the camera's own `scale` and `quality`.
/// Reserved: `?size=default` is the same as no `size`.
pub const DEFAULT_SIZE: &str = "default";
/// The source's full resolution, for `snapshot.jpg?size=full` only.
/// Reserved.
pub const FULL_SIZE: &str = "full";
/// Sizes one camera may name besides its default. Each watched size is a
/// scaler and an encoder of its own, so a handful covers every use (tile,
/// large view, a wall); the cap keeps a typo'd loop in a generated config
/// from building dozens of branches.
pub const MAX_SIZES: usize = 8;
/// The longest size name: it sits in URLs and in the API.
pub const MAX_SIZE_NAME_LEN: usize = 32;

/// A fatal configuration error: camstream cannot start with this file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{location}: {message}")]
    Parse { location: String, message: String },
}

/// A camera id: what URLs and the API name a camera by. The seed's integer
/// ids (`camera_id=1`) are ids too.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CameraId(String);

impl CameraId {
    pub const MAX_LEN: usize = 64;

    /// Checks an id: 1-64 characters from `A-Z a-z 0-9 _ - .`, so it can sit
    /// in a URL path unescaped.
    pub fn new(id: impl Into<String>) -> Result<CameraId, String> {
        let id = id.into();
        if id.is_empty() {
            return Err(
                "camera id is empty: give every camera an id such as \"1\" or \"front-door\""
                    .into(),
            );
        }
        if id.len() > Self::MAX_LEN {
            return Err(format!(
                "camera id is longer than {} characters",
                Self::MAX_LEN
            ));
        }
        if let Some(bad) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        {
            return Err(format!(
                "camera id {id:?} contains {bad:?}: use only letters, digits, '_', '-' and '.'"
            ));
        }
        if id == "." || id == ".." {
            // Browsers and proxies resolve such URL segments away.
            return Err(format!(
                "camera id {id:?} cannot sit in a URL path: use letters or digits too"
            ));
        }
        Ok(CameraId(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CameraId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CameraId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Accept `id = 1` as well as `id = "1"`: the seed's ids are numbers.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(i64),
            Text(String),
        }
        let raw = match Raw::deserialize(d)? {
            Raw::Number(n) => n.to_string(),
            Raw::Text(s) => s,
        };
        CameraId::new(raw).map_err(serde::de::Error::custom)
    }
}

/// The name of one of a camera's `sizes`, as `?size=NAME` gives it: 1-32
/// lowercase letters, digits, `_` or `-`, starting with a letter, and not
/// one of the reserved names `default` and `full`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SizeName(String);

impl SizeName {
    pub fn new(name: impl Into<String>) -> Result<SizeName, String> {
        let name = name.into();
        if name == DEFAULT_SIZE || name == FULL_SIZE {
            return Err(format!(
                "size name \"{name}\" is reserved (size=default is the camera's scale and quality, \
                 size=full the source's full resolution for snapshot.jpg): pick another name"
            ));
        }
        let valid = !name.is_empty()
            && name.len() <= MAX_SIZE_NAME_LEN
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'));
        if !valid {
            return Err(format!(
                "size name {:?} is not a short identifier: use 1 to {MAX_SIZE_NAME_LEN} lowercase \
                 letters, digits, '_' or '-', starting with a letter (e.g. thumb, large)",
                redact_text(&name)
            ));
        }
        Ok(SizeName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SizeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SizeName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        SizeName::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// One entry of a `sizes` table, as written:
/// `thumb = { scale = 0.125, quality = 70 }`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SizeConfig {
    pub scale: f64,
    /// Read wide and range-checked, as the camera's own `quality`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<i64>,
}

/// A `sizes` table: name -> size.
pub type SizesConfig = BTreeMap<SizeName, SizeConfig>;

/// One of a camera's sizes, validated, its quality filled in from the
/// camera's.
#[derive(Clone, Debug, PartialEq)]
pub struct Size {
    pub name: SizeName,
    pub scale: f64,
    pub quality: u8,
}

/// A `source` as written: OpenCV's camera index or a string.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum SourceValue {
    Index(i64),
    Text(String),
}

impl SourceValue {
    pub fn parse(&self) -> Result<Source, source::SourceError> {
        match self {
            SourceValue::Index(i) => Source::from_index(*i),
            SourceValue::Text(s) => Source::parse(s),
        }
    }
}

/// `[server]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Directory of pipeline templates that `pipeline_file` names; relative
    /// paths are relative to the config file.
    #[serde(default)]
    pub pipelines_dir: Option<PathBuf>,
    /// Seconds a stalled viewer may block before it is dropped.
    #[serde(default = "default_write_timeout_s")]
    pub write_timeout_s: f64,
    /// Viewers of all cameras together; more get 503 with Retry-After.
    #[serde(default = "default_max_viewers")]
    pub max_viewers: usize,
    /// `[server.auth]`: tokens and users. Without it everything is open and
    /// cameras cannot be changed through the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
    /// Origins of other web apps allowed to call the JSON API from a
    /// browser (CORS). Empty: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cors_origins: Vec<CorsOrigin>,
    /// Seconds from accept to a complete request head.
    #[serde(default = "default_header_timeout_s")]
    pub header_timeout_s: f64,
    /// Seconds a connection may carry nothing before it is closed.
    #[serde(default = "default_idle_connection_timeout_s")]
    pub idle_connection_timeout_s: f64,
    /// Open connections in total; more are closed at accept.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Open connections from one client address; more are closed at
    /// accept.
    #[serde(default = "default_max_connections_per_client")]
    pub max_connections_per_client: usize,
    /// Whether the API may set a camera's raw `pipeline` (or a gst-launch
    /// `source`): those can name any GStreamer element, `filesink`
    /// included, so they are as good as a shell account.
    #[serde(default)]
    pub api_pipelines: bool,
    /// `[server.tls]`: serve HTTPS and HTTP/2 on `listen` (docs/tls.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// A second, plain-HTTP address that only redirects to HTTPS (and
    /// serves /healthz); needs `[server.tls]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<SocketAddr>,
}

fn default_header_timeout_s() -> f64 {
    DEFAULT_HEADER_TIMEOUT_S
}

fn default_idle_connection_timeout_s() -> f64 {
    DEFAULT_IDLE_CONNECTION_TIMEOUT_S
}

fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}

fn default_max_connections_per_client() -> usize {
    DEFAULT_MAX_CONNECTIONS_PER_CLIENT
}

fn default_write_timeout_s() -> f64 {
    DEFAULT_WRITE_TIMEOUT_S
}

fn default_max_viewers() -> usize {
    DEFAULT_MAX_VIEWERS
}

impl ServerConfig {
    /// Checks the values serde cannot.
    fn validate(&self) -> Result<(), String> {
        if !(self.write_timeout_s.is_finite() && (1.0..=3600.0).contains(&self.write_timeout_s)) {
            return Err(format!(
                "[server] write_timeout_s = {} is out of range: use 1 to 3600 seconds",
                self.write_timeout_s
            ));
        }
        if self.max_viewers == 0 {
            return Err("[server] max_viewers = 0 would refuse every viewer: use 1 or more".into());
        }
        for (key, value, range) in [
            ("header_timeout_s", self.header_timeout_s, (0.1, 600.0)),
            (
                "idle_connection_timeout_s",
                self.idle_connection_timeout_s,
                (1.0, 86_400.0),
            ),
        ] {
            if !(value.is_finite() && (range.0..=range.1).contains(&value)) {
                return Err(format!(
                    "[server] {key} = {value} is out of range: use {} to {} seconds",
                    range.0, range.1
                ));
            }
        }
        for (key, value) in [
            ("max_connections", self.max_connections),
            (
                "max_connections_per_client",
                self.max_connections_per_client,
            ),
        ] {
            if value == 0 {
                return Err(format!(
                    "[server] {key} = 0 would refuse every connection: use 1 or more"
                ));
            }
        }
        if let Some(tls) = &self.tls {
            tls.validate()?;
        }
        if self.http_listen.is_some() && self.tls.is_none() {
            return Err(
                "[server] http_listen redirects to HTTPS, which needs [server.tls]: configure it, or leave http_listen out".into(),
            );
        }
        Ok(())
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.write_timeout_s.clamp(1.0, 3600.0))
    }
}

/// An entry of `cors_origins`: `"*"` or `scheme://host[:port]`, kept in the
/// form browsers send in the `Origin` header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct CorsOrigin(String);

impl CorsOrigin {
    /// Any origin.
    pub const ANY: &str = "*";

    pub fn new(origin: &str) -> Result<CorsOrigin, String> {
        if origin == Self::ANY {
            return Ok(CorsOrigin(origin.into()));
        }
        let bad = |why: &str| {
            format!(
                "cors_origins entry {:?} {why}: write an origin as scheme://host[:port], e.g. \"https://app.example.com\" or \"http://localhost:3000\", or \"*\" for any",
                redact_text(origin)
            )
        };
        let url = url::Url::parse(origin).map_err(|e| bad(&format!("is not a URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("is not http or https"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(bad("has a path or query"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("has credentials"));
        }
        Ok(CorsOrigin(url.origin().ascii_serialization()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for CorsOrigin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        CorsOrigin::new(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN
        .parse()
        .expect("DEFAULT_LISTEN is a valid address")
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            pipelines_dir: None,
            write_timeout_s: DEFAULT_WRITE_TIMEOUT_S,
            max_viewers: DEFAULT_MAX_VIEWERS,
            auth: None,
            cors_origins: Vec::new(),
            header_timeout_s: DEFAULT_HEADER_TIMEOUT_S,
            idle_connection_timeout_s: DEFAULT_IDLE_CONNECTION_TIMEOUT_S,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            api_pipelines: false,
            tls: None,
            http_listen: None,
        }
    }
}

/// `[defaults]`: settings every camera inherits unless it sets its own.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub scale: Option<f64>,
    // Integers are read wide and range-checked, so `quality = 300` says
    // "use 1 to 100" rather than "expected u8".
    pub quality: Option<i64>,
    pub max_fps: Option<i64>,
    pub always_on: Option<bool>,
    pub idle_timeout_s: Option<f64>,
    pub transport: Option<Transport>,
    pub latency_ms: Option<i64>,
    pub watchdog_s: Option<f64>,
    pub max_viewers: Option<i64>,
    pub mjpeg_lowres: Option<bool>,
    pub first_frame_timeout_s: Option<f64>,
    pub tls_verify: Option<bool>,
    /// Sizes every camera offers; a camera's own `sizes` add to these or
    /// replace them by name.
    pub sizes: Option<SizesConfig>,
    pub decoder: Option<Decoder>,
}

/// One `[[cameras]]` entry, as written.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    pub id: CameraId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fps: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always_on: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watchdog_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_viewers: Option<i64>,
    /// MJPEG sources: decode straight to 1/2, 1/4 or 1/8 size in the DCT
    /// (camstreamjpegdec); jpegdec at full size when false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mjpeg_lowres: Option<bool>,
    /// Seconds from a (re)start to the first frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_frame_timeout_s: Option<f64>,
    /// Verify `rtsps://`/`https://` certificates (false accepts any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_verify: Option<bool>,
    /// Sizes a viewer can ask for with `?size=NAME`, besides the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sizes: Option<SizesConfig>,
    /// Which decoders decodebin may plug: auto, software, or a hardware
    /// family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder: Option<Decoder>,
    /// A gst-launch override, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// A gst-launch override read from a file in the pipelines directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_file: Option<PathBuf>,
}

/// A camera's settings, validated and with defaults applied. Equal settings
/// mean the same pipeline: a reload leaves such a camera alone.
#[derive(Clone, Debug, PartialEq)]
pub struct CameraSettings {
    pub id: CameraId,
    pub name: String,
    pub source: Option<Source>,
    pub scale: f64,
    pub quality: u8,
    pub max_fps: Option<u32>,
    pub always_on: bool,
    pub idle_timeout: Duration,
    pub transport: Transport,
    pub latency_ms: u32,
    /// Restart the pipeline after this long without a frame.
    pub watchdog: Duration,
    /// Viewers of this camera; more get 503.
    pub max_viewers: usize,
    pub mjpeg_lowres: bool,
    /// Give up on a (re)start that has not delivered its first frame after
    /// this long; separate from `watchdog`, which applies once frames flow.
    pub first_frame_timeout: Duration,
    /// Verify TLS certificates of `rtsps://` and `https://` sources.
    pub tls_verify: bool,
    /// The sizes besides the default one (`scale`, `quality`), by name.
    pub sizes: Vec<Size>,
    /// Which decoders decodebin may plug.
    pub decoder: Decoder,
    /// The override's text and where it came from.
    pub pipeline: Option<PipelineOverride>,
    /// A camera of an upstream camstream, relayed: its frames are pulled
    /// from there, no pipeline runs.
    pub relay: Option<RelaySource>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PipelineOverride {
    pub text: String,
    /// "pipeline" for an inline override, else the file's name.
    pub origin: String,
}

impl CameraSettings {
    /// The options that shape this camera's rendered pipeline.
    pub fn render_options(&self) -> RenderOptions {
        RenderOptions {
            transport: self.transport,
            latency_ms: self.latency_ms,
            max_fps: self.max_fps,
            mjpeg_lowres: self.mjpeg_lowres,
            tls_verify: self.tls_verify,
            decoder: self.decoder,
            attempt: Attempt::default(),
        }
    }

    /// The camera's pipeline, rendered.
    pub fn plan(&self) -> Result<PipelinePlan, source::TemplateError> {
        self.plan_attempt(Attempt::default())
    }

    /// The camera's pipeline for one attempt to open it (the transport and
    /// HTTP mode camstream chose), rendered.
    pub fn plan_attempt(&self, attempt: Attempt) -> Result<PipelinePlan, source::TemplateError> {
        let text = match &self.pipeline {
            Some(o) => PipelineText::Template {
                text: &o.text,
                origin: &o.origin,
            },
            None => PipelineText::Source,
        };
        let opts = RenderOptions {
            attempt,
            ..self.render_options()
        };
        source::plan(self.source.as_ref(), text, &opts)
    }

    /// Masks this camera's secrets in any text: those of its source and
    /// those the redactor's rules find in its override.
    pub fn redactor(&self) -> Redactor {
        Redactor::new(self.secrets())
    }

    fn secrets(&self) -> Vec<String> {
        let from_override = self
            .pipeline
            .iter()
            .flat_map(|o| crate::redact::find_secrets(&o.text));
        self.source
            .iter()
            .flat_map(Source::secrets)
            .chain(from_override)
            .collect()
    }

    /// The source as shown to people: every secret masked.
    pub fn source_display(&self) -> String {
        let shown = match (&self.source, &self.pipeline) {
            _ if self.relay.is_some() => {
                format!(
                    "relay: {}",
                    self.relay
                        .as_ref()
                        .map(RelaySource::display)
                        .unwrap_or_default()
                )
            }
            (Some(source), _) => source.to_string(),
            (None, Some(o)) => format!("pipeline: {}", o.origin),
            (None, None) => String::new(),
        };
        self.redactor().redact(&shown)
    }

    /// The built-in demo camera.
    pub fn demo() -> CameraSettings {
        CameraConfig {
            id: CameraId::new(DEMO_CAMERA_ID).expect("valid id"),
            name: Some("Demo camera".into()),
            source: Some(SourceValue::Text("test:".into())),
            ..CameraConfig::new(CameraId::new(DEMO_CAMERA_ID).expect("valid id"))
        }
        .resolve(&Defaults::default(), Path::new(DEFAULT_PIPELINES_DIR))
        .expect("the demo camera is valid")
    }
}

impl CameraConfig {
    /// A camera with nothing but an id.
    pub fn new(id: CameraId) -> CameraConfig {
        CameraConfig {
            id,
            name: None,
            source: None,
            scale: None,
            quality: None,
            max_fps: None,
            always_on: None,
            idle_timeout_s: None,
            transport: None,
            latency_ms: None,
            watchdog_s: None,
            max_viewers: None,
            mjpeg_lowres: None,
            first_frame_timeout_s: None,
            tls_verify: None,
            sizes: None,
            decoder: None,
            pipeline: None,
            pipeline_file: None,
        }
    }

    /// Validates the entry and applies `defaults`. The error lists every
    /// problem found, each naming the setting and how to fix it.
    pub fn resolve(
        &self,
        defaults: &Defaults,
        pipelines_dir: &Path,
    ) -> Result<CameraSettings, String> {
        let mut problems = Vec::new();
        let scale = self.scale.or(defaults.scale).unwrap_or(DEFAULT_SCALE);
        if !(scale > 0.0 && scale <= 1.0) {
            problems.push(format!(
                "scale = {scale} is out of range: use a factor above 0 and at most 1 (0.25 is a quarter of the camera's width and height)"
            ));
        }
        let quality = self
            .quality
            .or(defaults.quality)
            .unwrap_or(i64::from(DEFAULT_QUALITY));
        if !(1..=100).contains(&quality) {
            problems.push(format!(
                "quality = {quality} is out of range: use a JPEG quality from 1 to 100"
            ));
        }
        let sizes = resolve_sizes(
            defaults.sizes.as_ref(),
            self.sizes.as_ref(),
            quality.clamp(1, 100) as u8,
            &mut problems,
        );
        let max_fps = self.max_fps.or(defaults.max_fps);
        if let Some(fps) = max_fps
            && !(1..=1000).contains(&fps)
        {
            problems.push(format!(
                "max_fps = {fps} is out of range: leave it out for no cap, or use 1 to 1000"
            ));
        }
        let idle_timeout_s = self
            .idle_timeout_s
            .or(defaults.idle_timeout_s)
            .unwrap_or(DEFAULT_IDLE_TIMEOUT_S);
        if !(idle_timeout_s.is_finite() && (0.0..=86_400.0).contains(&idle_timeout_s)) {
            problems.push(format!(
                "idle_timeout_s = {idle_timeout_s} is out of range: use 0 to 86400 seconds, or always_on = true"
            ));
        }
        let latency_ms = self
            .latency_ms
            .or(defaults.latency_ms)
            .unwrap_or(i64::from(DEFAULT_LATENCY_MS));
        if !(0..=10_000).contains(&latency_ms) {
            problems.push(format!(
                "latency_ms = {latency_ms} is out of range: use 0 to 10000 (a live view wants 0-500 ms)"
            ));
        }
        let watchdog_s = self
            .watchdog_s
            .or(defaults.watchdog_s)
            .unwrap_or(DEFAULT_WATCHDOG_S);
        if !(watchdog_s.is_finite() && (0.5..=600.0).contains(&watchdog_s)) {
            problems.push(format!(
                "watchdog_s = {watchdog_s} is out of range: use 0.5 to 600 seconds"
            ));
        }
        let max_viewers = self
            .max_viewers
            .or(defaults.max_viewers)
            .unwrap_or(DEFAULT_MAX_VIEWERS_PER_CAMERA as i64);
        if max_viewers < 1 {
            problems.push(format!(
                "max_viewers = {max_viewers} would refuse every viewer: use 1 or more"
            ));
        }

        let first_frame_timeout_s = self
            .first_frame_timeout_s
            .or(defaults.first_frame_timeout_s)
            .unwrap_or(DEFAULT_FIRST_FRAME_TIMEOUT_S);
        if !(first_frame_timeout_s.is_finite() && (1.0..=600.0).contains(&first_frame_timeout_s)) {
            problems.push(format!(
                "first_frame_timeout_s = {first_frame_timeout_s} is out of range: use 1 to 600 seconds"
            ));
        }

        let source = match &self.source {
            Some(value) => match value.parse() {
                Ok(source) => Some(source),
                Err(e) => {
                    problems.push(format!("source: {e}"));
                    None
                }
            },
            None => None,
        };
        let transport = self.transport.or(defaults.transport).unwrap_or_default();
        if let Some(forced) = source.as_ref().and_then(Source::forced_transport)
            && transport != Transport::Auto
            && transport != Transport::from(forced)
        {
            problems.push(format!(
                "transport = \"{}\" contradicts the source URL's scheme, which forces {}: \
                 use rtsp:// with the transport setting, or leave transport out",
                match transport {
                    Transport::Udp => "udp",
                    _ => "tcp",
                },
                forced.name()
            ));
        }

        let pipeline = match (&self.pipeline, &self.pipeline_file) {
            (Some(_), Some(_)) => {
                problems.push("set either pipeline or pipeline_file, not both".into());
                None
            }
            (Some(text), None) => Some(PipelineOverride {
                text: text.clone(),
                origin: "pipeline".into(),
            }),
            (None, Some(file)) => match read_pipeline_file(pipelines_dir, file) {
                Ok(text) => Some(PipelineOverride {
                    text,
                    origin: file.display().to_string(),
                }),
                Err(e) => {
                    problems.push(e);
                    None
                }
            },
            (None, None) => None,
        };
        if self.source.is_none() && pipeline.is_none() && self.pipeline_file.is_none() {
            problems.push(
                "no source: set source (e.g. 0, \"rtsp://user:pass@host/path\", \"test:\") or a pipeline".into(),
            );
        }

        let settings = CameraSettings {
            id: self.id.clone(),
            name: self
                .name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| self.id.to_string()),
            source,
            scale,
            quality: quality.clamp(1, 100) as u8,
            max_fps: max_fps.map(|f| f.clamp(1, 1000) as u32),
            always_on: self.always_on.or(defaults.always_on).unwrap_or(false),
            idle_timeout: Duration::from_secs_f64(idle_timeout_s.clamp(0.0, 86_400.0)),
            transport,
            latency_ms: latency_ms.clamp(0, 10_000) as u32,
            watchdog: Duration::from_secs_f64(watchdog_s.clamp(0.5, 600.0)),
            max_viewers: max_viewers.max(1) as usize,
            mjpeg_lowres: self.mjpeg_lowres.or(defaults.mjpeg_lowres).unwrap_or(true),
            first_frame_timeout: Duration::from_secs_f64(first_frame_timeout_s.clamp(1.0, 600.0)),
            tls_verify: self.tls_verify.or(defaults.tls_verify).unwrap_or(true),
            sizes,
            decoder: self.decoder.or(defaults.decoder).unwrap_or_default(),
            pipeline,
            relay: None,
        };
        // Render now, so a template that cannot be filled in for this source
        // is reported with the rest rather than at the first viewer.
        if problems.is_empty()
            && let Err(e) = settings.plan()
        {
            problems.push(e.to_string());
        }
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(settings.redactor().redact(&problems.join("; ")))
        }
    }
}

/// The camera's sizes: those of `[defaults]`, with the camera's own added
/// or replacing them by name, in name order. A size without `quality`
/// takes the camera's. Problems are added to `problems`, each naming the
/// size.
fn resolve_sizes(
    defaults: Option<&SizesConfig>,
    own: Option<&SizesConfig>,
    quality: u8,
    problems: &mut Vec<String>,
) -> Vec<Size> {
    let mut merged: SizesConfig = defaults.cloned().unwrap_or_default();
    merged.extend(
        own.into_iter()
            .flatten()
            .map(|(n, s)| (n.clone(), s.clone())),
    );
    if merged.len() > MAX_SIZES {
        problems.push(format!(
            "sizes: {} sizes (with those of [defaults]) is more than {MAX_SIZES}: each watched \
             size is a scaler and an encoder of its own; keep the ones viewers use",
            merged.len()
        ));
    }
    let mut sizes = Vec::with_capacity(merged.len());
    for (name, size) in merged {
        if !(size.scale > 0.0 && size.scale <= 1.0) {
            problems.push(format!(
                "sizes.{name}: scale = {} is out of range: use a factor above 0 and at most 1 \
                 (0.5 is half the camera's width and height)",
                size.scale
            ));
        }
        if let Some(q) = size.quality
            && !(1..=100).contains(&q)
        {
            problems.push(format!(
                "sizes.{name}: quality = {q} is out of range: use a JPEG quality from 1 to 100, \
                 or leave it out for the camera's"
            ));
        }
        sizes.push(Size {
            name,
            scale: size.scale.clamp(f64::MIN_POSITIVE, 1.0),
            quality: size.quality.map_or(quality, |q| q.clamp(1, 100) as u8),
        });
    }
    sizes
}

/// Reads `file` from the pipelines directory, refusing paths that leave it
/// (`../`, absolute paths, symlinks out): a pipeline can name any GStreamer
/// element, so where templates come from matters.
fn read_pipeline_file(dir: &Path, file: &Path) -> Result<String, String> {
    let shown = file.display();
    let dir_canon = dir.canonicalize().map_err(|e| {
        format!(
            "pipeline_file = \"{shown}\": the pipelines directory {} cannot be opened ({e}); set [server] pipelines_dir",
            dir.display()
        )
    })?;
    let path = dir_canon.join(file);
    let canon = path.canonicalize().map_err(|e| {
        format!(
            "pipeline_file = \"{shown}\" cannot be read ({e}): it must name a file in {}",
            dir_canon.display()
        )
    })?;
    if !canon.starts_with(&dir_canon) {
        return Err(format!(
            "pipeline_file = \"{shown}\" is outside the pipelines directory {}: name a file inside it",
            dir_canon.display()
        ));
    }
    std::fs::read_to_string(&canon)
        .map_err(|e| format!("pipeline_file = \"{shown}\" cannot be read: {e}"))
}

/// One configured camera: its settings, or why they are invalid.
#[derive(Clone, Debug)]
pub struct CameraEntry {
    pub id: CameraId,
    pub name: String,
    /// `file:line` of its `[[cameras]]` entry; None for the built-in demo.
    pub location: Option<String>,
    pub config: Option<CameraConfig>,
    pub settings: Result<CameraSettings, String>,
}

impl CameraEntry {
    /// A camera of `upstream`, relayed as `<upstream>.<camera id>`, with
    /// the `[defaults]` that apply to any camera (idle timeout, viewer
    /// limit, watchdog, first-frame timeout); None if the upstream's id
    /// cannot make a local one (too long).
    pub fn relay(
        upstream: &Arc<Upstream>,
        remote: &RemoteCamera,
        defaults: &Defaults,
        pipelines_dir: &Path,
    ) -> Option<CameraEntry> {
        let id = upstream.local_id(&remote.id).ok()?;
        // Resolved as a camera is, so [defaults] are checked and applied
        // in one place; the test source only stands in for the relay.
        let settings = CameraConfig {
            source: Some(SourceValue::Text("test:".into())),
            ..CameraConfig::new(id.clone())
        }
        .resolve(defaults, pipelines_dir)
        .map(|settings| {
            // The upstream's sizes, each pulled as it is (`?size=NAME`):
            // their scale and quality size the placeholders here.
            let default = remote.sizes.iter().find(|s| s.name == DEFAULT_SIZE);
            let sizes = remote
                .sizes
                .iter()
                .filter(|s| s.name != DEFAULT_SIZE && s.name != FULL_SIZE)
                .filter_map(|s| {
                    Some(Size {
                        name: SizeName::new(s.name.clone()).ok()?,
                        scale: s.scale,
                        quality: s.quality,
                    })
                })
                .collect();
            CameraSettings {
                name: remote.name.clone(),
                source: None,
                scale: default.map_or(settings.scale, |d| d.scale),
                quality: default.map_or(settings.quality, |d| d.quality),
                sizes,
                relay: Some(RelaySource {
                    upstream: Arc::clone(upstream),
                    camera: remote.id.clone(),
                }),
                ..settings
            }
        });
        Some(CameraEntry {
            id,
            name: remote.name.clone(),
            location: None,
            config: None,
            settings,
        })
    }
}

/// The whole configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it came from; None for the built-in defaults.
    pub path: Option<PathBuf>,
    pub server: ServerConfig,
    pub defaults: Defaults,
    pub cameras: Vec<CameraEntry>,
    /// `[[upstreams]]`: other camstreams whose cameras are served as
    /// `<name>.<camera id>`.
    pub upstreams: Vec<Arc<Upstream>>,
    /// Entries that cannot even be listed (no id, duplicate id), as
    /// `file:line: message`.
    pub problems: Vec<String>,
    /// The command-line and environment settings it was read with: every
    /// later read of the file (SIGHUP, an API edit) applies the same ones.
    pub overrides: Overrides,
}

/// Settings given outside the file, on the command line or in the
/// environment (`CAMSTREAM_LISTEN`, `CAMSTREAM_PIPELINES_DIR`), which take
/// precedence over it: a container image sets them without editing the
/// user's file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    /// Replaces `[server] listen`.
    pub listen: Option<SocketAddr>,
    /// Replaces `[server] pipelines_dir`; a relative path is relative to the
    /// working directory, like any path given on the command line.
    pub pipelines_dir: Option<PathBuf>,
}

/// The file as serde sees it. Cameras are kept as raw values so that one bad
/// camera is reported on its own instead of failing the whole file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    defaults: Defaults,
    #[serde(default)]
    cameras: Vec<toml::Spanned<toml::Value>>,
    #[serde(default)]
    upstreams: Vec<toml::Spanned<UpstreamConfig>>,
}

impl Config {
    /// No file: the demo camera on the default port.
    pub fn demo() -> Config {
        let demo = CameraSettings::demo();
        Config {
            path: None,
            server: ServerConfig::default(),
            defaults: Defaults::default(),
            cameras: vec![CameraEntry {
                id: demo.id.clone(),
                name: demo.name.clone(),
                location: None,
                config: None,
                settings: Ok(demo),
            }],
            upstreams: Vec::new(),
            problems: Vec::new(),
            overrides: Overrides::default(),
        }
    }

    /// The one loader: what start-up and SIGHUP read. `file` with the
    /// overrides applied, or, without a file, the defaults with them; and
    /// the demo camera when no camera is configured. An API edit reads the
    /// file with [`Config::parse_with`] and the same overrides (kept in
    /// [`Config::overrides`]).
    pub fn read(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let config = match file {
            Some(path) => Config::load_with(path, overrides)?,
            None => Config::parse_with("", None, overrides)?,
        };
        Ok(config.with_demo_if_empty())
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, &Overrides::default())
    }

    /// Reads and validates a config file, with `overrides` taking precedence
    /// over what the file says.
    pub fn load_with(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse_with(&text, Some(path), overrides)
    }

    /// Parses config text; `path` names it in errors and anchors relative
    /// paths (the pipelines directory).
    pub fn parse(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
        Config::parse_with(text, path, &Overrides::default())
    }

    /// [`Config::parse`] with `overrides` applied before the cameras are
    /// resolved, so their `pipeline_file`s are read from the overriding
    /// directory.
    pub fn parse_with(
        text: &str,
        path: Option<&Path>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let origin = path.map_or_else(|| "config".to_string(), |p| p.display().to_string());
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let location = match e.span() {
                Some(span) => {
                    let (line, col) = line_col(text, span.start);
                    format!("{origin}:{line}:{col}")
                }
                None => origin.clone(),
            };
            ConfigError::Parse {
                location,
                message: redact_text(e.message().trim()).into_owned(),
            }
        })?;
        raw.server
            .validate()
            .map_err(|message| ConfigError::Parse {
                location: origin.clone(),
                message,
            })?;
        let base = path
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut server = raw.server;
        let pipelines_dir = match &overrides.pipelines_dir {
            Some(dir) => dir.clone(),
            None => base.join(
                server
                    .pipelines_dir
                    .take()
                    .unwrap_or_else(|| DEFAULT_PIPELINES_DIR.into()),
            ),
        };
        server.pipelines_dir = Some(pipelines_dir.clone());
        if let Some(listen) = overrides.listen {
            server.listen = listen;
        }
        if let Some(tls) = &mut server.tls {
            tls.resolve(&base);
        }
        if let Some(auth) = &server.auth
            && let Err(message) = crate::auth::Authenticator::new(auth)
        {
            return Err(ConfigError::Parse {
                location: origin,
                message,
            });
        }

        let mut upstreams: Vec<Arc<Upstream>> = Vec::new();
        for spanned in raw.upstreams {
            let (line, _) = line_col(text, spanned.span().start);
            let error = |message: String| ConfigError::Parse {
                location: format!("{origin}:{line}"),
                message,
            };
            let upstream = Upstream::resolve(spanned.get_ref(), &base).map_err(error)?;
            if upstreams.iter().any(|u| u.name == upstream.name) {
                return Err(error(format!(
                    "duplicate [[upstreams]] name {:?}: names must be unique, each is its cameras' namespace",
                    upstream.name
                )));
            }
            upstreams.push(Arc::new(upstream));
        }

        let mut config = Config {
            path: path.map(Path::to_path_buf),
            server,
            defaults: raw.defaults,
            cameras: Vec::new(),
            upstreams,
            problems: Vec::new(),
            overrides: overrides.clone(),
        };
        let mut seen = HashSet::new();
        for (index, spanned) in raw.cameras.into_iter().enumerate() {
            let (line, _) = line_col(text, spanned.span().start);
            let at = format!("{origin}:{line}");
            let value = spanned.into_inner();
            let entry = match CameraConfig::deserialize(value.clone()) {
                Ok(camera) => {
                    let settings = camera.resolve(&config.defaults, &pipelines_dir);
                    CameraEntry {
                        id: camera.id.clone(),
                        name: camera.name.clone().unwrap_or_else(|| camera.id.to_string()),
                        location: Some(at.clone()),
                        settings: settings.map_err(|e| format!("{at}: {e}")),
                        config: Some(camera),
                    }
                }
                Err(e) => {
                    let message = redact_text(e.message().trim()).into_owned();
                    // Still list the camera when its id can be read, so the
                    // API shows it as failed with this reason.
                    let id = value
                        .get("id")
                        .and_then(|v| CameraId::deserialize(v.clone()).ok());
                    match id {
                        Some(id) => CameraEntry {
                            name: id.to_string(),
                            id,
                            location: Some(at.clone()),
                            config: None,
                            settings: Err(format!("{at}: {message}")),
                        },
                        None => {
                            config
                                .problems
                                .push(format!("{at}: camera #{} ignored: {message}", index + 1));
                            continue;
                        }
                    }
                }
            };
            // Upstream cameras are named <upstream>.<id>: a local camera
            // there could clash with one at any refresh.
            if let Some(upstream) = config.upstreams.iter().find(|u| u.owns(&entry.id)) {
                return Err(ConfigError::Parse {
                    location: at,
                    message: format!(
                        "camera id \"{}\" is in the namespace of [[upstreams]] \"{}\", whose cameras are {}.<camera id>: rename the camera (no \"{}.\" prefix)",
                        entry.id, upstream.name, upstream.name, upstream.name
                    ),
                });
            }
            if !seen.insert(entry.id.clone()) {
                config.problems.push(format!(
                    "{at}: duplicate camera id \"{}\": ids must be unique; this camera is ignored",
                    entry.id
                ));
                continue;
            }
            config.cameras.push(entry);
        }
        Ok(config)
    }

    /// Masks every secret this configuration holds: each camera's (also of
    /// a camera whose settings are invalid, from what its entry says) and
    /// the `[server.auth]` tokens and passwords.
    pub fn redactor(&self) -> Redactor {
        let mut secrets = Vec::new();
        for entry in &self.cameras {
            if let Ok(settings) = &entry.settings {
                secrets.extend(settings.secrets());
            }
            if let Some(camera) = &entry.config {
                if let Some(SourceValue::Text(source)) = &camera.source {
                    secrets.extend(crate::redact::find_secrets(source));
                }
                if let Some(pipeline) = &camera.pipeline {
                    secrets.extend(crate::redact::find_secrets(pipeline));
                }
            }
        }
        if let Some(auth) = &self.server.auth {
            secrets.extend(auth.secrets());
        }
        for upstream in &self.upstreams {
            secrets.extend(upstream.secrets());
        }
        Redactor::new(secrets)
    }

    /// The pipelines directory, resolved.
    pub fn pipelines_dir(&self) -> PathBuf {
        self.server
            .pipelines_dir
            .clone()
            .unwrap_or_else(|| DEFAULT_PIPELINES_DIR.into())
    }

    /// With no camera configured, serve the demo camera so the quick start
    /// shows video; not on a relay (`[[upstreams]]`), whose cameras are its
    /// upstreams'.
    pub fn with_demo_if_empty(mut self) -> Config {
        if self.cameras.is_empty() && self.upstreams.is_empty() {
            self.cameras = Config::demo().cameras;
        }
        self
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Some(Path::new("test.toml")))
    }

    #[test]
    fn defaults_apply() {
        let config = parse("[[cameras]]\nid = 1\nsource = 0\n").unwrap();
        assert_eq!(config.server.listen.port(), 8000);
        let cam = config.cameras[0].settings.as_ref().unwrap();
        assert_eq!(cam.id.as_str(), "1");
        assert_eq!(cam.name, "1");
        assert_eq!(cam.scale, DEFAULT_SCALE);
        assert_eq!(cam.quality, DEFAULT_QUALITY);
        assert_eq!(cam.idle_timeout, Duration::from_secs(10));
        assert_eq!(cam.latency_ms, 100);
        assert!(!cam.always_on);
    }

    #[test]
    fn defaults_table_is_inherited_and_overridden() {
        let config = parse(
            "[defaults]\nscale = 0.5\nquality = 60\n[[cameras]]\nid = \"a\"\nsource = \"test:\"\n\
             [[cameras]]\nid = \"b\"\nsource = \"test:\"\nscale = 1\n",
        )
        .unwrap();
        let a = config.cameras[0].settings.as_ref().unwrap();
        let b = config.cameras[1].settings.as_ref().unwrap();
        assert_eq!((a.scale, a.quality), (0.5, 60));
        assert_eq!((b.scale, b.quality), (1.0, 60));
    }

    #[test]
    fn malformed_toml_names_line_and_column() {
        let err = parse("[server]\nlisten = \"0.0.0.0:8000\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("test.toml:2:"), "{err}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = parse("[server]\nlisten = \"0.0.0.0:1\"\nport = 3\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("test.toml:3:1") && err.contains("port"),
            "{err}"
        );
        let config = parse("[[cameras]]\nid = \"x\"\nsource = 0\nsclae = 0.5\n").unwrap();
        let err = config.cameras[0].settings.as_ref().unwrap_err();
        assert!(
            err.contains("sclae") && err.starts_with("test.toml:1"),
            "{err}"
        );
    }

    #[test]
    fn bad_camera_values_fail_only_that_camera() {
        let config = parse(
            "[[cameras]]\nid = \"ok\"\nsource = \"test:\"\n\
             [[cameras]]\nid = \"bad\"\nsource = \"rtsp://u:pw123@h/x\"\nscale = 0\nquality = 101\n",
        )
        .unwrap();
        assert!(config.cameras[0].settings.is_ok());
        let err = config.cameras[1].settings.as_ref().unwrap_err();
        assert!(
            err.contains("scale = 0") && err.contains("quality = 101"),
            "{err}"
        );
        assert!(!err.contains("pw123"));
    }

    #[test]
    fn sizes_merge_with_the_defaults_by_name() {
        let config = parse(
            "[defaults]\nquality = 70\n[defaults.sizes]\nthumb = { scale = 0.125 }\n\
             large = { scale = 0.5, quality = 90 }\n\
             [[cameras]]\nid = \"a\"\nsource = \"test:\"\n\
             [cameras.sizes]\nlarge = { scale = 1.0 }\nwall = { scale = 0.75, quality = 50 }\n",
        )
        .unwrap();
        let a = config.cameras[0].settings.as_ref().unwrap();
        let sizes: Vec<(&str, f64, u8)> = a
            .sizes
            .iter()
            .map(|s| (s.name.as_str(), s.scale, s.quality))
            .collect();
        // The camera's `large` replaces the defaults' whole; a size with no
        // quality takes the camera's.
        assert_eq!(
            sizes,
            [("large", 1.0, 70), ("thumb", 0.125, 70), ("wall", 0.75, 50)]
        );
    }

    #[test]
    fn bad_sizes_fail_only_that_camera_naming_the_size() {
        let bad = |sizes: &str| {
            let config = parse(&format!(
                "[[cameras]]\nid = \"a\"\nsource = \"test:\"\n[cameras.sizes]\n{sizes}\n"
            ))
            .unwrap();
            config.cameras[0].settings.as_ref().unwrap_err().clone()
        };
        let err = bad("full = { scale = 1.0 }");
        assert!(err.contains("size name \"full\" is reserved"), "{err}");
        let err = bad("default = { scale = 1.0 }");
        assert!(err.contains("size name \"default\" is reserved"), "{err}");
        let err = bad("Big = { scale = 1.0 }");
        assert!(err.contains("is not a short identifier"), "{err}");
        let err = bad("big = { scale = 0 }");
        assert!(
            err.contains("sizes.big: scale = 0 is out of range"),
            "{err}"
        );
        let err = bad("big = { scale = 0.5, quality = 0 }");
        assert!(
            err.contains("sizes.big: quality = 0 is out of range"),
            "{err}"
        );
        let err = bad("big = { scale = 0.5, qualty = 50 }");
        assert!(err.contains("qualty"), "{err}");
        let many: String = (0..=MAX_SIZES)
            .map(|i| format!("s{i} = {{ scale = 0.5 }}\n"))
            .collect();
        let err = bad(&many);
        assert!(err.contains("is more than 8"), "{err}");
    }

    #[test]
    fn duplicate_and_empty_ids() {
        let config = parse(
            "[[cameras]]\nid = 1\nsource = 0\n[[cameras]]\nid = \"1\"\nsource = 1\n[[cameras]]\nid = \"\"\nsource = 2\n",
        )
        .unwrap();
        assert_eq!(config.cameras.len(), 1);
        assert!(
            config.problems[0].contains("duplicate camera id \"1\""),
            "{:?}",
            config.problems
        );
        assert!(
            config.problems[1].contains("id is empty"),
            "{:?}",
            config.problems
        );
    }

    #[test]
    fn pipeline_files_stay_inside_their_directory() {
        let dir = std::env::temp_dir().join(format!("camstream-cfg-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("pipelines")).unwrap();
        std::fs::write(dir.join("pipelines/ok.pipeline"), "videotestsrc").unwrap();
        std::fs::write(dir.join("secret.pipeline"), "videotestsrc").unwrap();
        let path = dir.join("c.toml");
        let text = "[[cameras]]\nid = \"a\"\npipeline_file = \"ok.pipeline\"\n\
                    [[cameras]]\nid = \"b\"\npipeline_file = \"../secret.pipeline\"\n\
                    [[cameras]]\nid = \"c\"\npipeline_file = \"missing.pipeline\"\n";
        let config = Config::parse(text, Some(&path)).unwrap();
        assert!(config.cameras[0].settings.is_ok());
        let b = config.cameras[1].settings.as_ref().unwrap_err();
        assert!(b.contains("outside the pipelines directory"), "{b}");
        let c = config.cameras[2].settings.as_ref().unwrap_err();
        assert!(
            c.contains("missing.pipeline") && c.contains("cannot be read"),
            "{c}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn overrides_take_precedence_over_the_file() {
        let dir = std::env::temp_dir().join(format!("camstream-ovr-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("elsewhere")).unwrap();
        std::fs::write(dir.join("elsewhere/t.pipeline"), "videotestsrc").unwrap();
        let text = "[server]\nlisten = \"0.0.0.0:1\"\npipelines_dir = \"missing\"\n\
                    [[cameras]]\nid = \"a\"\npipeline_file = \"t.pipeline\"\n";
        let overrides = Overrides {
            listen: Some("127.0.0.1:5".parse().unwrap()),
            pipelines_dir: Some(dir.join("elsewhere")),
        };
        let config = Config::parse_with(text, Some(&dir.join("c.toml")), &overrides).unwrap();
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:5");
        assert_eq!(config.pipelines_dir(), dir.join("elsewhere"));
        assert!(config.cameras[0].settings.is_ok());
        assert_eq!(
            config.cameras[0].location.as_deref(),
            Some(&*format!("{}:4", dir.join("c.toml").display()))
        );
        // Without them, the file's missing directory fails the camera.
        let config = Config::parse(text, Some(&dir.join("c.toml"))).unwrap();
        assert!(config.cameras[0].settings.is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn auth_and_cors_are_checked_where_they_are_written() {
        let config = parse(
            "[server]\ncors_origins = [\"http://localhost:3000/\", \"*\"]\n\
             [server.auth]\ntokens = [\"0123456789abcdef\"]\n",
        )
        .unwrap();
        let origins: Vec<_> = config
            .server
            .cors_origins
            .iter()
            .map(|o| o.as_str())
            .collect();
        assert_eq!(origins, ["http://localhost:3000", "*"]);
        let err = parse("[server]\ncors_origins = [\"https://u:pw99@x/app\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("test.toml:2:") && err.contains("scheme://host"),
            "{err}"
        );
        assert!(!err.contains("pw99"), "{err}");
        let err = parse("[server.auth]\ntokens = [\"short-secret\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("test.toml:2:") && err.contains("at least 16"),
            "{err}"
        );
        assert!(!err.contains("short-secret"), "{err}");
        let err = parse("[[server.auth.users]]\nname = \"a\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("password_sha256"), "{err}");
    }

    #[test]
    fn ids_are_url_segments() {
        assert!(CameraId::new("a.b-c_1").is_ok());
        for bad in [".", "..", "a/b", "a%20", ""] {
            assert!(CameraId::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_redactor_knows_every_secret_of_the_file() {
        let config = parse(
            "[server.auth]\ntokens = [\"admin-token-0123456789\"]\n\
             view_tokens = [\"view-token-0123456789\"]\n\
             [[server.auth.users]]\nname = \"ann\"\npassword = \"ann-plain-pw\"\n\
             [[cameras]]\nid = \"url\"\nsource = \"rtsp://admin:url-pw-1@cam/x\"\n\
             [[cameras]]\nid = \"query\"\nsource = \"http://cam/v.cgi?user=a&pwd=query-pw-2\"\n\
             [[cameras]]\nid = \"override\"\npipeline = \"rtspsrc location=rtsp://cam/x user-pw = 'prop pw 3' ! decodebin\"\n\
             [[cameras]]\nid = \"invalid\"\nsource = \"rtsp://admin:invalid-pw-4@cam/x\"\nscale = 7\n\
             [[cameras]]\nid = \"unreadable\"\nsource = \"rtsp://admin:unreadable-pw-5@cam/x\"\nsclae = 1\n",
        )
        .unwrap();
        let r = config.redactor();
        for secret in [
            "admin-token-0123456789",
            "view-token-0123456789",
            "ann-plain-pw",
            &crate::redact::basic_credentials("ann", "ann-plain-pw"),
            "url-pw-1",
            &crate::redact::basic_credentials("admin", "url-pw-1"),
            "query-pw-2",
            "prop pw 3",
            "invalid-pw-4",
        ] {
            assert_eq!(r.redact(&format!("<{secret}>")), "<***>", "{secret}");
        }
        // An entry serde cannot read is kept only as its error, which the
        // rules mask where it quotes the source.
        let err = config.cameras[4].settings.as_ref().unwrap_err();
        assert!(!err.contains("unreadable-pw-5"), "{err}");
    }

    #[test]
    fn upstreams_are_checked_where_they_are_written() {
        let up = "[[upstreams]]\nname = \"edge\"\nurl = \"http://e:8000\"\ntoken = \"up-token-0123456789\"\n";
        let config = parse(up).unwrap();
        assert_eq!(config.upstreams.len(), 1);
        // A relay serves its upstreams' cameras, not the demo.
        assert!(config.with_demo_if_empty().cameras.is_empty());
        let config = parse(up).unwrap();
        assert_eq!(config.redactor().redact("<up-token-0123456789>"), "<***>");

        let err = parse(&format!("\n{up}{up}")).unwrap_err().to_string();
        assert!(
            err.starts_with("test.toml:6:")
                && err.contains("duplicate [[upstreams]] name \"edge\""),
            "{err}"
        );
        let err = parse(&format!(
            "{up}[[cameras]]\nid = \"edge.gate\"\nsource = \"test:\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("test.toml:5")
                && err.contains(
                    "camera id \"edge.gate\" is in the namespace of [[upstreams]] \"edge\""
                ),
            "{err}"
        );
        // Only that namespace: edge-2.gate and edge are fine.
        let config = parse(&format!(
            "{up}[[cameras]]\nid = \"edge-2.gate\"\nsource = \"test:\"\n[[cameras]]\nid = \"edge\"\nsource = \"test:\"\n"
        ))
        .unwrap();
        assert_eq!(config.cameras.len(), 2);
        let err = parse("[[upstreams]]\nname = \"edge\"\nurl = \"http://e\"\ntoken = \"t-0123456789abcdef\"\ncolor = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `color`"), "{err}");
        assert!(!err.contains("t-0123456789abcdef"), "{err}");
    }

    #[test]
    fn relay_cameras_take_the_defaults_of_any_camera() {
        let config = parse(
            "[defaults]\nidle_timeout_s = 3\nmax_viewers = 7\n\
             [[upstreams]]\nname = \"edge\"\nurl = \"http://e:8000\"\ntoken = \"up-token-0123456789\"\n",
        )
        .unwrap();
        let size = |name: &str, scale: f64, quality: u8| crate::upstream::RemoteSize {
            name: name.into(),
            scale,
            quality,
        };
        let remote = RemoteCamera {
            id: "gate".into(),
            name: "Gate".into(),
            sizes: vec![
                size("default", 0.5, 70),
                size("thumb", 0.125, 60),
                size("full", 1.0, 70),
            ],
        };
        let entry = CameraEntry::relay(
            &config.upstreams[0],
            &remote,
            &config.defaults,
            &config.pipelines_dir(),
        )
        .unwrap();
        assert_eq!(entry.id.as_str(), "edge.gate");
        let settings = entry.settings.unwrap();
        assert_eq!(settings.name, "Gate");
        assert_eq!(settings.idle_timeout, Duration::from_secs(3));
        assert_eq!(settings.max_viewers, 7);
        // The upstream's sizes; `full` is not relayed.
        assert_eq!((settings.scale, settings.quality), (0.5, 70));
        let sizes: Vec<_> = settings
            .sizes
            .iter()
            .map(|s| (s.name.as_str(), s.scale))
            .collect();
        assert_eq!(sizes, [("thumb", 0.125)]);
        assert!(settings.source.is_none());
        assert_eq!(
            settings.source_display(),
            "relay: http://e:8000 camera gate"
        );
        assert_eq!(settings.relay.unwrap().camera, "gate");
    }

    #[test]
    fn demo_camera() {
        let config = Config::demo();
        assert_eq!(config.cameras.len(), 1);
        assert_eq!(config.cameras[0].id.as_str(), DEMO_CAMERA_ID);
        assert!(
            parse("").unwrap().with_demo_if_empty().cameras[0]
                .settings
                .is_ok()
        );
    }
}
