//! PE/COFF measurements: what systemd-stub extends into PCR 11 for a UKI, and the
//! Authenticode digest (SHA-256, or any hash: one per PCR bank) that firmware extends into PCR 4
//! (and that signers embed).
//!
//! Everything here reads a built file and never writes one, so the same code can run on
//! the build host (prediction) and on a verifier (re-derivation from a published UKI).
//! Rules and vectors: `docs/measured-boot.md` §5 (PCR 11), §7 (Authenticode), §13 (vectors).

use std::borrow::Cow;

use goblin::pe::header::{CoffHeader, Header};
use goblin::pe::section_table::SectionTable;
use sha2::{Digest, Sha256};

/// A SHA-256 digest or PCR value.
pub type Sha256Digest = [u8; 32];

/// Errors of PE parsing and measurement.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeError {
    /// goblin rejected the DOS/COFF/optional header or the section table.
    #[error("not a valid PE/COFF image: {0}")]
    Parse(#[source] goblin::error::Error),
    /// A COFF object without an optional header is not a loadable image.
    #[error("PE file has no optional header (a COFF object, not an EFI image)")]
    NoOptionalHeader,
    /// A header field points outside the file (truncated or corrupt image).
    #[error("{what} (bytes {start:#x}..{end:#x}) lies outside the {len}-byte file: truncated or corrupt PE image")]
    OutOfBounds {
        /// Which structure was being read.
        what: String,
        /// First byte offset.
        start: u64,
        /// One past the last byte offset.
        end: u64,
        /// File length.
        len: usize,
    },
    /// edk2 refuses an image whose certificate table does not fit after the hashed bytes.
    #[error("certificate table size {cert_size} exceeds the {available} bytes after the headers and sections: corrupt signature directory")]
    CertificateTable {
        /// DataDirectory[SECURITY].Size.
        cert_size: u64,
        /// File length minus the bytes already hashed.
        available: u64,
    },
    /// SizeOfHeaders does not cover the header fields and section table.
    #[error("SizeOfHeaders {size_of_headers:#x} does not cover the PE headers and section table (which end at {needed:#x}): corrupt PE image")]
    HeadersTooSmall {
        /// Bytes the headers need.
        needed: u64,
        /// `SizeOfHeaders`.
        size_of_headers: u32,
    },
    /// A section reaches beyond `SizeOfImage`; firmware refuses to load such an image.
    #[error("section `{name}` (RVA {start:#x}..{end:#x}) extends beyond SizeOfImage {size_of_image:#x}: the firmware would not load this image")]
    SectionOutsideImage {
        /// Section name.
        name: String,
        /// VirtualAddress.
        start: u64,
        /// VirtualAddress + VirtualSize.
        end: u64,
        /// `SizeOfImage`.
        size_of_image: u32,
    },
    /// No `.sdmagic` marker.
    #[error("no `.sdmagic` section with a `{SDMAGIC_PREFIX}… ####` marker: not a systemd-stub (or a stub older than 250)")]
    NotSystemdStub,
    /// The stub version has no verified section table here.
    #[error("systemd-stub {version}: no verified section table for this version (supported: 252, 253); predicting PCR 11 with another version's table would give a wrong value")]
    UnsupportedStubVersion {
        /// Version string from `.sdmagic`.
        version: String,
    },
}

/// `IMAGE_DIRECTORY_ENTRY_SECURITY`: index of the certificate-table data directory.
pub const DIRECTORY_ENTRY_SECURITY: u32 = 4;
/// `IMAGE_DIRECTORY_ENTRY_DEBUG`.
pub const DIRECTORY_ENTRY_DEBUG: u32 = 6;
/// Size of one `IMAGE_DATA_DIRECTORY` entry (VirtualAddress u32, Size u32).
pub const DATA_DIRECTORY_ENTRY_LEN: usize = 8;
/// Size of one `IMAGE_SECTION_HEADER`.
pub const SECTION_HEADER_LEN: usize = 40;
/// Length of the section `Name` field.
pub const SECTION_NAME_LEN: usize = 8;
/// `"PE\0\0"` signature length that precedes the COFF header.
pub const PE_SIGNATURE_LEN: usize = 4;
/// `IMAGE_FILE_HEADER` (COFF header) length.
pub const COFF_HEADER_LEN: usize = 20;
/// `IMAGE_NT_OPTIONAL_HDR32_MAGIC`.
pub const PE32_MAGIC: u16 = 0x10b;
/// `IMAGE_NT_OPTIONAL_HDR64_MAGIC`.
pub const PE32_PLUS_MAGIC: u16 = 0x20b;

/// Optional-header field offsets (identical for PE32 and PE32+ up to `CheckSum`).
pub mod opt {
    /// `SizeOfCode`.
    pub const SIZE_OF_CODE: usize = 4;
    /// `SizeOfInitializedData`.
    pub const SIZE_OF_INITIALIZED_DATA: usize = 8;
    /// `SizeOfImage`.
    pub const SIZE_OF_IMAGE: usize = 56;
    /// `CheckSum`.
    pub const CHECKSUM: usize = 64;
    /// `DataDirectory[0]` in a PE32 optional header.
    pub const DATA_DIRECTORY_PE32: usize = 96;
    /// `DataDirectory[0]` in a PE32+ optional header.
    pub const DATA_DIRECTORY_PE32_PLUS: usize = 112;
}

/// COFF header field offsets, relative to the COFF header (after `"PE\0\0"`).
pub mod coff {
    /// `NumberOfSections`.
    pub const NUMBER_OF_SECTIONS: usize = 2;
    /// `PointerToSymbolTable`.
    pub const POINTER_TO_SYMBOL_TABLE: usize = 8;
    /// `NumberOfSymbols`.
    pub const NUMBER_OF_SYMBOLS: usize = 12;
}

/// `IMAGE_SECTION_HEADER` field offsets.
pub mod sect {
    /// `VirtualSize` (`Misc`).
    pub const VIRTUAL_SIZE: usize = 8;
    /// `VirtualAddress`.
    pub const VIRTUAL_ADDRESS: usize = 12;
    /// `SizeOfRawData`.
    pub const SIZE_OF_RAW_DATA: usize = 16;
    /// `PointerToRawData`.
    pub const POINTER_TO_RAW_DATA: usize = 20;
    /// `Characteristics`.
    pub const CHARACTERISTICS: usize = 36;
}

