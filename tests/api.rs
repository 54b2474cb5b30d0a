//! The camera REST API against a real server and a real config file:
//! create, change and delete cameras, persisted across a restart; the same
//! validation errors as the config file; atomic saves; reloads that leave
//! unchanged cameras streaming; auth on and off; CORS; and the OpenAPI
//! document against the routes actually served.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use camstream::{App, Config};
use common::app::{self, base, client};
use common::mjpeg::{MjpegStream, decode_jpeg};
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-0123456789abcdef";
const VIEWER: &str = "viewer-token-0123456789abcdef";
/// `printf %s 'open sesame' | sha256sum`
const ANN_SHA256: &str = "41ef4bb0b23661e66301aac36066912dac037827b4ae63a7b1165a5aa93ed4eb";
/// A first frame needs a pipeline start (well under a second here); the
/// margin is for a loaded CI machine.
const PART_TIMEOUT: Duration = Duration::from_secs(20);
const SMALL: &str = "test:ball?width=160&height=120&fps=10";

fn auth_section() -> String {
    format!(
        "[server.auth]\ntokens = [\"{ADMIN}\"]\nview_tokens = [\"{VIEWER}\"]\n\
         [[server.auth.users]]\nname = \"ann\"\npassword_sha256 = \"{ANN_SHA256}\"\n"
    )
}

