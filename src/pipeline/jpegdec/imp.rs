//! The decoder's implementation: a `GstVideoDecoder` subclass, one JPEG in,
//! one picture out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer::subclass::prelude::*;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;
use gstreamer_video::subclass::prelude::*;

use super::turbo::{self, Decompressor, Layout, Subsampling, TurboError};
use crate::jpeg;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        super::ELEMENT_NAME,
        gst::DebugColorFlags::empty(),
        Some("camstream's JPEG decoder, scaled in the DCT"),
    )
});

/// `max-scale` until set: decode at full size, like jpegdec.
const DEFAULT_MAX_SCALE: f64 = 1.0;

/// What the element is decoding to; a change renegotiates the output caps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Output {
    format: gst_video::VideoFormat,
    width: u32,
    height: u32,
}

#[derive(Default)]
struct State {
    /// The caps on the sink pad, the reference for the output state
    /// (framerate, pixel aspect ratio).
    input: Option<gst_video::VideoCodecState<'static, gst_video::video_codec_state::Readable>>,
    output: Option<Output>,
    /// Whether an undecodable colour space was already reported, so a
    /// stream of them logs once.
    warned_unsupported: bool,
}

pub struct JpegDec {
    max_scale: Mutex<f64>,
    state: Mutex<State>,
    /// Frames refused as truncated, corrupt or undecodable.
    frames_dropped: AtomicU64,
    /// Where pictures whose padded planes do not fit the output frame are
    /// decoded first (see `decode_via_scratch`); kept to reuse its memory.
    scratch: Mutex<Vec<u8>>,
}

impl Default for JpegDec {
    fn default() -> Self {
        JpegDec {
            max_scale: Mutex::new(DEFAULT_MAX_SCALE),
            state: Mutex::new(State::default()),
            frames_dropped: AtomicU64::new(0),
            scratch: Mutex::new(Vec::new()),
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for JpegDec {
    const NAME: &'static str = "CamstreamJpegDec";
    type Type = super::JpegDec;
    type ParentType = gst_video::VideoDecoder;
}

impl ObjectImpl for JpegDec {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecDouble::builder("max-scale")
                    .nick("Largest output scale")
                    .blurb(
                        "The largest fraction of the source size any output needs; the JPEG is \
                         decoded at the smallest of 1/1, 1/2, 1/4, 1/8 at or above it",
                    )
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_MAX_SCALE)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("frames-dropped")
                    .nick("Frames dropped")
                    .blurb("JPEGs refused as truncated, corrupt or undecodable")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        if pspec.name() == "max-scale" {
            let scale = value.get::<f64>().unwrap_or(DEFAULT_MAX_SCALE);
            *self
                .max_scale
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = scale;
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "max-scale" => self
                .max_scale
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .to_value(),
            "frames-dropped" => self.frames_dropped.load(Ordering::Relaxed).to_value(),
            _ => unreachable!("GObject checks property names against properties()"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        // Every buffer is one whole JPEG (v4l2src, multipartdemux,
        // rtpjpegdepay and jpegparse all deliver frames), so no parsing.
        self.obj().set_packetized(true);
    }
}

impl GstObjectImpl for JpegDec {}

impl ElementImpl for JpegDec {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "camstream JPEG decoder",
                "Codec/Decoder/Video",
                "Decodes JPEG with libjpeg-turbo straight to 1/2, 1/4 or 1/8 size in the DCT, \
                 to planar YUV; drops truncated and corrupt frames",
                "camstream",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let sink = gst::PadTemplate::new(
                "sink",
                gst::PadDirection::Sink,
                gst::PadPresence::Always,
                &gst::Caps::new_empty_simple("image/jpeg"),
            )
            .expect("a valid sink template");
            let formats = [
                gst_video::VideoFormat::I420,
                gst_video::VideoFormat::Y42b,
                gst_video::VideoFormat::Y444,
                gst_video::VideoFormat::Y41b,
                gst_video::VideoFormat::Gray8,
                gst_video::VideoFormat::Rgbx,
            ];
            let src = gst::PadTemplate::new(
                "src",
                gst::PadDirection::Src,
                gst::PadPresence::Always,
                &gst_video::VideoCapsBuilder::new()
                    .format_list(formats)
                    .build(),
            )
            .expect("a valid src template");
            vec![sink, src]
        });
        TEMPLATES.as_ref()
    }
}

