//! A small HTTP/1.1 client for upstreams: one connection per request
//! (a stream holds its connection for as long as it runs), over TCP or
//! rustls, the view token in an `Authorization: Bearer` header.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::task::AbortOnDropHandle;

use super::{Upstream, UpstreamError};

/// From connect to the response head: a LAN or WAN round trip and a TLS
/// handshake take well under a second; a silent host is given up on after
/// this and retried with the camera's back-off.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A whole camera-list read: a few KB of JSON.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest camera list read: thousands of cameras' JSON, not more.
const MAX_LIST_BYTES: usize = 8 << 20;
/// Debian's CA bundle (ca-certificates), used for https:// upstreams with
/// neither `ca` nor `fingerprint`.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Which certificates an https:// upstream may present.
#[derive(Clone, Debug, PartialEq)]
pub enum Trust {
    /// The system's CAs (a certificate from a public or company CA).
    System,
    /// The CA certificates (or the self-signed certificate itself) of a PEM
    /// file: `ca`.
    Ca(Vec<rustls_pki_types::CertificateDer<'static>>),
    /// Exactly the certificate with this SHA-256 (what `camstream cert`
    /// prints): `fingerprint`.
    Fingerprint([u8; 32]),
}

impl Trust {
    pub fn ca_file(path: &Path) -> Result<Trust, String> {
        use rustls_pki_types::pem::PemObject;
        let pem = std::fs::read(path)
            .map_err(|e| format!("ca file {} cannot be read: {e}", path.display()))?;
        let certs = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("ca file {} is not PEM: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "ca file {} holds no certificate: give the PEM file of the edge's certificate or its CA",
                path.display()
            ));
        }
        Ok(Trust::Ca(certs))
    }

    /// `sha256:AB:CD:...` or the 64 hex digits, with or without colons, in
    /// either case.
    pub fn fingerprint(text: &str) -> Result<Trust, String> {
        let bad = || {
            format!(
                "fingerprint {text:?} is not a SHA-256 fingerprint: copy the one `camstream cert` prints on the upstream, e.g. \"sha256:AB:CD:...\" (32 bytes in hex)"
            )
        };
        let hex: String = text
            .strip_prefix("sha256:")
            .or_else(|| text.strip_prefix("SHA256:"))
            .unwrap_or(text)
            .chars()
            .filter(|c| *c != ':')
            .collect();
        if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Trust::Fingerprint(out))
    }

    fn client_config(&self) -> Result<rustls::ClientConfig, String> {
        match self {
            Trust::System => {
                use rustls_pki_types::pem::PemObject;
                let pem = std::fs::read(SYSTEM_CA_BUNDLE).map_err(|e| {
                    format!(
                        "the system CA bundle {SYSTEM_CA_BUNDLE} cannot be read ({e}): install ca-certificates, or set ca or fingerprint"
                    )
                })?;
                let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
                    .filter_map(Result::ok)
                    .collect();
                crate::tls::ca_client_config(&certs)
            }
            Trust::Ca(certs) => crate::tls::ca_client_config(certs),
            Trust::Fingerprint(sha256) => Ok(crate::tls::fingerprint_client_config(*sha256)),
        }
    }
}

/// A response whose connection lives as long as it does.
pub struct Response {
    inner: hyper::Response<Incoming>,
    /// The upstream's name, for errors.
    upstream: String,
    _connection: AbortOnDropHandle<()>,
}

impl Response {
    pub fn status(&self) -> hyper::StatusCode {
        self.inner.status()
    }

    pub fn content_type(&self) -> Option<&str> {
        self.inner
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
    }

    /// The next chunk of the body; None at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        loop {
            match self.inner.body_mut().frame().await {
                None => return Ok(None),
                Some(Err(e)) => {
                    return Err(UpstreamError::Protocol {
                        upstream: self.upstream.clone(),
                        what: "reading the response".into(),
                        reason: e.to_string(),
                    });
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    /// The whole body, up to a bound.
    pub async fn collect_body(mut self) -> Result<Vec<u8>, UpstreamError> {
        let mut body = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_LIST_BYTES {
                return Err(UpstreamError::Protocol {
                    upstream: self.upstream.clone(),
                    what: "the camera list".into(),
                    reason: format!("larger than {MAX_LIST_BYTES} bytes"),
                });
            }
        }
        Ok(body)
    }
}

/// The error for an unexpected status.
pub fn status_error(upstream: &Upstream, what: &str, status: u16) -> UpstreamError {
    match status {
        401 | 403 => UpstreamError::Refused {
            upstream: upstream.name.clone(),
            status,
        },
        _ => UpstreamError::Status {
            upstream: upstream.name.clone(),
            what: what.into(),
            status,
            detail: match status {
                503 => ": the camera is unavailable there or the server is full".into(),
                _ => String::new(),
            },
        },
    }
}

/// `GET path` on the upstream, with its token; the response head within
/// `wait`.
pub async fn get(
    upstream: &Upstream,
    path: &str,
    wait: Duration,
) -> Result<Response, UpstreamError> {
    let connect_error = |reason: String| UpstreamError::Connect {
        upstream: upstream.name.clone(),
        url: upstream.display(),
        reason,
    };
    let result = tokio::time::timeout(wait, request(upstream, path)).await;
    match result {
        Ok(Ok(mut response)) => {
            response.upstream = upstream.name.clone();
            Ok(response)
        }
        Ok(Err(reason)) => Err(connect_error(reason)),
        Err(_) => Err(connect_error(format!("no answer within {wait:?}"))),
    }
}

async fn request(upstream: &Upstream, path: &str) -> Result<Response, String> {
    let url = &upstream.url;
    let host = url.host_str().ok_or("no host")?.to_string();
    let port = url.port_or_known_default().ok_or("no port")?;
    // IPv6 literals keep their brackets in Host, not in connect().
    let connect_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let tcp = TcpStream::connect((connect_host.as_str(), port))
        .await
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.clone(),
    };
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(
            hyper::header::AUTHORIZATION,
            format!("Bearer {}", upstream.token.expose()),
        )
        .header(
            hyper::header::USER_AGENT,
            concat!("camstream/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    if url.scheme() == "https" {
        let config = upstream.trust.client_config()?;
        let name = rustls_pki_types::ServerName::try_from(connect_host)
            .map_err(|e| format!("{host} is not a TLS server name: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        send(tls, request).await
    } else {
        send(tcp, request).await
    }
}

async fn send<IO>(io: IO, request: hyper::Request<Empty<Bytes>>) -> Result<Response, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    let connection = AbortOnDropHandle::new(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let inner = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Response {
        inner,
        upstream: String::new(),
        _connection: connection,
    })
}
