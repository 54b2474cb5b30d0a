//! Who may do what: the route table, and the check every request passes
//! before it reaches a handler.
//!
//! - Without `[server.auth]` everything that reads is open, and every
//!   mutating endpoint answers 403: a camera's pipeline can name any
//!   GStreamer element (`filesink` writes files), so an unauthenticated
//!   client must never be able to create one.
//! - With it, everything but `/healthz` (and CORS preflights, which
//!   browsers send without credentials) needs a token or a user: 401 with
//!   `WWW-Authenticate` when they are missing or wrong, 403 when a viewer
//!   credential tries to change something.
//! - `?token=` is accepted only where a browser cannot send a header: the
//!   page, streams, snapshots and the grid's WebSocket. Never on a request
//!   that changes something.
//! - A change requested by a page on another origin must come from a
//!   `cors_origins` entry (browsers send `Origin` on such requests); with
//!   the JSON content type required on bodies, this stops another site from
//!   using a browser's cached basic credentials (CSRF).

use std::collections::HashMap;

use warp::http::{HeaderMap, Method, header};

use super::ApiError;
use super::cors::Cors;
use crate::auth::{AuthError, Authenticator, Role};
use crate::config::ServerConfig;

/// What a route requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Nothing: health checks.
    Public,
    /// A viewer credential in a header.
    View,
    /// A viewer credential in a header or `?token=`.
    ViewWithQueryToken,
    /// An admin credential in a header; and auth must be configured.
    Admin,
}

/// One route of the API.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    pub method: &'static str,
    /// OpenAPI-style template: `{id}` stands for one path segment.
    pub path: &'static str,
    pub need: Need,
}

const fn route(method: &'static str, path: &'static str, need: Need) -> Route {
    Route { method, path, need }
}

/// Every route camstream serves. docs/openapi.json describes exactly these
/// (a test checks both ways).
pub const ROUTES: &[Route] = &[
    route("GET", "/", Need::ViewWithQueryToken),
    route("GET", "/healthz", Need::Public),
    route("GET", "/metrics", Need::View),
    route("GET", "/api/openapi.json", Need::View),
    route("GET", "/api/cameras", Need::View),
    route("POST", "/api/cameras", Need::Admin),
    route("GET", "/api/cameras/{id}", Need::View),
    route("PUT", "/api/cameras/{id}", Need::Admin),
    route("DELETE", "/api/cameras/{id}", Need::Admin),
    route(
        "GET",
        "/api/cameras/{id}/stream.mjpeg",
        Need::ViewWithQueryToken,
    ),
    route(
        "GET",
        "/api/cameras/{id}/snapshot.jpg",
        Need::ViewWithQueryToken,
    ),
    route("GET", "/api/cv/display", Need::ViewWithQueryToken),
    route("GET", "/api/ws", Need::ViewWithQueryToken),
];

/// What `method path` requires. Paths that match no route need a viewer
/// credential, so an unauthenticated client learns nothing about them.
pub fn need(method: &Method, path: &str) -> Need {
    ROUTES
        .iter()
        .find(|r| r.method == method.as_str() && matches(r.path, path))
        .map_or(Need::View, |r| r.need)
}

fn matches(template: &str, path: &str) -> bool {
    let mut t = template.split('/');
    let mut p = path.split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some(t), Some(p)) if t.starts_with('{') && !p.is_empty() => {}
            (Some(t), Some(p)) if t == p => {}
            _ => return false,
        }
    }
}

/// Authentication and CORS, as configured; replaced as a whole on reload.
#[derive(Debug, Default)]
pub struct Security {
    pub auth: Option<Authenticator>,
    pub cors: Cors,
}

impl Security {
    /// From `[server]`; also returns warnings to log.
    pub fn new(server: &ServerConfig) -> (Security, Vec<String>) {
        let (auth, warnings) = match &server.auth {
            None => (None, Vec::new()),
            Some(config) => match Authenticator::new(config) {
                Ok(built) => built,
                // Config::parse refuses such a file, so this is a safety
                // net; it fails closed.
                Err(e) => (Some(Authenticator::deny_all()), vec![e]),
            },
        };
        (
            Security {
                auth,
                cors: Cors::new(&server.cors_origins),
            },
            warnings,
        )
    }

    /// Lets the request through, or says why not.
    pub fn check(
        &self,
        method: &Method,
        path: &str,
        host: Option<&str>,
        headers: &HeaderMap,
        query: &HashMap<String, String>,
    ) -> Result<(), ApiError> {
        let need = need(method, path);
        let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
        match need {
            Need::Public => Ok(()),
            Need::View | Need::ViewWithQueryToken => {
                let Some(auth) = &self.auth else {
                    return Ok(());
                };
                let query_allowed = need == Need::ViewWithQueryToken;
                auth.check(
                    authorization,
                    query.get("token").map(String::as_str),
                    query_allowed,
                )
                .map(drop)
                .map_err(|e| unauthorized(auth, e))
            }
            Need::Admin => {
                let Some(auth) = &self.auth else {
                    return Err(ApiError::Forbidden(
                        "changing cameras through the API is disabled until [server.auth] is configured: \
                         a camera's pipeline can name any GStreamer element, so only an authenticated \
                         admin may create one (see docs/api.md)"
                            .into(),
                    ));
                };
                self.check_origin(host, headers)?;
                let role = auth
                    .check(authorization, None, false)
                    .map_err(|e| unauthorized(auth, e))?;
                if role < Role::Admin {
                    return Err(ApiError::Forbidden(
                        "this credential can only view: changing cameras needs an admin token or user"
                            .into(),
                    ));
                }
                Ok(())
            }
        }
    }

    /// A change from a browser page must come from this server's own page
    /// or from a `cors_origins` entry.
    fn check_origin(&self, host: Option<&str>, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            // Not a browser, or a same-origin GET-like request.
            return Ok(());
        };
        let origin = origin.to_str().unwrap_or("null");
        if self.cors.allows(origin) {
            return Ok(());
        }
        let origin_host = url::Url::parse(origin).ok().and_then(|u| {
            let host = u.host_str()?.to_string();
            Some(match u.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        });
        if origin_host.is_some() && origin_host.as_deref() == host {
            return Ok(());
        }
        Err(ApiError::Forbidden(format!(
            "a page on {origin} may not change cameras: add it to [server] cors_origins"
        )))
    }
}

fn unauthorized(auth: &Authenticator, error: AuthError) -> ApiError {
    ApiError::Unauthorized {
        message: error.to_string(),
        challenges: auth.challenges(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_one_segment_per_placeholder() {
        assert!(matches("/api/cameras/{id}", "/api/cameras/1"));
        assert!(!matches("/api/cameras/{id}", "/api/cameras/"));
        assert!(!matches("/api/cameras/{id}", "/api/cameras/1/stream.mjpeg"));
        assert!(matches("/", "/"));
        assert_eq!(need(&Method::DELETE, "/api/cameras/x"), Need::Admin);
        assert_eq!(need(&Method::GET, "/api/cameras/x"), Need::View);
        assert_eq!(
            need(&Method::GET, "/api/cameras/x/snapshot.jpg"),
            Need::ViewWithQueryToken
        );
        assert_eq!(need(&Method::GET, "/healthz"), Need::Public);
        assert_eq!(need(&Method::GET, "/unknown"), Need::View);
    }
}
