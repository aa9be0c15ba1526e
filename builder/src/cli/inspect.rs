//! `cvm-image inspect`: show a built disk.

use crate::inspect;
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// The disk image (raw).
    pub disk: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InspectArgs) -> Result<ExitCode> {
    inspect::inspect(&args.disk, args.json)?;
    Ok(ExitCode::SUCCESS)
}
