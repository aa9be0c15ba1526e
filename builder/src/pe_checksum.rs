//! The PE image checksum, which both PE writers of the builder recompute after editing a file:
//! UKI assembly after adding sections, Authenticode signing after appending the certificate
//! table. A leaf, so neither writer depends on the other for it.

/// PE image checksum (imagehlp `CheckSumMappedFile`): 16-bit one's-complement-style sum with
/// carry folding over the whole file, the 4 `CheckSum` bytes counted as zero and an odd last
/// byte as a low byte, plus the file length.
pub fn pe_checksum(file: &[u8], checksum_offset: usize) -> u32 {
    let byte = |i: usize| {
        if (checksum_offset..checksum_offset + 4).contains(&i) {
            0
        } else {
            file.get(i).copied().unwrap_or(0)
        }
    };
    let mut sum: u32 = 0;
    for i in (0..file.len()).step_by(2) {
        sum += u32::from(u16::from_le_bytes([byte(i), byte(i + 1)]));
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum.wrapping_add(file.len() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secureboot::keys::tests::{run, test_keys_dir};
    use crate::testutil::{fixture, TempDir};
    use cvm_measure::pe::PeHeaders;
    use std::fs;

    const STUB: &str = "systemd-boot-efi/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
    const KERNEL_6_12: &str = "linux-image-6.12.117+deb12-amd64/boot/vmlinuz-6.12.117+deb12-amd64";

    fn read(rel: &str) -> Vec<u8> {
        let p = fixture(rel);
        fs::read(&p).unwrap_or_else(|e| panic!("fixture {} unreadable: {e}", p.display()))
    }

    #[test]
    fn checksum_matches_linker_value_of_stub() {
        // BFD wrote CheckSum 0x1aa6c into the stub (and osslsigncode agrees for even lengths).
        let stub = read(STUB);
        let headers = PeHeaders::parse(&stub).unwrap();
        assert_eq!(headers.check_sum, 0x1aa6c);
        assert_eq!(pe_checksum(&stub, headers.checksum_offset()), 0x1aa6c);
        let kernel = read(KERNEL_6_12);
        let headers = PeHeaders::parse(&kernel).unwrap();
        assert_eq!(
            pe_checksum(&kernel, headers.checksum_offset()),
            headers.check_sum
        );
    }

    #[test]
    fn pe_checksum_matches_sbsign() {
        // sbsign writes a checksum on its output; recompute it independently.
        let dir = TempDir::new("pe-cksum");
        let keys = test_keys_dir();
        let out_path = dir.join("sbsigned.efi");
        let out = run(
            "sbsign",
            &[
                "--key",
                keys.join("db.key").to_str().unwrap(),
                "--cert",
                keys.join("db.crt").to_str().unwrap(),
                "--output",
                out_path.to_str().unwrap(),
                fixture(STUB).to_str().unwrap(),
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let signed = fs::read(&out_path).unwrap();
        let headers = PeHeaders::parse(&signed).unwrap();
        let off = headers.checksum_offset();
        let stored = u32::from_le_bytes(signed[off..off + 4].try_into().unwrap());
        assert_ne!(stored, 0);
        assert_eq!(pe_checksum(&signed, off), stored);
    }
}
