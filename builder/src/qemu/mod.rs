//! `cvm-image run` / `stop`: boot `OUT/disk.raw` under QEMU + OVMF + swtpm, the way a verifier expects
//! it to boot, and watch it become healthy.
//!
//! A run: check the disk ([`disk`]) and the host tools ([`tools`]); resolve the pinned OVMF from the
//! input cache ([`firmware`]); start swtpm and QEMU in one process group ([`vm`], [`swtpm`],
//! [`cmdline`]); follow the serial console ([`console`]); print the forwarded URLs; wait for
//! `GET /health`; then either stay in the foreground until the guest powers off or Ctrl-C, or (with
//! `--detach`) leave the VM running, recorded in `OUT/run.json` ([`state`]) for `cvm-image stop`.
//! Boot timing is read off the console ([`timing`], [`boot_timing`]).
//!
//! Nothing of a run can change the image: the disk is attached with `snapshot=on` and the firmware's
//! variable store is a per-run copy.

pub mod cmdline;
pub mod console;
pub mod disk;
pub mod firmware;
pub mod http;
pub mod ports;
pub mod process;
pub mod qmp;
pub mod state;
pub mod swtpm;
pub mod timing;
pub mod tools;
pub mod vm;

pub use cmdline::Accel;
pub use process::tail_of;
pub use state::RunState;
pub use timing::{boot_timing, BootTiming};
pub use vm::{Ended, Outcome, Vm, VmConfig};

use crate::reference;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Exit status of a run interrupted by Ctrl-C before the agent was healthy (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;
/// Marker of the init's fatal line (initrd/src/console.rs).
const INIT_FATAL: &str = "cvm-init: FATAL: ";

/// `cvm-image run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Output directory of `cvm-image build`: boots OUT/disk.raw; console.log, qemu.log and run.json
    /// are written there.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Boot this image instead of OUT/disk.raw: a raw disk or the qcow2 of `build --target qemu`
    /// (format detected from its header).
    #[arg(long)]
    pub disk: Option<PathBuf>,
    /// QEMU accelerator (tcg works everywhere; kvm needs /dev/kvm).
    #[arg(long, value_enum, default_value_t = Accel::Tcg)]
    pub accel: Accel,
    /// Return once the agent is healthy and leave the VM running (stop it with `cvm-image stop`).
    #[arg(long)]
    pub detach: bool,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = cmdline::DEFAULT_MEMORY_MIB)]
    pub memory: u32,
    /// Virtual CPUs.
    #[arg(long, default_value_t = cmdline::DEFAULT_CPUS)]
    pub cpus: u32,
    /// Seconds to wait for the agent's /health before giving up (TCG boots take 15–40 s).
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Seconds the guest gets to power off after the ACPI power button (Ctrl-C) before QEMU is ended.
    #[arg(long, default_value_t = 30)]
    pub grace: u64,
    /// Boot with Secure Boot enforced: the SMM build of the pinned OVMF (OVMF_CODE_4M.secboot.fd)
    /// with a per-run copy of OUT/OVMF_VARS.fd, which `build --keys` writes with the owner's PK, KEK
    /// and db enrolled. An unsigned or wrongly signed UKI is refused by the firmware.
    #[arg(long)]
    pub secure_boot: bool,
    /// The image spec: its [firmware] section names the pinned OVMF to boot.
    #[arg(long, default_value = "image.toml")]
    pub spec: PathBuf,
    /// Lock file (default: cvm-image.lock beside the spec).
    #[arg(long)]
    pub lock: Option<PathBuf>,
    /// Input cache directory.
    #[arg(long, env = "CVM_IMAGE_CACHE")]
    pub cache: Option<PathBuf>,
}

/// `cvm-image stop`.
#[derive(clap::Args, Debug, Clone)]
pub struct StopArgs {
    /// Output directory the VM was started with (holds run.json).
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Seconds the guest gets to power off after the ACPI power button before QEMU is ended.
    #[arg(long, default_value_t = 30)]
    pub grace: u64,
}

