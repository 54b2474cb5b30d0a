//! What masking secrets costs, per log line and per API response: the only
//! places it runs (the frame path never calls the redactor).
//!
//! `cargo bench --bench redact` prints nanoseconds per call for a redactor
//! that knows the secrets of 60 cameras and an auth section. Under `cargo
//! test` it runs each case once, as a check that it still runs.

use std::hint::black_box;
use std::time::Instant;

use camstream::redact::{KnownSecrets, Redactor, find_secrets, redact_text};

/// Cameras whose secrets the redactor knows: a large installation.
const CAMERAS: usize = 60;

/// One measured call; returns something so it is not optimised away.
type Case = Box<dyn Fn() -> usize>;

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let mut secrets: Vec<String> = Vec::new();
    for i in 0..CAMERAS {
        secrets.extend(find_secrets(&format!(
            "rtsp://admin:Cam{i:02}-p@ss!word@192.168.1.{i}:554/Streaming/Channels/101"
        )));
    }
    secrets.push("admin-token-0123456789abcdef".into());
    secrets.push("view-token-0123456789abcdef".into());
    let known = KnownSecrets::default();
    known.learn(&Redactor::new(secrets));
    let redactor = known.redactor();

    let plain = "2026-01-01T10:00:00.000000Z  INFO camera{id=\"gate\"}: camstream::camera: \
                 pipeline started source=rtsp://admin:***@192.168.1.7:554/Streaming/Channels/101";
    let with_secret = "2026-01-01T10:00:00.000000Z  WARN camera{id=\"gate\"}: camstream::camera: \
                       camera error: cannot read http://192.168.1.7/videostream.cgi?user=admin&pwd=Cam07-p@ss!word \
                       retry_in_ms=500";
    let json_line = format!(
        "{{\"timestamp\":\"2026-01-01T10:00:00.000000Z\",\"level\":\"WARN\",\"fields\":{{\"message\":\"{}\",\
         \"retry_in_ms\":500}},\"target\":\"camstream::camera\",\"span\":{{\"id\":\"gate\",\"name\":\"camera\"}}}}",
        &with_secret[60..]
    );
    // What Camera::info masks for each camera GET /api/cameras lists.
    let name = "Gate";
    let source = "rtsp://admin:***@192.168.1.7:554/Streaming/Channels/101";
    let last_error = "cannot connect to the RTSP server at 192.168.1.7:554 (connection refused, \
                      host unreachable or unknown host name): check the host and port";

    let cases: Vec<(&str, Case)> = vec![
        (
            "rules only, text log line, nothing to mask",
            Box::new(move || redact_text(plain).len()),
        ),
        ("text log line, nothing to mask", {
            let r = redactor.clone();
            Box::new(move || r.redact(plain).len())
        }),
        ("text log line with a query password", {
            let r = redactor.clone();
            Box::new(move || r.redact(with_secret).len())
        }),
        ("JSON log line with a query password", {
            let r = redactor.clone();
            Box::new(move || r.redact_json(&json_line).len())
        }),
        ("snapshot of the known secrets (per log line)", {
            let k = known.clone();
            Box::new(move || k.redactor().len())
        }),
        ("one camera's API object (name, source, last_error)", {
            let r = redactor.clone();
            Box::new(move || {
                r.redact(name).len() + r.redact(source).len() + r.redact(last_error).len()
            })
        }),
        (
            "building the redactor of 60 cameras (each reload)",
            Box::new(move || {
                let known = KnownSecrets::default();
                known.learn(&Redactor::new(
                    (0..CAMERAS).map(|i| format!("Cam{i:02}-p@ss!word")),
                ));
                known.redactor().len()
            }),
        ),
    ];
    for (what, case) in &cases {
        if !measuring {
            black_box(case());
            continue;
        }
        // Warm up, then time enough calls for a stable figure.
        for _ in 0..100 {
            black_box(case());
        }
        let mut calls = 0u64;
        let started = Instant::now();
        while started.elapsed().as_millis() < 500 {
            for _ in 0..50 {
                black_box(case());
            }
            calls += 50;
        }
        let ns = started.elapsed().as_nanos() as f64 / calls as f64;
        println!("{ns:>12.0} ns  {what}");
    }
    if !measuring {
        println!(
            "redact bench: {} cases ran once (cargo bench --bench redact measures)",
            cases.len()
        );
    }
}
