//! `cvm-image lock`: pin the spec's packages, or (`--record-reference`) record the reference boots.

use super::inputs::InputArgs;
use crate::reference::Variant;
use crate::spec::Spec;
use crate::{lockcmd, qemu, recorder};
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct LockArgs {
    #[command(flatten)]
    pub inputs: InputArgs,
    /// Also pin these kernel profiles (repeatable).
    #[arg(long, conflicts_with = "record_reference")]
    pub kernel: Vec<PathBuf>,
    /// Record the reference boot(s) of the qemu profile's PCR 0/1 instead of resolving packages.
    #[arg(long)]
    pub record_reference: bool,
    /// The reference boots to record (repeatable; default: both).
    #[arg(long = "variant", value_enum, requires = "record_reference")]
    pub variants: Vec<Variant>,
    /// QEMU accelerator of the reference boot.
    #[arg(long, value_enum, default_value_t = qemu::Accel::Tcg, requires = "record_reference")]
    pub accel: qemu::Accel,
    /// Seconds to wait for each reference boot's agent.
    #[arg(long, default_value_t = 400, requires = "record_reference")]
    pub timeout: u64,
}

pub fn run(args: LockArgs) -> Result<ExitCode> {
    if args.record_reference {
        let variants = if args.variants.is_empty() {
            Variant::ALL.to_vec()
        } else {
            args.variants
        };
        recorder::record(&recorder::RecordOptions {
            spec: args.inputs.spec,
            lock: args.inputs.lock,
            cache: args.inputs.cache,
            variants,
            accel: args.accel,
            timeout: args.timeout,
        })?;
    } else {
        let spec = Spec::load(&args.inputs.spec, None)?;
        lockcmd::lock(&spec, &args.kernel, args.inputs.lock, args.inputs.cache)?;
    }
    Ok(ExitCode::SUCCESS)
}
