//! The OVMF build to boot: the spec's `[firmware]` package as pinned in the lock, from the input cache.
//!
//! Never the host's `/usr/share/OVMF`: the firmware measures itself into PCR 0 and its variable store
//! into PCRs 1 and 7, so a run must use the exact build the image's measurements were recorded with.
//! When `OUT/manifest.json` names a different firmware package hash, the run is refused.

use crate::fetch;
use crate::manifest::Manifest;
use crate::spec::Spec;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The firmware files of a run.
#[derive(Debug, Clone)]
pub struct Firmware {
    /// `OVMF_CODE*.fd`, used read-only in place.
    pub code: PathBuf,
    /// The `OVMF_VARS*.fd` template; each run boots a private copy.
    pub vars_template: PathBuf,
    /// The Secure Boot build of the same firmware (`OVMF_CODE_4M.secboot.fd`: SMM, so the variable
    /// store can only be written through authenticated SetVariable) for `run --secure-boot`.
    pub secure_boot_code: PathBuf,
    pub package: String,
    pub version: String,
    pub sha256: String,
    /// The lock file it is pinned in (which also pins the recorded reference boots).
    pub lock: PathBuf,
}

/// Fetches (from the cache; downloading only if absent) and verifies the spec's pinned firmware.
pub fn resolve(
    spec_path: &Path,
    lock: Option<PathBuf>,
    cache: Option<PathBuf>,
) -> Result<Firmware> {
    let spec = Spec::load(spec_path, None).with_context(|| {
        format!(
            "the firmware to boot comes from the spec's [firmware] section: pass --spec (looked for {})",
            spec_path.display()
        )
    })?;
    let opts = fetch::InputPaths::resolve(&spec, lock, cache);
    let fetched = fetch::fetch(&spec, &opts.lock, &opts.cache)?;
    let pkg = fetched
        .packages
        .iter()
        .find(|p| p.name == spec.firmware.package)
        .with_context(|| format!("the fetched inputs lack {}", spec.firmware.package))?;
    Ok(Firmware {
        secure_boot_code: fetch::secure_boot_code(&fetched.ovmf_code)?,
        code: fetched.ovmf_code,
        vars_template: fetched.ovmf_vars,
        package: pkg.name.clone(),
        version: pkg.version.clone(),
        sha256: pkg.sha256.clone(),
        lock: opts.lock,
    })
}

/// Refuses a firmware that differs from the one recorded in the image's manifest.
pub fn check_manifest(fw: &Firmware, manifest_path: &Path) -> Result<()> {
    let text = std::fs::read(manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let m: Manifest = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a cvm-image manifest", manifest_path.display()))?;
    check_inputs(fw, &m, manifest_path)
}

fn check_inputs(fw: &Firmware, m: &Manifest, manifest_path: &Path) -> Result<()> {
    match m.inputs.iter().find(|i| i.kind == "package" && i.name == fw.package) {
        Some(i) if i.sha256 == fw.sha256 => Ok(()),
        Some(i) => bail!(
            "{} was built with {} {} (sha256 {}), but the lock now pins {} (sha256 {}): rebuild the image \
             (`cvm-image build`) so that firmware and measurements match",
            manifest_path.display(),
            fw.package,
            i.version.as_deref().unwrap_or("?"),
            i.sha256,
            fw.version,
            fw.sha256
        ),
        None => bail!(
            "{} does not list the firmware package {}: rebuild the image with `cvm-image build`",
            manifest_path.display(),
            fw.package
        ),
    }
}
