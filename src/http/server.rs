//! The accept loop: HTTP/1.1 (hyper) and HTTP/2 (camstream's own loop on
//! the `h2` crate, see http2.rs), over plain TCP or TLS, serving the warp
//! routes behind a front door that holds on a hostile network, and with
//! graceful shutdown.
//!
//! camstream runs its own loop instead of `warp::serve` because every
//! connection needs limits that warp does not set, all enforced before a
//! request reaches the access check:
//!
//! - **Connection caps**, in total and per client address, checked right
//!   after accept: over a cap the socket is closed at once.
//! - **A header deadline**: a new connection must deliver its first request
//!   head within `header_timeout_s` of the accept, whatever comes first: a
//!   TLS handshake, the bytes that tell HTTP/1 from HTTP/2, or a slow
//!   request line. On HTTP/1.1, hyper (1.12, read in its source:
//!   `poll_read_head` arms the timer whenever the connection goes idle)
//!   applies the same timeout to every later request head, which also
//!   closes keep-alive connections idle for that long.
//! - **An idle deadline**: a connection on which no byte moves either way
//!   for `idle_connection_timeout_s` is closed (HTTP/2, upgraded
//!   WebSockets, anything hyper's HTTP/1 timer does not cover).
//! - **A header size cap** ([`MAX_HEADER_BYTES`]).
//! - **A write timeout**: a viewer whose socket stops draining is dropped;
//!   on HTTP/2, a stream whose window stays shut is reset on its own.
//!
//! The limits wrap the TCP stream ([`Guarded`] is generic over
//! `AsyncRead + AsyncWrite`) and TLS sits on top of it, so they hold for
//! HTTPS unchanged. With TLS, ALPN picks HTTP/2 or HTTP/1.1; without, an
//! HTTP/2 client must say so with the connection preface (h2c prior
//! knowledge). Shutdown ends every MJPEG response cleanly and then waits
//! for connections to finish, boundedly.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep, sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};
use warp::filters::BoxedFilter;

use crate::tls::Tls;

/// How long open connections get to finish after shutdown starts. MJPEG
/// responses end themselves at once; this bounds a stuck client.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// After accept fails for lack of file descriptors, wait before retrying
/// rather than spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Request line and headers together, HTTP/1.1 (hyper's read buffer) and
/// HTTP/2 (the header list). Browsers send 1-4 KiB; 32 KiB leaves room for
/// large cookies from other apps on the same host, and bounds what a slow
/// client can make a connection hold.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Refused connections are logged (at debug) at most this often, with the
/// count since: a flood must not become a flood of log lines.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Options for [`serve`]; see docs/config.md for the defaults.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// A connection whose writes make no progress for this long is closed:
    /// a viewer that stopped reading holds no memory past the newest frame
    /// and no connection slot past this timeout.
    pub write_timeout: Duration,
    /// From accept to the first request head (and, on HTTP/1.1, from the
    /// end of a response to the next head).
    pub header_timeout: Duration,
    /// No byte in either direction for this long closes the connection.
    pub idle_timeout: Duration,
    /// Open connections in total.
    pub max_connections: usize,
    /// Open connections from one client address.
    pub max_connections_per_client: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        let server = crate::config::ServerConfig::default();
        ServerOptions::from(&server)
    }
}

impl From<&crate::config::ServerConfig> for ServerOptions {
    fn from(server: &crate::config::ServerConfig) -> Self {
        ServerOptions {
            write_timeout: server.write_timeout(),
            header_timeout: Duration::from_secs_f64(server.header_timeout_s),
            idle_timeout: Duration::from_secs_f64(server.idle_connection_timeout_s),
            max_connections: server.max_connections,
            max_connections_per_client: server.max_connections_per_client,
        }
    }
}

/// The client's address, put on every request for the access check (which
/// counts failed logins per address).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

/// Open connections, and what the front door refused or closed; read by
/// /metrics.
#[derive(Debug, Default)]
pub struct Connections {
    per_client: Mutex<HashMap<IpAddr, usize>>,
    open: AtomicUsize,
    refused_total: AtomicU64,
    refused_per_client: AtomicU64,
    timed_out: AtomicU64,
    tls_h2: AtomicU64,
    tls_http11: AtomicU64,
    tls_failed: AtomicU64,
    pub(super) h2_streams_stalled: AtomicU64,
    /// When a refusal was last logged, and how many since.
    refusal_log: Mutex<(Option<Instant>, u64)>,
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    Total,
    PerClient,
}

