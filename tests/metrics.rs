//! `GET /metrics` checked by Prometheus' own parser and linter
//! (`promtool check metrics`, from Debian's `prometheus` package), and its
//! values against what the cameras did.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::app::{self, base, get};
use common::mjpeg::MjpegStream;

/// Runs `promtool check metrics` on `text`; returns its exit status and
/// output.
fn promtool(text: &str) -> (i32, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs: install it with scripts/install-deps.sh --test (Debian package prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `name{labels}` -> value, for the sample lines.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').expect("name value");
            (key.to_string(), value.parse::<f64>().expect("a number"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_count_what_happened() {
    let app = app::start(
        "[[cameras]]\nid = \"live\"\nsource = \"test:ball?width=320&height=240&fps=15\"\n\
         [[cameras]]\nid = \"broken\"\nsource = \"rtsp://admin:pw-never-shown@127.0.0.1:9/x\"\n",
    )
    .await;
    let url = format!("{}/api/cameras/live/stream.mjpeg", base(&app));
    let mut stream = MjpegStream::connect(&url).await.unwrap();
    for _ in 0..10 {
        stream
            .next_part_timeout(Duration::from_secs(20))
            .await
            .unwrap();
    }
    // The broken camera fails on its first viewer (nothing listens on 9).
    let (status, _, _) = get(&format!("{}/api/cameras/broken/snapshot.jpg", base(&app)))
        .await
        .unwrap();
    assert_eq!(status, 503);

    let (status, headers, body) = get(&format!("{}/metrics", base(&app))).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = String::from_utf8(body.to_vec()).unwrap();
    let (code, output) = promtool(&text);
    assert_eq!(code, 0, "promtool check metrics: {output}\n{text}");
    assert!(!text.contains("pw-never-shown"));

    let m = samples(&text);
    let live = |name: &str| m[&format!("{name}{{camera=\"live\"}}")];
    // Per size (issue 12): the stream watches the default size.
    let default = |name: &str| m[&format!("{name}{{camera=\"live\",size=\"default\"}}")];
    let full = |name: &str| m[&format!("{name}{{camera=\"live\",size=\"full\"}}")];
    assert!(live("camstream_source_frames_total") >= 10.0, "{text}");
    assert!(default("camstream_frames_in_total") >= 10.0, "{text}");
    assert!(default("camstream_frames_encoded_total") >= 10.0);
    assert!(default("camstream_frames_encoded_total") <= default("camstream_frames_in_total"));
    assert!(default("camstream_frames_dropped_total") >= 0.0);
    assert_eq!(default("camstream_viewers"), 1.0);
    assert!(default("camstream_bytes_encoded_total") > 0.0);
    // Nobody asked for a full-size snapshot: nothing was let in or encoded.
    assert_eq!(full("camstream_frames_in_total"), 0.0, "{text}");
    assert_eq!(full("camstream_frames_encoded_total"), 0.0);
    assert_eq!(full("camstream_viewers"), 0.0);
    // Ten frames went out to the stream.
    assert!(live("camstream_bytes_sent_total") >= 10.0 * 100.0);
    assert_eq!(live("camstream_pipeline_starts_total"), 1.0);
    assert_eq!(live("camstream_restarts_total"), 0.0);
    assert!(default("camstream_encode_seconds_count") >= 10.0);
    assert!(default("camstream_encode_seconds_sum") > 0.0);
    assert_eq!(
        m["camstream_encode_seconds_bucket{camera=\"live\",size=\"default\",le=\"+Inf\"}"],
        default("camstream_encode_seconds_count")
    );
    assert_eq!(
        m["camstream_camera_state{camera=\"live\",state=\"streaming\"}"],
        1.0
    );
    let broken_state = ["reconnecting", "failed"]
        .iter()
        .map(|s| m[&format!("camstream_camera_state{{camera=\"broken\",state=\"{s}\"}}")])
        .sum::<f64>();
    assert_eq!(broken_state, 1.0, "{text}");
    assert_eq!(m["camstream_cameras"], 2.0);
    assert!(m["process_resident_memory_bytes"] > 1e6);
    assert!(m["process_cpu_seconds_total"] > 0.0);
    assert!(m["process_open_fds"] > 3.0);
    assert!(m["process_threads"] >= 2.0);
    assert!(m["process_start_time_seconds"] > 1.6e9);

    // The figures move: more frames later, and the counters never go down.
    for _ in 0..5 {
        stream
            .next_part_timeout(Duration::from_secs(20))
            .await
            .unwrap();
    }
    let (_, _, body) = get(&format!("{}/metrics", base(&app))).await.unwrap();
    let later = samples(std::str::from_utf8(&body).unwrap());
    for (key, value) in &m {
        if key.contains("_total") || key.contains("_count") || key.contains("_bucket") {
            assert!(
                later[key] >= *value,
                "{key} went down: {value} -> {}",
                later[key]
            );
        }
    }
    assert!(
        later["camstream_frames_encoded_total{camera=\"live\",size=\"default\"}"]
            > default("camstream_frames_encoded_total")
    );
    drop(stream);
    app.shutdown().await;
}
