//! Helpers shared by the unit tests of the verifier's modules.

use std::path::PathBuf;

/// A fresh temporary directory, removed on drop.
pub fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("cvm-verify-test-{tag}-"))
        .tempdir()
        .expect("create temp dir")
}

/// A file of the shared real-world samples (`../shared/testdata/` beside the checkout); the tests
/// that need one fail, never skip, when it is missing.
pub fn testdata(rel: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata")
        .join(rel);
    std::fs::read(&p)
        .unwrap_or_else(|e| panic!("{}: {e} (shared testdata is required)", p.display()))
}
