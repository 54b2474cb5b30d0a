//! The relay tier (docs/scaling.md), on loopback: an edge camstream with
//! four cameras, two camstream relays with the edge as their upstream, and
//! Debian's nginx in front with the shipped relay configuration
//! (deploy/nginx/camstream-relays.conf). 200 viewers through nginx get
//! frames of the edge's size while the edge serves at most two connections
//! per camera; a relay killed moves its viewers to the other; the edge
//! going down and up shows placeholders, then live frames. Also: the
//! camera list follows the edge, and every `[[upstreams]]` error of
//! docs/errors.md.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use camstream::{App, Config};
use common::free_port;
use common::mjpeg::{MjpegStream, decode_jpeg};
use common::nginx::Nginx;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The edge's view token, given to the relays.
const TOKEN: &str = "relay-view-token-0123456789";
const CAMERAS: [&str; 4] = ["a", "b", "c", "d"];
/// Small frames at a modest rate: 200 viewers stay affordable on a 2-core
/// CI machine.
const WIDTH: u32 = 160;
const HEIGHT: u32 = 120;
const FPS: u32 = 15;
const VIEWERS: usize = 200;
/// Generous: a loaded machine, debug builds.
const DEADLINE: Duration = Duration::from_secs(90);

fn edge_text(port: u16, cameras: &[&str]) -> String {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[server.auth]\nview_tokens = [\"{TOKEN}\"]\n\
         [defaults]\nscale = 1\n"
    );
    for id in cameras {
        text.push_str(&format!(
            "[[cameras]]\nid = \"{id}\"\nsource = \"test:ball?width={WIDTH}&height={HEIGHT}&fps={FPS}\"\n"
        ));
    }
    text
}

