//! The page at `/`: every camera, live. Embedded in the binary, so the
//! server needs no files next to it.

use warp::Reply;
use warp::http::{HeaderValue, header};

use super::AppState;

const INDEX_HTML: &str = include_str!("assets/index.html");

pub fn index(_state: &AppState) -> warp::reply::Response {
    let mut response = warp::reply::html(INDEX_HTML).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
