//! Content-addressed cache of package files and their extracted trees.
//!
//! Layout under the root (see [`Cache::default_location`]):
//! * `debs/<sha256>.deb` — a `.deb` whose SHA-256 is its name;
//! * `extract/<sha256>/` — the data tree of that `.deb`;
//! * `apt/` — the private apt configurations ([`super::apt`]);
//! * `tmp/` — work in progress; anything here is debris of an interrupted run and may be deleted
//!   whenever no build is running.
//!
//! Verification policy: a `.deb` is hashed when it is downloaded *and every time it is used*. A
//! size+hash sidecar would only re-check metadata, not content, and would itself need trusting; full
//! re-hashing costs ~0.1 s for a 100 MB kernel package (SHA-NI), which is negligible next to a build.
//! Extracted trees are not re-hashed: they are only ever created from a verified `.deb` and published
//! by an atomic directory rename, so a tree that exists under its final name is complete.

use super::apt::Apt;
use super::atomic::TempDir;
use super::lock::LockedPackage;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Environment variable that relocates the cache (CI runners, shared build machines).
pub const CACHE_ENV: &str = "CVM_IMAGE_CACHE";
/// Directory name under `$XDG_CACHE_HOME` or `~/.cache`.
const CACHE_DIR_NAME: &str = "cvm-image";

