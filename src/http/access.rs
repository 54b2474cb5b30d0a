//! Who may do what. Every route is added through [`Router::route`], which
//! takes its method, path template, [`Need`] and handler together and builds
//! both the warp filter (method and path, then the access check, then the
//! handler) and the route's [`RouteSpec`]. The table of specs is therefore
//! the routes themselves: there is no second list to keep in step, and a
//! route cannot exist without its rule.
//!
//! - A request no route matches is refused before any handler runs: 401
//!   when auth is configured and no valid credential came with it (so an
//!   unauthenticated client learns nothing), else 404, 405 (with `Allow`)
//!   for a known path with another method, or 400 for a path that is not
//!   written canonically.
//! - Paths are matched as sent, byte for byte. A path that is not canonical
//!   (a trailing slash, `//`, a `.` or `..` segment, or any `%`-encoding:
//!   nothing camstream serves needs one) matches no route, so no spelling
//!   can reach a handler past its rule. `HEAD` and other methods match only
//!   routes that name them.
//! - Without `[server.auth]` everything that reads is open, and every
//!   mutating endpoint answers 403: a camera's source can name any URL, so
//!   an unauthenticated client must never be able to create one.
//! - With it, everything but `/healthz` and `OPTIONS` (CORS preflights,
//!   which browsers send without credentials) needs a token or a user: 401
//!   with `WWW-Authenticate` when they are missing or wrong, 403 when a
//!   viewer credential tries to change something.
//! - `?token=` is accepted only where a browser cannot send a header: the
//!   page, streams, snapshots and the grid's WebSocket; and only for view
//!   tokens. Never on a request that changes something.
//! - A change requested by a page on another origin must come from a
//!   `cors_origins` entry (browsers send `Origin` on such requests); with
//!   the JSON content type required on bodies, this stops another site from
//!   using a browser's cached basic credentials (CSRF).
//! - Wrong credentials are counted per client address; past
//!   [`MAX_FAILED_LOGINS`] in [`FAILED_LOGIN_WINDOW`] the address gets 429
//!   for every credential it sends until the window ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, Method, header};
use warp::path::FullPath;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::cors::Cors;
use super::server::ClientAddr;
use super::{ApiError, AppState};
use crate::auth::{AuthError, Authenticator, Credential, Role};
use crate::config::ServerConfig;

/// Wrong credentials one client address may send per window before it is
/// refused with 429: enough for a person mistyping a password a few times,
/// far too few to guess one.
pub const MAX_FAILED_LOGINS: u32 = 10;
/// The window [`MAX_FAILED_LOGINS`] counts over, and how long an address
/// that exceeded it waits (at most).
pub const FAILED_LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Addresses with failures remembered at once; beyond it the oldest window
/// is forgotten, so a flood of addresses cannot grow memory.
const FAILED_LOGIN_ADDRESSES: usize = 4096;
/// argon2 checks running at once: each takes ~19 MiB and a core for tens
/// of milliseconds, so a burst of basic credentials queues instead of
/// taking the machine's memory and every core.
const CONCURRENT_SLOW_CHECKS: usize = 2;

/// What a route requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Nothing: health checks, CORS preflights.
    Public,
    /// A viewer credential in a header.
    View,
    /// A viewer credential in a header, or a view token in `?token=`.
    ViewWithQueryToken,
    /// An admin credential in a header; and auth must be configured.
    Admin,
}

/// One route, as served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    pub method: Method,
    /// OpenAPI-style template: `{id}` stands for one path segment.
    pub path: &'static str,
    pub need: Need,
}

/// The `{...}` segments of a route's path, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params(Vec<String>);

impl Params {
    /// The first parameter (`{id}`), or "" for routes without one.
    pub fn id(&self) -> &str {
        self.0.first().map_or("", String::as_str)
    }
}