/// One section header, with the raw 8-byte name kept because systemd-stub compares raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionHeader {
    /// Name with trailing NULs removed (lossy UTF-8, for display).
    pub name: String,
    /// The `Name` field exactly as stored.
    pub raw_name: [u8; SECTION_NAME_LEN],
    /// `VirtualSize`: bytes of the section in memory.
    pub virtual_size: u32,
    /// `VirtualAddress` (RVA).
    pub virtual_address: u32,
    /// `SizeOfRawData`: bytes of the section in the file.
    pub size_of_raw_data: u32,
    /// `PointerToRawData`: file offset.
    pub pointer_to_raw_data: u32,
    /// `Characteristics` flags.
    pub characteristics: u32,
}

impl SectionHeader {
    fn from_goblin(s: &SectionTable) -> Self {
        let trimmed_len = s
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(SECTION_NAME_LEN);
        Self {
            name: String::from_utf8_lossy(&s.name[..trimmed_len]).into_owned(),
            raw_name: s.name,
            virtual_size: s.virtual_size,
            virtual_address: s.virtual_address,
            size_of_raw_data: s.size_of_raw_data,
            pointer_to_raw_data: s.pointer_to_raw_data,
            characteristics: s.characteristics,
        }
    }

    /// One past the last RVA the loader may touch for this section.
    pub fn memory_end(&self) -> u64 {
        u64::from(self.virtual_address) + u64::from(self.virtual_size.max(self.size_of_raw_data))
    }

    /// One past the last file byte of the raw data.
    pub fn file_end(&self) -> u64 {
        u64::from(self.pointer_to_raw_data) + u64::from(self.size_of_raw_data)
    }
}

/// The header fields the measurement and the UKI writer need, with their file offsets.
#[derive(Debug, Clone)]
pub struct PeHeaders {
    /// `e_lfanew`: file offset of `"PE\0\0"`.
    pub pe_offset: usize,
    /// File offset of the COFF header.
    pub coff_offset: usize,
    /// File offset of the optional header.
    pub optional_header_offset: usize,
    /// File offset of the section table.
    pub section_table_offset: usize,
    /// `Machine`.
    pub machine: u16,
    /// PE32+ (`0x20b`) rather than PE32.
    pub pe32_plus: bool,
    /// `MajorImageVersion` (the Linux EFI stub uses it as its feature level).
    pub major_image_version: u16,
    /// `Subsystem` (10 = EFI application → PCR 4; 11/12 = drivers → PCR 2).
    pub subsystem: u16,
    /// `SectionAlignment`.
    pub section_alignment: u32,
    /// `FileAlignment`.
    pub file_alignment: u32,
    /// `SizeOfImage`.
    pub size_of_image: u32,
    /// `SizeOfHeaders`.
    pub size_of_headers: u32,
    /// `CheckSum` as stored.
    pub check_sum: u32,
    /// `SizeOfCode`.
    pub size_of_code: u32,
    /// `SizeOfInitializedData`.
    pub size_of_initialized_data: u32,
    /// `NumberOfRvaAndSizes`.
    pub number_of_rva_and_sizes: u32,
    /// `PointerToSymbolTable` (COFF symbols; 0 in a stripped image).
    pub pointer_to_symbol_table: u32,
    /// The section table in file order.
    pub sections: Vec<SectionHeader>,
}

impl PeHeaders {
    /// Parse the DOS, COFF and optional headers and the section table (nothing else: import,
    /// relocation or resource tables play no part in a measurement).
    pub fn parse(pe: &[u8]) -> Result<Self, PeError> {
        let header = Header::parse(pe).map_err(PeError::Parse)?;
        let optional = header.optional_header.ok_or(PeError::NoOptionalHeader)?;
        let pe_offset = header.dos_header.pe_pointer as usize;
        let coff_offset = pe_offset + PE_SIGNATURE_LEN;
        let optional_header_offset = coff_offset + COFF_HEADER_LEN;
        let section_table_offset =
            optional_header_offset + usize::from(header.coff_header.size_of_optional_header);
        let sections = parse_section_table(pe, &header.coff_header, section_table_offset)?;
        let w = &optional.windows_fields;
        let headers = Self {
            pe_offset,
            coff_offset,
            optional_header_offset,
            section_table_offset,
            machine: header.coff_header.machine,
            pe32_plus: optional.standard_fields.magic == PE32_PLUS_MAGIC,
            major_image_version: w.major_image_version,
            subsystem: w.subsystem,
            section_alignment: w.section_alignment,
            file_alignment: w.file_alignment,
            size_of_image: w.size_of_image,
            size_of_headers: w.size_of_headers,
            check_sum: w.check_sum,
            size_of_code: optional.standard_fields.size_of_code as u32,
            size_of_initialized_data: optional.standard_fields.size_of_initialized_data as u32,
            number_of_rva_and_sizes: w.number_of_rva_and_sizes,
            pointer_to_symbol_table: header.coff_header.pointer_to_symbol_table,
            sections,
        };
        headers.check_header_bounds(pe.len())?;
        Ok(headers)
    }

    /// File offset of the `CheckSum` field.
    pub fn checksum_offset(&self) -> usize {
        self.optional_header_offset + opt::CHECKSUM
    }

    /// File offset of `DataDirectory[index]`, if the header declares that many entries.
    pub fn data_directory_offset(&self, index: u32) -> Option<usize> {
        if index >= self.number_of_rva_and_sizes {
            return None;
        }
        let base = if self.pe32_plus {
            opt::DATA_DIRECTORY_PE32_PLUS
        } else {
            opt::DATA_DIRECTORY_PE32
        };
        Some(self.optional_header_offset + base + index as usize * DATA_DIRECTORY_ENTRY_LEN)
    }

    /// `DataDirectory[index]` as (VirtualAddress, Size); (0, 0) when absent.
    pub fn data_directory(&self, pe: &[u8], index: u32) -> (u32, u32) {
        match self.data_directory_offset(index) {
            Some(off) => (read_u32(pe, off), read_u32(pe, off + 4)),
            None => (0, 0),
        }
    }

    /// The certificate table (file offset, size); size 0 for an unsigned image.
    pub fn certificate_table(&self, pe: &[u8]) -> (u32, u32) {
        self.data_directory(pe, DIRECTORY_ENTRY_SECURITY)
    }

    /// One past the section table.
    pub fn section_table_end(&self) -> usize {
        self.section_table_offset + self.sections.len() * SECTION_HEADER_LEN
    }

