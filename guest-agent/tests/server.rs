//! The server's bounds (`cvm_agent::http::server`, `http::gate`) against abuse, in the test process:
//! the agent's routers on local listeners with small bounds and short timeouts, so that every limit
//! is reached within seconds. `/health` must answer within 1 s throughout, on the flooded port and
//! on the loopback one beside it, and the process's descriptors come back to their count before.
//!
//! The tests run one at a time ([`serial`]): they count the process's descriptors and one lowers
//! its descriptor limit.

mod abuse;
mod common;

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use abuse::*;
use axum::routing;
use axum::Router;
use common::*;
use cvm_agent::api::{local_router, public_router, ApiConfig, AppState, WorkloadView};
use cvm_agent::http::gate::Gate;
use cvm_agent::http::server::{serve, Limits};
use cvm_agent::tpm::TpmSource;
use tokio::sync::{mpsc, oneshot};

const ANSWER_WITHIN: Duration = Duration::from_secs(1);
const PROBE_EVERY: Duration = Duration::from_millis(50);

fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Small bounds and short timeouts.
fn limits(connections: usize) -> Limits {
    Limits {
        connections,
        header_read_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        ..Limits::public(1024, cvm_agent::api::MAX_PUBLIC_BODY)
    }
}

/// A current-thread runtime on its own thread, as in the agent, serving what it is given; dropped,
/// it stops and closes everything it held. Holds the [`serial`] lock and the agent's files.
struct Servers {
    tx: Option<mpsc::UnboundedSender<(std::net::TcpListener, Router, Limits)>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    dir: tempfile::TempDir,
    _serial: MutexGuard<'static, ()>,
}

impl Servers {
    fn new() -> Servers {
        let serial = serial();
        let (tx, mut rx) = mpsc::unbounded_channel::<(std::net::TcpListener, Router, Limits)>();
        let (stop, stopped) = oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                let accept = async {
                    while let Some((listener, router, limits)) = rx.recv().await {
                        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                        tokio::spawn(serve(listener, router, limits));
                    }
                    std::future::pending::<()>().await
                };
                tokio::select! {
                    _ = stopped => {}
                    () = accept => {}
                }
            });
        });
        Servers {
            tx: Some(tx),
            stop: Some(stop),
            thread: Some(thread),
            dir: tempfile::tempdir().unwrap(),
            _serial: serial,
        }
    }

    /// The agent's public router within `limits`; its address.
    fn public(&self, limits: Limits) -> SocketAddr {
        self.serve(public_router(state(self.dir.path())), limits)
    }

    /// Serves `router` within `limits` on `listener`.
    fn serve_on(&self, listener: std::net::TcpListener, router: Router, limits: Limits) {
        self.tx
            .as_ref()
            .unwrap()
            .send((listener, router, limits))
            .unwrap();
    }

    /// Serves `router` within `limits` on a fresh port; its address, accepting.
    fn serve(&self, router: Router, limits: Limits) -> SocketAddr {
        let (listener, addr) = listen();
        self.serve_on(listener, router, limits);
        assert!(wait_connectable(addr.port(), Duration::from_secs(10)));
        addr
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.tx.take();
        let _ = self.stop.take().unwrap().send(());
        let _ = self.thread.take().unwrap().join();
    }
}

