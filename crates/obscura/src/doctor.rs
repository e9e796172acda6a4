//! `obscura doctor`: everything a field engineer checks by hand on a new box, with the
//! fix for each problem. Exits non-zero when anything failed.

use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use capture::probe;

use crate::config::{self, Overrides};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Default)]
struct Report {
    failures: usize,
    warnings: usize,
}

impl Report {
    fn line(&mut self, level: Level, what: &str, detail: impl AsRef<str>) {
        let tag = match level {
            Level::Ok => "ok  ",
            Level::Warn => {
                self.warnings += 1;
                "warn"
            }
            Level::Fail => {
                self.failures += 1;
                "FAIL"
            }
        };
        println!("  {tag}  {what:<22} {}", detail.as_ref());
    }
}

pub fn main(overrides: &Overrides, state_dir: &Path) -> anyhow::Result<ExitCode> {
    println!("obscura doctor {}", env!("CARGO_PKG_VERSION"));
    let mut report = Report::default();

    let config = match config::load(overrides) {
        Ok(config) => {
            report.line(
                Level::Ok,
                "config",
                format!(
                    "board `{}`, {} camera(s); layers: {}",
                    config.board,
                    config.cameras.len(),
                    config.sources.join(" → ")
                ),
            );
            report.line(Level::Ok, "detector inputs", config.detect.to_string());
            Some(config)
        }
        Err(e) => {
            report.line(Level::Fail, "config", e.to_string());
            None
        }
    };

    match config.as_ref().map(|c| capture::init(&c.gstreamer)) {
        Some(Err(e)) => report.line(Level::Fail, "gstreamer", format!("{e}; install gstreamer1.0-plugins-base")),
        Some(Ok(())) => report.line(Level::Ok, "gstreamer", probe::gstreamer_version()),
        None => {}
    }

    if let Some(config) = &config {
        for element in &config.gstreamer.required_elements {
            if probe::has_element(element) {
                report.line(Level::Ok, &format!("element {element}"), "installed");
            } else {
                report.line(
                    Level::Fail,
                    &format!("element {element}"),
                    format!(
                        "not installed; board `{}` needs it: install {}",
                        config.board,
                        probe::package_for(element)
                    ),
                );
            }
        }
        if config.cameras.is_empty() {
            report.line(Level::Warn, "cameras", "none configured; add a [[camera]] table to the config");
        }
        for cam in &config.cameras {
            let what = format!("camera {}", cam.id);
            if !cam.enabled {
                report.line(Level::Ok, &what, "disabled in the config");
                continue;
            }
            match probe::check_camera(cam, &config.gstreamer) {
                Ok(found) => report.line(Level::Ok, &what, found),
                Err(e) => report.line(Level::Fail, &what, e.to_string()),
            }
        }
    }

    match onnx::find_library() {
        Some(library) => report.line(Level::Ok, "inference", format!("ONNX Runtime ({})", library.display())),
        None => report.line(
            Level::Warn,
            "inference",
            "tract only (pure Rust, 2-4x slower on x86-64); scripts/deps installs ONNX Runtime",
        ),
    }
    check_models(&mut report, config.as_ref());
    if let Some(config) = &config {
        check_https(&mut report, config, state_dir);
    }

    let devices = probe::video_devices();
    if devices.is_empty() {
        report.line(Level::Ok, "video devices", "none (no USB or CSI camera is attached through V4L2)");
    } else {
        let names: Vec<String> = devices.iter().map(|d| d.display().to_string()).collect();
        report.line(Level::Ok, "video devices", names.join(", "));
    }

    check_disk(&mut report, state_dir);
    check_clock(&mut report);
    if let Some(config) = &config {
        check_sync(&mut report, config, state_dir);
    }

    if report.failures == 0 {
        println!("All checks passed ({} warning(s)).", report.warnings);
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{} problem(s) to fix, {} warning(s).", report.failures, report.warnings);
        Ok(ExitCode::FAILURE)
    }
}

