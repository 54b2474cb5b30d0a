//! In-process HTTP "camera" for integration tests: an MJPEG stream
//! (`/video.mjpg`, multipart/x-mixed-replace) and a snapshot URL
//! (`/snapshot.jpg`, one `image/jpeg` per request), as IP cameras serve
//! them, optionally behind basic or Digest authentication and TLS.
//!
//! A deliberately small HTTP/1.1 server on a raw socket (httparse for the
//! request head): every response closes its connection, which is what
//! cameras' embedded servers mostly do, and there is nothing between the
//! test and the bytes on the wire.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use md5::{Digest as _, Md5};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::rtsp::{AuthMethod, TlsIdentity};

/// The Digest realm and nonce the camera challenges with.
const REALM: &str = "camstream-test";
const NONCE: &str = "5f0c8a1e2b3d4c6e";

#[derive(Clone, Debug)]
pub struct HttpCameraOptions {
    pub width: u32,
    pub height: u32,
    /// Parts per second of the MJPEG stream.
    pub fps: u32,
    /// When Some, every URL needs these (checked by `auth`).
    pub credentials: Option<(String, String)>,
    pub auth: AuthMethod,
    /// The MJPEG stream sends its first part only after this long: a
    /// camera slow to start.
    pub first_part_delay: Duration,
    /// Serve https:// with this certificate.
    pub tls: Option<TlsIdentity>,
    /// After this many snapshots, `/snapshot.jpg` answers with an HTML
    /// page instead (a camera whose session expired, or a login page).
    pub html_after: Option<u64>,
    /// Frames without Huffman tables (no DHT segment), as AVI1 webcams and
    /// some IP cameras send them.
    pub avi1: bool,
    /// Each part's body holds a CRLF before the JPEG and two after it,
    /// counted in its Content-Length, as some IP cameras send them.
    pub padded_parts: bool,
    /// Parts without a Content-Length header, delimited by the boundary
    /// alone, as many cheaper cameras send them.
    pub no_content_length: bool,
}

impl Default for HttpCameraOptions {
    fn default() -> Self {
        HttpCameraOptions {
            width: 640,
            height: 480,
            fps: 10,
            credentials: None,
            auth: AuthMethod::Basic,
            first_part_delay: Duration::ZERO,
            tls: None,
            html_after: None,
            avi1: false,
            padded_parts: false,
            no_content_length: false,
        }
    }
}

