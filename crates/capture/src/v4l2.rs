//! USB and other V4L2 cameras read directly through the `v4l` crate: MJPEG (decoded by
//! `image`) or YUYV (converted here), at the size, format and rate the config asks for.
//! Going around GStreamer here keeps a webcam working on boxes with only the kernel.

use std::io;
use std::path::Path;
use std::time::Duration;

use v4l::buffer::Type;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::video::capture::Parameters;
use v4l::{Device, FourCC};

use crate::config::{CameraConfig, PixelFormat};
use crate::{CaptureError, Captured};

/// An open, streaming V4L2 device.
pub(crate) struct V4l2Session {
    stream: Stream<'static>,
    width: u32,
    height: u32,
    format: PixelFormat,
    started: bool,
}

impl std::fmt::Debug for V4l2Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V4l2Session").field("width", &self.width).field("height", &self.height).finish()
    }
}

impl V4l2Session {
    pub(crate) fn open(path: &Path, cam: &CameraConfig) -> Result<Self, CaptureError> {
        let device = Device::with_path(path).map_err(|e| device_error(path, &e))?;
        let format = cam.format.unwrap_or(PixelFormat::Mjpeg);
        let mut wanted = device.format().map_err(|e| device_error(path, &e))?;
        wanted.fourcc = FourCC::new(&format.fourcc());
        if let Some(w) = cam.width {
            wanted.width = w.0;
        }
        if let Some(h) = cam.height {
            wanted.height = h.0;
        }
        let got = device.set_format(&wanted).map_err(|e| device_error(path, &e))?;
        // Drivers answer S_FMT with the nearest they can do; anything else is a refusal.
        if got.fourcc != wanted.fourcc || got.width != wanted.width || got.height != wanted.height {
            return Err(CaptureError::Device {
                path: path.to_owned(),
                problem: format!(
                    "cannot give {} {}x{} (it offered {} {}x{}); set `format`, `width` and `height` to one of: {}",
                    wanted.fourcc,
                    wanted.width,
                    wanted.height,
                    got.fourcc,
                    got.width,
                    got.height,
                    offered_modes(&device)
                ),
            });
        }
        if let Some(fps) = cam.framerate {
            device.set_params(&Parameters::with_fps(fps.0)).map_err(|e| device_error(path, &e))?;
        }
        let mut stream = Stream::with_buffers(&device, Type::VideoCapture, 4).map_err(|e| device_error(path, &e))?;
        stream.set_timeout(cam.stall_timeout);
        Ok(V4l2Session { stream, width: got.width, height: got.height, format, started: false })
    }

    pub(crate) fn next_frame(&mut self, timeout: Duration) -> Result<Option<Captured>, CaptureError> {
        // Once streaming, wait with our own short poll so shutdown is prompt; the stream's
        // own timeout (stall_timeout) covers the first frame.
        if self.started {
            let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
            let ready = self.stream.handle().poll(libc::POLLIN, ms).map_err(|e| stream_error(&e))?;
            if ready == 0 {
                return Ok(None);
            }
        }
        let (data, meta) = match CaptureStream::next(&mut self.stream) {
            Ok(frame) => frame,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return Ok(None),
            Err(e) => return Err(stream_error(&e)),
        };
        self.started = true;
        let used = (meta.bytesused as usize).min(data.len());
        let rgb = match self.format {
            PixelFormat::Mjpeg => decode_mjpeg(&data[..used], self.width, self.height)?,
            PixelFormat::Yuyv => yuyv_to_rgb(&data[..used], self.width, self.height)?,
        };
        let media_time =
            Duration::from_secs(meta.timestamp.sec as u64) + Duration::from_micros(meta.timestamp.usec as u64);
        Ok(Some(Captured { width: self.width, height: self.height, rgb, media_time: Some(media_time), fps: None }))
    }
}

/// The device's name, driver and modes, for `obscura doctor`.
pub(crate) fn describe(path: &Path) -> Result<String, CaptureError> {
    let device = Device::with_path(path).map_err(|e| device_error(path, &e))?;
    let caps = device.query_caps().map_err(|e| device_error(path, &e))?;
    Ok(format!("{}: {} ({}); modes: {}", path.display(), caps.card, caps.driver, offered_modes(&device)))
}

/// Names the device and what to do for the usual failures.
fn device_error(path: &Path, err: &io::Error) -> CaptureError {
    let problem = match err.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => {
            "does not exist; is the camera plugged in? `ls /dev/video*` lists the devices".to_owned()
        }
        Some(libc::EBUSY) => "is busy: another program is using it; `fuser -v` on the device shows which".to_owned(),
        Some(libc::EACCES) | Some(libc::EPERM) => {
            "is not accessible; add the obscura user to the `video` group".to_owned()
        }
        Some(libc::ENOTTY) | Some(libc::EINVAL) => {
            "is not a V4L2 capture device (on many cameras only the first /dev/videoN captures)".to_owned()
        }
        _ => err.to_string(),
    };
    CaptureError::Device { path: path.to_owned(), problem }
}

fn stream_error(err: &io::Error) -> CaptureError {
    CaptureError::Stream(format!("V4L2 read failed: {err} (unplugged?)"))
}

/// "MJPG 1280x720, MJPG 640x480, YUYV 640x480", for error messages.
fn offered_modes(device: &Device) -> String {
    let mut modes = Vec::new();
    for desc in device.enum_formats().unwrap_or_default() {
        for size in device.enum_framesizes(desc.fourcc).unwrap_or_default() {
            for d in size.size.to_discrete().into_iter().take(8) {
                modes.push(format!("{} {}x{}", desc.fourcc, d.width, d.height));
            }
        }
    }
    if modes.is_empty() { "(the device lists no modes)".to_owned() } else { modes.join(", ") }
}

