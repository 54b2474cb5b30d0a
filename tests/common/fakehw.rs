//! A hardware H.264 decoder for tests, on a machine without one: a
//! `GstVideoDecoder` registered in-process under [`NAME`] with the klass
//! real hardware decoders have ("Codec/Decoder/Video/Hardware"), that
//! behaves as the test sets it ([`Behaviour`]): failing the way a decoder
//! without its GPU or driver fails, or "decoding" every coded frame to a
//! grey picture of the stream's size.
//!
//! One element for the whole test process; its behaviour, rank and counter
//! are process-wide, so tests that use it must not run at the same time.

use std::sync::LazyLock;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer::subclass::prelude::*;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;
use gstreamer_video::subclass::prelude::*;

/// The factory name.
pub const NAME: &str = "camstreamtesthwdec";

/// What the decoder does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Behaviour {
    /// Fails to start (`start()`, on READY to PAUSED), as a VA decoder
    /// whose render node cannot be opened does.
    FailAtStart = 0,
    /// Starts, and posts an error at its first coded frame, as a decoder
    /// whose driver rejects the stream does.
    FailOnFrame = 1,
    /// Takes coded frames and never outputs one: a hung decoder.
    Swallow = 2,
    /// Outputs a grey I420 picture of the stream's size for every frame.
    Work = 3,
}

static BEHAVIOUR: AtomicU8 = AtomicU8::new(Behaviour::FailAtStart as u8);
/// Instances made so far: how often something tried this decoder.
static CREATED: AtomicUsize = AtomicUsize::new(0);

/// Registers the element, once per process.
pub fn register() {
    static REGISTERED: LazyLock<()> = LazyLock::new(|| {
        super::init();
        gst::Element::register(
            None,
            NAME,
            gst::Rank::PRIMARY + 100,
            FakeHwDec::static_type(),
        )
        .expect("the test decoder registers");
    });
    LazyLock::force(&REGISTERED);
}

/// Sets what the decoder does and its rank (decodebin lists factories of
/// rank MARGINAL and up, by rank).
pub fn set(behaviour: Behaviour, rank: gst::Rank) {
    register();
    BEHAVIOUR.store(behaviour as u8, Ordering::SeqCst);
    gst::ElementFactory::find(NAME)
        .expect("registered")
        .set_rank(rank);
}

/// How many instances have been made.
pub fn created() -> usize {
    CREATED.load(Ordering::SeqCst)
}

fn behaviour() -> Behaviour {
    match BEHAVIOUR.load(Ordering::SeqCst) {
        0 => Behaviour::FailAtStart,
        1 => Behaviour::FailOnFrame,
        2 => Behaviour::Swallow,
        _ => Behaviour::Work,
    }
}

glib::wrapper! {
    pub struct FakeHwDec(ObjectSubclass<imp::FakeHwDec>)
        @extends gst_video::VideoDecoder, gst::Element, gst::Object;
}

mod imp {
    use super::*;

    #[derive(Default)]
    pub struct FakeHwDec {
        input: Mutex<
            Option<gst_video::VideoCodecState<'static, gst_video::video_codec_state::Readable>>,
        >,
        negotiated: Mutex<bool>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for FakeHwDec {
        const NAME: &'static str = "CamstreamTestHwDec";
        type Type = super::FakeHwDec;
        type ParentType = gst_video::VideoDecoder;
    }

    impl ObjectImpl for FakeHwDec {
        fn constructed(&self) {
            self.parent_constructed();
            CREATED.fetch_add(1, Ordering::SeqCst);
            self.obj().set_packetized(true);
        }
    }

    impl GstObjectImpl for FakeHwDec {}

    impl ElementImpl for FakeHwDec {
        fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
            static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
                gst::subclass::ElementMetadata::new(
                    "camstream test hardware H.264 decoder",
                    "Codec/Decoder/Video/Hardware",
                    "Stands in for a GPU decoder in camstream's tests",
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
                    &gst::Caps::builder("video/x-h264")
                        .field("alignment", "au")
                        .field("stream-format", gst::List::new(["avc", "byte-stream"]))
                        .build(),
                )
                .expect("sink template");
                let src = gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &gst_video::VideoCapsBuilder::new()
                        .format(gst_video::VideoFormat::I420)
                        .build(),
                )
                .expect("src template");
                vec![sink, src]
            });
            TEMPLATES.as_ref()
        }
    }

    impl VideoDecoderImpl for FakeHwDec {
        fn start(&self) -> Result<(), gst::ErrorMessage> {
            *self.negotiated.lock().unwrap() = false;
            if behaviour() == Behaviour::FailAtStart {
                return Err(gst::error_msg!(
                    gst::LibraryError::Init,
                    [
                        "the test's hardware decoder fails on purpose: cannot open /dev/dri/renderD128"
                    ]
                ));
            }
            Ok(())
        }

        fn set_format(
            &self,
            input: &gst_video::VideoCodecState<'static, gst_video::video_codec_state::Readable>,
        ) -> Result<(), gst::LoggableError> {
            *self.input.lock().unwrap() = Some(input.clone());
            *self.negotiated.lock().unwrap() = false;
            Ok(())
        }

        fn handle_frame(
            &self,
            mut frame: gst_video::VideoCodecFrame,
        ) -> Result<gst::FlowSuccess, gst::FlowError> {
            match behaviour() {
                Behaviour::FailOnFrame | Behaviour::FailAtStart => {
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Decode,
                        ["the test's hardware decoder fails on purpose at its first frame"]
                    );
                    return Err(gst::FlowError::Error);
                }
                Behaviour::Swallow => {
                    self.obj().release_frame(frame);
                    return Ok(gst::FlowSuccess::Ok);
                }
                Behaviour::Work => {}
            }
            let obj = self.obj();
            if !*self.negotiated.lock().unwrap() {
                let input = self.input.lock().unwrap().clone();
                let (width, height) = input
                    .as_ref()
                    .map(|s| (s.info().width(), s.info().height()))
                    .filter(|(w, h)| *w > 0 && *h > 0)
                    .unwrap_or((320, 240));
                let state = obj
                    .set_output_state(gst_video::VideoFormat::I420, width, height, input.as_ref())
                    .map_err(|_| gst::FlowError::NotNegotiated)?;
                obj.negotiate(state)
                    .map_err(|_| gst::FlowError::NotNegotiated)?;
                *self.negotiated.lock().unwrap() = true;
            }
            obj.allocate_output_frame(&mut frame, None)?;
            {
                let buffer = frame.output_buffer_mut().ok_or(gst::FlowError::Error)?;
                let mut map = buffer.map_writable().map_err(|_| gst::FlowError::Error)?;
                map.as_mut_slice().fill(128);
            }
            obj.finish_frame(frame)
        }
    }
}
