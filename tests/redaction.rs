//! The redaction corpus: the forms a secret takes in a camera's source or
//! override (URL userinfo, credential query parameters, gst-launch
//! properties, `Authorization` values, config tokens), each configured on a
//! real camera that fails fast on loopback, so its error is filled in. Each
//! secret is then searched for in everything camstream says: every API
//! endpoint, stream and snapshot errors, `/metrics`, the page, the grid
//! WebSocket, `camstream check` and `camstream probe`, and the log lines of
//! the server run as a process with `RUST_LOG=debug`, in text and in JSON.
//!
//! Every secret holds a marker `Zk<NN>q`, at both ends when it has
//! characters a rule might stop at, so a secret masked only in part is
//! still found.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::StreamExt;
use reqwest::RequestBuilder;
use serde_json::{Value, json};
use sha2::Digest;
use tokio_tungstenite::tungstenite::Message;

/// `[server.auth]` secrets; the markers 95-97 belong to them.
const ADMIN: &str = "Zk95q-admin-token-0123456789";
const VIEWER: &str = "Zk96q-view-token-0123456789";
const USER: &str = "ann";
const USER_PASSWORD: &str = "Zk97q-basic-user-pw";
/// Nothing listens on the discard port of loopback: every camera fails at
/// once with "connection refused".
const CLOSED: &str = "127.0.0.1:9";
/// A loaded 2-core machine building other tests meanwhile can take long.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One form: a camera setting holding a secret, and how `probe` opens it.
struct Form {
    what: &'static str,
    /// Keys and string values of the camera's `[[cameras]]` entry.
    camera: Vec<(&'static str, String)>,
    /// `camstream probe` arguments opening the same thing.
    probe: Vec<String>,
    /// Forms of the secret the marker does not show (base64).
    hidden: Vec<String>,
    /// Whether the redactor's rules find it without being told (a token in
    /// a URL path is only masked because the config names it).
    by_shape: bool,
}

fn source(what: &'static str, source: &str) -> Form {
    Form {
        what,
        camera: vec![("source", source.to_string())],
        probe: vec![source.to_string()],
        hidden: Vec::new(),
        by_shape: true,
    }
}

fn pipeline(what: &'static str, pipeline: &str) -> Form {
    Form {
        what,
        camera: vec![("pipeline", pipeline.to_string())],
        // probe opens a pipeline given as the source.
        probe: vec![pipeline.to_string()],
        hidden: Vec::new(),
        by_shape: true,
    }
}

fn base64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// The template of the `pipeline_file` form.
const TEMPLATE: (&str, &str) = (
    "cred.pipeline",
    "rtspsrc location={location} user-id=admin user-pw=Zk57q!Zk57q latency={latency} ! decodebin",
);

/// The corpus. `c` is the closed address.
fn corpus(pipelines_dir: &Path) -> Vec<Form> {
    let c = CLOSED;
    let hikvision = base64("admin:Zk17q");
    let basic = base64("admin:Zk50q");
    let mut forms = vec![
        // URL userinfo.
        source(
            "plain",
            &format!("rtsp://admin:Zk01qZk01q@{c}/Streaming/Channels/101"),
        ),
        source(
            "percent-encoded @ : !",
            &format!("rtsp://admin:Zk02q%40%3A%21Zk02q@{c}/x"),
        ),
        source(
            "@ in the password",
            &format!("rtsp://admin:Zk03q@Zk03q@{c}/x"),
        ),
        source(
            ": in the password",
            &format!("rtsp://admin:Zk04q:Zk04q@{c}/x"),
        ),
        source(
            "! in the password",
            &format!("rtsp://admin:Zk05q!Zk05q@{c}/x"),
        ),
        source(
            "/ in the password, unencoded",
            &format!("rtsp://admin:Zk06q/Zk06q@{c}/x"),
        ),
        source(
            "? in the password, unencoded",
            &format!("rtsp://admin:Zk07q?Zk07q@{c}/x"),
        ),
        source(
            "# in the password, unencoded",
            &format!("rtsp://admin:Zk08q#Zk08q@{c}/x"),
        ),
        source(
            "http userinfo",
            &format!("http://admin:Zk09qZk09q@{c}/video.mjpg"),
        ),
        source(
            "rtsps, encoded /",
            &format!("rtsps://admin:Zk10q%2FZk10q@{c}/x"),
        ),
        source(
            "+ in the password",
            &format!("rtsp://admin:Zk11q+Zk11q@{c}/x"),
        ),
        source(
            "@ in the user name",
            &format!("rtsp://me%40mail.org:Zk12qZk12q@{c}/x"),
        ),
        source(
            "encoded space",
            &format!("rtsp://admin:Zk13q%20Zk13q@{c}/x"),
        ),
        source("IPv6 host", "rtsp://admin:Zk14qZk14q@[::1]:9/x"),
        // Credential query parameters.
        source(
            "Foscam pwd",
            &format!("http://{c}/videostream.cgi?user=admin&pwd=Zk15qZk15q"),
        ),
        source(
            "Dahua loginpas",
            &format!(
                "http://{c}/cgi-bin/mjpg/video.cgi?loginuse=admin&loginpas=Zk16qZk16q&channel=1"
            ),
        ),
        Form {
            hidden: vec![hikvision.clone()],
            ..source(
                "Hikvision auth=base64",
                &format!("http://{c}/ISAPI/Streaming/channels/102/httpPreview?auth={hikvision}"),
            )
        },
        source(
            "Password, mixed case",
            &format!("http://{c}/snap.cgi?usr=admin&Password=Zk18qZk18q"),
        ),
        source("PASSWD", &format!("http://{c}/snap.cgi?PASSWD=Zk19qZk19q")),
        source(
            "pass",
            &format!("http://{c}/snap.cgi?user=a&pass=Zk20qZk20q"),
        ),
        source("psw", &format!("http://{c}/snap.cgi?psw=Zk21qZk21q&user=a")),
        source(
            "passwort",
            &format!("http://{c}/snap.cgi?passwort=Zk22qZk22q"),
        ),
        source(
            "user_pwd",
            &format!("http://{c}/snap.cgi?user_name=a&user_pwd=Zk23qZk23q"),
        ),
        source("token", &format!("http://{c}/video.mjpg?token=Zk24qZk24q")),
        source(
            "access_token",
            &format!("http://{c}/video.mjpg?access_token=Zk25qZk25q"),
        ),
        source(
            "api_key",
            &format!("http://{c}/video.mjpg?api_key=Zk26qZk26q"),
        ),
        source(
            "apikey",
            &format!("http://{c}/video.mjpg?ApiKey=Zk27qZk27q"),
        ),
        source("key", &format!("http://{c}/video.mjpg?key=Zk28qZk28q")),
        source(
            "secret",
            &format!("http://{c}/video.mjpg?secret=Zk29qZk29q"),
        ),
        source(
            "sig",
            &format!("http://{c}/video.mjpg?sig=Zk30qZk30q&expires=1"),
        ),
        source(
            "signature",
            &format!("http://{c}/video.mjpg?X-Amz-Signature=Zk31qZk31q"),
        ),
        source(
            "authkey",
            &format!("http://{c}/video.mjpg?authkey=Zk32qZk32q"),
        ),
        source(
            "percent-encoded & in a value",
            &format!("http://{c}/video.cgi?loginpass=Zk33q%26Zk33q&channel=1"),
        ),
        source(
            "RTSP query password",
            &format!("rtsp://{c}/cam/realmonitor?channel=1&subtype=0&password=Zk34qZk34q"),
        ),
        // gst-launch properties in a source pipeline (shown as the source).
        source(
            "user-pw",
            &format!("rtspsrc location=rtsp://{c}/x user-id=admin user-pw=Zk35qZk35q ! decodebin"),
        ),
        source(
            "spaces around =",
            &format!(
                "rtspsrc location=rtsp://{c}/x user-id=admin user-pw = Zk36qZk36q ! decodebin"
            ),
        ),
        source(
            "double quotes",
            &format!(
                "rtspsrc location=rtsp://{c}/x user-pw=\"Zk37q with spaces Zk37q\" ! decodebin"
            ),
        ),
        source(
            "single quotes",
            &format!("rtspsrc location=rtsp://{c}/x user-pw='Zk38q single Zk38q' ! decodebin"),
        ),
        source(
            "escaped spaces",
            &format!("rtspsrc location=rtsp://{c}/x user-pw=Zk39q\\ escaped\\ Zk39q ! decodebin"),
        ),
        source(
            "souphttpsrc user-pw",
            &format!(
                "souphttpsrc location=http://{c}/x user-id=admin user-pw=Zk40qZk40q ! multipartdemux ! jpegdec"
            ),
        ),
        source(
            "proxy-pw",
            &format!(
                "souphttpsrc location=http://{c}/x proxy=http://{c} proxy-id=admin proxy-pw=Zk41qZk41q ! multipartdemux ! jpegdec"
            ),
        ),
        source(
            "Password= (no such property)",
            &format!("rtspsrc location=rtsp://{c}/x Password=Zk42qZk42q ! decodebin"),
        ),
        source(
            "USER-PW= in capitals",
            &format!("rtspsrc location=rtsp://{c}/x USER-PW=Zk43qZk43q ! decodebin"),
        ),
        source(
            "typed value",
            &format!("rtspsrc location=rtsp://{c}/x user-pw=(string)Zk44qZk44q ! decodebin"),
        ),
        source(
            "! in a quoted URL",
            &format!("rtspsrc location=\"rtsp://admin:Zk45q!Zk45q@{c}/x\" ! decodebin"),
        ),
        // gst-launch properties in a `pipeline` override.
        pipeline(
            "override user-pw",
            &format!("rtspsrc location=rtsp://{c}/x user-id=admin user-pw=Zk46qZk46q ! decodebin"),
        ),
        pipeline(
            "override, quoted, spaced",
            &format!("rtspsrc location=rtsp://{c}/x user-pw = \"Zk47q  two  Zk47q\" ! decodebin"),
        ),
        pipeline(
            "srt passphrase",
            &format!("srtsrc uri=srt://{c} passphrase=Zk48qZk48qZk48q ! decodebin"),
        ),
        pipeline(
            "x-api-key (no such property)",
            &format!(
                "souphttpsrc location=http://{c}/x x-api-key=Zk49qZk49q ! multipartdemux ! jpegdec"
            ),
        ),
        Form {
            hidden: vec![basic.clone()],
            ..pipeline(
                "Authorization: Basic in extra-headers",
                &format!(
                    "souphttpsrc location=http://{c}/x extra-headers=\"h, Authorization=(string)\\\"Basic {basic}\\\"\" ! multipartdemux ! jpegdec"
                ),
            )
        },
        pipeline(
            "Authorization: Bearer in extra-headers",
            &format!(
                "souphttpsrc location=http://{c}/x extra-headers=\"h, Authorization=(string)\\\"Bearer Zk51qZk51q\\\"\" ! multipartdemux ! jpegdec"
            ),
        ),
        pipeline(
            "cookies",
            &format!(
                "souphttpsrc location=http://{c}/x cookies=\"<\\\"session=Zk52qZk52q\\\">\" ! multipartdemux ! jpegdec"
            ),
        ),
        // Files that do not exist.
        source(
            "file path with a query",
            "/nonexistent/videostream.cgi?user=admin&pwd=Zk53qZk53q",
        ),
        source(
            "file:// URL with a token",
            "file:///nonexistent/clip.mp4?token=Zk54qZk54q",
        ),
        // Secrets of [server.auth] where no rule can see them: only the
        // config says they are secrets.
        Form {
            by_shape: false,
            ..source(
                "admin token in a URL path",
                &format!("http://{c}/{ADMIN}/video.mjpg"),
            )
        },
        Form {
            by_shape: false,
            ..source(
                "view token in a URL path",
                &format!("rtsp://{c}/live/{VIEWER}"),
            )
        },
        Form {
            by_shape: false,
            ..pipeline(
                "admin token in a header of no secret name",
                &format!(
                    "souphttpsrc location=http://{c}/x extra-headers=\"h, X-Camera=(string){ADMIN}\" ! multipartdemux ! jpegdec"
                ),
            )
        },
    ];
    // A template from the pipelines directory.
    forms.push(Form {
        what: "pipeline_file template",
        camera: vec![
            ("source", format!("rtsp://{c}/x")),
            ("pipeline_file", TEMPLATE.0.to_string()),
        ],
        probe: vec![
            format!("rtsp://{c}/x"),
            "--pipeline-file".into(),
            TEMPLATE.0.into(),
            "--pipelines-dir".into(),
            pipelines_dir.display().to_string(),
        ],
        hidden: Vec::new(),
        by_shape: true,
    });
    forms
}

/// Every `Zk<NN>q` marker in `text`.
fn markers(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    for (pos, _) in text.match_indices("Zk") {
        let tail = &bytes[pos + 2..];
        if tail.len() >= 3
            && tail[0].is_ascii_digit()
            && tail[1].is_ascii_digit()
            && tail[2] == b'q'
        {
            found.push(text[pos..pos + 5].to_string());
        }
    }
    found
}

/// Fails naming every place `text` shows a secret, with some context.
fn assert_no_secret(what: &str, text: &str, hidden: &[String]) {
    let mut leaks: Vec<usize> = (text.match_indices("Zk"))
        .map(|(pos, _)| pos)
        .filter(|pos| !markers(&text[*pos..(pos + 5).min(text.len())]).is_empty())
        .collect();
    for h in hidden {
        leaks.extend(text.match_indices(h.as_str()).map(|(pos, _)| pos));
    }
    let context = |pos: usize| {
        let start = text.floor_char_boundary(pos.saturating_sub(100));
        let end = text.ceil_char_boundary((pos + 60).min(text.len()));
        text[start..end].replace('\n', "\\n")
    };
    assert!(
        leaks.is_empty(),
        "{what} shows a secret {} time(s), e.g.:\n{}",
        leaks.len(),
        leaks
            .iter()
            .take(8)
            .map(|p| context(*p))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn toml_string(value: &str) -> String {
    toml::Value::String(value.to_string()).to_string()
}

/// The config file: auth, and one always-on camera per form, `f00`...
fn config_text(forms: &[Form], pipelines_dir: &Path) -> String {
    let sha256 = hex(&sha2::Sha256::digest(USER_PASSWORD.as_bytes()));
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\npipelines_dir = {}\n\n\
         [server.auth]\ntokens = [\"{ADMIN}\"]\nview_tokens = [\"{VIEWER}\"]\n\
         [[server.auth.users]]\nname = \"{USER}\"\npassword_sha256 = \"{sha256}\"\n\n\
         [defaults]\nalways_on = true\n",
        toml_string(&pipelines_dir.display().to_string())
    );
    for (i, form) in forms.iter().enumerate() {
        text.push_str(&format!("\n[[cameras]]\nid = \"f{i:02}\"\n"));
        for (key, value) in &form.camera {
            text.push_str(&format!("{key} = {}\n", toml_string(value)));
        }
    }
    text
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every secret in the corpus that the marker does not show.
fn all_hidden(forms: &[Form]) -> Vec<String> {
    let mut hidden: Vec<String> = forms.iter().flat_map(|f| f.hidden.clone()).collect();
    hidden.push(base64(&format!("{USER}:{USER_PASSWORD}")));
    hidden
}

/// A scratch directory with the config and the pipelines directory.
struct Scratch {
    dir: tempfile::TempDir,
    forms: Vec<Form>,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let pipelines = dir.path().join("pipelines");
        std::fs::create_dir_all(&pipelines).unwrap();
        std::fs::write(pipelines.join(TEMPLATE.0), TEMPLATE.1).unwrap();
        let forms = corpus(&pipelines);
        let text = config_text(&forms, &pipelines);
        // The file really holds every secret the test looks for.
        for (i, form) in forms.iter().enumerate() {
            let entry = text.split(&format!("id = \"f{i:02}\"")).nth(1).unwrap();
            let entry = entry.split("[[cameras]]").next().unwrap();
            let has_secret = !markers(entry).is_empty()
                || entry.contains(TEMPLATE.0)
                || form.hidden.iter().any(|h| entry.contains(h.as_str()));
            assert!(has_secret, "form {:?} holds no secret", form.what);
        }
        std::fs::write(dir.path().join("camstream.toml"), text).unwrap();
        Scratch { dir, forms }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("camstream.toml")
    }
}

/// The binary with none of the caller's settings, logging at debug.
fn camstream(dir: &Path, format: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_camstream"));
    cmd.current_dir(dir)
        .env_remove("CAMSTREAM_CONFIG")
        .env_remove("CAMSTREAM_LISTEN")
        .env_remove("CAMSTREAM_PIPELINES_DIR")
        .env("CAMSTREAM_LOG_FORMAT", format)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null());
    cmd
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().expect("camstream runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The rules alone, told nothing, mask every form found by its shape: the
/// by-value masking in the tests below is a second net, not the only one.
#[test]
fn the_rules_alone_mask_every_form() {
    let scratch = Scratch::new();
    for form in &scratch.forms {
        for (key, value) in &form.camera {
            let masked = camstream::redact::redact_text(value);
            if form.by_shape {
                assert_no_secret(&format!("{} ({key})", form.what), &masked, &form.hidden);
            }
        }
    }
    let template = camstream::redact::redact_text(TEMPLATE.1);
    assert_no_secret("the template", &template, &[]);
    assert!(scratch.forms.len() >= 50, "{} forms", scratch.forms.len());
}

/// `camstream check` on the corpus, and `camstream probe` on each form,
/// in both log formats at debug.
#[test]
fn check_and_probe_never_show_a_secret() {
    common::init();
    let scratch = Scratch::new();
    let hidden = all_hidden(&scratch.forms);
    for format in ["text", "json"] {
        let report = output(camstream(scratch.dir.path(), format).args([
            "check",
            "--config",
            &scratch.config().display().to_string(),
        ]));
        assert_no_secret(&format!("check ({format})"), &report, &hidden);
        // One line per camera, and the template's camera was understood.
        assert!(
            report.matches("camera \"f").count() >= scratch.forms.len(),
            "{report}"
        );
    }
    // Probes fail fast (connection refused, no such file); four at a time.
    // probe reads no config, so the forms only a config reveals are left
    // out.
    let probed: Vec<(usize, &Form)> = (scratch.forms.iter().enumerate())
        .filter(|(_, form)| form.by_shape)
        .collect();
    let count = probed.len();
    let jobs: Arc<Mutex<Vec<(usize, &Form)>>> = Arc::new(Mutex::new(probed));
    let reports: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                loop {
                    let Some((i, form)) = jobs.lock().unwrap().pop() else {
                        break;
                    };
                    let format = if i % 2 == 0 { "text" } else { "json" };
                    let report = output(
                        camstream(scratch.dir.path(), format)
                            .arg("probe")
                            .args(&form.probe)
                            .args(["--timeout", "8"]),
                    );
                    reports
                        .lock()
                        .unwrap()
                        .push((format!("probe {} ({format})", form.what), report));
                }
            });
        }
    });
    let reports = reports.into_inner().unwrap();
    assert_eq!(reports.len(), count);
    for (what, report) in &reports {
        assert_no_secret(what, report, &hidden);
        assert!(
            report.contains("source:") || report.contains("camstream:"),
            "{what}: {report}"
        );
    }
}

