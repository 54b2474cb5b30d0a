//! In-process RTSP "camera" for integration tests, built on gst-rtsp-server.
//!
//! Each [`RtspServer`] owns a private glib `MainContext` driven by a dedicated
//! thread, so servers work the same from sync and tokio tests and several can
//! coexist in one test process without touching the global default context.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_rtsp_server as gst_rtsp_server;
use gstreamer_rtsp_server::prelude::*;
use gstreamer_rtsp_server::{gio, glib, gst_rtsp};

/// Role name stored in the auth token and granted on the factory; any name
/// works as long as both sides agree.
const ROLE: &str = "camstream-test-user";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
    /// RTP/JPEG (RFC 2435), the "MJPEG" stream many cameras offer beside
    /// H.264.
    Jpeg,
}

/// Which lower transports the server allows for RTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transports {
    /// UDP, multicast and TCP interleaved (gst-rtsp-server's default).
    Any,
    /// RTP over UDP only: a SETUP asking for TCP gets 461 Unsupported
    /// Transport, as from several older cameras and RTSP servers.
    UdpOnly,
    /// RTP interleaved on the RTSP connection only.
    TcpOnly,
    /// Multicast only: refuses both unicast UDP and TCP, for the case where
    /// no transport camstream tries works.
    MulticastOnly,
}

/// How the server checks `credentials`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    Basic,
    /// RFC 2617 Digest, which most IP cameras require.
    Digest,
}

/// A TLS identity for `rtsps://` (and the HTTP test camera's https://):
/// certificate and private key, as PEM and as DER.
#[derive(Clone, Debug)]
pub struct TlsIdentity {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
    /// PKCS#8.
    pub key_der: Vec<u8>,
}

