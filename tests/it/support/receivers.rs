//! Real receivers of notifications, started on 127.0.0.1 for a test:
//! `tests/notify/receiver.py` with the Standard Webhooks reference library
//! (PyPI `standardwebhooks`) and an SMTP server (PyPI `aiosmtpd`), run by
//! the Python that `DELIVERY_TEST_PYTHON` names (`scripts/test` makes a
//! venv with both).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

/// The Python with the receivers' packages; `None` (the test skips) when
/// there is none outside CI. Under CI=true a missing one is a failure.
pub fn python() -> Option<String> {
    let python = std::env::var("DELIVERY_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    if !super::runs(&python, &["-c", "import standardwebhooks, aiosmtpd"]) {
        super::skip(&format!(
            "{python} lacks the PyPI packages standardwebhooks and aiosmtpd (scripts/test sets DELIVERY_TEST_PYTHON)"
        ));
        return None;
    }
    Some(python)
}

/// A Standard Webhooks key: `whsec_` and the base64 of 24 random bytes.
pub fn new_key() -> String {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).unwrap();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// A receiver process and the JSON lines it logged.
pub struct Receiver {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Receiver {
    fn start(python: &str, dir: &Path, name: &str, kind: &str, args: &[&str]) -> Self {
        let port = crate::e2e::free_port();
        let log = dir.join(format!("{name}.jsonl"));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/notify/receiver.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(kind)
            .arg(port.to_string())
            .arg(&log)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the receiver starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the {kind} receiver did not start");
        Self { child, port, log }
    }

    /// Verifies with `key`; `args` as `receiver.py webhook` takes them.
    pub fn webhook(python: &str, dir: &Path, name: &str, key: &str, args: &[&str]) -> Self {
        let mut all = vec![key];
        all.extend_from_slice(args);
        Self::start(python, dir, name, "webhook", &all)
    }

    pub fn slack(python: &str, dir: &Path, name: &str) -> Self {
        Self::start(python, dir, name, "slack", &[])
    }

    /// An SMTP server taking TLS as `tls` says, and with `login` (user
    /// and password) a login with them.
    pub fn smtp(
        python: &str,
        dir: &Path,
        name: &str,
        tls: MailTls<'_>,
        login: Option<(&str, &str)>,
    ) -> Self {
        let mut args = Vec::new();
        let (flag, certificate) = match tls {
            MailTls::Plain => ("", None),
            MailTls::StartTls(certificate) => ("--starttls", Some(certificate)),
            MailTls::Implicit(certificate) => ("--tls", Some(certificate)),
        };
        if let Some(Certificate { cert, key, .. }) = certificate {
            args.extend([flag, cert.to_str().unwrap(), key.to_str().unwrap()]);
        }
        if let Some((user, password)) = login {
            args.extend(["--login", user, password]);
        }
        Self::start(python, dir, name, "smtp", &args)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    pub fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("the receiver logs JSON lines"))
            .collect()
    }

    /// The lines, once `done` holds for them; panics after `limit`.
    pub fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let lines = self.lines();
            if done(&lines) {
                return lines;
            }
            assert!(Instant::now() < deadline, "{what}: {lines:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How an SMTP receiver takes TLS.
#[derive(Clone, Copy)]
pub enum MailTls<'a> {
    Plain,
    /// STARTTLS, required before mail or a login.
    StartTls(&'a Certificate),
    /// TLS from the first byte.
    Implicit(&'a Certificate),
}

/// A certificate for 127.0.0.1 and its key, and the authority that signed
/// it (to trust through `SSL_CERT_FILE`), made with openssl: for the SMTP
/// server and the HTTPS issuer.
#[derive(Clone)]
pub struct Certificate {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub authority: PathBuf,
}

pub fn certificate(dir: &Path) -> Certificate {
    let path = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl {args:?}");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=delivery-hook test authority",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server-key.pem",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        path("server.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "server.ext",
        "-out",
        "server-cert.pem",
    ]);
    Certificate {
        cert: path("server-cert.pem"),
        key: path("server-key.pem"),
        authority: path("ca.pem"),
    }
}
