//! Tests of the shared test harness itself (tests/common), so that a failing
//! camstream test can be blamed on camstream and not on its test tools.

mod common;

use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::time::Duration;

use common::mjpeg::{self, MjpegStream, MultipartParser};
use common::rtsp::{
    AuthMethod, Codec, RtspClient, RtspOptions, RtspServer, TlsIdentity, Transports,
};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const MJPEG_HEAD: &str = "HTTP/1.1 200 OK\r\n\
    Content-Type: multipart/x-mixed-replace; boundary=frame\r\n\
    Cache-Control: no-cache\r\n\
    Connection: close\r\n\r\n";

/// A one-connection HTTP server whose response is scripted by the test: it
/// reads the request head, writes `head`, then forwards every byte vector
/// sent on the channel (flushing each, so tests control TCP segmenting and
/// timing); dropping the sender closes the connection. The join handle
/// yields the request head as received.
async fn scripted_server(
    head: &str,
) -> (
    SocketAddr,
    mpsc::UnboundedSender<Vec<u8>>,
    JoinHandle<Vec<u8>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let head = head.as_bytes().to_vec();
    let task = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        while !request.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            if sock.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            request.push(byte[0]);
        }
        sock.write_all(&head).await.unwrap();
        while let Some(chunk) = rx.recv().await {
            if sock.write_all(&chunk).await.is_err() {
                break;
            }
            sock.flush().await.unwrap();
        }
        request
    });
    (addr, tx, task)
}

