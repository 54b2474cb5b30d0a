//! The web page in a real headless Chromium: 16 cameras live in one tab
//! (more than the 6 connections a browser opens per host), and the large
//! view of one camera. Screenshots go to target/ui-grid.png and
//! target/ui-view.png.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use common::app::{self, base};
use common::browser::Browser;
use serde_json::Value;

const CAMERAS: usize = 16;
const VIEW_TOKEN: &str = "view-token-for-the-ui-test";
/// Loading the page, starting 16 pipelines and painting every tile; the
/// pipelines start in parallel, but CI has 2 shared cores.
const LOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// Every tile: camera id, the image's natural size, frames painted, and a
/// checksum of its pixels (read back through a canvas).
const TILES_JS: &str = r##"(() => {
  const canvas = document.createElement("canvas");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  return [...document.querySelectorAll("#grid .tile")].map((tile) => {
    const img = tile.querySelector("img");
    const w = img.naturalWidth, h = img.naturalHeight;
    let hash = 0;
    if (w > 0) {
      canvas.width = w; canvas.height = h;
      ctx.drawImage(img, 0, 0);
      const d = ctx.getImageData(0, 0, w, h).data;
      for (let i = 0; i < d.length; i += 4) hash = (hash * 31 + d[i] + 3 * d[i + 1] + 7 * d[i + 2]) >>> 0;
    }
    return { id: tile.dataset.camera, w, h, frames: Number(img.dataset.frames), hash,
             state: tile.querySelector(".state").textContent };
  });
})()"##;

fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target")
}

