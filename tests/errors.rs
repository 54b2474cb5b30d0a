//! Every row of docs/errors.md: bad input gets a clear error that names what
//! is wrong and how to fix it, harms no other camera, and never shows a
//! password (in responses or in log lines).

mod common;

use std::time::Duration;

use camstream::Config;
use common::app::{self, base, camera, get, get_json};
use common::mjpeg::MjpegStream;
use common::rtsp::{RtspOptions, RtspServer};

/// The password used everywhere in this file; it must never come back.
const SECRET: &str = "Pa55-w0rd-never-shown";

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(
        text,
        Some(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/errors.toml"
        ))),
    )
    .map_err(|e| e.to_string())
}

/// The reason a camera is failed with, from the config alone.
fn camera_error(text: &str) -> String {
    let config = parse(text).expect("the file itself parses");
    config.cameras[0]
        .settings
        .as_ref()
        .expect_err("the camera is invalid")
        .clone()
}

// ---- config file ------------------------------------------------------------

#[test]
fn malformed_toml_names_file_line_and_column() {
    let err = parse(&format!(
        "[[cameras]]\nid = 1\nsource = \"rtsp://admin:{SECRET}@cam/x\nname = \"x\"\n"
    ))
    .unwrap_err();
    assert!(err.contains("errors.toml:3:"), "{err}");
    assert!(!err.contains(SECRET), "{err}");
}

#[test]
fn the_binary_refuses_a_malformed_file_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nlisten = 8000 8000\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_camstream"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml:2:"), "{stderr}");
}

