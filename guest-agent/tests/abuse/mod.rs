//! Abuse of an HTTP port, and a probe that times `/health` meanwhile: shared by the server tests
//! (guest-agent/tests/server.rs, a server in the test process) and the boot test (tests/attest_boot.rs,
//! the agent of a running VM). Plain blocking sockets and threads, so that the client side is as
//! simple as an attacker's.
//!
//! Through QEMU's user network a connection first reaches QEMU's own listening socket on the host,
//! whose backlog is 1: a SYN that finds it full is sent again by the host's kernel a second later,
//! before anything reaches the guest. So the connections of a flood are opened at a pace
//! ([`Flood::connect_every`]), and the probe times the answer from the moment its connection is
//! established, its connect apart.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Reads one response from `r`: its status and whether the server will close the connection.
fn read_response(r: &mut impl BufRead) -> io::Result<(u16, bool)> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(&format!("bad status line {line:?}")))?;
    let (mut length, mut close) = (0usize, false);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v
                .trim()
                .parse()
                .map_err(|_| invalid("bad content-length"))?;
        } else if lower.starts_with("connection:") && lower.contains("close") {
            close = true;
        }
    }
    io::copy(&mut r.take(length as u64), &mut io::sink())?;
    Ok((status, close))
}

fn request_head(path: &str, close: bool) -> String {
    let connection = if close { "close" } else { "keep-alive" };
    format!("GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: {connection}\r\n\r\n")
}

/// How long any connect may take (a few SYN retransmissions).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A [`get`]'s answer and its timing.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    pub status: u16,
    /// Until the connection was established.
    pub connect: Duration,
    /// From then until the whole answer was read.
    pub answer: Duration,
}

/// `GET path` on a fresh connection: connected within [`CONNECT_TIMEOUT`], answered within
/// `timeout` after.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<Answer> {
    let start = Instant::now();
    let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    let connect = start.elapsed();
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    (&stream).write_all(request_head(path, true).as_bytes())?;
    let (status, _) = read_response(&mut BufReader::new(&stream))?;
    Ok(Answer {
        status,
        connect,
        answer: start.elapsed() - connect,
    })
}

/// What a [`Probe`] saw.
#[derive(Debug)]
pub struct ProbeReport {
    pub addr: SocketAddr,
    pub path: &'static str,
    pub answers: usize,
    pub slowest_connect: Duration,
    /// The slowest answer, counted from the established connection.
    pub slowest_answer: Duration,
    /// The slowest connect and answer together.
    pub slowest: Duration,
    /// Each failure: when (since the start), and what.
    pub failures: Vec<String>,
}

impl ProbeReport {
    /// Every probe connected and was answered 200, within the limit of [`Probe::start`].
    pub fn assert_answered(&self) {
        assert!(
            self.failures.is_empty() && self.answers > 0,
            "{} on {}: {} answers, slowest {:?} (connect {:?}, answer {:?}); {} failure(s):\n{}",
            self.path,
            self.addr,
            self.answers,
            self.slowest,
            self.slowest_connect,
            self.slowest_answer,
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

/// `GET path` on a fresh connection every `every` until [`Probe::finish`]; each must be answered
/// 200 within `limit` of its connection.
pub struct Probe {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<ProbeReport>,
}

impl Probe {
    pub fn start(addr: SocketAddr, path: &'static str, every: Duration, limit: Duration) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let begin = Instant::now();
            let mut report = ProbeReport {
                addr,
                path,
                answers: 0,
                slowest_connect: Duration::ZERO,
                slowest_answer: Duration::ZERO,
                slowest: Duration::ZERO,
                failures: vec![],
            };
            while !stopped.load(Ordering::Relaxed) {
                let at = begin.elapsed();
                match get(addr, path, limit) {
                    Ok(a) if a.status == 200 => {
                        report.answers += 1;
                        report.slowest_connect = report.slowest_connect.max(a.connect);
                        report.slowest_answer = report.slowest_answer.max(a.answer);
                        report.slowest = report.slowest.max(a.connect + a.answer);
                    }
                    Ok(a) => report.failures.push(format!("{at:?}: {a:?}")),
                    Err(e) => report.failures.push(format!("{at:?}: {e}")),
                }
                std::thread::sleep(every);
            }
            report
        });
        Probe { stop, thread }
    }

    pub fn finish(self) -> ProbeReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the probe thread panicked")
    }
}

/// Up to `n` connections that send nothing, opened one after another with `every` between them;
/// those that could not connect are left out.
pub fn idle_connections(addr: SocketAddr, n: usize, every: Duration) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| {
            let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).ok();
            std::thread::sleep(every);
            s
        })
        .collect()
}

/// Whether the server has closed `stream` (EOF or reset), waiting at most `wait` for it.
pub fn closed_by_server(stream: &TcpStream, wait: Duration) -> bool {
    let _ = stream.set_read_timeout(Some(wait));
    let mut byte = [0u8; 1];
    match (&*stream).read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
    }
}

/// `n` connections (opened `connect_every` apart) that send an endless request head, one byte per
/// connection every `every`, for `duration`; returns how many of them the server had closed by then.
pub fn slowloris(
    addr: SocketAddr,
    n: usize,
    connect_every: Duration,
    every: Duration,
    duration: Duration,
) -> JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut streams: Vec<(TcpStream, bool)> = idle_connections(addr, n, connect_every)
            .into_iter()
            .map(|s| (s, false))
            .collect();
        let head = b"GET /health HTTP/1.1\r\nHost: agent\r\nX-Slow: ";
        let start = Instant::now();
        let mut sent = 0;
        while start.elapsed() < duration {
            let byte: &[u8] = if sent < head.len() {
                &head[sent..=sent]
            } else {
                b"a"
            };
            for (s, closed) in streams.iter_mut().filter(|(_, c)| !*c) {
                if (&*s).write_all(byte).is_err() || closed_by_server(s, Duration::from_millis(1)) {
                    *closed = true;
                }
            }
            sent += 1;
            std::thread::sleep(every);
        }
        streams.iter().filter(|(_, c)| *c).count()
    })
}

