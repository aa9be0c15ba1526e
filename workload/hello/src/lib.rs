//! The example workload service: `GET /` answers
//! `{"greeting": "<contents of GREETING_FILE>", "pcr23": "<hex>"}`.
//!
//! It shows the sidecar pattern: the service itself has no TPM access, it asks the agent on loopback
//! (`AGENT_URL`, default `http://127.0.0.1:7999`) for the PCRs and reports PCR 23, the register that
//! names the workload. The greeting comes from the measured config directory, so changing it changes
//! PCR 23. std-only HTTP (one request per connection) keeps the binary small.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Value};

/// Largest request head we read; a GET has no body.
const MAX_HEAD: u64 = 8 * 1024;
/// Largest agent response we accept (the /pcrs JSON is ~2 KiB).
const MAX_AGENT_RESPONSE: u64 = 64 * 1024;
/// Client and agent socket timeouts: a stuck peer must not pin a thread forever.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The PCR this service reports.
const WORKLOAD_PCR: &str = "23";

#[derive(Debug, Clone)]
pub struct Config {
    pub greeting_file: PathBuf,
    /// `host:port` of the agent's loopback API.
    pub agent: String,
}

impl Config {
    /// From `GREETING_FILE` and `AGENT_URL` (`http://host:port`, no path).
    pub fn from_env() -> Result<Self, String> {
        let greeting_file = std::env::var_os("GREETING_FILE").map(PathBuf::from).ok_or(
            "GREETING_FILE is not set (path of the greeting in the workload's config dir)",
        )?;
        let url = std::env::var("AGENT_URL").unwrap_or_else(|_| "http://127.0.0.1:7999".into());
        Ok(Config {
            greeting_file,
            agent: agent_authority(&url)?,
        })
    }
}

/// `http://host:port[/]` → `host:port`.
pub fn agent_authority(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("AGENT_URL {url}: only http:// URLs are supported"))?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || !authority.contains(':') {
        return Err(format!("AGENT_URL {url}: expected http://HOST:PORT"));
    }
    Ok(authority.to_string())
}

/// Accepts connections forever, one thread each.
pub fn serve(listener: TcpListener, config: Arc<Config>) -> io::Result<()> {
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                eprintln!("accept failed: {e}");
                continue;
            }
        };
        let config = config.clone();
        std::thread::spawn(move || {
            if let Err(e) = handle(stream, &config) {
                eprintln!("connection error: {e}");
            }
        });
    }
    Ok(())
}

/// Reads one request, writes one response, closes.
fn handle(stream: TcpStream, config: &Config) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?.take(MAX_HEAD));
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the header lines so the client sees a clean close.
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let (status, body) = respond(&request_line, config);
    write_response(stream, status, &body)
}

/// Routes a request line to `(status, JSON body)`.
pub fn respond(request_line: &str, config: &Config) -> (u16, Value) {
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return (400, json!({ "error": "malformed request line" }));
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return (400, json!({ "error": "malformed request line" }));
    }
    let route: fn(&Config) -> Result<Value, (u16, String)> = match target {
        "/" => greeting,
        "/signed" => signed_greeting,
        _ => return (404, json!({ "error": format!("no such path: {target}") })),
    };
    if method != "GET" && method != "HEAD" {
        return (
            405,
            json!({ "error": format!("{method} not allowed: use GET") }),
        );
    }
    match route(config) {
        Ok(body) => (200, body),
        Err((status, msg)) => (status, json!({ "error": msg })),
    }
}

fn read_greeting(config: &Config) -> Result<String, (u16, String)> {
    let greeting = std::fs::read_to_string(&config.greeting_file).map_err(|e| {
        (
            500,
            format!("reading {}: {e}", config.greeting_file.display()),
        )
    })?;
    Ok(greeting.trim_end().to_string())
}

fn greeting(config: &Config) -> Result<Value, (u16, String)> {
    let greeting = read_greeting(config)?;
    let pcr23 = fetch_pcr(&config.agent, WORKLOAD_PCR).map_err(|e| (502, e))?;
    Ok(json!({ "greeting": greeting, "pcr23": pcr23 }))
}

/// The greeting signed by this boot's key (the agent's loopback `/sign-message`): whoever attests
/// this VM (`POST /verify` of a peer's agent) can check that the greeting comes from it.
fn signed_greeting(config: &Config) -> Result<Value, (u16, String)> {
    let greeting = read_greeting(config)?;
    let agent = &config.agent;
    let body = json!({ "message": BASE64.encode(greeting.as_bytes()) }).to_string();
    let (status, answer) = http_post_json(agent, "/sign-message", &body)
        .map_err(|e| (502, format!("agent at {agent}: {e}")))?;
    let signed: Value = serde_json::from_slice(&answer)
        .map_err(|e| (502, format!("agent at {agent}: invalid JSON: {e}")))?;
    if status != 200 {
        let msg = signed["error"].as_str().unwrap_or("no error message");
        return Err((502, format!("agent at {agent}: HTTP {status}: {msg}")));
    }
    Ok(json!({ "greeting": greeting, "signed": signed }))
}

/// Asks the agent for `/pcrs` and returns the SHA-256 value of `pcr`.
pub fn fetch_pcr(agent: &str, pcr: &str) -> Result<String, String> {
    let (status, body) = http_get(agent, "/pcrs").map_err(|e| format!("agent at {agent}: {e}"))?;
    let json: Value = serde_json::from_slice(&body)
        .map_err(|e| format!("agent at {agent}: invalid JSON: {e}"))?;
    if status != 200 {
        let msg = json["error"].as_str().unwrap_or("no error message");
        return Err(format!("agent at {agent}: HTTP {status}: {msg}"));
    }
    json["sha256"][pcr]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("agent at {agent}: no sha256 PCR {pcr} in /pcrs"))
}

