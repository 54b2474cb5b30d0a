//! The time stamp each source frame carries: a barcode of large black and
//! white blocks drawn into the raw frame before it is encoded, so it
//! survives H.264, a 4x downscale and JPEG, and is read back from the
//! decoded luma by a viewer.
//!
//! 48 bits in a 16 x 3 grid at the top of the frame: a 32-bit value and a
//! 16-bit check computed from it, so a misread (a cell caught mid-edge by
//! the scaler, a damaged frame) is rejected instead of giving a wrong
//! latency. Each cell is 1/16 of the frame's width and 1/18 of its height:
//! at 480x270 that is 30x15 pixels, many JPEG blocks, read from its centre.

/// Cells per row.
const COLS: u32 = 16;
/// Rows of cells.
const ROWS: u32 = 3;
/// A cell's height is the frame height over this.
const HEIGHT_DIVISOR: u32 = 18;
/// Studio-range black and white, as videotestsrc draws them.
const BLACK: u8 = 16;
const WHITE: u8 = 235;
/// Values with this bit set are a looped source's frame index, not a time.
pub const INDEX_FLAG: u32 = 1 << 31;

fn check(value: u32) -> u16 {
    // A multiplicative hash: any bit flipped in the value changes about
    // half of the check bits, so a misread passes with odds of 1 in 65536.
    ((value.wrapping_mul(0x9E37_79B1) >> 16) as u16) ^ 0x5A3C
}

fn bits(value: u32) -> u64 {
    (u64::from(value) << 16) | u64::from(check(value))
}

fn cell(width: u32, height: u32, index: u32) -> (usize, usize, usize, usize) {
    let (w, h) = (width / COLS, height / HEIGHT_DIVISOR);
    let (col, row) = (index % COLS, index / COLS);
    (
        (col * w) as usize,
        (row * h) as usize,
        w as usize,
        h as usize,
    )
}

/// Draws `value` into an 8-bit luma plane.
pub fn draw(luma: &mut [u8], stride: usize, width: u32, height: u32, value: u32) {
    let bits = bits(value);
    for i in 0..COLS * ROWS {
        let (x, y, w, h) = cell(width, height, i);
        let level = if bits >> (47 - i) & 1 == 1 {
            WHITE
        } else {
            BLACK
        };
        for row in y..y + h {
            let start = row * stride + x;
            if let Some(line) = luma.get_mut(start..start + w) {
                line.fill(level);
            }
        }
    }
}

/// Reads the value back from a decoded luma plane, or None if the check
/// does not match.
pub fn read(luma: &[u8], stride: usize, width: u32, height: u32) -> Option<u32> {
    let mut bits = 0u64;
    for i in 0..COLS * ROWS {
        let (x, y, w, h) = cell(width, height, i);
        // The centre half of the cell: its edges are blurred by the
        // scaler and by JPEG's blocks.
        let (x0, y0, x1, y1) = (x + w / 4, y + h / 4, x + 3 * w / 4, y + 3 * h / 4);
        if x1 <= x0 || y1 <= y0 {
            return None;
        }
        let mut sum = 0u64;
        for row in y0..y1 {
            let line = luma.get(row * stride + x0..row * stride + x1)?;
            sum += line.iter().map(|&p| u64::from(p)).sum::<u64>();
        }
        let mean = sum / ((x1 - x0) * (y1 - y0)) as u64;
        bits = (bits << 1) | u64::from(mean >= 128);
    }
    let value = (bits >> 16) as u32;
    (check(value) == bits as u16).then_some(value)
}

/// Decodes a JPEG's luma and reads its stamp.
pub fn read_jpeg(jpeg: &[u8]) -> Option<u32> {
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    // Luma only: the stamp is black and white, and skipping the colour
    // conversion makes the viewer's sampled decode cheaper.
    let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::Luma);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(jpeg), options);
    let luma = decoder.decode().ok()?;
    let info = decoder.info()?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    if luma.len() != (w * h) as usize {
        return None;
    }
    read(&luma, w as usize, w, h)
}
