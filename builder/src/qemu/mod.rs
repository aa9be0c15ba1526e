//! The runner of `cvm-image run` / `stop` (the commands are in `cli/run.rs`, `cli/stop.rs`):
//! boot `OUT/disk.raw` under QEMU + OVMF + swtpm, the way a verifier expects
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
pub use vm::{plan, Ended, Outcome, Plan, Vm, VmConfig};

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

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
    /// Print the command lines of this run — swtpm_setup, swtpm and QEMU, shell-quoted, one per
    /// line — and exit without starting anything or writing to OUT. To review the VM the golden
    /// file's qemu profile assumes (docs/golden-measurement.md, "The VM of the qemu profile"), or
    /// to start it by hand: ${RUN} stands for the run's private directory, the forwarded host
    /// ports are ones free now. The disk, the spec's firmware and the other options are checked
    /// as for a run; a host tool that is not installed is shown by its name.
    #[arg(long, conflicts_with = "detach")]
    pub print_command: bool,
}

/// Everything a run is started from, checked before any process starts.
pub fn prepare(args: &RunArgs) -> Result<VmConfig> {
    let (disk, disk_format) = checked_disk(args)?;
    refuse_if_running(&args.out)?;
    let qemu = tools::find(tools::QEMU)?;
    let swtpm = tools::find(tools::SWTPM)?;
    configure(args, disk, disk_format, qemu, swtpm)
}

/// What `run --print-command` shows: [`prepare`]'s configuration, without touching the output
/// directory (a stale run record stays) and with a host tool that is not installed named as its
/// program.
pub fn prepare_to_print(args: &RunArgs) -> Result<VmConfig> {
    let (disk, disk_format) = checked_disk(args)?;
    let find =
        |tool: tools::Tool| tools::find(tool).unwrap_or_else(|_| PathBuf::from(tool.program));
    configure(
        args,
        disk,
        disk_format,
        find(tools::QEMU),
        find(tools::SWTPM),
    )
}

/// The disk to boot (`--disk` or OUT/disk.raw), checked, and its QEMU format.
fn checked_disk(args: &RunArgs) -> Result<(PathBuf, &'static str)> {
    let disk = args
        .disk
        .clone()
        .unwrap_or_else(|| args.out.join("disk.raw"));
    let disk_format = disk::check(&disk)?;
    Ok((disk, disk_format))
}

fn configure(
    args: &RunArgs,
    disk: PathBuf,
    disk_format: &'static str,
    qemu: PathBuf,
    swtpm: PathBuf,
) -> Result<VmConfig> {
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
    let (ovmf_code, ovmf_vars_template) = if args.secure_boot {
        (fw.secure_boot_code, enrolled_vars(&args.out)?)
    } else {
        (fw.code, fw.vars_template)
    };
    Ok(VmConfig {
        out: args.out.clone(),
        lock: fw.lock.clone(),
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
