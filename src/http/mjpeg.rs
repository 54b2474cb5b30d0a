//! The MJPEG (`multipart/x-mixed-replace`) encoder: one small piece that
//! owns the framing every browser depends on.
//!
//! Each frame goes out as three chunks (part headers, the JPEG itself, and
//! the next boundary), so the JPEG bytes are the camera's shared buffer, not
//! a per-viewer copy. The response opens with the first boundary and every
//! frame ends with the next one, because Chromium paints a part only when
//! the following boundary arrives (crbug.com/527446); ending with the
//! boundary shows each frame as soon as it is sent instead of one frame
//! late. All line breaks are CRLF, which Safari insists on.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use sync_wrapper::SyncStream;
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::CancellationToken;
use warp::Reply;
use warp::http::{HeaderValue, header};

use crate::camera::Viewer;
use crate::frames::{Frame, FrameKind};

/// The boundary the OpenCV + Django pattern used, kept so front ends that
/// parse the stream themselves keep working.
pub const BOUNDARY: &str = "frame";
/// `Content-Type` of the stream.
pub const CONTENT_TYPE: &str = "multipart/x-mixed-replace; boundary=frame";
/// Opens the body: the first part's boundary line.
const OPENING: &[u8] = b"--frame\r\n";
/// Ends a part's body and opens the next part.
const NEXT_BOUNDARY: &[u8] = b"\r\n--frame\r\n";

/// The headers of one part. Placeholder frames (camera offline) say so in
/// an extra header, for clients that read the stream themselves; browsers
/// ignore it.
pub fn part_header(frame: &Frame) -> Bytes {
    let kind = match frame.kind {
        FrameKind::Live => "",
        FrameKind::Placeholder => "X-Camstream-Frame: placeholder\r\n",
    };
    Bytes::from(format!(
        "Content-Type: image/jpeg\r\nContent-Length: {}\r\n{kind}\r\n",
        frame.jpeg.len()
    ))
}

/// One frame as the chunks that follow a boundary line: headers, JPEG, and
/// the next boundary. All three are shared: the header is formatted once per
/// frame, not once per viewer.
pub fn part(frame: &Frame) -> [Bytes; 3] {
    [
        frame.part_header.get_or_init(|| part_header(frame)).clone(),
        frame.jpeg.clone(),
        Bytes::from_static(NEXT_BOUNDARY),
    ]
}

/// Skips frames to hold a viewer to `fps`. The frame is encoded once for
/// everyone; a capped viewer just takes fewer of them.
#[derive(Debug)]
pub(crate) struct RateCap {
    interval: Duration,
    next_due: Option<Instant>,
}

impl RateCap {
    pub(crate) fn new(fps: f64) -> RateCap {
        RateCap {
            interval: Duration::from_secs_f64(1.0 / fps),
            next_due: None,
        }
    }

    /// Whether a frame arriving `now` should be sent.
    pub(crate) fn admit(&mut self, now: Instant) -> bool {
        // Frames arrive on the camera's cadence, not ours: accept a frame a
        // little early, or jitter in the source's timing would make a 30 fps
        // camera capped at 10 fps skip to 7.5 fps.
        let slack = self.interval / 4;
        match self.next_due {
            Some(due) if now + slack < due => false,
            Some(due) => {
                // Keep the cadence, but never build up a debt of frames
                // after a pause in the source.
                self.next_due = Some((due + self.interval).max(now + self.interval - slack));
                true
            }
            None => {
                self.next_due = Some(now + self.interval);
                true
            }
        }
    }
}

/// The MJPEG response for a viewer: the newest frame now, then each new
/// frame as it is published, until the viewer leaves or the server shuts
/// down. A viewer that reads slowly simply skips frames.
pub fn response(
    viewer: Viewer,
    fps: Option<f64>,
    shutdown: CancellationToken,
) -> warp::reply::Response {
    let camera = Arc::clone(viewer.camera());
    camera
        .stats()
        .bytes_sent
        .fetch_add(OPENING.len() as u64, Ordering::Relaxed);
    let (frames, guard) = viewer.into_parts();
    let mut cap = fps.map(RateCap::new);
    let parts = WatchStream::new(frames)
        .filter_map(move |frame: Option<Arc<Frame>>| {
            let admit = match (&frame, cap.as_mut()) {
                (Some(_), Some(cap)) => cap.admit(Instant::now()),
                (frame, None) => frame.is_some(),
                (None, Some(_)) => false,
            };
            std::future::ready(frame.filter(|_| admit))
        })
        .flat_map(move |frame| {
            let chunks = part(&frame);
            // Counted once per part, not per chunk: one atomic add per
            // viewer-frame on a counter every viewer of the camera shares.
            let len: usize = chunks.iter().map(Bytes::len).sum();
            camera
                .stats()
                .bytes_sent
                .fetch_add(len as u64, Ordering::Relaxed);
            stream::iter(chunks)
        });
    let body = stream::once(std::future::ready(Bytes::from_static(OPENING)))
        .chain(parts)
        // On shutdown the body ends after a complete part, so the HTTP
        // response itself ends cleanly (final chunk) rather than being cut.
        .take_until(shutdown.cancelled_owned())
        .map(move |chunk| {
            // The guard lives as long as the body: dropping the response
            // (viewer gone) is what releases the viewer.
            let _ = &guard;
            Ok::<_, Infallible>(chunk)
        });
    let mut response = warp::reply::stream(SyncStream::new(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    no_cache(headers);
    // nginx would otherwise buffer the stream and deliver frames in bursts.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Headers that stop browsers and proxies from caching a live image.
pub fn no_cache(headers: &mut warp::http::HeaderMap) {
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate, private, max-age=0"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(header::EXPIRES, HeaderValue::from_static("0"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_ends_with_the_next_boundary() {
        let frame = Frame {
            jpeg: Bytes::from_static(b"\xff\xd8jpeg\xff\xd9"),
            seq: 1,
            width: 2,
            height: 2,
            captured_at: Instant::now(),
            kind: FrameKind::Live,
            part_header: Default::default(),
        };
        let bytes: Vec<u8> = part(&frame).iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(
            bytes,
            b"Content-Type: image/jpeg\r\nContent-Length: 8\r\n\r\n\xff\xd8jpeg\xff\xd9\r\n--frame\r\n"
        );
        assert_eq!(
            CONTENT_TYPE,
            format!("multipart/x-mixed-replace; boundary={BOUNDARY}")
        );
        // Every viewer sends the same header bytes, formatted once.
        assert_eq!(part(&frame)[0].as_ptr(), part(&frame)[0].as_ptr());
    }

    #[test]
    fn rate_cap_keeps_the_cadence() {
        let start = Instant::now();
        let mut cap = RateCap::new(10.0);
        // A 30 fps source for one second.
        let sent = (0..30)
            .filter(|i| cap.admit(start + Duration::from_millis(i * 1000 / 30)))
            .count();
        assert_eq!(sent, 10);
        // After a long pause the next frame goes out at once, and the cap
        // does not let a burst through to "catch up".
        let later = start + Duration::from_secs(10);
        assert!(cap.admit(later));
        assert!(!cap.admit(later + Duration::from_millis(33)));
    }
}
