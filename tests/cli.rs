//! The `camstream` binary as people and containers run it: `check` on good
//! and bad configs, `probe` against the in-process RTSP server and a test
//! source, `healthcheck`, and the environment overrides a container sets.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::free_port;
use common::http::{HttpCamera, HttpCameraOptions};
use common::rtsp::{Codec, RtspOptions, RtspServer, Transports};

/// The repository's shipped templates.
fn pipelines_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines")
}

/// A fresh directory for one test's files; also the binary's working
/// directory, so no camstream.toml is picked up by accident.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("camstream-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The built binary, in `dir`, with none of the caller's CAMSTREAM_*
/// variables leaking in.
fn camstream(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_camstream"));
    cmd.current_dir(dir)
        .env_remove("CAMSTREAM_CONFIG")
        .env_remove("CAMSTREAM_LISTEN")
        .env_remove("CAMSTREAM_PIPELINES_DIR")
        .env_remove("RUST_LOG");
    cmd
}

/// How a finished command exited, and what it printed.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(cmd: &mut Command) -> Ran {
    let output = cmd.output().expect("the camstream binary runs");
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn check_passes_a_good_config() {
    let dir = scratch("check-good");
    std::fs::write(
        dir.join("good.toml"),
        r#"
[[cameras]]
id = 1
name = "Gate"
source = "rtsp://admin:hunter2@192.0.2.10:554/Streaming/Channels/101"

[[cameras]]
id = "h265"
source = "rtsp://192.0.2.11/stream"
pipeline_file = "rtsp-h265.pipeline"

[[cameras]]
id = "pattern"
source = "test:ball?width=640&height=360&fps=15"
"#,
    )
    .unwrap();
    let Ran {
        code,
        stdout,
        stderr,
    } = run(camstream(&dir)
        .args(["check", "--config", "good.toml"])
        .env("CAMSTREAM_PIPELINES_DIR", pipelines_dir()));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    assert!(
        lines[0].starts_with("ok: good.toml:2: camera \"1\" (Gate): rtsp://admin:***@192.0.2.10"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("ok: good.toml:7: camera \"h265\"")
            && lines[1].contains("via rtsp-h265.pipeline"),
        "{stdout}"
    );
    assert!(lines[2].starts_with("ok: good.toml:12: camera \"pattern\""));
    // Then the hardware decoders this machine has: none here, said so.
    assert!(
        lines[3].starts_with("ok: no hardware video decoder is available here"),
        "{stdout}"
    );
    assert_eq!(lines[4], "good.toml: 3 camera(s), 0 error(s), 0 warning(s)");
    assert!(!stdout.contains("hunter2") && !stderr.contains("hunter2"));
}

#[test]
fn check_fails_a_bad_config_naming_camera_line_and_fix() {
    let dir = scratch("check-bad");
    std::fs::write(
        dir.join("bad.toml"),
        r#"[[cameras]]
id = "gate"
source = "rtsp://admin:hunter2@192.0.2.10/x"
scale = 3

[[cameras]]
id = "hw"
source = "filesrc location=/x.mp4 ! qtdemux ! avdec_nosuchcodec"

[[cameras]]
id = "typo"
sorce = "test:"

[[cameras]]
id = "desk"
source = "/dev/video99"
"#,
    )
    .unwrap();
    let Ran {
        code,
        stdout,
        stderr,
    } = run(camstream(&dir).args(["check", "-c", "bad.toml"]));
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let line = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{stdout}"))
            .to_string()
    };
    assert!(line("error: bad.toml:1: camera \"gate\": scale = 3").contains("at most 1"));
    // A missing element names the Debian package that ships it.
    assert!(
        line("error: bad.toml:6: camera \"hw\": GStreamer element \"avdec_nosuchcodec\"")
            .contains("apt-get install gstreamer1.0-libav")
    );
    assert!(line("error: bad.toml:10: camera \"typo\": unknown field `sorce`").contains("source"));
    // A device that is not there yet is a warning: it may be plugged in.
    assert!(
        line("warning: bad.toml:14: camera \"desk\": /dev/video99 does not exist")
            .contains("--device /dev/video99")
    );
    assert!(
        stdout.ends_with("bad.toml: 4 camera(s), 3 error(s), 1 warning(s)\n"),
        "{stdout}"
    );
    assert!(!stdout.contains("hunter2") && !stderr.contains("hunter2"));
}

