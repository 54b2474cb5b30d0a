//! HTTP-side test clients: a strict `multipart/x-mixed-replace` (MJPEG)
//! reader, a raw HTTP/1.1 GET for byte-exact framing checks, and JPEG helpers.
//!
//! The multipart parser is deliberately pickier than RFC 2046 and than
//! browsers: anything camstream should never emit (preamble CRLF, bare LF,
//! missing Content-Length, transport padding...) is an error, so framing bugs
//! fail tests instead of rendering fine in one browser and not in another.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Longest header line / header block accepted before we call it garbage;
/// keeps a broken server from making the parser buffer without bound.
const MAX_HEADER_LINE: usize = 8 * 1024;
const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// Refuse absurd Content-Length values instead of waiting for them forever.
const MAX_PART_BODY: usize = 256 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct Part {
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Part {
    /// First header with this name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Where the parser is; kept between calls so parsing is incremental.
#[derive(Debug)]
enum State {
    FirstBoundary,
    Headers,
    Body {
        len: usize,
    },
    /// The close delimiter `--BOUNDARY--` was seen.
    Closed,
    /// Sticky: once the framing is broken nothing after it can be trusted.
    Failed(String),
}

/// What followed a complete delimiter.
enum Delim {
    Incomplete,
    /// `--BOUNDARY\r\n`: another part follows. Carries the bytes to consume.
    Next(usize),
    /// `--BOUNDARY--`: clean end of the multipart body.
    Close(usize),
}

/// Incremental, strict parser for a multipart/x-mixed-replace body. Feed it
/// bytes with [`push`](Self::push) and pull parts with
/// [`poll_part`](Self::poll_part). Public so tests can drive it directly with
/// crafted byte sequences.
pub struct MultipartParser {
    /// `--` + boundary, as it appears on the wire.
    delimiter: Vec<u8>,
    buf: BytesMut,
    state: State,
    /// How many bytes of the current, still incomplete header line were
    /// already searched for LF, so a slow trickle is never rescanned.
    scanned: usize,
    headers: Vec<(String, String)>,
    header_bytes: usize,
    /// Number of parts returned so far.
    parts: u64,
}

impl MultipartParser {
    pub fn new(boundary: &str) -> MultipartParser {
        let mut delimiter = b"--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        MultipartParser {
            delimiter,
            buf: BytesMut::with_capacity(64 * 1024),
            state: State::FirstBoundary,
            scanned: 0,
            headers: Vec::new(),
            header_bytes: 0,
            parts: 0,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Parts completed so far.
    pub fn parts(&self) -> u64 {
        self.parts
    }

    /// `Ok(Some(part))` once a part AND the delimiter line after it are
    /// complete, `Ok(None)` when more bytes are needed, `Err` on a framing
    /// violation (sticky) or after the close delimiter ("stream ended").
    pub fn poll_part(&mut self) -> anyhow::Result<Option<Part>> {
        match self.step() {
            Ok(part) => Ok(part),
            Err(msg) => {
                if !matches!(self.state, State::Closed) {
                    self.state = State::Failed(msg.clone());
                }
                Err(anyhow!(msg))
            }
        }
    }

    /// The error to report when the connection ends now.
    pub fn eof_error(&self) -> anyhow::Error {
        match &self.state {
            State::Closed => anyhow!("stream ended (close delimiter, then connection closed)"),
            State::Failed(msg) => anyhow!("{msg}"),
            _ => anyhow!("stream ended: connection closed while {}", self.describe()),
        }
    }

    /// Human-readable parser position, for timeout and EOF messages.
    pub fn describe(&self) -> String {
        let n = self.parts + 1;
        let have = self.buf.len();
        match &self.state {
            State::FirstBoundary => {
                format!("waiting for the first boundary ({have} bytes buffered)")
            }
            State::Headers => format!("reading headers of part #{n} ({have} bytes buffered)"),
            State::Body { len } => format!(
                "reading part #{n}: {have} bytes buffered, need {len} body + {} delimiter bytes",
                self.delimiter.len() + 4
            ),
            State::Closed => "after the close delimiter".to_owned(),
            State::Failed(msg) => format!("failed: {msg}"),
        }
    }

    fn step(&mut self) -> Result<Option<Part>, String> {
        loop {
            match self.state {
                State::Failed(ref msg) => return Err(msg.clone()),
                State::Closed => {
                    return Err(format!(
                        "stream ended: close delimiter {} received",
                        escape(&[&self.delimiter[..], b"--"].concat())
                    ));
                }
                State::FirstBoundary => match self.first_boundary()? {
                    Delim::Incomplete => return Ok(None),
                    Delim::Next(n) => {
                        self.buf.advance(n);
                        self.state = State::Headers;
                    }
                    Delim::Close(n) => {
                        self.buf.advance(n);
                        self.state = State::Closed;
                    }
                },
                State::Headers => {
                    if !self.parse_headers()? {
                        return Ok(None);
                    }
                }
                State::Body { len } => {
                    if self.buf.len() <= len {
                        return Ok(None);
                    }
                    let after = match match_delimiter(&self.buf[len..], &self.delimiter, true) {
                        Ok(d) => d,
                        Err(msg) => return Err(self.body_mismatch(len, &msg)),
                    };
                    let (consume, next) = match after {
                        Delim::Incomplete => return Ok(None),
                        Delim::Next(n) => (n, State::Headers),
                        Delim::Close(n) => (n, State::Closed),
                    };
                    let body = self.buf.split_to(len).freeze();
                    self.buf.advance(consume);
                    self.state = next;
                    self.parts += 1;
                    self.header_bytes = 0;
                    return Ok(Some(Part {
                        headers: std::mem::take(&mut self.headers),
                        body,
                    }));
                }
            }
        }
    }

    fn first_boundary(&self) -> Result<Delim, String> {
        let b = &self.buf[..];
        if b.starts_with(b"\r\n") {
            return Err(
                "leading CRLF before the first boundary (RFC 2046 tolerates a \
                        preamble, but camstream must start the body with the boundary)"
                    .to_owned(),
            );
        }
        if b.starts_with(b"\n") {
            return Err("bare LF before the first boundary".to_owned());
        }
        match_delimiter(b, &self.delimiter, false)
            .map_err(|msg| format!("body does not start with the boundary line: {msg}"))
    }

    /// Explain a wrong delimiter after a body, pointing at the real delimiter
    /// if it is nearby (the usual cause is a wrong Content-Length).
    fn body_mismatch(&self, len: usize, msg: &str) -> String {
        let part = self.parts + 1;
        let mut out = format!("part #{part}: after Content-Length {len} body bytes: {msg}");
        let needle = [b"\r\n", &self.delimiter[..]].concat();
        if let Some(at) = self.buf.windows(needle.len()).position(|w| w == needle) {
            let _ = write!(
                out,
                " (a delimiter starts at body offset {at}, so Content-Length is off by {})",
                at as i64 - len as i64
            );
        } else if self.buf[len..].starts_with(b"\n--") {
            out.push_str(" (bare LF before the delimiter)");
        }
        out
    }

    /// Consume complete header lines; true once the blank line ending the
    /// header block was consumed and the part's headers are validated.
    fn parse_headers(&mut self) -> Result<bool, String> {
        let part = self.parts + 1;
        loop {
            let Some(pos) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') else {
                self.scanned = self.buf.len();
                if self.scanned > MAX_HEADER_LINE {
                    return Err(format!(
                        "part #{part}: header line longer than {MAX_HEADER_LINE} bytes without LF"
                    ));
                }
                return Ok(false);
            };
            let lf = self.scanned + pos;
            self.scanned = 0;
            if lf == 0 || self.buf[lf - 1] != b'\r' {
                return Err(format!(
                    "part #{part}: bare LF ending header line {}",
                    escape(&self.buf[..=lf])
                ));
            }
            self.header_bytes += lf + 1;
            if self.header_bytes > MAX_HEADER_BLOCK {
                return Err(format!(
                    "part #{part}: header block over {MAX_HEADER_BLOCK} bytes"
                ));
            }
            let parsed = if lf == 1 {
                None
            } else {
                Some(
                    parse_header_line(&self.buf[..lf - 1])
                        .map_err(|e| format!("part #{part}: {e}"))?,
                )
            };
            self.buf.advance(lf + 1);
            match parsed {
                Some(header) => self.headers.push(header),
                None => {
                    let len = self.validate_part_headers()?;
                    self.state = State::Body { len };
                    return Ok(true);
                }
            }
        }
    }

    /// Enforce the headers a browser needs to frame and display a part.
    fn validate_part_headers(&self) -> Result<usize, String> {
        let part = self.parts + 1;
        let unique = |name: &str| -> Result<Option<&str>, String> {
            let mut values = self
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str());
            let first = values.next();
            if values.next().is_some() {
                return Err(format!("part #{part}: duplicate {name} header"));
            }
            Ok(first)
        };
        let content_type = unique("Content-Type")?
            .ok_or_else(|| format!("part #{part}: missing Content-Type header"))?;
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if !media_type.eq_ignore_ascii_case("image/jpeg") {
            return Err(format!(
                "part #{part}: Content-Type is {content_type:?}, expected image/jpeg"
            ));
        }
        let length = unique("Content-Length")?
            .ok_or_else(|| format!("part #{part}: missing Content-Length header"))?;
        if length.is_empty() || !length.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("part #{part}: invalid Content-Length {length:?}"));
        }
        let len: usize = length
            .parse()
            .map_err(|_| format!("part #{part}: Content-Length {length:?} out of range"))?;
        if len > MAX_PART_BODY {
            return Err(format!(
                "part #{part}: Content-Length {len} is implausibly large"
            ));
        }
        Ok(len)
    }
}

