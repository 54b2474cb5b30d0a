//! The deployment issue 11 is about: a front end served over HTTPS from
//! another origin (here a small static HTTPS server on another loopback
//! port), showing 16 cameras as plain `<img src="https://.../stream.mjpeg">`
//! tags, in headless Chromium that trusts a test certificate authority
//! (installed in an NSS database in a temporary $HOME, as a user would
//! add their CA). Over HTTP/1.1 Chromium would open at most 6 connections
//! to camstream and 10 of the tiles would never load; over HTTP/2 all 16
//! repaint, on one connection.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::browser::Browser;
use common::mjpeg::decode_jpeg;
use common::tls::{TestCa, metric, metrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const CAMERAS: usize = 16;
const TILE: (u32, u32) = (160, 120);

/// Trusts `ca` for Chromium started with `$HOME` = `home`.
fn trust_in_nss(home: &Path, ca: &TestCa) {
    let db = home.join(".pki/nssdb");
    std::fs::create_dir_all(&db).unwrap();
    let ca_file = home.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let db_arg = format!("sql:{}", db.display());
    for args in [
        vec!["-N", "-d", &db_arg, "--empty-password"],
        vec![
            "-A",
            "-d",
            &db_arg,
            "-t",
            "C,,",
            "-n",
            "camstream test CA",
            "-i",
            ca_file.to_str().unwrap(),
        ],
    ] {
        let status = std::process::Command::new("certutil")
            .args(&args)
            .status()
            .expect("certutil runs (Debian package libnss3-tools; scripts/install-deps.sh --test)");
        assert!(status.success(), "certutil {args:?}");
    }
}

/// A static HTTPS server for one page, on its own loopback port: the
/// "separate front end".
async fn serve_page(ca: &TestCa, html: String) -> SocketAddr {
    use rustls::pki_types::pem::PemObject as _;
    let (cert, key) = ca.issue();
    let chain = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let html = html.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let response = if head.starts_with(b"GET / ") {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{html}",
                        html.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .into()
                };
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

/// Mean absolute difference of two RGB images inside `rect` (x, y, w, h).
fn tile_change(
    a: &common::mjpeg::Image,
    b: &common::mjpeg::Image,
    rect: (u32, u32, u32, u32),
) -> f64 {
    let (x0, y0, w, h) = rect;
    let mut sum = 0u64;
    // Stay off the tile's edges: JPEG blocks there mix in the page.
    for y in y0 + 8..y0 + h - 8 {
        for x in x0 + 8..x0 + w - 8 {
            let i = ((y * a.width + x) * 3) as usize;
            for c in 0..3 {
                sum += u64::from(a.rgb[i + c].abs_diff(b.rgb[i + c]));
            }
        }
    }
    sum as f64 / f64::from((w - 16) * (h - 16) * 3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_img_streams_on_a_page_from_another_origin_repaint_over_one_http2_connection() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    ca.write(dir.path(), "server");
    // Snow changes every pixel every frame: a tile that repaints shows it.
    let cameras: String = (1..=CAMERAS)
        .map(|i| {
            format!(
                "[[cameras]]\nid = \"{i}\"\nsource = \"test:snow?width={}&height={}&fps=5\"\nscale = 1\nquality = 60\n",
                TILE.0, TILE.1
            )
        })
        .collect();
    let config = dir.path().join("camstream.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[server.tls]\ncert = \"server.crt\"\nkey = \"server.key\"\n{cameras}"
        ),
    )
    .unwrap();
    let app = common::app::start_from_file(&config).await;
    let camstream = app.local_addr();

    let tiles: String = (1..=CAMERAS)
        .map(|i| {
            format!(
                "<img id=\"cam{i}\" width=\"{}\" height=\"{}\" src=\"https://127.0.0.1:{}/api/cameras/{i}/stream.mjpeg\">",
                TILE.0,
                TILE.1,
                camstream.port()
            )
        })
        .collect();
    let html = format!(
        "<!doctype html><html><head><title>front end</title><style>\
         body {{ margin: 0; background: #808080; }} \
         #grid {{ display: grid; grid-template-columns: repeat(4, {w}px); gap: 8px; }} \
         img {{ display: block; }}</style></head>\
         <body><div id=\"grid\">{tiles}</div></body></html>",
        w = TILE.0
    );
    let front_end = serve_page(&ca, html).await;

    let home = dir.path().join("home");
    trust_in_nss(&home, &ca);
    let browser = Browser::start_with_home(Some(&home)).await.unwrap();
    let page = browser
        .open(&format!("https://127.0.0.1:{}/", front_end.port()))
        .await
        .unwrap();
    page.wait_for(
        &format!(
            "(() => {{ const imgs = [...document.images]; return imgs.length === {CAMERAS} && imgs.every((i) => i.naturalWidth > 0); }})()"
        ),
        "[location.href, [...document.images].map((i) => i.naturalWidth)]",
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nchromium log:\n{}", browser.log()));
    // Where each tile is on the screen.
    let rects = page
        .eval(
            "[...document.images].map((i) => { const r = i.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })",
        )
        .await
        .unwrap();
    let rects: Vec<(u32, u32, u32, u32)> = rects
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let n = |i: usize| r[i].as_f64().unwrap() as u32;
            (n(0), n(1), n(2), n(3))
        })
        .collect();

    // Every tile repaints: between two screenshots, each tile's pixels
    // change (snow differs in every frame; a frozen tile would not).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut first = decode_jpeg(&page.screenshot_jpeg().await.unwrap()).unwrap();
    let mut repainted = [false; CAMERAS];
    while !repainted.iter().all(|r| *r) {
        assert!(
            Instant::now() < deadline,
            "tiles that never repainted: {:?}",
            repainted
                .iter()
                .enumerate()
                .filter(|(_, r)| !**r)
                .map(|(i, _)| i + 1)
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let next = decode_jpeg(&page.screenshot_jpeg().await.unwrap()).unwrap();
        for (i, rect) in rects.iter().enumerate() {
            let change = tile_change(&first, &next, *rect);
            if change > 10.0 {
                repainted[i] = true;
            }
        }
        first = next;
    }
    let _ = page
        .screenshot(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("https-page.png"))
        .await;

    // Over HTTP/2, all on one connection, counted by camstream: every
    // TLS handshake chose h2 (Chromium may open a few sockets before the
    // first one has negotiated h2, and then closes the spares), and once
    // the spares are gone one connection carries all 16 viewers. The
    // metrics requests (one connection each) are the only HTTP/1.1 ones.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut requests = 0;
    let text = loop {
        let text = metrics(&ca, camstream).await;
        requests += 1;
        if metric(&text, "camstream_connections_open") == 2 || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let h2 = metric(&text, "camstream_tls_handshakes_total{protocol=\"h2\"}");
    assert!(h2 >= 1, "{text}");
    assert_eq!(
        metric(
            &text,
            "camstream_tls_handshakes_total{protocol=\"http/1.1\"}"
        ),
        requests,
        "only the metrics requests came over HTTP/1.1:\n{text}"
    );
    assert_eq!(
        metric(&text, "camstream_connections_open"),
        2,
        "Chromium's one HTTP/2 connection, and this request's:\n{text}"
    );
    let (_, list) = common::tls::get_json(&ca, camstream, "/api/cameras")
        .await
        .unwrap();
    let viewers: u64 = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["viewers"].as_u64().unwrap())
        .sum();
    assert_eq!(viewers, CAMERAS as u64);
    eprintln!(
        "{CAMERAS} <img> streams from another origin repainted, all on one HTTP/2 connection ({h2} TLS handshakes, all h2)"
    );
    drop(browser);
    app.shutdown().await;
}

/// camstream's own page over HTTPS: the page and its images come over
/// HTTP/2; the grid's WebSocket (wss://) over an HTTP/1.1 connection of its
/// own, since camstream does not offer WebSockets over HTTP/2 (RFC 8441)
/// and Chromium then opens one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grid_page_and_its_websocket_work_over_https() {
    const GRID: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    ca.write(dir.path(), "server");
    let cameras: String = (1..=GRID)
        .map(|i| {
            format!(
                "[[cameras]]\nid = \"cam{i}\"\nsource = \"test:ball?width=320&height=240&fps=10\"\nscale = 0.5\n"
            )
        })
        .collect();
    let config = dir.path().join("camstream.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[server.tls]\ncert = \"server.crt\"\nkey = \"server.key\"\n{cameras}"
        ),
    )
    .unwrap();
    let app = common::app::start_from_file(&config).await;
    let home = dir.path().join("home");
    trust_in_nss(&home, &ca);
    let browser = Browser::start_with_home(Some(&home)).await.unwrap();
    let page = browser
        .open(&format!("https://127.0.0.1:{}/", app.local_addr().port()))
        .await
        .unwrap();
    let frames =
        "[...document.querySelectorAll('#grid .tile img')].map((i) => Number(i.dataset.frames))";
    page.wait_for(
        &format!(
            "(() => {{ const imgs = [...document.querySelectorAll('#grid .tile img')];
                return imgs.length === {GRID} && imgs.every((i) => i.naturalWidth > 0 && Number(i.dataset.frames) > 0); }})()"
        ),
        frames,
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nchromium log:\n{}", browser.log()));
    let before = page.eval(frames).await.unwrap();
    page.wait_for(
        &format!(
            "(() => {{ const before = {before}; return {frames}.every((f, i) => f > before[i] + 3); }})()"
        ),
        frames,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let text = metrics(&ca, app.local_addr()).await;
    assert!(
        metric(&text, "camstream_tls_handshakes_total{protocol=\"h2\"}") >= 1,
        "{text}"
    );
    // The WebSocket's, and this request's.
    assert!(
        metric(
            &text,
            "camstream_tls_handshakes_total{protocol=\"http/1.1\"}"
        ) >= 2,
        "{text}"
    );
    drop(browser);
    app.shutdown().await;
}
