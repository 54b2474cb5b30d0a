//! A small safe layer over libjpeg-turbo's TurboJPEG 2 API (the system
//! libturbojpeg, through turbojpeg-sys): read a header, decode scaled in
//! the DCT to planar YUV or, for the rare layouts GStreamer has no planar
//! format for, to RGBx. All `unsafe` of the decoder is here, and every
//! buffer is checked against what libjpeg-turbo will write before it is
//! handed over.
//!
//! The `turbojpeg` crate's safe API would be the natural choice, but its
//! releases that link against TurboJPEG 2 (Debian 12 ships 2.1) decode only
//! at full size; scaling and caller-supplied plane strides need the raw
//! calls.

use std::ffi::{CStr, c_int, c_ulong};
use std::ptr::NonNull;

use turbojpeg_sys as tj;

/// What TurboJPEG reports about a JPEG before decoding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
}

/// How a JPEG can be decoded without converting colours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// YCbCr or greyscale, straight from the DCT into planes.
    Planar(Subsampling),
    /// RGB-coded JPEGs and 4:4:0 YCbCr (no GStreamer planar format): decoded
    /// to packed RGBx.
    Rgbx,
    /// CMYK or YCCK, which TurboJPEG can only decode to CMYK pixels.
    Unsupported,
}

/// TurboJPEG flags for a decode at `width` x `height` of a `full_width`
/// JPEG. At full size, the fast integer IDCT, as jpegdec uses by default:
/// as cheap and as exact as jpegdec's decode. Reduced sizes use
/// libjpeg-turbo's reduced IDCTs, which have one method each; there the
/// flag must stay off: with libjpeg-turbo 2.1.5 it garbles a 1/2-size
/// decode (PSNR 22 dB against the full decode scaled down, 63 dB without;
/// tests/jpegdec.rs catches it).
fn decode_flags(width: u32, full_width: u32) -> c_int {
    if width >= full_width {
        tj::TJFLAG_FASTDCT as c_int
    } else {
        0
    }
}

/// The planar layouts that map onto GStreamer formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subsampling {
    S420,
    S422,
    S444,
    S411,
    Gray,
}

impl Subsampling {
    fn code(self) -> c_int {
        (match self {
            Subsampling::S420 => tj::TJSAMP_TJSAMP_420,
            Subsampling::S422 => tj::TJSAMP_TJSAMP_422,
            Subsampling::S444 => tj::TJSAMP_TJSAMP_444,
            Subsampling::S411 => tj::TJSAMP_TJSAMP_411,
            Subsampling::Gray => tj::TJSAMP_TJSAMP_GRAY,
        }) as c_int
    }

    /// How many planes TurboJPEG writes.
    pub fn planes(self) -> usize {
        if self == Subsampling::Gray { 1 } else { 3 }
    }
}

/// The width and height in samples of each plane TurboJPEG writes for a
/// `width` x `height` picture. The luma plane is padded to whole chroma
/// samples (e.g. 4:2:0 at 321x181 writes 322x182 luma), so it can be larger
/// than the picture.
pub fn plane_sizes(subsampling: Subsampling, width: u32, height: u32) -> Vec<(usize, usize)> {
    (0..subsampling.planes())
        .map(|plane| {
            // SAFETY: pure functions of their arguments.
            let (w, h) = unsafe {
                (
                    tj::tjPlaneWidth(plane as c_int, width as c_int, subsampling.code()),
                    tj::tjPlaneHeight(plane as c_int, height as c_int, subsampling.code()),
                )
            };
            (
                usize::try_from(w).unwrap_or(0),
                usize::try_from(h).unwrap_or(0),
            )
        })
        .collect()
}

