//! Golden tests: the description camstream renders for every kind of
//! source and every template in pipelines/ (what GStreamer parses as the
//! camera's source bin, and what errors quote), pinned in
//! tests/golden/*.txt, and each one built by real GStreamer with
//! camstream's own elements (so a typo or a missing element fails here);
//! and, for a few configurations, the graph of camstream's own elements
//! and links, pinned in tests/golden/graphs/*.txt.
//!
//! After an intended change: `UPDATE_GOLDEN=1 cargo test --test golden`,
//! then review the diff of tests/golden/.

use std::path::PathBuf;

use camstream::config::Config;
use camstream::pipeline::{FrameOutput, Pipeline};
use camstream::redact::Redactor;
use camstream::source::{Attempt, LowerTransport};

/// (golden file name, the `[[cameras]]` body that produces it)
const CASES: &[(&str, &str)] = &[
    ("v4l2-index", r#"source = 0"#),
    ("v4l2-string-index", r#"source = "1""#),
    ("v4l2-path", r#"source = "/dev/video2""#),
    (
        "rtsp",
        r#"source = "rtsp://admin:12345@192.168.1.64:554/Streaming/Channels/101""#,
    ),
    (
        "rtsp-udp-latency",
        r#"source = "rtsp://cam.local/live?channel=1&subtype=0"
transport = "udp"
latency_ms = 0"#,
    ),
    (
        "rtsp-auto-transport",
        r#"source = "rtsp://cam.local/live"
transport = "auto""#,
    ),
    (
        "rtsp-auto-fallback-udp",
        r#"source = "rtsp://cam.local/live"
# attempt: udp"#,
    ),
    ("rtspu-forces-udp", r#"source = "rtspu://cam.local/live""#),
    ("rtsps", r#"source = "rtsps://cam.example:322/stream1""#),
    (
        "https-no-verify",
        r#"source = "https://cam.example/video.mjpg"
tls_verify = false"#,
    ),
    (
        "http-snapshots",
        r#"source = "http://admin:pw@10.0.0.5/snapshot.jpg"
max_fps = 4
# attempt: snapshots"#,
    ),
    (
        "http-snapshots-full-decode",
        r#"source = "http://10.0.0.5/cgi-bin/snapshot.cgi"
mjpeg_lowres = false
# attempt: snapshots"#,
    ),
    (
        "http",
        r#"source = "http://user:pw@10.0.0.5:8080/video.mjpg""#,
    ),
    (
        "http-lowres",
        r#"source = "http://10.0.0.5:8080/video.mjpg"
mjpeg_lowres = true"#,
    ),
    (
        "http-jpegdec",
        r#"source = "http://10.0.0.5:8080/video.mjpg"
mjpeg_lowres = false"#,
    ),
    ("file", r#"source = "/var/media/door clip.mp4""#),
    ("file-uri", r#"source = "file:///var/media/loop.mkv""#),
    (
        "test",
        r#"source = "test:ball?width=1920&height=1080&fps=25""#,
    ),
    ("demo", r#"source = "test:""#),
    (
        "launch-fragment",
        r#"source = "videotestsrc is-live=true ! video/x-raw,width=800,height=600""#,
    ),
    (
        "launch-full",
        r#"source = "videotestsrc is-live=true ! jpegenc ! appsink name=sink""#,
    ),
    (
        "max-fps-quality",
        r#"source = "test:smpte"
max_fps = 5
quality = 60"#,
    ),
    (
        "inline-pipeline",
        r#"source = "rtsp://u:p@cam/h264"
pipeline = "rtspsrc location={location} latency={latency} ! rtph264depay ! avdec_h264""#,
    ),
    (
        "template-rtsp-h264",
        r#"source = "rtsp://admin:12345@192.168.1.64:554/Streaming/Channels/101"
pipeline_file = "rtsp-h264.pipeline""#,
    ),
    (
        "template-rtsp-h265",
        r#"source = "rtsp://cam.local/h265"
pipeline_file = "rtsp-h265.pipeline""#,
    ),
    (
        "template-rtsp-auto",
        r#"source = "rtsp://cam.local/any"
transport = "auto"
pipeline_file = "rtsp-auto.pipeline""#,
    ),
    (
        "template-v4l2-mjpeg",
        r#"source = 0
pipeline_file = "v4l2-mjpeg.pipeline""#,
    ),
    (
        "template-v4l2-mjpeg-lowres-half",
        r#"source = 0
pipeline_file = "v4l2-mjpeg.pipeline"
scale = 0.5
mjpeg_lowres = true"#,
    ),
    (
        "template-v4l2-raw",
        r#"source = "/dev/video1"
pipeline_file = "v4l2-raw.pipeline""#,
    ),
    (
        "template-http-mjpeg",
        r#"source = "http://10.0.0.5:8080/video.mjpg"
pipeline_file = "http-mjpeg.pipeline""#,
    ),
    (
        "template-http-mjpeg-lowres",
        r#"source = "http://10.0.0.5:8080/video.mjpg"
pipeline_file = "http-mjpeg.pipeline"
mjpeg_lowres = true"#,
    ),
    (
        "template-test",
        r#"source = "test:pinwheel?width=640&height=480&fps=15"
pipeline_file = "test.pipeline""#,
    ),
    (
        "template-file-loop",
        r#"source = "/var/media/clip.mp4"
pipeline_file = "file-loop.pipeline""#,
    ),
    (
        "template-full-test-jpeg",
        r#"pipeline_file = "full-test-jpeg.pipeline""#,
    ),
];

/// (graph file name, the `[[cameras]]` body): configurations whose graph of
/// camstream's own elements is pinned.
const GRAPH_CASES: &[(&str, &str)] = &[
    ("test", r#"source = "test:""#),
    (
        "test-sizes-max-fps",
        r#"source = "test:ball?width=1920&height=1080&fps=25"
max_fps = 5
sizes = { thumb = { scale = 0.125, quality = 60 }, large = { scale = 0.5 } }"#,
    ),
    (
        "http-sizes",
        r#"source = "http://10.0.0.5:8080/video.mjpg"
sizes = { large = { scale = 0.5 }, same = { scale = 1.0 } }"#,
    ),
    (
        "http-jpegdec",
        r#"source = "http://10.0.0.5:8080/video.mjpg"
mjpeg_lowres = false"#,
    ),
    (
        "http-snapshots",
        r#"source = "http://10.0.0.5/snapshot.jpg"
max_fps = 4
# attempt: snapshots"#,
    ),
    ("rtsp", r#"source = "rtsp://cam.local/live""#),
    (
        "whole-pipeline",
        r#"pipeline_file = "full-test-jpeg.pipeline""#,
    ),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Renders a case through the real config path: TOML -> settings -> plan.
/// A `# attempt: udp` or `# attempt: snapshots` line renders the attempt a
/// camera makes after falling back to it.
fn render(body: &str) -> camstream::source::PipelinePlan {
    let (settings, attempt) = settings(body);
    settings.plan_attempt(attempt).expect("plan renders")
}

/// The camera settings of a case, and the attempt it renders.
fn settings(body: &str) -> (camstream::config::CameraSettings, Attempt) {
    let attempt = Attempt {
        transport: body
            .contains("# attempt: udp")
            .then_some(LowerTransport::Udp),
        snapshots: body.contains("# attempt: snapshots"),
        software_decoding: false,
    };
    let text = format!("[[cameras]]\nid = \"golden\"\n{body}\n");
    // The config "lives" in the repo root, so pipeline_file resolves in
    // the shipped pipelines/ directory.
    let config = Config::parse(&text, Some(&root().join("golden.toml"))).expect("config parses");
    let settings = config.cameras[0]
        .settings
        .clone()
        .unwrap_or_else(|e| panic!("case does not validate: {e}"));
    (settings, attempt)
}

#[test]
fn rendered_pipelines_match_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let dir = root().join("tests/golden");
    let mut mismatches = Vec::new();
    for (name, body) in CASES {
        let rendered = format!("{}\n", render(body).description);
        let path = dir.join(format!("{name}.txt"));
        if update {
            std::fs::write(&path, &rendered).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
        if expected != rendered {
            mismatches.push(format!(
                "{name}:\n  expected: {}  rendered: {}",
                expected, rendered
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "golden mismatches:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn built_graphs_match_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let dir = root().join("tests/golden/graphs");
    let mut mismatches = Vec::new();
    for (name, body) in GRAPH_CASES {
        let (settings, attempt) = settings(body);
        let plan = settings.plan_attempt(attempt).unwrap();
        let output = FrameOutput::for_settings(&settings, plan.managed);
        let pipeline = Pipeline::build(&plan, output, Redactor::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let graph = pipeline.graph();
        let path = dir.join(format!("{name}.txt"));
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &graph).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
        if expected != graph {
            mismatches.push(format!(
                "{name}:\n--- expected\n{expected}--- built\n{graph}"
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "graph mismatches:\n{}",
        mismatches.join("\n")
    );
}

/// The names of the `.txt` files in `dir`.
fn golden_names(dir: &str) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter_map(|name| name.strip_suffix(".txt").map(str::to_string))
        .collect();
    files.sort();
    files
}

#[test]
fn every_golden_case_has_a_file_and_every_file_a_case() {
    let names = |cases: &[(&str, &str)]| {
        let mut names: Vec<String> = cases.iter().map(|(n, _)| n.to_string()).collect();
        names.sort();
        names
    };
    assert_eq!(golden_names("tests/golden"), names(CASES));
    assert_eq!(golden_names("tests/golden/graphs"), names(GRAPH_CASES));
}

#[test]
fn every_template_in_pipelines_dir_has_a_case() {
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root().join("pipelines")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        if name.ends_with(".pipeline")
            && !CASES
                .iter()
                .any(|(_, body)| body.contains(&format!("\"{name}\"")))
        {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "templates without a golden case: {missing:?}"
    );
}

#[test]
fn rendered_pipelines_build_in_gstreamer() {
    // Registers camstream's own elements too (camstreamjpegdec). Built,
    // not started: nothing is opened.
    camstream::pipeline::init().unwrap();
    for (name, body) in CASES {
        let plan = render(body);
        Pipeline::validate(&plan).unwrap_or_else(|e| panic!("{name}: {e}\n{}", plan.description));
    }
}

#[test]
fn passwords_never_reach_a_rendered_pipeline() {
    for (name, body) in CASES {
        let description = render(body).description;
        for secret in ["12345", ":pw@", ":p@"] {
            assert!(!description.contains(secret), "{name}: {description}");
        }
    }
}

#[test]
fn the_example_config_is_valid() {
    let path = root().join("camstream.example.toml");
    let config = Config::load(&path).expect("camstream.example.toml parses");
    assert!(config.problems.is_empty(), "{:?}", config.problems);
    assert!(config.cameras.len() >= 3);
    for camera in &config.cameras {
        let settings = camera
            .settings
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: {e}", camera.id));
        settings.plan().expect("renders");
        assert!(!settings.source_display().contains("12345"));
    }
}
