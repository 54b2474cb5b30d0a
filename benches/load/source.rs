//! The benchmark's cameras: an RTSP server on loopback sending H.264 with a
//! time stamp drawn into every frame just before it is encoded, and an HTTP
//! MJPEG server looping pre-encoded 1080p frames that carry their index
//! (the send time of each index is kept in a table).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;
use gstreamer_rtsp_server::{gio, glib};
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::stamp;

/// The source's frame rate, as in the issue (1080p30 and 720p30 cameras).
pub const FPS: u32 = 30;
/// H.264 bitrate of the RTSP source in kbit/s per 1000 lines: 4 Mbit/s at
/// 1080p is a typical IP camera main stream.
const KBPS_PER_KLINE: u32 = 3700;

/// One RTSP mount: `/h{height}` sends width x height at [`FPS`].
#[derive(Clone, Copy, Debug)]
pub struct Mount {
    pub width: u32,
    pub height: u32,
}

impl Mount {
    pub const H1080: Mount = Mount {
        width: 1920,
        height: 1080,
    };
    pub const H720: Mount = Mount {
        width: 1280,
        height: 720,
    };

    pub fn path(&self) -> String {
        format!("/h{}", self.height)
    }

    fn launch(&self, pattern: &str) -> String {
        let Mount { width, height } = *self;
        let kbps = KBPS_PER_KLINE * height / 1000;
        // The stamp is drawn by a probe on `stamp`'s src pad, i.e. into the
        // raw frame as it goes to the encoder: "the time the camera sent
        // it". key-int-max=FPS: a key frame every second, so a pipeline
        // joining the shared stream starts within a second.
        format!(
            "( videotestsrc is-live=true pattern={pattern} horizontal-speed=4 \
             ! video/x-raw,format=I420,width={width},height={height},framerate={FPS}/1 \
             ! identity name=stamp \
             ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={FPS} bitrate={kbps} \
             ! rtph264pay name=pay0 pt=96 config-interval=1 )"
        )
    }
}

/// Installs the stamp probe on the element named `stamp` in `bin`: each
/// frame is stamped with `value()` as it passes (the time, or the frame's
/// index for the looped MJPEG source).
fn stamp_frames(
    bin: &gst::Bin,
    width: u32,
    height: u32,
    value: impl Fn() -> u32 + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let pad = bin
        .by_name("stamp")
        .and_then(|e| e.static_pad("src"))
        .context("no stamp element")?;
    let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::I420, width, height)
        .build()
        .context("video info")?;
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, probe| {
        if let Some(buffer) = probe.buffer_mut() {
            let buffer = buffer.make_mut();
            if let Ok(mut frame) = gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, &info)
            {
                let stride = frame.plane_stride()[0] as usize;
                if let Ok(luma) = frame.plane_data_mut(0) {
                    stamp::draw(luma, stride, width, height, value());
                }
            }
        }
        gst::PadProbeReturn::Ok
    });
    Ok(())
}

/// Milliseconds since `epoch`, as a stamp value (time mode).
pub fn now_ms(epoch: Instant) -> u32 {
    (epoch.elapsed().as_millis() as u32) & !stamp::INDEX_FLAG
}

/// An RTSP server on 127.0.0.1 serving [`Mount::H1080`] and [`Mount::H720`].
/// Each mount is shared: every client of a mount gets the same encoded
/// stream, so four cameras pointed at it cost the source one encoder.
pub struct RtspSource {
    port: u16,
    main_loop: glib::MainLoop,
    thread: Option<JoinHandle<()>>,
    _server: rtsp::RTSPServer,
    listen: glib::Source,
}

impl RtspSource {
    pub fn start(epoch: Instant, pattern: &str) -> anyhow::Result<RtspSource> {
        let server = rtsp::RTSPServer::new();
        server.set_address("127.0.0.1");
        server.set_service("0");
        let mounts = server.mount_points().context("no mount points")?;
        for mount in [Mount::H1080, Mount::H720] {
            let factory = rtsp::RTSPMediaFactory::new();
            factory.set_launch(&mount.launch(pattern));
            factory.set_shared(true);
            factory.connect_media_configure(move |_, media| {
                let element = media.element();
                let Some(bin) = element.downcast_ref::<gst::Bin>() else {
                    return;
                };
                if let Err(e) = stamp_frames(bin, mount.width, mount.height, move || now_ms(epoch))
                {
                    eprintln!("bench: cannot stamp frames: {e:#}");
                }
            });
            mounts.add_factory(&mount.path(), factory);
        }
        let listen = server
            .create_source(None::<&gio::Cancellable>)
            .context("binding the RTSP server")?;
        let context = glib::MainContext::new();
        listen.attach(Some(&context));
        let port = u16::try_from(server.bound_port()).context("RTSP port")?;
        let main_loop = glib::MainLoop::new(Some(&context), false);
        let thread = std::thread::Builder::new()
            .name("rtsp-source".into())
            .spawn({
                let main_loop = main_loop.clone();
                move || main_loop.run()
            })?;
        Ok(RtspSource {
            port,
            main_loop,
            thread: Some(thread),
            _server: server,
            listen,
        })
    }

    pub fn url(&self, mount: Mount) -> String {
        format!("rtsp://127.0.0.1:{}{}", self.port, mount.path())
    }
}