/// Why `path` is not written the one way camstream accepts, if it is not.
pub fn non_canonical(path: &str) -> Option<&'static str> {
    if path == "/" {
        return None;
    }
    if !path.starts_with('/') {
        return Some("it does not start with /");
    }
    if path.contains('%') {
        return Some("it is percent-encoded (%XX): no camstream path needs that");
    }
    if path.ends_with('/') {
        return Some("it ends with /");
    }
    for segment in path[1..].split('/') {
        match segment {
            "" => return Some("it has an empty segment (//)"),
            "." | ".." => return Some("it has a . or .. segment"),
            _ => {}
        }
    }
    None
}

/// Matches a canonical `path` against `template`; the parameters if it fits.
pub fn match_template(template: &str, path: &str) -> Option<Params> {
    if non_canonical(path).is_some() {
        return None;
    }
    if template == "/" || path == "/" {
        return (template == path).then(Params::default);
    }
    let mut params = Vec::new();
    let mut t = template[1..].split('/');
    let mut p = path[1..].split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(Params(params)),
            (Some(t), Some(p)) if t.starts_with('{') => params.push(p.to_string()),
            (Some(t), Some(p)) if t == p => {}
            _ => return None,
        }
    }
}

/// Builds the routes and their table together (see the module docs).
pub struct Router {
    state: AppState,
    specs: Vec<RouteSpec>,
    filter: Option<BoxedFilter<(Response,)>>,
}

impl Router {
    pub fn new(state: AppState) -> Router {
        Router {
            state,
            specs: Vec::new(),
            filter: None,
        }
    }

    /// Adds `method path`, which requires `need`. `handler` is given a
    /// filter that extracts the path's parameters, and returns the filter
    /// that answers; it runs only once the access check has passed.
    pub fn route<F, H>(
        mut self,
        method: Method,
        path: &'static str,
        need: Need,
        handler: F,
    ) -> Router
    where
        F: FnOnce(BoxedFilter<(Params,)>) -> H,
        H: Filter<Extract = (Response,)> + Clone + Send + Sync + 'static,
        H::Error: Into<Rejection>,
    {
        assert!(
            non_canonical(&path.replace(['{', '}'], "x")).is_none(),
            "route template {path} is not canonical"
        );
        assert!(
            !self
                .specs
                .iter()
                .any(|s| s.method == method && s.path == path),
            "route {method} {path} is added twice"
        );
        self.specs.push(RouteSpec {
            method: method.clone(),
            path,
            need,
        });
        let selected = warp::method()
            .and(warp::path::full())
            .and_then(move |got: Method, full: FullPath| {
                let hit = got == method && match_template(path, full.as_str()).is_some();
                async move {
                    if hit {
                        Ok(())
                    } else {
                        Err(warp::reject::not_found())
                    }
                }
            })
            .untuple_one();
        let state = self.state.clone();
        let checked = asked()
            .and_then(move |asked: Asked| {
                let state = state.clone();
                async move {
                    check(&state, need, &asked)
                        .await
                        .map_err(|e| warp::reject::custom(Refused(e)))
                }
            })
            .untuple_one();
        let params = warp::path::full()
            .map(move |full: FullPath| match_template(path, full.as_str()).unwrap_or_default())
            .boxed();
        let route = selected.and(checked).and(handler(params).boxed()).boxed();
        self.filter = Some(match self.filter.take() {
            None => route,
            Some(before) => before.or(route).unify().boxed(),
        });
        self
    }