/// Check `buf` against a delimiter line: optional `\r\n` (required after a
/// body), `--BOUNDARY`, then `\r\n` or `--`. Mismatches are reported as soon
/// as the first wrong byte is visible, without waiting for the whole line.
fn match_delimiter(buf: &[u8], delimiter: &[u8], leading_crlf: bool) -> Result<Delim, String> {
    let expected: Vec<u8> = if leading_crlf {
        [b"\r\n", delimiter].concat()
    } else {
        delimiter.to_vec()
    };
    let n = buf.len().min(expected.len());
    if buf[..n] != expected[..n] {
        let shown = &buf[..buf.len().min(expected.len() + 8)];
        return Err(format!(
            "expected {}, found {}",
            escape(&expected),
            escape(shown)
        ));
    }
    let rest = &buf[n..];
    if n < expected.len() {
        return Ok(Delim::Incomplete);
    }
    match rest {
        [] | [b'\r'] | [b'-'] => Ok(Delim::Incomplete),
        [b'\r', b'\n', ..] => Ok(Delim::Next(n + 2)),
        [b'-', b'-', ..] => Ok(Delim::Close(n + 2)),
        [b'\n', ..] => Err(format!("bare LF after {}", escape(&expected))),
        [b'\r', ..] => Err(format!("bare CR after {}", escape(&expected))),
        _ => Err(format!(
            "{} followed by {} instead of CRLF or \"--\" (no transport padding or \
             longer boundary allowed)",
            escape(&expected),
            escape(&rest[..rest.len().min(8)])
        )),
    }
}

