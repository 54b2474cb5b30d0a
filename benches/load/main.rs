//! camstream's load benchmark: `make bench` (full, ~9 minutes) or
//! `make bench-quick` (~2 minutes, shorter windows, fewer viewers).
//!
//! One run starts an RTSP source on loopback (H.264 1080p30 and 720p30,
//! every frame stamped with its send time in a barcode), an HTTP MJPEG
//! source (1080p30), and then one scenario after another: the bare
//! GStreamer pipeline doing camstream's decode -> scale -> encode into a
//! fakesink (the floor, its own process), and the release camstream binary
//! (its own process) with cameras pointed at the sources and N viewers
//! reading its streams. CPU and memory come from /proc/PID; latency is
//! stamp to viewer receipt. See docs/benchmarks.md.
//!
//! Run without `--bench` (as `cargo test --all-targets` does), it only
//! checks its own stamp codec through real GStreamer, in a second.

// tests/relay.rs uses its start_relays; the benchmark does not.
#[allow(dead_code)]
#[path = "../../tests/common/nginx.rs"]
mod nginx;
mod proc;
mod source;
mod stamp;
mod viewer;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use clap::Parser;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video::prelude::*;
use tokio_util::sync::CancellationToken;

use source::{FPS, MjpegSource, Mount, RtspSource};
use viewer::{Sample, Shared, Target, ViewerStats};

/// Frames per second the stamp reader is asked to decode, across all
/// viewers: enough samples for percentiles (2400 in a 20 s window), cheap
/// enough (~1 ms each) to leave the CPU to the server.
const DECODE_BUDGET: f64 = 120.0;
/// Viewers connecting at once while a scenario ramps up; more would only
/// overflow the accept backlog.
const CONNECT_BATCH: usize = 50;
/// How long a scenario's processes get to come up and deliver a frame.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Memory per viewer is reported from this many viewers up.
const MIN_VIEWERS_FOR_RSS: usize = 10;
/// The output size for both sources at camstream's default scale of 0.25.
const SCALE: f64 = 0.25;
/// camstream's default JPEG quality, used by the floor pipelines too.
const QUALITY: u32 = 80;
/// Quality of the MJPEG source's frames: what webcams typically send.
const SOURCE_QUALITY: u32 = 85;

#[derive(Debug, Parser)]
#[command(about = "camstream load benchmark (see docs/benchmarks.md)")]
struct Args {
    /// Passed by `cargo bench`; without it only the self-test runs.
    #[arg(long, hide = true)]
    bench: bool,
    /// Short windows and a subset of scenarios, to check the benchmark.
    #[arg(long)]
    quick: bool,
    /// Measurement window per scenario, seconds [default: 20, quick 6].
    #[arg(long)]
    seconds: Option<f64>,
    /// Warm-up before each window, seconds [default: 5, quick 3].
    #[arg(long)]
    warmup: Option<f64>,
    /// Run only these scenarios (comma separated); see --list.
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// videotestsrc pattern of the RTSP source.
    #[arg(long, default_value = "smpte")]
    pattern: String,
    /// How much sensor noise the MJPEG source's scene has (0 to 1): the
    /// share of videotestsrc's snow blended over moving colour bars. More
    /// noise, bigger frames, and more of a JPEG decoder's time goes to
    /// Huffman decoding, which decoding at a fraction cannot skip. 0.12
    /// gives 471 KB 1080p frames at quality 85, as a webcam in dim light.
    #[arg(long, default_value_t = 0.12)]
    mjpeg_noise: f64,
    /// The camstream binary [default: the one cargo built with the bench].
    #[arg(long)]
    camstream: Option<PathBuf>,
    /// Ignored: cargo passes benchmark name filters through.
    #[arg(hide = true)]
    filter: Vec<String>,
}

/// One camera of a camstream scenario.
#[derive(Clone, Debug)]
struct Cam {
    /// TOML lines after `id`.
    toml: String,
    viewers: usize,
    /// Query string of each viewer's stream URL.
    query: &'static str,
    /// More viewers of the same camera at other sizes: (query, viewers).
    also: &'static [(&'static str, usize)],
    /// Frames per second each viewer should get.
    expect_fps: f64,
}

#[derive(Clone, Debug)]
enum Run {
    /// gst-launch chains, each ending in an fpsdisplaysink named f0, f1...
    Floor {
        chains: Vec<String>,
    },
    /// A gst-launch chain ending in `multipartmux ! tcpserversink`, read by
    /// one viewer: the latency floor.
    FloorTcp {
        chain: String,
    },
    Camstream {
        cams: Vec<Cam>,
        front: Front,
    },
}

/// How viewers reach camstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Front {
    /// Plain HTTP/1.1.
    Http,
    /// camstream's own HTTPS, HTTP/2 (one TLS connection per viewer).
    H2,
    /// camstream's own HTTPS, HTTP/1.1 (one TLS connection per viewer):
    /// beside `H2`, it separates what TLS costs from what HTTP/2 costs.
    Https1,
    /// nginx (deploy/nginx/camstream.conf) terminating TLS and HTTP/2,
    /// camstream behind it on plain HTTP.
    Nginx,
    /// A second camstream, a relay with the first as its upstream
    /// (`[[upstreams]]`), passing its JPEGs on; viewers watch the relay.
    Relay,
}

#[derive(Clone, Debug)]
struct Scenario {
    name: &'static str,
    about: &'static str,
    run: Run,
    /// The floor scenario this one's CPU is divided by.
    floor: Option<&'static str>,
    quick: bool,
}

