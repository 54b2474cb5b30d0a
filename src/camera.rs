//! One camera: its settings, its newest frame, its viewers, and the
//! supervisor task that runs its pipeline.
//!
//! The supervisor starts the pipeline when the first viewer arrives (or at
//! once for `always_on`), stops it `idle_timeout` after the last one leaves,
//! and restarts it with capped exponential back-off when it fails, stalls or
//! ends. Every exit path sets the pipeline to NULL. Viewers hold a
//! [`Viewer`]; its drop is what tells the supervisor a viewer left.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{MissedTickBehavior, sleep, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, info, warn};

use crate::config::FULL_SIZE;
use crate::config::{CameraId, CameraSettings, DEFAULT_QUALITY, DEFAULT_SCALE, DEFAULT_SIZE};
use crate::frames::{
    Frame, FrameKind, FrameReceiver, PipelineStats, pack_size, rfc3339, unpack_size,
};
use crate::outputs::{Kind, Output, Outputs, Request, Wanted};
use crate::pipeline::{
    DecoderFallback, DecoderUse, FrameOutput, HardwareFailure, Pipeline, PipelineError,
    PipelineEvent, TransportFallback, render_placeholder,
};
use crate::redact::{KnownSecrets, Redactor};
use crate::source::{Attempt, HttpMode, LowerTransport, PipelinePlan, Source};
use crate::upstream::{self, RelaySource, UpstreamError};

/// First retry delay after a failure; short, because most failures are a
/// camera rebooting or a network blip.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(500);
/// Longest retry delay: a camera that is gone for hours is still retried
/// twice a minute, and found within 30 s of its return.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A pipeline that streamed this long counts as healthy: its next failure
/// starts the back-off from the beginning again.
pub const HEALTHY_PERIOD: Duration = Duration::from_secs(30);
/// How often the supervisor checks progress and measures the frame rate.
const TICK: Duration = Duration::from_millis(250);
/// How often a (re)starting camera is checked for its first frame: soon
/// enough that its state and the end of an outage follow at once.
const FIRST_FRAME_TICK: Duration = Duration::from_millis(20);
/// How often viewers of an offline camera get the placeholder frame: often
/// enough that a browser never shows a silently frozen picture, rarely
/// enough to cost nothing.
pub const PLACEHOLDER_INTERVAL: Duration = Duration::from_secs(1);

/// A camera's lifecycle state, as the API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not running: no viewer asked for it.
    Idle,
    /// Pipeline built, waiting for the first frame.
    Starting,
    /// Frames are flowing.
    Streaming,
    /// The last run failed; waiting to retry.
    Reconnecting,
    /// Cannot run until its configuration changes.
    Failed,
    /// The server is shutting down.
    Stopped,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Starting => "starting",
            State::Streaming => "streaming",
            State::Reconnecting => "reconnecting",
            State::Failed => "failed",
            State::Stopped => "stopped",
        }
    }
}

/// Why a camera run ended badly. Messages are redacted.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum CameraError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("the source ended the stream (end of stream); reconnecting")]
    EndOfStream,
    #[error("no frame for {}s: the source stalled; restarting", .0.as_secs_f32())]
    Stalled(Duration),
    #[error(
        "no first frame within {}s of starting{}: the source was opened but sent no picture \
         camstream could decode; check that it carries video, or raise first_frame_timeout_s \
         for a camera that is slow to start",
        .after.as_secs_f32(),
        .via.as_ref().map(|v| format!(" ({v})")).unwrap_or_default()
    )]
    NoFirstFrame {
        after: Duration,
        /// How the source was read, e.g. "RTSP over UDP".
        via: Option<String>,
    },
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl CameraError {
    fn is_permanent(&self) -> bool {
        match self {
            CameraError::Config(_) => true,
            CameraError::Pipeline(e) => e.is_permanent(),
            _ => false,
        }
    }
}

/// Why a viewer could not be given a stream.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("camera {id} is unavailable: {reason}")]
    Unavailable { id: CameraId, reason: String },
    #[error("camera {id} sent no frame within {}s", .wait.as_secs_f32())]
    Timeout { id: CameraId, wait: Duration },
    #[error(
        "camera {id} already has its maximum of {limit} viewers (max_viewers): try again later"
    )]
    TooManyViewers { id: CameraId, limit: usize },
}

/// Why a viewer's `size` cannot be served. A 400: asking again will not
/// help.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum SizeError {
    #[error(
        "camera {id} has no size \"{size}\": its sizes are {}{}",
        .known.join(", "),
        if *.full { " (and full, for snapshot.jpg)" } else { "" }
    )]
    Unknown {
        id: CameraId,
        size: String,
        known: Vec<String>,
        full: bool,
    },
    #[error(
        "size=full is the source's full resolution for snapshot.jpg only: to stream camera {id} \
         at full size, give it a size with scale = 1.0 (sizes in docs/config.md)"
    )]
    SnapshotOnly { id: CameraId },
    #[error(
        "camera {id} runs a whole-pipeline override (it ends in its own appsink), which makes \
         one size only: ask without size={size}, or end the override before its encoder so \
         camstream scales and encodes each size (pipelines/README.md)"
    )]
    OneSize { id: CameraId, size: String },
}

/// The supervisor's view of the camera, published on every change.
#[derive(Clone, Debug)]
pub struct Status {
    pub state: State,
    /// When the camera entered `state`.
    pub since: SystemTime,
    pub last_error: Option<String>,
    pub last_error_at: Option<SystemTime>,
    /// Encoded frames per second, measured over the last second.
    pub fps: f64,
    /// When the next retry happens, while reconnecting.
    pub retry_in: Option<Duration>,
    /// When a camera that was streaming went down; cleared by its next
    /// frame.
    pub offline_since: Option<SystemTime>,
    /// How frames come from the source in the current or last run:
    /// `tcp`/`udp` (RTSP), `mjpeg`/`snapshots` (HTTP); None for other
    /// sources and before the first run.
    pub transport: Option<&'static str>,
    /// The video decoder of the last run that delivered a frame.
    pub decoder_in_use: Option<DecoderUse>,
    /// Why the camera decodes in software although its `decoder` setting
    /// allows hardware: the hardware decoder's failure.
    pub decoder_fallback: Option<String>,
}

impl Status {
    fn new(state: State) -> Status {
        Status {
            state,
            since: SystemTime::now(),
            last_error: None,
            last_error_at: None,
            fps: 0.0,
            retry_in: None,
            offline_since: None,
            transport: None,
            decoder_in_use: None,
            decoder_fallback: None,
        }
    }
}

/// A camera's configuration: valid settings, or the reason it is invalid.
#[derive(Clone, Debug, PartialEq)]
pub struct Configured {
    pub name: String,
    pub settings: Result<CameraSettings, String>,
}

/// Lifetime counters, for the API and metrics.
#[derive(Debug, Default)]
struct Counters {
    /// Pipelines built.
    starts: AtomicU64,
    /// Pipelines built after a failure.
    restarts: AtomicU64,
}

