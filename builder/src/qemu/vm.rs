//! One VM: swtpm + QEMU in a process group of their own, the console follower, and the ways a run ends.

use super::cmdline::{self, Accel, Forward, QemuConfig, GUEST_AGENT_PORT, GUEST_WORKLOAD_PORT};
use super::console::{ConsoleLine, Follower};
use super::state::RunState;
use super::swtpm::{self, SwtpmPaths};
use super::{http, ports, process, qmp, timing};
use anyhow::{Context, Result};
use rustix::process::Signal;
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Console log, QEMU's own messages: both in the output directory.
pub const CONSOLE_LOG: &str = "console.log";
pub const QEMU_LOG: &str = "qemu.log";
/// The vTPM's EK CA certificates, in the output directory (they outlive the run directory).
pub const EK_CA: &str = "ek-ca.pem";
/// The run's private copy of the firmware's variable store, in the run directory.
pub const OVMF_VARS_COPY: &str = "OVMF_VARS.fd";
/// How often the health check is tried while booting.
const HEALTH_POLL: Duration = Duration::from_millis(250);
const HEALTH_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// After SIGTERM, how long QEMU gets before the whole group is killed.
const TERM_GRACE: Duration = Duration::from_secs(5);
/// swtpm exits when QEMU closes its socket; this long it may take.
const SWTPM_EXIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(100);

/// Numbers the run directories of this process (several VMs may run at once, e.g. in tests).
static RUN_SEQ: AtomicU32 = AtomicU32::new(0);

/// What a VM is started from.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Output directory: console.log, console.timed.log, qemu.log and run.json go here.
    pub out: PathBuf,
    /// The cvm-image.lock the firmware was resolved from; its pinned reference boots say which QEMU
    /// the prediction was recorded with.
    pub lock: PathBuf,
    pub disk: PathBuf,
    /// QEMU block format of `disk`: "raw" or "qcow2".
    pub disk_format: &'static str,
    pub ovmf_code: PathBuf,
    pub ovmf_vars_template: PathBuf,
    /// SMM on and the variable flash SMM-only (`run --secure-boot`).
    pub secure_boot: bool,
    pub qemu: PathBuf,
    pub swtpm: PathBuf,
    pub accel: Accel,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Copy the console to stdout as it arrives.
    pub echo_console: bool,
    /// End the VM when this process dies (foreground runs); detached runs must outlive it.
    pub die_with_runner: bool,
}

/// How waiting for the agent ended.
#[derive(Debug)]
pub enum Outcome {
    /// `GET /health` answered 200, this long after QEMU started.
    Healthy(Duration),
    /// QEMU exited first (the guest powered off, e.g. after a fatal init error, or QEMU failed).
    Exited(ExitStatus),
    TimedOut,
    Interrupted,
}

/// How the VM's processes ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// QEMU had already exited (guest power-off) before we asked.
    AlreadyExited,
    /// The guest powered off after the ACPI power button.
    PoweredOff,
    /// QEMU was ended with SIGTERM (guest ignored the power button within the grace time).
    Terminated,
    /// The process group needed SIGKILL.
    Killed,
}

impl Ended {
    /// How the VM ended, for the user.
    pub fn describe(self) -> &'static str {
        match self {
            Ended::AlreadyExited => "the guest had already powered off",
            Ended::PoweredOff => "the guest powered off cleanly",
            Ended::Terminated => "the guest did not power off in time: QEMU was terminated",
            Ended::Killed => "QEMU and swtpm were killed",
        }
    }
}

pub struct Vm {
    qemu: Child,
    swtpm: Child,
    state: RunState,
    console: Option<Follower>,
    started: Instant,
    out: PathBuf,
    detached: bool,
}