#[test]
fn check_refuses_a_file_the_server_cannot_read() {
    let dir = scratch("check-fatal");
    std::fs::write(
        dir.join("broken.toml"),
        "[server]\nlisten = \"0.0.0.0:8000\nport = 1\n",
    )
    .unwrap();
    let Ran {
        code,
        stdout,
        stderr: _,
    } = run(camstream(&dir).args(["check", "--config", "broken.toml"]));
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.starts_with("error: broken.toml:2:"), "{stdout}");

    // No file at all, and none in the working directory: say what to pass.
    let Ran {
        code,
        stdout: _,
        stderr,
    } = run(camstream(&dir).arg("check"));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("pass --config FILE"), "{stderr}");
}

#[test]
fn probe_reports_an_rtsp_camera() {
    let server = RtspServer::start(RtspOptions {
        width: 640,
        height: 360,
        fps: 25,
        codec: Codec::H264,
        credentials: Some(("admin".into(), "s3cret".into())),
        ..RtspOptions::default()
    })
    .unwrap();
    let dir = scratch("probe-rtsp");
    let Ran {
        code,
        stdout,
        stderr,
    } = run(camstream(&dir).args(["probe", &server.url_with_credentials("admin", "s3cret")]));
    server.stop();
    // Shown with --nocapture: README.md quotes it.
    println!("{stdout}");
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("source:      rtsp://admin:***@127.0.0.1:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("codec:       H.264 (video/x-h264"),
        "{stdout}"
    );
    assert!(stdout.contains("resolution:  640x360\n"), "{stdout}");
    let rate = stdout
        .lines()
        .find(|l| l.starts_with("frame rate:"))
        .expect("a frame rate line");
    let measured: f64 = rate
        .split("measured ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no measured rate in {rate:?}"));
    assert!((15.0..=30.0).contains(&measured), "{rate}");
    assert!(
        stdout.contains("camstream:   160x90 JPEG frames (scale 0.25)"),
        "{stdout}"
    );
    assert!(!stdout.contains("s3cret") && !stderr.contains("s3cret"));
}

#[test]
fn probe_reports_a_test_source() {
    let dir = scratch("probe-test");
    let Ran {
        code,
        stdout,
        stderr,
    } = run(camstream(&dir).args(["probe", "test:ball?width=320&height=240&fps=10"]));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("codec:       raw video (video/x-raw"),
        "{stdout}"
    );
    assert!(stdout.contains("resolution:  320x240\n"), "{stdout}");
    assert!(stdout.contains("frame rate:  10 fps; measured"), "{stdout}");
}

#[test]
fn probe_fails_clearly_and_in_bounded_time() {
    let dir = scratch("probe-bad");
    // A port nobody listens on.
    let port = free_port();
    let started = Instant::now();
    let Ran {
        code,
        stdout,
        stderr,
    } = run(camstream(&dir).args(["probe", &format!("rtsp://admin:hunter2@127.0.0.1:{port}/x")]));
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "rtsp://admin:***@127.0.0.1:{port}/x: cannot connect to the RTSP server at 127.0.0.1:{port}"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2") && !stdout.contains("hunter2"));
    // rtspsrc's connect timeout is 5 s; the probe's own is 15 s.
    assert!(started.elapsed() < Duration::from_secs(20));

    let Ran {
        code,
        stdout: _,
        stderr,
    } = run(camstream(&dir).args(["probe", "rtmp://host/live"]));
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("unknown source scheme \"rtmp:\""),
        "{stderr}"
    );

    // A source that never delivers a frame hits --timeout.
    let Ran { code, stdout: _, stderr } = run(camstream(&dir)
        .args([
            "probe",
            "--timeout",
            "1",
            "udpsrc port=0 caps=\"video/x-raw,format=I420,width=64,height=64,framerate=1/1\" ! identity",
        ]));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no frame within 1 s"), "{stderr}");
}

