//! HTTP: routes, the JSON API, streams and snapshots. This is the one place
//! errors become status codes ([`ApiError`]).

pub mod access;
mod api;
pub mod cors;
pub mod metrics;
pub mod mjpeg;
pub mod server;
mod ui;
pub mod ws;

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
use crate::control::{Control, ManageError};
use crate::frames::FrameKind;
use crate::redact::redact_text;
use crate::registry::Cameras;

/// How long a new viewer or a snapshot waits for a camera's first frame:
/// long enough for an RTSP connect and a key frame, short enough that a
/// browser shows an error rather than hang.
pub const OPEN_WAIT: Duration = Duration::from_secs(10);
/// Retry-After for an unavailable camera, in seconds.
const RETRY_AFTER_S: u64 = 5;
/// Per-viewer frame-rate caps outside this range are refused.
const FPS_RANGE: (f64, f64) = (0.1, 120.0);
/// The API description, kept in docs/ and served as it is.
const OPENAPI_JSON: &str = include_str!("../../docs/openapi.json");

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    pub cameras: Arc<Cameras>,
    /// Cancelled at shutdown; open streams end when it is.
    pub shutdown: CancellationToken,
    /// Viewers of all cameras together ([server] max_viewers).
    pub max_viewers: usize,
    /// Changes to the cameras, and the current auth and CORS settings.
    pub control: Arc<Control>,
}

