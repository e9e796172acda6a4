//! Turns a camera's `uri` or `pipeline` into a [`Source`], with an error that names the
//! fix when the text cannot work.

use std::path::PathBuf;

use crate::CaptureError;
use crate::config::CameraConfig;

/// Where one camera's frames come from, after its config was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A local video file, decoded by GStreamer.
    File(PathBuf),
    /// An RTSP stream, decoded by GStreamer.
    Rtsp(String),
    /// An HTTP(S) multipart MJPEG stream.
    HttpMjpeg(String),
    /// A V4L2 device read directly through the `v4l` crate.
    V4l2(PathBuf),
    /// A CSI sensor through the board profile's camera element.
    Csi(u32),
    /// GStreamer's `videotestsrc` with a pattern and optional `num-buffers`.
    Test { pattern: String, num_buffers: Option<u32> },
    /// An expert's GStreamer pipeline.
    Pipeline(String),
}

impl Source {
    pub fn from_config(cam: &CameraConfig) -> Result<Source, CaptureError> {
        match (&cam.uri, &cam.pipeline) {
            (Some(uri), None) => Source::parse_uri(uri),
            (None, Some(pipeline)) if !pipeline.trim().is_empty() => Ok(Source::Pipeline(pipeline.trim().to_owned())),
            (Some(_), Some(_)) => Err(CaptureError::Config("both `uri` and `pipeline` are set; keep one".into())),
            _ => {
                Err(CaptureError::Config("no source: set `uri` (e.g. \"file:///srv/clip.webm\") or `pipeline`".into()))
            }
        }
    }

    pub fn parse_uri(uri: &str) -> Result<Source, CaptureError> {
        let Some((scheme, rest)) = uri.split_once("://") else {
            return Err(CaptureError::Config(format!(
                "`{uri}` is not a URI; write it as SCHEME://…, e.g. file:///srv/clip.webm or v4l2:///dev/video0"
            )));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                if !rest.starts_with('/') {
                    return Err(CaptureError::Config(format!(
                        "`{uri}`: a file URI needs an absolute path, e.g. file:///srv/clip.webm"
                    )));
                }
                Ok(Source::File(PathBuf::from(percent_decode(rest))))
            }
            "rtsp" | "rtsps" => Ok(Source::Rtsp(uri.to_owned())),
            "http" | "https" => Ok(Source::HttpMjpeg(uri.to_owned())),
            "v4l2" => {
                if !rest.starts_with("/dev/") {
                    return Err(CaptureError::Config(format!("`{uri}`: write a V4L2 device as v4l2:///dev/videoN")));
                }
                Ok(Source::V4l2(PathBuf::from(rest)))
            }
            "csi" => rest
                .parse()
                .map(Source::Csi)
                .map_err(|_| CaptureError::Config(format!("`{uri}`: write a CSI sensor as csi://N, e.g. csi://0"))),
            "test" => {
                let (pattern, query) = rest.split_once('?').unwrap_or((rest, ""));
                let mut num_buffers = None;
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    match pair.split_once('=') {
                        Some(("num-buffers", n)) => {
                            num_buffers =
                                Some(n.parse().map_err(|_| {
                                    CaptureError::Config(format!("`{uri}`: num-buffers must be a count"))
                                })?)
                        }
                        _ => {
                            return Err(CaptureError::Config(format!(
                                "`{uri}`: unknown option `{pair}`; test:// takes only ?num-buffers=N"
                            )));
                        }
                    }
                }
                let pattern = if pattern.is_empty() { "smpte" } else { pattern };
                if !pattern.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    return Err(CaptureError::Config(format!(
                        "`{uri}`: `{pattern}` is not a videotestsrc pattern (try smpte, ball, snow)"
                    )));
                }
                Ok(Source::Test { pattern: pattern.to_owned(), num_buffers })
            }
            other => Err(CaptureError::Config(format!(
                "unknown URI scheme `{other}://`; use file://, rtsp://, http(s)://, v4l2:///dev/videoN, csi://N or test://"
            ))),
        }
    }

    /// Files are the only sources that end; the rest are restarted at end of stream.
    pub fn is_file(&self) -> bool {
        matches!(self, Source::File(_))
    }

    /// A network source's host and port, which a TCP connect can probe cheaply while the
    /// camera is down: the URI's port, or the scheme's default.
    pub fn network_address(&self) -> Option<(String, u16)> {
        let uri = match self {
            Source::Rtsp(uri) | Source::HttpMjpeg(uri) => uri,
            _ => return None,
        };
        let (scheme, rest) = uri.split_once("://")?;
        let authority = rest.split(['/', '?', '#']).next()?;
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let default = match scheme.to_ascii_lowercase().as_str() {
            "rtsp" => 554,
            "rtsps" => 322,
            "http" => 80,
            _ => 443,
        };
        let (host, port) = match host_port.strip_prefix('[') {
            // [v6]:port
            Some(v6) => {
                let (host, after) = v6.split_once(']')?;
                (host, after.strip_prefix(':'))
            }
            None => match host_port.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            },
        };
        let port = match port {
            Some(port) => port.parse().ok()?,
            None => default,
        };
        (!host.is_empty()).then(|| (host.to_owned(), port))
    }

    /// The source for logs and the status API, with any password in a URI removed.
    pub fn display(&self) -> String {
        match self {
            Source::File(path) => format!("file://{}", path.display()),
            Source::Rtsp(uri) | Source::HttpMjpeg(uri) => redact_userinfo(uri),
            Source::V4l2(path) => format!("v4l2://{}", path.display()),
            Source::Csi(n) => format!("csi://{n}"),
            Source::Test { pattern, .. } => format!("test://{pattern}"),
            Source::Pipeline(p) => format!("pipeline: {p}"),
        }
    }
}

