//! GStreamer sources: files, RTSP, HTTP MJPEG, CSI cameras, `videotestsrc` and expert
//! pipelines, all ending in an appsink that hands out tightly packed RGB.

use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use crate::config::{BoardCapture, CameraConfig};
use crate::source::Source;
use crate::{CaptureError, Captured};

/// The appsink every pipeline ends in.
const SINK: &str = "obscura_sink";
/// The element whose `uri` or `location` is set after parsing, so no quoting is needed.
const SRC: &str = "obscura_src";

/// Initialises GStreamer once and ranks the board's hardware decoders above software
/// ones, so `decodebin` picks them. Safe to call many times.
pub fn init(board: &BoardCapture) -> Result<(), CaptureError> {
    gst::init().map_err(|e| CaptureError::Gstreamer(format!("GStreamer failed to start: {e}")))?;
    let registry = gst::Registry::get();
    for name in &board.prefer_decoders {
        if let Some(feature) = registry.lookup_feature(name) {
            feature.set_rank(gst::Rank::PRIMARY + 100);
        }
    }
    Ok(())
}

/// Whether an element factory is installed.
pub fn has_element(name: &str) -> bool {
    gst::ElementFactory::find(name).is_some()
}

/// The Debian package (or vendor stack) that ships a GStreamer element.
pub fn package_for(element: &str) -> &'static str {
    match element {
        "libcamerasrc" => "gstreamer1.0-libcamera",
        "nvarguscamerasrc" | "nvv4l2decoder" | "nvvidconv" | "nvjpegdec" => "NVIDIA JetPack (nvidia-l4t-gstreamer)",
        "avdec_h264" | "avdec_h265" => "gstreamer1.0-libav",
        "v4l2h264dec" | "v4l2jpegdec" | "v4l2src" | "rtspsrc" | "souphttpsrc" | "multipartdemux" | "jpegdec"
        | "vp8dec" | "vp9dec" | "matroskademux" | "qtdemux" | "rtph264depay" => "gstreamer1.0-plugins-good",
        "h264parse" | "h265parse" => "gstreamer1.0-plugins-bad",
        _ => "gstreamer1.0-plugins-base (or the plugin package that provides it)",
    }
}

/// The GStreamer description for a source, without the RGB tail.
fn head(source: &Source, cam: &CameraConfig, board: &BoardCapture) -> Result<String, CaptureError> {
    let size = |w: Option<u32>, h: Option<u32>, fps: Option<u32>| {
        let mut caps = String::from("video/x-raw");
        if let Some(w) = w {
            caps += &format!(",width={w}");
        }
        if let Some(h) = h {
            caps += &format!(",height={h}");
        }
        if let Some(fps) = fps {
            caps += &format!(",framerate={fps}/1");
        }
        caps
    };
    let (w, h, fps) = (cam.width.map(|d| d.0), cam.height.map(|d| d.0), cam.framerate.map(|d| d.0));
    Ok(match source {
        Source::File(path) => {
            check_readable(path)?;
            format!("uridecodebin name={SRC} caps=video/x-raw expose-all-streams=false")
        }
        Source::Rtsp(_) => {
            format!("uridecodebin name={SRC} caps=video/x-raw expose-all-streams=false")
        }
        Source::HttpMjpeg(_) => {
            format!("souphttpsrc name={SRC} is-live=true do-timestamp=true timeout=10 ! multipartdemux ! jpegdec")
        }
        Source::Test { pattern, num_buffers } => {
            let n = num_buffers.map(|n| format!(" num-buffers={n}")).unwrap_or_default();
            let caps = size(w.or(Some(640)), h.or(Some(480)), fps.or(Some(15)));
            format!("videotestsrc pattern={pattern} is-live={}{n} ! {caps}", cam.realtime)
        }
        Source::Csi(sensor) => {
            if board.csi_source.is_empty() {
                return Err(CaptureError::Config(
                    "this board profile has no CSI camera element; set `board` to rpi4, rpi5 or jetson-orin, or use a v4l2:// or pipeline source".into(),
                ));
            }
            board
                .csi_source
                .replace("{sensor}", &sensor.to_string())
                .replace("{width}", &w.unwrap_or(1280).to_string())
                .replace("{height}", &h.unwrap_or(720).to_string())
                .replace("{framerate}", &fps.unwrap_or(30).to_string())
        }
        Source::Pipeline(p) => p.clone(),
        Source::V4l2(_) => unreachable!("V4L2 devices are read by the v4l module"),
    })
}