/// What one scenario measured.
#[derive(Debug, Default)]
struct Row {
    name: String,
    cpu: f64,
    ratio: Option<f64>,
    encodes: Option<f64>,
    peak_rss_kib: u64,
    rss_per_viewer_kib: Option<f64>,
    viewers: usize,
    fps_min: Option<f64>,
    fps_median: Option<f64>,
    latency: Option<(f64, f64, f64, usize)>,
    bytes_per_s: f64,
    errors: usize,
    first_error: Option<String>,
    client_cpu: Option<f64>,
    /// nginx's CPU, for scenarios with it in front.
    proxy_cpu: Option<f64>,
    /// The edge's CPU, for relay scenarios (`cpu` is the relay's).
    edge_cpu: Option<f64>,
    parse_us: Option<f64>,
    decode_us: Option<f64>,
    lag_p95: Option<f64>,
    misreads: u64,
    dropped: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    gst::init()?;
    if !args.bench {
        return self_test();
    }
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("viewer-rt")
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

/// Stamps a 1080p frame, encodes, scales and re-encodes it as camstream
/// would, and reads the stamp back: the codec the latency figures rest on.
fn self_test() -> anyhow::Result<()> {
    let value = 0x0123_4567;
    for (width, height) in [(1920, 1080), (1280, 720)] {
        let description = format!(
            "videotestsrc num-buffers=1 pattern=smpte ! video/x-raw,format=I420,width={width},height={height} \
             ! jpegenc quality=85 ! jpegdec ! videoconvertscale ! video/x-raw,width={},height={} \
             ! jpegenc quality={QUALITY} ! appsink name=out",
            width / 4,
            height / 4
        );
        let pipeline = gst::parse::launch(&description)?
            .downcast::<gst::Pipeline>()
            .map_err(|_| anyhow!("not a pipeline"))?;
        let src = pipeline
            .iterate_sources()
            .next()?
            .context("no source")?
            .static_pad("src")
            .context("no src pad")?;
        let info =
            gstreamer_video::VideoInfo::builder(gstreamer_video::VideoFormat::I420, width, height)
                .build()?;
        src.add_probe(gst::PadProbeType::BUFFER, move |_, probe| {
            if let Some(buffer) = probe.buffer_mut() {
                let buffer = buffer.make_mut();
                if let Ok(mut frame) =
                    gstreamer_video::VideoFrameRef::from_buffer_ref_writable(buffer, &info)
                {
                    let stride = frame.plane_stride()[0] as usize;
                    if let Ok(luma) = frame.plane_data_mut(0) {
                        stamp::draw(luma, stride, width, height, value);
                    }
                }
            }
            gst::PadProbeReturn::Ok
        });
        let sink = pipeline
            .by_name("out")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .context("no appsink")?;
        pipeline.set_state(gst::State::Playing)?;
        let sample = sink.pull_sample().map_err(|_| anyhow!("no frame"))?;
        let jpeg = sample
            .buffer()
            .context("no buffer")?
            .map_readable()?
            .to_vec();
        pipeline.set_state(gst::State::Null)?;
        let read = stamp::read_jpeg(&jpeg);
        if read != Some(value) {
            bail!("stamp self-test at {width}x{height}: wrote {value:#x}, read {read:x?}");
        }
        // A damaged frame is rejected, not misread: invert one cell.
        let mut luma = vec![128u8; (width * height) as usize];
        stamp::draw(&mut luma, width as usize, width, height, value);
        let (cell_w, cell_h) = ((width / 16) as usize, (height / 18) as usize);
        for row in 0..cell_h {
            let line = &mut luma[row * width as usize..row * width as usize + cell_w];
            line.iter_mut().for_each(|p| *p = 255 - *p);
        }
        if stamp::read(&luma, width as usize, width, height).is_some() {
            bail!("stamp self-test: a damaged stamp was accepted");
        }
    }
    println!("load bench self-test passed (run `make bench` for the benchmark)");
    Ok(())
}

/// 500 viewers need 500 sockets on each side: lift the soft limit on open
/// files to the hard limit (camstream inherits it).
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn scenarios(rtsp: &RtspSource, mjpeg: &MjpegSource) -> Vec<Scenario> {
    let (h1080, h720) = (rtsp.url(Mount::H1080), rtsp.url(Mount::H720));
    // The floor: the same rtspsrc settings camstream renders (latency=100,
    // RTP over the RTSP TCP connection), decodebin, the scaler, jpegenc.
    let rtsp_chain = |url: &str, mount: Mount| {
        let (w, h) = scaled(mount);
        format!(
            "rtspsrc location={url} latency=100 protocols=tcp ! application/x-rtp,media=video \
             ! decodebin ! videoconvertscale ! video/x-raw,width={w},height={h} ! jpegenc quality={QUALITY}"
        )
    };
    let (w, h) = scaled(Mount::H1080);
    // The MJPEG stream decoded at full size, as today's bare pipeline does.
    let mjpeg_decoded = format!(
        "souphttpsrc location={} is-live=true do-timestamp=true ! multipartdemux single-stream=true \
         ! jpegparse ! jpegdec",
        mjpeg.url()
    );
    let mjpeg_chain = format!(
        "{mjpeg_decoded} ! videoconvertscale ! video/x-raw,width={w},height={h} ! jpegenc quality={QUALITY}"
    );
    // What passthrough saves: decoding and re-encoding the same 1080p
    // stream, and serving it to the same one viewer.
    let mjpeg_reencode_chain = format!("{mjpeg_decoded} ! jpegenc quality={SOURCE_QUALITY}");
    let cam = |source: &str, extra: &str, viewers: usize, query: &'static str, fps: f64| Cam {
        toml: format!("source = \"{source}\"\n{extra}"),
        viewers,
        query,
        also: &[],
        expect_fps: fps,
    };
    let one = |viewers, front| Run::Camstream {
        cams: vec![cam(&h1080, "", viewers, "", f64::from(FPS))],
        front,
    };
    let mut list = vec![
        Scenario {
            name: "floor-1080",
            about: "bare pipeline: 1080p30 H.264 -> 480x270 JPEG -> fakesink",
            run: Run::Floor {
                chains: vec![rtsp_chain(&h1080, Mount::H1080)],
            },
            floor: None,
            quick: true,
        },
        Scenario {
            name: "floor-1080-tcp",
            about: "bare pipeline delivering multipart over plain TCP to 1 viewer (latency floor)",
            run: Run::FloorTcp {
                chain: rtsp_chain(&h1080, Mount::H1080),
            },
            floor: Some("floor-1080"),
            quick: true,
        },
    ];
    for (name, viewers, quick) in [
        ("c1-v1", 1, true),
        ("c1-v10", 10, true),
        ("c1-v100", 100, true),
        ("c1-v500", 500, false),
    ] {
        list.push(Scenario {
            name,
            about: "camstream, 1 camera 1080p30 H.264, N viewers",
            run: one(viewers, Front::Http),
            floor: Some("floor-1080"),
            quick,
        });
    }
    // The same over HTTPS and HTTP/2; the report sets their CPU beside
    // the plain-HTTP scenario of the same name without -h2.
    for (name, viewers, quick) in [
        ("c1-v1-h2", 1, true),
        ("c1-v100-h2", 100, true),
        ("c1-v500-h2", 500, false),
    ] {
        list.push(Scenario {
            name,
            about: "camstream over HTTPS and HTTP/2 (rustls), 1 camera 1080p30, N viewers, a TLS connection each",
            run: one(viewers, Front::H2),
            floor: Some("floor-1080"),
            quick,
        });
    }
    // HTTPS over HTTP/1.1: the report sets it beside plain HTTP (TLS
    // alone) and beside -h2 (HTTP/2's own share).
    for (name, viewers, quick) in [("c1-v1-tls1", 1, true), ("c1-v100-tls1", 100, true)] {
        list.push(Scenario {
            name,
            about: "camstream over HTTPS and HTTP/1.1 (rustls), 1 camera 1080p30, N viewers, a TLS connection each",
            run: one(viewers, Front::Https1),
            floor: Some("floor-1080"),
            quick,
        });
    }
    list.push(Scenario {
        name: "c1-v1-nginx",
        about: "1 viewer over HTTPS and HTTP/2 through nginx (deploy/nginx/camstream.conf) to camstream on plain HTTP",
        run: one(1, Front::Nginx),
        floor: Some("floor-1080"),
        quick: true,
    });
    list.push(Scenario {
        name: "relay-v100",
        about: "a camstream relay ([[upstreams]]) serving 100 viewers of the c1-v100 camera, pulled once from camstream",
        run: one(100, Front::Relay),
        floor: Some("floor-1080"),
        quick: true,
    });
    list.extend([
        Scenario {
            name: "c1-v100-fps5",
            about: "100 viewers each capped with ?fps=5: the cap must cost no extra encode",
            run: Run::Camstream {
                cams: vec![cam(&h1080, "", 100, "?fps=5", 5.0)],
                front: Front::Http,
            },
            floor: Some("floor-1080"),
            quick: true,
        },
        Scenario {
            name: "c1-v1-max10",
            about: "max_fps = 10: frames over the cap are dropped before scale and encode",
            run: Run::Camstream {
                cams: vec![cam(&h1080, "max_fps = 10\n", 1, "", 10.0)],
                front: Front::Http,
            },
            floor: Some("floor-1080"),
            quick: true,
        },
        Scenario {
            name: "floor-720x4",
            about: "bare pipeline x4: 720p30 H.264 -> 320x180 JPEG -> fakesink",
            run: Run::Floor {
                chains: vec![rtsp_chain(&h720, Mount::H720); 4],
            },
            floor: None,
            quick: true,
        },
        Scenario {
            name: "c4-720",
            about: "camstream, 4 cameras 720p30 H.264, 1 viewer each",
            run: Run::Camstream {
                cams: vec![cam(&h720, "", 1, "", f64::from(FPS)); 4],
                front: Front::Http,
            },
            floor: Some("floor-720x4"),
            quick: true,
        },
        Scenario {
            name: "floor-mjpeg",
            about: "bare pipeline: 1080p30 MJPEG over HTTP -> jpegdec -> 480x270 JPEG -> fakesink",
            run: Run::Floor {
                chains: vec![mjpeg_chain],
            },
            floor: None,
            quick: true,
        },
        Scenario {
            name: "mjpeg-full",
            about: "camstream relaying 1080p30 MJPEG with mjpeg_lowres = false: full-size jpegdec, then scale",
            run: Run::Camstream {
                cams: vec![cam(
                    &mjpeg.url(),
                    "mjpeg_lowres = false\n",
                    1,
                    "",
                    f64::from(FPS),
                )],
                front: Front::Http,
            },
            floor: Some("floor-mjpeg"),
            quick: true,
        },
        Scenario {
            name: "mjpeg-lowres",
            about: "camstream relaying 1080p30 MJPEG (the default): camstreamjpegdec decodes at 1/4 in the DCT",
            run: Run::Camstream {
                cams: vec![cam(
                    &mjpeg.url(),
                    "mjpeg_lowres = true\n",
                    1,
                    "",
                    f64::from(FPS),
                )],
                front: Front::Http,
            },
            floor: Some("floor-mjpeg"),
            quick: true,
        },
    ]);
    // Sizes (issue 12): one decode, one encode per watched size.
    let (w2, h2) = {
        let even = |v: u32| ((f64::from(v) * 0.5 / 2.0).round() as u32) * 2;
        (even(1920), even(1080))
    };
    let sizes = "[cameras.sizes]\nlarge = { scale = 0.5 }\nthumb = { scale = 0.125 }\n";
    let with_sizes = |viewers, query, also| Cam {
        also,
        ..cam(&h1080, sizes, viewers, query, f64::from(FPS))
    };
    list.extend([
        Scenario {
            name: "floor-1080-two",
            about: "bare pipeline: 1080p30 H.264 -> tee -> 480x270 JPEG and 960x540 JPEG -> fakesinks",
            run: Run::Floor {
                chains: vec![
                    format!("{} ! tee name=t ! queue leaky=downstream max-size-buffers=1 ! videoconvertscale ! video/x-raw,width={w},height={h} ! jpegenc quality={QUALITY}",
                        rtsp_chain(&h1080, Mount::H1080).split(" ! videoconvertscale").next().unwrap()),
                    format!("t. ! queue leaky=downstream max-size-buffers=1 ! videoconvertscale ! video/x-raw,width={w2},height={h2} ! jpegenc quality={QUALITY}"),
                ],
            },
            floor: None,
            quick: true,
        },
        Scenario {
            name: "c1-two-sizes",
            about: "camstream, 1 camera 1080p30 H.264, default (480x270) and large (960x540) both watched (thumb configured, unwatched)",
            run: Run::Camstream {
                cams: vec![with_sizes(1, "", &[("?size=large", 1)])],
                front: Front::Http,
            },
            floor: Some("floor-1080-two"),
            quick: true,
        },
        Scenario {
            name: "c1-unwatched-sizes",
            about: "as c1-v1 with two more sizes configured that nobody watches (compare with c1-v1)",
            run: Run::Camstream {
                cams: vec![with_sizes(1, "", &[])],
                front: Front::Http,
            },
            floor: Some("floor-1080"),
            quick: true,
        },
        Scenario {
            name: "c1-v100-sizes",
            about: "100 viewers split over three sizes: 34 default, 33 thumb, 33 large",
            run: Run::Camstream {
                cams: vec![with_sizes(34, "", &[("?size=thumb", 33), ("?size=large", 33)])],
                front: Front::Http,
            },
            floor: Some("floor-1080-two"),
            quick: true,
        },
        Scenario {
            name: "floor-mjpeg-reencode",
            about: "bare pipeline: 1080p30 MJPEG over HTTP -> jpegdec -> 1080p JPEG -> multipart over TCP to 1 viewer",
            run: Run::FloorTcp {
                chain: mjpeg_reencode_chain,
            },
            floor: None,
            quick: true,
        },
        Scenario {
            name: "mjpeg-passthrough",
            about: "camstream relaying 1080p30 MJPEG at scale = 1.0: frames passed through, no decode, no encode",
            run: Run::Camstream {
                cams: vec![cam(&mjpeg.url(), "scale = 1.0\n", 1, "", f64::from(FPS))],
                front: Front::Http,
            },
            floor: Some("floor-mjpeg-reencode"),
            quick: true,
        },
    ]);
    list
}