impl Connections {
    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections closed at accept: over `max_connections`, over
    /// `max_connections_per_client`.
    pub fn refused(&self) -> (u64, u64) {
        (
            self.refused_total.load(Ordering::Relaxed),
            self.refused_per_client.load(Ordering::Relaxed),
        )
    }

    /// Connections closed because no request head came in time, or nothing
    /// moved for the idle timeout.
    pub fn timed_out(&self) -> u64 {
        self.timed_out.load(Ordering::Relaxed)
    }

    /// TLS handshakes completed, by the protocol ALPN chose: (HTTP/2,
    /// HTTP/1.1); and handshakes that failed or timed out.
    pub fn tls_handshakes(&self) -> (u64, u64, u64) {
        (
            self.tls_h2.load(Ordering::Relaxed),
            self.tls_http11.load(Ordering::Relaxed),
            self.tls_failed.load(Ordering::Relaxed),
        )
    }

    /// HTTP/2 streams reset because their client stopped reading them for
    /// the write timeout.
    pub fn h2_streams_stalled(&self) -> u64 {
        self.h2_streams_stalled.load(Ordering::Relaxed)
    }

    fn count_handshake(&self, h2: bool) {
        let counter = if h2 { &self.tls_h2 } else { &self.tls_http11 };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn admit(self: &Arc<Self>, ip: IpAddr, options: &ServerOptions) -> Result<Slot, Refusal> {
        let mut per_client = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
        if self.open.load(Ordering::Relaxed) >= options.max_connections {
            self.refused_total.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Total);
        }
        let count = per_client.entry(ip).or_insert(0);
        if *count >= options.max_connections_per_client {
            self.refused_per_client.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::PerClient);
        }
        *count += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            connections: Arc::clone(self),
            ip,
        })
    }

    fn log_refusal(&self, peer: SocketAddr, refusal: Refusal, options: &ServerOptions) {
        let mut log = self.refusal_log.lock().unwrap_or_else(|e| e.into_inner());
        log.1 += 1;
        let now = Instant::now();
        if log
            .0
            .is_some_and(|at| now.duration_since(at) < REFUSAL_LOG_INTERVAL)
        {
            return;
        }
        let why = match refusal {
            Refusal::Total => format!("[server] max_connections = {}", options.max_connections),
            Refusal::PerClient => format!(
                "[server] max_connections_per_client = {}",
                options.max_connections_per_client
            ),
        };
        debug!(
            client = %peer.ip(),
            refused_since_last_line = log.1,
            "connection refused: over {why}"
        );
        *log = (Some(now), 0);
    }
}

/// A connection's place in the counts, given back when it closes.
#[derive(Debug)]
struct Slot {
    connections: Arc<Connections>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per_client = self
            .connections
            .per_client
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = per_client.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                per_client.remove(&self.ip);
            }
        }
        self.connections.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `routes` on `listener` until `shutdown` is cancelled, then waits
/// (at most [`SHUTDOWN_GRACE`]) for open connections to finish. With
/// `tls`, every connection is HTTPS: HTTP/2 or HTTP/1.1 as ALPN decides.
pub async fn serve(
    listener: TcpListener,
    routes: BoxedFilter<(warp::reply::Response,)>,
    shutdown: CancellationToken,
    options: ServerOptions,
    connections: Arc<Connections>,
    tls: Option<Arc<Tls>>,
) {
    let tasks = TaskTracker::new();
    let shared = Arc::new(Shared {
        routes,
        options,
        connections,
        tls,
        shutdown,
    });
    loop {
        let (stream, peer) = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    if !is_connection_error(&e) {
                        warn!("accept failed: {e}");
                        sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                    continue;
                }
            },
        };
        let slot = match shared.connections.admit(peer.ip(), &shared.options) {
            Ok(slot) => slot,
            Err(refusal) => {
                drop(stream);
                shared
                    .connections
                    .log_refusal(peer, refusal, &shared.options);
                continue;
            }
        };
        // Frames are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        tasks.spawn(serve_connection(Arc::clone(&shared), stream, peer, slot));
    }
    drop(listener);
    tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait())
        .await
        .is_err()
    {
        debug!("some connections were still open after the shutdown grace period");
    }
}