/// Parse `Name: value` strictly (RFC 9110 field syntax, no obs-fold).
fn parse_header_line(line: &[u8]) -> Result<(String, String), String> {
    let text =
        std::str::from_utf8(line).map_err(|_| format!("non-UTF-8 header line {}", escape(line)))?;
    if text.contains('\r') {
        return Err(format!("bare CR inside header line {}", escape(line)));
    }
    if text.starts_with([' ', '\t']) {
        return Err(format!("obsolete line folding in header {}", escape(line)));
    }
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("header line without ':' {}", escape(line)))?;
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(is_tchar) {
        return Err(format!("invalid header name {name:?}"));
    }
    Ok((name.to_owned(), value.trim_matches([' ', '\t']).to_owned()))
}

/// Bytes as a Rust-ish escaped string, so CR/LF show up in messages.
fn escape(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

type BodyStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// A live MJPEG HTTP response being read part by part.
pub struct MjpegStream {
    headers: reqwest::header::HeaderMap,
    boundary: String,
    body: BodyStream,
    parser: MultipartParser,
    eof: bool,
}

impl MjpegStream {
    /// GET `url` and check it is a 200 multipart/x-mixed-replace response
    /// with a boundary; otherwise fail with the status and (a prefix of) the
    /// body text so the test log shows what the server said instead.
    pub async fn connect(url: &str) -> anyhow::Result<MjpegStream> {
        // no_proxy: a proxy variable in the CI environment must never divert
        // loopback test traffic.
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        let resp = client
            .get(url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let content_type = headers
            .get(reqwest::header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let checked = if status != reqwest::StatusCode::OK {
            Err(format!("expected status 200, got {status}"))
        } else {
            content_type
                .as_deref()
                .ok_or_else(|| "no Content-Type header".to_owned())
                .and_then(multipart_boundary)
        };
        let boundary = match checked {
            Ok(b) => b,
            Err(why) => {
                let body = body_snippet(resp).await;
                bail!(
                    "GET {url}: {why} (status {status}, Content-Type {content_type:?}, body {body:?})"
                );
            }
        };
        Ok(MjpegStream {
            headers,
            parser: MultipartParser::new(&boundary),
            boundary,
            body: Box::pin(resp.bytes_stream()),
            eof: false,
        })
    }

    pub fn headers(&self) -> &reqwest::header::HeaderMap {
        &self.headers
    }

    pub fn boundary(&self) -> &str {
        &self.boundary
    }

    /// Parts returned so far.
    pub fn parts_received(&self) -> u64 {
        self.parser.parts()
    }

    /// Next complete part. Like Chromium, a part only counts once the
    /// following delimiter line has arrived. Errors on framing violations,
    /// after the close delimiter and when the connection ends.
    ///
    /// Cancel-safe: the only await point is the body stream, so a timed-out
    /// call loses nothing and the next call continues where it stopped.
    pub async fn next_part(&mut self) -> anyhow::Result<Part> {
        loop {
            if let Some(part) = self.parser.poll_part()? {
                return Ok(part);
            }
            if self.eof {
                return Err(self.parser.eof_error());
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.parser.push(&chunk),
                Some(Err(e)) => {
                    self.eof = true;
                    return Err(anyhow::Error::new(e).context(format!(
                        "reading MJPEG body while {}",
                        self.parser.describe()
                    )));
                }
                None => self.eof = true,
            }
        }
    }

    pub async fn next_part_timeout(&mut self, t: Duration) -> anyhow::Result<Part> {
        match tokio::time::timeout(t, self.next_part()).await {
            Ok(result) => result,
            Err(_) => Err(anyhow!(
                "no MJPEG part within {t:?} while {}",
                self.parser.describe()
            )),
        }
    }
}

/// Extract and validate the boundary of a multipart/x-mixed-replace type.
fn multipart_boundary(content_type: &str) -> Result<String, String> {
    let (media_type, mut params) = content_type.split_once(';').unwrap_or((content_type, ""));
    if !media_type
        .trim()
        .eq_ignore_ascii_case("multipart/x-mixed-replace")
    {
        return Err(format!(
            "Content-Type {content_type:?} is not multipart/x-mixed-replace"
        ));
    }
    let mut boundary = None;
    loop {
        params = params.trim_start_matches([' ', '\t', ';']);
        if params.is_empty() {
            break;
        }
        let (name, rest) = params
            .split_once('=')
            .ok_or_else(|| format!("malformed parameter in {content_type:?}"))?;
        let (value, rest) = if let Some(quoted) = rest.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => break i + 1,
                    Some((_, '\\')) => value.extend(chars.next().map(|(_, c)| c)),
                    Some((_, c)) => value.push(c),
                    None => return Err(format!("unterminated quote in {content_type:?}")),
                }
            };
            (value, &quoted[end..])
        } else {
            let end = rest.find(';').unwrap_or(rest.len());
            (rest[..end].trim().to_owned(), &rest[end..])
        };
        if name.trim().eq_ignore_ascii_case("boundary") {
            boundary = Some(value);
        }
        params = rest;
    }
    let boundary = boundary.ok_or_else(|| format!("no boundary parameter in {content_type:?}"))?;
    // RFC 2046 §5.1.1: 1-70 "bchars", not ending in a space.
    let bchar = |c: char| c.is_ascii_alphanumeric() || "'()+_,-./:=? ".contains(c);
    if boundary.is_empty()
        || boundary.len() > 70
        || boundary.ends_with(' ')
        || !boundary.chars().all(bchar)
    {
        return Err(format!("boundary {boundary:?} violates RFC 2046"));
    }
    Ok(boundary)
}