/// One camera. Shared by the registry, the HTTP handlers and its viewers.
#[derive(Debug)]
pub struct Camera {
    id: CameraId,
    configured: watch::Sender<Arc<Configured>>,
    /// One output per size (its hub, counters and viewers). Replaced on a
    /// configuration change, keeping the sizes that remain with their
    /// viewers.
    outputs: RwLock<Arc<Outputs>>,
    stats: Arc<PipelineStats>,
    status: watch::Sender<Status>,
    viewers: watch::Sender<usize>,
    counters: Counters,
    /// The source's size when it last streamed, packed: what the
    /// placeholders shown while the camera is down are sized from.
    last_input: AtomicU64,
    cancel: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Every secret of the running configuration: `last_error` and what
    /// [`Camera::info`] shows are masked with them, so a camera's error
    /// that quotes another secret (a token in a URL path) is masked too.
    secrets: KnownSecrets,
}

/// A camera that was streaming is down: its viewers get a placeholder
/// frame every [`PLACEHOLDER_INTERVAL`] until live frames return. Dropping
/// the outage stops the placeholders.
#[derive(Debug)]
struct Outage {
    task: JoinHandle<()>,
}

impl Drop for Outage {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Backs off a failing camera: 0.5 s, 1 s, 2 s, ... up to 30 s.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next: BACKOFF_INITIAL,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }

    fn reset(&mut self) {
        self.next = BACKOFF_INITIAL;
    }
}

/// How one run (a pipeline's or a relay's) ended.
enum Exit {
    Shutdown,
    Reconfigured,
    Idle,
    Failed {
        error: CameraError,
        streamed_for: Duration,
    },
    /// The HTTP source serves single JPEG images: poll it instead.
    SingleImages,
}

impl Exit {
    /// Logs a run's end when it stopped for want of viewers or for a new
    /// configuration (the supervisor reports failures itself).
    fn log_end(&self, idle_timeout: Duration) {
        match self {
            Exit::Idle => info!("no viewers for {idle_timeout:?}: stopped"),
            Exit::Reconfigured => info!("configuration changed: restarting"),
            _ => {}
        }
    }
}

/// What camstream found out about opening a camera that did not say: the
/// RTSP transport and HTTP mode that worked. Kept across restarts (the
/// next start tries them first) until an attempt using them fails before
/// its first frame, or the source changes.
#[derive(Clone, Debug, Default, PartialEq)]
struct Learned {
    /// The source this was learned for.
    source: Option<Source>,
    transport: Option<LowerTransport>,
    snapshots: bool,
    /// A hardware decoder failed: software until the configuration changes
    /// (any change: another source may well decode in hardware).
    decoding: DecoderFallback,
    /// The settings `decoding` was learned for.
    decoding_for: Option<CameraSettings>,
}

impl Learned {
    /// Forgets everything if `settings` name another source, and the
    /// decoder fallback if they differ at all.
    fn follow(&mut self, settings: &CameraSettings) {
        if self.source != settings.source {
            *self = Learned {
                source: settings.source.clone(),
                ..Learned::default()
            };
        }
        if self.decoding_for.as_ref() != Some(settings) {
            self.decoding = DecoderFallback::default();
            self.decoding_for = Some(settings.clone());
        }
    }
}

/// How a plan reads its source, as the API shows it (`Status::transport`).
fn transport_label(plan: &PipelinePlan) -> Option<&'static str> {
    match (&plan.transport, &plan.http) {
        (Some(t), _) => Some(t.as_str()),
        (None, Some(HttpMode::Stream)) => Some("mjpeg"),
        (None, Some(HttpMode::Snapshots { .. })) => Some("snapshots"),
        (None, None) => None,
    }
}

/// "RTSP over TCP", "HTTP snapshots", for messages.
fn transport_phrase(plan: &PipelinePlan) -> Option<String> {
    match (&plan.transport, &plan.http) {
        (Some(t), _) => Some(format!("RTSP over {}", t.name())),
        (None, Some(HttpMode::Stream)) => Some("HTTP MJPEG stream".into()),
        (None, Some(HttpMode::Snapshots { interval, .. })) => {
            Some(format!("HTTP snapshots every {} ms", interval.as_millis()))
        }
        (None, None) => None,
    }
}

impl Camera {
    /// Creates the camera and starts its supervisor on the current runtime.
    /// `secrets` (the running configurations') masks what it shows.
    pub fn spawn(
        id: CameraId,
        configured: Configured,
        parent: &CancellationToken,
        secrets: KnownSecrets,
    ) -> Arc<Camera> {
        let cancel = parent.child_token();
        let outputs = Outputs::new(wanted_outputs(&configured), &cancel);
        let camera = Arc::new(Camera {
            id,
            configured: watch::Sender::new(Arc::new(configured)),
            outputs: RwLock::new(Arc::new(outputs)),
            stats: Arc::new(PipelineStats::default()),
            status: watch::Sender::new(Status::new(State::Idle)),
            viewers: watch::Sender::new(0),
            counters: Counters::default(),
            last_input: AtomicU64::new(0),
            cancel,
            task: Mutex::new(None),
            secrets,
        });
        let span = tracing::info_span!("camera", id = %camera.id);
        let task = tokio::spawn(Arc::clone(&camera).supervise().instrument(span));
        *camera.task.lock().expect("camera task lock") = Some(task);
        camera
    }

    pub fn id(&self) -> &CameraId {
        &self.id
    }

