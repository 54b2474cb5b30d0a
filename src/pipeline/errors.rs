//! GStreamer bus errors as a person should read them: what went wrong with
//! which source, and what to do about it. The raw messages ("Could not open
//! resource for reading and writing.") say neither.
//!
//! The mapping is by element factory and error code, checked against what
//! GStreamer 1.22 actually posts (tests/errors.rs provokes each case).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use gstreamer as gst;
use gstreamer::prelude::*;

use super::PipelineError;
use super::transport::{FailureKind, TransportFailure};
use crate::redact::Redactor;
use crate::source::LowerTransport;

/// What a pipeline knows about its source beyond the bus message, to say
/// what an error means.
#[derive(Clone, Debug, Default)]
pub struct ErrorContext {
    pub redactor: Redactor,
    /// The RTSP lower transport this attempt uses.
    pub transport: Option<LowerTransport>,
    /// The `GTlsCertificateFlags` of a server certificate camstream refused
    /// (rtspsrc's `accept-certificate`), 0 if none was.
    pub tls_refused: Arc<AtomicU32>,
}

/// What a bus error means for camstream: a transport that did not work
/// (another may), or the friendly text of anything else.
pub fn bus_error(err: &gst::message::Error, ctx: &ErrorContext) -> PipelineError {
    if let Some(decoder) = super::hwdec::steered_hardware_decoder(err) {
        return PipelineError::HardwareDecoder(super::HardwareFailure {
            decoder,
            reason: describe_error(err, ctx),
        });
    }
    let error = err.error();
    let is_rtspsrc = err
        .src()
        .and_then(|s| s.clone().downcast::<gst::Element>().ok())
        .and_then(|e| e.factory())
        .is_some_and(|f| f.name() == "rtspsrc");
    if let (true, Some(transport)) = (is_rtspsrc, ctx.transport) {
        let at = || {
            let location = err
                .src()
                .filter(|s| s.has_property_with_type("location", gst::glib::Type::STRING))
                .and_then(|s| s.property::<Option<String>>("location"))
                .unwrap_or_default();
            ctx.redactor.redact(&host_port(&location))
        };
        let debug = err.debug().map(|d| d.to_string()).unwrap_or_default();
        // rtspsrc's wording for a SETUP refused with 461 (and nothing else
        // to try), gstrtspsrc.c `nothing_to_activate`; and for a server
        // that offered only transports not allowed (multicast), gstrtspsrc.c
        // `no_protocols`.
        if (error.matches(gst::StreamError::CodecNotFound)
            && error.message().contains("transport protocols"))
            || debug.contains("no protocols left")
        {
            return PipelineError::Transport(TransportFailure {
                transport,
                at: at(),
                kind: FailureKind::Refused,
            });
        }
        // gstrtspsrc.c `gst_rtspsrc_reconnect`, when UDP was the only
        // protocol allowed: "Could not receive any UDP packets for 5.0000
        // seconds, maybe your firewall is blocking it."
        if let Some(rest) = debug.split("Could not receive any UDP packets for ").nth(1) {
            let after_s = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<f64>().ok())
                .map_or(5, |n| n.round() as u32);
            return PipelineError::Transport(TransportFailure {
                transport,
                at: at(),
                kind: FailureKind::NoUdpPackets { after_s },
            });
        }
    }
    PipelineError::Runtime(describe_error(err, ctx))
}

