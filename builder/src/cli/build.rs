//! `cvm-image build`: the disk image, its manifest and golden measurement from a spec.

use super::inputs::InputArgs;
use crate::formats::Target;
use crate::pipeline;
use crate::spec::Spec;
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    #[command(flatten)]
    pub inputs: InputArgs,
    /// Output directory.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Use this kernel profile instead of the spec's (e.g. kernel/debian-6.1.toml).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Also write the artifact of these targets (repeatable): qemu → disk.qcow2, gcp → gcp-disk.tar.gz,
    /// aws → aws-disk.vmdk (streamOptimized), azure → azure-disk.vhd (fixed). disk.raw is sized to
    /// satisfy every target's rule (a whole GiB for GCP, a whole MiB for Azure).
    #[arg(long = "target", value_name = "TARGET")]
    pub targets: Vec<Target>,
    /// Secure Boot keys (`cvm-image keys generate`): sign the UKI with db and write
    /// OUT/OVMF_VARS.fd (PK/KEK/db enrolled, Secure Boot on) and OUT/secure-boot/ (DER
    /// certificates, AWS --uefi-data blob). Overrides the spec's [secure_boot] keys.
    #[arg(long, value_name = "DIR")]
    pub keys: Option<PathBuf>,
    /// Sign the golden measurement with this private key (PEM, ECDSA P-256 or RSA; `cvm-image
    /// keys generate` writes golden.key): writes OUT/golden-measurement.json.sig and embeds both
    /// files in the ESP under \cvm\ for the agent's GET /golden-measurement. Overrides the
    /// spec's [golden] signing_key.
    #[arg(long, value_name = "PEM")]
    pub golden_key: Option<PathBuf>,
}

pub fn run(args: BuildArgs) -> Result<ExitCode> {
    let spec = Spec::load(&args.inputs.spec, args.kernel.as_deref())?;
    let mut opts = pipeline::Options::new(&spec, args.out, args.inputs.lock, args.inputs.cache);
    opts.targets = args.targets;
    if args.keys.is_some() {
        opts.keys = args.keys;
    }
    if args.golden_key.is_some() {
        opts.golden_key = args.golden_key;
    }
    let result = pipeline::build(&spec, &opts)?;
    result.print_summary();
    Ok(ExitCode::SUCCESS)
}
