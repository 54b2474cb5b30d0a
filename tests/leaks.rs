//! Resources come back: thousands of viewers coming and going and hundreds
//! of pipeline restarts leave open files, threads and memory at their
//! baseline. In a test binary of its own, so /proc/self counts belong to
//! this test alone.

mod common;

use std::time::{Duration, Instant};

use common::app::{self, camera, wait_for_camera};
use common::mjpeg::get_raw;
use common::rtsp::{RtspOptions, RtspServer};

fn proc_status(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn rss_kib() -> u64 {
    proc_status("VmRSS:")
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Waits until `measure` is at most `limit`, or fails with the last value.
async fn settles(what: &str, limit: usize, measure: impl Fn() -> usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = measure();
        if now <= limit {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {now} > {limit}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_viewers_and_hundreds_of_restarts_leak_nothing() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let rtsp = RtspServer::start(RtspOptions::default()).unwrap();
    let app = app::start(&format!(
        "[[cameras]]\nid = \"web\"\nsource = \"test:smpte?width=320&height=240\"\nalways_on = true\n\
         [[cameras]]\nid = \"cam\"\nsource = \"{}\"\nalways_on = true\n",
        rtsp.url()
    ))
    .await;
    let addr = app.local_addr();
    let cycle = |n: usize| async move {
        // Viewers come and go in waves of 20 at a time.
        for _ in 0..n / 20 {
            let wave = (0..20).map(|_| async move {
                let mut response = get_raw(addr, "/api/cameras/web/stream.mjpeg")
                    .await
                    .unwrap();
                assert_eq!(response.status, 200);
                response
                    .read_body_at_least(200, Duration::from_secs(10))
                    .await
                    .unwrap();
            });
            futures_util::future::join_all(wave).await;
        }
    };
    let restart = |n: usize| {
        let camera = app.cameras().get("cam").unwrap();
        async move {
            for _ in 0..n {
                let configured = camera.configured();
                camera.reconfigure((*configured).clone());
                // Wait for the new pipeline's first frame.
                let mut status = camera.subscribe_status();
                tokio::time::timeout(Duration::from_secs(20), async {
                    status
                        .wait_for(|s| s.state == camstream::camera::State::Starting)
                        .await
                        .ok();
                    status
                        .wait_for(|s| s.state == camstream::camera::State::Streaming)
                        .await
                        .ok();
                })
                .await
                .expect("restarted");
            }
        }
    };
    // Warm up: thread pools, plugin loading, first connections.
    cycle(100).await;
    restart(10).await;
    wait_for_camera(&app, "web", Duration::from_secs(10), "no viewers", |c| {
        c["viewers"] == 0
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (fds, threads, rss) = (open_fds(), proc_status("Threads:") as usize, rss_kib());
    eprintln!("baseline: {fds} fds, {threads} threads, {rss} KiB");

    let start = Instant::now();
    cycle(2000).await;
    eprintln!("2000 viewer cycles in {:?}", start.elapsed());
    // LEAK_RESTARTS=1000 for the full soak, printing RSS as it goes.
    let restarts: usize = std::env::var("LEAK_RESTARTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let start = Instant::now();
    for done in (0..restarts).step_by(100) {
        restart(100.min(restarts - done)).await;
        eprintln!(
            "{} restarts: {} KiB, {} fds, {} threads",
            done + 100.min(restarts - done),
            rss_kib(),
            open_fds(),
            proc_status("Threads:")
        );
    }
    eprintln!("{restarts} restarts in {:?}", start.elapsed());
    let info = camera(&app, "cam").await;
    assert!(
        info["starts"].as_u64().unwrap() >= 11 + restarts as u64,
        "{info}"
    );

    wait_for_camera(&app, "web", Duration::from_secs(10), "no viewers", |c| {
        c["viewers"] == 0
    })
    .await
    .unwrap();
    // Idle blocking-pool threads linger for 10 s before they exit; allow
    // them, but nothing that grows with the number of cycles.
    settles("open fds", fds + 4, open_fds).await;
    settles("threads", threads + 8, || proc_status("Threads:") as usize).await;
    let rss_after = rss_kib();
    eprintln!(
        "after: {} fds, {} threads, {rss_after} KiB",
        open_fds(),
        proc_status("Threads:")
    );
    assert!(
        rss_after < rss + 40 * 1024,
        "RSS grew from {rss} to {rss_after} KiB"
    );
    app.shutdown().await;
    rtsp.stop();
}