    pub fn configured(&self) -> Arc<Configured> {
        self.configured.borrow().clone()
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    pub fn subscribe_status(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    pub fn viewer_count(&self) -> usize {
        *self.viewers.borrow()
    }

    pub fn stats(&self) -> &PipelineStats {
        &self.stats
    }

    /// The camera's outputs: one per size.
    pub fn outputs(&self) -> Arc<Outputs> {
        Arc::clone(&self.outputs.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Pipelines built so far, and how many of them were restarts.
    pub fn starts(&self) -> (u64, u64) {
        (
            self.counters.starts.load(Ordering::Relaxed),
            self.counters.restarts.load(Ordering::Relaxed),
        )
    }

    /// Replaces the camera's configuration. The supervisor restarts the
    /// pipeline with it; viewers stay attached, except those of a size the
    /// new configuration no longer has, whose streams end.
    pub fn reconfigure(&self, configured: Configured) {
        {
            let mut outputs = self.outputs.write().unwrap_or_else(PoisonError::into_inner);
            *outputs = Arc::new(outputs.reconfigured(wanted_outputs(&configured), &self.cancel));
        }
        self.configured.send_replace(Arc::new(configured));
    }

    /// The output a viewer asks for with `?size=`: none or `default` is
    /// the camera's default size; `full` is for snapshots only.
    pub fn output(&self, size: Option<&str>, snapshot: bool) -> Result<Arc<Output>, SizeError> {
        let outputs = self.outputs();
        let name = size.unwrap_or(DEFAULT_SIZE);
        match outputs.get(name) {
            Some(output) if output.kind() == Kind::Snapshot && !snapshot => {
                Err(SizeError::SnapshotOnly {
                    id: self.id.clone(),
                })
            }
            Some(output) => Ok(Arc::clone(output)),
            // A relayed camera has the upstream's stream sizes, and no
            // `full`: that would need a decode here.
            None if self
                .configured()
                .settings
                .as_ref()
                .is_ok_and(|s| s.relay.is_some()) =>
            {
                Err(SizeError::Unknown {
                    id: self.id.clone(),
                    size: crate::redact::redact_text(name).into_owned(),
                    known: outputs
                        .stream_names()
                        .into_iter()
                        .map(str::to_string)
                        .collect(),
                    full: false,
                })
            }
            None if outputs.get(FULL_SIZE).is_none() => Err(SizeError::OneSize {
                id: self.id.clone(),
                size: crate::redact::redact_text(name).into_owned(),
            }),
            None => Err(SizeError::Unknown {
                id: self.id.clone(),
                size: crate::redact::redact_text(name).into_owned(),
                known: outputs
                    .stream_names()
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
                full: true,
            }),
        }
    }

    /// Registers a viewer of `output` (the camera's `full` for a snapshot
    /// request) unless the camera already has `max_viewers`, starting the
    /// camera if it is idle.
    pub fn try_attach(self: &Arc<Self>, output: &Arc<Output>) -> Result<Viewer, OpenError> {
        let limit = self
            .configured()
            .settings
            .as_ref()
            .map_or(usize::MAX, |s| s.max_viewers);
        // Check and increment in one step, so concurrent viewers cannot
        // overshoot the limit.
        let admitted = self.viewers.send_if_modified(|n| {
            let room = *n < limit;
            if room {
                *n += 1;
            }
            room
        });
        if !admitted {
            return Err(OpenError::TooManyViewers {
                id: self.id.clone(),
                limit,
            });
        }
        output.attach();
        Ok(Viewer {
            frames: output.hub().subscribe(),
            output: Arc::clone(output),
            camera: Arc::clone(self),
        })
    }

    /// Registers a viewer of the default size and waits, at most `wait`,
    /// until there is a frame to show. Fails at once if the camera cannot
    /// start or is full.
    pub async fn open(self: &Arc<Self>, wait: Duration) -> Result<Viewer, OpenError> {
        let default = Arc::clone(self.outputs().default_output());
        self.try_attach(&default)?.ready(wait).await
    }

    /// Cancelled when this camera is shut down (removed, or the server
    /// stops): streams of the camera end with it.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stops the supervisor and waits until the pipeline is NULL.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let task = self.task.lock().expect("camera task lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    fn set_state(&self, state: State) {
        self.status.send_if_modified(|st| {
            if st.state == state {
                return false;
            }
            st.state = state;
            st.since = SystemTime::now();
            st.retry_in = None;
            if state != State::Streaming {
                st.fps = 0.0;
            }
            true
        });
    }

    fn record_error(&self, state: State, error: &CameraError, retry_in: Option<Duration>) {
        // Errors are built from masked parts; `last_error` is shown by the
        // API and in 503s, so mask once more with every secret known.
        let mut redactor = self.secrets.redactor();
        if let Ok(settings) = &self.configured().settings {
            redactor = redactor.union(&settings.redactor());
        }
        let message = redactor.redact(&error.to_string());
        self.status.send_modify(|st| {
            st.state = state;
            st.since = SystemTime::now();
            st.last_error = Some(message.clone());
            st.last_error_at = Some(SystemTime::now());
            st.fps = 0.0;
            st.retry_in = retry_in;
        });
    }

    /// The supervisor: runs the pipeline while it is wanted, retries it
    /// while it fails, until shutdown.
    async fn supervise(self: Arc<Self>) {
        let mut configured = self.configured.subscribe();
        let mut viewers = self.viewers.subscribe();
        let mut backoff = Backoff::new();
        let mut outage: Option<Outage> = None;
        // Whether the next run is a retry after a failure.
        let mut retrying = false;
        let mut learned = Learned::default();
        loop {
            let current = configured.borrow_and_update().clone();
            let settings = match self.check(&current).await {
                Ok(settings) => settings,
                Err(error) => {
                    warn!("camera failed: {error}");
                    self.record_error(State::Failed, &error, None);
                    if self
                        .wait_while_failed(&mut configured, &viewers, &mut outage)
                        .await
                    {
                        continue;
                    }
                    break;
                }
            };
            if !settings.always_on && *viewers.borrow_and_update() == 0 {
                self.go_dark(&mut outage);
                retrying = false;
                self.set_state(State::Idle);
                tokio::select! {
                    _ = self.cancel.cancelled() => break,
                    _ = configured.changed() => continue,
                    r = viewers.wait_for(|n| *n > 0) => if r.is_err() { break },
                }
            }

            if retrying {
                self.counters.restarts.fetch_add(1, Ordering::Relaxed);
            }
            let run = Run {
                settings: &settings,
                viewers: &viewers,
                deadline: Instant::now() + settings.first_frame_timeout,
                retrying,
            };
            let exit = self
                .start(&run, &mut learned, &mut configured, &mut outage)
                .await;
            match exit {
                Exit::Shutdown => break,
                // Handled by start(); not a failure.
                Exit::SingleImages | Exit::Reconfigured | Exit::Idle => {
                    self.go_dark(&mut outage);
                    retrying = false;
                    backoff.reset();
                }
                Exit::Failed {
                    error,
                    streamed_for,
                } => {
                    if streamed_for >= HEALTHY_PERIOD {
                        backoff.reset();
                    }
                    if outage.is_none() {
                        outage = self.begin_outage(&current.name, &viewers);
                    }
                    if error.is_permanent() {
                        warn!("camera failed: {error}");
                        self.record_error(State::Failed, &error, None);
                        if self
                            .wait_while_failed(&mut configured, &viewers, &mut outage)
                            .await
                        {
                            retrying = false;
                            continue;
                        }
                        break;
                    }
                    let delay = backoff.next_delay();
                    warn!(
                        retry_in_ms = delay.as_millis() as u64,
                        "camera error: {error}"
                    );
                    self.record_error(State::Reconnecting, &error, Some(delay));
                    retrying = true;
                    tokio::select! {
                        _ = self.cancel.cancelled() => break,
                        _ = configured.changed() => { retrying = false; continue },
                        // Nobody watching any more: stop retrying (the top
                        // of the loop goes idle).
                        _ = idle_for(viewers.clone(), settings.idle_timeout), if !settings.always_on => continue,
                        _ = sleep(delay) => {}
                    }
                }
            }
        }
        drop(outage);
        self.outputs().clear();
        self.set_state(State::Stopped);
    }

    /// The settings of a configuration, with its pipeline checked once
    /// (parsed, elements installed, appsink present) so a broken camera is
    /// `failed` from the start instead of at its first viewer.
    async fn check(&self, configured: &Configured) -> Result<CameraSettings, CameraError> {
        let settings = configured.settings.clone().map_err(CameraError::Config)?;
        if settings.relay.is_some() {
            // No pipeline: the frames come from the upstream as they are.
            return Ok(settings);
        }
        let plan = settings
            .plan()
            .map_err(|e| CameraError::Config(e.to_string()))?;
        let redactor = settings.redactor();
        tokio::task::spawn_blocking(move || Pipeline::validate(&plan))
            .await
            .map_err(|e| CameraError::Internal(e.to_string()))?
            .map_err(|e| match e {
                PipelineError::Syntax(text) => PipelineError::Syntax(redactor.redact(&text)),
                other => other,
            })?;
        Ok(settings)
    }

    /// Waits in `failed` until the configuration changes (true) or the
    /// camera shuts down (false). Placeholders stop once nobody watches.
    async fn wait_while_failed(
        &self,
        configured: &mut watch::Receiver<Arc<Configured>>,
        viewers: &watch::Receiver<usize>,
        outage: &mut Option<Outage>,
    ) -> bool {
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return false,
                _ = configured.changed() => return true,
                _ = idle_for(viewers.clone(), Duration::ZERO), if outage.is_some() => {
                    *outage = None;
                    self.outputs().clear();
                }
            }
        }
    }

    /// Starts showing viewers a placeholder, if there are viewers and the
    /// camera has streamed (so the source's size is known): each watched
    /// size gets one at its own output size. Otherwise clears the newest
    /// frames, so nobody is shown a stale picture as live.
    fn begin_outage(&self, name: &str, viewers: &watch::Receiver<usize>) -> Option<Outage> {
        let outputs = self.outputs();
        // The pipeline's own note of the size when the run ended before
        // its first frame was noticed (the first-frame check is a tick: a
        // camera can deliver a frame to a viewer and die before it).
        let source = unpack_size(self.last_input.load(Ordering::Relaxed)).or_else(|| {
            let seen = self.stats.input();
            if let Some((w, h)) = seen {
                self.last_input.store(pack_size(w, h), Ordering::Relaxed);
            }
            seen
        });
        let (Some(source), true) = (source, *viewers.borrow() > 0) else {
            outputs.clear();
            return None;
        };
        let now = SystemTime::now();
        self.status.send_modify(|st| st.offline_since = Some(now));
        let local = chrono::DateTime::<chrono::Local>::from(now).format("%H:%M:%S");
        let text = format!("{name}\nOFFLINE since {local}\nreconnecting…");
        let began = Instant::now();
        let task = tokio::spawn(
            async move {
                // Drawn once per output size, when a size of that output
                // size first has a viewer (None: it could not be drawn).
                let mut drawn: Vec<((u32, u32), Option<bytes::Bytes>)> = Vec::new();
                let mut tick = tokio::time::interval(PLACEHOLDER_INTERVAL);
                loop {
                    tick.tick().await;
                    for output in outputs.iter() {
                        if output.kind() != Kind::Stream || output.viewers() == 0 {
                            continue;
                        }
                        // A size that is live again is left alone.
                        let live = output
                            .hub()
                            .latest()
                            .is_some_and(|f| f.is_live() && f.captured_at > began);
                        if live {
                            continue;
                        }
                        let (width, height) =
                            crate::pipeline::scaled_size(source.0, source.1, output.spec().scale);
                        let jpeg = match drawn.iter().find(|(size, _)| *size == (width, height)) {
                            Some((_, jpeg)) => jpeg.clone(),
                            None => {
                                let text = text.clone();
                                let rendered = tokio::task::spawn_blocking(move || {
                                    render_placeholder(width, height, &text)
                                })
                                .await;
                                let jpeg = match rendered {
                                    Ok(Ok(jpeg)) => Some(jpeg),
                                    Ok(Err(e)) => {
                                        warn!("cannot draw the offline placeholder: {e}");
                                        None
                                    }
                                    Err(_) => return,
                                };
                                drawn.push(((width, height), jpeg.clone()));
                                jpeg
                            }
                        };
                        let Some(jpeg) = jpeg else {
                            output.hub().clear();
                            continue;
                        };
                        output
                            .hub()
                            .publish(jpeg, width, height, FrameKind::Placeholder);
                    }
                }
            }
            .in_current_span(),
        );
        Some(Outage { task })
    }

    /// Not running (idle, or restarting with a new configuration): no
    /// placeholders, no stale newest frame, not "offline".
    fn go_dark(&self, outage: &mut Option<Outage>) {
        *outage = None;
        self.outputs().clear();
        self.end_outage();
    }

    /// The first frame of a run: the outage (if any) is over, its size is
    /// what later placeholders are drawn at, and the camera streams.
    fn mark_streaming(&self, outage: &mut Option<Outage>) {
        *outage = None;
        self.end_outage();
        if let Some((w, h)) = self.stats.input() {
            self.last_input.store(pack_size(w, h), Ordering::Relaxed);
        }
        self.set_state(State::Streaming);
    }

    /// The frame rate a run measured, in the API when it moved.
    fn show_fps(&self, fps: f64) {
        self.status.send_if_modified(|st| {
            let changed = (st.fps - fps).abs() > 0.05;
            st.fps = fps;
            changed
        });
    }

    /// Live again (or stopped): no longer offline.
    fn end_outage(&self) {
        self.status
            .send_if_modified(|st| st.offline_since.take().is_some());
    }

    /// A hardware decoder failed: the camera decodes in software from now
    /// on. Said once per configuration, in the log and the API.
    fn fell_back(&self, decoding: &DecoderFallback) {
        if let Some(failure) = decoding.reason() {
            warn!("{failure}: decoding in software until the camera's configuration changes");
        }
        self.show_fallback(decoding);
    }

    fn show_fallback(&self, decoding: &DecoderFallback) {
        let fallback = decoding.reason().map(HardwareFailure::to_string);
        self.status.send_if_modified(|st| {
            let changed = st.decoder_fallback != fallback;
            st.decoder_fallback = fallback;
            changed
        });
    }

    /// At the first frame: which decoder the pipeline uses, and whether a
    /// hardware one failed to start before it (decodebin then plugs the
    /// next decoder by itself, and the camera streams already).
    fn note_decoder(&self, pipeline: &Pipeline, decoding: &mut DecoderFallback) {
        let in_use = pipeline.decoders().in_use();
        self.status.send_if_modified(|st| {
            let changed = st.decoder_in_use != in_use;
            st.decoder_in_use = in_use;
            changed
        });
        if let Some(failure) = pipeline.decoders().failed_to_start()
            && decoding.fall_back(failure)
        {
            self.fell_back(decoding);
        }
    }

    /// One (re)start: opens the camera, moving on at once to the next RTSP
    /// transport when the server refuses one, or to polling snapshots when
    /// an HTTP source answers with a single image, until an attempt streams
    /// or fails with an error to report. These are not failures: no
    /// back-off, no `reconnecting`. The first frame is due
    /// `first_frame_timeout` after the (re)start, however many attempts
    /// that takes.
    async fn start(
        &self,
        run: &Run<'_>,
        learned: &mut Learned,
        configured: &mut watch::Receiver<Arc<Configured>>,
        outage: &mut Option<Outage>,
    ) -> Exit {
        if let Some(relay) = &run.settings.relay {
            return self.run_relay(run, relay, configured, outage).await;
        }
        let mut run = *run;
        let settings = run.settings;
        learned.follow(settings);
        self.show_fallback(&learned.decoding);
        let source = settings.source.as_ref();
        let mut walk = TransportFallback::new(
            matches!(source, Some(Source::Rtsp { .. })),
            settings.transport,
            source.and_then(Source::forced_transport),
            learned.transport,
        );
        loop {
            let attempt = Attempt {
                transport: walk.current(),
                snapshots: learned.snapshots,
                software_decoding: learned.decoding.software(),
            };
            let exit = self
                .run_once(&run, attempt, learned, configured, outage)
                .await;
            // A hardware decoder failed, before or after the first frame:
            // again at once in software, with a first frame due anew.
            let exit = match exit {
                Exit::Failed {
                    error: CameraError::Pipeline(error),
                    streamed_for,
                } => match learned.decoding.failed(error) {
                    None => {
                        self.fell_back(&learned.decoding);
                        run.deadline = Instant::now() + settings.first_frame_timeout;
                        continue;
                    }
                    Some(error) => Exit::Failed {
                        error: error.into(),
                        streamed_for,
                    },
                },
                other => other,
            };
            let (error, streamed_for) = match exit {
                Exit::SingleImages if !attempt.snapshots => {
                    info!(
                        "the HTTP source answered with a single JPEG image: polling it for snapshots"
                    );
                    learned.snapshots = true;
                    continue;
                }
                Exit::Failed {
                    error,
                    streamed_for,
                } if streamed_for.is_zero() => (error, streamed_for),
                other => return other,
            };
            // Failed before its first frame: what this attempt relied on is
            // no longer known to work.
            learned.transport = None;
            learned.snapshots = false;
            let CameraError::Pipeline(error) = error else {
                return Exit::Failed {
                    error,
                    streamed_for,
                };
            };
            let failure = error.to_string();
            match walk.failed(error) {
                None => info!(
                    "{failure}: trying RTP over {}",
                    walk.current().map_or("?", LowerTransport::name)
                ),
                Some(error) => {
                    return Exit::Failed {
                        error: error.into(),
                        streamed_for,
                    };
                }
            }
        }
    }

    /// Builds, runs and always tears down one pipeline.
    async fn run_once(
        &self,
        run: &Run<'_>,
        attempt: Attempt,
        learned: &mut Learned,
        configured: &mut watch::Receiver<Arc<Configured>>,
        outage: &mut Option<Outage>,
    ) -> Exit {
        let Run {
            settings,
            viewers,
            deadline,
            retrying,
        } = *run;
        // A retry stays `reconnecting` until it delivers a frame.
        if !retrying {
            self.set_state(State::Starting);
        }
        self.counters.starts.fetch_add(1, Ordering::Relaxed);
        self.stats.input_size.store(0, Ordering::Relaxed);
        let failed = |error: CameraError| Exit::Failed {
            error,
            streamed_for: Duration::ZERO,
        };
        let plan = match settings.plan_attempt(attempt) {
            Ok(plan) => plan,
            Err(e) => return failed(CameraError::Config(e.to_string())),
        };
        let loop_on_eos = plan.loop_on_eos;
        let label = transport_label(&plan);
        let via = transport_phrase(&plan);
        self.status.send_if_modified(|st| {
            let changed = st.transport != label;
            st.transport = label;
            changed
        });
        let outputs = self.outputs();
        outputs.restart();
        let output = FrameOutput {
            outputs,
            stats: Arc::clone(&self.stats),
        };
        let redactor: Redactor = settings.redactor();
        let built = tokio::task::spawn_blocking(move || {
            let pipeline = Pipeline::build(&plan, output, redactor)?;
            // On a failed start the pipeline is dropped here, which sets it
            // to NULL on this blocking thread.
            pipeline.start()?;
            Ok::<_, PipelineError>(pipeline)
        })
        .await;
        let pipeline = match built {
            Ok(Ok(pipeline)) => Arc::new(pipeline),
            Ok(Err(e)) => return failed(e.into()),
            Err(e) => return failed(CameraError::Internal(e.to_string())),
        };
        info!(
            source = %settings.source_display(),
            transport = label.unwrap_or("-"),
            "pipeline started"
        );

        let mut events = pipeline.events();
        let mut streaming_since: Option<Instant> = None;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut first_frame_tick = tokio::time::interval(FIRST_FRAME_TICK);
        let started = Instant::now();
        // Frames reaching camstream, whether or not a size needs them: a
        // camera nobody watches (always_on) is as alive as a watched one.
        let mut progress = Progress::new(self.stats.source_frames.load(Ordering::Relaxed));
        let idle = idle_for(viewers.clone(), settings.idle_timeout);
        tokio::pin!(idle);
        let streamed_for =
            |since: Option<Instant>| since.map_or(Duration::ZERO, |t: Instant| t.elapsed());

        let exit = loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break Exit::Shutdown,
                _ = configured.changed() => break Exit::Reconfigured,
                event = events.next() => match event {
                    Some(PipelineEvent::Error(e)) => break Exit::Failed {
                        error: e.into(),
                        streamed_for: streamed_for(streaming_since),
                    },
                    Some(PipelineEvent::EndOfStream) if loop_on_eos => {
                        let p = Arc::clone(&pipeline);
                        match tokio::task::spawn_blocking(move || p.rewind()).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => break failed(e.into()),
                            Err(e) => break failed(CameraError::Internal(e.to_string())),
                        }
                    }
                    Some(PipelineEvent::EndOfStream) => break Exit::Failed {
                        error: CameraError::EndOfStream,
                        streamed_for: streamed_for(streaming_since),
                    },
                    Some(PipelineEvent::SingleImages) => break Exit::SingleImages,
                    None => break failed(CameraError::Internal("the pipeline's bus closed".into())),
                },
                _ = first_frame_tick.tick(), if streaming_since.is_none() => {
                    if progress.started(self.stats.source_frames.load(Ordering::Relaxed)) {
                        streaming_since = Some(Instant::now());
                        learned.transport = attempt.transport;
                        self.mark_streaming(outage);
                        self.note_decoder(&pipeline, &mut learned.decoding);
                        info!(
                            input = ?self.stats.input(),
                            decoder = pipeline.decoders().in_use().map_or_else(|| "-".into(), |d| d.name),
                            after_ms = started.elapsed().as_millis() as u64, "first frame"
                        );
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    progress.tick(self.stats.source_frames.load(Ordering::Relaxed), now);
                    // Two bounds: the first frame of a (re)start, however slow
                    // the camera is to start, is due by the deadline; once
                    // frames flow, the watchdog catches a stall.
                    let error = match streaming_since {
                        Some(_) if progress.stalled_for(now) >= settings.watchdog => {
                            Some(CameraError::Stalled(settings.watchdog))
                        }
                        // Overdue with a hardware decoder that takes frames
                        // but gives none: the decoder, not the camera.
                        None if now >= deadline => Some(match pipeline.decoders().stalled() {
                            Some(failure) => PipelineError::HardwareDecoder(failure).into(),
                            None => CameraError::NoFirstFrame {
                                after: settings.first_frame_timeout,
                                via: via.clone(),
                            },
                        }),
                        _ => None,
                    };
                    if let Some(error) = error {
                        break Exit::Failed { error, streamed_for: streamed_for(streaming_since) };
                    }
                    if let Some(fps) = progress.fps(now) {
                        self.show_fps(fps);
                    }
                }
                _ = &mut idle, if !settings.always_on => break Exit::Idle,
            }
        };

