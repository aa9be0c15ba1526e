//! Stage: the pinned Debian inputs (kernel, systemd-stub, OVMF), verified and extracted.
//!
//! Every package comes from `cvm-image.lock`; a spec that names a package the lock does not pin (or pins
//! for another suite) is refused with the command that fixes it, rather than resolved on the fly — a
//! build must never silently pick up a newer kernel.

use crate::inputs::apt::{Apt, MirrorOverrides};
use crate::inputs::cache::Cache;
use crate::inputs::lock::{LockedPackage, Lockfile};
use crate::spec::Spec;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

pub const LOCK_FILE: &str = "cvm-image.lock";

/// Where a spec's lock file and the input cache are: what the command line names, else the lock
/// beside the spec and the default cache (`$CVM_IMAGE_CACHE` is read by the CLI).
#[derive(Debug, Clone)]
pub struct InputPaths {
    pub lock: PathBuf,
    pub cache: PathBuf,
}

impl InputPaths {
    pub fn resolve(spec: &Spec, lock: Option<PathBuf>, cache: Option<PathBuf>) -> Self {
        InputPaths {
            lock: lock.unwrap_or_else(|| spec.dir.join(LOCK_FILE)),
            cache: cache.unwrap_or_else(Cache::default_location),
        }
    }
}

/// The extracted inputs of a build.
pub struct Fetched {
    /// The pinned packages used, in spec order (kernel, stub, firmware).
    pub packages: Vec<LockedPackage>,
    pub kernel_sha256: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<version>` of the extracted kernel package.
    pub modules_dir: PathBuf,
    pub stub: PathBuf,
    pub ovmf_code: PathBuf,
    pub ovmf_vars: PathBuf,
}

/// The packages a spec needs, as (name, suite).
pub fn requests(spec: &Spec) -> Vec<(String, String)> {
    vec![
        (spec.kernel.package.clone(), spec.kernel.suite.clone()),
        (spec.stub.package.clone(), spec.stub.suite.clone()),
        (spec.firmware.package.clone(), spec.firmware.suite.clone()),
    ]
}

pub fn mirrors(spec: &Spec) -> MirrorOverrides {
    MirrorOverrides {
        mirror: spec.apt.mirror.clone(),
        security_mirror: spec.apt.security_mirror.clone(),
    }
}

fn pinned(lock: &Lockfile, lock_path: &Path, name: &str, suite: &str) -> Result<LockedPackage> {
    match lock.get(name) {
        Some(p) if p.suite == suite => Ok(p.clone()),
        Some(p) => bail!(
            "{} pins {name} from suite {}, but the spec asks for {suite}: run `cvm-image lock` to re-resolve",
            lock_path.display(),
            p.suite
        ),
        None => bail!(
            "{} has no pin for {name} ({suite}): run `cvm-image lock` (add --kernel PROFILE for extra kernels)",
            lock_path.display()
        ),
    }
}

/// Find the single `lib/modules/<version>` directory of an extracted kernel package.
fn modules_dir(root: &Path, package: &str) -> Result<PathBuf> {
    let base = root.join("lib/modules");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&base)
        .with_context(|| {
            format!(
                "{package}: no lib/modules in the package ({})",
                base.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    match dirs.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "{package}: expected one kernel version under {}, found {}",
            base.display(),
            dirs.len()
        ),
    }
}

fn existing(root: &Path, rel: &str, what: &str) -> Result<PathBuf> {
    let p = root.join(rel.trim_start_matches('/'));
    if p.is_file() {
        Ok(p)
    } else {
        bail!(
            "{what}: {rel} is not in the package (looked for {})",
            p.display()
        )
    }
}

pub fn fetch(spec: &Spec, lock_path: &Path, cache_dir: &Path) -> Result<Fetched> {
    let lock = Lockfile::load(lock_path)?;
    let packages: Vec<LockedPackage> = requests(spec)
        .iter()
        .map(|(n, s)| pinned(&lock, lock_path, n, s))
        .collect::<Result<_>>()?;
    let suites: Vec<String> = packages.iter().map(|p| p.suite.clone()).collect();
    let apt = Apt::new(cache_dir, &suites, &mirrors(spec))?;
    let cache = Cache {
        root: cache_dir.to_path_buf(),
    };
    let trees: Vec<PathBuf> = packages
        .iter()
        .map(|p| cache.extracted(&apt, p))
        .collect::<Result<_>>()?;
    let (kernel, stub, fw) = (&trees[0], &trees[1], &trees[2]);

    let modules_dir = modules_dir(kernel, &spec.kernel.package)?;
    let version = modules_dir
        .file_name()
        .and_then(|v| v.to_str())
        .unwrap_or_default()
        .to_string();
    Ok(Fetched {
        kernel_sha256: packages[0].sha256.clone(),
        vmlinuz: existing(
            kernel,
            &format!("boot/vmlinuz-{version}"),
            &spec.kernel.package,
        )?,
        modules_dir,
        stub: existing(stub, &spec.stub.path, "[stub] path")?,
        ovmf_code: existing(fw, &spec.firmware.code, "[firmware] code")?,
        ovmf_vars: existing(fw, &spec.firmware.vars, "[firmware] vars")?,
        packages,
    })
}

/// `cvm-image fetch`: download, verify and extract every pinned input of the spec and of the extra
/// kernel profiles; with `link_dir`, link each extracted package there under its name (the tests and
/// `make bench` find the stub and kernels that way).
pub fn prefetch(
    spec: &Spec,
    kernels: &[PathBuf],
    lock_path: &Path,
    cache_dir: &Path,
    link_dir: Option<&Path>,
) -> Result<()> {
    let lock = Lockfile::load(lock_path)?;
    let mut wanted = requests(spec);
    for k in kernels {
        let profile = crate::spec::load_kernel_profile(k)?;
        wanted.push((profile.package, profile.suite));
    }
    let packages: Vec<LockedPackage> = wanted
        .iter()
        .map(|(n, s)| pinned(&lock, lock_path, n, s))
        .collect::<Result<_>>()?;
    let mut suites: Vec<String> = packages.iter().map(|p| p.suite.clone()).collect();
    suites.sort();
    suites.dedup();
    let apt = Apt::new(cache_dir, &suites, &mirrors(spec))?;
    let cache = Cache {
        root: cache_dir.to_path_buf(),
    };
    if let Some(d) = link_dir {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    for p in &packages {
        let tree = cache.extracted(&apt, p)?;
        println!("{:<40} {:<28} {}", p.name, p.version, tree.display());
        if let Some(d) = link_dir {
            link(&tree, &d.join(&p.name))?;
            link(&cache.deb(&apt, p)?, &d.join(format!("{}.deb", p.name)))?;
        }
    }
    Ok(())
}

/// Point `link` at `target`, replacing an older link.
fn link(target: &Path, link: &Path) -> Result<()> {
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("cannot link {} to {}", link.display(), target.display()))
}

/// Debian ships the SMM (Secure Boot) build of each OVMF_CODE beside it as `NAME.secboot.fd`.
pub fn secure_boot_code(code: &Path) -> Result<PathBuf> {
    let name = code
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".fd"))
        .with_context(|| {
            format!(
                "firmware code {} is not an OVMF_CODE*.fd file",
                code.display()
            )
        })?;
    let path = code.with_file_name(format!("{name}.secboot.fd"));
    if !path.is_file() {
        bail!(
            "{} is missing: the firmware package lacks the Secure Boot (SMM) build of {} that \
             `run --secure-boot` needs (Debian's ovmf ships OVMF_CODE_4M.secboot.fd)",
            path.display(),
            code.display()
        );
    }
    Ok(path)
}
