//! camstream's DCT-domain JPEG decoder (`camstreamjpegdec`) against the
//! real thing: JPEGs made by jpegenc from videotestsrc, decoded by the
//! element and by `jpegdec ! videoconvertscale` (the full decode scaled
//! down), compared by PSNR; damaged frames fed to a PLAYING pipeline; AVI1
//! frames without Huffman tables; size and subsampling changes mid-stream.

mod common;

use camstream::jpeg;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

/// The reductions tested, with the lowest PSNR accepted between the
/// element's output and the full decode scaled down by videoconvertscale
/// to the same size. The two differ in the filter that shrinks: the reduced
/// IDCT averages each block, videoconvertscale's default bilinear filter
/// weighs a wider, overlapping window, and the gap grows with the factor
/// on these sharp-edged patterns (measured on smpte and pinwheel 1280x720:
/// about 60 dB at 1/2, 30-33 at 1/4, 24.6-27.7 at 1/8; each run prints its
/// figures). An element that mixed up planes, strides or scale lands far
/// below these.
const SCALES: [(f64, u32, f64); 3] = [(0.5, 2, 45.0), (0.25, 4, 27.0), (0.125, 8, 22.0)];

/// Lowest PSNR accepted between the element's output and the full decode
/// shrunk by block means, which is what a DCT reduced to its low
/// frequencies computes: only rounding differs, mostly the full decode's
/// fast integer IDCT (measured 49.7-53.2 dB; a garbled reduced decode,
/// such as TurboJPEG's fast-IDCT flag gives at 1/2, measured 22 dB).
const MIN_BLOCK_MEAN_PSNR_DB: f64 = 45.0;

/// How long a pipeline gets to hand over a frame: generous, the machine is
/// shared.
const PULL_TIMEOUT: gst::ClockTime = gst::ClockTime::from_seconds(20);

fn init() {
    common::init();
    camstream::pipeline::init().expect("camstream's elements register");
}

/// JPEGs from jpegenc: `count` frames of `pattern` at `width`x`height`, with
/// the subsampling that the raw `format` implies (I420 gives 4:2:0, Y42B
/// 4:2:2, GRAY8 greyscale).
fn encode(pattern: &str, format: &str, width: u32, height: u32, count: u32) -> Vec<Vec<u8>> {
    let description = format!(
        "videotestsrc num-buffers={count} pattern={pattern} \
         ! video/x-raw,format={format},width={width},height={height},framerate=30/1 \
         ! jpegenc quality=90 ! appsink name=sink sync=false"
    );
    let pipeline = gst::parse::launch(&description)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = appsink(&pipeline);
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut frames = Vec::new();
    while let Some(sample) = sink.try_pull_sample(PULL_TIMEOUT) {
        let buffer = sample.buffer().unwrap();
        frames.push(buffer.map_readable().unwrap().to_vec());
    }
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(frames.len(), count as usize, "jpegenc made every frame");
    frames
}

/// A decoded picture: its caps' format and size, and each plane's visible
/// bytes row by row (stride padding removed).
#[derive(PartialEq)]
struct Picture {
    format: gst_video::VideoFormat,
    width: u32,
    height: u32,
    planes: Vec<Vec<u8>>,
}

/// Format and size only: the samples would flood a failure message.
impl std::fmt::Debug for Picture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {}x{}", self.format, self.width, self.height)
    }
}

fn picture(sample: &gst::Sample) -> Picture {
    let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(sample.buffer().unwrap(), &info)
        .unwrap();
    let planes = (0..info.n_planes())
        .map(|p| {
            let stride = info.stride()[p as usize] as usize;
            let data = frame.plane_data(p).unwrap();
            // Bytes per row of this plane: the component width times bytes
            // per pixel (4 for RGBx, 1 for every planar format).
            let row = info.comp_width(p as u8) as usize
                * info.format_info().pixel_stride()[p as usize] as usize;
            let rows = info.comp_height(p as u8) as usize;
            (0..rows)
                .flat_map(|r| data[r * stride..r * stride + row].iter().copied())
                .collect()
        })
        .collect();
    Picture {
        format: info.format(),
        width: info.width(),
        height: info.height(),
        planes,
    }
}