        // Every exit path ends here: NULL state releases the source's
        // sockets or device and joins the streaming threads.
        let p = Arc::clone(&pipeline);
        if let Err(e) = tokio::task::spawn_blocking(move || p.stop()).await {
            warn!("pipeline stop panicked: {e}");
        }
        drop(events);
        drop(pipeline);
        exit.log_end(settings.idle_timeout);
        exit
    }
}

impl Camera {
    /// One run of a relay camera: pulls the upstream's stream of each size
    /// that has viewers here (`?size=NAME`; the default size also while
    /// `always_on`) into that size's hub, starting and stopping pulls as
    /// sizes are watched and left, until a pull fails or stalls, the last
    /// viewer has been gone for `idle_timeout`, or the camera is
    /// reconfigured or shut down. The same states, bounds and back-off as
    /// a pipeline's run; the outage placeholders are the supervisor's, as
    /// for any camera.
    async fn run_relay(
        &self,
        run: &Run<'_>,
        relay: &RelaySource,
        configured: &mut watch::Receiver<Arc<Configured>>,
        outage: &mut Option<Outage>,
    ) -> Exit {
        let Run {
            settings,
            viewers,
            deadline,
            retrying,
        } = *run;
        if !retrying {
            self.set_state(State::Starting);
        }
        self.counters.starts.fetch_add(1, Ordering::Relaxed);
        self.stats.input_size.store(0, Ordering::Relaxed);
        self.status.send_if_modified(|st| {
            let changed = st.transport != Some("mjpeg");
            st.transport = Some("mjpeg");
            changed
        });
        info!(source = %settings.source_display(), "relay started");
        let (failed_tx, mut failed_rx) = tokio::sync::mpsc::unbounded_channel::<UpstreamError>();
        // Each size's pull, and since when nobody watches that size.
        let mut pulls: HashMap<String, (AbortOnDropHandle<()>, Option<Instant>)> = HashMap::new();
        let mut streaming_since: Option<Instant> = None;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut first_frame_tick = tokio::time::interval(FIRST_FRAME_TICK);
        let mut progress = Progress::new(self.stats.source_frames.load(Ordering::Relaxed));
        let idle = idle_for(viewers.clone(), settings.idle_timeout);
        tokio::pin!(idle);
        let mut viewers = viewers.clone();
        let streamed_for = |since: Option<Instant>| since.map_or(Duration::ZERO, |t| t.elapsed());
        let exit = loop {
            // The pulls follow the watched sizes: a size's pull starts with
            // its first viewer and stops `idle_timeout` after its last, as
            // a camera's pipeline does.
            let outputs = self.outputs();
            let watched =
                |i: usize, output: &Output| output.viewers() > 0 || (settings.always_on && i == 0);
            let now = Instant::now();
            pulls.retain(|name, (_, unwatched)| {
                let Some((i, output)) = outputs.iter().enumerate().find(|(_, o)| o.name() == name)
                else {
                    return false;
                };
                if watched(i, output) {
                    *unwatched = None;
                    return true;
                }
                now - *unwatched.get_or_insert(now) < settings.idle_timeout
            });
            for (i, output) in outputs.iter().enumerate() {
                if !watched(i, output) || pulls.contains_key(output.name()) {
                    continue;
                }
                let size = (i > 0).then(|| output.name().to_string());
                let task = tokio::spawn(
                    relay_pull(
                        relay.clone(),
                        size,
                        Arc::clone(output),
                        Arc::clone(&self.stats),
                        failed_tx.clone(),
                    )
                    .in_current_span(),
                );
                pulls.insert(
                    output.name().to_string(),
                    (AbortOnDropHandle::new(task), None),
                );
            }
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break Exit::Shutdown,
                _ = configured.changed() => break Exit::Reconfigured,
                Some(error) = failed_rx.recv() => break Exit::Failed {
                    error: CameraError::Upstream(error),
                    streamed_for: streamed_for(streaming_since),
                },
                _ = viewers.changed() => {}
                _ = first_frame_tick.tick(), if streaming_since.is_none() => {
                    if progress.started(self.stats.source_frames.load(Ordering::Relaxed)) {
                        streaming_since = Some(Instant::now());
                        self.mark_streaming(outage);
                        info!(input = ?self.stats.input(), "first frame from the upstream");
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    if progress.tick(self.stats.source_frames.load(Ordering::Relaxed), now) {
                        // The upstream's placeholders size ours too.
                        if let Some((w, h)) = self.stats.input() {
                            self.last_input.store(pack_size(w, h), Ordering::Relaxed);
                        }
                    }
                    let error = match streaming_since {
                        Some(_) if progress.stalled_for(now) >= settings.watchdog => {
                            Some(CameraError::Stalled(settings.watchdog))
                        }
                        None if now >= deadline => Some(CameraError::NoFirstFrame {
                            after: settings.first_frame_timeout,
                            via: Some(format!("relayed from upstream {}", relay.upstream.name)),
                        }),
                        _ => None,
                    };
                    if let Some(error) = error {
                        break Exit::Failed { error, streamed_for: streamed_for(streaming_since) };
                    }
                    if let Some(fps) = progress.fps(now) {
                        self.show_fps(fps);
                    }
                }
                _ = &mut idle, if !settings.always_on => break Exit::Idle,
            }
        };
        // Every pull ends with the run.
        drop(pulls);
        exit.log_end(settings.idle_timeout);
        exit
    }
}

