//! `cvm-image fetch`: download, verify and extract the pinned inputs without building.

use super::inputs::InputArgs;
use crate::fetch;
use crate::spec::Spec;
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct FetchArgs {
    #[command(flatten)]
    pub inputs: InputArgs,
    /// Also fetch these kernel profiles' packages (repeatable).
    #[arg(long)]
    pub kernel: Vec<PathBuf>,
    /// Link each extracted package into this directory under its package name.
    #[arg(long)]
    pub link_dir: Option<PathBuf>,
}

pub fn run(args: FetchArgs) -> Result<ExitCode> {
    let spec = Spec::load(&args.inputs.spec, None)?;
    let paths = args.inputs.paths(&spec);
    fetch::prefetch(
        &spec,
        &args.kernel,
        &paths.lock,
        &paths.cache,
        args.link_dir.as_deref(),
    )?;
    Ok(ExitCode::SUCCESS)
}
