//! The API's error answers: `{"error": "…"}` with a status that says whose fault it is, and the
//! kinds of failure the handlers map to those statuses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An error response: `{"error": message}` with `status`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Why a request failed, mapped to an HTTP status.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The request is malformed (400).
    BadRequest(String),
    /// The TPM refused the verifier's input, e.g. a credential for another EK (422).
    Refused(String),
    /// The machine is no longer in the state the request needs, e.g. PCRs changed since the boot
    /// signing key was made (409).
    Conflict(String),
    /// The TPM or TEE could not be used (503).
    Unavailable(String),
}

impl From<Failure> for ApiError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::BadRequest(m) => ApiError::new(StatusCode::BAD_REQUEST, m),
            Failure::Refused(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, m),
            Failure::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            Failure::Unavailable(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m),
        }
    }
}

pub(crate) fn unavailable(what: &str) -> impl FnOnce(cvm_tpm::Error) -> Failure + '_ {
    move |e| Failure::Unavailable(format!("{what}: {e}"))
}
