//! A real mosquitto for tests: a free loopback port, its own temporary directory
//! (config, persistence, the dynamic-security file made by `mosquitto_ctrl dynsec init`),
//! clients denied by default, stopped on drop. Restarts keep the port and the directory,
//! so persistent sessions and provisioned clients survive as they would in the field.

#![allow(dead_code)] // each test binary uses its own part

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN: &str = "obscura-admin";
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";

#[derive(Debug)]
pub struct Broker {
    pub port: u16,
    /// The TLS listener's port, with [`Broker::start_tls`].
    pub tls_port: Option<u16>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/deps installs it)"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Broker {
    /// mosquitto with a plain listener on loopback.
    pub fn start() -> Broker {
        Broker::new(false)
    }

    /// Also a TLS listener, its certificate signed by [`Broker::ca_file`]'s CA for
    /// `IP:127.0.0.1`.
    pub fn start_tls() -> Broker {
        Broker::new(true)
    }

    fn new(tls: bool) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let dynsec = dir.path().join("dynsec.json");
        run("mosquitto_ctrl", &["dynsec", "init", dynsec.to_str().unwrap(), ADMIN, ADMIN_PASSWORD]);
        let port = free_port();
        let mut config = format!(
            "user root\nallow_anonymous false\npersistence true\npersistence_location {}/\n\
             plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\nplugin_opt_config_file {}\n\
             log_dest stderr\nmax_packet_size {}\nlistener {port} 127.0.0.1\n",
            dir.path().display(),
            dynsec.display(),
            hub::MAX_PACKET_BYTES,
        );
        let tls_port = tls.then(|| {
            make_certificates(dir.path());
            let tls_port = free_port();
            config.push_str(&format!(
                "listener {tls_port} 127.0.0.1\ncertfile {0}/broker.pem\nkeyfile {0}/broker.key\n",
                dir.path().display()
            ));
            tls_port
        });
        std::fs::write(dir.path().join("mosquitto.conf"), config).unwrap();
        let mut broker = Broker { port, tls_port, dir, child: None };
        broker.restart();
        broker
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// `mqtts://127.0.0.1:TLS_PORT`.
    pub fn tls_url(&self) -> String {
        format!("mqtts://127.0.0.1:{}", self.tls_port.expect("started with start_tls"))
    }

    /// The CA that signed the TLS listener's certificate (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn admin(&self) -> hub::BrokerLogin {
        let mut login = hub::BrokerLogin::new(self.url(), ADMIN, ADMIN_PASSWORD);
        login.timeout = Duration::from_secs(3);
        login
    }

    /// Stops mosquitto as systemd does (SIGTERM: it saves its persistence file).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.wait();
        }
    }

    /// Starts it (again) on the same port and directory, and waits until it listens.
    pub fn restart(&mut self) {
        self.stop();
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("mosquitto.log")).unwrap();
        let child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto (scripts/deps installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        let ports = [Some(self.port), self.tls_port];
        while !ports.iter().flatten().all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok()) {
            assert!(Instant::now() < deadline, "mosquitto did not listen: {}", self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What mosquitto said, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A CA and the broker's certificate for 127.0.0.1 (ECDSA P-256), as an operator makes them.
fn make_certificates(dir: &Path) {
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    let (ca_key, ca_pem) = (path("ca.key"), path("ca.pem"));
    ca.extend(["-keyout", &ca_key, "-out", &ca_pem, "-days", "2", "-subj", "/CN=obscura test CA"]);
    run("openssl", &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    let (key, request) = (path("broker.key"), path("broker.csr"));
    csr.extend(["-keyout", &key, "-out", &request, "-subj", "/CN=127.0.0.1"]);
    run("openssl", &csr);
    let extensions = path("ext.cnf");
    std::fs::write(&extensions, "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n").unwrap();
    let cert = path("broker.pem");
    run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &request,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &extensions,
        ],
    );
}
