//! What the daemon's integration tests share: the binary with a clean environment, and a
//! running `obscura run` whose stderr lines the test can wait for.

#![allow(dead_code)] // Each test binary uses its own part.

/// A real mosquitto on loopback, the sync crate's own test broker.
#[path = "../../../sync/tests/common/broker.rs"]
pub mod broker;
pub mod proxy;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The `obscura` binary; nothing from the developer's environment leaks into the
/// config layers.
pub fn obscura() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_obscura"));
    for (key, _) in std::env::vars() {
        if key.starts_with("OBSCURA_") || key == "RUST_LOG" || key == "NOTIFY_SOCKET" {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// A running daemon and the stderr lines it has printed so far.
pub struct Daemon {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub log: Vec<String>,
}

impl Daemon {
    /// `obscura run` with `config` written to `DIR/obscura.toml`, its state in
    /// `DIR/state`, on a free loopback port.
    pub fn spawn(dir: &Path, config: &str, extra_env: &[(&str, &str)]) -> Daemon {
        Daemon::spawn_on(dir, config, "127.0.0.1:0", extra_env)
    }

    /// Like `spawn`, on `listen`: a fixed port, so clients find a restarted daemon.
    pub fn spawn_on(dir: &Path, config: &str, listen: &str, extra_env: &[(&str, &str)]) -> Daemon {
        std::fs::write(dir.join("obscura.toml"), config).unwrap();
        let mut cmd = obscura();
        cmd.arg("run")
            .arg("--config")
            .arg(dir.join("obscura.toml"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--listen", listen])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Daemon { child, lines, log: Vec::new() }
    }

    /// Waits up to `secs` for a line for which `pick` says something, and returns it.
    pub fn wait_for<T>(&mut self, what: &str, secs: u64, pick: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if let Some(found) = pick(&line) {
                        return found;
                    }
                }
                Err(_) => panic!("no {what} in the daemon's log:\n{}", self.log.join("\n")),
            }
        }
    }

    /// Waits for a log line containing `needle` and returns it.
    pub fn wait_for_line(&mut self, needle: &str, secs: u64) -> String {
        self.wait_for(&format!("`{needle}`"), secs, |line| line.contains(needle).then(|| line.to_owned()))
    }

    /// The lines printed so far, without waiting.
    pub fn collect_log(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.log.push(line);
        }
        &self.log
    }

    /// SIGTERM, then the exit status within 15 s, with the rest of the log collected.
    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.log.push(line);
                }
                return status;
            }
            assert!(Instant::now() < deadline, "the daemon ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `obscura hub` on a free loopback port, and what it printed at start.
pub struct Hub {
    pub child: Child,
    /// `SHA256:AB:CD:…`, as the field engineer copies it.
    pub fingerprint: String,
    pub addr: std::net::SocketAddr,
    pub state: std::path::PathBuf,
}

impl Hub {
    pub fn spawn(state: &Path) -> Hub {
        Hub::spawn_at(state, "127.0.0.1:0")
    }

    /// On `listen`: a fixed port, so a hub restarted on the same state is found where
    /// its devices enrolled.
    pub fn spawn_at(state: &Path, listen: &str) -> Hub {
        Hub::spawn_with(state, listen, &[])
    }

    /// With more of `obscura hub`'s options (`--mqtt …`).
    pub fn spawn_with(state: &Path, listen: &str, extra: &[&str]) -> Hub {
        let mut child = obscura()
            .arg("hub")
            .arg("--state-dir")
            .arg(state)
            .args(["--listen", listen])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let next = || lines.recv_timeout(Duration::from_secs(60)).expect("the hub printed nothing");
        let fingerprint = next().strip_prefix("fingerprint ").map(str::to_owned).expect("the fingerprint first");
        let addr = next().strip_prefix("listening on https://").expect("then the address").parse().unwrap();
        Hub { child, fingerprint, addr, state: state.to_owned() }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// `obscura hub ARGS --state-dir STATE`, beside the running hub.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        obscura().arg("hub").args(args).arg("--state-dir").arg(&self.state).stdin(Stdio::null()).output().unwrap()
    }

    /// SIGTERM and a clean exit.
    pub fn stop(mut self) {
        assert!(Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap().success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the hub exited with {status}");
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