impl VideoDecoderImpl for JpegDec {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = State::default();
        Ok(())
    }

    fn set_format(
        &self,
        input: &gst_video::VideoCodecState<'static, gst_video::video_codec_state::Readable>,
    ) -> Result<(), gst::LoggableError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.input = Some(input.clone());
        // New input caps (a camera switching profiles): renegotiate with
        // the first frame, whose header tells the new size.
        state.output = None;
        Ok(())
    }

    fn handle_frame(
        &self,
        mut frame: gst_video::VideoCodecFrame,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let input = frame.input_buffer_owned().ok_or(gst::FlowError::Error)?;
        let map = input.map_readable().map_err(|_| gst::FlowError::Error)?;
        let data = map.as_slice();
        // A frame cut short would decode with its missing part grey; not
        // decoding it at all also saves the CPU.
        if !jpeg::is_complete(data) {
            return self.refuse(frame, "truncated JPEG (no end marker)");
        }
        let mut decoder = match Decompressor::new() {
            Ok(decoder) => decoder,
            Err(e) => {
                gst::error!(CAT, imp = self, "{e}");
                return Err(gst::FlowError::Error);
            }
        };
        let header = match decoder.header(data) {
            Ok(header) => header,
            Err(e) => return self.refuse(frame, &format!("unreadable JPEG header: {e}")),
        };
        let denominator = jpeg::dct_denominator(
            *self
                .max_scale
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let width = jpeg::dct_scaled(header.width, denominator);
        let height = jpeg::dct_scaled(header.height, denominator);
        let format = match header.layout {
            Layout::Planar(Subsampling::S420) => gst_video::VideoFormat::I420,
            Layout::Planar(Subsampling::S422) => gst_video::VideoFormat::Y42b,
            Layout::Planar(Subsampling::S444) => gst_video::VideoFormat::Y444,
            Layout::Planar(Subsampling::S411) => gst_video::VideoFormat::Y41b,
            Layout::Planar(Subsampling::Gray) => gst_video::VideoFormat::Gray8,
            Layout::Rgbx => gst_video::VideoFormat::Rgbx,
            Layout::Unsupported => {
                let first = {
                    let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                    !std::mem::replace(&mut state.warned_unsupported, true)
                };
                if first {
                    gst::element_imp_warning!(
                        self,
                        gst::StreamError::Decode,
                        ("CMYK JPEGs cannot be decoded here; configure the camera for YCbCr")
                    );
                }
                return self.refuse(frame, "CMYK/YCCK JPEG");
            }
        };
        self.ensure_output(Output {
            format,
            width,
            height,
        })?;
        let info = self
            .obj()
            .output_state()
            .ok_or(gst::FlowError::NotNegotiated)?
            .info()
            .clone();
        self.obj().allocate_output_frame(&mut frame, None)?;
        let result = {
            let buffer = frame.output_buffer_mut().ok_or(gst::FlowError::Error)?;
            let mut picture = gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, &info)
                .map_err(|_| gst::FlowError::Error)?;
            let strides: Vec<usize> = picture
                .plane_stride()
                .iter()
                .map(|&s| usize::try_from(s).unwrap_or(0))
                .collect();
            let mut planes = picture.planes_data_mut();
            match header.layout {
                Layout::Planar(subsampling) => {
                    let sizes = turbo::plane_sizes(subsampling, width, height);
                    let fits = sizes.iter().enumerate().all(|(p, &(w, h))| {
                        strides[p] >= w && planes[p].len() >= strides[p] * h.saturating_sub(1) + w
                    });
                    if fits {
                        decoder.decode_planes(data, &header, width, height, &mut planes, &strides)
                    } else {
                        self.decode_via_scratch(
                            &mut decoder,
                            data,
                            &header,
                            (width, height),
                            &sizes,
                            &info,
                            &mut planes,
                            &strides,
                        )
                    }
                }
                _ => decoder.decode_rgbx(data, &header, width, height, planes[0], strides[0]),
            }
        };
        match result {
            Ok(()) => self.obj().finish_frame(frame),
            Err(e @ TurboError::BufferTooSmall { .. }) => {
                gst::error!(CAT, imp = self, "{e}");
                Err(gst::FlowError::Error)
            }
            Err(e) => self.refuse(frame, &e.to_string()),
        }
    }
}

