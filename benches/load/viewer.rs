//! The benchmark's viewers: lean HTTP/1.1 MJPEG clients, one tokio task
//! each. A viewer reads into one reusable buffer, de-chunks and splits the
//! multipart stream without copying (a part's bytes are only counted), and
//! copies out the JPEG of one frame in `sample_every` for the stamp reader
//! thread. Its receipt time is taken as the read returns, before any of the
//! viewer's own work, and that work is timed and reported separately.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::source::SentTable;
use crate::stamp;

/// Read buffer per viewer: one 480x270 JPEG (~20-30 KB) in one or two
/// reads, and 500 viewers cost the benchmark 16 MB.
const READ_BUF: usize = 32 * 1024;
/// Longest part header accepted; a real one is ~60 bytes.
const MAX_PART_HEAD: usize = 1024;
/// Sampled JPEGs waiting for the stamp reader; beyond this a sample is
/// dropped (and counted) rather than letting the queue delay the reader.
const SAMPLE_QUEUE: usize = 256;

/// Where a viewer connects.
#[derive(Clone, Debug)]
pub enum Target {
    /// An HTTP MJPEG stream (camstream).
    Http { addr: SocketAddr, path: String },
    /// A bare multipart stream on a TCP socket (gst `multipartmux !
    /// tcpserversink`, the latency floor).
    Tcp { addr: SocketAddr },
    /// An MJPEG stream over HTTPS and HTTP/2, one TLS connection per
    /// viewer (camstream's own TLS, or nginx in front of it).
    H2 {
        addr: SocketAddr,
        path: String,
        tls: Arc<rustls::ClientConfig>,
    },
    /// An MJPEG stream over HTTPS and HTTP/1.1, one TLS connection per
    /// viewer (`tls` offers ALPN http/1.1).
    Https1 {
        addr: SocketAddr,
        path: String,
        tls: Arc<rustls::ClientConfig>,
    },
}

/// One viewer's counters, read by the orchestrator.
#[derive(Debug, Default)]
pub struct ViewerStats {
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
    /// Time spent in the viewer's own parsing, nanoseconds.
    pub parse_ns: AtomicU64,
    pub first_frame: AtomicBool,
    pub error: Mutex<Option<String>>,
}

/// A latency measurement: when the frame was received and how old it was.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub received_ms: f64,
    pub latency_ms: f64,
}

/// What viewers share: the clock, and the stamp reader's results.
#[derive(Debug)]
pub struct Shared {
    pub epoch: Instant,
    pub samples: Mutex<Vec<Sample>>,
    /// Sampled frames whose stamp could not be read (check failed).
    pub misreads: AtomicU64,
    /// Samples dropped because the reader fell behind.
    pub dropped_samples: AtomicU64,
    /// Reader time, nanoseconds, and frames read.
    pub decode_ns: AtomicU64,
    pub decoded: AtomicU64,
    tx: SyncSender<(Vec<u8>, f64)>,
}

impl Shared {
    /// Starts the stamp reader thread. `sent` maps frame indexes to send
    /// times for the looped MJPEG source.
    pub fn start(epoch: Instant, sent: Option<Arc<SentTable>>) -> Arc<Shared> {
        let (tx, rx) = sync_channel(SAMPLE_QUEUE);
        let shared = Arc::new(Shared {
            epoch,
            samples: Mutex::default(),
            misreads: AtomicU64::new(0),
            dropped_samples: AtomicU64::new(0),
            decode_ns: AtomicU64::new(0),
            decoded: AtomicU64::new(0),
            tx,
        });
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("stamp-reader".into())
            .spawn(move || read_stamps(rx, weak, sent))
            .expect("spawn the stamp reader");
        shared
    }

