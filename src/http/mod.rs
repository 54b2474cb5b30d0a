//! HTTP: routes, the JSON API, streams and snapshots. This is the one place
//! errors become status codes ([`ApiError`]).

pub mod access;
mod api;
pub mod cors;
mod http2;
pub mod metrics;
pub mod mjpeg;
mod redirect;
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
use warp::http::{HeaderValue, Method, StatusCode, header};
use warp::{Filter, Rejection, Reply};

use access::{Need, Params, Refused, RouteSpec, Router};
pub use redirect::redirect_routes;

use crate::camera::{Camera, OpenError, SizeError, Viewer};
use crate::config::CameraId;
use crate::control::{Control, ManageError};
use crate::outputs::Output;
use crate::redact::redact_text;
use crate::registry::Cameras;

/// How long a new viewer or a snapshot waits for the first frame of a
/// camera whose settings are invalid (it fails at once anyway). A valid
/// camera is waited for as long as its own `first_frame_timeout_s` allows
/// a start to take, plus `OPEN_MARGIN`: a viewer is never turned away
/// with `camera_timeout` while the camera is still within its bound.
pub const OPEN_WAIT: Duration = Duration::from_secs(10);
/// The supervisor notices a start past its bound on its next progress
/// check; the viewer waits that little longer so it gets the camera's own
/// error ("no first frame within ...") rather than a bare timeout.
const OPEN_MARGIN: Duration = Duration::from_secs(1);
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
    /// What the access check keeps across requests (failed logins).
    pub gate: Arc<access::Gate>,
    /// Open connections and what the front door refused (for /metrics).
    pub connections: Arc<server::Connections>,
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
    #[error(transparent)]
    Size(#[from] SizeError),
    #[error("no such endpoint: {0}")]
    NotFound(String),
    #[error("method not allowed here: this path answers {allow}")]
    MethodNotAllowed {
        /// The path's methods, for the `Allow` header.
        allow: String,
    },
    #[error("not a canonical path: {0}")]
    BadPath(String),
    #[error(
        "too many wrong credentials from this address: try again in {}s",
        retry_after.as_secs().max(1)
    )]
    TooManyFailedLogins { retry_after: Duration },
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
            ApiError::BadId(_)
            | ApiError::BadRequest(_)
            | ApiError::BadPath(_)
            | ApiError::Size(_) => StatusCode::BAD_REQUEST,
            ApiError::TooManyFailedLogins { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Open(_) | ApiError::ServerFull(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
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
                | ManageError::Relayed(_)
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
            ApiError::Size(_) => "unknown_size",
            ApiError::Open(OpenError::Unavailable { .. }) => "camera_unavailable",
            ApiError::Open(OpenError::Timeout { .. }) => "camera_timeout",
            ApiError::Open(OpenError::TooManyViewers { .. }) | ApiError::ServerFull(_) => {
                "too_many_viewers"
            }
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::BadPath(_) => "bad_path",
            ApiError::TooManyFailedLogins { .. } => "too_many_failed_logins",
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
                ManageError::Relayed(_) => "relayed_camera",
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
        match &self {
            ApiError::TooManyFailedLogins { retry_after } => {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after.as_secs().max(1)),
                );
            }
            ApiError::MethodNotAllowed { allow } => {
                if let Ok(value) = HeaderValue::from_str(allow) {
                    response.headers_mut().insert(header::ALLOW, value);
                }
            }
            _ => {}
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

/// Every route camstream serves, each with what it needs (see access.rs),
/// and the table of them. docs/openapi.json describes exactly this table
/// (tests/api.rs and tests/access.rs check both ways).
pub fn routes(state: AppState) -> (Arc<[RouteSpec]>, BoxedFilter<(warp::reply::Response,)>) {
    use Method as M;
    let with_state = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };
    let s = || with_state.clone();
    let body = || {
        warp::body::content_length_limit(api::MAX_BODY)
            .and(warp::header::optional::<String>("content-type"))
            .and(warp::body::bytes())
    };
    let (table, routes) = Router::new(state.clone())
        .route(M::GET, "/", Need::ViewWithQueryToken, |_| {
            s().map(|state: AppState| ui::index(&state))
        })
        .route(M::GET, "/healthz", Need::Public, |_| {
            s().map(|state: AppState| healthz(&state))
        })
        .route(M::GET, "/metrics", Need::View, |_| {
            s().map(|state: AppState| metrics::render(&state))
        })
        .route(M::GET, "/api/openapi.json", Need::View, |_| {
            warp::any().map(|| {
                let mut response = warp::reply::Response::new(OPENAPI_JSON.into());
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            })
        })
        .route(M::GET, "/api/cameras", Need::View, |_| {
            s().map(|state: AppState| respond(list_cameras(&state)))
        })
        .route(M::POST, "/api/cameras", Need::Admin, |_| {
            s().and(body()).then(
                |state: AppState, content_type: Option<String>, body: bytes::Bytes| async move {
                    respond(api::create(&state, content_type.as_deref(), &body).await)
                },
            )
        })
        .route(M::GET, "/api/cameras/{id}", Need::View, |p| {
            p.and(s())
                .map(|p: Params, state: AppState| respond(camera_info(&state, p.id())))
        })
        .route(M::PUT, "/api/cameras/{id}", Need::Admin, |p| {
            p.and(s()).and(body()).then(
                    |p: Params,
                     state: AppState,
                     content_type: Option<String>,
                     body: bytes::Bytes| async move {
                        respond(api::update(&state, p.id(), content_type.as_deref(), &body).await)
                    },
                )
        })
        .route(M::DELETE, "/api/cameras/{id}", Need::Admin, |p| {
            p.and(s()).then(|p: Params, state: AppState| async move {
                respond(api::delete(&state, p.id()).await)
            })
        })
        .route(
            M::GET,
            "/api/cameras/{id}/stream.mjpeg",
            Need::ViewWithQueryToken,
            |p| {
                p.and(s()).and(query()).then(
                    |p: Params, state: AppState, q: HashMap<String, String>| async move {
                        respond(stream(&state, p.id(), &q).await)
                    },
                )
            },
        )
        .route(
            M::GET,
            "/api/cameras/{id}/snapshot.jpg",
            Need::ViewWithQueryToken,
            |p| {
                p.and(s()).and(query()).then(
                    |p: Params, state: AppState, q: HashMap<String, String>| async move {
                        respond(snapshot(&state, p.id(), &q).await)
                    },
                )
            },
        )
        // The route of the OpenCV + Django backend this replaces, so an
        // existing <img src="/api/cv/display?camera_id=1"> works unchanged.
        .route(M::GET, "/api/cv/display", Need::ViewWithQueryToken, |_| {
            s().and(query())
                .then(|state: AppState, q: HashMap<String, String>| async move {
                    let result = match q.get("camera_id") {
                        Some(id) => stream(&state, id, &q).await,
                        None => Err(ApiError::BadRequest(
                            "camera_id is required, e.g. /api/cv/display?camera_id=1".into(),
                        )),
                    };
                    respond(result)
                })
        })
        .route(M::GET, "/api/ws", Need::ViewWithQueryToken, |_| {
            warp::ws()
                .map(Some)
                .or(warp::any().map(|| None))
                .unify()
                .and(s())
                .and(query())
                .and(warp::header::headers_cloned())
                .map(
                    |socket: Option<warp::ws::Ws>,
                     state: AppState,
                     q: HashMap<String, String>,
                     headers: warp::http::HeaderMap| {
                        respond(grid_socket(&state, socket, &q, &headers))
                    },
                )
        })
        .finish();

    let routes = routes
        .recover(handle_rejection)
        .unify()
        .and(warp::header::optional::<String>("origin"))
        .and(with_state)
        .map(
            |mut response: warp::reply::Response, origin: Option<String>, state: AppState| {
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
        .boxed();
    (table, routes)
}

/// The query string, parsed; empty when there is none.
fn query() -> impl Filter<Extract = (HashMap<String, String>,), Error = Infallible> + Clone {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .map(|q: String| parse_query(&q))
}

/// Warp's own rejections, and refusals, in the API's error shape.
async fn handle_rejection(rejection: Rejection) -> Result<warp::reply::Response, Infallible> {
    if let Some(Refused(error)) = rejection.find::<Refused>() {
        return Ok(error.clone().into_response());
    }
    let error = if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::PayloadTooLarge
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        ApiError::LengthRequired
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

/// How long a viewer of `camera` waits for its first frame.
fn open_wait(camera: &Camera) -> Duration {
    wait_for(&camera.configured())
}

fn wait_for(configured: &crate::camera::Configured) -> Duration {
    configured
        .settings
        .as_ref()
        .map_or(OPEN_WAIT, |s| s.first_frame_timeout + OPEN_MARGIN)
}

/// `?size=NAME`: which of the camera's sizes; none is its default size.
fn size_param(query: &HashMap<String, String>) -> Option<&str> {
    query.get("size").map(String::as_str)
}

/// The one place viewers are admitted, for MJPEG streams, snapshots and
/// each camera of a grid socket, whatever size they watch: within
/// `[server] max_viewers` over all cameras, and the camera's own
/// `max_viewers`.
fn admit(state: &AppState, camera: &Arc<Camera>, output: &Arc<Output>) -> Result<Viewer, ApiError> {
    // The total is a sum over cameras: cheap for tens of cameras, and a
    // viewer or two over the limit in a race harms nothing.
    let total: usize = state.cameras.all().iter().map(|c| c.viewer_count()).sum();
    if total >= state.max_viewers {
        return Err(ApiError::ServerFull(state.max_viewers));
    }
    Ok(camera.try_attach(output)?)
}

async fn stream(state: &AppState, id: &str, query: &HashMap<String, String>) -> ApiResult {
    let camera = find_camera(state, id)?;
    let fps = parse_fps(query)?;
    let output = camera.output(size_param(query), false)?;
    let viewer = admit(state, &camera, &output)?
        .ready(open_wait(&camera))
        .await?;
    // A child of the camera's token, itself a child of the server's: the
    // stream ends at shutdown, when the camera is removed, and when its
    // size is.
    let end = viewer.cancel_token();
    Ok(mjpeg::response(viewer, fps, end))
}

/// `GET /api/ws?cameras=a:thumb,b,c[&size=NAME][&fps=N]`: the grid's
/// socket (see ws.rs). `id:size` picks one camera's size; `size=` is the
/// size of every camera that names none.
fn grid_socket(
    state: &AppState,
    socket: Option<warp::ws::Ws>,
    query: &HashMap<String, String>,
    headers: &warp::http::HeaderMap,
) -> ApiResult {
    // A WebSocket is not bound by the same-origin policy: without this,
    // any page a LAN user opens could read every camera.
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    state
        .control
        .security()
        .check_origin(host, headers, "open the grid socket")?;
    let list = query.get("cameras").map(String::as_str).unwrap_or("");
    let mut cameras: Vec<(Arc<Camera>, Arc<Output>)> = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        // Camera ids cannot hold a ':', so the first one ends the id.
        let (id, size) = match entry.split_once(':') {
            Some((id, size)) => (id, Some(size)),
            None => (entry, size_param(query)),
        };
        let camera = find_camera(state, id)?;
        // The protocol names frames by camera: one size per camera.
        if !cameras.iter().any(|(c, _)| c.id() == camera.id()) {
            let output = camera.output(size, false)?;
            cameras.push((camera, output));
        }
    }
    if cameras.is_empty() {
        return Err(ApiError::BadRequest(
            "cameras is required: /api/ws?cameras=ID,ID:SIZE,... (GET /api/cameras lists them)"
                .into(),
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
    // Every camera on the socket is a viewer of its size, admitted like a
    // stream; the viewers are held from here, so they count before the
    // upgrade and are released if it never completes.
    let viewers = cameras
        .iter()
        .map(|(camera, output)| admit(state, camera, output))
        .collect::<Result<Vec<Viewer>, ApiError>>()?;
    let shutdown = state.shutdown.clone();
    Ok(socket
        .max_message_size(ws::MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| ws::serve(socket, viewers, fps, shutdown))
        .into_response())
}

/// `snapshot.jpg[?size=NAME]`: the newest frame of a size; `size=full` a
/// frame at the source's full resolution, made once for all the requests
/// that ask at the same moment.
async fn snapshot(state: &AppState, id: &str, query: &HashMap<String, String>) -> ApiResult {
    let camera = find_camera(state, id)?;
    let output = camera.output(size_param(query), true)?;
    let frame = admit(state, &camera, &output)?
        .snapshot(open_wait(&camera))
        .await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::camera::Configured;
    use crate::config::Config;

    #[test]
    fn a_viewer_waits_as_long_as_its_camera_may_take_to_start() {
        let config = Config::parse(
            "[[cameras]]\nid = \"slow\"\nsource = \"test:\"\nfirst_frame_timeout_s = 45\n\
             [[cameras]]\nid = \"bad\"\nsource = \"test:\"\nscale = 7\n",
            None,
        )
        .unwrap();
        let configured = |i: usize| Configured {
            name: String::new(),
            settings: config.cameras[i].settings.clone(),
        };
        assert_eq!(wait_for(&configured(0)), Duration::from_secs(46));
        assert_eq!(wait_for(&configured(1)), OPEN_WAIT);
    }
}