/// What every connection of one listener shares.
struct Shared {
    routes: BoxedFilter<(warp::reply::Response,)>,
    options: ServerOptions,
    connections: Arc<Connections>,
    tls: Option<Arc<Tls>>,
    shutdown: CancellationToken,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves one admitted connection to its end. The front door's deadlines
/// ([`Guarded`]) wrap the TCP stream itself, under TLS: they run from
/// accept, so a TLS handshake is bounded by the header timeout like a
/// request head, and the write and idle timeouts see the encrypted bytes.
async fn serve_connection(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr, slot: Slot) {
    let head_seen = Arc::new(AtomicBool::new(false));
    let io = Guarded::new(
        stream,
        &shared.options,
        Arc::clone(&head_seen),
        Arc::clone(&shared.connections),
    );
    let service = Service {
        routes: shared.routes.clone(),
        client: ClientAddr(peer),
        head_seen,
        tls: shared.tls.clone(),
    };
    let result = match &shared.tls {
        Some(tls) => match tls.acceptor().accept(io).await {
            Ok(io) => {
                let h2 = io.get_ref().1.alpn_protocol() == Some(crate::tls::ALPN_H2);
                shared.connections.count_handshake(h2);
                if h2 {
                    serve_h2(&shared, io, service).await
                } else {
                    serve_http1(&shared, io, service).await
                }
            }
            Err(e) => {
                shared
                    .connections
                    .tls_failed
                    .fetch_add(1, Ordering::Relaxed);
                Err(format!("TLS handshake failed: {e}").into())
            }
        },
        // Plain HTTP: HTTP/1.1, or HTTP/2 with prior knowledge (h2c).
        None => match sniff_h2_preface(io).await {
            Ok((io, true)) => serve_h2(&shared, io, service).await,
            Ok((io, false)) => serve_http1(&shared, io, service).await,
            Err(e) => Err(e.into()),
        },
    };
    if let Err(e) = result {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
        {
            shared.connections.timed_out.fetch_add(1, Ordering::Relaxed);
        }
        debug!(%peer, "connection ended: {e}");
    }
    drop(slot);
}

async fn serve_http1<IO>(shared: &Shared, io: IO, service: Service) -> Result<(), BoxError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.options.header_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return result.map_err(Into::into),
        _ = shared.shutdown.cancelled() => {}
    }
    // Finish the response in flight (MJPEG bodies end at shutdown), then
    // close.
    connection.as_mut().graceful_shutdown();
    connection.await.map_err(Into::into)
}

async fn serve_h2<IO>(shared: &Shared, io: IO, service: Service) -> Result<(), BoxError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    super::http2::serve(
        io,
        service,
        shared.options.write_timeout,
        &shared.shutdown,
        &shared.connections,
    )
    .await
    .map_err(Into::into)
}

/// What an HTTP/2 client sends first ("prior knowledge", RFC 9113 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the bytes either are the HTTP/2 preface or cannot be, and
/// hands back the stream with those bytes put back in front.
async fn sniff_h2_preface<IO>(mut io: IO) -> io::Result<(Rewind<IO>, bool)>
where
    IO: AsyncRead + Unpin,
{
    let mut buf = bytes::BytesMut::with_capacity(H2_PREFACE.len());
    while buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&buf) {
        if io.read_buf(&mut buf).await? == 0 {
            break;
        }
    }
    let h2 = buf.starts_with(H2_PREFACE);
    Ok((
        Rewind {
            prefix: buf.freeze(),
            inner: io,
        },
        h2,
    ))
}

