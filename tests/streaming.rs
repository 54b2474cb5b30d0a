//! End to end: an in-process RTSP camera (H.264 from videotestsrc) or a test
//! source, camstream's real pipeline, and real HTTP clients parsing the
//! multipart stream and decoding the JPEGs.

mod common;

use std::time::Duration;

use common::app::{self, base, camera, get, get_json, wait_for_camera};
use common::mjpeg::{MjpegStream, decode_jpeg, get_raw};
use common::rtsp::{RtspOptions, RtspServer};

const PART_TIMEOUT: Duration = Duration::from_secs(20);

fn rtsp_camera(width: u32, height: u32) -> RtspServer {
    RtspServer::start(RtspOptions {
        width,
        height,
        ..RtspOptions::default()
    })
    .expect("RTSP server starts")
}

/// Reads `n` parts and decodes each, returning their sizes.
async fn frame_sizes(stream: &mut MjpegStream, n: usize) -> Vec<(u32, u32)> {
    let mut sizes = Vec::new();
    for _ in 0..n {
        let part = stream
            .next_part_timeout(PART_TIMEOUT)
            .await
            .expect("a part");
        assert_eq!(part.header("content-type"), Some("image/jpeg"));
        let len: usize = part.header("content-length").unwrap().parse().unwrap();
        assert_eq!(len, part.body.len());
        let image = decode_jpeg(&part.body).expect("a JPEG");
        sizes.push((image.width, image.height));
    }
    sizes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_a_quarter_of_the_rtsp_source() {
    for (width, height, expected) in [(1920, 1080, (480, 270)), (1280, 720, (320, 180))] {
        let rtsp = rtsp_camera(width, height);
        let app = app::start(&format!(
            "[[cameras]]\nid = \"cam\"\nsource = \"{}\"\n",
            rtsp.url()
        ))
        .await;
        let url = format!("{}/api/cameras/cam/stream.mjpeg", base(&app));
        let mut stream = MjpegStream::connect(&url).await.expect("stream opens");
        let sizes = frame_sizes(&mut stream, 5).await;
        assert!(
            sizes.iter().all(|s| *s == expected),
            "{width}x{height}: got {sizes:?}"
        );

        let info = camera(&app, "cam").await;
        assert_eq!(info["input"]["width"], width, "{info}");
        assert_eq!(info["input"]["height"], height, "{info}");
        assert_eq!(info["output"]["width"], expected.0, "{info}");
        assert_eq!(info["output"]["height"], expected.1, "{info}");
        assert_eq!(info["state"], "streaming");
        drop(stream);
        app.shutdown().await;
        rtsp.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_viewers_share_one_pipeline() {
    let rtsp = rtsp_camera(640, 360);
    let app = app::start(&format!(
        "[[cameras]]\nid = 1\nsource = \"{}\"\n",
        rtsp.url()
    ))
    .await;
    let url = format!("{}/api/cameras/1/stream.mjpeg", base(&app));
    const VIEWERS: usize = 8;
    let mut streams = Vec::new();
    for _ in 0..VIEWERS {
        streams.push(MjpegStream::connect(&url).await.expect("stream opens"));
    }
    let info = camera(&app, "1").await;
    assert_eq!(info["viewers"], VIEWERS, "{info}");
    // All viewers get frames at the same time, concurrently.
    let readers = streams.into_iter().map(|mut s| {
        tokio::spawn(async move {
            let sizes = frame_sizes(&mut s, 10).await;
            (s, sizes)
        })
    });
    let results = futures_util::future::join_all(readers).await;
    for result in &results {
        let (_, sizes) = result.as_ref().expect("viewer task");
        assert!(sizes.iter().all(|s| *s == (160, 90)), "{sizes:?}");
    }
    // One pipeline, started once, encoding once: frames_out counts encoded
    // frames, so 8 viewers x 10 frames must not need 80 encodes.
    let info = camera(&app, "1").await;
    assert_eq!(info["starts"], 1, "{info}");
    assert_eq!(info["restarts"], 0, "{info}");
    drop(results);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encodes_once_however_many_viewers() {
    // A low frame rate makes the counts exact enough to compare: over the
    // same stretch, 6 viewers must not multiply the number of encodes.
    let app = app::start(
        "[[cameras]]\nid = \"t\"\nsource = \"test:smpte?width=320&height=180&fps=10\"\n",
    )
    .await;
    let url = format!("{}/api/cameras/t/stream.mjpeg", base(&app));
    let mut streams = Vec::new();
    for _ in 0..6 {
        streams.push(MjpegStream::connect(&url).await.unwrap());
    }
    let before = camera(&app, "t").await["frames_out"].as_u64().unwrap();
    let mut received = 0;
    for stream in &mut streams {
        for _ in 0..10 {
            stream.next_part_timeout(PART_TIMEOUT).await.unwrap();
            received += 1;
        }
    }
    let encoded = camera(&app, "t").await["frames_out"].as_u64().unwrap() - before;
    assert_eq!(received, 60);
    assert!(encoded < 30, "{encoded} encodes for 6 viewers x 10 frames");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_route_streams_like_the_django_view() {
    let app = app::start("[[cameras]]\nid = 1\nsource = \"test:\"\n").await;
    let url = format!("{}/api/cv/display?camera_id=1", base(&app));
    let mut stream = MjpegStream::connect(&url).await.expect("stream opens");
    let headers = stream.headers();
    assert_eq!(
        headers["content-type"],
        "multipart/x-mixed-replace; boundary=frame"
    );
    assert_eq!(stream.boundary(), "frame");
    assert!(
        headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("no-cache")
    );
    assert_eq!(headers["x-accel-buffering"], "no");
    let sizes = frame_sizes(&mut stream, 3).await;
    // The demo pattern is 1280x720.
    assert!(sizes.iter().all(|s| *s == (320, 180)), "{sizes:?}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_frame_is_followed_at_once_by_the_next_boundary() {
    // At 2 fps frames are 500 ms apart: everything that arrives within
    // 200 ms of the first part's body is that part's trailer, which must be
    // the next boundary (Chromium paints a part only when it arrives).
    let app = app::start(
        "[[cameras]]\nid = \"slow\"\nsource = \"test:smpte?width=320&height=240&fps=2\"\n",
    )
    .await;
    let mut response = get_raw(app.local_addr(), "/api/cameras/slow/stream.mjpeg")
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    let opening = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: ";
    let body = response
        .read_body_at_least(opening.len() + 8, Duration::from_secs(10))
        .await
        .unwrap()
        .to_vec();
    assert_eq!(
        &body[..opening.len()],
        opening,
        "{:?}",
        String::from_utf8_lossy(&body)
    );
    let rest = &body[opening.len()..];
    let digits = rest.iter().position(|b| *b == b'\r').unwrap();
    let len: usize = std::str::from_utf8(&rest[..digits])
        .unwrap()
        .parse()
        .unwrap();
    let header_len = opening.len() + digits + 4;
    let want = header_len + len;
    response
        .read_body_at_least(want, Duration::from_secs(10))
        .await
        .unwrap();
    response.read_for(Duration::from_millis(200)).await.unwrap();
    let body = response.body();
    assert_eq!(
        &body[header_len..header_len + 2],
        b"\xff\xd8",
        "JPEG starts right after the blank line"
    );
    assert_eq!(
        &body[want..],
        b"\r\n--frame\r\n",
        "the trailer is exactly the next boundary"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_returns_the_newest_frame() {
    let app =
        app::start("[[cameras]]\nid = \"s\"\nsource = \"test:ball?width=640&height=480\"\n").await;
    let (status, headers, body) = get(&format!("{}/api/cameras/s/snapshot.jpg", base(&app)))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "image/jpeg");
    assert_eq!(
        headers["content-length"].to_str().unwrap(),
        body.len().to_string()
    );
    assert!(
        headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("no-store")
    );
    let image = decode_jpeg(&body).unwrap();
    assert_eq!((image.width, image.height), (160, 120));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_list_redacts_the_password() {
    let rtsp = RtspServer::start(RtspOptions {
        credentials: Some(("admin".into(), "s3cr3t-Pw".into())),
        ..RtspOptions::default()
    })
    .unwrap();
    let source = rtsp.url_with_credentials("admin", "s3cr3t-Pw");
    let app = app::start(&format!(
        "[[cameras]]\nid = \"door\"\nname = \"Front door\"\nsource = \"{source}\"\n"
    ))
    .await;
    // Stream once so the credentials are really used.
    let mut stream = MjpegStream::connect(&format!("{}/api/cameras/door/stream.mjpeg", base(&app)))
        .await
        .unwrap();
    frame_sizes(&mut stream, 2).await;
    // The supervisor notes the first frame on its next 20 ms tick, and a
    // camera's first frames can come in a burst: two of them may reach a
    // viewer before the state says so.
    wait_for_camera(&app, "door", Duration::from_secs(5), "streaming", |c| {
        c["state"] == "streaming"
    })
    .await
    .unwrap();

    let (status, list) = get_json(&format!("{}/api/cameras", base(&app)))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let text = list.to_string();
    assert!(!text.contains("s3cr3t"), "{text}");
    let cam = &list[0];
    assert_eq!(cam["id"], "door");
    assert_eq!(cam["name"], "Front door");
    assert_eq!(
        cam["source"],
        format!("rtsp://admin:***@127.0.0.1:{}/test", rtsp.port())
    );
    assert_eq!(cam["state"], "streaming", "{cam}");
    assert_eq!(cam["viewers"], 1);
    assert!(cam["fps"].is_number());
    assert_eq!(cam["output"]["width"], 160);
    let (_, one) = get_json(&format!("{}/api/cameras/door", base(&app)))
        .await
        .unwrap();
    assert!(!one.to_string().contains("s3cr3t"));
    assert_eq!(one["source"], cam["source"]);
    drop(stream);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors() {
    let app = app::start("[[cameras]]\nid = 1\nsource = \"test:\"\n").await;
    let b = base(&app);
    for (path, status, code) in [
        ("/api/cameras/nope", 404, "unknown_camera"),
        ("/api/cameras/nope/stream.mjpeg", 404, "unknown_camera"),
        ("/api/cameras/nope/snapshot.jpg", 404, "unknown_camera"),
        ("/api/cv/display?camera_id=42", 404, "unknown_camera"),
        ("/api/cv/display", 400, "bad_request"),
        ("/api/cameras/1/stream.mjpeg?fps=abc", 400, "bad_request"),
        ("/api/cameras/1/stream.mjpeg?fps=0", 400, "bad_request"),
        // Percent-encoding never reaches a route (docs/security.md); a bad
        // id in the query does.
        ("/api/cameras/bad%20id", 400, "bad_path"),
        ("/api/cv/display?camera_id=bad%20id", 400, "bad_camera_id"),
        ("/no/such/route", 404, "not_found"),
    ] {
        let (got, json) = get_json(&format!("{b}{path}")).await.unwrap();
        assert_eq!(got, status, "{path}: {json}");
        assert_eq!(json["error"]["code"], code, "{path}: {json}");
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let (status, json) = get_json(&format!("{b}/api/cameras/nope")).await.unwrap();
    assert_eq!(status, 404);
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"nope\""),
        "{json}"
    );
    let (status, json) = get_json(&format!("{b}/healthz")).await.unwrap();
    assert_eq!((status, &json["status"]), (200, &serde_json::json!("ok")));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_that_cannot_start_is_503_with_the_reason_and_harms_no_other() {
    let app = app::start(
        "[[cameras]]\nid = \"ghost\"\nsource = \"nosuchelement0 ! videoconvert\"\n\
         [[cameras]]\nid = \"closed\"\nsource = \"rtsp://admin:hunter22@127.0.0.1:9/x\"\n\
         [[cameras]]\nid = \"ok\"\nsource = \"test:\"\n",
    )
    .await;
    let b = base(&app);
    let (status, json) = get_json(&format!("{b}/api/cameras/ghost/stream.mjpeg"))
        .await
        .unwrap();
    assert_eq!(status, 503, "{json}");
    assert_eq!(json["error"]["code"], "camera_unavailable");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nosuchelement0"),
        "{json}"
    );
    let (status, headers, _) = get(&format!("{b}/api/cameras/closed/snapshot.jpg"))
        .await
        .unwrap();
    assert_eq!(status, 503);
    assert!(headers.contains_key("retry-after"));
    let (_, json) = get_json(&format!("{b}/api/cameras/closed/stream.mjpeg"))
        .await
        .unwrap();
    let message = json["error"]["message"].as_str().unwrap();
    assert!(!message.contains("hunter22"), "{message}");
    let ghost = camera(&app, "ghost").await;
    assert_eq!(ghost["state"], "failed", "{ghost}");

    let mut stream = MjpegStream::connect(&format!("{b}/api/cameras/ok/stream.mjpeg"))
        .await
        .unwrap();
    frame_sizes(&mut stream, 3).await;
    let (_, list) = get_json(&format!("{b}/api/cameras")).await.unwrap();
    assert!(!list.to_string().contains("hunter22"));
    drop(stream);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_camera_by_default() {
    common::init();
    let mut config = camstream::Config::demo();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    let app = camstream::App::build(config).await.unwrap();
    let (_, list) = get_json(&format!("{}/api/cameras", base(&app)))
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], "demo");
    let (status, _, page) = get(&format!("{}/", base(&app))).await.unwrap();
    assert_eq!(status, 200);
    assert!(
        String::from_utf8_lossy(&page).contains("<img")
            || String::from_utf8_lossy(&page).contains("img")
    );

    let mut stream = MjpegStream::connect(&format!("{}/api/cameras/demo/stream.mjpeg", base(&app)))
        .await
        .unwrap();
    let first = stream.next_part_timeout(PART_TIMEOUT).await.unwrap();
    let first_image = decode_jpeg(&first.body).unwrap();
    assert_eq!((first_image.width, first_image.height), (320, 180));
    // The pattern scrolls: a second later the picture is different.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut later = stream.next_part_timeout(PART_TIMEOUT).await.unwrap();
    for _ in 0..3 {
        later = stream.next_part_timeout(PART_TIMEOUT).await.unwrap();
    }
    assert_ne!(
        decode_jpeg(&later.body).unwrap().rgb,
        first_image.rgb,
        "the demo is not moving"
    );
    drop(stream);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_camera_stops_and_restarts_for_the_next_viewer() {
    let rtsp = rtsp_camera(640, 360);
    let app = app::start(&format!(
        "[[cameras]]\nid = \"lazy\"\nsource = \"{}\"\nidle_timeout_s = 0.5\n",
        rtsp.url()
    ))
    .await;
    let info = camera(&app, "lazy").await;
    assert_eq!(
        info["state"], "idle",
        "cameras start on the first viewer: {info}"
    );
    assert_eq!(info["starts"], 0);

    let url = format!("{}/api/cameras/lazy/stream.mjpeg", base(&app));
    let mut stream = MjpegStream::connect(&url).await.unwrap();
    frame_sizes(&mut stream, 3).await;
    drop(stream);
    let info = wait_for_camera(&app, "lazy", Duration::from_secs(10), "idle", |c| {
        c["state"] == "idle"
    })
    .await
    .unwrap();
    assert_eq!(info["starts"], 1);
    assert_eq!(info["viewers"], 0);

    let mut stream = MjpegStream::connect(&url).await.unwrap();
    assert_eq!(frame_sizes(&mut stream, 3).await[0], (160, 90));
    let info = camera(&app, "lazy").await;
    assert_eq!(info["starts"], 2, "{info}");
    assert_eq!(info["restarts"], 0, "an idle stop is not a failure: {info}");
    drop(stream);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_on_cameras_run_without_viewers() {
    let app = app::start("[[cameras]]\nid = \"a\"\nsource = \"test:smpte?width=320&height=240\"\nalways_on = true\nidle_timeout_s = 0\n").await;
    // Frames flow from the source; no size is watched, so none is encoded.
    let info = wait_for_camera(&app, "a", Duration::from_secs(10), "streaming", |c| {
        c["state"] == "streaming" && c["frames_in"].as_u64() > Some(5)
    })
    .await
    .unwrap();
    assert_eq!(info["frames_out"], 0, "{info}");
    app.shutdown().await;
}
