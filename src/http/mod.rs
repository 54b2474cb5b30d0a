//! HTTP: routes, the JSON API, streams and snapshots. This is the one place
//! errors become status codes ([`ApiError`]).

pub mod mjpeg;
pub mod server;
mod ui;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, StatusCode, header};
use warp::{Filter, Rejection, Reply};

use crate::camera::{Camera, OpenError};
use crate::config::CameraId;
use crate::frames::FrameKind;
use crate::registry::Cameras;

/// How long a new viewer or a snapshot waits for a camera's first frame:
/// long enough for an RTSP connect and a key frame, short enough that a
/// browser shows an error rather than hang.
pub const OPEN_WAIT: Duration = Duration::from_secs(10);
/// Retry-After for an unavailable camera, in seconds.
const RETRY_AFTER_S: u64 = 5;
/// Per-viewer frame-rate caps outside this range are refused.
const FPS_RANGE: (f64, f64) = (0.1, 120.0);

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    pub cameras: Arc<Cameras>,
    /// Cancelled at shutdown; open streams end when it is.
    pub shutdown: CancellationToken,
    /// Viewers of all cameras together ([server] max_viewers).
    pub max_viewers: usize,
}

/// An API failure. Every error response is JSON:
/// `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("unknown camera \"{0}\": GET /api/cameras lists the cameras")]
    UnknownCamera(CameraId),
    #[error("malformed camera id: {0}")]
    BadId(String),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("no such endpoint: {0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error(
        "the server already has its maximum of {0} viewers ([server] max_viewers): try again later"
    )]
    ServerFull(usize),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::UnknownCamera(_) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadId(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Open(_) | ApiError::ServerFull(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::UnknownCamera(_) => "unknown_camera",
            ApiError::BadId(_) => "bad_camera_id",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Open(OpenError::Unavailable { .. }) => "camera_unavailable",
            ApiError::Open(OpenError::Timeout { .. }) => "camera_timeout",
            ApiError::Open(OpenError::TooManyViewers { .. }) | ApiError::ServerFull(_) => {
                "too_many_viewers"
            }
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: String,
}

impl Reply for ApiError {
    fn into_response(self) -> warp::reply::Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
            },
        };
        let mut response =
            warp::reply::with_status(warp::reply::json(&body), self.status()).into_response();
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
        }
        mjpeg::no_cache(response.headers_mut());
        response
    }
}

type ApiResult = Result<warp::reply::Response, ApiError>;

/// Turns a handler's result into a response.
fn respond(result: ApiResult) -> warp::reply::Response {
    result.unwrap_or_else(Reply::into_response)
}

/// All routes.
pub fn routes(state: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let with_state = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };
    let query = warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .map(|q: String| parse_query(&q));

    let index = warp::path::end()
        .and(with_state.clone())
        .map(|state: AppState| ui::index(&state));
    let healthz = warp::path!("healthz")
        .and(with_state.clone())
        .map(|state: AppState| healthz(&state));
    let list = warp::path!("api" / "cameras")
        .and(with_state.clone())
        .map(|state: AppState| respond(list_cameras(&state)));
    let one = warp::path!("api" / "cameras" / String)
        .and(with_state.clone())
        .map(|id: String, state: AppState| respond(camera_info(&state, &id)));
    let stream_route = warp::path!("api" / "cameras" / String / "stream.mjpeg")
        .and(with_state.clone())
        .and(query)
        .then(
            |id: String, state: AppState, q: HashMap<String, String>| async move {
                respond(stream(&state, &id, &q).await)
            },
        );
    let snapshot = warp::path!("api" / "cameras" / String / "snapshot.jpg")
        .and(with_state.clone())
        .then(|id: String, state: AppState| async move { respond(snapshot(&state, &id).await) });
    // The route of the OpenCV + Django backend this replaces, so an
    // existing <img src="/api/cv/display?camera_id=1"> works unchanged.
    let display = warp::path!("api" / "cv" / "display")
        .and(with_state.clone())
        .and(query)
        .then(|state: AppState, q: HashMap<String, String>| async move {
            let result = match q.get("camera_id") {
                Some(id) => stream(&state, id, &q).await,
                None => Err(ApiError::BadRequest(
                    "camera_id is required, e.g. /api/cv/display?camera_id=1".into(),
                )),
            };
            respond(result)
        });

    let get = warp::get().and(
        index
            .or(healthz)
            .unify()
            .or(list)
            .unify()
            .or(one)
            .unify()
            .or(stream_route)
            .unify()
            .or(snapshot)
            .unify()
            .or(display)
            .unify(),
    );
    get.recover(handle_rejection)
        .unify()
        .with(warp::log::custom(|info| {
            // Per request at debug: a page of streams is many requests.
            tracing::debug!(
                method = %info.method(),
                path = info.path(),
                status = info.status().as_u16(),
                elapsed_ms = info.elapsed().as_millis() as u64,
                "request"
            );
        }))
        .map(Reply::into_response)
        .boxed()
}

