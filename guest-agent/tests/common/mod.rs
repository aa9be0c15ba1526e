//! Shared helpers for the agent's host tests: a swtpm on ephemeral TCP ports and a raw HTTP client.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command};

use cvm_tpm::swtpm::TcpSwtpm;
use std::time::{Duration, Instant};

/// A swtpm process serving TPM commands on `port` and its control channel on `port + 1` (the layout
/// tpm2-tss's swtpm TCTI expects): the TPM crate's launcher with a temporary state directory.
/// Killed on drop (before the directory goes).
pub struct Swtpm {
    tpm: TcpSwtpm,
    pub port: u16,
    _state: tempfile::TempDir,
}

impl Swtpm {
    pub fn start() -> Swtpm {
        let state = tempfile::tempdir().unwrap();
        let tpm = TcpSwtpm::start(Path::new("swtpm"), state.path()).unwrap_or_else(|e| {
            panic!("swtpm is required for this test (Debian package swtpm): {e}")
        });
        Swtpm {
            port: tpm.port,
            tpm,
            _state: state,
        }
    }

    /// `-T` argument for tpm2-tools.
    pub fn tcti(&self) -> String {
        self.tpm.tcti()
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_connectable(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A response: status, lower-cased headers, body.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends `raw` bytes as the request and reads the response until the server closes.
///
/// A server may answer an oversized request (413) and close before it has read all of it: the rest
/// of our write then fails (EPIPE / ECONNRESET), and the answer is already on its way — read it.
pub fn raw_request(port: u16, raw: &[u8]) -> Response {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    if let Err(e) = s.write_all(raw) {
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "sending the request: {e}"
        );
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if out.is_empty() => panic!("reading the response: {e}"),
            Err(_) => break,
        }
    }
    parse(&out)
}

pub fn request(port: u16, method: &str, path: &str) -> Response {
    raw_request(
        port,
        format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn parse(out: &[u8]) -> Response {
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(out)));
    let head = std::str::from_utf8(&out[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = out[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v == "chunked");
    let body = if chunked { dechunk(&body) } else { body };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap().trim(), 16).unwrap();
        b = &b[nl + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// Runs a tool, panicking with its stderr if it is missing or fails.
pub fn run_tool(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{cmd:?} could not run ({e}); install the package that provides it")
    });
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Kills (SIGKILL) and reaps the child when the test ends, passed or failed, so that a failing
/// test leaves no agent behind holding the test harness's output pipes.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Serves `router` on `listener` within the bounds the agent gives port 8000, or loopback (7999)
/// when `local`.
pub async fn serve_api(listener: tokio::net::TcpListener, router: axum::Router, local: bool) {
    use cvm_agent::http::server::{descriptor_limit, serve, Limits};
    let limits = if local {
        Limits::loopback(descriptor_limit(), cvm_agent::api::MAX_LOCAL_BODY)
    } else {
        Limits::public(descriptor_limit(), cvm_agent::api::MAX_PUBLIC_BODY)
    };
    serve(listener, router, limits).await
}
