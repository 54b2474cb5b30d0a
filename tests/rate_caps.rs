//! Frame-rate caps cost no extra encode: `max_fps` drops frames before the
//! scaler and encoder, and a viewer's `?fps=N` takes fewer of the frames
//! encoded once for everyone. Counts come from the camera's own encode
//! counter (`frames_out`); the ranges are wide because the machine is shared.

mod common;

use std::time::{Duration, Instant};

use common::app::{self, base, camera};
use common::mjpeg::MjpegStream;

const PART_TIMEOUT: Duration = Duration::from_secs(20);

/// Frames a stream delivers in `period`, after its first frame.
async fn frames_in(stream: &mut MjpegStream, period: Duration) -> u32 {
    stream.next_part_timeout(PART_TIMEOUT).await.unwrap();
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < period {
        stream.next_part_timeout(PART_TIMEOUT).await.unwrap();
        n += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_fps_caps_the_encoder_itself() {
    let app = app::start(
        "[[cameras]]\nid = \"m\"\nsource = \"test:smpte?width=320&height=180&fps=30\"\nmax_fps = 10\n",
    )
    .await;
    let url = format!("{}/api/cameras/m/stream.mjpeg", base(&app));
    let mut stream = MjpegStream::connect(&url).await.unwrap();
    let before = camera(&app, "m").await["frames_out"].as_u64().unwrap();
    let got = frames_in(&mut stream, Duration::from_secs(2)).await;
    let encoded = camera(&app, "m").await["frames_out"].as_u64().unwrap() - before;
    // ~20 frames in 2 s at 10 fps; a 30 fps source uncapped would give ~60.
    assert!((14..=26).contains(&got), "{got} frames in 2 s");
    assert!(
        (14..=30).contains(&encoded),
        "{encoded} encodes in ~2 s with max_fps = 10"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_cap_takes_fewer_frames_and_adds_no_encode() {
    let app = app::start(
        "[[cameras]]\nid = \"v\"\nsource = \"test:smpte?width=320&height=180&fps=30\"\n",
    )
    .await;
    let url = format!("{}/api/cameras/v/stream.mjpeg", base(&app));
    let mut full = MjpegStream::connect(&url).await.unwrap();
    let mut capped = Vec::new();
    for _ in 0..5 {
        capped.push(MjpegStream::connect(&format!("{url}?fps=5")).await.unwrap());
    }
    let before = camera(&app, "v").await["frames_out"].as_u64().unwrap();
    let started = Instant::now();
    let period = Duration::from_secs(3);
    // All six are read at once, so none of them backs up in its socket.
    let capped: Vec<_> = capped
        .into_iter()
        .map(|mut stream| tokio::spawn(async move { frames_in(&mut stream, period).await }))
        .collect();
    let full_got = frames_in(&mut full, period).await;
    let mut capped_got = Vec::new();
    for task in capped {
        capped_got.push(task.await.unwrap());
    }
    let encoded = camera(&app, "v").await["frames_out"].as_u64().unwrap() - before;
    let seconds = started.elapsed().as_secs_f64();
    assert!(full_got >= 60, "uncapped viewer: {full_got} frames in 3 s");
    for got in &capped_got {
        assert!(
            (11..=19).contains(got),
            "capped viewer: {got} frames in 3 s"
        );
    }
    // One encode per source frame (~30 per second) for all six viewers:
    // six uncapped viewers sharing nothing would need six times that.
    assert!(
        (encoded as f64) < 36.0 * seconds,
        "{encoded} encodes in {seconds:.1} s for 1 full and 5 capped viewers"
    );
    app.shutdown().await;
}
