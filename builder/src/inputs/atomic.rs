//! Atomic publication of files and directories: write under a temporary name in the same directory
//! (so the final `rename(2)` never crosses a filesystem), then rename. A crash or an error leaves at
//! most a temporary entry behind, never a half-written file under its final name.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Per-process counter so that threads of one process never pick the same temporary name; together
/// with the pid this makes names unique without randomness.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary name `.<stem>.tmp-<pid>-<n>`: hidden, and recognisable as debris if a process dies.
pub fn temp_name(stem: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(".{stem}.tmp-{}-{n}", std::process::id())
}

/// Write `bytes` to `path` atomically (temp file in the same directory, fsync, rename).
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent_dir(path)?;
    let stem = file_stem(path)?;
    let tmp = dir.join(temp_name(&stem));
    let result = write_and_sync(&tmp, bytes).and_then(|()| {
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Write `path` only when its content differs, so an unchanged file keeps its mtime (and readers
/// never observe a replacement at all).
pub fn write_file_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    match std::fs::read(path) {
        Ok(existing) if existing == bytes => Ok(()),
        _ => write_file(path, bytes),
    }
}

fn write_and_sync(tmp: &Path, bytes: &[u8]) -> Result<()> {
    let mut file =
        std::fs::File::create(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.sync_all()
        .with_context(|| format!("cannot sync {}", tmp.display()))
}

fn parent_dir(path: &Path) -> Result<PathBuf> {
    let parent = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    Ok(if parent.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        parent.to_path_buf()
    })
}

fn file_stem(path: &Path) -> Result<String> {
    Ok(path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?
        .to_string_lossy()
        .into_owned())
}

/// A temporary directory removed on drop unless it was [`persist`](TempDir::persist)ed.
#[derive(Debug)]
pub struct TempDir {
    path: Option<PathBuf>,
}

/// What [`TempDir::persist`] found at the final name.
#[derive(Debug, PartialEq, Eq)]
pub enum Persisted {
    /// Our directory now lives under the final name.
    Renamed,
    /// Another process published the same (content-addressed) entry first; ours was discarded.
    AlreadyPresent,
}

impl TempDir {
    /// Create `<parent>/.<stem>.tmp-<pid>-<n>/`, creating `parent` if needed.
    pub fn new_in(parent: &Path, stem: &str) -> Result<Self> {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create directory {}", parent.display()))?;
        let path = parent.join(temp_name(stem));
        std::fs::create_dir(&path)
            .with_context(|| format!("cannot create directory {}", path.display()))?;
        Ok(Self { path: Some(path) })
    }

    pub fn path(&self) -> &Path {
        // `path` is only None after persist(), which consumes self.
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Rename the directory to `dest`. Content-addressed callers treat an existing `dest` as success.
    pub fn persist(mut self, dest: &Path) -> Result<Persisted> {
        let Some(path) = self.path.take() else {
            anyhow::bail!("temporary directory already persisted");
        };
        match std::fs::rename(&path, dest) {
            Ok(()) => Ok(Persisted::Renamed),
            Err(_) if dest.is_dir() => {
                remove_tree(&path);
                Ok(Persisted::AlreadyPresent)
            }
            Err(e) => {
                remove_tree(&path);
                Err(e).with_context(|| {
                    format!("cannot rename {} to {}", path.display(), dest.display())
                })
            }
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            remove_tree(&path);
        }
    }
}

/// Best-effort recursive removal that also copes with read-only directories extracted from packages
/// (a non-root user cannot delete entries of a 0555 directory until it is made writable).
fn remove_tree(path: &Path) {
    if std::fs::remove_dir_all(path).is_ok() {
        return;
    }
    make_dirs_writable(path);
    let _ = std::fs::remove_dir_all(path);
}

fn make_dirs_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            make_dirs_writable(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_file_replaces_atomically_and_leaves_no_temp() {
        let dir = TempDir::new_in(&std::env::temp_dir(), "atomic-test").unwrap();
        let target = dir.path().join("out.txt");
        write_file(&target, b"one").unwrap();
        write_file(&target, b"two").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.txt")]);
    }

    #[test]
    fn temp_dir_persist_and_drop() {
        let parent = TempDir::new_in(&std::env::temp_dir(), "atomic-test").unwrap();
        let dest = parent.path().join("final");
        let first = TempDir::new_in(parent.path(), "x").unwrap();
        std::fs::write(first.path().join("a"), b"1").unwrap();
        assert_eq!(first.persist(&dest).unwrap(), Persisted::Renamed);
        let second = TempDir::new_in(parent.path(), "x").unwrap();
        std::fs::write(second.path().join("a"), b"2").unwrap();
        assert_eq!(second.persist(&dest).unwrap(), Persisted::AlreadyPresent);
        assert_eq!(std::fs::read(dest.join("a")).unwrap(), b"1");
        let dropped = TempDir::new_in(parent.path(), "y").unwrap();
        let dropped_path = dropped.path().to_path_buf();
        drop(dropped);
        assert!(!dropped_path.exists());
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 1);
    }
}