/// The tiles, read at a moment when every one shows a picture: while a
/// tile's next frame is loading into its `<img>` (a new blob URL), Chromium
/// reports a natural size of 0 for it, though the old picture stays on
/// screen, so a single read can catch a tile mid-swap.
async fn painted_tiles(page: &common::browser::Page<'_>) -> HashMap<String, Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let tiles = by_id(&page.eval(TILES_JS).await.unwrap());
        let all = tiles.values().all(|t| t["w"].as_u64() > Some(0));
        if all || std::time::Instant::now() > deadline {
            return tiles;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn by_id(tiles: &Value) -> HashMap<String, Value> {
    tiles
        .as_array()
        .expect("tile list")
        .iter()
        .map(|t| (t["id"].as_str().unwrap().to_string(), t.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_cameras_are_live_in_one_tab() {
    // Small moving test patterns (a bouncing ball, scrolling bars with a
    // clock): every new frame differs from the last.
    let mut cameras = format!(
        "[server.auth]\nview_tokens = [\"{VIEW_TOKEN}\"]\n[defaults]\nscale = 0.5\n[defaults.sizes]\nlarge = {{ scale = 1.0 }}\n"
    );
    for i in 1..=CAMERAS {
        let pattern = if i % 2 == 1 { "ball" } else { "demo" };
        cameras.push_str(&format!(
            "[[cameras]]\nid = \"cam{i:02}\"\nname = \"Camera {i}\"\nsource = \"test:{pattern}?width=320&height=240&fps=10\"\n"
        ));
    }
    let app = app::start(&cameras).await;
    let browser = Browser::start().await.expect("chromium starts");
    // The page is opened as a kiosk would: with a view token in the URL.
    let page = browser
        .open(&format!("{}/?token={VIEW_TOKEN}", base(&app)))
        .await
        .expect("page opens");

    let all_painted = format!(
        "(() => {{ const imgs = [...document.querySelectorAll('#grid .tile img')];
            return imgs.length === {CAMERAS} && imgs.every((i) => i.naturalWidth > 0 && Number(i.dataset.frames) > 0); }})()"
    );
    if let Err(e) = page.wait_for(&all_painted, TILES_JS, LOAD_TIMEOUT).await {
        panic!("{e:#}\nchromium log:\n{}", browser.log());
    }
    let first = painted_tiles(&page).await;
    assert_eq!(first.len(), CAMERAS);

    // Let every tile receive a few more frames, then compare.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = painted_tiles(&page).await;
    for i in 1..=CAMERAS {
        let id = format!("cam{i:02}");
        let (a, b) = (&first[&id], &second[&id]);
        assert_eq!(
            (b["w"].as_u64(), b["h"].as_u64()),
            (Some(160), Some(120)),
            "{id}: {b}"
        );
        assert!(
            b["frames"].as_u64() > a["frames"].as_u64(),
            "{id} stopped updating: {a} then {b}"
        );
        assert_ne!(
            a["hash"], b["hash"],
            "{id}'s picture did not change: {a} then {b}"
        );
        assert_eq!(b["state"], "streaming", "{id}: {b}");
    }
    // The address bar no longer shows the token.
    assert_eq!(page.eval("location.search").await.unwrap(), "");

    let shot = page
        .screenshot(&target_dir().join("ui-grid.png"))
        .await
        .unwrap();
    println!("screenshot: {}", shot.display());

    // The large view: a plain MJPEG <img> of the clicked camera at its
    // `large` size (the tiles have the smaller default), with its
    // full-size snapshot link and stream URL.
    page.eval("document.querySelector('.tile[data-camera=\"cam03\"]').click()")
        .await
        .unwrap();
    page.wait_for(
        "document.getElementById('view').open && document.getElementById('view-img').naturalWidth > 0",
        "({ open: document.getElementById('view').open, src: document.getElementById('view-img').src })",
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    let view = page
        .eval(
            "({ url: document.getElementById('view-url').value,
                snapshot: document.getElementById('view-snapshot').href,
                name: document.getElementById('view-name').textContent,
                width: document.getElementById('view-img').naturalWidth })",
        )
        .await
        .unwrap();
    assert_eq!(
        view["url"],
        format!("{}/api/cameras/cam03/stream.mjpeg?size=large", base(&app))
    );
    assert_eq!(
        view["snapshot"],
        format!(
            "{}/api/cameras/cam03/snapshot.jpg?size=full&token={VIEW_TOKEN}",
            base(&app)
        )
    );
    assert_eq!(view["name"], "Camera 3");
    assert_eq!(view["width"], 320, "the large size, not the tiles' 160");
    let shot = page
        .screenshot(&target_dir().join("ui-view.png"))
        .await
        .unwrap();
    println!("screenshot: {}", shot.display());

    // Closing the view ends its MJPEG request: the camera is back to one
    // viewer, the grid's socket.
    page.eval("document.getElementById('view-close').click()")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info: Value = app::client()
            .get(format!("{}/api/cameras/cam03", base(&app)))
            .bearer_auth(VIEW_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if info["viewers"] == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the large view's stream did not end: {info}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    drop(browser);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grid_works_for_a_user_signed_in_with_basic_auth() {
    // printf %s 'open sesame' | sha256sum
    let sha = "41ef4bb0b23661e66301aac36066912dac037827b4ae63a7b1165a5aa93ed4eb";
    let mut cameras = format!(
        "[server.auth]\n[[server.auth.users]]\nname = \"ann\"\npassword_sha256 = \"{sha}\"\n"
    );
    for i in 1..=3 {
        cameras.push_str(&format!(
            "[[cameras]]\nid = \"c{i}\"\nsource = \"test:ball?width=160&height=120&fps=10\"\n"
        ));
    }
    let app = app::start(&cameras).await;
    let browser = Browser::start().await.expect("chromium starts");
    // The browser asks for a user name and password (the 401 carries a
    // Basic challenge); they are then sent with the page's fetches and with
    // the grid's WebSocket handshake, which cannot carry a header of its
    // own.
    let page = browser
        .open_with(&format!("{}/", base(&app)), Some(("ann", "open sesame")))
        .await
        .expect("page opens");
    let painted = "(() => { const imgs = [...document.querySelectorAll('#grid img')];
        return imgs.length === 3 && imgs.every((i) => Number(i.dataset.frames) > 2); })()";
    let state = "({ status: document.getElementById('status').textContent,
        frames: [...document.querySelectorAll('#grid img')].map((i) => i.dataset.frames) })";
    if let Err(e) = page.wait_for(painted, state, LOAD_TIMEOUT).await {
        panic!("{e:#}\nchromium log:\n{}", browser.log());
    }
    drop(browser);
    app.shutdown().await;
}