/// Up to 8 KiB of the body, waiting at most 2 s: enough to show an error
/// page without hanging on an endless stream.
async fn body_snippet(resp: reqwest::Response) -> String {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    let deadline = Instant::now() + Duration::from_secs(2);
    while out.len() < 8192 {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(chunk))) => out.extend_from_slice(&chunk),
            _ => break,
        }
    }
    out.truncate(8192);
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Clone, Debug)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    /// Packed RGB, `width * height * 3` bytes.
    pub rgb: Vec<u8>,
}

pub fn decode_jpeg(bytes: &[u8]) -> anyhow::Result<Image> {
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;

    let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    let rgb = decoder
        .decode()
        .map_err(|e| anyhow!("JPEG decode failed ({} bytes): {e:?}", bytes.len()))?;
    let info = decoder.info().context("JPEG decoder returned no info")?;
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    if rgb.len() != width as usize * height as usize * 3 {
        bail!(
            "decoded {} bytes for {width}x{height}, expected RGB ({} bytes)",
            rgb.len(),
            width as usize * height as usize * 3
        );
    }
    Ok(Image { width, height, rgb })
}

/// Mean BT.601 luma in 0..=255; 0 for an empty image.
pub fn mean_luma(img: &Image) -> f64 {
    let pixels = img.rgb.len() / 3;
    if pixels == 0 {
        return 0.0;
    }
    let sum: f64 = img
        .rgb
        .chunks_exact(3)
        .map(|p| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]))
        .sum();
    sum / pixels as f64
}