/// A server started from a config file in its own directory.
struct Server {
    app: App,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(server_extra: &str, rest: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("camstream.toml");
        std::fs::write(
            &path,
            format!("# camstream test config\n[server]\nlisten = \"127.0.0.1:0\"\n{server_extra}\n{rest}"),
        )
        .unwrap();
        let app = app::start_from_file(&path).await;
        Server {
            app,
            path,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", base(&self.app))
    }

    fn file(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap()
    }

    /// Stops the server and starts a new one from the same file.
    async fn restart(self) -> Server {
        let Server { app, path, _dir } = self;
        app.shutdown().await;
        let app = app::start_from_file(&path).await;
        Server { app, path, _dir }
    }
}

/// Sends a request; returns status, headers and the body as JSON (or as a
/// JSON string when it is not JSON).
async fn send(request: RequestBuilder) -> (u16, HeaderMap, Value) {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

fn as_admin(method: Method, url: String) -> RequestBuilder {
    client().request(method, url).bearer_auth(ADMIN)
}

fn post_json(server: &Server, body: Value) -> RequestBuilder {
    as_admin(Method::POST, server.url("/api/cameras")).json(&body)
}

fn put_json(server: &Server, id: &str, body: Value) -> RequestBuilder {
    as_admin(Method::PUT, server.url(&format!("/api/cameras/{id}"))).json(&body)
}

async fn info(server: &Server, id: &str) -> Value {
    let (status, _, body) = send(
        client()
            .get(server.url(&format!("/api/cameras/{id}")))
            .bearer_auth(VIEWER),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn ids(server: &Server) -> Vec<String> {
    let (status, _, body) =
        send(client().get(server.url("/api/cameras")).bearer_auth(VIEWER)).await;
    assert_eq!(status, 200, "{body}");
    body.as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

async fn stream(server: &Server, id: &str) -> MjpegStream {
    MjpegStream::connect(&server.url(&format!("/api/cameras/{id}/stream.mjpeg?token={VIEWER}")))
        .await
        .expect("stream opens")
}

async fn frame_size(stream: &mut MjpegStream) -> (u32, u32) {
    let part = stream
        .next_part_timeout(PART_TIMEOUT)
        .await
        .expect("a part");
    let image = decode_jpeg(&part.body).expect("a JPEG");
    (image.width, image.height)
}

/// Reads parts until one has `size` (the stream may still carry a frame or
/// two from before a change).
async fn wait_for_size(stream: &mut MjpegStream, size: (u32, u32)) {
    let mut seen = Vec::new();
    for _ in 0..50 {
        let got = frame_size(stream).await;
        if got == size {
            return;
        }
        seen.push(got);
    }
    panic!("never saw {size:?}; saw {seen:?}");
}

fn config_ids(path: &Path) -> Vec<String> {
    Config::load(path)
        .expect("the saved file loads")
        .cameras
        .iter()
        .map(|c| c.id.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cameras_are_created_changed_and_deleted_and_survive_a_restart() {
    let server = Server::start(
        &auth_section(),
        &format!("# The camera that must keep streaming.\n[[cameras]]\nid = \"keep\" # stays\nsource = \"{SMALL}\"\n"),
    )
    .await;
    let mut keep = stream(&server, "keep").await;
    assert_eq!(frame_size(&mut keep).await, (40, 30));
    let keep_starts = info(&server, "keep").await["starts"].clone();

    // Create.
    let (status, headers, body) = send(post_json(
        &server,
        json!({ "id": "new", "name": "New one", "source": SMALL, "scale": 0.5 }),
    ))
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(headers[header::LOCATION], "/api/cameras/new");
    assert_eq!(
        (body["id"].clone(), body["name"].clone()),
        (json!("new"), json!("New one"))
    );
    let mut new = stream(&server, "new").await;
    assert_eq!(frame_size(&mut new).await, (80, 60));
    let (status, _, body) =
        send(post_json(&server, json!({ "id": "temp", "source": SMALL }))).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(ids(&server).await, ["keep", "new", "temp"]);

    // Change: the viewer of "new" stays attached and sees the new size.
    let (status, _, body) = send(put_json(
        &server,
        "new",
        json!({ "name": "New one", "source": SMALL, "scale": 1.0 }),
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scale"], 1.0);
    wait_for_size(&mut new, (160, 120)).await;

    // Delete: its stream ends.
    let mut temp = stream(&server, "temp").await;
    frame_size(&mut temp).await;
    let (status, _, body) = send(as_admin(Method::DELETE, server.url("/api/cameras/temp"))).await;
    assert_eq!(status, 204, "{body}");
    let ended = tokio::time::timeout(PART_TIMEOUT, async {
        while temp.next_part().await.is_ok() {}
    })
    .await;
    assert!(ended.is_ok(), "the deleted camera's stream did not end");
    assert_eq!(ids(&server).await, ["keep", "new"]);

    // The other camera was never touched: same pipeline, still streaming.
    frame_size(&mut keep).await;
    assert_eq!(info(&server, "keep").await["starts"], keep_starts);

    // The file: comments kept, the cameras as changed.
    let file = server.file();
    assert!(file.starts_with("# camstream test config\n"), "{file}");
    assert!(
        file.contains(
            "# The camera that must keep streaming.\n[[cameras]]\nid = \"keep\" # stays\n"
        ),
        "{file}"
    );
    assert_eq!(config_ids(&server.path), ["keep", "new"]);

    // A restart loads the same cameras.
    drop((keep, new));
    let server = server.restart().await;
    assert_eq!(ids(&server).await, ["keep", "new"]);
    let new = info(&server, "new").await;
    assert_eq!(
        (new["name"].clone(), new["scale"].clone()),
        (json!("New one"), json!(1.0))
    );
    server.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_config_file_errors_and_change_nothing() {
    let server = Server::start(
        &auth_section(),
        &format!("[[cameras]]\nid = \"a\"\nsource = \"{SMALL}\"\n"),
    )
    .await;
    let before = server.file();

    // The message the config file gives for the same entry, without its
    // file:line prefix.
    let file_error = |entry: &str| {
        let config = Config::parse(&format!("[[cameras]]\n{entry}"), Some(&server.path)).unwrap();
        let err = config.cameras[0].settings.clone().unwrap_err();
        err.split_once(": ").unwrap().1.to_string()
    };
    for (body, entry) in [
        (
            json!({ "id": "b", "source": "test:", "scale": 0, "quality": 101 }),
            "id = \"b\"\nsource = \"test:\"\nscale = 0\nquality = 101\n",
        ),
        (
            json!({ "id": "b", "source": "test:", "sclae": 0.5 }),
            "id = \"b\"\nsource = \"test:\"\nsclae = 0.5\n",
        ),
        (json!({ "id": "b" }), "id = \"b\"\n"),
        (
            json!({ "id": "b", "pipeline_file": "../../etc/passwd" }),
            "id = \"b\"\npipeline_file = \"../../etc/passwd\"\n",
        ),
    ] {
        let (status, _, response) = send(post_json(&server, body.clone())).await;
        assert_eq!(status, 422, "{body}: {response}");
        assert_eq!(response["error"]["code"], "invalid_camera");
        assert_eq!(response["error"]["message"], file_error(entry), "{body}");
    }

    let cases: Vec<(RequestBuilder, u16, &str)> = vec![
        (
            post_json(&server, json!({ "id": "a", "source": SMALL })),
            409,
            "camera_exists",
        ),
        (
            put_json(&server, "zz", json!({ "source": SMALL })),
            404,
            "unknown_camera",
        ),
        (
            as_admin(Method::DELETE, server.url("/api/cameras/zz")),
            404,
            "unknown_camera",
        ),
        (
            put_json(&server, "a", json!({ "id": "b", "source": SMALL })),
            422,
            "invalid_camera",
        ),
        (
            put_json(&server, "a", json!(["not", "an", "object"])),
            422,
            "invalid_camera",
        ),
        (
            as_admin(Method::POST, server.url("/api/cameras"))
                .header(header::CONTENT_TYPE, "text/plain")
                .body("{\"id\": \"b\"}"),
            415,
            "unsupported_media_type",
        ),
        (
            as_admin(Method::POST, server.url("/api/cameras"))
                .header(header::CONTENT_TYPE, "application/json")
                .body("{\"id\": "),
            400,
            "bad_request",
        ),
        (
            as_admin(Method::POST, server.url("/api/cameras"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(vec![b' '; 100 * 1024]),
            413,
            "payload_too_large",
        ),
        // Percent-encoding never reaches a handler (tests/access.rs walks
        // every spelling); a bad id in a body does.
        (
            as_admin(Method::DELETE, server.url("/api/cameras/bad%20id")),
            400,
            "bad_path",
        ),
        (
            post_json(&server, json!({ "id": "bad id", "source": SMALL })),
            422,
            "invalid_camera",
        ),
        (
            as_admin(Method::PATCH, server.url("/api/cameras/a")),
            405,
            "method_not_allowed",
        ),
    ];
    for (request, status, code) in cases {
        let (got, _, body) = send(request).await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
    }
    assert_eq!(
        server.file(),
        before,
        "a refused request never touches the file"
    );
    assert_eq!(ids(&server).await, ["a"]);
    server.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auth_the_api_is_read_only() {
    let server = Server::start(
        "",
        &format!("[[cameras]]\nid = \"a\"\nsource = \"{SMALL}\"\n"),
    )
    .await;
    let before = server.file();
    let (status, _, body) = send(client().get(server.url("/api/cameras"))).await;
    assert_eq!(status, 200, "{body}");
    for request in [
        client()
            .post(server.url("/api/cameras"))
            .json(&json!({ "id": "b", "source": "test:" })),
        client()
            .put(server.url("/api/cameras/a"))
            .json(&json!({ "source": "test:" })),
        client().delete(server.url("/api/cameras/a")),
        // A token means nothing when no token is configured.
        client()
            .delete(server.url("/api/cameras/a"))
            .bearer_auth(ADMIN),
    ] {
        let (status, _, body) = send(request).await;
        assert_eq!(status, 403, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("[server.auth]"), "{message}");
    }
    assert_eq!(server.file(), before);
    server.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_everything_but_healthz_needs_credentials() {
    let server = Server::start(
        &auth_section(),
        &format!("[[cameras]]\nid = \"a\"\nsource = \"{SMALL}\"\n"),
    )
    .await;
    let get = |path: &str| client().get(server.url(path));

    // No credentials: 401 with both challenges, everywhere but /healthz.
    for path in [
        "/",
        "/api/cameras",
        "/api/cameras/a",
        "/api/cameras/a/stream.mjpeg",
        "/api/cameras/a/snapshot.jpg",
        "/api/cv/display?camera_id=a",
        "/api/ws?cameras=a",
        "/api/openapi.json",
        "/metrics",
        "/no/such/path",
    ] {
        let (status, headers, body) = send(get(path)).await;
        assert_eq!(status, 401, "{path}: {body}");
        let challenges: Vec<_> = headers
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert_eq!(
            challenges,
            [
                "Basic realm=\"camstream\", charset=\"UTF-8\"",
                "Bearer realm=\"camstream\""
            ],
            "{path}"
        );
    }
    let (status, _, _) = send(get("/healthz")).await;
    assert_eq!(status, 200);

    // Wrong credentials.
    for request in [
        get("/api/cameras").bearer_auth("not-a-token-0123456789"),
        get("/api/cameras").basic_auth("ann", Some("wrong")),
        get("/api/cameras").basic_auth("bob", Some("open sesame")),
        get("/api/cameras/a/snapshot.jpg?token=not-a-token-0123456789"),
    ] {
        let (status, _, body) = send(request).await;
        assert_eq!(status, 401, "{body}");
    }

    // Right credentials.
    for request in [
        get("/api/cameras").bearer_auth(VIEWER),
        get("/api/cameras").bearer_auth(ADMIN),
        get("/api/cameras").basic_auth("ann", Some("open sesame")),
        get("/metrics").bearer_auth(VIEWER),
        get(&format!("/?token={VIEWER}")),
        get(&format!("/api/cameras/a/snapshot.jpg?token={VIEWER}")),
    ] {
        let (status, _, body) = send(request).await;
        assert_eq!(status, 200, "{body}");
    }
    let mut s =
        MjpegStream::connect(&server.url(&format!("/api/cv/display?camera_id=a&token={VIEWER}")))
            .await
            .unwrap();
    s.next_part_timeout(PART_TIMEOUT).await.unwrap();
    drop(s);

    // ?token= is for what <img> and WebSocket load; not for the JSON API.
    let (status, _, _) = send(get(&format!("/api/cameras?token={VIEWER}"))).await;
    assert_eq!(status, 401);

    // Changing cameras: admins only, in a header, from this origin.
    let new = json!({ "id": "b", "source": SMALL });
    let post = || client().post(server.url("/api/cameras")).json(&new);
    let (status, _, body) = send(post().bearer_auth(VIEWER)).await;
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = send(
        client()
            .post(server.url(&format!("/api/cameras?token={ADMIN}")))
            .json(&new),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = send(
        post()
            .bearer_auth(ADMIN)
            .header(header::ORIGIN, "https://evil.example"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cors_origins")
    );
    let (status, _, body) = send(
        post()
            .basic_auth("ann", Some("open sesame"))
            .header(header::ORIGIN, server.url("")),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    server.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_and_responses() {
    const FRONT: &str = "http://front.example:3000";
    let server = Server::start(
        &format!("cors_origins = [\"{FRONT}\"]\n{}", auth_section()),
        &format!("[[cameras]]\nid = \"a\"\nsource = \"{SMALL}\"\n"),
    )
    .await;

    // A browser's preflight for a PUT with a JSON body and a bearer token:
    // no credentials on it, and it must still pass.
    let preflight = |origin: &str| {
        client()
            .request(Method::OPTIONS, server.url("/api/cameras/a"))
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "PUT")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "authorization, content-type",
            )
    };
    let (status, headers, body) = send(preflight(FRONT)).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], FRONT);
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    let methods = headers[header::ACCESS_CONTROL_ALLOW_METHODS]
        .to_str()
        .unwrap();
    assert!(
        methods.contains("PUT") && methods.contains("DELETE"),
        "{methods}"
    );
    let allowed = headers[header::ACCESS_CONTROL_ALLOW_HEADERS]
        .to_str()
        .unwrap();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{allowed}"
    );
    assert!(headers.contains_key(header::ACCESS_CONTROL_MAX_AGE));

    let (status, headers, body) = send(preflight("http://other.example")).await;
    assert_eq!(status, 403, "{body}");
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cors_origins")
    );

    // The actual requests: the listed origin may read the response, others
    // get it without CORS headers (so their script cannot), as if off.
    let get = |origin: &str| {
        client()
            .get(server.url("/api/cameras"))
            .bearer_auth(VIEWER)
            .header(header::ORIGIN, origin)
    };
    let (status, headers, _) = send(get(FRONT)).await;
    assert_eq!(status, 200);
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], FRONT);
    assert_eq!(headers[header::VARY], "origin");
    let (status, headers, _) = send(get("http://other.example")).await;
    assert_eq!(status, 200);
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    // A 401 carries CORS headers too, so the front end can read why.
    let (status, headers, _) = send(
        client()
            .get(server.url("/api/cameras"))
            .header(header::ORIGIN, FRONT),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], FRONT);
    // The listed origin may change cameras.
    let (status, _, body) = send(
        put_json(
            &server,
            "a",
            json!({ "source": SMALL, "name": "From the front end" }),
        )
        .header(header::ORIGIN, FRONT),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    server.app.shutdown().await;

    // Off by default: no CORS headers at all, preflights refused.
    let server = Server::start(
        "",
        &format!("[[cameras]]\nid = \"a\"\nsource = \"{SMALL}\"\n"),
    )
    .await;
    let (status, headers, _) = send(
        client()
            .get(server.url("/api/cameras"))
            .header(header::ORIGIN, FRONT),
    )
    .await;
    assert_eq!(status, 200);
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    assert!(!headers.contains_key(header::VARY));
    let (status, _, _) = send(
        client()
            .request(Method::OPTIONS, server.url("/api/cameras"))
            .header(header::ORIGIN, FRONT)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET"),
    )
    .await;
    assert_eq!(status, 403);
    server.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_describes_exactly_the_routes_served() {
    let server = Server::start(
        &auth_section(),
        &format!("[[cameras]]\nid = \"a\"\nsource = \"{SMALL}\"\n[[cameras]]\nid = \"b\"\nsource = \"{SMALL}\"\n"),
    )
    .await;
    let (status, _, served) = send(
        client()
            .get(server.url("/api/openapi.json"))
            .bearer_auth(VIEWER),
    )
    .await;
    assert_eq!(status, 200);
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(served, file, "the served document is docs/openapi.json");
    assert!(file["openapi"].as_str().unwrap().starts_with("3."));

    let documented: BTreeSet<(String, String)> = file["paths"]
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
        .collect();
    let routed: BTreeSet<(String, String)> = server
        .app
        .routes()
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    assert_eq!(
        documented, routed,
        "docs/openapi.json and the routes served differ"
    );

    // Every route is served: none answers with the "no such endpoint" 404
    // or 405 that unknown routes get.
    for (method, path) in &routed {
        // "b" is the one deleted, so "a" stays for the other routes.
        let id = if method == "DELETE" { "b" } else { "a" };
        let url = server.url(&path.replace("{id}", id));
        let request = as_admin(method.parse().unwrap(), url)
            .header(header::CONTENT_TYPE, "application/json")
            .body("{}");
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        // Streams never end: read only the head.
        let body: Value = if response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|t| t.to_str().unwrap().starts_with("application/json"))
        {
            response.json().await.unwrap()
        } else {
            Value::Null
        };
        assert_ne!(status, 405, "{method} {path}: {body}");
        assert_ne!(
            body["error"]["code"], "not_found",
            "{method} {path}: {body}"
        );
        // The document lists this status for the route.
        let op = &file["paths"][path][method.to_lowercase()];
        assert!(
            op["responses"].get(status.to_string()).is_some(),
            "{method} {path} answered {status}, which the document does not list: {body}"
        );
    }
    let (status, _, body) = send(as_admin(Method::GET, server.url("/api/nothing"))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    server.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_restarts_only_what_changed() {
    let cameras = |b_scale: f64, with_c: bool, with_d: bool| {
        let mut text = format!(
            "[[cameras]]\nid = \"a\"\nsource = \"{SMALL}\"\n[[cameras]]\nid = \"b\"\nsource = \"{SMALL}\"\nscale = {b_scale}\n"
        );
        if with_c {
            text.push_str(&format!("[[cameras]]\nid = \"c\"\nsource = \"{SMALL}\"\n"));
        }
        if with_d {
            text.push_str(&format!("[[cameras]]\nid = \"d\"\nsource = \"{SMALL}\"\n"));
        }
        text
    };
    let app = app::start(&cameras(0.25, true, false)).await;
    let open = |id: &str| {
        let url = format!("{}/api/cameras/{id}/stream.mjpeg", base(&app));
        async move { MjpegStream::connect(&url).await.unwrap() }
    };
    let (mut a, mut b, mut c) = (open("a").await, open("b").await, open("c").await);
    for s in [&mut a, &mut b, &mut c] {
        assert_eq!(frame_size(s).await, (40, 30));
    }
    let starts = |id: &'static str| {
        let app = &app;
        async move { app::camera(app, id).await["starts"].as_u64().unwrap() }
    };
    let (a_starts, b_starts) = (starts("a").await, starts("b").await);

    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{}",
        cameras(0.5, false, true)
    );
    let config = Config::parse(&text, None).unwrap();
    let summary = app.reload(config).await;
    let names =
        |v: &[camstream::config::CameraId]| v.iter().map(|i| i.to_string()).collect::<Vec<_>>();
    assert_eq!(names(&summary.added), ["d"]);
    assert_eq!(names(&summary.changed), ["b"]);
    assert_eq!(names(&summary.removed), ["c"]);
    assert_eq!(summary.unchanged, 1);

    // a: same pipeline, same viewer, frames keep coming.
    for _ in 0..3 {
        assert_eq!(frame_size(&mut a).await, (40, 30));
    }
    assert_eq!(starts("a").await, a_starts);
    // b: restarted at the new scale, its viewer still attached.
    wait_for_size(&mut b, (80, 60)).await;
    assert_eq!(starts("b").await, b_starts + 1);
    // c: removed, its stream ended.
    let ended =
        tokio::time::timeout(PART_TIMEOUT, async { while c.next_part().await.is_ok() {} }).await;
    assert!(ended.is_ok(), "the removed camera's stream did not end");
    // d: there and streaming.
    let mut d = open("d").await;
    assert_eq!(frame_size(&mut d).await, (40, 30));
    let listed: Vec<String> = app
        .cameras()
        .all()
        .iter()
        .map(|c| c.id().to_string())
        .collect();
    assert_eq!(listed, ["a", "b", "d"]);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_is_always_complete_while_it_is_rewritten() {
    let server = Server::start(
        &auth_section(),
        &format!("[[cameras]]\nid = \"a\"\nsource = \"{SMALL}\"\n"),
    )
    .await;
    let path = server.path.clone();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A reader that opens and parses the file as fast as it can while the
    // API rewrites it: it must never see a partial or broken file.
    let reader = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let text = std::fs::read_to_string(&path).expect("the file always exists");
                let config = Config::parse(&text, Some(&path))
                    .unwrap_or_else(|e| panic!("read a broken file: {e}\n{text}"));
                let ids: Vec<_> = config.cameras.iter().map(|c| c.id.to_string()).collect();
                assert!(
                    ids == ["a"] || ids == ["a", "b"],
                    "read an unexpected set of cameras: {ids:?}\n{text}"
                );
                reads += 1;
            }
            reads
        })
    };
    for i in 0..20 {
        let (status, _, body) = send(post_json(
            &server,
            json!({ "id": "b", "source": SMALL, "quality": 50 + i }),
        ))
        .await;
        assert_eq!(status, 201, "{body}");
        let (status, _, body) = send(put_json(
            &server,
            "b",
            json!({ "source": SMALL, "quality": 10 + i }),
        ))
        .await;
        assert_eq!(status, 200, "{body}");
        let (status, _, body) = send(as_admin(Method::DELETE, server.url("/api/cameras/b"))).await;
        assert_eq!(status, 204, "{body}");
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().expect("every read parsed");
    println!("{reads} reads of the file during 60 saves, all complete");
    let entries: Vec<_> = std::fs::read_dir(server.path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, ["camstream.toml"], "no temporary file left behind");
    server.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_camera_stands_in_for_an_empty_file() {
    let server = Server::start(&auth_section(), "").await;
    assert_eq!(ids(&server).await, ["demo"]);
    for request in [
        as_admin(Method::DELETE, server.url("/api/cameras/demo")),
        put_json(&server, "demo", json!({ "source": "test:" })),
    ] {
        let (status, _, body) = send(request).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (409, Some("demo_camera")),
            "{body}"
        );
    }
    // The first real camera replaces it; removing the last brings it back,
    // exactly as a restart with that file would.
    let (status, _, body) = send(post_json(&server, json!({ "id": "x", "source": SMALL }))).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(ids(&server).await, ["x"]);
    let (status, _, _) = send(as_admin(Method::DELETE, server.url("/api/cameras/x"))).await;
    assert_eq!(status, 204);
    assert_eq!(ids(&server).await, ["demo"]);
    assert!(Config::load(&server.path).unwrap().cameras.is_empty());
    server.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grid_socket_never_queues_more_than_its_window() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let app = app::start(&format!(
        "[[cameras]]\nid = \"a\"\nsource = \"test:ball?width=160&height=120&fps=20\"\n\
         [[cameras]]\nid = \"b\"\nsource = \"{SMALL}\"\n"
    ))
    .await;
    let ws = base(&app).replace("http://", "ws://");
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("{ws}/api/ws?cameras=a,b"))
        .await
        .unwrap();
    // Without acknowledgements: two frames per camera, then nothing, however
    // many frames the cameras produce meanwhile.
    let mut got = Vec::new();
    while let Ok(message) = tokio::time::timeout(Duration::from_secs(2), socket.next()).await {
        let Some(Ok(Message::Binary(frame))) = message else {
            panic!("unexpected {message:?}");
        };
        let n = usize::from(frame[0]);
        let image = decode_jpeg(&frame[1 + n..]).expect("a JPEG");
        assert_eq!((image.width, image.height), (40, 30));
        got.push(String::from_utf8(frame[1..1 + n].to_vec()).unwrap());
    }
    got.sort();
    assert_eq!(got, ["a", "a", "b", "b"]);
    // One acknowledgement releases exactly one (newest) frame of that camera.
    socket.send(Message::text("a")).await.unwrap();
    let mut after = Vec::new();
    while let Ok(Some(Ok(Message::Binary(frame)))) =
        tokio::time::timeout(Duration::from_secs(2), socket.next()).await
    {
        after.push(frame[1]);
    }
    assert_eq!(after, [b'a']);
    drop(socket);

    // Bad requests are answered before the upgrade.
    for (query, status) in [
        ("cameras=nope", 404),
        ("cameras=", 400),
        ("cameras=a&fps=0", 400),
    ] {
        match tokio_tungstenite::connect_async(format!("{ws}/api/ws?{query}")).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), status, "{query}")
            }
            other => panic!("{query}: expected HTTP {status}, got {other:?}"),
        }
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_pipelines_over_the_api_need_api_pipelines() {
    let repo_pipelines = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let server_extra = format!(
        "pipelines_dir = \"{}\"\n{}",
        repo_pipelines.display(),
        auth_section()
    );
    let server = Server::start(
        &server_extra,
        &format!("[[cameras]]\nid = \"a\"\nsource = \"{SMALL}\"\n"),
    )
    .await;
    let before = server.file();
    let raw = "videotestsrc num-buffers=5 ! jpegenc ! tee name=t ! queue ! appsink name=sink t. ! queue ! filesink location=/tmp/camstream-api-pipeline";
    for body in [
        json!({ "id": "p", "pipeline": raw }),
        json!({ "id": "p", "source": "videotestsrc ! video/x-raw,width=64,height=48" }),
    ] {
        let (status, _, response) = send(post_json(&server, body.clone())).await;
        assert_eq!(
            (status, response["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{body}: {response}"
        );
        let message = response["error"]["message"].as_str().unwrap();
        assert!(message.contains("api_pipelines"), "{message}");
        let mut put = body.clone();
        put["id"] = json!("a");
        let (status, _, response) = send(put_json(&server, "a", put)).await;
        assert_eq!(status, 403, "{body}: {response}");
    }
    assert_eq!(server.file(), before, "a refused pipeline is never saved");
    assert!(!Path::new("/tmp/camstream-api-pipeline").exists());
    // Sources and templates from the pipelines directory stay allowed.
    for body in [
        json!({ "id": "s", "source": SMALL }),
        json!({ "id": "t", "source": SMALL, "pipeline_file": "test.pipeline" }),
    ] {
        let (status, _, response) = send(post_json(&server, body.clone())).await;
        assert_eq!(status, 201, "{body}: {response}");
    }
    server.app.shutdown().await;

    // Opted in: a raw pipeline is accepted (and still admin-only).
    let server = Server::start(&format!("api_pipelines = true\n{}", auth_section()), "").await;
    let body = json!({ "id": "p", "pipeline": "videotestsrc ! video/x-raw,width=64,height=48,format=I420" });
    let (status, _, response) = send(post_json(&server, body)).await;
    assert_eq!(status, 201, "{response}");
    server.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_edits_keep_the_command_line_overrides() {
    // The container's case: the file names no usable pipelines directory,
    // --pipelines-dir (CAMSTREAM_PIPELINES_DIR) does.
    let dir = tempfile::tempdir().unwrap();
    let templates = dir.path().join("templates");
    std::fs::create_dir(&templates).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/test.pipeline"),
        templates.join("mine.pipeline"),
    )
    .unwrap();
    let path = dir.path().join("camstream.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\npipelines_dir = \"not-here\"\n{}\n\
             [[cameras]]\nid = \"t\"\nsource = \"{SMALL}\"\npipeline_file = \"mine.pipeline\"\n",
            auth_section()
        ),
    )
    .unwrap();
    let overrides = camstream::config::Overrides {
        listen: None,
        pipelines_dir: Some(templates.clone()),
    };
    common::init();
    let config = Config::read(Some(&path), &overrides).unwrap();
    assert!(
        config.cameras[0].settings.is_ok(),
        "{:?}",
        config.cameras[0].settings
    );
    let app = App::build(config).await.unwrap();
    let server = Server {
        app,
        path,
        _dir: dir,
    };
    let mut t = stream(&server, "t").await;
    frame_size(&mut t).await;
    let starts = info(&server, "t").await["starts"].clone();

    // An unrelated edit re-reads the file: with the same overrides, "t"
    // is unchanged and keeps streaming.
    let (status, _, body) = send(post_json(&server, json!({ "id": "b", "source": SMALL }))).await;
    assert_eq!(status, 201, "{body}");
    let t_info = info(&server, "t").await;
    assert_ne!(t_info["state"], "failed", "{t_info}");
    assert_eq!(t_info["starts"], starts, "t was not restarted: {t_info}");
    frame_size(&mut t).await;
    // A new camera's pipeline_file is looked up in the same directory.
    let (status, _, body) = send(post_json(
        &server,
        json!({ "id": "c", "source": SMALL, "pipeline_file": "mine.pipeline" }),
    ))
    .await;
    assert_eq!(status, 201, "{body}");
    let mut c = stream(&server, "c").await;
    frame_size(&mut c).await;
    server.app.shutdown().await;
}
