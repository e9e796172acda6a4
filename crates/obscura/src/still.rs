//! Still images as `obscura blur` reads them: JPEG, PNG or WebP bytes to packed RGB.

use std::io::Cursor;

use anyhow::Context;
use image::{ImageDecoder, ImageFormat};

/// The still formats `obscura blur` reads and writes.
pub const IMAGE_FORMATS: [ImageFormat; 3] = [ImageFormat::Jpeg, ImageFormat::Png, ImageFormat::WebP];

/// A decoded still, with the metadata that was asked to be kept.
#[derive(Debug)]
pub struct Still {
    pub format: ImageFormat,
    pub rgb: image::RgbImage,
    pub icc: Option<Vec<u8>>,
    pub exif: Option<Vec<u8>>,
}

/// The largest still decoded, on a side and in decoded bytes: a header is believed only
/// this far, so a few hundred bytes cannot ask for gigabytes (a 324-byte PNG the fuzzer
/// found said 32×989,855,747 and took 31.7 GB; issue 20). 16,384 holds a 100-megapixel
/// camera's photo.
pub const MAX_SIDE: u32 = 16_384;
const MAX_DECODED_BYTES: u64 = 1 << 30;

/// Decodes `bytes`, whatever their file was named: the format is read from the bytes.
pub fn decode(bytes: &[u8], keep_metadata: bool) -> anyhow::Result<Still> {
    let reader = image::ImageReader::new(Cursor::new(bytes)).with_guessed_format().context("cannot read it")?;
    let format = reader
        .format()
        .filter(|f| IMAGE_FORMATS.contains(f))
        .ok_or_else(|| anyhow::anyhow!("not an image Obscura reads (JPEG, PNG or WebP)"))?;
    let mut decoder = reader.into_decoder().map_err(|e| anyhow::anyhow!("corrupt or truncated image data ({e})"))?;
    let (width, height) = decoder.dimensions();
    if width > MAX_SIDE || height > MAX_SIDE || decoder.total_bytes() > MAX_DECODED_BYTES {
        anyhow::bail!(
            "the image says it is {width}×{height} pixels, more than Obscura decodes (at most {MAX_SIDE} on a side): scale it down first"
        );
    }
    let (icc, exif) = if keep_metadata {
        (decoder.icc_profile().ok().flatten(), decoder.exif_metadata().ok().flatten())
    } else {
        (None, None)
    };
    // The JPEG decoder can panic on garbled data (found by fuzzing; see
    // `capture::decode_mjpeg`): a corrupt image, not a crash.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| image::DynamicImage::from_decoder(decoder)))
        .map_err(|_| anyhow::anyhow!("corrupt image data (the decoder failed on it)"))?;
    let rgb = decoded.map_err(|e| anyhow::anyhow!("corrupt or truncated image data ({e})"))?.into_rgb8();
    Ok(Still { format, rgb, icc, exif })
}

#[cfg(test)]
mod tests {
    /// Issue 20, item 2 (fuzzing, the `image` target): a PNG whose header claims
    /// 32×989,855,747 pixels is refused with its size named, before any allocation.
    #[test]
    fn r20_2_a_header_that_claims_a_huge_image_is_refused_before_decoding() {
        let png =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/seeds/image/png-huge-header")).unwrap();
        let err = super::decode(&png, true).unwrap_err().to_string();
        assert!(err.contains("32×989855747") && err.contains("at most 16384"), "{err}");
    }

    /// Issue 20, item 2: a JPEG the decoder panics on is a corrupt image, not a crash.
    #[test]
    fn r20_2_a_jpeg_the_decoder_panics_on_is_refused_as_corrupt() {
        let jpeg =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/seeds/image/jpeg-idct-panic")).unwrap();
        if let Err(err) = super::decode(&jpeg, true) {
            assert!(err.to_string().starts_with("corrupt"), "{err}");
        }
    }
}
