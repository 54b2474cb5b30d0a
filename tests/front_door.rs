//! The front door on a hostile network, against a live stream: hundreds of
//! half-open connections from one address neither lock out a real viewer
//! nor outlive the header timeout; the per-client and total connection
//! caps close extra connections at once; an idle keep-alive connection is
//! closed; an oversized header is refused. All on loopback: Linux routes
//! all of 127/8 there, so 127.0.0.2 is "another machine".

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use camstream::App;
use common::app::{base, get, start_with_server};
use common::mjpeg::MjpegStream;
use common::raw;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SMALL: &str = "test:ball?width=160&height=120&fps=10";
const PART_TIMEOUT: Duration = Duration::from_secs(20);
const VIEWER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Each test process holds both ends of hundreds of sockets.
fn more_file_descriptors() {
    rlimit::increase_nofile_limit(8192).expect("raise the open-files limit");
}

async fn camera_server(server: &str) -> App {
    start_with_server(
        server,
        &format!("[[cameras]]\nid = \"a\"\nsource = \"{SMALL}\"\nalways_on = true\n"),
    )
    .await
}

/// Waits until the server closes `stream` (EOF or reset), at most `limit`;
/// returns how long that took, or None if it stayed open.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), stream.read(&mut buf))
            .await
        {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            // A 408 or similar before the close is fine; keep reading.
            Ok(Ok(_)) => {}
        }
    }
}

