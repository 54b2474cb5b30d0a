//! Hardware decoding on a machine without a GPU: a test-only hardware
//! H.264 decoder (tests/common/fakehw.rs) registered in this process,
//! failing the ways real ones fail, or working. An RTSP H.264 camera
//! (tests/common/rtsp.rs) must stream whatever it does: through software
//! decoding after a failure, said once in the log and in /api/cameras, and
//! never trying the hardware decoder again until its configuration changes.
//!
//! The decoder's behaviour and rank are process-wide: the tests take turns
//! (`SERIAL`).

mod common;

use std::io::Write;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use camstream::cmds::check;
use camstream::config::Config;
use common::app::{self, base, camera, wait_for_camera};
use common::fakehw::{self, Behaviour};
use common::mjpeg::MjpegStream;
use common::rtsp::{RtspOptions, RtspServer};
use gstreamer as gst;
use serde_json::Value;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Generous: an RTSP start here takes well under a second, but machines
/// are shared.
const STREAMING: Duration = Duration::from_secs(25);

/// The cameras' `first_frame_timeout_s` (the default): a camera must stream
/// within it, through software, when its hardware decoder fails.
const FIRST_FRAME: Duration = Duration::from_secs(20);

/// Every log line of this process, as camstream writes them at info.
static LOG: LazyLock<Arc<Mutex<Vec<u8>>>> = LazyLock::new(|| {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&log);
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_env_filter("camstream=info")
        .with_writer(move || LogWriter(Arc::clone(&sink)))
        .init();
    log
});

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        std::io::stderr().write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log lines of camera `id` that contain `text`.
fn log_lines(id: &str, text: &str) -> Vec<String> {
    let log = LOG.lock().unwrap();
    String::from_utf8_lossy(&log)
        .lines()
        .filter(|l| l.contains(&format!("id={id}")) && l.contains(text))
        .map(str::to_string)
        .collect()
}

fn rtsp_camera(id: &str, url: &str, extra: &str) -> String {
    format!("[[cameras]]\nid = \"{id}\"\nsource = \"{url}\"\nalways_on = true\n{extra}\n")
}

async fn streaming(app: &camstream::App, id: &str) -> Value {
    wait_for_camera(app, id, STREAMING, "streaming", |c| {
        // Decoded frames reach camstream (frames_in); nothing is encoded
        // for an always_on camera nobody watches, so frames_out stays 0.
        c["state"] == "streaming" && c["frames_in"].as_u64().unwrap_or(0) > 0
    })
    .await
    .unwrap()
}

/// Stops the camera's RTSP server until the camera notices, then starts it
/// again on the same port, and waits for the camera's restart to stream.
async fn restart_source(
    app: &camstream::App,
    id: &str,
    server: RtspServer,
    opts: RtspOptions,
) -> (RtspServer, Value) {
    let port = server.port();
    let before = camera(app, id).await["restarts"].as_u64().unwrap();
    server.stop();
    wait_for_camera(app, id, STREAMING, "the outage", |c| {
        c["state"] != "streaming"
    })
    .await
    .unwrap();
    let server = RtspServer::start_on_port(opts, port).unwrap();
    let info = wait_for_camera(app, id, STREAMING, "streaming after a restart", |c| {
        c["state"] == "streaming" && c["restarts"].as_u64().unwrap_or(0) > before
    })
    .await
    .unwrap();
    (server, info)
}

