//! The API's HTTP server: hyper's HTTP/1 connection builder on a tokio listener, with the bounds that
//! keep each port answering while anyone who can reach it holds connections open, sends slowly,
//! sends huge heads or floods it with requests.
//!
//! Per port ([`Limits`], derived from the process's descriptor limit by [`Limits::public`] and
//! [`Limits::loopback`]):
//!
//! * **Connections.** At most [`Limits::connections`] are served at once. When a new one arrives at
//!   the bound, the connection idle for longest is closed to make room: a connection is idle while
//!   no handler runs for it — before its request head and body have arrived, between keep-alive
//!   requests, and while its answer is being written. Only when every connection has a handler
//!   running (few can: the expensive handlers are bounded by [`super::gate`]) does accepting stop
//!   until one ends; the waiting connection is the only one held beyond the bound, and the kernel's
//!   listen backlog holds the rest. An accept error (EMFILE, ENFILE, ENOBUFS, ENOMEM) is answered with
//!   a pause of 10 ms doubling to 1 s, never by ending the loop.
//! * **Time.** A request head must be complete [`Limits::header_read_timeout`] after the connection
//!   was accepted or its previous answer was written (hyper's header-read timeout, which thus is also
//!   the keep-alive idle timeout), and its body [`Limits::body_timeout`] after the head; the
//!   connection is closed (head) or answered 408 (body) otherwise.
//! * **Size.** A head over [`Limits::max_head`] bytes or [`Limits::max_headers`] fields is answered
//!   431, a body over [`Limits::max_body`] 413; hyper buffers at most [`MAX_BUFFER`] per connection.
//!
//! A body is read whole before the router sees the request, so a slow sender holds no handler, and
//! a router's own tighter limits (`DefaultBodyLimit`) still apply.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use crate::http::error::ApiError;

/// Bytes hyper may buffer per connection (read and write): bounds the memory of a connection whatever
/// its client does.
pub const MAX_BUFFER: usize = 64 * 1024;
/// Largest request head: a request line with a 128-digit nonce and the headers of any HTTP client
/// fit in a few hundred bytes.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header fields in a request head.
pub const MAX_HEADERS: usize = 64;

/// The bounds of one listener.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once (module docs: what happens at the bound).
    pub connections: usize,
    /// Time for a request head, from accept or from the end of the previous answer.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and header fields), bytes.
    pub max_head: usize,
    /// Most header fields.
    pub max_headers: usize,
    /// Largest request body, bytes.
    pub max_body: usize,
    /// Time for a request body, from the end of its head.
    pub body_timeout: Duration,
}

impl Limits {
    /// Port 8000, which anyone on the network reaches: a quarter of the descriptor limit `nofile`
    /// for its connections, 16 to 1024 — 256 at Linux's default of 1024 for PID 1. Ten seconds for
    /// a head or a body: every honest client sends its request at once.
    pub fn public(nofile: u64, max_body: usize) -> Limits {
        Limits {
            connections: share(nofile, 4, 16, 1024),
            header_read_timeout: Duration::from_secs(10),
            max_head: MAX_HEAD,
            max_headers: MAX_HEADERS,
            max_body,
            body_timeout: Duration::from_secs(10),
        }
    }

    /// The loopback port (7999), which only software inside the VM reaches: a sixteenth of
    /// `nofile`, 8 to 256 — 64 at 1024 — apart from the public port's, so that a flood of 8000 leaves
    /// it its own connections. Thirty seconds: the workload may keep a connection for a while.
    pub fn loopback(nofile: u64, max_body: usize) -> Limits {
        Limits {
            connections: share(nofile, 16, 8, 256),
            header_read_timeout: Duration::from_secs(30),
            max_head: MAX_HEAD,
            max_headers: MAX_HEADERS,
            max_body,
            body_timeout: Duration::from_secs(30),
        }
    }

    fn http1(&self) -> http1::Builder {
        let mut b = http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_header_size(self.max_head)
            .max_headers(self.max_headers)
            .max_buf_size(MAX_BUFFER.max(self.max_head))
            .keep_alive(true);
        b
    }
}

