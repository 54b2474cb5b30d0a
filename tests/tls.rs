//! HTTPS and HTTP/2 against a live stream: curl over HTTP/2 and a hyper
//! HTTP/1.1 client both read valid multipart streams; an HTTP/2 stream
//! whose client stops reading is reset after the write timeout while the
//! other stream of the same connection keeps its full rate; the
//! certificate is swapped on reload with a viewer attached, and a bad one
//! is refused with the old one kept; every bad-certificate row of
//! docs/errors.md; the self-signed certificate and its pin; the
//! redirecting plain-HTTP listener; the front door's deadlines over TLS
//! (a silent client, a stalled HTTP/1.1 viewer); SIGHUP on the real
//! binary; h2c on plain HTTP.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use camstream::{App, Config};
use common::mjpeg::{MultipartParser, decode_jpeg};
use common::tls::{
    TestCa, file_fingerprint, get_http1, get_json, h2_body, h2_connect, h2_get, metric, metrics,
    peer_fingerprint, viewers, write_pair,
};
use tokio::io::AsyncReadExt;

const SMALL: &str = "test:ball?width=160&height=120&fps=10";
const PART_TIMEOUT: Duration = Duration::from_secs(20);

/// A config file in `dir` serving HTTPS with `dir/server.crt` and
/// `dir/server.key` (relative paths, as a user writes them).
fn write_config(dir: &Path, server: &str, tls: &str, cameras: &str) -> PathBuf {
    let path = dir.join("camstream.toml");
    std::fs::write(
        &path,
        format!("[server]\nlisten = \"127.0.0.1:0\"\n{server}\n[server.tls]\n{tls}\n{cameras}\n"),
    )
    .unwrap();
    path
}

const OWN_CERT: &str = "cert = \"server.crt\"\nkey = \"server.key\"\n";

fn camera(id: &str, source: &str) -> String {
    format!("[[cameras]]\nid = \"{id}\"\nsource = \"{source}\"\nalways_on = true\n")
}

async fn start(path: &Path) -> App {
    common::app::start_from_file(path).await
}

