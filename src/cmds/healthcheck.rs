//! `camstream healthcheck`: GET /healthz from a running camstream and exit 0
//! on 200. The container image's HEALTHCHECK runs it, so the image needs no
//! curl; it finds the port the same way the server does (config file,
//! `CAMSTREAM_LISTEN`). With `[server.tls]` it asks over HTTPS and accepts
//! exactly the certificate in the configured file (it may name a host that
//! is not the loopback address asked).

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use hyper_util::rt::TokioIo;

use super::{ServeArgs, parse_seconds};

/// What `camstream healthcheck` takes.
#[derive(Clone, Debug, clap::Args)]
pub struct HealthcheckArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Fail if the answer takes longer than this many seconds
    #[arg(long, default_value = "3", value_parser = parse_seconds, value_name = "SECS")]
    pub timeout: Duration,
}

/// Checks the server the config describes and writes one line to `out`.
pub fn run(args: &HealthcheckArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let server = args.serve.load()?.server;
    let listen = server.listen;
    let addr = local_target(listen);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let tls = match &server.tls {
        Some(tls) => Some(crate::tls::pinned_client_config(&tls.files().0)?),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{addr}/healthz");
    let status = runtime
        .block_on(async { tokio::time::timeout(args.timeout, get_status(addr, tls)).await })
        .with_context(|| format!("{url}: no answer within {:?}", args.timeout))?
        .with_context(|| format!("{url}: is camstream running and listening on {listen}?"))?;
    if status != hyper::StatusCode::OK {
        bail!("{url} answered {status}");
    }
    writeln!(out, "ok: {url} answered {status}")?;
    Ok(())
}

/// Where to reach a server listening on `listen` from the same host: an
/// unspecified address (0.0.0.0, ::) is reached on loopback.
pub fn local_target(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// The status of `GET /healthz`, over one HTTP/1.1 connection, over TLS
/// with `tls`.
async fn get_status(
    addr: SocketAddr,
    tls: Option<rustls::ClientConfig>,
) -> anyhow::Result<hyper::StatusCode> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    match tls {
        Some(config) => {
            let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
            let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
                .connect(name, stream)
                .await?;
            request_status(addr, stream).await
        }
        None => request_status(addr, stream).await,
    }
}

async fn request_status<IO>(addr: SocketAddr, stream: IO) -> anyhow::Result<hyper::StatusCode>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, String>(TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    let request = hyper::Request::get("/healthz")
        .header(hyper::header::HOST, addr.to_string())
        .body(String::new())?;
    let status = sender.send_request(request).await?.status();
    connection.abort();
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_reached_on_loopback() {
        let target = |s: &str| local_target(s.parse().unwrap()).to_string();
        assert_eq!(target("0.0.0.0:8000"), "127.0.0.1:8000");
        assert_eq!(target("[::]:8000"), "[::1]:8000");
        assert_eq!(target("192.168.1.5:9000"), "192.168.1.5:9000");
    }
}