/// One well-formed part: headers, blank line, body (no delimiters).
fn part(body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "Content-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A complete well-formed body: `--frame` CRLF, parts separated by CRLF
/// delimiters, and the close delimiter when `close` is set.
fn multipart_body(bodies: &[&[u8]], close: bool) -> Vec<u8> {
    let mut out = b"--frame\r\n".to_vec();
    for (i, body) in bodies.iter().enumerate() {
        out.extend_from_slice(&part(body));
        let last = i + 1 == bodies.len();
        out.extend_from_slice(if last && close {
            b"\r\n--frame--\r\n"
        } else {
            b"\r\n--frame\r\n"
        });
    }
    out
}

/// A real JPEG from GStreamer's encoder, so decode_jpeg is tested on the
/// same kind of data camstream produces.
fn make_jpeg(pattern: &str, width: u32, height: u32) -> Vec<u8> {
    common::init();
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc pattern={pattern} num-buffers=1 \
         ! video/x-raw,width={width},height={height} ! jpegenc ! appsink name=sink"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let sample = sink.pull_sample().unwrap();
    let jpeg = sample.buffer().unwrap().map_readable().unwrap().to_vec();
    pipeline.set_state(gst::State::Null).unwrap();
    jpeg
}

async fn connect(addr: SocketAddr) -> MjpegStream {
    MjpegStream::connect(&format!("http://{addr}/stream"))
        .await
        .unwrap()
}

const SHORT: Duration = Duration::from_millis(300);
const LONG: Duration = Duration::from_secs(5);

#[tokio::test]
async fn good_stream_yields_decodable_parts_then_ends() {
    let white = make_jpeg("white", 64, 48);
    let black = make_jpeg("black", 64, 48);
    let (addr, tx, server) = scripted_server(MJPEG_HEAD).await;
    tx.send(multipart_body(&[&white, &black, &white], true))
        .unwrap();

    let mut stream = connect(addr).await;
    assert_eq!(stream.boundary(), "frame");
    assert_eq!(stream.headers()["cache-control"], "no-cache");

    let mut lumas = Vec::new();
    for expected in [&white, &black, &white] {
        let part = stream.next_part_timeout(LONG).await.unwrap();
        assert_eq!(part.header("content-type"), Some("image/jpeg"));
        assert_eq!(
            part.header("CONTENT-LENGTH"),
            Some(&*expected.len().to_string())
        );
        assert_eq!(&part.body[..], &expected[..]);
        let img = mjpeg::decode_jpeg(&part.body).unwrap();
        assert_eq!((img.width, img.height), (64, 48));
        assert_eq!(img.rgb.len(), 64 * 48 * 3);
        lumas.push(mjpeg::mean_luma(&img));
    }
    assert!(
        lumas[0] > 230.0 && lumas[1] < 25.0 && lumas[2] > 230.0,
        "{lumas:?}"
    );
    assert_eq!(stream.parts_received(), 3);

    let err = stream.next_part_timeout(LONG).await.unwrap_err();
    assert!(err.to_string().contains("stream ended"), "{err:#}");

    drop(tx);
    let request = String::from_utf8(server.await.unwrap()).unwrap();
    assert!(request.starts_with("GET /stream HTTP/1.1\r\n"), "{request}");
}

#[test]
fn parser_is_independent_of_segmentation() {
    let body = multipart_body(&[b"first body", b"\r\n--frame\r\n fake", b"x"], true);
    let collect = |chunks: &mut dyn Iterator<Item = &[u8]>| {
        let mut parser = MultipartParser::new("frame");
        let mut bodies = Vec::new();
        let mut ended = false;
        for chunk in chunks {
            parser.push(chunk);
            // The CRLF epilogue after the close delimiter is legal and ignored.
            while !ended {
                match parser.poll_part() {
                    Ok(Some(part)) => bodies.push(part.body),
                    Ok(None) => break,
                    Err(e) => {
                        assert!(e.to_string().contains("stream ended"), "{e:#}");
                        ended = true;
                        break;
                    }
                }
            }
        }
        assert!(ended);
        bodies
    };
    let whole = collect(&mut std::iter::once(&body[..]));
    assert_eq!(whole.len(), 3);
    // The delimiter-lookalike inside a body must not confuse a
    // Content-Length-driven parser.
    assert_eq!(&whole[1][..], b"\r\n--frame\r\n fake");
    assert_eq!(collect(&mut body.chunks(1)), whole);
    for split in 1..body.len() {
        let (a, b) = body.split_at(split);
        assert_eq!(collect(&mut [a, b].into_iter()), whole, "split at {split}");
    }
}

/// Serve `body` raw and return the first error next_part reports.
async fn first_error(body: &[u8]) -> String {
    let (addr, tx, _server) = scripted_server(MJPEG_HEAD).await;
    tx.send(body.to_vec()).unwrap();
    drop(tx);
    let mut stream = connect(addr).await;
    loop {
        match stream.next_part_timeout(LONG).await {
            Ok(_) => continue,
            Err(e) => return format!("{e:#}"),
        }
    }
}

#[tokio::test]
async fn missing_content_length_is_an_error() {
    let err = first_error(b"--frame\r\nContent-Type: image/jpeg\r\n\r\nabc\r\n--frame\r\n").await;
    assert!(err.contains("missing Content-Length"), "{err}");
}

#[tokio::test]
async fn missing_content_type_is_an_error() {
    let err = first_error(b"--frame\r\nContent-Length: 3\r\n\r\nabc\r\n--frame\r\n").await;
    assert!(err.contains("missing Content-Type"), "{err}");
}

#[tokio::test]
async fn bare_lf_in_part_headers_is_an_error() {
    let err = first_error(
        b"--frame\r\nContent-Type: image/jpeg\nContent-Length: 3\r\n\r\nabc\r\n--frame\r\n",
    )
    .await;
    assert!(err.contains("bare LF"), "{err}");
}

#[tokio::test]
async fn bare_lf_after_boundary_is_an_error() {
    let err =
        first_error(b"--frame\nContent-Type: image/jpeg\r\nContent-Length: 3\r\n\r\nabc").await;
    assert!(err.contains("bare LF"), "{err}");
    let mut body = multipart_body(&[b"abc"], false);
    body.truncate(body.len() - 2);
    body.extend_from_slice(b"\n");
    let err = first_error(&body).await;
    assert!(err.contains("bare LF"), "{err}");
}

#[tokio::test]
async fn bare_lf_before_delimiter_is_an_error() {
    let err = first_error(
        b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 3\r\n\r\nabc\n--frame\r\n",
    )
    .await;
    assert!(err.contains("bare LF"), "{err}");
}

#[tokio::test]
async fn leading_crlf_before_first_boundary_is_an_error() {
    let mut body = b"\r\n".to_vec();
    body.extend_from_slice(&multipart_body(&[b"abc"], false));
    let err = first_error(&body).await;
    assert!(err.contains("leading CRLF"), "{err}");
}

#[tokio::test]
async fn content_length_too_small_is_an_error() {
    let err = first_error(
        b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 2\r\n\r\nabc\r\n--frame\r\n",
    )
    .await;
    assert!(err.contains("Content-Length is off by 1"), "{err}");
}

#[tokio::test]
async fn content_length_too_large_is_an_error() {
    // Detected once the next part's bytes show up where the delimiter should be.
    let mut body =
        b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 5\r\n\r\nabc\r\n--frame\r\n"
            .to_vec();
    body.extend_from_slice(&part(b"next part body"));
    body.extend_from_slice(b"\r\n--frame\r\n");
    let err = first_error(&body).await;
    assert!(err.contains("part #1") && err.contains("expected"), "{err}");
}

#[tokio::test]
async fn eof_inside_a_part_is_an_error() {
    let mut body = multipart_body(&[b"abc"], false);
    body.extend_from_slice(b"Content-Type: image/jpeg\r\nContent-Length: 10\r\n\r\nabc");
    let (addr, tx, _server) = scripted_server(MJPEG_HEAD).await;
    tx.send(body).unwrap();
    drop(tx);
    let mut stream = connect(addr).await;
    stream.next_part_timeout(LONG).await.unwrap();
    let err = format!("{:#}", stream.next_part_timeout(LONG).await.unwrap_err());
    assert!(
        err.contains("connection closed") && err.contains("part #2"),
        "{err}"
    );
}

#[tokio::test]
async fn part_is_returned_only_after_the_next_boundary_line() {
    let (addr, tx, _server) = scripted_server(MJPEG_HEAD).await;
    let mut stream = connect(addr).await;

    tx.send(b"--frame\r\n".to_vec()).unwrap();
    tx.send(part(b"jpeg bytes")).unwrap();
    assert!(stream.next_part_timeout(SHORT).await.is_err());
    // A partial delimiter line is still not enough, and the timed-out calls
    // must not lose buffered bytes (next_part is cancel-safe).
    tx.send(b"\r\n--fra".to_vec()).unwrap();
    assert!(stream.next_part_timeout(SHORT).await.is_err());
    tx.send(b"me\r".to_vec()).unwrap();
    assert!(stream.next_part_timeout(SHORT).await.is_err());
    tx.send(b"\n".to_vec()).unwrap();
    let part1 = stream.next_part_timeout(LONG).await.unwrap();
    assert_eq!(&part1.body[..], b"jpeg bytes");

    tx.send(part(b"second")).unwrap();
    assert!(stream.next_part_timeout(SHORT).await.is_err());
    tx.send(b"\r\n--frame\r\n".to_vec()).unwrap();
    let part2 = stream.next_part_timeout(LONG).await.unwrap();
    assert_eq!(&part2.body[..], b"second");
}

#[tokio::test]
async fn connect_reports_status_and_body_on_failure() {
    let (addr, tx, _server) = scripted_server(
        "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\n",
    )
    .await;
    tx.send(b"no such camera".to_vec()).unwrap();
    let err = format!(
        "{:#}",
        MjpegStream::connect(&format!("http://{addr}/x"))
            .await
            .err()
            .unwrap()
    );
    assert!(
        err.contains("404") && err.contains("no such camera"),
        "{err}"
    );
}

#[tokio::test]
async fn connect_requires_multipart_content_type_with_boundary() {
    for (content_type, expect) in [
        ("text/plain", "not multipart/x-mixed-replace"),
        ("multipart/x-mixed-replace", "no boundary"),
        ("multipart/x-mixed-replace; boundary=", "violates RFC 2046"),
    ] {
        let (addr, tx, _server) = scripted_server(&format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nConnection: close\r\n\r\n"
        ))
        .await;
        tx.send(b"oops".to_vec()).unwrap();
        drop(tx);
        let err = format!(
            "{:#}",
            MjpegStream::connect(&format!("http://{addr}/"))
                .await
                .err()
                .unwrap()
        );
        assert!(
            err.contains(expect) && err.contains("oops"),
            "{content_type}: {err}"
        );
    }
}