#[test]
fn probe_reports_the_transport_fallen_back_to_and_an_audio_track() {
    let server = RtspServer::start(RtspOptions {
        transports: Transports::UdpOnly,
        audio: true,
        ..RtspOptions::default()
    })
    .unwrap();
    let dir = scratch("probe-udp");
    let Ran {
        code,
        stdout,
        stderr,
    } = run(camstream(&dir).args(["probe", &server.url()]));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("transport:   udp (RTP over UDP, after the server refused the other)"),
        "{stdout}"
    );
    assert!(stdout.contains("codec:       H.264"), "{stdout}");
    assert!(
        stdout.contains("audio:       audio (PCMA, 8000 Hz) (ignored"),
        "{stdout}"
    );
    assert!(
        stdout.contains("camstream:   160x90 JPEG frames"),
        "{stdout}"
    );

    // Pinned to the transport the server refuses: the camera's message.
    let Ran {
        code,
        stdout,
        stderr,
    } = run(camstream(&dir).args(["probe", "--transport", "tcp", &server.url()]));
    server.stop();
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("set up no stream over TCP") && stderr.contains("set transport = \"udp\""),
        "{stderr}"
    );
}

#[test]
fn probe_polls_a_snapshot_url() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let http = runtime.block_on(HttpCamera::start(HttpCameraOptions::default()));
    let dir = scratch("probe-snapshot");
    let Ran {
        code,
        stdout,
        stderr,
    } = run(camstream(&dir).args(["probe", "--max-fps", "4", &http.url("/snapshot.jpg")]));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("transport:   snapshots (single JPEG images, polled every 250 ms"),
        "{stdout}"
    );
    assert!(stdout.contains("codec:       JPEG"), "{stdout}");
    assert!(stdout.contains("resolution:  640x480\n"), "{stdout}");
    assert!(!stdout.contains("audio:"), "{stdout}");
    assert!(http.snapshots_served() >= 2, "{}", http.snapshots_served());
}

