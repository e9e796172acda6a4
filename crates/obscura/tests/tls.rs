//! HTTPS by default (issue 6, point 9): the real `obscura run` with its own certificate
//! or the operator's, checked from outside with real clients (curl and openssl, as a
//! user checking the box would).

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Loads no pre-label model and opens no camera: only the web side matters here.
const CONFIG: &str = "[prelabel]\nenabled = false\n";

mod common;

use common::{Daemon, obscura};

/// `obscura run` in `dir` (loopback, a free port).
fn start(dir: &Path, config: &str) -> Daemon {
    Daemon::spawn(dir, config, &[])
}

/// The port and fingerprint of the console line `  https://ADDR certificate SHA-256 FP`.
fn https(daemon: &mut Daemon) -> (u16, String) {
    let (addr, fingerprint) = daemon.wait_for("certificate line", 60, |line| {
        let rest = line.strip_prefix("  https://")?;
        let (addr, fingerprint) = rest.split_once(" certificate SHA-256 ")?;
        Some((addr.parse::<std::net::SocketAddr>().unwrap(), fingerprint.to_owned()))
    });
    assert!(addr.ip().is_loopback(), "{addr}");
    daemon.wait_for("listening line", 60, |line| line.contains(&format!("listening on https://{addr}")).then_some(()));
    (addr.port(), fingerprint)
}

/// SIGTERM, and a clean exit.
fn stop(mut daemon: Daemon) {
    let status = daemon.terminate();
    assert!(status.success(), "{}", daemon.log.join("\n"));
}

/// `obscura run` with `config` that must fail at start-up; its stderr.
fn refused(dir: &Path, config: &str, listen: &str) -> String {
    std::fs::write(dir.join("obscura.toml"), config).unwrap();
    let out = run(obscura()
        .arg("run")
        .arg("--config")
        .arg(dir.join("obscura.toml"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--listen", listen]));
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {cmd:?} (install it): {e}"))
}

/// curl trusting only `ca`: its status line and headers, or its error.
fn curl(ca: &Path, url: &str) -> Result<String, String> {
    let out = run(Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "/dev/null", "-D", "-"])
        .arg("--cacert")
        .arg(ca)
        .arg(url));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The SHA-256 fingerprint openssl reads from a PEM certificate.
fn openssl_fingerprint(pem: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), pem).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // "sha256 Fingerprint=AB:CD:…"
    text.trim().split_once('=').unwrap_or_else(|| panic!("openssl said {text}")).1.to_owned()
}

/// The certificate the server at `port` presents, as openssl's client receives it.
fn served_fingerprint(port: u16) -> String {
    let out = run(Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", "localhost"]));
    openssl_fingerprint(&out.stdout)
}

/// The root fingerprint of the console line `  https://ADDR root SHA-256 FP`, printed
/// right after the certificate line (so [`https`] may have read it already).
fn root_line(daemon: &mut Daemon) -> String {
    let pick = |line: &str| Some(line.strip_prefix("  https://")?.split_once(" root SHA-256 ")?.1.to_owned());
    match daemon.log.iter().find_map(|line| pick(line)) {
        Some(root) => root,
        None => daemon.wait_for("root line", 60, pick),
    }
}

#[test]
fn https_with_the_boxs_own_certificate_checks_out_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{CONFIG}[http]\ntls = \"on\"\n");
    let mut daemon = start(dir.path(), &config);
    let (port, printed) = https(&mut daemon);
    let root_printed = root_line(&mut daemon);
    // The first-start message, printed before the server listens, shows the root's
    // fingerprint under the setup code: the root is what tablets trust.
    let first_start = daemon.log.iter().position(|l| l.contains("shows this SHA-256 fingerprint for its root"));
    let first_start = first_start.unwrap_or_else(|| panic!("no first-start message:\n{}", daemon.log.join("\n")));
    assert_eq!(daemon.log[first_start + 2].trim(), root_printed);

    let tls = dir.path().join("state/tls");
    let (cert, root) = (tls.join("cert.pem"), tls.join("root.pem"));
    let mode = |name: &str| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(tls.join(name)).unwrap().permissions()) & 0o777
    };
    assert_eq!(
        [mode("key.pem"), mode("cert.pem"), mode("root-key.pem"), mode("root.pem")],
        [0o600, 0o644, 0o600, 0o644]
    );
    assert_eq!(openssl_fingerprint(&std::fs::read(&cert).unwrap()), printed, "the printed fingerprint is the file's");
    assert_eq!(served_fingerprint(port), printed, "the printed fingerprint is the served certificate's");
    assert_eq!(openssl_fingerprint(&std::fs::read(&root).unwrap()), root_printed, "the root's is the root file's");

    // The handshake verifies against the box's root alone, by name, as on a tablet that
    // installed it.
    for host in ["localhost", "127.0.0.1"] {
        let headers = curl(&root, &format!("https://{host}:{port}/healthz")).unwrap();
        assert!(headers.starts_with("HTTP/1.1 200"), "{headers}");
        assert!(headers.to_ascii_lowercase().contains("strict-transport-security: max-age=31536000"), "{headers}");
    }
    // The root is downloaded without a session, and it is the same root.
    let download = tls.join("downloaded.crt");
    let out = run(Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o"])
        .arg(&download)
        .arg("--cacert")
        .arg(&root)
        .arg(format!("https://localhost:{port}/api/v1/trust/obscura-root.crt")));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let der = run(Command::new("openssl").args(["x509", "-inform", "DER", "-outform", "PEM", "-in"]).arg(&download));
    assert_eq!(openssl_fingerprint(&der.stdout), root_printed);
    // Nothing is answered in clear on the HTTPS port.
    assert!(curl(&root, &format!("http://127.0.0.1:{port}/healthz")).is_err());
    stop(daemon);

    // `obscura doctor` shows the same fingerprints, for checking later.
    let doctor = run(obscura()
        .arg("doctor")
        .arg("--config")
        .arg(dir.path().join("obscura.toml"))
        .arg("--state-dir")
        .arg(dir.path().join("state")));
    let doctor = String::from_utf8_lossy(&doctor.stdout);
    let line = doctor.lines().find(|l| l.contains("tls fingerprint")).unwrap_or_else(|| panic!("{doctor}"));
    assert!(line.starts_with("  ok") && line.ends_with(&format!("SHA-256 {printed}")), "{doctor}");
    let line = doctor.lines().find(|l| l.contains("tls root")).unwrap_or_else(|| panic!("{doctor}"));
    assert!(line.starts_with("  ok") && line.contains(&format!("SHA-256 {root_printed}; ")), "{doctor}");
    assert!(doctor.contains(&format!("{}; for ", cert.display())), "{doctor}");

    let mut again = start(dir.path(), &config);
    let (port, reprinted) = https(&mut again);
    assert_eq!(reprinted, printed, "a restart keeps the certificate");
    assert_eq!(root_line(&mut again), root_printed, "and the root");
    assert_eq!(served_fingerprint(port), printed);
    stop(again);
}