/// Runs `jpegs` through `appsrc ! {middle} ! appsink` and returns what came
/// out, with the pipeline (still PLAYING, for the caller to inspect).
fn run(middle: &str, jpegs: &[Vec<u8>]) -> (gst::Pipeline, Vec<Picture>) {
    let description = format!(
        "appsrc name=src format=time caps=image/jpeg ! {middle} ! appsink name=sink sync=false"
    );
    let pipeline = gst::parse::launch(&description)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    let sink = appsink(&pipeline);
    pipeline.set_state(gst::State::Playing).unwrap();
    for (i, jpeg) in jpegs.iter().enumerate() {
        let mut buffer = gst::Buffer::from_slice(jpeg.clone());
        buffer
            .get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_mseconds(33 * i as u64));
        src.push_buffer(buffer).unwrap();
    }
    src.end_of_stream().unwrap();
    let mut pictures = Vec::new();
    while let Some(sample) = sink.try_pull_sample(PULL_TIMEOUT) {
        pictures.push(picture(&sample));
    }
    assert!(sink.is_eos(), "the pipeline reached end of stream");
    (pipeline, pictures)
}

fn appsink(pipeline: &gst::Pipeline) -> gst_app::AppSink {
    pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap()
}

fn stop(pipeline: gst::Pipeline) {
    pipeline.set_state(gst::State::Null).unwrap();
}

/// Decodes with camstream's element and stops the pipeline.
fn dct_decode(max_scale: f64, jpegs: &[Vec<u8>]) -> Vec<Picture> {
    let (pipeline, pictures) = run(
        &format!("camstreamjpegdec name=dec max-scale={max_scale}"),
        jpegs,
    );
    let dropped = pipeline
        .by_name("dec")
        .map(|d| d.property::<u64>("frames-dropped"));
    stop(pipeline);
    assert_eq!(dropped, Some(0), "no good frame is dropped");
    pictures
}

/// Each plane of `full` shrunk by `factor` in both directions, each
/// sample the mean of the block it covers: what a DCT reduced to its low
/// frequencies computes, up to rounding.
fn box_shrink(full: &Picture, factor: usize, like: &Picture) -> Picture {
    let info = |p: &Picture| {
        gst_video::VideoInfo::builder(p.format, p.width, p.height)
            .build()
            .unwrap()
    };
    let (big, small) = (info(full), info(like));
    let planes = full
        .planes
        .iter()
        .enumerate()
        .map(|(p, plane)| {
            let (bw, bh) = (
                big.comp_width(p as u8) as usize,
                big.comp_height(p as u8) as usize,
            );
            let (sw, sh) = (
                small.comp_width(p as u8) as usize,
                small.comp_height(p as u8) as usize,
            );
            let mut out = Vec::with_capacity(sw * sh);
            for y in 0..sh {
                for x in 0..sw {
                    let (mut sum, mut n) = (0u32, 0u32);
                    for yy in y * factor..((y + 1) * factor).min(bh) {
                        for xx in x * factor..((x + 1) * factor).min(bw) {
                            sum += u32::from(plane[yy * bw + xx]);
                            n += 1;
                        }
                    }
                    out.push(((sum + n / 2) / n.max(1)) as u8);
                }
            }
            out
        })
        .collect();
    Picture {
        format: like.format,
        width: like.width,
        height: like.height,
        planes,
    }
}