async fn start_edge(port: u16, cameras: &[&str]) -> App {
    common::init();
    let config = Config::parse(&edge_text(port, cameras), None).expect("edge config");
    App::build(config).await.expect("edge starts")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// GET /api/cameras, with the token if given.
async fn cameras(addr: SocketAddr, token: Option<&str>) -> anyhow::Result<Vec<Value>> {
    let mut request = client().get(format!("http://{addr}/api/cameras"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    anyhow::ensure!(response.status() == 200, "{}", response.status());
    Ok(serde_json::from_str(&response.text().await?)?)
}

/// Viewers of each camera, by id.
async fn viewer_counts(addr: SocketAddr, token: Option<&str>) -> HashMap<String, u64> {
    cameras(addr, token)
        .await
        .unwrap_or_default()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap_or_default().to_string(),
                c["viewers"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// A camstream relay, as a process of its own (so it can be killed).
struct Relay {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Relay {
    fn start(dir: &Path, name: &str, edge: SocketAddr) -> Relay {
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        std::fs::write(dir.join(format!("{name}.token")), format!("{TOKEN}\n")).unwrap();
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"{addr}\"\n\n[[upstreams]]\nname = \"edge\"\n\
                 url = \"http://{edge}\"\ntoken_file = \"{name}.token\"\nrefresh_s = 1\n"
            ),
        )
        .unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_camstream"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .expect("camstream runs");
        Relay { child, addr, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls until `check` returns Ok, or fails with its last error.
async fn until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> anyhow::Result<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(e) if Instant::now() > deadline => {
                panic!("{what}: not within {timeout:?}: {e:#}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// What one viewer got so far.
#[derive(Default)]
struct Seen {
    live: AtomicU64,
    placeholders: AtomicU64,
    /// Live frames not WIDTHxHEIGHT.
    wrong_size: AtomicU64,
    connections: AtomicU64,
}

/// A viewer through nginx: reads parts, and reconnects (as a browser's
/// page would) whenever its stream ends.
async fn view(url: String, seen: Arc<Seen>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        if let Ok(mut stream) = MjpegStream::connect(&url).await {
            seen.connections.fetch_add(1, Ordering::Relaxed);
            let mut decoded = false;
            loop {
                let part = tokio::select! {
                    _ = stop.cancelled() => return,
                    part = stream.next_part_timeout(Duration::from_secs(10)) => part,
                };
                let Ok(part) = part else { break };
                if part.header("x-camstream-frame") == Some("placeholder") {
                    seen.placeholders.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let size = camstream::jpeg::read_header(&part.body)
                    .map(|h| (h.width, h.height))
                    .ok();
                // One full decode per connection: the bytes are a real
                // JPEG, not just a header.
                if !decoded {
                    decoded = decode_jpeg(&part.body).is_ok();
                }
                if size != Some((WIDTH, HEIGHT)) || !decoded {
                    seen.wrong_size.fetch_add(1, Ordering::Relaxed);
                }
                seen.live.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn totals(seen: &[Arc<Seen>], pick: impl Fn(&Seen) -> u64) -> Vec<u64> {
    seen.iter().map(|s| pick(s)).collect()
}

/// Waits until every viewer's counter has grown by at least `by` since
/// `before`.
async fn every_viewer(
    what: &str,
    seen: &[Arc<Seen>],
    before: &[u64],
    by: u64,
    pick: impl Fn(&Seen) -> u64,
) {
    let pick = &pick;
    until(what, DEADLINE, async || {
        let now = totals(seen, pick);
        let behind = now
            .iter()
            .zip(before)
            .filter(|(n, b)| **n < **b + by)
            .count();
        if behind == 0 {
            Ok(())
        } else {
            Err(anyhow!("{behind} of {} viewers not yet", seen.len()))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_viewers_through_nginx_and_two_relays_cost_the_edge_one_pull_per_camera() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let edge_port = free_port();
    let mut edge = start_edge(edge_port, &CAMERAS).await;
    let edge_addr = edge.local_addr();
    let mut relays = [
        Relay::start(dir.path(), "relay-1", edge_addr),
        Relay::start(dir.path(), "relay-2", edge_addr),
    ];
    for relay in &relays {
        until("the relay lists the edge's cameras", DEADLINE, async || {
            let ids: Vec<String> = cameras(relay.addr, None)
                .await?
                .iter()
                .map(|c| c["id"].as_str().unwrap_or_default().to_string())
                .collect();
            let want: Vec<String> = CAMERAS.iter().map(|c| format!("edge.{c}")).collect();
            anyhow::ensure!(ids == want, "{ids:?}\n{}", relay.log());
            Ok(())
        })
        .await;
    }
    let nginx_dir = dir.path().join("nginx");
    std::fs::create_dir(&nginx_dir).unwrap();
    let nginx = Nginx::start_relays(&nginx_dir, &[relays[0].addr, relays[1].addr]).unwrap();

    // The edge's connections per camera, watched for the whole test.
    let stop = CancellationToken::new();
    let most = Arc::new(std::sync::Mutex::new(HashMap::<String, u64>::new()));
    let monitor = tokio::spawn({
        let (stop, most) = (stop.clone(), Arc::clone(&most));
        async move {
            while !stop.is_cancelled() {
                for (id, n) in viewer_counts(edge_addr, Some(TOKEN)).await {
                    let mut most = most.lock().unwrap();
                    let max = most.entry(id).or_default();
                    *max = (*max).max(n);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });

    let seen: Vec<Arc<Seen>> = (0..VIEWERS).map(|_| Arc::default()).collect();
    let viewers: Vec<_> = seen
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let url = format!(
                "http://{}/api/cameras/edge.{}/stream.mjpeg",
                nginx.addr(),
                CAMERAS[i % CAMERAS.len()]
            );
            tokio::spawn(view(url, Arc::clone(s), stop.clone()))
        })
        .collect();

    // 1. Every viewer streams, at the edge's size, at a sane rate.
    let zero = vec![0; VIEWERS];
    every_viewer("every viewer gets live frames", &seen, &zero, 10, |s| {
        s.live.load(Ordering::Relaxed)
    })
    .await;
    let before = totals(&seen, |s| s.live.load(Ordering::Relaxed));
    let window = Duration::from_secs(4);
    tokio::time::sleep(window).await;
    let after = totals(&seen, |s| s.live.load(Ordering::Relaxed));
    let rates: Vec<f64> = after
        .iter()
        .zip(&before)
        .map(|(a, b)| (a - b) as f64 / window.as_secs_f64())
        .collect();
    let slowest = rates.iter().cloned().fold(f64::MAX, f64::min);
    let mean = rates.iter().sum::<f64>() / rates.len() as f64;
    eprintln!(
        "{VIEWERS} viewers through nginx: mean {mean:.1} fps, slowest {slowest:.1} fps (camera {FPS} fps)"
    );
    // A quarter of the camera's rate: the point is that nobody starves,
    // not a speed figure (benches/load measures those).
    assert!(
        slowest >= FPS as f64 / 4.0,
        "a viewer got {slowest:.1} fps, the camera sends {FPS}"
    );
    let counts = [
        viewer_counts(relays[0].addr, None).await,
        viewer_counts(relays[1].addr, None).await,
    ];
    let per_relay: Vec<u64> = counts.iter().map(|c| c.values().sum()).collect();
    eprintln!("viewers per relay: {per_relay:?}; per camera: {counts:?}");
    // nginx hashes by camera: each camera's viewers are on one relay.
    for id in CAMERAS {
        let id = format!("edge.{id}");
        let on = counts
            .iter()
            .filter(|c| c.get(&id).copied().unwrap_or(0) > 0)
            .count();
        assert_eq!(on, 1, "{id} is served by {on} relays: {counts:?}");
    }

    // 2. The busiest relay is killed: its viewers reconnect through nginx
    //    and stream from the other.
    let busiest = usize::from(per_relay[1] > per_relay[0]);
    relays[busiest].kill();
    let survivor = &relays[1 - busiest];
    let before = totals(&seen, |s| s.live.load(Ordering::Relaxed));
    every_viewer(
        "every viewer streams again after a relay was killed",
        &seen,
        &before,
        10,
        |s| s.live.load(Ordering::Relaxed),
    )
    .await;
    let on_survivor: u64 = viewer_counts(survivor.addr, None).await.values().sum();
    assert_eq!(
        on_survivor, VIEWERS as u64,
        "every viewer is on the relay left"
    );
    let reconnected = seen
        .iter()
        .filter(|s| s.connections.load(Ordering::Relaxed) > 1)
        .count();
    eprintln!(
        "relay {} killed: {reconnected} viewers reconnected to the other",
        busiest + 1
    );
    assert!(reconnected as u64 >= per_relay[busiest]);

    // 3. The edge goes down: viewers see placeholders; it comes back: live
    //    frames again, by themselves.
    edge.shutdown().await;
    let before = totals(&seen, |s| s.placeholders.load(Ordering::Relaxed));
    every_viewer(
        "every viewer sees the placeholder while the edge is down",
        &seen,
        &before,
        2,
        |s| s.placeholders.load(Ordering::Relaxed),
    )
    .await;
    let down: Vec<Value> = cameras(survivor.addr, None).await.unwrap();
    for camera in &down {
        let error = camera["last_error"].as_str().unwrap_or_default();
        assert!(
            error.contains("upstream edge") && !error.contains(TOKEN),
            "{camera}"
        );
    }
    edge = start_edge(edge_port, &CAMERAS).await;
    let before = totals(&seen, |s| s.live.load(Ordering::Relaxed));
    every_viewer(
        "every viewer streams live again once the edge is back",
        &seen,
        &before,
        10,
        |s| s.live.load(Ordering::Relaxed),
    )
    .await;

    stop.cancel();
    for viewer in viewers {
        viewer.await.unwrap();
    }
    monitor.await.unwrap();
    let most = most.lock().unwrap().clone();
    eprintln!("the edge's most connections per camera: {most:?}");
    for id in CAMERAS {
        let n = most.get(id).copied().unwrap_or(0);
        assert!(
            (1..=2).contains(&n),
            "the edge served camera {id} to {n} connections at once"
        );
    }
    let wrong: u64 = totals(&seen, |s| s.wrong_size.load(Ordering::Relaxed))
        .iter()
        .sum();
    assert_eq!(wrong, 0, "live frames not {WIDTH}x{HEIGHT}");
    let log = survivor.log();
    assert!(!log.contains(TOKEN), "the token is in the relay's log");
    drop(nginx);
    edge.shutdown().await;
    eprintln!("relay tier test took {:?}", started.elapsed());
}

/// A relay in this process, with `[[upstreams]]` lines `upstream`.
async fn start_relay(upstream: &str) -> App {
    common::init();
    let text =
        format!("[server]\nlisten = \"127.0.0.1:0\"\n[defaults]\nidle_timeout_s = 1\n{upstream}");
    let config = Config::parse(&text, None).expect("relay config");
    App::build(config.with_demo_if_empty())
        .await
        .expect("relay starts")
}

fn upstream(edge: SocketAddr, token: &str) -> String {
    format!(
        "[[upstreams]]\nname = \"edge\"\nurl = \"http://{edge}\"\ntoken = \"{token}\"\nrefresh_s = 1\n"
    )
}

async fn ids(app: &App) -> Vec<String> {
    let mut ids: Vec<String> = app
        .cameras()
        .all()
        .iter()
        .map(|c| c.id().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_camera_list_follows_the_edge_and_outlives_its_outages() {
    let edge_port = free_port();
    let edge = start_edge(edge_port, &["a", "b"]).await;
    let relay = start_relay(&upstream(edge.local_addr(), TOKEN)).await;
    until("the relay lists the edge's cameras", DEADLINE, async || {
        let ids = ids(&relay).await;
        anyhow::ensure!(ids == ["edge.a", "edge.b"], "{ids:?}");
        Ok(())
    })
    .await;
    // A relay serves its upstreams' cameras: no demo camera.
    assert!(relay.cameras().get("demo").is_none());

    // Cameras added and removed on the edge appear and disappear.
    let config = Config::parse(&edge_text(edge_port, &["a", "c"]), None).unwrap();
    edge.reload(config).await;
    until("the relay follows the edge's list", DEADLINE, async || {
        let ids = ids(&relay).await;
        anyhow::ensure!(ids == ["edge.a", "edge.c"], "{ids:?}");
        Ok(())
    })
    .await;

    // The edge down: the last list is kept.
    edge.shutdown().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ids(&relay).await, ["edge.a", "edge.c"]);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_a_clear_error_and_shown_nowhere() {
    let logs = common::logs::capture();
    let edge_port = free_port();
    let edge = start_edge(edge_port, &["a"]).await;
    let relay = start_relay(&upstream(edge.local_addr(), TOKEN)).await;
    let base = common::app::base(&relay);
    until("the relay lists edge.a", DEADLINE, async || {
        anyhow::ensure!(relay.cameras().get("edge.a").is_some());
        Ok(())
    })
    .await;
    let mut viewer = MjpegStream::connect(&format!("{base}/api/cameras/edge.a/stream.mjpeg"))
        .await
        .unwrap();
    let part = viewer
        .next_part_timeout(Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(part.header("x-camstream-frame"), None);

    // The edge comes back with other tokens: the relay's is refused.
    edge.shutdown().await;
    let text = edge_text(edge_port, &["a"]).replace(TOKEN, "another-view-token-0123456789");
    let edge = App::build(Config::parse(&text, None).unwrap())
        .await
        .unwrap();
    let info = common::app::wait_for_camera(&relay, "edge.a", DEADLINE, "the token refused", |c| {
        c["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("upstream edge refused the token (401)"))
    })
    .await
    .unwrap();
    assert_eq!(info["state"], "reconnecting", "{info}");
    assert_eq!(info["kind"], "relay", "{info}");
    // The viewer is still there, shown the placeholder.
    until("a placeholder", DEADLINE, async || {
        let part = viewer.next_part_timeout(Duration::from_secs(5)).await?;
        anyhow::ensure!(part.header("x-camstream-frame") == Some("placeholder"));
        Ok(())
    })
    .await;
    for path in ["/api/cameras", "/api/cameras/edge.a", "/metrics"] {
        let (status, _, body) = common::app::get(&format!("{base}{path}")).await.unwrap();
        assert_eq!(status, 200, "{path}");
        assert!(
            !String::from_utf8_lossy(&body).contains(TOKEN),
            "{path} shows the token"
        );
    }
    assert!(!logs.text().contains(TOKEN), "a log line shows the token");
    assert!(
        logs.text().contains("refused the token"),
        "the refusal is logged"
    );
    drop(viewer);
    relay.shutdown().await;
    edge.shutdown().await;
}

/// An edge over HTTPS with a self-signed certificate, trusted by its
/// fingerprint or as a CA file; a wrong fingerprint is refused, clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_edge_is_trusted_by_fingerprint_or_ca_file() {
    common::init();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    let text = edge_text(0, &["a"]).replace(
        "[server.auth]",
        "[server.tls]\nself_signed = true\n[server.auth]",
    );
    std::fs::write(&path, &text).unwrap();
    let edge = App::build(Config::load(&path).unwrap()).await.unwrap();
    let cert = dir.path().join(camstream::tls::SELF_SIGNED_CERT);
    let pem = std::fs::read(&cert).unwrap();
    let der = {
        use rustls::pki_types::pem::PemObject as _;
        rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap()
    };
    let fingerprint = camstream::tls::fingerprint(&der);
    let url = format!("https://127.0.0.1:{}", edge.local_addr().port());
    for (trust, expect) in [
        (format!("fingerprint = \"sha256:{fingerprint}\""), None),
        (format!("ca = \"{}\"", cert.display()), None),
        (
            format!("fingerprint = \"{}\"", "00".repeat(32)),
            Some("not the one with the configured fingerprint"),
        ),
    ] {
        let upstream_text = format!(
            "[[upstreams]]\nname = \"edge\"\nurl = \"{url}\"\ntoken = \"{TOKEN}\"\n{trust}\n"
        );
        if let Some(expect) = expect {
            let config = Config::parse(&upstream_text, None).unwrap();
            let error = camstream::upstream::fetch_list(&config.upstreams[0])
                .await
                .unwrap_err()
                .to_string();
            assert!(error.contains(expect), "{error}");
            continue;
        }
        let relay = start_relay(&upstream_text).await;
        until("the relay lists edge.a over HTTPS", DEADLINE, async || {
            anyhow::ensure!(relay.cameras().get("edge.a").is_some());
            Ok(())
        })
        .await;
        let mut viewer = MjpegStream::connect(&format!(
            "{}/api/cameras/edge.a/stream.mjpeg",
            common::app::base(&relay)
        ))
        .await
        .unwrap();
        let part = viewer
            .next_part_timeout(Duration::from_secs(20))
            .await
            .unwrap();
        decode_jpeg(&part.body).unwrap();
        drop(viewer);
        relay.shutdown().await;
    }
    edge.shutdown().await;
}

/// A plain web server, not a camstream: answers every request with a page.
async fn web_page_server() -> SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let body = "<html>a router's login page</html>";
                let _ = socket
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    addr
}

/// The runtime rows of docs/errors.md not met above: a camera gone
/// upstream, and a url that is not a camstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_name_the_upstream_and_the_fix() {
    let edge = start_edge(0, &["a"]).await;
    let config = Config::parse(&upstream(edge.local_addr(), TOKEN), None).unwrap();
    let relay = camstream::upstream::RelaySource {
        upstream: Arc::clone(&config.upstreams[0]),
        camera: "gone".into(),
    };
    let error = camstream::upstream::pull(&relay, None, |_| {}, || {})
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "upstream edge has no camera gone (404): it was removed there"
    );

    let page = web_page_server().await;
    let config = Config::parse(&upstream(page, TOKEN), None).unwrap();
    let error = camstream::upstream::fetch_list(&config.upstreams[0])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(
            "upstream edge: the camera list: not the JSON of camstream's GET /api/cameras"
        ) && error.ends_with("is the url another camstream?"),
        "{error}"
    );
    assert!(!error.contains(TOKEN), "{error}");
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_camera_is_changed_on_its_upstream_not_here() {
    common::init();
    let edge = start_edge(0, &["a"]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    let admin = "relay-admin-token-0123456789";
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[server.auth]\ntokens = [\"{admin}\"]\n\n{}",
            upstream(edge.local_addr(), TOKEN)
        ),
    )
    .unwrap();
    let relay = App::build(Config::load(&path).unwrap()).await.unwrap();
    until("the relay lists edge.a", DEADLINE, async || {
        anyhow::ensure!(relay.cameras().get("edge.a").is_some());
        Ok(())
    })
    .await;
    let url = format!("{}/api/cameras/edge.a", common::app::base(&relay));
    for request in [
        client()
            .put(&url)
            .json(&serde_json::json!({"source": "test:"})),
        client().delete(&url),
    ] {
        let response = request.bearer_auth(admin).send().await.unwrap();
        assert_eq!(response.status(), 409);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "relayed_camera", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|e| e.contains("relayed from an upstream camstream")),
            "{body}"
        );
    }
    assert!(relay.cameras().get("edge.a").is_some());
    relay.shutdown().await;
    edge.shutdown().await;
}

/// A relayed camera pulls from the edge only while it has viewers here,
/// and stops `idle_timeout_s` (1 s here) after the last one leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pull_runs_only_while_someone_watches() {
    let edge = start_edge(0, &["a"]).await;
    let relay = start_relay(&upstream(edge.local_addr(), TOKEN)).await;
    until("the relay lists edge.a", DEADLINE, async || {
        anyhow::ensure!(relay.cameras().get("edge.a").is_some());
        Ok(())
    })
    .await;
    let edge_viewers = async || {
        viewer_counts(edge.local_addr(), Some(TOKEN))
            .await
            .get("a")
            .copied()
            .unwrap_or(0)
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(edge_viewers().await, 0, "pulled with nobody watching");
    let mut viewer = MjpegStream::connect(&format!(
        "{}/api/cameras/edge.a/stream.mjpeg",
        common::app::base(&relay)
    ))
    .await
    .unwrap();
    viewer
        .next_part_timeout(Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(edge_viewers().await, 1);
    drop(viewer);
    until(
        "the pull stops after the idle timeout",
        DEADLINE,
        async || {
            let n = edge_viewers().await;
            anyhow::ensure!(n == 0, "{n} connections at the edge");
            Ok(())
        },
    )
    .await;
    let info = common::app::camera(&relay, "edge.a").await;
    assert_eq!(info["state"], "idle", "{info}");
    relay.shutdown().await;
    edge.shutdown().await;
}

/// Each size of an edge camera is relayed as it is: a viewer of
/// `?size=thumb` on the relay gets the edge's thumb frames, pulled with
/// `?size=thumb`, beside the default size's pull; while the edge is down
/// each size's viewers get a placeholder of their own size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_size_of_an_edge_camera_is_relayed_at_its_size() {
    common::init();
    let edge_port = free_port();
    // `[defaults]` once, with its sizes table after its keys.
    let text = |port: u16| {
        edge_text(port, &["a"]).replace(
            "[defaults]\nscale = 1\n",
            "[defaults]\nscale = 1\n[defaults.sizes]\nthumb = { scale = 0.5, quality = 60 }\n",
        )
    };
    let edge = App::build(Config::parse(&text(edge_port), None).unwrap())
        .await
        .unwrap();
    let relay = start_relay(&upstream(edge.local_addr(), TOKEN)).await;
    let base = common::app::base(&relay);
    let info = until(
        "the relay lists edge.a with its sizes",
        DEADLINE,
        async || {
            let camera = relay.cameras().get("edge.a").ok_or(anyhow!("not listed"))?;
            let info = serde_json::to_value(camera.info())?;
            let sizes: Vec<&str> = info["sizes"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|s| s["name"].as_str())
                .collect();
            anyhow::ensure!(sizes == ["default", "thumb"], "{sizes:?}");
            Ok(info)
        },
    )
    .await;
    assert_eq!(info["kind"], "relay", "{info}");

    let size_of = |part: &common::mjpeg::Part| {
        camstream::jpeg::read_header(&part.body)
            .map(|h| (h.width, h.height))
            .unwrap()
    };
    let mut thumb = MjpegStream::connect(&format!(
        "{base}/api/cameras/edge.a/stream.mjpeg?size=thumb"
    ))
    .await
    .unwrap();
    let mut full = MjpegStream::connect(&format!("{base}/api/cameras/edge.a/stream.mjpeg"))
        .await
        .unwrap();
    for _ in 0..3 {
        let part = thumb
            .next_part_timeout(Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(size_of(&part), (WIDTH / 2, HEIGHT / 2));
        let part = full
            .next_part_timeout(Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(size_of(&part), (WIDTH, HEIGHT));
    }
    // No `full` on a relay: it would need a decode here.
    let (status, _, body) =
        common::app::get(&format!("{base}/api/cameras/edge.a/snapshot.jpg?size=full"))
            .await
            .unwrap();
    assert_eq!(status, 400);
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("unknown_size") && body.contains("its sizes are default, thumb\""),
        "{body}"
    );
    let (status, headers, _) = common::app::get(&format!(
        "{base}/api/cameras/edge.a/snapshot.jpg?size=thumb"
    ))
    .await
    .unwrap();
    assert_eq!(
        (status, headers["content-type"].to_str().unwrap()),
        (200, "image/jpeg")
    );
    // The edge serves one stream per size, to the relay.
    let edge_info = until("one pull per size at the edge", DEADLINE, async || {
        let cameras = cameras(edge.local_addr(), Some(TOKEN)).await?;
        let viewers: Vec<(String, u64)> = cameras[0]["sizes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap_or_default().to_string(),
                    s["viewers"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        anyhow::ensure!(
            viewers
                == [
                    ("default".into(), 1),
                    ("thumb".into(), 1),
                    ("full".into(), 0)
                ],
            "{viewers:?}"
        );
        Ok(viewers)
    })
    .await;
    eprintln!("the edge's viewers per size: {edge_info:?}");

    // The edge down: a placeholder of each viewer's own size.
    edge.shutdown().await;
    for (stream, size) in [
        (&mut thumb, (WIDTH / 2, HEIGHT / 2)),
        (&mut full, (WIDTH, HEIGHT)),
    ] {
        until("a placeholder", DEADLINE, async || {
            let part = stream.next_part_timeout(Duration::from_secs(5)).await?;
            anyhow::ensure!(part.header("x-camstream-frame") == Some("placeholder"));
            anyhow::ensure!(size_of(&part) == size, "{:?}", size_of(&part));
            Ok(())
        })
        .await;
    }
    relay.shutdown().await;
}

/// `camstream check` on a relay's config: the upstream listed, no demo
/// camera, the token nowhere (as scripts/validate-k8s.sh runs it).
#[test]
fn camstream_check_lists_a_relays_upstreams() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("edge.token"), format!("{TOKEN}\n")).unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(
        &path,
        "[[upstreams]]\nname = \"edge-1\"\nurl = \"https://edge-1.example:8000\"\ntoken_file = \"edge.token\"\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_camstream"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains(
            "upstream edge-1: https://edge-1.example:8000, its cameras served as edge-1.<camera id>"
        ),
        "{text}"
    );
    assert!(
        text.contains("0 camera(s) and 1 upstream(s), 0 error(s)"),
        "{text}"
    );
    assert!(!text.contains("demo"), "{text}");
    assert!(!text.contains(TOKEN), "{text}");
}