pub struct HttpCamera {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

struct Shared {
    opts: HttpCameraOptions,
    /// One second of video, JPEG-encoded, served in a loop.
    frames: Vec<Bytes>,
    /// Snapshots served (authorised 200 answers).
    snapshots: AtomicU64,
    /// Requests refused with 401.
    refused: AtomicU64,
}

impl HttpCamera {
    pub async fn start(opts: HttpCameraOptions) -> HttpCamera {
        let frames = {
            let (w, h, fps) = (opts.width, opts.height, opts.fps);
            let frames = tokio::task::spawn_blocking(move || encode_frames(w, h, fps))
                .await
                .unwrap();
            if opts.avi1 {
                frames.iter().map(|f| strip_huffman_tables(f)).collect()
            } else {
                frames
            }
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = opts.tls.as_ref().map(tls_acceptor);
        let tls = acceptor.is_some();
        let shared = Arc::new(Shared {
            opts,
            frames,
            snapshots: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        let task = tokio::spawn({
            let shared = Arc::clone(&shared);
            async move {
                while let Ok((socket, _)) = listener.accept().await {
                    let shared = Arc::clone(&shared);
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        match acceptor {
                            // A failed handshake (the client refused our
                            // certificate) just ends the connection.
                            Some(acceptor) => {
                                if let Ok(stream) = acceptor.accept(socket).await {
                                    serve(stream, &shared).await;
                                }
                            }
                            None => serve(socket, &shared).await,
                        }
                    });
                }
            }
        });
        HttpCamera {
            addr,
            tls,
            shared,
            task,
        }
    }

    /// `http://127.0.0.1:PORT{path}` (`https://` with TLS).
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// [`url`](Self::url) with credentials (letters and digits only).
    pub fn url_with_credentials(&self, user: &str, pass: &str, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{user}:{pass}@{}{path}", self.addr)
    }

    /// The frames served, in a loop, exactly as sent.
    pub fn frames(&self) -> &[Bytes] {
        &self.shared.frames
    }

    /// Snapshots served so far.
    pub fn snapshots_served(&self) -> u64 {
        self.shared.snapshots.load(Ordering::SeqCst)
    }

    /// Requests refused for missing or wrong credentials.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }
}

impl Drop for HttpCamera {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `frame` without its DHT segments (those before the first scan), as an
/// AVI1 webcam frame comes.
fn strip_huffman_tables(frame: &[u8]) -> Bytes {
    let mut out = frame[..2].to_vec();
    let mut pos = 2;
    loop {
        assert_eq!(frame[pos], 0xFF, "a marker at {pos}");
        let code = frame[pos + 1];
        if code == 0xDA {
            out.extend_from_slice(&frame[pos..]);
            return Bytes::from(out);
        }
        let len = usize::from(u16::from_be_bytes([frame[pos + 2], frame[pos + 3]]));
        if code != 0xC4 {
            out.extend_from_slice(&frame[pos..pos + 2 + len]);
        }
        pos += 2 + len;
    }
}

/// `fps` JPEG frames of a moving ball at `width`x`height`.
fn encode_frames(width: u32, height: u32, fps: u32) -> Vec<Bytes> {
    super::init();
    let description = format!(
        "videotestsrc num-buffers={fps} pattern=ball \
         ! video/x-raw,format=I420,width={width},height={height},framerate={fps}/1 \
         ! jpegenc quality=70 ! appsink name=sink sync=false"
    );
    let pipeline = gst::parse::launch(&description)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut frames = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        let map = sample.buffer().unwrap().map_readable().unwrap();
        frames.push(Bytes::copy_from_slice(&map));
    }
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(frames.len(), fps as usize);
    frames
}

fn tls_acceptor(identity: &TlsIdentity) -> tokio_rustls::TlsAcceptor {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(identity.cert_der.clone())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key_der.clone())),
    )
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// One request, one response, then the connection closes.
async fn serve(mut stream: impl AsyncRead + AsyncWrite + Unpin, shared: &Shared) {
    let Some((method, path, authorization)) = read_request(&mut stream).await else {
        return;
    };
    if !authorized(shared, &method, authorization.as_deref()) {
        shared.refused.fetch_add(1, Ordering::SeqCst);
        let challenge = match shared.opts.auth {
            AuthMethod::Basic => format!("Basic realm=\"{REALM}\""),
            AuthMethod::Digest => {
                format!("Digest realm=\"{REALM}\", qop=\"auth\", nonce=\"{NONCE}\", algorithm=MD5")
            }
        };
        let _ = stream
            .write_all(
                format!(
                    "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: {challenge}\r\n\
                     Content-Length: 0\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )
            .await;
        return;
    }
    match path.as_str() {
        "/video.mjpg" => {
            let head = "HTTP/1.1 200 OK\r\n\
                        Content-Type: multipart/x-mixed-replace; boundary=frame\r\n\
                        Cache-Control: no-cache\r\nConnection: close\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            tokio::time::sleep(shared.opts.first_part_delay).await;
            let mut tick = tokio::time::interval(Duration::from_secs(1) / shared.opts.fps.max(1));
            for frame in shared.frames.iter().cycle() {
                tick.tick().await;
                let (before, after): (&[u8], &[u8]) = if shared.opts.padded_parts {
                    (b"\r\n", b"\r\n\r\n")
                } else {
                    (b"", b"")
                };
                let part = if shared.opts.no_content_length {
                    "--frame\r\nContent-Type: image/jpeg\r\n\r\n".to_string()
                } else {
                    format!(
                        "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                        before.len() + frame.len() + after.len()
                    )
                };
                let sent = async {
                    stream.write_all(part.as_bytes()).await?;
                    stream.write_all(before).await?;
                    stream.write_all(frame).await?;
                    stream.write_all(after).await?;
                    stream.write_all(b"\r\n").await?;
                    stream.flush().await
                };
                if sent.await.is_err() {
                    return;
                }
            }
        }
        "/snapshot.jpg"
            if shared
                .opts
                .html_after
                .is_some_and(|n| shared.snapshots.load(Ordering::SeqCst) >= n) =>
        {
            let page = "<html><body>Please log in</body></html>";
            let _ = stream
                .write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                         Connection: close\r\n\r\n{page}",
                        page.len()
                    )
                    .as_bytes(),
                )
                .await;
        }
        "/snapshot.jpg" => {
            let n = shared.snapshots.fetch_add(1, Ordering::SeqCst);
            let frame = &shared.frames[n as usize % shared.frames.len()];
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n",
                frame.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(frame).await;
            let _ = stream.shutdown().await;
        }
        _ => {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
        }
    }
}

/// Method, path and Authorization header of the request.
async fn read_request(
    stream: &mut (impl AsyncRead + Unpin),
) -> Option<(String, String, Option<String>)> {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 || head.len() > 64 * 1024 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    request.parse(&head).ok()?;
    let authorization = request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("authorization"))
        .map(|h| String::from_utf8_lossy(h.value).into_owned());
    Some((
        request.method?.to_string(),
        request.path?.to_string(),
        authorization,
    ))
}

fn authorized(shared: &Shared, method: &str, authorization: Option<&str>) -> bool {
    let Some((user, pass)) = &shared.opts.credentials else {
        return true;
    };
    let Some(authorization) = authorization else {
        return false;
    };
    match shared.opts.auth {
        AuthMethod::Basic => {
            let expected =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            authorization == format!("Basic {expected}")
        }
        AuthMethod::Digest => {
            let Some(params) = authorization.strip_prefix("Digest ") else {
                return false;
            };
            let field = |name: &str| digest_field(params, name);
            let md5 = |text: String| format!("{:x}", Md5::digest(text.as_bytes()));
            let (Some(username), Some(uri), Some(response), Some(nc), Some(cnonce)) = (
                field("username"),
                field("uri"),
                field("response"),
                field("nc"),
                field("cnonce"),
            ) else {
                return false;
            };
            let ha1 = md5(format!("{username}:{REALM}:{pass}"));
            let ha2 = md5(format!("{method}:{uri}"));
            let expected = md5(format!("{ha1}:{NONCE}:{nc}:{cnonce}:auth:{ha2}"));
            username == *user && field("nonce").as_deref() == Some(NONCE) && response == expected
        }
    }
}

/// A `name="value"` or `name=value` field of a Digest Authorization header.
fn digest_field(params: &str, name: &str) -> Option<String> {
    params.split(',').find_map(|part| {
        let (key, value) = part.trim().split_once('=')?;
        (key.trim() == name).then(|| value.trim().trim_matches('"').to_string())
    })
}
