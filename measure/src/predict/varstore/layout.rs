//! The on-flash layout of an OVMF variable store (`OVMF_VARS*.fd`), little-endian: field offsets
//! and values of the edk2 structures, in one place for the reader ([`super`]) and for the
//! builder, which writes enrolled copies of the store and must agree with the reader byte for
//! byte.
//!
//! edk2 `MdePkg/Include/Pi/PiFirmwareVolume.h`, `MdeModulePkg/Include/Guid/VariableFormat.h`.

/// `EFI_FIRMWARE_VOLUME_HEADER`: `ZeroVector[16]`, FileSystemGuid = gEfiSystemNvDataFvGuid,
/// FvLength u64, Signature "_FVH", Attributes u32, HeaderLength u16, Checksum u16, …, BlockMap.
pub mod fv {
    /// Offset of `FileSystemGuid`.
    pub const FILE_SYSTEM_GUID: usize = 0x10;
    /// Offset of `FvLength`.
    pub const FV_LENGTH: usize = 0x20;
    /// Offset of `Signature`.
    pub const SIGNATURE: usize = 0x28;
    /// Offset of `HeaderLength`.
    pub const HEADER_LENGTH: usize = 0x30;
    /// Offset of `Checksum`: the header's 16-bit words sum to zero.
    pub const CHECKSUM: usize = 0x32;
    /// `EFI_FVH_SIGNATURE`.
    pub const SIGNATURE_VALUE: &[u8; 4] = b"_FVH";
    /// Up to and including the first BlockMap entry.
    pub const MIN_HEADER_LEN: usize = 0x48;
    /// gEfiSystemNvDataFvGuid fff12b8d-7696-4c8b-a985-2747075b4f50, in on-disk (mixed-endian)
    /// order: `FileSystemGuid` of the variable firmware volume.
    pub const SYSTEM_NV_DATA_FV_GUID: [u8; 16] = [
        0x8d, 0x2b, 0xf1, 0xff, 0x96, 0x76, 0x8b, 0x4c, 0xa9, 0x85, 0x27, 0x47, 0x07, 0x5b, 0x4f,
        0x50,
    ];
}

/// `VARIABLE_STORE_HEADER`, at the FV's HeaderLength: Signature GUID, Size u32 (header
/// included), Format u8, State u8, Reserved u16, Reserved1 u32.
pub mod store {
    /// `sizeof(VARIABLE_STORE_HEADER)`.
    pub const LEN: usize = 28;
    /// Offset of `Size`.
    pub const SIZE: usize = 16;
    /// Offset of `Format`.
    pub const FORMAT: usize = 20;
    /// Offset of `State`.
    pub const STATE: usize = 21;
    /// `VARIABLE_STORE_FORMATTED`.
    pub const FORMATTED: u8 = 0x5A;
    /// `VARIABLE_STORE_HEALTHY`.
    pub const HEALTHY: u8 = 0xFE;
    /// gEfiAuthenticatedVariableGuid aaf32c78-947b-439a-a180-2e144ec37792: `Signature` of the
    /// authenticated variable format (the 4M builds; time-based authenticated variables need it).
    pub const AUTHENTICATED_VARIABLE_GUID: [u8; 16] = [
        0x78, 0x2c, 0xf3, 0xaa, 0x7b, 0x94, 0x9a, 0x43, 0xa1, 0x80, 0x2e, 0x14, 0x4e, 0xc3, 0x77,
        0x92,
    ];
}

/// `AUTHENTICATED_VARIABLE_HEADER`, each 4-byte aligned: StartId u16, State u8, Reserved u8,
/// Attributes u32, MonotonicCount u64, TimeStamp EFI_TIME (16), PubKeyIndex u32, NameSize u32,
/// DataSize u32, VendorGuid (16); then the UTF-16 name (NameSize bytes with NUL) and the data
/// right after it (`GET_PAD_SIZE` pads to `ALIGNMENT` = 1 on x86), then padding to 4.
pub mod var {
    /// `sizeof(AUTHENTICATED_VARIABLE_HEADER)`.
    pub const HEADER_LEN: usize = 60;
    /// Offset of `State`.
    pub const STATE: usize = 2;
    /// Offset of `Attributes`.
    pub const ATTRIBUTES: usize = 4;
    /// Offset of `MonotonicCount`.
    pub const MONOTONIC_COUNT: usize = 8;
    /// Offset of `TimeStamp`.
    pub const TIMESTAMP: usize = 16;
    /// Size of `TimeStamp` (EFI_TIME).
    pub const TIMESTAMP_LEN: usize = 16;
    /// Offset of `PubKeyIndex`.
    pub const PUBKEY_INDEX: usize = 32;
    /// Offset of `NameSize`.
    pub const NAME_SIZE: usize = 36;
    /// Offset of `DataSize`.
    pub const DATA_SIZE: usize = 40;
    /// Offset of `VendorGuid`.
    pub const VENDOR_GUID: usize = 44;
    /// `VARIABLE_DATA`: StartId of every variable header.
    pub const START_ID: u16 = 0x55AA;
    /// `VAR_ADDED`: a live variable.
    pub const ADDED: u8 = 0x3F;
    /// `VAR_ADDED & VAR_IN_DELETED_TRANSITION`: being replaced (still live if no newer copy).
    pub const ADDED_IN_DELETED_TRANSITION: u8 = 0x3E;
    /// `HEADER_ALIGNMENT`.
    pub const ALIGN: usize = 4;
}

/// Erased flash: what follows the last variable.
pub const ERASED: u8 = 0xFF;

/// Offset of the first variable header from the `VARIABLE_STORE_HEADER`.
pub const FIRST_VARIABLE: usize = store::LEN.next_multiple_of(var::ALIGN);

/// The 16-bit sum of `header`'s little-endian words (an odd last byte as a low byte): zero for
/// a valid FV header, whose `Checksum` field makes it so.
pub fn fv_header_sum(header: &[u8]) -> u16 {
    header
        .chunks(2)
        .map(|w| u16::from_le_bytes([w[0], *w.get(1).unwrap_or(&0)]))
        .fold(0u16, u16::wrapping_add)
}
