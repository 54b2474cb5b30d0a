//! A camera's outputs: one per size a viewer can ask for (`default`, each
//! of the camera's `sizes`, and `full` for snapshots), each with its own
//! newest-frame hub, counters and viewer count.
//!
//! An output is shared by two sides. The pipeline's streaming threads ask
//! it whether a frame is wanted (a size nobody watches lets no frame into
//! its branch, so it costs nothing) and publish what its branch made; they
//! only touch atomics, except for the short lock of a snapshot request. The
//! camera attaches each viewer to one output. No GStreamer types here.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::config::{CameraSettings, DEFAULT_SIZE, FULL_SIZE};
use crate::frames::{Frame, FrameHub, FrameKind, FrameReceiver, OutputStats, pack_size};

/// How an output is watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Streams and snapshots of a size: frames flow while it has viewers.
    Stream,
    /// `full`: one frame per request, made once for every request waiting
    /// at that moment.
    Snapshot,
}

/// What an output's frames are made of.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutputSpec {
    /// The output size as a factor of the source's real size.
    pub scale: f64,
    /// JPEG quality of what camstream encodes.
    pub quality: u8,
}

/// Where a snapshot output's next frame stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flight {
    /// Nobody is waiting.
    Idle,
    /// Requests are waiting; the next frame is theirs.
    Requested,
    /// A frame is on its way through the encoder for the waiting requests;
    /// requests arriving now get it too.
    Encoding,
}

/// A snapshot request: the frame at once, or a receiver whose next change
/// brings it.
#[derive(Debug)]
pub enum Request {
    Ready(Arc<Frame>),
    Wait(FrameReceiver),
}

/// One size of a camera.
#[derive(Debug)]
pub struct Output {
    name: String,
    kind: Kind,
    spec: Mutex<OutputSpec>,
    hub: FrameHub,
    stats: OutputStats,
    viewers: AtomicUsize,
    /// Set by the pipeline while the source's own JPEG frames feed this
    /// output (a JPEG source and a scale of 1): nothing is encoded for it.
    passthrough: AtomicBool,
    /// Snapshot outputs: the request in progress.
    flight: Mutex<Flight>,
    /// Snapshot outputs: the source frame ([`PipelineStats::source_frames`]
    /// count) the newest published frame was made from, so a request
    /// while that frame is still the current one reuses it.
    ///
    /// [`PipelineStats::source_frames`]: crate::frames::PipelineStats
    made_from: AtomicU64,
    /// Cancelled when the size is removed from the camera: its streams end.
    cancel: CancellationToken,
}

impl Output {
    fn new(name: &str, kind: Kind, spec: OutputSpec, cancel: CancellationToken) -> Output {
        Output {
            name: name.to_string(),
            kind,
            spec: Mutex::new(spec),
            hub: FrameHub::default(),
            stats: OutputStats::default(),
            viewers: AtomicUsize::new(0),
            passthrough: AtomicBool::new(false),
            flight: Mutex::new(Flight::Idle),
            made_from: AtomicU64::new(0),
            cancel,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn spec(&self) -> OutputSpec {
        *self.spec.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn hub(&self) -> &FrameHub {
        &self.hub
    }

    pub fn stats(&self) -> &OutputStats {
        &self.stats
    }

    pub fn viewers(&self) -> usize {
        self.viewers.load(Ordering::Relaxed)
    }

    /// Cancelled when the size is no longer configured.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    pub fn is_passthrough(&self) -> bool {
        self.passthrough.load(Ordering::Relaxed)
    }

    /// The pipeline says whether the source's JPEG frames feed this output
    /// as they are.
    pub fn set_passthrough(&self, passthrough: bool) {
        self.passthrough.store(passthrough, Ordering::Relaxed);
    }

    /// A viewer (a stream, a snapshot, a grid tile) starts watching. The
    /// first one starts with an empty hub: a frame left from an earlier
    /// viewer would be shown as live though the branch has been closed.
    pub fn attach(&self) {
        if self.viewers.fetch_add(1, Ordering::AcqRel) == 0 && self.kind == Kind::Stream {
            self.hub.clear();
        }
    }

    /// A viewer leaves. With the last one the branch closes: its frames
    /// stop and its newest frame is forgotten.
    pub fn detach(&self) {
        let before = self
            .viewers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            })
            .unwrap_or(0);
        if before == 1 {
            match self.kind {
                Kind::Stream => self.hub.clear(),
                // Every request gave up waiting (they time out): nothing
                // to encode for.
                Kind::Snapshot => *self.lock_flight() = Flight::Idle,
            }
        }
    }

    /// Whether frames are wanted now: a size with viewers, or a snapshot
    /// request waiting. Read by the pipeline for every frame.
    pub fn wants_frames(&self) -> bool {
        match self.kind {
            Kind::Stream => self.viewers.load(Ordering::Relaxed) > 0,
            Kind::Snapshot => *self.lock_flight() != Flight::Idle,
        }
    }

