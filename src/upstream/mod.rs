//! Upstreams: other camstreams whose cameras this one serves as its own
//! (`[[upstreams]]`, docs/scaling.md).
//!
//! Each upstream camera becomes a local camera with the id
//! `<upstream name>.<camera id>`. Its list is read from the upstream's
//! `GET /api/cameras` and refreshed ([`follow`]); its frames are pulled
//! from the upstream's `stream.mjpeg` only while it has local viewers (the
//! camera supervisor calls [`pull`]) and published into the camera's
//! `FrameHub` as they came: no GStreamer, no decode, no encode. The view
//! token rides in an `Authorization: Bearer` header, never in a URL, and
//! is one of the configuration's secrets, so the redactor masks it
//! wherever it could show up.

mod client;
mod multipart;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::CameraId;
use crate::frames::FrameKind;

pub use client::Trust;
pub use multipart::{MultipartError, Part, PartReader};

/// How often an upstream's camera list is read again: cameras added or
/// removed upstream show up here within this long, at the cost of one
/// small JSON request.
pub const DEFAULT_REFRESH_S: f64 = 30.0;
/// A list read that failed (the upstream is down, or not up yet) is tried
/// again sooner than a refresh: 2 s doubling up to the refresh interval.
const LIST_RETRY_INITIAL: Duration = Duration::from_secs(2);
/// Longest upstream name: it prefixes camera ids, which are at most 64
/// characters.
pub const MAX_NAME_LEN: usize = 32;

/// Why an upstream could not be read. Messages name the upstream and the
/// fix; they never hold the token (and are masked once more by the
/// camera, with every known secret).
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpstreamError {
    #[error("upstream {upstream}: cannot connect to {url}: {reason}")]
    Connect {
        upstream: String,
        url: String,
        reason: String,
    },
    #[error(
        "upstream {upstream} refused the token ({status}): give [[upstreams]] a view token of that server (its [server.auth] view_tokens)"
    )]
    Refused { upstream: String, status: u16 },
    #[error("upstream {upstream} has no camera {camera} (404): it was removed there")]
    NoSuchCamera { upstream: String, camera: String },
    #[error("upstream {upstream} answered {status} to {what}{detail}")]
    Status {
        upstream: String,
        what: String,
        status: u16,
        detail: String,
    },
    #[error("upstream {upstream}: {what}: {reason}")]
    Protocol {
        upstream: String,
        what: String,
        reason: String,
    },
    #[error("upstream {upstream} ended the stream; reconnecting")]
    Ended { upstream: String },
}

/// A token as read from the config: shown as `***` by `Debug`, so no
/// `{:?}` of a configuration prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

/// One `[[upstreams]]` entry, as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub name: String,
    pub url: String,
    #[serde(default)]
    token: Option<Token>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default)]
    pub fingerprint: Option<String>,
    #[serde(default)]
    pub refresh_s: Option<f64>,
}

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Token)
    }
}

/// An upstream, validated: what the list refresh and the pulls use.
#[derive(Clone, Debug, PartialEq)]
pub struct Upstream {
    pub name: String,
    /// Its base URL (`https://edge-1:8000`, perhaps with a path prefix),
    /// without credentials, query or fragment.
    pub url: url::Url,
    token: Token,
    pub trust: Trust,
    pub refresh: Duration,
}