fn listen() -> (std::net::TcpListener, SocketAddr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// The agent's state without TPM (nothing listens on port 1) or workload.
fn state(dir: &std::path::Path) -> AppState {
    let eventlog = dir.join("binary_bios_measurements");
    std::fs::write(&eventlog, [0u8; 64]).unwrap();
    AppState::new(
        ApiConfig {
            tpm: TpmSource::Tcp("127.0.0.1:1".into()),
            eventlog,
            runtime_eventlog: dir.join("runtime-eventlog.jsonl"),
        },
        WorkloadView::Failed("no workload in this test".into()),
    )
}

/// Waits (up to 5 s) until this process has `baseline` descriptors open again.
fn assert_descriptors_return_to(baseline: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_descriptors() != baseline && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(open_descriptors(), baseline, "descriptors left open");
}

/// Port "8000" (32 connections, 1 s timeouts) takes 500 idle connections, 50 slowloris senders,
/// 20 heads of 64 KiB and a burst of 10,000 requests, all at once; `/health` answers within 1 s
/// there and on the loopback router's port beside it; afterwards every connection the server held
/// is closed.
#[test]
fn health_answers_on_both_ports_through_a_flood_and_descriptors_return() {
    let servers = Servers::new();
    let public = servers.public(limits(32));
    let local = servers.serve(local_router(state(servers.dir.path())), limits(8));
    let baseline = open_descriptors();

    let probes = [public, local].map(|a| Probe::start(a, "/health", PROBE_EVERY, ANSWER_WITHIN));
    let abuse = Flood {
        idle: 500,
        connect_every: Duration::ZERO,
        slowloris: 50,
        slowloris_for: Duration::from_millis(2500),
        huge_heads: 20,
        burst: 10_000,
        burst_connections: 16,
    };
    let report = flood(public, &abuse);
    let probes = probes.map(Probe::finish);
    eprintln!(
        "flood of {:?}: {:?}; probes {probes:?}",
        report.took, report.burst
    );

    for p in &probes {
        p.assert_answered();
        assert!(p.slowest <= ANSWER_WITHIN, "{p:?}");
    }
    report.assert_served(&abuse);
    assert_eq!(
        report.slowloris_closed, 50,
        "slowloris connections left open"
    );
    assert_eq!(report.idle.len(), 500, "idle connections refused");
    let open = report
        .idle
        .iter()
        .filter(|s| !closed_by_server(s, Duration::from_secs(2)))
        .count();
    assert_eq!(open, 0, "idle connections the server kept past its timeout");
    drop(report);
    assert_descriptors_return_to(baseline);
}

/// Below the connection bound (nothing is evicted), the header-read timeout closes a connection
/// whose head is still incomplete after it, and — as the keep-alive idle timeout — one that sends
/// nothing more after its answer.
#[test]
fn the_header_read_timeout_closes_slow_heads_and_idle_keep_alive_connections() {
    let servers = Servers::new();
    let addr = servers.public(limits(8));
    let slow = slowloris(
        addr,
        2,
        Duration::ZERO,
        Duration::from_millis(100),
        Duration::from_millis(1800),
    );
    let stream = std::net::TcpStream::connect(addr).unwrap();
    let r = health_on(&stream);
    assert_eq!(r, 200);
    let answered = Instant::now();
    assert!(closed_by_server(&stream, Duration::from_secs(3)));
    let after = answered.elapsed();
    assert!(
        (Duration::from_millis(800)..Duration::from_millis(2500)).contains(&after),
        "closed {after:?} after the answer"
    );
    assert_eq!(slow.join().unwrap(), 2, "slowloris heads still open");
}

/// One keep-alive `GET /health` on `stream`: its status.
fn health_on(stream: &std::net::TcpStream) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    (&*stream)
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line.split(' ').nth(1).unwrap().parse().unwrap();
    // {"status":"ok"} after the head; the connection stays open.
    while line != "\r\n" {
        line.clear();
        r.read_line(&mut line).unwrap();
    }
    let mut body = [0u8; 15];
    std::io::Read::read_exact(&mut r, &mut body).unwrap();
    status
}

