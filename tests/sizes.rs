//! A camera's sizes (issue 12): `?size=NAME` on streams and snapshots, each
//! size encoded once and only while watched, `size=full` snapshots made
//! once for every request waiting, JPEG passthrough of an MJPEG source at
//! scale 1 (HTTP MJPEG with and without Content-Length, AVI1, RTP/JPEG,
//! padded parts), one slow size not delaying another, and the 400 naming
//! the camera's sizes.

mod common;

use std::time::{Duration, Instant};

use common::app::{self, base, camera, get, get_json};
use common::http::{HttpCamera, HttpCameraOptions};
use common::mjpeg::{MjpegStream, decode_jpeg};
use common::rtsp::{RtspOptions, RtspServer};
use serde_json::Value;

const PART_TIMEOUT: Duration = Duration::from_secs(20);

const SIZES: &str =
    "[cameras.sizes]\nthumb = { scale = 0.125, quality = 60 }\nlarge = { scale = 0.5 }\n";

/// Decoded sizes of the next `n` parts of `stream`.
async fn frame_sizes(stream: &mut MjpegStream, n: usize) -> Vec<(u32, u32)> {
    let mut sizes = Vec::new();
    for _ in 0..n {
        let part = stream
            .next_part_timeout(PART_TIMEOUT)
            .await
            .expect("a part");
        // zune-jpeg decodes it (for AVI1, thanks to the inserted tables).
        let image = decode_jpeg(&part.body).expect("a JPEG");
        sizes.push((image.width, image.height));
    }
    sizes
}

fn size<'a>(info: &'a Value, name: &str) -> &'a Value {
    info["sizes"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("size {name} listed: {info}"))
}

fn encoded(info: &Value, name: &str) -> u64 {
    size(info, name)["frames_out"].as_u64().unwrap()
}