/// PSNR over every plane's samples, in dB (infinite when identical).
fn psnr(a: &Picture, b: &Picture) -> f64 {
    assert_eq!((a.format, a.width, a.height), (b.format, b.width, b.height));
    let (mut sum, mut count) = (0.0f64, 0usize);
    for (pa, pb) in a.planes.iter().zip(&b.planes) {
        assert_eq!(pa.len(), pb.len());
        for (&x, &y) in pa.iter().zip(pb) {
            let d = f64::from(x) - f64::from(y);
            sum += d * d;
        }
        count += pa.len();
    }
    let mse = sum / count as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0 * 255.0 / mse).log10()
    }
}

#[test]
fn registers_under_its_name() {
    init();
    let element = gst::ElementFactory::make(camstream::pipeline::DCT_JPEG_DECODER)
        .build()
        .expect("camstreamjpegdec is registered by pipeline::init");
    assert_eq!(element.property::<f64>("max-scale"), 1.0);
    assert_eq!(element.property::<u64>("frames-dropped"), 0);
}

#[test]
fn matches_a_full_decode_scaled_down() {
    init();
    let (width, height) = (1280, 720);
    // 4:2:0 and 4:2:2, from jpegenc fed I420 and Y42B; two patterns, one
    // of flat bars with sharp edges and one with detail everywhere.
    for (format, pattern) in [
        ("I420", "smpte"),
        ("I420", "pinwheel"),
        ("Y42B", "smpte"),
        ("Y42B", "pinwheel"),
    ] {
        let jpegs = encode(pattern, format, width, height, 2);
        let info = jpeg::read_header(&jpegs[0]).unwrap();
        let expect_sampling = if format == "I420" {
            jpeg::Subsampling::S420
        } else {
            jpeg::Subsampling::S422
        };
        assert_eq!(info.subsampling, expect_sampling, "jpegenc from {format}");
        // The full-size decode in the JPEG's own subsampling (jpegdec turns
        // 4:2:2 into I420; the next test checks the element's full-size
        // decode against jpegdec's).
        let full = dct_decode(1.0, &jpegs);
        for (max_scale, denominator, min_db) in SCALES {
            let (w, h) = (width / denominator, height / denominator);
            let ours = dct_decode(max_scale, &jpegs);
            let (pipeline, reference) = run(
                &format!(
                    "jpegdec idct-method=islow ! videoconvertscale \
                     ! video/x-raw,format={format},width={w},height={h}"
                ),
                &jpegs,
            );
            stop(pipeline);
            assert_eq!(ours.len(), jpegs.len(), "every frame decoded");
            assert_eq!(reference.len(), jpegs.len());
            for ((a, b), f) in ours.iter().zip(&reference).zip(&full) {
                assert_eq!(
                    (a.format.to_str().as_str(), a.width, a.height),
                    (format, w, h),
                    "decoded straight to 1/{denominator}, subsampling kept"
                );
                let scaled = psnr(a, b);
                let boxed = psnr(a, &box_shrink(f, denominator as usize, a));
                println!(
                    "{format} {pattern} 1/{denominator}: PSNR {scaled:.1} dB against \
                     videoconvertscale, {boxed:.1} dB against block means"
                );
                assert!(
                    scaled >= min_db,
                    "{format} {pattern} at 1/{denominator}: PSNR {scaled:.1} dB < {min_db} dB"
                );
                assert!(
                    boxed >= MIN_BLOCK_MEAN_PSNR_DB,
                    "{format} {pattern} at 1/{denominator}: PSNR {boxed:.1} dB against block \
                     means < {MIN_BLOCK_MEAN_PSNR_DB} dB"
                );
            }
        }
    }
}