fn scaled(mount: Mount) -> (u32, u32) {
    let even = |v: u32| ((f64::from(v) * SCALE / 2.0).round() as u32) * 2;
    (even(mount.width), even(mount.height))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let epoch = Instant::now();
    let quick = args.quick;
    let window = Duration::from_secs_f64(args.seconds.unwrap_or(if quick { 6.0 } else { 20.0 }));
    let warmup = Duration::from_secs_f64(args.warmup.unwrap_or(if quick { 3.0 } else { 5.0 }));
    let camstream = args
        .camstream
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_camstream")));
    let out_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out_dir)?;

    let rtsp = RtspSource::start(epoch, &args.pattern)?;
    let mjpeg = start_mjpeg_source(epoch, args.mjpeg_noise)?;
    let all = scenarios(&rtsp, &mjpeg);
    if args.list {
        for s in &all {
            println!(
                "{:16} {}{}",
                s.name,
                s.about,
                if s.quick { "  [quick]" } else { "" }
            );
        }
        return Ok(());
    }
    let chosen: Vec<Scenario> = all
        .into_iter()
        .filter(|s| {
            if args.scenarios.is_empty() {
                !quick || s.quick
            } else {
                args.scenarios.iter().any(|n| n == s.name)
            }
        })
        .collect();
    if chosen.is_empty() {
        bail!("no scenario matches {:?}; see --list", args.scenarios);
    }
    let host = host_description();
    println!(
        "camstream load benchmark: {} scenario(s), warm-up {:.0} s, window {:.0} s each\n{host}\n\
         camstream: {}\nMJPEG source frames: {} KB average\n",
        chosen.len(),
        warmup.as_secs_f64(),
        window.as_secs_f64(),
        camstream.display(),
        mjpeg.frame_bytes / 1000,
    );
    let mut rows: Vec<Row> = Vec::new();
    for scenario in &chosen {
        println!("== {}: {}", scenario.name, scenario.about);
        let result = match &scenario.run {
            Run::Floor { chains } => {
                run_floor(scenario, chains, None, warmup, window, &out_dir, epoch).await
            }
            Run::FloorTcp { chain } => {
                run_floor(
                    scenario,
                    std::slice::from_ref(chain),
                    Some(()),
                    warmup,
                    window,
                    &out_dir,
                    epoch,
                )
                .await
            }
            Run::Camstream { cams, front } => {
                run_camstream(
                    scenario, cams, *front, &camstream, &mjpeg, warmup, window, &out_dir, epoch,
                )
                .await
            }
        };
        match result {
            Ok(mut row) => {
                if let Some(floor) = scenario.floor
                    && let Some(f) = rows.iter().find(|r| r.name == floor)
                {
                    row.ratio = Some(row.cpu / f.cpu);
                }
                println!("   {}", summary(&row));
                rows.push(row);
            }
            Err(e) => {
                println!("   FAILED: {e:#}");
                rows.push(Row {
                    name: scenario.name.to_string(),
                    errors: 1,
                    first_error: Some(format!("{e:#}")),
                    ..Row::default()
                });
            }
        }
    }
    let report = report(&rows, &host, warmup, window, quick);
    println!("\n{report}");
    let path = out_dir.join(format!(
        "results-{}.md",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
    ));
    std::fs::write(&path, &report)?;
    println!("(also written to {})", path.display());
    drop(rtsp);
    Ok(())
}

