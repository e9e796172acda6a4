//! Video files for `obscura blur`: decode a file to RGB frames as fast as the box can, and
//! encode anonymized frames back to a file with the input's frame rate and timestamps.
//! The writer takes only `AnonymizedFrame`s, so un-redacted pixels cannot reach a file.
//! Audio is dropped (voices identify people) unless asked for: [`add_audio`] copies it,
//! re-encoded as Opus, into an anonymized video.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anonymize::AnonymizedFrame;
use frame::{FrameMeta, RawFrame};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use crate::CaptureError;
use crate::gst::{GstSession, has_element};

/// Extensions `obscura blur` treats as video.
pub const VIDEO_EXTENSIONS: [&str; 6] = ["webm", "mkv", "mp4", "mov", "avi", "m4v"];

/// One decoded frame of a video file.
#[derive(Debug)]
pub struct VideoFrame {
    pub frame: RawFrame,
    /// Presentation time in the file.
    pub pts: Duration,
    /// Frames per second as the file declares them (numerator, denominator).
    pub fps: Option<(i32, i32)>,
}

/// A video file being decoded.
#[derive(Debug)]
pub struct VideoReader {
    session: GstSession,
    seq: u64,
    camera: Arc<str>,
}

impl VideoReader {
    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        gst::init().map_err(|e| CaptureError::Gstreamer(format!("GStreamer failed to start: {e}")))?;
        crate::gst::check_readable(path)?;
        let description = "uridecodebin name=obscura_src caps=video/x-raw expose-all-streams=false ! videoconvert ! \
             video/x-raw,format=RGB ! appsink name=obscura_sink max-buffers=4 sync=false enable-last-sample=false";
        let session = GstSession::launch(description, Some(path))?;
        Ok(VideoReader { session, seq: 0, camera: Arc::from("video") })
    }

    /// The next frame with its presentation time and duration, or `None` at the end.
    pub fn next_frame(&mut self) -> Result<Option<VideoFrame>, CaptureError> {
        loop {
            match self.session.next_frame(Duration::from_secs(10)) {
                Ok(Some(captured)) => {
                    let meta = FrameMeta {
                        camera: self.camera.clone(),
                        seq: self.seq,
                        monotonic: Instant::now(),
                        wall: SystemTime::now(),
                        media_time: captured.media_time,
                    };
                    self.seq += 1;
                    let pts = captured.media_time.unwrap_or_default();
                    let fps = captured.fps;
                    let frame = RawFrame::new(meta, captured.width, captured.height, captured.rgb)
                        .map_err(|e| CaptureError::BadFrame(e.to_string()))?;
                    return Ok(Some(VideoFrame { frame, pts, fps }));
                }
                Ok(None) => return Err(CaptureError::Stalled(Duration::from_secs(10))),
                Err(CaptureError::EndOfStream) => return Ok(None),
                Err(CaptureError::BadFrame(_)) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// The encoder and muxer for an output file, by its extension, from what is installed.
fn encoder_for(path: &Path) -> Result<&'static str, CaptureError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
    let choices: &[(&str, &str)] = match ext.as_str() {
        "webm" => &[("vp8enc", "vp8enc deadline=1 cpu-used=4 target-bitrate=4000000 keyframe-max-dist=60 ! webmmux")],
        "mkv" => {
            &[("vp8enc", "vp8enc deadline=1 cpu-used=4 target-bitrate=4000000 keyframe-max-dist=60 ! matroskamux")]
        }
        "mp4" | "m4v" | "mov" => &[
            ("x264enc", "x264enc speed-preset=veryfast tune=zerolatency ! h264parse ! mp4mux"),
            ("openh264enc", "openh264enc ! h264parse ! mp4mux"),
            ("avenc_mpeg4", "avenc_mpeg4 bitrate=4000000 ! mp4mux"),
        ],
        "avi" => &[("avenc_mpeg4", "avenc_mpeg4 bitrate=4000000 ! avimux")],
        _ => &[],
    };
    choices.iter().find(|(element, _)| has_element(element)).map(|(_, description)| *description).ok_or_else(|| {
        CaptureError::Config(format!(
            "no installed encoder writes .{ext}; write .webm or .mkv (gstreamer1.0-plugins-good), or install gstreamer1.0-plugins-ugly or gstreamer1.0-libav for .mp4"
        ))
    })
}

/// Whether a media file has an audio stream. Checked before muxing one in: a muxer
/// waiting for audio that never comes would wait forever.
pub fn has_audio(path: &Path) -> Result<bool, CaptureError> {
    gst::init().map_err(|e| CaptureError::Gstreamer(format!("GStreamer failed to start: {e}")))?;
    crate::gst::check_readable(path)?;
    let discoverer = gstreamer_pbutils::Discoverer::new(gst::ClockTime::from_seconds(30))
        .map_err(|e| CaptureError::Gstreamer(format!("cannot inspect media files: {e}")))?;
    let info = discoverer
        .discover_uri(&crate::gst::file_uri(path)?)
        .map_err(|e| CaptureError::File { path: path.to_owned(), problem: format!("cannot be inspected: {e}") })?;
    Ok(!info.audio_streams().is_empty())
}

/// Writes `output`: the video stream of `video` (an anonymized file, not re-encoded) with
/// the audio of `audio_from`, re-encoded as Opus. `audio_from` must have audio
/// ([`has_audio`]).
pub fn add_audio(video: &Path, audio_from: &Path, output: &Path) -> Result<(), CaptureError> {
    gst::init().map_err(|e| CaptureError::Gstreamer(format!("GStreamer failed to start: {e}")))?;
    let ext = output.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
    let muxer = match ext.as_str() {
        "webm" => "webmmux",
        "mkv" => "matroskamux",
        "mp4" | "m4v" | "mov" => "mp4mux",
        _ => {
            return Err(CaptureError::Config(format!(
                "audio cannot be kept in .{ext}; write .webm, .mkv or .mp4, or leave out --keep-audio"
            )));
        }
    };
    if !has_element("opusenc") {
        return Err(CaptureError::Config("keeping audio needs opusenc: install gstreamer1.0-plugins-base".into()));
    }
    let description = format!(
        "{muxer} name=mux ! filesink name=out \
         filesrc name=video ! parsebin ! queue ! mux. \
         uridecodebin name=audio caps=audio/x-raw expose-all-streams=false ! queue ! audioconvert ! audioresample \
         ! opusenc ! queue ! mux."
    );
    let pipeline = gst::parse::launch(&description)
        .map_err(|e| CaptureError::Gstreamer(format!("cannot build the audio muxer: {e}")))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| CaptureError::Gstreamer("the audio muxer is not a pipeline".into()))?;
    let set = |name: &str, property: &str, value: &str| {
        if let Some(element) = pipeline.by_name(name) {
            element.set_property(property, value);
        }
    };
    set("video", "location", &video.to_string_lossy());
    set("audio", "uri", &crate::gst::file_uri(audio_from)?);
    set("out", "location", &output.to_string_lossy());
    let failed =
        |why: String| CaptureError::File { path: output.to_owned(), problem: format!("adding audio failed: {why}") };
    pipeline.set_state(gst::State::Playing).map_err(|_| failed("the muxer did not start".into()))?;
    let bus = pipeline.bus().ok_or_else(|| CaptureError::Gstreamer("no bus".into()))?;
    let result = match bus
        .timed_pop_filtered(gst::ClockTime::from_seconds(600), &[gst::MessageType::Eos, gst::MessageType::Error])
    {
        Some(msg) => match msg.view() {
            gst::MessageView::Error(err) => Err(failed(err.error().to_string())),
            _ => Ok(()),
        },
        None => Err(failed("it did not finish within 600 s".into())),
    };
    let _ = pipeline.set_state(gst::State::Null);
    result
}

/// A video file being written from anonymized frames.
#[derive(Debug)]
pub struct VideoWriter {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    path: PathBuf,
    width: u32,
    height: u32,
}

impl VideoWriter {
    /// Starts writing `path` (its extension picks the format) at `fps` (numerator, denominator).
    pub fn create(path: &Path, width: u32, height: u32, fps: (i32, i32)) -> Result<Self, CaptureError> {
        gst::init().map_err(|e| CaptureError::Gstreamer(format!("GStreamer failed to start: {e}")))?;
        let encoder = encoder_for(path)?;
        let description = format!(
            "appsrc name=obscura_appsrc format=time is-live=false ! videoconvert ! {encoder} ! filesink name=obscura_filesink"
        );
        let pipeline = gst::parse::launch(&description)
            .map_err(|e| CaptureError::Gstreamer(format!("cannot build the encoder: {e}")))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| CaptureError::Gstreamer("the encoder is not a pipeline".into()))?;
        let src = pipeline
            .by_name("obscura_appsrc")
            .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
            .ok_or_else(|| CaptureError::Gstreamer("no appsrc".into()))?;
        let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, width, height)
            .fps(gst::Fraction::new(fps.0, fps.1))
            .build()
            .map_err(|e| CaptureError::Gstreamer(format!("bad video size: {e}")))?;
        let caps = info.to_caps().map_err(|e| CaptureError::Gstreamer(e.to_string()))?;
        src.set_caps(Some(&caps));
        src.set_property("block", true);
        if let Some(sink) = pipeline.by_name("obscura_filesink") {
            sink.set_property("location", path.to_string_lossy().as_ref());
        }
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|_| CaptureError::File { path: path.to_owned(), problem: "cannot be written".into() })?;
        Ok(VideoWriter { pipeline, src, path: path.to_owned(), width, height })
    }

    /// Encodes one anonymized frame at its presentation time.
    pub fn push(&mut self, frame: &AnonymizedFrame, pts: Duration, duration: Duration) -> Result<(), CaptureError> {
        if (frame.width(), frame.height()) != (self.width, self.height) {
            return Err(CaptureError::BadFrame("the video changed size mid-stream".into()));
        }
        let row = self.width as usize * 3;
        let stride = row.div_ceil(4) * 4;
        let mut data = vec![0u8; stride * self.height as usize];
        for (y, src) in frame.rgb().chunks_exact(row).enumerate() {
            data[y * stride..y * stride + row].copy_from_slice(src);
        }
        let mut buffer = gst::Buffer::from_mut_slice(data);
        {
            let buffer = buffer.get_mut().expect("a new buffer is writable");
            buffer.set_pts(gst::ClockTime::from_nseconds(pts.as_nanos() as u64));
            buffer.set_duration(gst::ClockTime::from_nseconds(duration.as_nanos() as u64));
        }
        self.src.push_buffer(buffer).map_err(|e| self.failed(&format!("encoder refused a frame: {e:?}")))?;
        Ok(())
    }

    /// Ends the stream and waits until the file is complete.
    pub fn finish(self) -> Result<(), CaptureError> {
        self.src.end_of_stream().map_err(|e| self.failed(&format!("{e:?}")))?;
        let bus = self.pipeline.bus().ok_or_else(|| CaptureError::Gstreamer("no bus".into()))?;
        let result = match bus
            .timed_pop_filtered(gst::ClockTime::from_seconds(120), &[gst::MessageType::Eos, gst::MessageType::Error])
        {
            Some(msg) => match msg.view() {
                gst::MessageView::Eos(_) => Ok(()),
                gst::MessageView::Error(err) => Err(self.failed(&err.error().to_string())),
                _ => Ok(()),
            },
            None => Err(self.failed("the encoder did not finish within 120 s")),
        };
        let _ = self.pipeline.set_state(gst::State::Null);
        result
    }

    fn failed(&self, why: &str) -> CaptureError {
        CaptureError::File { path: self.path.clone(), problem: format!("writing failed: {why}") }
    }
}

impl Drop for VideoWriter {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
