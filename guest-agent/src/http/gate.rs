//! A bound on concurrent requests of one kind (TPM work, file reads, peer verifications): beyond
//! it, the answer is 503 with `Retry-After` at once — there is no queue.
//!
//! An admitted request's handler runs in a task of its own that keeps the permit until the handler
//! has finished, even when the client disconnects (which drops the connection's future): the
//! blocking TPM or file work a handler started cannot be cancelled, so the bound counts it until it
//! ends.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::sync::Semaphore;

use crate::http::error::ApiError;

/// The bound of one kind of request; clones share it.
#[derive(Clone, Debug)]
pub struct Gate {
    what: &'static str,
    permits: Arc<Semaphore>,
    max: usize,
    retry_after_secs: u32,
}

impl Gate {
    /// At most `max` requests of kind `what` at once; the rest are told to retry after
    /// `retry_after_secs`.
    pub fn new(what: &'static str, max: usize, retry_after_secs: u32) -> Self {
        Gate {
            what,
            permits: Arc::new(Semaphore::new(max)),
            max,
            retry_after_secs,
        }
    }

    /// `routes` with every request through this gate.
    pub fn guard<S: Clone + Send + Sync + 'static>(&self, routes: Router<S>) -> Router<S> {
        routes.route_layer(middleware::from_fn_with_state(self.clone(), admit))
    }

    fn busy(&self) -> Response {
        let mut r = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "busy: {} {} requests are in progress; retry after {} s",
                self.max, self.what, self.retry_after_secs
            ),
        )
        .into_response();
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(self.retry_after_secs),
        );
        r
    }
}

async fn admit(State(gate): State<Gate>, req: Request, next: Next) -> Response {
    let Ok(permit) = gate.permits.clone().try_acquire_owned() else {
        return gate.busy();
    };
    let handler = tokio::spawn(async move {
        let response = next.run(req).await;
        drop(permit);
        response
    });
    handler.await.unwrap_or_else(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{} handler: {e}", gate.what),
        )
        .into_response()
    })
}
