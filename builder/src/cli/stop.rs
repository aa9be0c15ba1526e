//! `cvm-image stop`: end a VM started with `cvm-image run --detach`.

use crate::qemu::{process, state, vm, RunState};
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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

/// `cvm-image stop`: ends the VM recorded in `OUT/run.json`.
pub fn run(args: &StopArgs) -> Result<ExitCode> {
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
        eprintln!("cvm-image: {}", ended.describe());
    }
    st.remove_run_dir();
    RunState::remove(&args.out);
    Ok(ExitCode::SUCCESS)
}
