//! The daemon's config, read in layers: embedded defaults → board profile →
//! `/etc/obscura/obscura.toml` (or `--config`) → `OBSCURA_*` environment variables.
//!
//! Each layer is first parsed on its own into [`Config`], so an unknown key or a bad
//! value is reported with that layer's file, line and key. Then the layers' tables are
//! merged (later wins; arrays such as `[[camera]]` are replaced, not appended) and the
//! result is checked against the rest of the config (phase two: [`Config::resolve`]).

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use capture::{BoardCapture, CameraConfig};
use serde::Deserialize;

/// The embedded defaults, which also document every key.
pub const DEFAULTS: &str = include_str!("defaults.toml");

/// The embedded default of `key` (e.g. `"detect.face_input"`), for code that reads a
/// value some layer may leave unset. defaults.toml is the one place defaults are written:
/// the code holds no constants that could disagree with it. A key missing there is a bug
/// in this binary, which the test `every_default_the_code_reads_is_in_defaults_toml` finds.
pub fn default_of<T: serde::de::DeserializeOwned>(key: &str) -> T {
    static TABLE: std::sync::LazyLock<toml::Table> =
        std::sync::LazyLock::new(|| toml::from_str(DEFAULTS).expect("the embedded defaults parse"));
    let mut parts = key.split('.');
    let first = TABLE.get(parts.next().unwrap_or_default());
    let value = parts
        .try_fold(first, |value, part| value.map(|v| v.as_table().and_then(|t| t.get(part))))
        .flatten()
        .unwrap_or_else(|| panic!("defaults.toml has no `{key}`"));
    value.clone().try_into().unwrap_or_else(|e| panic!("defaults.toml: `{key}` does not parse: {e}"))
}

/// Like [`default_of`], for a duration written as text ("10m").
pub fn default_duration(key: &str) -> Duration {
    let text: String = default_of(key);
    humantime::parse_duration(&text).unwrap_or_else(|e| panic!("defaults.toml: `{key}` = {text:?}: {e}"))
}

/// The board profiles shipped in `board/`, embedded so the binary needs no data files.
pub const BOARDS: [(&str, &str); 4] = [
    ("generic", include_str!("../../../board/generic.toml")),
    ("rpi4", include_str!("../../../board/rpi4.toml")),
    ("rpi5", include_str!("../../../board/rpi5.toml")),
    ("jetson-orin", include_str!("../../../board/jetson-orin.toml")),
];

/// Where the config file is read from when `--config` is not given.
pub const SYSTEM_CONFIG: &str = "/etc/obscura/obscura.toml";

/// Environment variables that are command-line flags, not config keys.
const FLAG_VARS: [&str; 4] = ["OBSCURA_CONFIG", "OBSCURA_STATE_DIR", "OBSCURA_LISTEN", "OBSCURA_LOG"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Board profile: `rpi4`, `rpi5`, `jetson-orin`, `generic`, or a path to a profile file.
    #[serde(default)]
    pub board: Option<String>,
    /// The deadline for the whole shutdown, e.g. "10s".
    #[serde(default, with = "humantime_serde")]
    pub shutdown_timeout: Option<Duration>,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub capture: CaptureSettings,
    /// Chosen by the board profile: which GStreamer elements to use.
    #[serde(default)]
    pub gstreamer: BoardCapture,
    /// Chosen by the board profile: detector input sizes, used by anonymization.
    #[serde(default)]
    pub detect: DetectConfig,
    /// How frames are anonymized.
    #[serde(default)]
    pub anonymize: AnonymizeConfig,
    /// What is kept, and for how long.
    #[serde(default)]
    pub store: StoreConfig,
    /// Object pre-labels on stored frames.
    #[serde(default)]
    pub prelabel: PrelabelConfig,
    /// What goes to the hub, when and how fast (the hub itself: `obscura sync enrol`).
    #[serde(default)]
    pub sync: SyncConfig,
    /// The cameras, one `[[camera]]` table each.
    #[serde(default, rename = "camera")]
    pub cameras: Vec<CameraConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address and port of the HTTP server, e.g. "127.0.0.1:8080".
    pub listen: Option<SocketAddr>,
    /// `auto` (HTTPS unless `listen` is loopback and no certificate is given), `on` or
    /// `off`.
    pub tls: Option<TlsMode>,
    /// Your own certificate chain (PEM, the box's certificate first), with `tls_key`;
    /// unset: a self-signed one made at first start in the state directory's `tls/`.
    pub tls_cert: Option<PathBuf>,
    /// The private key of `tls_cert` (PEM, not encrypted).
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP beyond loopback, for a box behind your own TLS proxy.
    pub allow_plain_http: Option<bool>,
    /// Origins users reach the box by beyond its own names and addresses, e.g. a TLS
    /// proxy's "https://obscura.example.org": state-changing requests from pages there
    /// pass the CSRF check.
    pub origins: Option<Vec<String>>,
    /// Proxies whose `X-Forwarded-For` is believed, as addresses; unset or empty: none.
    pub trusted_proxies: Option<Vec<IpAddr>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    Auto,
    On,
    Off,
}

/// How the HTTP server is secured, once `[http]` and the listen address are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    /// Plain HTTP: on loopback, or allowed by `allow_plain_http`.
    Off,
    /// HTTPS with the box's own certificate, made at first start.
    SelfSigned,
    /// HTTPS with the operator's certificate and key.
    Files { cert: PathBuf, key: PathBuf },
}

impl HttpConfig {
    /// HTTPS unless the address is loopback; plain HTTP beyond loopback only when allowed.
    fn tls(&self, listen: SocketAddr) -> Result<Tls, ConfigError> {
        let err = |message: String| ConfigError { layer: "[http]".into(), message };
        let files = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(Tls::Files { cert: cert.clone(), key: key.clone() }),
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                return Err(err("set both `tls_cert` and `tls_key` (your certificate chain and its private key, \
                                PEM), or neither for the box's own self-signed certificate"
                    .into()));
            }
        };
        let on = match self.tls.unwrap_or_else(|| default_of("http.tls")) {
            TlsMode::On => true,
            TlsMode::Auto => files.is_some() || !listen.ip().is_loopback(),
            TlsMode::Off if files.is_some() => {
                return Err(err("`tls_cert` and `tls_key` are set but `tls` is \"off\"; remove them, or set \
                                tls = \"auto\""
                    .into()));
            }
            TlsMode::Off => false,
        };
        if on {
            return Ok(files.unwrap_or(Tls::SelfSigned));
        }
        if !listen.ip().is_loopback() && !self.allow_plain_http.unwrap_or_else(|| default_of("http.allow_plain_http")) {
            return Err(err(format!(
                "plain HTTP on {listen} would send passwords in clear: set [http] tls = \"auto\" or, behind your \
                 own TLS proxy, allow_plain_http = true"
            )));
        }
        Ok(Tls::Off)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: Option<LogFormat>,
    /// A tracing filter such as "info" or "info,capture=debug".
    pub level: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureSettings {
    /// Frames that may wait for anonymization, over all cameras.
    pub queue: Option<QueueDepth>,
}