/// The box's sync identity and where it stands with its hub. Reads only: a box never
/// enrolled has no key yet, and doctor does not make one.
fn check_sync(report: &mut Report, config: &config::Resolved, state_dir: &Path) {
    if !config.sync.enabled() {
        return report.line(Level::Ok, "sync", "off ([sync] enabled = false)");
    }
    let key_path = state_dir.join(sync::KEY_FILE);
    if key_path.exists() {
        match wire::keyfile::load_or_create(&key_path, "the hub knows this box by it") {
            Ok((key, _)) => report.line(Level::Ok, "sync key", wire::keyfile::fingerprint(&key)),
            Err(e) => report.line(Level::Fail, "sync key", e.to_string()),
        }
    }
    match sync::Enrolment::load(state_dir) {
        Ok(None) => report.line(
            Level::Ok,
            "sync",
            "not enrolled: `obscura sync enrol --hub https://HOST:PORT --hub-fingerprint SHA256:…` to send to a hub",
        ),
        Ok(Some(e)) => {
            let (level, what) = match e.state {
                wire::v1::DeviceState::Approved => (Level::Ok, "approved"),
                wire::v1::DeviceState::Pending => {
                    (Level::Warn, "pending: approve it on the hub (`obscura hub devices approve ID`)")
                }
                wire::v1::DeviceState::Revoked => {
                    (Level::Warn, "revoked: the hub refuses this box; ask its operator, then enrol again")
                }
            };
            report.line(level, "sync", format!("{} ({}, pinned {}): {what}", e.hub, e.hub_id, e.fingerprint));
            if let Some(access) = e.mqtt.as_ref().filter(|_| e.state == wire::v1::DeviceState::Approved) {
                let (level, what) = broker_reachable(&access.broker);
                report.line(level, "sync mqtt", what);
            }
        }
        Err(e) => report.line(Level::Fail, "sync", e.to_string()),
    }
}

/// Whether the broker the hub gave answers on TCP (the session itself is the daemon's).
fn broker_reachable(broker: &str) -> (Level, String) {
    use std::net::ToSocketAddrs;
    let addr = match broker.parse::<wire::mqtt::BrokerAddr>() {
        Ok(addr) => addr,
        Err(e) => return (Level::Fail, format!("the hub gave an unusable broker address: {e}")),
    };
    let reached = (addr.host.as_str(), addr.port).to_socket_addrs().ok().and_then(|mut all| {
        all.find(|a| std::net::TcpStream::connect_timeout(a, std::time::Duration::from_secs(2)).is_ok())
    });
    match reached {
        Some(_) => (Level::Ok, format!("{broker} answers")),
        None => (
            Level::Warn,
            format!(
                "{broker} does not answer: commands are polled over HTTPS meanwhile; check the network to the \
                 hub's broker (port {})",
                addr.port
            ),
        ),
    }
}

/// Every shipped model is present and matches its SHA-256.
fn check_models(report: &mut Report, config: Option<&config::Resolved>) {
    let dir = match crate::detectors::models_dir(config.and_then(|c| c.anonymize.models.as_deref())) {
        Ok(dir) => dir,
        Err(e) => return report.line(Level::Fail, "models", e.to_string()),
    };
    for file in ["centerface.onnx", "plate_det.onnx"] {
        match onnx::OnnxModel::load(&dir, file, &onnx::Backend::Tract) {
            Ok(model) => {
                report.line(Level::Ok, &format!("model {file}"), format!("SHA-256 {}…", &model.sha256()[..16]))
            }
            Err(e) => report.line(Level::Fail, &format!("model {file}"), e.to_string()),
        }
    }
}

