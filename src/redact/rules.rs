//! Where secrets sit in text camstream was never told about: the shapes
//! of a URL password, a credential query parameter, a secret gst-launch
//! property and an `Authorization` value.
//!
//! Each rule finds byte ranges of `text`; the caller masks them. A rule
//! errs on the side of masking: a false positive costs a few characters of
//! a log line, a false negative a camera.

use std::ops::Range;

/// One secret found in a text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Hit {
    pub span: Range<usize>,
    pub kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// The password of `scheme://user:password@host`; `user` is the span
    /// of the user name.
    UrlPassword { user: Range<usize> },
    /// `?pwd=VALUE`, `&token=VALUE`: percent-encoded, ends at `&`.
    QueryValue,
    /// `user-pw=VALUE`, `Password = "VALUE"`: gst-launch syntax, maybe
    /// quoted or escaped.
    PropertyValue,
    /// The credentials of an `Authorization` value (after its scheme).
    Credentials,
}

/// Every secret the rules find in `text`, in no particular order; spans may
/// overlap.
pub(super) fn find(text: &str) -> Vec<Hit> {
    let mut hits = Vec::new();
    if text.contains("://") {
        url_userinfo(text, &mut hits);
    }
    if text.contains('=') {
        assignments(text, &mut hits);
    }
    if text.contains("\":") || text.contains("\" :") {
        json_fields(text, &mut hits);
    }
    authorization(text, &mut hits);
    bare_schemes(text, &mut hits);
    hits
}

/// Help texts write what the user should put in as a placeholder
/// (`?token=TOKEN`, `Bearer <token>`, `user-pw=$PASSWORD`); such values are
/// no secret and are left readable. A real token is at least 16 characters,
/// so it is never `TOKEN`.
pub(super) fn is_placeholder(value: &str) -> bool {
    // `<the password>`, `{password}`: words in brackets, not a value that
    // happens to be bracketed (a gst-launch list `<"a=b">`).
    let wrapped = |open: char, close: char| {
        value.len() >= 2
            && value.starts_with(open)
            && value.ends_with(close)
            && value[1..value.len() - 1]
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '_' | '-' | '\'' | '.'))
    };
    let shell_variable = value.len() > 1
        && value.starts_with('$')
        && value[1..]
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    matches!(value, "TOKEN" | "..." | super::MASK)
        || wrapped('<', '>')
        || wrapped('{', '}')
        || shell_variable
}

// ---- URL userinfo -----------------------------------------------------------

/// `scheme://user:password@host`. The userinfo ends at the last `@` before
/// the path, as URL parsers (WHATWG, the url crate) read it, so a password
/// holding `@`, `:` or `!` is masked whole. A password holding `/`, `?` or
/// `#` unencoded is not a valid URL, but people write them: when the
/// authority holds no `@`, a later `@` still ends the userinfo if what comes
/// before it looks like `user:password` and not like a path and query
/// (`http://h/x?mail=a@b` is left alone).
fn url_userinfo(text: &str, hits: &mut Vec<Hit>) {
    for (pos, _) in text.match_indices("://") {
        let start = pos + 3;
        let rest = &text[start..];
        // A URL ends at whitespace or a quote, in prose as in gst-launch.
        let token_len = rest
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .unwrap_or(rest.len());
        let token = &rest[..token_len];
        let authority_len = token.find(['/', '?', '#', '\\']).unwrap_or(token.len());
        let at = match token[..authority_len].rfind('@') {
            Some(at) => at,
            None => match unencoded_userinfo(token) {
                Some(at) => at,
                None => continue,
            },
        };
        let userinfo = &token[..at];
        // No ':' is a user name alone: nothing to hide.
        let Some(colon) = userinfo.find(':') else {
            continue;
        };
        let span = start + colon + 1..start + at;
        if span.is_empty() || is_placeholder(&text[span.clone()]) {
            continue;
        }
        hits.push(Hit {
            span,
            kind: Kind::UrlPassword {
                user: start..start + colon,
            },
        });
    }
}