#[test]
fn bad_server_settings_are_fatal() {
    let err = parse("[server]\nwrite_timeout_s = 0\n").unwrap_err();
    assert!(err.contains("write_timeout_s = 0 is out of range"), "{err}");
    let err = parse("[server]\nmax_viewers = 0\n").unwrap_err();
    assert!(err.contains("max_viewers = 0"), "{err}");
    let err = parse("[server]\nheader_timeout_s = 0\n").unwrap_err();
    assert!(
        err.contains("header_timeout_s = 0 is out of range: use 0.1 to 600 seconds"),
        "{err}"
    );
    let err = parse("[server]\nmax_connections_per_client = 0\n").unwrap_err();
    assert!(
        err.contains("max_connections_per_client = 0 would refuse every connection"),
        "{err}"
    );
    let err =
        parse("[[server.auth.users]]\nname = \"a\"\npassword_hash = \"hunter2\"\n").unwrap_err();
    assert!(
        err.contains("password_hash is not a PHC string")
            && err.contains("camstream hash-password"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn unknown_keys_are_named() {
    let err = parse("[server]\nlisten = \"127.0.0.1:0\"\nlisen = 1\n").unwrap_err();
    assert!(err.contains(":3:") && err.contains("lisen"), "{err}");
    let err = camera_error("[[cameras]]\nid = \"a\"\nsource = 0\nsclae = 0.5\n");
    assert!(
        err.contains("unknown field `sclae`") && err.contains("scale"),
        "{err}"
    );
}

#[test]
fn duplicate_and_empty_ids() {
    let config = parse("[[cameras]]\nid = \"a\"\nsource = 0\n[[cameras]]\nid = \"a\"\nsource = 1\n[[cameras]]\nid = \"\"\nsource = 2\n").unwrap();
    assert_eq!(config.cameras.len(), 1);
    assert!(
        config.problems[0].contains(":4: duplicate camera id \"a\""),
        "{:?}",
        config.problems
    );
    assert!(
        config.problems[1].contains(":7: camera #3 ignored: camera id is empty"),
        "{:?}",
        config.problems
    );
}

#[test]
fn unknown_source_scheme() {
    let err = camera_error(&format!(
        "[[cameras]]\nid = \"a\"\nsource = \"rtmp://u:{SECRET}@h/live\"\n"
    ));
    assert!(
        err.contains("unknown source scheme \"rtmp:\"") && err.contains("rtsp://"),
        "{err}"
    );
    assert!(!err.contains(SECRET));
}

#[test]
fn scale_and_quality_out_of_range() {
    for (setting, expected) in [
        ("scale = 0", "scale = 0 is out of range"),
        ("scale = -0.5", "scale = -0.5 is out of range"),
        ("scale = 1.5", "scale = 1.5 is out of range"),
        (
            "quality = 0",
            "quality = 0 is out of range: use a JPEG quality from 1 to 100",
        ),
        ("quality = 300", "quality = 300 is out of range"),
        ("max_fps = 0", "max_fps = 0 is out of range"),
        ("watchdog_s = 0", "watchdog_s = 0 is out of range"),
        (
            "first_frame_timeout_s = 0.5",
            "first_frame_timeout_s = 0.5 is out of range: use 1 to 600 seconds",
        ),
    ] {
        let err = camera_error(&format!("[[cameras]]\nid = \"a\"\nsource = 0\n{setting}\n"));
        assert!(err.contains(expected), "{setting}: {err}");
    }
}

#[test]
fn a_transport_the_url_scheme_contradicts() {
    let err = camera_error(&format!(
        "[[cameras]]\nid = \"a\"\nsource = \"rtspt://admin:{SECRET}@cam/x\"\ntransport = \"udp\"\n"
    ));
    assert!(
        err.contains("transport = \"udp\" contradicts the source URL's scheme, which forces TCP"),
        "{err}"
    );
    assert!(!err.contains(SECRET), "{err}");
    // auto, or the same one, is fine.
    for transport in ["auto", "tcp"] {
        let config = parse(&format!(
            "[[cameras]]\nid = \"a\"\nsource = \"rtspt://cam/x\"\ntransport = \"{transport}\"\n"
        ))
        .unwrap();
        assert!(config.cameras[0].settings.is_ok(), "{transport}");
    }
}

#[test]
fn a_decoder_that_is_no_family() {
    let err =
        camera_error("[[cameras]]\nid = \"a\"\nsource = \"rtsp://cam/x\"\ndecoder = \"cuda\"\n");
    assert!(
        err.contains("errors.toml:1")
            && err.contains(
                "unknown variant `cuda`, expected one of `auto`, `software`, `vaapi`, `v4l2`, `nvidia`"
            ),
        "{err}"
    );
    // In [defaults], the whole file is refused.
    let err = parse("[defaults]\ndecoder = \"gpu\"\n").unwrap_err();
    assert!(err.contains("unknown variant `gpu`"), "{err}");
}

#[test]
fn pipeline_files_missing_or_outside_the_directory() {
    let err =
        camera_error("[[cameras]]\nid = \"a\"\nsource = 0\npipeline_file = \"nope.pipeline\"\n");
    assert!(
        err.contains("pipeline_file = \"nope.pipeline\" cannot be read"),
        "{err}"
    );
    for escape in ["../Cargo.toml", "/etc/hostname"] {
        let err = camera_error(&format!(
            "[[cameras]]\nid = \"a\"\nsource = 0\npipeline_file = \"{escape}\"\n"
        ));
        assert!(
            err.contains("outside the pipelines directory"),
            "{escape}: {err}"
        );
    }
}

// ---- sources, overrides and HTTP, in one running server ----------------------

/// Requests a camera's stream and returns the 503's message.
async fn unavailable(url: &str) -> String {
    let (status, json) = get_json(url).await.unwrap();
    assert_eq!(status, 503, "{url}: {json}");
    json["error"]["message"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_camera_fails_alone_with_a_clear_reason() {
    let logs = common::logs::capture();
    let rtsp = RtspServer::start(RtspOptions {
        credentials: Some(("admin".into(), "right".into())),
        ..RtspOptions::default()
    })
    .unwrap();
    // A "camera" that accepts the connection and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    // The good camera's own server doubles as an HTTP source that is not
    // MJPEG (/healthz is JSON).
    let other = app::start("[[cameras]]\nid = \"x\"\nsource = \"test:\"\n").await;
    let rtsp_port = rtsp.port();
    let cameras = format!(
        r#"
[[cameras]]
id = "typo"
source = 0
sclae = 0.5

[[cameras]]
id = "scheme"
source = "rtmp://admin:{SECRET}@cam/live"

[[cameras]]
id = "nodev"
source = "/dev/video77"

[[cameras]]
id = "notcapture"
source = "/dev/null"

[[cameras]]
id = "refused"
source = "rtsp://admin:{SECRET}@127.0.0.1:9/x"

[[cameras]]
id = "silent"
source = "rtsp://admin:{SECRET}@127.0.0.1:{silent_port}/x"

[[cameras]]
id = "badpass"
source = "rtsp://admin:{SECRET}@127.0.0.1:{rtsp_port}/test"

[[cameras]]
id = "badpath"
source = "rtsp://admin:right@127.0.0.1:{rtsp_port}/nope"

[[cameras]]
id = "notmjpeg"
source = "{other_base}/healthz"

[[cameras]]
id = "syntax"
source = "rtsp://admin:{SECRET}@cam/x"
pipeline = "rtspsrc location={{location}} ! ! decodebin"

[[cameras]]
id = "nosink"
pipeline = "videotestsrc ! jpegenc ! appsink"

[[cameras]]
id = "notinstalled"
source = "rtsp://cam/x"
pipeline = "rtspsrc location={{location}} ! rtph264depay ! vaapih264dec"

[[cameras]]
id = "noprop"
pipeline = "videotestsrc is-live=true sped=2 ! videoconvert"

[[cameras]]
id = "badvalue"
pipeline = "videotestsrc is-live=true pattern=stripes ! videoconvert"

[[cameras]]
id = "http404"
source = "{other_base}/no/such/stream.mjpg"

[[cameras]]
id = "nofile"
source = "/nonexistent/clip.mp4"

[[cameras]]
id = "notjpeg"
pipeline = "videotestsrc is-live=true ! appsink name=sink"

[[cameras]]
id = "good"
source = "test:smpte?width=320&height=240"
"#,
        other_base = base(&other)
    );
    let app = app::start(&cameras).await;
    let b = base(&app);
    let stream = |id: &str| format!("{b}/api/cameras/{id}/stream.mjpeg");

    // Configuration and pipeline problems: `failed` from the start, with the
    // reason, before anyone asks for the stream.
    for (id, expected) in [
        ("typo", "unknown field `sclae`"),
        ("scheme", "unknown source scheme \"rtmp:\""),
        (
            "syntax",
            "syntax error in \"rtspsrc location=rtsp://cam/x ! ! decodebin\"",
        ),
        ("nosink", "no appsink named \"sink\""),
        (
            "notinstalled",
            "\"vaapih264dec\" is not installed: install the Debian package gstreamer1.0-vaapi",
        ),
        // An installed element with a wrong property or value is not
        // "not installed" (GStreamer lists it among the missing elements).
        ("noprop", "no property \"sped\" in element \"videotestsrc\""),
        (
            "badvalue",
            "could not set property \"pattern\" in element \"videotestsrc\" to \"stripes\"",
        ),
    ] {
        let info = common::app::wait_for_camera(&app, id, Duration::from_secs(10), "failed", |c| {
            c["state"] == "failed"
        })
        .await
        .unwrap();
        let reason = info["last_error"].as_str().unwrap();
        assert!(reason.contains(expected), "{id}: {reason}");
        let message = unavailable(&stream(id)).await;
        assert!(message.contains(expected), "{id}: {message}");
    }

    // Sources that fail when opened: the viewer gets 503 with the reason.
    let checks = [
        ("nodev", "V4L2 device /dev/video77 does not exist"),
        ("notcapture", "/dev/null is not a V4L2 video capture device"),
        (
            "refused",
            "cannot connect to the RTSP server at 127.0.0.1:9",
        ),
        ("silent", "did not answer in time"),
        ("badpass", "refused the credentials (401 Unauthorized)"),
        ("badpath", "no stream at this path (404 Not Found)"),
        ("notmjpeg", "not an MJPEG stream"),
        ("http404", "the HTTP server answered 404"),
        ("nofile", "file /nonexistent/clip.mp4 does not exist"),
        ("notjpeg", "formats do not fit together (not-negotiated)"),
    ];
    let results = futures_util::future::join_all(checks.iter().map(|(id, _)| {
        let url = stream(id);
        async move {
            let start = std::time::Instant::now();
            (unavailable(&url).await, start.elapsed())
        }
    }))
    .await;
    for ((id, expected), (message, took)) in checks.iter().zip(results) {
        assert!(message.contains(expected), "{id}: {message}");
        // Bounded: rtspsrc's TCP timeout is 5 s, the open wait 10 s.
        assert!(took < Duration::from_secs(12), "{id} took {took:?}");
        let info = camera(&app, id).await;
        assert!(
            info["last_error"].as_str().unwrap().contains(expected),
            "{id}: {info}"
        );
    }

    // HTTP input.
    for (path, status) in [
        ("/api/cameras/nobody/stream.mjpeg", 404),
        ("/api/cameras/bad%20id/snapshot.jpg", 400),
        ("/api/cameras/good/stream.mjpeg?fps=fast", 400),
        ("/api/cv/display?camera=good", 400),
    ] {
        let (got, _, body) = get(&format!("{b}{path}")).await.unwrap();
        assert_eq!(got, status, "{path}: {}", String::from_utf8_lossy(&body));
    }

    // And the good camera streams all along.
    let mut good = MjpegStream::connect(&stream("good")).await.unwrap();
    for _ in 0..5 {
        good.next_part_timeout(Duration::from_secs(10))
            .await
            .unwrap();
    }

    // The password never came back, in any response or log line.
    let (_, list) = get_json(&format!("{b}/api/cameras")).await.unwrap();
    assert!(!list.to_string().contains(SECRET));
    let logs = logs.text();
    assert!(logs.contains("silent"), "logs were captured");
    assert!(!logs.contains(SECRET), "a log line shows the password");
    drop(good);
    drop(silent);
    app.shutdown().await;
    other.shutdown().await;
    rtsp.stop();
}
