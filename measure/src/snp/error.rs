//! Why a launch digest cannot be computed (a leaf module: every part of `snp` reports with it).

/// Why a launch digest cannot be computed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnpError {
    #[error("the firmware's size ({0} bytes) is not a multiple of 4096")]
    UnalignedFirmware(usize),
    #[error("malformed OVMF metadata: {0}")]
    BadMetadata(&'static str),
    #[error("unknown OVMF SEV metadata section type {0:#x}")]
    UnknownSection(u32),
    #[error("a {0} section's size {1:#x} is not a multiple of 4096")]
    UnalignedSection(&'static str, u32),
    #[error(
        "the firmware has no SEV-ES reset block in its footer table (not an SEV-capable OVMF)"
    )]
    NoResetBlock,
    #[error("more than one vCPU, but the firmware's SEV-ES reset block gives AP EIP 0")]
    NoApEip,
    #[error("the number of vCPUs must be at least 1")]
    NoVcpus,
    #[error("a kernel is given, but the firmware has no SNP_KERNEL_HASHES metadata section")]
    NoKernelHashesSection,
    #[error("a kernel is given, but the firmware has no SEV hash table (only AmdSev OVMF builds have one)")]
    NoSevHashTable,
    #[error("the SNP_KERNEL_HASHES section must be one page (it is {0:#x} bytes)")]
    KernelHashesSize(u32),
    #[error("the kernel-hashes table at {0:#x} does not fit in its page")]
    KernelHashesOffset(u32),
    #[error("a precomputed OVMF digest is only meaningful in snp mode")]
    OvmfHashNotSnp,
}
