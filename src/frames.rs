//! Encoded frames and the per-camera hub that holds the newest one.
//!
//! This is all `http/` sees of a camera: JPEG bytes, shared. The pipeline
//! publishes each encoded frame once; every viewer reads the same `Bytes`
//! (the GStreamer buffer itself, not a copy). The hub keeps only the newest
//! frame, so a slow viewer skips frames instead of queueing them, and a
//! publisher never waits for a viewer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::watch;

/// Whether a frame came from the camera or was drawn by camstream while the
/// camera is offline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    Live,
    Placeholder,
}

/// One encoded JPEG frame.
#[derive(Debug)]
pub struct Frame {
    pub jpeg: Bytes,
    /// Increases by one per published frame, per camera.
    pub seq: u64,
    pub width: u32,
    pub height: u32,
    /// When the encoder handed the frame over.
    pub captured_at: Instant,
    pub kind: FrameKind,
    /// The frame's multipart part header, formatted by the first viewer that
    /// sends the frame and shared by every other (see `http::mjpeg`), so a
    /// viewer costs no allocation per frame.
    pub part_header: OnceLock<Bytes>,
}

impl Frame {
    pub fn is_live(&self) -> bool {
        self.kind == FrameKind::Live
    }
}

/// A receiver of the newest frame: `changed().await`, then
/// `borrow_and_update()`.
pub type FrameReceiver = watch::Receiver<Option<Arc<Frame>>>;

/// The newest frame of one camera, shared by all its viewers.
#[derive(Debug)]
pub struct FrameHub {
    tx: watch::Sender<Option<Arc<Frame>>>,
    seq: AtomicU64,
}

impl Default for FrameHub {
    fn default() -> Self {
        FrameHub {
            tx: watch::Sender::new(None),
            seq: AtomicU64::new(0),
        }
    }
}

impl FrameHub {
    /// Replaces the newest frame and wakes every viewer. Never blocks on a
    /// viewer, so it is safe to call from a GStreamer streaming thread.
    pub fn publish(&self, jpeg: Bytes, width: u32, height: u32, kind: FrameKind) -> u64 {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let frame = Arc::new(Frame {
            jpeg,
            seq,
            width,
            height,
            captured_at: Instant::now(),
            kind,
            part_header: OnceLock::new(),
        });
        // send_replace stores the frame even with no receiver, so the next
        // viewer or snapshot finds it.
        self.tx.send_replace(Some(frame));
        seq
    }

    /// Forgets the newest frame (camera stopped), so no one is shown a stale
    /// picture as if it were live.
    pub fn clear(&self) {
        self.tx.send_replace(None);
    }

    pub fn subscribe(&self) -> FrameReceiver {
        self.tx.subscribe()
    }

    pub fn latest(&self) -> Option<Arc<Frame>> {
        self.tx.borrow().clone()
    }
}

/// A camera's counters, updated from its pipeline's streaming threads and
/// its viewers, read for the API and metrics. Atomics only: a streaming
/// thread never takes a lock here. What each size encodes is counted in
/// its own [`OutputStats`].
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Frames from the source that reached camstream's part of the
    /// pipeline (after the `max_fps` cap), whether or not any size needed
    /// them: the camera's liveness and frame rate.
    pub source_frames: AtomicU64,
    /// The source's real resolution, packed by [`pack_size`]; 0 = unknown.
    pub input_size: AtomicU64,
    /// Bytes written to viewers (streams, snapshots, the grid socket):
    /// what the camera costs in bandwidth, as opposed to what its sizes
    /// encode.
    pub bytes_sent: AtomicU64,
}

impl PipelineStats {
    pub fn input(&self) -> Option<(u32, u32)> {
        unpack_size(self.input_size.load(Ordering::Relaxed))
    }
}

/// The counters of one size's branch: frames let in while it was watched,
/// frames encoded (or passed through) and published, and what encoding
/// took.
#[derive(Debug, Default)]
pub struct OutputStats {
    /// Frames that entered the branch (it drops every frame while nobody
    /// watches the size).
    pub frames_in: AtomicU64,
    /// Frames encoded, or passed through, and published.
    pub frames_out: AtomicU64,
    /// JPEG bytes produced.
    pub bytes_out: AtomicU64,
    /// The published frames' resolution, packed; 0 = none yet.
    pub output_size: AtomicU64,
    /// Time jpegenc took per frame, measured by pad probes around it.
    pub encode_time: Histogram,
    /// The highest `frames_in - frames_out` reported so far (see
    /// [`OutputStats::frames_dropped`]).
    dropped_reported: AtomicU64,
}