    /// The gate of this output's encoding branch, for each decoded frame
    /// (`source_frame` is its number): true lets it in. A snapshot output
    /// lets in one frame per request, however many requests wait for it.
    pub fn admit_for_encoding(&self, source_frame: u64) -> bool {
        if self.is_passthrough() {
            return false;
        }
        let admitted = match self.kind {
            Kind::Stream => self.viewers.load(Ordering::Relaxed) > 0,
            Kind::Snapshot => {
                let mut flight = self.lock_flight();
                let admitted = *flight == Flight::Requested;
                if admitted {
                    *flight = Flight::Encoding;
                }
                admitted
            }
        };
        if admitted {
            self.made_from.store(source_frame, Ordering::Relaxed);
            self.stats.frames_in.fetch_add(1, Ordering::Relaxed);
        }
        admitted
    }

    /// Publishes a frame made for this output, if it is still wanted: a
    /// frame that was in the branch when its last viewer left is dropped.
    /// Never blocks on a viewer.
    pub fn publish(&self, jpeg: Bytes, width: u32, height: u32) {
        let len = jpeg.len() as u64;
        match self.kind {
            Kind::Stream => {
                if self.viewers.load(Ordering::Relaxed) == 0 {
                    return;
                }
                self.hub.publish(jpeg, width, height, FrameKind::Live);
            }
            Kind::Snapshot => {
                // Under the lock, so a request either finds this frame
                // published or is already subscribed when it is.
                let mut flight = self.lock_flight();
                if *flight == Flight::Idle {
                    return;
                }
                self.hub.publish(jpeg, width, height, FrameKind::Live);
                *flight = Flight::Idle;
            }
        }
        self.stats.frames_out.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes_out.fetch_add(len, Ordering::Relaxed);
        self.stats
            .output_size
            .store(pack_size(width, height), Ordering::Relaxed);
    }

    /// Publishes a frame of the source's own JPEG stream, if this output
    /// takes them and wants one now (`source_frame` is its number).
    pub fn publish_passthrough(&self, source_frame: u64, jpeg: &Bytes, width: u32, height: u32) {
        if !self.is_passthrough() || !self.wants_frames() {
            return;
        }
        self.stats.frames_in.fetch_add(1, Ordering::Relaxed);
        self.made_from.store(source_frame, Ordering::Relaxed);
        self.publish(jpeg.clone(), width, height);
    }

    /// A snapshot request (the viewer is already attached): the newest
    /// frame if it was made from the source's current frame
    /// (`source_frame`), else a receiver whose next change is the frame
    /// made for this request and every other waiting now.
    pub fn request(&self, source_frame: u64) -> Request {
        let mut flight = self.lock_flight();
        if *flight == Flight::Idle
            && let Some(frame) = self.hub.latest().filter(|f| f.is_live())
            && self.made_from.load(Ordering::Relaxed) == source_frame
        {
            return Request::Ready(frame);
        }
        let mut frames = self.hub.subscribe();
        frames.mark_unchanged();
        if *flight == Flight::Idle {
            *flight = Flight::Requested;
        }
        Request::Wait(frames)
    }

    /// A pipeline (re)starts: a frame that was on its way through the old
    /// one never arrives, so the requests still waiting get the new one's.
    pub fn restart(&self) {
        let mut flight = self.lock_flight();
        if *flight == Flight::Encoding {
            *flight = Flight::Requested;
        }
    }

    fn lock_flight(&self) -> std::sync::MutexGuard<'_, Flight> {
        self.flight.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A camera's outputs: `default` first, then its sizes in name order, then
/// `full` (cameras with camstream's own part only).
#[derive(Debug)]
pub struct Outputs {
    list: Vec<Arc<Output>>,
}

/// One output a camera's settings ask for.
#[derive(Clone, Debug, PartialEq)]
pub struct Wanted {
    pub name: String,
    pub kind: Kind,
    pub spec: OutputSpec,
}

impl Outputs {
    /// The outputs `settings` describe. A camera whose override is a
    /// whole pipeline (`managed` false) has one size: what its own appsink
    /// hands over.
    pub fn wanted(settings: &CameraSettings, managed: bool) -> Vec<Wanted> {
        let default = Wanted {
            name: DEFAULT_SIZE.to_string(),
            kind: Kind::Stream,
            spec: OutputSpec {
                scale: settings.scale,
                quality: settings.quality,
            },
        };
        if !managed {
            return vec![default];
        }
        let sizes = settings.sizes.iter().map(|size| Wanted {
            name: size.name.to_string(),
            kind: Kind::Stream,
            spec: OutputSpec {
                scale: size.scale,
                quality: size.quality,
            },
        });
        let full = Wanted {
            name: FULL_SIZE.to_string(),
            kind: Kind::Snapshot,
            spec: OutputSpec {
                scale: 1.0,
                quality: settings.quality,
            },
        };
        std::iter::once(default)
            .chain(sizes)
            .chain(std::iter::once(full))
            .collect()
    }

