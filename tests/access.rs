//! Deny by default, on one route table: every route the server answers x
//! every method x the spellings a client could use for its path, with and
//! without `[server.auth]`, with no, wrong, view and admin credentials (in
//! the header and in `?token=`), each status checked against the route's
//! rule. Then the failed-login limit, and the grid WebSocket as a viewer
//! (limits and origins).
//!
//! The expected outcome is computed from the route table the server was
//! built from (`App::routes`), and the table is checked against
//! docs/openapi.json both ways, so a route added without a rule, or
//! outside the table, fails here.

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use camstream::App;
use camstream::http::access::{MAX_FAILED_LOGINS, Need, RouteSpec};
use common::app::{self, base};
use common::raw;
use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const ADMIN: &str = "admin-token-0123456789abcdef";
const VIEW: &str = "view-token-0123456789abcdef";
const WRONG: &str = "wrong-token-0123456789abcdef";
const SMALL: &str = "test:ball?width=160&height=120&fps=10";
/// A camera id no camera has: every route that names one answers quickly
/// (404 unknown_camera) once past its rule, and nothing changes.
const NOBODY: &str = "nobody";
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND",
];

fn auth_section() -> String {
    format!("[server.auth]\ntokens = [\"{ADMIN}\"]\nview_tokens = [\"{VIEW}\"]\n")
}

/// A server from a config file in its own directory.
struct Server {
    app: App,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(server_extra: &str, cameras: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("camstream.toml");
        std::fs::write(
            &path,
            format!("[server]\nlisten = \"127.0.0.1:0\"\n{server_extra}\n{cameras}"),
        )
        .unwrap();
        let app = app::start_from_file(&path).await;
        Server {
            app,
            path,
            _dir: dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.app.local_addr()
    }

    fn file(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap()
    }
}

/// What a request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cred {
    None,
    Wrong,
    View,
    Admin,
    ViewInQuery,
    AdminInQuery,
}

const CREDS: [Cred; 6] = [
    Cred::None,
    Cred::Wrong,
    Cred::View,
    Cred::Admin,
    Cred::ViewInQuery,
    Cred::AdminInQuery,
];

impl Cred {
    fn header(self) -> Option<String> {
        match self {
            Cred::Wrong => Some(format!("Bearer {WRONG}")),
            Cred::View => Some(format!("Bearer {VIEW}")),
            Cred::Admin => Some(format!("Bearer {ADMIN}")),
            _ => None,
        }
    }

    fn query(self) -> Option<String> {
        match self {
            Cred::ViewInQuery => Some(format!("token={VIEW}")),
            Cred::AdminInQuery => Some(format!("token={ADMIN}")),
            _ => None,
        }
    }
}

/// What a request should get.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    /// Through the access check to the handler: not a refusal.
    Pass,
    /// Refused with this status and error code.
    Refused(u16, &'static str),
}

const UNAUTHORIZED: Expect = Expect::Refused(401, "unauthorized");
const FORBIDDEN: Expect = Expect::Refused(403, "forbidden");

/// The rule of a route, for a request that matched it.
fn expect_route(need: Need, auth: bool, cred: Cred) -> Expect {
    match (need, auth) {
        (Need::Public, _) => Expect::Pass,
        (Need::View | Need::ViewWithQueryToken, false) => Expect::Pass,
        (Need::Admin, false) => FORBIDDEN,
        (Need::View, true) => match cred {
            Cred::View | Cred::Admin => Expect::Pass,
            _ => UNAUTHORIZED,
        },
        (Need::ViewWithQueryToken, true) => match cred {
            Cred::View | Cred::Admin | Cred::ViewInQuery => Expect::Pass,
            _ => UNAUTHORIZED,
        },
        (Need::Admin, true) => match cred {
            Cred::Admin => Expect::Pass,
            Cred::View => FORBIDDEN,
            _ => UNAUTHORIZED,
        },
    }
}