/// HTTPS or not, and the certificate's fingerprint, names and end, so the fingerprint
/// can be compared with what a tablet's browser shows.
fn check_https(report: &mut Report, config: &config::Resolved, state_dir: &Path) {
    let listen = config.listen;
    let (cert, key) = match &config.tls {
        config::Tls::Off if listen.ip().is_loopback() => {
            return report.line(Level::Ok, "https", format!("off: plain HTTP on {listen}, loopback only"));
        }
        config::Tls::Off => {
            return report.line(
                Level::Warn,
                "https",
                format!("off: plain HTTP on {listen} ([http] allow_plain_http); safe only behind your own TLS proxy"),
            );
        }
        config::Tls::Files { cert, key } => {
            report.line(Level::Ok, "https", format!("on {listen}, with your certificate ([http] tls_cert)"));
            (cert.clone(), key.clone())
        }
        config::Tls::SelfSigned => {
            let dir = state_dir.join("tls");
            let (cert, key) = (dir.join(web::tls::CERT_FILE), dir.join(web::tls::KEY_FILE));
            if !cert.exists() || !key.exists() {
                let names = web::tls::host_names().join(", ");
                return report.line(
                    Level::Ok,
                    "https",
                    format!(
                        "on {listen}; the box's own certificate is made at first start in {} for {names}, and \
                         `obscura run` prints its fingerprint",
                        dir.display()
                    ),
                );
            }
            report.line(Level::Ok, "https", format!("on {listen}, with the box's own certificate"));
            (cert, key)
        }
    };
    let own = config.tls == config::Tls::SelfSigned;
    let fix = |key: &str| if own { String::new() } else { format!("; check [http] {key}") };
    let info = match web::tls::inspect(&cert) {
        Ok(info) => info,
        Err(e) => return report.line(Level::Fail, "tls certificate", format!("{e}{}", fix("tls_cert"))),
    };
    report.line(Level::Ok, "tls fingerprint", format!("SHA-256 {}", info.fingerprint));
    // The box's own root: what tablets install, and what a person checks before that.
    if own {
        let root = cert.parent().unwrap_or(&cert).join(web::tls::ROOT_FILE);
        match web::tls::inspect(&root) {
            Ok(root_info) => report.line(
                Level::Ok,
                "tls root",
                format!(
                    "SHA-256 {}; {}; valid until {}; tablets install it from /trust",
                    root_info.fingerprint,
                    root.display(),
                    root_info.expires()
                ),
            ),
            Err(_) => report.line(
                Level::Warn,
                "tls root",
                "none yet (a box from before the root): the next start makes one and signs a new certificate \
                 with it; tablets then trust the box once more, by its root (/trust)",
            ),
        }
    }
    let detail = format!("{}; for {}; valid until {}", cert.display(), info.names.join(", "), info.expires());
    let days = info.days_left();
    match days {
        ..0 if own => {
            report.line(Level::Warn, "tls certificate", format!("{detail}: ended; the next start makes a new one"))
        }
        ..0 => report.line(Level::Fail, "tls certificate", format!("{detail}: ended; replace it ([http] tls_cert)")),
        _ if days <= web::tls::RENEW_WITHIN_DAYS && own => {
            report.line(Level::Warn, "tls certificate", format!("{detail}: ends soon; the next start makes a new one"))
        }
        _ if days <= web::tls::RENEW_WITHIN_DAYS => {
            report.line(Level::Warn, "tls certificate", format!("{detail}: ends in {days} day(s); replace it"))
        }
        _ => report.line(Level::Ok, "tls certificate", detail),
    }
    // A box renamed after its certificate was made is not found under its new name.
    if own
        && let Some(host) = web::tls::host_names().into_iter().find(|n| n.ends_with(".local"))
        && !info.names.contains(&host)
    {
        report.line(
            Level::Warn,
            "tls names",
            format!(
                "the certificate is not for {host} (renamed box?); the next start makes a new one, signed by \
                 the box's root ({}), which tablets that trust the root accept",
                cert.parent().unwrap_or(&cert).display()
            ),
        );
    }
    // The key is the daemon's: another user may not read it, which is no fault.
    match web::tls::load(&cert, &key) {
        Ok(_) => report.line(Level::Ok, "tls key", format!("{}, the certificate's own", key.display())),
        Err(web::tls::TlsError::Read { error, .. }) if error.kind() == std::io::ErrorKind::PermissionDenied => report
            .line(
                Level::Warn,
                "tls key",
                format!("cannot read {} as this user; run doctor as the daemon's user to check it", key.display()),
            ),
        Err(e) => report.line(Level::Fail, "tls key", format!("{e}{}", fix("tls_key"))),
    }
}

const GIB: u64 = 1 << 30;

fn check_disk(report: &mut Report, state_dir: &Path) {
    // The state directory may not exist before the first run; measure where it will be.
    let existing = state_dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    let snap = health::SystemSampler::new(existing).sample();
    let free = snap.disk_free_bytes;
    let detail = format!("{:.1} GiB free for {}", free as f64 / GIB as f64, state_dir.display());
    if snap.disk_total_bytes == 0 {
        report.line(Level::Warn, "disk", format!("cannot read free space for {}", state_dir.display()));
    } else if free < GIB {
        report.line(Level::Fail, "disk", format!("{detail}; free space or move --state-dir to a larger disk"));
    } else if free < 5 * GIB {
        report.line(Level::Warn, "disk", format!("{detail}; retention will have little room"));
    } else {
        report.line(Level::Ok, "disk", detail);
    }
}

fn check_clock(report: &mut Report) {
    // A clock earlier than this binary's own file is certainly wrong (a Pi without RTC
    // boots in the past until NTP answers); consent windows and retention depend on it.
    let built = std::env::current_exe().and_then(|p| p.metadata()).and_then(|m| m.modified()).ok();
    if let Some(built) = built
        && SystemTime::now() < built
    {
        report.line(
            Level::Fail,
            "clock",
            "the clock is earlier than this binary was built; set the time or enable NTP (timedatectl set-ntp true)",
        );
        return;
    }
    let synced = std::process::Command::new("timedatectl")
        .args(["show", "--property=NTPSynchronized", "--value"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "yes");
    match synced {
        Some(true) => report.line(Level::Ok, "clock", "synchronised by NTP"),
        Some(false) => report.line(Level::Warn, "clock", "not synchronised; run `timedatectl set-ntp true`"),
        None => {
            report.line(Level::Warn, "clock", "cannot confirm synchronisation (no timedatectl); check that NTP runs")
        }
    }
}
