//! `GET /api/ws?cameras=a,b,c[&fps=N]`: many cameras' frames over one
//! WebSocket, for pages that show more cameras than a browser has
//! connections.
//!
//! Browsers open at most 6 HTTP/1.1 connections per host, and an MJPEG
//! `<img>` holds one for as long as it is shown, so a seventh stream never
//! loads. The grid page instead opens this one socket and paints each
//! frame into its tile. (docs/ui.md compares the alternatives.)
//!
//! Wire format, server to client: one binary message per frame,
//! `[n: u8][camera id: n ASCII bytes][JPEG]`. Client to server: a text
//! message holding a camera id acknowledges one frame of that camera. At
//! most [`WINDOW`] frames per camera are unacknowledged; while a camera has
//! no credit its newer frames replace each other and only the newest is
//! sent when an acknowledgement arrives. So, as with MJPEG, a slow page or
//! network skips frames and never builds up latency in buffers, whatever
//! their size, and one fast camera cannot starve the others.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;
use warp::ws::{Message, WebSocket};

use super::mjpeg::RateCap;
use crate::camera::{Camera, Viewer};
use crate::frames::Frame;

/// Unacknowledged frames allowed per camera. Two keep a tile updating at
/// full rate across one network round trip (one frame in flight while the
/// previous is acknowledged) and bound what can queue to two frames.
pub const WINDOW: u32 = 2;
/// The most cameras one socket may carry: four times the 16-tile grid,
/// and a bound on what one client can make the server hold in flight
/// (this many cameras x [`WINDOW`] frames).
pub const MAX_CAMERAS: usize = 64;
/// Client messages are camera ids (64 characters at most); anything larger
/// is not from the page.
pub const MAX_CLIENT_MESSAGE: usize = 1024;

/// One camera on the socket.
struct Tile {
    camera: Arc<Camera>,
    /// Keeps the camera running while the socket is open.
    _viewer: Viewer,
    in_flight: u32,
    /// The newest frame not yet sent, held while the camera has no credit.
    pending: Option<Arc<Frame>>,
    cap: Option<RateCap>,
}

/// Serves one socket until the client leaves or the server shuts down.
/// `viewers` are the admitted viewers of its cameras, one each.
pub async fn serve(
    socket: WebSocket,
    viewers: Vec<Viewer>,
    fps: Option<f64>,
    shutdown: CancellationToken,
) {
    let mut tiles = Vec::with_capacity(viewers.len());
    let mut streams = Vec::with_capacity(viewers.len());
    for (index, mut viewer) in viewers.into_iter().enumerate() {
        let camera = Arc::clone(viewer.camera());
        // The stream starts with the current frame, so a tile fills at once.
        let frames = viewer.frames().clone();
        streams.push(WatchStream::new(frames).map(move |frame| (index, frame)));
        tiles.push(Tile {
            camera,
            _viewer: viewer,
            in_flight: 0,
            pending: None,
            cap: fps.map(RateCap::new),
        });
    }
    let mut frames = futures_util::stream::select_all(streams);
    let (mut tx, mut rx) = socket.split();
    debug!(cameras = tiles.len(), "grid socket opened");

    loop {
        let ready = tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                let _ = tx.send(Message::close()).await;
                break;
            }
            message = rx.next() => match message {
                Some(Ok(message)) if message.is_text() => {
                    let id = message.to_str().unwrap_or_default().trim();
                    match tiles.iter().position(|t| t.camera.id().as_str() == id) {
                        Some(index) => {
                            let tile = &mut tiles[index];
                            tile.in_flight = tile.in_flight.saturating_sub(1);
                            index
                        }
                        None => continue,
                    }
                }
                Some(Ok(message)) if message.is_close() => break,
                // Pings are answered inside the socket; binary is ignored.
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    debug!("grid socket read failed: {e}");
                    break;
                }
                None => break,
            },
            Some((index, frame)) = frames.next() => {
                tiles[index].pending = frame;
                index
            }
        };
        let tile = &mut tiles[ready];
        if tile.in_flight >= WINDOW {
            continue;
        }
        let Some(frame) = tile.pending.take() else {
            continue;
        };
        if let Some(cap) = tile.cap.as_mut()
            && !cap.admit(Instant::now())
        {
            continue;
        }
        let message = encode(tile.camera.id().as_str(), &frame);
        let len = message.len() as u64;
        if let Err(e) = tx.send(Message::binary(message)).await {
            debug!("grid socket write failed: {e}");
            break;
        }
        tile.in_flight += 1;
        tile.camera
            .stats()
            .bytes_sent
            .fetch_add(len, Ordering::Relaxed);
    }
    debug!("grid socket closed");
}

/// `[n][id][jpeg]`. The JPEG is copied once into the message: a WebSocket
/// frame's payload must be contiguous.
pub fn encode(id: &str, frame: &Frame) -> Bytes {
    debug_assert!(id.len() <= usize::from(u8::MAX));
    let mut out = BytesMut::with_capacity(1 + id.len() + frame.jpeg.len());
    out.put_u8(id.len() as u8);
    out.put_slice(id.as_bytes());
    out.put_slice(&frame.jpeg);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::FrameKind;

    #[test]
    fn message_layout() {
        let frame = Frame {
            jpeg: Bytes::from_static(b"\xff\xd8x\xff\xd9"),
            seq: 1,
            width: 2,
            height: 2,
            captured_at: Instant::now(),
            kind: FrameKind::Live,
            part_header: Default::default(),
        };
        assert_eq!(&encode("cam-1", &frame)[..], b"\x05cam-1\xff\xd8x\xff\xd9");
    }
}
