//! Deterministic identifiers.
//!
//! Every identifier that must be unique — disk GUID, partition UUIDs, verity salts and superblock UUIDs,
//! the FAT volume id — is derived from content or from the spec with a domain-separated SHA-256, never
//! drawn at random, so that the same spec and inputs give the same bytes on every machine.

use sha2::{Digest, Sha256};

/// SHA-256 over a domain label and length-prefixed parts: distinct domains or part boundaries never collide.
pub fn derive(domain: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"cvm-image:");
    h.update((domain.len() as u64).to_le_bytes());
    h.update(domain.as_bytes());
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// A version-4-shaped UUID whose bits come from [`derive`] (systemd's `derive_uuid` does the same with an
/// HMAC): tools that check the version/variant bits accept it, and it is still reproducible.
pub fn uuid(domain: &str, parts: &[&[u8]]) -> uuid::Uuid {
    let d = derive(domain, parts);
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    uuid::Builder::from_random_bytes(b).into_uuid()
}

/// SHA-256 of a byte string.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// SHA-256 of a file, streamed.
pub fn sha256_file(path: &std::path::Path) -> anyhow::Result<[u8; 32]> {
    use anyhow::Context;
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_separate() {
        assert_ne!(derive("a", &[b"bc"]), derive("ab", &[b"c"]));
        assert_ne!(derive("a", &[b"b", b"c"]), derive("a", &[b"bc"]));
        assert_eq!(derive("a", &[b"x"]), derive("a", &[b"x"]));
    }

    #[test]
    fn uuid_is_v4_shaped() {
        let u = uuid("disk", &[b"x"]);
        assert_eq!(u.get_version_num(), 4);
        assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
    }

    #[test]
    fn sha256_vector() {
        // sha256("abc"), FIPS 180-2 appendix B.1
        assert_eq!(
            hex::encode(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
