//! Runs the workload's services: start, forward output, reap, restart per policy, stop.
//!
//! Process exits are collected by one [`Reaper`] rather than by per-child `wait` calls: as PID 1 the
//! agent inherits every orphan on the system and must reap them all with `waitpid(-1)`, which would
//! steal the statuses that per-child waits expect. The reaper hands each status to whoever
//! registered the pid and reaps the rest. Outside PID 1 (tests, or a child of another init) it waits
//! only for the pids it started, so it never disturbs its parent process's other children.
//!
//! Each service runs in its own process group so that stopping it also stops what it forked.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitOptions};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::console::LineSink;
use crate::log;
use crate::workload::{RestartPolicy, Service, Workload};

/// `PATH` given to services: their environment is otherwise only what the manifest sets.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";

/// Longest forwarded line; longer output is split so a service cannot exhaust the agent's memory.
const MAX_LINE: u64 = 4096;

/// How often the reaper polls even without SIGCHLD (signals coalesce; this bounds any miss).
const REAP_POLL: Duration = Duration::from_millis(500);

/// Exit statuses of unregistered pids kept for a late `register` (see [`Reaper::register`]).
const MAX_UNCLAIMED: usize = 64;

/// Restart delays: `initial`, doubling up to `max`; back to `initial` after a run of `reset_after`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(10),
        }
    }
}

/// How a service run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    /// `exit(code)`.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
    /// The process could not be started at all.
    SpawnError(String),
}

impl Exit {
    fn success(&self) -> bool {
        *self == Exit::Code(0)
    }

    fn describe(&self) -> String {
        match self {
            Exit::Code(c) => format!("exited with status {c}"),
            Exit::Signal(s) => format!("killed by signal {s}"),
            Exit::SpawnError(e) => format!("failed to start: {e}"),
        }
    }
}

impl RestartPolicy {
    pub fn should_restart(self, exit: &Exit) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !exit.success(),
            RestartPolicy::Never => false,
        }
    }
}

/// Where a service is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Starting,
    Running,
    /// Exited; waiting out the backoff before the next start.
    Restarting,
    /// Exited and, per policy, not restarted.
    Exited,
    /// Stopped because the agent is shutting down.
    Stopped,
}

/// What `GET /workload` reports per service.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    pub name: String,
    pub state: State,
    pub pid: Option<u32>,
    pub restarts: u32,
    pub restart: RestartPolicy,
    pub last_exit: Option<Exit>,
}

/// Snapshot of the whole workload.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadStatus {
    pub name: String,
    pub services: Vec<ServiceStatus>,
}

/// Collects child exit statuses and routes them to whoever waits for that pid.
pub struct Reaper {
    /// Reap every child (`waitpid(-1)`), as PID 1 must; otherwise only registered pids.
    reap_all: bool,
    inner: Mutex<ReaperInner>,
}

#[derive(Default)]
struct ReaperInner {
    waiting: BTreeMap<i32, oneshot::Sender<Exit>>,
    /// Statuses reaped before anyone registered the pid (possible with a multi-threaded runtime).
    unclaimed: BTreeMap<i32, Exit>,
}

