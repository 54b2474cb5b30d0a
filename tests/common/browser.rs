//! Headless Chromium driven over the DevTools protocol (CDP): start
//! Debian's `chromium` with a fresh profile, open a page, evaluate
//! JavaScript in it, take screenshots.
//!
//! CDP over one WebSocket needs nothing but the browser itself: no
//! chromedriver version to match, no download. Only the few commands the
//! tests use are wrapped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// Chromium writes its DevTools port to a file in the profile within a
/// second or two; allow for a slow, shared CI machine.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// One CDP command; navigation and screenshots are the slow ones.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The flags CI uses: headless, no sandbox (root in a container), and
/// nothing that phones home or runs in the background.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-default-apps",
    "--mute-audio",
    "--remote-debugging-port=0",
    "--window-size=1280,1000",
];

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;
/// What to answer an HTTP authentication prompt with.
type Credentials = Arc<Mutex<Option<(String, String)>>>;
/// Ids of commands sent by the event loop, whose replies nobody waits for;
/// far from the ids of [`Browser::call`] and within the 32-bit integers
/// CDP accepts.
const EVENT_REPLY_IDS: u64 = 1_000_000_000;

/// A running headless Chromium; killed on drop.
pub struct Browser {
    child: Child,
    profile: tempfile::TempDir,
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    next_id: AtomicU64,
    credentials: Credentials,
}

impl Browser {
    /// Starts `chromium` (or `$CHROMIUM`) with a fresh profile.
    pub async fn start() -> anyhow::Result<Browser> {
        Browser::start_with_home(None).await
    }