/// The `@` ending a userinfo whose password holds an unencoded `/`, `?` or
/// `#` (see [`url_userinfo`]), if `token` looks like one.
fn unencoded_userinfo(token: &str) -> Option<usize> {
    let at = token.rfind('@')?;
    let candidate = &token[..at];
    let colon = candidate.find(':')?;
    let slash = candidate.find('/');
    if slash.is_some_and(|s| s < colon) {
        // `host/path:x@y`: the ':' is in a path.
        return None;
    }
    if let Some(s) = slash
        && candidate[s..].contains(['?', '#'])
    {
        // `host:port/path?mail=a@b`: the '@' is in a query.
        return None;
    }
    let host_follows = token[at + 1..]
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '[');
    host_follows.then_some(at)
}

// ---- name=value -------------------------------------------------------------

/// `name=value` where the name says the value is a secret: query
/// parameters (after `?`, `&` or `;`) and gst-launch properties (anywhere,
/// spaces allowed around `=`, the value quoted, escaped or bare).
fn assignments(text: &str, hits: &mut Vec<Hit>) {
    let bytes = text.as_bytes();
    for (eq, _) in text.match_indices('=') {
        let mut key_end = eq;
        while key_end > 0 && matches!(bytes[key_end - 1], b' ' | b'\t') {
            key_end -= 1;
        }
        let mut key_start = key_end;
        while key_start > 0 && is_key_byte(bytes[key_start - 1]) {
            key_start -= 1;
        }
        if key_start == key_end {
            continue;
        }
        let query = key_end == eq
            && key_start > 0
            && matches!(bytes[key_start - 1], b'?' | b'&' | b';')
            && bytes.get(eq + 1).is_none_or(|b| *b != b' ');
        let name = base_name(&text[key_start..key_end]);
        let (secret, value, kind) = if query {
            (
                is_query_secret(&name),
                query_value(bytes, eq + 1),
                Kind::QueryValue,
            )
        } else {
            (
                is_property_secret(&name),
                property_value(bytes, eq + 1),
                Kind::PropertyValue,
            )
        };
        if !secret || value.is_empty() {
            continue;
        }
        // `(or ?token=TOKEN)`: a placeholder in parentheses or a sentence.
        let shown = unquote(&text[value.clone()]);
        if is_placeholder(shown.trim_end_matches([')', ']', '.', ',', ';'])) {
            continue;
        }
        hits.push(Hit { span: value, kind });
    }
}

/// Characters of a parameter or property name, with the prefixes a name
/// may carry (`src::user-pw`, `cam.password`, `user[pwd]`).
fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'.' | b'[' | b']')
}

/// `Src::User-PW` -> `user-pw`: lowercase, without a child-proxy, dotted
/// or bracketed prefix.
fn base_name(key: &str) -> String {
    let key = key.trim_end_matches(']');
    let base = key.rsplit([':', '.', '[']).next().unwrap_or(key);
    base.to_ascii_lowercase()
}

/// Words that make a name a secret wherever they sit in it (`user_pwd`,
/// `loginpas`, `x-api-key`, `client_secret`, `proxy-password`).
const SECRET_WORDS: &[&str] = &[
    "passw",
    "passphrase",
    "pwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "api-key",
    "authkey",
    "auth_key",
    "auth-key",
    "credential",
    "cookie",
    "loginpas",
    "signature",
];
/// Names that are secrets as they stand.
const SECRET_NAMES: &[&str] = &["pw", "psw", "pswd", "pword", "key", "auth"];
/// Endings of secret names: gst-launch's `user-pw`, `proxy-pw`, `srtp-key`.
const SECRET_SUFFIXES: &[&str] = &[
    "-pw", "_pw", "-psw", "_psw", "-key", "_key", "-pass", "_pass", "-auth", "_auth",
];
/// Query parameters that are secrets in a URL but ordinary words as
/// gst-launch properties (x264enc has `pass=quant`).
const QUERY_SECRET_NAMES: &[&str] = &["pass", "sig", "sign", "session"];