/// An API failure. Every error response is JSON:
/// `{"error": {"code": "...", "message": "..."}}`.
#[derive(Clone, Debug, thiserror::Error)]
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
    #[error("{message}")]
    Unauthorized {
        message: String,
        /// `WWW-Authenticate` values.
        challenges: Vec<String>,
    },
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the request body is larger than {} KiB", api::MAX_BODY / 1024)]
    PayloadTooLarge,
    #[error("send the body with a Content-Length header")]
    LengthRequired,
    #[error(transparent)]
    Manage(#[from] ManageError),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::UnknownCamera(_) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadId(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Open(_) | ApiError::ServerFull(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::LengthRequired => StatusCode::LENGTH_REQUIRED,
            ApiError::Manage(e) => match e {
                ManageError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                ManageError::NotFound(_) => StatusCode::NOT_FOUND,
                ManageError::Exists(_)
                | ManageError::Demo(_)
                | ManageError::NoConfigFile
                | ManageError::FileInvalid(_) => StatusCode::CONFLICT,
                ManageError::Write { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            },
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
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::LengthRequired => "length_required",
            ApiError::Manage(e) => match e {
                ManageError::Invalid(_) => "invalid_camera",
                ManageError::NotFound(_) => "unknown_camera",
                ManageError::Exists(_) => "camera_exists",
                ManageError::Demo(_) => "demo_camera",
                ManageError::NoConfigFile => "no_config_file",
                ManageError::FileInvalid(_) => "config_file_invalid",
                ManageError::Write { .. } => "config_write_failed",
            },
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
        // Messages are built from masked parts; the rules run once more
        // here, as a net under every one of them.
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: redact_text(&self.to_string()).into_owned(),
            },
        };
        let mut response =
            warp::reply::with_status(warp::reply::json(&body), self.status()).into_response();
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
        }
        if let ApiError::Unauthorized { challenges, .. } = &self {
            for challenge in challenges {
                if let Ok(value) = HeaderValue::from_str(challenge) {
                    response
                        .headers_mut()
                        .append(header::WWW_AUTHENTICATE, value);
                }
            }
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
    let healthz = warp::get()
        .and(warp::path!("healthz"))
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
    let openapi = warp::path!("api" / "openapi.json").map(|| {
        let mut response = warp::reply::Response::new(OPENAPI_JSON.into());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    });
    let metrics = warp::path!("metrics")
        .and(with_state.clone())
        .map(|state: AppState| metrics::render(&state));
    let grid_socket = warp::path!("api" / "ws")
        .and(warp::ws().map(Some).or(warp::any().map(|| None)).unify())
        .and(with_state.clone())
        .and(query)
        .map(
            |socket: Option<warp::ws::Ws>, state: AppState, q: HashMap<String, String>| {
                respond(grid_socket(&state, socket, &q))
            },
        );

    let get = warp::get().and(
        index
            .or(list)
            .unify()
            .or(one)
            .unify()
            .or(stream_route)
            .unify()
            .or(snapshot)
            .unify()
            .or(display)
            .unify()
            .or(openapi)
            .unify()
            .or(metrics)
            .unify()
            .or(grid_socket)
            .unify(),
    );
    let app = get
        .or(api::routes(state.clone()))
        .unify()
        .recover(handle_rejection)
        .unify();

    // Every request but a preflight or a health check passes the access
    // check before it reaches a route (see access.rs).
    let guarded = warp::method()
        .and(warp::path::full())
        .and(warp::host::optional())
        .and(warp::header::headers_cloned())
        .and(query)
        .and(with_state.clone())
        .and_then(
            |method: warp::http::Method,
             path: warp::path::FullPath,
             host: Option<warp::host::Authority>,
             headers: warp::http::HeaderMap,
             q: HashMap<String, String>,
             state: AppState| async move {
                state
                    .control
                    .security()
                    .check(
                        &method,
                        path.as_str(),
                        host.as_ref().map(|h| h.as_str()),
                        &headers,
                        &q,
                    )
                    .map_err(|e| warp::reject::custom(Refused(e)))
            },
        )
        .untuple_one()
        .and(app);
    let preflight = warp::options()
        .and(warp::header::optional::<String>("origin"))
        .and(warp::header::optional::<String>(
            "access-control-request-method",
        ))
        .and(with_state.clone())
        .map(
            |origin: Option<String>, method: Option<String>, state: AppState| {
                state
                    .control
                    .security()
                    .cors
                    .preflight(origin.as_deref(), method.as_deref())
                    .unwrap_or_else(|message| ApiError::Forbidden(message).into_response())
            },
        );

    let all = preflight
        .or(healthz)
        .unify()
        .or(guarded)
        .unify()
        .recover(handle_rejection)
        .unify();
    warp::header::optional::<String>("origin")
        .and(with_state)
        .and(all)
        .map(
            |origin: Option<String>, state: AppState, mut response: warp::reply::Response| {
                state
                    .control
                    .security()
                    .cors
                    .decorate(origin.as_deref(), response.headers_mut());
                response
            },
        )
        .with(warp::log::custom(|info| {
            // Per request at debug: a page of streams is many requests.
            // The path only: a query can hold a ?token=.
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

/// A request the access check turned away, carried as a warp rejection.
#[derive(Debug)]
struct Refused(ApiError);

impl warp::reject::Reject for Refused {}

/// Warp's own rejections (no route, wrong method) in the API's error shape.
async fn handle_rejection(rejection: Rejection) -> Result<warp::reply::Response, Infallible> {
    if let Some(Refused(error)) = rejection.find::<Refused>() {
        return Ok(error.clone().into_response());
    }
    let error = if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::PayloadTooLarge
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        ApiError::LengthRequired
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
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

/// `?fps=N`: a viewer's own frame-rate cap.
fn parse_fps(query: &HashMap<String, String>) -> Result<Option<f64>, ApiError> {
    match query.get("fps") {
        None => Ok(None),
        Some(raw) => raw
            .parse::<f64>()
            .ok()
            .filter(|f| (FPS_RANGE.0..=FPS_RANGE.1).contains(f))
            .map(Some)
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "fps={raw} is not a frame rate: use a number from {} to {}",
                    FPS_RANGE.0, FPS_RANGE.1
                ))
            }),
    }
}

async fn stream(state: &AppState, id: &str, query: &HashMap<String, String>) -> ApiResult {
    let camera = find_camera(state, id)?;
    let fps = parse_fps(query)?;
    // The total is a sum over cameras: cheap for tens of cameras, and a
    // viewer or two over the limit in a race harms nothing.
    let total: usize = state.cameras.all().iter().map(|c| c.viewer_count()).sum();
    if total >= state.max_viewers {
        return Err(ApiError::ServerFull(state.max_viewers));
    }
    let viewer = camera.open(OPEN_WAIT).await?;
    // The camera's token is a child of the server's: the stream ends at
    // shutdown, and also when the camera is removed.
    Ok(mjpeg::response(viewer, fps, camera.cancel_token()))
}

/// `GET /api/ws?cameras=a,b,c[&fps=N]`: the grid's socket (see ws.rs).
fn grid_socket(
    state: &AppState,
    socket: Option<warp::ws::Ws>,
    query: &HashMap<String, String>,
) -> ApiResult {
    let list = query.get("cameras").map(String::as_str).unwrap_or("");
    let mut cameras: Vec<Arc<Camera>> = Vec::new();
    for id in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let camera = find_camera(state, id)?;
        if !cameras.iter().any(|c| c.id() == camera.id()) {
            cameras.push(camera);
        }
    }
    if cameras.is_empty() {
        return Err(ApiError::BadRequest(
            "cameras is required: /api/ws?cameras=ID,ID,... (GET /api/cameras lists them)".into(),
        ));
    }
    if cameras.len() > ws::MAX_CAMERAS {
        return Err(ApiError::BadRequest(format!(
            "at most {} cameras per socket",
            ws::MAX_CAMERAS
        )));
    }
    let fps = parse_fps(query)?;
    let socket = socket.ok_or_else(|| {
        ApiError::BadRequest(
            "/api/ws is a WebSocket: open it with new WebSocket(\"ws://HOST/api/ws?cameras=...\")"
                .into(),
        )
    })?;
    let shutdown = state.shutdown.clone();
    Ok(socket
        .max_message_size(ws::MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| ws::serve(socket, cameras, fps, shutdown))
        .into_response())
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
    camera.stats().bytes_sent.fetch_add(
        frame.jpeg.len() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    let mut response = warp::reply::Response::new(frame.jpeg.clone().into());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(frame.jpeg.len()));
    mjpeg::no_cache(headers);
    Ok(response)
}
