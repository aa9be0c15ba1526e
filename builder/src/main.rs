//! `cvm-image`: build confidential-VM disk images reproducibly and predict what they measure.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use cvm_image::recorder as record;
use cvm_image::reference::Variant;
use cvm_image::{fetch, inspect, lockcmd, pipeline, qemu, spec::Spec};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit code for usage and input errors (verification failures use 1).
const EXIT_INPUT: u8 = 2;

#[derive(Parser)]
#[command(
    name = "cvm-image",
    version,
    about = "Build confidential-VM disk images reproducibly and predict their measurements",
    long_about = "Build confidential-VM disk images reproducibly and predict their measurements.\n\n\
        `build` turns an image spec (image.toml) into out/disk.raw: a GPT disk with an ESP holding a UKI \
        (systemd-stub + Debian kernel + initramfs + cmdline), a squashfs root protected by dm-verity and a \
        verity-protected workload partition. Same spec + same pinned inputs = same bytes.\n\n\
        Exit codes: 0 ok, 1 verification failed, 2 usage or input error."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// Where the spec, the lock file and the cache are.
#[derive(clap::Args)]
struct InputArgs {
    /// The image spec.
    #[arg(long, default_value = "image.toml")]
    spec: PathBuf,
    /// Lock file (default: cvm-image.lock beside the spec).
    #[arg(long)]
    lock: Option<PathBuf>,
    /// Input and stage cache directory (default: ~/.cache/cvm-image).
    #[arg(long, env = "CVM_IMAGE_CACHE")]
    cache: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the disk image and its manifest from a spec.
    ///
    /// Inputs (kernel, systemd-stub, OVMF) are Debian packages pinned by sha256 in cvm-image.lock beside
    /// the spec; they are downloaded once into the cache (~/.cache/cvm-image or $CVM_IMAGE_CACHE) and
    /// verified on every use. Stages whose inputs did not change are reused from the cache, so a rebuild
    /// where only workload/ changed is quick. Outputs: OUT/disk.raw, OUT/uki.efi, OUT/manifest.json.
    Build {
        #[command(flatten)]
        inputs: InputArgs,
        /// Output directory.
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// Use this kernel profile instead of the spec's (e.g. kernel/debian-6.1.toml).
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// Also write the artifact of these targets (repeatable): qemu → disk.qcow2, gcp → gcp-disk.tar.gz,
        /// aws → aws-disk.vmdk (streamOptimized), azure → azure-disk.vhd (fixed). disk.raw is sized to
        /// satisfy every target's rule (a whole GiB for GCP, a whole MiB for Azure).
        #[arg(long = "target", value_name = "TARGET")]
        targets: Vec<cvm_image::formats::Target>,
        /// Secure Boot keys (`cvm-image keys generate`): sign the UKI with db and write
        /// OUT/OVMF_VARS.fd (PK/KEK/db enrolled, Secure Boot on) and OUT/secure-boot/ (DER
        /// certificates, AWS --uefi-data blob). Overrides the spec's [secure_boot] keys.
        #[arg(long, value_name = "DIR")]
        keys: Option<PathBuf>,
        /// Sign the golden measurement with this private key (PEM, ECDSA P-256 or RSA; `cvm-image
        /// keys generate` writes golden.key): writes OUT/golden-measurement.json.sig and embeds both
        /// files in the ESP under \cvm\ for the agent's GET /golden-measurement. Overrides the
        /// spec's [golden] signing_key.
        #[arg(long, value_name = "PEM")]
        golden_key: Option<PathBuf>,
    },
    /// Predict the measurements of the image the spec describes, without writing the disk.
    ///
    /// Writes OUT/golden-measurement.json: per profile (qemu, gcp, aws, azure) the values of PCRs
    /// 0–15 and 23 in every bank that platform's TPM has (sha256, and sha384/sha512 where present),
    /// each predicted / reference (PCR 0/1 of qemu: the boot pinned in the lock) / unknown and
    /// enforced or informational, with the expected event log (docs/golden-measurement.md). `build`
    /// writes the same file, and embeds it (signed with --golden-key) in the ESP.
    Measure {
        #[command(flatten)]
        inputs: InputArgs,
        /// Output directory.
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// Use this kernel profile instead of the spec's.
        #[arg(long)]
        kernel: Option<PathBuf>,
    },
    /// Resolve the spec's Debian packages to exact versions and sha256 and write cvm-image.lock.
    ///
    /// Run it after changing a package name or suite in the spec, or when a pinned version vanished from
    /// the mirror. Entries already pinned for other kernel profiles are kept.
    ///
    /// With --record-reference it resolves nothing: it builds the default image, boots it like
    /// `cvm-image run` (and `run --secure-boot`, with throw-away keys), keeps the firmware's PCR 0/1
    /// events and writes reference/qemu-ovmf.json and reference/qemu-ovmf-secureboot.json beside
    /// the lock, pinned there by sha256. Builds then mark qemu PCR 0/1 `reference`. Re-record after
    /// the OVMF pin or the host's QEMU changed. Needs qemu-system-x86_64 and swtpm.
    Lock {
        #[command(flatten)]
        inputs: InputArgs,
        /// Also pin these kernel profiles (repeatable).
        #[arg(long, conflicts_with = "record_reference")]
        kernel: Vec<PathBuf>,
        /// Record the reference boot(s) of the qemu profile's PCR 0/1 instead of resolving packages.
        #[arg(long)]
        record_reference: bool,
        /// The reference boots to record (repeatable; default: both).
        #[arg(long = "variant", value_enum, requires = "record_reference")]
        variants: Vec<cvm_image::reference::Variant>,
        /// QEMU accelerator of the reference boot.
        #[arg(long, value_enum, default_value_t = qemu::Accel::Tcg, requires = "record_reference")]
        accel: qemu::Accel,
        /// Seconds to wait for each reference boot's agent.
        #[arg(long, default_value_t = 400, requires = "record_reference")]
        timeout: u64,
    },
    /// Download, verify and extract the pinned inputs without building.
    Fetch {
        #[command(flatten)]
        inputs: InputArgs,
        /// Also fetch these kernel profiles' packages (repeatable).
        #[arg(long)]
        kernel: Vec<PathBuf>,
        /// Link each extracted package into this directory under its package name.
        #[arg(long)]
        link_dir: Option<PathBuf>,
    },
    /// Show a built disk: partitions, verity parameters, UKI sections and command line.
    Inspect {
        /// The disk image (raw).
        disk: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Boot OUT/disk.raw under QEMU + OVMF + swtpm and wait until the guest agent is healthy.
    ///
    /// The firmware is the spec's pinned OVMF (a private copy of its variable store per run); the disk
    /// is attached with snapshot=on, so the image is never modified. The agent (guest port 8000) and
    /// the workload (guest port 8080) are forwarded to free ports on 127.0.0.1, printed at start. The
    /// serial console goes to the terminal and to OUT/console.log. Without --detach the VM runs until
    /// the guest powers off or Ctrl-C; with --detach the command returns once the agent is healthy and
    /// `cvm-image stop` ends the VM. Needs qemu-system-x86_64 and swtpm (`make deps`).
    Run(qemu::RunArgs),
    /// Print (and with --execute run) the gcloud / aws / az commands that upload the image and create a
    /// confidential VM with vTPM and Secure Boot.
    Deploy(cvm_image::deploy::DeployArgs),
    /// Decode a TCG event log (firmware log from securityfs, TDX CCEL): events and replayed PCRs/MRs.
    ///
    /// Reads the crypto-agile format (and legacy SHA-1 logs), prints every event with its register,
    /// type, digests and a readable description, then the value of every register per bank as the
    /// log replays to.
    Eventlog {
        /// The binary log, e.g. /sys/kernel/security/tpm0/binary_bios_measurements.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stop a VM started with `cvm-image run` (ACPI power button, then terminate).
    Stop(qemu::StopArgs),
    /// The owner's Secure Boot keys (PK, KEK, db) and golden-measurement signing key.
    Keys(cvm_image::secureboot::cli::KeysArgs),
    /// Check a VM's PCRs and event logs (files or the agent) against the golden measurement.
    ///
    /// The firmware log must replay to the reported PCRs, the runtime log to PCR 23, and every PCR
    /// the profile enforces must equal its golden value; the first differing event of each failed PCR
    /// is named. Exit 0 when everything enforced holds, 1 when verification failed.
    Verify(cvm_image::verify::VerifyArgs),
    /// Golden measurement tools: `golden sign` / `golden verify` (detached ECDSA P-256 or RSA signature,
    /// keys as openssl writes them) and `golden export --format automata`.
    Golden(cvm_image::automata::GoldenArgs),
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Cmd::Build {
            inputs,
            out,
            kernel,
            targets,
            keys,
            golden_key,
        } => {
            let spec = Spec::load(&inputs.spec, kernel.as_deref())?;
            let mut opts = pipeline::Options::new(&spec, out, inputs.lock, inputs.cache);
            opts.targets = targets;
            if keys.is_some() {
                opts.keys = keys;
            }
            if golden_key.is_some() {
                opts.golden_key = golden_key;
            }
            let result = pipeline::build(&spec, &opts)?;
            result.print_summary();
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Measure {
            inputs,
            out,
            kernel,
        } => {
            let spec = Spec::load(&inputs.spec, kernel.as_deref())?;
            let opts = pipeline::Options::new(&spec, out, inputs.lock, inputs.cache);
            let path = pipeline::measure(&spec, &opts)?;
            println!("wrote {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Lock {
            inputs,
            kernel: _,
            record_reference: true,
            variants,
            accel,
            timeout,
        } => {
            let variants = if variants.is_empty() {
                Variant::ALL.to_vec()
            } else {
                variants
            };
            record::record(&record::RecordOptions {
                spec: inputs.spec,
                lock: inputs.lock,
                cache: inputs.cache,
                variants,
                accel,
                timeout,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Lock { inputs, kernel, .. } => {
            let spec = Spec::load(&inputs.spec, None)?;
            lockcmd::lock(&spec, &kernel, inputs.lock, inputs.cache)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Fetch {
            inputs,
            kernel,
            link_dir,
        } => {
            let spec = Spec::load(&inputs.spec, None)?;
            let opts = pipeline::Options::new(&spec, PathBuf::new(), inputs.lock, inputs.cache);
            fetch::prefetch(&spec, &kernel, &opts.lock, &opts.cache, link_dir.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Inspect { disk, json } => {
            inspect::inspect(&disk, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run(args) => qemu::run(&args),
        Cmd::Deploy(args) => {
            args.run()?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Eventlog { file, json } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let log = cvm_measure::eventlog::parse(&bytes)
                .with_context(|| format!("{} is not a TCG event log", file.display()))?;
            if json {
                println!("{}", cvm_measure::eventlog::render_json(&log));
            } else {
                print!("{}", cvm_measure::eventlog::render_text(&log));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Stop(args) => qemu::stop(&args),
        Cmd::Verify(args) => args.run(),
        Cmd::Golden(args) => args.run(),
        Cmd::Keys(args) => {
            cvm_image::secureboot::cli::run(&args)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cvm-image: error: {e:#}");
            ExitCode::from(EXIT_INPUT)
        }
    }
}
