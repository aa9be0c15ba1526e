//! The kernel-hashes table QEMU writes for direct boot with `kernel-hashes=on` (docs/tee.md §1.5):
//! a GUIDed table of the SHA-256 of the command line, the initrd and the kernel, which SEV and SEV-ES
//! measure as 176 bytes and SNP as the page that holds it.

use super::ovmf_metadata::guid_le;
use super::page_info::PAGE_SIZE;
use sha2::{Digest, Sha256};

const TABLE_HEADER: &str = "9438d606-4f22-4cc9-b479-a793d411fd21";
const CMDLINE_ENTRY: &str = "97d02dd8-bd20-4c94-aa78-e7714d36ab2a";
const INITRD_ENTRY: &str = "44baf731-3a2f-4bd7-9af1-41e29169781d";
const KERNEL_ENTRY: &str = "4de79437-abd2-427f-b835-d5b172d2045b";

/// Header (GUID + u16) and three entries (GUID + u16 + SHA-256) of 50 bytes each.
const ENTRY_LEN: usize = 16 + 2 + 32;
const TABLE_LEN: usize = 16 + 2 + 3 * ENTRY_LEN;
/// The table zero-padded to a multiple of 16 bytes, as QEMU places it.
pub const PADDED_TABLE_LEN: usize = TABLE_LEN.div_ceil(16) * 16;

/// What QEMU hashes for `-kernel/-initrd/-append`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelHashes {
    pub kernel: [u8; 32],
    pub initrd: [u8; 32],
    pub cmdline: [u8; 32],
}

impl KernelHashes {
    /// `kernel` is the raw bzImage (QEMU does not patch the setup header under SEV); no initrd
    /// hashes as the empty string; the command line is hashed with its terminating NUL, and an empty
    /// or absent one as a lone NUL.
    pub fn new(kernel: &[u8], initrd: Option<&[u8]>, cmdline: Option<&str>) -> Self {
        let mut c = cmdline.unwrap_or("").as_bytes().to_vec();
        c.push(0);
        KernelHashes {
            kernel: Sha256::digest(kernel).into(),
            initrd: Sha256::digest(initrd.unwrap_or(&[])).into(),
            cmdline: Sha256::digest(&c).into(),
        }
    }

    /// The padded table (176 bytes).
    pub fn table(&self) -> [u8; PADDED_TABLE_LEN] {
        let mut t = [0u8; PADDED_TABLE_LEN];
        t[0..16].copy_from_slice(&guid_le(TABLE_HEADER));
        t[16..18].copy_from_slice(&(TABLE_LEN as u16).to_le_bytes());
        let entries = [
            (CMDLINE_ENTRY, &self.cmdline),
            (INITRD_ENTRY, &self.initrd),
            (KERNEL_ENTRY, &self.kernel),
        ];
        for (i, (guid, hash)) in entries.into_iter().enumerate() {
            let at = 18 + i * ENTRY_LEN;
            t[at..at + 16].copy_from_slice(&guid_le(guid));
            t[at + 16..at + 18].copy_from_slice(&(ENTRY_LEN as u16).to_le_bytes());
            t[at + 18..at + ENTRY_LEN].copy_from_slice(hash);
        }
        t
    }

    /// The 4 KiB page SNP measures: zeros with the table at `offset` (the table GPA's offset in its
    /// page). `None` when the table would not fit in the page.
    pub fn page(&self, offset: usize) -> Option<[u8; PAGE_SIZE]> {
        if offset + PADDED_TABLE_LEN > PAGE_SIZE {
            return None;
        }
        let mut p = [0u8; PAGE_SIZE];
        p[offset..offset + PADDED_TABLE_LEN].copy_from_slice(&self.table());
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bytes() {
        // The padded table's first 18 bytes as docs/tee.md §2 records them from sev-snp-measure.
        let t = KernelHashes::new(b"", None, None).table();
        assert_eq!(
            hex::encode(&t[..18]),
            "06d63894224fc94cb479a793d411fd21a800"
        );
        assert_eq!(t.len(), 176);
    }
}