/// A run's frame count as the supervisor reads it every tick, the same
/// for a pipeline and a relay's pulls: whether the first frame came,
/// since when no frame came (the watchdog), and the frame rate over the
/// last second or more.
struct Progress {
    first_count: u64,
    last_count: u64,
    last_progress: Instant,
    fps_window: (Instant, u64),
}

impl Progress {
    fn new(count: u64) -> Progress {
        let now = Instant::now();
        Progress {
            first_count: count,
            last_count: count,
            last_progress: now,
            fps_window: (now, count),
        }
    }

    /// Whether a frame came since the run started.
    fn started(&self, count: u64) -> bool {
        count != self.first_count
    }

    /// Takes the count at `now`; whether it moved since the last tick.
    fn tick(&mut self, count: u64, now: Instant) -> bool {
        let moved = count != self.last_count;
        if moved {
            self.last_count = count;
            self.last_progress = now;
        }
        moved
    }

    fn stalled_for(&self, now: Instant) -> Duration {
        now - self.last_progress
    }

    /// Frames per second since the last figure, once a second has passed.
    fn fps(&mut self, now: Instant) -> Option<f64> {
        let (since, count) = self.fps_window;
        let elapsed = now - since;
        if elapsed < Duration::from_secs(1) {
            return None;
        }
        self.fps_window = (now, self.last_count);
        Some((self.last_count - count) as f64 / elapsed.as_secs_f64())
    }
}