/// How the body of a raw response is delimited.
#[derive(Debug)]
enum Framing {
    Chunked(ChunkState),
    Length { remaining: u64 },
    UntilClose,
}

#[derive(Debug)]
enum ChunkState {
    Size,
    Data { remaining: u64 },
    DataCrlf,
    Trailers,
    Done,
}

/// A response read by hand off a TcpStream. The head is parsed; the body is
/// read on demand, kept both as exact wire bytes ([`raw_body`]) and
/// de-chunked ([`body`]). Both buffers grow for as long as you read, so use
/// it for bounded inspections, not for long streams.
///
/// [`raw_body`]: RawResponse::raw_body
/// [`body`]: RawResponse::body
pub struct RawResponse {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    /// Exact bytes of status line and headers, through the final CRLFCRLF.
    pub head: Bytes,
    stream: TcpStream,
    raw: BytesMut,
    /// How much of `raw` the body decoder has consumed.
    decoded_upto: usize,
    framing: Framing,
    body: BytesMut,
    eof: bool,
    error: Option<String>,
}

/// Plain HTTP/1.1 GET over a fresh TcpStream, returning once the response
/// head is in.
pub async fn get_raw(addr: SocketAddr, path_and_query: &str) -> anyhow::Result<RawResponse> {
    get_raw_with_headers(addr, path_and_query, &[]).await
}