/// The cache; `root` is created on demand.
#[derive(Debug, Clone)]
pub struct Cache {
    pub root: PathBuf,
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `$CVM_IMAGE_CACHE`, else `$XDG_CACHE_HOME/cvm-image`, else `~/.cache/cvm-image` (XDG Base
    /// Directory spec: relative values of the variables are ignored), else `<tmp>/cvm-image`.
    pub fn default_location() -> PathBuf {
        let absolute = |var: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        if let Some(dir) = absolute(CACHE_ENV) {
            return dir;
        }
        if let Some(dir) = absolute("XDG_CACHE_HOME") {
            return dir.join(CACHE_DIR_NAME);
        }
        if let Some(home) = absolute("HOME") {
            return home.join(".cache").join(CACHE_DIR_NAME);
        }
        std::env::temp_dir().join(CACHE_DIR_NAME)
    }

    /// Path of the verified `.deb` for `pkg`, downloading it with `apt` when absent. A cached file
    /// whose hash no longer matches (disk corruption, tampering) is discarded and fetched again.
    pub fn deb(&self, apt: &Apt, pkg: &LockedPackage) -> Result<PathBuf> {
        check_hash_form(pkg)?;
        let path = self.deb_path(pkg);
        if path.is_file() {
            let actual = super::sha256_file(&path)?;
            if actual == pkg.sha256 {
                return Ok(path);
            }
            eprintln!(
                "cvm-image: cached {} has sha256 {actual}, expected {}; discarding it and downloading again",
                path.display(),
                pkg.sha256
            );
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove corrupt {}", path.display()))?;
        }
        self.fetch(apt, pkg, &path)?;
        Ok(path)
    }

    /// Path of the extracted data tree of `pkg` (read-only by convention: shared by every build).
    pub fn extracted(&self, apt: &Apt, pkg: &LockedPackage) -> Result<PathBuf> {
        check_hash_form(pkg)?;
        let dest = self.root.join("extract").join(&pkg.sha256);
        if dest.is_dir() {
            return Ok(dest);
        }
        let deb = self.deb(apt, pkg)?;
        let work = TempDir::new_in(&self.tmp_dir(), &format!("extract-{}", pkg.name))?;
        let tree = work.path().join("tree");
        super::deb::extract(&deb, &tree)
            .with_context(|| format!("extracting {} {}", pkg.name, pkg.version))?;
        publish_dir(&tree, &dest)?;
        Ok(dest)
    }

    fn deb_path(&self, pkg: &LockedPackage) -> PathBuf {
        self.root.join("debs").join(format!("{}.deb", pkg.sha256))
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Download into a private temp dir, verify, and only then rename to the final name.
    fn fetch(&self, apt: &Apt, pkg: &LockedPackage, dest: &Path) -> Result<()> {
        let work = TempDir::new_in(&self.tmp_dir(), &format!("download-{}", pkg.name))?;
        let downloaded = apt.download(pkg, work.path())?;
        verify(pkg, &downloaded)?;
        let debs = dest.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(debs)
            .with_context(|| format!("cannot create directory {}", debs.display()))?;
        std::fs::rename(&downloaded, dest)
            .with_context(|| format!("cannot move {} to {}", downloaded.display(), dest.display()))
    }
}

/// The lock's hash is used as a file name: refuse anything but 64 hex digits.
fn check_hash_form(pkg: &LockedPackage) -> Result<()> {
    if super::is_sha256_hex(&pkg.sha256) {
        return Ok(());
    }
    bail!(
        "cvm-image.lock entry {}: sha256 {:?} is not 64 lower-case hex digits",
        pkg.name,
        pkg.sha256
    )
}

/// Compare a freshly downloaded file with the lock entry (size first: it explains truncation).
fn verify(pkg: &LockedPackage, file: &Path) -> Result<()> {
    let actual = super::sha256_file(file)?;
    if actual == pkg.sha256 {
        return Ok(());
    }
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    bail!(
        "refusing {} {} ({}): its sha256 is {actual} ({size} bytes) but cvm-image.lock pins {} ({} bytes).\n\
         Either the lock was edited by hand or the mirror serves a different file for this version. \
         Do not build from it: check the lock's history, and if the change is expected run \
         `cvm-image lock` to re-resolve and review the new hash.",
        pkg.name,
        pkg.version,
        pkg.suite,
        pkg.sha256,
        pkg.size
    )
}

/// Move a finished tree into place; a concurrent builder that published first wins (same content).
fn publish_dir(tree: &Path, dest: &Path) -> Result<()> {
    let parent = dest.parent().context("extract destination has no parent")?;
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create directory {}", parent.display()))?;
    match std::fs::rename(tree, dest) {
        Ok(()) => Ok(()),
        Err(_) if dest.is_dir() => Ok(()), // the TempDir guard removes our copy
        Err(e) => {
            Err(e).with_context(|| format!("cannot move {} to {}", tree.display(), dest.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::apt::{MirrorOverrides, PackageRequest};
    use crate::inputs::deb::tests::describe_tree;
    use std::collections::BTreeMap;
    use std::process::Command;
    use std::time::SystemTime;

    /// Persistent test cache: lists and small debs survive between runs (update only when needed).
    fn shared_root() -> PathBuf {
        std::env::temp_dir().join("cvm-image-inputs-test-cache")
    }

    fn bookworm_apt() -> Apt {
        Apt::new(
            &shared_root(),
            &["bookworm".into(), "bookworm-security".into()],
            &MirrorOverrides::default(),
        )
        .unwrap()
    }

    fn fresh_cache() -> (TempDir, Cache) {
        let dir = TempDir::new_in(&std::env::temp_dir(), "cache-test").unwrap();
        let cache = Cache::new(dir.path());
        (dir, cache)
    }

    /// `sha256sum` as the independent reference hash.
    fn sha256sum(path: &Path) -> String {
        let out = Command::new("sha256sum")
            .arg(path)
            .output()
            .expect("sha256sum (coreutils) is required");
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    }

    fn dpkg_field(deb: &Path, field: &str) -> String {
        let out = Command::new("dpkg-deb")
            .arg("-f")
            .arg(deb)
            .arg(field)
            .output()
            .expect("dpkg-deb is required");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn files_under(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                out.push(e.path());
                if e.file_type().unwrap().is_dir() {
                    out.extend(files_under(&e.path()));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn resolve_download_verify_and_extract_systemd_boot_efi() {
        let apt = bookworm_apt();
        let req = PackageRequest {
            name: "systemd-boot-efi".into(),
            suite: "bookworm".into(),
        };
        let pkg = apt.resolve(&req).unwrap();
        assert_eq!(pkg.arch, "amd64");
        assert!(
            pkg.filename.starts_with("pool/main/s/systemd/"),
            "{}",
            pkg.filename
        );
        let (_dir, cache) = fresh_cache();
        let deb = cache.deb(&apt, &pkg).unwrap();
        assert_eq!(
            deb,
            cache.root.join("debs").join(format!("{}.deb", pkg.sha256))
        );
        assert_eq!(sha256sum(&deb), pkg.sha256);
        assert_eq!(std::fs::metadata(&deb).unwrap().len(), pkg.size);
        assert_eq!(dpkg_field(&deb, "Version"), pkg.version);
        assert_eq!(dpkg_field(&deb, "Package"), pkg.name);

        let tree = cache.extracted(&apt, &pkg).unwrap();
        assert_eq!(tree, cache.root.join("extract").join(&pkg.sha256));
        assert!(tree
            .join("usr/lib/systemd/boot/efi/linuxx64.efi.stub")
            .is_file());
        let reference = TempDir::new_in(&std::env::temp_dir(), "dpkg-ref").unwrap();
        let status = Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(reference.path())
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(describe_tree(&tree), describe_tree(reference.path()));
        // Nothing left in tmp/ after success.
        assert_eq!(files_under(&cache.root.join("tmp")), Vec::<PathBuf>::new());
        // Second use: served from the cache (re-verified), same path.
        assert_eq!(cache.deb(&apt, &pkg).unwrap(), deb);
    }

    #[test]
    fn wrong_sha256_is_refused_and_nothing_is_cached() {
        let apt = bookworm_apt();
        let req = PackageRequest {
            name: "systemd-boot-efi".into(),
            suite: "bookworm".into(),
        };
        let mut pkg = apt.resolve(&req).unwrap();
        let real = pkg.sha256.clone();
        pkg.sha256 = "0123456789abcdef".repeat(4);
        let (_dir, cache) = fresh_cache();
        let err = format!("{:#}", cache.deb(&apt, &pkg).unwrap_err());
        assert!(err.contains("systemd-boot-efi"), "{err}");
        assert!(err.contains(&pkg.sha256) && err.contains(&real), "{err}");
        assert!(err.contains("cvm-image lock"), "{err}");
        assert!(!cache
            .root
            .join("debs")
            .join(format!("{}.deb", pkg.sha256))
            .exists());
        assert!(!cache.root.join("debs").join(format!("{real}.deb")).exists());
        assert_eq!(files_under(&cache.root.join("tmp")), Vec::<PathBuf>::new());
        assert!(cache.extracted(&apt, &pkg).is_err());
        assert!(!cache.root.join("extract").join(&pkg.sha256).exists());
    }

    #[test]
    fn corrupted_cached_deb_is_replaced() {
        let apt = bookworm_apt();
        let req = PackageRequest {
            name: "systemd-boot-efi".into(),
            suite: "bookworm".into(),
        };
        let pkg = apt.resolve(&req).unwrap();
        let (_dir, cache) = fresh_cache();
        let deb = cache.deb(&apt, &pkg).unwrap();
        std::fs::write(&deb, b"corrupted").unwrap();
        let again = cache.deb(&apt, &pkg).unwrap();
        assert_eq!(sha256sum(&again), pkg.sha256);
    }

    #[test]
    fn vanished_version_points_to_cvm_image_lock() {
        let apt = bookworm_apt();
        let pkg = LockedPackage {
            name: "systemd-boot-efi".into(),
            version: "0.0-vanished".into(),
            suite: "bookworm".into(),
            arch: "amd64".into(),
            sha256: "ab".repeat(32),
            size: 1,
            filename: "pool/main/s/systemd/gone.deb".into(),
        };
        let (_dir, cache) = fresh_cache();
        let err = format!("{:#}", cache.deb(&apt, &pkg).unwrap_err());
        assert!(err.contains("`cvm-image lock`"), "{err}");
        assert!(err.contains("systemd-boot-efi 0.0-vanished"), "{err}");
        assert_eq!(files_under(&cache.root.join("debs")), Vec::<PathBuf>::new());
    }

    #[test]
    fn unknown_package_is_reported() {
        let apt = bookworm_apt();
        let req = PackageRequest {
            name: "no-such-package-cvm".into(),
            suite: "bookworm".into(),
        };
        let err = apt.resolve(&req).unwrap_err().to_string();
        assert!(
            err.contains("no-such-package-cvm") && err.contains("bookworm"),
            "{err}"
        );
    }

    /// Listing with mtimes of everything below `dir` (recursively), for before/after comparison.
    fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, Option<SystemTime>)> {
        let mut out = BTreeMap::new();
        out.insert(
            dir.to_path_buf(),
            std::fs::symlink_metadata(dir)
                .map(|m| (m.len(), m.modified().ok()))
                .unwrap_or((0, None)),
        );
        for path in files_under(dir) {
            let meta = std::fs::symlink_metadata(&path).unwrap();
            out.insert(path, (meta.len(), meta.modified().ok()));
        }
        out
    }

    #[test]
    fn trixie_through_the_private_config_leaves_the_machine_untouched() {
        let watched = [
            "/etc/apt",
            "/var/lib/apt/lists",
            "/var/cache/apt",
            "/var/lib/dpkg/status",
        ];
        let before: Vec<_> = watched.iter().map(|d| snapshot(Path::new(d))).collect();

        let apt = Apt::new(
            &shared_root(),
            &["trixie".into()],
            &MirrorOverrides::default(),
        )
        .unwrap();
        let req = PackageRequest {
            name: "systemd-boot-efi".into(),
            suite: "trixie".into(),
        };
        let pkg = apt.resolve(&req).unwrap();
        assert_eq!(pkg.suite, "trixie");
        // trixie ships systemd 257; bookworm 252.
        assert!(pkg.version.starts_with("257."), "{}", pkg.version);
        let dir = TempDir::new_in(&std::env::temp_dir(), "trixie-dl").unwrap();
        let deb = apt.download(&pkg, dir.path()).unwrap();
        assert_eq!(sha256sum(&deb), pkg.sha256);
        assert_eq!(dpkg_field(&deb, "Version"), pkg.version);

        let after: Vec<_> = watched.iter().map(|d| snapshot(Path::new(d))).collect();
        for ((dir, b), a) in watched.iter().zip(&before).zip(&after) {
            assert_eq!(b, a, "{dir} changed");
        }
    }

    #[test]
    fn default_location_is_absolute() {
        assert!(Cache::default_location().is_absolute());
    }
}