/// A stream with some already-read bytes put back in front.
#[derive(Debug)]
struct Rewind<IO> {
    prefix: bytes::Bytes,
    inner: IO,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The routes as a hyper service that tags each request with the client's
/// address, marks the connection's first request head as arrived, and
/// puts the HTTPS headers on responses of a TLS connection. Any request
/// body type (hyper's, or an HTTP/2 stream's).
#[derive(Clone)]
pub(super) struct Service {
    routes: BoxedFilter<(warp::reply::Response,)>,
    client: ClientAddr,
    head_seen: Arc<AtomicBool>,
    tls: Option<Arc<Tls>>,
}

impl<B> hyper::service::Service<hyper::Request<B>> for Service
where
    B: http_body::Body + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    type Response = warp::reply::Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut request: hyper::Request<B>) -> Self::Future {
        self.head_seen.store(true, Ordering::Relaxed);
        request.extensions_mut().insert(self.client);
        // A warp service is a handle on the shared routes: cheap to make.
        let response = TowerToHyperService::new(warp::service(self.routes.clone())).call(request);
        let tls = self.tls.clone();
        Box::pin(async move {
            let mut response = response.await?;
            if let Some(tls) = tls {
                crate::tls::add_headers(response.headers_mut(), &tls.headers());
            }
            Ok(response)
        })
    }
}

/// A byte stream with the front door's deadlines: writes that make no
/// progress fail after the write timeout; reads fail once the first
/// request head is overdue, or once nothing has moved for the idle timeout.
/// hyper then closes the connection.
#[derive(Debug)]
pub struct Guarded<IO> {
    inner: IO,
    write_timeout: Duration,
    write_deadline: Pin<Box<Sleep>>,
    write_armed: bool,
    /// Until the first request head arrives: when it is overdue.
    head_deadline: Instant,
    head_seen: Arc<AtomicBool>,
    idle_timeout: Duration,
    last_progress: Instant,
    read_deadline: Pin<Box<Sleep>>,
    connections: Arc<Connections>,
}

impl<IO> Guarded<IO> {
    fn new(
        inner: IO,
        options: &ServerOptions,
        head_seen: Arc<AtomicBool>,
        connections: Arc<Connections>,
    ) -> Guarded<IO> {
        let now = Instant::now();
        let head_deadline = now + options.header_timeout;
        Guarded {
            inner,
            write_timeout: options.write_timeout,
            write_deadline: Box::pin(sleep(options.write_timeout)),
            write_armed: false,
            head_deadline,
            head_seen,
            idle_timeout: options.idle_timeout,
            last_progress: now,
            read_deadline: Box::pin(tokio::time::sleep_until(head_deadline)),
            connections,
        }
    }

    /// When reads give up: the idle deadline, or the head deadline while no
    /// request head has arrived.
    fn read_deadline(&self) -> (Instant, &'static str) {
        let idle = self.last_progress + self.idle_timeout;
        if !self.head_seen.load(Ordering::Relaxed) && self.head_deadline < idle {
            (
                self.head_deadline,
                "no request head within the header timeout ([server] header_timeout_s)",
            )
        } else {
            (
                idle,
                "nothing sent or received for the idle timeout ([server] idle_connection_timeout_s)",
            )
        }
    }

    /// Bytes written count as progress for the idle deadline (a flush with
    /// nothing to send does not).
    fn progress(&mut self, poll: &Poll<io::Result<usize>>) {
        if matches!(poll, Poll::Ready(Ok(n)) if *n > 0) {
            self.last_progress = Instant::now();
        }
    }

    /// Tracks a write's outcome: progress disarms the timer, a blocked write
    /// arms it (once) and fails when it fires.
    fn check_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(result) => {
                self.write_armed = false;
                Poll::Ready(result)
            }
            Poll::Pending => {
                if !self.write_armed {
                    self.write_armed = true;
                    self.write_deadline
                        .as_mut()
                        .reset(Instant::now() + self.write_timeout);
                }
                match self.write_deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "write timed out: the client stopped reading",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.last_progress = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending => loop {
                let (deadline, why) = self.read_deadline();
                if Instant::now() >= deadline {
                    self.connections.timed_out.fetch_add(1, Ordering::Relaxed);
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)));
                }
                if self.read_deadline.deadline() != deadline {
                    self.read_deadline.as_mut().reset(deadline);
                }
                // Fired: the deadline may have moved since it was set
                // (progress, or the head arrived); look again.
                if self.read_deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            },
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(&poll);
        self.check_write(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(&poll);
        self.check_write(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        // Frames go out as header + shared JPEG + boundary; writev sends
        // them without copying the JPEG into hyper's buffer.
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.check_write(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