/// A running `camstream` child, SIGTERMed and reaped on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Server {
    /// Spawns `cmd`, a camstream serving on 127.0.0.1:`port`, and waits
    /// until GET /healthz answers 200. Returns the server and its base URL.
    async fn start(cmd: &mut Command, port: u16) -> (Server, String) {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        Server::start_as_set(cmd, port).await
    }

    /// [`Server::start`] with its log lines (stdout and stderr) in `log`.
    async fn start_logging(cmd: &mut Command, port: u16, log: &Path) -> (Server, String) {
        let file = std::fs::File::create(log).unwrap();
        cmd.stdout(file.try_clone().unwrap()).stderr(file);
        Server::start_as_set(cmd, port).await
    }

    async fn start_as_set(cmd: &mut Command, port: u16) -> (Server, String) {
        let server = Server(cmd.spawn().unwrap());
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok((200, _)) = common::app::get_json(&format!("{base}/healthz")).await {
                return (server, base);
            }
            assert!(
                Instant::now() < deadline,
                "{base}/healthz never answered 200"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit status: what `docker stop` does.
    fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit within {within:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[tokio::test]
async fn environment_overrides_configure_a_container() {
    let dir = scratch("env");
    // The file says one port and a pipelines directory that does not exist;
    // the environment, as a container image sets it, wins over both.
    std::fs::write(
        dir.join("cams.toml"),
        r#"
[server]
listen = "127.0.0.1:1"
pipelines_dir = "no-such-dir"

[[cameras]]
id = "pattern"
source = "test:smpte?width=320&height=240&fps=10"
pipeline_file = "test.pipeline"
"#,
    )
    .unwrap();
    let port = free_port();
    let env = [
        ("CAMSTREAM_CONFIG", dir.join("cams.toml")),
        (
            "CAMSTREAM_LISTEN",
            PathBuf::from(format!("127.0.0.1:{port}")),
        ),
        ("CAMSTREAM_PIPELINES_DIR", pipelines_dir()),
    ];
    let (mut server, base) = Server::start(camstream(&dir).envs(env.clone()), port).await;

    let (status, cameras) = common::app::get_json(&format!("{base}/api/cameras"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let camera = &cameras.as_array().expect("a list")[0];
    assert_eq!(camera["id"], "pattern", "{cameras}");
    assert_ne!(camera["state"], "failed", "{camera}");
    // The template came from CAMSTREAM_PIPELINES_DIR: the camera streams.
    let (status, _, jpeg) = common::app::get(&format!("{base}/api/cameras/pattern/snapshot.jpg"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let image = common::mjpeg::decode_jpeg(&jpeg).unwrap();
    assert_eq!((image.width, image.height), (80, 60));

    // The container's HEALTHCHECK finds the same port through the same
    // variables.
    let Ran {
        code,
        stdout,
        stderr,
    } = run(camstream(&dir).arg("healthcheck").envs(env.clone()));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(
        stdout,
        format!("ok: http://127.0.0.1:{port}/healthz answered 200 OK\n")
    );

    // `docker stop` sends SIGTERM to PID 1: camstream stops cleanly.
    let status = server.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status}");

    // With nothing listening, the health check fails.
    let Ran {
        code,
        stdout: _,
        stderr,
    } = run(camstream(&dir).arg("healthcheck").envs(env));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("is camstream running"), "{stderr}");
}

#[tokio::test]
async fn without_a_config_camstream_serves_the_demo_camera() {
    let dir = scratch("demo");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (_server, base) =
        Server::start(camstream(&dir).args(["serve", "--listen", &listen]), port).await;
    let (_, cameras) = common::app::get_json(&format!("{base}/api/cameras"))
        .await
        .unwrap();
    assert_eq!(cameras[0]["id"], "demo", "{cameras}");
}

#[test]
fn help_shows_examples_and_version_matches_the_crate() {
    let dir = scratch("help");
    let Ran {
        code,
        stdout,
        stderr: _,
    } = run(camstream(&dir).arg("--help"));
    assert_eq!(code, Some(0));
    for needle in [
        "Examples:",
        "camstream check --config",
        "camstream probe rtsp://",
        "CAMSTREAM_LISTEN",
    ] {
        assert!(
            stdout.contains(needle),
            "{needle:?} missing from:\n{stdout}"
        );
    }
    assert_eq!(
        run(camstream(&dir).arg("--version")).stdout,
        format!("camstream {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn hash_password_output_logs_a_user_in_and_old_hashes_are_warned_about() {
    use std::io::Write as _;
    let dir = scratch("hash-password");
    // The password on standard input, as `printf '%s\n' "$PW" |` sends it.
    let mut child = camstream(&dir)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let hash = stdout.trim();
    assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
    assert!(!stdout.contains("correct horse"));
    // An empty password is refused.
    let Ran { code, stderr, .. } = run(camstream(&dir).arg("hash-password").stdin(Stdio::null()));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("empty"), "{stderr}");

    // The printed line, pasted into a config, logs the user in; a
    // SHA-256 user still works, with a warning that says how to upgrade.
    let port = free_port();
    std::fs::write(
        dir.join("cams.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\
             [[server.auth.users]]\nname = \"ann\"\npassword_hash = \"{hash}\"\n\
             [[server.auth.users]]\nname = \"bob\"\npassword_sha256 = \"{}\"\nrole = \"viewer\"\n",
            // printf %s 'open sesame' | sha256sum
            "41ef4bb0b23661e66301aac36066912dac037827b4ae63a7b1165a5aa93ed4eb"
        ),
    )
    .unwrap();
    let mut cmd = camstream(&dir);
    cmd.args(["--config", "cams.toml"]);
    let log_path = dir.join("server.log");
    let (mut server, base) = Server::start_logging(&mut cmd, port, &log_path).await;
    let client = common::app::client();
    let status = |user: &'static str, password: &'static str| {
        let request = client
            .get(format!("{base}/api/cameras"))
            .basic_auth(user, Some(password));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("ann", "correct horse").await, 200);
    assert_eq!(status("ann", "correct horse").await, 200, "cached");
    assert_eq!(status("ann", "wrong horse").await, 401);
    assert_eq!(status("bob", "open sesame").await, 200);
    assert_eq!(status("bob", "wrong").await, 401);
    let terminated = server.terminate(Duration::from_secs(10));
    assert!(terminated.success(), "{terminated}");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("user \"bob\" has an unsalted password_sha256")
            && log.contains("camstream hash-password"),
        "{log}"
    );
    assert!(!log.contains("open sesame") && !log.contains(hash), "{log}");
}