/// One size's pull of a relayed camera: each live frame into the size's
/// output (counted as a source frame, which is what the supervisor's
/// first-frame, watchdog and fps read), the upstream's placeholders
/// passed on as placeholders; the error that ends it to `failed`.
async fn relay_pull(
    relay: RelaySource,
    size: Option<String>,
    output: Arc<Output>,
    stats: Arc<PipelineStats>,
    failed: tokio::sync::mpsc::UnboundedSender<UpstreamError>,
) {
    let scale = output.spec().scale;
    let result = upstream::pull(
        &relay,
        size.as_deref(),
        |frame| match frame.kind {
            FrameKind::Live => {
                stats.source_frames.fetch_add(1, Ordering::Relaxed);
                // The source's size, as the upstream's scale implies: what
                // the placeholders of every size are sized from.
                let source = |v: u32| (f64::from(v) / scale).round() as u32;
                stats.input_size.store(
                    pack_size(source(frame.width), source(frame.height)),
                    Ordering::Relaxed,
                );
                output.stats().frames_in.fetch_add(1, Ordering::Relaxed);
                output.publish(frame.jpeg, frame.width, frame.height);
            }
            FrameKind::Placeholder => {
                if output.viewers() > 0 {
                    output.hub().publish(
                        frame.jpeg,
                        frame.width,
                        frame.height,
                        FrameKind::Placeholder,
                    );
                }
            }
        },
        || {
            output.stats().frames_in.fetch_add(1, Ordering::Relaxed);
        },
    )
    .await;
    let error = match result {
        Err(e) => e,
        Ok(()) => UpstreamError::Ended {
            upstream: relay.upstream.name.clone(),
        },
    };
    let _ = failed.send(error);
}