impl Upstream {
    /// Validates an entry; relative paths (`token_file`, `ca`) are relative
    /// to `base`, the config file's directory. The error names the key and
    /// the fix, never the token.
    pub fn resolve(config: &UpstreamConfig, base: &Path) -> Result<Upstream, String> {
        let name = &config.name;
        check_name(name)?;
        let at = format!("[[upstreams]] {name:?}");
        let url = url::Url::parse(&config.url).map_err(|e| {
            format!(
                "{at}: url {:?} is not a URL ({e}): write the other camstream's address, e.g. \"https://edge-1:8000\"",
                crate::redact::redact_text(&config.url)
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "{at}: url {:?} is not http:// or https://: write the other camstream's address, e.g. \"https://edge-1:8000\"",
                crate::redact::redact_text(&config.url)
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "{at}: url has credentials in it: take them out and give a view token in token or token_file (it is sent in a header, never in the URL)"
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "{at}: url has a query or fragment (a ?token= perhaps): give the server's address only, and the token in token or token_file"
            ));
        }
        let token = match (&config.token, &config.token_file) {
            (Some(_), Some(_)) => {
                return Err(format!("{at}: set token or token_file, not both"));
            }
            (None, None) => {
                return Err(format!(
                    "{at}: no token: set token_file (a file holding a view token of that server) or token"
                ));
            }
            (Some(token), None) => token.clone(),
            (None, Some(file)) => {
                let path = base.join(file);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    format!("{at}: token_file {} cannot be read: {e}", path.display())
                })?;
                Token(text.trim().to_string())
            }
        };
        if token.0.is_empty() {
            return Err(format!(
                "{at}: the token is empty: put a view token of that server in token or token_file"
            ));
        }
        if token.0.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "{at}: the token has spaces or control characters: a camstream token has none"
            ));
        }
        let https = url.scheme() == "https";
        let trust = match (&config.ca, &config.fingerprint) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{at}: set ca or fingerprint, not both (either says which certificate to trust)"
                ));
            }
            (Some(_), None) | (None, Some(_)) if !https => {
                return Err(format!(
                    "{at}: ca and fingerprint apply to https:// only: use an https:// url, or leave them out"
                ));
            }
            (Some(ca), None) => Trust::ca_file(&base.join(ca)).map_err(|e| format!("{at}: {e}"))?,
            (None, Some(fp)) => Trust::fingerprint(fp).map_err(|e| format!("{at}: {e}"))?,
            (None, None) => Trust::System,
        };
        let refresh_s = config.refresh_s.unwrap_or(DEFAULT_REFRESH_S);
        if !(refresh_s.is_finite() && (1.0..=3600.0).contains(&refresh_s)) {
            return Err(format!(
                "{at}: refresh_s = {refresh_s} is out of range: use 1 to 3600 seconds"
            ));
        }
        Ok(Upstream {
            name: name.clone(),
            url,
            token,
            trust,
            refresh: Duration::from_secs_f64(refresh_s),
        })
    }

    /// The secrets this upstream holds, for the redactor.
    pub fn secrets(&self) -> Vec<String> {
        vec![self.token.0.clone()]
    }

    /// `edge-1.gate` for the upstream camera `gate`, if that is a valid id.
    pub fn local_id(&self, camera: &str) -> Result<CameraId, String> {
        CameraId::new(format!("{}.{camera}", self.name))
    }

    /// Whether `id` is in this upstream's namespace.
    pub fn owns(&self, id: &CameraId) -> bool {
        id.as_str()
            .strip_prefix(self.name.as_str())
            .is_some_and(|rest| rest.starts_with('.'))
    }

    /// The base URL as shown to people (no token is ever in it).
    pub fn display(&self) -> String {
        self.url.as_str().trim_end_matches('/').to_string()
    }

    /// The URL of a path on the upstream, for messages.
    fn path(&self, path: &str) -> String {
        format!("{}{path}", self.url.path().trim_end_matches('/'))
    }
}

/// Checks an upstream name: 1-32 letters, digits, `_` and `-`. No dot, so
/// `name.camera` splits one way only.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!(
            "[[upstreams]] name {name:?} must be 1 to {MAX_NAME_LEN} characters: it prefixes the upstream's camera ids (name.camera)"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-')))
    {
        return Err(format!(
            "[[upstreams]] name {name:?} contains {bad:?}: use only letters, digits, '_' and '-' (its cameras are named name.camera)"
        ));
    }
    Ok(())
}

/// A camera of an upstream, as its `GET /api/cameras` lists it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct RemoteCamera {
    pub id: String,
    pub name: String,
    /// Its sizes (`default`, its own, `full`); a camstream from before
    /// sizes lists none.
    #[serde(default)]
    pub sizes: Vec<RemoteSize>,
}

/// One size of an upstream camera.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct RemoteSize {
    pub name: String,
    pub scale: f64,
    pub quality: u8,
}

/// What a relay camera pulls: which upstream, which of its cameras.
#[derive(Clone, Debug, PartialEq)]
pub struct RelaySource {
    pub upstream: Arc<Upstream>,
    /// The camera's id upstream.
    pub camera: String,
}

impl RelaySource {
    /// `https://edge-1:8000 camera gate`, as the API's `source` shows it.
    pub fn display(&self) -> String {
        format!("{} camera {}", self.upstream.display(), self.camera)
    }

    fn stream_path(&self) -> String {
        // The id is a URL segment already (CameraId's alphabet).
        format!("/api/cameras/{}/stream.mjpeg", self.camera)
    }
}

/// Reads an upstream's camera list.
pub async fn fetch_list(upstream: &Upstream) -> Result<Vec<RemoteCamera>, UpstreamError> {
    let path = upstream.path("/api/cameras");
    let response = client::get(upstream, &path, client::LIST_TIMEOUT).await?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(client::status_error(upstream, "the camera list", status));
    }
    let body = tokio::time::timeout(client::LIST_TIMEOUT, response.collect_body())
        .await
        .map_err(|_| UpstreamError::Protocol {
            upstream: upstream.name.clone(),
            what: "the camera list".into(),
            reason: format!("not read within {:?}", client::LIST_TIMEOUT),
        })??;
    serde_json::from_slice(&body).map_err(|e| UpstreamError::Protocol {
        upstream: upstream.name.clone(),
        what: "the camera list".into(),
        reason: format!(
            "not the JSON of camstream's GET /api/cameras ({e}): is the url another camstream?"
        ),
    })
}

