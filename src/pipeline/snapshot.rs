//! HTTP sources that serve single JPEG images (`snapshot.jpg`,
//! `image/jpeg`, not multipart), which many cameras offer where they have
//! no MJPEG stream: polled at the camera's rate and pushed into the camera
//! pipeline's `appsrc`, where they are decoded, scaled and encoded like the
//! parts of an MJPEG stream.
//!
//! Each poll is a GET by souphttpsrc in a small pipeline of its own
//! (`souphttpsrc ! appsink`), so a snapshot URL gets what an MJPEG URL
//! gets: basic and Digest authentication from the URL's credentials, the
//! proxy settings, TLS with `tls_verify`, and the same friendly errors. A
//! failed poll is posted on the camera pipeline's bus as the error it is,
//! and the camera restarts with back-off like for any other source error.

use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::PipelineError;
use crate::source::Credentials;

/// souphttpsrc's timeout for a snapshot request, in seconds: as for an
/// MJPEG stream's reads.
const FETCH_TIMEOUT_S: u32 = 5;
/// How often a fetch in progress checks whether the camera is stopping:
/// bounds how long stopping a camera waits for a slow camera's answer.
const STOP_CHECK: Duration = Duration::from_millis(50);
/// A snapshot larger than this is refused rather than buffered: a 4K JPEG
/// at high quality is 2-4 MB.
const MAX_SNAPSHOT_BYTES: usize = 32 * 1024 * 1024;

/// What polls a snapshot URL into a camera pipeline, before it starts.
#[derive(Debug)]
pub(super) struct SnapshotSource {
    appsrc: gst_app::AppSrc,
    fetcher: Fetcher,
    interval: Duration,
    /// The camera pipeline's bus, where a failed poll is reported.
    bus: gst::Bus,
}

impl SnapshotSource {
    pub(super) fn new(
        appsrc: gst_app::AppSrc,
        bus: gst::Bus,
        url: &str,
        credentials: Option<&Credentials>,
        tls_verify: bool,
        interval: Duration,
    ) -> Result<SnapshotSource, PipelineError> {
        Ok(SnapshotSource {
            appsrc,
            fetcher: Fetcher::new(url, credentials, tls_verify)?,
            interval,
            bus,
        })
    }

    /// Starts polling on a thread of its own.
    pub(super) fn start(self) -> Result<SnapshotPoller, PipelineError> {
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("camstream-snapshots".into())
            .spawn(move || self.poll(&stopped))
            .map_err(|e| PipelineError::Start(format!("cannot start the snapshot poller: {e}")))?;
        Ok(SnapshotPoller {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn poll(self, stopped: &mpsc::Receiver<()>) {
        loop {
            let began = Instant::now();
            match self.fetcher.fetch(stopped) {
                Fetched::Stopped => break,
                Fetched::Failed(message) => {
                    let _ = self.bus.post(message);
                    break;
                }
                Fetched::Body(body) => {
                    if !body.starts_with(&[0xFF, 0xD8]) {
                        let message = gst::message::Error::builder(
                            gst::StreamError::WrongType,
                            "the answer is not a JPEG image",
                        )
                        .src(&self.fetcher.src)
                        .build();
                        let _ = self.bus.post(message);
                        break;
                    }
                    // Fails only once the camera pipeline is stopping.
                    if self
                        .appsrc
                        .push_buffer(gst::Buffer::from_mut_slice(body))
                        .is_err()
                    {
                        break;
                    }
                }
            }
            // One request at a time, started `interval` apart; a slow
            // answer delays the next poll, never stacks them up.
            match stopped.recv_timeout(self.interval.saturating_sub(began.elapsed())) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => break,
            }
        }
        let _ = self.fetcher.pipeline.set_state(gst::State::Null);
    }
}

/// A running poller; stopping it waits for its thread.
#[derive(Debug)]
pub(super) struct SnapshotPoller {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl SnapshotPoller {
    /// Stops polling, aborting a request in progress. Blocks for at most
    /// [`STOP_CHECK`] plus a state change.
    pub(super) fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for SnapshotPoller {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `souphttpsrc ! appsink`, run once per snapshot.
#[derive(Debug)]
struct Fetcher {
    pipeline: gst::Pipeline,
    src: gst::Element,
    sink: gst_app::AppSink,
}

enum Fetched {
    Body(Vec<u8>),
    /// The error message the fetch posted, to re-post on the camera's bus.
    Failed(gst::Message),
    Stopped,
}

impl Fetcher {
    fn new(
        url: &str,
        credentials: Option<&Credentials>,
        tls_verify: bool,
    ) -> Result<Fetcher, PipelineError> {
        let missing = |name: &str| PipelineError::MissingElement(vec![name.to_string()]);
        let src = gst::ElementFactory::make("souphttpsrc")
            .property("location", url)
            .property("timeout", FETCH_TIMEOUT_S)
            .property("ssl-strict", tls_verify)
            .build()
            .map_err(|_| missing("souphttpsrc"))?;
        if let Some(c) = credentials {
            src.set_property("user-id", &c.user);
            src.set_property("user-pw", &c.password);
        }
        let sink = gst_app::AppSink::builder().sync(false).build();
        let pipeline = gst::Pipeline::new();
        let failed =
            |e: &dyn std::fmt::Display| PipelineError::Start(format!("snapshot fetcher: {e}"));
        pipeline
            .add_many([&src, sink.upcast_ref()])
            .map_err(|e| failed(&e))?;
        src.link(&sink).map_err(|e| failed(&e))?;
        Ok(Fetcher {
            pipeline,
            src,
            sink,
        })
    }

    /// One GET: the whole body, or the error the request ended with.
    fn fetch(&self, stopped: &mpsc::Receiver<()>) -> Fetched {
        let bus = self.pipeline.bus().expect("a pipeline always has a bus");
        let result = if self.pipeline.set_state(gst::State::Playing).is_err() {
            match bus.pop_filtered(&[gst::MessageType::Error]) {
                Some(message) => Fetched::Failed(message),
                None => Fetched::Failed(
                    gst::message::Error::builder(
                        gst::ResourceError::OpenRead,
                        "the snapshot request did not start",
                    )
                    .src(&self.src)
                    .build(),
                ),
            }
        } else {
            self.read_body(&bus, stopped)
        };
        // NULL ends the request (or cancels it) and flushes the bus, ready
        // for the next poll.
        let _ = self.pipeline.set_state(gst::State::Null);
        result
    }

    fn read_body(&self, bus: &gst::Bus, stopped: &mpsc::Receiver<()>) -> Fetched {
        let mut body = Vec::new();
        loop {
            if !matches!(stopped.try_recv(), Err(TryRecvError::Empty)) {
                return Fetched::Stopped;
            }
            if let Some(message) = bus.pop_filtered(&[gst::MessageType::Error]) {
                return Fetched::Failed(message);
            }
            let timeout = gst::ClockTime::from_mseconds(STOP_CHECK.as_millis() as u64);
            match self.sink.try_pull_sample(timeout) {
                Some(sample) => {
                    if let Some(map) = sample.buffer().and_then(|b| b.map_readable().ok()) {
                        body.extend_from_slice(&map);
                    }
                    if body.len() > MAX_SNAPSHOT_BYTES {
                        return Fetched::Failed(
                            gst::message::Error::builder(
                                gst::StreamError::WrongType,
                                "the answer is larger than 32 MB: not a camera snapshot",
                            )
                            .src(&self.src)
                            .build(),
                        );
                    }
                }
                None if self.sink.is_eos() => return Fetched::Body(body),
                None => {}
            }
        }
    }
}