/// `nofile / divisor`, clamped to `min..=max`.
fn share(nofile: u64, divisor: u64, min: usize, max: usize) -> usize {
    usize::try_from(nofile / divisor)
        .unwrap_or(usize::MAX)
        .clamp(min, max)
}

/// The process's soft limit on open descriptors (RLIMIT_NOFILE), the budget [`Limits`] divide;
/// "unlimited" counts as 1 << 20, the kernel's default `fs.nr_open`.
pub fn descriptor_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1 << 20)
}

/// Serves `router` on `listener` within `limits`. Never returns: accept errors are waited out.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits) {
    let slots = Slots::new(limits.connections);
    let limits = Arc::new(limits);
    let builder = limits.http1();
    let mut failures = AcceptFailures::new(&listener);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                failures.recovered();
                stream
            }
            Err(e) => {
                failures.wait(&e).await;
                continue;
            }
        };
        let permit = slots.free_slot().await;
        let conn = Conn::register(&slots, permit);
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            stream,
            conn,
            builder.clone(),
            router.clone(),
            limits.clone(),
        ));
    }
}

/// One connection until it ends or is evicted.
async fn connection(
    stream: TcpStream,
    (conn, evicted): (Arc<Conn>, oneshot::Receiver<()>),
    builder: http1::Builder,
    router: Router,
    limits: Arc<Limits>,
) {
    let service_conn = conn.clone();
    let service = hyper::service::service_fn(move |req| {
        let (router, conn, limits) = (router.clone(), service_conn.clone(), limits.clone());
        async move { Ok::<_, Infallible>(handle(req, router, &conn, &limits).await) }
    });
    let served = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(served);
    // Errors (timeouts, malformed requests, resets) end the connection; hyper answered what it could.
    tokio::select! {
        _ = served.as_mut() => {}
        Ok(()) = evicted => {
            if conn.has_handler() {
                // Chosen while idle, busy since: let it finish that request, then close.
                served.as_mut().graceful_shutdown();
                let _ = served.await;
            }
        }
    }
}

/// Reads the body whole (bounded in size and time), then runs the router with the connection marked
/// busy.
async fn handle(
    req: Request<Incoming>,
    router: Router,
    conn: &Arc<Conn>,
    limits: &Limits,
) -> Response {
    let (parts, body) = req.into_parts();
    let body = match read_body(body, limits).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let _busy = Busy::new(conn);
    match router.oneshot(Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

async fn read_body(body: Incoming, limits: &Limits) -> Result<Body, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {} bytes", limits.max_body),
        )
    };
    if body.is_end_stream() {
        return Ok(Body::empty());
    }
    if body.size_hint().lower() > limits.max_body as u64 {
        return Err(too_large());
    }
    let collected = tokio::time::timeout(
        limits.body_timeout,
        Limited::new(body, limits.max_body).collect(),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "request body not received within {} s",
                limits.body_timeout.as_secs()
            ),
        )
    })?;
    match collected {
        Ok(c) => Ok(Body::from(c.to_bytes())),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("reading the request body: {e}"),
        )),
    }
}

/// The connections of one listener: a permit each, and what eviction needs to know of them.
struct Slots {
    permits: Arc<Semaphore>,
    conns: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
    /// Signalled whenever a handler ends: its connection may now be evicted.
    handler_ended: Notify,
}

struct Entry {
    /// Since when no handler runs for it; `None` while one does.
    idle_since: Option<Instant>,
    /// Taken when the connection is chosen for eviction (so it is chosen once).
    evict: Option<oneshot::Sender<()>>,
}

impl Slots {
    fn new(connections: usize) -> Arc<Slots> {
        Arc::new(Slots {
            permits: Arc::new(Semaphore::new(connections)),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            handler_ended: Notify::new(),
        })
    }