/// For a request no route matches: 401 unless a valid credential came
/// (with auth), else what is wrong with it.
fn expect_unmatched(auth: bool, cred: Cred, otherwise: Expect) -> Expect {
    let valid = matches!(cred, Cred::View | Cred::Admin | Cred::ViewInQuery);
    if auth && !valid {
        UNAUTHORIZED
    } else {
        otherwise
    }
}

fn outcome(response: &raw::Response) -> Expect {
    let code = response.code().unwrap_or_default();
    // No body: a HEAD response, or hyper refusing a request line itself.
    let bodiless_error = response.body.is_empty() && response.status >= 400;
    let refusal = bodiless_error
        || matches!(response.status, 401 | 403 | 429)
        || matches!(
            code.as_str(),
            "not_found" | "method_not_allowed" | "bad_path"
        );
    if refusal {
        let code: &'static str = match code.as_str() {
            "unauthorized" => "unauthorized",
            "forbidden" => "forbidden",
            "not_found" => "not_found",
            "method_not_allowed" => "method_not_allowed",
            "bad_path" => "bad_path",
            "too_many_failed_logins" => "too_many_failed_logins",
            // HEAD responses carry no body to read a code from.
            _ => "?",
        };
        Expect::Refused(response.status, code)
    } else {
        Expect::Pass
    }
}

/// Other ways to write `path`, none of them canonical: each must be
/// refused, never reach a handler.
fn spellings(path: &str) -> Vec<(&'static str, String)> {
    let mut out = vec![("trailing slash", format!("{path}/"))];
    if path == "/" {
        out.push(("dot segment", "/./".into()));
        out.push(("dot-dot segment", "/x/..".into()));
        out.push(("encoded slash", "/%2F".into()));
        return out;
    }
    // The second '/' (or the first, for one-segment paths).
    let second = path[1..].find('/').map_or(0, |i| i + 1);
    let (head, tail) = path.split_at(second);
    out.push(("doubled slash", format!("{head}/{tail}")));
    out.push(("dot segment", format!("{head}/.{tail}")));
    out.push(("dot-dot segment", format!("{head}/x/..{tail}")));
    out.push(("leading doubled slash", format!("/{path}")));
    let first = path.as_bytes()[1];
    out.push((
        "percent-encoded letter",
        format!("/%{first:02X}{}", &path[2..]),
    ));
    if second > 0 {
        out.push(("encoded slash", format!("{head}%2F{}", &tail[1..])));
    }
    out
}

/// `target` with the credential's query parameter added.
fn with_query(target: &str, cred: Cred) -> String {
    match cred.query() {
        None => target.to_string(),
        Some(q) if target.contains('?') => format!("{target}&{q}"),
        Some(q) => format!("{target}?{q}"),
    }
}

/// Each request comes from its own loopback address, so the wrong
/// credentials of the matrix never reach the failed-login limit (tested on
/// its own below).
struct Clients(u32);

impl Clients {
    fn next(&mut self) -> IpAddr {
        self.0 += 1;
        let n = self.0;
        IpAddr::V4(Ipv4Addr::new(127, 2, (n / 250) as u8, (n % 250 + 1) as u8))
    }
}

async fn ask(
    server: &Server,
    clients: &mut Clients,
    method: &str,
    target: &str,
    cred: Cred,
) -> raw::Response {
    let target = with_query(target, cred);
    let header = cred.header();
    let mut headers = Vec::new();
    if let Some(h) = &header {
        headers.push(("Authorization", h.as_str()));
    }
    let body = matches!(method, "POST" | "PUT" | "PATCH" | "PROPFIND").then_some("{}");
    let request = raw::request(method, &target, &headers, body);
    raw::send(server.addr(), clients.next(), &request)
        .await
        .unwrap_or_else(|e| panic!("{method} {target}: {e}"))
}