#[test]
fn full_size_decode_is_jpegdec_exactly_and_greyscale_stays_grey() {
    init();
    // At max-scale 1 there is no reduction: the same libjpeg-turbo decode
    // as jpegdec's (both with the fast integer IDCT), sample for sample.
    let jpegs = encode("ball", "I420", 320, 240, 2);
    let ours = dct_decode(1.0, &jpegs);
    let (pipeline, reference) = run("jpegdec", &jpegs);
    stop(pipeline);
    assert_eq!(ours, reference);
    // jpegdec halves 4:2:2 chroma to I420; the luma is the same.
    let jpegs = encode("ball", "Y42B", 320, 240, 1);
    let ours = dct_decode(1.0, &jpegs);
    let (pipeline, reference) = run("jpegdec", &jpegs);
    stop(pipeline);
    assert_eq!(ours[0].format, gst_video::VideoFormat::Y42b);
    assert!(ours[0].planes[0] == reference[0].planes[0]);

    let grey = encode("smpte", "GRAY8", 320, 240, 1);
    assert_eq!(
        jpeg::read_header(&grey[0]).unwrap().subsampling,
        jpeg::Subsampling::Gray
    );
    let ours = dct_decode(0.5, &grey);
    assert_eq!(
        (ours[0].format, ours[0].width, ours[0].height),
        (gst_video::VideoFormat::Gray8, 160, 120)
    );
}

/// Removes every DHT segment before the first scan, as an AVI1 webcam frame
/// comes; returns the frame and the removed segments.
fn strip_huffman_tables(frame: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut out = frame[..2].to_vec();
    let mut removed = Vec::new();
    let mut pos = 2;
    loop {
        assert_eq!(frame[pos], 0xFF);
        let code = frame[pos + 1];
        if code == 0xDA {
            out.extend_from_slice(&frame[pos..]);
            return (out, removed);
        }
        let len = usize::from(u16::from_be_bytes([frame[pos + 2], frame[pos + 3]]));
        let segment = &frame[pos..pos + 2 + len];
        if code == 0xC4 {
            removed.extend_from_slice(segment);
        } else {
            out.extend_from_slice(segment);
        }
        pos += 2 + len;
    }
}

/// The Huffman tables in one or more DHT segments, as (class and id,
/// counts and symbols), whatever way they are split into segments.
fn huffman_tables(segments: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut tables = Vec::new();
    let mut pos = 0;
    while pos < segments.len() {
        let len = usize::from(u16::from_be_bytes([segments[pos + 2], segments[pos + 3]]));
        let mut body = &segments[pos + 4..pos + 2 + len];
        while !body.is_empty() {
            let count: usize = body[1..17].iter().map(|&c| usize::from(c)).sum();
            tables.push((body[0], body[1..17 + count].to_vec()));
            body = &body[17 + count..];
        }
        pos += 2 + len;
    }
    tables.sort();
    tables
}

#[test]
fn avi1_frames_without_huffman_tables_decode_and_can_be_fixed() {
    init();
    let jpegs = encode("smpte", "Y42B", 640, 480, 1);
    let original = &jpegs[0];
    let (avi1, removed) = strip_huffman_tables(original);
    assert!(!removed.is_empty(), "jpegenc writes DHT segments");
    let info = jpeg::read_header(&avi1).unwrap();
    assert!(!info.has_huffman_tables);

    // The fix inserts exactly the tables jpegenc wrote (libjpeg's defaults
    // are T.81 K.3's), so the fixed frame decodes identically.
    let fixed = jpeg::with_huffman_tables(&avi1).unwrap().into_owned();
    assert!(jpeg::read_header(&fixed).unwrap().has_huffman_tables);
    assert_eq!(
        huffman_tables(&jpeg::standard_dht_segment()),
        huffman_tables(&removed)
    );
    let want = common::mjpeg::decode_jpeg(original).unwrap();
    let got = common::mjpeg::decode_jpeg(&fixed).unwrap();
    assert_eq!((got.width, got.height), (640, 480));
    assert!(
        got.rgb == want.rgb,
        "the fixed frame decodes as the original"
    );

    // The element decodes the frame without tables as it does the original.
    let from_original = dct_decode(0.25, std::slice::from_ref(original));
    let from_avi1 = dct_decode(0.25, &[avi1]);
    assert_eq!(from_avi1.len(), 1);
    assert_eq!(from_avi1, from_original);
}

