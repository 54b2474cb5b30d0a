//! CORS for front ends on other origins (`[server] cors_origins`).
//!
//! Hand-written rather than `warp::cors()`: warp's filter answers a request
//! from an origin that is not listed with 403, and browsers send `Origin` on
//! same-origin POST/PUT/DELETE too, so camstream's own page would be locked
//! out of the API whenever CORS is configured. Here a request from an
//! unlisted origin is served as if CORS were off (no `Access-Control-*`
//! headers, so the browser keeps the response from that page's script);
//! only a preflight from an unlisted origin is refused, with a message
//! saying what to configure.

use warp::http::{HeaderMap, HeaderValue, StatusCode, header};
use warp::reply::Response;

use crate::config::CorsOrigin;

/// How long a browser may cache a preflight answer. Chromium caps this at
/// 2 hours and Firefox at 24; 10 minutes lets a changed `cors_origins` take
/// effect soon after a reload.
const PREFLIGHT_MAX_AGE_S: u32 = 600;
/// The request headers a front end needs: credentials and a JSON body.
const ALLOW_HEADERS: &str = "authorization, content-type";
/// Response headers scripts may read: where a new camera is, when to retry.
const EXPOSE_HEADERS: &str = "location, retry-after, www-authenticate";

/// The allowed origins.
#[derive(Clone, Debug, Default)]
pub struct Cors {
    any: bool,
    origins: Vec<String>,
}

impl Cors {
    pub fn new(origins: &[CorsOrigin]) -> Cors {
        Cors {
            any: origins.iter().any(|o| o.as_str() == CorsOrigin::ANY),
            origins: origins
                .iter()
                .filter(|o| o.as_str() != CorsOrigin::ANY)
                .map(|o| o.as_str().to_string())
                .collect(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.any || !self.origins.is_empty()
    }

    /// Whether `origin` (as a browser sends it) is listed.
    pub fn allows(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o == origin) || (self.any && origin != "null")
    }

    /// Adds the CORS headers to a response for a request from `origin`.
    pub fn decorate(&self, origin: Option<&str>, headers: &mut HeaderMap) {
        if !self.enabled() {
            return;
        }
        // The answer depends on Origin: caches must key on it.
        let varies = headers
            .get_all(header::VARY)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"origin"));
        if !varies {
            headers.append(header::VARY, HeaderValue::from_static("origin"));
        }
        let Some(origin) = origin.filter(|o| self.allows(o)) else {
            return;
        };
        let Ok(value) = HeaderValue::from_str(origin) else {
            return;
        };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        // Listed origins may use the browser's own credentials (cached basic
        // auth); "*" may not, as browsers require for credentialed requests.
        if self.origins.iter().any(|o| o == origin) {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }

    /// The answer to an `OPTIONS` request for a path whose methods are
    /// `allow` (`GET, PUT, OPTIONS`): a preflight from a listed origin gets
    /// 204 with what it may do; anything else is refused with the reason.
    pub fn preflight(
        &self,
        origin: Option<&str>,
        request_method: Option<&str>,
        allow: &str,
    ) -> Result<Response, String> {
        let allow_value = HeaderValue::from_str(allow).map_err(|e| e.to_string())?;
        let Some(origin) = origin else {
            let mut response = Response::new(Default::default());
            *response.status_mut() = StatusCode::NO_CONTENT;
            response.headers_mut().insert(header::ALLOW, allow_value);
            return Ok(response);
        };
        if !self.allows(origin) {
            return Err(if self.enabled() {
                format!(
                    "cross-origin requests from {origin} are not allowed: add it to [server] cors_origins"
                )
            } else {
                format!(
                    "cross-origin requests are off: add {origin} to [server] cors_origins to allow them"
                )
            });
        }
        if let Some(method) = request_method
            && !allow.split(", ").any(|m| m == method)
        {
            return Err(format!(
                "method {method} is not allowed on this path: use one of {allow}"
            ));
        }
        let mut response = Response::new(Default::default());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        self.decorate(Some(origin), headers);
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, allow_value);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(PREFLIGHT_MAX_AGE_S),
        );
        headers.append(
            header::VARY,
            HeaderValue::from_static(
                "access-control-request-method, access-control-request-headers",
            ),
        );
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOW: &str = "GET, PUT, DELETE, OPTIONS";

    fn cors(list: &[&str]) -> Cors {
        Cors::new(
            &list
                .iter()
                .map(|o| CorsOrigin::new(o).unwrap())
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn listed_origins_only() {
        let c = cors(&["https://app.example.com", "http://localhost:3000/"]);
        assert!(c.allows("https://app.example.com"));
        assert!(c.allows("http://localhost:3000"));
        assert!(!c.allows("https://evil.example.com"));
        let mut headers = HeaderMap::new();
        c.decorate(Some("https://evil.example.com"), &mut headers);
        assert!(headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        c.decorate(Some("https://app.example.com"), &mut headers);
        assert_eq!(
            headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert!(
            c.preflight(Some("https://evil.example.com"), Some("GET"), ALLOW)
                .is_err()
        );
        assert!(
            c.preflight(Some("https://app.example.com"), Some("PATCH"), ALLOW)
                .is_err()
        );
        let ok = c
            .preflight(Some("https://app.example.com"), Some("PUT"), ALLOW)
            .unwrap();
        assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    }

    #[test]
    fn off_by_default_and_any() {
        let off = Cors::default();
        let mut headers = HeaderMap::new();
        off.decorate(Some("https://a.example"), &mut headers);
        assert!(headers.is_empty());
        let any = cors(&["*"]);
        assert!(any.allows("https://whatever.example") && !any.allows("null"));
        let mut headers = HeaderMap::new();
        any.decorate(Some("https://a.example"), &mut headers);
        assert!(
            headers
                .get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS)
                .is_none()
        );
        assert!(CorsOrigin::new("https://a.example/path").is_err());
        assert!(CorsOrigin::new("ftp://a.example").is_err());
    }
}