impl TlsIdentity {
    /// A fresh self-signed certificate for 127.0.0.1 and localhost, as a
    /// camera out of the box presents: no client can trust it by default.
    pub fn self_signed() -> TlsIdentity {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
                .expect("a self-signed certificate");
        TlsIdentity {
            cert_pem: cert.pem(),
            key_pem: signing_key.serialize_pem(),
            cert_der: cert.der().to_vec(),
            key_der: signing_key.serialize_der(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RtspOptions {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub codec: Codec,
    /// Mount path, must start with '/', e.g. "/test".
    pub path: String,
    /// When Some, authentication (`auth_method`) is required and only this
    /// user may access or construct the media.
    pub credentials: Option<(String, String)>,
    /// How `credentials` are checked.
    pub auth_method: AuthMethod,
    /// videotestsrc pattern nick ("ball", "smpte", "black", "white", ...).
    pub pattern: String,
    /// Lower transports the server accepts.
    pub transports: Transports,
    /// Also serve an audio track (A-law, stream 1) beside the video.
    pub audio: bool,
    /// Serve `rtsps://` with this certificate.
    pub tls: Option<TlsIdentity>,
}

impl Default for RtspOptions {
    fn default() -> Self {
        RtspOptions {
            width: 640,
            height: 360,
            fps: 30,
            codec: Codec::H264,
            path: "/test".to_owned(),
            credentials: None,
            auth_method: AuthMethod::Basic,
            pattern: "ball".to_owned(),
            transports: Transports::Any,
            audio: false,
            tls: None,
        }
    }
}

impl RtspOptions {
    fn validate(&self) -> anyhow::Result<()> {
        if self.width == 0 || self.height == 0 || self.fps == 0 {
            bail!("width, height and fps must be non-zero: {self:?}");
        }
        if !self.path.starts_with('/') {
            bail!("RTSP mount path must start with '/': {:?}", self.path);
        }
        // The pattern is pasted into a launch line; refuse anything that could
        // change the pipeline's structure instead of failing obscurely later.
        if self.pattern.is_empty()
            || !self
                .pattern
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("invalid videotestsrc pattern {:?}", self.pattern);
        }
        Ok(())
    }

    fn launch_line(&self) -> String {
        let RtspOptions {
            width,
            height,
            fps,
            pattern,
            ..
        } = self;
        // key-int-max=fps gives a keyframe every second, so a client that
        // joins a shared, already-running media decodes quickly; and
        // config-interval=1 repeats SPS/PPS (and VPS) with each keyframe.
        let encode = match self.codec {
            Codec::H264 => format!(
                "x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} \
                 ! rtph264pay name=pay0 pt=96 config-interval=1"
            ),
            Codec::H265 => format!(
                "x265enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} \
                 ! rtph265pay name=pay0 pt=96 config-interval=1"
            ),
            // Every JPEG frame stands alone: no key-frame wait. rtpjpegpay
            // takes 4:2:0 and 4:2:2 only (the caps pin I420).
            Codec::Jpeg => "jpegenc quality=70 ! rtpjpegpay name=pay0 pt=26".to_owned(),
        };
        // A-law at 8 kHz, as cameras with a microphone send it.
        let audio = if self.audio {
            " audiotestsrc is-live=true wave=sine ! audio/x-raw,rate=8000,channels=1 \
              ! alawenc ! rtppcmapay name=pay1 pt=8"
        } else {
            ""
        };
        format!(
            "( videotestsrc is-live=true pattern={pattern} \
             ! video/x-raw,format=I420,width={width},height={height},framerate={fps}/1 \
             ! {encode}{audio} )"
        )
    }
}

pub struct RtspServer {
    port: u16,
    path: String,
    tls: bool,
    running: Option<Running>,
}

/// Everything that must be torn down explicitly by `stop()`.
struct Running {
    server: gst_rtsp_server::RTSPServer,
    /// The listening-socket watch. Holding the `Source` (not just its id)
    /// lets us destroy it on our own context: `SourceId::remove()` would call
    /// g_source_remove(), which only searches the *default* context.
    listen_source: glib::Source,
    context: glib::MainContext,
    main_loop: glib::MainLoop,
    /// Shared media created by the factory, so stop() can bring their
    /// pipelines to NULL synchronously instead of leaving an encoder running.
    medias: Arc<Mutex<Vec<glib::WeakRef<gst_rtsp_server::RTSPMedia>>>>,
    thread: JoinHandle<()>,
}

impl RtspServer {
    /// Start on 127.0.0.1 with a kernel-chosen free port.
    pub fn start(opts: RtspOptions) -> anyhow::Result<RtspServer> {
        Self::start_on_port(opts, 0)
    }

    /// Start on 127.0.0.1:`port` (0 = any free port). Used to bring a camera
    /// back on the same URL after `stop()`.
    pub fn start_on_port(opts: RtspOptions, port: u16) -> anyhow::Result<RtspServer> {
        super::init();
        opts.validate()?;

        let server = gst_rtsp_server::RTSPServer::new();
        server.set_address("127.0.0.1");
        server.set_service(&port.to_string());
        // Service clients on our own loop thread instead of pool threads, so
        // stop() can close them without racing their I/O (see shutdown()).
        server
            .thread_pool()
            .context("RTSPServer has no thread pool")?
            .set_max_threads(0);

        let factory = gst_rtsp_server::RTSPMediaFactory::new();
        factory.set_launch(&opts.launch_line());
        factory.set_shared(true);
        match opts.transports {
            Transports::Any => {}
            Transports::UdpOnly => factory
                .set_protocols(gst_rtsp::RTSPLowerTrans::UDP | gst_rtsp::RTSPLowerTrans::UDP_MCAST),
            Transports::TcpOnly => factory.set_protocols(gst_rtsp::RTSPLowerTrans::TCP),
            Transports::MulticastOnly => {
                factory.set_protocols(gst_rtsp::RTSPLowerTrans::UDP_MCAST);
                // Without addresses to hand out, the server answers 503
                // instead of refusing the unicast transports with 461.
                let pool = gst_rtsp_server::RTSPAddressPool::new();
                pool.add_range("224.3.0.0", "224.3.0.10", 5000, 5010, 1)
                    .context("multicast address pool")?;
                factory.set_address_pool(Some(&pool));
            }
        }
        let medias: Arc<Mutex<Vec<glib::WeakRef<gst_rtsp_server::RTSPMedia>>>> = Arc::default();
        factory.connect_media_configure({
            let medias = medias.clone();
            move |_, media| medias.lock().unwrap().push(media.downgrade())
        });

        if opts.credentials.is_some() || opts.tls.is_some() {
            let auth = gst_rtsp_server::RTSPAuth::new();
            let token = gst_rtsp_server::RTSPToken::builder()
                .field(gst_rtsp_server::RTSP_TOKEN_MEDIA_FACTORY_ROLE, ROLE)
                .build();
            match &opts.credentials {
                Some((user, pass)) => match opts.auth_method {
                    AuthMethod::Basic => {
                        auth.add_basic(&gst_rtsp_server::RTSPAuth::make_basic(user, pass), &token);
                        auth.set_supported_methods(gst_rtsp::RTSPAuthMethod::Basic);
                    }
                    AuthMethod::Digest => {
                        auth.add_digest(user, pass, &token);
                        auth.set_supported_methods(gst_rtsp::RTSPAuthMethod::Digest);
                    }
                },
                // TLS needs an RTSPAuth; without credentials, everyone
                // gets the role.
                None => {
                    let mut anyone = gst_rtsp_server::RTSPToken::builder()
                        .field(gst_rtsp_server::RTSP_TOKEN_MEDIA_FACTORY_ROLE, ROLE)
                        .build();
                    auth.set_default_token(Some(&mut anyone));
                }
            }
            if let Some(tls) = &opts.tls {
                let cert =
                    gio::TlsCertificate::from_pem(&format!("{}\n{}", tls.cert_pem, tls.key_pem))
                        .context("loading the test TLS certificate")?;
                auth.set_tls_certificate(Some(&cert));
            }
            server.set_auth(Some(&auth));
            // Without a role on the factory, an auth-enabled server refuses
            // everyone; with it, anonymous and wrong-password clients get 401.
            factory.add_role_from_structure(
                &gst::Structure::builder(ROLE)
                    .field(gst_rtsp_server::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
                    .field(gst_rtsp_server::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
                    .build(),
            );
        }

        server
            .mount_points()
            .context("RTSPServer has no mount points")?
            .add_factory(&opts.path, factory);

        // create_source() (unlike attach()) reports the real bind error, e.g.
        // "Address already in use", which is what a failed restart needs.
        let listen_source = server
            .create_source(None::<&gio::Cancellable>)
            .with_context(|| format!("binding RTSP server to 127.0.0.1:{port}"))?;
        let context = glib::MainContext::new();
        listen_source.attach(Some(&context));
        let bound = u16::try_from(server.bound_port())
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                listen_source.destroy();
                anyhow!("RTSP server reports no bound port")
            })?;

        let main_loop = glib::MainLoop::new(Some(&context), false);
        // Wait until the loop really runs so start() returns a server that is
        // already answering, and so an early stop() cannot race the loop start.
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let ready = glib::idle_source_new(None, glib::Priority::HIGH, move || {
            let _ = ready_tx.send(());
            glib::ControlFlow::Break
        });
        ready.attach(Some(&context));
        let spawned = std::thread::Builder::new()
            .name(format!("rtsp-test-{bound}"))
            .spawn({
                let main_loop = main_loop.clone();
                move || main_loop.run()
            });
        let thread = match spawned {
            Ok(thread) => thread,
            Err(e) => {
                listen_source.destroy();
                return Err(anyhow::Error::new(e).context("spawning RTSP server thread"));
            }
        };
        let running = Running {
            server,
            listen_source,
            context,
            main_loop,
            medias,
            thread,
        };
        let mut server = RtspServer {
            port: bound,
            path: opts.path,
            tls: opts.tls.is_some(),
            running: Some(running),
        };
        if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
            server.shutdown();
            bail!("RTSP server main loop did not start within 10 s");
        }
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rtsp://127.0.0.1:PORT/path` (`rtsps://` with TLS), without
    /// credentials.
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}{}", self.scheme(), self.port, self.path)
    }

    fn scheme(&self) -> &'static str {
        if self.tls { "rtsps" } else { "rtsp" }
    }