    fn submit(&self, jpeg: Vec<u8>, received_ms: f64) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send((jpeg, received_ms)) {
            self.dropped_samples.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn now_ms(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64() * 1000.0
    }
}

fn read_stamps(
    rx: Receiver<(Vec<u8>, f64)>,
    shared: std::sync::Weak<Shared>,
    sent: Option<Arc<SentTable>>,
) {
    while let Ok((jpeg, received_ms)) = rx.recv() {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let start = Instant::now();
        let value = stamp::read_jpeg(&jpeg);
        shared
            .decode_ns
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        shared.decoded.fetch_add(1, Ordering::Relaxed);
        let sent_ms = match (value, &sent) {
            (Some(v), Some(table)) if v & stamp::INDEX_FLAG != 0 => {
                table.sent_ms(v & !stamp::INDEX_FLAG, received_ms)
            }
            (Some(v), _) if v & stamp::INDEX_FLAG == 0 => Some(f64::from(v)),
            _ => None,
        };
        match sent_ms {
            Some(sent_ms) => shared.samples.lock().unwrap().push(Sample {
                received_ms,
                latency_ms: received_ms - sent_ms,
            }),
            None => {
                shared.misreads.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// De-chunking (HTTP/1.1 chunked transfer coding) state.
#[derive(Debug)]
enum Chunk {
    Size { line: Vec<u8> },
    Data { remaining: usize },
    DataEnd { remaining: usize },
}

/// Multipart state.
#[derive(Debug)]
enum Part {
    Head,
    Body {
        remaining: usize,
        keep: Option<Vec<u8>>,
    },
}

/// A frame completed by [`Parser::feed`].
pub struct Completed {
    pub jpeg: Option<Vec<u8>>,
}

/// The stream parser: optional de-chunking, then multipart parts. Only
/// part headers are buffered; bodies are counted, or copied when sampled.
#[derive(Debug)]
pub struct Parser {
    chunk: Option<Chunk>,
    part: Part,
    head: Vec<u8>,
    parts: u64,
    sample_every: u64,
    phase: u64,
}

impl Parser {
    pub fn new(chunked: bool, sample_every: u64, phase: u64) -> Parser {
        Parser {
            chunk: chunked.then(|| Chunk::Size { line: Vec::new() }),
            part: Part::Head,
            head: Vec::with_capacity(128),
            parts: 0,
            sample_every: sample_every.max(1),
            phase,
        }
    }

    /// Feeds bytes from the socket; calls `done` for each completed frame.
    pub fn feed(
        &mut self,
        mut data: &[u8],
        done: &mut impl FnMut(Completed),
    ) -> anyhow::Result<()> {
        if self.chunk.is_none() {
            return self.body(data, done);
        }
        while !data.is_empty() {
            let chunk = self.chunk.as_mut().expect("chunked");
            match chunk {
                Chunk::Size { line } => {
                    let Some(nl) = data.iter().position(|&b| b == b'\n') else {
                        line.extend_from_slice(data);
                        if line.len() > 64 {
                            bail!("chunk size line too long");
                        }
                        return Ok(());
                    };
                    line.extend_from_slice(&data[..nl]);
                    data = &data[nl + 1..];
                    let text = std::str::from_utf8(line)?;
                    let hex = text.trim_end_matches('\r').split(';').next().unwrap_or("");
                    let size = usize::from_str_radix(hex.trim(), 16)
                        .with_context(|| format!("bad chunk size {text:?}"))?;
                    if size == 0 {
                        bail!("the server ended the stream");
                    }
                    *chunk = Chunk::Data { remaining: size };
                }
                Chunk::Data { remaining } => {
                    let n = (*remaining).min(data.len());
                    let rest = *remaining - n;
                    *chunk = if rest == 0 {
                        Chunk::DataEnd { remaining: 2 }
                    } else {
                        Chunk::Data { remaining: rest }
                    };
                    let (now, later) = data.split_at(n);
                    data = later;
                    self.body(now, done)?;
                }
                Chunk::DataEnd { remaining } => {
                    let n = (*remaining).min(data.len());
                    data = &data[n..];
                    *remaining -= n;
                    if *remaining == 0 {
                        *chunk = Chunk::Size { line: Vec::new() };
                    }
                }
            }
        }
        Ok(())
    }

    /// The multipart layer.
    fn body(&mut self, mut data: &[u8], done: &mut impl FnMut(Completed)) -> anyhow::Result<()> {
        while !data.is_empty() {
            match &mut self.part {
                Part::Head => {
                    // Headers are ~60 bytes per frame: scanning byte by byte
                    // for the blank line costs nothing measurable.
                    let mut consumed = 0;
                    let mut complete = false;
                    for &b in data {
                        consumed += 1;
                        self.head.push(b);
                        if self.head.ends_with(b"\r\n\r\n") {
                            complete = true;
                            break;
                        }
                    }
                    data = &data[consumed..];
                    if self.head.len() > MAX_PART_HEAD {
                        bail!("part header longer than {MAX_PART_HEAD} bytes");
                    }
                    if !complete {
                        return Ok(());
                    }
                    let len = content_length(&self.head)?;
                    self.head.clear();
                    let keep = (self.parts + self.phase)
                        .is_multiple_of(self.sample_every)
                        .then(|| Vec::with_capacity(len));
                    self.part = Part::Body {
                        remaining: len,
                        keep,
                    };
                }
                Part::Body { remaining, keep } => {
                    let n = (*remaining).min(data.len());
                    if let Some(keep) = keep {
                        keep.extend_from_slice(&data[..n]);
                    }
                    data = &data[n..];
                    *remaining -= n;
                    if *remaining == 0 {
                        let Part::Body { keep, .. } = std::mem::replace(&mut self.part, Part::Head)
                        else {
                            unreachable!()
                        };
                        self.parts += 1;
                        done(Completed { jpeg: keep });
                    }
                }
            }
        }
        Ok(())
    }
}

/// Checks that a part header block follows a `--frame` boundary and
/// returns its Content-Length.
fn content_length(head: &[u8]) -> anyhow::Result<usize> {
    let text = std::str::from_utf8(head)?;
    if !text.contains("--frame\r\n") {
        bail!("part does not follow a --frame boundary: {text:?}");
    }
    text.split("\r\n")
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())
                .flatten()
        })
        .ok_or_else(|| anyhow!("part without Content-Length: {text:?}"))
}

/// Runs one viewer until `stop`; errors are recorded in `stats`.
pub async fn run(
    target: Target,
    stats: Arc<ViewerStats>,
    shared: Arc<Shared>,
    sample_every: u64,
    phase: u64,
    stop: CancellationToken,
) {
    let result = tokio::select! {
        r = view(&target, &stats, &shared, sample_every, phase) => r,
        _ = stop.cancelled() => Ok(()),
    };
    if let Err(e) = result {
        *stats.error.lock().unwrap() = Some(format!("{e:#}"));
    }
}

/// A viewer's connection: plain TCP or TLS over it.
trait Socket: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Socket for T {}

async fn view(
    target: &Target,
    stats: &ViewerStats,
    shared: &Shared,
    sample_every: u64,
    phase: u64,
) -> anyhow::Result<()> {
    let addr = match target {
        Target::H2 { addr, path, tls } => {
            return view_h2(*addr, path, tls, stats, shared, sample_every, phase).await;
        }
        Target::Http { addr, .. } | Target::Tcp { addr } | Target::Https1 { addr, .. } => *addr,
    };
    let tcp = TcpStream::connect(addr).await.context("connect")?;
    tcp.set_nodelay(true)?;
    let mut socket: Box<dyn Socket> = match target {
        Target::Https1 { tls, .. } => {
            let name = rustls_pki_types::ServerName::try_from("127.0.0.1")?.to_owned();
            let connector = tokio_rustls::TlsConnector::from(Arc::clone(tls));
            Box::new(
                connector
                    .connect(name, tcp)
                    .await
                    .context("TLS handshake")?,
            )
        }
        _ => Box::new(tcp),
    };
    let mut buf = vec![0u8; READ_BUF];
    let mut filled = 0;
    let mut parser = match target {
        Target::Tcp { .. } | Target::H2 { .. } => Parser::new(false, sample_every, phase),
        Target::Http { path, .. } | Target::Https1 { path, .. } => {
            let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
            socket.write_all(request.as_bytes()).await?;
            // Read the response head.
            let (head_len, chunked) = loop {
                let n = socket.read(&mut buf[filled..]).await?;
                if n == 0 {
                    bail!("connection closed before the response head");
                }
                filled += n;
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let mut response = httparse::Response::new(&mut headers);
                if let httparse::Status::Complete(len) = response.parse(&buf[..filled])? {
                    if response.code != Some(200) {
                        bail!(
                            "HTTP {}: {}",
                            response.code.unwrap_or(0),
                            String::from_utf8_lossy(&buf[len..filled])
                        );
                    }
                    let chunked = response.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("transfer-encoding")
                            && String::from_utf8_lossy(h.value).contains("chunked")
                    });
                    break (len, chunked);
                }
                if filled == buf.len() {
                    bail!("response head too long");
                }
            };
            let mut parser = Parser::new(chunked, sample_every, phase);
            let received_ms = shared.now_ms();
            feed(
                &mut parser,
                &buf[head_len..filled],
                received_ms,
                stats,
                shared,
            )?;
            parser
        }
    };
    loop {
        let n = socket.read(&mut buf).await?;
        // The receipt time: taken before the viewer does anything with the
        // bytes, so its own parsing does not count as server latency.
        let received_ms = shared.now_ms();
        if n == 0 {
            bail!("the server closed the connection");
        }
        feed(&mut parser, &buf[..n], received_ms, stats, shared)?;
    }
}

