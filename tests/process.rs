//! The real `camstream` binary as an operator runs it: no password or
//! token ever appears in a response (of any endpoint, errors included) or
//! in its logs (JSON lines with each camera's span); SIGHUP reloads the
//! file; and killing it in the middle of API saves never leaves a broken
//! config file.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use camstream::Config;
use common::rtsp::{RtspOptions, RtspServer};
use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const ADMIN: &str = "Admin-Token-e1f2a3b4c5d6";
const VIEWER: &str = "Viewer-Token-9a8b7c6d5e4f";
/// The binary is up in well under a second; a loaded 2-core CI machine
/// building other tests meanwhile can take much longer.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A camstream process with its config in a temporary directory; killed on
/// drop. Configured through the environment (CAMSTREAM_CONFIG, ...), the
/// interface least likely to change with the command line.
struct Process {
    child: Child,
    dir: tempfile::TempDir,
    base: String,
}

impl Process {
    fn config_path(dir: &Path) -> PathBuf {
        dir.join("camstream.toml")
    }

    async fn start(dir: tempfile::TempDir, rust_log: &str) -> Process {
        let log = std::fs::File::create(dir.path().join("stdout.log")).unwrap();
        let err = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_camstream"))
            .env("CAMSTREAM_CONFIG", Self::config_path(dir.path()))
            .env("CAMSTREAM_LOG_FORMAT", "json")
            .env("RUST_LOG", rust_log)
            .env_remove("CAMSTREAM_LISTEN")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("camstream starts");
        let mut process = Process {
            child,
            dir,
            base: String::new(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let found = process.logs().lines().find_map(|line| {
                let value: Value = serde_json::from_str(line).ok()?;
                let message = value["fields"]["message"].as_str()?;
                let rest = message.split("listening on http://").nth(1)?;
                Some(rest.split('/').next()?.to_string())
            });
            if let Some(addr) = found {
                process.base = format!("http://{addr}");
                return process;
            }
            assert!(
                Instant::now() < deadline,
                "camstream did not start: {}{}",
                process.logs(),
                process.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, and wait for the process to exit.
    fn stop(mut self) -> tempfile::TempDir {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "camstream did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.into_dir()
    }

    /// Kills the process (if still running) and keeps its directory.
    fn into_dir(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every response the test received, to search for secrets.
#[derive(Default)]
struct Seen {
    responses: Vec<(String, String)>,
}

impl Seen {
    async fn send(&mut self, what: &str, request: RequestBuilder) -> (u16, Value) {
        let response = request.send().await.expect(what);
        let status = response.status().as_u16();
        let mut text = format!("{what} -> {status}\n");
        for (name, value) in response.headers() {
            text.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        let is_stream = response
            .headers()
            .get("content-type")
            .is_some_and(|t| t.as_bytes().starts_with(b"multipart/"));
        let body = if is_stream {
            // A stream never ends: read its first chunks only.
            let mut body = Vec::new();
            let mut chunks = response.bytes_stream();
            while body.len() < 64 * 1024 {
                match tokio::time::timeout(Duration::from_secs(10), chunks.next()).await {
                    Ok(Some(Ok(chunk))) => body.extend_from_slice(&chunk),
                    _ => break,
                }
            }
            body
        } else {
            response.bytes().await.unwrap_or_default().to_vec()
        };
        let body_text = String::from_utf8_lossy(&body).into_owned();
        text.push_str(&body_text);
        self.responses.push((what.to_string(), text));
        (
            status,
            serde_json::from_str(&body_text).unwrap_or(Value::Null),
        )
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_or_token_ever_leaves_the_process() {
    common::init();
    let rtsp = RtspServer::start(RtspOptions {
        width: 320,
        height: 240,
        credentials: Some(("admin".into(), "Rtsp-Secret-42".into())),
        ..RtspOptions::default()
    })
    .unwrap();
    let good = rtsp.url_with_credentials("admin", "Rtsp-Secret-42");
    let wrong = rtsp.url_with_credentials("admin", "Wrong-Pass-99");
    // Every secret the server is given, in every form it could be shown.
    let secrets = [
        "Rtsp-Secret-42",
        "Wrong-Pass-99",
        "Closed-Pass-55",
        "Http-Pass-66",
        "Override-Pass-88",
        "Bad-Pass-33",
        "p@ss-Enc-44",
        "p%40ss-Enc-44",
        "Posted-Pass-11",
        "Put-Pass-12",
        "Invalid-Pass-13",
        "Ann-Plain-Pass-7",
        "Bob-Pass-8",
        "Wrong-Basic-Pass-9",
        ADMIN,
        VIEWER,
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = Process::config_path(dir.path());
    // printf %s 'Bob-Pass-8' | sha256sum
    let bob_sha256 = "0443d95258f3d05a3b9169279c96627f59db4182def63eb42a13a98e0d7f303f";
    let config = format!(
        r#"[server]
listen = "127.0.0.1:0"
cors_origins = ["http://front.example"]

[server.auth]
tokens = ["{ADMIN}"]
view_tokens = ["{VIEWER}"]
users = [
  {{ name = "ann", password = "Ann-Plain-Pass-7" }},
  {{ name = "bob", password_sha256 = "{bob_sha256}", role = "viewer" }},
]

[[cameras]]
id = "good"
source = "{good}"

[[cameras]]
id = "wrongpw"
source = "{wrong}"

[[cameras]]
id = "closed"
source = "rtsp://admin:Closed-Pass-55@127.0.0.1:9/x"

[[cameras]]
id = "http"
source = "http://user:Http-Pass-66@127.0.0.1:9/video.mjpg"

[[cameras]]
id = "override"
pipeline = "rtspsrc location=rtsp://127.0.0.1:9/x user-id=admin user-pw=Override-Pass-88 ! decodebin"

[[cameras]]
id = "bad"
source = "rtsp://admin:Bad-Pass-33@127.0.0.1:9/x"
scale = 9

[[cameras]]
id = "encoded"
source = "rtsp://admin:p%40ss-Enc-44@127.0.0.1:9/x"
"#
    );
    std::fs::write(&path, &config).unwrap();
    // Debug everywhere, so hyper's and warp's own lines are searched too.
    let process = Process::start(dir, "debug").await;
    let ids = [
        "good", "wrongpw", "closed", "http", "override", "bad", "encoded",
    ];
    let mut seen = Seen::default();
    let c = client();
    let view = |request: RequestBuilder| request.bearer_auth(VIEWER);
    let admin = |request: RequestBuilder| request.bearer_auth(ADMIN);

    // Every camera's stream and snapshot: streams for the good one, errors
    // that quote the source for the others.
    for id in ids {
        let url = process.url(&format!("/api/cameras/{id}/snapshot.jpg?token={VIEWER}"));
        seen.send(&format!("snapshot {id}"), c.get(url)).await;
        let url = process.url(&format!("/api/cameras/{id}/stream.mjpeg?token={VIEWER}"));
        seen.send(&format!("stream {id}"), c.get(url)).await;
    }
    let url = process.url(&format!("/api/cv/display?camera_id=wrongpw&token={VIEWER}"));
    seen.send("display", c.get(url)).await;
    // Wait until every failing camera has reported its error.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, list) = seen
            .send("list", view(c.get(process.url("/api/cameras"))))
            .await;
        let pending: Vec<_> = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|cam| cam["id"] != "good" && cam["last_error"].is_null())
            .map(|cam| cam["id"].clone())
            .collect();
        if pending.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no error yet from {pending:?}: {list}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    for id in ids {
        seen.send(
            &format!("info {id}"),
            view(c.get(process.url(&format!("/api/cameras/{id}")))),
        )
        .await;
    }
    for (what, path) in [
        ("page", format!("/?token={VIEWER}")),
        ("health", "/healthz".into()),
        ("metrics", "/metrics".into()),
        ("openapi", "/api/openapi.json".into()),
        ("unknown camera", "/api/cameras/nope".into()),
        ("bad id", "/api/cameras/bad%20id".into()),
        ("bad fps", "/api/cameras/good/stream.mjpeg?fps=0".into()),
        ("no route", "/nothing/here".into()),
        ("ws without upgrade", "/api/ws?cameras=good".into()),
    ] {
        seen.send(what, view(c.get(process.url(&path)))).await;
    }
    seen.send("no credentials", c.get(process.url("/api/cameras")))
        .await;
    seen.send(
        "wrong basic",
        c.get(process.url("/api/cameras"))
            .basic_auth("ann", Some("Wrong-Basic-Pass-9")),
    )
    .await;
    let (status, _) = seen
        .send(
            "basic",
            c.get(process.url("/api/cameras"))
                .basic_auth("ann", Some("Ann-Plain-Pass-7")),
        )
        .await;
    assert_eq!(status, 200);
    seen.send(
        "preflight",
        c.request(Method::OPTIONS, process.url("/api/cameras"))
            .header("origin", "http://front.example")
            .header("access-control-request-method", "POST"),
    )
    .await;

    // The REST API with passwords in the bodies.
    let posted = "rtsp://admin:Posted-Pass-11@127.0.0.1:9/y";
    let (status, body) = seen
        .send(
            "post",
            admin(c.post(process.url("/api/cameras")))
                .json(&json!({ "id": "posted", "source": posted })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = seen
        .send(
            "put",
            admin(c.put(process.url("/api/cameras/posted")))
                .json(&json!({ "source": "rtsp://admin:Put-Pass-12@127.0.0.1:9/y" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let invalid = "rtsp://admin:Invalid-Pass-13@127.0.0.1:9/z";
    for (what, body) in [
        (
            "invalid type",
            json!({ "id": "x", "source": invalid, "scale": invalid }),
        ),
        (
            "invalid value",
            json!({ "id": "x", "source": invalid, "scale": 7 }),
        ),
        // The password in a key: serde quotes unknown field names.
        ("invalid field", {
            let mut body = serde_json::Map::new();
            body.insert("id".into(), json!("x"));
            body.insert(invalid.into(), json!(1));
            Value::Object(body)
        }),
        ("invalid id", json!({ "id": invalid, "source": invalid })),
    ] {
        let (status, response) = seen
            .send(what, admin(c.post(process.url("/api/cameras"))).json(&body))
            .await;
        assert_eq!(status, 422, "{what}: {response}");
    }
    seen.send(
        "viewer post",
        view(c.post(process.url("/api/cameras"))).json(&json!({ "id": "y", "source": invalid })),
    )
    .await;
    seen.send(
        "info posted",
        view(c.get(process.url("/api/cameras/posted"))),
    )
    .await;

    // The grid socket.
    let ws_url = format!(
        "{}/api/ws?cameras={}&token={VIEWER}",
        process.base.replace("http://", "ws://"),
        ids.join(",")
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(20), socket.next())
        .await
        .expect("a frame")
        .unwrap()
        .unwrap();
    let Message::Binary(frame) = message else {
        panic!("expected a binary frame, got {message:?}");
    };
    let id_len = usize::from(frame[0]);
    assert_eq!(&frame[1..1 + id_len], b"good");
    assert_eq!(
        &frame[1 + id_len..3 + id_len],
        b"\xff\xd8",
        "a JPEG follows"
    );
    socket.send(Message::text("good")).await.unwrap();
    socket.close(None).await.unwrap();

    seen.send("metrics after", view(c.get(process.url("/metrics"))))
        .await;
    seen.send("list after", view(c.get(process.url("/api/cameras"))))
        .await;

    // SIGHUP: the changed camera is renamed, the others stay as they are.
    let edited = std::fs::read_to_string(&path).unwrap().replace(
        "id = \"good\"\n",
        "id = \"good\"\nname = \"Renamed by SIGHUP\"\n",
    );
    std::fs::write(&path, edited).unwrap();
    process.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, info) = seen
            .send(
                "after reload",
                view(c.get(process.url("/api/cameras/good"))),
            )
            .await;
        if info["name"] == "Renamed by SIGHUP" {
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not reload: {info}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, info) = seen
        .send(
            "wrongpw after reload",
            view(c.get(process.url("/api/cameras/wrongpw"))),
        )
        .await;
    assert_eq!(info["starts"].as_u64().map(|s| s >= 1), Some(true));

    let stdout_before_stop = process.logs();
    let stderr = process.stderr();
    let dir = process.stop();
    drop(dir);
    rtsp.stop();

    // The logs are JSON lines, and the camera's lines carry its span.
    let mut camera_lines = 0;
    for line in stdout_before_stop.lines() {
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
        if value["span"]["name"] == "camera" {
            assert!(value["span"]["id"].is_string(), "{line}");
            camera_lines += 1;
        }
    }
    assert!(camera_lines > 0, "no log line has a camera span");
    assert!(
        stdout_before_stop.contains("plain-text password"),
        "the plain password is warned about"
    );
    assert!(stdout_before_stop.contains("configuration reloaded"));

    for secret in secrets {
        for (what, text) in &seen.responses {
            assert!(
                !text.contains(secret),
                "{secret:?} appears in the response to {what}:\n{text}"
            );
        }
        assert!(
            !stdout_before_stop.contains(secret),
            "{secret:?} appears in the logs:\n{}",
            stdout_before_stop
                .lines()
                .filter(|l| l.contains(secret))
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            !stderr.contains(secret),
            "{secret:?} appears on stderr:\n{stderr}"
        );
    }
    // The failures were real and said why, masked.
    let wrongpw = seen
        .responses
        .iter()
        .find(|(what, _)| what == "info wrongpw")
        .unwrap();
    assert!(wrongpw.1.contains("admin:***@"), "{}", wrongpw.1);
    println!(
        "{} responses and {} log lines searched for {} secrets",
        seen.responses.len(),
        stdout_before_stop.lines().count(),
        secrets.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_server_while_it_saves_never_breaks_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = Process::config_path(dir.path());
    let original = format!(
        "# kept\n[server]\nlisten = \"127.0.0.1:0\"\n[server.auth]\ntokens = [\"{ADMIN}\"]\n\
         [[cameras]]\nid = \"a\"\nsource = \"test:ball?width=160&height=120&fps=5\"\n"
    );
    std::fs::write(&path, &original).unwrap();
    let mut dir = dir;
    // Each round kills the server at a different moment of a burst of
    // saves; the pseudo-random delays come from the clock.
    for round in 0..5u64 {
        let process = Process::start(dir, "warn,camstream=info").await;
        let c = client();
        let base = process.base.clone();
        let writer = tokio::spawn(async move {
            let mut saves = 0u64;
            for i in 0.. {
                let body = json!({ "id": "b", "source": "test:", "quality": 1 + i % 100 });
                let create = c
                    .post(format!("{base}/api/cameras"))
                    .bearer_auth(ADMIN)
                    .json(&body);
                if create.send().await.is_err() {
                    break;
                }
                let update = c
                    .put(format!("{base}/api/cameras/b"))
                    .bearer_auth(ADMIN)
                    .json(&json!({ "source": "test:", "quality": 50 }));
                if update.send().await.is_err() {
                    break;
                }
                let delete = c.delete(format!("{base}/api/cameras/b")).bearer_auth(ADMIN);
                if delete.send().await.is_err() {
                    break;
                }
                saves += 3;
            }
            saves
        });
        let jitter = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_millis() as u64
            % 300;
        tokio::time::sleep(Duration::from_millis(200 + jitter + round * 50)).await;
        process.signal("KILL");
        let saves = writer.await.unwrap();
        let text = std::fs::read_to_string(&path).expect("the config file exists");
        let config = Config::parse(&text, Some(&path))
            .unwrap_or_else(|e| panic!("round {round}: broken config after a kill: {e}\n{text}"));
        let ids: Vec<_> = config.cameras.iter().map(|c| c.id.to_string()).collect();
        assert!(ids == ["a"] || ids == ["a", "b"], "round {round}: {ids:?}");
        assert!(text.starts_with("# kept\n"), "round {round}: {text}");
        let leftovers = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count();
        println!(
            "round {round}: killed after {saves} saves; file complete, cameras {ids:?}, {leftovers} temporary file(s) from interrupted saves"
        );
        dir = process.into_dir();
    }
}