/// `n` requests, each with one header field of `size` bytes, on fresh connections: the status of
/// each, 0 when the server closed the connection without answering.
pub fn huge_headers(addr: SocketAddr, n: usize, size: usize) -> Vec<u16> {
    let mut head = b"GET /health HTTP/1.1\r\nHost: agent\r\nX-Huge: ".to_vec();
    head.resize(head.len() + size, b'a');
    head.extend_from_slice(b"\r\n\r\n");
    (0..n)
        .map(|_| {
            let Ok(stream) = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) else {
                return 0;
            };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = (&stream).write_all(&head);
            read_response(&mut BufReader::new(&stream)).map_or(0, |(status, _)| status)
        })
        .collect()
}

/// What a [`burst`] got.
#[derive(Debug, Default)]
pub struct BurstReport {
    /// Answers by status.
    pub statuses: std::collections::BTreeMap<u16, usize>,
    /// Connections lost (and reopened) before an answer.
    pub connection_errors: usize,
    pub took: Duration,
}

impl BurstReport {
    pub fn answered(&self) -> usize {
        self.statuses.values().sum()
    }
}

/// `total` requests for `path` over `parallel` keep-alive connections, as fast as answers come; a
/// request whose connection fails is sent again on a new one (at most `total` times in all).
pub fn burst(addr: SocketAddr, path: &str, total: usize, parallel: usize) -> BurstReport {
    let left = Arc::new(AtomicUsize::new(total));
    let errors = Arc::new(AtomicUsize::new(0));
    let report = Arc::new(Mutex::new(BurstReport::default()));
    let start = Instant::now();
    let head = request_head(path, false);
    let workers: Vec<_> = (0..parallel)
        .map(|_| {
            let (left, errors, report, head) =
                (left.clone(), errors.clone(), report.clone(), head.clone());
            std::thread::spawn(move || {
                let mut conn: Option<BufReader<TcpStream>> = None;
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    loop {
                        if errors.load(Ordering::Relaxed) > total {
                            return;
                        }
                        if conn.is_none() {
                            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                                Ok(s) => {
                                    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                                    conn = Some(BufReader::new(s));
                                }
                                Err(_) => {
                                    errors.fetch_add(1, Ordering::Relaxed);
                                    continue;
                                }
                            }
                        }
                        let c = conn.as_mut().expect("connected above");
                        let answer = c
                            .get_ref()
                            .write_all(head.as_bytes())
                            .and_then(|()| read_response(c));
                        match answer {
                            Ok((status, close)) => {
                                *report.lock().unwrap().statuses.entry(status).or_default() += 1;
                                if close {
                                    conn = None;
                                }
                                break;
                            }
                            Err(_) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                conn = None;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("burst thread panicked");
    }
    let mut report = std::mem::take(&mut *report.lock().unwrap());
    report.connection_errors = errors.load(Ordering::Relaxed);
    report.took = start.elapsed();
    report
}

/// The abuses of a [`flood`], all at once.
#[derive(Debug, Clone)]
pub struct Flood {
    /// Connections that send nothing.
    pub idle: usize,
    /// The pause after each connect of the idle and slowloris connections.
    pub connect_every: Duration,
    /// Slowloris senders, one byte every 100 ms each, for `slowloris_for`.
    pub slowloris: usize,
    pub slowloris_for: Duration,
    /// Requests with one 64 KiB header field.
    pub huge_heads: usize,
    /// `GET /health` requests, over `burst_connections` keep-alive connections.
    pub burst: usize,
    pub burst_connections: usize,
}

/// What a [`flood`] got.
#[derive(Debug)]
pub struct FloodReport {
    /// The idle connections that could connect, still held.
    pub idle: Vec<TcpStream>,
    pub slowloris_closed: usize,
    pub huge_heads: Vec<u16>,
    pub burst: BurstReport,
    pub took: Duration,
}

impl FloodReport {
    /// Every burst request was answered 200, no huge head was (431 or closed).
    pub fn assert_served(&self, flood: &Flood) {
        assert_eq!(
            self.burst.statuses.get(&200),
            Some(&flood.burst),
            "{:?}",
            self.burst
        );
        assert!(
            self.huge_heads.iter().all(|s| [0, 431].contains(s)),
            "64 KiB heads answered {:?}",
            self.huge_heads
        );
    }
}

/// Runs every abuse of `flood` on `addr` at once; returns when all are done.
pub fn flood(addr: SocketAddr, flood: &Flood) -> FloodReport {
    let start = Instant::now();
    let f = flood.clone();
    let slow = slowloris(
        addr,
        f.slowloris,
        f.connect_every,
        Duration::from_millis(100),
        f.slowloris_for,
    );
    let idle = std::thread::spawn(move || idle_connections(addr, f.idle, f.connect_every));
    let huge = std::thread::spawn(move || huge_headers(addr, f.huge_heads, 64 * 1024));
    let burst = burst(addr, "/health", flood.burst, flood.burst_connections);
    FloodReport {
        idle: idle.join().expect("idle connections"),
        slowloris_closed: slow.join().expect("slowloris"),
        huge_heads: huge.join().expect("huge heads"),
        burst,
        took: start.elapsed(),
    }
}

/// Descriptors this process has open.
pub fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}
