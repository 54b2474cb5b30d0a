//! What camstream needs to know about a JPEG without decoding it: its size
//! and chroma subsampling from the header, whether it arrived whole, and
//! the standard Huffman tables for frames that leave them out. Pure Rust,
//! no GStreamer: the DCT decoder (`pipeline/jpegdec`) and JPEG passthrough
//! both use it.
//!
//! The header walk is written here rather than taken from a decoder crate
//! because passthrough needs facts a decoder hides (where the scan starts,
//! whether a DHT segment was present) and must not pay for a decode.

use std::borrow::Cow;

/// Chroma subsampling of a JPEG, as the sampling factors of its components
/// give it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subsampling {
    /// One component: greyscale.
    Gray,
    /// Chroma at full resolution.
    S444,
    /// Chroma halved horizontally (many IP cameras and UVC webcams).
    S422,
    /// Chroma halved both ways (most encoders, GStreamer's jpegenc from I420).
    S420,
    /// Chroma halved vertically (rare: a 4:2:2 sensor rotated 90 degrees).
    S440,
    /// Chroma quartered horizontally.
    S411,
    /// Any other layout (four components, or unusual factors).
    Other,
}

/// What a JPEG's header says, read up to the start of its first scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JpegInfo {
    pub width: u32,
    pub height: u32,
    pub subsampling: Subsampling,
    /// Huffman-coded (baseline, extended or progressive) rather than
    /// arithmetic-coded; only Huffman-coded frames need DHT tables.
    pub huffman: bool,
    /// Whether a DHT segment precedes the first scan. Motion-JPEG frames
    /// from many UVC webcams (the AVI1 format) leave it out and rely on the
    /// standard tables.
    pub has_huffman_tables: bool,
    /// Byte offset of the first SOS marker: where tables may be inserted.
    pub scan_offset: usize,
}

/// Why a buffer is not a JPEG camstream can use.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum JpegError {
    #[error("not a JPEG: it does not start with the SOI marker (FF D8)")]
    NotJpeg,
    #[error("truncated JPEG header: it ends before the first scan")]
    Truncated,
    #[error("corrupt JPEG header: {0}")]
    Corrupt(&'static str),
    #[error("the JPEG has no frame header (SOF) before its first scan")]
    NoFrameHeader,
    #[error(
        "the JPEG declares a zero width or height (a DNL marker, which camera streams do not use)"
    )]
    ZeroSize,
}

const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;
const DHT: u8 = 0xC4;