    fn check_header_bounds(&self, len: usize) -> Result<(), PeError> {
        // The checksum, the data directories the hash skips and the section table must all be
        // inside SizeOfHeaders, which must be inside the file; edk2 reads them from there.
        let headers_end = u64::from(self.size_of_headers);
        let mut needed = (self.checksum_offset() + 4) as u64;
        if let Some(off) = self.data_directory_offset(DIRECTORY_ENTRY_SECURITY) {
            needed = needed.max((off + DATA_DIRECTORY_ENTRY_LEN) as u64);
        }
        needed = needed.max(self.section_table_end() as u64);
        check_range(len, "PE headers (SizeOfHeaders)", 0, headers_end)?;
        if needed > headers_end {
            return Err(PeError::HeadersTooSmall {
                needed,
                size_of_headers: self.size_of_headers,
            });
        }
        Ok(())
    }
}

fn parse_section_table(
    pe: &[u8],
    coff_header: &CoffHeader,
    offset: usize,
) -> Result<Vec<SectionHeader>, PeError> {
    let table_len = usize::from(coff_header.number_of_sections) * SECTION_HEADER_LEN;
    check_range(
        pe.len(),
        "section table",
        offset as u64,
        (offset + table_len) as u64,
    )?;
    let mut cursor = offset;
    let sections = coff_header
        .sections(pe, &mut cursor)
        .map_err(PeError::Parse)?;
    Ok(sections.iter().map(SectionHeader::from_goblin).collect())
}

/// Little-endian u32 at `off`; callers have bounds-checked the header area.
fn read_u32(bytes: &[u8], off: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[off..off + 4]);
    u32::from_le_bytes(b)
}

fn check_range(len: usize, what: &str, start: u64, end: u64) -> Result<(), PeError> {
    if start <= end && end <= len as u64 {
        Ok(())
    } else {
        Err(PeError::OutOfBounds {
            what: what.to_string(),
            start,
            end,
            len,
        })
    }
}

fn slice<'a>(pe: &'a [u8], what: &str, start: u64, len: u64) -> Result<&'a [u8], PeError> {
    let end = start.saturating_add(len);
    check_range(pe.len(), what, start, end)?;
    Ok(&pe[start as usize..end as usize])
}

/// Section table of a PE file, in file order.
pub fn sections(pe: &[u8]) -> Result<Vec<SectionHeader>, PeError> {
    Ok(PeHeaders::parse(pe)?.sections)
}

/// The section as the firmware's PE loader leaves it in memory: `VirtualSize` bytes, i.e.
/// the raw data truncated to `VirtualSize`, or zero-extended when `VirtualSize` exceeds
/// `SizeOfRawData` (edk2 `PeCoffLoaderLoadImage` copies min(VirtualSize, SizeOfRawData) and
/// zero-fills the rest). This is the buffer systemd-stub hashes.
pub fn section_as_loaded<'a>(
    pe: &'a [u8],
    section: &SectionHeader,
) -> Result<Cow<'a, [u8]>, PeError> {
    let copied = section.virtual_size.min(section.size_of_raw_data);
    let what = format!("raw data of section `{}`", section.name);
    let raw = slice(
        pe,
        &what,
        u64::from(section.pointer_to_raw_data),
        u64::from(copied),
    )?;
    if copied == section.virtual_size {
        return Ok(Cow::Borrowed(raw));
    }
    let mut loaded = raw.to_vec();
    loaded.resize(section.virtual_size as usize, 0);
    Ok(Cow::Owned(loaded))
}

// ---------------------------------------------------------------------------------------------
// systemd-stub identification and section tables

/// Start of the `.sdmagic` marker systemd-stub carries (`src/boot/efi/stub.c`).
pub const SDMAGIC_PREFIX: &str = "#### LoaderInfo: systemd-stub ";
/// End of the `.sdmagic` marker.
pub const SDMAGIC_SUFFIX: &str = " ####";
/// Name of the marker section.
pub const SDMAGIC_SECTION: &str = ".sdmagic";

/// Sections systemd-stub 252 knows, in its `UnifiedSection` enum order (`.pcrsig` is known,
/// i.e. may be present, but never measured).
pub const STUB_252_KNOWN_SECTIONS: &[&str] = &[
    ".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrsig", ".pcrpkey",
];

/// The order in which systemd-stub 252 measures sections into PCR 11: its compiled enum order
/// (not file order), minus `.pcrsig`. Checked against `systemd-measure calculate` 252 with all
/// seven sections and against a real boot (docs/measured-boot.md §12). No `.uname`/`.sbat` (254),
/// `.ucode` or `.profile` (later).
pub const STUB_252_SECTION_ORDER: &[&str] = &[
    ".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey",
];

/// Section tables of one systemd-stub version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StubSections {
    /// Names the stub looks up (a UKI section with another name is ignored by the stub).
    pub known: &'static [&'static str],
    /// Names in PCR 11 measurement order.
    pub measured_order: &'static [&'static str],
}

/// The systemd-stub version from the `.sdmagic` marker, e.g. `252.39-1~deb12u2`.
pub fn stub_version(pe: &[u8]) -> Result<String, PeError> {
    let headers = PeHeaders::parse(pe)?;
    let section = headers
        .sections
        .iter()
        .find(|s| s.name == SDMAGIC_SECTION)
        .ok_or(PeError::NotSystemdStub)?;
    let bytes = section_as_loaded(pe, section)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| PeError::NotSystemdStub)?
        .trim_end_matches('\0');
    text.strip_prefix(SDMAGIC_PREFIX)
        .and_then(|rest| rest.strip_suffix(SDMAGIC_SUFFIX))
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .ok_or(PeError::NotSystemdStub)
}

/// Major version number of a stub version string (`"252.39-1~deb12u2"` → 252).
pub fn stub_major_version(version: &str) -> Option<u32> {
    let digits: String = version.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Section tables for a stub version. Only versions whose table was verified against
/// `systemd-measure` of the same release are accepted: 254 added `.uname`/`.sbat`, 256 `.ucode`,
/// 257 `.profile` and multi-profile UKIs, and the lookup rules changed (see
/// [`stub_252_find_section`]), so guessing would silently predict wrong PCRs.
pub fn stub_sections(version: &str) -> Result<StubSections, PeError> {
    match stub_major_version(version) {
        Some(252..=253) => Ok(StubSections {
            known: STUB_252_KNOWN_SECTIONS,
            measured_order: STUB_252_SECTION_ORDER,
        }),
        _ => Err(PeError::UnsupportedStubVersion {
            version: version.to_string(),
        }),
    }
}

/// The header systemd-stub 252 uses for `name`: it compares the first `strlen(name)` bytes of
/// every header's Name (so `.linuxfoo` also matches `.linux`) and a later match overwrites an
/// earlier one (`locate_sections` in `src/boot/efi/pe.c`).
pub fn stub_252_find_section<'a>(
    sections: &'a [SectionHeader],
    name: &str,
) -> Option<&'a SectionHeader> {
    sections
        .iter()
        .rev()
        .find(|s| s.raw_name.starts_with(name.as_bytes()))
}