/// Whether a gst-launch property (or a `name=value` in prose) with this
/// lowercase name holds a secret.
pub(super) fn is_property_secret(name: &str) -> bool {
    SECRET_NAMES.contains(&name)
        || SECRET_WORDS.iter().any(|w| name.contains(w))
        || SECRET_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// Whether a URL query parameter with this lowercase name holds a secret.
pub(super) fn is_query_secret(name: &str) -> bool {
    QUERY_SECRET_NAMES.contains(&name) || is_property_secret(name)
}

/// A query value: up to the next parameter, the fragment, or the end of
/// the URL.
fn query_value(bytes: &[u8], start: usize) -> Range<usize> {
    let end = bytes[start..]
        .iter()
        .position(|b| {
            b.is_ascii_whitespace() || matches!(b, b'&' | b'#' | b'"' | b'\'' | b'<' | b'>' | b'`')
        })
        .map_or(bytes.len(), |i| start + i);
    start..end
}

/// A gst-launch property value, as gst-launch's lexer reads it: after
/// optional spaces and an optional type (`(string)`), a `"..."` or `'...'`
/// string with backslash escapes, or a run of non-space characters in which
/// `\ ` escapes a space. A string quoted with escaped quotes (`\"...\"`, as
/// in a `Debug`-printed message) is read to its closing `\"`.
fn property_value(bytes: &[u8], start: usize) -> Range<usize> {
    let len = bytes.len();
    let skip_spaces = |mut i: usize| {
        while i < len && matches!(bytes[i], b' ' | b'\t') {
            i += 1;
        }
        i
    };
    let mut i = skip_spaces(start);
    if bytes.get(i) == Some(&b'(')
        && let Some(close) = bytes[i + 1..].iter().take(16).position(|b| *b == b')')
        && bytes[i + 1..i + 1 + close]
            .iter()
            .all(|b| b.is_ascii_alphanumeric())
    {
        i = skip_spaces(i + close + 2);
    }
    let value_start = i;
    match bytes.get(i) {
        None => i..i,
        Some(&quote @ (b'"' | b'\'')) => {
            let mut j = i + 1;
            while j < len {
                match bytes[j] {
                    b'\\' => j += 2,
                    b if b == quote => {
                        j += 1;
                        break;
                    }
                    _ => j += 1,
                }
            }
            value_start..j.min(len)
        }
        Some(b'\\') if matches!(bytes.get(i + 1), Some(b'"' | b'\'')) => {
            let quote = bytes[i + 1];
            let mut j = i + 2;
            let mut end = len;
            while j + 1 < len {
                if bytes[j] == b'\\' && bytes[j + 1] == quote {
                    end = j + 2;
                    break;
                }
                j += 1;
            }
            value_start..end
        }
        // `<your password>`: a placeholder, read whole so it is seen as one.
        Some(b'<')
            if let Some(close) = bytes[i..].iter().position(|b| matches!(b, b'>' | b'\n'))
                && bytes[i + close] == b'>' =>
        {
            value_start..i + close + 1
        }
        Some(_) => {
            let mut j = i;
            while j < len && !bytes[j].is_ascii_whitespace() {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            value_start..j.min(len)
        }
    }
}

/// A property value as the element sees it: without its quotes, with
/// backslash escapes resolved.
pub(super) fn unquote(value: &str) -> String {
    let inner = ['"', '\'']
        .iter()
        .find_map(|q| {
            value
                .strip_prefix(*q)
                .map(|v| v.strip_suffix(*q).unwrap_or(v))
        })
        .or_else(|| {
            ["\\\"", "\\'"].iter().find_map(|q| {
                value
                    .strip_prefix(q)
                    .map(|v| v.strip_suffix(q).unwrap_or(v))
            })
        })
        .unwrap_or(value);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// `"password": "VALUE"` and the like, in JSON (a request body or a
/// structure printed into a message).
fn json_fields(text: &str, hits: &mut Vec<Hit>) {
    let bytes = text.as_bytes();
    for (colon, _) in text.match_indices(':') {
        let mut key_end = colon;
        while key_end > 0 && bytes[key_end - 1] == b' ' {
            key_end -= 1;
        }
        if key_end == 0 || bytes[key_end - 1] != b'"' {
            continue;
        }
        let Some(open) = text[..key_end - 1].rfind('"') else {
            continue;
        };
        let key = &text[open + 1..key_end - 1];
        if key.is_empty() || !key.bytes().all(is_key_byte) || !is_property_secret(&base_name(key)) {
            continue;
        }
        let value = property_value(bytes, colon + 1);
        // A number, object or list is no password; a string is.
        if value.is_empty() || bytes[value.start] != b'"' {
            continue;
        }
        if !is_placeholder(&unquote(&text[value.clone()])) {
            hits.push(Hit {
                span: value,
                kind: Kind::PropertyValue,
            });
        }
    }
}

// ---- Authorization ----------------------------------------------------------

/// Schemes of an `Authorization` value, which stay readable.
const AUTH_SCHEMES: &[&str] = &["basic", "bearer", "digest", "token", "negotiate", "ntlm"];

/// `Authorization: Basic ...`, `"authorization": "Bearer ..."`,
/// `Authorization=(string)"Basic ..."` (souphttpsrc `extra-headers`): the
/// value after the scheme. A Digest value is masked to the end of its line
/// or string, since it is a list of fields.
fn authorization(text: &str, hits: &mut Vec<Hit>) {
    const NAME: &str = "authorization";
    if text.len() < NAME.len() {
        return;
    }
    let lower = text.to_ascii_lowercase();
    let bytes = text.as_bytes();
    let len = bytes.len();
    for (pos, _) in lower.match_indices(NAME) {
        let mut i = pos + NAME.len();
        // The name may be quoted ("authorization": ...).
        while i < len && matches!(bytes[i], b'"' | b'\'' | b'\\') {
            i += 1;
        }
        while i < len && bytes[i] == b' ' {
            i += 1;
        }
        if !matches!(bytes.get(i), Some(b':' | b'=')) {
            continue;
        }
        i += 1;
        while i < len && bytes[i] == b' ' {
            i += 1;
        }
        if lower[i..].starts_with("(string)") {
            i += "(string)".len();
        }
        // An opening quote, maybe escaped.
        let mut quoted = false;
        while i < len && matches!(bytes[i], b'"' | b'\'' | b'\\') {
            quoted = true;
            i += 1;
        }
        let word_len = lower[i..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(len - i);
        let scheme = &lower[i..i + word_len];
        let mut digest = false;
        if AUTH_SCHEMES.contains(&scheme) && bytes.get(i + word_len) == Some(&b' ') {
            digest = scheme == "digest";
            i += word_len;
            while i < len && bytes[i] == b' ' {
                i += 1;
            }
        }
        let placeholder_end = (bytes.get(i) == Some(&b'<'))
            .then(|| text[i..].find(['>', '\n']))
            .flatten()
            .filter(|e| bytes[i + e] == b'>');
        let end = if let Some(e) = placeholder_end {
            i + e + 1
        } else if digest {
            let line_end = text[i..].find(['\n', '\r']).map_or(len, |e| i + e);
            if quoted {
                text[i..line_end]
                    .rfind(['"', '\''])
                    .map_or(line_end, |q| i + q)
            } else {
                line_end
            }
        } else {
            text[i..]
                .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '\\' | ';'))
                .map_or(len, |e| i + e)
        };
        if end > i && !is_placeholder(&text[i..end]) {
            hits.push(Hit {
                span: i..end,
                kind: Kind::Credentials,
            });
        }
    }
}

/// `Bearer TOKEN` and `Basic BASE64` outside an `Authorization` header (a
/// curl command line in a message, a header value logged on its own). Only
/// credential-looking words are masked, so "basic users" stays readable:
/// eight characters or more, with a digit or a base64 symbol, or twenty
/// letters or more.
fn bare_schemes(text: &str, hits: &mut Vec<Hit>) {
    let lower = text.to_ascii_lowercase();
    let bytes = text.as_bytes();
    for scheme in ["bearer ", "basic "] {
        for (pos, _) in lower.match_indices(scheme) {
            if pos > 0 && bytes[pos - 1].is_ascii_alphanumeric() {
                continue;
            }
            let mut i = pos + scheme.len();
            while i < bytes.len() && bytes[i] == b' ' {
                i += 1;
            }
            let word_len = bytes[i..]
                .iter()
                .position(|b| {
                    !(b.is_ascii_alphanumeric()
                        || matches!(b, b'+' | b'/' | b'=' | b'.' | b'_' | b'~' | b'-'))
                })
                .unwrap_or(bytes.len() - i);
            let word = &text[i..i + word_len];
            let symbols = word.bytes().any(|b| !b.is_ascii_alphabetic());
            let credential_like = (word_len >= 8 && symbols) || word_len >= 20;
            if credential_like && !is_placeholder(word) {
                hits.push(Hit {
                    span: i..i + word_len,
                    kind: Kind::Credentials,
                });
            }
        }
    }
}
