//! `camstream check`: validate a config the way the server reads it, and
//! check that this machine can build every camera's pipeline, without
//! opening any camera.
//!
//! One line per finding, `error:` or `warning:`, each naming the camera,
//! the file and line of its entry, and the fix. Errors are what would fail
//! a camera whatever happens (a bad value, a missing GStreamer element);
//! warnings depend on the moment (a webcam not plugged in, a decoder that
//! only some cameras need). The exit status is non-zero on any error.

use std::fmt;
use std::io::Write;
use std::path::Path;

use anyhow::anyhow;

use super::ConfigArgs;
use crate::config::{CameraEntry, CameraSettings, Config};
use crate::pipeline;
use crate::redact::KnownSecrets;
use crate::source::Source;

/// What `camstream check` takes.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warning,
    Error,
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    /// `file:line` of the camera's entry, or of the problem.
    pub location: Option<String>,
    /// The camera, when the finding is about one: `"id"`, with its name
    /// when it has its own.
    pub camera: Option<String>,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Error => "error",
        };
        write!(f, "{level}: ")?;
        if let Some(location) = &self.location {
            write!(f, "{location}: ")?;
        }
        if let Some(camera) = &self.camera {
            write!(f, "camera {camera}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Reads the config named by `args` and writes the report to `out`, every
/// line masked with the config's secrets (which `secrets` learns, for the
/// log lines). Ok(true) when nothing is wrong enough to fail a camera.
pub fn run(args: &CheckArgs, secrets: &KnownSecrets, out: &mut impl Write) -> anyhow::Result<bool> {
    let path = args.config.file().ok_or_else(|| {
        anyhow!(
            "no config to check: pass --config FILE (or set CAMSTREAM_CONFIG), or run in the \
             directory that holds camstream.toml"
        )
    })?;
    let config = match Config::load_with(&path, &args.config.overrides()) {
        Ok(config) => config,
        Err(e) => {
            // A file the server would refuse to start with: one line, as
            // for every other problem.
            writeln!(out, "error: {}", secrets.redact(&e.to_string()))?;
            writeln!(out, "{}: cannot be used", path.display())?;
            return Ok(false);
        }
    };
    secrets.learn(&config.redactor());
    let redactor = secrets.redactor();
    let findings = check(&config);
    for finding in &findings {
        writeln!(out, "{}", redactor.redact(&finding.to_string()))?;
    }
    let count = |level| findings.iter().filter(|f| f.level == level).count();
    let (errors, warnings) = (count(Level::Error), count(Level::Warning));
    writeln!(
        out,
        "{}: {} camera(s){}, {errors} error(s), {warnings} warning(s)",
        path.display(),
        if config.upstreams.is_empty() {
            config.cameras.len().max(1)
        } else {
            config.cameras.len()
        },
        match config.upstreams.len() {
            0 => String::new(),
            n => format!(" and {n} upstream(s)"),
        },
    )?;
    Ok(errors == 0)
}

/// Every finding for a loaded config: problems with the file's entries
/// first, then each camera in file order.
pub fn check(config: &Config) -> Vec<Finding> {
    let mut findings: Vec<Finding> = config
        .problems
        .iter()
        .map(|problem| Finding {
            level: Level::Error,
            location: None,
            camera: None,
            message: problem.clone(),
        })
        .collect();
    if let Some(tls) = &config.server.tls {
        let (level, message) = match crate::tls::inspect(tls) {
            Ok(Some(info)) => (
                Level::Ok,
                format!(
                    "HTTPS certificate {}: valid until {}, SHA-256 fingerprint {}",
                    info.cert_path.display(),
                    info.not_after,
                    info.fingerprint
                ),
            ),
            Ok(None) => (
                Level::Ok,
                format!(
                    "HTTPS: a self-signed certificate will be made at start in {}",
                    tls.files().0.display()
                ),
            ),
            Err(e) => (Level::Error, e.to_string()),
        };
        findings.push(Finding {
            level,
            location: config.path.as_ref().map(|p| p.display().to_string()),
            camera: None,
            message,
        });
    }
    for upstream in &config.upstreams {
        findings.push(Finding {
            level: Level::Ok,
            location: config.path.as_ref().map(|p| p.display().to_string()),
            camera: None,
            message: format!(
                "upstream {}: {}, its cameras served as {}.<camera id> (read from it at start)",
                upstream.name,
                upstream.display(),
                upstream.name
            ),
        });
    }
    let demo;
    let cameras = if config.cameras.is_empty() && config.upstreams.is_empty() {
        findings.push(Finding {
            level: Level::Warning,
            location: config.path.as_ref().map(|p| p.display().to_string()),
            camera: None,
            message: "no [[cameras]]: camstream serves its built-in demo camera".into(),
        });
        demo = Config::demo().cameras;
        &demo
    } else {
        &config.cameras
    };
    for entry in cameras {
        check_camera(entry, &mut findings);
    }
    // Listing decoders needs GStreamer, which nothing above started for a
    // relay with no camera of its own.
    match crate::pipeline::init() {
        Ok(()) => findings.extend(hardware_decoders()),
        Err(e) => findings.push(Finding {
            level: Level::Error,
            location: None,
            camera: None,
            message: e.to_string(),
        }),
    }
    findings
}

/// The hardware decoders installed here, each opened once to see that it
/// works; where there is none, why VA-API has none if its plugin is here.
fn hardware_decoders() -> Vec<Finding> {
    let finding = |level, message| Finding {
        level,
        location: None,
        camera: None,
        message,
    };
    let (decoders, va_problem) = pipeline::hardware_decoders();
    if decoders.is_empty() {
        let why = va_problem.map(|p| format!("; {p}")).unwrap_or_default();
        return vec![finding(
            Level::Ok,
            format!("no hardware video decoder is available here: cameras decode in software{why}"),
        )];
    }
    decoders
        .into_iter()
        .map(|d| {
            let what = format!(
                "hardware decoder {} ({}; {})",
                d.name,
                d.family.name(),
                d.codecs
            );
            match d.opens {
                Ok(()) => finding(Level::Ok, format!("{what}: opens")),
                // A warning: cameras fall back by themselves.
                Err(reason) => finding(
                    Level::Warning,
                    format!(
                        "{what} cannot be opened: {reason}: cameras decode in software instead (a \
                         container needs the device and its group: docs/docker.md, Hardware \
                         decoding)"
                    ),
                ),
            }
        })
        .collect()
}

fn check_camera(entry: &CameraEntry, findings: &mut Vec<Finding>) {
    let camera = if entry.name == entry.id.as_str() {
        format!("\"{}\"", entry.id)
    } else {
        format!("\"{}\" ({})", entry.id, entry.name)
    };
    let mut finding = |level, message: String| {
        // A camera's config errors already start with its location.
        let message = match &entry.location {
            Some(at) => message
                .strip_prefix(&format!("{at}: "))
                .map(str::to_string)
                .unwrap_or(message),
            None => message,
        };
        findings.push(Finding {
            level,
            location: entry.location.clone(),
            camera: Some(camera.clone()),
            message,
        });
    };
    let settings = match &entry.settings {
        Ok(settings) => settings,
        Err(reason) => return finding(Level::Error, reason.clone()),
    };
    let plan = match settings.plan() {
        Ok(plan) => plan,
        Err(e) => return finding(Level::Error, e.to_string()),
    };
    let found = pipeline::check_plan(
        &plan,
        settings.source.as_ref(),
        settings.scale,
        settings.redactor(),
    );
    let warnings: Vec<String> = found
        .warnings
        .into_iter()
        .chain(absent_source(settings))
        .chain(unusable_decoder(settings, &plan.description))
        .collect();
    if found.errors.is_empty() && warnings.is_empty() {
        return finding(Level::Ok, describe(settings));
    }
    for error in found.errors {
        finding(Level::Error, error);
    }
    for warning in warnings {
        finding(Level::Warning, warning);
    }
}

/// A device or file source that is not there now. Only a warning: a webcam
/// can be plugged in and a file mounted after camstream starts, and the
/// camera retries until they are.
fn absent_source(settings: &CameraSettings) -> Option<String> {
    match settings.source.as_ref()? {
        Source::V4l2 { device } if !Path::new(device).exists() => Some(format!(
            "{device} does not exist: connect the webcam, or give the container the device \
             (docker run --device {device}, or devices: in docker-compose.yml)"
        )),
        Source::File { path } if !path.exists() => Some(format!(
            "{} does not exist: camstream resolves a relative path from its working directory; \
             in a container, mount the file",
            path.display()
        )),
        _ => None,
    }
}

/// A `decoder` family the camera cannot use: none of its decoders is
/// installed (the camera decodes in software), or the pipeline has no
/// decodebin whose choice it could steer.
fn unusable_decoder(settings: &CameraSettings, description: &str) -> Option<String> {
    let setting = settings.decoder;
    let family = setting.family()?;
    if !description.contains("decodebin") {
        return Some(format!(
            "decoder = \"{setting}\" has no effect: this camera's pipeline has no decodebin, and \
             camstream chooses only what decodebin plugs (a template names its decoder itself)"
        ));
    }
    (!pipeline::family_installed(family)).then(|| {
        format!(
            "decoder = \"{setting}\", but no {} decoder is installed here: the camera decodes in \
             software (camstream check lists the hardware decoders it finds)",
            family.name()
        )
    })
}

/// "rtsp://admin:***@host/path via rtsp-h264.pipeline: ...".
fn describe(settings: &CameraSettings) -> String {
    let via = match (&settings.source, &settings.pipeline) {
        (Some(_), Some(o)) => format!(" via {}", o.origin),
        _ => String::new(),
    };
    format!(
        "{}{via}: the pipeline builds, every element is installed",
        settings.source_display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decoder_family_without_decodebin_has_no_effect() {
        crate::pipeline::init().unwrap();
        let text = "[[cameras]]\nid = \"raw\"\nsource = \"videotestsrc ! video/x-raw\"\n\
                    decoder = \"v4l2\"\n\n\
                    [[cameras]]\nid = \"soft\"\nsource = \"rtsp://192.0.2.1/x\"\n\
                    decoder = \"software\"\n";
        let config = Config::parse(text, Some(Path::new("cams.toml"))).unwrap();
        let lines: Vec<String> = check(&config).iter().map(ToString::to_string).collect();
        assert!(
            lines[0].starts_with(
                "warning: cams.toml:1: camera \"raw\": decoder = \"v4l2\" has no effect"
            ),
            "{lines:?}"
        );
        // Software needs nothing installed.
        assert!(
            lines[1].starts_with("ok: cams.toml:6: camera \"soft\""),
            "{lines:?}"
        );
    }

    #[test]
    fn a_relay_lists_its_upstreams_and_no_demo_camera() {
        crate::pipeline::init().unwrap();
        let text = "[[upstreams]]\nname = \"edge-1\"\nurl = \"https://edge-1:8000\"\n\
                    token = \"relay-token-0123456789\"\n";
        let config = Config::parse(text, Some(Path::new("relay.toml"))).unwrap();
        let lines: Vec<String> = check(&config).iter().map(ToString::to_string).collect();
        assert!(
            lines[0].starts_with(
                "ok: relay.toml: upstream edge-1: https://edge-1:8000, its cameras served as edge-1.<camera id>"
            ),
            "{lines:?}"
        );
        assert!(!lines.iter().any(|l| l.contains("demo")), "{lines:?}");
        assert!(
            !lines.iter().any(|l| l.contains("relay-token")),
            "{lines:?}"
        );
    }

    #[test]
    fn findings_name_the_camera_and_line() {
        let text = "[[cameras]]\nid = \"good\"\nsource = \"test:\"\n\n\
                    [[cameras]]\nid = \"bad\"\nsource = \"rtsp://u:hunter2@h/x\"\nscale = 3\n\n\
                    [[cameras]]\nid = \"gone\"\nsource = \"videotestsrc ! nosuchelement\"\n";
        let config = Config::parse(text, Some(Path::new("cams.toml"))).unwrap();
        let lines: Vec<String> = check(&config).iter().map(ToString::to_string).collect();
        // The cameras, then the hardware decoders: none here.
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert!(
            lines[3].starts_with("ok: no hardware video decoder is available here"),
            "{lines:?}"
        );
        assert!(
            lines[0].starts_with("ok: cams.toml:1: camera \"good\""),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("error: cams.toml:5: camera \"bad\": scale = 3"),
            "{lines:?}"
        );
        assert!(!lines[1].contains("hunter2"), "{lines:?}");
        assert!(
            lines[2].starts_with(
                "error: cams.toml:10: camera \"gone\": GStreamer element \"nosuchelement\""
            ),
            "{lines:?}"
        );
    }
}