    fn conns(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A free connection slot: at once, or after evicting the longest-idle connection, or — when
    /// every connection has a handler running — once one of them ends or goes idle.
    async fn free_slot(&self) -> OwnedSemaphorePermit {
        loop {
            if let Ok(p) = self.permits.clone().try_acquire_owned() {
                return p;
            }
            let evicting = self.evict_longest_idle();
            let ended = self.handler_ended.notified();
            tokio::select! {
                p = self.permits.clone().acquire_owned() => {
                    return p.expect("the slot semaphore is never closed");
                }
                // Nothing was idle: look again when a handler ends.
                () = ended, if !evicting => {}
            }
        }
    }

    /// Tells the connection idle for longest to close; false when every connection is busy.
    fn evict_longest_idle(&self) -> bool {
        let mut conns = self.conns();
        let victim = conns
            .iter()
            .filter(|(_, e)| e.evict.is_some())
            .filter_map(|(id, e)| e.idle_since.map(|t| (t, *id)))
            .min();
        let Some((_, id)) = victim else {
            return false;
        };
        if let Some(tx) = conns.get_mut(&id).and_then(|e| e.evict.take()) {
            let _ = tx.send(());
        }
        true
    }
}

/// A served connection's slot: released (permit and entry) when the connection's task ends.
struct Conn {
    id: u64,
    slots: Arc<Slots>,
    _permit: OwnedSemaphorePermit,
}

impl Conn {
    fn register(
        slots: &Arc<Slots>,
        permit: OwnedSemaphorePermit,
    ) -> (Arc<Conn>, oneshot::Receiver<()>) {
        let id = slots.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        slots.conns().insert(
            id,
            Entry {
                idle_since: Some(Instant::now()),
                evict: Some(tx),
            },
        );
        let conn = Conn {
            id,
            slots: slots.clone(),
            _permit: permit,
        };
        (Arc::new(conn), rx)
    }

    fn set_idle_since(&self, since: Option<Instant>) {
        if let Some(e) = self.slots.conns().get_mut(&self.id) {
            e.idle_since = since;
        }
    }

    fn has_handler(&self) -> bool {
        self.slots
            .conns()
            .get(&self.id)
            .is_some_and(|e| e.idle_since.is_none())
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.slots.conns().remove(&self.id);
    }
}

/// Marks a connection busy (not evictable) while a handler runs for it.
struct Busy<'a>(&'a Conn);

impl<'a> Busy<'a> {
    fn new(conn: &'a Conn) -> Self {
        conn.set_idle_since(None);
        Busy(conn)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.set_idle_since(Some(Instant::now()));
        self.0.slots.handler_ended.notify_one();
    }
}

/// Consecutive accept errors of a listener and the pause before the next try.
struct AcceptFailures {
    addr: String,
    count: u32,
}

impl AcceptFailures {
    const FIRST_PAUSE: Duration = Duration::from_millis(10);
    const MAX_PAUSE: Duration = Duration::from_secs(1);

    fn new(listener: &TcpListener) -> Self {
        let addr = listener
            .local_addr()
            .map_or_else(|_| "?".into(), |a| a.to_string());
        AcceptFailures { addr, count: 0 }
    }

    /// Logs the first error of a run and waits; errors of one aborted connection are skipped at once.
    async fn wait(&mut self, e: &io::Error) {
        if matches!(
            e.kind(),
            io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::Interrupted
        ) {
            return;
        }
        if self.count == 0 {
            crate::log!(
                "accepting on {} failed ({e}); retrying with back-off",
                self.addr
            );
        }
        let pause = Self::FIRST_PAUSE
            .saturating_mul(1 << self.count.min(7))
            .min(Self::MAX_PAUSE);
        self.count = self.count.saturating_add(1);
        tokio::time::sleep(pause).await;
    }

    fn recovered(&mut self) {
        if self.count > 0 {
            crate::log!(
                "accepting on {} again after {} failed attempt(s)",
                self.addr,
                self.count
            );
            self.count = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_follow_the_descriptor_limit() {
        let (public, local) = (Limits::public(1024, 1), Limits::loopback(1024, 1));
        assert_eq!((public.connections, local.connections), (256, 64));
        // Both ports' sockets together take under a third of the descriptors.
        assert!((public.connections + local.connections) * 3 < 1024);
        assert_eq!(Limits::public(64, 1).connections, 16);
        assert_eq!(Limits::public(1 << 20, 1).connections, 1024);
        assert_eq!(Limits::loopback(1 << 20, 1).connections, 256);
    }

    #[test]
    fn descriptor_limit_is_the_soft_limit() {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        assert_eq!(descriptor_limit(), soft.unwrap_or(1 << 20));
    }
}
