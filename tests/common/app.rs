//! Starting a real camstream server for a test: config from TOML text,
//! bound to 127.0.0.1 on a free port, and a small JSON client.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use camstream::{App, Config};
use serde_json::Value;

/// Starts camstream with `cameras` (TOML: `[defaults]` and `[[cameras]]`
/// tables) on a free loopback port. Relative `pipeline_file`s resolve in the
/// repository's pipelines/ directory.
pub async fn start(cameras: &str) -> App {
    start_with_server("", cameras).await
}

/// [`start`], with extra `[server]` settings (TOML lines).
pub async fn start_with_server(server: &str, cameras: &str) -> App {
    super::init();
    let text = format!("[server]\nlisten = \"127.0.0.1:0\"\n{server}\n{cameras}\n");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test.toml");
    let config = Config::parse(&text, Some(&path)).expect("test config parses");
    App::build(config).await.expect("server starts")
}

/// Starts camstream from a config file on disk, as `camstream --config`
/// does (the file should listen on 127.0.0.1:0).
pub async fn start_from_file(path: &Path) -> App {
    super::init();
    let config = Config::load(path)
        .expect("test config loads")
        .with_demo_if_empty();
    App::build(config).await.expect("server starts")
}

/// `http://127.0.0.1:PORT` of a running app.
pub fn base(app: &App) -> String {
    format!("http://{}", app.local_addr())
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// GET a URL; returns the status and the body parsed as JSON.
pub async fn get_json(url: &str) -> anyhow::Result<(u16, Value)> {
    let response = client()
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    let json =
        serde_json::from_str(&text).with_context(|| format!("GET {url}: not JSON: {text}"))?;
    Ok((status, json))
}

/// GET a URL; returns status, headers and body.
pub async fn get(url: &str) -> anyhow::Result<(u16, reqwest::header::HeaderMap, bytes::Bytes)> {
    let response = client()
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    Ok((status, headers, response.bytes().await?))
}

/// The camera's API object.
pub async fn camera(app: &App, id: &str) -> Value {
    let (status, json) = get_json(&format!("{}/api/cameras/{id}", base(app)))
        .await
        .expect("camera info");
    assert_eq!(status, 200, "{json}");
    json
}

/// Polls the camera's API object until `pred` holds, or fails after
/// `timeout` with the last object seen.
pub async fn wait_for_camera(
    app: &App,
    id: &str,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let info = camera(app, id).await;
        if pred(&info) {
            return Ok(info);
        }
        if Instant::now() > deadline {
            return Err(anyhow!(
                "camera {id}: {what} not reached within {timeout:?}; last: {info}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
