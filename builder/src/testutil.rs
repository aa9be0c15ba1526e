//! Helpers shared by the unit tests of the builder's modules.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A fresh temporary directory, removed on drop; unique per process and call.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("cvm-image-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A file of an extracted, pinned Debian package: `$CVM_FIXTURES/<package>/<path>`, by default
/// `target/fixtures`, which `make fixtures` (`cvm-image fetch --link-dir target/fixtures`) fills.
pub fn fixture(rel: &str) -> PathBuf {
    let base = std::env::var_os("CVM_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/fixtures"))
        });
    let path = base.join(rel);
    assert!(
        path.exists(),
        "fixture {} is missing: run `make fixtures` (or set CVM_FIXTURES)",
        path.display()
    );
    path
}