/// A queue depth between 1 and 1024.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct QueueDepth(pub usize);

impl TryFrom<i64> for QueueDepth {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        match usize::try_from(n) {
            Ok(n @ 1..=1024) => Ok(QueueDepth(n)),
            _ => Err(format!("{n} is out of range: expected 1 to 1024 frames")),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    /// Face detector input, "WIDTHxHEIGHT" (multiples of 32).
    pub face_input: Option<InputSize>,
    /// Plate detector input, "WIDTHxHEIGHT" (multiples of 32).
    pub plate_input: Option<InputSize>,
    /// Pre-label detector input, "WIDTHxHEIGHT" (multiples of 32).
    pub prelabel_input: Option<InputSize>,
    /// Also run the detectors on an N×N grid of overlapping tiles, for small faces and
    /// plates in large frames: 0 (off) to 4.
    pub tiles: Option<TileGrid>,
    /// Look for plates on each vehicle found (NanoDet), magnified until its longer side
    /// is this many pixels (at most 4×): 0 (off) or 128 to 1024.
    pub vehicle_zoom: Option<Zoom>,
    /// Look for faces on the upper half of each person found, magnified until its longer
    /// side is this many pixels (at most 4×): 0 (off) or 128 to 1024.
    pub person_zoom: Option<Zoom>,
    /// People and vehicles found in a frame are looked at closely in the frames that
    /// follow within this time without finding them again, e.g. "50ms" ("0s": every frame).
    #[serde(default, with = "humantime_serde")]
    pub proposal_ttl: Option<Duration>,
    /// On vehicles found narrower than this many pixels, whose plates are too small to
    /// find, and on those not looked at closely (video: not yet, or not for a second),
    /// cover the area the plate can be in: 0 (off) to 1024. Needs `vehicle_zoom`.
    pub plate_areas: Option<PlateAreas>,
    /// In video, how many close looks at people a second of video takes, in turn, shared
    /// out over its frames whatever the frame rate: 0 to 1000. Bounds a crowd's cost.
    pub person_looks: Option<LooksPerSecond>,
    /// Like `person_looks`, for vehicles.
    pub vehicle_looks: Option<LooksPerSecond>,
}

/// Close looks a second of video takes.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "f64")]
pub struct LooksPerSecond(pub f32);

impl TryFrom<f64> for LooksPerSecond {
    type Error = String;
    fn try_from(n: f64) -> Result<Self, String> {
        match n {
            0.0..=1000.0 => Ok(LooksPerSecond(n as f32)),
            _ => Err(format!(
                "{n} is out of range: expected close looks a second of video, 0 to 1000 (at 25 frames a second, 12.5 is one every other frame)"
            )),
        }
    }
}

/// The vehicle width under which plate areas are covered; 0 turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct PlateAreas(pub u32);

impl TryFrom<i64> for PlateAreas {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        match u32::try_from(n) {
            Ok(n @ 0..=1024) => Ok(PlateAreas(n)),
            _ => Err(format!("{n} is out of range: expected a vehicle width in pixels, 0 (off) to 1024")),
        }
    }
}

/// The side a proposed region is magnified to; 0 turns the close look off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct Zoom(pub u32);

impl TryFrom<i64> for Zoom {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        match u32::try_from(n) {
            Ok(n @ (0 | 128..=1024)) if n % 32 == 0 => Ok(Zoom(n)),
            _ => Err(format!("{n} is out of range: expected 0 (off) or a multiple of 32 from 128 to 1024")),
        }
    }
}

/// Object pre-labels: a detector (the shipped NanoDet, or `[prelabel.model]`) on stored
/// (anonymized) frames, at a lower priority than anonymization.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrelabelConfig {
    pub enabled: Option<bool>,
    /// Class names to keep; unset: people and vehicles with the shipped NanoDet, every
    /// class of your own model.
    pub classes: Option<Vec<String>>,
    /// The score a pre-label needs.
    pub threshold: Option<Fraction>,
    /// The cameras to pre-label (empty: all).
    pub cameras: Option<Vec<String>>,
    /// Your own ONNX detector instead of the shipped NanoDet.
    pub model: Option<ModelConfig>,
}

/// `[prelabel.model]`: an ONNX detector of your own. Each layer may set some keys; once
/// merged, `path`, `decode` and `classes` are required and the rest default to the
/// decoding's usual export (see the README's "Using your own pre-label model").
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The .onnx file.
    pub path: Option<PathBuf>,
    /// Its SHA-256 in hex (as `sha256sum` prints it); when set, any other file is refused.
    pub sha256: Option<Sha256>,
    /// How its outputs read: `yolo` (YOLOv5/v7/v8/v11), `nanodet` (NanoDet-m/g) or
    /// `nanodet-plus`.
    pub decode: Option<DecodeName>,
    /// Its class names in output order, or "coco" for COCO's 80.
    pub classes: Option<ClassList>,
    /// Its input, "WIDTHxHEIGHT": default 640x640 for yolo, 416x416 for nanodet.
    pub input: Option<InputSize>,
    /// `rgb` or `bgr`: default rgb for yolo, bgr for nanodet.
    pub channels: Option<ChannelOrder>,
    /// Per input channel, in the model's channel order and 0–255 pixel units: the model
    /// sees (pixel − mean) / std. Default for yolo: mean 0, std 255; for nanodet:
    /// mean [103.53, 116.28, 123.675], std [57.375, 57.12, 58.395].
    pub mean: Option<Mean>,
    pub std: Option<Std>,
    /// NanoDet only: its strides, default [8, 16, 32] ([8, 16, 32, 64] for nanodet-plus).
    pub strides: Option<Strides>,
    /// NanoDet only: distance bins per box side, minus one; default 10 (NanoDet-g), 7
    /// for nanodet-plus (NanoDet-m also uses 7).
    pub reg_max: Option<RegMax>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecodeName {
    Yolo,
    Nanodet,
    NanodetPlus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

/// A SHA-256 as 64 hex digits, kept in lower case.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Sha256(pub String);

impl TryFrom<String> for Sha256 {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Sha256(s.to_ascii_lowercase()))
        } else {
            Err(format!("`{s}` is not a SHA-256: write its 64 hex digits, the first field of `sha256sum FILE`"))
        }
    }
}

/// Per-channel means, finite.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "[f64; 3]")]
pub struct Mean(pub [f32; 3]);

impl TryFrom<[f64; 3]> for Mean {
    type Error = String;
    fn try_from(m: [f64; 3]) -> Result<Self, String> {
        if m.iter().all(|x| x.is_finite()) {
            Ok(Mean(m.map(|x| x as f32)))
        } else {
            Err(format!("{m:?} is not a mean: write three numbers in 0–255 pixel units, e.g. [0, 0, 0]"))
        }
    }
}