    /// Same as [`url`](Self::url) with percent-encoded userinfo, the form
    /// rtspsrc (and camstream's config) accept.
    pub fn url_with_credentials(&self, user: &str, pass: &str) -> String {
        format!(
            "{}://{}:{}@127.0.0.1:{}{}",
            self.scheme(),
            encode_userinfo(user),
            encode_userinfo(pass),
            self.port,
            self.path
        )
    }

    /// Tear the server down completely: stop accepting (the listening socket
    /// is closed, so new connects are refused), drop every client connection
    /// and session, stop the media pipelines, and join the loop thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        let Running {
            server,
            listen_source,
            context,
            main_loop,
            medias,
            thread,
        } = running;

        // Everything below runs ON the server's loop thread, which (with
        // max-threads 0) is also where every client connection is serviced.
        // Calling gst_rtsp_client_close() from another thread races with the
        // client's watch being dispatched and can crash inside libgstrtsp
        // (seen under stress: g_pollable_input_stream_read_nonblocking
        // assertion, then SIGSEGV).
        let mut listen_source = Some(listen_source);
        let teardown = glib::idle_source_new(None, glib::Priority::HIGH, {
            let main_loop = main_loop.clone();
            move || {
                // Close the listener BEFORE dropping clients: rtspsrc in UDP
                // mode reconnects as soon as its connection drops, and must
                // be refused. destroy() runs gst-rtsp-server's destroy notify
                // (dropping its socket ref); dropping this, the only other
                // handle, finalizes the GSocketSource and so closes the fd.
                if let Some(source) = listen_source.take() {
                    source.destroy();
                }
                // Remove => gst_rtsp_client_close(): the TCP connection is
                // closed, so a connected rtspsrc sees EOF right away.
                server.client_filter(Some(&mut |_, _| gst_rtsp_server::RTSPFilterResult::Remove));
                // Sessions outlive their connection (RTSP allows resuming),
                // so drop them too, or UDP clients would keep getting RTP.
                if let Some(pool) = server.session_pool() {
                    pool.filter(Some(&mut |_, _| gst_rtsp_server::RTSPFilterResult::Remove));
                }
                // Unprepare would otherwise happen later on the media thread;
                // doing it now means no encoder outlives stop().
                let medias: Vec<_> = medias
                    .lock()
                    .unwrap()
                    .drain(..)
                    .filter_map(|weak| weak.upgrade())
                    .collect();
                for media in medias {
                    if media.status() != gst_rtsp_server::RTSPMediaStatus::Unprepared {
                        let _ = media.unprepare();
                    }
                }
                main_loop.quit();
                glib::ControlFlow::Break
            }
        });
        // Attaching (rather than quitting directly) also cannot be lost if
        // the loop has not reached run() yet.
        teardown.attach(Some(&context));
        let _ = thread.join();
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Percent-encode everything outside RFC 3986 "unreserved" so any user name
/// or password survives inside the URL's userinfo.
fn encode_userinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A decoded frame as delivered by [`RtspClient`].
#[derive(Clone, Debug)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    /// Packed RGB, `width * height * 3` bytes (row stride removed).
    pub rgb: Vec<u8>,
}