/// Reads a JPEG's header up to its first scan.
pub fn read_header(jpeg: &[u8]) -> Result<JpegInfo, JpegError> {
    if jpeg.len() < 2 || jpeg[0] != 0xFF || jpeg[1] != SOI {
        return Err(JpegError::NotJpeg);
    }
    let mut pos = 2;
    let mut frame = None;
    let mut has_huffman_tables = false;
    loop {
        // A marker is 0xFF followed by a code; any number of extra 0xFF fill
        // bytes may come first (T.81 B.1.1.2).
        if *jpeg.get(pos).ok_or(JpegError::Truncated)? != 0xFF {
            return Err(JpegError::Corrupt("expected a marker between segments"));
        }
        while jpeg.get(pos) == Some(&0xFF) {
            pos += 1;
        }
        let marker_at = pos - 1;
        let code = *jpeg.get(pos).ok_or(JpegError::Truncated)?;
        pos += 1;
        match code {
            // Markers without a length: TEM and the restart markers.
            0x01 | 0xD0..=0xD7 => continue,
            SOI => return Err(JpegError::Corrupt("a second SOI marker in the header")),
            EOI => return Err(JpegError::Corrupt("the image ends before its first scan")),
            0x00 => return Err(JpegError::Corrupt("a stuffed zero byte outside a scan")),
            _ => {}
        }
        if code == SOS {
            let (width, height, subsampling, huffman) = frame.ok_or(JpegError::NoFrameHeader)?;
            return Ok(JpegInfo {
                width,
                height,
                subsampling,
                huffman,
                has_huffman_tables,
                scan_offset: marker_at,
            });
        }
        let len = jpeg
            .get(pos..pos + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
            .ok_or(JpegError::Truncated)?;
        if len < 2 {
            return Err(JpegError::Corrupt("a segment length below 2"));
        }
        let body = jpeg.get(pos + 2..pos + len).ok_or(JpegError::Truncated)?;
        match code {
            DHT => has_huffman_tables = true,
            // SOF0-3, 5-7 (Huffman) and 9-11, 13-15 (arithmetic); C4, C8
            // and CC are DHT, JPG and DAC.
            0xC0..=0xCF if !matches!(code, 0xC4 | 0xC8 | 0xCC) => {
                let (width, height, subsampling) = frame_header(body)?;
                frame = Some((width, height, subsampling, code < 0xC8));
            }
            _ => {}
        }
        pos += len;
    }
}

/// Parses an SOF segment's body: precision, height, width, and each
/// component's sampling factors.
fn frame_header(body: &[u8]) -> Result<(u32, u32, Subsampling), JpegError> {
    if body.len() < 6 {
        return Err(JpegError::Corrupt("a frame header (SOF) too short"));
    }
    let height = u32::from(u16::from_be_bytes([body[1], body[2]]));
    let width = u32::from(u16::from_be_bytes([body[3], body[4]]));
    let count = usize::from(body[5]);
    let components = body.get(6..6 + 3 * count).ok_or(JpegError::Corrupt(
        "a frame header (SOF) shorter than its components",
    ))?;
    if width == 0 || height == 0 {
        return Err(JpegError::ZeroSize);
    }
    let factors: Vec<(u8, u8)> = components
        .chunks_exact(3)
        .map(|c| (c[1] >> 4, c[1] & 0x0F))
        .collect();
    Ok((width, height, subsampling(&factors)))
}

/// Names the subsampling that components with these (horizontal, vertical)
/// sampling factors give.
fn subsampling(factors: &[(u8, u8)]) -> Subsampling {
    match factors {
        [_] => Subsampling::Gray,
        [(yh, yv), c1, c2] if c1 == c2 && c1.0 > 0 && c1.1 > 0 => {
            let (h, v) = (yh / c1.0, yv / c1.1);
            if yh % c1.0 != 0 || yv % c1.1 != 0 {
                return Subsampling::Other;
            }
            match (h, v) {
                (1, 1) => Subsampling::S444,
                (2, 1) => Subsampling::S422,
                (2, 2) => Subsampling::S420,
                (1, 2) => Subsampling::S440,
                (4, 1) => Subsampling::S411,
                _ => Subsampling::Other,
            }
        }
        _ => Subsampling::Other,
    }
}

/// How far from either end of a buffer a JPEG's SOI or EOI marker is
/// looked for: cameras pad the image with a few bytes (a CRLF inside a
/// multipart part, USB transfer padding), not kilobytes.
const PADDING_WINDOW: usize = 64;

/// Where the JPEG in `buffer` starts and ends, when a camera sent a few
/// bytes around it (CRLFs inside a multipart part, padding): from its SOI
/// marker, found within the first bytes, to the end of its last EOI
/// marker within the last bytes (after any zero padding). A buffer without
/// an EOI near its end (cut short) keeps its end, so [`is_complete`] can
/// refuse it. Reads 2 x 64 bytes and the zero padding: unlike a parser, it
/// never scans the image. (In the entropy-coded data a 0xFF byte is always
/// followed by 0x00 or a restart marker, so FF D9 near the end is the
/// image's end.)
pub fn image_bounds(buffer: &[u8]) -> Option<std::ops::Range<usize>> {
    let head = &buffer[..buffer.len().min(PADDING_WINDOW + 3)];
    let start = head.windows(3).position(|w| w == [0xFF, SOI, 0xFF])?;
    // Zero padding (UVC webcams pad to their transfer size) may be longer
    // than the window; it is skipped first.
    let data_end = buffer
        .iter()
        .rposition(|&b| b != 0)
        .map_or(buffer.len(), |i| i + 1);
    let tail_from = data_end.saturating_sub(PADDING_WINDOW).max(start + 2);
    let end = buffer[tail_from..data_end]
        .windows(2)
        .rposition(|w| w == [0xFF, EOI])
        .map_or(buffer.len(), |i| tail_from + i + 2);
    Some(start..end)
}

/// Whether a JPEG arrived whole: it ends with the EOI marker. Webcams and
/// lossy networks deliver frames cut short; decoding one paints the missing
/// part grey. Trailing zero bytes are allowed: some UVC webcams pad frames
/// to their USB transfer size.
pub fn is_complete(jpeg: &[u8]) -> bool {
    let end = jpeg.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    end >= 4 && jpeg[end - 2..end] == [0xFF, EOI]
}

/// The JPEG with the standard Huffman tables inserted before its first scan
/// if it has none (AVI1 frames from UVC webcams), so that every decoder can
/// read it: Safari paints nothing for a JPEG without DHT, and browsers get
/// passed-through frames untouched otherwise. Borrowed when nothing needs
/// inserting.
pub fn with_huffman_tables(jpeg: &[u8]) -> Result<Cow<'_, [u8]>, JpegError> {
    let info = read_header(jpeg)?;
    Ok(with_huffman_tables_of(jpeg, &info))
}

