//! The output directory: nothing half-written ever sits under a final name.
//!
//! Outputs are written as `.NAME.tmp` and renamed into place together at the end; a build that fails
//! removes its temporaries. Final outputs of an earlier build are removed when a build starts, so that a
//! failed build never leaves an old image that looks like the result of this one. A directory output
//! (`secure-boot/`) is written as `.NAME.tmp/` and renamed as a whole in the same way.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Names a build may produce; removed at the start of every build.
pub const FINAL_OUTPUTS: &[&str] = &[
    "disk.raw",
    "uki.efi",
    "manifest.json",
    "golden-measurement.json",
    "golden-measurement.json.sig",
    "disk.qcow2",
    "gcp-disk.tar.gz",
    "aws-disk.vmdk",
    "azure-disk.vhd",
    "OVMF_VARS.fd",
    "secure-boot",
];

/// Remove a file or a directory tree; absence is fine.
fn remove_output(p: &Path) -> std::io::Result<()> {
    let result = match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

pub struct OutputDir {
    dir: PathBuf,
    committed: std::cell::Cell<bool>,
}

impl OutputDir {
    pub fn prepare(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create output directory {}", dir.display()))?;
        for name in FINAL_OUTPUTS {
            for p in [dir.join(name), dir.join(format!(".{name}.tmp"))] {
                remove_output(&p).with_context(|| format!("cannot remove {}", p.display()))?;
            }
        }
        Ok(OutputDir {
            dir: dir.to_path_buf(),
            committed: false.into(),
        })
    }

    /// Temporary path for the output `name`.
    pub fn temp(&self, name: &str) -> PathBuf {
        self.dir.join(format!(".{name}.tmp"))
    }

    /// Rename every output written (each final name whose temporary exists) into place: the list
    /// of outputs is the files the build wrote, not a list kept beside them.
    pub fn commit_written(&self) -> Result<()> {
        let written: Vec<&str> = FINAL_OUTPUTS
            .iter()
            .copied()
            .filter(|name| std::fs::symlink_metadata(self.temp(name)).is_ok())
            .collect();
        self.commit(&written)
    }

    /// Rename the temporaries of `names` into their final names.
    pub fn commit(&self, names: &[&str]) -> Result<()> {
        for name in names {
            let (from, to) = (self.temp(name), self.dir.join(name));
            std::fs::rename(&from, &to)
                .with_context(|| format!("cannot rename {} to {}", from.display(), to.display()))?;
        }
        self.committed.set(true);
        Ok(())
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        if !self.committed.get() {
            for name in FINAL_OUTPUTS {
                let _ = remove_output(&self.temp(name));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    /// Directory outputs (`secure-boot/`) follow the file rules: a new build removes the old
    /// one (so a build without keys leaves no stale certificates for `deploy` to find), a
    /// committed temporary directory is renamed as a whole, an uncommitted one is removed.
    #[test]
    fn directory_outputs_are_replaced_committed_and_cleaned_up() {
        let tmp = TempDir::new("output-dir");
        std::fs::create_dir_all(tmp.join("secure-boot")).unwrap();
        std::fs::write(tmp.join("secure-boot/PK.der"), b"old").unwrap();
        std::fs::write(tmp.join("OVMF_VARS.fd"), b"old").unwrap();
        std::fs::write(tmp.join("console.log"), b"not ours").unwrap();

        let out = OutputDir::prepare(tmp.path()).unwrap();
        assert!(!tmp.join("secure-boot").exists() && !tmp.join("OVMF_VARS.fd").exists());
        assert!(tmp.join("console.log").exists());
        std::fs::create_dir_all(out.temp("secure-boot")).unwrap();
        std::fs::write(out.temp("secure-boot").join("PK.der"), b"new").unwrap();
        out.commit(&["secure-boot"]).unwrap();
        assert_eq!(
            std::fs::read(tmp.join("secure-boot/PK.der")).unwrap(),
            b"new"
        );
        assert!(!out.temp("secure-boot").exists());

        let failed = OutputDir::prepare(tmp.path()).unwrap();
        std::fs::create_dir_all(failed.temp("secure-boot")).unwrap();
        std::fs::write(failed.temp("secure-boot").join("PK.der"), b"half").unwrap();
        let temp = failed.temp("secure-boot");
        drop(failed);
        assert!(!temp.exists() && !tmp.join("secure-boot").exists());
    }
}