/// A complete pipeline description: the source, then conversion to RGB and the appsink.
pub(crate) fn describe(source: &Source, cam: &CameraConfig, board: &BoardCapture) -> Result<String, CaptureError> {
    let head = head(source, cam, board)?;
    if matches!(source, Source::Pipeline(_)) && head.contains(&format!("name={SINK}")) {
        return Ok(head);
    }
    let mut caps = String::from("video/x-raw,format=RGB");
    if !matches!(source, Source::Test { .. } | Source::Csi(_)) {
        if let Some(w) = cam.width {
            caps += &format!(",width={}", w.0);
        }
        if let Some(h) = cam.height {
            caps += &format!(",height={}", h.0);
        }
    }
    // No `drop=true`: the appsink would discard frames without counting them. This thread
    // only samples and hands frames on, so it keeps up; every drop happens in `deliver`.
    // Files are paced by the clock only when `realtime`; live sources are paced by the camera.
    let sync = source.is_file() && cam.realtime;
    Ok(format!(
        "{head} ! {convert} ! videoscale ! {caps} ! appsink name={SINK} max-buffers=2 sync={sync} enable-last-sample=false",
        convert = board.convert,
    ))
}

pub(crate) fn check_readable(path: &std::path::Path) -> Result<(), CaptureError> {
    match std::fs::File::open(path) {
        Ok(_) if path.is_dir() => {
            Err(CaptureError::File { path: path.to_owned(), problem: "is a directory; name a video file".into() })
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(CaptureError::File { path: path.to_owned(), problem: "does not exist; check the path in `uri`".into() })
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(CaptureError::File {
            path: path.to_owned(),
            problem: "is not readable by this user; give the obscura user read access".into(),
        }),
        Err(e) => Err(CaptureError::File { path: path.to_owned(), problem: e.to_string() }),
    }
}

/// Parses a description into a pipeline without starting it: proves every element exists.
pub(crate) fn build_only(description: &str) -> Result<(), CaptureError> {
    gst::parse::launch(description).map(drop).map_err(|e| parse_error(&e.to_string()))
}

/// A running pipeline. Dropping it stops the pipeline and frees the source.
#[derive(Debug)]
pub(crate) struct GstSession {
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
    bus: gst::Bus,
}

impl GstSession {
    pub(crate) fn open(source: &Source, cam: &CameraConfig, board: &BoardCapture) -> Result<Self, CaptureError> {
        let description = describe(source, cam, board)?;
        tracing::debug!(target: "capture", camera = %cam.id, %description, "building pipeline");
        let element = gst::parse::launch(&description).map_err(|e| parse_error(&e.to_string()))?;
        let pipeline = element
            .downcast::<gst::Pipeline>()
            .map_err(|_| CaptureError::Gstreamer("the pipeline description must hold more than one element".into()))?;
        if let Some(src) = pipeline.by_name(SRC) {
            match source {
                Source::File(path) => src.set_property("uri", file_uri(path)?.as_str()),
                Source::Rtsp(uri) => src.set_property("uri", uri),
                Source::HttpMjpeg(uri) => src.set_property("location", uri),
                _ => {}
            }
        }
        Self::start(pipeline)
    }

    /// Builds a pipeline from a description whose `obscura_src` reads `file`.
    pub(crate) fn launch(description: &str, file: Option<&std::path::Path>) -> Result<Self, CaptureError> {
        let pipeline = gst::parse::launch(description)
            .map_err(|e| parse_error(&e.to_string()))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| CaptureError::Gstreamer("the pipeline description must hold more than one element".into()))?;
        if let (Some(src), Some(path)) = (pipeline.by_name(SRC), file) {
            src.set_property("uri", file_uri(path)?.as_str());
        }
        Self::start(pipeline)
    }

    fn start(pipeline: gst::Pipeline) -> Result<Self, CaptureError> {
        let sink = pipeline
            .by_name(SINK)
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .ok_or_else(|| CaptureError::Gstreamer(format!("the pipeline has no appsink named `{SINK}`")))?;
        let bus = pipeline.bus().ok_or_else(|| CaptureError::Gstreamer("the pipeline has no bus".into()))?;
        let session = GstSession { pipeline, sink, bus };
        if session.pipeline.set_state(gst::State::Playing).is_err() {
            // The bus holds the real reason (no such file, connection refused, …).
            return Err(session
                .bus_error()
                .unwrap_or_else(|| CaptureError::Gstreamer("the pipeline refused to start".into())));
        }
        Ok(session)
    }

    /// Waits up to `timeout` for a frame. `Ok(None)` means none came yet.
    pub(crate) fn next_frame(&mut self, timeout: Duration) -> Result<Option<Captured>, CaptureError> {
        if let Some(err) = self.bus_error() {
            return Err(err);
        }
        let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        match self.sink.try_pull_sample(gst::ClockTime::from_nseconds(nanos)) {
            Some(sample) => to_rgb(&sample).map(Some),
            // A source that fails posts its error and then ends the stream: the error is
            // the reason, so it is looked for again.
            None if self.sink.is_eos() => Err(self.bus_error().unwrap_or(CaptureError::EndOfStream)),
            None => Ok(None),
        }
    }

    /// Seeks back to the start, for files with `loop = true`.
    pub(crate) fn rewind(&mut self) -> Result<(), CaptureError> {
        self.pipeline
            .seek_simple(gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT, gst::ClockTime::ZERO)
            .map_err(|_| CaptureError::Gstreamer("the file cannot seek back to its start".into()))
    }

    /// The first error waiting on the bus, if any.
    fn bus_error(&self) -> Option<CaptureError> {
        while let Some(msg) = self.bus.pop_filtered(&[gst::MessageType::Error, gst::MessageType::Warning]) {
            match msg.view() {
                gst::MessageView::Error(err) => {
                    let from = msg.src().map(|s| s.name().to_string()).unwrap_or_default();
                    let details = err.debug().map(|d| d.to_string()).unwrap_or_default();
                    tracing::debug!(target: "capture", element = %from, %details, "pipeline error");
                    return Some(CaptureError::Stream(format!("{from}: {}", err.error())));
                }
                gst::MessageView::Warning(warn) => {
                    tracing::warn!(target: "capture", "GStreamer warning: {}", warn.error());
                }
                _ => {}
            }
        }
        None
    }
}