impl Reaper {
    pub fn new(reap_all: bool) -> Arc<Self> {
        Arc::new(Reaper {
            reap_all,
            inner: Mutex::new(ReaperInner::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ReaperInner> {
        // A poisoned lock only means another thread panicked mid-update of plain maps; keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns a receiver that yields `pid`'s exit status once it is reaped.
    pub fn register(&self, pid: u32) -> oneshot::Receiver<Exit> {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        match inner.unclaimed.remove(&(pid as i32)) {
            Some(exit) => {
                let _ = tx.send(exit);
            }
            None => {
                inner.waiting.insert(pid as i32, tx);
            }
        }
        rx
    }

    /// Reaps what has exited, without blocking.
    pub fn reap(&self) {
        if self.reap_all {
            self.reap_any();
        } else {
            self.reap_registered();
        }
    }

    fn reap_any(&self) {
        loop {
            // wait(), not waitpid(None, …): rustix maps `None` to pid 0, which waits only for the
            // caller's own process group, and every service runs in a group of its own.
            match rustix::process::wait(WaitOptions::NOHANG) {
                Ok(Some((pid, status))) => {
                    let Some(exit) = exit_of(status) else {
                        continue;
                    };
                    self.deliver(pid.as_raw_nonzero().get(), exit);
                }
                Ok(None) | Err(Errno::CHILD) => return,
                Err(Errno::INTR) => continue,
                Err(e) => {
                    log!("waitpid(-1) failed: {e}");
                    return;
                }
            }
        }
    }

    fn reap_registered(&self) {
        let pids: Vec<i32> = self.lock().waiting.keys().copied().collect();
        for raw in pids {
            let Some(pid) = Pid::from_raw(raw) else {
                continue;
            };
            match rustix::process::waitpid(Some(pid), WaitOptions::NOHANG) {
                Ok(Some((_, status))) => {
                    if let Some(exit) = exit_of(status) {
                        self.deliver(raw, exit);
                    }
                }
                Ok(None) => {}
                Err(e) => log!("waitpid({raw}) failed: {e}"),
            }
        }
    }

    fn deliver(&self, pid: i32, exit: Exit) {
        let mut inner = self.lock();
        if let Some(tx) = inner.waiting.remove(&pid) {
            let _ = tx.send(exit);
        } else {
            // An orphan re-parented to PID 1, or a child registered a moment from now.
            log!("reaped pid {pid} ({})", exit.describe());
            if inner.unclaimed.len() >= MAX_UNCLAIMED {
                inner.unclaimed.pop_first();
            }
            inner.unclaimed.insert(pid, exit);
        }
    }

    /// Reaps on every SIGCHLD and on a short poll interval, forever.
    pub async fn run(self: Arc<Self>) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut sigchld = match signal(SignalKind::child()) {
            Ok(s) => Some(s),
            Err(e) => {
                log!("cannot watch SIGCHLD ({e}); reaping by polling only");
                None
            }
        };
        let mut tick = tokio::time::interval(REAP_POLL);
        loop {
            match sigchld.as_mut() {
                Some(s) => {
                    tokio::select! {
                        _ = s.recv() => {}
                        _ = tick.tick() => {}
                    }
                }
                None => {
                    tick.tick().await;
                }
            }
            self.reap();
        }
    }
}

/// Termination status → [`Exit`]; `None` for stop/continue reports (not requested, but harmless).
fn exit_of(status: rustix::process::WaitStatus) -> Option<Exit> {
    if let Some(code) = status.exit_status() {
        Some(Exit::Code(code))
    } else {
        status.terminating_signal().map(Exit::Signal)
    }
}

/// State shared between the service tasks and the API.
struct Shared {
    workload_name: String,
    status: Mutex<Vec<ServiceStatus>>,
    reaper: Arc<Reaper>,
    sink: LineSink,
    backoff: Backoff,
    stopping: watch::Sender<bool>,
}

impl Shared {
    fn update(&self, idx: usize, f: impl FnOnce(&mut ServiceStatus)) {
        let mut all = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = all.get_mut(idx) {
            f(s);
        }
    }

    fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }
}

/// Handle to the running workload.
pub struct Supervisor {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Supervisor {
    /// Starts every service of `workload` (must be called inside a tokio runtime). The reaper must be
    /// running (see [`Reaper::run`]) for exits to be noticed.
    pub fn start(
        workload: &Workload,
        reaper: Arc<Reaper>,
        sink: LineSink,
        backoff: Backoff,
    ) -> Self {
        let status = workload
            .services
            .iter()
            .map(|s| ServiceStatus {
                name: s.name.clone(),
                state: State::Starting,
                pid: None,
                restarts: 0,
                restart: s.restart,
                last_exit: None,
            })
            .collect();
        let shared = Arc::new(Shared {
            workload_name: workload.name.clone(),
            status: Mutex::new(status),
            reaper,
            sink,
            backoff,
            stopping: watch::channel(false).0,
        });
        let tasks = workload
            .services
            .iter()
            .enumerate()
            .map(|(idx, svc)| tokio::spawn(run_service(svc.clone(), idx, shared.clone())))
            .collect();
        Supervisor {
            shared,
            tasks: Mutex::new(tasks),
        }
    }

    pub fn status(&self) -> WorkloadStatus {
        WorkloadStatus {
            name: self.shared.workload_name.clone(),
            services: self
                .shared
                .status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Stops every service: no more restarts, SIGTERM to each process group, SIGKILL to what is
    /// left after `grace`. Returns when all service tasks are done (or a further grace expired).
    pub async fn stop(&self, grace: Duration) {
        self.shared.stopping.send_replace(true);
        self.signal_running(Signal::TERM);
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        if !join_until(&mut tasks, grace).await {
            log!("services still running after {grace:?}: sending SIGKILL");
            self.signal_running(Signal::KILL);
            if !join_until(&mut tasks, grace).await {
                log!("services did not exit after SIGKILL; giving up waiting");
            }
        }
    }

    fn signal_running(&self, sig: Signal) {
        for s in self.status().services {
            let Some(pid) = s.pid.and_then(|p| Pid::from_raw(p as i32)) else {
                continue;
            };
            // The group first (the service and its children); the pid alone if the group is gone.
            if rustix::process::kill_process_group(pid, sig).is_err() {
                let _ = rustix::process::kill_process(pid, sig);
            }
        }
    }
}

/// Awaits all tasks until `timeout`; true when all finished.
async fn join_until(tasks: &mut Vec<JoinHandle<()>>, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while let Some(task) = tasks.last_mut() {
        if tokio::time::timeout_at(deadline, task).await.is_err() {
            return false;
        }
        tasks.pop();
    }
    true
}

/// One service's life: start, wait, decide, back off, again.
async fn run_service(svc: Service, idx: usize, shared: Arc<Shared>) {
    let backoff = shared.backoff;
    let mut delay = backoff.initial;
    let mut stopping = shared.stopping.subscribe();
    loop {
        if shared.is_stopping() {
            shared.update(idx, |s| s.state = State::Stopped);
            return;
        }
        shared.update(idx, |s| s.state = State::Starting);
        let started = Instant::now();
        let exit = run_once(&svc, idx, &shared).await;
        log!("service {}: {}", svc.name, exit.describe());
        let stop_now = shared.is_stopping();
        let restart = !stop_now && svc.restart.should_restart(&exit);
        let state = match (stop_now, restart) {
            (true, _) => State::Stopped,
            (false, true) => State::Restarting,
            (false, false) => State::Exited,
        };
        shared.update(idx, |s| {
            s.pid = None;
            s.last_exit = Some(exit);
            s.state = state;
        });
        if !restart {
            return;
        }
        if started.elapsed() >= backoff.reset_after {
            delay = backoff.initial;
        }
        log!("service {}: restarting in {delay:?}", svc.name);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopping.wait_for(|s| *s) => {}
        }
        delay = (delay * 2).min(backoff.max);
        if !shared.is_stopping() {
            shared.update(idx, |s| s.restarts += 1);
        }
    }
}

/// Starts the service once and waits for it to end.
async fn run_once(svc: &Service, idx: usize, shared: &Shared) -> Exit {
    let mut child = match command(svc).spawn() {
        Ok(c) => c,
        Err(e) => return Exit::SpawnError(format!("{}: {e}", svc.command)),
    };
    let pid = child.id();
    // Registered before the next await: the reaper cannot run in between on this thread.
    let exited = shared.reaper.register(pid);
    shared.update(idx, |s| {
        s.pid = Some(pid);
        s.state = State::Running;
    });
    log!("service {}: started, pid {pid}", svc.name);
    if let Some(out) = child.stdout.take() {
        forward_lines(&svc.name, out.into(), shared.sink.clone());
    }
    if let Some(err) = child.stderr.take() {
        forward_lines(&svc.name, err.into(), shared.sink.clone());
    }
    // `child` is dropped without wait(): the reaper collects the status.
    drop(child);
    exited
        .await
        .unwrap_or_else(|_| Exit::SpawnError("exit status lost".into()))
}

/// The process as configured in the manifest: own process group, clean environment, piped output.
fn command(svc: &Service) -> Command {
    let mut cmd = Command::new(&svc.command);
    cmd.args(&svc.args)
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .envs(&svc.env)
        .current_dir(svc.workdir.as_deref().unwrap_or("/"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let uid = svc.user.uid;
    if uid != rustix::process::geteuid().as_raw() {
        // std drops supplementary groups (setgroups(0)) before setuid when running as root.
        cmd.uid(uid).gid(uid);
    }
    cmd
}

/// Copies a pipe to the sink line by line with a `[name] ` prefix, until EOF.
fn forward_lines(name: &str, fd: OwnedFd, sink: LineSink) {
    let prefix = format!("[{name}] ");
    tokio::spawn(async move {
        let pipe = match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
            Ok(p) => p,
            Err(e) => {
                log!("cannot read output of {prefix}: {e}");
                return;
            }
        };
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match (&mut reader)
                .take(MAX_LINE)
                .read_until(b'\n', &mut buf)
                .await
            {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    while matches!(buf.last(), Some(b'\n' | b'\r')) {
                        buf.pop();
                    }
                    sink(&format!("{prefix}{}", String::from_utf8_lossy(&buf)));
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::User;

    fn svc(name: &str, script: &str, restart: RestartPolicy) -> Service {
        Service {
            name: name.into(),
            command: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: BTreeMap::new(),
            workdir: None,
            restart,
            user: User {
                uid: rustix::process::geteuid().as_raw(),
            },
        }
    }

    fn fast() -> Backoff {
        Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(40),
            reset_after: Duration::from_secs(60),
        }
    }

    fn collector() -> (LineSink, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        (
            Arc::new(move |s: &str| l2.lock().unwrap().push(s.to_string())),
            lines,
        )
    }

    async fn wait_for(sup: &Supervisor, what: &str, pred: impl Fn(&WorkloadStatus) -> bool) {
        for _ in 0..500 {
            if pred(&sup.status()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}: {:?}", sup.status());
    }

    fn start(services: Vec<Service>, sink: LineSink) -> Supervisor {
        let reaper = Reaper::new(false);
        tokio::spawn(reaper.clone().run());
        let w = Workload {
            name: "t".into(),
            services,
        };
        Supervisor::start(&w, reaper, sink, fast())
    }

    #[test]
    fn restart_policy_table() {
        use RestartPolicy::*;
        let ok = Exit::Code(0);
        let fail = Exit::Code(3);
        let sig = Exit::Signal(9);
        assert!(Always.should_restart(&ok) && Always.should_restart(&fail));
        assert!(!OnFailure.should_restart(&ok));
        assert!(OnFailure.should_restart(&fail) && OnFailure.should_restart(&sig));
        assert!(!Never.should_restart(&fail));
    }

    #[tokio::test]
    async fn output_is_prefixed_and_exit_recorded() {
        let (sink, lines) = collector();
        let sup = start(
            vec![svc(
                "echo",
                "echo hello; echo oops >&2; exit 3",
                RestartPolicy::Never,
            )],
            sink,
        );
        wait_for(&sup, "exit", |s| s.services[0].state == State::Exited).await;
        let st = &sup.status().services[0];
        assert_eq!(st.last_exit, Some(Exit::Code(3)));
        assert_eq!(st.restarts, 0);
        assert_eq!(st.pid, None);
        // Output forwarding races the exit notification; give the pipes a moment.
        for _ in 0..100 {
            if lines.lock().unwrap().len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut got = lines.lock().unwrap().clone();
        got.sort();
        assert_eq!(got, vec!["[echo] hello", "[echo] oops"]);
    }

    #[tokio::test]
    async fn on_failure_restarts_until_success() {
        // Fails twice (counting runs in a file), then succeeds: two restarts, then exited.
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("runs");
        let script = format!(
            "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; [ $n -ge 3 ]",
            c = count.display()
        );
        let (sink, _) = collector();
        let sup = start(vec![svc("flaky", &script, RestartPolicy::OnFailure)], sink);
        wait_for(&sup, "final exit", |s| s.services[0].state == State::Exited).await;
        let st = &sup.status().services[0];
        assert_eq!(st.restarts, 2);
        assert_eq!(st.last_exit, Some(Exit::Code(0)));
        assert_eq!(std::fs::read_to_string(&count).unwrap().trim(), "3");
    }

    #[tokio::test]
    async fn always_restarts_after_success_and_never_does_not() {
        let (sink, _) = collector();
        let sup = start(
            vec![
                svc("always", "exit 0", RestartPolicy::Always),
                svc("never", "exit 1", RestartPolicy::Never),
            ],
            sink,
        );
        wait_for(&sup, "restarts", |s| s.services[0].restarts >= 3).await;
        let st = sup.status();
        assert_eq!(st.services[1].state, State::Exited);
        assert_eq!(st.services[1].restarts, 0);
        assert_eq!(st.services[1].last_exit, Some(Exit::Code(1)));
        sup.stop(Duration::from_secs(5)).await;
        assert_eq!(sup.status().services[0].state, State::Stopped);
    }

    #[tokio::test]
    async fn spawn_failure_is_reported_and_retried() {
        let (sink, _) = collector();
        let mut s = svc("missing", "", RestartPolicy::OnFailure);
        s.command = "/nonexistent/binary".into();
        s.args.clear();
        let sup = start(vec![s], sink);
        wait_for(&sup, "retries", |s| s.services[0].restarts >= 2).await;
        let st = &sup.status().services[0];
        match &st.last_exit {
            Some(Exit::SpawnError(e)) => assert!(e.contains("/nonexistent/binary"), "{e}"),
            other => panic!("expected spawn error, got {other:?}"),
        }
        sup.stop(Duration::from_secs(5)).await;
    }

    #[tokio::test]
    async fn stop_terminates_then_kills() {
        let (sink, _) = collector();
        let sup = start(
            vec![
                svc("polite", "exec sleep 60", RestartPolicy::Always),
                // Ignores SIGTERM: needs the SIGKILL after the grace period.
                svc(
                    "stubborn",
                    "trap '' TERM; while :; do sleep 0.05; done",
                    RestartPolicy::Always,
                ),
            ],
            sink,
        );
        wait_for(&sup, "both running", |s| {
            s.services.iter().all(|x| x.state == State::Running)
        })
        .await;
        // Let the shell install its trap before signalling.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t = Instant::now();
        sup.stop(Duration::from_millis(500)).await;
        let st = sup.status();
        assert!(
            st.services.iter().all(|s| s.state == State::Stopped),
            "{st:?}"
        );
        assert_eq!(st.services[0].last_exit, Some(Exit::Signal(15)));
        assert_eq!(st.services[1].last_exit, Some(Exit::Signal(9)));
        assert!(
            t.elapsed() >= Duration::from_millis(500),
            "SIGKILL only after the grace period"
        );
    }

    #[tokio::test]
    async fn environment_is_clean_and_set_from_manifest() {
        let (sink, lines) = collector();
        let mut s = svc(
            "env",
            "echo \"$FOO|$PATH|$HOME\"; pwd",
            RestartPolicy::Never,
        );
        s.env.insert("FOO".into(), "bar baz".into());
        s.workdir = Some("/tmp".into());
        let sup = start(vec![s], sink);
        wait_for(&sup, "exit", |s| s.services[0].state == State::Exited).await;
        for _ in 0..100 {
            if lines.lock().unwrap().len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let got = lines.lock().unwrap().clone();
        assert_eq!(
            got,
            vec![
                format!("[env] bar baz|{DEFAULT_PATH}|"),
                "[env] /tmp".to_string()
            ]
        );
    }
}
