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

/// Decodes `bytes`, whatever their file was named: the format is read from the bytes.
pub fn decode(bytes: &[u8], keep_metadata: bool) -> anyhow::Result<Still> {
    let reader = image::ImageReader::new(Cursor::new(bytes)).with_guessed_format().context("cannot read it")?;
    let format = reader
        .format()
        .filter(|f| IMAGE_FORMATS.contains(f))
        .ok_or_else(|| anyhow::anyhow!("not an image Obscura reads (JPEG, PNG or WebP)"))?;
    let mut decoder = reader.into_decoder().map_err(|e| anyhow::anyhow!("corrupt or truncated image data ({e})"))?;
    let (icc, exif) = if keep_metadata {
        (decoder.icc_profile().ok().flatten(), decoder.exif_metadata().ok().flatten())
    } else {
        (None, None)
    };
    let rgb = image::DynamicImage::from_decoder(decoder)
        .map_err(|e| anyhow::anyhow!("corrupt or truncated image data ({e})"))?
        .into_rgb8();
    Ok(Still { format, rgb, icc, exif })
}