/// One frame as the upstream sent it: its JPEG bytes untouched, the size
/// read from its header, and whether it is the upstream's placeholder.
#[derive(Clone, Debug)]
pub struct RelayedFrame {
    pub jpeg: bytes::Bytes,
    pub width: u32,
    pub height: u32,
    pub kind: FrameKind,
}

/// Pulls a relay camera's stream (at `size`, the upstream's `?size=`, or
/// its default) and hands each frame to `publish`, until the stream fails
/// or ends, which it always does with an error (the supervisor reconnects
/// with back-off). The upstream's placeholders stay placeholders; a part
/// that is not a JPEG is skipped, and counted in `skipped`.
pub async fn pull(
    relay: &RelaySource,
    size: Option<&str>,
    mut publish: impl FnMut(RelayedFrame),
    mut skipped: impl FnMut(),
) -> Result<(), UpstreamError> {
    let upstream = &relay.upstream;
    let mut path = upstream.path(&relay.stream_path());
    if let Some(size) = size {
        // Size names are URL-safe (letters, digits, '_', '-').
        path = format!("{path}?size={size}");
    }
    let mut response = client::get(upstream, &path, client::CONNECT_TIMEOUT).await?;
    match response.status().as_u16() {
        200 => {}
        404 => {
            return Err(UpstreamError::NoSuchCamera {
                upstream: upstream.name.clone(),
                camera: relay.camera.clone(),
            });
        }
        status => return Err(client::status_error(upstream, "the stream", status)),
    }
    let protocol = |reason: String| UpstreamError::Protocol {
        upstream: upstream.name.clone(),
        what: format!("camera {}'s stream", relay.camera),
        reason,
    };
    let mut reader = PartReader::new(response.content_type().unwrap_or_default())
        .map_err(|e| protocol(e.to_string()))?;
    loop {
        while let Some(part) = reader.next_part().map_err(|e| protocol(e.to_string()))? {
            let Ok(info) = crate::jpeg::read_header(&part.jpeg) else {
                skipped();
                continue;
            };
            publish(RelayedFrame {
                jpeg: part.jpeg,
                width: info.width,
                height: info.height,
                kind: if part.placeholder {
                    FrameKind::Placeholder
                } else {
                    FrameKind::Live
                },
            });
        }
        match response.chunk().await? {
            Some(chunk) => reader.push(&chunk),
            None => {
                return Err(UpstreamError::Ended {
                    upstream: upstream.name.clone(),
                });
            }
        }
    }
}

/// The camera lists of every upstream, as last read; the refresh tasks
/// write them and wake whoever applies them ([`Lists::changed`]).
#[derive(Debug, Default)]
pub struct Lists {
    lists: Mutex<BTreeMap<String, Vec<RemoteCamera>>>,
    changed: Notify,
}

impl Lists {
    /// The last list read from `upstream` (empty before the first read).
    pub fn get(&self, upstream: &str) -> Vec<RemoteCamera> {
        self.lock().get(upstream).cloned().unwrap_or_default()
    }

    /// Stores a list; wakes [`Lists::changed`] if it differs.
    pub fn set(&self, upstream: &str, list: Vec<RemoteCamera>) {
        let mut lists = self.lock();
        if lists.get(upstream) != Some(&list) {
            lists.insert(upstream.to_string(), list);
            self.changed.notify_one();
        }
    }

    /// Forgets an upstream that is no longer configured.
    pub fn forget(&self, upstream: &str) {
        self.lock().remove(upstream);
    }

    /// Resolves after a list changed.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<RemoteCamera>>> {
        self.lists.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads `upstream`'s camera list into `lists` now and every `refresh`
/// until cancelled. A read that fails keeps the last list (its cameras
/// then show their own outage) and is retried sooner.
pub async fn follow(upstream: Arc<Upstream>, lists: Arc<Lists>, cancel: CancellationToken) {
    let mut retry = LIST_RETRY_INITIAL;
    let mut failing = false;
    loop {
        let delay = match fetch_list(&upstream).await {
            Ok(list) => {
                if failing {
                    info!("camera list read again");
                }
                failing = false;
                retry = LIST_RETRY_INITIAL;
                lists.set(&upstream.name, list);
                upstream.refresh
            }
            Err(e) => {
                // Said once per outage, not once per retry.
                if !failing {
                    warn!("cannot read the camera list: {e}; keeping the last list");
                }
                failing = true;
                let delay = retry.min(upstream.refresh);
                retry = (retry * 2).min(upstream.refresh);
                delay
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests;