    /// A default size at `scale` and `quality`, and `full`: what `camstream
    /// check` and `camstream probe` build.
    pub fn wanted_for(scale: f64, quality: u8) -> Vec<Wanted> {
        vec![
            Wanted {
                name: DEFAULT_SIZE.to_string(),
                kind: Kind::Stream,
                spec: OutputSpec { scale, quality },
            },
            Wanted {
                name: FULL_SIZE.to_string(),
                kind: Kind::Snapshot,
                spec: OutputSpec {
                    scale: 1.0,
                    quality,
                },
            },
        ]
    }

    /// New outputs; each one's token is a child of `parent` (the camera's).
    pub fn new(wanted: Vec<Wanted>, parent: &CancellationToken) -> Outputs {
        Outputs {
            list: wanted
                .into_iter()
                .map(|w| Arc::new(Output::new(&w.name, w.kind, w.spec, parent.child_token())))
                .collect(),
        }
    }

    /// The outputs after a configuration change: a size that is still
    /// there keeps its output (its viewers stay attached, and its new
    /// scale and quality apply from the next pipeline); a removed size's
    /// streams end.
    pub fn reconfigured(&self, wanted: Vec<Wanted>, parent: &CancellationToken) -> Outputs {
        let list = wanted
            .into_iter()
            .map(|w| match self.get(&w.name).filter(|o| o.kind == w.kind) {
                Some(kept) => {
                    *kept.spec.lock().unwrap_or_else(PoisonError::into_inner) = w.spec;
                    Arc::clone(kept)
                }
                None => Arc::new(Output::new(&w.name, w.kind, w.spec, parent.child_token())),
            })
            .collect::<Vec<_>>();
        for old in &self.list {
            if !list.iter().any(|o| Arc::ptr_eq(o, old)) {
                old.cancel.cancel();
            }
        }
        Outputs { list }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Output>> {
        self.list.iter().find(|o| o.name == name)
    }

    /// The camera's default output (`scale`, `quality`).
    pub fn default_output(&self) -> &Arc<Output> {
        &self.list[0]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Output>> {
        self.list.iter()
    }

    /// The names a viewer can stream, for messages.
    pub fn stream_names(&self) -> Vec<&str> {
        self.list
            .iter()
            .filter(|o| o.kind == Kind::Stream)
            .map(|o| o.name())
            .collect()
    }

    /// Forgets every newest frame: the camera stopped.
    pub fn clear(&self) {
        for output in &self.list {
            output.hub.clear();
        }
    }

    /// A pipeline (re)starts (see [`Output::restart`]).
    pub fn restart(&self) {
        for output in &self.list {
            output.restart();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(kind: Kind) -> Output {
        Output::new(
            "x",
            kind,
            OutputSpec {
                scale: 1.0,
                quality: 80,
            },
            CancellationToken::new(),
        )
    }

    fn jpeg() -> Bytes {
        Bytes::from_static(b"\xff\xd8x\xff\xd9")
    }

    #[test]
    fn a_size_lets_frames_in_only_while_watched() {
        let out = output(Kind::Stream);
        assert!(!out.admit_for_encoding(1));
        out.attach();
        assert!(out.admit_for_encoding(2));
        out.publish(jpeg(), 2, 2);
        assert!(out.hub().latest().is_some());
        out.detach();
        assert!(!out.wants_frames());
        assert!(out.hub().latest().is_none(), "closing forgets the frame");
        // A frame still in the branch when the last viewer left is
        // dropped, not left for the next viewer.
        out.publish(jpeg(), 2, 2);
        assert!(out.hub().latest().is_none());
        assert_eq!(out.stats().frames_out.load(Ordering::Relaxed), 1);
        // Passed through: nothing is encoded for it.
        out.attach();
        out.set_passthrough(true);
        assert!(!out.admit_for_encoding(3));
        out.publish_passthrough(3, &jpeg(), 2, 2);
        assert_eq!(out.stats().frames_out.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn concurrent_snapshot_requests_share_one_frame() {
        let out = output(Kind::Snapshot);
        let mut waiting = Vec::new();
        for _ in 0..10 {
            out.attach();
            match out.request(7) {
                Request::Wait(rx) => waiting.push(rx),
                Request::Ready(_) => panic!("no frame yet"),
            }
        }
        // One frame is let in for all ten, and only one.
        assert!(out.admit_for_encoding(8));
        assert!(!out.admit_for_encoding(9));
        // A request arriving while it is encoded joins it.
        out.attach();
        let Request::Wait(late) = out.request(9) else {
            panic!("the frame is not out yet");
        };
        waiting.push(late);
        out.publish(jpeg(), 4, 4);
        for rx in &mut waiting {
            assert!(rx.has_changed().unwrap());
        }
        assert_eq!(out.stats().frames_out.load(Ordering::Relaxed), 1);
        // While the source's frame it was made from is the current one,
        // the frame is reused; a newer source frame needs a new one.
        assert!(matches!(out.request(8), Request::Ready(_)));
        assert!(matches!(out.request(10), Request::Wait(_)));
        for _ in 0..12 {
            out.detach();
        }
        assert!(!out.wants_frames(), "every request gave up");
    }
}