/// A decode that did not give a usable picture.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum TurboError {
    /// libjpeg-turbo gave up: not a JPEG, corrupt header, unsupported
    /// coding.
    #[error("{0}")]
    Fatal(String),
    /// libjpeg-turbo decoded, but warned that the data was damaged (part of
    /// the picture would be grey or garbled).
    #[error("{0}")]
    Corrupt(String),
    /// The output buffer is smaller than the picture: a bug in the caller,
    /// reported instead of letting libjpeg-turbo write past it.
    #[error("output plane {plane} holds {have} bytes, the decoded picture needs {need}")]
    BufferTooSmall {
        plane: usize,
        have: usize,
        need: usize,
    },
}

/// One TurboJPEG decompressor.
///
/// Made per frame rather than kept in the element: a `tjhandle` is a raw
/// pointer (so not `Send`), and making one is a small allocation next to
/// the decode itself.
pub struct Decompressor {
    handle: NonNull<std::ffi::c_void>,
}

impl Decompressor {
    pub fn new() -> Result<Decompressor, TurboError> {
        // SAFETY: no preconditions; a null return is an allocation failure.
        let handle = unsafe { tj::tjInitDecompress() };
        NonNull::new(handle)
            .map(|handle| Decompressor { handle })
            .ok_or_else(|| TurboError::Fatal("libturbojpeg could not allocate a decoder".into()))
    }

    /// Reads the JPEG's size, subsampling and colour space.
    pub fn header(&mut self, jpeg: &[u8]) -> Result<Header, TurboError> {
        let (mut width, mut height, mut subsamp, mut colorspace) = (0, 0, 0, 0);
        // SAFETY: the handle is live; `jpeg` is valid for its length; the
        // out-pointers are to locals.
        let rc = unsafe {
            tj::tjDecompressHeader3(
                self.handle.as_ptr(),
                jpeg.as_ptr(),
                jpeg.len() as c_ulong,
                &mut width,
                &mut height,
                &mut subsamp,
                &mut colorspace,
            )
        };
        if rc != 0 {
            return Err(TurboError::Fatal(self.message()));
        }
        let (Ok(width), Ok(height)) = (u32::try_from(width), u32::try_from(height)) else {
            return Err(TurboError::Fatal("negative image size".into()));
        };
        let planar = match subsamp as u32 {
            tj::TJSAMP_TJSAMP_420 => Some(Subsampling::S420),
            tj::TJSAMP_TJSAMP_422 => Some(Subsampling::S422),
            tj::TJSAMP_TJSAMP_444 => Some(Subsampling::S444),
            tj::TJSAMP_TJSAMP_411 => Some(Subsampling::S411),
            tj::TJSAMP_TJSAMP_GRAY => Some(Subsampling::Gray),
            _ => None,
        };
        let layout = match (colorspace as u32, planar) {
            (tj::TJCS_TJCS_CMYK | tj::TJCS_TJCS_YCCK, _) => Layout::Unsupported,
            (tj::TJCS_TJCS_YCbCr | tj::TJCS_TJCS_GRAY, Some(s)) => Layout::Planar(s),
            _ => Layout::Rgbx,
        };
        Ok(Header {
            width,
            height,
            layout,
        })
    }