/// Issue 18, item 1: a box from before the root (a self-signed certificate in
/// `state/tls/`, as earlier versions made) starts with a root of its own and serves a
/// certificate the root signs; the old certificate is gone, and the start says so.
#[test]
fn r18_1_a_box_with_the_old_self_signed_certificate_migrates_to_its_own_root() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("state/tls");
    std::fs::create_dir_all(&tls).unwrap();
    let made = run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "800"])
        .args(["-subj", "/CN=Obscura gatebox", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(tls.join("key.pem"))
        .arg("-out")
        .arg(tls.join("cert.pem")));
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let old = openssl_fingerprint(&std::fs::read(tls.join("cert.pem")).unwrap());

    let config = format!("{CONFIG}[http]\ntls = \"on\"\n");
    let mut daemon = start(dir.path(), &config);
    let (port, printed) = https(&mut daemon);
    let root = root_line(&mut daemon);
    assert_ne!(printed, old, "the self-signed certificate is replaced");
    assert_eq!(served_fingerprint(port), printed);
    assert!(
        daemon.log.iter().any(|l| l.contains("replaced by one signed by the box's new root")),
        "{}",
        daemon.log.join("\n")
    );
    assert_eq!(openssl_fingerprint(&std::fs::read(tls.join("root.pem")).unwrap()), root);
    let headers = curl(&tls.join("root.pem"), &format!("https://localhost:{port}/healthz")).unwrap();
    assert!(headers.starts_with("HTTP/1.1 200"), "{headers}");
    stop(daemon);
}

#[test]
fn https_with_the_operators_certificate_and_a_clear_error_for_a_wrong_key() {
    let dir = tempfile::tempdir().unwrap();
    let own = dir.path().join("own");
    std::fs::create_dir(&own).unwrap();
    for name in ["a", "b"] {
        let made = run(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30"])
            .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"])
            .arg("-keyout")
            .arg(own.join(format!("{name}.key")))
            .arg("-out")
            .arg(own.join(format!("{name}.crt"))));
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    }
    let config = |cert: &str, key: &str| {
        format!(
            "{CONFIG}[http]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            own.join(cert).display(),
            own.join(key).display()
        )
    };

    // A certificate of one's own means HTTPS, on loopback too.
    let mut daemon = start(dir.path(), &config("a.crt", "a.key"));
    let (port, printed) = https(&mut daemon);
    assert_eq!(printed, openssl_fingerprint(&std::fs::read(own.join("a.crt")).unwrap()));
    let headers = curl(&own.join("a.crt"), &format!("https://localhost:{port}/healthz")).unwrap();
    assert!(headers.starts_with("HTTP/1.1 200"), "{headers}");
    assert!(!dir.path().join("state/tls").exists(), "no certificate of the box's own is made");
    stop(daemon);

    let stderr = refused(dir.path(), &config("a.crt", "b.key"), "127.0.0.1:0");
    assert!(
        stderr.contains("is not the key of the certificate") && stderr.contains("check [http] tls_cert and tls_key"),
        "{stderr}"
    );
}

#[test]
fn plain_http_beyond_loopback_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = refused(dir.path(), "[http]\ntls = \"off\"\n", "0.0.0.0:0");
    assert!(stderr.contains("plain HTTP on 0.0.0.0:0 would send passwords in clear"), "{stderr}");
}