/// Polls the camera until `check` holds, or panics after `within`.
async fn until(
    app: &camstream::App,
    id: &str,
    within: Duration,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let info = camera(app, id).await;
        if check(&info) {
            return info;
        }
        assert!(Instant::now() < deadline, "{what}: {info}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_size_has_its_own_dimensions_for_two_source_sizes() {
    for (width, height) in [(1280u32, 720u32), (1920, 1080)] {
        let rtsp = RtspServer::start(RtspOptions {
            width,
            height,
            ..RtspOptions::default()
        })
        .expect("RTSP server starts");
        let app = app::start(&format!(
            "[[cameras]]\nid = \"cam\"\nsource = \"{}\"\n{SIZES}",
            rtsp.url()
        ))
        .await;
        let url = |q: &str| format!("{}/api/cameras/cam/stream.mjpeg{q}", base(&app));
        // All three watched at once: one decode, three branches.
        let mut default = MjpegStream::connect(&url("")).await.expect("default opens");
        let mut thumb = MjpegStream::connect(&url("?size=thumb"))
            .await
            .expect("thumb opens");
        let mut large = MjpegStream::connect(&url("?size=large"))
            .await
            .expect("large opens");
        for (stream, scale, name) in [
            (&mut default, 0.25, "default"),
            (&mut thumb, 0.125, "thumb"),
            (&mut large, 0.5, "large"),
        ] {
            let got = frame_sizes(stream, 3).await;
            // Even dimensions: 1080 / 8 = 135 is sent as 136.
            let want = camstream::pipeline::scaled_size(width, height, scale);
            assert!(
                got.iter().all(|s| *s == want),
                "{width}x{height} {name}: {got:?}"
            );
        }
        let (status, _, full) = get(&format!(
            "{}/api/cameras/cam/snapshot.jpg?size=full",
            base(&app)
        ))
        .await
        .unwrap();
        assert_eq!(status, 200);
        let full = decode_jpeg(&full).unwrap();
        assert_eq!((full.width, full.height), (width, height));

        let info = camera(&app, "cam").await;
        assert_eq!(
            size(&info, "thumb")["output"]["height"],
            camstream::pipeline::scaled_size(width, height, 0.125).1,
            "{info}"
        );
        assert_eq!(size(&info, "large")["output"]["width"], width / 2, "{info}");
        assert_eq!(size(&info, "thumb")["viewers"], 1, "{info}");
        assert_eq!(size(&info, "thumb")["quality"], 60, "{info}");
        assert_eq!(
            size(&info, "large")["urls"]["stream"],
            "/api/cameras/cam/stream.mjpeg?size=large"
        );
        drop((default, thumb, large));
        app.shutdown().await;
        rtsp.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_size_is_refused_naming_the_cameras_sizes() {
    let app = app::start(&format!(
        "[[cameras]]\nid = \"cam\"\nsource = \"test:ball?width=640&height=480&fps=15\"\n{SIZES}"
    ))
    .await;
    for path in [
        "stream.mjpeg?size=huge",
        "snapshot.jpg?size=huge",
        // full is a snapshot size: a stream of it is refused, saying so.
        "stream.mjpeg?size=full",
    ] {
        let (status, body) = get_json(&format!("{}/api/cameras/cam/{path}", base(&app)))
            .await
            .unwrap();
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "unknown_size", "{path}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        if path.ends_with("full") {
            assert!(message.contains("snapshot.jpg only"), "{message}");
        } else {
            assert!(
                message.contains("default, large, thumb") && message.contains("huge"),
                "{message}"
            );
        }
    }
    let (status, body) = get_json(&format!(
        "{}/api/cv/display?camera_id=cam&size=huge",
        base(&app)
    ))
    .await
    .unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "unknown_size");
    // Nobody was admitted by a refused request.
    assert_eq!(camera(&app, "cam").await["viewers"], 0);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_pipeline_override_has_one_size_and_says_so() {
    let app = app::start(
        "[[cameras]]\nid = \"whole\"\npipeline = \"videotestsrc is-live=true \
         ! video/x-raw,width=320,height=240 ! jpegenc ! appsink name=sink\"\n",
    )
    .await;
    let (status, body) = get_json(&format!(
        "{}/api/cameras/whole/stream.mjpeg?size=thumb",
        base(&app)
    ))
    .await
    .unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "unknown_size");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("whole-pipeline override") && message.contains("size=thumb"),
        "{message}"
    );
    // Its one size streams.
    let mut stream =
        MjpegStream::connect(&format!("{}/api/cameras/whole/stream.mjpeg", base(&app)))
            .await
            .expect("stream opens");
    assert_eq!(frame_sizes(&mut stream, 2).await, [(320, 240), (320, 240)]);
    drop(stream);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_size_is_encoded_only_while_watched() {
    let app = app::start(&format!(
        "[[cameras]]\nid = \"cam\"\nsource = \"test:ball?width=640&height=480&fps=15\"\nalways_on = true\n{SIZES}"
    ))
    .await;
    let url = |q: &str| format!("{}/api/cameras/cam/stream.mjpeg{q}", base(&app));
    let mut default = MjpegStream::connect(&url("")).await.expect("default opens");
    frame_sizes(&mut default, 2).await;
    // large is configured but unwatched: nothing is encoded for it.
    let info = camera(&app, "cam").await;
    assert_eq!(encoded(&info, "large"), 0, "{info}");

    let mut large = MjpegStream::connect(&url("?size=large"))
        .await
        .expect("large opens");
    frame_sizes(&mut large, 3).await;
    drop(large);
    // Its branch closes with its last viewer: the count stops moving.
    let info = until(
        &app,
        "cam",
        Duration::from_secs(10),
        "large has no viewer",
        |i| size(i, "large")["viewers"] == 0,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped = encoded(&camera(&app, "cam").await, "large");
    assert!(stopped >= 3, "{info}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let info = camera(&app, "cam").await;
    assert_eq!(
        encoded(&info, "large"),
        stopped,
        "large is still encoded: {info}"
    );
    // The default size, still watched, went on.
    frame_sizes(&mut default, 2).await;

    // And it comes back with the next viewer.
    let mut again = MjpegStream::connect(&url("?size=large"))
        .await
        .expect("large reopens");
    frame_sizes(&mut again, 2).await;
    assert!(encoded(&camera(&app, "cam").await, "large") > stopped);
    drop((default, again));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_full_size_snapshots_are_encoded_once() {
    let app = app::start("[[cameras]]\nid = \"cam\"\nsource = \"test:ball?width=640&height=480&fps=15\"\nalways_on = true\n").await;
    until(&app, "cam", Duration::from_secs(20), "streaming", |i| {
        i["state"] == "streaming"
    })
    .await;
    let before = encoded(&camera(&app, "cam").await, "full");
    let url = format!("{}/api/cameras/cam/snapshot.jpg?size=full", base(&app));
    let requests = (0..10).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { get(&url).await.unwrap() })
    });
    let mut bodies = Vec::new();
    for r in requests {
        let (status, _, body) = r.await.unwrap();
        assert_eq!(status, 200);
        bodies.push(body);
    }
    let info = camera(&app, "cam").await;
    let encodes = encoded(&info, "full") - before;
    // All ten asked at once: one encode (two if the requests straddled a
    // frame, on a loaded machine), never one per request.
    assert!(
        (1..=2).contains(&encodes),
        "{encodes} encodes for 10 requests: {info}"
    );
    let distinct: std::collections::HashSet<_> = bodies.iter().collect();
    assert_eq!(distinct.len() as u64, encodes);
    let image = decode_jpeg(&bodies[0]).unwrap();
    assert_eq!(
        (image.width, image.height),
        (640, 480),
        "the test source's size"
    );
    app.shutdown().await;
}

/// `camstream_encode_seconds_count` for one camera's size.
async fn encodes_measured(app: &camstream::App, id: &str, size: &str) -> u64 {
    let (_, _, body) = get(&format!("{}/metrics", base(app))).await.unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    let prefix = format!("camstream_encode_seconds_count{{camera=\"{id}\",size=\"{size}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{prefix} in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

/// A 640x360 MJPEG camera (as `sends` says otherwise) at scale 1: its
/// frames reach the viewer as sent, nothing encoded.
async fn passthrough(sends: HttpCameraOptions) {
    let avi1 = sends.avi1;
    let http = HttpCamera::start(HttpCameraOptions {
        width: 640,
        height: 360,
        ..sends
    })
    .await;
    let app = app::start(&format!(
        "[[cameras]]\nid = \"cam\"\nsource = \"{}\"\nscale = 1.0\n",
        http.url("/video.mjpg")
    ))
    .await;
    let mut stream = MjpegStream::connect(&format!("{}/api/cameras/cam/stream.mjpeg", base(&app)))
        .await
        .expect("stream opens");
    for _ in 0..5 {
        let part = stream
            .next_part_timeout(PART_TIMEOUT)
            .await
            .expect("a part");
        let body = part.body.to_vec();
        if avi1 {
            // The standard tables inserted, everything else as sent.
            assert!(body.windows(2).any(|w| w == [0xFF, 0xC4]), "a DHT segment");
            let fixed: Vec<Vec<u8>> = http
                .frames()
                .iter()
                .map(|f| {
                    camstream::jpeg::with_huffman_tables(f)
                        .unwrap()
                        .into_owned()
                })
                .collect();
            assert!(
                fixed.contains(&body),
                "a source frame with the tables inserted"
            );
        } else {
            assert!(
                http.frames().iter().any(|f| f[..] == body[..]),
                "a frame byte for byte as the source sent it"
            );
        }
        // zune-jpeg decodes it (for AVI1, thanks to the inserted tables).
        let image = decode_jpeg(&part.body).expect("a JPEG");
        assert_eq!((image.width, image.height), (640, 360));
    }
    let info = camera(&app, "cam").await;
    assert_eq!(size(&info, "default")["passthrough"], true, "{info}");
    assert_eq!(
        encodes_measured(&app, "cam", "default").await,
        0,
        "nothing encoded"
    );
    drop(stream);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mjpeg_source_at_scale_one_is_passed_through_untouched() {
    passthrough(HttpCameraOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avi1_frames_are_passed_through_with_huffman_tables() {
    passthrough(HttpCameraOptions {
        avi1: true,
        ..HttpCameraOptions::default()
    })
    .await;
}

/// A camera whose parts hold CRLFs around the JPEG: the image alone is
/// passed through, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_around_a_cameras_jpeg_are_trimmed_for_passthrough() {
    passthrough(HttpCameraOptions {
        padded_parts: true,
        ..HttpCameraOptions::default()
    })
    .await;
}

/// Parts delimited by the boundary alone (no Content-Length).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_without_a_content_length_are_passed_through() {
    passthrough(HttpCameraOptions {
        padded_parts: true,
        no_content_length: true,
        ..HttpCameraOptions::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grid_socket_takes_a_size_per_camera() {
    use futures_util::{SinkExt, StreamExt};
    let app = app::start(&format!(
        "[[cameras]]\nid = \"a\"\nsource = \"test:ball?width=640&height=480&fps=15\"\n{SIZES}\
         [[cameras]]\nid = \"b\"\nsource = \"test:ball?width=640&height=480&fps=15\"\n{SIZES}"
    ))
    .await;
    let addr = base(&app).trim_start_matches("http://").to_string();
    // a at thumb (its own), b at large (the socket's size=).
    let url = format!("ws://{addr}/api/ws?cameras=a:thumb,b&size=large");
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("socket opens");
    let mut seen = std::collections::HashMap::new();
    let deadline = Instant::now() + PART_TIMEOUT;
    while seen.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "frames of both cameras: {seen:?}"
        );
        let Ok(Some(Ok(message))) = tokio::time::timeout(PART_TIMEOUT, socket.next()).await else {
            panic!("the socket ended: {seen:?}");
        };
        let tokio_tungstenite::tungstenite::Message::Binary(data) = message else {
            continue;
        };
        let n = usize::from(data[0]);
        let id = String::from_utf8(data[1..1 + n].to_vec()).unwrap();
        let image = decode_jpeg(&data[1 + n..]).unwrap();
        socket
            .send(tokio_tungstenite::tungstenite::Message::text(id.clone()))
            .await
            .unwrap();
        seen.insert(id, (image.width, image.height));
    }
    assert_eq!(seen["a"], (80, 60), "a at thumb (1/8)");
    assert_eq!(seen["b"], (320, 240), "b at large (1/2)");
    let info = camera(&app, "a").await;
    assert_eq!(size(&info, "thumb")["viewers"], 1, "{info}");
    drop(socket);

    // An unknown size on the socket is refused before the upgrade.
    let url = format!("ws://{addr}/api/ws?cameras=a:huge");
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 400)
        }
        other => panic!("expected 400, got {:?}", other.map(|(_, r)| r.status())),
    }
    app.shutdown().await;
}

/// RTP/JPEG (RFC 2435) from an RTSP camera: rtpjpegdepay rebuilds whole
/// JPEGs, which reach a scale-1 size untouched and are decoded (in the DCT)
/// for a smaller one, with no parser between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_jpeg_is_passed_through_at_scale_one_and_decoded_for_smaller_sizes() {
    let rtsp = RtspServer::start(RtspOptions {
        codec: common::rtsp::Codec::Jpeg,
        width: 640,
        height: 360,
        ..RtspOptions::default()
    })
    .expect("RTSP server starts");
    let app = app::start(&format!(
        "[[cameras]]\nid = \"cam\"\nsource = \"{}\"\nscale = 1.0\n\
         [cameras.sizes]\nthumb = {{ scale = 0.25 }}\n",
        rtsp.url()
    ))
    .await;
    let url = |q: &str| format!("{}/api/cameras/cam/stream.mjpeg{q}", base(&app));
    let mut default = MjpegStream::connect(&url("")).await.expect("default opens");
    let mut thumb = MjpegStream::connect(&url("?size=thumb"))
        .await
        .expect("thumb opens");
    let got = frame_sizes(&mut default, 5).await;
    assert!(got.iter().all(|s| *s == (640, 360)), "default: {got:?}");
    let got = frame_sizes(&mut thumb, 5).await;
    assert!(got.iter().all(|s| *s == (160, 90)), "thumb: {got:?}");
    let info = camera(&app, "cam").await;
    assert_eq!(size(&info, "default")["passthrough"], true, "{info}");
    assert_eq!(
        encodes_measured(&app, "cam", "default").await,
        0,
        "nothing encoded for the passed-through size"
    );
    assert!(
        encodes_measured(&app, "cam", "thumb").await > 0,
        "thumb encoded"
    );
    drop((default, thumb));
    app.shutdown().await;
    rtsp.stop();
}

/// One slow size never delays another: every size has its own leaky
/// one-buffer queue and thread after the tee. The `large` branch's encoder
/// is made to take 300 ms a frame (a probe that sleeps on its streaming
/// thread); the default size keeps the source's rate all the while.
#[test]
fn one_slow_size_never_delays_another() {
    use camstream::pipeline::{FrameOutput, Pipeline};
    use gstreamer::prelude::*;
    use std::sync::atomic::Ordering;

    common::init();
    let text = format!(
        "[[cameras]]\nid = \"cam\"\nsource = \"test:smpte?width=640&height=360\"\nmax_fps = 30\n{SIZES}"
    );
    let config = camstream::config::Config::parse(&text, None).expect("config parses");
    let settings = config.cameras[0].settings.clone().expect("settings");
    let plan = settings
        .plan_attempt(camstream::source::Attempt::default())
        .expect("plan");
    let output = FrameOutput::for_settings(&settings, plan.managed);
    let outputs = std::sync::Arc::clone(&output.outputs);
    let pipeline =
        Pipeline::build(&plan, output, camstream::redact::Redactor::default()).expect("builds");
    let slow = pipeline
        .gst_pipeline()
        .by_name("large-encoder")
        .expect("the large size's encoder");
    slow.static_pad("sink")
        .unwrap()
        .add_probe(gstreamer::PadProbeType::BUFFER, |_, _| {
            std::thread::sleep(Duration::from_millis(300));
            gstreamer::PadProbeReturn::Ok
        });
    let default = outputs.get("default").unwrap();
    let large = outputs.get("large").unwrap();
    default.attach();
    large.attach();
    pipeline.start().expect("starts");
    let out = |o: &camstream::outputs::Output| o.stats().frames_out.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(1));
    let (d0, l0) = (out(default), out(large));
    let window = Duration::from_secs(3);
    std::thread::sleep(window);
    let (d1, l1) = (out(default), out(large));
    pipeline.stop();
    let default_fps = (d1 - d0) as f64 / window.as_secs_f64();
    let large_fps = (l1 - l0) as f64 / window.as_secs_f64();
    assert!(large_fps <= 4.0, "the slowed size: {large_fps} fps");
    assert!(
        default_fps >= 20.0,
        "the default size kept the source's 30 fps: {default_fps} fps (large: {large_fps})"
    );
}
