//! What decoding MJPEG in the DCT saves: `cargo bench --bench jpegdec`.
//!
//! Encodes 1080p camera-like JPEGs once (the load benchmark's MJPEG
//! content: moving bars with sensor noise, quality 80), then pushes them
//! through two pipelines in this process, each ending in the 480x270 JPEG
//! camstream serves by default, and reports the process CPU time
//! (getrusage: user + system, every thread) each one took per frame:
//!
//!   floor     appsrc ! jpegdec ! videoconvertscale ! 480x270 ! jpegenc ! fakesink
//!             (the load benchmark's floor-mjpeg chain, without the HTTP part)
//!   dct       appsrc ! camstreamjpegdec max-scale=0.25 ! videoconvertscale
//!             ! 480x270 ! jpegenc ! fakesink
//!
//! The pipelines run alternately, several rounds, as fast as they go (not
//! at 30 fps): the figure is CPU per frame, and the ratio is what matters.
//! Nothing is asserted: the machine may be shared.
//!
//! Run without `--bench` (as `cargo test --all-targets` does), it pushes a
//! few small frames through both pipelines to check that they run.

use std::time::Instant;

use anyhow::{Context as _, anyhow, bail};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

/// JPEG quality of the source frames and of the output, as in the load
/// benchmark (benches/load: QUALITY).
const QUALITY: u32 = 80;

/// Distinct source frames: enough that the bars move and the noise differs
/// from frame to frame.
const SOURCE_FRAMES: usize = 60;

/// Frames per pipeline run: ten seconds of a 30 fps camera.
const FRAMES_PER_RUN: usize = 300;

/// Rounds of (floor, dct); the median round is reported.
const ROUNDS: usize = 5;

struct Chain {
    name: &'static str,
    decode: &'static str,
    /// Whether the chain scales and encodes after decoding (the compared
    /// chains) or only decodes (the breakdown of where the time goes).
    encode: bool,
}

/// The two compared chains first, then decode-only chains that show where
/// the time goes: 1/1 is the element's own overhead over jpegdec, 1/8
/// leaves little but the entropy (Huffman) decoding, which no reduction
/// skips.
const CHAINS: [Chain; 6] = [
    Chain {
        name: "floor",
        decode: "jpegdec",
        encode: true,
    },
    Chain {
        name: "dct",
        decode: "camstreamjpegdec max-scale=0.25",
        encode: true,
    },
    Chain {
        name: "jpegdec only",
        decode: "jpegdec",
        encode: false,
    },
    Chain {
        name: "dct 1/1 only",
        decode: "camstreamjpegdec max-scale=1",
        encode: false,
    },
    Chain {
        name: "dct 1/4 only",
        decode: "camstreamjpegdec max-scale=0.25",
        encode: false,
    },
    Chain {
        name: "dct 1/8 only",
        decode: "camstreamjpegdec max-scale=0.125",
        encode: false,
    },
];

/// How much sensor noise is blended into the bars: the load benchmark's
/// 0.12 unless `--noise ALPHA` says otherwise (0 gives clean bars, which
/// compress to a fraction and show the reduction at its best).
const NOISE: f64 = 0.12;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    let noise = match args.iter().position(|a| a == "--noise") {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse::<f64>().ok())
            .context("--noise takes a number from 0 to 1")?,
        None => NOISE,
    };
    gst::init()?;
    camstream::pipeline::init()?;
    let (width, height, source_frames, frames_per_run, rounds) = if bench {
        (1920, 1080, SOURCE_FRAMES, FRAMES_PER_RUN, ROUNDS)
    } else {
        (320, 180, 3, 6, 1)
    };
    let frames = encode(width, height, source_frames, noise)?;
    let mean_bytes = frames.iter().map(|f| f.size()).sum::<usize>() / frames.len();
    let (out_w, out_h) = camstream::pipeline::scaled_size(width, height, 0.25);
    if bench {
        println!(
            "{} source JPEGs {width}x{height} (noise {noise}), {} KiB each on average; \
             {frames_per_run} frames per run to {out_w}x{out_h} JPEG, {rounds} rounds",
            frames.len(),
            mean_bytes / 1024
        );
    }
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); CHAINS.len()];
    for _ in 0..rounds {
        for (i, chain) in CHAINS.iter().enumerate() {
            let (seconds, wall) = run(chain, &frames, frames_per_run, out_w, out_h)?;
            cpu[i].push(seconds);
            if bench {
                println!(
                    "  {:13} {:6.2} ms CPU/frame ({:5.1} frames/s of wall time)",
                    chain.name,
                    seconds * 1000.0 / frames_per_run as f64,
                    frames_per_run as f64 / wall
                );
            }
        }
    }
    if bench {
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let per_frame = |s: f64| s * 1000.0 / frames_per_run as f64;
        for (chain, cpu) in CHAINS.iter().zip(cpu.iter_mut()).skip(2) {
            println!(
                "median {}: {:.2} ms/frame",
                chain.name,
                per_frame(median(cpu))
            );
        }
        let floor = median(&mut cpu[0]);
        let dct = median(&mut cpu[1]);
        println!(
            "median: floor {:.2} ms/frame, dct {:.2} ms/frame; dct/floor = {:.2} \
             (at 30 fps: {:.1} % vs {:.1} % of a core)",
            per_frame(floor),
            per_frame(dct),
            dct / floor,
            per_frame(floor) * 3.0,
            per_frame(dct) * 3.0,
        );
    } else {
        println!("jpegdec bench self-test: both chains ran");
    }
    Ok(())
}

