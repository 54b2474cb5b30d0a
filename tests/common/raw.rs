//! Raw HTTP/1.1 requests from a chosen loopback address: the request
//! target goes out byte for byte (reqwest's URL parser would resolve `.`
//! and `..` segments before sending), and the source address can be any of
//! 127/8, which Linux routes to loopback, so a test can be many clients.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Longest a raw request may take: generous for a loaded CI machine.
const TIMEOUT: Duration = Duration::from_secs(20);

/// A response's status, headers and (Content-Length) body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, or Null.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// `error.code` of a JSON error body.
    pub fn code(&self) -> Option<String> {
        self.json()["error"]["code"].as_str().map(str::to_string)
    }
}

/// A TCP connection to `to` from the loopback address `from`.
pub async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = match from {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// Builds a request. A body is sent as JSON.
pub fn request(
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Vec<u8> {
    let mut out =
        format!("{method} {target} HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        out.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    out.push_str("\r\n");
    if let Some(body) = body {
        out.push_str(body);
    }
    out.into_bytes()
}

/// Sends `request` to `to` from `from` and reads the response head, and the
/// body when it has a Content-Length (never a stream's endless body). A
/// response to HEAD has no body, whatever its headers say.
pub async fn send(to: SocketAddr, from: IpAddr, request: &[u8]) -> anyhow::Result<Response> {
    let head_only = request.starts_with(b"HEAD ");
    tokio::time::timeout(TIMEOUT, async {
        let mut stream = connect_from(from, to).await?;
        stream.write_all(request).await?;
        read_response(&mut stream, head_only).await
    })
    .await
    .map_err(|_| anyhow::anyhow!("no response within {TIMEOUT:?}"))?
}

/// Reads one response from `stream`.
pub async fn read_response(stream: &mut TcpStream, head_only: bool) -> anyhow::Result<Response> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            anyhow::bail!(
                "connection closed before a whole response head: {:?}",
                String::from_utf8_lossy(&buf)
            );
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(len) = parsed.parse(&buf)? {
            let status = parsed.code.unwrap_or(0);
            let headers: Vec<(String, String)> = parsed
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let length = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse::<usize>().ok())
                .filter(|_| !head_only)
                .unwrap_or(0)
                .min(1 << 20);
            let mut body = buf[len..].to_vec();
            while body.len() < length {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(length);
            return Ok(Response {
                status,
                headers,
                body,
            });
        }
    }
}
