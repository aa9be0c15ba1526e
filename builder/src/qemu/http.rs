//! Plain-HTTP GETs to the guest's forwarded ports (ureq, no TLS: loopback only).

use anyhow::{Context, Result};
use std::time::Duration;

/// A response: status code and body text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// GET `url` with an overall `timeout`. Never through a proxy: the URLs are on 127.0.0.1, and an
/// `http_proxy` set in the environment (common on build machines) must not capture them. Non-2xx
/// statuses are returned, not turned into errors.
pub fn get(url: &str, timeout: Duration) -> Result<Response> {
    let r = get_bytes(url, timeout)?;
    let body =
        String::from_utf8(r.body).with_context(|| format!("the body of GET {url} is not UTF-8"))?;
    Ok(Response {
        status: r.status,
        body,
    })
}

/// A response with a binary body (e.g. the agent's raw TCG event log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BytesResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Like [`get`], for a binary body.
pub fn get_bytes(url: &str, timeout: Duration) -> Result<BytesResponse> {
    let mut resp = cvm_verify::collaterals::http_agent(timeout)
        .get(url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .read_to_vec()
        .with_context(|| format!("reading the body of GET {url}"))?;
    Ok(BytesResponse { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn gets_status_and_body_from_a_local_server() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = listener.accept().unwrap();
                let mut req = [0u8; 1024];
                let n = s.read(&mut req).unwrap();
                assert!(req[..n].starts_with(b"GET /health HTTP/1.1\r\n"));
                let body = "{\"status\":\"ok\"}";
                write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
        });
        let url = format!("http://127.0.0.1:{port}/health");
        let r = get(&url, Duration::from_secs(5)).unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "{\"status\":\"ok\"}"));
        assert_eq!(get(&url, Duration::from_secs(5)).unwrap().status, 503);
        server.join().unwrap();
        // Nobody listening: an error naming the URL.
        let err = get(&url, Duration::from_secs(2)).unwrap_err();
        assert!(format!("{err:#}").contains(&url), "{err:#}");
    }
}
