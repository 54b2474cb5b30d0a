//! The camera REST API: `POST /api/cameras`, `PUT /api/cameras/{id}`,
//! `DELETE /api/cameras/{id}`.
//!
//! A camera is sent as JSON with exactly the keys of a `[[cameras]]` entry,
//! and checked by the same code as the config file, so the errors are the
//! same. A change is saved to the config file (see [`crate::config_edit`])
//! before it is applied, and applied at once without touching the other
//! cameras (see [`crate::control`]). Who may call these is decided before
//! they run (see [`super::access`]).

use serde::Deserialize;
use serde_json::Value;
use warp::Reply;
use warp::http::{HeaderValue, StatusCode, header};

use super::{ApiError, ApiResult, AppState, json};
use crate::config::{CameraConfig, CameraId};
use crate::control::ManageError;
use crate::redact::Redactor;
use crate::source::Source;

/// Largest request body: a camera with a long inline pipeline is a few
/// kilobytes; anything near this is not a camera.
pub const MAX_BODY: u64 = 64 * 1024;

pub(super) async fn create(state: &AppState, content_type: Option<&str>, body: &[u8]) -> ApiResult {
    let camera = parse_camera(content_type, body, None)?;
    allowed_over_http(state, &camera)?;
    let camera = state.control.create(camera).await?;
    let mut response = json(&camera.info());
    *response.status_mut() = StatusCode::CREATED;
    if let Ok(location) = HeaderValue::from_str(&format!("/api/cameras/{}", camera.id())) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

pub(super) async fn update(
    state: &AppState,
    id: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> ApiResult {
    let id = CameraId::new(id).map_err(ApiError::BadId)?;
    let camera = parse_camera(content_type, body, Some(&id))?;
    allowed_over_http(state, &camera)?;
    let camera = state.control.update(camera).await?;
    Ok(json(&camera.info()))
}

pub(super) async fn delete(state: &AppState, id: &str) -> ApiResult {
    let id = CameraId::new(id).map_err(ApiError::BadId)?;
    state.control.delete(&id).await?;
    let mut response = warp::reply::Response::new(Default::default());
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response.into_response())
}

/// Raw gst-launch text (a `pipeline`, or a `source` with `!`) can name any
/// element, `filesink` and `souphttpsrc` included: over HTTP it is a
/// shell account, so it needs `[server] api_pipelines = true`. Sources and
/// `pipeline_file` templates (which come from the pipelines directory, not
/// the request) are always allowed.
fn allowed_over_http(state: &AppState, camera: &CameraConfig) -> Result<(), ApiError> {
    if state.control.security().api_pipelines {
        return Ok(());
    }
    let launch_source = camera
        .source
        .as_ref()
        .and_then(|s| s.parse().ok())
        .is_some_and(|s| matches!(s, Source::Launch { .. }));
    if camera.pipeline.is_some() || launch_source {
        return Err(ApiError::Forbidden(
            "raw GStreamer pipelines (pipeline, or a source with !) cannot be set through the API:              a pipeline can name any element (filesink writes files). Use source or pipeline_file,              edit the config file, or set [server] api_pipelines = true (docs/security.md)"
                .into(),
        ));
    }
    Ok(())
}

/// The body as a camera. `path_id` (PUT) fills in a missing `id` and must
/// equal a given one.
fn parse_camera(
    content_type: Option<&str>,
    body: &[u8],
    path_id: Option<&CameraId>,
) -> Result<CameraConfig, ApiError> {
    let is_json = content_type
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|ct| ct.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        // Also what keeps another site's plain HTML form from posting here
        // with a browser's cached credentials: it cannot send this type.
        return Err(ApiError::UnsupportedMediaType(
            "send the camera as JSON with Content-Type: application/json".into(),
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
    let Value::Object(mut map) = value else {
        return Err(ManageError::Invalid(
            "the body must be a JSON object with the keys of a [[cameras]] entry, e.g. {\"id\": \"gate\", \"source\": \"rtsp://...\"}".into(),
        )
        .into());
    };
    let redactor = body_redactor(&map);
    if let Some(path_id) = path_id {
        match map.get("id") {
            None => {
                map.insert("id".into(), Value::String(path_id.to_string()));
            }
            Some(given) => {
                let same = match given {
                    Value::String(s) => s == path_id.as_str(),
                    Value::Number(n) => n.to_string() == path_id.as_str(),
                    _ => false,
                };
                if !same {
                    return Err(ManageError::Invalid(format!(
                        "the body's id {} differs from the URL's \"{path_id}\": to rename a camera, DELETE it and POST it with the new id",
                        redactor.redact(&given.to_string())
                    ))
                    .into());
                }
            }
        }
    }
    CameraConfig::deserialize(Value::Object(map))
        .map_err(|e| ManageError::Invalid(redactor.redact(&e.to_string())).into())
}

/// Masks every password found in the body's strings: a serde error can
/// quote a value (`invalid type: string "rtsp://u:pw@h", expected f64`).
fn body_redactor(map: &serde_json::Map<String, Value>) -> Redactor {
    Redactor::new(
        map.values()
            .filter_map(Value::as_str)
            .filter_map(|s| Source::parse(s).ok())
            .flat_map(|source| source.secrets()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str, id: Option<&str>) -> Result<CameraConfig, ApiError> {
        let id = id.map(|i| CameraId::new(i).unwrap());
        parse_camera(Some("application/json"), body.as_bytes(), id.as_ref())
    }

    #[test]
    fn bodies_are_checked_like_config_entries() {
        let cam = parse(r#"{"id": 7, "source": "test:", "scale": 0.5}"#, None).unwrap();
        assert_eq!((cam.id.as_str(), cam.scale), ("7", Some(0.5)));
        let err = parse(r#"{"id": "a", "sclae": 1}"#, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `sclae`"), "{err}");
        let err = parse(r#"{"id": "a b"}"#, None).unwrap_err().to_string();
        assert!(err.contains("contains ' '"), "{err}");
        let put = parse(r#"{"source": "test:"}"#, Some("x")).unwrap();
        assert_eq!(put.id.as_str(), "x");
        let err = parse(r#"{"id": "y"}"#, Some("x")).unwrap_err().to_string();
        assert!(err.contains("rename"), "{err}");
        assert!(matches!(
            parse_camera(Some("text/plain"), b"{}", None),
            Err(ApiError::UnsupportedMediaType(_))
        ));
        assert!(matches!(parse("{", None), Err(ApiError::BadRequest(_))));
    }

    #[test]
    fn errors_never_quote_a_password() {
        let err = parse(
            r#"{"id": "a", "source": "rtsp://admin:hunter22@cam/x", "scale": "rtsp://admin:hunter22@cam/x"}"#,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("invalid type") && !err.contains("hunter22"),
            "{err}"
        );
    }
}