/// Minimal HTTP/1.1 GET with `Connection: close`; returns status and body.
fn http_get(authority: &str, path: &str) -> io::Result<(u16, Vec<u8>)> {
    exchange(
        authority,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
        ),
    )
}

/// Minimal HTTP/1.1 POST of a JSON body with `Connection: close`; returns status and body.
fn http_post_json(authority: &str, path: &str, body: &str) -> io::Result<(u16, Vec<u8>)> {
    exchange(
        authority,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// Sends `request` and reads the whole answer.
fn exchange(authority: &str, request: &str) -> io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(authority)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    // One write: a peer that answers after its first read must see the whole request.
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.take(MAX_AGENT_RESPONSE).read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// Splits a `Connection: close` response into status and body (no chunked encoding: the agent
/// sends Content-Length for JSON).
pub fn parse_response(raw: &[u8]) -> io::Result<(u16, Vec<u8>)> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("response has no end of headers"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("response head is not UTF-8"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad("response has no status code"))?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(bad("chunked responses are not supported"));
    }
    Ok((status, raw[split + 4..].to_vec()))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        502 => "Bad Gateway",
        _ => "Internal Server Error",
    }
}

fn write_response(mut stream: TcpStream, status: u16, body: &Value) -> io::Result<()> {
    let body = format!("{body}\n");
    let response = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    );
    stream.write_all(response.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake agent: serves `response` once on an ephemeral port, returns its address.
    fn fake_agent(response: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut s = stream.unwrap();
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                s.write_all(response.as_bytes()).unwrap();
            }
        });
        addr
    }

    fn config(agent: String) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("greeting.txt");
        std::fs::write(&file, "Hello, test!\n").unwrap();
        (
            dir,
            Config {
                greeting_file: file,
                agent,
            },
        )
    }

    /// The fake agent's /sign-message: the test checks the request it got was the greeting.
    #[test]
    fn signed_greeting_passes_the_agent_answer_through() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&raw).ends_with('}') {
                let n = s.read(&mut buf).unwrap();
                assert!(
                    n > 0,
                    "request ended early: {}",
                    String::from_utf8_lossy(&raw)
                );
                raw.extend_from_slice(&buf[..n]);
            }
            let body = "{\"signature\":\"AAA=\",\"key_hash\":\"ab\"}";
            write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            String::from_utf8(raw).unwrap()
        });
        let (_dir, config) = config(addr);
        let (status, body) = respond("GET /signed HTTP/1.1", &config);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["greeting"], "Hello, test!");
        assert_eq!(body["signed"]["key_hash"], "ab");
        let request = seen.join().unwrap();
        assert!(
            request.starts_with("POST /sign-message HTTP/1.1\r\n"),
            "{request}"
        );
        // "Hello, test!" in base64, as `base64` (coreutils) prints it.
        assert!(
            request.ends_with("{\"message\":\"SGVsbG8sIHRlc3Qh\"}"),
            "{request}"
        );
    }

    const PCRS: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 39\r\n\r\n{\"sha256\":{\"22\":\"00\",\"23\":\"abcdef01\"}}";

    #[test]
    fn greets_with_pcr23() {
        let (_d, cfg) = config(fake_agent(PCRS));
        let (status, body) = respond("GET / HTTP/1.1\r\n", &cfg);
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            json!({"greeting": "Hello, test!", "pcr23": "abcdef01"})
        );
    }

    #[test]
    fn agent_errors_become_502() {
        let (_d, cfg) = config(fake_agent(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 20\r\n\r\n{\"error\":\"no tpm\"}\r\n",
        ));
        let (status, body) = respond("GET / HTTP/1.1", &cfg);
        assert_eq!(status, 502);
        assert!(body["error"].as_str().unwrap().contains("no tpm"), "{body}");
        // Nothing listening.
        let (_d, cfg) = config("127.0.0.1:1".into());
        assert_eq!(respond("GET / HTTP/1.1", &cfg).0, 502);
    }

    #[test]
    fn bad_requests() {
        let (_d, cfg) = config("127.0.0.1:1".into());
        assert_eq!(respond("", &cfg).0, 400);
        assert_eq!(respond("GARBAGE", &cfg).0, 400);
        assert_eq!(respond("GET / SPDY/3", &cfg).0, 400);
        assert_eq!(respond("GET /other HTTP/1.1", &cfg).0, 404);
        assert_eq!(respond("POST / HTTP/1.1", &cfg).0, 405);
    }

    #[test]
    fn missing_greeting_is_500() {
        let cfg = Config {
            greeting_file: "/nonexistent/greeting.txt".into(),
            agent: fake_agent(PCRS),
        };
        let (status, body) = respond("GET / HTTP/1.1", &cfg);
        assert_eq!(status, 500);
        assert!(body["error"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/greeting.txt"));
    }

    #[test]
    fn agent_url_forms() {
        assert_eq!(
            agent_authority("http://127.0.0.1:7999").unwrap(),
            "127.0.0.1:7999"
        );
        assert_eq!(
            agent_authority("http://127.0.0.1:7999/").unwrap(),
            "127.0.0.1:7999"
        );
        assert!(agent_authority("https://x:1").is_err());
        assert!(agent_authority("http://x").is_err());
        assert!(agent_authority("http://x:1/pcrs").is_err());
    }

    #[test]
    fn serves_over_tcp() {
        let (_d, cfg) = config(fake_agent(PCRS));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || serve(listener, Arc::new(cfg)));
        let (status, body) = http_get(&addr, "/").unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["pcr23"], "abcdef01");
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(b"\x00\x01garbage\r\n\r\n").unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        assert!(
            out.starts_with(b"HTTP/1.1 400 "),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }
}
