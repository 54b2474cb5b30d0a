//! Reading a `multipart/x-mixed-replace` MJPEG stream into its parts,
//! incrementally, as chunks arrive. A part with `Content-Length` (camstream
//! sends it) is cut out by length; one without is cut at the next
//! boundary. The JPEG bytes are handed on as they came.

use bytes::{Bytes, BytesMut};

/// A part's headers end within this many bytes, or the stream is not one.
const MAX_HEADERS: usize = 8 * 1024;
/// The largest part accepted: a full 8K JPEG at high quality is well under
/// it; beyond it the stream is broken, and memory stays bounded.
const MAX_PART: usize = 32 << 20;

/// What a stream broke.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum MultipartError {
    #[error("the response is {0:?}, not multipart/x-mixed-replace with a boundary")]
    NotMultipart(String),
    #[error("expected the boundary line --{boundary}, got {got:?}")]
    NoBoundary { boundary: String, got: String },
    #[error("a part's headers are longer than {MAX_HEADERS} bytes")]
    HeadersTooLong,
    #[error("a part's Content-Length {0:?} is not a number")]
    BadLength(String),
    #[error("a part is larger than {MAX_PART} bytes")]
    PartTooLarge,
}

/// One part: its body, and whether camstream marked it as a placeholder
/// (`X-Camstream-Frame: placeholder`, the camera being offline upstream).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub jpeg: Bytes,
    pub placeholder: bool,
}

#[derive(Debug)]
enum State {
    /// Before a boundary line.
    Boundary,
    /// Before a part's headers.
    Headers,
    /// In a part's body.
    Body {
        length: Option<usize>,
        placeholder: bool,
    },
}

/// Cuts a byte stream into parts.
#[derive(Debug)]
pub struct PartReader {
    /// `--frame`.
    delimiter: Vec<u8>,
    /// `\r\n--frame`: what ends a part without Content-Length.
    end: Vec<u8>,
    buf: BytesMut,
    state: State,
    /// How much of a part without Content-Length was already searched for
    /// its end, so a part arriving in many chunks is not searched again
    /// from its start for each.
    searched: usize,
}

impl PartReader {
    /// A reader for a response with this `Content-Type`.
    pub fn new(content_type: &str) -> Result<PartReader, MultipartError> {
        let not = || MultipartError::NotMultipart(content_type.to_string());
        let (kind, params) = content_type.split_once(';').ok_or_else(not)?;
        if !kind
            .trim()
            .eq_ignore_ascii_case("multipart/x-mixed-replace")
        {
            return Err(not());
        }
        let boundary = params
            .split(';')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
            .map(|(_, v)| v.trim().trim_matches('"'))
            .filter(|b| !b.is_empty())
            .ok_or_else(not)?;
        // Some servers write the boundary parameter with its leading "--".
        let boundary = boundary.strip_prefix("--").unwrap_or(boundary);
        let delimiter = format!("--{boundary}").into_bytes();
        let mut end = b"\r\n".to_vec();
        end.extend_from_slice(&delimiter);
        Ok(PartReader {
            delimiter,
            end,
            buf: BytesMut::new(),
            state: State::Boundary,
            searched: 0,
        })
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete part, if the bytes so far hold one.
    pub fn next_part(&mut self) -> Result<Option<Part>, MultipartError> {
        loop {
            match self.state {
                State::Boundary => {
                    // Blank lines before a boundary are allowed (the CRLF
                    // that ends a part cut by length is one).
                    while self.buf.starts_with(b"\r\n") {
                        let _ = self.buf.split_to(2);
                    }
                    let Some(eol) = find(&self.buf, b"\r\n") else {
                        if self.buf.len() > MAX_HEADERS {
                            return Err(self.no_boundary());
                        }
                        return Ok(None);
                    };
                    if !self.buf[..eol].starts_with(&self.delimiter) {
                        return Err(self.no_boundary());
                    }
                    let _ = self.buf.split_to(eol + 2);
                    self.state = State::Headers;
                }
                State::Headers => {
                    let (head_len, body_start) = if self.buf.starts_with(b"\r\n") {
                        (0, 2)
                    } else {
                        match find(&self.buf, b"\r\n\r\n") {
                            Some(at) => (at, at + 4),
                            None if self.buf.len() > MAX_HEADERS => {
                                return Err(MultipartError::HeadersTooLong);
                            }
                            None => return Ok(None),
                        }
                    };
                    let head = self.buf.split_to(body_start);
                    let mut length = None;
                    let mut placeholder = false;
                    for line in String::from_utf8_lossy(&head[..head_len]).split("\r\n") {
                        let Some((name, value)) = line.split_once(':') else {
                            continue;
                        };
                        let (name, value) = (name.trim(), value.trim());
                        if name.eq_ignore_ascii_case("content-length") {
                            let n: usize = value
                                .parse()
                                .map_err(|_| MultipartError::BadLength(value.to_string()))?;
                            if n > MAX_PART {
                                return Err(MultipartError::PartTooLarge);
                            }
                            length = Some(n);
                        } else if name.eq_ignore_ascii_case("x-camstream-frame") {
                            placeholder = value.eq_ignore_ascii_case("placeholder");
                        }
                    }
                    self.state = State::Body {
                        length,
                        placeholder,
                    };
                }
                State::Body {
                    length,
                    placeholder,
                } => {
                    let cut = match length {
                        Some(n) if self.buf.len() >= n => n,
                        Some(_) => return Ok(None),
                        None => {
                            // The end may straddle the last chunk's edge.
                            let from = self.searched.saturating_sub(self.end.len());
                            match find(&self.buf[from..], &self.end) {
                                Some(at) => from + at,
                                None if self.buf.len() > MAX_PART => {
                                    return Err(MultipartError::PartTooLarge);
                                }
                                None => {
                                    self.searched = self.buf.len();
                                    return Ok(None);
                                }
                            }
                        }
                    };
                    self.searched = 0;
                    let jpeg = self.buf.split_to(cut).freeze();
                    self.state = State::Boundary;
                    return Ok(Some(Part { jpeg, placeholder }));
                }
            }
        }
    }

    fn no_boundary(&self) -> MultipartError {
        let line = &self.buf[..self.buf.len().min(40)];
        MultipartError::NoBoundary {
            boundary: String::from_utf8_lossy(&self.delimiter[2..]).into_owned(),
            got: String::from_utf8_lossy(line).into_owned(),
        }
    }
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