/// A camstream server process on the corpus; killed on drop.
struct Server {
    child: Child,
    log_dir: tempfile::TempDir,
    base: String,
}

impl Server {
    async fn start(scratch: &Scratch, format: &str) -> Server {
        let log_dir = tempfile::tempdir().unwrap();
        let child = camstream(scratch.dir.path(), format)
            .args(["serve", "--config", &scratch.config().display().to_string()])
            .stdout(std::fs::File::create(log_dir.path().join("stdout")).unwrap())
            .stderr(std::fs::File::create(log_dir.path().join("stderr")).unwrap())
            .spawn()
            .expect("camstream starts");
        let mut server = Server {
            child,
            log_dir,
            base: String::new(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let logs = server.logs();
            if let Some(rest) = logs.split("listening on http://").nth(1) {
                server.base = format!("http://{}", rest.split('/').next().unwrap());
                return server;
            }
            assert!(Instant::now() < deadline, "camstream did not start: {logs}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// stdout and stderr.
    fn logs(&self) -> String {
        let read =
            |name| std::fs::read_to_string(self.log_dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stdout"), read("stderr"))
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.log_dir.path().join("stdout")).unwrap_or_default()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, and wait for the exit.
    fn stop(&mut self) {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "camstream did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every response received, headers and body, to search.
#[derive(Default)]
struct Seen(Vec<(String, String)>);

impl Seen {
    async fn send(&mut self, what: String, request: RequestBuilder) -> (u16, Value) {
        let response = request.send().await.expect(&what);
        let status = response.status().as_u16();
        let mut text = String::new();
        for (name, value) in response.headers() {
            text.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        let streaming = response
            .headers()
            .get("content-type")
            .is_some_and(|t| t.as_bytes().starts_with(b"multipart/"));
        // No camera of the corpus streams; should one, read a little.
        let body = if streaming {
            let mut chunks = response.bytes_stream();
            match tokio::time::timeout(Duration::from_secs(2), chunks.next()).await {
                Ok(Some(Ok(chunk))) => chunk.to_vec(),
                _ => Vec::new(),
            }
        } else {
            response.bytes().await.unwrap_or_default().to_vec()
        };
        let body = String::from_utf8_lossy(&body).into_owned();
        text.push_str(&body);
        self.0.push((format!("{what} -> {status}"), text));
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }
}

/// The server on the corpus, in `format`: every endpoint, the socket, API
/// edits, a reload and refused credentials; then its logs.
async fn serve_the_corpus(format: &'static str) {
    let scratch = Scratch::new();
    let hidden = all_hidden(&scratch.forms);
    let mut server = Server::start(&scratch, format).await;
    let url = |path: &str| format!("{}{path}", server.base);
    let c = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let view = |r: RequestBuilder| r.bearer_auth(VIEWER);
    let admin = |r: RequestBuilder| r.bearer_auth(ADMIN);
    let ids: Vec<String> = (0..scratch.forms.len())
        .map(|i| format!("f{i:02}"))
        .collect();
    let mut seen = Seen::default();

    // Every camera reports its error: the corpus fails fast by design.
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let (_, list) = seen
            .send("list".into(), view(c.get(url("/api/cameras"))))
            .await;
        let pending: Vec<Value> = list
            .as_array()
            .expect("a list")
            .iter()
            .filter(|cam| cam["last_error"].is_null())
            .map(|cam| cam["id"].clone())
            .collect();
        if pending.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{format}: no error yet from {pending:?}: {list}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    for id in &ids {
        seen.send(
            format!("info {id}"),
            view(c.get(url(&format!("/api/cameras/{id}")))),
        )
        .await;
        let (status, _) = seen
            .send(
                format!("stream {id}"),
                c.get(url(&format!(
                    "/api/cameras/{id}/stream.mjpeg?token={VIEWER}"
                ))),
            )
            .await;
        assert_eq!(status, 503, "{format}: stream of {id}");
        seen.send(
            format!("snapshot {id}"),
            view(c.get(url(&format!("/api/cameras/{id}/snapshot.jpg")))),
        )
        .await;
    }
    seen.send(
        "display".into(),
        view(c.get(url("/api/cv/display?camera_id=f00"))),
    )
    .await;
    for path in ["/metrics", "/?token=x", "/api/openapi.json", "/healthz"] {
        let path = path.replace("?token=x", &format!("?token={VIEWER}"));
        seen.send(path.clone(), view(c.get(url(&path)))).await;
    }

    // The grid socket over every camera: nothing streams, so at most
    // placeholders; whatever comes is searched.
    let ws = format!(
        "{}/api/ws?cameras={}&token={VIEWER}",
        server.base.replace("http://", "ws://"),
        ids.join(",")
    );
    let (mut socket, response) = tokio_tungstenite::connect_async(&ws)
        .await
        .expect("the socket opens");
    let mut messages = format!("{:?}\n", response.headers());
    let until = Instant::now() + Duration::from_secs(2);
    while let Ok(Some(Ok(message))) = tokio::time::timeout(
        until.saturating_duration_since(Instant::now()),
        socket.next(),
    )
    .await
    {
        match message {
            Message::Text(text) => messages.push_str(&text),
            Message::Binary(frame) => {
                let n = usize::from(frame[0]);
                messages.push_str(&String::from_utf8_lossy(&frame[1..1 + n]));
            }
            Message::Close(frame) => messages.push_str(&format!("{frame:?}")),
            _ => {}
        }
        messages.push('\n');
    }
    drop(socket);
    seen.0.push(("grid socket".into(), messages));

    // API edits: the new secrets are masked in the responses and in the
    // log lines about them.
    let (status, body) = seen
        .send(
            "post".into(),
            admin(c.post(url("/api/cameras"))).json(
                &json!({"id": "posted", "source": format!("rtsp://admin:Zk90qZk90q@{CLOSED}/x")}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{format}: {body}");
    let (status, body) = seen
        .send(
            "put".into(),
            admin(c.put(url("/api/cameras/posted"))).json(
                &json!({"source": format!("http://{CLOSED}/videostream.cgi?user=admin&pwd=Zk91qZk91q")}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{format}: {body}");
    let invalid = format!("rtsp://admin:Zk92qZk92q@{CLOSED}/x");
    let (status, body) = seen
        .send(
            "invalid post".into(),
            admin(c.post(url("/api/cameras")))
                .json(&json!({"id": "bad", "source": invalid, "scale": invalid})),
        )
        .await;
    assert_eq!(status, 422, "{format}: {body}");

    // A reload adds a camera with a new secret.
    let mut text = std::fs::read_to_string(scratch.config()).unwrap();
    text.push_str(&format!(
        "\n[[cameras]]\nid = \"reloaded\"\nsource = \"rtsp://admin:Zk93q!Zk93q@{CLOSED}/x\"\n"
    ));
    std::fs::write(scratch.config(), text).unwrap();
    server.signal("HUP");
    let deadline = Instant::now() + START_TIMEOUT;
    for id in ["posted", "reloaded"] {
        loop {
            let (status, info) = seen
                .send(
                    format!("info {id}"),
                    view(c.get(url(&format!("/api/cameras/{id}")))),
                )
                .await;
            if status == 200 && !info["last_error"].is_null() {
                break;
            }
            assert!(Instant::now() < deadline, "{format}: {id}: {info}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Refused and accepted credentials are never echoed.
    seen.send(
        "wrong bearer".into(),
        c.get(url("/api/cameras"))
            .bearer_auth("Zk94q-wrong-token-0123456789"),
    )
    .await;
    seen.send(
        "wrong basic".into(),
        c.get(url("/api/cameras"))
            .basic_auth(USER, Some("Zk98q-wrong-password")),
    )
    .await;
    let (status, _) = seen
        .send(
            "basic".into(),
            c.get(url("/api/cameras"))
                .basic_auth(USER, Some(USER_PASSWORD)),
        )
        .await;
    assert_eq!(status, 200, "{format}: the basic user is let in");
    seen.send("metrics after".into(), view(c.get(url("/metrics"))))
        .await;
    seen.send("list after".into(), view(c.get(url("/api/cameras"))))
        .await;

    server.stop();
    let logs = server.logs();
    for (what, text) in &seen.0 {
        assert_no_secret(&format!("{format}: {what}"), text, &hidden);
    }
    assert_no_secret(&format!("{format} logs"), &logs, &hidden);

    // The logs were searched where secrets would be: every camera's error
    // was logged (at least once each), at debug, and JSON lines are JSON.
    let errors = logs
        .lines()
        .filter(|l| l.contains("camera error") || l.contains("camera failed"))
        .count();
    assert!(
        errors >= ids.len(),
        "{format}: only {errors} camera error lines:\n{logs}"
    );
    assert!(
        logs.contains("DEBUG") || logs.contains("\"level\":\"DEBUG\""),
        "{format}: no debug lines"
    );
    if format == "json" {
        for line in server.stdout().lines() {
            serde_json::from_str::<Value>(line)
                .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
        }
    }
    // The masks are visible where the secrets were.
    let list = &seen
        .0
        .iter()
        .rev()
        .find(|(w, _)| w.starts_with("list after"))
        .unwrap()
        .1;
    assert!(
        list.contains("admin:***@") && list.contains("pwd=***"),
        "{format}: {list}"
    );
    println!(
        "{format}: {} forms, {} responses and {} log lines searched",
        scratch.forms.len(),
        seen.0.len(),
        logs.lines().count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_never_shows_a_secret() {
    common::init();
    // Both log formats at once: each run is mostly waiting.
    tokio::join!(serve_the_corpus("text"), serve_the_corpus("json"));
}

/// GStreamer's own debug log (`GST_DEBUG`) goes through the redactor too:
/// at `GST_BUS:5` the bus messages of an HTTP camera show its request
/// headers, the Basic `Authorization` among them (base64 whose `=` padding
/// GStreamer escapes), and souphttpsrc's trace shows the header lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gstreamer_debug_output_is_masked_too() {
    common::init();
    let (user, password) = ("admin", "Gst-debug-Pw-Zk77q");
    let http = common::http::HttpCamera::start(common::http::HttpCameraOptions {
        credentials: Some((user.into(), password.into())),
        ..Default::default()
    })
    .await;
    let url = http.url_with_credentials(user, password, "/video.mjpg");
    let dir = tempfile::tempdir().unwrap();
    let report = tokio::task::spawn_blocking(move || {
        output(
            camstream(dir.path(), "text")
                .env("GST_DEBUG", "GST_BUS:5,souphttpsrc:7,souputils:7")
                .env_remove("GST_DEBUG_FILE")
                .args(["probe", &url, "--timeout", "8"]),
        )
    })
    .await
    .unwrap();
    // The debug log flowed, and the request did carry the credentials.
    assert!(report.contains("GST_BUS"), "{report}");
    assert!(report.contains("Authorization"), "{report}");
    let basic = base64(&format!("{user}:{password}"));
    let hidden = vec![
        password.to_string(),
        basic.trim_end_matches('=').to_string(),
    ];
    assert_no_secret("probe with GST_DEBUG", &report, &hidden);
}