/// The camera's fallback, in the API and in the log, said once; and the
/// frames it serves are real pictures.
async fn assert_fell_back(app: &camstream::App, id: &str, info: &Value) {
    let decoder = &info["decoder"];
    assert_eq!(decoder["setting"], "auto", "{info}");
    assert_eq!(decoder["in_use"], "avdec_h264", "{info}");
    assert_eq!(decoder["hardware"], false, "{info}");
    let fallback = decoder["fallback"].as_str().unwrap_or_default();
    assert!(
        fallback.starts_with(&format!("hardware decoder {} failed: ", fakehw::NAME)),
        "{info}"
    );
    let said = log_lines(
        id,
        "decoding in software until the camera's configuration changes",
    );
    assert_eq!(said.len(), 1, "said once in the log: {said:#?}");
    assert!(said[0].contains(fakehw::NAME), "{said:?}");
    let url = format!("{}/api/cameras/{id}/stream.mjpeg", base(app));
    let mut stream = MjpegStream::connect(&url).await.unwrap();
    let part = stream
        .next_part_timeout(Duration::from_secs(10))
        .await
        .unwrap();
    common::mjpeg::decode_jpeg(&part.body).expect("a real JPEG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hardware_decoder_that_fails_to_start_is_replaced_by_software_for_good() {
    let _turn = SERIAL.lock().await;
    LazyLock::force(&LOG);
    // Above avdec_h264 (PRIMARY), as v4l2h264dec is: decodebin on its own
    // would try it first too.
    fakehw::set(Behaviour::FailAtStart, gst::Rank::PRIMARY + 100);
    let created = fakehw::created();
    let opts = RtspOptions::default();
    let server = RtspServer::start(opts.clone()).unwrap();
    let started = Instant::now();
    let app = app::start(&rtsp_camera("hw-start", &server.url(), "")).await;

    // decodebin tried the hardware decoder, which failed to start, and
    // plugged avdec_h264 by itself: the camera streams at its first start.
    let info = streaming(&app, "hw-start").await;
    assert!(started.elapsed() < FIRST_FRAME, "{:?}", started.elapsed());
    assert_eq!(info["restarts"], 0, "{info}");
    assert_eq!(fakehw::created() - created, 1, "tried once");
    assert_fell_back(&app, "hw-start", &info).await;

    // Restarts (the camera went away and came back) stay in software.
    let (server, _) = restart_source(&app, "hw-start", server, opts.clone()).await;
    let (server, info) = restart_source(&app, "hw-start", server, opts).await;
    assert_eq!(
        fakehw::created() - created,
        1,
        "a restart tried the hardware decoder again"
    );
    assert_fell_back(&app, "hw-start", &info).await;
    app.shutdown().await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hardware_decoder_that_errors_restarts_the_camera_in_software_until_its_config_changes() {
    let _turn = SERIAL.lock().await;
    LazyLock::force(&LOG);
    fakehw::set(Behaviour::FailOnFrame, gst::Rank::PRIMARY + 100);
    let created = fakehw::created();
    let opts = RtspOptions::default();
    let server = RtspServer::start(opts.clone()).unwrap();
    let started = Instant::now();
    let app = app::start(&rtsp_camera("hw-error", &server.url(), "")).await;
    // The failed attempt and the restart in software, within the bound.
    let info = streaming(&app, "hw-error").await;
    assert!(started.elapsed() < FIRST_FRAME, "{:?}", started.elapsed());
    assert_eq!(fakehw::created() - created, 1, "{info}");
    // Not a failure: no back-off, no restart counted.
    assert_eq!(info["restarts"], 0, "{info}");
    assert!(info["last_error"].is_null(), "{info}");
    assert_fell_back(&app, "hw-error", &info).await;
    let fallback = info["decoder"]["fallback"].as_str().unwrap();
    assert!(fallback.contains("fails on purpose"), "{fallback}");

    let (server, info) = restart_source(&app, "hw-error", server, opts).await;
    assert_eq!(fakehw::created() - created, 1, "{info}");
    assert_fell_back(&app, "hw-error", &info).await;

    // A new configuration tries hardware again: now it works.
    fakehw::set(Behaviour::Work, gst::Rank::PRIMARY + 100);
    let cam = app.cameras().get("hw-error").unwrap();
    let mut configured = (*cam.configured()).clone();
    if let Ok(settings) = configured.settings.as_mut() {
        settings.quality = 70;
    }
    cam.reconfigure(configured);
    let info = wait_for_camera(&app, "hw-error", STREAMING, "hardware again", |c| {
        c["state"] == "streaming" && c["decoder"]["in_use"] == fakehw::NAME
    })
    .await
    .unwrap();
    assert_eq!(info["decoder"]["hardware"], true, "{info}");
    assert!(info["decoder"]["fallback"].is_null(), "{info}");
    assert_eq!(fakehw::created() - created, 2, "{info}");
    app.shutdown().await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hardware_decoder_that_decodes_nothing_is_given_up_at_the_first_frame_bound() {
    let _turn = SERIAL.lock().await;
    LazyLock::force(&LOG);
    fakehw::set(Behaviour::Swallow, gst::Rank::PRIMARY + 100);
    let created = fakehw::created();
    let server = RtspServer::start(RtspOptions::default()).unwrap();
    let app = app::start(&rtsp_camera(
        "hw-hung",
        &server.url(),
        "first_frame_timeout_s = 4",
    ))
    .await;
    let info = streaming(&app, "hw-hung").await;
    assert_eq!(fakehw::created() - created, 1, "{info}");
    assert_fell_back(&app, "hw-hung", &info).await;
    let fallback = info["decoder"]["fallback"].as_str().unwrap();
    assert!(
        fallback.contains("key frames and decoded none"),
        "{fallback}"
    );
    app.shutdown().await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_plugs_a_working_hardware_decoder_even_at_rank_none_and_software_never_does() {
    let _turn = SERIAL.lock().await;
    LazyLock::force(&LOG);
    // Rank NONE, as GStreamer 1.22 registers vah264dec: decodebin alone
    // would never try it.
    fakehw::set(Behaviour::Work, gst::Rank::NONE);
    let created = fakehw::created();
    let server = RtspServer::start(RtspOptions::default()).unwrap();
    let url = server.url();
    let app = app::start(&format!(
        "{}{}{}",
        rtsp_camera("hw-auto", &url, ""),
        rtsp_camera("hw-software", &url, "decoder = \"software\""),
        // A family that is not installed here: software, no fallback.
        rtsp_camera("hw-vaapi", &url, "decoder = \"vaapi\""),
    ))
    .await;
    let info = streaming(&app, "hw-auto").await;
    assert_eq!(info["decoder"]["in_use"], fakehw::NAME, "{info}");
    assert_eq!(info["decoder"]["hardware"], true, "{info}");
    assert!(info["decoder"]["fallback"].is_null(), "{info}");
    assert_eq!(info["input"]["width"], 640, "the stream's size: {info}");
    for id in ["hw-software", "hw-vaapi"] {
        let info = streaming(&app, id).await;
        assert_eq!(info["decoder"]["in_use"], "avdec_h264", "{info}");
        assert_eq!(info["decoder"]["hardware"], false, "{info}");
        assert!(info["decoder"]["fallback"].is_null(), "{info}");
    }
    assert_eq!(fakehw::created() - created, 1, "only the auto camera");
    app.shutdown().await;

    // Ranked above avdec_h264, where decodebin alone would pick it:
    // software still never does.
    fakehw::set(Behaviour::Work, gst::Rank::PRIMARY + 100);
    let app = app::start(&rtsp_camera("hw-software", &url, "decoder = \"software\"")).await;
    let info = streaming(&app, "hw-software").await;
    assert_eq!(info["decoder"]["in_use"], "avdec_h264", "{info}");
    assert_eq!(fakehw::created() - created, 1, "{info}");
    app.shutdown().await;
    server.stop();
}

#[tokio::test]
async fn check_lists_the_hardware_decoders_and_whether_each_opens() {
    let _turn = SERIAL.lock().await;
    let config = Config::parse(
        "[[cameras]]\nid = \"a\"\nsource = \"test:\"\n\n\
         [[cameras]]\nid = \"b\"\nsource = \"rtsp://192.0.2.1/x\"\ndecoder = \"nvidia\"\n",
        None,
    )
    .unwrap();
    let lines = |behaviour| {
        fakehw::set(behaviour, gst::Rank::PRIMARY + 100);
        check::check(&config)
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    let opens = lines(Behaviour::Work);
    let ours: Vec<&String> = opens.iter().filter(|l| l.contains(fakehw::NAME)).collect();
    assert_eq!(
        ours,
        [&format!(
            "ok: hardware decoder {} (other hardware; H.264): opens",
            fakehw::NAME
        )],
        "{opens:#?}"
    );
    // A family that is not installed is worth a warning on its camera.
    assert!(
        opens.iter().any(|l| l.starts_with("warning: ")
            && l.contains("camera \"b\"")
            && l.contains("no NVIDIA decoder is installed")),
        "{opens:#?}"
    );

    let fails = lines(Behaviour::FailAtStart);
    let ours: Vec<&String> = fails.iter().filter(|l| l.contains(fakehw::NAME)).collect();
    assert_eq!(ours.len(), 1, "{fails:#?}");
    assert!(
        ours[0].starts_with(&format!(
            "warning: hardware decoder {} (other hardware; H.264) cannot be opened: ",
            fakehw::NAME
        )) && ours[0].contains("cannot open /dev/dri/renderD128")
            && ours[0].contains("cameras decode in software"),
        "{fails:#?}"
    );
}
