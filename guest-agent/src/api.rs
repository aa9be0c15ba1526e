//! The attestation API (HTTP, JSON).
//!
//! | Request                  | Response                                                          |
//! |--------------------------|-------------------------------------------------------------------|
//! | `GET /health`            | `{"status":"ok"}`                                                 |
//! | `GET /pcrs`              | `{"sha1":{…},"sha256":{"0":"<hex>",…,"23":"<hex>"},…}`: every active bank, read from the TPM now |
//! | `GET /eventlog`          | the firmware's TCG event log (binary), `application/octet-stream` |
//! | `GET /eventlog/runtime`  | the init's PCR 23 log (JSON lines), `application/x-ndjson`        |
//! | `GET /workload`          | `{"name":…,"services":[{name,state,pid,restarts,restart,last_exit}]}` |
//! | `GET /collaterals?nonce=HEX` | quote, AK, PCRs, logs, EK, TEE report ([`crate::evidence`])   |
//! | `POST /activate-credential`  | `{credential_blob, secret}` → `{cert_info}` ([`crate::evidence`]) |
//! | `POST /sign-message` (7999 only) | `{message}` → signature by the boot key ([`crate::signing`]) |
//!
//! Every error is `{"error":"…"}` with a status that says whose fault it is: 404 unknown path or
//! missing log file, 405 wrong method, 408 body too slow, 409 state changed (PCRs, for
//! `/sign-message`), 413 body too large, 503 TPM unavailable or too many such requests at once (with
//! `Retry-After`), 500 anything else. Malformed HTTP is rejected by hyper with 400 (431 for a head
//! too large) before it reaches a handler.
//!
//! Two routers: [`public_router`] for the external port (8000) and [`local_router`] for loopback
//! (7999, the workload's sidecar use), which adds the routes that act with this boot's keys on the
//! caller's behalf ([`local_only_routes`]). No route changes TPM state beyond transient objects
//! and sessions flushed before it answers.
//!
//! Each router has its own [`Gate`]s on the routes that start blocking work — TPM commands
//! ([`TPM_REQUESTS`]), file reads ([`FILE_READS`]), peer verifications ([`PEER_VERIFICATIONS`]) —
//! which answer 503 with `Retry-After` beyond their bound; so a flood of port 8000 leaves 7999 its
//! own, and the blocking threads ([`BLOCKING_THREADS`]) never queue. The server in front of each
//! router bounds connections, time and sizes ([`crate::http::server`]).

use std::io::ErrorKind;
use std::path::PathBuf;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::evidence::MAX_ACTIVATE_BODY;
use crate::http::gate::Gate;
use crate::peer::MAX_VERIFY_BODY;
use crate::supervisor::WorkloadStatus;
use crate::tpm::{read_all_pcrs, BankValues};

pub use crate::http::error::{ApiError, ApiResult};
pub use crate::http::state::{ApiConfig, AppState, WorkloadView};

/// Media type of the runtime log (one JSON object per line).
const NDJSON: &str = "application/x-ndjson";
const OCTET_STREAM: &str = "application/octet-stream";

/// Requests using the TPM (quotes, credential activation, PCR reads, signatures) at once, per
/// port: the TPM executes one command at a time, so more would only wait in the kernel.
pub const TPM_REQUESTS: usize = 4;
/// Event log reads at once, per port (each a few milliseconds).
pub const FILE_READS: usize = 8;
/// Peer verifications (`POST /verify`, loopback) at once: each waits on another VM for up to minutes.
pub const PEER_VERIFICATIONS: usize = 2;
/// What a client told "busy" should wait, seconds.
const RETRY_AFTER_SECS: u32 = 1;
/// Blocking threads the runtime needs: one per permit of every gate of both ports, and one for the
/// golden measurement's one-time read. No blocking task ever waits for a thread.
pub const BLOCKING_THREADS: usize = 2 * (TPM_REQUESTS + FILE_READS) + PEER_VERIFICATIONS + 1;
/// Largest request body on port 8000 (`/activate-credential`'s).
pub const MAX_PUBLIC_BODY: usize = MAX_ACTIVATE_BODY;
/// Largest request body on loopback (`/verify`'s; `/sign-message` takes less).
pub const MAX_LOCAL_BODY: usize = MAX_VERIFY_BODY;