/// Per-channel standard deviations, above 0.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "[f64; 3]")]
pub struct Std(pub [f32; 3]);

impl TryFrom<[f64; 3]> for Std {
    type Error = String;
    fn try_from(s: [f64; 3]) -> Result<Self, String> {
        if s.iter().all(|x| x.is_finite() && *x > 0.0) {
            Ok(Std(s.map(|x| x as f32)))
        } else {
            Err(format!("{s:?} is not a std: write three numbers above 0, e.g. [255, 255, 255] to scale to 0–1"))
        }
    }
}

/// NanoDet strides: at least one, each 1 to 256.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<i64>")]
pub struct Strides(pub Vec<u32>);

impl TryFrom<Vec<i64>> for Strides {
    type Error = String;
    fn try_from(v: Vec<i64>) -> Result<Self, String> {
        let strides: Option<Vec<u32>> =
            v.iter().map(|&s| u32::try_from(s).ok().filter(|s| (1..=256).contains(s))).collect();
        match strides {
            Some(strides) if !strides.is_empty() => Ok(Strides(strides)),
            _ => Err(format!("{v:?} are not strides: list the model's head strides in output order, e.g. [8, 16, 32]")),
        }
    }
}

/// NanoDet's reg_max, 1 to 64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct RegMax(pub usize);

impl TryFrom<i64> for RegMax {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        match usize::try_from(n) {
            Ok(n @ 1..=64) => Ok(RegMax(n)),
            _ => Err(format!("{n} is out of range: expected 1 to 64, the `reg_max` of the model's NanoDet config")),
        }
    }
}

/// A model's class names: a list, or "coco" for COCO's 80 in their usual order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassList(pub Vec<String>);

impl<'de> Deserialize<'de> for ClassList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Vec<String>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of class names in the model's output order, or \"coco\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Vec<String>, E> {
                match s {
                    "coco" => Ok(onnx::COCO_CLASSES.iter().map(|c| c.to_string()).collect()),
                    _ => Err(E::custom(format!("`{s}` names no class list: write \"coco\" or list the names"))),
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    names.push(name);
                }
                Ok(names)
            }
        }
        let names = d.deserialize_any(Visitor)?;
        if names.is_empty() || names.iter().any(|n| n.trim().is_empty()) {
            return Err(serde::de::Error::custom("class names must be non-empty, and at least one is needed"));
        }
        let mut seen = HashSet::new();
        if let Some(twice) = names.iter().find(|n| !seen.insert(n.as_str())) {
            return Err(serde::de::Error::custom(format!("class `{twice}` is listed twice; each name must be unique")));
        }
        Ok(ClassList(names))
    }
}

/// `[prelabel.model]` checked, with its decoding's defaults filled in.
#[derive(Debug, Clone)]
pub struct PrelabelModel {
    pub path: PathBuf,
    pub sha256: Option<String>,
    pub classes: Vec<String>,
    pub convention: onnx::Convention,
}

impl ModelConfig {
    fn resolve(&self) -> Result<PrelabelModel, ConfigError> {
        let err = |message: &str| ConfigError { layer: "[prelabel.model]".into(), message: message.into() };
        let path = self.path.clone().ok_or_else(|| err("`path` is missing: set it to the model's .onnx file"))?;
        let decode = self
            .decode
            .ok_or_else(|| err("`decode` is missing: set it to \"yolo\", \"nanodet\" or \"nanodet-plus\""))?;
        let classes = self.classes.clone().ok_or_else(|| {
            err("`classes` is missing: list the model's class names in output order, or write \"coco\"")
        })?;
        let mut convention = match decode {
            DecodeName::Yolo => onnx::Convention::yolo(),
            DecodeName::Nanodet => onnx::Convention::nanodet(),
            DecodeName::NanodetPlus => onnx::Convention::nanodet_plus(),
        };
        if let Some(InputSize { width, height }) = self.input {
            convention.input = onnx::InputSize { width, height };
        }
        if let Some(order) = self.channels {
            convention.channels = match order {
                ChannelOrder::Rgb => onnx::Channels::Rgb,
                ChannelOrder::Bgr => onnx::Channels::Bgr,
            };
        }
        convention.mean = self.mean.map_or(convention.mean, |m| m.0);
        convention.std = self.std.map_or(convention.std, |s| s.0);
        match &mut convention.decoding {
            onnx::Decoding::Yolo if self.strides.is_some() || self.reg_max.is_some() => {
                return Err(err("`strides` and `reg_max` apply to nanodet decoding only; remove them for yolo"));
            }
            onnx::Decoding::Yolo => {}
            onnx::Decoding::NanoDet { strides, reg_max } | onnx::Decoding::NanoDetPlus { strides, reg_max } => {
                if let Some(s) = &self.strides {
                    strides.clone_from(&s.0);
                }
                *reg_max = self.reg_max.map_or(*reg_max, |r| r.0);
            }
        }
        Ok(PrelabelModel { path, sha256: self.sha256.clone().map(|s| s.0), classes: classes.0, convention })
    }
}

/// What the store keeps, and for how long.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// A frame no consent with the `annotate` purpose covers: `drop` or `local_only`.
    pub no_consent: Option<store::NoConsent>,
    /// Days a frame is kept, unless its camera says otherwise.
    pub keep_days: Option<u32>,
    /// Free space of the state directory's disk, as a fraction: below `low_free` new
    /// frames are refused; eviction frees down to `high_free`; below `critical_free`,
    /// `on_critical` applies.
    pub low_free: Option<DiskShare>,
    pub high_free: Option<DiskShare>,
    pub critical_free: Option<DiskShare>,
    /// `reject_new` or `evict_oldest`.
    pub on_critical: Option<store::OnCritical>,
    /// How often retention runs (it also runs at start-up), e.g. "10m".
    #[serde(default, with = "humantime_serde")]
    pub retention_every: Option<Duration>,
    /// Per-camera settings, `[store.camera.ID]`.
    #[serde(default)]
    pub camera: std::collections::BTreeMap<String, CameraStore>,
}

/// `[sync]`: what leaves for the hub, in what batches, when and how fast.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Sync runs once the box is enrolled (`obscura sync enrol`); false keeps it off.
    pub enabled: Option<bool>,
    /// Only frames a reviewer accepted leave the box.
    pub require_review: Option<bool>,
    /// A batch closes at this many frames…
    pub batch_frames: Option<u32>,
    /// …or this many bytes of JPEG…
    pub batch_bytes: Option<u64>,
    /// …or when its oldest frame has waited this long, e.g. "30s".
    #[serde(default, with = "humantime_serde")]
    pub batch_age: Option<Duration>,
    /// Upload speed cap over all uploads, kilobits a second; 0: none.
    pub max_kbps: Option<u64>,
    /// When batches may go up, "HH:MM-HH:MM" in UTC; empty: always.
    pub windows: Option<Vec<sync::Window>>,
    /// How often the hub's commands are asked for over HTTPS while MQTT is not up.
    #[serde(default, with = "humantime_serde")]
    pub poll_every: Option<Duration>,
}