/// A camera's MJPEG frame to packed RGB, refused unless it is `width`×`height`. The size
/// is read from the header before anything is decoded: a garbled 600-byte frame that
/// claims 35616×10520 would otherwise cost seconds and a gigabyte (found by fuzzing).
/// Public (hidden, through the crate root) for the fuzz target and its corpus replay.
pub fn decode_mjpeg(jpeg: &[u8], width: u32, height: u32) -> Result<Vec<u8>, CaptureError> {
    let corrupt = |e: image::ImageError| CaptureError::BadFrame(format!("corrupt MJPEG frame: {e}"));
    let mut reader = image::ImageReader::new(std::io::Cursor::new(jpeg));
    reader.set_format(image::ImageFormat::Jpeg);
    let decoder = reader.into_decoder().map_err(corrupt)?;
    let (w, h) = image::ImageDecoder::dimensions(&decoder);
    if (w, h) != (width, height) {
        return Err(CaptureError::BadFrame(format!("MJPEG frame is {w}x{h}, expected {width}x{height}")));
    }
    // The decoder can panic on a garbled frame (zune-jpeg 0.5.15's AVX2 IDCT unwraps a
    // `None`, found by fuzzing): that is a bad frame, not a dead capture thread.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| image::DynamicImage::from_decoder(decoder)))
        .map_err(|_| CaptureError::BadFrame("corrupt MJPEG frame: the JPEG decoder failed on it".into()))?;
    Ok(decoded.map_err(corrupt)?.into_rgb8().into_raw())
}

/// YUYV 4:2:2 (two pixels in Y0 U Y1 V) to RGB with BT.601 limited-range integers.
fn yuyv_to_rgb(yuyv: &[u8], width: u32, height: u32) -> Result<Vec<u8>, CaptureError> {
    let pixels = width as usize * height as usize;
    if yuyv.len() < pixels * 2 || !width.is_multiple_of(2) {
        return Err(CaptureError::BadFrame(format!(
            "YUYV frame has {} bytes, expected {} for {width}x{height}",
            yuyv.len(),
            pixels * 2
        )));
    }
    let mut rgb = vec![0u8; pixels * 3];
    for (quad, out) in yuyv[..pixels * 2].chunks_exact(4).zip(rgb.chunks_exact_mut(6)) {
        let (u, v) = (quad[1] as i32 - 128, quad[3] as i32 - 128);
        for (i, y) in [quad[0], quad[2]].into_iter().enumerate() {
            let c = 298 * (y as i32 - 16);
            let px = &mut out[i * 3..i * 3 + 3];
            px[0] = ((c + 409 * v + 128) >> 8).clamp(0, 255) as u8;
            px[1] = ((c - 100 * u - 208 * v + 128) >> 8).clamp(0, 255) as u8;
            px[2] = ((c + 516 * u + 128) >> 8).clamp(0, 255) as u8;
        }
    }
    Ok(rgb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuyv_converts_grey_white_and_red() {
        // Y=16 black, Y=235 white, neutral chroma; then a pure red pair.
        let yuyv = [16, 128, 235, 128, 81, 90, 81, 240];
        let rgb = yuyv_to_rgb(&yuyv, 4, 1).unwrap();
        assert_eq!(&rgb[0..3], &[0, 0, 0]);
        assert_eq!(&rgb[3..6], &[255, 255, 255]);
        assert!(rgb[6] > 240 && rgb[7] < 10 && rgb[8] < 10, "{:?}", &rgb[6..9]);
    }

    #[test]
    fn a_short_yuyv_buffer_is_a_bad_frame() {
        assert!(matches!(yuyv_to_rgb(&[0; 6], 4, 1), Err(CaptureError::BadFrame(_))));
    }

    /// Issue 20, item 2 (fuzzing, the `image` target): a 631-byte progressive JPEG whose
    /// header says 35616×10520 took 16 s to decode before its size was checked.
    #[test]
    fn r20_2_an_mjpeg_frame_of_the_wrong_size_is_refused_before_decoding() {
        let jpeg = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/seeds/image/jpeg-huge-progressive"))
            .unwrap();
        // Decoded first, as before, this test (and the corpus replay, whose seed the
        // input is) would run for minutes in a debug build.
        let err = decode_mjpeg(&jpeg, 32, 24).unwrap_err().to_string();
        assert_eq!(err, "unusable frame: MJPEG frame is 35616x10520, expected 32x24");
    }

    /// Issue 20, item 2 (fuzzing, the `image` target): a 931-byte JPEG of the camera's
    /// size made the decoder panic (an `unwrap` on `None` in zune-jpeg's AVX2 IDCT). It
    /// is a bad frame now; on a CPU whose decoder path does not panic, a frame or an
    /// error, but never a panic.
    #[test]
    fn r20_2_a_jpeg_the_decoder_panics_on_is_a_bad_frame() {
        let jpeg =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/seeds/image/jpeg-idct-panic")).unwrap();
        if let Err(err) = decode_mjpeg(&jpeg, 32, 24) {
            assert!(err.to_string().starts_with("unusable frame: corrupt MJPEG frame"), "{err}");
        }
    }

    #[test]
    fn a_corrupt_jpeg_is_a_bad_frame_not_a_crash() {
        let err = decode_mjpeg(&[0xFF, 0xD8, 0xFF, 0x00, 1, 2, 3], 2, 2).unwrap_err();
        assert!(err.to_string().contains("corrupt MJPEG frame"), "{err}");
    }
}
