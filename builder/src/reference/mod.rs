//! Recorded reference boots: what the pinned OVMF measures into PCR 0 and 1 under `cvm-image run`.
//!
//! PCR 0 holds the firmware's own code as OVMF measures it in PEI (CRTM version, the PEI and DXE
//! firmware volumes after SEC decompressed them into guest memory); PCR 1 holds the boot options
//! OVMF's BDS creates for the devices QEMU presents. Neither is a function of the image, and PCR 1
//! is not a function of the OVMF file alone either (QEMU's version and machine configuration decide
//! the devices). So they are taken from a recorded boot: `cvm-image lock --record-reference` boots the
//! default image the way `cvm-image run` does, keeps the firmware's PCR 0/1 events (every bank swtpm
//! has) and the configuration they were recorded with, writes `reference/<name>.json` and pins its
//! sha256 in `cvm-image.lock` ([`crate::inputs::lock::LockedReference`]).
//!
//! A build ([`load_pinned`]) uses the values only when the file's hash equals the pin (else it fails:
//! someone edited a measured value) and the recorded OVMF is the one the lock pins now (else PCR 0/1
//! stay `unknown`, with a note saying why).

pub mod ovmf;

use crate::inputs::lock::{LockedPackage, Lockfile};
use crate::qemu::cmdline::Machine;
use anyhow::{bail, Context, Result};
use cvm_measure::eventlog::{EventLog, EventType, ExpectedEvent, HashAlg};
use cvm_measure::predict::pcr_values;
use cvm_verify::golden::{PcrEntry, Source};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Schema version of a reference file.
pub const FORMAT: u32 = 1;
/// Directory of the reference files, relative to the lock file.
pub const DIR: &str = "reference";
/// The PCRs a reference boot supplies.
pub const PCRS: [u32; 2] = [0, 1];
/// The command that (re-)records the references.
pub const RECORD_COMMAND: &str = "cvm-image lock --record-reference";

/// The firmware configurations of `cvm-image run`. Each has its own PCR 0 (another OVMF_CODE build)
/// and is recorded on its own for PCR 1 too: the boot options are the firmware build's to create
/// (the pinned secboot build happens to create the same ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Variant {
    /// `cvm-image run`: OVMF_CODE_4M.fd, the pinned VARS template.
    SecureBootOff,
    /// `cvm-image run --secure-boot`: OVMF_CODE_4M.secboot.fd (SMM), the VARS `build --keys` enrolls.
    SecureBootOn,
}

impl Variant {
    pub const ALL: [Variant; 2] = [Variant::SecureBootOff, Variant::SecureBootOn];

    pub fn of(secure_boot: bool) -> Self {
        if secure_boot {
            Variant::SecureBootOn
        } else {
            Variant::SecureBootOff
        }
    }

    pub fn secure_boot(self) -> bool {
        self == Variant::SecureBootOn
    }

    /// Name of the lock entry and stem of the file.
    pub fn name(self) -> &'static str {
        match self {
            Variant::SecureBootOff => "qemu-ovmf",
            Variant::SecureBootOn => "qemu-ovmf-secureboot",
        }
    }

    /// Path of the file relative to the lock's directory (`/`-separated, as the lock stores it).
    pub fn file(self) -> String {
        format!("{DIR}/{}.json", self.name())
    }
}

/// One recorded reference boot (`reference/<name>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    pub format: u32,
    /// [`Variant::name`].
    pub name: String,
    pub description: String,
    pub secure_boot: bool,
    pub recorded_with: RecordedWith,
    /// What the events replay to and what the TPM reported at recording: bank → PCR → hex.
    pub pcrs: BTreeMap<HashAlg, BTreeMap<u32, String>>,
    /// The firmware's PCR 0 and 1 events in log order, digests in every bank the TPM had.
    pub events: Vec<ExpectedEvent>,
}

/// What the reference boot ran on: everything PCR 0/1 may depend on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedWith {
    /// First line of `qemu-system-x86_64 --version`.
    pub qemu_version: String,
    /// Debian package and version of that QEMU (`dpkg-query`), when it is a Debian package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qemu_package: Option<String>,
    /// First line of `swtpm --version`.
    pub swtpm_version: String,
    pub ovmf: OvmfBuild,
    /// The guest-visible machine (src/qemu/cmdline.rs).
    pub machine: Machine,
}

/// The firmware files booted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OvmfBuild {
    pub package: String,
    pub version: String,
    /// sha256 of the `.deb`, as cvm-image.lock pins it.
    pub deb_sha256: String,
    /// File name of the OVMF_CODE build booted.
    pub code: String,
    pub code_sha256: String,
    /// Which variable store it started from.
    pub vars: String,
}

/// The firmware a build's qemu profile boots: the pinned package and the OVMF_CODE file of the variant.
pub struct FirmwareInUse<'a> {
    pub package: &'a LockedPackage,
    pub code: &'a Path,
}