    /// Adds `OPTIONS` (public: CORS preflights) to every path, and the
    /// refusal of whatever no route matches. Returns the table and the
    /// filter.
    pub fn finish(mut self) -> (Arc<[RouteSpec]>, BoxedFilter<(Response,)>) {
        let mut paths: Vec<&'static str> = Vec::new();
        for spec in &self.specs {
            if !paths.contains(&spec.path) {
                paths.push(spec.path);
            }
        }
        for path in paths {
            let allow = allowed_methods(&self.specs, path);
            let state = self.state.clone();
            self = self.route(Method::OPTIONS, path, Need::Public, move |_| {
                warp::header::optional::<String>("origin")
                    .and(warp::header::optional::<String>(
                        "access-control-request-method",
                    ))
                    .map(move |origin: Option<String>, method: Option<String>| {
                        state
                            .control
                            .security()
                            .cors
                            .preflight(origin.as_deref(), method.as_deref(), &allow)
                            .unwrap_or_else(|message| ApiError::Forbidden(message).into_response())
                    })
            });
        }
        let specs: Arc<[RouteSpec]> = self.specs.into();
        let table = Arc::clone(&specs);
        let state = self.state;
        let unmatched = asked().and_then(move |asked: Asked| {
            let table = Arc::clone(&table);
            let state = state.clone();
            async move {
                let answered = table.iter().any(|s| {
                    s.method == asked.method && match_template(s.path, &asked.path).is_some()
                });
                if answered {
                    // The route matched and refused or failed itself; its
                    // own rejection says why.
                    return Err(warp::reject::not_found());
                }
                Err(warp::reject::custom(Refused(
                    refuse_unmatched(&state, &table, &asked).await,
                )))
            }
        });
        let routes = match self.filter {
            Some(routes) => routes.or(unmatched).unify().boxed(),
            None => unmatched.boxed(),
        };
        (specs, routes)
    }
}

/// `GET, POST, OPTIONS`: the methods of `path`, for `Allow` headers.
fn allowed_methods(specs: &[RouteSpec], path: &str) -> String {
    let mut methods: Vec<&str> = specs
        .iter()
        .filter(|s| s.path == path)
        .map(|s| s.method.as_str())
        .collect();
    if !methods.contains(&"OPTIONS") {
        methods.push("OPTIONS");
    }
    methods.join(", ")
}

/// Why a request that no route matched is refused.
async fn refuse_unmatched(state: &AppState, table: &[RouteSpec], asked: &Asked) -> ApiError {
    // Credentials first: without one, nothing about the path is told.
    let security = state.control.security();
    if security.auth.is_some()
        && let Err(e) = authenticate(state, &security, asked, true).await
    {
        return e;
    }
    if let Some(why) = non_canonical(&asked.path) {
        return ApiError::BadPath(format!(
            "{why}: write paths the one canonical way, e.g. /api/cameras/ID (docs/api.md)"
        ));
    }
    let templates: Vec<&'static str> = table
        .iter()
        .filter(|s| match_template(s.path, &asked.path).is_some())
        .map(|s| s.path)
        .collect();
    match templates.first() {
        Some(path) => ApiError::MethodNotAllowed {
            allow: allowed_methods(table, path),
        },
        None => ApiError::NotFound("see GET /api/cameras and docs/api.md".into()),
    }
}

/// A request the access check turned away, carried as a warp rejection.
#[derive(Debug)]
pub(super) struct Refused(pub(super) ApiError);

impl warp::reject::Reject for Refused {}

/// What the access check looks at.
#[derive(Clone, Debug)]
pub struct Asked {
    pub method: Method,
    /// As sent: not decoded, not normalised.
    pub path: String,
    pub host: Option<String>,
    pub headers: HeaderMap,
    pub query: HashMap<String, String>,
    pub client: Option<IpAddr>,
}

fn asked() -> impl Filter<Extract = (Asked,), Error = std::convert::Infallible> + Clone {
    warp::method()
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and(super::query())
        .and(warp::ext::optional::<ClientAddr>())
        .map(
            |method: Method,
             path: FullPath,
             headers: HeaderMap,
             query: HashMap<String, String>,
             client: Option<ClientAddr>| Asked {
                method,
                path: path.as_str().to_string(),
                host: headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string),
                headers,
                query,
                client: client.map(|c| c.0.ip()),
            },
        )
}

