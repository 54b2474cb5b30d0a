//! `camstream check` for one camera: build its pipeline as the camera would,
//! without starting it, so every element it names must be installed; and
//! look for the elements `decodebin` will pick only at run time, which
//! parsing the description cannot see.

use gstreamer as gst;

use super::{FrameOutput, Pipeline, PipelineError, missing_element_hint};
use crate::redact::Redactor;
use crate::source::{PipelinePlan, Source};

/// What decodebin plugs at run time for the streams cameras commonly send,
/// by source kind: `(kind, what, elements)`. These are the elements Debian's
/// GStreamer picks (libav decoders rank above the rest). JPEG is decoded by
/// camstream's own elements, which building the plan already checks.
const AUTOPLUGGED: &[(&str, &str, &[&str])] = &[
    (
        "rtsp",
        "H.264 cameras",
        &["rtph264depay", "h264parse", "avdec_h264"],
    ),
    (
        "rtsp",
        "H.265 cameras",
        &["rtph265depay", "h265parse", "avdec_h265"],
    ),
    ("rtsp", "MJPEG cameras", &["rtpjpegdepay"]),
    (
        "file",
        "H.264 in MP4 or Matroska files",
        &["qtdemux", "matroskademux", "h264parse", "avdec_h264"],
    ),
];

/// What checking one camera's pipeline found, one message per problem.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanCheck {
    /// What fails the camera at once: each missing element with its Debian
    /// package, or why the description does not build.
    pub errors: Vec<String>,
    /// Elements decodebin may need at run time that are not installed, each
    /// naming its Debian package.
    pub warnings: Vec<String>,
}

/// Builds `plan` as a camera would (the source bin, camstream's own
/// elements, or a whole pipeline's appsink) and drops it without starting
/// it: nothing is opened or connected. Every size is built of the same
/// elements, so the default one (at `scale`) stands for all.
pub fn check_plan(
    plan: &PipelinePlan,
    source: Option<&Source>,
    scale: f64,
    redactor: Redactor,
) -> PlanCheck {
    let errors = match Pipeline::build(plan, FrameOutput::standalone(scale), redactor) {
        Ok(_) => Vec::new(),
        // One problem per missing element, each with its package.
        Err(PipelineError::MissingElement(missing)) => {
            missing.iter().map(|e| missing_element_hint(e)).collect()
        }
        Err(e) => vec![e.to_string()],
    };
    let mut warnings = Vec::new();
    if let Some(kind) = source.map(Source::kind)
        && plan.description.contains("decodebin")
    {
        for (_, what, elements) in AUTOPLUGGED.iter().filter(|(k, _, _)| *k == kind) {
            for element in elements.iter().filter(|e| !is_installed(e)) {
                warnings.push(format!(
                    "decodebin needs {element} for {what}: {}",
                    missing_element_hint(element)
                ));
            }
        }
    }
    PlanCheck { errors, warnings }
}

/// Whether GStreamer's registry has an element factory of that name.
pub fn is_installed(element: &str) -> bool {
    gst::ElementFactory::find(element).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{PipelineText, RenderOptions, plan};

    fn plan_of(text: &str) -> PipelinePlan {
        let source = Source::parse(text).unwrap();
        plan(
            Some(&source),
            PipelineText::Source,
            &RenderOptions::default(),
        )
        .unwrap()
    }

    #[test]
    fn installed_pipelines_pass_and_missing_elements_name_their_package() {
        super::super::init().unwrap();
        let ok = plan_of("rtsp://user:pw@camera.invalid/stream");
        let source = Source::parse("rtsp://camera.invalid/stream").unwrap();
        // The test machine has every package camstream uses installed.
        assert_eq!(
            check_plan(&ok, Some(&source), 0.25, Redactor::default()),
            PlanCheck::default()
        );

        let missing = plan_of("videotestsrc ! nosuchelement ! avdec_h264 ! x264enc_missing");
        let found = check_plan(&missing, None, 0.25, Redactor::default());
        assert_eq!(found.errors.len(), 2, "{found:?}");
        assert!(found.errors[0].contains("\"nosuchelement\""), "{found:?}");
        assert!(found.errors[1].contains("\"x264enc_missing\""), "{found:?}");
    }
}