impl SyncConfig {
    pub fn enabled(&self) -> bool {
        self.enabled.unwrap_or_else(|| default_of("sync.enabled"))
    }

    /// The sync stage's settings, every unset value from defaults.toml.
    pub fn settings(&self) -> sync::SyncSettings {
        let age = self.batch_age.unwrap_or_else(|| default_duration("sync.batch_age"));
        sync::SyncSettings {
            rules: store::SyncRules {
                require_review: self.require_review.unwrap_or_else(|| default_of("sync.require_review")),
            },
            limits: store::BatchLimits {
                frames: self.batch_frames.unwrap_or_else(|| default_of("sync.batch_frames")),
                bytes: self.batch_bytes.unwrap_or_else(|| default_of("sync.batch_bytes")),
                age_ms: age.as_millis() as i64,
            },
            max_kbps: self.max_kbps.unwrap_or_else(|| default_of("sync.max_kbps")),
            windows: self.windows.clone().unwrap_or_default(),
            poll_every: self.poll_every.unwrap_or_else(|| default_duration("sync.poll_every")),
        }
    }
}

/// A camera's own storage settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraStore {
    /// The zone it watches, for consents scoped to a zone.
    pub zone: Option<String>,
    pub keep_days: Option<u32>,
}

/// A share of the disk, from 0 to 1.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "f64")]
pub struct DiskShare(pub f64);

impl TryFrom<f64> for DiskShare {
    type Error = String;
    fn try_from(x: f64) -> Result<Self, String> {
        if (0.0..=1.0).contains(&x) {
            Ok(DiskShare(x))
        } else {
            Err(format!("{x} is not a fraction: use 0 to 1, e.g. 0.05 for 5 %"))
        }
    }
}

impl StoreConfig {
    pub fn retention(&self) -> store::Retention {
        let share = |v: Option<DiskShare>, key| v.unwrap_or_else(|| default_of(key)).0;
        store::Retention {
            keep_days: self.keep_days.unwrap_or_else(|| default_of("store.keep_days")),
            low_free: share(self.low_free, "store.low_free"),
            high_free: share(self.high_free, "store.high_free"),
            critical_free: share(self.critical_free, "store.critical_free"),
            on_critical: self.on_critical.unwrap_or_else(|| default_of("store.on_critical")),
        }
    }
}

/// A tile grid side, 0 to 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct TileGrid(pub u32);

impl TryFrom<i64> for TileGrid {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        match u32::try_from(n) {
            Ok(n @ 0..=4) => Ok(TileGrid(n)),
            _ => Err(format!("{n} is out of range: expected 0 (no tiles) to 4 (a 4x4 grid)")),
        }
    }
}

/// How the daemon anonymizes frames.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnonymizeConfig {
    /// Where the model files are; unset: /usr/share/obscura/models, then the source tree.
    pub models: Option<PathBuf>,
    /// `auto` (ONNX Runtime when installed, else tract), `tract` or `onnxruntime`.
    pub backend: Option<crate::detectors::BackendArg>,
    /// Find and redact faces.
    pub faces: Option<bool>,
    /// Find and redact licence plates.
    pub plates: Option<bool>,
    /// Face score threshold, 0 to 1.
    pub face_threshold: Option<Fraction>,
    /// Plate score threshold, 0 to 1.
    pub plate_threshold: Option<Fraction>,
    /// Boxes grow by this factor before redaction (1 to 3).
    pub mask_scale: Option<f32>,
    /// `blur`, `pixelate` or `solid`.
    pub mode: Option<ModeName>,
    /// The colour for `solid`, as [R, G, B].
    pub fill: Option<[u8; 3]>,
    /// `ellipse` or `box`.
    pub shape: Option<ShapeName>,
    /// Frames a lost detection stays redacted in video (0 = none).
    pub track_frames: Option<u32>,
    /// A frame whose detection takes longer is dropped, e.g. "2s".
    #[serde(default, with = "humantime_serde")]
    pub deadline: Option<Duration>,
    /// Per-camera overrides, `[anonymize.camera.ID]`.
    #[serde(default)]
    pub camera: std::collections::BTreeMap<String, CameraAnonymize>,
}

/// What one camera may set differently from `[anonymize]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraAnonymize {
    pub mode: Option<ModeName>,
    pub fill: Option<[u8; 3]>,
    pub shape: Option<ShapeName>,
    pub mask_scale: Option<f32>,
    pub track_frames: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeName {
    Blur,
    Pixelate,
    Solid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShapeName {
    Ellipse,
    Box,
}

/// A share from 0 to 1.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "f64")]
pub struct Fraction(pub f32);

impl TryFrom<f64> for Fraction {
    type Error = String;
    fn try_from(x: f64) -> Result<Self, String> {
        if (0.0..1.0).contains(&x) {
            Ok(Fraction(x as f32))
        } else {
            Err(format!("{x} is not a score: expected 0 to 1"))
        }
    }
}

/// A detector input size such as "640x384"; both sides multiples of 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct InputSize {
    pub width: u32,
    pub height: u32,
}

impl TryFrom<String> for InputSize {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let parsed = s.split_once('x').and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)));
        match parsed {
            Some((width, height))
                if width % 32 == 0
                    && height % 32 == 0
                    && (32..=4096).contains(&width)
                    && (32..=4096).contains(&height) =>
            {
                Ok(InputSize { width, height })
            }
            _ => Err(format!(
                "`{s}` is not a detector input size: write WIDTHxHEIGHT, both multiples of 32, e.g. 640x384"
            )),
        }
    }
}

impl fmt::Display for DetectConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = |s: Option<InputSize>| s.map_or("unset".to_owned(), |s| s.to_string());
        let zoom = |z: Option<Zoom>| match z.map_or(0, |z| z.0) {
            0 => "off".to_owned(),
            n => format!("{n} px"),
        };
        write!(
            f,
            "faces {}, plates {}, pre-labels {}, tiles {}, vehicle zoom {}, person zoom {}, {}, video close looks a second: {} people, {} vehicles",
            size(self.face_input),
            size(self.plate_input),
            size(self.prelabel_input),
            match self.tiles.unwrap_or_else(|| default_of("detect.tiles")).0 {
                0 | 1 => "off".to_owned(),
                n => format!("{n}x{n}"),
            },
            zoom(self.vehicle_zoom),
            zoom(self.person_zoom),
            match self.plate_areas.unwrap_or_else(|| default_of("detect.plate_areas")).0 {
                0 => "plate areas off".to_owned(),
                n => format!("plate areas on vehicles under {n} px"),
            },
            self.person_looks.unwrap_or_else(|| default_of("detect.person_looks")).0,
            self.vehicle_looks.unwrap_or_else(|| default_of("detect.vehicle_looks")).0,
        )
    }
}