/// Lets a request for a route that needs `need` through, or says why not.
async fn check(state: &AppState, need: Need, asked: &Asked) -> Result<(), ApiError> {
    let security = state.control.security();
    match need {
        Need::Public => Ok(()),
        Need::View | Need::ViewWithQueryToken => {
            if security.auth.is_none() {
                return Ok(());
            }
            authenticate(state, &security, asked, need == Need::ViewWithQueryToken)
                .await
                .map(drop)
        }
        Need::Admin => {
            if security.auth.is_none() {
                return Err(ApiError::Forbidden(
                    "changing cameras through the API is disabled until [server.auth] is configured: \
                     a camera's source can name any URL or device, so only an authenticated \
                     admin may create one (see docs/security.md)"
                        .into(),
                ));
            }
            security.check_origin(asked.host.as_deref(), &asked.headers, "change cameras")?;
            let role = authenticate(state, &security, asked, false).await?;
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

/// The role of the request's credential (auth must be configured). Counts
/// wrong credentials against the client's address.
async fn authenticate(
    state: &AppState,
    security: &Arc<Security>,
    asked: &Asked,
    query_allowed: bool,
) -> Result<Role, ApiError> {
    let Some(auth) = &security.auth else {
        return Ok(Role::Admin);
    };
    let authorization = asked
        .headers
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let query_token = asked.query.get("token").filter(|_| query_allowed);
    let credential = Credential::from_request(authorization, query_token.map(String::as_str))
        .map_err(|e| unauthorized(auth, e))?
        .ok_or_else(|| unauthorized(auth, auth.missing(query_allowed)))?;
    let gate = &state.gate;
    if let Some(retry_after) = gate.logins.blocked(asked.client) {
        return Err(ApiError::TooManyFailedLogins { retry_after });
    }
    let verdict = match auth.verify_quick(&credential) {
        Some(verdict) => verdict,
        None => {
            // argon2: off the async threads, a few at a time.
            let _permit = gate.slow_checks.acquire().await;
            let security = Arc::clone(security);
            tokio::task::spawn_blocking(move || match &security.auth {
                Some(auth) => auth.verify(&credential),
                None => Err(AuthError::Invalid),
            })
            .await
            .unwrap_or(Err(AuthError::Invalid))
        }
    };
    verdict.map_err(|e| {
        if e.is_failed_login() {
            gate.logins.failed(asked.client);
        }
        unauthorized(auth, e)
    })
}

fn unauthorized(auth: &Authenticator, error: AuthError) -> ApiError {
    ApiError::Unauthorized {
        message: error.to_string(),
        challenges: auth.challenges(),
    }
}

/// State the access check keeps across requests and reloads.
#[derive(Debug)]
pub struct Gate {
    pub logins: FailedLogins,
    slow_checks: Semaphore,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            logins: FailedLogins::default(),
            slow_checks: Semaphore::new(CONCURRENT_SLOW_CHECKS),
        }
    }
}

/// Wrong credentials per client address, in fixed windows.
#[derive(Debug, Default)]
pub struct FailedLogins {
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    /// Requests refused with 429 so far (for /metrics).
    refused: std::sync::atomic::AtomicU64,
}

impl FailedLogins {
    /// IPv6 clients are counted per /64, the block one host usually has
    /// to itself: otherwise each guess could come from a new address.
    fn key(client: Option<IpAddr>) -> IpAddr {
        match client {
            Some(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::V6(octets.into())
            }
            Some(IpAddr::V6(v6)) => IpAddr::V4(
                v6.to_ipv4_mapped()
                    .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
            ),
            Some(ip) => ip,
            None => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        }
    }

    /// How long `client` must wait, if it is over the limit.
    pub fn blocked(&self, client: Option<IpAddr>) -> Option<Duration> {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let (start, count) = *windows.get(&Self::key(client))?;
        let left = FAILED_LOGIN_WINDOW.checked_sub(start.elapsed())?;
        if count >= MAX_FAILED_LOGINS {
            self.refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Some(left)
        } else {
            None
        }
    }

    /// Records a wrong credential from `client`.
    pub fn failed(&self, client: Option<IpAddr>) {
        let key = Self::key(client);
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= FAILED_LOGIN_ADDRESSES && !windows.contains_key(&key) {
            windows.retain(|_, (start, _)| now.duration_since(*start) < FAILED_LOGIN_WINDOW);
            if windows.len() >= FAILED_LOGIN_ADDRESSES
                && let Some(oldest) = windows.iter().min_by_key(|(_, (s, _))| *s).map(|(k, _)| *k)
            {
                windows.remove(&oldest);
            }
        }
        let entry = windows.entry(key).or_insert((now, 0));
        if now.duration_since(entry.0) >= FAILED_LOGIN_WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        if entry.1 == MAX_FAILED_LOGINS {
            tracing::warn!(
                client = %key,
                "{MAX_FAILED_LOGINS} wrong credentials within {}s: refusing this address's credentials until the window ends",
                FAILED_LOGIN_WINDOW.as_secs()
            );
        }
    }

    /// Requests refused with 429 so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Authentication, CORS and what the API may change, as configured;
/// replaced as a whole on reload.
#[derive(Debug, Default)]
pub struct Security {
    pub auth: Option<Authenticator>,
    pub cors: Cors,
    /// `[server] api_pipelines`: raw gst-launch text through the API.
    pub api_pipelines: bool,
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
                api_pipelines: server.api_pipelines,
            },
            warnings,
        )
    }

    /// A request from a browser page must come from this server's own page
    /// or from a `cors_origins` entry. No `Origin`: not a browser, or a
    /// same-origin request that carries none. `what` names the action in
    /// the refusal.
    pub fn check_origin(
        &self,
        host: Option<&str>,
        headers: &HeaderMap,
        what: &str,
    ) -> Result<(), ApiError> {
        let Some(origin) = headers.get(header::ORIGIN) else {
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
            "a page on {} may not {what}: add its origin to [server] cors_origins",
            crate::redact::redact_text(origin)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_canonical_paths_only() {
        let id = |p: &str| match_template("/api/cameras/{id}", p).map(|p| p.id().to_string());
        assert_eq!(id("/api/cameras/1").as_deref(), Some("1"));
        assert_eq!(id("/api/cameras/"), None);
        assert_eq!(id("/api/cameras/1/"), None);
        assert_eq!(id("/api//cameras/1"), None);
        assert_eq!(id("/api/./cameras/1"), None);
        assert_eq!(id("/api/cameras/.."), None);
        assert_eq!(id("/api/cameras/%61"), None);
        assert_eq!(id("/api/cameras/1/stream.mjpeg"), None);
        assert!(match_template("/", "/").is_some());
        assert!(match_template("/", "//").is_none());
        assert!(match_template("/healthz", "/").is_none());
        assert!(match_template("/api/cameras", "/api/cameras").is_some());
        assert!(match_template("/api/cameras", "/API/cameras").is_none());
        assert!(non_canonical("*").is_some());
    }

    #[test]
    fn failed_logins_are_counted_per_address_and_v6_block() {
        let logins = FailedLogins::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..MAX_FAILED_LOGINS - 1 {
            logins.failed(Some(a));
        }
        assert_eq!(logins.blocked(Some(a)), None);
        logins.failed(Some(a));
        let wait = logins.blocked(Some(a)).unwrap();
        assert!(wait <= FAILED_LOGIN_WINDOW && wait > Duration::ZERO);
        assert_eq!(logins.blocked(Some(b)), None);
        let v6 = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        for i in 0..MAX_FAILED_LOGINS {
            logins.failed(v6(&format!("2001:db8::{i}")));
        }
        assert!(logins.blocked(v6("2001:db8::ffff")).is_some(), "one /64");
        assert!(logins.blocked(v6("2001:db8:0:1::1")).is_none());
    }
}