impl JpegDec {
    /// Sets the output caps to `output` if they differ from the current
    /// ones: at the first frame, when the camera changes resolution or
    /// subsampling, or when `max-scale` moves to another fraction.
    fn ensure_output(&self, output: Output) -> Result<(), gst::FlowError> {
        let input = {
            let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if state.output == Some(output) {
                return Ok(());
            }
            state.input.clone()
        };
        gst::debug!(CAT, imp = self, "output {output:?}");
        let obj = self.obj();
        let mut negotiating =
            obj.set_output_state(output.format, output.width, output.height, input.as_ref())?;
        // JFIF YCbCr is full-range BT.601 with chroma centred between luma
        // samples (ITU T.871), as jpegdec declares too; left unset, the caps
        // would claim limited range and a later conversion would stretch
        // the levels.
        if output.format != gst_video::VideoFormat::Rgbx {
            let colorimetry = gst_video::VideoColorimetry::new(
                gst_video::VideoColorRange::Range0_255,
                gst_video::VideoColorMatrix::Bt601,
                gst_video::VideoTransferFunction::Unknown,
                gst_video::VideoColorPrimaries::Unknown,
            );
            let info = gst_video::VideoInfo::builder_from_info(negotiating.info())
                .colorimetry(&colorimetry)
                .chroma_site(gst_video::VideoChromaSite::JPEG)
                .build()
                .map_err(|_| gst::FlowError::NotNegotiated)?;
            negotiating.set_info(info);
        }
        obj.negotiate(negotiating)?;
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .output = Some(output);
        Ok(())
    }

    /// Decodes into a scratch buffer laid out as TurboJPEG pads it, then
    /// copies the picture's rows into the frame. Needed only when the
    /// picture has an odd size in a subsampled direction (4:2:0 1080 rows
    /// at 1/8 are 135, and TurboJPEG writes 136): the copy is small next
    /// to the decode.
    #[allow(clippy::too_many_arguments)]
    fn decode_via_scratch(
        &self,
        decoder: &mut Decompressor,
        data: &[u8],
        header: &turbo::Header,
        (width, height): (u32, u32),
        sizes: &[(usize, usize)],
        info: &gst_video::VideoInfo,
        planes: &mut [&mut [u8]],
        strides: &[usize],
    ) -> Result<(), TurboError> {
        let mut scratch = self.scratch.lock().unwrap_or_else(PoisonError::into_inner);
        scratch.resize(sizes.iter().map(|(w, h)| w * h).sum(), 0);
        let mut padded: Vec<&mut [u8]> = Vec::with_capacity(sizes.len());
        let mut rest = scratch.as_mut_slice();
        for &(w, h) in sizes {
            let (plane, tail) = rest.split_at_mut(w * h);
            padded.push(plane);
            rest = tail;
        }
        let padded_strides: Vec<usize> = sizes.iter().map(|&(w, _)| w).collect();
        decoder.decode_planes(data, header, width, height, &mut padded, &padded_strides)?;
        for (p, (source, &(source_stride, _))) in padded.iter().zip(sizes).enumerate() {
            let row = info.comp_width(p as u8) as usize;
            let stride = strides[p];
            for r in 0..info.comp_height(p as u8) as usize {
                planes[p][r * stride..r * stride + row]
                    .copy_from_slice(&source[r * source_stride..r * source_stride + row]);
            }
        }
        Ok(())
    }

    /// Drops a frame that cannot be shown and counts it. Never an error:
    /// one bad JPEG from a webcam must not stop the camera.
    fn refuse(
        &self,
        frame: gst_video::VideoCodecFrame,
        why: &str,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let dropped = self.frames_dropped.fetch_add(1, Ordering::Relaxed) + 1;
        gst::warning!(CAT, imp = self, "dropped frame ({dropped} so far): {why}");
        self.obj().release_frame(frame);
        Ok(gst::FlowSuccess::Ok)
    }
}