/// Everything a run is started from, checked before any process starts.
pub fn prepare(args: &RunArgs) -> Result<VmConfig> {
    let disk = args
        .disk
        .clone()
        .unwrap_or_else(|| args.out.join("disk.raw"));
    let disk_format = disk::check(&disk)?;
    refuse_if_running(&args.out)?;
    let qemu = tools::find(tools::QEMU)?;
    let swtpm = tools::find(tools::SWTPM)?;
    if args.memory == 0 || args.cpus == 0 {
        bail!("--memory and --cpus must be at least 1");
    }
    let fw = firmware::resolve(&args.spec, args.lock.clone(), args.cache.clone())?;
    let manifest = args.out.join("manifest.json");
    if manifest.is_file() {
        firmware::check_manifest(&fw, &manifest)?;
    } else {
        eprintln!(
            "cvm-image: warning: no {}: cannot check that the image was built for {} {}",
            manifest.display(),
            fw.package,
            fw.version
        );
    }
    warn_if_qemu_differs(&fw.lock, reference::Variant::of(args.secure_boot), &qemu);
    let (ovmf_code, ovmf_vars_template) = if args.secure_boot {
        (fw.secure_boot_code, enrolled_vars(&args.out)?)
    } else {
        (fw.code, fw.vars_template)
    };
    Ok(VmConfig {
        out: args.out.clone(),
        disk,
        disk_format,
        ovmf_code,
        ovmf_vars_template,
        secure_boot: args.secure_boot,
        qemu,
        swtpm,
        accel: args.accel,
        memory_mib: args.memory,
        cpus: args.cpus,
        echo_console: !args.detach,
        die_with_runner: !args.detach,
    })
}

/// One line on stderr when `qemu` is not the QEMU the pinned reference boot of `variant` was
/// recorded with (PCR 1 may then differ). Silent when there is nothing to compare.
fn warn_if_qemu_differs(lock_path: &Path, variant: reference::Variant, qemu: &Path) {
    let Some(recorded) = reference::pinned_quietly(lock_path, variant) else {
        return;
    };
    let Ok(host) = tools::first_line_of(qemu, "--version") else {
        return;
    };
    if let Some(warning) = reference::qemu_version_warning(&recorded, &host) {
        eprintln!("{warning}");
    }
}

/// The variable store with the owner's keys enrolled, written by `build --keys`.
fn enrolled_vars(out: &Path) -> Result<PathBuf> {
    let vars = out.join(crate::secureboot::OVMF_VARS_OUTPUT);
    if !vars.is_file() {
        bail!(
            "--secure-boot needs {} with the owner's keys enrolled: build with `cvm-image build --keys DIR` \
             (create keys with `cvm-image keys generate`)",
            vars.display()
        );
    }
    Ok(vars)
}

/// One VM per output directory: a second would overwrite its console log and state file.
fn refuse_if_running(out: &Path) -> Result<()> {
    let Ok(st) = RunState::read(out) else {
        return Ok(());
    };
    let marker = st.run_dir.to_string_lossy().into_owned();
    if process::is_ours(st.qemu_pid, st.pgrp, &st.qemu_program, &marker) {
        bail!(
            "a VM of {} is still running (QEMU pid {}, agent {}): stop it first with `cvm-image stop --out {}`",
            out.display(),
            st.qemu_pid,
            st.agent_url,
            out.display()
        );
    }
    // A stale record of a VM that ended without cleaning up (e.g. its runner was killed).
    st.remove_run_dir();
    RunState::remove(out);
    Ok(())
}

/// SIGINT, SIGTERM and SIGHUP set the returned flag instead of killing the runner, so that the VM is
/// always shut down and cleaned up.
fn interrupt_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, flag.clone())
            .with_context(|| format!("cannot install a handler for signal {sig}"))?;
    }
    Ok(flag)
}