/// The reference a build can use for qemu PCR 0/1.
#[derive(Debug, Clone)]
pub enum Pinned {
    /// Pinned, hash verified, recorded with the firmware the lock pins.
    Usable {
        file: String,
        reference: Box<Reference>,
    },
    /// Not usable; the one-line reason becomes the PCRs' note (they stay `unknown`).
    Unusable(String),
}

impl Pinned {
    /// The golden entry of `pcr` (0 or 1) in `bank`, with event digests in `banks`.
    pub fn entry(&self, pcr: u32, bank: HashAlg, banks: &[HashAlg]) -> Result<PcrEntry> {
        let (file, r) = match self {
            Pinned::Unusable(why) => {
                return Ok(PcrEntry {
                    value: None,
                    source: Source::Unknown,
                    enforce: false,
                    note: Some(why.clone()),
                    events: vec![],
                })
            }
            Pinned::Usable { file, reference } => (file, reference),
        };
        let events: Vec<ExpectedEvent> = r
            .events
            .iter()
            .filter(|e| e.pcr == pcr)
            .map(|e| {
                let mut e = e.clone();
                e.digests.retain(|alg, _| banks.contains(alg));
                e
            })
            .collect();
        let value = pcr_values(&r.events, &[pcr], bank)
            .with_context(|| format!("{file}: replaying PCR {pcr} in {bank}"))?;
        let value = value.get(&pcr).map(hex::encode).with_context(|| {
            format!("{file} has no PCR {pcr} events: re-record it with `{RECORD_COMMAND}`")
        })?;
        Ok(PcrEntry {
            value: Some(value),
            source: Source::Reference,
            enforce: true,
            note: Some(note(pcr, file, r)),
            events,
        })
    }
}

/// One line saying what the PCR holds and why it is a reference value, not a prediction.
fn note(pcr: u32, file: &str, r: &Reference) -> String {
    let o = &r.recorded_with.ovmf;
    match pcr {
        0 => format!(
            "reference boot {file}: CRTM version and the PEI/DXE firmware volumes of {} {} ({}) as \
             OVMF measures them in guest memory (the PEI volume after PEI ran in place from it, so \
             not the file's bytes)",
            o.package, o.version, o.code
        ),
        _ => format!(
            "reference boot {file}: the boot options OVMF creates for the run's devices \
             (BootOrder, Boot####), recorded with {}; another QEMU version or machine \
             configuration may change them",
            r.recorded_with.qemu_version
        ),
    }
}

/// The reference of `variant` pinned in the lock at `lock_path`, checked against the firmware the
/// build uses. A file that does not match its pin is an error; a missing pin or a reference recorded
/// with another OVMF is [`Pinned::Unusable`].
pub fn load_pinned(lock_path: &Path, variant: Variant, fw: &FirmwareInUse) -> Result<Pinned> {
    let lock = Lockfile::load(lock_path)?;
    let Some(pin) = lock.reference(variant.name()) else {
        return Ok(Pinned::Unusable(format!(
            "no reference boot {} is pinned in {}: record one with `{RECORD_COMMAND}`",
            variant.name(),
            lock_path.display()
        )));
    };
    let path = lock_dir(lock_path).join(&pin.file);
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read the reference boot {} pinned in {} (restore it or re-record it with `{RECORD_COMMAND}`)",
            path.display(),
            lock_path.display()
        )
    })?;
    let actual = hex::encode(crate::ids::sha256(&bytes));
    if actual != pin.sha256 {
        bail!(
            "{}: sha256 {actual} differs from the pin {} in {}: the reference boot was changed after \
             it was recorded; re-record it with `{RECORD_COMMAND}`",
            path.display(),
            pin.sha256,
            lock_path.display()
        );
    }
    let reference = parse(&bytes, variant).with_context(|| format!("{}", path.display()))?;
    if let Some(why) = firmware_mismatch(&reference, fw)? {
        return Ok(Pinned::Unusable(format!(
            "the reference boot {} {why}; re-record it with `{RECORD_COMMAND}`",
            pin.file
        )));
    }
    Ok(Pinned::Usable {
        file: pin.file.clone(),
        reference: Box::new(reference),
    })
}

/// The reference for a build of `spec` whose qemu profile boots with Secure Boot `secure_boot`: the
/// firmware is the spec's pinned OVMF as fetched in `inputs`. An unusable reference is reported on
/// stderr (the golden file's note says the same).
pub fn for_build(
    lock_path: &Path,
    spec: &crate::spec::Spec,
    inputs: &crate::fetch::Fetched,
    secure_boot: bool,
) -> Result<Pinned> {
    let package = inputs
        .packages
        .iter()
        .find(|p| p.name == spec.firmware.package)
        .with_context(|| format!("the fetched inputs lack {}", spec.firmware.package))?;
    let code = if secure_boot {
        crate::fetch::secure_boot_code(&inputs.ovmf_code)?
    } else {
        inputs.ovmf_code.clone()
    };
    let pinned = load_pinned(
        lock_path,
        Variant::of(secure_boot),
        &FirmwareInUse {
            package,
            code: &code,
        },
    )?;
    if let Pinned::Unusable(why) = &pinned {
        eprintln!("cvm-image: warning: qemu PCR 0 and 1 stay unknown: {why}");
    }
    Ok(pinned)
}