/// Camera-like 1080p JPEGs, made as the load benchmark makes its MJPEG
/// source (benches/load/source.rs: encode_loop).
fn encode(width: u32, height: u32, count: usize, noise: f64) -> anyhow::Result<Vec<gst::Buffer>> {
    let caps = format!("video/x-raw,format=I420,width={width},height={height},framerate=30/1");
    let description = format!(
        "compositor name=mix sink_1::alpha={noise} ! {caps} ! jpegenc quality={QUALITY} \
         ! appsink name=out sync=false \
         videotestsrc num-buffers={count} pattern=smpte horizontal-speed=4 ! {caps} ! mix. \
         videotestsrc num-buffers={count} pattern=snow ! {caps} ! mix."
    );
    let pipeline = gst::parse::launch(&description)?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow!("not a pipeline"))?;
    let sink = pipeline
        .by_name("out")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .context("no appsink")?;
    pipeline.set_state(gst::State::Playing)?;
    let mut frames = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        frames.push(sample.buffer_owned().context("sample without buffer")?);
    }
    pipeline.set_state(gst::State::Null)?;
    if frames.len() != count {
        bail!("encoded {} of {count} frames", frames.len());
    }
    Ok(frames)
}

/// Pushes `count` frames (cycling through `frames`, shared, not copied)
/// through one chain; returns the process CPU seconds and wall seconds it
/// took from PLAYING to end of stream.
fn run(
    chain: &Chain,
    frames: &[gst::Buffer],
    count: usize,
    out_w: u32,
    out_h: u32,
) -> anyhow::Result<(f64, f64)> {
    // block=true: pushing waits for the decoder instead of queueing every
    // frame in memory.
    let tail = if chain.encode {
        format!(
            "videoconvertscale ! video/x-raw,width={out_w},height={out_h} ! jpegenc quality={QUALITY} ! "
        )
    } else {
        String::new()
    };
    let description = format!(
        "appsrc name=src format=time block=true max-buffers=4 caps=image/jpeg \
         ! {} ! {tail}fakesink name=sink sync=false",
        chain.decode
    );
    let pipeline = gst::parse::launch(&description)?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow!("not a pipeline"))?;
    let src = pipeline
        .by_name("src")
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        .context("no appsrc")?;
    pipeline.set_state(gst::State::Playing)?;
    let bus = pipeline.bus().context("no bus")?;
    let cpu_before = process_cpu_seconds();
    let wall = Instant::now();
    for i in 0..count {
        let mut buffer = frames[i % frames.len()].copy();
        buffer
            .make_mut()
            .set_pts(gst::ClockTime::from_nseconds(i as u64 * 33_333_333));
        src.push_buffer(buffer)
            .map_err(|e| anyhow!("{}: push failed: {e:?}", chain.name))?;
    }
    src.end_of_stream()
        .map_err(|e| anyhow!("{}: end of stream refused: {e:?}", chain.name))?;
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(300),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .with_context(|| format!("{}: no end of stream", chain.name))?;
    let (cpu, wall) = (
        process_cpu_seconds() - cpu_before,
        wall.elapsed().as_secs_f64(),
    );
    pipeline.set_state(gst::State::Null)?;
    if let gst::MessageView::Error(err) = msg.view() {
        bail!("{}: {}", chain.name, err.error());
    }
    Ok((cpu, wall))
}

/// User plus system CPU time of this whole process, in seconds.
fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