    /// [`Browser::start`] with `$HOME` set to `home`: Chromium on Linux
    /// trusts the certificate authorities in `$HOME/.pki/nssdb`.
    pub async fn start_with_home(home: Option<&Path>) -> anyhow::Result<Browser> {
        let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into());
        let profile = tempfile::tempdir()?;
        let log = std::fs::File::create(profile.path().join("chromium.log"))?;
        let mut command = Command::new(&binary);
        if let Some(home) = home {
            command.env("HOME", home);
        }
        let child = command
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!("cannot start {binary}: install it with scripts/install-deps.sh --test (Debian package chromium)")
            })?;
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let ws_url = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break format!("ws://127.0.0.1:{port}{path}");
                }
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(profile.path().join("chromium.log"))
                    .unwrap_or_default();
                bail!("chromium did not open its DevTools port within {STARTUP_TIMEOUT:?}:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (socket, _) = tokio_tungstenite::connect_async(&ws_url)
            .await
            .with_context(|| format!("connect to {ws_url}"))?;
        let (mut sink, mut source) = socket.split();
        let (out, mut outgoing) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(message) = outgoing.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
        });
        let pending: Pending = Arc::default();
        let replies = Arc::clone(&pending);
        let credentials: Credentials = Arc::default();
        let answer = Arc::clone(&credentials);
        let events_out = out.clone();
        tokio::spawn(async move {
            let mut event_id = EVENT_REPLY_IDS;
            while let Some(Ok(message)) = source.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                // Events have no id: the only ones acted on are those of
                // the Fetch domain, which is on only while a page answers
                // authentication prompts (see Page::sign_in).
                let Some(id) = value.get("id").and_then(Value::as_u64) else {
                    let reply = match value["method"].as_str() {
                        Some("Fetch.authRequired") => {
                            let (user, pass) = answer.lock().unwrap().clone().unwrap_or_default();
                            json!({ "method": "Fetch.continueWithAuth", "params": {
                                "requestId": value["params"]["requestId"],
                                "authChallengeResponse": {
                                    "response": "ProvideCredentials", "username": user, "password": pass,
                                },
                            }})
                        }
                        Some("Fetch.requestPaused") => json!({
                            "method": "Fetch.continueRequest",
                            "params": { "requestId": value["params"]["requestId"] },
                        }),
                        _ => continue,
                    };
                    let mut reply = reply;
                    event_id += 1;
                    reply["id"] = json!(event_id);
                    reply["sessionId"] = value["sessionId"].clone();
                    let _ = events_out.send(Message::Text(reply.to_string().into()));
                    continue;
                };
                let Some(reply) = replies.lock().unwrap().remove(&id) else {
                    continue;
                };
                let result = match value.get("error") {
                    Some(error) => Err(error.to_string()),
                    None => Ok(value.get("result").cloned().unwrap_or(Value::Null)),
                };
                let _ = reply.send(result);
            }
        });
        Ok(Browser {
            child,
            profile,
            out,
            pending,
            next_id: AtomicU64::new(1),
            credentials,
        })
    }

    /// Sends one CDP command (to a page when `session` is given) and waits
    /// for its result.
    async fn call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> anyhow::Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        self.out
            .send(Message::Text(message.to_string().into()))
            .map_err(|_| anyhow!("the DevTools connection is closed"))?;
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(error))) => bail!("{method}: {error}"),
            Ok(Err(_)) => bail!("{method}: the DevTools connection closed"),
            Err(_) => bail!("{method}: no reply within {CALL_TIMEOUT:?}"),
        }
    }

    /// Opens a new tab at `url`.
    pub async fn open(&self, url: &str) -> anyhow::Result<Page<'_>> {
        self.open_with(url, None).await
    }

    /// Opens a new tab at `url`, answering HTTP authentication prompts
    /// with `credentials` as a person would type them into the browser's
    /// sign-in dialog.
    pub async fn open_with(
        &self,
        url: &str,
        credentials: Option<(&str, &str)>,
    ) -> anyhow::Result<Page<'_>> {
        let target = self
            .call(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .await?;
        let target_id = target["targetId"].as_str().context("targetId")?.to_string();
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await?;
        let session = attached["sessionId"]
            .as_str()
            .context("sessionId")?
            .to_string();
        let page = Page {
            browser: self,
            session,
        };
        page.call("Page.enable", json!({})).await?;
        if let Some((user, pass)) = credentials {
            *self.credentials.lock().unwrap() = Some((user.into(), pass.into()));
            page.call("Fetch.enable", json!({ "handleAuthRequests": true }))
                .await?;
        }
        page.call("Page.navigate", json!({ "url": url })).await?;
        Ok(page)
    }

    /// Chromium's own output, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.profile.path().join("chromium.log")).unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One tab.
pub struct Page<'a> {
    browser: &'a Browser,
    session: String,
}

impl Page<'_> {
    async fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.browser.call(Some(&self.session), method, params).await
    }

    /// Evaluates `expression` (awaiting a promise) and returns its value as
    /// JSON.
    pub async fn eval(&self, expression: &str) -> anyhow::Result<Value> {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await?;
        if let Some(exception) = result.get("exceptionDetails") {
            bail!("JavaScript threw: {exception}");
        }
        Ok(result["result"]["value"].clone())
    }

    /// Evaluates `expression` until it returns `true`, or fails after
    /// `timeout` with the last value of `diagnostic`.
    pub async fn wait_for(
        &self,
        expression: &str,
        diagnostic: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.eval(expression).await? == Value::Bool(true) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let state = self.eval(diagnostic).await.unwrap_or_default();
                bail!("`{expression}` still false after {timeout:?}; page state: {state}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The viewport as a JPEG (which the tests can decode, unlike PNG).
    pub async fn screenshot_jpeg(&self) -> anyhow::Result<Vec<u8>> {
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({ "format": "jpeg", "quality": 95 }),
            )
            .await?;
        Ok(base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().context("screenshot data")?)?)
    }

    /// Saves a PNG of the viewport to `path`.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<PathBuf> {
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().context("screenshot data")?)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, &png)?;
        Ok(path.to_path_buf())
    }
}