/// Walks the matrix; returns every mismatch.
async fn walk(server: &Server, auth: bool) -> (usize, Vec<String>) {
    let table: Vec<RouteSpec> = server.app.routes().to_vec();
    let mut paths: Vec<&'static str> = Vec::new();
    for spec in &table {
        if !paths.contains(&spec.path) {
            paths.push(spec.path);
        }
    }
    let mut clients = Clients(0);
    let mut failures = Vec::new();
    let mut allow_failures = Vec::new();
    let mut count = 0;
    let mut check = |what: String, got: &raw::Response, want: Expect| {
        count += 1;
        let seen = outcome(got);
        let ok = match (&want, &seen) {
            (Expect::Refused(s, _), Expect::Refused(gs, "?")) => s == gs,
            _ => seen == want,
        };
        if !ok {
            failures.push(format!(
                "{what}: want {want:?}, got {seen:?} {}",
                String::from_utf8_lossy(&got.body)
            ));
        }
    };
    for path in &paths {
        let concrete = path.replace("{id}", NOBODY);
        for method in METHODS {
            let spec = table
                .iter()
                .find(|s| s.path == *path && s.method.as_str() == method);
            for cred in CREDS {
                // The path as written, and with a query string.
                for target in [concrete.clone(), format!("{concrete}?x=1")] {
                    let got = ask(server, &mut clients, method, &target, cred).await;
                    let want = match spec {
                        Some(spec) => expect_route(spec.need, auth, cred),
                        None => {
                            expect_unmatched(auth, cred, Expect::Refused(405, "method_not_allowed"))
                        }
                    };
                    if spec.is_none() && got.status == 405 {
                        let allow: BTreeSet<&str> = got
                            .header("allow")
                            .unwrap_or_default()
                            .split(", ")
                            .collect();
                        let want_allow: BTreeSet<&str> = table
                            .iter()
                            .filter(|s| s.path == *path)
                            .map(|s| s.method.as_str())
                            .collect();
                        if allow != want_allow {
                            allow_failures.push(format!(
                                "{method} {target}: Allow {allow:?}, want {want_allow:?}"
                            ));
                        }
                    }
                    check(format!("{method} {target} {cred:?}"), &got, want);
                }
                if let Some(spec) = spec {
                    for (how, target) in spellings(&concrete) {
                        let got = ask(server, &mut clients, method, &target, cred).await;
                        let want = expect_unmatched(auth, cred, Expect::Refused(400, "bad_path"));
                        check(
                            format!("{} {target} ({how}) {cred:?}", spec.method),
                            &got,
                            want,
                        );
                    }
                }
            }
        }
    }
    // Paths no route has: nothing about them is told without a credential.
    for path in [
        "/api",
        "/admin",
        "/API/cameras",
        "/api/cameras/nobody/stream",
        "/api/cameras/nobody/snapshot.jpg/x",
        "/healthz.json",
        "/index.html",
        "*",
    ] {
        for cred in CREDS {
            if path == "*" && cred.query().is_some() {
                // hyper refuses "*?token=..." itself (400), before routing.
                continue;
            }
            let got = ask(server, &mut clients, "GET", path, cred).await;
            let otherwise = if path == "*" {
                Expect::Refused(400, "bad_path")
            } else {
                Expect::Refused(404, "not_found")
            };
            check(
                format!("GET {path} {cred:?}"),
                &got,
                expect_unmatched(auth, cred, otherwise),
            );
        }
    }
    failures.extend(allow_failures);
    (count, failures)
}