/// What every attempt of one (re)start shares.
#[derive(Clone, Copy)]
struct Run<'a> {
    settings: &'a CameraSettings,
    viewers: &'a watch::Receiver<usize>,
    /// When the first frame is due.
    deadline: Instant,
    /// Whether this (re)start is a retry after a failure.
    retrying: bool,
}

/// Resolves once there have been no viewers for `idle` without a break.
async fn idle_for(mut viewers: watch::Receiver<usize>, idle: Duration) {
    loop {
        if viewers.wait_for(|n| *n == 0).await.is_err() {
            return std::future::pending().await;
        }
        tokio::select! {
            _ = sleep(idle) => return,
            r = viewers.changed() => if r.is_err() { return std::future::pending().await },
        }
    }
}

/// A viewer of one of a camera's sizes: keeps the camera running, and
/// that size's branch open, while it exists.
#[derive(Debug)]
pub struct Viewer {
    frames: FrameReceiver,
    output: Arc<Output>,
    camera: Arc<Camera>,
}

impl Viewer {
    pub fn frames(&mut self) -> &mut FrameReceiver {
        &mut self.frames
    }

    /// The size this viewer watches.
    pub fn output(&self) -> &Arc<Output> {
        &self.output
    }

    /// Cancelled when the camera shuts down or this size is removed from
    /// it: the viewer's stream ends.
    pub fn cancel_token(&self) -> CancellationToken {
        self.output.cancel_token()
    }

    /// Waits, at most `wait`, until the camera has a frame to show. Fails
    /// at once if it cannot start; the viewer is released on failure.
    pub async fn ready(self, wait: Duration) -> Result<Viewer, OpenError> {
        let mut frames = self.frames.clone();
        self.wait_for_frame(&mut frames, wait, |frame| frame.is_some())
            .await
            .map(|()| self)
    }

    /// The frame a snapshot answers with, waiting at most `wait`: for the
    /// `full` size one made for this request (shared with every request
    /// waiting at that moment, or the one already made from the source's
    /// current frame); for any other size its newest live frame.
    pub async fn snapshot(self, wait: Duration) -> Result<Arc<Frame>, OpenError> {
        let mut frames = match self.output.kind() {
            Kind::Snapshot => {
                let current = self.camera.stats.source_frames.load(Ordering::Relaxed);
                match self.output.request(current) {
                    Request::Ready(frame) => return Ok(frame),
                    Request::Wait(frames) => frames,
                }
            }
            Kind::Stream => self.frames.clone(),
        };
        self.wait_for_frame(&mut frames, wait, |frame| {
            frame.as_ref().is_some_and(|f| f.is_live())
        })
        .await?;
        let frame = frames.borrow().clone();
        frame
            .filter(|f| f.is_live())
            .ok_or_else(|| OpenError::Unavailable {
                id: self.camera.id.clone(),
                reason: "the camera is offline".into(),
            })
    }

