//! The real `obscura hub` binary: it serves HTTPS on a free loopback port from a fresh
//! state directory, prints its certificate's fingerprint, and answers a request pinned
//! to exactly that certificate; `token`, `devices list` and `user` work beside it on the
//! same state, and the first admin made with the setup code logs in over HTTPS.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

mod common;

use common::obscura;

fn run(cmd: &mut Command) -> std::process::Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {cmd:?} (install it): {e}"))
}

#[test]
fn the_hub_prints_its_fingerprint_and_answers_https_pinned_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("hub");
    let hub = common::Hub::spawn(&state);
    let fingerprint = hub.fingerprint.strip_prefix("SHA256:").expect("SHA256:…").to_owned();
    assert_eq!(fingerprint.len(), 32 * 3 - 1, "{fingerprint}");
    let addr = hub.addr;

    // The certificate served, as openssl receives it, is the one fingerprinted.
    let served =
        run(Command::new("openssl").args(["s_client", "-connect", &addr.to_string(), "-servername", "localhost"]));
    let text = String::from_utf8_lossy(&served.stdout);
    let begin = text.find("-----BEGIN CERTIFICATE-----").expect("openssl saw a certificate");
    let end = text.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    let pem = dir.path().join("served.pem");
    std::fs::write(&pem, format!("{}\n", &text[begin..end])).unwrap();
    let out = run(Command::new("openssl").args(["x509", "-noout", "-fingerprint", "-sha256", "-in"]).arg(&pem));
    let seen = String::from_utf8_lossy(&out.stdout).trim().split_once('=').unwrap().1.to_owned();
    assert_eq!(seen, fingerprint, "the printed fingerprint is the served certificate's");

    // One request trusting that certificate alone.
    let out = run(Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(&pem)
        .arg(format!("https://localhost:{}/healthz", addr.port())));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");

    // The CLI beside the running hub, on the same state.
    let token = run(obscura().arg("hub").arg("token").arg("--state-dir").arg(&state));
    assert!(token.status.success());
    assert_eq!(String::from_utf8_lossy(&token.stdout).trim().len(), 32, "a token of 16 random bytes");
    let list = run(obscura().args(["hub", "devices", "list"]).arg("--state-dir").arg(&state));
    assert!(list.status.success());
    assert!(String::from_utf8_lossy(&list.stderr).contains("no device has enrolled yet"));
    let approve =
        run(obscura().args(["hub", "devices", "approve", "01HZY3V8Q0M5W6ZJ7KX2C9D4FB"]).arg("--state-dir").arg(&state));
    assert!(!approve.status.success());
    assert!(String::from_utf8_lossy(&approve.stderr).contains("no device 01HZY3V8Q0M5W6ZJ7KX2C9D4FB has enrolled"));
    // No default password: a setup code from the hub's shell makes the first admin over
    // HTTPS, who then sees the fleet; the shell lists the account.
    let code = run(obscura().args(["hub", "user", "setup-code"]).arg("--state-dir").arg(&state));
    assert!(code.status.success(), "{}", String::from_utf8_lossy(&code.stderr));
    let code = String::from_utf8_lossy(&code.stdout).split_whitespace().last().unwrap().to_owned();
    let https = |path: &str, extra: &[&str]| {
        let out = run(Command::new("curl")
            .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}", "--cacert"])
            .arg(&pem)
            .args(extra)
            .arg(format!("https://localhost:{}{path}", addr.port())));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap();
        (status.to_owned(), body.to_owned())
    };
    let json = ["-H", "content-type: application/json", "-d"];
    let body = format!(r#"{{"code":"{code}","name":"ada","password":"a long hub passphrase"}}"#);
    assert_eq!(https("/api/v1/setup", &[&json[..], &[body.as_str()]].concat()).0, "201");
    assert_eq!(https("/api/v1/devices", &[]).0, "401", "no session");
    let jar = dir.path().join("cookies");
    let jar = jar.to_str().unwrap();
    let login = r#"{"name":"ada","password":"a long hub passphrase"}"#;
    assert_eq!(https("/api/v1/auth/login", &[&["-c", jar][..], &json[..], &[login]].concat()).0, "200");
    assert_eq!(https("/api/v1/devices", &["-b", jar]), ("200".into(), "[]".into()));
    let users = run(obscura().args(["hub", "user", "list"]).arg("--state-dir").arg(&state));
    assert!(String::from_utf8_lossy(&users.stdout).contains("ada"), "{}", String::from_utf8_lossy(&users.stdout));
    let again = run(obscura().args(["hub", "user", "setup-code"]).arg("--state-dir").arg(&state));
    assert!(!again.status.success(), "accounts exist");

    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(state.join("hub.key")).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    hub.stop();

    // A restart prints the same fingerprint.
    let mut again = obscura()
        .arg("hub")
        .arg("--state-dir")
        .arg(&state)
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = BufReader::new(again.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    assert_eq!(first, format!("fingerprint SHA256:{fingerprint}"));
    again.kill().unwrap();
    again.wait().unwrap();
}