fn documented() -> BTreeSet<(String, String)> {
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json"))
            .unwrap(),
    )
    .unwrap();
    file["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| {
                    ["get", "post", "put", "delete", "patch", "options", "head"]
                        .contains(&k.as_str())
                })
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_method_and_spelling_gets_its_rule() {
    let cameras = format!("[[cameras]]\nid = \"a\"\nsource = \"{SMALL}\"\n");
    for auth in [false, true] {
        let extra = if auth { auth_section() } else { String::new() };
        let server = Server::start(&extra, &cameras).await;
        let table: BTreeSet<(String, String)> = server
            .app
            .routes()
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_string()))
            .collect();
        assert_eq!(
            table,
            documented(),
            "the route table and docs/openapi.json differ"
        );
        // Every route states its rule; changes are admin-only.
        for spec in server.app.routes() {
            let mutating = !matches!(spec.method.as_str(), "GET" | "OPTIONS");
            assert_eq!(
                mutating,
                spec.need == Need::Admin,
                "{} {}: {:?}",
                spec.method,
                spec.path,
                spec.need
            );
        }
        let before = server.file();
        let (count, failures) = walk(&server, auth).await;
        assert!(
            failures.is_empty(),
            "auth {auth}: {} of {count} requests got the wrong answer:\n{}",
            failures.len(),
            failures.join("\n")
        );
        assert!(count > 1000, "the matrix ran ({count} requests)");
        assert_eq!(server.file(), before, "no request changed the config file");
        eprintln!("auth {auth}: {count} requests, each as its route's rule says");
        server.app.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issue_request_creates_nothing() {
    // The request from the issue, as written, and canonical, without auth.
    let server = Server::start("", "[[cameras]]\nid = \"a\"\nsource = \"test:\"\n").await;
    let before = server.file();
    let body = r#"{"id":"x","always_on":true,"pipeline":"videotestsrc num-buffers=5 ! jpegenc ! tee name=t ! queue ! appsink name=sink t. ! queue ! filesink location=/tmp/camstream-pwned"}"#;
    for target in ["/api/cameras/", "/api/cameras"] {
        let request = raw::request("POST", target, &[], Some(body));
        let got = raw::send(server.addr(), IpAddr::V4(Ipv4Addr::LOCALHOST), &request)
            .await
            .unwrap();
        assert!(
            matches!(got.status, 400 | 403),
            "{target}: {} {}",
            got.status,
            String::from_utf8_lossy(&got.body)
        );
    }
    for target in ["/api/cameras/a/", "/api/cameras/a"] {
        for method in ["PUT", "DELETE"] {
            let request = raw::request(method, target, &[], Some(body));
            let got = raw::send(server.addr(), IpAddr::V4(Ipv4Addr::LOCALHOST), &request)
                .await
                .unwrap();
            assert!(matches!(got.status, 400 | 403), "{method} {target}");
        }
    }
    assert_eq!(server.file(), before);
    assert!(!Path::new("/tmp/camstream-pwned").exists());
    server.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_rate_limited_per_address() {
    let server = Server::start(
        &auth_section(),
        "[[cameras]]\nid = \"a\"\nsource = \"test:\"\n",
    )
    .await;
    let attacker = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));
    let neighbour = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10));
    let get = |from: IpAddr, auth: Option<String>| {
        let addr = server.addr();
        async move {
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| vec![("Authorization", a)])
                .unwrap_or_default();
            raw::send(
                addr,
                from,
                &raw::request("GET", "/api/cameras", &headers, None),
            )
            .await
            .unwrap()
        }
    };
    let wrong = || Some(format!("Bearer {WRONG}"));
    let right = || Some(format!("Bearer {VIEW}"));
    for i in 0..MAX_FAILED_LOGINS {
        let got = get(attacker, wrong()).await;
        assert_eq!(got.status, 401, "wrong credential #{}", i + 1);
    }
    // Over the limit: every credential from that address is refused,
    // the right one too, so guessing tells nothing.
    for auth in [wrong(), right()] {
        let got = get(attacker, auth).await;
        assert_eq!(got.status, 429, "{}", String::from_utf8_lossy(&got.body));
        assert_eq!(got.code().as_deref(), Some("too_many_failed_logins"));
        let retry: u64 = got.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
    }
    // A request without credentials is not a failed login, and public
    // routes stay open.
    assert_eq!(get(attacker, None).await.status, 401);
    let health = raw::send(
        server.addr(),
        attacker,
        &raw::request("GET", "/healthz", &[], None),
    )
    .await
    .unwrap();
    assert_eq!(health.status, 200);
    // Other addresses are not affected.
    assert_eq!(get(neighbour, right()).await.status, 200);
    assert_eq!(get(neighbour, wrong()).await.status, 401);
    let metrics = raw::send(
        server.addr(),
        neighbour,
        &raw::request(
            "GET",
            "/metrics",
            &[("Authorization", &format!("Bearer {ADMIN}"))],
            None,
        ),
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("camstream_failed_login_refusals_total 2"),
        "{text}"
    );
    server.app.shutdown().await;
}

