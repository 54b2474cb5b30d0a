//! The camstream binary shuts down gracefully on SIGTERM and SIGINT: every
//! stream ends cleanly (a complete HTTP response), every pipeline stops, and
//! the process exits 0 within 2 s.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::mjpeg::{MjpegStream, get_raw};

/// Starts the binary on a free port with `config`; returns it and its
/// address (read from its log line).
fn spawn_server(config: &str) -> (Child, SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("camstream.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_camstream"))
        .arg("--config")
        .arg(&path)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr = rest.split('/').next().unwrap().to_string();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server logs its address")
        .parse()
        .unwrap();
    (child, addr, dir)
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for the process to exit, at most `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> (std::process::ExitStatus, Duration) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("still running {limit:?} after the signal");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

const CONFIG: &str = "[[cameras]]\nid = \"a\"\nsource = \"test:\"\n\
                      [[cameras]]\nid = \"b\"\nsource = \"test:ball?width=640&height=360\"\nalways_on = true\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_viewers_attached_exits_0_promptly_and_ends_streams_cleanly() {
    common::init();
    let (mut child, addr, _dir) = spawn_server(CONFIG);
    let mut viewers = Vec::new();
    for id in ["a", "a", "b"] {
        let mut stream =
            MjpegStream::connect(&format!("http://{addr}/api/cameras/{id}/stream.mjpeg"))
                .await
                .unwrap();
        stream
            .next_part_timeout(Duration::from_secs(20))
            .await
            .unwrap();
        viewers.push(stream);
    }
    // A raw client too, to see the bytes of the ending.
    let mut raw = get_raw(addr, "/api/cameras/b/stream.mjpeg").await.unwrap();
    assert!(raw.is_chunked());
    raw.read_body_at_least(1000, Duration::from_secs(10))
        .await
        .unwrap();

    signal(&child, "TERM");
    let (status, took) =
        tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(5)))
            .await
            .unwrap();
    eprintln!("exited with {status} in {took:?}");
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(2), "took {took:?}");

    // Each HTTP response ended properly (the final chunk), not by a reset.
    raw.read_body_until(Duration::from_secs(2), |_| false)
        .await
        .ok();
    assert!(raw.is_complete(), "the chunked body was terminated cleanly");
    for mut viewer in viewers {
        let ended = viewer.next_part_timeout(Duration::from_secs(5)).await;
        let err = loop {
            match ended {
                Ok(_) => match viewer.next_part_timeout(Duration::from_secs(5)).await {
                    Ok(_) => continue,
                    Err(e) => break e,
                },
                Err(e) => break e,
            }
        };
        let message = format!("{err:#}");
        assert!(
            !message.contains("error decoding") && !message.contains("reset"),
            "{message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_exits_0_too() {
    common::init();
    let (mut child, addr, _dir) = spawn_server(CONFIG);
    let mut stream = MjpegStream::connect(&format!("http://{addr}/api/cameras/a/stream.mjpeg"))
        .await
        .unwrap();
    stream
        .next_part_timeout(Duration::from_secs(20))
        .await
        .unwrap();
    signal(&child, "INT");
    let (status, took) =
        tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(5)))
            .await
            .unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
}