/// The friendly text for a bus error, with passwords masked.
pub fn describe_error(err: &gst::message::Error, ctx: &ErrorContext) -> String {
    let redactor = &ctx.redactor;
    let error = err.error();
    let detail = detail_line(err.debug().as_deref());
    let element = err
        .src()
        .and_then(|s| s.clone().downcast::<gst::Element>().ok());
    let factory = element
        .as_ref()
        .and_then(|e| e.factory())
        .map(|f| f.name().to_string())
        .unwrap_or_default();
    let name = err
        .src()
        .map(|s| s.name().to_string())
        .unwrap_or_else(|| "pipeline".into());
    let property = |key: &str| {
        element
            .as_ref()
            .filter(|e| e.has_property_with_type(key, gst::glib::Type::STRING))
            .and_then(|e| e.property::<Option<String>>(key))
            .unwrap_or_default()
    };
    let detail_has = |needle: &str| detail.as_deref().is_some_and(|d| d.contains(needle));

    let friendly = match factory.as_str() {
        "rtspsrc" => {
            let at = host_port(&property("location"));
            let tls_refused = ctx.tls_refused.load(Ordering::Relaxed);
            if tls_refused != 0 {
                Some(format!(
                    "the RTSP server at {at} presented a TLS certificate camstream cannot verify ({}): \
                     if this is the camera's own certificate, set tls_verify = false for this camera, \
                     or add the certificate of the authority that issued it to the system's trust store",
                    certificate_problems(tls_refused)
                ))
            } else if error.matches(gst::ResourceError::NotAuthorized) {
                Some(format!(
                    "the RTSP server at {at} refused the credentials (401 Unauthorized): \
                     check the user name and password in the camera's source (rtsp://user:password@host/...)"
                ))
            } else if error.matches(gst::ResourceError::NotFound) {
                Some(format!(
                    "the RTSP server at {at} has no stream at this path (404 Not Found): \
                     check the path in the camera's source (Hikvision: /Streaming/Channels/101)"
                ))
            } else if error.matches(gst::ResourceError::OpenReadWrite) {
                Some(format!(
                    "cannot connect to the RTSP server at {at} (connection refused, host unreachable \
                     or unknown host name): check the host and port in the camera's source, and that the camera is on"
                ))
            } else if detail_has("Timeout") || detail_has("timeout") {
                Some(format!(
                    "the RTSP server at {at} did not answer in time: check that the address is the camera's \
                     RTSP port (554 by default) and that the network lets RTSP through"
                ))
            } else {
                None
            }
        }
        "souphttpsrc" => {
            let at = property("location");
            let status = err
                .details()
                .and_then(|d| d.get::<u32>("http-status-code").ok());
            match status {
                Some(401 | 403) => Some(format!(
                    "the HTTP server refused access to {at} ({}): check the user name and password in the camera's source",
                    status.unwrap_or_default()
                )),
                _ if error.matches(gst::StreamError::WrongType) => Some(format!(
                    "the HTTP source {at} answered with neither an MJPEG stream nor a JPEG image ({}): \
                     point source at the camera's MJPEG stream or snapshot URL",
                    error.message()
                )),
                Some(code) if code >= 400 => Some(format!(
                    "the HTTP server answered {code} for {at}: check the URL of the MJPEG stream"
                )),
                // souphttpsrc 1.22 reports a refused TLS certificate as no
                // more than "Internal data stream error", like a refused
                // connection.
                _ if error.matches(gst::StreamError::Failed) && at.starts_with("https:") => {
                    Some(format!(
                        "cannot read the HTTPS source {at} (connection refused, the server closed the \
                         connection, or its TLS certificate is not trusted): check the URL and that the \
                         server is up; for a camera's own self-signed certificate, set tls_verify = false \
                         for this camera"
                    ))
                }
                _ if error.matches(gst::StreamError::Failed) => Some(format!(
                    "cannot read the HTTP source {at} (connection refused, or the server closed the connection): \
                     check the URL and that the server is up"
                )),
                _ => None,
            }
        }
        "multipartdemux" => Some(
            "the HTTP source is not an MJPEG stream (no multipart/x-mixed-replace boundary): \
             point source at the stream itself (e.g. /video.mjpg), not at a web page or a single image"
                .to_string(),
        ),
        "v4l2src" => {
            let device = property("device");
            if error.matches(gst::ResourceError::NotFound) {
                Some(format!(
                    "V4L2 device {device} does not exist: check the device number (ls /dev/video*) and, \
                     in a container, pass the device in (--device {device})"
                ))
            } else if detail_has("Permission denied") {
                Some(format!(
                    "no permission to open {device}: run camstream as a user in the `video` group"
                ))
            } else if error.matches(gst::ResourceError::Settings)
                || error.message().contains("isn't a v4l2 driver")
                || error.message().contains("not a capture device")
            {
                Some(format!(
                    "{device} is not a V4L2 video capture device: use the webcam's capture node \
                     (v4l2-ctl --list-devices shows which /dev/videoN captures)"
                ))
            } else if error.matches(gst::ResourceError::Busy) || detail_has("busy") {
                Some(format!(
                    "{device} is busy: another program is using the webcam"
                ))
            } else {
                None
            }
        }
        "filesrc" if error.matches(gst::ResourceError::NotFound) => Some(format!(
            "file {} does not exist: check the path in the camera's source",
            property("location")
        )),
        "typefind" => Some(
            "the source's data is not a format GStreamer can read: check that it is a video stream or file".to_string(),
        ),
        _ => None,
    };
    let text = match friendly {
        Some(text) => text,
        None if error.matches(gst::StreamError::Failed) && detail_has("not-negotiated") => format!(
            "{name}: formats do not fit together (not-negotiated): a whole-pipeline override must hand \
             image/jpeg to `appsink name=sink`, a fragment must output raw video"
        ),
        None => match detail {
            Some(detail) if detail != error.message() => {
                format!("{name}: {} ({detail})", error.message())
            }
            _ => format!("{name}: {}", error.message()),
        },
    };
    redactor.redact(&text)
}

/// What is wrong with a refused certificate, from its
/// `GTlsCertificateFlags` (stable values, gio/gioenums.h).
fn certificate_problems(flags: u32) -> String {
    const PROBLEMS: &[(u32, &str)] = &[
        (
            0x01,
            "not issued by a trusted authority: self-signed, as cameras ship",
        ),
        (0x02, "made out for another host name"),
        (0x04, "not valid yet"),
        (0x08, "expired"),
        (0x10, "revoked"),
        (0x20, "uses insecure algorithms"),
    ];
    let found: Vec<_> = PROBLEMS
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, text)| *text)
        .collect();
    if found.is_empty() {
        "it failed validation".into()
    } else {
        found.join("; ")
    }
}

/// The debug string is "file.c(line): function (): /Gst/Path:\ndetail";
/// the detail is the useful part.
fn detail_line(debug: Option<&str>) -> Option<String> {
    debug
        .and_then(|d| d.lines().last())
        .map(str::trim)
        .filter(|d| !d.is_empty() && !d.starts_with("../"))
        .map(str::to_string)
}

/// "host:port" of a URL, for messages; the whole text if it is no URL.
fn host_port(location: &str) -> String {
    match url::Url::parse(location) {
        Ok(url) => match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => format!("{host}:554"),
            _ => location.to_string(),
        },
        Err(_) if location.is_empty() => "the camera".to_string(),
        Err(_) => location.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port() {
        assert_eq!(host_port("rtsp://cam.local/x"), "cam.local:554");
        assert_eq!(host_port("rtsp://10.0.0.2:8554/x"), "10.0.0.2:8554");
        assert_eq!(host_port(""), "the camera");
    }

    #[test]
    fn detail_is_the_last_line() {
        assert_eq!(
            detail_line(Some(
                "../a.c(1): f (): /GstPipeline:p/GstRTSPSrc:s:\nNot Found (404)"
            )),
            Some("Not Found (404)".into())
        );
        assert_eq!(detail_line(Some("../a.c(1): f ():")), None);
        assert_eq!(detail_line(None), None);
    }
}