/// Damaged copies of a good JPEG, as webcams and lossy links deliver them.
fn damaged(good: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let scan = jpeg::read_header(good).unwrap().scan_offset;
    // The scan cut in half but the end marker kept: libjpeg runs out of
    // data mid-picture and warns.
    let mut short_scan = good[..scan + (good.len() - scan) / 2].to_vec();
    short_scan.extend_from_slice(&[0xFF, 0xD9]);
    // The frame header overwritten: nothing to decode.
    let mut bad_header = good.to_vec();
    for b in &mut bad_header[2..40] {
        *b = 0x5A;
    }
    vec![
        ("truncated", good[..good.len() / 2].to_vec()),
        ("scan cut short", short_scan),
        ("header overwritten", bad_header),
        ("not a JPEG", b"<html>502 Bad Gateway</html>".to_vec()),
        ("empty", Vec::new()),
    ]
}

#[test]
fn damaged_frames_are_dropped_and_counted_and_the_stream_goes_on() {
    init();
    let good = encode("smpte", "I420", 640, 480, 1).remove(0);
    let bad = damaged(&good);
    let mut stream = vec![good.clone()];
    stream.extend(bad.iter().map(|(_, b)| b.clone()));
    stream.extend([good.clone(), good.clone()]);

    let description = "appsrc name=src is-live=true format=time caps=image/jpeg \
         ! camstreamjpegdec name=dec max-scale=0.25 ! appsink name=sink sync=false";
    let pipeline = gst::parse::launch(description)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    let sink = appsink(&pipeline);
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut decoded = 0;
    for jpeg in &stream {
        src.push_buffer(gst::Buffer::from_slice(jpeg.clone()))
            .unwrap();
    }
    // Every good frame comes out, the damaged ones do not.
    while decoded < 3 {
        let sample = sink
            .try_pull_sample(PULL_TIMEOUT)
            .expect("the good frames after the damaged ones are decoded");
        let p = picture(&sample);
        assert_eq!((p.width, p.height), (160, 120));
        decoded += 1;
    }
    let dec = pipeline.by_name("dec").unwrap();
    assert_eq!(
        dec.property::<u64>("frames-dropped"),
        bad.len() as u64,
        "each damaged frame is counted: {:?}",
        bad.iter().map(|(name, _)| *name).collect::<Vec<_>>()
    );
    // Waits for a state change still under way on a loaded machine.
    let (_, state, _) = pipeline.state(gst::ClockTime::from_seconds(10));
    assert_eq!(state, gst::State::Playing);
    let bus = pipeline.bus().unwrap();
    if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
        panic!("damaged frames raised a pipeline error: {msg:?}");
    }
    stop(pipeline);
}

#[test]
fn size_and_subsampling_changes_mid_stream_renegotiate() {
    init();
    let mut stream = encode("smpte", "I420", 640, 480, 2);
    stream.extend(encode("ball", "Y42B", 1280, 720, 2));
    stream.extend(encode("smpte", "GRAY8", 320, 240, 1));
    stream.extend(encode("smpte", "I420", 642, 362, 1));
    let pictures = dct_decode(0.5, &stream);
    let got: Vec<_> = pictures
        .iter()
        .map(|p| (p.format.to_str().to_string(), p.width, p.height))
        .collect();
    let want = [
        ("I420", 320, 240),
        ("I420", 320, 240),
        ("Y42B", 640, 360),
        ("Y42B", 640, 360),
        ("GRAY8", 160, 120),
        // Odd halves round up, as libjpeg-turbo scales.
        ("I420", 321, 181),
    ];
    assert_eq!(
        got,
        want.map(|(f, w, h)| (f.to_string(), w, h)).to_vec(),
        "the caps follow each frame's size and subsampling"
    );
}

