//! Keeping secrets out of everything camstream says.
//!
//! Passwords reach camstream in source URLs (`rtsp://admin:secret@cam/...`,
//! `http://cam/videostream.cgi?user=admin&pwd=secret`), in hand-written
//! pipeline overrides (`user-pw=secret`), and as `[server.auth]` tokens and
//! passwords. Everything that leaves the process (log lines, API responses,
//! errors, metrics, `camstream check` and `probe` output) passes through a
//! [`Redactor`], which masks secrets two ways:
//!
//! - **by shape** ([`redact_text`]): URL userinfo, credential query
//!   parameters, secret gst-launch properties and `Authorization` values,
//!   in any text, whether or not camstream was told the secret (GStreamer's
//!   own messages, a pipeline typed into `probe`);
//! - **by value**: the secrets of the configuration, wherever they appear,
//!   also percent-encoded, escaped as JSON or gst-launch would write them,
//!   and as the base64 of `user:password` a Basic header carries.
//!
//! Log lines are masked where they are written (see [`crate::logging`]),
//! so no call site can forget; the writer reads the secrets from a
//! [`KnownSecrets`] the app keeps up to date. Nothing here runs per frame.

mod rules;

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine;
use percent_encoding::{
    AsciiSet, CONTROLS, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode,
};

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Secrets shorter than this are masked only where their shape gives them
/// away (a URL password, `pwd=`, `user-pw=`): masking "ab" by value would
/// garble every word holding those two letters.
pub const MIN_SECRET_LEN: usize = 4;

/// Masks every secret the rules recognise by its shape (see the module
/// docs); returns `text` unchanged, without copying, when there is none.
///
/// The rules, all case-insensitive:
/// - the password of `scheme://user:password@host` (percent-encoded or
///   not; holding `@`, `:`, `!`, even an unencoded `/`, `?` or `#`); a user
///   name alone is kept;
/// - the value of a credential query parameter (`pwd=`, `password=`,
///   `loginpas=`, `token=`, `api_key=`, `auth=`, `sig=`, ...), the name
///   kept;
/// - the value of a gst-launch property whose name says secret (`user-pw`,
///   `proxy-pw`, any `*-pw`, `*-key`, anything with `password`, `passwd`,
///   `secret`, `token`), with or without spaces around `=`, quoted or
///   escaped; also as a JSON field (`"password": "..."`);
/// - the credentials of an `Authorization` value (`Basic ...`,
///   `Bearer ...`), and of a bare `Bearer`/`Basic` followed by a
///   credential-looking word.
///
/// Placeholders in help texts (`TOKEN`, `<token>`, `$PASSWORD`) are kept.
pub fn redact_text(text: &str) -> Cow<'_, str> {
    let hits = rules::find(text);
    if hits.is_empty() {
        return Cow::Borrowed(text);
    }
    Cow::Owned(mask(text, hits.into_iter().map(|h| h.span).collect()))
}

/// The secrets [`redact_text`] would mask in `text`, in every form they
/// may show up in elsewhere: as written, percent-decoded, unquoted, and as
/// the Basic credentials of a URL's `user:password`. For a [`Redactor`]
/// built from a camera's source or override.
pub fn find_secrets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for hit in rules::find(text) {
        let raw = &text[hit.span.clone()];
        out.push(raw.to_string());
        match hit.kind {
            rules::Kind::UrlPassword { user } => {
                let password = percent_decode(raw);
                out.push(basic_credentials(&percent_decode(&text[user]), &password));
                out.push(password);
            }
            rules::Kind::QueryValue => {
                out.push(percent_decode(raw));
                out.push(percent_decode(&raw.replace('+', " ")));
            }
            rules::Kind::PropertyValue => out.push(rules::unquote(raw)),
            rules::Kind::Credentials => {
                // Basic credentials: the password inside is a secret too.
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(raw)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok());
                if let Some((_, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
                    out.push(password.to_string());
                }
            }
        }
    }
    out.retain(|s| !s.is_empty() && s != MASK);
    out.sort();
    out.dedup();
    out
}

