//! The nginx configuration camstream ships (deploy/nginx/camstream.conf),
//! run by Debian's nginx on loopback in front of a camstream that listens
//! on plain HTTP: browsers get TLS and HTTP/2 from nginx, MJPEG passes
//! through frame by frame (`proxy_buffering off`), and the grid's
//! WebSocket passes its origin check through it.

mod common;

use std::time::Duration;

use common::mjpeg::{MultipartParser, decode_jpeg};
use common::nginx::Nginx;
use common::tls::{Parts, TestCa, h2_body, h2_connect, h2_get};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Message, http::HeaderValue};

const PART_TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_nginx_config_serves_streams_over_http2_and_the_grid_socket() {
    let app = common::app::start(
        "[[cameras]]\nid = \"a\"\nsource = \"test:ball?width=160&height=120&fps=10\"\nalways_on = true\n",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (cert, key) = ca.write(dir.path(), "nginx");
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    let nginx = Nginx::start(dir.path(), app.local_addr(), &cert, &key).unwrap();
    let front = nginx.addr();

    // curl, over HTTP/2 to nginx.
    let body = dir.path().join("body.bin");
    let output = tokio::process::Command::new("curl")
        .args(["--http2", "-sS", "--max-time", "3", "-o"])
        .arg(&body)
        .arg("--cacert")
        .arg(dir.path().join("ca.pem"))
        .args(["-w", "%{http_version} %{response_code}"])
        .arg(format!(
            "https://127.0.0.1:{}/api/cameras/a/stream.mjpeg",
            front.port()
        ))
        .output()
        .await
        .unwrap();
    let summary = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        summary,
        "2 200",
        "{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        nginx.log()
    );
    let mut parser = MultipartParser::new("frame");
    parser.push(&std::fs::read(&body).unwrap());
    let mut parts = 0;
    while let Some(part) = parser.poll_part().unwrap() {
        decode_jpeg(&part.body).unwrap();
        parts += 1;
    }
    eprintln!("through nginx, curl --http2 got {parts} JPEG parts in 3 s");
    assert!(parts >= 3, "{parts} parts:\n{}", nginx.log());

    // A viewer reading JPEGs over HTTP/2 through nginx, part by part.
    let mut connection = h2_connect(&ca, front, 1 << 20, 16 << 20).await.unwrap();
    let response = h2_get(&mut connection, front, "/api/cameras/a/stream.mjpeg")
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut viewer = Parts::new("frame", h2_body(response.into_body()));
    for _ in 0..5 {
        let part = viewer.next_part(PART_TIMEOUT).await.unwrap();
        decode_jpeg(&part.body).unwrap();
    }

    // The grid's socket through nginx, from a page on nginx's origin: the
    // Upgrade is passed on, and so is the Host the origin check needs.
    let tls = ca.connect(front, &[b"http/1.1"]).await.unwrap();
    let mut request = format!("wss://127.0.0.1:{}/api/ws?cameras=a", front.port())
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "origin",
        HeaderValue::from_str(&format!("https://127.0.0.1:{}", front.port())).unwrap(),
    );
    let (mut socket, response) = tokio_tungstenite::client_async(request, tls)
        .await
        .unwrap_or_else(|e| panic!("WebSocket through nginx: {e}\n{}", nginx.log()));
    assert_eq!(response.status(), 101);
    let message = tokio::time::timeout(PART_TIMEOUT, socket.next())
        .await
        .expect("a frame on the socket")
        .unwrap()
        .unwrap();
    let Message::Binary(frame) = message else {
        panic!("expected a binary frame, got {message:?}");
    };
    assert_eq!(&frame[..2], b"\x01a");
    decode_jpeg(&frame[2..]).unwrap();
    drop(nginx);
    app.shutdown().await;
}