/// The lock file's directory: reference paths are relative to it.
pub fn lock_dir(lock_path: &Path) -> PathBuf {
    match lock_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Parse and check that a reference file is what it claims: its variant, only PCR 0/1 events, and
/// events that replay to its recorded values in every bank.
pub fn parse(bytes: &[u8], variant: Variant) -> Result<Reference> {
    let r: Reference = serde_json::from_slice(bytes).context("not a reference boot file")?;
    if r.format != FORMAT {
        bail!("format {} is not supported (expected {FORMAT})", r.format);
    }
    if r.name != variant.name() || r.secure_boot != variant.secure_boot() {
        bail!(
            "it records {} (secure_boot {}), not {}",
            r.name,
            r.secure_boot,
            variant.name()
        );
    }
    if let Some(e) = r.events.iter().find(|e| !PCRS.contains(&e.pcr)) {
        bail!(
            "it has an event of PCR {} (only PCR 0 and 1 belong here)",
            e.pcr
        );
    }
    for (bank, values) in &r.pcrs {
        let replayed = pcr_values(&r.events, &PCRS, *bank)?;
        for (pcr, value) in values {
            let got = replayed.get(pcr).map(hex::encode).unwrap_or_default();
            if &got != value {
                bail!("its PCR {pcr} {bank} events replay to {got}, not to its value {value}");
            }
        }
    }
    Ok(r)
}

/// Why the reference does not describe `fw` (None: it does).
fn firmware_mismatch(r: &Reference, fw: &FirmwareInUse) -> Result<Option<String>> {
    let o = &r.recorded_with.ovmf;
    if o.package != fw.package.name || o.deb_sha256 != fw.package.sha256 {
        return Ok(Some(format!(
            "was recorded with {} {} (sha256 {}) but the lock pins {} {} (sha256 {})",
            o.package,
            o.version,
            o.deb_sha256,
            fw.package.name,
            fw.package.version,
            fw.package.sha256
        )));
    }
    let code = crate::inputs::sha256_file(fw.code)?;
    if o.code_sha256 != code {
        return Ok(Some(format!(
            "was recorded with {} sha256 {} but this build boots {} sha256 {code}",
            o.code,
            o.code_sha256,
            fw.code.display()
        )));
    }
    Ok(None)
}

/// The PCR 0/1 events of a booted log, in log order, with the description our decoder gives them.
pub fn firmware_events(log: &EventLog) -> Vec<ExpectedEvent> {
    log.events
        .iter()
        .filter(|e| PCRS.contains(&e.pcr) && e.event_type != EventType::EV_NO_ACTION)
        .map(|e| ExpectedEvent {
            pcr: e.pcr,
            event_type: e.event_type,
            digests: e
                .digests
                .iter()
                .map(|d| (d.alg, d.digest.clone()))
                .collect(),
            description: e.description(),
            data: Some(e.data.clone()),
        })
        .collect()
}

/// The recorded reference of `variant` pinned beside `lock_path`, without the firmware check (for
/// `run`'s QEMU version warning). None when none is pinned or it cannot be read.
pub fn pinned_quietly(lock_path: &Path, variant: Variant) -> Option<Reference> {
    let lock = Lockfile::load(lock_path).ok()?;
    let pin = lock.reference(variant.name())?;
    let bytes = std::fs::read(lock_dir(lock_path).join(&pin.file)).ok()?;
    parse(&bytes, variant).ok()
}

/// One line on stderr when `qemu` is not the QEMU the pinned reference boot of `variant` was
/// recorded with (PCR 1 may then differ). Silent when there is nothing to compare.
pub fn warn_if_qemu_differs(lock_path: &Path, variant: Variant, qemu: &Path) {
    let Some(recorded) = pinned_quietly(lock_path, variant) else {
        return;
    };
    let Ok(host) = crate::qemu::tools::first_line_of(qemu, "--version") else {
        return;
    };
    if let Some(warning) = qemu_version_warning(&recorded, &host) {
        eprintln!("{warning}");
    }
}

/// `cvm-image run`'s warning when the host's QEMU is not the one the reference was recorded with.
pub fn qemu_version_warning(reference: &Reference, host_version: &str) -> Option<String> {
    let recorded = &reference.recorded_with.qemu_version;
    (recorded != host_version).then(|| {
        format!(
            "cvm-image: warning: this host's QEMU ({host_version}) is not the one the reference boot \
             {} was recorded with ({recorded}): PCR 1 may differ from the golden value",
            reference.name
        )
    })
}

#[cfg(test)]
mod tests;