/// A real GStreamer RTSP consumer (`rtspsrc ! decodebin ! videoconvert !
/// appsink`), used to prove the test server serves what it claims and to
/// observe how a connected client experiences server-side events.
pub struct RtspClient {
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
    bus: gst::Bus,
    /// Warnings seen so far (e.g. "The server closed the connection."), kept
    /// to explain a timeout.
    warnings: Mutex<Vec<String>>,
}

impl RtspClient {
    /// `protocols` is passed to rtspsrc ("tcp", "udp", "tcp+udp"...); None
    /// keeps rtspsrc's default (UDP first, then TCP).
    pub fn start(url: &str, protocols: Option<&str>) -> anyhow::Result<RtspClient> {
        super::init();
        let src = gst::ElementFactory::make("rtspsrc")
            .property("location", url)
            .property("latency", 100u32)
            .build()?;
        if let Some(p) = protocols {
            src.set_property_from_str("protocols", p);
        }
        let decode = gst::ElementFactory::make("decodebin").build()?;
        let convert = gst::ElementFactory::make("videoconvert").build()?;
        let sink = gst_app::AppSink::builder()
            .caps(
                &gst::Caps::builder("video/x-raw")
                    .field("format", "RGB")
                    .build(),
            )
            // Keep only the newest frame: tests poll at their own pace.
            .max_buffers(1)
            .drop(true)
            .sync(false)
            .build();
        let pipeline = gst::Pipeline::new();
        pipeline.add_many([&src, &decode, &convert, sink.upcast_ref()])?;
        gst::Element::link_many([&convert, sink.upcast_ref()])?;
        // rtspsrc and decodebin expose pads only once the stream is known.
        src.connect_pad_added({
            let decode = decode.downgrade();
            move |_, pad| {
                if let Some(decode) = decode.upgrade() {
                    let sinkpad = decode.static_pad("sink").expect("decodebin sink pad");
                    if !sinkpad.is_linked() {
                        let _ = pad.link(&sinkpad);
                    }
                }
            }
        });
        decode.connect_pad_added({
            let convert = convert.downgrade();
            move |_, pad| {
                let is_video = pad
                    .current_caps()
                    .and_then(|c| c.structure(0).map(|s| s.name().starts_with("video/")))
                    .unwrap_or(false);
                if let (true, Some(convert)) = (is_video, convert.upgrade()) {
                    let sinkpad = convert.static_pad("sink").expect("videoconvert sink pad");
                    if !sinkpad.is_linked() {
                        let _ = pad.link(&sinkpad);
                    }
                }
            }
        });
        let bus = pipeline.bus().context("pipeline without bus")?;
        pipeline
            .set_state(gst::State::Playing)
            .context("starting RTSP client pipeline")?;
        Ok(RtspClient {
            pipeline,
            sink,
            bus,
            warnings: Mutex::default(),
        })
    }