async fn metrics(app: &App) -> String {
    let (status, _, body) = get(&format!("{}/metrics", base(app))).await.unwrap();
    assert_eq!(status, 200);
    String::from_utf8(body.to_vec()).unwrap()
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_neither_lock_out_viewers_nor_outlive_the_header_timeout() {
    more_file_descriptors();
    const HALF_OPEN: usize = 400;
    let header_timeout = Duration::from_secs(2);
    let app = camera_server("header_timeout_s = 2\n").await;
    let addr = app.local_addr();
    let stream_url = format!("{}/api/cameras/a/stream.mjpeg", base(&app));
    let mut viewer = MjpegStream::connect(&stream_url).await.unwrap();
    viewer.next_part_timeout(PART_TIMEOUT).await.unwrap();

    // 400 connections from another address: half send nothing, half a
    // request line and one header, then stall (slowloris).
    let opened = Instant::now();
    let mut held = Vec::with_capacity(HALF_OPEN);
    for i in 0..HALF_OPEN {
        let mut stream = raw::connect_from(ATTACKER, addr).await.unwrap();
        if i % 2 == 1 {
            stream
                .write_all(b"GET /api/cameras/a/stream.mjpeg HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
        }
        held.push(stream);
    }
    let open_took = opened.elapsed();

    // Meanwhile the real viewer keeps getting frames, and a new one gets in.
    for _ in 0..3 {
        viewer.next_part_timeout(PART_TIMEOUT).await.unwrap();
    }
    let mut second = MjpegStream::connect(&stream_url).await.unwrap();
    second.next_part_timeout(PART_TIMEOUT).await.unwrap();
    let health = raw::send(addr, VIEWER, &raw::request("GET", "/healthz", &[], None))
        .await
        .unwrap();
    assert_eq!(health.status, 200);

    // Every one of them is closed by the server, within the header
    // timeout of being opened (plus a generous margin for a loaded CI
    // machine: this bounds, it does not time).
    let limit = header_timeout + Duration::from_secs(8);
    let mut slowest = Duration::ZERO;
    for (i, stream) in held.iter_mut().enumerate() {
        let left = limit.saturating_sub(opened.elapsed());
        let took = closed_within(stream, left.max(Duration::from_millis(1)))
            .await
            .unwrap_or_else(|| {
                panic!("half-open connection #{i} still open {limit:?} after opening")
            });
        slowest = slowest.max(took);
    }
    let all_closed = opened.elapsed();
    eprintln!(
        "{HALF_OPEN} half-open connections opened in {open_took:?}; all closed {all_closed:?} after the first opened (header timeout {header_timeout:?})"
    );
    assert!(
        all_closed >= header_timeout.saturating_sub(open_took),
        "closed before the timeout ({all_closed:?}): the test did not test it"
    );
    let text = metrics(&app).await;
    assert!(
        metric(&text, "camstream_connections_timed_out_total") >= HALF_OPEN as u64,
        "{text}"
    );
    // The viewers were never disturbed.
    viewer.next_part_timeout(PART_TIMEOUT).await.unwrap();
    second.next_part_timeout(PART_TIMEOUT).await.unwrap();
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_caps_are_closed_at_once() {
    more_file_descriptors();
    let app = camera_server("max_connections = 40\nmax_connections_per_client = 10\n").await;
    let addr = app.local_addr();

    // Ten from one address are held; the eleventh is closed at once.
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(raw::connect_from(ATTACKER, addr).await.unwrap());
    }
    // The accept loop admits in order: once the eleventh is closed, all
    // ten before it were counted.
    let mut extra = raw::connect_from(ATTACKER, addr).await.unwrap();
    let took = closed_within(&mut extra, Duration::from_secs(5))
        .await
        .expect("the connection over max_connections_per_client is closed");
    eprintln!("over the per-client cap: closed after {took:?}");
    // Other addresses are not affected, up to the total (the refusal
    // counts below show none of these was closed).
    for n in 0..29 {
        let from = IpAddr::V4(Ipv4Addr::new(127, 0, 1, n + 1));
        held.push(raw::connect_from(from, addr).await.unwrap());
    }
    // 39 held: one more fits, the one after is over max_connections.
    let last = IpAddr::V4(Ipv4Addr::new(127, 0, 2, 1));
    held.push(raw::connect_from(last, addr).await.unwrap());
    let mut over = raw::connect_from(last, addr).await.unwrap();
    closed_within(&mut over, Duration::from_secs(5))
        .await
        .expect("the connection over max_connections is closed");
    // Admission is in accept order, so every connection before it has been
    // decided: all 40 are still open.
    for (i, stream) in held.iter().enumerate() {
        let mut buf = [0u8; 16];
        match stream.try_read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("held connection #{i} was closed: {other:?}"),
        }
    }
    drop(held);
    // Closed connections give their places back.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // From a fresh address, so a retry cannot add to the per-client count.
        let fresh = IpAddr::V4(Ipv4Addr::new(127, 0, 3, 1));
        match raw::send(addr, fresh, &raw::request("GET", "/metrics", &[], None)).await {
            Ok(response) if response.status == 200 => {
                // Counted (the retries of this loop may add to "total").
                let text = String::from_utf8_lossy(&response.body).into_owned();
                assert!(
                    metric(
                        &text,
                        "camstream_connections_refused_total{limit=\"per_client\"}"
                    ) == 1,
                    "{text}"
                );
                assert!(
                    metric(
                        &text,
                        "camstream_connections_refused_total{limit=\"total\"}"
                    ) >= 1,
                    "{text}"
                );
                break;
            }
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("places were not given back: {other:?}"),
        }
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_and_huge_headers_are_closed() {
    let app = camera_server("header_timeout_s = 1\n").await;
    let addr = app.local_addr();

    // A keep-alive connection that goes quiet after a response: hyper's
    // header timer (armed whenever the connection goes idle) closes it.
    let mut stream = raw::connect_from(VIEWER, addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let response = raw::read_response(&mut stream, false).await.unwrap();
    assert_eq!(response.status, 200);
    let took = closed_within(&mut stream, Duration::from_secs(10))
        .await
        .expect("the idle keep-alive connection is closed");
    eprintln!("idle keep-alive connection closed after {took:?} (header_timeout_s = 1)");

    // With a long header timeout, the idle deadline closes it instead.
    let idle_app = camera_server("header_timeout_s = 60\nidle_connection_timeout_s = 1\n").await;
    let mut stream = raw::connect_from(VIEWER, idle_app.local_addr())
        .await
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        raw::read_response(&mut stream, false).await.unwrap().status,
        200
    );
    let took = closed_within(&mut stream, Duration::from_secs(30))
        .await
        .expect("closed by idle_connection_timeout_s, well before header_timeout_s");
    eprintln!("idle connection closed after {took:?} (idle_connection_timeout_s = 1)");
    idle_app.shutdown().await;

    // A header over the cap: refused, and nothing else is disturbed.
    let big = "x".repeat(camstream::http::server::MAX_HEADER_BYTES + 1024);
    let mut stream = raw::connect_from(VIEWER, addr).await.unwrap();
    let request = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    // The server may close before it has read everything: a failed write
    // is an answer too.
    let _ = stream.write_all(request.as_bytes()).await;
    match raw::read_response(&mut stream, false).await {
        Ok(response) => assert_eq!(response.status, 431, "{response:?}"),
        Err(e) => eprintln!("oversized header: connection closed without a response ({e})"),
    }
    let ok = raw::send(addr, VIEWER, &raw::request("GET", "/healthz", &[], None))
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
    app.shutdown().await;
}
