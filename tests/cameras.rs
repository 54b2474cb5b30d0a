//! Cameras as they are in the wild: each form real cameras and servers use,
//! against a real server configured for it (gst-rtsp-server, or the HTTP
//! test camera, in-process on loopback), watched by a real HTTP viewer
//! reading JPEGs of the right size.
//!
//! The RTSP test camera sends 640x360 (160x90 at camstream's default 0.25
//! scale); the HTTP one 640x480 (160x120).

mod common;

use std::time::Duration;

use camstream::App;
use common::app::{self, base, camera, get_json, wait_for_camera};
use common::http::{HttpCamera, HttpCameraOptions};
use common::mjpeg::{MjpegStream, decode_jpeg};
use common::rtsp::{AuthMethod, Codec, RtspOptions, RtspServer, TlsIdentity, Transports};

const PART_TIMEOUT: Duration = Duration::from_secs(20);
/// A password that must never come back in any form.
const SECRET: &str = "Wild-Cam-Pa55";

/// Reads `n` JPEGs from a camera's stream; each must be `size`.
async fn watch(app: &App, id: &str, n: usize, size: (u32, u32)) {
    let url = format!("{}/api/cameras/{id}/stream.mjpeg", base(app));
    let mut stream = MjpegStream::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("{id}: {e:#}"));
    for _ in 0..n {
        let part = stream
            .next_part_timeout(PART_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{id}: {e:#}"));
        let image = decode_jpeg(&part.body).unwrap();
        assert_eq!((image.width, image.height), size, "{id}");
    }
}

/// The 503 message a viewer of a camera that cannot start gets.
async fn refusal(app: &App, id: &str) -> String {
    let url = format!("{}/api/cameras/{id}/stream.mjpeg", base(app));
    let (status, json) = get_json(&url).await.unwrap();
    assert_eq!(status, 503, "{id}: {json}");
    let message = json["error"]["message"].as_str().unwrap().to_string();
    assert!(!message.contains(SECRET), "{id}: {message}");
    message
}

fn rtsp(opts: RtspOptions) -> RtspServer {
    RtspServer::start(opts).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_only_server_streams_with_no_transport_set_and_udp_is_remembered() {
    let server = rtsp(RtspOptions {
        transports: Transports::UdpOnly,
        ..RtspOptions::default()
    });
    // No `transport`: the default, auto. A short idle timeout, to restart.
    let app = app::start(&format!(
        "[[cameras]]\nid = \"cam\"\nsource = \"{}\"\nidle_timeout_s = 0.2\n",
        server.url()
    ))
    .await;
    watch(&app, "cam", 5, (160, 90)).await;
    let info = camera(&app, "cam").await;
    assert_eq!(info["transport"], "udp", "{info}");
    // TCP was refused and UDP tried at once: two pipelines, no failure.
    assert_eq!(info["starts"], 2, "{info}");
    assert_eq!(info["restarts"], 0, "{info}");
    assert!(info["last_error"].is_null(), "{info}");

    // Idle, then started again: straight to UDP, one pipeline.
    wait_for_camera(&app, "cam", Duration::from_secs(10), "idle", |c| {
        c["state"] == "idle"
    })
    .await
    .unwrap();
    watch(&app, "cam", 2, (160, 90)).await;
    let info = camera(&app, "cam").await;
    assert_eq!(info["starts"], 3, "{info}");
    assert_eq!(info["transport"], "udp", "{info}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_only_server_streams_over_tcp_at_the_first_try() {
    let server = rtsp(RtspOptions {
        transports: Transports::TcpOnly,
        ..RtspOptions::default()
    });
    let app = app::start(&format!(
        "[[cameras]]\nid = \"cam\"\nsource = \"{}\"\n",
        server.url()
    ))
    .await;
    watch(&app, "cam", 5, (160, 90)).await;
    let info = camera(&app, "cam").await;
    assert_eq!(info["transport"], "tcp", "{info}");
    assert_eq!(info["starts"], 1, "{info}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_transports_name_what_was_tried_and_what_to_change() {
    let udp_only = rtsp(RtspOptions {
        transports: Transports::UdpOnly,
        ..RtspOptions::default()
    });
    let multicast_only = rtsp(RtspOptions {
        transports: Transports::MulticastOnly,
        ..RtspOptions::default()
    });
    let app = app::start(&format!(
        "[[cameras]]\nid = \"pinned\"\nsource = \"{}\"\ntransport = \"tcp\"\n\
         [[cameras]]\nid = \"none\"\nsource = \"{}\"\n",
        udp_only.url(),
        multicast_only.url()
    ))
    .await;
    let message = refusal(&app, "pinned").await;
    assert!(
        message.contains(&format!(
            "the RTSP server at 127.0.0.1:{} set up no stream over TCP (it answered 461 Unsupported Transport",
            udp_only.port()
        )) && message.contains("set transport = \"udp\""),
        "{message}"
    );
    let message = refusal(&app, "none").await;
    assert!(
        message.contains("no RTSP transport worked (tried TCP, then UDP)")
            && message.contains("no stream over TCP")
            && message.contains("no stream over UDP")
            && message.contains("Check the camera's RTSP settings"),
        "{message}"
    );
    let info = camera(&app, "none").await;
    assert_eq!(info["state"], "reconnecting", "{info}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_authentication_and_a_wrong_password() {
    let server = rtsp(RtspOptions {
        credentials: Some(("admin".into(), SECRET.into())),
        auth_method: AuthMethod::Digest,
        ..RtspOptions::default()
    });
    let app = app::start(&format!(
        "[[cameras]]\nid = \"right\"\nsource = \"{}\"\n\
         [[cameras]]\nid = \"wrong\"\nsource = \"{}\"\n",
        server.url_with_credentials("admin", SECRET),
        server.url_with_credentials("admin", &format!("{SECRET}-not")),
    ))
    .await;
    watch(&app, "right", 5, (160, 90)).await;
    let message = refusal(&app, "wrong").await;
    assert!(
        message.contains("refused the credentials (401 Unauthorized)")
            && message.contains("check the user name and password"),
        "{message}"
    );
    let (_, list) = get_json(&format!("{}/api/cameras", base(&app)))
        .await
        .unwrap();
    let list = list.to_string();
    assert!(!list.contains(SECRET), "{list}");
    assert!(list.contains("rtsp://admin:***@127.0.0.1"), "{list}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtsps_with_a_self_signed_certificate() {
    let server = rtsp(RtspOptions {
        tls: Some(TlsIdentity::self_signed()),
        ..RtspOptions::default()
    });
    assert!(server.url().starts_with("rtsps://"));
    let app = app::start(&format!(
        "[[cameras]]\nid = \"verified\"\nsource = \"{0}\"\n\
         [[cameras]]\nid = \"trusted\"\nsource = \"{0}\"\ntls_verify = false\n",
        server.url()
    ))
    .await;
    let message = refusal(&app, "verified").await;
    assert!(
        message.contains("presented a TLS certificate camstream cannot verify")
            && message.contains("self-signed")
            && message.contains("set tls_verify = false"),
        "{message}"
    );
    watch(&app, "trusted", 5, (160, 90)).await;
    assert_eq!(camera(&app, "trusted").await["transport"], "tcp");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mjpeg_over_rtsp_is_decoded_like_any_other() {
    let server = rtsp(RtspOptions {
        codec: Codec::Jpeg,
        ..RtspOptions::default()
    });
    let app = app::start(&format!(
        "[[cameras]]\nid = \"cam\"\nsource = \"{}\"\n",
        server.url()
    ))
    .await;
    watch(&app, "cam", 5, (160, 90)).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audio_track_is_ignored_over_either_transport() {
    let server = rtsp(RtspOptions {
        audio: true,
        ..RtspOptions::default()
    });
    // watchdog_s = 1: an audio track that stalled the video would show.
    let app = app::start(&format!(
        "[[cameras]]\nid = \"tcp\"\nsource = \"{0}\"\nwatchdog_s = 1\n\
         [[cameras]]\nid = \"udp\"\nsource = \"{0}\"\ntransport = \"udp\"\nwatchdog_s = 1\n",
        server.url()
    ))
    .await;
    // Three seconds of video at 30 fps on each.
    let (a, b) = tokio::join!(
        watch(&app, "tcp", 90, (160, 90)),
        watch(&app, "udp", 90, (160, 90))
    );
    let ((), ()) = (a, b);
    for id in ["tcp", "udp"] {
        let info = camera(&app, id).await;
        assert_eq!(info["restarts"], 0, "{info}");
        assert!(info["last_error"].is_null(), "{info}");
        assert_eq!(info["transport"], id, "{info}");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_mjpeg_stream_behind_basic_auth() {
    let http = HttpCamera::start(HttpCameraOptions {
        credentials: Some(("viewer".into(), SECRET.into())),
        ..HttpCameraOptions::default()
    })
    .await;
    let app = app::start(&format!(
        "[[cameras]]\nid = \"right\"\nsource = \"{}\"\n\
         [[cameras]]\nid = \"none\"\nsource = \"{}\"\n",
        http.url_with_credentials("viewer", SECRET, "/video.mjpg"),
        http.url("/video.mjpg"),
    ))
    .await;
    watch(&app, "right", 5, (160, 120)).await;
    assert_eq!(camera(&app, "right").await["transport"], "mjpeg");
    let message = refusal(&app, "none").await;
    assert!(
        message.contains("the HTTP server refused access to")
            && message.contains("(401)")
            && message.contains("check the user name and password"),
        "{message}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_url_is_polled_at_max_fps() {
    let http = HttpCamera::start(HttpCameraOptions::default()).await;
    let app = app::start(&format!(
        "[[cameras]]\nid = \"snap\"\nsource = \"{}\"\nmax_fps = 5\n",
        http.url("/snapshot.jpg"),
    ))
    .await;
    watch(&app, "snap", 3, (160, 120)).await;
    let info = camera(&app, "snap").await;
    assert_eq!(info["transport"], "snapshots", "{info}");
    assert_eq!(info["restarts"], 0, "{info}");
    assert!(info["last_error"].is_null(), "{info}");
    // The poll rate follows max_fps: over 3 s at 5 a second, 15 requests.
    // Generous bounds: the machine is shared, only a runaway or a stuck
    // poller fails this.
    let before = http.snapshots_served();
    let url = format!("{}/api/cameras/snap/stream.mjpeg", base(&app));
    let mut stream = MjpegStream::connect(&url).await.unwrap();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        stream.next_part_timeout(PART_TIMEOUT).await.unwrap();
    }
    let served = http.snapshots_served() - before;
    assert!((6..=17).contains(&served), "{served} snapshots in 3 s");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_behind_digest_and_over_https() {
    let digest = HttpCamera::start(HttpCameraOptions {
        credentials: Some(("admin".into(), SECRET.into())),
        auth: AuthMethod::Digest,
        ..HttpCameraOptions::default()
    })
    .await;
    // Two servers: glib-networking resumes TLS sessions per host and port,
    // so a certificate accepted for one camera (tls_verify = false) would
    // be trusted for another at the same address.
    let https = HttpCamera::start(HttpCameraOptions {
        tls: Some(TlsIdentity::self_signed()),
        ..HttpCameraOptions::default()
    })
    .await;
    let https_verified = HttpCamera::start(HttpCameraOptions {
        tls: Some(TlsIdentity::self_signed()),
        ..HttpCameraOptions::default()
    })
    .await;
    let app = app::start(&format!(
        "[[cameras]]\nid = \"digest\"\nsource = \"{}\"\n\
         [[cameras]]\nid = \"wrong\"\nsource = \"{}\"\n\
         [[cameras]]\nid = \"https\"\nsource = \"{}\"\ntls_verify = false\n\
         [[cameras]]\nid = \"verified\"\nsource = \"{}\"\n",
        digest.url_with_credentials("admin", SECRET, "/snapshot.jpg"),
        digest.url_with_credentials("admin", "nope", "/snapshot.jpg"),
        https.url("/snapshot.jpg"),
        https_verified.url("/snapshot.jpg"),
    ))
    .await;
    watch(&app, "digest", 3, (160, 120)).await;
    watch(&app, "https", 3, (160, 120)).await;
    assert_eq!(camera(&app, "https").await["transport"], "snapshots");
    let message = refusal(&app, "wrong").await;
    assert!(
        message.contains("the HTTP server refused access to") && message.contains("(401)"),
        "{message}"
    );
    // souphttpsrc reports a refused certificate like a refused connection:
    // the message names both.
    let message = refusal(&app, "verified").await;
    assert!(
        message.contains("cannot read the HTTPS source")
            && message.contains("its TLS certificate is not trusted")
            && message.contains("set tls_verify = false"),
        "{message}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_first_frame_is_not_a_stall() {
    // The first part comes 3 s after the request; the watchdog is 1 s.
    let slow = HttpCamera::start(HttpCameraOptions {
        first_part_delay: Duration::from_secs(3),
        ..HttpCameraOptions::default()
    })
    .await;
    let silent = HttpCamera::start(HttpCameraOptions {
        first_part_delay: Duration::from_secs(3600),
        ..HttpCameraOptions::default()
    })
    .await;
    let app = app::start(&format!(
        "[[cameras]]\nid = \"slow\"\nsource = \"{}\"\nwatchdog_s = 1\n\
         [[cameras]]\nid = \"silent\"\nsource = \"{}\"\nfirst_frame_timeout_s = 2\n",
        slow.url("/video.mjpg"),
        silent.url("/video.mjpg"),
    ))
    .await;
    watch(&app, "slow", 3, (160, 120)).await;
    let info = camera(&app, "slow").await;
    assert_eq!(info["restarts"], 0, "{info}");
    assert!(info["last_error"].is_null(), "{info}");

    let message = refusal(&app, "silent").await;
    assert!(
        message.contains("no first frame within 2s of starting (HTTP MJPEG stream)")
            && message.contains("first_frame_timeout_s"),
        "{message}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mjpeg_stream_without_a_frame_rate_is_capped_by_max_fps() {
    // The parts of an MJPEG stream carry no duration and their caps no
    // frame rate: GStreamer 1.22's videorate used to abort the process on
    // them.
    let http = HttpCamera::start(HttpCameraOptions {
        fps: 20,
        ..HttpCameraOptions::default()
    })
    .await;
    let app = app::start(&format!(
        "[[cameras]]\nid = \"capped\"\nsource = \"{}\"\nmax_fps = 5\n",
        http.url("/video.mjpg"),
    ))
    .await;
    watch(&app, "capped", 2, (160, 120)).await;
    let url = format!("{}/api/cameras/capped/stream.mjpeg", base(&app));
    let mut stream = MjpegStream::connect(&url).await.unwrap();
    let started = std::time::Instant::now();
    let mut frames = 0;
    while started.elapsed() < Duration::from_secs(3) {
        stream.next_part_timeout(PART_TIMEOUT).await.unwrap();
        frames += 1;
    }
    // 20 a second in, at most 5 a second out (plus the frame at hand).
    assert!((5..=17).contains(&frames), "{frames} frames in 3 s");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_url_that_stops_sending_jpegs_says_so() {
    let http = HttpCamera::start(HttpCameraOptions {
        html_after: Some(5),
        ..HttpCameraOptions::default()
    })
    .await;
    let app = app::start(&format!(
        "[[cameras]]\nid = \"snap\"\nsource = \"{}\"\nmax_fps = 10\nalways_on = true\n",
        http.url("/snapshot.jpg"),
    ))
    .await;
    let info = wait_for_camera(&app, "snap", PART_TIMEOUT, "the not-a-JPEG error", |c| {
        c["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("answered with neither an MJPEG stream nor a JPEG image"))
    })
    .await
    .unwrap();
    let error = info["last_error"].as_str().unwrap();
    assert!(
        error.contains(&http.url("/snapshot.jpg"))
            && error.contains("point source at the camera's MJPEG stream or snapshot URL"),
        "{error}"
    );
    // Snapshots arrived (and nobody watched, so none was encoded).
    assert!(info["frames_in"].as_u64().unwrap() >= 1, "{info}");
    app.shutdown().await;
}