    /// Wait for the next decoded frame; fails early with the pipeline's error
    /// message (e.g. "Unauthorized") if rtspsrc gives up.
    pub fn pull_frame(&self, timeout: Duration) -> anyhow::Result<Frame> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(end) = self.pop_end_message() {
                bail!("RTSP client ended before a frame arrived: {end}");
            }
            if let Some(sample) = self.sink.try_pull_sample(gst::ClockTime::from_mseconds(50)) {
                return sample_to_frame(&sample);
            }
            if Instant::now() >= deadline {
                bail!("no frame within {timeout:?}");
            }
        }
    }

    /// Wait until the pipeline reports an error or EOS; returns its
    /// description. Used to check that a server-side drop is noticed.
    pub fn wait_for_end(&self, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(end) = self.pop_end_message() {
                return Ok(end);
            }
            // Keep draining frames so the pipeline never stalls on a full sink.
            let _ = self.sink.try_pull_sample(gst::ClockTime::from_mseconds(50));
            if Instant::now() >= deadline {
                bail!(
                    "RTSP client saw neither error nor EOS within {timeout:?}; warnings: {:?}",
                    self.warnings.lock().unwrap()
                );
            }
        }
    }

    fn pop_end_message(&self) -> Option<String> {
        use gst::MessageView;
        while let Some(msg) = self.bus.pop() {
            match msg.view() {
                MessageView::Error(e) => {
                    return Some(format!(
                        "error from {}: {} ({})",
                        msg.src().map(|s| s.path_string()).unwrap_or_default(),
                        e.error(),
                        e.debug().unwrap_or_default()
                    ));
                }
                MessageView::Eos(_) => return Some("EOS".to_owned()),
                MessageView::Warning(w) => self.warnings.lock().unwrap().push(format!(
                    "{} ({})",
                    w.error(),
                    w.debug().unwrap_or_default()
                )),
                _ => {}
            }
        }
        None
    }
}

impl Drop for RtspClient {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Connect, wait for one decoded frame, disconnect.
pub fn pull_frame(url: &str, timeout: Duration) -> anyhow::Result<Frame> {
    RtspClient::start(url, None)?.pull_frame(timeout)
}

fn sample_to_frame(sample: &gst::Sample) -> anyhow::Result<Frame> {
    let caps = sample.caps().context("sample without caps")?;
    let info = gstreamer_video::VideoInfo::from_caps(caps).context("non-video caps")?;
    let buffer = sample.buffer().context("sample without buffer")?;
    let map = buffer.map_readable()?;
    let (width, height) = (info.width(), info.height());
    let stride = usize::try_from(info.stride()[0])?;
    let row = width as usize * 3;
    let mut rgb = Vec::with_capacity(row * height as usize);
    for y in 0..height as usize {
        let start = y * stride;
        rgb.extend_from_slice(
            map.get(start..start + row)
                .context("video buffer shorter than its caps say")?,
        );
    }
    Ok(Frame { width, height, rgb })
}
