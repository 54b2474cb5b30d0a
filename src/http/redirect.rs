//! `[server] http_listen`: a plain-HTTP listener that sends every request
//! to the same host over HTTPS, except `/healthz`, which it answers itself
//! (a load balancer or container health check may only speak HTTP).

use warp::filters::BoxedFilter;
use warp::http::uri::Authority;
use warp::http::{HeaderValue, Method, StatusCode, header};
use warp::{Filter, Reply};

use super::{ApiError, AppState, healthz};

/// The routes of the redirecting listener; `https_port` is where HTTPS
/// listens.
pub fn redirect_routes(state: AppState, https_port: u16) -> BoxedFilter<(warp::reply::Response,)> {
    let health = warp::get()
        .and(warp::path("healthz"))
        .and(warp::path::end())
        .map(move || healthz(&state));
    let redirect = warp::method()
        .and(warp::header::optional::<String>("host"))
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .map(
            move |method: Method,
                  host: Option<String>,
                  path: warp::path::FullPath,
                  query: String| {
                redirect(&method, host.as_deref(), path.as_str(), &query, https_port)
            },
        );
    health.or(redirect).unify().boxed()
}

/// 301 for GET and HEAD (what every client follows), 308 for the rest so
/// the method and body are kept.
fn redirect(
    method: &Method,
    host: Option<&str>,
    path: &str,
    query: &str,
    https_port: u16,
) -> warp::reply::Response {
    let Some(authority) = host.and_then(|h| h.parse::<Authority>().ok()) else {
        return ApiError::BadRequest(
            "no valid Host header: this address only redirects to HTTPS, ask for https://HOST/ instead"
                .into(),
        )
        .into_response();
    };
    let host = authority.host();
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let target = if query.is_empty() {
        format!("https://{host}{port}{path}")
    } else {
        format!("https://{host}{port}{path}?{query}")
    };
    let status = if matches!(*method, Method::GET | Method::HEAD) {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::PERMANENT_REDIRECT
    };
    let mut response = warp::reply::Response::new(Default::default());
    *response.status_mut() = status;
    // The path and query come from the parsed request URI, so they are
    // valid in a header already.
    match HeaderValue::from_str(&target) {
        Ok(location) => {
            response.headers_mut().insert(header::LOCATION, location);
            response
        }
        Err(_) => ApiError::BadRequest("not a valid request path".into()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(method: Method, host: &str, path: &str, query: &str, port: u16) -> (u16, String) {
        let response = redirect(&method, Some(host), path, query, port);
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (response.status().as_u16(), location)
    }

    #[test]
    fn redirects_keep_host_path_and_query() {
        assert_eq!(
            location(
                Method::GET,
                "cam.lan:8080",
                "/api/cameras/1/stream.mjpeg",
                "fps=5",
                8443
            ),
            (
                301,
                "https://cam.lan:8443/api/cameras/1/stream.mjpeg?fps=5".into()
            )
        );
        assert_eq!(
            location(Method::POST, "[::1]:80", "/api/cameras", "", 443),
            (308, "https://[::1]/api/cameras".into())
        );
        let response = redirect(&Method::GET, None, "/", "", 443);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
}
