//! HTTPS for tests: a test certificate authority (rcgen), certificates it
//! issues as PEM files, and clients that trust it: HTTP/1.1 (hyper) and
//! HTTP/2 (the h2 crate, which lets a test hold one stream's window shut).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::mjpeg::{MultipartParser, Part};

/// A certificate authority that exists only for one test.
pub struct TestCa {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    cert: rcgen::Certificate,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "camstream test CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa { params, key, cert }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A server certificate for `names`, valid from `not_before` to
    /// `not_after` days from now: (certificate PEM, key PEM).
    pub fn issue_dated(&self, names: &[&str], not_before: i64, not_after: i64) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(not_before);
        params.not_after = now + time::Duration::days(not_after);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A certificate for 127.0.0.1 and localhost, valid now.
    pub fn issue(&self) -> (String, String) {
        self.issue_dated(&["127.0.0.1", "localhost"], -1, 30)
    }

    /// Writes a new certificate and its key into `dir` as `name.crt` and
    /// `name.key`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = self.issue();
        write_pair(dir, name, &cert, &key)
    }

    /// Client settings that trust this CA only, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// A verified TLS connection to `addr` (as 127.0.0.1) offering `alpn`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        alpn: &[&[u8]],
    ) -> anyhow::Result<TlsStream<TcpStream>> {
        let connector = TlsConnector::from(Arc::new(self.client_config(alpn)));
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("127.0.0.1").unwrap();
        Ok(connector.connect(name, tcp).await?)
    }
}

pub fn write_pair(dir: &Path, name: &str, cert: &str, key: &str) -> (PathBuf, PathBuf) {
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    (cert_path, key_path)
}

/// The certificate a server presented on `stream`, as its SHA-256
/// fingerprint (the form camstream logs).
pub fn peer_fingerprint(stream: &TlsStream<TcpStream>) -> String {
    let certs = stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("a certificate");
    camstream::tls::fingerprint(&certs[0])
}

/// The SHA-256 fingerprint of the first certificate in a PEM file.
pub fn file_fingerprint(path: &Path) -> String {
    use rustls::pki_types::pem::PemObject as _;
    let der = CertificateDer::from_pem_file(path).unwrap();
    camstream::tls::fingerprint(&der)
}

/// An HTTP/1.1 response over TLS, its body still streaming.
pub struct Response {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: BodyStream,
}

pub type BodyStream = Pin<Box<dyn Stream<Item = anyhow::Result<Bytes>> + Send>>;

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The whole body (for responses that end).
    pub async fn text(mut self) -> anyhow::Result<String> {
        let mut out = Vec::new();
        while let Some(chunk) = self.body.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(String::from_utf8(out)?)
    }

    /// The body as MJPEG parts; fails unless it is a multipart stream.
    pub fn parts(self) -> anyhow::Result<Parts> {
        let content_type = self.header("content-type").unwrap_or_default().to_string();
        let boundary = content_type
            .split("boundary=")
            .nth(1)
            .ok_or_else(|| anyhow!("not multipart: {content_type:?}"))?;
        Ok(Parts {
            parser: MultipartParser::new(boundary),
            body: self.body,
        })
    }
}