// ---------------------------------------------------------------------------------------------
// PCR 11

/// The two EV_IPL digests systemd-stub extends into PCR 11 for one section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionMeasurement {
    /// Section name, e.g. `.linux`.
    pub name: String,
    /// H(name ‖ NUL).
    pub name_digest: Sha256Digest,
    /// H(section as loaded, `VirtualSize` bytes).
    pub content_digest: Sha256Digest,
}

/// SHA-256 of arbitrary bytes.
pub fn sha256(data: &[u8]) -> Sha256Digest {
    Sha256::digest(data).into()
}

/// PCR extend: `pcr = H(pcr ‖ digest)`.
pub fn extend(pcr: &mut Sha256Digest, digest: &Sha256Digest) {
    let mut h = Sha256::new();
    h.update(*pcr);
    h.update(digest);
    *pcr = h.finalize().into();
}

/// Digest of a section name event: the stub hashes the ASCII name including its NUL.
pub fn section_name_digest(name: &str) -> Sha256Digest {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([0u8]);
    h.finalize().into()
}

/// Digest systemd-pcrphase extends for a boot-phase word (`enter-initrd`, …): no NUL.
pub fn pcrphase_digest(word: &str) -> Sha256Digest {
    sha256(word.as_bytes())
}

/// The PCR 11 events systemd-stub 252 produces for `uki`, in measurement order.
///
/// `stub_order` is the stub's measurement order (e.g. [`STUB_252_SECTION_ORDER`], or
/// [`stub_sections`]`(…).measured_order`). Sections are found with the 252 lookup rule
/// ([`stub_252_find_section`]); a section with `VirtualSize` 0 counts as absent, as in the stub.
pub fn pcr11_measurements(
    uki: &[u8],
    stub_order: &[&str],
) -> Result<Vec<SectionMeasurement>, PeError> {
    let headers = PeHeaders::parse(uki)?;
    let mut out = Vec::new();
    for &name in stub_order {
        let Some(section) = stub_252_find_section(&headers.sections, name) else {
            continue;
        };
        if section.virtual_size == 0 {
            continue;
        }
        check_inside_image(section, headers.size_of_image)?;
        let loaded = section_as_loaded(uki, section)?;
        out.push(SectionMeasurement {
            name: name.to_string(),
            name_digest: section_name_digest(name),
            content_digest: sha256(&loaded),
        });
    }
    Ok(out)
}

/// The loader maps `VirtualSize` bytes at `VirtualAddress` inside `SizeOfImage`; checking this
/// also bounds the zero-extension in [`section_as_loaded`] for hostile inputs.
fn check_inside_image(section: &SectionHeader, size_of_image: u32) -> Result<(), PeError> {
    let start = u64::from(section.virtual_address);
    let end = start + u64::from(section.virtual_size);
    if end > u64::from(size_of_image) {
        return Err(PeError::SectionOutsideImage {
            name: section.name.clone(),
            start,
            end,
            size_of_image,
        });
    }
    Ok(())
}

/// PCR 11 after the stub's events, starting from the all-zero reset value.
pub fn pcr11_value(measurements: &[SectionMeasurement]) -> Sha256Digest {
    let mut pcr = [0u8; 32];
    for m in measurements {
        extend(&mut pcr, &m.name_digest);
        extend(&mut pcr, &m.content_digest);
    }
    pcr
}

// ---------------------------------------------------------------------------------------------
// Authenticode

/// How the bytes after the last section are hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TailPadding {
    /// edk2 `MeasureBootPeCoff.c`: the tail as-is.
    None,
    /// Microsoft Authenticode spec / sbsign / osslsigncode / goblin: zero-pad to 8 bytes.
    ToEightBytes,
}

/// Authenticode SHA-256 as edk2 computes it for the PCR 4 (or 2) EV_EFI_BOOT_SERVICES_*
/// event: headers minus `CheckSum` and the certificate directory entry, sections sorted by
/// `PointerToRawData`, then `FileSize − CertTableSize − SUM` trailing bytes from offset SUM
/// **without** 8-byte padding (docs/measured-boot.md §7). Equal to [`authenticode_sha256_signer`]
/// whenever the file length (minus the certificate table) is a multiple of 8, e.g. after signing.
pub fn authenticode_sha256_firmware(pe: &[u8]) -> Result<Sha256Digest, PeError> {
    authenticode_with(Sha256::new(), pe, TailPadding::None).map(Into::into)
}

/// Authenticode SHA-256 as signers compute it (sbsign, pesign, osslsigncode; goblin's
/// `authenticode_ranges`): like [`authenticode_sha256_firmware`] plus zero padding of the
/// hashed data to a multiple of 8 bytes of file length. This is the digest embedded in a
/// signature over this file.
pub fn authenticode_sha256_signer(pe: &[u8]) -> Result<Sha256Digest, PeError> {
    authenticode_with(Sha256::new(), pe, TailPadding::ToEightBytes).map(Into::into)
}

/// [`authenticode_sha256_firmware`] with any hash: the digest the firmware extends into the bank
/// of `D` (edk2 hashes the same ranges once per active bank, `HashPeImageByType`). E.g.
/// `authenticode_firmware::<sha2::Sha384>(pe)` for the SHA-384 bank.
pub fn authenticode_firmware<D: Digest>(pe: &[u8]) -> Result<Vec<u8>, PeError> {
    authenticode_with(D::new(), pe, TailPadding::None).map(|d| d.to_vec())
}

/// [`authenticode_sha256_signer`] with any hash (the digest a signature with that digest
/// algorithm embeds, e.g. `osslsigncode sign -h sha384`).
pub fn authenticode_signer<D: Digest>(pe: &[u8]) -> Result<Vec<u8>, PeError> {
    authenticode_with(D::new(), pe, TailPadding::ToEightBytes).map(|d| d.to_vec())
}

