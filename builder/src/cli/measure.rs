//! `cvm-image measure`: the golden measurement alone (the build runs in a scratch directory).

use super::inputs::InputArgs;
use crate::pipeline;
use crate::spec::Spec;
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct MeasureArgs {
    #[command(flatten)]
    pub inputs: InputArgs,
    /// Output directory.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Use this kernel profile instead of the spec's.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
}

pub fn run(args: MeasureArgs) -> Result<ExitCode> {
    let spec = Spec::load(&args.inputs.spec, args.kernel.as_deref())?;
    let opts = pipeline::Options::new(&spec, args.out, args.inputs.lock, args.inputs.cache);
    let path = pipeline::measure(&spec, &opts)?;
    println!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}