#[tokio::test]
async fn quoted_boundary_parameter_is_understood() {
    let (addr, tx, _server) = scripted_server(
        "HTTP/1.1 200 OK\r\nContent-Type: Multipart/X-Mixed-Replace;charset=x; BOUNDARY=\"a b:c\"\r\n\r\n",
    )
    .await;
    tx.send(b"--a b:c\r\n".to_vec()).unwrap();
    tx.send(part(b"x")).unwrap();
    tx.send(b"\r\n--a b:c\r\n".to_vec()).unwrap();
    let mut stream = connect(addr).await;
    assert_eq!(stream.boundary(), "a b:c");
    assert_eq!(
        &stream.next_part_timeout(LONG).await.unwrap().body[..],
        b"x"
    );
}

#[tokio::test]
async fn get_raw_exposes_exact_bytes_and_dechunks() {
    let (addr, tx, server) = scripted_server(
        "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
    )
    .await;
    let wire: Vec<&[u8]> = vec![b"9\r\n--frame\r\n\r\n", b"3;ext=1\r\nabc\r\n", b"0\r\n\r\n"];
    for w in &wire {
        tx.send(w.to_vec()).unwrap();
    }
    let mut resp = mjpeg::get_raw(addr, "/cam/1?fps=5").await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.reason, "OK");
    assert!(resp.is_chunked());
    assert!(resp.head.ends_with(b"chunked\r\n\r\n"));
    let body = resp.read_body_at_least(12, LONG).await.unwrap();
    assert_eq!(body, b"--frame\r\nabc");
    resp.read_for(LONG).await.unwrap();
    assert!(resp.is_complete());
    assert_eq!(resp.raw_body(), wire.concat());
    assert_eq!(&resp.take_body()[..], b"--frame\r\nabc");
    assert!(resp.body().is_empty());

    drop(tx);
    let request = String::from_utf8(server.await.unwrap()).unwrap();
    assert!(
        request.starts_with("GET /cam/1?fps=5 HTTP/1.1\r\nHost: 127.0.0.1:"),
        "{request}"
    );
}

