//! The output directory: nothing half-written ever sits under a final name.
//!
//! Outputs are written as `.NAME.tmp` and renamed into place together at the end; a build that fails
//! removes its temporaries. Final outputs of an earlier build are removed when a build starts, so that a
//! failed build never leaves an old image that looks like the result of this one.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Names a build may produce; removed at the start of every build.
pub const FINAL_OUTPUTS: &[&str] = &[
    "disk.raw",
    "uki.efi",
    "manifest.json",
    "disk.qcow2",
    "gcp-disk.tar.gz",
    "aws-disk.vmdk",
    "azure-disk.vhd",
];

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
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(e).with_context(|| format!("cannot remove {}", p.display()))
                    }
                }
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

    /// Rename every temporary into its final name.
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
                let _ = std::fs::remove_file(self.temp(name));
            }
        }
    }
}