/// Warp's own rejections (no route, wrong method) in the API's error shape.
async fn handle_rejection(rejection: Rejection) -> Result<warp::reply::Response, Infallible> {
    let error = if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::MethodNotAllowed
    } else {
        ApiError::NotFound("see GET /api/cameras and docs/api.md".into())
    };
    Ok(error.into_response())
}

/// Query parameters, percent-decoded. Repeated keys keep the last value.
fn parse_query(raw: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .collect()
}

fn find_camera(state: &AppState, id: &str) -> Result<Arc<Camera>, ApiError> {
    let id = CameraId::new(id).map_err(ApiError::BadId)?;
    state
        .cameras
        .get(id.as_str())
        .ok_or(ApiError::UnknownCamera(id))
}

fn json<T: Serialize>(value: &T) -> warp::reply::Response {
    let mut response = warp::reply::json(value).into_response();
    mjpeg::no_cache(response.headers_mut());
    response
}

fn healthz(state: &AppState) -> warp::reply::Response {
    #[derive(Serialize)]
    struct Health {
        status: &'static str,
        cameras: usize,
    }
    json(&Health {
        status: "ok",
        cameras: state.cameras.len(),
    })
}

fn list_cameras(state: &AppState) -> ApiResult {
    let cameras: Vec<_> = state.cameras.all().iter().map(|c| c.info()).collect();
    Ok(json(&cameras))
}

fn camera_info(state: &AppState, id: &str) -> ApiResult {
    Ok(json(&find_camera(state, id)?.info()))
}

async fn stream(state: &AppState, id: &str, query: &HashMap<String, String>) -> ApiResult {
    let camera = find_camera(state, id)?;
    let fps = match query.get("fps") {
        None => None,
        Some(raw) => Some(
            raw.parse::<f64>()
                .ok()
                .filter(|f| (FPS_RANGE.0..=FPS_RANGE.1).contains(f))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "fps={raw} is not a frame rate: use a number from {} to {}",
                        FPS_RANGE.0, FPS_RANGE.1
                    ))
                })?,
        ),
    };
    // The total is a sum over cameras: cheap for tens of cameras, and a
    // viewer or two over the limit in a race harms nothing.
    let total: usize = state.cameras.all().iter().map(|c| c.viewer_count()).sum();
    if total >= state.max_viewers {
        return Err(ApiError::ServerFull(state.max_viewers));
    }
    let viewer = camera.open(OPEN_WAIT).await?;
    Ok(mjpeg::response(viewer, fps, state.shutdown.clone()))
}

async fn snapshot(state: &AppState, id: &str) -> ApiResult {
    let camera = find_camera(state, id)?;
    let viewer = camera.open(OPEN_WAIT).await?;
    let frame = viewer
        .camera()
        .hub()
        .latest()
        .filter(|f| f.kind == FrameKind::Live)
        .ok_or_else(|| {
            ApiError::Open(OpenError::Unavailable {
                id: camera.id().clone(),
                reason: "the camera is offline".into(),
            })
        })?;
    let mut response = warp::reply::Response::new(frame.jpeg.clone().into());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(frame.jpeg.len()));
    mjpeg::no_cache(headers);
    Ok(response)
}
