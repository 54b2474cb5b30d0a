//! HTTP/2 connections, served by camstream's own loop on the `h2` crate
//! (hyper's HTTP/2 layer underneath) instead of hyper's server, for one
//! reason: a stream whose client stops reading must be reset after the
//! write timeout, without touching the other streams of its connection.
//!
//! hyper (1.12, `proto/h2/mod.rs`, `PipeToSendStream`) waits for a
//! stream's flow-control window without a deadline and does not poll the
//! response body meanwhile, and nothing outside it can reset one stream.
//! The socket keeps moving for the other streams, so the front door's
//! write timeout never fires: a stalled MJPEG viewer would keep its viewer
//! slot for as long as the connection lives. Here each stream's body is
//! sent by its own task, which resets the stream (`RST_STREAM CANCEL`)
//! when no window opens for `write_timeout`, and so frees the viewer.
//!
//! A stalled stream still holds the bytes it was sent against the
//! connection's window until it is reset. That is at most the client's
//! per-stream window (browsers give a connection a larger window than a
//! stream: Chromium 15 MB against 6 MB), so the other streams keep flowing.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http_body::Frame;
use http_body_util::BodyExt as _;
use hyper::service::Service as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::debug;
use warp::http::{HeaderValue, Request, Response, header};

use super::server::{Connections, MAX_HEADER_BYTES, Service};

/// Streams one client may have open on a connection at once: a page of
/// camera images is 4-64 streams; every stream of a stream is also a
/// viewer, capped by `max_viewers`. hyper's default is 200.
const MAX_CONCURRENT_STREAMS: u32 = 256;
/// Receive windows, for request bodies (at most 64 KiB each, api.rs).
const STREAM_WINDOW: u32 = 256 * 1024;
const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Bytes of one stream queued in h2 ahead of the socket: a few JPEG
/// frames. A stream gets window capacity only while its queue has room, so
/// a connection whose socket stalls stalls every stream's send, and each
/// is reset by the same timeout. hyper's default.
const SEND_BUFFER: usize = 400 * 1024;

/// Serves one HTTP/2 connection until the client closes it, or until it has
/// finished after `shutdown` (GOAWAY: open streams complete, MJPEG bodies
/// end by themselves at shutdown). No keep-alive PING: a dead peer is
/// found by the front door's deadlines on the socket underneath (a
/// connection with streams stops draining and meets the write timeout; one
/// without goes quiet and meets the idle timeout).
pub(super) async fn serve<IO>(
    io: IO,
    service: Service,
    write_timeout: Duration,
    shutdown: &CancellationToken,
    connections: &Arc<Connections>,
) -> Result<(), h2::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut connection = h2::server::Builder::new()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_send_buffer_size(SEND_BUFFER)
        .handshake::<_, Bytes>(io)
        .await?;
    // Dropped with the connection: every stream's task (and the viewer it
    // holds) ends with it.
    let mut streams = JoinSet::new();
    let mut closing = false;
    loop {
        tokio::select! {
            accepted = connection.accept() => match accepted {
                Some(Ok((request, respond))) => {
                    streams.spawn(serve_stream(
                        request,
                        respond,
                        service.clone(),
                        write_timeout,
                        Arc::clone(connections),
                    ));
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
            _ = shutdown.cancelled(), if !closing => {
                closing = true;
                connection.graceful_shutdown();
            }
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
}

/// Why a response body stopped being sent.
enum Stop {
    /// No window opened for the write timeout; the stream was reset.
    Stalled,
    /// The client reset the stream, or the connection is gone.
    Gone,
}

/// One request: call the routes, send the head, then the body chunk by
/// chunk as the stream's window allows.
async fn serve_stream(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    service: Service,
    write_timeout: Duration,
    connections: Arc<Connections>,
) {
    let (mut parts, body) = request.into_parts();
    // HTTP/2 carries the host in :authority, not in a Host header; the
    // access checks compare Origin with Host as over HTTP/1.1.
    if !parts.headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(header::HOST, host);
    }
    let request = Request::from_parts(parts, RequestBody { recv: body });
    let response = tokio::select! {
        response = service.call(request) => match response {
            Ok(response) => response,
            Err(never) => match never {},
        },
        // The client gave up while the route waited (a camera's first
        // frame can take seconds).
        _ = poll_fn(|cx| respond.poll_reset(cx)) => return,
    };
    let (mut parts, mut body) = response.into_parts();
    // Connection-specific headers are not allowed in HTTP/2 (RFC 9113
    // 8.2.2).
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        parts.headers.remove(name);
    }
    parts.headers.remove("keep-alive");
    let end = http_body::Body::is_end_stream(&body);
    let Ok(mut send) = respond.send_response(Response::from_parts(parts, ()), end) else {
        return;
    };
    if end {
        return;
    }
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            // Between frames of a stream: notice a client that left.
            _ = poll_fn(|cx| send.poll_reset(cx)) => return,
        };
        match frame {
            None => {
                let _ = send.send_data(Bytes::new(), true);
                return;
            }
            Some(Err(e)) => {
                debug!("response body failed: {e}");
                send.send_reset(Reason::INTERNAL_ERROR);
                return;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => match send_data(&mut send, data, write_timeout).await {
                    Ok(()) => {}
                    Err(Stop::Stalled) => {
                        connections
                            .h2_streams_stalled
                            .fetch_add(1, Ordering::Relaxed);
                        debug!(
                            stream = ?send.stream_id(),
                            "HTTP/2 stream reset: its client read nothing for the write timeout"
                        );
                        return;
                    }
                    Err(Stop::Gone) => return,
                },
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        let _ = send.send_trailers(trailers);
                    }
                    return;
                }
            },
        }
    }
}

/// Sends `data` as the stream's window opens. A window that stays shut for
/// `write_timeout` resets the stream.
async fn send_data(
    send: &mut SendStream<Bytes>,
    mut data: Bytes,
    write_timeout: Duration,
) -> Result<(), Stop> {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let mut capacity = send.capacity();
        if capacity == 0 {
            capacity =
                match tokio::time::timeout(write_timeout, poll_fn(|cx| send.poll_capacity(cx)))
                    .await
                {
                    Ok(Some(Ok(n))) => n,
                    Ok(_) => return Err(Stop::Gone),
                    Err(_) => {
                        send.send_reset(Reason::CANCEL);
                        return Err(Stop::Stalled);
                    }
                };
        }
        // Slices of the shared JPEG: no copy.
        let chunk = data.split_to(capacity.min(data.len()));
        send.send_data(chunk, false).map_err(|_| Stop::Gone)?;
    }
    Ok(())
}

/// A request's HTTP/2 stream as a body for the routes. Every byte read is
/// given back to the client's window at once: bodies are small and capped
/// by the routes.
#[derive(Debug)]
struct RequestBody {
    recv: RecvStream,
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.recv.is_end_stream() {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {}
            }
        }
        match ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}