fn authenticode_with<D: Digest>(
    mut hasher: D,
    pe: &[u8],
    padding: TailPadding,
) -> Result<sha2::digest::Output<D>, PeError> {
    let headers = PeHeaders::parse(pe)?;
    hash_headers(pe, &headers, &mut hasher);
    let mut sum = u64::from(headers.size_of_headers);
    for section in sections_by_file_offset(&headers.sections) {
        let what = format!("raw data of section `{}`", section.name);
        let data = slice(
            pe,
            &what,
            u64::from(section.pointer_to_raw_data),
            u64::from(section.size_of_raw_data),
        )?;
        hasher.update(data);
        sum += u64::from(section.size_of_raw_data);
    }
    let len = pe.len() as u64;
    if len > sum {
        let cert_size = u64::from(headers.certificate_table(pe).1);
        let available = len - sum;
        if cert_size > available {
            return Err(PeError::CertificateTable {
                cert_size,
                available,
            });
        }
        hasher.update(slice(pe, "trailing data", sum, available - cert_size)?);
    }
    if padding == TailPadding::ToEightBytes {
        const ALIGN: usize = 8;
        let pad = (ALIGN - pe.len() % ALIGN) % ALIGN;
        hasher.update(&[0u8; ALIGN][..pad]);
    }
    Ok(hasher.finalize())
}

/// Hash `[0, SizeOfHeaders)` minus `CheckSum` and, when present, the SECURITY directory entry.
/// Bounds were checked by [`PeHeaders::parse`].
fn hash_headers<D: Digest>(pe: &[u8], headers: &PeHeaders, hasher: &mut D) {
    let checksum = headers.checksum_offset();
    let end = headers.size_of_headers as usize;
    hasher.update(&pe[..checksum]);
    match headers.data_directory_offset(DIRECTORY_ENTRY_SECURITY) {
        Some(cert_dir) => {
            hasher.update(&pe[checksum + 4..cert_dir]);
            hasher.update(&pe[cert_dir + DATA_DIRECTORY_ENTRY_LEN..end]);
        }
        None => hasher.update(&pe[checksum + 4..end]),
    }
}