/// The gates of one port's router.
struct Gates {
    tpm: Gate,
    files: Gate,
}

impl Gates {
    fn new() -> Self {
        Gates {
            tpm: Gate::new("TPM", TPM_REQUESTS, RETRY_AFTER_SECS),
            files: Gate::new("event log", FILE_READS, RETRY_AFTER_SECS),
        }
    }
}

/// The router of the external listener (8000): status and evidence, nothing that signs for the
/// caller.
pub fn public_router(state: AppState) -> Router {
    finish(public_routes(&Gates::new()), state)
}

/// The router of the loopback listener (7999): the public routes plus [`local_only_routes`].
pub fn local_router(state: AppState) -> Router {
    let gates = Gates::new();
    finish(
        public_routes(&gates).merge(local_only_routes(&gates)),
        state,
    )
}

/// Routes served only on loopback: they use this boot's keys for whoever calls, which must be
/// the workload inside the VM. Add a local-only endpoint here with one `.route(…)`.
fn local_only_routes(gates: &Gates) -> Router<AppState> {
    let peers = Gate::new("peer verification", PEER_VERIFICATIONS, RETRY_AFTER_SECS);
    gates
        .tpm
        .guard(Router::new().route("/sign-message", crate::signing::sign_message_route()))
        .merge(peers.guard(Router::new().route("/verify", crate::peer::verify_route())))
}

fn public_routes(gates: &Gates) -> Router<AppState> {
    let tpm = Router::new()
        .route("/pcrs", get(pcrs))
        .merge(crate::evidence::routes());
    let files = Router::new()
        .route("/eventlog", get(eventlog))
        .route("/eventlog/runtime", get(runtime_eventlog));
    Router::new()
        .route("/health", get(health))
        .route("/workload", get(workload))
        .merge(crate::golden::routes())
        .merge(gates.tpm.guard(tpm))
        .merge(gates.files.guard(files))
}

/// JSON 404/405 for everything unrouted, and the state.
fn finish(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /pcrs`: bank name → PCR values. Typed ([`BankValues`]), not `json!`: a `serde_json::Value`
/// map would re-sort the PCR keys as strings.
async fn pcrs(State(state): State<AppState>) -> ApiResult<Json<BankValues>> {
    let source = state.config.tpm.clone();
    let values = tokio::task::spawn_blocking(move || read_all_pcrs(&source))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("PCR read task: {e}"),
            )
        })?
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")))?;
    Ok(Json(values))
}

async fn eventlog(State(state): State<AppState>) -> ApiResult<Response> {
    let path = state.config.eventlog.clone();
    serve_file(
        path,
        OCTET_STREAM,
        "is securityfs mounted and a TPM with an event log present?",
    )
    .await
}

async fn runtime_eventlog(State(state): State<AppState>) -> ApiResult<Response> {
    let path = state.config.runtime_eventlog.clone();
    serve_file(
        path,
        NDJSON,
        "the init writes it when it measures the workload",
    )
    .await
}

/// The whole file as the body (event logs are tens of KiB); 404 with `hint` when it is absent.
async fn serve_file(path: PathBuf, content_type: &'static str, hint: &str) -> ApiResult<Response> {
    let read_path = path.clone();
    let bytes = tokio::task::spawn_blocking(move || std::fs::read(read_path))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("read task: {e}")))?;
    match bytes {
        Ok(bytes) => Ok(([(header::CONTENT_TYPE, content_type)], bytes).into_response()),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("{}: not found ({hint})", path.display()),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading {}: {e}", path.display()),
        )),
    }
}

async fn workload(State(state): State<AppState>) -> ApiResult<Json<WorkloadStatus>> {
    match state.workload.as_ref() {
        // Typed, so the JSON keeps the struct's field order.
        WorkloadView::Running(sup) => Ok(Json(sup.status())),
        WorkloadView::Failed(msg) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            msg.clone(),
        )),
    }
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {}", uri.path()),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} is not allowed on {} (see the API table for each endpoint's method)",
            uri.path()
        ),
    )
}