impl Drop for RtspSource {
    fn drop(&mut self) {
        self.listen.destroy();
        self.main_loop.quit();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Frames in the MJPEG loop: 3 s at 30 fps, so a frame's index identifies
/// its send time unambiguously for any latency under 3 s.
const MJPEG_LOOP: usize = 90;

/// When each frame index of the MJPEG loop was last sent, in microseconds
/// since the epoch.
#[derive(Debug)]
pub struct SentTable {
    at_us: Vec<AtomicU64>,
}

impl SentTable {
    /// The send time (ms since the epoch) of the frame carrying `index`
    /// that a viewer received at `received_ms`.
    pub fn sent_ms(&self, index: u32, received_ms: f64) -> Option<f64> {
        let sent = self.at_us.get(index as usize)?.load(Ordering::Relaxed);
        if sent == 0 {
            return None;
        }
        let mut sent_ms = sent as f64 / 1000.0;
        // Re-sent since this copy was received: it is the previous lap.
        while sent_ms > received_ms {
            sent_ms -= MJPEG_LOOP as f64 * 1000.0 / f64::from(FPS);
        }
        Some(sent_ms)
    }
}

/// An HTTP server sending a 1080p MJPEG stream, as a USB webcam relay or an
/// MJPEG IP camera would, at [`FPS`].
pub struct MjpegSource {
    pub addr: SocketAddr,
    pub sent: Arc<SentTable>,
    pub frame_bytes: usize,
}

impl MjpegSource {
    /// Encodes the loop (a few seconds of CPU, before any measurement) and
    /// starts serving it.
    pub async fn start(epoch: Instant, quality: u32, noise: f64) -> anyhow::Result<MjpegSource> {
        let frames = tokio::task::spawn_blocking(move || encode_loop(quality, noise)).await??;
        let frame_bytes = frames.iter().map(Bytes::len).sum::<usize>() / frames.len();
        let frames = Arc::new(frames);
        let sent = Arc::new(SentTable {
            at_us: (0..MJPEG_LOOP).map(|_| AtomicU64::new(0)).collect(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let table = Arc::clone(&sent);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let frames = Arc::clone(&frames);
                let table = Arc::clone(&table);
                tokio::spawn(async move {
                    let _ = serve_mjpeg(socket, frames, table, epoch).await;
                });
            }
        });
        Ok(MjpegSource {
            addr,
            sent,
            frame_bytes,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}/stream.mjpg", self.addr)
    }
}

/// Camera-like content: moving colour bars with a little sensor noise
/// blended in (a clean test pattern compresses to a fraction of what a
/// real scene does, and would make decoding look cheaper than it is).
fn encode_loop(quality: u32, noise: f64) -> anyhow::Result<Vec<Bytes>> {
    let Mount { width, height } = Mount::H1080;
    let caps = format!("video/x-raw,format=I420,width={width},height={height},framerate={FPS}/1");
    let description = format!(
        "compositor name=mix sink_1::alpha={noise} ! {caps} ! identity name=stamp \
         ! jpegenc quality={quality} ! appsink name=out sync=false \
         videotestsrc num-buffers={MJPEG_LOOP} pattern=smpte horizontal-speed=4 ! {caps} ! mix. \
         videotestsrc num-buffers={MJPEG_LOOP} pattern=snow ! {caps} ! mix."
    );
    let pipeline = gst::parse::launch(&description)?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow!("not a pipeline"))?;
    let index = Arc::new(AtomicU64::new(0));
    stamp_frames(pipeline.upcast_ref(), width, height, move || {
        stamp::INDEX_FLAG | index.fetch_add(1, Ordering::Relaxed) as u32
    })?;
    let sink = pipeline
        .by_name("out")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .context("no appsink")?;
    pipeline.set_state(gst::State::Playing)?;
    let mut frames = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        let buffer = sample.buffer().context("sample without buffer")?;
        frames.push(Bytes::copy_from_slice(&buffer.map_readable()?));
    }
    pipeline.set_state(gst::State::Null)?;
    if frames.len() != MJPEG_LOOP {
        bail!("encoded {} of {MJPEG_LOOP} MJPEG frames", frames.len());
    }
    Ok(frames)
}

async fn serve_mjpeg(
    mut socket: tokio::net::TcpStream,
    frames: Arc<Vec<Bytes>>,
    sent: Arc<SentTable>,
    epoch: Instant,
) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    // The request itself does not matter; read its head and answer.
    let mut head = Vec::new();
    let mut byte = [0u8; 1024];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        let n = socket.read(&mut byte).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&byte[..n]);
    }
    socket
        .write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\
              Cache-Control: no-cache\r\nConnection: close\r\n\r\n",
        )
        .await?;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(FPS)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    for i in (0..frames.len()).cycle() {
        tick.tick().await;
        let jpeg = &frames[i];
        sent.at_us[i].store(epoch.elapsed().as_micros() as u64, Ordering::Relaxed);
        let header = format!(
            "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            jpeg.len()
        );
        socket.write_all(header.as_bytes()).await?;
        socket.write_all(jpeg).await?;
        socket.write_all(b"\r\n").await?;
    }
    Ok(())
}