fn reread(path: &Path) -> Config {
    Config::load(path).unwrap().with_demo_if_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_http2_and_an_http1_client_get_valid_streams() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    ca.write(dir.path(), "server");
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    let path = write_config(dir.path(), "", OWN_CERT, &camera("a", SMALL));
    let app = start(&path).await;
    let addr = app.local_addr();

    // Debian's curl, over HTTP/2, trusting the test CA: runs for 3 s
    // (curl exits 28 at --max-time; the stream never ends by itself).
    let body = dir.path().join("body.bin");
    let output = tokio::process::Command::new("curl")
        .args(["--http2", "-sS", "--max-time", "3", "-o"])
        .arg(&body)
        .arg("--cacert")
        .arg(dir.path().join("ca.pem"))
        .args(["-w", "%{http_version} %{response_code} %{content_type}"])
        .arg(format!(
            "https://127.0.0.1:{}/api/cameras/a/stream.mjpeg",
            addr.port()
        ))
        .output()
        .await
        .expect("curl runs (scripts/install-deps.sh --test installs it)");
    let summary = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(28),
        "{summary} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        summary.starts_with("2 200 multipart/x-mixed-replace"),
        "{summary}"
    );
    let mut parser = MultipartParser::new("frame");
    parser.push(&std::fs::read(&body).unwrap());
    let mut parts = 0;
    while let Some(part) = parser.poll_part().unwrap() {
        decode_jpeg(&part.body).unwrap();
        parts += 1;
    }
    eprintln!("curl --http2: {parts} JPEG parts in 3 s");
    assert!(parts >= 3, "curl got {parts} parts");

    // HTTP/1.1 over TLS, with the HTTPS headers.
    let response = get_http1(&ca, addr, "/api/cameras/a/stream.mjpeg")
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(response.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(
        response.header("content-security-policy"),
        Some("frame-ancestors 'self'")
    );
    assert_eq!(response.header("strict-transport-security"), None);
    let mut stream = response.parts().unwrap();
    for _ in 0..3 {
        let part = stream.next_part(PART_TIMEOUT).await.unwrap();
        decode_jpeg(&part.body).unwrap();
    }

    let text = metrics(&ca, addr).await;
    assert!(metric(&text, "camstream_tls_handshakes_total{protocol=\"h2\"}") >= 1);
    assert!(
        metric(
            &text,
            "camstream_tls_handshakes_total{protocol=\"http/1.1\"}"
        ) >= 2
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_http2_stream_is_reset_while_its_neighbour_keeps_full_rate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    ca.write(dir.path(), "server");
    // Noise does not compress: ~150 KB frames at 30 fps, so the stalled
    // stream's window (64 KiB) fills within a frame.
    let path = write_config(
        dir.path(),
        "write_timeout_s = 3",
        OWN_CERT,
        "[[cameras]]\nid = \"noise\"\nsource = \"test:snow?width=640&height=480&fps=30\"\nscale = 1\nquality = 90\nalways_on = true\n",
    );
    let app = start(&path).await;
    let addr = app.local_addr();
    let url = "/api/cameras/noise/stream.mjpeg";

    // One connection, two streams; the client's connection window is
    // larger than a stream's, as browsers set it.
    let mut connection = h2_connect(&ca, addr, 65_535, 16 << 20).await.unwrap();
    let reading = h2_get(&mut connection, addr, url).await.unwrap();
    assert_eq!(reading.status(), 200);
    let mut reader = common::tls::Parts::new("frame", h2_body(reading.into_body()));
    reader.next_part(PART_TIMEOUT).await.unwrap();
    // The stalled stream: its window is never given back.
    let stalled = h2_get(&mut connection, addr, url).await.unwrap();
    assert_eq!(stalled.status(), 200);
    let mut stalled = stalled.into_body();
    assert_eq!(viewers(&ca, addr, "noise").await, 2);

    let frames_out = |json: serde_json::Value| json["frames_out"].as_u64().unwrap();
    let before = frames_out(get_json(&ca, addr, "/api/cameras/noise").await.unwrap().1);
    let start = Instant::now();
    let mut received = 0u64;
    let mut largest = 0;
    while start.elapsed() < Duration::from_secs(4) {
        let part = reader.next_part(Duration::from_secs(5)).await.unwrap();
        largest = largest.max(part.body.len());
        received += 1;
    }
    let encoded = frames_out(get_json(&ca, addr, "/api/cameras/noise").await.unwrap().1) - before;
    eprintln!(
        "HTTP/2: the reading stream got {received} of {encoded} frames (largest {largest} B) beside a stalled stream on the same connection"
    );
    assert!(
        largest > 65_535,
        "frames must outgrow the stream window: {largest}"
    );
    assert!(
        received * 10 >= encoded * 9,
        "the reading stream got {received} of {encoded} frames"
    );

    // After the write timeout the stalled stream is reset (CANCEL) and its
    // viewer released; the reading stream stays.
    let deadline = Instant::now() + Duration::from_secs(20);
    while viewers(&ca, addr, "noise").await != 1 {
        assert!(
            Instant::now() < deadline,
            "the stalled stream was not dropped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reset = loop {
        match tokio::time::timeout(Duration::from_secs(10), stalled.data()).await {
            Ok(Some(Ok(_buffered))) => continue,
            Ok(Some(Err(e))) => break e,
            other => panic!("the stalled stream was not reset: {other:?}"),
        }
    };
    assert_eq!(reset.reason(), Some(h2::Reason::CANCEL), "{reset}");
    reader.next_part(Duration::from_secs(5)).await.unwrap();
    let text = metrics(&ca, addr).await;
    assert_eq!(metric(&text, "camstream_http2_streams_stalled_total"), 1);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_the_certificate_for_new_handshakes_and_keeps_viewers() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (cert_path, key_path) = ca.write(dir.path(), "server");
    let first = file_fingerprint(&cert_path);
    let path = write_config(dir.path(), "", OWN_CERT, &camera("a", SMALL));
    let app = start(&path).await;
    let addr = app.local_addr();

    let mut connection = h2_connect(&ca, addr, 1 << 20, 16 << 20).await.unwrap();
    let response = h2_get(&mut connection, addr, "/api/cameras/a/stream.mjpeg")
        .await
        .unwrap();
    let mut viewer = common::tls::Parts::new("frame", h2_body(response.into_body()));
    viewer.next_part(PART_TIMEOUT).await.unwrap();
    let handshake = |_: ()| async { peer_fingerprint(&ca.connect(addr, &[b"h2"]).await.unwrap()) };
    assert_eq!(handshake(()).await, first);

    // A new certificate in the same files, then a reload (what SIGHUP
    // does: the one loader reads the file again).
    ca.write(dir.path(), "server");
    let second = file_fingerprint(&cert_path);
    assert_ne!(first, second);
    app.reload(reread(&path)).await;
    assert_eq!(handshake(()).await, second);
    let seen = viewer.received();
    viewer.next_part(PART_TIMEOUT).await.unwrap();
    viewer.next_part(PART_TIMEOUT).await.unwrap();
    assert!(viewer.received() > seen);

    // Bad certificates at reload are refused and the served one is kept:
    // a key that is not the certificate's, an expired certificate, a
    // missing file.
    let good_key = std::fs::read(&key_path).unwrap();
    let (other_cert, _) = ca.issue();
    std::fs::write(&cert_path, other_cert).unwrap();
    app.reload(reread(&path)).await;
    assert_eq!(handshake(()).await, second, "a mismatched key was taken");
    let (expired_cert, expired_key) = ca.issue_dated(&["127.0.0.1"], -30, -1);
    write_pair(dir.path(), "server", &expired_cert, &expired_key);
    app.reload(reread(&path)).await;
    assert_eq!(
        handshake(()).await,
        second,
        "an expired certificate was taken"
    );
    std::fs::remove_file(&cert_path).unwrap();
    app.reload(reread(&path)).await;
    assert_eq!(handshake(()).await, second, "a missing file was taken");
    drop(good_key);

    // The viewer was never disturbed, on its original connection.
    viewer.next_part(PART_TIMEOUT).await.unwrap();
    assert_eq!(viewers(&ca, addr, "a").await, 1);
    app.shutdown().await;
}

/// docs/errors.md, "TLS": each bad certificate stops camstream at start
/// with a message naming the file and the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificates_are_clear_errors_at_start() {
    let ca = TestCa::new();
    let (good_cert, good_key) = ca.issue();
    let (_, other_key) = ca.issue();
    let (expired_cert, expired_key) = ca.issue_dated(&["127.0.0.1"], -30, -1);
    let (future_cert, future_key) = ca.issue_dated(&["127.0.0.1"], 10, 30);
    // What, the certificate and key files written, [server.tls], and what
    // the error must say.
    type Case<'a> = (&'a str, Option<(&'a str, &'a str)>, &'a str, &'a [&'a str]);
    let cases: [Case; 7] = [
        (
            "missing files",
            None,
            OWN_CERT,
            &[
                "cannot read the TLS certificate file",
                "server.crt",
                "[server.tls] cert",
            ],
        ),
        (
            "not PEM",
            Some(("not a certificate", &good_key)),
            OWN_CERT,
            &["holds no PEM certificate"],
        ),
        (
            "no key in the key file",
            Some((&good_cert, "nothing here")),
            OWN_CERT,
            &["holds no PEM private key"],
        ),
        (
            "another certificate's key",
            Some((&good_cert, &other_key)),
            OWN_CERT,
            &["does not belong to the certificate", "server.key"],
        ),
        (
            "expired",
            Some((&expired_cert, &expired_key)),
            OWN_CERT,
            &["expired on", "renew it"],
        ),
        (
            "not yet valid",
            Some((&future_cert, &future_key)),
            OWN_CERT,
            &["is not valid before", "clock"],
        ),
        (
            "cert without key",
            None,
            "cert = \"server.crt\"\n",
            &["has cert but no key"],
        ),
    ];
    for (what, files, tls, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        if let Some((cert, key)) = files {
            write_pair(dir.path(), "server", cert, key);
        }
        let path = write_config(dir.path(), "", tls, "");
        let error = match Config::load(&path) {
            Err(e) => e.to_string(),
            Ok(config) => match App::build(config.with_demo_if_empty()).await {
                Ok(_) => panic!("{what}: camstream started"),
                Err(e) => format!("{e:#}"),
            },
        };
        for text in expected {
            assert!(error.contains(text), "{what}: {error}");
        }
        // `camstream check` finds the same, as an error line.
        if let Ok(config) = Config::load(&path) {
            let findings = camstream::cmds::check::check(&config);
            assert!(
                findings
                    .iter()
                    .any(|f| f.level == camstream::cmds::check::Level::Error
                        && f.message.contains(expected[0])),
                "{what}: check said {findings:?}"
            );
        }
        eprintln!("{what}: {error}");
    }
    // http_listen redirects to HTTPS, so it needs [server.tls].
    let error = Config::parse(
        "[server]\nhttp_listen = \"127.0.0.1:0\"\n",
        Some(Path::new("c.toml")),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("needs [server.tls]"), "{error}");
    // A self-signed certificate that cannot be stored (the config
    // directory is read-only, as in the container; /proc refuses new
    // files even to root).
    let mut tls = camstream::tls::TlsConfig {
        self_signed: true,
        ..Default::default()
    };
    tls.resolve(Path::new("/proc"));
    let error = camstream::tls::load(&tls).unwrap_err().to_string();
    assert!(
        error.contains("cannot store the self-signed certificate in /proc")
            && error.contains("camstream cert"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_certificate_is_made_once_and_can_be_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "",
        "self_signed = true\nnames = [\"cam.example\"]\n",
        &camera("a", SMALL),
    );
    // `camstream cert` makes it (as a first start would) and prints it.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_camstream"))
        .arg("cert")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{printed} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let cert_path = dir.path().join(camstream::tls::SELF_SIGNED_CERT);
    let fingerprint = file_fingerprint(&cert_path);
    assert!(printed.contains(&fingerprint), "{printed}");
    assert!(
        printed.contains(&cert_path.display().to_string()),
        "{printed}"
    );
    assert!(printed.contains("cam.example"), "{printed}");
    let pin = printed
        .lines()
        .find_map(|l| l.strip_prefix("public-key pin: "))
        .expect("a pin line")
        .to_string();

    // The server reuses it, and curl accepts it by its pin alone.
    let app = start(&path).await;
    let url = format!("https://127.0.0.1:{}/healthz", app.local_addr().port());
    let curl = |pin: String| {
        let url = url.clone();
        async move {
            tokio::process::Command::new("curl")
                .args([
                    "-sS",
                    "-k",
                    "--max-time",
                    "10",
                    "--pinnedpubkey",
                    &pin,
                    &url,
                ])
                .output()
                .await
                .unwrap()
        }
    };
    let pinned = curl(pin.clone()).await;
    assert!(
        pinned.status.success() && String::from_utf8_lossy(&pinned.stdout).contains("\"ok\""),
        "{pinned:?}"
    );
    let wrong = curl("sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into()).await;
    assert!(!wrong.status.success(), "a wrong pin was accepted");
    // The container's health check speaks HTTPS to it, trusting the
    // configured certificate file.
    let health = tokio::process::Command::new(env!("CARGO_BIN_EXE_camstream"))
        .arg("healthcheck")
        .arg("--config")
        .arg(&path)
        .arg("--listen")
        .arg(app.local_addr().to_string())
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&health.stdout).into_owned();
    assert!(
        health.status.success() && said.contains("https://"),
        "{said} {}",
        String::from_utf8_lossy(&health.stderr)
    );
    app.shutdown().await;
    let again = start(&path).await;
    assert_eq!(file_fingerprint(&cert_path), fingerprint, "not reused");
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_listen_redirects_to_https_and_both_doors_time_out_silent_clients() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    ca.write(dir.path(), "server");
    let path = write_config(
        dir.path(),
        "http_listen = \"127.0.0.1:0\"\nheader_timeout_s = 1\n",
        &format!("{OWN_CERT}hsts = true\n"),
        &camera("a", SMALL),
    );
    let app = start(&path).await;
    let https = app.local_addr();
    let http = app.redirect_addr().expect("the redirect listener");
    let me = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let get = common::raw::send(
        http,
        me,
        &common::raw::request("GET", "/api/cameras/a/stream.mjpeg?fps=2", &[], None),
    )
    .await
    .unwrap();
    assert_eq!(get.status, 301);
    // The same host (raw::request sends Host: test.local), the HTTPS port.
    assert_eq!(
        get.header("location"),
        Some(&*format!(
            "https://test.local:{}/api/cameras/a/stream.mjpeg?fps=2",
            https.port()
        ))
    );
    let post = common::raw::send(
        http,
        me,
        &common::raw::request("POST", "/api/cameras", &[], Some("{}")),
    )
    .await
    .unwrap();
    assert_eq!(post.status, 308);
    let health = common::raw::send(
        http,
        me,
        &common::raw::request("GET", "/healthz", &[], None),
    )
    .await
    .unwrap();
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");

    // HSTS on HTTPS once configured.
    let response = get_http1(&ca, https, "/healthz").await.unwrap();
    assert_eq!(
        response.header("strict-transport-security"),
        Some("max-age=31536000")
    );

    // A client that connects and says nothing, on either door: closed
    // after the header timeout (on HTTPS, the TLS handshake is bounded by
    // it), and counted.
    for addr in [http, https] {
        let mut silent = common::raw::connect_from(me, addr).await.unwrap();
        let opened = Instant::now();
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(15), silent.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0) | Err(_))),
            "{addr}: still open after 15 s: {closed:?}"
        );
        eprintln!(
            "silent client on {addr} closed after {:?}",
            opened.elapsed()
        );
    }
    let text = metrics(&ca, https).await;
    assert!(
        metric(&text, "camstream_connections_timed_out_total") >= 2,
        "{text}"
    );
    assert!(
        metric(&text, "camstream_tls_handshake_failures_total") >= 1,
        "{text}"
    );
    app.shutdown().await;
}