/// Chromium's receive windows (6 MB a stream, 15 MB the connection): what
/// a browser viewer gives the server to send into.
const H2_STREAM_WINDOW: u32 = 6 * 1024 * 1024;
const H2_CONNECTION_WINDOW: u32 = 15 * 1024 * 1024;

/// One viewer over HTTPS and HTTP/2: TLS handshake (ALPN h2), one stream,
/// the body's data frames fed to the same parser.
async fn view_h2(
    addr: SocketAddr,
    path: &str,
    tls: &Arc<rustls::ClientConfig>,
    stats: &ViewerStats,
    shared: &Shared,
    sample_every: u64,
    phase: u64,
) -> anyhow::Result<()> {
    let socket = TcpStream::connect(addr).await.context("connect")?;
    socket.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let socket = tokio_rustls::TlsConnector::from(Arc::clone(tls))
        .connect(name, socket)
        .await
        .context("TLS handshake")?;
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .handshake::<_, bytes::Bytes>(socket)
        .await
        .context("HTTP/2 handshake")?;
    let connection = tokio::spawn(connection);
    let request = hyper::Request::get(format!("https://{addr}{path}")).body(())?;
    let (response, _) = client.ready().await?.send_request(request, true)?;
    let response = response.await?;
    if response.status() != 200 {
        bail!("HTTP {}", response.status());
    }
    let mut body = response.into_body();
    let mut parser = Parser::new(false, sample_every, phase);
    let result = loop {
        let Some(chunk) = body.data().await else {
            break Err(anyhow!("the server ended the stream"));
        };
        let received_ms = shared.now_ms();
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => break Err(e.into()),
        };
        let _ = body.flow_control().release_capacity(chunk.len());
        if let Err(e) = feed(&mut parser, &chunk, received_ms, stats, shared) {
            break Err(e);
        }
    };
    connection.abort();
    result
}

fn feed(
    parser: &mut Parser,
    data: &[u8],
    received_ms: f64,
    stats: &ViewerStats,
    shared: &Shared,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let result = parser.feed(data, &mut |frame: Completed| {
        stats.frames.fetch_add(1, Ordering::Relaxed);
        stats.first_frame.store(true, Ordering::Relaxed);
        if let Some(jpeg) = frame.jpeg {
            shared.submit(jpeg, received_ms);
        }
    });
    stats.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
    stats
        .parse_ns
        .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    result
}

/// Measures how late this runtime wakes a task: a timer asks for `PERIOD`
/// and records the overshoot. When viewers saturate the client, this lag
/// grows, and the measured latency would include it.
pub async fn loop_lag(
    shared: Arc<Mutex<Vec<(f64, f64)>>>,
    epoch: Instant,
    stop: CancellationToken,
) {
    const PERIOD: Duration = Duration::from_millis(5);
    while !stop.is_cancelled() {
        let start = Instant::now();
        tokio::time::sleep(PERIOD).await;
        let lag = start.elapsed().saturating_sub(PERIOD).as_secs_f64() * 1000.0;
        let at = epoch.elapsed().as_secs_f64() * 1000.0;
        shared.lock().unwrap().push((at, lag));
    }
}
