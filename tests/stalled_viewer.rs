//! A viewer that stops reading must not slow the others or make the server
//! hold a backlog for it. In a test binary of its own, so the process's
//! memory figures belong to this test alone.

mod common;

use std::time::{Duration, Instant};

use common::app::{base, camera, wait_for_camera};
use common::mjpeg::{MjpegStream, get_raw};

const PART_TIMEOUT: Duration = Duration::from_secs(20);

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_viewer_never_slows_a_reading_viewer() {
    // Noise does not compress: ~150 KB frames, ~4.5 MB/s. A server that
    // queued frames for the stalled viewer would grow by that rate.
    let app = common::app::start_with_server(
        "write_timeout_s = 3",
        "[[cameras]]\nid = \"noise\"\nsource = \"test:snow?width=640&height=480&fps=30\"\nscale = 1\nquality = 90\n",
    )
    .await;
    let url = format!("{}/api/cameras/noise/stream.mjpeg", base(&app));
    let mut reader = MjpegStream::connect(&url).await.unwrap();
    reader.next_part_timeout(PART_TIMEOUT).await.unwrap();

    // The stalled viewer: asks for the stream and never reads a byte.
    let stalled = get_raw(app.local_addr(), "/api/cameras/noise/stream.mjpeg")
        .await
        .unwrap();
    assert_eq!(stalled.status, 200);
    assert_eq!(camera(&app, "noise").await["viewers"], 2);

    let rss_before = rss_kib();
    let encoded_before = camera(&app, "noise").await["frames_out"].as_u64().unwrap();
    let start = Instant::now();
    let mut received = 0u64;
    let mut largest = 0;
    while start.elapsed() < Duration::from_secs(4) {
        let part = reader
            .next_part_timeout(Duration::from_secs(5))
            .await
            .unwrap();
        largest = largest.max(part.body.len());
        received += 1;
    }
    let encoded = camera(&app, "noise").await["frames_out"].as_u64().unwrap() - encoded_before;
    let rss_growth_kib = rss_kib().saturating_sub(rss_before);
    eprintln!(
        "reader got {received} of {encoded} frames (largest {largest} B) beside a stalled viewer; RSS +{rss_growth_kib} KiB"
    );
    assert!(
        largest > 50_000,
        "frames are large enough to matter: {largest}"
    );
    assert!(
        received * 10 >= encoded * 9,
        "the reading viewer got {received} of {encoded} frames"
    );
    // 4 s of frames queued for the stalled viewer would be ~18 MB.
    assert!(rss_growth_kib < 12 * 1024, "RSS grew {rss_growth_kib} KiB");

    // After the write timeout the stalled viewer is dropped; the reader
    // stays.
    wait_for_camera(
        &app,
        "noise",
        Duration::from_secs(15),
        "the stalled viewer dropped",
        |c| c["viewers"] == 1,
    )
    .await
    .unwrap();
    reader
        .next_part_timeout(Duration::from_secs(5))
        .await
        .unwrap();
    drop(stalled);
    app.shutdown().await;
}