    /// Decodes into YUV planes of `width` x `height`, the JPEG's size
    /// divided by a power of two: libjpeg-turbo then picks that scale and
    /// runs its reduced inverse DCT, skipping most of the full-size work.
    /// `planes` and `strides` are Y, Cb, Cr (Y only for greyscale).
    pub fn decode_planes(
        &mut self,
        jpeg: &[u8],
        header: &Header,
        width: u32,
        height: u32,
        planes: &mut [&mut [u8]],
        strides: &[usize],
    ) -> Result<(), TurboError> {
        let Layout::Planar(subsampling) = header.layout else {
            return Err(TurboError::Fatal(
                "not a planar YCbCr or greyscale JPEG".into(),
            ));
        };
        let mut pointers = [std::ptr::null_mut::<u8>(); 3];
        let mut pitches: [c_int; 3] = [0; 3];
        for (plane, (plane_width, plane_height)) in plane_sizes(subsampling, width, height)
            .into_iter()
            .enumerate()
        {
            let (Some(buffer), Some(&stride)) = (planes.get_mut(plane), strides.get(plane)) else {
                return Err(TurboError::BufferTooSmall {
                    plane,
                    have: 0,
                    need: plane_width * plane_height,
                });
            };
            let need = stride * plane_height.saturating_sub(1) + plane_width;
            if stride < plane_width || buffer.len() < need {
                return Err(TurboError::BufferTooSmall {
                    plane,
                    have: buffer.len(),
                    need,
                });
            }
            pointers[plane] = buffer.as_mut_ptr();
            pitches[plane] = c_int::try_from(stride)
                .map_err(|_| TurboError::Fatal("plane stride too large".into()))?;
        }
        // SAFETY: the handle is live; each plane was checked above to hold
        // the rows TurboJPEG writes for `width` x `height` at its stride (it
        // writes a smaller picture if a larger scale does not fit, never a
        // larger one).
        let rc = unsafe {
            tj::tjDecompressToYUVPlanes(
                self.handle.as_ptr(),
                jpeg.as_ptr(),
                jpeg.len() as c_ulong,
                pointers.as_mut_ptr(),
                width as c_int,
                pitches.as_mut_ptr(),
                height as c_int,
                decode_flags(width, header.width),
            )
        };
        self.outcome(rc)
    }

    /// Decodes to packed RGBx of `width` x `height` (scaled as for
    /// [`Decompressor::decode_planes`]).
    pub fn decode_rgbx(
        &mut self,
        jpeg: &[u8],
        header: &Header,
        width: u32,
        height: u32,
        out: &mut [u8],
        stride: usize,
    ) -> Result<(), TurboError> {
        let need = stride * (height as usize).saturating_sub(1) + 4 * width as usize;
        if stride < 4 * width as usize || out.len() < need {
            return Err(TurboError::BufferTooSmall {
                plane: 0,
                have: out.len(),
                need,
            });
        }
        let pitch =
            c_int::try_from(stride).map_err(|_| TurboError::Fatal("stride too large".into()))?;
        // SAFETY: the handle is live and `out` holds `height` rows of
        // `stride` bytes, each at least `width` RGBx pixels.
        let rc = unsafe {
            tj::tjDecompress2(
                self.handle.as_ptr(),
                jpeg.as_ptr(),
                jpeg.len() as c_ulong,
                out.as_mut_ptr(),
                width as c_int,
                pitch,
                height as c_int,
                tj::TJPF_TJPF_RGBX as c_int,
                decode_flags(width, header.width),
            )
        };
        self.outcome(rc)
    }

    /// A TurboJPEG return code as a result. Warnings mean damaged data, and
    /// the frame is refused, except the one about stray bytes before a
    /// marker: several UVC webcams pad every frame that way and the picture
    /// is whole.
    fn outcome(&self, rc: c_int) -> Result<(), TurboError> {
        if rc == 0 {
            return Ok(());
        }
        let message = self.message();
        // SAFETY: the handle is live.
        let code = unsafe { tj::tjGetErrorCode(self.handle.as_ptr()) };
        if code as u32 != tj::TJERR_TJERR_WARNING {
            return Err(TurboError::Fatal(message));
        }
        if message.contains("extraneous bytes before marker") {
            return Ok(());
        }
        Err(TurboError::Corrupt(message))
    }

    fn message(&self) -> String {
        // SAFETY: the handle is live; TurboJPEG returns a pointer to a
        // NUL-terminated string it owns, valid until the next call.
        unsafe {
            let text = tj::tjGetErrorStr2(self.handle.as_ptr());
            if text.is_null() {
                return "unknown libturbojpeg error".into();
            }
            CStr::from_ptr(text).to_string_lossy().into_owned()
        }
    }
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: the handle came from tjInitDecompress and is freed once.
        unsafe {
            tj::tjDestroy(self.handle.as_ptr());
        }
    }
}