#[tokio::test]
async fn get_raw_rejects_bad_framing() {
    let (addr, _tx, _server) = scripted_server("HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n").await;
    let err = mjpeg::get_raw(addr, "/").await.err().unwrap();
    assert!(err.to_string().contains("bare LF"), "{err:#}");

    let (addr, tx, _server) =
        scripted_server("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").await;
    tx.send(b"3\r\nabcX".to_vec()).unwrap();
    let mut resp = mjpeg::get_raw(addr, "/").await.unwrap();
    let err = resp.read_body_at_least(4, LONG).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("not followed by CRLF"),
        "{err:#}"
    );
}

#[test]
fn rtsp_h264_serves_requested_sizes() {
    rtsp_serves_sizes(Codec::H264);
}

#[test]
fn rtsp_h265_serves_requested_sizes() {
    rtsp_serves_sizes(Codec::H265);
}

/// Two servers of the same codec at different sizes, alive at the same time,
/// each consumed by a real rtspsrc pipeline.
fn rtsp_serves_sizes(codec: Codec) {
    let sizes = [(640, 360), (320, 240)];
    let servers: Vec<RtspServer> = sizes
        .iter()
        .map(|&(width, height)| {
            RtspServer::start(RtspOptions {
                width,
                height,
                fps: 15,
                codec,
                ..Default::default()
            })
            .unwrap()
        })
        .collect();
    assert_ne!(servers[0].port(), servers[1].port());
    for (server, &(width, height)) in servers.iter().zip(&sizes) {
        assert_eq!(
            server.url(),
            format!("rtsp://127.0.0.1:{}/test", server.port())
        );
        let frame = common::rtsp::pull_frame(&server.url(), Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{codec:?} {width}x{height}: {e:#}"));
        assert_eq!((frame.width, frame.height), (width, height));
        assert_eq!(frame.rgb.len(), (width * height * 3) as usize);
    }
}

#[test]
fn rtsp_credentials_are_enforced() {
    let server = RtspServer::start(RtspOptions {
        width: 320,
        height: 240,
        credentials: Some(("cam".into(), "s3cret pass/:@".into())),
        path: "/secure".into(),
        ..Default::default()
    })
    .unwrap();
    let timeout = Duration::from_secs(15);
    for url in [server.url(), server.url_with_credentials("cam", "wrong")] {
        let err = format!("{:#}", common::rtsp::pull_frame(&url, timeout).unwrap_err());
        assert!(err.contains("Unauthorized"), "{url}: {err}");
    }
    let url = server.url_with_credentials("cam", "s3cret pass/:@");
    assert!(
        url.starts_with("rtsp://cam:s3cret%20pass%2F%3A%40@127.0.0.1:"),
        "{url}"
    );
    let frame = common::rtsp::pull_frame(&url, timeout).unwrap();
    assert_eq!((frame.width, frame.height), (320, 240));
}

#[test]
fn rtsp_servers_allow_only_the_transports_asked_for() {
    let timeout = Duration::from_secs(15);
    for (transports, allowed, refused) in [
        (Transports::UdpOnly, "udp", "tcp"),
        (Transports::TcpOnly, "tcp", "udp"),
    ] {
        let server = RtspServer::start(RtspOptions {
            width: 320,
            height: 240,
            transports,
            ..Default::default()
        })
        .unwrap();
        let frame = RtspClient::start(&server.url(), Some(allowed))
            .unwrap()
            .pull_frame(timeout)
            .unwrap_or_else(|e| panic!("{transports:?} over {allowed}: {e:#}"));
        assert_eq!((frame.width, frame.height), (320, 240));
        let err = RtspClient::start(&server.url(), Some(refused))
            .unwrap()
            .pull_frame(timeout)
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("No supported stream was found"),
            "{transports:?} over {refused}: {err:#}"
        );
    }
}

#[test]
fn rtsp_serves_jpeg_digest_tls_and_audio() {
    let timeout = Duration::from_secs(15);
    let jpeg = RtspServer::start(RtspOptions {
        codec: Codec::Jpeg,
        audio: true,
        ..Default::default()
    })
    .unwrap();
    let frame = common::rtsp::pull_frame(&jpeg.url(), timeout).unwrap();
    assert_eq!((frame.width, frame.height), (640, 360));

    let digest = RtspServer::start(RtspOptions {
        credentials: Some(("cam".into(), "s3cret".into())),
        auth_method: AuthMethod::Digest,
        ..Default::default()
    })
    .unwrap();
    let err = common::rtsp::pull_frame(&digest.url_with_credentials("cam", "wrong"), timeout)
        .unwrap_err();
    assert!(format!("{err:#}").contains("Unauthorized"), "{err:#}");
    common::rtsp::pull_frame(&digest.url_with_credentials("cam", "s3cret"), timeout).unwrap();

    // A self-signed certificate: rtspsrc refuses it by default.
    let tls = RtspServer::start(RtspOptions {
        tls: Some(TlsIdentity::self_signed()),
        ..Default::default()
    })
    .unwrap();
    assert!(tls.url().starts_with("rtsps://127.0.0.1:"));
    let err = common::rtsp::pull_frame(&tls.url(), timeout).unwrap_err();
    assert!(format!("{err:#}").contains("Failed to connect"), "{err:#}");
}

#[test]
fn rtsp_stop_drops_clients_refuses_connects_and_can_restart() {
    let opts = RtspOptions {
        width: 320,
        height: 240,
        ..Default::default()
    };
    let server = RtspServer::start(opts.clone()).unwrap();
    let port = server.port();
    let url = server.url();
    let timeout = Duration::from_secs(20);
    // One client per transport: over TCP the drop is the control connection
    // closing; over UDP rtspsrc must notice the RTSP connection going away.
    let tcp = RtspClient::start(&url, Some("tcp")).unwrap();
    let udp = RtspClient::start(&url, Some("udp")).unwrap();
    tcp.pull_frame(timeout).unwrap();
    udp.pull_frame(timeout).unwrap();

    server.stop();
    let lingering = tcp_states_on_port(port);
    assert!(
        !lingering.iter().any(|s| s == TCP_LISTEN),
        "still listening: {lingering:?}"
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let err = StdTcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    tcp.wait_for_end(Duration::from_secs(10)).unwrap();
    udp.wait_for_end(Duration::from_secs(15)).unwrap();

    // Same port straight away. The server closed the client connections
    // first, so their sockets linger (TIME_WAIT / FIN_WAIT) on this port;
    // the bind still works because g_socket_bind(allow_reuse=TRUE) sets
    // SO_REUSEADDR, which on Linux only conflicts with a LISTEN socket.
    assert!(
        !tcp_states_on_port(port).is_empty(),
        "nothing lingers: reuse untested"
    );
    let server = RtspServer::start_on_port(opts, port).unwrap();
    assert_eq!(server.port(), port);
    assert_eq!(server.url(), url);
    let frame = common::rtsp::pull_frame(&url, timeout).unwrap();
    assert_eq!((frame.width, frame.height), (320, 240));
}

#[test]
fn rtsp_start_on_busy_port_reports_bind_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let err = RtspServer::start_on_port(RtspOptions::default(), port)
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("in use"), "{err:#}");
}

#[test]
fn rtsp_drop_releases_the_port() {
    let port = {
        let server = RtspServer::start(RtspOptions::default()).unwrap();
        server.port()
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(StdTcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err());
}

/// TCP state code of a listening socket in /proc/net/tcp.
const TCP_LISTEN: &str = "0A";

/// States (hex codes as in /proc/net/tcp) of every IPv4 TCP socket whose
/// local port is `port`.
fn tcp_states_on_port(port: u16) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit(':').next()?;
            (u16::from_str_radix(local_port, 16).ok()? == port)
                .then(|| fields.get(3).map(|s| s.to_string()))?
        })
        .collect()
}
