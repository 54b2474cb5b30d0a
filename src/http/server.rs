//! The accept loop: hyper (HTTP/1.1 and HTTP/2) serving the warp routes,
//! behind a front door that holds on a hostile network, and with graceful
//! shutdown.
//!
//! camstream runs its own loop instead of `warp::serve` because every
//! connection needs limits that warp does not set, all enforced before a
//! request reaches the access check:
//!
//! - **Connection caps**, in total and per client address, checked right
//!   after accept: over a cap the socket is closed at once.
//! - **A header deadline**: a new connection must deliver its first request
//!   head within `header_timeout_s`. hyper's own `header_read_timeout`
//!   starts only once hyper-util has read the first bytes (to tell HTTP/1
//!   from HTTP/2), so a client that sends nothing would never meet it; the
//!   deadline here runs from accept. On HTTP/1.1, hyper (1.12, read in its
//!   source: `poll_read_head` arms the timer whenever the connection goes
//!   idle) applies the same timeout to every later request head, which also
//!   closes keep-alive connections idle for that long.
//! - **An idle deadline**: a connection on which no byte moves either way
//!   for `idle_connection_timeout_s` is closed (HTTP/2, upgraded
//!   WebSockets, anything hyper's HTTP/1 timer does not cover).
//! - **A header size cap** ([`MAX_HEADER_BYTES`]).
//! - **A write timeout**: a viewer whose socket stops draining is dropped.
//!
//! The limits wrap any byte stream ([`Guarded`] is generic over
//! `AsyncRead + AsyncWrite`), so a TLS layer can sit on top of it without
//! changing them. Shutdown ends every MJPEG response cleanly and then waits
//! for connections to finish, boundedly.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::{Instant, Sleep, sleep};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use warp::filters::BoxedFilter;

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
/// (at most [`SHUTDOWN_GRACE`]) for open connections to finish.
pub async fn serve(
    listener: TcpListener,
    routes: BoxedFilter<(warp::reply::Response,)>,
    shutdown: CancellationToken,
    options: ServerOptions,
    connections: Arc<Connections>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
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
        let slot = match connections.admit(peer.ip(), &options) {
            Ok(slot) => slot,
            Err(refusal) => {
                drop(stream);
                connections.log_refusal(peer, refusal, &options);
                continue;
            }
        };
        // Frames are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        serve_connection(
            &builder,
            &graceful,
            &routes,
            stream,
            peer,
            slot,
            &options,
            &connections,
        );
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        debug!("some connections were still open after the shutdown grace period");
    }
}

/// Serves one admitted connection, whatever carries its bytes. A layer
/// that must talk before HTTP starts (a TLS handshake) has to be bounded
/// by `options.header_timeout` itself, as the deadlines here start with
/// this call.
#[allow(clippy::too_many_arguments)]
fn serve_connection<IO>(
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    routes: &BoxedFilter<(warp::reply::Response,)>,
    io: IO,
    peer: SocketAddr,
    slot: Slot,
    options: &ServerOptions,
    connections: &Arc<Connections>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let head_seen = Arc::new(AtomicBool::new(false));
    let io = TokioIo::new(Guarded::new(
        io,
        options,
        Arc::clone(&head_seen),
        Arc::clone(connections),
    ));
    let service = Service {
        inner: TowerToHyperService::new(warp::service(routes.clone())),
        client: ClientAddr(peer),
        head_seen,
    };
    let connection = builder
        .serve_connection_with_upgrades(io, service)
        .into_owned();
    let connection = graceful.watch(connection);
    let connections = Arc::clone(connections);
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            if e.downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_timeout)
            {
                connections.timed_out.fetch_add(1, Ordering::Relaxed);
            }
            debug!(%peer, "connection ended: {e}");
        }
        drop(slot);
    });
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
/// address and marks the connection's first request head as arrived.
#[derive(Clone)]
struct Service<S> {
    inner: S,
    client: ClientAddr,
    head_seen: Arc<AtomicBool>,
}

impl<S> hyper::service::Service<hyper::Request<Incoming>> for Service<S>
where
    S: hyper::service::Service<hyper::Request<Incoming>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Self::Future {
        self.head_seen.store(true, Ordering::Relaxed);
        request.extensions_mut().insert(self.client);
        self.inner.call(request)
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