impl Vm {
    /// Starts swtpm, then QEMU; returns once both run (the guest is booting).
    pub fn start(cfg: &VmConfig) -> Result<Vm> {
        let run_dir = make_run_dir()?;
        match Self::start_in(cfg, &run_dir) {
            Ok(vm) => Ok(vm),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&run_dir);
                Err(e)
            }
        }
    }

    fn start_in(cfg: &VmConfig, run_dir: &Path) -> Result<Vm> {
        let host_ports = ports::free_loopback_ports(2)?;
        let Plan {
            tpm,
            qemu: qemu_cfg,
        } = plan(cfg, run_dir, [host_ports[0], host_ports[1]]);
        let vars = qemu_cfg.ovmf_vars.clone();
        std::fs::copy(&cfg.ovmf_vars_template, &vars).with_context(|| {
            format!(
                "cannot copy the firmware variable store {} to {}",
                cfg.ovmf_vars_template.display(),
                vars.display()
            )
        })?;
        // The template in the cache may be read-only; the copy must be writable by the firmware.
        std::fs::set_permissions(&vars, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot make {} writable", vars.display()))?;

        let console_log = qemu_cfg.console_log.clone();
        let forwards = qemu_cfg.forwards.clone();

        swtpm::provision(&cfg.swtpm, &tpm)?;
        let ek_ca = cfg.out.join(EK_CA);
        std::fs::write(&ek_ca, tpm.ca_bundle()?).with_context(|| {
            format!("cannot write the EK CA certificates to {}", ek_ca.display())
        })?;
        let mut swtpm = swtpm::spawn(&cfg.swtpm, &tpm, 0, cfg.die_with_runner)?;
        let pgrp = swtpm.id();
        // A stale log of an earlier run must not be mistaken for this one's.
        let _ = std::fs::remove_file(&console_log);
        let started = Instant::now();
        let qemu = match spawn_qemu(cfg, &qemu_cfg, pgrp) {
            Ok(q) => q,
            Err(e) => {
                let _ = swtpm.kill();
                let _ = swtpm.wait();
                return Err(e);
            }
        };
        let url = |port: u16| format!("http://{}:{port}", ports::LOOPBACK);
        let state = RunState {
            qemu_pid: qemu.id(),
            swtpm_pid: pgrp,
            pgrp,
            run_dir: run_dir.to_path_buf(),
            qmp_socket: qemu_cfg.qmp_socket.clone(),
            console_log: console_log.clone(),
            agent_url: url(forwards[0].host),
            workload_url: url(forwards[1].host),
            qemu_program: file_name(&cfg.qemu),
            swtpm_program: file_name(&cfg.swtpm),
            ek_ca: Some(ek_ca),
        };
        let mut vm = Vm {
            qemu,
            swtpm,
            state,
            console: None,
            started,
            out: cfg.out.clone(),
            detached: false,
        };
        // From here on, Drop ends both processes if anything fails.
        vm.console = Some(Follower::start(&console_log, started, cfg.echo_console)?);
        vm.state.write(&cfg.out)?;
        Ok(vm)
    }

    pub fn state(&self) -> &RunState {
        &self.state
    }

    pub fn agent_url(&self) -> &str {
        &self.state.agent_url
    }

    pub fn workload_url(&self) -> &str {
        &self.state.workload_url
    }

    pub fn console_log(&self) -> &Path {
        &self.state.console_log
    }

    /// The console lines seen so far.
    pub fn console_lines(&self) -> Vec<ConsoleLine> {
        self.console.as_ref().map(|c| c.lines()).unwrap_or_default()
    }

    /// Boot timing from the console so far (available once the agent is healthy).
    pub fn timing(&self) -> Result<timing::BootTiming> {
        timing::from_lines(&self.console_lines())
    }

    /// Waits until `GET /health` answers 200, QEMU exits, `timeout` passes or `interrupted` is set.
    pub fn wait_healthy(&mut self, timeout: Duration, interrupted: &AtomicBool) -> Result<Outcome> {
        let health = format!("{}/health", self.state.agent_url);
        loop {
            if interrupted.load(Ordering::SeqCst) {
                return Ok(Outcome::Interrupted);
            }
            if let Some(status) = self.qemu.try_wait().context("waiting for QEMU")? {
                return Ok(Outcome::Exited(status));
            }
            if matches!(http::get(&health, HEALTH_REQUEST_TIMEOUT), Ok(r) if r.status == 200) {
                return Ok(Outcome::Healthy(self.started.elapsed()));
            }
            if self.started.elapsed() > timeout {
                return Ok(Outcome::TimedOut);
            }
            std::thread::sleep(HEALTH_POLL);
        }
    }

    /// Waits until QEMU exits (`Some(status)`) or `interrupted` is set (`None`).
    pub fn wait_exit(&mut self, interrupted: &AtomicBool) -> Result<Option<ExitStatus>> {
        loop {
            if let Some(status) = self.qemu.try_wait().context("waiting for QEMU")? {
                return Ok(Some(status));
            }
            if interrupted.load(Ordering::SeqCst) {
                return Ok(None);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits up to `timeout` for QEMU to exit by itself (a guest that powers off).
    pub fn wait_exit_for(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.qemu.try_wait().context("waiting for QEMU")? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Shuts the VM down: ACPI power button, up to `grace` for the guest to power off (cut short
    /// when `hurry` becomes set, e.g. by a second Ctrl-C), then SIGTERM, then SIGKILL. Cleans up.
    pub fn shutdown(mut self, grace: Duration, hurry: Option<&AtomicBool>) -> Ended {
        let ended = end_vm(&self.state, grace, hurry);
        self.cleanup();
        ended
    }

    /// Leaves the VM running: stops following the console and returns its state (already in
    /// `OUT/run.json`). `cvm-image stop` ends it.
    pub fn detach(mut self) -> RunState {
        if let Some(c) = self.console.take() {
            c.finish();
        }
        self.detached = true;
        self.state.clone()
    }

    /// The last lines of QEMU's own messages (start-up errors such as a port already in use).
    pub fn qemu_messages(&self) -> String {
        process::tail_of(&self.out.join(QEMU_LOG), 10)
    }

    fn cleanup(&mut self) {
        if let Some(c) = self.console.take() {
            c.finish();
        }
        if process::is_alive(self.state.qemu_pid) || process::is_alive(self.state.swtpm_pid) {
            end_vm(&self.state, Duration::ZERO, None);
        }
        let _ = self.qemu.wait();
        let _ = self.swtpm.wait();
        self.state.remove_run_dir();
        RunState::remove(&self.out);
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if !self.detached {
            self.cleanup();
        }
    }
}

/// Ends a VM's processes (ours or, for `stop`, recorded in a state file): power button first when
/// `grace` > 0, then SIGTERM to QEMU, then SIGKILL to the group; swtpm follows QEMU by itself.
pub fn end_vm(state: &RunState, grace: Duration, hurry: Option<&AtomicBool>) -> Ended {
    let qemu = state.qemu_pid;
    let mut ended = Ended::AlreadyExited;
    if process::is_alive(qemu) {
        ended = Ended::Terminated;
        if !grace.is_zero() && qmp::system_powerdown(&state.qmp_socket).is_ok() {
            if let Some(h) = hurry {
                h.store(false, Ordering::SeqCst);
            }
            if wait_gone_unless(qemu, grace, hurry) {
                ended = Ended::PoweredOff;
            }
        }
        if process::is_alive(qemu) {
            process::signal(qemu, Signal::TERM);
            if !process::wait_gone(&[qemu], TERM_GRACE) {
                process::signal_group(state.pgrp, Signal::KILL);
                ended = Ended::Killed;
            }
        }
    }
    if !process::wait_gone(&[state.swtpm_pid], SWTPM_EXIT) {
        process::signal_group(state.pgrp, Signal::KILL);
        process::wait_gone(&[state.swtpm_pid], SWTPM_EXIT);
    }
    ended
}

/// Waits for `pid` to end within `timeout`, giving up early when `hurry` is set.
fn wait_gone_unless(pid: u32, timeout: Duration, hurry: Option<&AtomicBool>) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !process::is_alive(pid) {
            return true;
        }
        if hurry.is_some_and(|h| h.load(Ordering::SeqCst)) {
            return false;
        }
        std::thread::sleep(POLL);
    }
    !process::is_alive(pid)
}

/// What a run starts: where swtpm keeps its files, and QEMU's configuration.
pub struct Plan {
    pub tpm: SwtpmPaths,
    pub qemu: QemuConfig,
}

/// The run of `cfg` in `run_dir`, its agent and workload ports forwarded from `host_ports`: the
/// variable store is the copy `run_dir/OVMF_VARS.fd`, the console `OUT/console.log`. [`Vm::start`]
/// starts it; `run --print-command` prints it.
pub fn plan(cfg: &VmConfig, run_dir: &Path, host_ports: [u16; 2]) -> Plan {
    let tpm = SwtpmPaths::in_dir(run_dir);
    let qemu = QemuConfig {
        accel: cfg.accel,
        memory_mib: cfg.memory_mib,
        cpus: cfg.cpus,
        ovmf_code: cfg.ovmf_code.clone(),
        ovmf_vars: run_dir.join(OVMF_VARS_COPY),
        disk: cfg.disk.clone(),
        disk_format: cfg.disk_format,
        tpm_socket: tpm.ctrl_socket.clone(),
        qmp_socket: run_dir.join("qmp.sock"),
        console_log: cfg.out.join(CONSOLE_LOG),
        forwards: vec![
            Forward {
                host: host_ports[0],
                guest: GUEST_AGENT_PORT,
            },
            Forward {
                host: host_ports[1],
                guest: GUEST_WORKLOAD_PORT,
            },
        ],
        secure_boot: cfg.secure_boot,
    };
    Plan { tpm, qemu }
}

fn spawn_qemu(cfg: &VmConfig, qemu_cfg: &QemuConfig, pgrp: u32) -> Result<Child> {
    let log_path = cfg.out.join(QEMU_LOG);
    let log =
        File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
    let mut cmd = Command::new(&cfg.qemu);
    cmd.args(cmdline::args(qemu_cfg))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    process::configure(&mut cmd, pgrp, cfg.die_with_runner);
    cmd.spawn()
        .with_context(|| format!("cannot start {}", cfg.qemu.display()))
}

/// A private directory for sockets, TPM state and the VARS copy: short (unix socket paths are
/// limited to 107 bytes) and unique per process and run.
fn make_run_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "{}{}.{}",
        super::state::RUN_DIR_PREFIX,
        std::process::id(),
        RUN_SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create the run directory {}", dir.display()))?;
    Ok(dir)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
