//! Build inputs: the Debian packages an image is made from (kernel, systemd-stub, OVMF).
//!
//! * [`lock`] — `cvm-image.lock`, the committed pin of every package (version, suite, sha256).
//! * [`apt`] — a private apt configuration (own sources, lists, caches; never the machine's) used to
//!   resolve packages to versions and hashes and to download them.
//! * [`cache`] — a content-addressed cache of verified `.deb` files and their extracted trees.
//! * [`deb`] — a pure-Rust `.deb` reader (ar → data.tar.{xz,zst,gz}) so no `dpkg-deb` is needed.
//! * [`atomic`] — temp-file/temp-dir + rename helpers: nothing is ever half-written under a final name.

pub mod apt;
pub mod atomic;
pub mod cache;
pub mod deb;
pub mod lock;

pub use apt::{Apt, MirrorOverrides, PackageRequest};
pub use cache::Cache;
pub use lock::{LockedPackage, Lockfile};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// Read buffer for hashing; large enough that syscall overhead is negligible next to SHA-256.
const HASH_BUF_SIZE: usize = 1 << 20;

/// Lower-case hex SHA-256 of a file's contents, streamed (kernel packages are ~100 MB).
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; HASH_BUF_SIZE];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// True when `s` is a SHA-256 in the form the lock file and Debian indexes use (64 lower-case hex digits).
/// Checked before a hash is used as a file name in the cache, so a corrupt lock cannot escape it.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_file_matches_sha256sum() {
        let dir = atomic::TempDir::new_in(&std::env::temp_dir(), "sha-test").unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        // FIPS 180-2 test vector for "abc".
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn sha256_hex_validation() {
        assert!(is_sha256_hex(&"a".repeat(64)));
        assert!(!is_sha256_hex(&"A".repeat(64)));
        assert!(!is_sha256_hex(&"a".repeat(63)));
        assert!(!is_sha256_hex(&format!("../{}", "a".repeat(61))));
    }
}