impl fmt::Display for InputSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// The config after all layers and checks, with every default filled in.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub board: String,
    pub shutdown_timeout: Duration,
    pub listen: SocketAddr,
    /// HTTPS or plain HTTP, decided from `[http]` and `listen`.
    pub tls: Tls,
    /// `[http] origins`, normalised (`scheme://host[:port]`).
    pub origins: Vec<String>,
    /// `[http] trusted_proxies`.
    pub trusted_proxies: Vec<IpAddr>,
    pub log_format: LogFormat,
    pub log_level: String,
    pub queue: usize,
    pub gstreamer: BoardCapture,
    pub detect: DetectConfig,
    pub anonymize: AnonymizeConfig,
    pub store: StoreConfig,
    pub prelabel: PrelabelConfig,
    pub sync: SyncConfig,
    /// `[prelabel.model]`, when set: the pre-label model used instead of NanoDet.
    pub prelabel_model: Option<PrelabelModel>,
    pub cameras: Vec<CameraConfig>,
    /// The layers that were read, for `obscura doctor` and the start-up log.
    pub sources: Vec<String>,
}

/// A config that cannot be used: which layer, and why.
#[derive(Debug)]
pub struct ConfigError {
    pub layer: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config error in {}: {}", self.layer, self.message.trim_end())
    }
}

impl std::error::Error for ConfigError {}

/// One layer's text or values, with a name for errors.
struct Layer {
    name: String,
    table: toml::Table,
}

impl Layer {
    /// Parses TOML text and checks it alone against the schema.
    fn parse(name: String, text: &str) -> Result<Layer, ConfigError> {
        let err = |e: toml::de::Error| ConfigError { layer: name.clone(), message: e.to_string() };
        toml::from_str::<Config>(text).map_err(err)?;
        let table = toml::from_str::<toml::Table>(text).map_err(err)?;
        Ok(Layer { name, table })
    }
}

/// What the environment and command line add to the files.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--config FILE`; without it [`SYSTEM_CONFIG`] is read if it exists.
    pub file: Option<PathBuf>,
    /// `--listen ADDR`, which wins over every layer.
    pub listen: Option<SocketAddr>,
    /// The process environment, as (name, value) pairs.
    pub env: Vec<(String, String)>,
}

/// Reads and checks all layers.
pub fn load(overrides: &Overrides) -> Result<Resolved, ConfigError> {
    let file = match &overrides.file {
        Some(path) => Some(read_file(path)?),
        None if Path::new(SYSTEM_CONFIG).exists() => Some(read_file(Path::new(SYSTEM_CONFIG))?),
        None => None,
    };
    load_layers(file, overrides)
}

/// [`load`] with the config file's text given rather than read: the fuzz target and its
/// corpus replay feed untrusted text through every layer and check as the daemon does.
#[doc(hidden)]
pub fn load_text(text: &str, overrides: &Overrides) -> Result<Resolved, ConfigError> {
    load_layers(Some(Layer::parse("the config text".into(), text)?), overrides)
}

fn load_layers(file: Option<Layer>, overrides: &Overrides) -> Result<Resolved, ConfigError> {
    let defaults = Layer::parse("the embedded defaults".into(), DEFAULTS)?;
    let env = env_layer(&overrides.env)?;

    // The board is named by the later layers but applied below them.
    let board_name = [env.as_ref(), file.as_ref(), Some(&defaults)]
        .into_iter()
        .flatten()
        .find_map(|l| l.table.get("board").and_then(|v| v.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "generic".into());
    let board = board_layer(&board_name)?;

    let layers: Vec<Layer> = [Some(defaults), Some(board), file, env].into_iter().flatten().collect();
    let sources = layers.iter().map(|l| l.name.clone()).collect();
    let mut merged = toml::Table::new();
    for layer in &layers {
        merge(&mut merged, layer.table.clone());
    }
    let config: Config = toml::Value::Table(merged)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError { layer: "the merged config".into(), message: e.to_string() })?;
    config.resolve(overrides.listen, sources)
}

impl Config {
    /// Phase two: checks across keys, and fills in what the layers left out.
    fn resolve(self, listen: Option<SocketAddr>, sources: Vec<String>) -> Result<Resolved, ConfigError> {
        let mut seen = HashSet::new();
        for cam in &self.cameras {
            if !seen.insert(cam.id.as_str()) {
                return Err(ConfigError {
                    layer: "[[camera]]".into(),
                    message: format!("two cameras have the id `{}`; ids must be unique", cam.id),
                });
            }
            if cam.uri.is_some() == cam.pipeline.is_some() {
                return Err(ConfigError {
                    layer: format!("[[camera]] `{}`", cam.id),
                    message: "set exactly one of `uri` or `pipeline`".into(),
                });
            }
        }
        let tables = self
            .anonymize
            .camera
            .keys()
            .map(|id| ("anonymize", id))
            .chain(self.store.camera.keys().map(|id| ("store", id)));
        for (section, id) in tables {
            if !self.cameras.iter().any(|c| c.id.as_str() == id) {
                return Err(ConfigError {
                    layer: format!("[{section}.camera.{id}]"),
                    message: format!("no [[camera]] has the id `{id}`; fix the id or remove the table"),
                });
            }
        }
        let s = &self.store;
        if let (Some(low), Some(high), Some(critical)) = (s.low_free, s.high_free, s.critical_free)
            && !(critical.0 <= low.0 && low.0 <= high.0)
        {
            return Err(ConfigError {
                layer: "[store]".into(),
                message: format!(
                    "the free-space marks must satisfy critical_free ≤ low_free ≤ high_free; got {} ≤ {} ≤ {}",
                    critical.0, low.0, high.0
                ),
            });
        }
        let prelabel_model = self.prelabel.model.as_ref().map(ModelConfig::resolve).transpose()?;
        if let (Some(model), Some(wanted)) = (&prelabel_model, &self.prelabel.classes)
            && let Some(unknown) = wanted.iter().find(|c| !model.classes.contains(c))
        {
            return Err(ConfigError {
                layer: "[prelabel]".into(),
                message: format!(
                    "`classes` names `{unknown}`, which [prelabel.model] `classes` lacks ({}); keep only the model's \
                     classes, or leave `classes` unset for all of them",
                    model.classes.join(", ")
                ),
            });
        }
        let missing =
            |key: &str| ConfigError { layer: "the embedded defaults".into(), message: format!("`{key}` has no value") };
        let listen = listen.or(self.http.listen).ok_or_else(|| missing("http.listen"))?;
        let origins = (self.http.origins.iter().flatten())
            .map(|o| web::client::parse_origin(o))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| ConfigError { layer: "[http] origins".into(), message })?;
        Ok(Resolved {
            board: self.board.ok_or_else(|| missing("board"))?,
            shutdown_timeout: self.shutdown_timeout.ok_or_else(|| missing("shutdown_timeout"))?,
            listen,
            tls: self.http.tls(listen)?,
            origins,
            trusted_proxies: self.http.trusted_proxies.unwrap_or_else(|| default_of("http.trusted_proxies")),
            log_format: self.log.format.unwrap_or_else(|| default_of("log.format")),
            log_level: self.log.level.unwrap_or_else(|| default_of("log.level")),
            queue: self.capture.queue.unwrap_or_else(|| default_of("capture.queue")).0,
            gstreamer: self.gstreamer,
            detect: self.detect,
            anonymize: self.anonymize,
            store: self.store,
            prelabel: self.prelabel,
            sync: self.sync,
            prelabel_model,
            cameras: self.cameras,
            sources,
        })
    }
}