/// [`with_huffman_tables`] for a JPEG whose header `info` has already been
/// read.
pub fn with_huffman_tables_of<'a>(jpeg: &'a [u8], info: &JpegInfo) -> Cow<'a, [u8]> {
    if info.has_huffman_tables || !info.huffman {
        return Cow::Borrowed(jpeg);
    }
    let table = standard_dht_segment();
    let mut fixed = Vec::with_capacity(jpeg.len() + table.len());
    fixed.extend_from_slice(&jpeg[..info.scan_offset]);
    fixed.extend_from_slice(&table);
    fixed.extend_from_slice(&jpeg[info.scan_offset..]);
    Cow::Owned(fixed)
}

/// The standard Huffman tables of ITU T.81 Annex K.3 (K.3.1 and K.3.2,
/// Tables K.3 to K.6): the code-length counts for lengths 1 to 16, then the
/// symbols. These are the tables an MJPEG (AVI1) stream implies when it
/// leaves DHT out, and the ones libjpeg writes by default.
const DC_LUMINANCE_COUNTS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
const DC_CHROMINANCE_COUNTS: [u8; 16] = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
const DC_SYMBOLS: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const AC_LUMINANCE_COUNTS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D];
const AC_LUMINANCE_SYMBOLS: [u8; 162] = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xA1, 0x08, 0x23, 0x42, 0xB1, 0xC1, 0x15, 0x52, 0xD1, 0xF0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0A, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2A, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7,
    0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3, 0xC4, 0xC5,
    0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xE1, 0xE2,
    0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8,
    0xF9, 0xFA,
];
const AC_CHROMINANCE_COUNTS: [u8; 16] = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77];
const AC_CHROMINANCE_SYMBOLS: [u8; 162] = [
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71,
    0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xA1, 0xB1, 0xC1, 0x09, 0x23, 0x33, 0x52, 0xF0,
    0x15, 0x62, 0x72, 0xD1, 0x0A, 0x16, 0x24, 0x34, 0xE1, 0x25, 0xF1, 0x17, 0x18, 0x19, 0x1A, 0x26,
    0x27, 0x28, 0x29, 0x2A, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5,
    0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3,
    0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA,
    0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8,
    0xF9, 0xFA,
];