/// A JPEG made by libjpeg-turbo's own compressor, for the layouts jpegenc
/// cannot make: `pixels` in TurboJPEG pixel format `format`, compressed
/// with subsampling code `subsampling`.
fn turbo_compress(
    pixels: &[u8],
    width: i32,
    height: i32,
    format: turbojpeg_sys::TJPF,
    subsampling: turbojpeg_sys::TJSAMP,
) -> Vec<u8> {
    use std::ffi::{c_int, c_ulong};
    // SAFETY: the handle is checked, `pixels` holds width x height pixels
    // of `format` (asserted by the callers' sizes), and TurboJPEG allocates
    // the output, which is copied and freed.
    unsafe {
        let handle = turbojpeg_sys::tjInitCompress();
        assert!(!handle.is_null());
        let mut out: *mut u8 = std::ptr::null_mut();
        let mut size: c_ulong = 0;
        let rc = turbojpeg_sys::tjCompress2(
            handle,
            pixels.as_ptr(),
            width,
            0,
            height,
            format as c_int,
            &mut out,
            &mut size,
            subsampling as c_int,
            90,
            0,
        );
        assert_eq!(rc, 0, "tjCompress2 failed");
        let jpeg = std::slice::from_raw_parts(out, size as usize).to_vec();
        turbojpeg_sys::tjFree(out);
        turbojpeg_sys::tjDestroy(handle);
        jpeg
    }
}

#[test]
fn layouts_without_a_planar_format_decode_to_rgbx_and_cmyk_is_dropped() {
    init();
    let (width, height) = (64usize, 48usize);
    // A smooth gradient, so a quarter-size decode is a fair shrink of it.
    let rgb: Vec<u8> = (0..width * height)
        .flat_map(|i| {
            let (x, y) = (i % width, i / width);
            [(x * 4) as u8, (y * 5) as u8, 128]
        })
        .collect();
    let s440 = turbo_compress(
        &rgb,
        width as i32,
        height as i32,
        turbojpeg_sys::TJPF_TJPF_RGB,
        turbojpeg_sys::TJSAMP_TJSAMP_440,
    );
    assert_eq!(
        jpeg::read_header(&s440).unwrap().subsampling,
        jpeg::Subsampling::S440
    );
    let out = dct_decode(0.25, &[s440]);
    assert_eq!(
        (out[0].format, out[0].width, out[0].height),
        (gst_video::VideoFormat::Rgbx, 16, 12)
    );
    // The top-left pixel of a quarter-size decode is the mean of the 4x4
    // block it covers: red ~ 6, green ~ 7, blue 128.
    let px = &out[0].planes[0][..4];
    assert!(
        px[0] < 20 && px[1] < 20 && (118..=138).contains(&px[2]),
        "{px:?}"
    );

    let cmyk = vec![40u8; width * height * 4];
    let cmyk = turbo_compress(
        &cmyk,
        width as i32,
        height as i32,
        turbojpeg_sys::TJPF_TJPF_CMYK,
        turbojpeg_sys::TJSAMP_TJSAMP_444,
    );
    // A good frame after them: a stream that ends without one decodable
    // frame gets GstVideoDecoder's "no valid frames found" error at end of
    // stream, which is right for a source that never sent a picture.
    let good = encode("smpte", "I420", 64, 48, 1).remove(0);
    let (pipeline, pictures) = run("camstreamjpegdec name=dec", &[cmyk.clone(), cmyk, good]);
    assert_eq!(pictures.len(), 1, "only the good frame is decoded");
    let dec = pipeline.by_name("dec").unwrap();
    assert_eq!(dec.property::<u64>("frames-dropped"), 2);
    // Said once as a warning on the bus (camstream logs it), not an error.
    let bus = pipeline.bus().unwrap();
    let mut warnings = Vec::new();
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Warning, gst::MessageType::Error]) {
        match msg.view() {
            gst::MessageView::Warning(w) => warnings.push(w.error().to_string()),
            _ => panic!("a CMYK JPEG raised an error: {msg:?}"),
        }
    }
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("configure the camera for YCbCr"),
        "{warnings:?}"
    );
    stop(pipeline);
}
