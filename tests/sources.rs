//! The kinds of source beyond RTSP: files (looped), another MJPEG server
//! (relayed), gst-launch fragments, whole-pipeline overrides, templates, and
//! a source that changes resolution mid-stream.

mod common;

use std::sync::Arc;
use std::time::Duration;

use camstream::pipeline::{FrameOutput, Pipeline};
use camstream::redact::Redactor;
use camstream::source::{PipelineText, RenderOptions, Source, plan};
use common::app::{self, base, camera};
use common::mjpeg::{MjpegStream, decode_jpeg};
use common::rtsp::{RtspOptions, RtspServer};
use gstreamer as gst;
use gstreamer::prelude::*;

const PART_TIMEOUT: Duration = Duration::from_secs(20);

async fn sizes(url: &str, n: usize) -> Vec<(u32, u32)> {
    let mut stream = MjpegStream::connect(url).await.expect("stream opens");
    let mut out = Vec::new();
    for _ in 0..n {
        let part = stream.next_part_timeout(PART_TIMEOUT).await.unwrap();
        let image = decode_jpeg(&part.body).unwrap();
        out.push((image.width, image.height));
    }
    out
}

/// Writes a short H.264 MP4 clip with GStreamer itself.
fn write_clip(path: &std::path::Path, frames: u32) {
    common::init();
    let description = format!(
        "videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,width=640,height=480,framerate=30/1 \
         ! x264enc speed-preset=ultrafast ! mp4mux ! filesink location={}",
        camstream::source::quote(&path.to_string_lossy())
    );
    let pipeline = gst::parse::launch(&description).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(30),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("clip written");
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
    pipeline.set_state(gst::State::Null).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_plays_at_its_frame_rate_and_loops() {
    let dir = std::env::temp_dir().join(format!("camstream-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let clip = dir.join("clip with space.mp4");
    // Half a second of video; the test watches for three seconds.
    write_clip(&clip, 15);
    let app = app::start(&format!(
        "[[cameras]]\nid = \"f\"\nsource = \"{}\"\n",
        clip.display()
    ))
    .await;
    let url = format!("{}/api/cameras/f/stream.mjpeg", base(&app));
    let mut stream = MjpegStream::connect(&url).await.unwrap();
    let start = std::time::Instant::now();
    let mut frames = 0;
    while start.elapsed() < Duration::from_secs(3) {
        let part = stream.next_part_timeout(PART_TIMEOUT).await.unwrap();
        assert_eq!(decode_jpeg(&part.body).unwrap().width, 160);
        frames += 1;
    }
    // Played at 30 fps (not as fast as it decodes), and past its end.
    assert!((45..=120).contains(&frames), "{frames} frames in 3 s");
    let info = camera(&app, "f").await;
    assert_eq!(
        info["starts"], 1,
        "looped by seeking, not by restarting: {info}"
    );
    assert_eq!(info["state"], "streaming");
    drop(stream);
    app.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_mjpeg_source_is_relayed() {
    // camstream relaying camstream: camera "relay" reads camera "origin"'s
    // MJPEG over HTTP and halves it again.
    let origin =
        app::start("[[cameras]]\nid = \"origin\"\nsource = \"test:smpte?width=1280&height=720\"\n")
            .await;
    let origin_url = format!("{}/api/cameras/origin/stream.mjpeg", base(&origin));
    let relay = app::start(&format!(
        "[[cameras]]\nid = \"relay\"\nsource = \"{origin_url}\"\nscale = 0.5\n"
    ))
    .await;
    let got = sizes(
        &format!("{}/api/cameras/relay/stream.mjpeg", base(&relay)),
        5,
    )
    .await;
    assert!(got.iter().all(|s| *s == (160, 90)), "{got:?}");
    assert_eq!(camera(&relay, "relay").await["kind"], "http");
    relay.shutdown().await;
    origin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_fragments_whole_pipelines_and_templates() {
    let rtsp = RtspServer::start(RtspOptions::default()).unwrap();
    let app = app::start(&format!(
        "[[cameras]]\nid = \"frag\"\nsource = \"videotestsrc is-live=true ! video/x-raw,width=800,height=600,framerate=30/1\"\n\
         [[cameras]]\nid = \"full\"\npipeline_file = \"full-test-jpeg.pipeline\"\n\
         [[cameras]]\nid = \"h264\"\nsource = \"{}\"\npipeline_file = \"rtsp-h264.pipeline\"\n\
         [[cameras]]\nid = \"tmpl\"\nsource = \"test:ball?width=640&height=480&fps=15\"\npipeline_file = \"test.pipeline\"\nscale = 0.5\n",
        rtsp.url()
    ))
    .await;
    let b = base(&app);
    assert!(
        sizes(&format!("{b}/api/cameras/frag/stream.mjpeg"), 3)
            .await
            .iter()
            .all(|s| *s == (200, 150))
    );
    // A whole pipeline is used as it is: no scaling.
    assert!(
        sizes(&format!("{b}/api/cameras/full/stream.mjpeg"), 3)
            .await
            .iter()
            .all(|s| *s == (640, 360))
    );
    assert!(
        sizes(&format!("{b}/api/cameras/h264/stream.mjpeg"), 3)
            .await
            .iter()
            .all(|s| *s == (160, 90))
    );
    assert!(
        sizes(&format!("{b}/api/cameras/tmpl/stream.mjpeg"), 3)
            .await
            .iter()
            .all(|s| *s == (320, 240))
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h265_rtsp_cameras_stream_with_the_template() {
    let rtsp = RtspServer::start(RtspOptions {
        codec: common::rtsp::Codec::H265,
        width: 640,
        height: 480,
        ..RtspOptions::default()
    })
    .unwrap();
    let app = app::start(&format!(
        "[[cameras]]\nid = \"a\"\nsource = \"{0}\"\npipeline_file = \"rtsp-h265.pipeline\"\n\
         [[cameras]]\nid = \"b\"\nsource = \"{0}\"\n",
        rtsp.url()
    ))
    .await;
    for id in ["a", "b"] {
        let got = sizes(&format!("{}/api/cameras/{id}/stream.mjpeg", base(&app)), 3).await;
        assert!(got.iter().all(|s| *s == (160, 120)), "{id}: {got:?}");
    }
    app.shutdown().await;
}

#[test]
fn the_scale_follows_a_mid_stream_resolution_change() {
    common::init();
    let source = Source::parse(
        "videotestsrc is-live=true ! capsfilter name=src caps=video/x-raw,width=640,height=360,framerate=30/1",
    )
    .unwrap();
    let plan = plan(
        Some(&source),
        PipelineText::Source,
        &RenderOptions::default(),
    )
    .unwrap();
    let output = FrameOutput::standalone(0.25);
    let stats = output.stats.clone();
    // Watched, so the default size's branch lets frames in.
    let default = output.outputs.default_output().clone();
    default.attach();
    let hub = default.hub();
    let pipeline = Pipeline::build(&plan, output, Redactor::default()).unwrap();
    pipeline.start().unwrap();

    let wait_for = |size: (u32, u32)| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(frame) = hub.latest() {
                let decoded = decode_jpeg(&frame.jpeg).unwrap();
                if (decoded.width, decoded.height) == size {
                    assert_eq!((frame.width, frame.height), size);
                    return;
                }
            }
            assert!(std::time::Instant::now() < deadline, "never saw {size:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for((160, 90));
    assert_eq!(stats.input(), Some((640, 360)));

    // The source switches to 1280x720, as a camera changing profile would.
    let src = pipeline.gst_pipeline().by_name("src").unwrap();
    src.set_property(
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("width", 1280)
            .field("height", 720)
            .field("framerate", gst::Fraction::new(30, 1))
            .build(),
    );
    wait_for((320, 180));
    assert_eq!(stats.input(), Some((1280, 720)));
    pipeline.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mjpeg_source_at_a_quarter_is_decoded_at_a_quarter() {
    // The origin serves 1280x720 MJPEG; the relays take a quarter of it,
    // decoding straight to 320x180 (camstreamjpegdec at 1/4, the default).
    let origin = app::start(
        "[[cameras]]\nid = \"origin\"\nsource = \"test:smpte?width=1280&height=720\"\nscale = 1\n",
    )
    .await;
    let origin_url = format!("{}/api/cameras/origin/stream.mjpeg", base(&origin));
    let camera_toml = format!("[[cameras]]\nid = \"relay\"\nsource = \"{origin_url}\"\n");

    // Served by camstream: a quarter of the REAL size, and the API reports
    // the real size as the input.
    let relay = app::start(&camera_toml).await;
    let got = sizes(
        &format!("{}/api/cameras/relay/stream.mjpeg", base(&relay)),
        5,
    )
    .await;
    assert!(got.iter().all(|s| *s == (320, 180)), "{got:?}");
    let info = camera(&relay, "relay").await;
    assert_eq!(info["input"]["width"], 1280, "{info}");
    assert_eq!(info["output"]["width"], 320, "{info}");
    relay.shutdown().await;

    // The same camera's pipeline, looked into: the fragment ends at the
    // JPEG parts, camstream's DCT decoder follows, and its output, the
    // scaler's input, is already 320x180.
    let config = camstream::Config::parse(&camera_toml, None).unwrap();
    let settings = config.cameras[0].settings.as_ref().unwrap();
    let plan = settings.plan().unwrap();
    assert!(
        plan.description
            .ends_with("multipartdemux single-stream=true ! capsfilter caps=image/jpeg"),
        "{}",
        plan.description
    );
    let output = FrameOutput::standalone(settings.scale);
    let stats = output.stats.clone();
    let default = output.outputs.default_output().clone();
    default.attach();
    let hub = default.hub();
    let pipeline = tokio::task::spawn_blocking(move || {
        let pipeline = Pipeline::build(&plan, output, Redactor::default()).unwrap();
        pipeline.start().unwrap();
        pipeline
    })
    .await
    .unwrap();
    assert!(
        pipeline
            .graph()
            .contains("decoder: camstreamjpegdec max-scale=0.25"),
        "{}",
        pipeline.graph()
    );
    let deadline = std::time::Instant::now() + PART_TIMEOUT;
    while hub.latest().is_none() {
        assert!(std::time::Instant::now() < deadline, "no frame");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let decoded = pipeline
        .gst_pipeline()
        .by_name("default-scale")
        .and_then(|scaler| scaler.static_pad("sink"))
        .and_then(|pad| pad.current_caps())
        .and_then(|caps| {
            let s = caps.structure(0)?;
            Some((s.get::<i32>("width").ok()?, s.get::<i32>("height").ok()?))
        });
    assert_eq!(decoded, Some((320, 180)));
    let frame = hub.latest().unwrap();
    let image = decode_jpeg(&frame.jpeg).unwrap();
    assert_eq!((image.width, image.height), (320, 180));
    assert_eq!(stats.input(), Some((1280, 720)));
    tokio::task::spawn_blocking(move || pipeline.stop())
        .await
        .unwrap();
    origin.shutdown().await;
}

/// The caps on a size's scaler input (what the decoder made), and its
/// appsink's newest frame size.
fn scaler_input(pipeline: &Pipeline, size: &str) -> Option<(i32, i32)> {
    pipeline
        .gst_pipeline()
        .by_name(&format!("{size}-scale"))
        .and_then(|scaler| scaler.static_pad("sink"))
        .and_then(|pad| pad.current_caps())
        .and_then(|caps| {
            let s = caps.structure(0)?;
            Some((s.get::<i32>("width").ok()?, s.get::<i32>("height").ok()?))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dct_decoder_follows_the_largest_size_being_watched() {
    // 1280x720 MJPEG; sizes thumb (1/8), the default (1/4), large (1/2).
    let origin = app::start(
        "[[cameras]]\nid = \"origin\"\nsource = \"test:smpte?width=1280&height=720\"\nscale = 1\n",
    )
    .await;
    let camera_toml = format!(
        "[[cameras]]\nid = \"relay\"\nsource = \"{}/api/cameras/origin/stream.mjpeg\"\n\
         [cameras.sizes]\nthumb = {{ scale = 0.125 }}\nlarge = {{ scale = 0.5 }}\n",
        base(&origin)
    );
    let config = camstream::Config::parse(&camera_toml, None).unwrap();
    let settings = config.cameras[0].settings.as_ref().unwrap();
    let plan = settings.plan().unwrap();
    let output = FrameOutput::for_settings(settings, true);
    let outputs = Arc::clone(&output.outputs);
    let thumb = Arc::clone(outputs.get("thumb").unwrap());
    let large = Arc::clone(outputs.get("large").unwrap());
    thumb.attach();
    let pipeline = tokio::task::spawn_blocking(move || {
        let pipeline = Pipeline::build(&plan, output, Redactor::default()).unwrap();
        pipeline.start().unwrap();
        pipeline
    })
    .await
    .unwrap();
    // Polled on this worker thread, handed over to the runtime meanwhile
    // (the origin serves from it).
    let wait_for = |what: &str, check: &dyn Fn() -> bool| {
        tokio::task::block_in_place(|| {
            let deadline = std::time::Instant::now() + PART_TIMEOUT;
            while !check() {
                assert!(std::time::Instant::now() < deadline, "{what}");
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let max_scale = |p: &Pipeline| {
        p.gst_pipeline()
            .by_name("decoder")
            .map(|d| d.property::<f64>("max-scale"))
    };
    // Only thumb watched: decoded at 1/8, nothing for the others.
    wait_for("a thumb frame", &|| thumb.hub().latest().is_some());
    assert_eq!(max_scale(&pipeline), Some(0.125));
    assert_eq!(scaler_input(&pipeline, "thumb"), Some((160, 90)));
    assert!(large.hub().latest().is_none());
    // large joins: decoded at 1/2 from then on, and thumb still 160x90.
    large.attach();
    wait_for("a large frame", &|| large.hub().latest().is_some());
    assert_eq!(max_scale(&pipeline), Some(0.5));
    assert_eq!(scaler_input(&pipeline, "large"), Some((640, 360)));
    let frame = thumb.hub().latest().unwrap();
    assert_eq!((frame.width, frame.height), (160, 90));
    let frame = large.hub().latest().unwrap();
    assert_eq!((frame.width, frame.height), (640, 360));
    // large leaves: back to 1/8.
    large.detach();
    wait_for("max-scale back to 1/8", &|| {
        max_scale(&pipeline) == Some(0.125)
    });
    tokio::task::spawn_blocking(move || pipeline.stop())
        .await
        .unwrap();
    origin.shutdown().await;
}
