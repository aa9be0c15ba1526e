//! `cvm-image tee`: confidential-VM launch measurements. `tee snp-measure` predicts the AMD
//! SEV/SEV-ES/SEV-SNP launch digest (docs/tee.md §1) with sev-snp-measure's argument names.

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use cvm_measure::snp::kernel_hashes::KernelHashes;
use cvm_measure::snp::vmsa::{vcpu_type_sig, VCPU_TYPES};
use cvm_measure::snp::{self, LaunchInputs, SevMode, VmmType};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct TeeArgs {
    #[command(subcommand)]
    pub command: TeeCmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum TeeCmd {
    /// Predict the SEV-SNP MEASUREMENT (or the SEV / SEV-ES launch digest) of a guest.
    ///
    /// Same arguments and result as sev-snp-measure 0.0.13 for modes sev, seves, snp and
    /// snp:ovmf-hash. Prints the digest in lowercase hex as the last line, or a JSON object with
    /// --json.
    SnpMeasure(SnpMeasureArgs),
}

#[derive(clap::Args, Debug)]
pub struct SnpMeasureArgs {
    /// Guest mode: snp, seves, sev, or snp:ovmf-hash (the digest of the firmware pages alone).
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// Number of vCPUs (required except for sev and snp:ovmf-hash).
    #[arg(long)]
    pub vcpus: Option<u32>,
    /// QEMU vCPU model (EPYC, EPYC-v4, EPYC-Rome, EPYC-Milan, EPYC-Genoa, EPYC-Turin, …); required for
    /// QEMU in modes seves and snp unless --vcpu-sig is given; ignored by ec2 and gce.
    #[arg(long)]
    pub vcpu_type: Option<String>,
    /// The vCPU signature (CPUID Fn0000_0001_EAX) instead of --vcpu-type, e.g. 0xa00f11.
    #[arg(long, value_parser = parse_int::<u32>)]
    pub vcpu_sig: Option<u32>,
    /// The firmware image the guest boots.
    #[arg(long, value_name = "FILE")]
    pub ovmf: PathBuf,
    /// Hypervisor: QEMU (default), ec2 or gce (case-insensitive).
    #[arg(long, value_enum, ignore_case = true, default_value_t = Vmm::Qemu)]
    pub vmm_type: Vmm,
    /// The VMSA SEV_FEATURES the host kernel sets (snp only), e.g. 0x1 or 0x21.
    #[arg(long, default_value = "0x1", value_parser = parse_int::<u64>)]
    pub guest_features: u64,
    /// A precomputed digest of the firmware pages (hex, from --mode snp:ovmf-hash); the firmware
    /// file then only supplies its metadata.
    #[arg(long, value_name = "HEX", value_parser = parse_ld)]
    pub snp_ovmf_hash: Option<[u8; 48]>,
    /// Direct boot with QEMU kernel-hashes=on: the kernel (bzImage) QEMU hashes.
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,
    /// The initrd of a direct boot (needs --kernel).
    #[arg(long, value_name = "FILE", requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// The kernel command line of a direct boot (needs --kernel; may be empty: `--append=`).
    #[arg(long, requires = "kernel", allow_hyphen_values = true)]
    pub append: Option<String>,
    /// Print a JSON object (inputs and measurement) instead of the hex digest.
    #[arg(long)]
    pub json: bool,
}

/// sev-snp-measure's mode names.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Snp,
    Seves,
    Sev,
    #[value(name = "snp:ovmf-hash")]
    SnpOvmfHash,
}

/// sev-snp-measure's VMM type names (it spells QEMU in capitals, ec2 and gce in lower case).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Vmm {
    #[value(name = "QEMU")]
    Qemu,
    Ec2,
    Gce,
}

fn parse_ld(s: &str) -> Result<[u8; 48], String> {
    hex::decode(s.trim())
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| "must be 96 hex digits (a SHA-384)".to_string())
}

fn parse_int<T: TryFrom<u64>>(s: &str) -> Result<T, String> {
    let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse::<u64>(),
    }
    .map_err(|e| format!("{s}: {e}"))?;
    T::try_from(v).map_err(|_| format!("{s}: out of range"))
}

pub fn run(args: TeeArgs) -> Result<ExitCode> {
    match args.command {
        TeeCmd::SnpMeasure(a) => snp_measure(a),
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn snp_measure(a: SnpMeasureArgs) -> Result<ExitCode> {
    let ovmf = read(&a.ovmf)?;
    let vmm = match a.vmm_type {
        Vmm::Qemu => VmmType::Qemu,
        Vmm::Ec2 => VmmType::Ec2,
        Vmm::Gce => VmmType::Gce,
    };
    let mode = match a.mode {
        Mode::SnpOvmfHash => None,
        Mode::Snp => Some(SevMode::Snp),
        Mode::Seves => Some(SevMode::SevEs),
        Mode::Sev => Some(SevMode::Sev),
    };
    let mode_name = a.mode.to_possible_value().expect("no skipped variants");
    let mode_name = mode_name.get_name();
    let digest = match mode {
        None => snp::snp_ovmf_hash(&ovmf)
            .with_context(|| format!("{}", a.ovmf.display()))?
            .to_vec(),
        Some(mode) => {
            let vcpus = match (mode, a.vcpus) {
                (SevMode::Sev, v) => v.unwrap_or(0),
                (_, Some(v)) => v,
                (_, None) => bail!("--vcpus N is required in mode {mode_name}"),
            };
            let vcpu_sig = match (&a.vcpu_type, a.vcpu_sig) {
                _ if mode == SevMode::Sev => 0,
                (_, Some(sig)) => sig,
                (Some(t), None) => vcpu_type_sig(t).with_context(|| {
                    let known: Vec<&str> = VCPU_TYPES.iter().map(|t| t.0).collect();
                    format!("unknown --vcpu-type {t:?} (one of {})", known.join(", "))
                })?,
                (None, None) if vmm == VmmType::Qemu => {
                    bail!("--vcpu-type or --vcpu-sig is required for QEMU in mode {mode_name}")
                }
                (None, None) => 0,
            };
            let kernel_hashes = match &a.kernel {
                None => None,
                Some(k) => {
                    let initrd = a.initrd.as_deref().map(read).transpose()?;
                    Some(KernelHashes::new(
                        &read(k)?,
                        initrd.as_deref(),
                        a.append.as_deref(),
                    ))
                }
            };
            let inputs = LaunchInputs {
                mode,
                ovmf: &ovmf,
                vcpus,
                vcpu_sig,
                vmm,
                guest_features: a.guest_features,
                kernel_hashes,
                snp_ovmf_hash: a.snp_ovmf_hash,
            };
            snp::launch_digest(&inputs).with_context(|| format!("{}", a.ovmf.display()))?
        }
    };
    let hex = hex::encode(&digest);
    if a.json {
        let j = serde_json::json!({
            "mode": mode_name,
            "vmm_type": a.vmm_type,
            "vcpus": a.vcpus,
            "vcpu_type": a.vcpu_type,
            "vcpu_sig": a.vcpu_sig,
            "guest_features": format!("{:#x}", a.guest_features),
            "ovmf": { "path": a.ovmf, "sha256": hex::encode(Sha256::digest(&ovmf)) },
            "kernel": a.kernel,
            "initrd": a.initrd,
            "append": a.append,
            "snp_ovmf_hash": a.snp_ovmf_hash.map(hex::encode),
            "measurement": hex,
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!("{hex}");
    }
    Ok(ExitCode::SUCCESS)
}