/// A body over the bound is refused (413) before it is read; one that does not arrive in time is
/// answered 408.
#[test]
fn request_bodies_are_bounded_in_size_and_time() {
    let servers = Servers::new();
    let addr = servers.public(limits(4));
    let post = |length: usize, sent: &str| {
        format!(
            "POST /activate-credential HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Content-Length: {length}\r\n\r\n{sent}"
        )
    };
    let r = raw_request(addr.port(), post(1 << 20, "{").as_bytes());
    assert_eq!(r.status, 413, "{}", String::from_utf8_lossy(&r.body));
    let start = Instant::now();
    let r = raw_request(addr.port(), post(100, "{\"credential_blob\"").as_bytes());
    assert_eq!(r.status, 408, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

/// Handlers that take `ms` milliseconds: `/slow` unbounded, `/gated` through `gate`.
fn slow_router(ms: u64, gate: &Gate) -> Router {
    let slow = move || async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        "done"
    };
    Router::new()
        .route("/slow", routing::get(slow))
        .route("/health", routing::get(|| async { "ok" }))
        .merge(gate.guard(Router::new().route("/gated", routing::get(slow))))
}

/// At the bound, a new connection takes the place of the one idle longest; when all are busy with
/// a handler, it waits for one to end instead of being refused.
#[test]
fn at_the_bound_the_longest_idle_connection_makes_room_or_accepting_waits() {
    let servers = Servers::new();
    let addr = servers.serve(slow_router(700, &Gate::new("test", 4, 1)), limits(2));

    let first = std::net::TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let second = std::net::TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let a = get(addr, "/health", ANSWER_WITHIN).unwrap();
    assert_eq!(a.status, 200);
    assert!(a.connect + a.answer < Duration::from_millis(500), "{a:?}");
    assert!(closed_by_server(&first, Duration::from_millis(500)));
    assert!(!closed_by_server(&second, Duration::from_millis(100)));
    drop(second);

    let busy: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || get(addr, "/slow", Duration::from_secs(5)).unwrap()))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let a = get(addr, "/health", Duration::from_secs(5)).unwrap();
    assert_eq!(a.status, 200);
    assert!(
        a.answer > Duration::from_millis(300),
        "answered without a free slot: {a:?}"
    );
    for b in busy {
        assert_eq!(b.join().unwrap().status, 200);
    }
}

/// Beyond its bound a gate answers 503 with Retry-After at once, and work whose client went away
/// still counts until it ends.
#[test]
fn a_gate_answers_503_with_retry_after_and_counts_abandoned_work() {
    let servers = Servers::new();
    let addr = servers.serve(slow_router(800, &Gate::new("test", 2, 1)), limits(8));
    for _ in 0..2 {
        let s = std::net::TcpStream::connect(addr).unwrap();
        std::io::Write::write_all(&mut &s, b"GET /gated HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        drop(s);
    }
    let start = Instant::now();
    let r = request(addr.port(), "GET", "/gated");
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.json()["error"].as_str().unwrap().contains("busy"));
    assert!(start.elapsed() < Duration::from_millis(300));
    std::thread::sleep(Duration::from_millis(900));
    assert_eq!(request(addr.port(), "GET", "/gated").status, 200);
}

/// With no descriptor left (the limit lowered to the count open), accept fails with EMFILE; the
/// server waits it out and answers the waiting clients once descriptors are available again.
#[test]
fn accept_errors_are_waited_out() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let servers = Servers::new();
    let (listener, addr) = listen();
    let clients: Vec<_> = (0..10)
        .map(|_| {
            let s = std::net::TcpStream::connect(addr).unwrap();
            std::io::Write::write_all(
                &mut &s,
                b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            )
            .unwrap();
            s
        })
        .collect();
    let router = public_router(state(servers.dir.path()));
    // Descriptor numbers must stay under the soft limit: the lowest free one is the limit that
    // leaves none.
    let lowest_free = std::os::fd::AsRawFd::as_raw_fd(&std::fs::File::open("/dev/null").unwrap());
    let saved = getrlimit(Resource::Nofile);
    struct Restore(rustix::process::Rlimit);
    impl Drop for Restore {
        fn drop(&mut self) {
            setrlimit(Resource::Nofile, self.0).unwrap();
        }
    }
    let restore = Restore(saved);
    setrlimit(
        Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(lowest_free as u64),
            ..saved
        },
    )
    .unwrap();
    servers.serve_on(listener, router, limits(16));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        std::fs::File::open("/dev/null").is_err(),
        "descriptors were left"
    );
    drop(restore);
    for s in &clients {
        let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut &*s, &mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    }
    assert_eq!(get(addr, "/health", ANSWER_WITHIN).unwrap().status, 200);
}