fn read_file(path: &Path) -> Result<Layer, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError { layer: path.display().to_string(), message: format!("cannot read it: {e}") })?;
    Layer::parse(path.display().to_string(), &text)
}

fn board_layer(name: &str) -> Result<Layer, ConfigError> {
    if let Some((_, text)) = BOARDS.iter().find(|(n, _)| *n == name) {
        return Layer::parse(format!("board profile `{name}`"), text);
    }
    if name.ends_with(".toml") || name.contains('/') {
        let layer = read_file(Path::new(name))?;
        return Ok(Layer { name: format!("board profile {name}"), ..layer });
    }
    let known: Vec<&str> = BOARDS.iter().map(|(n, _)| *n).collect();
    Err(ConfigError {
        layer: "`board`".into(),
        message: format!(
            "unknown board profile `{name}`; use one of {} or a path to a .toml profile",
            known.join(", ")
        ),
    })
}

/// The most levels an `OBSCURA_*` variable's name may have.
const MAX_ENV_DEPTH: usize = 8;

/// `OBSCURA_HTTP__LISTEN=0.0.0.0:80` sets `http.listen`: `__` separates levels. Each
/// variable is checked alone so an error names it.
fn env_layer(env: &[(String, String)]) -> Result<Option<Layer>, ConfigError> {
    let mut table = toml::Table::new();
    for (name, value) in env {
        let Some(key) = name.strip_prefix("OBSCURA_") else {
            continue;
        };
        if FLAG_VARS.contains(&name.as_str()) {
            continue;
        }
        let path: Vec<String> = key.split("__").map(|p| p.to_ascii_lowercase()).collect();
        // No setting is more than a few levels deep; a name of hundreds of `__` would nest
        // as deep and overflow the stack when checked (found by fuzzing, issue 20).
        if path.len() > MAX_ENV_DEPTH {
            return Err(ConfigError {
                layer: format!("environment variable {name}"),
                message: format!(
                    "it names {} levels (`__` separates them), and no setting is deeper than {MAX_ENV_DEPTH}: check the variable's name",
                    path.len()
                ),
            });
        }
        // A value that reads as TOML (numbers, booleans, arrays) is taken as such; anything
        // else is a string, so OBSCURA_BOARD=rpi5 needs no quotes.
        let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        let mut single = toml::Table::new();
        let mut leaf = &mut single;
        for part in &path[..path.len() - 1] {
            leaf = leaf
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .expect("just inserted a table");
        }
        leaf.insert(path[path.len() - 1].clone(), parsed);
        toml::Value::Table(single.clone()).try_into::<Config>().map_err(|e| ConfigError {
            layer: format!("environment variable {name}"),
            message: format!("{} (it sets `{}`)", e.to_string().trim_end(), path.join(".")),
        })?;
        merge(&mut table, single);
    }
    Ok((!table.is_empty()).then(|| Layer { name: "OBSCURA_* environment variables".into(), table }))
}

