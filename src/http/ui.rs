//! The page at `/`: every camera, live, over one WebSocket; click one for a
//! large view. Plain HTML, CSS and JavaScript embedded in the binary, so
//! the server needs no files next to it and there is no build step.

use warp::Reply;
use warp::http::{HeaderValue, header};

use super::AppState;

const INDEX_HTML: &str = include_str!("assets/index.html");

pub fn index(_state: &AppState) -> warp::reply::Response {
    let mut response = warp::reply::html(INDEX_HTML).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // The page may have been opened with ?token=: never send its URL to
    // another site.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}
