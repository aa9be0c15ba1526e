//! `cvm-image run`: boot OUT/disk.raw and wait until the guest agent is healthy, then stay in the
//! foreground or detach. The run's arguments ([`RunArgs`]) live in [`crate::qemu`], which the
//! reference-boot recorder starts the same VM with.

use crate::qemu::cmdline::{self, GUEST_AGENT_PORT, GUEST_WORKLOAD_PORT};
pub use crate::qemu::RunArgs;
use crate::qemu::{console, prepare, prepare_to_print, Outcome, RunState, Vm};
use crate::reference;
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::fmt::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Exit status of a run interrupted by Ctrl-C before the agent was healthy (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;
/// Marker of the init's fatal line (initrd/src/console.rs).
const INIT_FATAL: &str = "cvm-init: FATAL: ";

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

/// `cvm-image run`: start, wait for the agent, then detach or stay in the foreground.
pub fn run(args: &RunArgs) -> Result<ExitCode> {
    if args.print_command {
        print!("{}", print_command(args)?);
        return Ok(ExitCode::SUCCESS);
    }
    let cfg = prepare(args)?;
    reference::warn_if_qemu_differs(
        &cfg.lock,
        reference::Variant::of(args.secure_boot),
        &cfg.qemu,
    );
    let interrupted = interrupt_flag()?;
    let vm = Vm::start(&cfg)?;
    announce(&cfg.disk, vm.state());
    let Some(vm) = wait_until_healthy(vm, args, &interrupted)? else {
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    };
    if args.detach {
        detach(vm, args);
        return Ok(ExitCode::SUCCESS);
    }
    run_in_foreground(vm, args, &interrupted)?;
    Ok(ExitCode::SUCCESS)
}

/// Where the VM's console, agent, workload and EK CA are, on stderr.
fn announce(disk: &Path, st: &RunState) {
    eprintln!(
        "cvm-image: booting {} (console: {})",
        disk.display(),
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
}

/// Waits for `GET /health`: the running VM, or `None` when interrupted (the VM is then stopped). A
/// VM that stopped or never answered is an error naming the init's fatal line and the console log.
fn wait_until_healthy(mut vm: Vm, args: &RunArgs, interrupted: &AtomicBool) -> Result<Option<Vm>> {
    let st = vm.state().clone();
    match vm.wait_healthy(Duration::from_secs(args.timeout), interrupted)? {
        Outcome::Healthy(after) => {
            let timing = vm
                .timing()
                .map(|t| t.summary())
                .unwrap_or_else(|e| format!("no timing: {e:#}"));
            eprintln!(
                "cvm-image: agent healthy {:.1} s after QEMU started ({timing})",
                after.as_secs_f64()
            );
            Ok(Some(vm))
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
            Ok(None)
        }
    }
}

/// Leaves the VM running and prints where it is (stdout) and how to stop it (stderr).
fn detach(vm: Vm, args: &RunArgs) {
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
}

/// Runs until the guest powers off; Ctrl-C presses the ACPI power button and waits up to `--grace`.
fn run_in_foreground(mut vm: Vm, args: &RunArgs, interrupted: &AtomicBool) -> Result<()> {
    eprintln!(
        "cvm-image: running until the guest powers off; Ctrl-C shuts it down (twice: at once)"
    );
    match vm.wait_exit(interrupted)? {
        Some(status) => {
            eprintln!("cvm-image: the guest powered off (QEMU {status})");
            drop(vm);
        }
        None => {
            eprintln!(
                "cvm-image: shutting down (ACPI power button, up to {} s)",
                args.grace
            );
            let ended = vm.shutdown(Duration::from_secs(args.grace), Some(interrupted));
            eprintln!("cvm-image: {}", ended.describe());
        }
    }
    Ok(())
}

/// Where `run --print-command` puts the run's private directory: a shell variable the printed
/// script sets first.
const RUN_DIR_VAR: &str = "${RUN}";

/// `run --print-command`: the run as a commented POSIX shell script — the swtpm_setup, swtpm and
/// QEMU command lines `Vm::start` runs, with the files it writes first; nothing starts.
fn print_command(args: &RunArgs) -> Result<String> {
    use crate::deploy::shell_quote;
    use crate::qemu::{plan, ports, swtpm};
    let cfg = prepare_to_print(args)?;
    let host = ports::free_loopback_ports(2)?;
    let plan = plan(&cfg, Path::new(RUN_DIR_VAR), [host[0], host[1]]);
    let line = |program: &Path, args: &[OsString]| {
        std::iter::once(program.as_os_str())
            .chain(args.iter().map(OsString::as_os_str))
            .map(|w| shell_quote(&w.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let path = |p: &Path| shell_quote(&p.to_string_lossy());
    let tpm = &plan.tpm;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# The VM `cvm-image run` starts for {} (printed only: nothing was started).\n\
         # Agent API http://{lo}:{} (guest port {GUEST_AGENT_PORT}), workload http://{lo}:{} \
         (guest port {GUEST_WORKLOAD_PORT}).\nset -e\nRUN=$(mktemp -d)",
        cfg.disk.display(),
        host[0],
        host[1],
        lo = ports::LOOPBACK,
    );
    let _ = writeln!(
        s,
        "# 1. The TPM: swtpm_setup manufactures it with EK certificates from a CA of this run \
         (`cvm-image run` copies its\n#    certificates to OUT/ek-ca.pem), swtpm serves it.\n\
         mkdir -p {} {}",
        path(&tpm.state_dir),
        path(&tpm.ca_dir)
    );
    for (file, text) in swtpm::config_files(&cfg.swtpm, tpm) {
        let _ = write!(s, "cat > {} <<EOF\n{text}EOF\n", path(&file));
    }
    let _ = writeln!(
        s,
        "{}\n{} &\nwhile [ ! -S {} ]; do sleep 0.1; done",
        line(&swtpm::setup_program(&cfg.swtpm), &swtpm::setup_args(tpm)),
        line(&cfg.swtpm, &swtpm::args(tpm)?),
        path(&tpm.ctrl_socket)
    );
    let _ = writeln!(
        s,
        "# 2. QEMU boots the disk (snapshot=on: the image is never written) with a private copy \
         of the variable store.\ncp {vars} {copy}\nchmod 600 {copy}\n{}",
        line(&cfg.qemu, &cmdline::args(&plan.qemu)),
        vars = path(&cfg.ovmf_vars_template),
        copy = path(&plan.qemu.ovmf_vars),
    );
    Ok(s)
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