/// The MJPEG source runs on its own thread and runtime, so its CPU is not
/// counted as the viewers'.
fn start_mjpeg_source(epoch: Instant, noise: f64) -> anyhow::Result<MjpegSource> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("mjpeg-source".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(anyhow::Error::new(e)));
                    return;
                }
            };
            runtime.block_on(async move {
                let _ = tx.send(MjpegSource::start(epoch, SOURCE_QUALITY, noise).await);
                std::future::pending::<()>().await
            });
        })?;
    rx.recv()?
}

fn host_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let gst = gst::version_string();
    format!(
        "host: {cores} cores, {cpu}; {gst}; load average at start: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// A child process killed (SIGTERM, then SIGKILL) when dropped.
struct ChildGuard(std::process::Child);

impl ChildGuard {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // SAFETY: kill only sends a signal to our own child.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads a child's output on a thread: every line to `log`, and each line
/// to `on_line`.
fn follow_output(
    output: impl std::io::Read + Send + 'static,
    log: &Path,
    mut on_line: impl FnMut(&str) + Send + 'static,
) -> anyhow::Result<()> {
    let mut file = std::fs::File::create(log)?;
    std::thread::Builder::new()
        .name("child-output".into())
        .spawn(move || {
            for line in BufReader::new(output).lines().map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
                on_line(&line);
            }
        })?;
    Ok(())
}

async fn run_floor(
    scenario: &Scenario,
    chains: &[String],
    tcp: Option<()>,
    warmup: Duration,
    window: Duration,
    out_dir: &Path,
    epoch: Instant,
) -> anyhow::Result<Row> {
    let port = match tcp {
        Some(()) => Some(free_port()?),
        None => None,
    };
    let mut description = Vec::new();
    for (i, chain) in chains.iter().enumerate() {
        let sink = match port {
            Some(port) => format!(
                "multipartmux boundary=frame ! tcpserversink host=127.0.0.1 port={port} sync=false"
            ),
            None => format!(
                "fpsdisplaysink name=f{i} text-overlay=false video-sink=fakesink sync=false"
            ),
        };
        description.push(format!("{chain} ! {sink}"));
    }
    let description = description.join("  ");
    println!("   gst-launch-1.0 -v {description}");
    let mut command = Command::new("gst-launch-1.0");
    command.arg("-v");
    command.args(split_launch(&description));
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null());
    let mut child = command.spawn().context("starting gst-launch-1.0")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let child = ChildGuard(child);
    // fpsdisplaysink reports "rendered: N" twice a second, per sink.
    // Each count is kept with the time it was printed, so the rate is
    // exact even though the counts only move every half second.
    let rendered: Arc<Mutex<HashMap<String, (u64, Instant)>>> = Arc::default();
    let seen = Arc::clone(&rendered);
    follow_output(
        stdout,
        &out_dir.join(format!("{}.log", scenario.name)),
        move |line| {
            if let Some((name, count)) = parse_rendered(line) {
                seen.lock().unwrap().insert(name, (count, Instant::now()));
            }
        },
    )?;
    let rendered_total = || {
        rendered
            .lock()
            .unwrap()
            .values()
            .map(|(c, _)| c)
            .sum::<u64>()
    };
    let snapshot = || rendered.lock().unwrap().clone();

    let stop = CancellationToken::new();
    let shared = Shared::start(epoch, None);
    let mut viewer = None;
    if let Some(port) = port {
        let stats = Arc::new(ViewerStats::default());
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        // tcpserversink listens once its pipeline is playing.
        let deadline = Instant::now() + READY_TIMEOUT;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if Instant::now() > deadline {
                bail!("the floor pipeline never listened on {addr}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::spawn(viewer::run(
            Target::Tcp { addr },
            Arc::clone(&stats),
            Arc::clone(&shared),
            1,
            0,
            stop.clone(),
        ));
        viewer = Some(stats);
    }
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let ready = match &viewer {
            Some(stats) => stats.first_frame.load(Ordering::Relaxed),
            None => rendered.lock().unwrap().len() == chains.len() && rendered_total() > 0,
        };
        if ready {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the floor pipeline delivered no frame within {READY_TIMEOUT:?} (see target/bench/{}.log)",
                scenario.name
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(warmup).await;
    let cpu = proc::CpuWindow::start(child.pid()).context("floor process vanished")?;
    let start_rendered = snapshot();
    let start_frames = viewer.as_ref().map(|s| s.frames.load(Ordering::Relaxed));
    let start_bytes = viewer
        .as_ref()
        .map_or(0, |s| s.bytes.load(Ordering::Relaxed));
    let window_start = shared.now_ms();
    tokio::time::sleep(window).await;
    let secs = window.as_secs_f64();
    let cpu = cpu.percent().context("floor process vanished")?;
    let window_end = shared.now_ms();
    let peak = proc::status_kib(child.pid(), "VmHWM").unwrap_or(0);
    let mut row = Row {
        name: scenario.name.into(),
        cpu,
        peak_rss_kib: peak,
        ..Row::default()
    };
    match (&viewer, start_frames) {
        (Some(stats), Some(start)) => {
            let fps = (stats.frames.load(Ordering::Relaxed) - start) as f64 / secs;
            row.viewers = 1;
            row.fps_min = Some(fps);
            row.fps_median = Some(fps);
            row.bytes_per_s = (stats.bytes.load(Ordering::Relaxed) - start_bytes) as f64 / secs;
            if let Some(e) = stats.error.lock().unwrap().clone() {
                row.errors = 1;
                row.first_error = Some(e);
            }
        }
        _ => {
            let end = snapshot();
            let mut rates: Vec<f64> = end
                .iter()
                .filter_map(|(name, (count, at))| {
                    let (count0, at0) = start_rendered.get(name)?;
                    let span = at.duration_since(*at0).as_secs_f64();
                    (span > 0.0).then(|| (count - count0) as f64 / span)
                })
                .collect();
            rates.sort_by(f64::total_cmp);
            row.encodes = Some(rates.iter().sum());
            row.fps_min = rates.first().copied();
            row.fps_median = percentile(&rates, 0.5);
        }
    }
    stop.cancel();
    row.latency = latency(&shared.samples.lock().unwrap(), window_start, window_end);
    row.misreads = shared.misreads.load(Ordering::Relaxed);
    // Stopping a child waits for it to exit: off the async workers.
    tokio::task::spawn_blocking(move || drop(child)).await?;
    Ok(row)
}

/// `rendered: N` from fpsdisplaysink's last-message, with the sink's name.
fn parse_rendered(line: &str) -> Option<(String, u64)> {
    let after = line.split("GstFPSDisplaySink:").nth(1)?;
    let name = after.split(':').next()?.to_string();
    let count = after
        .split("rendered: ")
        .nth(1)?
        .split(',')
        .next()?
        .trim()
        .parse()
        .ok()?;
    Some((name, count))
}

/// Splits a gst-launch description into arguments as a shell would for
/// this simple syntax (no quotes are used by the benchmark's pipelines).
fn split_launch(description: &str) -> Vec<String> {
    description.split_whitespace().map(str::to_string).collect()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[allow(clippy::too_many_arguments)]
async fn run_camstream(
    scenario: &Scenario,
    cams: &[Cam],
    front: Front,
    binary: &Path,
    mjpeg: &MjpegSource,
    warmup: Duration,
    window: Duration,
    out_dir: &Path,
    epoch: Instant,
) -> anyhow::Result<Row> {
    let mut config = String::from("[server]\nlisten = \"127.0.0.1:0\"\n");
    if matches!(front, Front::H2 | Front::Https1) {
        // Made once in target/bench/ and reused by later runs.
        config.push_str("[server.tls]\nself_signed = true\n");
    }
    config.push_str(
        "\n[defaults]\n# Running before the first viewer, so the memory baseline is a\n# running pipeline with no viewers.\nalways_on = true\n",
    );
    for (i, cam) in cams.iter().enumerate() {
        config.push_str(&format!("\n[[cameras]]\nid = \"c{i}\"\n{}", cam.toml));
    }
    let config_path = out_dir.join(format!("{}.toml", scenario.name));
    std::fs::write(&config_path, &config)?;
    let (child, addr) =
        spawn_camstream(binary, &config_path, out_dir, scenario.name, "camstream").await?;
    let pid = child.pid();
    // Over HTTPS the benchmark trusts exactly the certificate camstream
    // made (as `camstream healthcheck` does).
    let tls = match front {
        Front::H2 | Front::Https1 => Some(camstream::tls::pinned_client_config(
            &out_dir.join(camstream::tls::SELF_SIGNED_CERT),
        )?),
        Front::Http | Front::Nginx | Front::Relay => None,
    };
    let api = Api {
        addr,
        tls: tls.clone().map(Arc::new),
    };
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let info = api.get("/api/cameras").await?;
        let all_streaming = info
            .as_array()
            .is_some_and(|a| a.len() == cams.len() && a.iter().all(|c| c["state"] == "streaming"));
        if all_streaming {
            break;
        }
        if Instant::now() > deadline {
            bail!("cameras not streaming within {READY_TIMEOUT:?}: {info}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A relay in front: the process measured is the relay, the viewers'
    // cameras its `edge.cN`.
    let relay = match front {
        Front::Relay => Some(start_relay(scenario, binary, addr, cams.len(), out_dir).await?),
        _ => None,
    };
    let edge_pid = pid;
    let (pid, addr, api, prefix) = match &relay {
        Some((child, relay_addr)) => (
            child.pid(),
            *relay_addr,
            Api {
                addr: *relay_addr,
                tls: None,
            },
            "edge.",
        ),
        None => (pid, addr, api, ""),
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = proc::status_kib(pid, "VmRSS").unwrap_or(0);

    // What the viewers connect to, and how.
    let nginx = match front {
        Front::Nginx => Some(start_nginx(out_dir, addr)?),
        _ => None,
    };
    let (viewer_addr, viewer_tls) = match (&nginx, tls) {
        (Some((nginx, tls)), _) => (nginx.addr(), Some(Arc::clone(tls))),
        (None, Some(mut tls)) => {
            tls.alpn_protocols = if front == Front::Https1 {
                vec![b"http/1.1".to_vec()]
            } else {
                vec![b"h2".to_vec()]
            };
            (addr, Some(Arc::new(tls)))
        }
        (None, None) => (addr, None),
    };

    // Viewers.
    let groups = |c: &Cam| {
        std::iter::once((c.query, c.viewers))
            .chain(c.also.iter().copied())
            .collect::<Vec<_>>()
    };
    let viewers_of = |c: &Cam| groups(c).iter().map(|(_, n)| n).sum::<usize>();
    let total_viewers: usize = cams.iter().map(viewers_of).sum();
    let total_fps: f64 = cams
        .iter()
        .map(|c| viewers_of(c) as f64 * c.expect_fps)
        .sum();
    let sample_every = (total_fps / DECODE_BUDGET).ceil().max(1.0) as u64;
    let shared = Shared::start(epoch, Some(Arc::clone(&mjpeg.sent)));
    let stop = CancellationToken::new();
    let mut stats = Vec::new();
    let mut tasks = Vec::new();
    let viewers: Vec<(usize, &str)> = cams
        .iter()
        .enumerate()
        .flat_map(|(i, cam)| {
            groups(cam)
                .into_iter()
                .flat_map(move |(query, n)| std::iter::repeat_n((i, query), n))
        })
        .collect();
    {
        for &(i, query) in &viewers {
            let s = Arc::new(ViewerStats::default());
            let path = format!("/api/cameras/{prefix}c{i}/stream.mjpeg{query}");
            let target = match &viewer_tls {
                Some(tls) if front == Front::Https1 => Target::Https1 {
                    addr: viewer_addr,
                    path,
                    tls: Arc::clone(tls),
                },
                Some(tls) => Target::H2 {
                    addr: viewer_addr,
                    path,
                    tls: Arc::clone(tls),
                },
                None => Target::Http { addr, path },
            };
            let phase = stats.len() as u64;
            tasks.push(tokio::spawn(viewer::run(
                target,
                Arc::clone(&s),
                Arc::clone(&shared),
                sample_every,
                phase,
                stop.clone(),
            )));
            stats.push(s);
            if stats.len() % CONNECT_BATCH == 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let deadline = Instant::now() + READY_TIMEOUT;
    while !stats
        .iter()
        .all(|s| s.first_frame.load(Ordering::Relaxed) || s.error.lock().unwrap().is_some())
    {
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lag: Arc<Mutex<Vec<(f64, f64)>>> = Arc::default();
    tokio::spawn(viewer::loop_lag(Arc::clone(&lag), epoch, stop.clone()));
    tokio::time::sleep(warmup).await;

    // The window.
    let frames_out = |info: &serde_json::Value| -> u64 {
        info.as_array()
            .map(|a| a.iter().filter_map(|c| c["frames_out"].as_u64()).sum())
            .unwrap_or(0)
    };
    let encoded_start = frames_out(&api.get("/api/cameras").await?);
    let client_start = client_cpu();
    let cpu = proc::CpuWindow::start(pid).context("camstream exited")?;
    let proxy_cpu = match &nginx {
        Some((nginx, _)) => Some(proc::CpuWindow::start(nginx.pid()).context("nginx exited")?),
        None => None,
    };
    let edge_cpu = match &relay {
        Some(_) => Some(proc::CpuWindow::start(edge_pid).context("the edge exited")?),
        None => None,
    };
    let start: Vec<(u64, u64)> = stats
        .iter()
        .map(|s| {
            (
                s.frames.load(Ordering::Relaxed),
                s.bytes.load(Ordering::Relaxed),
            )
        })
        .collect();
    let parse_start: u64 = stats
        .iter()
        .map(|s| s.parse_ns.load(Ordering::Relaxed))
        .sum();
    let (decode_ns0, decoded0) = (
        shared.decode_ns.load(Ordering::Relaxed),
        shared.decoded.load(Ordering::Relaxed),
    );
    let window_start = shared.now_ms();
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let cpu = cpu
        .percent()
        .context("camstream exited during the window")?;
    let proxy_cpu = match proxy_cpu {
        Some(window) => Some(window.percent().context("nginx exited during the window")?),
        None => None,
    };
    let edge_cpu = match edge_cpu {
        Some(window) => Some(
            window
                .percent()
                .context("the edge exited during the window")?,
        ),
        None => None,
    };
    let secs = started.elapsed().as_secs_f64();
    let window_end = shared.now_ms();
    let client = (client_cpu() - client_start).as_secs_f64() / secs * 100.0;
    let rss_after = proc::status_kib(pid, "VmRSS").unwrap_or(0);
    let peak = proc::status_kib(pid, "VmHWM").unwrap_or(0);
    let encoded_end = frames_out(&api.get("/api/cameras").await?);
    let mut fps: Vec<f64> = stats
        .iter()
        .zip(&start)
        .map(|(s, (f, _))| (s.frames.load(Ordering::Relaxed) - f) as f64 / secs)
        .collect();
    fps.sort_by(f64::total_cmp);
    let bytes: u64 = stats
        .iter()
        .zip(&start)
        .map(|(s, (_, b))| s.bytes.load(Ordering::Relaxed) - b)
        .sum();
    let frames: u64 = stats
        .iter()
        .zip(&start)
        .map(|(s, (f, _))| s.frames.load(Ordering::Relaxed) - f)
        .sum();
    let parse_ns: u64 = stats
        .iter()
        .map(|s| s.parse_ns.load(Ordering::Relaxed))
        .sum::<u64>()
        - parse_start;
    let errors: Vec<String> = stats
        .iter()
        .filter_map(|s| s.error.lock().unwrap().clone())
        .collect();
    let decoded = shared.decoded.load(Ordering::Relaxed) - decoded0;
    let decode_ns = shared.decode_ns.load(Ordering::Relaxed) - decode_ns0;
    let lag_p95 = {
        let mut in_window: Vec<f64> = lag
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| (window_start..=window_end).contains(at))
            .map(|(_, l)| *l)
            .collect();
        in_window.sort_by(f64::total_cmp);
        percentile(&in_window, 0.95)
    };
    stop.cancel();
    for task in tasks {
        let _ = task.await;
    }
    let row = Row {
        name: scenario.name.into(),
        cpu,
        ratio: None,
        encodes: Some((encoded_end - encoded_start) as f64 / secs),
        peak_rss_kib: peak,
        // With a handful of viewers the allocator's noise swamps the delta.
        rss_per_viewer_kib: (total_viewers >= MIN_VIEWERS_FOR_RSS)
            .then(|| (rss_after as f64 - rss_before as f64) / total_viewers as f64),
        viewers: total_viewers,
        fps_min: fps.first().copied(),
        fps_median: percentile(&fps, 0.5),
        latency: latency(&shared.samples.lock().unwrap(), window_start, window_end),
        bytes_per_s: bytes as f64 / secs,
        errors: errors.len(),
        first_error: errors.first().cloned(),
        client_cpu: Some(client),
        proxy_cpu,
        edge_cpu,
        parse_us: (frames > 0).then(|| parse_ns as f64 / frames as f64 / 1000.0),
        decode_us: (decoded > 0).then(|| decode_ns as f64 / decoded as f64 / 1000.0),
        lag_p95,
        misreads: shared.misreads.load(Ordering::Relaxed),
        dropped: shared.dropped_samples.load(Ordering::Relaxed),
    };
    // Stopping a child waits for it to exit: off the async workers.
    tokio::task::spawn_blocking(move || drop((child, nginx))).await?;
    Ok(row)
}

/// Starts camstream with `config`, its output logged to
/// `out_dir/LOG_STEM.log` and `.stderr.log`, and waits for the address it
/// says it listens on (http or https).
async fn spawn_camstream(
    binary: &Path,
    config: &Path,
    out_dir: &Path,
    log_stem: &str,
    what: &str,
) -> anyhow::Result<(ChildGuard, SocketAddr)> {
    let mut child = Command::new(binary)
        .arg("--config")
        .arg(config)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let stderr = child.stderr.take().context("no stderr")?;
    let child = ChildGuard(child);
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<SocketAddr>();
    follow_output(
        stdout,
        &out_dir.join(format!("{log_stem}.log")),
        move |line| {
            if let Some(addr) = line
                .split("listening on http")
                .nth(1)
                .and_then(|rest| rest.split("://").nth(1))
                .and_then(|rest| rest.split('/').next())
                .and_then(|a| a.parse().ok())
            {
                let _ = addr_tx.send(addr);
            }
        },
    )?;
    follow_output(
        stderr,
        &out_dir.join(format!("{log_stem}.stderr.log")),
        |_| {},
    )?;
    let addr = tokio::task::spawn_blocking(move || addr_rx.recv_timeout(READY_TIMEOUT))
        .await?
        .map_err(|_| anyhow!("{what} did not start (see target/bench/{log_stem}.log)"))?;
    Ok((child, addr))
}

/// A camstream relay with the camstream at `edge` as its upstream; waits
/// until its `cameras` relayed cameras stream (always_on, like the edge's,
/// so the memory baseline is a running pull with no viewers).
async fn start_relay(
    scenario: &Scenario,
    binary: &Path,
    edge: SocketAddr,
    cameras: usize,
    out_dir: &Path,
) -> anyhow::Result<(ChildGuard, SocketAddr)> {
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[defaults]\nalways_on = true\n\n[[upstreams]]\nname = \"edge\"\n\
         url = \"http://{edge}\"\n# The edge has no [server.auth]: any token passes.\ntoken = \"bench-token-0123456789\"\n"
    );
    let config_path = out_dir.join(format!("{}-relay.toml", scenario.name));
    std::fs::write(&config_path, config)?;
    let log_stem = format!("{}-relay", scenario.name);
    let (child, addr) =
        spawn_camstream(binary, &config_path, out_dir, &log_stem, "the relay").await?;
    let api = Api { addr, tls: None };
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let info = api.get("/api/cameras").await?;
        let all_streaming = info
            .as_array()
            .is_some_and(|a| a.len() == cameras && a.iter().all(|c| c["state"] == "streaming"));
        if all_streaming {
            return Ok((child, addr));
        }
        if Instant::now() > deadline {
            bail!("relayed cameras not streaming within {READY_TIMEOUT:?}: {info}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// nginx with the shipped configuration in front of camstream at
/// `upstream`, with a certificate made for loopback; and client settings
/// that trust exactly that certificate, offering h2.
fn start_nginx(
    out_dir: &Path,
    upstream: SocketAddr,
) -> anyhow::Result<(nginx::Nginx, Arc<rustls::ClientConfig>)> {
    let dir = out_dir.join("nginx");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (cert, key) =
        camstream::tls::make_self_signed(&["127.0.0.1".to_string(), "localhost".to_string()])?;
    let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert_path, cert)?;
    std::fs::write(&key_path, key)?;
    let nginx = nginx::Nginx::start(&dir, upstream, &cert_path, &key_path)?;
    let mut tls = camstream::tls::pinned_client_config(&cert_path)?;
    tls.alpn_protocols = vec![b"h2".to_vec()];
    Ok((nginx, Arc::new(tls)))
}

/// camstream's JSON API, over HTTP or HTTPS (HTTP/1.1, a connection per
/// request).
struct Api {
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Api {
    async fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        let body = match &self.tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::IpAddress(self.addr.ip().into());
                let stream = tokio_rustls::TlsConnector::from(Arc::clone(tls))
                    .connect(name, tcp)
                    .await?;
                fetch(stream, self.addr, path).await?
            }
            None => fetch(tcp, self.addr, path).await?,
        };
        serde_json::from_slice(&body).with_context(|| format!("GET {path}: not JSON"))
    }
}

async fn fetch<IO>(io: IO, addr: SocketAddr, path: &str) -> anyhow::Result<bytes::Bytes>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::BodyExt as _;
    let (mut sender, connection) = hyper::client::conn::http1::handshake::<
        _,
        http_body_util::Empty<bytes::Bytes>,
    >(hyper_util::rt::TokioIo::new(io))
    .await?;
    let connection = tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(http_body_util::Empty::new())?;
    let body = sender
        .send_request(request)
        .await?
        .into_body()
        .collect()
        .await?;
    connection.abort();
    Ok(body.to_bytes())
}

/// CPU time of the benchmark's viewers: their runtime's threads and the
/// stamp reader.
fn client_cpu() -> Duration {
    proc::own_threads_cpu("viewer-rt") + proc::own_threads_cpu("stamp-reader")
}

/// p50, p95, max and count of the latencies received inside the window.
fn latency(samples: &[Sample], from_ms: f64, to_ms: f64) -> Option<(f64, f64, f64, usize)> {
    let mut values: Vec<f64> = samples
        .iter()
        .filter(|s| (from_ms..=to_ms).contains(&s.received_ms))
        .map(|s| s.latency_ms)
        .collect();
    values.sort_by(f64::total_cmp);
    Some((
        percentile(&values, 0.5)?,
        percentile(&values, 0.95)?,
        *values.last()?,
        values.len(),
    ))
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

fn summary(row: &Row) -> String {
    let mut s = format!(
        "cpu {:.1}%{} peak RSS {:.1} MB, fps min/median {}/{}",
        row.cpu,
        row.ratio
            .map_or(String::new(), |r| format!(" ({r:.2}x floor),")),
        row.peak_rss_kib as f64 / 1024.0,
        opt(row.fps_min, 1),
        opt(row.fps_median, 1)
    );
    if let Some((p50, p95, max, n)) = row.latency {
        s.push_str(&format!(
            ", latency p50/p95/max {p50:.0}/{p95:.0}/{max:.0} ms ({n} samples)"
        ));
    }
    if let Some(proxy) = row.proxy_cpu {
        s.push_str(&format!(", nginx cpu {proxy:.1}%"));
    }
    if let Some(edge) = row.edge_cpu {
        s.push_str(&format!(", the edge behind the relay cpu {edge:.1}%"));
    }
    if row.errors > 0 {
        s.push_str(&format!(
            ", {} errors: {}",
            row.errors,
            row.first_error.clone().unwrap_or_default()
        ));
    }
    s
}

/// HTTPS and HTTP/2 against plain HTTP with the same viewers, and the
/// latency through nginx against direct.
fn tls_report(rows: &[Row]) -> String {
    let find = |name: &str| rows.iter().find(|r| r.name == name && r.errors == 0);
    let mut out = String::new();
    let pairs: Vec<(&Row, &Row)> = rows
        .iter()
        .filter_map(|r| {
            let plain = r.name.strip_suffix("-h2")?;
            Some((find(plain)?, find(&r.name)?))
        })
        .collect();
    let h1_pairs: Vec<(&Row, &Row, Option<&Row>)> = rows
        .iter()
        .filter_map(|r| {
            let plain = r.name.strip_suffix("-tls1")?;
            Some((find(plain)?, find(&r.name)?, find(&format!("{plain}-h2"))))
        })
        .collect();
    if !h1_pairs.is_empty() {
        out.push_str(
            "\nTLS alone (HTTPS over HTTP/1.1) against plain HTTP/1.1, and HTTP/2 over the same TLS:\n\n\
             | viewers | HTTP CPU % | HTTPS/1.1 CPU % | added by TLS | HTTPS/h2 CPU % | added by HTTP/2 over HTTPS/1.1 |\n\
             |---|---|---|---|---|---|\n",
        );
        for (plain, tls, h2) in h1_pairs {
            out.push_str(&format!(
                "| {} | {:.1} | {:.1} | {:+.0} % | {} | {} |\n",
                plain.viewers,
                plain.cpu,
                tls.cpu,
                (tls.cpu / plain.cpu - 1.0) * 100.0,
                h2.map_or("-".into(), |h| format!("{:.1}", h.cpu)),
                h2.map_or("-".into(), |h| format!(
                    "{:+.0} %",
                    (h.cpu / tls.cpu - 1.0) * 100.0
                )),
            ));
        }
    }
    if !pairs.is_empty() {
        out.push_str(
            "\nHTTPS and HTTP/2 (camstream's own rustls, a TLS connection per viewer) against plain HTTP/1.1:\n\n\
             | viewers | HTTP CPU % | HTTPS/h2 CPU % | HTTPS/h2 / HTTP | added by TLS, % of the HTTP cost |\n\
             |---|---|---|---|---|\n",
        );
        for (plain, tls) in pairs {
            out.push_str(&format!(
                "| {} | {:.1} | {:.1} | {:.2} | {:+.0} % |\n",
                plain.viewers,
                plain.cpu,
                tls.cpu,
                tls.cpu / plain.cpu,
                (tls.cpu / plain.cpu - 1.0) * 100.0
            ));
        }
    }
    if let (Some(direct), Some(relay)) = (find("c1-v100"), find("relay-v100")) {
        out.push_str(&format!(
            "\nA relay against the edge, 100 viewers of one 480x270 camera: the edge serving them directly {:.1} % CPU; \
             a relay serving them {:.1} % ({:.2}x), while the edge behind it, pulled once, uses {} %\n",
            direct.cpu,
            relay.cpu,
            relay.cpu / direct.cpu,
            opt(relay.edge_cpu, 1)
        ));
    }
    if let (Some(direct), Some(proxied)) = (find("c1-v1"), find("c1-v1-nginx")) {
        let lat = |r: &Row| {
            r.latency.map_or_else(
                || "-".into(),
                |(p50, p95, max, _)| format!("{p50:.0} / {p95:.0} / {max:.0} ms"),
            )
        };
        out.push_str(&format!(
            "\nLatency p50 / p95 / max, 1 viewer: direct over HTTP {}; through nginx over HTTPS and HTTP/2 {} (nginx CPU {} %)\n",
            lat(direct),
            lat(proxied),
            opt(proxied.proxy_cpu, 1)
        ));
    }
    out
}

fn report(rows: &[Row], host: &str, warmup: Duration, window: Duration, quick: bool) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "### Results{}\n\n{host}\nwarm-up {:.0} s, window {:.0} s per scenario\n\n",
        if quick { " (quick run)" } else { "" },
        warmup.as_secs_f64(),
        window.as_secs_f64()
    ));
    out.push_str(
        "| scenario | viewers | server CPU % | x floor | encodes/s | peak RSS MB | RSS/viewer KiB | fps/viewer min / median | latency p50 / p95 / max ms (samples) | MB/s out | errors |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {:.1} | {} | {} | {:.1} | {} | {} / {} | {} | {:.2} | {} |\n",
            r.name,
            r.viewers,
            r.cpu,
            opt(r.ratio, 2),
            opt(r.encodes, 1),
            r.peak_rss_kib as f64 / 1024.0,
            opt(r.rss_per_viewer_kib, 1),
            opt(r.fps_min, 1),
            opt(r.fps_median, 1),
            r.latency.map_or_else(
                || "-".into(),
                |(a, b, c, n)| format!("{a:.0} / {b:.0} / {c:.0} ({n})")
            ),
            r.bytes_per_s / 1e6,
            r.errors
        ));
    }
    let v1 = rows.iter().find(|r| r.name == "c1-v1").map(|r| r.cpu);
    let marginal: Vec<String> = rows
        .iter()
        .filter(|r| r.name.starts_with("c1-v") && r.viewers > 1 && r.name != "c1-v100-fps5")
        .filter_map(|r| {
            let base = v1?;
            Some(format!(
                "{}: {:.3}% of a core per added viewer",
                r.name,
                (r.cpu - base) / (r.viewers - 1) as f64
            ))
        })
        .collect();
    if !marginal.is_empty() {
        out.push_str(&format!(
            "\nCost per added viewer (vs c1-v1): {}\n",
            marginal.join("; ")
        ));
    }
    out.push_str(&tls_report(rows));
    out.push_str(
        "\nThe viewers' own overhead (client side, in the benchmark process):\n\n\
         | scenario | client CPU % | parse us/frame | stamp decode us/sample | client loop lag p95 ms | stamp misreads | samples dropped |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for r in rows.iter().filter(|r| r.client_cpu.is_some()) {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.name,
            opt(r.client_cpu, 1),
            opt(r.parse_us, 2),
            opt(r.decode_us, 0),
            opt(r.lag_p95, 2),
            r.misreads,
            r.dropped
        ));
    }
    let failed: Vec<String> = rows
        .iter()
        .filter_map(|r| Some(format!("{}: {}", r.name, r.first_error.clone()?)))
        .collect();
    if !failed.is_empty() {
        out.push_str(&format!("\nErrors:\n- {}\n", failed.join("\n- ")));
    }
    out
}