/// One DHT segment holding the four standard tables: DC and AC for
/// luminance (table 0) and chrominance (table 1).
pub fn standard_dht_segment() -> Vec<u8> {
    let tables: [(u8, &[u8; 16], &[u8]); 4] = [
        (0x00, &DC_LUMINANCE_COUNTS, &DC_SYMBOLS),
        (0x10, &AC_LUMINANCE_COUNTS, &AC_LUMINANCE_SYMBOLS),
        (0x01, &DC_CHROMINANCE_COUNTS, &DC_SYMBOLS),
        (0x11, &AC_CHROMINANCE_COUNTS, &AC_CHROMINANCE_SYMBOLS),
    ];
    let body_len: usize = tables.iter().map(|(_, c, s)| 1 + c.len() + s.len()).sum();
    let mut segment = Vec::with_capacity(4 + body_len);
    segment.extend_from_slice(&[0xFF, DHT]);
    segment.extend_from_slice(
        &u16::try_from(2 + body_len)
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    for (class_and_id, counts, symbols) in tables {
        segment.push(class_and_id);
        segment.extend_from_slice(counts);
        segment.extend_from_slice(symbols);
    }
    segment
}

/// libjpeg-turbo decodes in the DCT at 1/1, 1/2, 1/4 or 1/8 of the size;
/// these are the denominators.
pub const DCT_DENOMINATORS: [u32; 4] = [1, 2, 4, 8];

/// The denominator of the smallest power-of-two fraction (1/1, 1/2, 1/4,
/// 1/8) that is still at least `max_scale`: the cheapest decode from which
/// every output scale up to `max_scale` can be made by scaling down, never
/// up. E.g. 0.25 gives 4, 0.3 gives 2, 0.1 gives 8 (the scaler does the
/// rest), anything above 0.5 gives 1.
pub fn dct_denominator(max_scale: f64) -> u32 {
    DCT_DENOMINATORS
        .into_iter()
        .rev()
        .find(|&d| 1.0 / f64::from(d) >= max_scale)
        .unwrap_or(1)
}

/// One dimension of an image decoded at 1/`denominator`: libjpeg rounds up
/// (TJSCALED in turbojpeg.h).
pub fn dct_scaled(size: u32, denominator: u32) -> u32 {
    size.div_ceil(denominator.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal baseline header: SOI, DQT-less SOF0 with the given
    /// components, an optional DHT, SOS and EOI. Enough for the header walk.
    fn header(width: u16, height: u16, components: &[(u8, u8)], dht: bool) -> Vec<u8> {
        let mut j = vec![0xFF, SOI];
        // An APP0 "AVI1" segment, as UVC webcams send.
        j.extend_from_slice(&[0xFF, 0xE0, 0x00, 0x08, b'A', b'V', b'I', b'1', 0, 0]);
        let n = components.len() as u8;
        let len = 8 + 3 * u16::from(n);
        j.extend_from_slice(&[0xFF, 0xC0]);
        j.extend_from_slice(&len.to_be_bytes());
        j.push(8);
        j.extend_from_slice(&height.to_be_bytes());
        j.extend_from_slice(&width.to_be_bytes());
        j.push(n);
        for (i, (h, v)) in components.iter().enumerate() {
            j.extend_from_slice(&[i as u8 + 1, (h << 4) | v, 0]);
        }
        if dht {
            j.extend_from_slice(&standard_dht_segment());
        }
        j.extend_from_slice(&[0xFF, SOS, 0x00, 0x08, 1, 1, 0, 0, 63, 0]);
        j.extend_from_slice(&[0x12, 0x34, 0xFF, 0x00, 0x56]);
        j.extend_from_slice(&[0xFF, EOI]);
        j
    }

    #[test]
    fn reads_size_and_subsampling() {
        let cases = [
            (vec![(2, 2), (1, 1), (1, 1)], Subsampling::S420),
            (vec![(2, 1), (1, 1), (1, 1)], Subsampling::S422),
            (vec![(1, 1), (1, 1), (1, 1)], Subsampling::S444),
            (vec![(1, 2), (1, 1), (1, 1)], Subsampling::S440),
            (vec![(4, 1), (1, 1), (1, 1)], Subsampling::S411),
            (vec![(1, 1)], Subsampling::Gray),
            // Some encoders write the factors doubled; the ratio is what counts.
            (vec![(2, 2), (2, 2), (2, 2)], Subsampling::S444),
            (vec![(3, 1), (2, 1), (2, 1)], Subsampling::Other),
            (vec![(1, 1), (1, 1), (1, 1), (1, 1)], Subsampling::Other),
        ];
        for (components, want) in cases {
            let info = read_header(&header(1920, 1080, &components, true)).unwrap();
            assert_eq!(info.subsampling, want, "{components:?}");
            assert_eq!((info.width, info.height), (1920, 1080));
            assert!(info.has_huffman_tables && info.huffman);
        }
    }

    #[test]
    fn refuses_what_is_not_a_usable_header() {
        let good = header(640, 480, &[(2, 2), (1, 1), (1, 1)], true);
        assert_eq!(read_header(b"GIF89a"), Err(JpegError::NotJpeg));
        assert_eq!(read_header(&[]), Err(JpegError::NotJpeg));
        // Cut anywhere inside the header: truncated, never a panic.
        let scan = read_header(&good).unwrap().scan_offset;
        for cut in 2..scan + 1 {
            assert_eq!(
                read_header(&good[..cut]),
                Err(JpegError::Truncated),
                "cut {cut}"
            );
        }
        assert_eq!(
            read_header(&header(0, 480, &[(1, 1)], true)),
            Err(JpegError::ZeroSize)
        );
        let mut no_sof = vec![0xFF, SOI];
        no_sof.extend_from_slice(&[0xFF, SOS, 0x00, 0x02]);
        assert_eq!(read_header(&no_sof), Err(JpegError::NoFrameHeader));
        let mut garbage = good.clone();
        garbage[2] = 0x12;
        assert!(matches!(read_header(&garbage), Err(JpegError::Corrupt(_))));
    }

    #[test]
    fn image_bounds_skip_a_few_bytes_around_the_image() {
        let jpeg = [0xFF, SOI, 0xFF, 0xE0, 0, 2, 1, 2, 3, 0xFF, EOI];
        assert_eq!(image_bounds(&jpeg), Some(0..jpeg.len()));
        let padded = [b"\r\n".as_slice(), &jpeg, b"\r\n\r\n"].concat();
        assert_eq!(image_bounds(&padded), Some(2..2 + jpeg.len()));
        // Zero padding of any length goes too.
        let zeros = [jpeg.as_slice(), &[0u8; 4096]].concat();
        assert_eq!(image_bounds(&zeros), Some(0..jpeg.len()));
        // Cut short: the end stays, for is_complete to refuse.
        let cut = &jpeg[..8];
        assert_eq!(image_bounds(cut), Some(0..8));
        // Not a JPEG, or one behind more than a few bytes of something else.
        assert_eq!(image_bounds(b"<html>not a picture</html>"), None);
        let far = [vec![b' '; 200], jpeg.to_vec()].concat();
        assert_eq!(image_bounds(&far), None);
        assert_eq!(image_bounds(&[]), None);
    }

    #[test]
    fn completeness_is_the_end_marker() {
        let good = header(64, 64, &[(1, 1)], true);
        assert!(is_complete(&good));
        let mut padded = good.clone();
        padded.extend_from_slice(&[0; 100]);
        assert!(is_complete(&padded));
        assert!(!is_complete(&good[..good.len() - 1]));
        assert!(!is_complete(&good[..good.len() - 7]));
        assert!(!is_complete(&[0xFF, EOI]));
    }

    #[test]
    fn inserts_tables_only_when_missing() {
        let with = header(320, 240, &[(2, 1), (1, 1), (1, 1)], true);
        assert!(matches!(with_huffman_tables(&with), Ok(Cow::Borrowed(_))));
        let without = header(320, 240, &[(2, 1), (1, 1), (1, 1)], false);
        let info = read_header(&without).unwrap();
        assert!(!info.has_huffman_tables);
        let fixed = with_huffman_tables(&without).unwrap();
        // The same bytes with the segment spliced in just before the scan.
        assert_eq!(fixed.len(), without.len() + standard_dht_segment().len());
        assert_eq!(fixed[..info.scan_offset], without[..info.scan_offset]);
        assert_eq!(fixed[fixed.len() - 17..], without[without.len() - 17..]);
        let fixed_info = read_header(&fixed).unwrap();
        assert!(fixed_info.has_huffman_tables);
        assert_eq!(fixed_info.subsampling, Subsampling::S422);
        assert!(is_complete(&fixed));
    }

    #[test]
    fn standard_tables_have_the_counts_they_declare() {
        for (counts, symbols) in [
            (&DC_LUMINANCE_COUNTS, &DC_SYMBOLS[..]),
            (&DC_CHROMINANCE_COUNTS, &DC_SYMBOLS[..]),
            (&AC_LUMINANCE_COUNTS, &AC_LUMINANCE_SYMBOLS[..]),
            (&AC_CHROMINANCE_COUNTS, &AC_CHROMINANCE_SYMBOLS[..]),
        ] {
            let declared: usize = counts.iter().map(|&c| usize::from(c)).sum();
            assert_eq!(declared, symbols.len());
        }
        let segment = standard_dht_segment();
        assert_eq!(segment.len(), 420);
        assert_eq!(
            usize::from(u16::from_be_bytes([segment[2], segment[3]])),
            segment.len() - 2
        );
    }

    #[test]
    fn dct_scale_is_the_smallest_fraction_at_or_above_the_largest_size() {
        let cases = [
            (1.0, 1),
            (0.75, 1),
            (0.5, 2),
            (0.3, 2),
            (0.25, 4),
            (0.2, 4),
            (0.125, 8),
            (0.05, 8),
        ];
        for (scale, denominator) in cases {
            assert_eq!(dct_denominator(scale), denominator, "scale {scale}");
        }
        assert_eq!(dct_scaled(1080, 8), 135);
        assert_eq!(dct_scaled(1366, 4), 342);
        assert_eq!(dct_scaled(7, 8), 1);
    }
}
