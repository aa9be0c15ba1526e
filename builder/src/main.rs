//! `cvm-image`: build confidential-VM disk images reproducibly and predict what they measure.

use anyhow::Result;
use clap::{Parser, Subcommand};
use cvm_image::cli;
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

#[derive(Subcommand)]
enum Cmd {
    /// Build the disk image and its manifest from a spec.
    ///
    /// Inputs (kernel, systemd-stub, OVMF) are Debian packages pinned by sha256 in cvm-image.lock beside
    /// the spec; they are downloaded once into the cache (~/.cache/cvm-image or $CVM_IMAGE_CACHE) and
    /// verified on every use. Stages whose inputs did not change are reused from the cache, so a rebuild
    /// where only workload/ changed is quick. Outputs: OUT/disk.raw, OUT/uki.efi, OUT/manifest.json.
    Build(cli::build::BuildArgs),
    /// Predict the measurements of the image the spec describes, keeping only the prediction.
    ///
    /// The build runs (from the stage cache) in a scratch directory OUT/.measure.tmp, since the
    /// GPT event needs the disk's partition table; the disk and the other outputs are removed, and
    /// OUT/disk.raw is not touched.
    ///
    /// Writes OUT/golden-measurement.json: per profile (qemu, gcp, aws, azure) the values of PCRs
    /// 0–15 and 23 in every bank that platform's TPM has (sha256, and sha384/sha512 where present),
    /// each predicted / reference (PCR 0/1 of qemu: the boot pinned in the lock) / unknown and
    /// enforced or informational, with the expected event log (docs/golden-measurement.md). `build`
    /// writes the same file, and embeds it (signed with --golden-key) in the ESP.
    Measure(cli::measure::MeasureArgs),
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
    Lock(cli::lock::LockArgs),
    /// Download, verify and extract the pinned inputs without building.
    Fetch(cli::fetch::FetchArgs),
    /// Show a built disk: partitions, verity parameters, UKI sections and command line.
    Inspect(cli::inspect::InspectArgs),
    /// Boot OUT/disk.raw under QEMU + OVMF + swtpm and wait until the guest agent is healthy.
    ///
    /// The firmware is the spec's pinned OVMF (a private copy of its variable store per run); the disk
    /// is attached with snapshot=on, so the image is never modified. The agent (guest port 8000) and
    /// the workload (guest port 8080) are forwarded to free ports on 127.0.0.1, printed at start. The
    /// serial console goes to the terminal and to OUT/console.log. Without --detach the VM runs until
    /// the guest powers off or Ctrl-C; with --detach the command returns once the agent is healthy and
    /// `cvm-image stop` ends the VM. Needs qemu-system-x86_64 and swtpm (`make deps`).
    Run(cli::run::RunArgs),
    /// Print (and with --execute run) the gcloud / aws / az commands that upload the image and create a
    /// confidential VM with vTPM and Secure Boot.
    Deploy(cvm_image::deploy::DeployArgs),
    /// Decode a TCG event log (firmware log from securityfs, TDX CCEL): events and replayed PCRs/MRs.
    ///
    /// Reads the crypto-agile format (and legacy SHA-1 logs), prints every event with its register,
    /// type, digests and a readable description, then the value of every register per bank as the
    /// log replays to.
    Eventlog(cli::eventlog::EventlogArgs),
    /// Stop a VM started with `cvm-image run` (ACPI power button, then terminate).
    Stop(cli::stop::StopArgs),
    /// The owner's Secure Boot keys (PK, KEK, db) and golden-measurement signing key.
    Keys(cli::keys::KeysArgs),
    /// Check a VM's PCRs and event logs (files or the agent) against the golden measurement.
    ///
    /// The firmware log must replay to the reported PCRs, the runtime log to PCR 23, and every PCR
    /// the profile enforces must equal its golden value; the first differing event of each failed PCR
    /// is named. Exit 0 when everything enforced holds, 1 when verification failed.
    ///
    /// No rollback: a golden file that verifies — signed with --golden-pubkey's key, or served by
    /// the VM's own agent with --golden-from-agent — may still be that of an older image: every
    /// file the key ever signed verifies, and a malicious host can boot an old, vulnerable or
    /// debug image it once got signed and replay that image's golden file, which the VM then
    /// matches PCR for PCR. --expect-image, --min-version, --expect-uki and
    /// --min-security-version say which image is wanted; a golden file for another image or an
    /// older version is refused (exit 1) naming both values, before any evidence is looked at.
    ///
    /// Options that act on an agent's collaterals (--ek-ca, --insecure-no-ek, --snp-vcek,
    /// --amd-chain, --tdx-collateral, --require-tee, --timeout, --golden-from-agent) are refused
    /// (exit 2) with offline evidence.
    Verify(cli::verify::VerifyArgs),
    /// Golden measurement tools: `golden sign` / `golden verify` (detached ECDSA P-256 or RSA signature,
    /// keys as openssl writes them) and `golden export --format automata`.
    Golden(cli::golden::GoldenArgs),
    /// Confidential-VM launch measurements: `tee snp-measure` predicts the SEV-SNP MEASUREMENT
    /// (and the SEV / SEV-ES launch digest) like sev-snp-measure (docs/tee.md §1).
    Tee(cli::tee::TeeArgs),
}

/// Each command's handling is in `cvm_image::cli::<command>`.
fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Cmd::Build(args) => cli::build::run(args),
        Cmd::Measure(args) => cli::measure::run(args),
        Cmd::Lock(args) => cli::lock::run(args),
        Cmd::Fetch(args) => cli::fetch::run(args),
        Cmd::Inspect(args) => cli::inspect::run(args),
        Cmd::Run(args) => cli::run::run(&args),
        Cmd::Deploy(args) => {
            args.run()?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Eventlog(args) => cli::eventlog::run(args),
        Cmd::Stop(args) => cli::stop::run(&args),
        Cmd::Verify(args) => cli::verify::run(args),
        Cmd::Golden(args) => args.run(),
        Cmd::Keys(args) => cli::keys::run(&args),
        Cmd::Tee(args) => cli::tee::run(args),
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
