//! The SNP launch-digest chain: one SHA-384 of a 0x70-byte PAGE_INFO record per 4 KiB page
//! (docs/tee.md §1.2). Every SNP_LAUNCH_UPDATE the hypervisor issues adds one record.

use sha2::{Digest, Sha384};

/// A launch digest (and the seed of the chain): SHA-384.
pub type Ld = [u8; 48];

pub const PAGE_SIZE: usize = 4096;

/// GPA recorded for VMSA pages: Linux KVM's `INITIAL_VMSA_GPA`, the all-ones address cut to a page
/// and to bit 47 (§1.2). sev-snp-measure uses this value for every VMM type, GCE included.
pub const VMSA_GPA: u64 = 0xFFFF_FFFF_F000;

/// PAGE_TYPE of a PAGE_INFO record (§1.2): 1 to 6 in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PageType {
    /// Data the hypervisor loaded (the firmware, the kernel-hashes page); CONTENTS = its SHA-384.
    Normal = 1,
    /// A vCPU's initial save area; CONTENTS = its SHA-384.
    Vmsa,
    /// Pages the PSP zeroes (QEMU/EC2 SEC_MEM, SVSM_CAA, an unused kernel-hashes section).
    Zero,
    /// Accepted without measuring their contents (GCE's SEC_MEM).
    Unmeasured,
    /// The page the PSP fills with the VM's secrets.
    Secrets,
    /// The page the PSP fills with validated CPUID values.
    Cpuid,
}

/// The running digest of a guest context.
#[derive(Debug, Clone)]
pub struct Chain {
    ld: Ld,
}

impl Default for Chain {
    fn default() -> Self {
        Chain { ld: [0; 48] }
    }
}

/// One PAGE_INFO record (SNP firmware ABI, PAGE_INFO layout; §1.2 of docs/tee.md).
pub fn page_info(digest_cur: &Ld, contents: &Ld, page_type: PageType, gpa: u64) -> [u8; 0x70] {
    let mut r = [0u8; 0x70];
    r[0x00..0x30].copy_from_slice(digest_cur);
    r[0x30..0x60].copy_from_slice(contents);
    r[0x60..0x62].copy_from_slice(&0x70u16.to_le_bytes());
    r[0x62] = page_type as u8;
    // 0x63 IMI_PAGE, 0x64..0x67 VMPL3/2/1 permissions, 0x67 reserved: all zero.
    r[0x68..0x70].copy_from_slice(&gpa.to_le_bytes());
    r
}

impl Chain {
    /// A chain that continues from `seed` (a precomputed digest of the firmware pages).
    pub fn from_seed(seed: Ld) -> Self {
        Chain { ld: seed }
    }

    pub fn ld(&self) -> Ld {
        self.ld
    }

    fn update(&mut self, page_type: PageType, gpa: u64, contents: &Ld) {
        self.ld = Sha384::digest(page_info(&self.ld, contents, page_type, gpa)).into();
    }

    /// NORMAL pages for `data` (a whole number of pages) from `gpa` upwards.
    pub fn normal_pages(&mut self, gpa: u64, data: &[u8]) {
        debug_assert_eq!(data.len() % PAGE_SIZE, 0);
        for (i, page) in data.chunks_exact(PAGE_SIZE).enumerate() {
            let contents: Ld = Sha384::digest(page).into();
            self.update(PageType::Normal, gpa + (i * PAGE_SIZE) as u64, &contents);
        }
    }

    /// One VMSA page; its GPA is always [`VMSA_GPA`].
    pub fn vmsa_page(&mut self, page: &[u8; PAGE_SIZE]) {
        let contents: Ld = Sha384::digest(page).into();
        self.update(PageType::Vmsa, VMSA_GPA, &contents);
    }

    /// `count` consecutive records of a content-less type (ZERO, UNMEASURED, SECRETS, CPUID).
    pub fn empty_pages(&mut self, page_type: PageType, gpa: u64, count: u64) {
        for i in 0..count {
            self.update(page_type, gpa + i * PAGE_SIZE as u64, &[0; 48]);
        }
    }
}
