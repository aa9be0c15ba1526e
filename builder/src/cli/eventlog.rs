//! `cvm-image eventlog`: decode a TCG event log and replay it.

use anyhow::{Context, Result};
use cvm_measure::eventlog;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct EventlogArgs {
    /// The binary log, e.g. /sys/kernel/security/tpm0/binary_bios_measurements.
    pub file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: EventlogArgs) -> Result<ExitCode> {
    let file = &args.file;
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let log = eventlog::parse(&bytes)
        .with_context(|| format!("{} is not a TCG event log", file.display()))?;
    if args.json {
        println!("{}", eventlog::render_json(&log));
    } else {
        print!("{}", eventlog::render_text(&log));
    }
    Ok(ExitCode::SUCCESS)
}
