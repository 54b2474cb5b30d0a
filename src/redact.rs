//! Keeping camera passwords out of everything camstream says.
//!
//! Passwords reach camstream in source URLs (`rtsp://admin:secret@cam/...`)
//! and in hand-written pipeline overrides (`user-pw=secret`). Every string
//! that leaves the process (log lines, API responses, metrics, errors) goes
//! through a [`Redactor`] built from the camera's known secrets, and through
//! [`redact_text`], which also catches credentials we were never told about.

use std::borrow::Cow;

/// What a password is replaced with.
pub const MASK: &str = "***";

/// Replaces the password of every `scheme://user:password@host` URL and the
/// value of every `user-pw=...` / `password=...` property in `text`.
///
/// This is the safety net for text camstream did not build itself (GStreamer
/// error messages, user-written pipelines): it needs no knowledge of the
/// secret.
pub fn redact_text(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    if text.contains("://") {
        out = Cow::Owned(redact_url_userinfo(&out));
    }
    for key in ["user-pw=", "password=", "passwd=", "pw="] {
        if out.contains(key) {
            out = Cow::Owned(redact_property(&out, key));
        }
    }
    out
}

/// `scheme://user:pass@host` -> `scheme://user:***@host`, for every URL in
/// `text`. A URL with a user but no password is left as it is.
fn redact_url_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace or quote; the
        // userinfo is everything before its last '@'.
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push(':');
                        out.push_str(MASK);
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// `key=value` -> `key=***`, where the value is a gst-launch token: either
/// a quoted string or a run of non-space characters.
fn redact_property(text: &str, key: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find(key) {
        // Only whole keys: `user-pw=` must not match inside `xuser-pw=`.
        let whole = pos == 0
            || rest[..pos]
                .chars()
                .next_back()
                .is_some_and(|c| !(c.is_alphanumeric() || c == '-' || c == '_'));
        let (head, tail) = rest.split_at(pos + key.len());
        out.push_str(head);
        if !whole {
            rest = tail;
            continue;
        }
        let end = match tail.chars().next() {
            Some(q @ ('"' | '\'')) => tail[1..].find(q).map_or(tail.len(), |i| i + 2),
            _ => tail
                .find(|c: char| c.is_whitespace() || c == '!' || c == ',' || c == '&')
                .unwrap_or(tail.len()),
        };
        out.push_str(MASK);
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Redacts the given secrets wherever they appear, and then applies
/// [`redact_text`]. One per camera, built from the passwords in its source.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut masked: Vec<String> = Vec::new();
        for secret in secrets.into_iter().map(Into::<String>::into) {
            // A one-character "password" would mask every occurrence of that
            // character; such a secret is caught by the URL rules instead.
            if secret.len() < 2 {
                continue;
            }
            // Percent-encoded forms show up when the password holds
            // characters that are not allowed in a URL.
            let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
            let encoded = encoded.replace('+', "%20");
            if encoded != secret {
                masked.push(encoded);
            }
            masked.push(secret);
        }
        // Longest first, so a secret that contains another is masked whole.
        masked.sort_by_key(|s| std::cmp::Reverse(s.len()));
        masked.dedup();
        Redactor { secrets: masked }
    }

    /// `text` with every known secret and every URL password masked.
    pub fn redact(&self, text: &str) -> String {
        let mut out = redact_text(text).into_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), MASK);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_masked() {
        assert_eq!(
            redact_text("rtsp://admin:12345@192.168.1.64:554/Streaming/Channels/101"),
            "rtsp://admin:***@192.168.1.64:554/Streaming/Channels/101"
        );
        assert_eq!(
            redact_text("could not open \"rtsp://u:p@h/x\" and http://a:b@c"),
            "could not open \"rtsp://u:***@h/x\" and http://a:***@c"
        );
        // An '@' in the password itself: the last '@' ends the userinfo.
        assert_eq!(redact_text("rtsp://u:p@ss@h/x"), "rtsp://u:***@h/x");
    }

    #[test]
    fn urls_without_password_are_unchanged() {
        for text in ["rtsp://h/x", "rtsp://user@h/x", "no url here", "a://"] {
            assert_eq!(redact_text(text), text);
        }
    }

    #[test]
    fn properties_are_masked() {
        assert_eq!(
            redact_text("rtspsrc user-id=admin user-pw=secret latency=100"),
            "rtspsrc user-id=admin user-pw=*** latency=100"
        );
        assert_eq!(
            redact_text("souphttpsrc user-pw=\"s e c\" ! jpegdec"),
            "souphttpsrc user-pw=*** ! jpegdec"
        );
    }

    #[test]
    fn known_secrets_are_masked_anywhere() {
        let r = Redactor::new(["hunter2", "p@ss word"]);
        assert_eq!(r.redact("wrong password hunter2!"), "wrong password ***!");
        assert_eq!(r.redact("p%40ss%20word in a url"), "*** in a url");
        assert_eq!(Redactor::new(["x"]).redact("x marks"), "x marks");
    }
}