/// Opens the grid socket with `origin`; the upgrade's status, or 101.
async fn open_grid(
    server: &Server,
    cameras: &str,
    origin: Option<&str>,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    u16,
> {
    let url = format!(
        "ws://{}/api/ws?cameras={cameras}&token={VIEW}",
        server.addr()
    );
    let mut request = url.into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("grid socket: {e}"),
    }
}

async fn viewers(server: &Server, id: &str) -> u64 {
    let response = app::client()
        .get(format!("{}/api/cameras/{id}", base(&server.app)))
        .bearer_auth(VIEW)
        .send()
        .await
        .unwrap();
    let info: Value = response.json().await.unwrap();
    info["viewers"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grid_socket_is_a_viewer_and_checks_its_origin() {
    const FRONT: &str = "http://front.example:3000";
    let server = Server::start(
        &format!(
            "max_viewers = 3\ncors_origins = [\"{FRONT}\"]\n{}",
            auth_section()
        ),
        &format!(
            "[[cameras]]\nid = \"a\"\nsource = \"{SMALL}\"\nmax_viewers = 1\n\
             [[cameras]]\nid = \"b\"\nsource = \"{SMALL}\"\n\
             [[cameras]]\nid = \"c\"\nsource = \"{SMALL}\"\n"
        ),
    )
    .await;
    let own = format!("http://{}", server.addr());

    // Origins: another site's page may not open it; the page's own, a
    // listed origin and non-browsers (no Origin) may.
    assert_eq!(
        open_grid(&server, "b", Some("http://evil.example"))
            .await
            .err(),
        Some(403)
    );
    assert_eq!(open_grid(&server, "b", Some("null")).await.err(), Some(403));
    for origin in [None, Some(own.as_str()), Some(FRONT)] {
        let mut socket = open_grid(&server, "b", origin)
            .await
            .unwrap_or_else(|s| panic!("{origin:?}: {s}"));
        let frame = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("a frame")
            .unwrap()
            .unwrap();
        assert!(frame.is_binary());
        drop(socket);
    }
    wait_until(|| async { viewers(&server, "b").await == 0 }).await;

    // Each camera on the socket is a viewer: "a" allows one.
    let grid = open_grid(&server, "a,b", None).await.expect("socket");
    wait_until(|| async { viewers(&server, "a").await == 1 && viewers(&server, "b").await == 1 })
        .await;
    assert_eq!(
        open_grid(&server, "a", None).await.err(),
        Some(503),
        "camera a's max_viewers = 1 is taken by the grid"
    );
    let stream = app::client()
        .get(format!(
            "{}/api/cameras/a/stream.mjpeg?token={VIEW}",
            base(&server.app)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 503);
    // The server's max_viewers = 3 counts the grid's two: one more fits.
    let c = app::client()
        .get(format!(
            "{}/api/cameras/c/snapshot.jpg?token={VIEW}",
            base(&server.app)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(c.status(), 200);
    let held = app::client()
        .get(format!(
            "{}/api/cameras/c/stream.mjpeg?token={VIEW}",
            base(&server.app)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(held.status(), 200);
    assert_eq!(
        open_grid(&server, "b", None).await.err(),
        Some(503),
        "server full: two grid tiles and a stream"
    );
    // Closing the socket gives its places back.
    drop(grid);
    wait_until(|| async { viewers(&server, "a").await == 0 }).await;
    let again = open_grid(&server, "a", None).await;
    assert!(again.is_ok(), "a's place is free again");
    drop(held);
    server.app.shutdown().await;
}

/// Polls `cond` until it holds, for at most 20 s.
async fn wait_until<F, Fut>(cond: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !cond().await {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