/// [`get_raw`] with extra request headers.
pub async fn get_raw_with_headers(
    addr: SocketAddr,
    path_and_query: &str,
    extra_headers: &[(&str, &str)],
) -> anyhow::Result<RawResponse> {
    let mut request = format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: camstream-tests\r\n\
         Accept: */*\r\nConnection: close\r\n"
    );
    for (name, value) in extra_headers {
        let _ = write!(request, "{name}: {value}\r\n");
    }
    request.push_str("\r\n");

    let head_timeout = Duration::from_secs(10);
    let mut stream = tokio::time::timeout(head_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow!("connect to {addr} timed out"))?
        .with_context(|| format!("connect to {addr}"))?;
    stream.write_all(request.as_bytes()).await?;

    let deadline = Instant::now() + head_timeout;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut scanned = 0;
    let head_len = loop {
        if let Some(end) = find_head_end(&buf, &mut scanned)? {
            break end;
        }
        if buf.len() > MAX_HEADER_BLOCK {
            bail!("response head over {MAX_HEADER_BLOCK} bytes");
        }
        let n = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf))
            .await
            .map_err(|_| {
                anyhow!(
                    "GET {path_and_query}: no complete response head within {head_timeout:?} (got {})",
                    escape(&buf)
                )
            })??;
        if n == 0 {
            bail!(
                "GET {path_and_query}: connection closed inside the response head (got {})",
                escape(&buf)
            );
        }
    };
    let head = buf.split_to(head_len).freeze();
    let (status, reason, headers) = parse_response_head(&head)?;
    let framing = if let Some(te) = find_header(&headers, "Transfer-Encoding") {
        if !te.trim().eq_ignore_ascii_case("chunked") {
            bail!("unsupported Transfer-Encoding {te:?}");
        }
        Framing::Chunked(ChunkState::Size)
    } else if let Some(cl) = find_header(&headers, "Content-Length") {
        Framing::Length {
            remaining: cl
                .trim()
                .parse()
                .with_context(|| format!("bad Content-Length {cl:?}"))?,
        }
    } else {
        Framing::UntilClose
    };
    let mut response = RawResponse {
        status,
        reason,
        headers,
        head,
        stream,
        raw: buf,
        decoded_upto: 0,
        framing,
        body: BytesMut::new(),
        eof: false,
        error: None,
    };
    response.decode();
    Ok(response)
}

/// Find the end of an HTTP head, rejecting bare LF. `scanned` avoids
/// rescanning bytes already checked on a previous call.
fn find_head_end(buf: &[u8], scanned: &mut usize) -> anyhow::Result<Option<usize>> {
    while let Some(pos) = buf[*scanned..].iter().position(|&b| b == b'\n') {
        let lf = *scanned + pos;
        *scanned = lf + 1;
        if lf == 0 || buf[lf - 1] != b'\r' {
            bail!("bare LF in response head: {}", escape(&buf[..=lf]));
        }
        if lf >= 3 && &buf[lf - 3..=lf] == b"\r\n\r\n" {
            return Ok(Some(lf + 1));
        }
    }
    Ok(None)
}

type Head = (u16, String, Vec<(String, String)>);

fn parse_response_head(head: &[u8]) -> anyhow::Result<Head> {
    let text = &head[..head.len() - 4];
    // find_head_end() already rejected bare LF, so every line but the last
    // (whose CRLF was cut with the blank line) ends in CR.
    let mut lines = text
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line =
        std::str::from_utf8(lines.next().unwrap_or_default()).context("non-UTF-8 status line")?;
    let mut fields = status_line.splitn(3, ' ');
    let version = fields.next().unwrap_or_default();
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        bail!("bad status line {status_line:?}");
    }
    let status: u16 = fields
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let reason = fields.next().unwrap_or_default().to_owned();
    let headers = lines
        .map(|l| parse_header_line(l).map_err(|e| anyhow!("response head: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((status, reason, headers))
}

impl RawResponse {
    /// First header with this name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    pub fn is_chunked(&self) -> bool {
        matches!(self.framing, Framing::Chunked(_))
    }

    /// Every byte received after the head, exactly as sent (chunk-size lines
    /// included), so tests can assert CRLF framing byte for byte.
    pub fn raw_body(&self) -> &[u8] {
        &self.raw
    }

    /// De-chunked body bytes received so far (minus any already taken).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Remove and return the de-chunked body bytes received so far.
    pub fn take_body(&mut self) -> Bytes {
        self.body.split().freeze()
    }

    /// True once the body is complete: last chunk, Content-Length reached,
    /// or (for close-delimited bodies) the peer closed.
    pub fn is_complete(&self) -> bool {
        match &self.framing {
            Framing::Chunked(ChunkState::Done) => true,
            Framing::Length { remaining } => *remaining == 0,
            _ => self.eof && matches!(self.framing, Framing::UntilClose),
        }
    }

    /// True once the peer closed the connection.
    pub fn is_eof(&self) -> bool {
        self.eof
    }

    /// One read from the socket. Returns the number of wire bytes read
    /// (0 = the peer closed). Errors on timeout or malformed chunking.
    pub async fn read_more(&mut self, timeout: Duration) -> anyhow::Result<usize> {
        self.check()?;
        if self.eof {
            return Ok(0);
        }
        let n = tokio::time::timeout(timeout, self.stream.read_buf(&mut self.raw))
            .await
            .map_err(|_| anyhow!("no data within {timeout:?}"))??;
        if n == 0 {
            self.eof = true;
        }
        self.decode();
        self.check()?;
        Ok(n)
    }

    /// Keep reading for `duration` or until the body is complete or the peer
    /// closes; returns the de-chunked body so far.
    pub async fn read_for(&mut self, duration: Duration) -> anyhow::Result<&[u8]> {
        let deadline = Instant::now() + duration;
        while !self.eof && !self.is_complete() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.read_more(left).await {
                Ok(_) => {}
                Err(_) if Instant::now() >= deadline => break,
                Err(e) => return Err(e),
            }
        }
        self.check()?;
        Ok(&self.body)
    }

    /// Read until `pred(body())` holds; errors on timeout or if the body
    /// ends first.
    pub async fn read_body_until(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&[u8]) -> bool,
    ) -> anyhow::Result<&[u8]> {
        let deadline = Instant::now() + timeout;
        while !pred(&self.body) {
            if self.eof || self.is_complete() {
                bail!(
                    "body ended after {} bytes before the condition held",
                    self.body.len()
                );
            }
            let left = deadline.saturating_duration_since(Instant::now());
            self.read_more(left).await.with_context(|| {
                format!(
                    "waiting for body condition ({} bytes so far)",
                    self.body.len()
                )
            })?;
        }
        Ok(&self.body)
    }

    /// Read until at least `n` de-chunked body bytes are buffered.
    pub async fn read_body_at_least(
        &mut self,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<&[u8]> {
        self.read_body_until(timeout, |b| b.len() >= n).await
    }

    /// Give up the parsed view: every wire byte after the head received so
    /// far, and the socket positioned right after them.
    pub fn into_parts(self) -> (Bytes, TcpStream) {
        (self.raw.freeze(), self.stream)
    }

    fn check(&self) -> anyhow::Result<()> {
        match &self.error {
            Some(e) => Err(anyhow!("{e}")),
            None => Ok(()),
        }
    }

    /// Advance the body decoder over newly received wire bytes.
    fn decode(&mut self) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.decode_inner() {
            self.error = Some(e);
        }
    }

    fn decode_inner(&mut self) -> Result<(), String> {
        loop {
            let input = &self.raw[self.decoded_upto..];
            match &mut self.framing {
                Framing::UntilClose => {
                    self.body.extend_from_slice(input);
                    self.decoded_upto = self.raw.len();
                    return Ok(());
                }
                Framing::Length { remaining } => {
                    let take = input
                        .len()
                        .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                    self.body.extend_from_slice(&input[..take]);
                    self.decoded_upto += take;
                    *remaining -= take as u64;
                    return Ok(());
                }
                Framing::Chunked(state) => match state {
                    ChunkState::Done => return Ok(()),
                    ChunkState::Size => {
                        let Some(line) = crlf_line(input)? else {
                            return Ok(());
                        };
                        let text = std::str::from_utf8(&input[..line]).map_err(|_| {
                            format!("bad chunk size line {}", escape(&input[..line]))
                        })?;
                        // Chunk extensions (";name=value") are legal; ignore them.
                        let hex = text.split(';').next().unwrap_or("");
                        let size = u64::from_str_radix(hex, 16).map_err(|_| {
                            format!("bad chunk size line {}", escape(&input[..line]))
                        })?;
                        self.decoded_upto += line + 2;
                        *state = if size == 0 {
                            ChunkState::Trailers
                        } else {
                            ChunkState::Data { remaining: size }
                        };
                    }
                    ChunkState::Data { remaining } => {
                        if input.is_empty() {
                            return Ok(());
                        }
                        let take = input
                            .len()
                            .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                        self.body.extend_from_slice(&input[..take]);
                        self.decoded_upto += take;
                        *remaining -= take as u64;
                        if *remaining == 0 {
                            *state = ChunkState::DataCrlf;
                        }
                    }
                    ChunkState::DataCrlf => {
                        if input.len() < 2 {
                            if input.first().is_some_and(|&b| b != b'\r') {
                                return Err(format!(
                                    "chunk data not followed by CRLF: {}",
                                    escape(input)
                                ));
                            }
                            return Ok(());
                        }
                        if &input[..2] != b"\r\n" {
                            return Err(format!(
                                "chunk data not followed by CRLF: {}",
                                escape(&input[..input.len().min(8)])
                            ));
                        }
                        self.decoded_upto += 2;
                        *state = ChunkState::Size;
                    }
                    ChunkState::Trailers => {
                        let Some(line) = crlf_line(input)? else {
                            return Ok(());
                        };
                        self.decoded_upto += line + 2;
                        if line == 0 {
                            *state = ChunkState::Done;
                        }
                    }
                },
            }
        }
    }
}

/// Length of the first CRLF-terminated line in `input` (without the CRLF),
/// None if incomplete, Err on a bare LF.
fn crlf_line(input: &[u8]) -> Result<Option<usize>, String> {
    match input.iter().position(|&b| b == b'\n') {
        None if input.len() > MAX_HEADER_LINE => Err("chunk line too long".to_owned()),
        None => Ok(None),
        Some(lf) if lf == 0 || input[lf - 1] != b'\r' => Err(format!(
            "bare LF in chunked framing: {}",
            escape(&input[..=lf])
        )),
        Some(lf) => Ok(Some(lf - 1)),
    }
}
