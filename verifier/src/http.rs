//! The HTTP client the verifier talks to agents with, and how it reads their answers.

use crate::error::{Result, VerifyError};
use std::time::Duration;

/// Largest answer read from the agent (the firmware log of a cloud VM is ~50 KiB).
const MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;

/// The HTTP client for agents: never through a proxy (the agent is usually a forwarded loopback port,
/// and an `http_proxy` of a build machine must not capture it); non-2xx statuses are answers, not
/// transport errors; `timeout` bounds each whole request.
pub fn http_agent(timeout: Duration) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build();
    ureq::Agent::new_with_config(config)
}

/// A transport error of the request `what` (`GET URL`).
pub(crate) fn transport(what: impl std::fmt::Display, e: ureq::Error) -> VerifyError {
    VerifyError::Transport {
        message: what.to_string(),
        status: None,
        source: Some(Box::new(e)),
    }
}

/// Reads a response body; a [`VerifyError::Transport`] naming `what` unless the status is 2xx.
pub(crate) fn body(mut resp: ureq::http::Response<ureq::Body>, what: &str) -> Result<Vec<u8>> {
    let status = resp.status().as_u16();
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(MAX_BODY_BYTES)
        .read_to_vec()
        .map_err(|e| transport(format!("reading the answer of {what}"), e))?;
    if !(200..300).contains(&status) {
        return Err(VerifyError::Transport {
            message: format!(
                "{what}: HTTP {status}: {}",
                String::from_utf8_lossy(&bytes).trim()
            ),
            status: Some(status),
            source: None,
        });
    }
    Ok(bytes)
}