/// `cvm-image run`.
pub fn run(args: &RunArgs) -> Result<ExitCode> {
    let cfg = prepare(args)?;
    let interrupted = interrupt_flag()?;
    let grace = Duration::from_secs(args.grace);
    let mut vm = Vm::start(&cfg)?;
    let st = vm.state().clone();
    eprintln!(
        "cvm-image: booting {} (console: {})",
        cfg.disk.display(),
        st.console_log.display()
    );
    eprintln!(
        "cvm-image: agent API  {}  (guest port {})",
        st.agent_url,
        cmdline::GUEST_AGENT_PORT
    );
    eprintln!(
        "cvm-image: workload   {}  (guest port {})",
        st.workload_url,
        cmdline::GUEST_WORKLOAD_PORT
    );
    if let Some(ca) = &st.ek_ca {
        eprintln!(
            "cvm-image: EK CA      {}  (for `cvm-image verify --ek-ca`)",
            ca.display()
        );
    }

    match vm.wait_healthy(Duration::from_secs(args.timeout), &interrupted)? {
        Outcome::Healthy(after) => {
            let timing = vm
                .timing()
                .map(|t| t.summary())
                .unwrap_or_else(|e| format!("no timing: {e:#}"));
            eprintln!(
                "cvm-image: agent healthy {:.1} s after QEMU started ({timing})",
                after.as_secs_f64()
            );
        }
        Outcome::Exited(status) => {
            let why = failure_summary(&vm);
            let console = st.console_log.display().to_string();
            drop(vm);
            bail!("the VM stopped before the agent became healthy (QEMU {status}){why}; console log: {console}");
        }
        Outcome::TimedOut => {
            let why = failure_summary(&vm);
            vm.shutdown(Duration::ZERO, None);
            bail!(
                "the agent did not answer {}/health within {} s{why}; console log: {}",
                st.agent_url,
                args.timeout,
                st.console_log.display()
            );
        }
        Outcome::Interrupted => {
            eprintln!("cvm-image: interrupted; stopping the VM");
            vm.shutdown(Duration::ZERO, None);
            return Ok(ExitCode::from(EXIT_INTERRUPTED));
        }
    }

    if args.detach {
        let st = vm.detach();
        println!("agent    {}", st.agent_url);
        println!("workload {}", st.workload_url);
        if let Some(ca) = &st.ek_ca {
            println!("ek-ca    {}", ca.display());
        }
        eprintln!(
            "cvm-image: running detached (QEMU pid {}, swtpm pid {}); stop it with `cvm-image stop --out {}`",
            st.qemu_pid,
            st.swtpm_pid,
            args.out.display()
        );
        return Ok(ExitCode::SUCCESS);
    }

    eprintln!(
        "cvm-image: running until the guest powers off; Ctrl-C shuts it down (twice: at once)"
    );
    match vm.wait_exit(&interrupted)? {
        Some(status) => {
            eprintln!("cvm-image: the guest powered off (QEMU {status})");
            drop(vm);
        }
        None => {
            eprintln!(
                "cvm-image: shutting down (ACPI power button, up to {} s)",
                args.grace
            );
            let ended = vm.shutdown(grace, Some(&interrupted));
            eprintln!("cvm-image: {}", describe(ended));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `cvm-image stop`: ends the VM recorded in `OUT/run.json`.
pub fn stop(args: &StopArgs) -> Result<ExitCode> {
    let st = RunState::read(&args.out)?;
    let marker = st.run_dir.to_string_lossy().into_owned();
    let qemu_ours = process::is_ours(st.qemu_pid, st.pgrp, &st.qemu_program, &marker);
    let swtpm_ours = process::is_ours(st.swtpm_pid, st.pgrp, &st.swtpm_program, &marker);
    if !qemu_ours && !swtpm_ours {
        eprintln!(
            "cvm-image: the VM of {} is no longer running (QEMU pid {} gone); cleaning up",
            state::path(&args.out).display(),
            st.qemu_pid
        );
    } else {
        eprintln!(
            "cvm-image: stopping QEMU pid {} (up to {} s for the guest to power off)",
            st.qemu_pid, args.grace
        );
        let ended = vm::end_vm(&st, Duration::from_secs(args.grace), None);
        eprintln!("cvm-image: {}", describe(ended));
    }
    st.remove_run_dir();
    RunState::remove(&args.out);
    Ok(ExitCode::SUCCESS)
}

fn describe(ended: Ended) -> &'static str {
    match ended {
        Ended::AlreadyExited => "the guest had already powered off",
        Ended::PoweredOff => "the guest powered off cleanly",
        Ended::Terminated => "the guest did not power off in time: QEMU was terminated",
        Ended::Killed => "QEMU and swtpm were killed",
    }
}

/// ": <the init's FATAL line>" or QEMU's own error, for the message of a failed boot.
fn failure_summary(vm: &Vm) -> String {
    // From the file, not the follower: QEMU has written everything, the follower may lag a poll.
    let lines = std::fs::read(vm.console_log())
        .map(|raw| console::parse_raw_log(&raw))
        .unwrap_or_default();
    if let Some(l) = lines.iter().find(|l| l.text.contains(INIT_FATAL)) {
        return format!(": {}", l.text.trim());
    }
    let qemu = vm.qemu_messages();
    if !qemu.trim().is_empty() {
        return format!("; QEMU said:\n{qemu}");
    }
    String::new()
}
