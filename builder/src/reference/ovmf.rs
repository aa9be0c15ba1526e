//! The firmware volumes OVMF's SEC phase decompresses from the OVMF_CODE file (PI spec vol. 3:
//! firmware volume, FFS file and section formats), to check which PCR 0 events are the file's bytes.
//!
//! OVMF_CODE holds FVMAIN_COMPACT: one FFS file with a GUID-defined section compressed with LZMA
//! (edk2's LzmaCustomDecompress, ".lzma alone" format), whose content is a list of firmware-volume
//! image sections — PEIFV and DXEFV. SEC copies them to PcdOvmfPeiMemFvBase / PcdOvmfDxeMemFvBase
//! and PEI measures each as EV_EFI_PLATFORM_FIRMWARE_BLOB. DXEFV is measured as decompressed;
//! PEIFV is measured after the PEI modules ran in place from it, so its digest is not the file's.

use anyhow::{bail, Context, Result};
use std::io::Read;

/// `EFI_FIRMWARE_VOLUME_HEADER`: Signature "_FVH" at 40, FvLength (u64) at 32, HeaderLength (u16) at 48.
const FVH_SIGNATURE: &[u8; 4] = b"_FVH";
const FV_SIGNATURE_AT: usize = 40;
const FV_LENGTH_AT: usize = 32;
const FV_HEADER_LENGTH_AT: usize = 48;
/// `EFI_FFS_FILE_HEADER` is 24 bytes; its 24-bit Size at 20.
const FFS_HEADER_LEN: usize = 24;
const FFS_SIZE_AT: usize = 20;
/// A 24-bit size field of all ones: erased flash.
const ERASED_SIZE: usize = 0xFF_FFFF;
/// `EFI_COMMON_SECTION_HEADER`: 24-bit Size, Type.
const SECTION_HEADER_LEN: usize = 4;
const EFI_SECTION_GUID_DEFINED: u8 = 0x02;
const EFI_SECTION_FIRMWARE_VOLUME_IMAGE: u8 = 0x17;
/// `EFI_GUID_DEFINED_SECTION`: SectionDefinitionGuid at 4, DataOffset (u16) at 20.
const GUID_AT: usize = 4;
const DATA_OFFSET_AT: usize = 20;
/// LZMA_CUSTOM_DECOMPRESS_GUID EE4E5898-3914-4259-9D6E-DC7BD79403CF, in its little-endian byte form.
const LZMA_GUID: [u8; 16] = [
    0x98, 0x58, 0x4e, 0xee, 0x14, 0x39, 0x59, 0x42, 0x9d, 0x6e, 0xdc, 0x7b, 0xd7, 0x94, 0x03, 0xcf,
];

fn u24(b: &[u8], at: usize) -> Result<usize> {
    let s = b.get(at..at + 3).context("truncated size field")?;
    Ok(usize::from(s[0]) | usize::from(s[1]) << 8 | usize::from(s[2]) << 16)
}

fn u16_at(b: &[u8], at: usize) -> Result<usize> {
    let s = b.get(at..at + 2).context("truncated u16 field")?;
    Ok(usize::from(u16::from_le_bytes([s[0], s[1]])))
}

/// The volumes inside the LZMA-compressed section of the first volume's files, in order, each as its full FvLength bytes.
pub fn decompressed_volumes(code: &[u8]) -> Result<Vec<Vec<u8>>> {
    if code.get(FV_SIGNATURE_AT..FV_SIGNATURE_AT + 4) != Some(FVH_SIGNATURE) {
        bail!("no firmware volume header at the start of the OVMF_CODE file");
    }
    let compressed = ffs_files(code)?
        .into_iter()
        .flat_map(|file| sections(file).unwrap_or_default())
        .find(|(kind, s)| {
            *kind == EFI_SECTION_GUID_DEFINED && s.get(GUID_AT..GUID_AT + 16) == Some(&LZMA_GUID)
        })
        .context("the firmware volume has no LZMA-compressed section (not an OVMF_CODE build?)")?
        .1;
    let data = compressed
        .get(u16_at(compressed, DATA_OFFSET_AT)?..)
        .context("bad DataOffset")?;
    let stream = liblzma::stream::Stream::new_lzma_decoder(u64::MAX)
        .context("cannot create an LZMA decoder")?;
    let mut out = Vec::new();
    liblzma::read::XzDecoder::new_stream(data, stream)
        .read_to_end(&mut out)
        .context("cannot decompress FVMAIN_COMPACT")?;
    let mut volumes = Vec::new();
    for (kind, s) in sections(&out)? {
        if kind == EFI_SECTION_FIRMWARE_VOLUME_IMAGE {
            let fv = &s[SECTION_HEADER_LEN..];
            let len = fv
                .get(FV_LENGTH_AT..FV_LENGTH_AT + 8)
                .context("truncated volume header")?;
            let len = usize::try_from(u64::from_le_bytes(len.try_into()?))?;
            volumes.push(
                fv.get(..len)
                    .context("volume longer than its section")?
                    .to_vec(),
            );
        }
    }
    Ok(volumes)
}

/// The FFS files of the volume at the start of `fv` (8-byte aligned after the header; pad files
/// included), each as its content after the 24-byte header.
fn ffs_files(fv: &[u8]) -> Result<Vec<&[u8]>> {
    let fv_len = fv
        .get(FV_LENGTH_AT..FV_LENGTH_AT + 8)
        .context("truncated volume header")?;
    let fv_len = usize::try_from(u64::from_le_bytes(fv_len.try_into()?))?.min(fv.len());
    let mut at = u16_at(fv, FV_HEADER_LENGTH_AT)?.next_multiple_of(8);
    let mut files = Vec::new();
    while at + FFS_HEADER_LEN <= fv_len {
        let size = u24(fv, at + FFS_SIZE_AT)?;
        // 0xFFFFFF: erased space (or a large-file header, which OVMF's FVMAIN_COMPACT does not use).
        if size < FFS_HEADER_LEN || size == ERASED_SIZE || at + size > fv_len {
            break;
        }
        files.push(&fv[at + FFS_HEADER_LEN..at + size]);
        at = (at + size).next_multiple_of(8);
    }
    Ok(files)
}

/// The sections of a section stream (4-byte aligned), each as (type, bytes including its header).
fn sections(mut b: &[u8]) -> Result<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    while b.len() >= SECTION_HEADER_LEN {
        let size = u24(b, 0)?;
        if size < SECTION_HEADER_LEN || size > b.len() {
            break;
        }
        out.push((b[3], &b[..size]));
        b = &b[size.next_multiple_of(4).min(b.len())..];
    }
    Ok(out)
}
