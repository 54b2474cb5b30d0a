//! `camstreamjpegdec`: camstream's own JPEG decoder element. It decodes
//! with libjpeg-turbo straight to 1/2, 1/4 or 1/8 of the size in the DCT
//! (the smallest of 1/1, 1/2, 1/4, 1/8 still at or above `max-scale`), to
//! planar YUV without an RGB round trip; the scaler after it does the rest
//! of the way. Truncated and corrupt JPEGs are dropped and counted in
//! `frames-dropped`, never a pipeline error; JPEGs without Huffman tables
//! (AVI1 webcam frames) decode with the standard ones.
//!
//! Output formats follow the JPEG's subsampling: I420 for 4:2:0, Y42B for
//! 4:2:2 (the scaler converts; halving chroma rows here would save little
//! and lose the choice), Y444, Y41B, GRAY8 for greyscale, and RGBx only for
//! RGB-coded or 4:4:0 JPEGs, which have no planar GStreamer format.
//!
//! The element does not know the source's real size on its output; put
//! `jpegparse` before it and the size is in its sink caps.

mod imp;
mod turbo;

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;

/// The element's factory name, as pipelines and templates write it.
pub const ELEMENT_NAME: &str = "camstreamjpegdec";

glib::wrapper! {
    pub struct JpegDec(ObjectSubclass<imp::JpegDec>)
        @extends gstreamer_video::VideoDecoder, gst::Element, gst::Object;
}

/// Registers the element with GStreamer, without a plugin file, so that
/// parsed descriptions and `ElementFactory::make` find it by name. Rank
/// none: decodebin never picks it by itself.
pub fn register() -> Result<(), glib::BoolError> {
    gst::Element::register(None, ELEMENT_NAME, gst::Rank::NONE, JpegDec::static_type())
}