    /// Waits until `frames` holds a frame `done` accepts, the camera fails,
    /// or `wait` passes.
    async fn wait_for_frame(
        &self,
        frames: &mut FrameReceiver,
        wait: Duration,
        done: impl Fn(&Option<Arc<Frame>>) -> bool,
    ) -> Result<(), OpenError> {
        let camera = &self.camera;
        let mut status = camera.status.subscribe();
        let outcome = timeout(wait, async {
            loop {
                if done(&frames.borrow_and_update()) {
                    return Ok(());
                }
                {
                    let st = status.borrow_and_update();
                    match st.state {
                        State::Failed | State::Reconnecting => {
                            return Err(st
                                .last_error
                                .clone()
                                .unwrap_or_else(|| "the camera failed to start".into()));
                        }
                        State::Stopped => return Err("the server is shutting down".into()),
                        State::Idle | State::Starting | State::Streaming => {}
                    }
                }
                tokio::select! {
                    r = frames.changed() => if r.is_err() { return Err("camera removed".into()) },
                    r = status.changed() => if r.is_err() { return Err("camera removed".into()) },
                }
            }
        })
        .await;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(OpenError::Unavailable {
                id: camera.id.clone(),
                reason,
            }),
            Err(_) => Err(OpenError::Timeout {
                id: camera.id.clone(),
                wait,
            }),
        }
    }

    pub fn camera(&self) -> &Arc<Camera> {
        &self.camera
    }

    /// Splits into the frame receiver and a guard that holds the viewer's
    /// place until dropped.
    pub fn into_parts(self) -> (FrameReceiver, ViewerGuard) {
        let frames = self.frames.clone();
        (frames, ViewerGuard(self))
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.output.detach();
        self.camera
            .viewers
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Holds a viewer's place (see [`Viewer::into_parts`]).
#[derive(Debug)]
pub struct ViewerGuard(#[allow(dead_code)] Viewer);

/// A camera as the JSON API shows it. Every secret in its strings is
/// masked.
#[derive(Clone, Debug, Serialize)]
pub struct CameraInfo {
    pub id: CameraId,
    pub name: String,
    pub source: String,
    pub kind: Option<&'static str>,
    pub state: State,
    pub since: String,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub retry_in_s: Option<f64>,
    pub offline_since: Option<String>,
    /// How frames come from the source: `tcp`/`udp` (RTSP), `mjpeg` or
    /// `snapshots` (HTTP); None for other sources and before the first run.
    pub transport: Option<&'static str>,
    pub decoder: DecoderInfo,
    pub input: Option<Resolution>,
    pub output: Option<Resolution>,
    pub fps: f64,
    pub viewers: usize,
    pub scale: Option<f64>,
    pub quality: Option<u8>,
    pub max_fps: Option<u32>,
    pub always_on: Option<bool>,
    pub starts: u64,
    pub restarts: u64,
    /// Frames from the source that reached camstream.
    pub frames_in: u64,
    /// Frames published over all sizes (encoded or passed through).
    pub frames_out: u64,
    /// Frames the sizes' leaky queues dropped to stay current.
    pub frames_dropped: u64,
    pub urls: CameraUrls,
    /// `default`, the camera's own sizes in name order, then `full`.
    pub sizes: Vec<SizeInfo>,
}

/// One size of a camera, as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct SizeInfo {
    pub name: String,
    pub scale: f64,
    pub quality: u8,
    /// The source's own JPEG frames go out as they are: no decode, no
    /// encode (a JPEG source at scale 1).
    pub passthrough: bool,
    /// The frames' size now: scale x the source's real size, while the
    /// camera runs.
    pub output: Option<Resolution>,
    pub viewers: usize,
    /// Frames published (each encoded once for all its viewers, or passed
    /// through).
    pub frames_out: u64,
    pub frames_dropped: u64,
    pub urls: SizeUrls,
}

#[derive(Clone, Debug, Serialize)]
pub struct SizeUrls {
    /// None for `full`, which is for snapshots only.
    pub stream: Option<String>,
    pub snapshot: String,
    pub display: Option<String>,
}

/// How a camera decodes, as the API shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DecoderInfo {
    /// The `decoder` setting; None for a camera whose settings are invalid.
    pub setting: Option<&'static str>,
    /// The video decoder of the last run that delivered a frame (e.g.
    /// `avdec_h264`, `vah264dec`); None before that, and for sources that
    /// decode nothing (test patterns, raw webcams).
    pub in_use: Option<String>,
    /// Whether `in_use` is a hardware decoder.
    pub hardware: bool,
    /// Why the camera decodes in software although its setting allows
    /// hardware: the hardware decoder's failure. It stays in software
    /// until its configuration changes or camstream restarts.
    pub fallback: Option<String>,
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct Resolution {
    pub width: u32,
    pub height: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct CameraUrls {
    pub stream: String,
    pub snapshot: String,
    pub display: String,
}

impl Camera {
    /// This camera as the API shows it.
    pub fn info(&self) -> CameraInfo {
        let configured = self.configured();
        let status = self.status();
        let settings = configured.settings.as_ref().ok();
        let resolution =
            |s: Option<(u32, u32)>| s.map(|(width, height)| Resolution { width, height });
        let running = matches!(status.state, State::Starting | State::Streaming);
        let input = running.then(|| self.stats.input()).flatten();
        let outputs = self.outputs();
        let sizes: Vec<SizeInfo> = outputs
            .iter()
            .map(|o| size_info(&self.id, o, input))
            .collect();
        let frames_out = sizes.iter().map(|s| s.frames_out).sum();
        let frames_dropped = sizes.iter().map(|s| s.frames_dropped).sum();
        let (starts, restarts) = self.starts();
        let id = self.id.as_str();
        // Masked here, once, for everything that shows a camera.
        let secrets = self.secrets.redactor();
        CameraInfo {
            id: self.id.clone(),
            name: secrets.redact(&configured.name),
            source: secrets.redact(
                &settings
                    .map(CameraSettings::source_display)
                    .unwrap_or_default(),
            ),
            kind: match settings {
                Some(s) if s.relay.is_some() => Some("relay"),
                Some(s) => s.source.as_ref().map(|s| s.kind()),
                None => None,
            },
            state: status.state,
            since: rfc3339(status.since),
            last_error: status.last_error.as_deref().map(|e| secrets.redact(e)),
            last_error_at: status.last_error_at.map(rfc3339),
            retry_in_s: status.retry_in.map(|d| d.as_secs_f64()),
            offline_since: status.offline_since.map(rfc3339),
            transport: status.transport,
            decoder: DecoderInfo {
                setting: settings.map(|s| s.decoder.as_str()),
                in_use: status.decoder_in_use.as_ref().map(|d| d.name.clone()),
                hardware: status.decoder_in_use.as_ref().is_some_and(|d| d.hardware),
                fallback: status
                    .decoder_fallback
                    .as_deref()
                    .map(|f| secrets.redact(f)),
            },
            input: resolution(input),
            output: sizes.first().and_then(|s| s.output),
            fps: (status.fps * 10.0).round() / 10.0,
            viewers: self.viewer_count(),
            // A relay camera passes the upstream's JPEGs on: its own scale
            // and quality do not apply.
            scale: settings.filter(|s| s.relay.is_none()).map(|s| s.scale),
            quality: settings.filter(|s| s.relay.is_none()).map(|s| s.quality),
            max_fps: settings.and_then(|s| s.max_fps),
            always_on: settings.map(|s| s.always_on),
            starts,
            restarts,
            frames_in: self.stats.source_frames.load(Ordering::Relaxed),
            frames_out,
            frames_dropped,
            urls: CameraUrls {
                stream: format!("/api/cameras/{id}/stream.mjpeg"),
                snapshot: format!("/api/cameras/{id}/snapshot.jpg"),
                display: format!("/api/cv/display?camera_id={id}"),
            },
            sizes,
        }
    }
}

/// One output as the API shows it; `input` is the source's real size
/// while the camera runs.
fn size_info(id: &CameraId, output: &Output, input: Option<(u32, u32)>) -> SizeInfo {
    let spec = output.spec();
    let name = output.name();
    let query = if name == DEFAULT_SIZE {
        String::new()
    } else {
        format!("size={name}")
    };
    let with = |base: String, sep: char| {
        if query.is_empty() {
            base
        } else {
            format!("{base}{sep}{query}")
        }
    };
    let stream = output.kind() == Kind::Stream;
    let passthrough = output.is_passthrough();
    SizeInfo {
        name: name.to_string(),
        scale: spec.scale,
        quality: spec.quality,
        passthrough,
        output: input.map(|(w, h)| {
            let (width, height) = if passthrough {
                (w, h)
            } else {
                crate::pipeline::scaled_size(w, h, spec.scale)
            };
            Resolution { width, height }
        }),
        viewers: output.viewers(),
        frames_out: output.stats().frames_out.load(Ordering::Relaxed),
        frames_dropped: output.stats().frames_dropped(),
        urls: SizeUrls {
            stream: stream.then(|| with(format!("/api/cameras/{id}/stream.mjpeg"), '?')),
            snapshot: with(format!("/api/cameras/{id}/snapshot.jpg"), '?'),
            display: stream.then(|| with(format!("/api/cv/display?camera_id={id}"), '&')),
        },
    }
}

/// The outputs a configuration asks for. A camera that cannot run gets
/// its default size, so its viewers are told why it cannot run.
fn wanted_outputs(configured: &Configured) -> Vec<Wanted> {
    match &configured.settings {
        // A relayed camera has the upstream's stream sizes; no `full`,
        // which would need a decode here.
        Ok(settings) if settings.relay.is_some() => Outputs::wanted(settings, true)
            .into_iter()
            .filter(|w| w.kind == Kind::Stream)
            .collect(),
        Ok(settings) => {
            let managed = settings.plan().map_or(true, |p| p.managed);
            Outputs::wanted(settings, managed)
        }
        Err(_) => Outputs::wanted_for(DEFAULT_SCALE, DEFAULT_QUALITY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let mut b = Backoff::new();
        let delays: Vec<_> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
        b.reset();
        assert_eq!(b.next_delay(), BACKOFF_INITIAL);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_waits_for_a_continuous_quiet_period() {
        let (tx, rx) = watch::channel(1usize);
        let idle = tokio::spawn(idle_for(rx, Duration::from_secs(10)));
        sleep(Duration::from_secs(20)).await;
        assert!(!idle.is_finished(), "a viewer is still attached");
        tx.send_replace(0);
        sleep(Duration::from_secs(6)).await;
        tx.send_replace(1);
        tx.send_replace(0);
        sleep(Duration::from_secs(6)).await;
        assert!(
            !idle.is_finished(),
            "the quiet period restarted when a viewer came and went"
        );
        sleep(Duration::from_secs(5)).await;
        assert!(idle.is_finished());
    }
}