/// GET `path` over HTTPS with HTTP/1.1 (ALPN `http/1.1`).
pub async fn get_http1(ca: &TestCa, addr: SocketAddr, path: &str) -> anyhow::Result<Response> {
    let tls = ca.connect(addr, &[b"http/1.1"]).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header("host", addr.to_string())
        .body(http_body_util::Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    let body = http_body_util::BodyStream::new(body).filter_map(|frame| async move {
        match frame {
            Ok(frame) => frame.into_data().ok().map(Ok),
            Err(e) => Some(Err(anyhow::Error::new(e))),
        }
    });
    Ok(Response {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: Box::pin(body),
    })
}

/// GET `path` over HTTPS/1.1 and parse the body as JSON.
pub async fn get_json(
    ca: &TestCa,
    addr: SocketAddr,
    path: &str,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let response = get_http1(ca, addr, path).await?;
    let status = response.status;
    let text = response.text().await?;
    let json =
        serde_json::from_str(&text).with_context(|| format!("GET {path}: not JSON: {text}"))?;
    Ok((status, json))
}

/// A camera's viewer count, over HTTPS.
pub async fn viewers(ca: &TestCa, addr: SocketAddr, id: &str) -> u64 {
    let (status, json) = get_json(ca, addr, &format!("/api/cameras/{id}"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{json}");
    json["viewers"].as_u64().unwrap()
}

/// /metrics over HTTPS.
pub async fn metrics(ca: &TestCa, addr: SocketAddr) -> String {
    let response = get_http1(ca, addr, "/metrics").await.unwrap();
    assert_eq!(response.status, 200);
    response.text().await.unwrap()
}

/// A sample of /metrics text, by its full name with labels.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the metrics:\n{text}"))
}

/// MJPEG parts read from any body stream.
pub struct Parts {
    parser: MultipartParser,
    body: BodyStream,
}

impl Parts {
    pub fn new(boundary: &str, body: BodyStream) -> Parts {
        Parts {
            parser: MultipartParser::new(boundary),
            body,
        }
    }

    pub fn received(&self) -> u64 {
        self.parser.parts()
    }

    pub async fn next_part(&mut self, timeout: Duration) -> anyhow::Result<Part> {
        tokio::time::timeout(timeout, async {
            loop {
                if let Some(part) = self.parser.poll_part()? {
                    return Ok(part);
                }
                match self.body.next().await {
                    Some(chunk) => self.parser.push(&chunk?),
                    None => bail!("stream ended: {}", self.parser.describe()),
                }
            }
        })
        .await
        .map_err(|_| anyhow!("no part within {timeout:?}: {}", self.parser.describe()))?
    }
}

/// An HTTP/2 connection over TLS (ALPN `h2`), with the client's receive
/// windows as a browser sets them: the connection's larger than a
/// stream's.
pub async fn h2_connect(
    ca: &TestCa,
    addr: SocketAddr,
    stream_window: u32,
    connection_window: u32,
) -> anyhow::Result<h2::client::SendRequest<Bytes>> {
    let tls = ca.connect(addr, &[b"h2"]).await?;
    let alpn = tls.get_ref().1.alpn_protocol().map(|p| p.to_vec());
    if alpn.as_deref() != Some(b"h2") {
        bail!("the server did not choose h2 (ALPN {alpn:?})");
    }
    let (sender, connection) = h2::client::Builder::new()
        .initial_window_size(stream_window)
        .initial_connection_window_size(connection_window)
        .handshake(tls)
        .await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender.ready().await?)
}

/// Opens a GET stream on an HTTP/2 connection.
pub async fn h2_get(
    sender: &mut h2::client::SendRequest<Bytes>,
    addr: SocketAddr,
    path: &str,
) -> anyhow::Result<hyper::Response<h2::RecvStream>> {
    let request = hyper::Request::get(format!("https://{addr}{path}")).body(())?;
    let (response, _) = sender.clone().ready().await?.send_request(request, true)?;
    Ok(response.await?)
}

/// An HTTP/2 response body as a stream of chunks, releasing the window as
/// it reads (what a client that keeps up does).
pub fn h2_body(mut recv: h2::RecvStream) -> BodyStream {
    Box::pin(async_stream(move |tx| async move {
        while let Some(chunk) = recv.data().await {
            match chunk {
                Ok(chunk) => {
                    let _ = recv.flow_control().release_capacity(chunk.len());
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(anyhow::Error::new(e))).await;
                    return;
                }
            }
        }
    }))
}

/// A stream fed by a task, so a body can be read by a plain loop.
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = anyhow::Result<Bytes>> + Send
where
    F: FnOnce(tokio::sync::mpsc::Sender<anyhow::Result<Bytes>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