/// `rtsp://user:secret@host/x` → `rtsp://user:***@host/x`, so passwords stay out of logs.
pub(crate) fn redact_userinfo(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => uri.to_owned(),
    }
}

/// Decodes `%20`-style escapes in a file URI's path.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scheme_maps_to_its_source() {
        assert_eq!(Source::parse_uri("file:///srv/my%20clip.webm").unwrap(), Source::File("/srv/my clip.webm".into()));
        assert_eq!(Source::parse_uri("v4l2:///dev/video2").unwrap(), Source::V4l2("/dev/video2".into()));
        assert_eq!(Source::parse_uri("csi://1").unwrap(), Source::Csi(1));
        assert_eq!(
            Source::parse_uri("test://ball?num-buffers=5").unwrap(),
            Source::Test { pattern: "ball".into(), num_buffers: Some(5) }
        );
        assert!(matches!(Source::parse_uri("RTSP://cam/1").unwrap(), Source::Rtsp(_)));
        assert!(matches!(Source::parse_uri("https://cam/mjpg").unwrap(), Source::HttpMjpeg(_)));
    }

    #[test]
    fn an_unknown_scheme_lists_the_known_ones() {
        let err = Source::parse_uri("rtps://cam/1").unwrap_err().to_string();
        assert!(err.contains("unknown URI scheme `rtps://`"), "{err}");
        assert!(err.contains("rtsp://"), "{err}");
    }

    #[test]
    fn a_relative_file_uri_is_refused() {
        let err = Source::parse_uri("file://clip.webm").unwrap_err().to_string();
        assert!(err.contains("absolute path"), "{err}");
    }

    #[test]
    fn network_sources_name_the_address_to_probe() {
        let at = |uri: &str| Source::parse_uri(uri).unwrap().network_address();
        assert_eq!(at("rtsp://admin:x@10.0.0.5:8554/s"), Some(("10.0.0.5".into(), 8554)));
        assert_eq!(at("rtsp://cam.local/s"), Some(("cam.local".into(), 554)));
        assert_eq!(at("http://cam/video.mjpg"), Some(("cam".into(), 80)));
        assert_eq!(at("https://cam?x=1"), Some(("cam".into(), 443)));
        assert_eq!(at("rtsp://[fe80::1]:10554/s"), Some(("fe80::1".into(), 10554)));
        assert_eq!(at("test://ball"), None);
    }

    #[test]
    fn passwords_never_reach_the_display() {
        let shown = Source::parse_uri("rtsp://admin:hunter2@10.0.0.5:554/stream").unwrap().display();
        assert_eq!(shown, "rtsp://admin:***@10.0.0.5:554/stream");
    }
}