/// Sections with raw data, stably sorted by `PointerToRawData` (edk2 uses an insertion sort).
fn sections_by_file_offset(sections: &[SectionHeader]) -> Vec<&SectionHeader> {
    let mut sorted: Vec<&SectionHeader> = sections
        .iter()
        .filter(|s| s.size_of_raw_data != 0)
        .collect();
    sorted.sort_by_key(|s| s.pointer_to_raw_data);
    sorted
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::process::Command;

    fn fixture(rel: &str) -> PathBuf {
        let root = std::env::var_os("CVM_FIXTURES")
            .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../target/fixtures").into());
        PathBuf::from(root).join(rel)
    }

    const STUB: &str = "systemd-boot-efi/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
    const KERNEL_6_1: &str = "linux-image-6.1.0-56-amd64/boot/vmlinuz-6.1.0-56-amd64";
    const KERNEL_6_12: &str = "linux-image-6.12.117+deb12-amd64/boot/vmlinuz-6.12.117+deb12-amd64";

    fn read(rel: &str) -> Vec<u8> {
        let p = fixture(rel);
        std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {} unreadable: {e}", p.display()))
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cvm-pe-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn run(program: &str, args: &[&str]) -> std::process::Output {
        Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("reference tool `{program}` could not run ({e}); install it (Debian: binutils, sbsigntool, osslsigncode, openssl, systemd)"))
    }

    fn hexd(d: &Sha256Digest) -> String {
        hex::encode(d)
    }

    // --- published vectors (docs/measured-boot.md §13) ---

    #[test]
    fn section_name_digests_match_published_vectors() {
        let vectors = [
            (
                ".linux",
                "0da293e37ad5511c59be47993769aacb91b243f7d010288e118dc90e95aaef5a",
            ),
            (
                ".osrel",
                "3fb9e4e3cc810d4326b5c13cef18aee1f9df8c5f4f7f5b96665724fa3b846e08",
            ),
            (
                ".cmdline",
                "461203a89f23e36c3a4dc817f905b00484d2cf7e7d9376f13df91c41d84abe46",
            ),
            (
                ".initrd",
                "15ee37e75f1e8d42080e91fdbbd2560780918c81fe3687ae6d15c472bbdaac75",
            ),
            (
                ".ucode",
                "454c046a0434209925846a1b8a84a234c432ea7ddf86a1f5efeccfea12d334ed",
            ),
            (
                ".splash",
                "f62e27c34850983eb70c12fd516c2c427fb74569485bfb12dc3038af5ef48512",
            ),
            (
                ".dtb",
                "7402eb30776ab6e0e338239fadcba975e7b18ff81c33b716608fb2bcf317aa13",
            ),
            (
                ".uname",
                "da7a6d941caa9d28b8a3665c4865c143db8f99400ac88d883370ae3021636c30",
            ),
            (
                ".sbat",
                "ff552fd255be18a3d61c0da88976fc71559d13aad12d1dfe1708cf950cc4b74c",
            ),
            (
                ".pcrpkey",
                "92b1351f7279fc885c24e3409e23fed3f84bdef4bb90beb618acd145763a293f",
            ),
            (
                ".profile",
                "1a8d1935b530a17e0eec1f60d916e6c20e140534f85152cd6262ff885233fabb",
            ),
        ];
        for (name, want) in vectors {
            assert_eq!(hexd(&section_name_digest(name)), want, "{name}");
        }
    }

    #[test]
    fn phase_digests_match_published_vectors() {
        let vectors = [
            (
                "enter-initrd",
                "51e6b92f405d1f98d96e3de343d61d420ad6923b25de21d766f9298192f14fed",
            ),
            (
                "leave-initrd",
                "3be261aff7db92bf507eae947f4003ffa2bcad0bffe3524601d62d0bc8be7135",
            ),
            (
                "sysinit",
                "730bb5a583ba880c277e656d2dc8aba1a314a11b14d25b05153d2bab82567a48",
            ),
            (
                "ready",
                "b24d6d33736ecd5604a4b17bc9c6481039fac362bb7df044ef1c10a2bfd21db6",
            ),
        ];
        for (word, want) in vectors {
            assert_eq!(hexd(&pcrphase_digest(word)), want, "{word}");
        }
    }

    #[test]
    fn separator_vectors() {
        let sep = sha256(&[0u8; 4]);
        assert_eq!(
            hexd(&sep),
            "df3f619804a92fdb4057192dc43dd748ea778adc52bc498ce80524c014b81119"
        );
        let mut pcr = [0u8; 32];
        extend(&mut pcr, &sep);
        assert_eq!(
            hexd(&pcr),
            "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969"
        );
    }

    #[test]
    fn extend_matches_constellation_pcr4_vector() {
        // action "Calling EFI Application from Boot Option", separator, 32×00, 32×01.
        let mut pcr = [0u8; 32];
        extend(
            &mut pcr,
            &sha256(b"Calling EFI Application from Boot Option"),
        );
        extend(&mut pcr, &sha256(&[0u8; 4]));
        extend(&mut pcr, &[0u8; 32]);
        extend(&mut pcr, &[1u8; 32]);
        assert_eq!(
            hexd(&pcr),
            "22116dee861aa6b44242ac469eab24cead344d52c77131f54ac1cac9d6a2408e"
        );
    }

    // --- stub identification ---

    #[test]
    fn reads_debian_stub_version() {
        let stub = read(STUB);
        let version = stub_version(&stub).unwrap();
        assert_eq!(version, "252.39-1~deb12u2");
        assert_eq!(stub_major_version(&version), Some(252));
        assert_eq!(
            stub_sections(&version).unwrap().measured_order,
            STUB_252_SECTION_ORDER
        );
    }

    #[test]
    fn stub_binary_lists_section_names_in_enum_order() {
        // The stub's name table is emitted in enum order; this ties STUB_252_KNOWN_SECTIONS to
        // the binary rather than to memory. The measurement order itself is checked against
        // systemd-measure in `pcr11_of_objcopy_uki_matches_systemd_measure`.
        let stub = read(STUB);
        let mut last = 0;
        for name in STUB_252_KNOWN_SECTIONS {
            let needle = [b"\0", name.as_bytes(), b"\0"].concat();
            let pos = stub
                .windows(needle.len())
                .position(|w| w == needle.as_slice())
                .unwrap_or_else(|| panic!("{name} not in the stub"));
            assert!(pos > last, "{name} out of order");
            last = pos;
        }
    }

    #[test]
    fn unsupported_stub_versions_are_refused() {
        assert!(matches!(
            stub_sections("257.1"),
            Err(PeError::UnsupportedStubVersion { .. })
        ));
        assert!(matches!(
            stub_sections("garbage"),
            Err(PeError::UnsupportedStubVersion { .. })
        ));
    }

    #[test]
    fn kernel_is_not_a_stub() {
        let kernel = read(KERNEL_6_1);
        assert!(matches!(
            stub_version(&kernel),
            Err(PeError::NotSystemdStub)
        ));
    }

    #[test]
    fn stub_252_lookup_is_prefix_and_last_wins() {
        let mk = |name: &[u8], va: u32| {
            let mut raw = [0u8; 8];
            raw[..name.len()].copy_from_slice(name);
            SectionHeader {
                name: String::from_utf8_lossy(name).into_owned(),
                raw_name: raw,
                virtual_size: 1,
                virtual_address: va,
                size_of_raw_data: 0,
                pointer_to_raw_data: 0,
                characteristics: 0,
            }
        };
        let table = [mk(b".linux", 1), mk(b".linuxxx", 2), mk(b".initrd", 3)];
        assert_eq!(
            stub_252_find_section(&table, ".linux")
                .unwrap()
                .virtual_address,
            2
        );
        assert!(stub_252_find_section(&table, ".osrel").is_none());
    }

    // --- loaded view ---

    #[test]
    fn loaded_section_is_truncated_or_zero_extended() {
        let stub = read(STUB);
        let headers = PeHeaders::parse(&stub).unwrap();
        let mut text = headers
            .sections
            .iter()
            .find(|s| s.name == ".text")
            .unwrap()
            .clone();
        // .text: VirtualSize 0xbff0 < SizeOfRawData 0xc000 → truncated.
        assert_eq!((text.virtual_size, text.size_of_raw_data), (0xbff0, 0xc000));
        let loaded = section_as_loaded(&stub, &text).unwrap();
        assert_eq!(&loaded[..], &stub[0x400..0x400 + 0xbff0]);
        text.virtual_size = 0xc010;
        let loaded = section_as_loaded(&stub, &text).unwrap();
        assert_eq!(loaded.len(), 0xc010);
        assert_eq!(&loaded[..0xc000], &stub[0x400..0x400 + 0xc000]);
        assert!(loaded[0xc000..].iter().all(|&b| b == 0));
    }

    // --- Authenticode against sbsign/osslsigncode ---

    /// Sign `unsigned` with a throwaway key (sbsign) and return (signed bytes, the digest
    /// osslsigncode recomputes from the signed file, the digest embedded by sbsign).
    fn sign_and_read_digests(dir: &std::path::Path, unsigned: &[u8]) -> (Vec<u8>, String, String) {
        let key = dir.join("key.pem");
        let cert = dir.join("cert.pem");
        let input = dir.join("in.efi");
        let signed = dir.join("signed.efi");
        std::fs::write(&input, unsigned).unwrap();
        let out = run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=cvm-test",
                "-days",
                "1",
                "-keyout",
                key.to_str().unwrap(),
                "-out",
                cert.to_str().unwrap(),
            ],
        );
        assert!(
            out.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = run(
            "sbsign",
            &[
                "--key",
                key.to_str().unwrap(),
                "--cert",
                cert.to_str().unwrap(),
                "--output",
                signed.to_str().unwrap(),
                input.to_str().unwrap(),
            ],
        );
        assert!(
            out.status.success(),
            "sbsign: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // verify fails on the self-signed chain but still prints both digests.
        let out = run("osslsigncode", &["verify", "-in", signed.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let field = |label: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(label))
                .map(|v| v.trim().trim_start_matches(':').trim().to_ascii_lowercase())
                .unwrap_or_else(|| panic!("osslsigncode printed no `{label}`:\n{text}"))
        };
        let calculated = field("Calculated message digest");
        let current = field("Current message digest");
        (std::fs::read(&signed).unwrap(), calculated, current)
    }

    #[test]
    fn stub_authenticode_matches_sbsign_and_osslsigncode() {
        let stub = read(STUB);
        assert_eq!(stub.len(), 83_297, "fixture changed");
        let dir = scratch_dir("stub-auth");
        let (signed, calculated, embedded) = sign_and_read_digests(&dir, &stub);
        assert_eq!(calculated, embedded);
        let signer = hexd(&authenticode_sha256_signer(&stub).unwrap());
        let firmware = hexd(&authenticode_sha256_firmware(&stub).unwrap());
        assert_eq!(signer, embedded, "signer-style digest of the unsigned stub");
        assert!(signer.starts_with("32cab00c"), "{signer}");
        // 83,297 is not a multiple of 8: firmware hashes the unpadded tail.
        assert!(firmware.starts_with("28fd6b9a"), "{firmware}");
        assert_ne!(firmware, signer);
        // After signing (file padded to 8 before the certificate) both agree.
        assert_eq!(
            hexd(&authenticode_sha256_firmware(&signed).unwrap()),
            embedded
        );
        assert_eq!(
            hexd(&authenticode_sha256_signer(&signed).unwrap()),
            embedded
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn signer_digest_equals_goblin_authenticode_ranges() {
        for rel in [STUB, KERNEL_6_1] {
            let bytes = read(rel);
            let pe = goblin::pe::PE::parse(&bytes).unwrap();
            let mut h = Sha256::new();
            for range in pe.authenticode_ranges() {
                h.update(range);
            }
            let goblin: Sha256Digest = h.finalize().into();
            assert_eq!(authenticode_sha256_signer(&bytes).unwrap(), goblin, "{rel}");
        }
    }

    #[test]
    fn signed_kernel_digest_matches_osslsigncode() {
        // Debian's vmlinuz is signed: exercises the certificate-table exclusion.
        let kernel = read(KERNEL_6_12);
        let headers = PeHeaders::parse(&kernel).unwrap();
        assert_ne!(
            headers.certificate_table(&kernel).1,
            0,
            "expected a signed kernel"
        );
        let path = fixture(KERNEL_6_12);
        let out = run("osslsigncode", &["verify", "-in", path.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&out.stdout);
        let calculated = text
            .lines()
            .find_map(|l| l.strip_prefix("Calculated message digest"))
            .map(|v| v.trim().trim_start_matches(':').trim().to_ascii_lowercase())
            .unwrap_or_else(|| panic!("no digest from osslsigncode:\n{text}"));
        assert_eq!(
            hexd(&authenticode_sha256_firmware(&kernel).unwrap()),
            calculated
        );
        assert_eq!(
            hexd(&authenticode_sha256_signer(&kernel).unwrap()),
            calculated
        );
    }

    // --- Authenticode in the other banks' hashes ---

    /// Hash names of the other PCR banks, as Python's hashlib and osslsigncode `-h` spell them.
    const OTHER_HASHES: [&str; 3] = ["sha1", "sha384", "sha512"];

    fn ours_signer(hash: &str, pe: &[u8]) -> String {
        let d = match hash {
            "sha1" => authenticode_signer::<sha1::Sha1>(pe),
            "sha256" => authenticode_signer::<Sha256>(pe),
            "sha384" => authenticode_signer::<sha2::Sha384>(pe),
            "sha512" => authenticode_signer::<sha2::Sha512>(pe),
            other => panic!("no hash {other}"),
        };
        hex::encode(d.unwrap())
    }

    fn ours_firmware(hash: &str, pe: &[u8]) -> String {
        let d = match hash {
            "sha1" => authenticode_firmware::<sha1::Sha1>(pe),
            "sha384" => authenticode_firmware::<sha2::Sha384>(pe),
            "sha512" => authenticode_firmware::<sha2::Sha512>(pe),
            other => panic!("no hash {other}"),
        };
        hex::encode(d.unwrap())
    }

    /// Authenticode digests of `path` by virt-firmware's `pe_authenticode_hash` (Gerd Hoffmann's
    /// Python implementation over `pefile` and `hashlib`: independent of this crate), signer form.
    pub(crate) fn virt_firmware_authenticode(
        path: &std::path::Path,
        hashes: &[&str],
    ) -> Vec<String> {
        const SCRIPT: &str = "import sys, pefile\n\
            from virt.peutils import pesign\n\
            pe = pefile.PE(sys.argv[1])\n\
            for m in sys.argv[2:]: print(pesign.pe_authenticode_hash(pe, m).hex())\n";
        let out = Command::new("python3")
            .arg("-c")
            .arg(SCRIPT)
            .arg(path)
            .args(hashes)
            .output()
            .expect("python3 is needed (with the PyPI packages virt-firmware and pefile)");
        assert!(
            out.status.success(),
            "virt-firmware pe_authenticode_hash failed (pip install virt-firmware pefile): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// A UKI as objcopy builds it: the stub plus `.linux` = the signed 6.12 kernel.
    fn objcopy_kernel_uki(dir: &std::path::Path) -> PathBuf {
        let uki = dir.join("uki.efi");
        let linux = format!(".linux={}", fixture(KERNEL_6_12).display());
        let stub = fixture(STUB).display().to_string();
        let args = [
            "--add-section",
            &linux,
            "--change-section-vma",
            ".linux=0x2000000",
            &stub,
            uki.to_str().unwrap(),
        ];
        let out = run("objcopy", &args);
        assert!(
            out.status.success(),
            "objcopy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        uki
    }

    #[test]
    fn every_bank_authenticode_matches_virt_firmware() {
        let dir = scratch_dir("auth-banks");
        let hashes = ["sha1", "sha256", "sha384", "sha512"];
        let files = [
            fixture(STUB),
            fixture(KERNEL_6_1),
            fixture(KERNEL_6_12),
            objcopy_kernel_uki(&dir),
        ];
        for path in &files {
            let bytes = std::fs::read(path).unwrap();
            let theirs = virt_firmware_authenticode(path, &hashes);
            let ours: Vec<String> = hashes.iter().map(|h| ours_signer(h, &bytes)).collect();
            assert_eq!(ours, theirs, "{}", path.display());
        }
        // The signed kernels end 8-aligned before their certificate table: firmware = signer.
        let kernel = read(KERNEL_6_12);
        for h in OTHER_HASHES {
            assert_eq!(ours_firmware(h, &kernel), ours_signer(h, &kernel), "{h}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn other_bank_authenticode_matches_osslsigncode_signatures() {
        let stub = read(STUB);
        let dir = scratch_dir("auth-ossl");
        let key = dir.join("key.pem");
        let cert = dir.join("cert.pem");
        let out = run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=cvm-test",
                "-days",
                "1",
                "-keyout",
                key.to_str().unwrap(),
                "-out",
                cert.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "openssl: {out:?}");
        for h in OTHER_HASHES {
            let signed = dir.join(format!("stub-{h}.efi"));
            let out = run(
                "osslsigncode",
                &[
                    "sign",
                    "-h",
                    h,
                    "-certs",
                    cert.to_str().unwrap(),
                    "-key",
                    key.to_str().unwrap(),
                    "-in",
                    fixture(STUB).to_str().unwrap(),
                    "-out",
                    signed.to_str().unwrap(),
                ],
            );
            assert!(out.status.success(), "osslsigncode sign -h {h}: {out:?}");
            // verify fails on the self-signed chain but prints both digests in the signature's hash.
            let out = run("osslsigncode", &["verify", "-in", signed.to_str().unwrap()]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let field = |label: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(label))
                    .map(|v| v.trim().trim_start_matches(':').trim().to_ascii_lowercase())
                    .unwrap_or_else(|| panic!("osslsigncode printed no `{label}`:\n{text}"))
            };
            let embedded = field("Current message digest");
            assert_eq!(field("Calculated message digest"), embedded, "{h}");
            assert_eq!(
                embedded.len(),
                digest_len(h) * 2,
                "osslsigncode used another hash than {h}"
            );
            assert_eq!(ours_signer(h, &stub), embedded, "{h}: unsigned stub");
            let signed = std::fs::read(&signed).unwrap();
            assert_eq!(ours_firmware(h, &signed), embedded, "{h}: signed stub");
            // 83,297 bytes is not 8-aligned: the firmware form of the unsigned stub differs.
            assert_ne!(ours_firmware(h, &stub), embedded, "{h}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Digest size in bytes of the hashes the tests name.
    fn digest_len(hash: &str) -> usize {
        match hash {
            "sha1" => 20,
            "sha384" => 48,
            "sha512" => 64,
            other => panic!("no hash {other}"),
        }
    }

    // --- PCR 11 against systemd-measure on a UKI built independently with objcopy ---

    /// Runs systemd-measure 252 and returns its enter-initrd PCR 11 value.
    pub(crate) fn systemd_measure_enter_initrd(args: &[String]) -> String {
        let mut argv = vec!["calculate".to_string()];
        argv.extend_from_slice(args);
        argv.extend(["--bank=sha256", "--json=short", "--phase=enter-initrd"].map(String::from));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = run("/lib/systemd/systemd-measure", &argv);
        assert!(
            out.status.success(),
            "systemd-measure: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let start = text
            .find("\"hash\":\"")
            .expect("no hash in systemd-measure output")
            + 8;
        text[start..start + 64].to_string()
    }

    #[test]
    fn pcr11_of_objcopy_uki_matches_systemd_measure() {
        let dir = scratch_dir("objcopy-pcr11");
        let files: [(&str, Vec<u8>); 7] = [
            (".osrel", b"ID=cvm\nVERSION_ID=1\n".to_vec()),
            (".cmdline", b"console=ttyS0 ro\0".to_vec()),
            (".splash", vec![0x42; 3000]),
            (".dtb", vec![0xd0; 100]),
            (".pcrpkey", b"-----BEGIN PUBLIC KEY-----\n".to_vec()),
            (".initrd", (0..70_001u32).map(|i| (i * 7) as u8).collect()),
            (".linux", read(KERNEL_6_1)),
        ];
        let stub_path = fixture(STUB);
        let uki_path = dir.join("uki.efi");
        let mut args: Vec<String> = Vec::new();
        let mut measure_args: Vec<String> = Vec::new();
        let mut vma: u64 = 0x20000;
        for (name, data) in &files {
            let path = dir.join(&name[1..]);
            std::fs::write(&path, data).unwrap();
            args.push("--add-section".into());
            args.push(format!("{name}={}", path.display()));
            args.push("--change-section-vma".into());
            args.push(format!("{name}={vma:#x}"));
            vma = (vma + data.len() as u64 + 0xfff) & !0xfff;
            measure_args.push(format!("--{}={}", &name[1..], path.display()));
        }
        args.push(stub_path.display().to_string());
        args.push(uki_path.display().to_string());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run("objcopy", &argv);
        assert!(
            out.status.success(),
            "objcopy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let uki = std::fs::read(&uki_path).unwrap();

        let measurements = pcr11_measurements(&uki, STUB_252_SECTION_ORDER).unwrap();
        let order: Vec<&str> = measurements.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(order, STUB_252_SECTION_ORDER);
        let mut pcr = pcr11_value(&measurements);
        extend(&mut pcr, &pcrphase_digest("enter-initrd"));
        assert_eq!(hexd(&pcr), systemd_measure_enter_initrd(&measure_args));
        let _ = std::fs::remove_dir_all(dir);
    }

    // --- bad input ---

    #[test]
    fn non_pe_and_truncated_inputs_are_errors() {
        assert!(matches!(PeHeaders::parse(b""), Err(PeError::Parse(_))));
        assert!(matches!(
            PeHeaders::parse(b"#!/bin/sh\necho hi\n"),
            Err(PeError::Parse(_))
        ));
        let stub = read(STUB);
        // Cut inside the section table.
        let err = PeHeaders::parse(&stub[..0x200]).unwrap_err();
        assert!(
            matches!(err, PeError::OutOfBounds { .. } | PeError::Parse(_)),
            "{err}"
        );
        // Headers intact, section data missing.
        let err = authenticode_sha256_firmware(&stub[..0x2000]).unwrap_err();
        assert!(matches!(err, PeError::OutOfBounds { .. }), "{err}");
        assert!(err.to_string().contains(".text"), "{err}");
        let err = pcr11_measurements(&stub[..0x2000], &[".text"]).unwrap_err();
        assert!(matches!(err, PeError::OutOfBounds { .. }), "{err}");
        // e_lfanew pointing past the end.
        let mut bad = stub[..0x400].to_vec();
        bad[0x3c..0x40].copy_from_slice(&0xffff_0000u32.to_le_bytes());
        assert!(PeHeaders::parse(&bad).is_err());
    }

    #[test]
    fn section_beyond_size_of_image_is_an_error() {
        let mut stub = read(STUB);
        let h = PeHeaders::parse(&stub).unwrap();
        // .text is the first section header: VirtualSize far beyond SizeOfImage 0x19300.
        let vs = h.section_table_offset + sect::VIRTUAL_SIZE;
        stub[vs..vs + 4].copy_from_slice(&0x7000_0000u32.to_le_bytes());
        let err = pcr11_measurements(&stub, &[".text"]).unwrap_err();
        assert!(matches!(err, PeError::SectionOutsideImage { .. }), "{err}");
    }

    #[test]
    fn oversized_certificate_table_is_an_error() {
        let mut stub = read(STUB);
        let headers = PeHeaders::parse(&stub).unwrap();
        let dir = headers
            .data_directory_offset(DIRECTORY_ENTRY_SECURITY)
            .unwrap();
        stub[dir + 4..dir + 8].copy_from_slice(&0x10_0000u32.to_le_bytes());
        let err = authenticode_sha256_firmware(&stub).unwrap_err();
        assert!(matches!(err, PeError::CertificateTable { .. }), "{err}");
    }
}
