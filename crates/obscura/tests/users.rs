//! `obscura user` from the shell: accounts without the web app, passwords from standard
//! input (never arguments), and the setup code only while no account exists.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use store::Accounts;

fn obscura(state: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_obscura"))
        .args(args)
        .args(["--state-dir", state.to_str().unwrap()])
        .env("USER", "tester")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn accounts_are_managed_from_the_shell_and_the_setup_code_only_before_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    let code = obscura(state, &["user", "setup-code"], "");
    assert!(code.status.success(), "{}", text(&code));
    let printed = text(&code);
    let code_line = printed.lines().map(str::trim).find(|l| l.len() == 19 && l.matches('-').count() == 3).unwrap();
    assert_eq!(code_line.len(), 19, "{printed}");

    let weak = obscura(state, &["user", "add", "ada", "--role", "admin"], "short\n");
    assert!(!weak.status.success());
    assert!(text(&weak).contains("at least 12 characters"), "{}", text(&weak));
    let added = obscura(state, &["user", "add", "ada", "--role", "admin"], "a long enough passphrase\n");
    assert!(added.status.success(), "{}", text(&added));
    let typo = obscura(state, &["user", "add", "bob", "--role", "boss"], "a long enough passphrase\n");
    assert!(text(&typo).contains("`boss` is not a role"), "{}", text(&typo));
    assert!(
        obscura(state, &["user", "add", "bob", "--role", "annotator"], "another long passphrase\n").status.success()
    );

    let list = text(&obscura(state, &["user", "list"], ""));
    assert!(
        list.contains("ada") && list.contains("admin") && list.contains("bob") && list.contains("annotator"),
        "{list}"
    );
    assert!(obscura(state, &["user", "disable", "bob"], "").status.success());
    assert!(
        text(&obscura(state, &["user", "list"], "")).lines().any(|l| l.starts_with("bob") && l.contains("disabled"))
    );
    // The last admin cannot be disabled: the box would have no one to manage it.
    let last = obscura(state, &["user", "disable", "ada"], "");
    assert!(!last.status.success() && text(&last).contains("no enabled admin"), "{}", text(&last));
    assert!(obscura(state, &["user", "passwd", "ada"], "a brand new passphrase\n").status.success());
    let store = store::Store::open(state).unwrap();
    let ada = store.user_by_name("ada").unwrap().unwrap();
    assert!(web::verify_password(&ada.password_hash, "a brand new passphrase"));
    assert!(!web::verify_password(&ada.password_hash, "a long enough passphrase"));
    drop(store);

    let refused = obscura(state, &["user", "setup-code"], "");
    assert!(!refused.status.success() && text(&refused).contains("accounts exist already"), "{}", text(&refused));
    // Passwords never reach the audit log.
    let store = store::Store::open(state).unwrap();
    let audit = serde_json::to_string(&store.audit_page(0, 500, None).unwrap()).unwrap();
    assert!(!audit.contains("passphrase"), "{audit}");
}