/// Merges `over` into `base`: tables merge key by key, anything else is replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("obscura.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Resolved, String> {
        let (_dir, path) = write(text);
        let overrides = Overrides {
            file: Some(path),
            listen: None,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        load(&overrides).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_alone_make_a_working_config() {
        let config = load_text("", &[]).unwrap();
        assert_eq!(config.board, "generic");
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.shutdown_timeout, Duration::from_secs(10));
        assert!(config.cameras.is_empty());
        assert!(config.gstreamer.required_elements.contains(&"videoconvert".to_owned()));
    }

    #[test]
    fn layers_apply_in_order_board_then_file_then_env() {
        let config = load_text(
            "board = \"rpi4\"\n[detect]\nplate_input = \"320x320\"\n[http]\nlisten = \"127.0.0.1:9000\"\n",
            &[("OBSCURA_HTTP__LISTEN", "127.0.0.1:9100"), ("OBSCURA_LOG__FORMAT", "json"), ("PATH", "/bin")],
        )
        .unwrap();
        assert_eq!(config.board, "rpi4");
        // From the board profile…
        assert_eq!(config.gstreamer.prefer_decoders, ["v4l2h264dec", "v4l2jpegdec"]);
        assert_eq!(config.detect.face_input.unwrap().to_string(), "480x288");
        // …overridden by the file…
        assert_eq!(config.detect.plate_input.unwrap().to_string(), "320x320");
        // …overridden by the environment.
        assert_eq!(config.listen, "127.0.0.1:9100".parse().unwrap());
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.sources.len(), 4, "{:?}", config.sources);
    }

    #[test]
    fn the_environment_can_pick_the_board() {
        let config = load_text("", &[("OBSCURA_BOARD", "jetson-orin")]).unwrap();
        assert!(config.gstreamer.csi_source.starts_with("nvarguscamerasrc"));
    }

    #[test]
    fn every_shipped_board_profile_parses() {
        for (name, _) in BOARDS {
            let config = load_text(&format!("board = \"{name}\""), &[]).unwrap();
            assert!(!config.gstreamer.required_elements.is_empty(), "{name}");
            assert!(config.detect.face_input.is_some(), "{name}");
        }
    }

    #[test]
    fn a_typo_names_the_file_line_and_key() {
        let (_dir, path) = write(
            "[http]\nlisten = \"127.0.0.1:1\"\n\n[[camera]]\nid = \"gate\"\nuri = \"test://\"\nstall_timout = \"5s\"\n",
        );
        let err = load(&Overrides { file: Some(path.clone()), ..Default::default() }).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("line 7"), "{err}");
        assert!(err.contains("unknown field `stall_timout`"), "{err}");
    }

    #[test]
    fn a_bad_value_names_the_key_and_the_reason() {
        let err = load_text("[http]\nlisten = \"localhost\"\n", &[]).unwrap_err();
        assert!(err.contains("line 2") && err.contains("listen") && err.contains("invalid socket address"), "{err}");
        let err = load_text("[detect]\nface_input = \"640x380\"\n", &[]).unwrap_err();
        assert!(err.contains("multiples of 32"), "{err}");
        let err = load_text("[capture]\nqueue = 0\n", &[]).unwrap_err();
        assert!(err.contains("expected 1 to 1024"), "{err}");
    }

    #[test]
    fn a_bad_environment_variable_is_named() {
        let err = load_text("", &[("OBSCURA_HTTP__LISTN", "x")]).unwrap_err();
        assert!(err.contains("environment variable OBSCURA_HTTP__LISTN"), "{err}");
        assert!(err.contains("unknown field `listn`"), "{err}");
        // Flags' variables are not config keys.
        load_text("", &[("OBSCURA_STATE_DIR", "/tmp")]).unwrap();
    }

    #[test]
    fn zooms_are_checked_and_can_be_turned_off() {
        let err = load_text("[detect]\nperson_zoom = 100\n", &[]).unwrap_err();
        assert!(err.contains("person_zoom") && err.contains("0 (off) or a multiple of 32 from 128 to 1024"), "{err}");
        let config = load_text("[detect]\nvehicle_zoom = 0\n", &[("OBSCURA_DETECT__PERSON_ZOOM", "384")]).unwrap();
        assert_eq!((config.detect.vehicle_zoom, config.detect.person_zoom), (Some(Zoom(0)), Some(Zoom(384))));
        assert!(config.detect.to_string().contains("vehicle zoom off, person zoom 384 px"), "{}", config.detect);
    }

    #[test]
    fn plate_areas_default_on_and_are_checked() {
        let config = load_text("", &[]).unwrap();
        assert_eq!(config.detect.plate_areas, Some(PlateAreas(96)));
        let err = load_text("[detect]\nplate_areas = -1\n", &[]).unwrap_err();
        assert!(err.contains("plate_areas") && err.contains("0 (off) to 1024"), "{err}");
        let config = load_text("[detect]\nplate_areas = 0\n", &[]).unwrap();
        assert!(config.detect.to_string().contains("plate areas off"), "{}", config.detect);
    }

    #[test]
    fn close_looks_a_second_default_and_are_checked() {
        let config = load_text("", &[]).unwrap();
        assert_eq!(
            (config.detect.person_looks, config.detect.vehicle_looks),
            (Some(LooksPerSecond(100.0)), Some(LooksPerSecond(12.5)))
        );
        assert!(config.detect.to_string().contains("100 people, 12.5 vehicles"), "{}", config.detect);
        let err = load_text("[detect]\nvehicle_looks = -1\n", &[]).unwrap_err();
        assert!(err.contains("vehicle_looks") && err.contains("0 to 1000"), "{err}");
        let config = load_text("board = \"rpi5\"", &[]).unwrap();
        assert_eq!(config.detect.vehicle_looks, Some(LooksPerSecond(6.25)));
    }

    #[test]
    fn an_unknown_board_lists_the_known_ones() {
        let err = load_text("board = \"rpi3\"", &[]).unwrap_err();
        assert!(err.contains("unknown board profile `rpi3`") && err.contains("jetson-orin"), "{err}");
    }

    #[test]
    fn duplicate_camera_ids_are_refused() {
        let err =
            load_text("[[camera]]\nid = \"a\"\nuri = \"test://\"\n[[camera]]\nid = \"a\"\nuri = \"test://\"\n", &[])
                .unwrap_err();
        assert!(err.contains("two cameras have the id `a`"), "{err}");
    }

    #[test]
    fn a_camera_needs_exactly_one_source() {
        let err = load_text("[[camera]]\nid = \"a\"\n", &[]).unwrap_err();
        assert!(err.contains("`a`") && err.contains("exactly one of `uri` or `pipeline`"), "{err}");
    }

    #[test]
    fn per_camera_anonymize_overrides_must_name_a_camera() {
        let ok = "[[camera]]\nid = \"gate\"\nuri = \"test://\"\n[anonymize.camera.gate]\nmode = \"pixelate\"\n";
        let config = load_text(ok, &[]).unwrap();
        assert_eq!(config.anonymize.camera["gate"].mode, Some(ModeName::Pixelate));
        let err = load_text("[anonymize.camera.gaet]\nmode = \"solid\"\n", &[]).unwrap_err();
        assert!(err.contains("[anonymize.camera.gaet]") && err.contains("no [[camera]] has the id `gaet`"), "{err}");
        let err = load_text("[anonymize.camera.x]\nmodes = \"solid\"\n", &[]).unwrap_err();
        assert!(err.contains("unknown field `modes`"), "{err}");
    }

    #[test]
    fn a_prelabel_model_of_ones_own_takes_its_decodings_defaults() {
        let sha = "ab".repeat(32);
        let text = format!(
            "[prelabel.model]\npath = \"/srv/ppe.onnx\"\ndecode = \"yolo\"\nclasses = [\"helmet\", \"vest\"]\n\
             input = \"320x320\"\nsha256 = \"{}\"\n",
            sha.to_uppercase()
        );
        let model = load_text(&text, &[]).unwrap().prelabel_model.unwrap();
        assert_eq!((model.path.as_path(), model.sha256.as_deref()), (Path::new("/srv/ppe.onnx"), Some(sha.as_str())));
        assert_eq!(model.classes, ["helmet", "vest"]);
        let yolo = onnx::Convention { input: onnx::InputSize { width: 320, height: 320 }, ..onnx::Convention::yolo() };
        assert_eq!(model.convention, yolo);
        // NanoDet-Plus with its own normalisation, its strides and class names from the
        // environment, and the COCO shorthand.
        let config = load_text(
            "[prelabel]\nclasses = [\"cat\"]\n[prelabel.model]\npath = \"/srv/plus.onnx\"\ndecode = \"nanodet-plus\"\n\
             channels = \"rgb\"\nmean = [0, 0, 0]\nstd = [1.5, 2, 255]\n",
            &[("OBSCURA_PRELABEL__MODEL__CLASSES", "coco"), ("OBSCURA_PRELABEL__MODEL__STRIDES", "[8, 16, 32]")],
        )
        .unwrap();
        let model = config.prelabel_model.unwrap();
        assert_eq!(model.classes.len(), 80);
        assert_eq!(
            model.convention,
            onnx::Convention {
                channels: onnx::Channels::Rgb,
                mean: [0.0; 3],
                std: [1.5, 2.0, 255.0],
                decoding: onnx::Decoding::NanoDetPlus { strides: vec![8, 16, 32], reg_max: 7 },
                ..onnx::Convention::nanodet()
            }
        );
        // Without the section, the shipped NanoDet.
        assert!(load_text("", &[]).unwrap().prelabel_model.is_none());
    }

    #[test]
    fn a_bad_prelabel_model_names_the_key_and_the_fix() {
        let model = "[prelabel.model]\npath = \"/srv/m.onnx\"\nclasses = [\"a\", \"b\"]\n";
        let err = load_text(&format!("{model}decode = \"yolov8\"\n"), &[]).unwrap_err();
        assert!(err.contains("line 4") && err.contains("unknown variant `yolov8`"), "{err}");
        assert!(err.contains("expected one of `yolo`, `nanodet`, `nanodet-plus`"), "{err}");
        let err = load_text(model, &[]).unwrap_err();
        assert!(err.contains("[prelabel.model]: `decode` is missing"), "{err}");
        let err = load_text(&format!("{model}decode = \"yolo\"\nsha256 = \"AB01\"\n"), &[]).unwrap_err();
        assert!(err.contains("line 5") && err.contains("`AB01` is not a SHA-256: write its 64 hex digits"), "{err}");
        let err = load_text(&format!("{model}decode = \"yolo\"\nstrides = [8, 16]\n"), &[]).unwrap_err();
        assert!(err.contains("`strides` and `reg_max` apply to nanodet decoding only"), "{err}");
        let err = load_text(&format!("{model}decode = \"nanodet\"\nstd = [57, 0, 58]\n"), &[]).unwrap_err();
        assert!(err.contains("std") && err.contains("three numbers above 0"), "{err}");
        let err = load_text("[prelabel.model]\nclasses = [\"a\", \"a\"]\n", &[]).unwrap_err();
        assert!(err.contains("class `a` is listed twice"), "{err}");
        let err = load_text("[prelabel.model]\nclasses = \"voc\"\n", &[]).unwrap_err();
        assert!(err.contains("`voc` names no class list"), "{err}");
        let err = load_text(&format!("[prelabel]\nclasses = [\"car\"]\n{model}decode = \"yolo\"\n"), &[]).unwrap_err();
        assert!(
            err.contains("[prelabel]: `classes` names `car`, which [prelabel.model] `classes` lacks (a, b)"),
            "{err}"
        );
        let err = load_text("[prelabel.model]\npaht = \"/srv/m.onnx\"\n", &[]).unwrap_err();
        assert!(err.contains("unknown field `paht`"), "{err}");
    }

    #[test]
    fn https_is_the_default_beyond_loopback_and_plain_http_there_must_be_asked_for() {
        // Issue 6, point 9.
        assert_eq!(load_text("", &[]).unwrap().tls, Tls::Off, "loopback stays plain HTTP");
        let lan = load_text("[http]\nlisten = \"0.0.0.0:8443\"\n", &[]).unwrap();
        assert_eq!(lan.tls, Tls::SelfSigned);
        assert_eq!(load_text("[http]\ntls = \"on\"\n", &[]).unwrap().tls, Tls::SelfSigned);
        let own = "[http]\ntls_cert = \"/etc/obscura/cert.pem\"\ntls_key = \"/etc/obscura/key.pem\"\n";
        assert_eq!(
            load_text(own, &[]).unwrap().tls,
            Tls::Files { cert: "/etc/obscura/cert.pem".into(), key: "/etc/obscura/key.pem".into() },
            "a certificate of one's own means HTTPS, on loopback too"
        );

        let plain = "[http]\nlisten = \"0.0.0.0:8443\"\ntls = \"off\"\n";
        let err = load_text(plain, &[]).unwrap_err();
        assert!(
            err.contains(
                "[http]: plain HTTP on 0.0.0.0:8443 would send passwords in clear: set [http] tls = \"auto\" or, \
                 behind your own TLS proxy, allow_plain_http = true"
            ),
            "{err}"
        );
        let proxied = load_text(plain, &[("OBSCURA_HTTP__ALLOW_PLAIN_HTTP", "true")]).unwrap();
        assert_eq!(proxied.tls, Tls::Off);

        let err = load_text("[http]\ntls_cert = \"/etc/obscura/cert.pem\"\n", &[]).unwrap_err();
        assert!(err.contains("set both `tls_cert` and `tls_key`"), "{err}");
        let err = load_text(&format!("{own}tls = \"off\"\n"), &[]).unwrap_err();
        assert!(err.contains("`tls_cert` and `tls_key` are set but `tls` is \"off\""), "{err}");
        let err = load_text("[http]\ntls = \"yes\"\n", &[]).unwrap_err();
        assert!(err.contains("line 2") && err.contains("expected one of `auto`, `on`, `off`"), "{err}");
    }

    #[test]
    fn origins_and_trusted_proxies_are_read_and_checked() {
        // Issue 15, items 11 and 15.
        let none = load_text("", &[]).unwrap();
        assert!(none.origins.is_empty() && none.trusted_proxies.is_empty(), "trust nothing by default");
        let set = load_text(
            "[http]\norigins = [\"https://Obscura.example.org/\"]\ntrusted_proxies = [\"127.0.0.1\", \"::1\"]\n",
            &[],
        )
        .unwrap();
        assert_eq!(set.origins, ["https://obscura.example.org"]);
        assert_eq!(set.trusted_proxies, ["127.0.0.1".parse::<IpAddr>().unwrap(), "::1".parse().unwrap()]);
        let err = load_text("[http]\norigins = [\"obscura.example.org\"]\n", &[]).unwrap_err();
        assert!(err.contains("[http] origins") && err.contains("e.g. https://"), "{err}");
        let err = load_text("[http]\ntrusted_proxies = [\"10.0.0.0/8\"]\n", &[]).unwrap_err();
        assert!(err.contains("trusted_proxies"), "{err}");
    }

    #[test]
    fn a_missing_config_file_is_named() {
        let err = load(&Overrides { file: Some("/nonexistent/obscura.toml".into()), ..Default::default() })
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/obscura.toml: cannot read it"), "{err}");
    }

    /// Every `"section.key"` the code reads a default for is written in defaults.toml and
    /// parses; an empty layer resolves to exactly those values.
    #[test]
    fn every_default_the_code_reads_is_in_defaults_toml() {
        let defaults: toml::Table = toml::from_str(DEFAULTS).unwrap();
        let source = [include_str!("config.rs"), include_str!("daemon.rs")].concat();
        let keys: Vec<&str> = source
            .split('"')
            .filter(|t| {
                t.split_once('.').is_some_and(|(section, key)| {
                    defaults.get(section).is_some_and(toml::Value::is_table)
                        && !key.is_empty()
                        && !key.contains([' ', '.'])
                })
            })
            .collect();
        assert!(keys.len() > 20, "found {keys:?}");
        for key in &keys {
            let (section, name) = key.split_once('.').unwrap();
            assert!(
                defaults[section].get(name).is_some(),
                "the code reads a default for `{key}`; write it in defaults.toml"
            );
        }
        let empty: Config = toml::from_str("").unwrap();
        let retention = empty.store.retention();
        assert_eq!((retention.keep_days, retention.low_free, retention.critical_free), (30, 0.05, 0.02));
        assert!(empty.detect.to_string().contains("plate areas on vehicles under 96 px"), "{}", empty.detect);
        assert_eq!(default_duration("store.retention_every"), Duration::from_secs(600));
    }
}