impl OutputStats {
    /// Frames the branch's leaky queue discarded to stay current, as a
    /// counter that never goes down. `frames_in - frames_out` alone can
    /// dip by one while a frame is inside the encoder, which a Prometheus
    /// counter must not do; so this reports the running maximum, at most
    /// one frame high.
    pub fn frames_dropped(&self) -> u64 {
        let seen = self
            .frames_in
            .load(Ordering::Relaxed)
            .saturating_sub(self.frames_out.load(Ordering::Relaxed));
        self.dropped_reported
            .fetch_max(seen, Ordering::Relaxed)
            .max(seen)
    }

    pub fn output(&self) -> Option<(u32, u32)> {
        unpack_size(self.output_size.load(Ordering::Relaxed))
    }
}

/// Upper bounds of the encode-time buckets, in microseconds. jpegenc takes
/// well under a millisecond for a quarter of a 1080p frame on one core and
/// tens of milliseconds for a full 4K frame; doubling steps cover both ends
/// with a dozen buckets.
pub const ENCODE_BUCKETS_US: [u64; 12] = [
    125, 250, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000,
];

/// A fixed-bucket histogram of durations, recorded from a streaming thread
/// with atomics only (no lock, no allocation).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per-bucket counts (not cumulative); the last one is above every
    /// bound (+Inf).
    buckets: [AtomicU64; ENCODE_BUCKETS_US.len() + 1],
    sum_ns: AtomicU64,
}

/// A histogram as read at one moment, in Prometheus' shape.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// (upper bound in seconds, observations at or below it), ascending.
    pub cumulative: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn record(&self, elapsed: Duration) {
        let us = elapsed.as_micros();
        let index = ENCODE_BUCKETS_US
            .iter()
            .position(|&bound| us <= u128::from(bound))
            .unwrap_or(ENCODE_BUCKETS_US.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let mut cumulative = Vec::with_capacity(ENCODE_BUCKETS_US.len());
        for (bound, bucket) in ENCODE_BUCKETS_US.iter().zip(&self.buckets) {
            running += bucket.load(Ordering::Relaxed);
            cumulative.push((*bound as f64 / 1e6, running));
        }
        // The count is the sum of the buckets read, so it always equals the
        // +Inf bucket even while frames are being recorded.
        let count = running + self.buckets[ENCODE_BUCKETS_US.len()].load(Ordering::Relaxed);
        HistogramSnapshot {
            cumulative,
            count,
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

pub fn pack_size(width: u32, height: u32) -> u64 {
    (u64::from(width) << 32) | u64::from(height)
}

pub fn unpack_size(packed: u64) -> Option<(u32, u32)> {
    (packed != 0).then_some(((packed >> 32) as u32, packed as u32))
}

/// Wall-clock time as RFC 3339 UTC with seconds, e.g. `2026-11-24T10:15:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// algorithm), to avoid a date-time dependency for one timestamp format.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn hub_keeps_only_the_newest_frame() {
        let hub = FrameHub::default();
        let mut rx = hub.subscribe();
        assert!(hub.latest().is_none());
        hub.publish(Bytes::from_static(b"a"), 2, 2, FrameKind::Live);
        hub.publish(Bytes::from_static(b"b"), 2, 2, FrameKind::Live);
        assert!(rx.has_changed().unwrap());
        let frame = rx.borrow_and_update().clone().unwrap();
        assert_eq!((frame.seq, &frame.jpeg[..]), (2, &b"b"[..]));
        hub.clear();
        assert!(hub.latest().is_none());
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.record(Duration::from_micros(100));
        h.record(Duration::from_micros(900));
        h.record(Duration::from_secs(2));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.cumulative[0], (0.000125, 1));
        assert_eq!(s.cumulative[3], (0.001, 2));
        assert_eq!(
            s.cumulative.last().unwrap().1,
            2,
            "2 s is above every bound"
        );
        assert!((s.sum_seconds - 2.001).abs() < 1e-9);
    }

    #[test]
    fn dropped_frames_never_go_down() {
        let stats = OutputStats::default();
        stats.frames_in.store(10, Ordering::Relaxed);
        stats.frames_out.store(7, Ordering::Relaxed);
        assert_eq!(stats.frames_dropped(), 3);
        stats.frames_out.store(8, Ordering::Relaxed);
        assert_eq!(stats.frames_dropped(), 3);
    }

    #[test]
    fn sizes_pack() {
        assert_eq!(unpack_size(pack_size(1920, 1080)), Some((1920, 1080)));
        assert_eq!(unpack_size(0), None);
    }

    #[test]
    fn timestamps() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