impl Drop for GstSession {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

pub(crate) fn file_uri(path: &std::path::Path) -> Result<gst::glib::GString, CaptureError> {
    let absolute = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    gst::glib::filename_to_uri(&absolute, None)
        .map_err(|e| CaptureError::Gstreamer(format!("cannot make a URI of {}: {e}", path.display())))
}

/// Copies a sample into tightly packed RGB (GStreamer pads rows to 4 bytes).
fn to_rgb(sample: &gst::Sample) -> Result<Captured, CaptureError> {
    let bad = |why: &str| CaptureError::BadFrame(why.to_owned());
    let buffer = sample.buffer().ok_or_else(|| bad("sample without a buffer"))?;
    let caps = sample.caps().ok_or_else(|| bad("sample without caps"))?;
    let info = gst_video::VideoInfo::from_caps(caps).map_err(|_| bad("caps are not raw video"))?;
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
        .map_err(|_| bad("buffer does not match its caps"))?;
    let (width, height) = (info.width(), info.height());
    let row = width as usize * 3;
    let stride = usize::try_from(frame.plane_stride()[0]).map_err(|_| bad("negative stride"))?;
    let data = frame.plane_data(0).map_err(|_| bad("no pixel plane"))?;
    if stride < row || data.len() < stride * (height as usize - 1) + row {
        return Err(bad("buffer smaller than its caps say"));
    }
    let mut rgb = Vec::with_capacity(row * height as usize);
    for y in 0..height as usize {
        rgb.extend_from_slice(&data[y * stride..y * stride + row]);
    }
    Ok(Captured {
        width,
        height,
        rgb,
        media_time: buffer.pts().map(|t| Duration::from_nanos(t.nseconds())),
        fps: (info.fps().numer() > 0).then(|| (info.fps().numer(), info.fps().denom())),
    })
}

/// Turns "no element \"x\"" into an error that names the package to install.
fn parse_error(message: &str) -> CaptureError {
    if let Some(name) = message.split('"').nth(1).filter(|_| message.starts_with("no element")) {
        return CaptureError::MissingElement { element: name.to_owned(), package: package_for(name) };
    }
    CaptureError::Gstreamer(format!("the pipeline description does not parse: {message}"))
}