/// `base64(user:password)`: what an HTTP Basic `Authorization` header (and
/// Hikvision's `?auth=`) carries.
pub fn basic_credentials(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

fn percent_decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// `text` with each span (sorted or not, overlapping or not) replaced by
/// one [`MASK`].
fn mask(text: &str, mut spans: Vec<Range<usize>>) -> String {
    spans.sort_by_key(|s| s.start);
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(spans.len());
    for span in spans {
        match merged.last_mut() {
            Some(last) if span.start <= last.end => last.end = last.end.max(span.end),
            _ => merged.push(span),
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    for span in merged {
        out.push_str(&text[pos..span.start]);
        out.push_str(MASK);
        pos = span.end;
    }
    out.push_str(&text[pos..]);
    out
}

/// The characters the url crate percent-encodes in a query.
const QUERY: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'<').add(b'>');

/// Every form `secret` may take in text camstream prints: as it is,
/// percent-encoded (all the common ways), escaped in a JSON string, a Rust
/// `Debug` string or a Prometheus label, and escaped for gst-launch.
fn forms(secret: &str) -> Vec<String> {
    let mut out = vec![secret.to_string()];
    out.push(utf8_percent_encode(secret, NON_ALPHANUMERIC).to_string());
    out.push(utf8_percent_encode(secret, QUERY).to_string());
    let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    out.push(form.replace('+', "%20"));
    out.push(form);
    if let Ok(mut url) = url::Url::parse("http://host/")
        && url.set_password(Some(secret)).is_ok()
        && let Some(encoded) = url.password()
    {
        out.push(encoded.to_string());
    }
    if let Ok(json) = serde_json::to_string(secret) {
        out.push(json[1..json.len() - 1].to_string());
    }
    let debug = format!("{secret:?}");
    out.push(debug[1..debug.len() - 1].to_string());
    out.push(
        secret
            .replace('\\', "\\\\")
            .replace(' ', "\\ ")
            .replace('"', "\\\"")
            .replace('\'', "\\'"),
    );
    // Base64 (a Basic header's `user:password`) without its padding: a
    // GstStructure, as GStreamer's bus log prints an HTTP source's request
    // headers, escapes each `=` of it.
    let unpadded = secret.trim_end_matches('=');
    if unpadded != secret && unpadded.chars().count() >= MIN_SECRET_LEN {
        out.push(unpadded.to_string());
    }
    out.sort();
    out.dedup();
    out
}

/// Masks known secrets wherever they appear, then everything
/// [`redact_text`] recognises. Cheap to clone.
#[derive(Clone, Default)]
pub struct Redactor {
    /// The secrets as given, to build unions from.
    secrets: Arc<BTreeSet<String>>,
    /// Every form of every secret.
    matcher: Option<Arc<AhoCorasick>>,
}

/// Counts only: printing a redactor must not print what it hides.
impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

impl Redactor {
    /// A redactor for these secrets. Secrets shorter than
    /// [`MIN_SECRET_LEN`] characters, and placeholders, are masked by the
    /// rules only.
    pub fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Redactor::from_set(
            secrets
                .into_iter()
                .map(Into::into)
                .filter(|s: &String| {
                    s.chars().count() >= MIN_SECRET_LEN && !rules::is_placeholder(s)
                })
                .collect(),
        )
    }

    fn from_set(secrets: BTreeSet<String>) -> Self {
        let mut patterns: Vec<String> = secrets.iter().flat_map(|s| forms(s)).collect();
        patterns.sort();
        patterns.dedup();
        let matcher = (!patterns.is_empty()).then(|| {
            // Case-insensitive: percent-encoding may be written %2f or %2F;
            // masking "Hunter2" along with "hunter2" harms nothing.
            // Leftmost-longest: a secret holding another is masked whole.
            Arc::new(
                AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&patterns)
                    .expect("a few hundred short patterns fit the automaton"),
            )
        });
        Redactor {
            secrets: Arc::new(secrets),
            matcher,
        }
    }

    /// Both redactors' secrets.
    pub fn union(&self, other: &Redactor) -> Redactor {
        if other.secrets.is_subset(&self.secrets) {
            return self.clone();
        }
        if self.secrets.is_subset(&other.secrets) {
            return other.clone();
        }
        Redactor::from_set(self.secrets.union(&other.secrets).cloned().collect())
    }

    /// How many secrets it masks by value.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `text` with every known secret and everything [`redact_text`]
    /// recognises masked.
    pub fn redact(&self, text: &str) -> String {
        let by_value = match &self.matcher {
            Some(matcher) if matcher.is_match(text) => {
                let mut out = String::with_capacity(text.len());
                matcher.replace_all_with(text, &mut out, |_, _, out| {
                    out.push_str(MASK);
                    true
                });
                Cow::Owned(out)
            }
            _ => Cow::Borrowed(text),
        };
        redact_text(&by_value).into_owned()
    }

    /// [`Redactor::redact`] for JSON text (a JSON log line, an API
    /// response): each string is masked as the text it holds, so escapes
    /// are seen through and the result is still valid JSON. Numbers, keys'
    /// layout and everything outside strings are kept as they are.
    pub fn redact_json(&self, json: &str) -> String {
        let bytes = json.as_bytes();
        let mut out = String::with_capacity(json.len());
        let (mut copied, mut i) = (0, 0);
        while i < bytes.len() {
            if bytes[i] != b'"' {
                i += 1;
                continue;
            }
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(bytes.len());
            out.push_str(&json[copied..i]);
            let literal = &json[i..end];
            match serde_json::from_str::<String>(literal) {
                Ok(value) => {
                    let masked = self.redact(&value);
                    if masked == value {
                        out.push_str(literal);
                    } else {
                        out.push_str(&serde_json::to_string(&masked).unwrap_or_default());
                    }
                }
                // Not a complete string (a truncated line): mask it as text.
                Err(_) => out.push_str(&self.redact(literal)),
            }
            copied = end;
            i = end;
        }
        out.push_str(&json[copied..]);
        out
    }
}

/// The secrets of every configuration this process has run, for output
/// that is not tied to one camera: log lines, API responses, metrics.
///
/// The app owns it and adds a configuration's secrets when it applies it
/// (at start, on SIGHUP and on every API edit); the log writer, set up
/// before any configuration is read, holds a clone. Secrets are only ever
/// added: a password replaced by a reload may still open the camera, and
/// log lines about the old pipeline can come after the reload.
#[derive(Clone, Default)]
pub struct KnownSecrets(Arc<RwLock<Redactor>>);

impl fmt::Debug for KnownSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KnownSecrets")
            .field("secrets", &self.redactor().len())
            .finish()
    }
}

impl KnownSecrets {
    /// Adds the secrets `redactor` masks.
    pub fn learn(&self, redactor: &Redactor) {
        let mut known = self.0.write().unwrap_or_else(|e| e.into_inner());
        *known = known.union(redactor);
    }

    /// A snapshot of what is known now.
    pub fn redactor(&self) -> Redactor {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// [`Redactor::redact`] with everything known now.
    pub fn redact(&self, text: &str) -> String {
        self.redactor().redact(text)
    }
}

#[cfg(test)]
mod tests;
