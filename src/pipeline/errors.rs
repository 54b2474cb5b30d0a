//! GStreamer bus errors as a person should read them: what went wrong with
//! which source, and what to do about it. The raw messages ("Could not open
//! resource for reading and writing.") say neither.
//!
//! The mapping is by element factory and error code, checked against what
//! GStreamer 1.22 actually posts (tests/errors.rs provokes each case).

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::redact::Redactor;

/// The friendly text for a bus error, with passwords masked.
pub fn describe_error(err: &gst::message::Error, redactor: &Redactor) -> String {
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
            if error.matches(gst::ResourceError::NotAuthorized) {
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
                Some(code) if code >= 400 => Some(format!(
                    "the HTTP server answered {code} for {at}: check the URL of the MJPEG stream"
                )),
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
