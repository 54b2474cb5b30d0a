//! Cameras that drop, stall or restart; viewers that stall; resources that
//! must come back to baseline. Against the in-process RTSP server and real
//! HTTP clients.

mod common;

use std::time::{Duration, Instant};

use common::app::{self, base, camera, wait_for_camera};
use common::mjpeg::{MjpegStream, Part, decode_jpeg, mean_luma};
use common::proxy::FreezableProxy;
use common::rtsp::{RtspOptions, RtspServer};

const PART_TIMEOUT: Duration = Duration::from_secs(20);

fn is_placeholder(part: &Part) -> bool {
    part.header("x-camstream-frame") == Some("placeholder")
}

/// The next placeholder part on `stream`, once the camera is gone.
async fn next_placeholder(stream: &mut MjpegStream) -> Part {
    read_until(
        stream,
        Duration::from_secs(10),
        "a placeholder",
        is_placeholder,
    )
    .await
}

/// A white test pattern: live frames are bright, the placeholder is dark
/// grey, so the pictures themselves tell the two apart too.
fn white_camera() -> RtspOptions {
    RtspOptions {
        pattern: "white".into(),
        ..RtspOptions::default()
    }
}

/// Reads parts until one satisfies `pred`, failing after `timeout`.
async fn read_until(
    stream: &mut MjpegStream,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&Part) -> bool,
) -> Part {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {what} within {timeout:?}");
        let part = stream
            .next_part_timeout(left)
            .await
            .unwrap_or_else(|e| panic!("waiting for {what}: {e:#}"));
        if pred(&part) {
            return part;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_see_placeholders_through_an_outage_then_live_frames_again() {
    let rtsp = RtspServer::start(white_camera()).unwrap();
    let port = rtsp.port();
    let app = app::start(&format!(
        "[[cameras]]\nid = \"gate\"\nname = \"Gate\"\nsource = \"{}\"\n",
        rtsp.url()
    ))
    .await;
    let mut stream = MjpegStream::connect(&format!("{}/api/cameras/gate/stream.mjpeg", base(&app)))
        .await
        .unwrap();
    let live = read_until(&mut stream, PART_TIMEOUT, "a live frame", |p| {
        !is_placeholder(p)
    })
    .await;
    let live_image = decode_jpeg(&live.body).unwrap();
    assert!(mean_luma(&live_image) > 200.0);

    // The camera goes away, and stays away for a few seconds.
    rtsp.stop();
    let down_at = Instant::now();
    let placeholder = next_placeholder(&mut stream).await;
    let image = decode_jpeg(&placeholder.body).unwrap();
    assert_eq!(
        (image.width, image.height),
        (live_image.width, live_image.height),
        "same size as live"
    );
    assert!(
        mean_luma(&image) < 120.0,
        "the placeholder is the dark offline picture"
    );
    let info = camera(&app, "gate").await;
    assert_eq!(info["state"], "reconnecting", "{info}");
    assert!(info["offline_since"].is_string(), "{info}");
    assert!(
        info["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{info}"
    );
    assert_eq!(info["viewers"], 1, "the viewer stays connected: {info}");

    // Placeholders keep coming, about once a second: never a frozen image.
    let first = Instant::now();
    for _ in 0..2 {
        let next = stream
            .next_part_timeout(Duration::from_secs(3))
            .await
            .unwrap();
        assert!(is_placeholder(&next));
    }
    assert!(first.elapsed() < Duration::from_secs(4));

    // The camera comes back on the same port: the same response turns live.
    let until_return = Duration::from_secs(4).saturating_sub(down_at.elapsed());
    tokio::time::sleep(until_return).await;
    let rtsp = RtspServer::start_on_port(white_camera(), port).unwrap();
    let back_at = Instant::now();
    let live = read_until(
        &mut stream,
        Duration::from_secs(15),
        "live frames again",
        |p| !is_placeholder(p),
    )
    .await;
    assert!(mean_luma(&decode_jpeg(&live.body).unwrap()) > 200.0);
    eprintln!(
        "live again {:?} after the camera returned",
        back_at.elapsed()
    );
    let info = wait_for_camera(&app, "gate", Duration::from_secs(5), "streaming", |c| {
        c["state"] == "streaming"
    })
    .await
    .unwrap();
    assert!(info["offline_since"].is_null(), "{info}");
    assert!(info["restarts"].as_u64().unwrap() >= 1, "{info}");
    drop(stream);
    app.shutdown().await;
    rtsp.stop();
}

/// Each watched size gets the placeholder at its own output size, so a grid
/// tile and a large view both keep their layout through an outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_watched_size_gets_its_placeholder_at_its_own_size() {
    let rtsp = RtspServer::start(white_camera()).unwrap();
    let app = app::start(&format!(
        "[[cameras]]\nid = \"gate\"\nsource = \"{}\"\n\
         [cameras.sizes]\nthumb = {{ scale = 0.125 }}\nlarge = {{ scale = 0.5 }}\n",
        rtsp.url()
    ))
    .await;
    let mut streams = Vec::new();
    for query in ["", "?size=thumb", "?size=large"] {
        let url = format!("{}/api/cameras/gate/stream.mjpeg{query}", base(&app));
        streams.push((query, MjpegStream::connect(&url).await.unwrap()));
    }
    let mut live_sizes = Vec::new();
    for (query, stream) in &mut streams {
        let live = read_until(stream, PART_TIMEOUT, "a live frame", |p| !is_placeholder(p)).await;
        let image = decode_jpeg(&live.body).unwrap();
        live_sizes.push((*query, (image.width, image.height)));
    }
    let mut distinct: Vec<_> = live_sizes.iter().map(|(_, s)| *s).collect();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "three sizes: {live_sizes:?}");

    rtsp.stop();
    for ((query, stream), (_, live)) in streams.iter_mut().zip(&live_sizes) {
        let placeholder = next_placeholder(stream).await;
        let image = decode_jpeg(&placeholder.body).unwrap();
        assert_eq!(
            (image.width, image.height),
            *live,
            "size {query:?}: the placeholder at the live frames' size"
        );
        assert!(
            mean_luma(&image) < 120.0,
            "size {query:?}: the offline picture"
        );
    }
    drop(streams);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_source_trips_the_watchdog_and_recovers() {
    let rtsp = RtspServer::start(white_camera()).unwrap();
    let proxy = FreezableProxy::start(format!("127.0.0.1:{}", rtsp.port()).parse().unwrap()).await;
    let app = app::start(&format!(
        "[[cameras]]\nid = \"hang\"\nsource = \"rtsp://127.0.0.1:{}/test\"\nwatchdog_s = 1.5\n",
        proxy.port()
    ))
    .await;
    let mut stream = MjpegStream::connect(&format!("{}/api/cameras/hang/stream.mjpeg", base(&app)))
        .await
        .unwrap();
    read_until(&mut stream, PART_TIMEOUT, "a live frame", |p| {
        !is_placeholder(p)
    })
    .await;

    // The connection goes silent without closing: no error, no EOS.
    proxy.freeze_current();
    let info = wait_for_camera(&app, "hang", Duration::from_secs(10), "the watchdog", |c| {
        c["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no frame for 1.5s"))
    })
    .await
    .unwrap();
    eprintln!("watchdog: {}", info["last_error"]);
    // The restart opens a new connection, which flows: live again.
    read_until(
        &mut stream,
        Duration::from_secs(15),
        "live frames after the restart",
        |p| !is_placeholder(p),
    )
    .await;
    let info = wait_for_camera(&app, "hang", Duration::from_secs(5), "streaming", |c| {
        c["state"] == "streaming"
    })
    .await
    .unwrap();
    assert!(info["restarts"].as_u64().unwrap() >= 1, "{info}");
    drop(stream);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_limits_refuse_with_503_and_harm_no_one() {
    let app = common::app::start_with_server(
        "max_viewers = 3",
        "[[cameras]]\nid = \"a\"\nsource = \"test:smpte?width=320&height=240\"\nmax_viewers = 2\n\
         [[cameras]]\nid = \"b\"\nsource = \"test:ball?width=320&height=240\"\n",
    )
    .await;
    let b = base(&app);
    let mut a1 = MjpegStream::connect(&format!("{b}/api/cameras/a/stream.mjpeg"))
        .await
        .unwrap();
    let mut a2 = MjpegStream::connect(&format!("{b}/api/cameras/a/stream.mjpeg"))
        .await
        .unwrap();
    let (status, headers, body) = common::app::get(&format!("{b}/api/cameras/a/stream.mjpeg"))
        .await
        .unwrap();
    assert_eq!(status, 503, "{body:?}");
    assert!(headers.contains_key("retry-after"));
    assert!(String::from_utf8_lossy(&body).contains("max_viewers"));
    let mut b1 = MjpegStream::connect(&format!("{b}/api/cameras/b/stream.mjpeg"))
        .await
        .unwrap();
    // Three viewers in all: the server-wide limit.
    let (status, _, body) = common::app::get(&format!("{b}/api/cameras/b/stream.mjpeg"))
        .await
        .unwrap();
    assert_eq!(status, 503);
    assert!(
        String::from_utf8_lossy(&body).contains("[server] max_viewers"),
        "{body:?}"
    );
    // Everyone admitted keeps streaming.
    for stream in [&mut a1, &mut a2, &mut b1] {
        for _ in 0..3 {
            stream.next_part_timeout(PART_TIMEOUT).await.unwrap();
        }
    }
    // A slot frees when a viewer leaves.
    drop(a2);
    wait_for_camera(&app, "a", Duration::from_secs(5), "a viewer left", |c| {
        c["viewers"] == 1
    })
    .await
    .unwrap();
    let mut again = MjpegStream::connect(&format!("{b}/api/cameras/a/stream.mjpeg"))
        .await
        .unwrap();
    again.next_part_timeout(PART_TIMEOUT).await.unwrap();
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_joined_mid_gop_shows_no_smeared_frames() {
    // Two cameras on one RTSP media: the second joins a stream that is
    // already running, between key frames (one a second), so its decoder
    // first sees frames whose references it never had. FFmpeg conceals
    // them as grey smears; camstream must not show them.
    let rtsp = RtspServer::start(white_camera()).unwrap();
    let app = app::start(&format!(
        "[[cameras]]\nid = \"first\"\nsource = \"{url}\"\nalways_on = true\n\
         [[cameras]]\nid = \"late\"\nsource = \"{url}\"\n",
        url = rtsp.url()
    ))
    .await;
    wait_for_camera(&app, "first", Duration::from_secs(15), "streaming", |c| {
        c["state"] == "streaming"
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut stream = MjpegStream::connect(&format!("{}/api/cameras/late/stream.mjpeg", base(&app)))
        .await
        .unwrap();
    for n in 0..5 {
        let part = stream.next_part_timeout(PART_TIMEOUT).await.unwrap();
        let luma = mean_luma(&decode_jpeg(&part.body).unwrap());
        assert!(luma > 200.0, "frame {n} is smeared: mean luma {luma}");
    }
    app.shutdown().await;
    rtsp.stop();
}