/// The real binary: SIGHUP re-reads the certificate with a viewer
/// attached, and a bad one is logged and the served one kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_of_the_running_binary() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (cert_path, key_path) = ca.write(dir.path(), "server");
    let port = common::free_port();
    let path = dir.path().join("camstream.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[server.tls]\n{OWN_CERT}\n{}",
            camera("a", SMALL)
        ),
    )
    .unwrap();
    let log = dir.path().join("stdout.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_camstream"))
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("CAMSTREAM_LISTEN")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Ok(stream) = ca.connect(addr, &[b"h2"]).await {
            break peer_fingerprint(&stream);
        }
        assert!(
            Instant::now() < deadline,
            "camstream did not start: {}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(first, file_fingerprint(&cert_path));
    assert!(
        logs().contains(&first),
        "the fingerprint is logged: {}",
        logs()
    );

    let mut connection = h2_connect(&ca, addr, 1 << 20, 16 << 20).await.unwrap();
    let response = h2_get(&mut connection, addr, "/api/cameras/a/stream.mjpeg")
        .await
        .unwrap();
    let mut viewer = common::tls::Parts::new("frame", h2_body(response.into_body()));
    viewer.next_part(PART_TIMEOUT).await.unwrap();

    let hup = |child: &std::process::Child| {
        assert!(
            std::process::Command::new("kill")
                .args(["-HUP", &child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
    };
    ca.write(dir.path(), "server");
    let second = file_fingerprint(&cert_path);
    hup(&child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while peer_fingerprint(&ca.connect(addr, &[b"h2"]).await.unwrap()) != second {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not swap the certificate: {}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(logs().contains("TLS certificate reloaded"), "{}", logs());

    // A key that is not the certificate's: logged, and the served one kept.
    let (_, other_key) = ca.issue();
    std::fs::write(&key_path, other_key).unwrap();
    hup(&child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !logs().contains("TLS certificate not reloaded, keeping the one being served") {
        assert!(
            Instant::now() < deadline,
            "no reload error logged: {}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        logs().contains("does not belong to the certificate"),
        "{}",
        logs()
    );
    assert_eq!(
        peer_fingerprint(&ca.connect(addr, &[b"h2"]).await.unwrap()),
        second
    );
    // The viewer streamed throughout, on its first connection.
    let seen = viewer.received();
    viewer.next_part(PART_TIMEOUT).await.unwrap();
    assert!(viewer.received() > seen);
    let _ = child.kill();
    let _ = child.wait();
}

/// Plain HTTP still speaks HTTP/2 to a client that starts with the
/// preface (h2c prior knowledge), through the same loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_serves_http2_with_prior_knowledge() {
    let app = common::app::start(&camera("a", SMALL)).await;
    let output = tokio::process::Command::new("curl")
        .args([
            "--http2-prior-knowledge",
            "-sS",
            "--max-time",
            "10",
            "-w",
            " %{http_version}",
        ])
        .arg(format!("http://{}/healthz", app.local_addr()))
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(said.contains("\"ok\"") && said.ends_with(" 2"), "{said}");
    app.shutdown().await;
}

/// Over TLS the front door's write timeout still holds: an HTTP/1.1
/// viewer that stops reading is dropped, as over plain TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_http1_viewer_over_tls_is_dropped_after_the_write_timeout() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    ca.write(dir.path(), "server");
    let path = write_config(
        dir.path(),
        "write_timeout_s = 2",
        OWN_CERT,
        "[[cameras]]\nid = \"noise\"\nsource = \"test:snow?width=640&height=480&fps=30\"\nscale = 1\nquality = 90\nalways_on = true\n",
    );
    let app = start(&path).await;
    let addr = app.local_addr();
    let mut stalled = ca.connect(addr, &[b"http/1.1"]).await.unwrap();
    stalled
        .write_all(b"GET /api/cameras/noise/stream.mjpeg HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 64];
    let n = stalled.read(&mut head).await.unwrap();
    assert!(
        head[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&head[..n])
    );
    assert_eq!(viewers(&ca, addr, "noise").await, 1);
    // Now it reads nothing more; ~4.5 MB/s of noise fills the socket
    // buffers within a second, then the write timeout runs.
    let deadline = Instant::now() + Duration::from_secs(20);
    while viewers(&ca, addr, "noise").await != 0 {
        assert!(
            Instant::now() < deadline,
            "the stalled TLS viewer was not dropped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(stalled);
    app.shutdown().await;
}

/// The server picks the cipher suite by its own CPU, not the client's
/// order: a rustls client lists AES-256-GCM first, and still gets
/// AES-128-GCM (AES instructions here) or ChaCha20 (none), the cheaper
/// ones to encrypt every viewer's frames with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_chooses_the_cipher_suite_cheapest_for_its_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    ca.write(dir.path(), "server");
    let path = write_config(dir.path(), "", OWN_CERT, &camera("a", SMALL));
    let app = start(&path).await;
    let client_first = ca.client_config(&[b"h2"]).crypto_provider().cipher_suites[0].suite();
    assert_eq!(client_first, rustls::CipherSuite::TLS13_AES_256_GCM_SHA384);
    let stream = ca.connect(app.local_addr(), &[b"h2"]).await.unwrap();
    let chosen = stream
        .get_ref()
        .1
        .negotiated_cipher_suite()
        .unwrap()
        .suite();
    assert!(
        matches!(
            chosen,
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
        ),
        "the client's first choice won: {chosen:?}"
    );
    app.shutdown().await;
}
