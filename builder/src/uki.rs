//! Unified kernel image (UKI) assembly: Debian's systemd-stub with `.osrel`, `.cmdline`,
//! `.initrd`, `.linux`, … appended as PE sections.
//!
//! goblin parses; the writer edits raw header fields, because goblin cannot add sections and
//! a byte-exact, reproducible layout matters more here than a general PE writer. The geometry
//! follows ukify (`pe_add_sections`, docs/measured-boot.md §10) so systemd-stub 252 finds and
//! measures every section, and the output is ready for Authenticode signing (no gaps, length a
//! multiple of 8).

use anyhow::{bail, ensure, Context, Result};

// On integration into the builder: `use cvm_measure::pe;`
use cvm_measure::pe;
use pe::{PeHeaders, SectionHeader};

use crate::pe_checksum::pe_checksum;

/// `IMAGE_FILE_MACHINE_AMD64`: the only architecture this project boots.
pub const IMAGE_FILE_MACHINE_AMD64: u16 = 0x8664;
/// `IMAGE_SCN_CNT_CODE`.
pub const IMAGE_SCN_CNT_CODE: u32 = 0x0000_0020;
/// `IMAGE_SCN_CNT_INITIALIZED_DATA`.
pub const IMAGE_SCN_CNT_INITIALIZED_DATA: u32 = 0x0000_0040;
/// `IMAGE_SCN_MEM_READ`.
pub const IMAGE_SCN_MEM_READ: u32 = 0x4000_0000;

/// Section order in the file, as ukify writes it: small metadata first, `.linux` last so the
/// big kernel does not push the other sections' addresses around; `.pcrsig` after everything
/// it signs. (The stub measures in its own order regardless, see `pe::STUB_252_SECTION_ORDER`.)
pub const UKIFY_FILE_ORDER: &[&str] = &[
    ".osrel", ".cmdline", ".dtb", ".uname", ".splash", ".pcrpkey", ".initrd", ".ucode", ".linux",
    ".pcrsig",
];

/// Name of the kernel section.
pub const LINUX_SECTION: &str = ".linux";

/// Authenticode signers hash the file as if padded to this multiple (docs/measured-boot.md §7);
/// a UKI whose length already is one has the same digest for firmware and signer.
pub const AUTHENTICODE_ALIGNMENT: usize = 8;

/// The Linux EFI stub supports LINUX_INITRD_MEDIA (initrd via LoadFile2, measured into PCR 9)
/// from PE `MajorImageVersion` 1; below that systemd-stub 252 falls back to the x86 handover
/// protocol and the initrd event disappears.
pub const MIN_KERNEL_MAJOR_IMAGE_VERSION: u16 = 1;

/// One section to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// PE section name, at most 8 bytes, one the stub knows (e.g. `.cmdline`).
    pub name: String,
    /// Content; the stub measures exactly these bytes (see [`assemble`] for `.linux`).
    pub data: Vec<u8>,
}

/// What [`inspect_stub`] learned about a systemd-stub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StubInfo {
    /// From `.sdmagic`, e.g. `252.39-1~deb12u2`.
    pub version: String,
    /// Section names this stub looks up (others would be neither used nor measured).
    pub known_sections: Vec<&'static str>,
    /// How many section headers fit between the section table and the first section's data.
    pub free_section_headers: usize,
}

/// A section as the firmware loads it (for `cvm-image inspect`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SectionInfo {
    /// Name (NULs trimmed).
    pub name: String,
    /// RVA.
    pub virtual_address: u32,
    /// Bytes in memory; what systemd-stub measures.
    pub virtual_size: u32,
    /// File offset.
    pub pointer_to_raw_data: u32,
    /// Bytes in the file (multiple of FileAlignment).
    pub size_of_raw_data: u32,
    /// `IMAGE_SCN_*` flags.
    pub characteristics: u32,
}

/// Parse and validate a systemd-stub: an unsigned x86-64 PE32+ with a `.sdmagic` marker of a
/// version whose section table we know, and room for new section headers.
pub fn inspect_stub(stub: &[u8]) -> Result<StubInfo> {
    Ok(ParsedStub::parse(stub)?.info)
}

/// Build the UKI: the stub truncated after its last section (its trailing COFF symbol table
/// would otherwise become an unhashed gap that sbsign/sbverify warn about — ukify drops it too),
/// then `sections` appended in [`UKIFY_FILE_ORDER`]:
///
/// * `PointerToRawData` = file length rounded up to `FileAlignment`; `SizeOfRawData` = data
///   length rounded up to `FileAlignment`, zero padded;
/// * `VirtualAddress` = end of the previous section in memory rounded up to `SectionAlignment`,
///   where the end is `VirtualAddress + max(VirtualSize, SizeOfRawData)` so no section's raw
///   extent overlaps the next one (the stub's own `.sdmagic` sits at an unaligned 0x19100 with
///   0x200 raw bytes; `SizeOfImage` 0x19300 already counts them);
/// * `VirtualSize` = data length for every section **including `.linux`**, see
///   [`section_virtual_size`];
/// * `Characteristics` = `CNT_INITIALIZED_DATA | MEM_READ`, `.linux` `CNT_CODE | MEM_READ`;
/// * `NumberOfSections`, `SizeOfImage`, `SizeOfCode`/`SizeOfInitializedData` updated; COFF
///   symbol pointer cleared (the symbols were in the dropped tail); `CheckSum` recomputed.
///
/// The result length is a multiple of `FileAlignment` (hence of 8), so firmware and signer
/// Authenticode digests agree and a signature can be appended without padding.
pub fn assemble(stub: &[u8], sections: &[Section]) -> Result<Vec<u8>> {
    let parsed = ParsedStub::parse(stub)?;
    let ordered = validate_sections(&parsed, sections)?;
    let headers = &parsed.headers;
    let mut out = truncate_after_sections(stub, headers);
    let mut next_va = align_up(max_memory_end(&headers.sections), headers.section_alignment)?;
    let mut added = Vec::with_capacity(ordered.len());
    for section in ordered {
        let header = append_section_data(&mut out, headers, section, next_va)?;
        next_va = align_up(header.memory_end(), headers.section_alignment)?;
        added.push(header);
    }
    write_headers(&mut out, headers, &added, next_va)?;
    ensure!(
        out.len().is_multiple_of(AUTHENTICODE_ALIGNMENT),
        "internal error: UKI length {} is not a multiple of {AUTHENTICODE_ALIGNMENT}",
        out.len()
    );
    Ok(out)
}

/// Sections of a PE image (e.g. a built UKI) in file order, as the firmware loads them.
pub fn list_sections(pe_file: &[u8]) -> Result<Vec<SectionInfo>> {
    let headers = PeHeaders::parse(pe_file).context("reading the PE section table")?;
    Ok(headers
        .sections
        .iter()
        .map(|s| SectionInfo {
            name: s.name.clone(),
            virtual_address: s.virtual_address,
            virtual_size: s.virtual_size,
            pointer_to_raw_data: s.pointer_to_raw_data,
            size_of_raw_data: s.size_of_raw_data,
            characteristics: s.characteristics,
        })
        .collect())
}

/// `VirtualSize` for an added section: its data length, also for `.linux`.
///
/// Why not the kernel's `SizeOfImage` (ukify ≥ 257, systemd PR #34583)? Both Debian kernels
/// are shorter on disk than in memory — 6.1.0-56: file 8,247,232 B, SizeOfImage 0x822000 =
/// 8,527,872 B; 6.12.117: file 12,085,184 B, SizeOfImage 0xbec000 = 12,500,992 B — and:
///
/// * stub 252 hashes `VirtualSize` bytes into PCR 11, and `systemd-measure calculate` **252**
///   hashes the plain kernel file (checked: its `.linux`-only value equals the chain over
///   H(file), not over H(file zero-padded to SizeOfImage)); only newer systemd-measure pads.
///   With `VirtualSize` = file length our PCR 11 equals systemd-measure 252's, and the real
///   boot in docs/measured-boot.md §12 matched H(kernel file);
/// * stub 252 hands `VirtualSize` bytes to `BS->LoadImage`, which needs the file, not the
///   memory image (the firmware allocates the kernel's SizeOfImage itself), so it boots;
/// * the second PCR 4 event (kernel Authenticode, SB off) then covers exactly the kernel file,
///   no zero tail, i.e. the kernel's own Authenticode digest.
///
/// Revisit with a stub ≥ 257 (pair it with that release's systemd-measure, which pads).
pub fn section_virtual_size(section: &Section) -> Result<u32> {
    u32::try_from(section.data.len())
        .with_context(|| format!("section {} is larger than 4 GiB", section.name))
}

// ---------------------------------------------------------------------------------------------

/// A validated stub with its parsed headers.
struct ParsedStub {
    headers: PeHeaders,
    info: StubInfo,
}

impl ParsedStub {
    fn parse(stub: &[u8]) -> Result<Self> {
        let headers = PeHeaders::parse(stub).context(
            "systemd-stub is not a valid PE image: pass the unsigned \
             /usr/lib/systemd/boot/efi/linuxx64.efi.stub from systemd-boot-efi",
        )?;
        check_stub_headers(stub, &headers)?;
        let version = pe::stub_version(stub)
            .context("the stub file is a PE image but not a systemd-stub (linuxx64.efi.stub)")?;
        let tables = pe::stub_sections(&version)
            .with_context(|| format!("systemd-stub {version} cannot be used"))?;
        let free_section_headers = free_header_slots(&headers);
        Ok(Self {
            headers,
            info: StubInfo {
                version,
                known_sections: tables.known.to_vec(),
                free_section_headers,
            },
        })
    }
}

fn check_stub_headers(stub: &[u8], headers: &PeHeaders) -> Result<()> {
    ensure!(
        headers.machine == IMAGE_FILE_MACHINE_AMD64 && headers.pe32_plus,
        "systemd-stub is not an x86-64 PE32+ image (Machine {:#06x}): use linuxx64.efi.stub",
        headers.machine
    );
    let (_, cert_size) = headers.certificate_table(stub);
    ensure!(
        cert_size == 0,
        "systemd-stub carries an Authenticode signature ({cert_size} bytes); appending sections \
         would invalidate it: use the unsigned stub and sign the assembled UKI"
    );
    for (what, value) in [
        ("FileAlignment", headers.file_alignment),
        ("SectionAlignment", headers.section_alignment),
    ] {
        ensure!(
            value.is_power_of_two() && value as usize >= AUTHENTICODE_ALIGNMENT,
            "systemd-stub has {what} {value:#x}; expected a power of two of at least 8"
        );
    }
    for s in &headers.sections {
        ensure!(
            s.file_end() <= stub.len() as u64,
            "systemd-stub is truncated or corrupt: section {} needs file bytes up to {:#x}, \
             the file has {:#x}",
            s.name,
            s.file_end(),
            stub.len()
        );
    }
    let (_, debug_size) = headers.data_directory(stub, pe::DIRECTORY_ENTRY_DEBUG);
    ensure!(
        debug_size == 0,
        "systemd-stub has a debug directory whose data may live in the trailing bytes the \
         assembler drops; use the stripped linuxx64.efi.stub"
    );
    Ok(())
}

/// End of the header area usable for new section headers: SizeOfHeaders, or the first raw
/// data if a section starts earlier.
fn header_room_end(headers: &PeHeaders) -> usize {
    headers
        .sections
        .iter()
        .filter(|s| s.size_of_raw_data != 0)
        .map(|s| s.pointer_to_raw_data as usize)
        .chain([headers.size_of_headers as usize])
        .min()
        .unwrap_or(headers.size_of_headers as usize)
}

fn free_header_slots(headers: &PeHeaders) -> usize {
    header_room_end(headers).saturating_sub(headers.section_table_end()) / pe::SECTION_HEADER_LEN
}

/// Check names (known, unique, unambiguous for the stub's prefix lookup), contents (non-empty,
/// a bootable `.linux`) and header room; return the sections in file order.
fn validate_sections<'a>(parsed: &ParsedStub, sections: &'a [Section]) -> Result<Vec<&'a Section>> {
    let info = &parsed.info;
    for s in sections {
        ensure!(
            info.known_sections.contains(&s.name.as_str()),
            "section {:?} is not known to systemd-stub {} (known: {}); the stub would neither \
             use nor measure it",
            s.name,
            info.version,
            info.known_sections.join(" ")
        );
        ensure!(
            !s.data.is_empty(),
            "section {} is empty: the stub treats a zero VirtualSize as absent, leave it out",
            s.name
        );
    }
    check_unambiguous(&parsed.headers.sections, sections, &info.known_sections)?;
    let linux = sections
        .iter()
        .find(|s| s.name == LINUX_SECTION)
        .context("no .linux section: systemd-stub cannot boot a UKI without a kernel")?;
    check_kernel(&linux.data)?;
    ensure!(
        sections.len() <= info.free_section_headers,
        "{} sections requested but the stub's header area has room for only {} more section \
         headers (moving section data to grow it is not supported)",
        sections.len(),
        info.free_section_headers
    );
    let mut ordered: Vec<&Section> = sections.iter().collect();
    ordered.sort_by_key(|s| UKIFY_FILE_ORDER.iter().position(|n| *n == s.name));
    Ok(ordered)
}

/// systemd-stub 252 matches headers by the first `strlen(name)` bytes and the last match wins,
/// so every known name must match exactly one header of the finished UKI (this also rejects
/// duplicates).
fn check_unambiguous(
    stub_sections: &[SectionHeader],
    new: &[Section],
    known: &[&str],
) -> Result<()> {
    for name in known {
        let in_stub = stub_sections
            .iter()
            .filter(|s| s.raw_name.starts_with(name.as_bytes()))
            .count();
        let added = new.iter().filter(|s| s.name == *name).count();
        ensure!(
            in_stub == 0,
            "systemd-stub already has a section matching {name}; the stub would pick the wrong one"
        );
        ensure!(
            added <= 1,
            "section {name} given {added} times; give it once"
        );
    }
    Ok(())
}

fn check_kernel(kernel: &[u8]) -> Result<()> {
    let headers = PeHeaders::parse(kernel).context(
        ".linux is not a PE/COFF image: pass vmlinuz (an EFI-stub bzImage), not vmlinux",
    )?;
    ensure!(
        headers.machine == IMAGE_FILE_MACHINE_AMD64,
        ".linux is for machine {:#06x}, not x86-64",
        headers.machine
    );
    ensure!(
        headers.major_image_version >= MIN_KERNEL_MAJOR_IMAGE_VERSION,
        ".linux has PE MajorImageVersion {}: the kernel predates LINUX_INITRD_MEDIA (Linux 5.8); \
         systemd-stub 252 would use the handover protocol and PCR 9 would lack the initrd event",
        headers.major_image_version
    );
    Ok(())
}

/// The stub up to the end of its last section's raw data (at least SizeOfHeaders).
fn truncate_after_sections(stub: &[u8], headers: &PeHeaders) -> Vec<u8> {
    let end = headers
        .sections
        .iter()
        .map(SectionHeader::file_end)
        .chain([u64::from(headers.size_of_headers)])
        .max()
        .unwrap_or(0);
    // check_stub_headers guaranteed end <= stub.len().
    stub[..end as usize].to_vec()
}

fn max_memory_end(sections: &[SectionHeader]) -> u64 {
    sections
        .iter()
        .map(SectionHeader::memory_end)
        .max()
        .unwrap_or(0)
}

fn align_up(value: u64, alignment: u32) -> Result<u32> {
    let a = u64::from(alignment);
    let rounded = value.div_ceil(a) * a;
    u32::try_from(rounded).context("UKI exceeds the 4 GiB limit of PE32+ offsets and sizes")
}

/// Append one section's raw data (file-aligned, zero padded) and return its header.
fn append_section_data(
    out: &mut Vec<u8>,
    headers: &PeHeaders,
    section: &Section,
    virtual_address: u32,
) -> Result<SectionHeader> {
    let pointer = align_up(out.len() as u64, headers.file_alignment)?;
    let raw_size = align_up(section.data.len() as u64, headers.file_alignment)?;
    out.resize(pointer as usize, 0);
    out.extend_from_slice(&section.data);
    out.resize(pointer as usize + raw_size as usize, 0);
    let mut raw_name = [0u8; pe::SECTION_NAME_LEN];
    raw_name[..section.name.len()].copy_from_slice(section.name.as_bytes());
    let characteristics = if section.name == LINUX_SECTION {
        IMAGE_SCN_CNT_CODE | IMAGE_SCN_MEM_READ
    } else {
        IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ
    };
    Ok(SectionHeader {
        name: section.name.clone(),
        raw_name,
        virtual_size: section_virtual_size(section)?,
        virtual_address,
        size_of_raw_data: raw_size,
        pointer_to_raw_data: pointer,
        characteristics,
    })
}

fn put_u16(out: &mut [u8], off: usize, v: u16) {
    out[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(out: &mut [u8], off: usize, v: u32) {
    out[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn encode_section_header(h: &SectionHeader) -> [u8; pe::SECTION_HEADER_LEN] {
    let mut b = [0u8; pe::SECTION_HEADER_LEN];
    b[..pe::SECTION_NAME_LEN].copy_from_slice(&h.raw_name);
    put_u32(&mut b, pe::sect::VIRTUAL_SIZE, h.virtual_size);
    put_u32(&mut b, pe::sect::VIRTUAL_ADDRESS, h.virtual_address);
    put_u32(&mut b, pe::sect::SIZE_OF_RAW_DATA, h.size_of_raw_data);
    put_u32(&mut b, pe::sect::POINTER_TO_RAW_DATA, h.pointer_to_raw_data);
    put_u32(&mut b, pe::sect::CHARACTERISTICS, h.characteristics);
    b
}

/// Write the new section headers and the header fields that depend on them, then the checksum.
fn write_headers(
    out: &mut [u8],
    headers: &PeHeaders,
    added: &[SectionHeader],
    size_of_image: u32,
) -> Result<()> {
    let table_end = headers.section_table_end();
    let new_end = table_end + added.len() * pe::SECTION_HEADER_LEN;
    if out[table_end..new_end].iter().any(|&b| b != 0) {
        bail!(
            "systemd-stub has non-zero bytes after its section table ({table_end:#x}..{new_end:#x}); \
             refusing to overwrite them with section headers"
        );
    }
    for (i, h) in added.iter().enumerate() {
        let off = table_end + i * pe::SECTION_HEADER_LEN;
        out[off..off + pe::SECTION_HEADER_LEN].copy_from_slice(&encode_section_header(h));
    }
    let count =
        u16::try_from(headers.sections.len() + added.len()).context("too many PE sections")?;
    put_u16(
        out,
        headers.coff_offset + pe::coff::NUMBER_OF_SECTIONS,
        count,
    );
    // The COFF symbol table lived in the dropped tail.
    put_u32(
        out,
        headers.coff_offset + pe::coff::POINTER_TO_SYMBOL_TABLE,
        0,
    );
    put_u32(out, headers.coff_offset + pe::coff::NUMBER_OF_SYMBOLS, 0);
    let opt = headers.optional_header_offset;
    put_u32(out, opt + pe::opt::SIZE_OF_IMAGE, size_of_image);
    let (code, data) = added_sizes(added)?;
    let size_of_code = headers
        .size_of_code
        .checked_add(code)
        .context("SizeOfCode overflows")?;
    let size_of_data = headers
        .size_of_initialized_data
        .checked_add(data)
        .context("SizeOfInitializedData overflows")?;
    put_u32(out, opt + pe::opt::SIZE_OF_CODE, size_of_code);
    put_u32(out, opt + pe::opt::SIZE_OF_INITIALIZED_DATA, size_of_data);
    let checksum_offset = headers.checksum_offset();
    let checksum = pe_checksum(out, checksum_offset);
    put_u32(out, checksum_offset, checksum);
    Ok(())
}

/// Raw sizes of the added code and initialized-data sections.
fn added_sizes(added: &[SectionHeader]) -> Result<(u32, u32)> {
    let mut code: u32 = 0;
    let mut data: u32 = 0;
    for h in added {
        let target = if h.characteristics & IMAGE_SCN_CNT_CODE != 0 {
            &mut code
        } else {
            &mut data
        };
        *target = target
            .checked_add(h.size_of_raw_data)
            .context("section sizes overflow 4 GiB")?;
    }
    Ok((code, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};

    const STUB: &str = "systemd-boot-efi/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
    const KERNEL_6_1: &str = "linux-image-6.1.0-56-amd64/boot/vmlinuz-6.1.0-56-amd64";
    const KERNEL_6_12: &str = "linux-image-6.12.117+deb12-amd64/boot/vmlinuz-6.12.117+deb12-amd64";

    fn read(rel: &str) -> Vec<u8> {
        let p = fixture(rel);
        std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {} unreadable: {e}", p.display()))
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cvm-uki-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn run(program: &str, args: &[&str]) -> Output {
        Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                "reference tool `{program}` could not run ({e}); install it (Debian: binutils, \
                 sbsigntool, osslsigncode, openssl, systemd)"
            )
            })
    }

    fn run_ok(program: &str, args: &[&str]) -> String {
        let out = run(program, args);
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn p(path: &Path) -> &str {
        path.to_str().unwrap()
    }

    fn sections_for(kernel: Vec<u8>) -> Vec<Section> {
        let s = |name: &str, data: Vec<u8>| Section {
            name: name.to_string(),
            data,
        };
        // Deliberately not in file order: assemble() must sort.
        vec![
            s(".linux", kernel),
            s(
                ".initrd",
                (0..100_003u32).map(|i| (i * 31 + 7) as u8).collect(),
            ),
            s(
                ".cmdline",
                b"console=ttyS0 root=/dev/mapper/root ro".to_vec(),
            ),
            s(".osrel", b"ID=cvm\nVERSION_ID=1\n".to_vec()),
        ]
    }

    fn build(kernel: &str) -> (Vec<Section>, Vec<u8>) {
        let sections = sections_for(read(kernel));
        let uki = assemble(&read(STUB), &sections).unwrap();
        (sections, uki)
    }

    /// `objdump -h` rows: (name, size, vma, file offset).
    fn objdump_sections(path: &Path) -> Vec<(String, u64, u64, u64)> {
        let out = run("objdump", &["-h", p(path)]);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "objdump -h: {out:?}"
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let t: Vec<&str> = l.split_whitespace().collect();
                let numeric = t.first().is_some_and(|f| f.parse::<u32>().is_ok());
                (numeric && t.len() >= 7).then(|| {
                    let h = |s: &str| u64::from_str_radix(s, 16).unwrap();
                    (t[1].to_string(), h(t[2]), h(t[3]), h(t[5]))
                })
            })
            .collect()
    }

    fn objdump_p_field(text: &str, field: &str) -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap_or_else(|| panic!("objdump -p has no {field}"));
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    }

    // --- stub inspection ---

    #[test]
    fn inspects_debian_stub() {
        let info = inspect_stub(&read(STUB)).unwrap();
        assert_eq!(info.version, "252.39-1~deb12u2");
        assert_eq!(info.known_sections, pe::STUB_252_KNOWN_SECTIONS);
        // Section table ends at 0x2c8, first data at 0x400: (0x400 - 0x2c8) / 40 = 7.
        assert_eq!(info.free_section_headers, 7);
    }

    // --- geometry, checked with binutils ---

    #[test]
    fn objdump_lists_sections_we_wrote() {
        let (sections, uki) = build(KERNEL_6_1);
        let dir = scratch_dir("objdump");
        let path = dir.join("uki.efi");
        std::fs::write(&path, &uki).unwrap();
        let rows = objdump_sections(&path);
        let ours = list_sections(&uki).unwrap();
        assert_eq!(rows.len(), 12);
        for (row, info) in rows.iter().zip(&ours) {
            assert_eq!(row.0, info.name);
            assert_eq!(
                row.1,
                u64::from(info.virtual_size.min(info.size_of_raw_data)),
                "{}",
                row.0
            );
            assert_eq!(row.2, u64::from(info.virtual_address), "{}", row.0);
            assert_eq!(row.3, u64::from(info.pointer_to_raw_data), "{}", row.0);
        }
        // New sections: ukify's file order, right after the stub's .sdmagic (raw 0x11200 +
        // 0x200; memory 0x19100 + 0x200 → 0x19300, aligned to 0x200 → 0x19400).
        let new: Vec<_> = rows[8..].iter().collect();
        let names: Vec<&str> = new.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(names, [".osrel", ".cmdline", ".initrd", ".linux"]);
        assert_eq!((new[0].2, new[0].3), (0x19400, 0x11400));
        let by_name = |n: &str| sections.iter().find(|s| s.name == n).unwrap();
        for r in &new {
            assert_eq!(r.1, by_name(&r.0).data.len() as u64, "{} size", r.0);
            assert_eq!(r.2 % 0x200, 0, "{} VMA alignment", r.0);
            assert_eq!(r.3 % 0x200, 0, "{} file alignment", r.0);
        }
        for w in new.windows(2) {
            // Contiguous: next VMA/offset = previous + size rounded up to 0x200.
            let next = (w[0].1 + 0x1ff) & !0x1ff;
            assert_eq!(w[1].2, w[0].2 + next, "{} VMA", w[1].0);
            assert_eq!(w[1].3, w[0].3 + next, "{} offset", w[1].0);
        }
        let last = new[3];
        assert_eq!(
            uki.len() as u64,
            last.3 + ((last.1 + 0x1ff) & !0x1ff),
            "no trailing data"
        );

        let out = run("objdump", &["-p", p(&path)]);
        assert!(out.status.success(), "objdump -p: {out:?}");
        assert!(
            out.stderr.is_empty(),
            "objdump -p warns: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            objdump_p_field(&text, "SizeOfImage"),
            (last.2 + last.1 + 0x1ff) & !0x1ff
        );
        assert_eq!(objdump_p_field(&text, "SizeOfHeaders"), 0x400);
        // Stub: SizeOfCode 0xc000 + .linux raw; SizeOfInitializedData 0x5000 + the others' raw.
        let raw = |n: &str| (by_name(n).data.len() as u64 + 0x1ff) & !0x1ff;
        assert_eq!(objdump_p_field(&text, "SizeOfCode"), 0xc000 + raw(".linux"));
        assert_eq!(
            objdump_p_field(&text, "SizeOfInitializedData"),
            0x5000 + raw(".osrel") + raw(".cmdline") + raw(".initrd")
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn stub_part_is_preserved() {
        let stub = read(STUB);
        let (_, uki) = build(KERNEL_6_1);
        // Everything from the end of the section table to the end of .sdmagic's raw data is the
        // stub's, byte for byte, apart from the 4 new headers (4 × 40 bytes at 0x2c8).
        assert_eq!(
            &uki[0x2c8 + 4 * 40..0x11400],
            &stub[0x2c8 + 4 * 40..0x11400]
        );
        assert_eq!(&uki[..0x80], &stub[..0x80], "DOS header and stub");
        let ours = list_sections(&uki).unwrap();
        let theirs = list_sections(&stub).unwrap();
        assert_eq!(&ours[..8], &theirs[..]);
    }

    #[test]
    fn matches_classic_objcopy_build() {
        let (sections, uki) = build(KERNEL_6_1);
        let dir = scratch_dir("objcopy");
        let ours_path = dir.join("ours.efi");
        let classic_path = dir.join("classic.efi");
        std::fs::write(&ours_path, &uki).unwrap();
        let ours = list_sections(&uki).unwrap();
        let mut args: Vec<String> = Vec::new();
        for s in &sections {
            let data_path = dir.join(&s.name[1..]);
            std::fs::write(&data_path, &s.data).unwrap();
            let va = ours
                .iter()
                .find(|i| i.name == s.name)
                .unwrap()
                .virtual_address;
            args.push("--add-section".into());
            args.push(format!("{}={}", s.name, data_path.display()));
            args.push("--change-section-vma".into());
            args.push(format!("{}={va:#x}", s.name));
        }
        args.push(fixture(STUB).display().to_string());
        args.push(classic_path.display().to_string());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        run_ok("objcopy", &argv);
        let classic = std::fs::read(&classic_path).unwrap();

        // Same names, sizes and VMAs for every section as BFD sees them.
        let strip = |rows: Vec<(String, u64, u64, u64)>| -> Vec<(String, u64, u64)> {
            rows.into_iter().map(|(n, s, v, _)| (n, s, v)).collect()
        };
        let ours_rows = objdump_sections(&ours_path);
        let classic_rows = objdump_sections(&classic_path);
        let mut classic_sorted = strip(classic_rows.clone());
        classic_sorted.sort_by_key(|r| r.2);
        assert_eq!(strip(ours_rows), classic_sorted);

        // Same section contents as dumped by objcopy from both files, equal to the inputs.
        for s in &sections {
            for (label, file) in [("ours", &ours_path), ("classic", &classic_path)] {
                let dump = dir.join(format!("{label}{}", s.name));
                let spec = format!("{}={}", s.name, dump.display());
                run_ok(
                    "objcopy",
                    &["--dump-section", &spec, p(file), p(&dir.join("junk"))],
                );
                assert_eq!(std::fs::read(&dump).unwrap(), s.data, "{label} {}", s.name);
            }
        }
        // And the same PCR 11 (the stub sees identical VirtualAddress/VirtualSize/content).
        let order = pe::STUB_252_SECTION_ORDER;
        assert_eq!(
            pe::pcr11_measurements(&uki, order).unwrap(),
            pe::pcr11_measurements(&classic, order).unwrap()
        );

        // What differs, and why: objcopy keeps the stub's COFF symbol table (moved behind the
        // new sections: an unhashed gap for sbsign), stamps TimeDateStamp with the build time
        // (not reproducible) and flags .linux as data; we drop the symbols, keep the stub's
        // TimeDateStamp (0) and flag .linux as code.
        let classic_h = PeHeaders::parse(&classic).unwrap();
        let ours_h = PeHeaders::parse(&uki).unwrap();
        assert_ne!(classic_h.pointer_to_symbol_table, 0);
        assert_eq!(ours_h.pointer_to_symbol_table, 0);
        assert!(classic.len() > uki.len());
        let linux_flags = |h: &PeHeaders| {
            h.sections
                .iter()
                .find(|s| s.name == ".linux")
                .unwrap()
                .characteristics
        };
        assert_eq!(
            linux_flags(&classic_h),
            IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ
        );
        assert_eq!(
            linux_flags(&ours_h),
            IMAGE_SCN_CNT_CODE | IMAGE_SCN_MEM_READ
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    // --- PCR 11 against systemd-measure 252 ---

    fn assert_pcr11_matches_systemd_measure(kernel: &str) {
        let (sections, uki) = build(kernel);
        let dir = scratch_dir(&format!("measure-{}", kernel.len()));
        let mut args = vec!["calculate".to_string()];
        for s in &sections {
            let path = dir.join(&s.name[1..]);
            std::fs::write(&path, &s.data).unwrap();
            args.push(format!("--{}={}", &s.name[1..], path.display()));
        }
        args.extend(["--bank=sha256", "--json=short"].map(String::from));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let json = run_ok("/lib/systemd/systemd-measure", &argv);
        // 252 prints only phase values; the first phase is enter-initrd.
        let key = "\"phase\":\"enter-initrd\",\"pcr\":11,\"hash\":\"";
        let start = json
            .find(key)
            .unwrap_or_else(|| panic!("unexpected output: {json}"))
            + key.len();
        let expected = &json[start..start + 64];

        let measurements = pe::pcr11_measurements(&uki, pe::STUB_252_SECTION_ORDER).unwrap();
        let names: Vec<&str> = measurements.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, [".linux", ".osrel", ".cmdline", ".initrd"]);
        let mut pcr = pe::pcr11_value(&measurements);
        pe::extend(&mut pcr, &pe::pcrphase_digest("enter-initrd"));
        assert_eq!(hex::encode(pcr), expected, "{kernel}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn pcr11_matches_systemd_measure_kernel_6_1() {
        assert_pcr11_matches_systemd_measure(KERNEL_6_1);
    }

    #[test]
    fn pcr11_matches_systemd_measure_kernel_6_12() {
        assert_pcr11_matches_systemd_measure(KERNEL_6_12);
    }

    #[test]
    fn linux_virtual_size_is_file_length_not_size_of_image() {
        for rel in [KERNEL_6_1, KERNEL_6_12] {
            let kernel = read(rel);
            let size_of_image = PeHeaders::parse(&kernel).unwrap().size_of_image;
            assert!(
                (kernel.len() as u64) < u64::from(size_of_image),
                "{rel}: premise"
            );
            let (_, uki) = build(rel);
            let linux = list_sections(&uki)
                .unwrap()
                .into_iter()
                .find(|s| s.name == ".linux");
            assert_eq!(linux.unwrap().virtual_size as usize, kernel.len(), "{rel}");
        }
    }

    // --- signing readiness, Authenticode, checksum ---

    #[test]
    fn sbverify_sees_no_gaps() {
        let (_, uki) = build(KERNEL_6_1);
        let dir = scratch_dir("sbverify");
        let path = dir.join("uki.efi");
        std::fs::write(&path, &uki).unwrap();
        let out = run("sbverify", &["--list", p(&path)]);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(all.contains("No signature table present"), "{all}");
        assert!(!all.contains("warning"), "sbverify warns on our UKI: {all}");
        // Control: the untruncated stub does trigger the gap warning.
        let out = run("sbverify", &["--list", p(&fixture(STUB))]);
        assert!(String::from_utf8_lossy(&out.stderr).contains("gaps between PE/COFF sections"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn uki_authenticode_and_checksum_match_sbsign_and_osslsigncode() {
        let (_, uki) = build(KERNEL_6_1);
        let dir = scratch_dir("auth");
        let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
        let (unsigned, signed) = (dir.join("uki.efi"), dir.join("signed.efi"));
        std::fs::write(&unsigned, &uki).unwrap();
        run_ok(
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
                p(&key),
                "-out",
                p(&cert),
            ],
        );
        // Unsigned: osslsigncode reports the checksum it computes (then fails: no signature).
        let out = run("osslsigncode", &["verify", "-in", p(&unsigned)]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let field = |text: &str, label: &str| -> String {
            text.lines()
                .find_map(|l| l.strip_prefix(label))
                .map(|v| v.trim().trim_start_matches(':').trim().to_ascii_lowercase())
                .unwrap_or_else(|| panic!("osslsigncode printed no `{label}`:\n{text}"))
        };
        // osslsigncode prints one "PE checksum" line when stored and computed values agree.
        let headers = PeHeaders::parse(&uki).unwrap();
        assert_eq!(
            field(&text, "PE checksum"),
            format!("{:08x}", headers.check_sum)
        );
        assert!(!text.contains("invalid PE checksum"), "{text}");
        // Control: with a wrong stored value it prints the value it computes, which is ours.
        let mut wrong = uki.clone();
        let off = headers.checksum_offset();
        wrong[off..off + 4].copy_from_slice(&(headers.check_sum ^ 1).to_le_bytes());
        let wrong_path = dir.join("wrong.efi");
        std::fs::write(&wrong_path, &wrong).unwrap();
        let out = run("osslsigncode", &["verify", "-in", p(&wrong_path)]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            field(&text, "Calculated PE checksum"),
            format!("{:08x}", headers.check_sum)
        );

        run_ok(
            "sbsign",
            &[
                "--key",
                p(&key),
                "--cert",
                p(&cert),
                "--output",
                p(&signed),
                p(&unsigned),
            ],
        );
        let out = run("osslsigncode", &["verify", "-in", p(&signed)]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let embedded = field(&text, "Current message digest");
        assert_eq!(field(&text, "Calculated message digest"), embedded);
        assert_eq!(
            hex::encode(pe::authenticode_sha256_signer(&uki).unwrap()),
            embedded
        );
        // Length is a multiple of 8, so firmware (PCR 4) and signer digests agree, before and
        // after signing.
        assert_eq!(
            hex::encode(pe::authenticode_sha256_firmware(&uki).unwrap()),
            embedded
        );
        let signed_bytes = std::fs::read(&signed).unwrap();
        // sbsign only set CheckSum and the certificate directory and appended the certificate
        // table: no padding was needed.
        let h = PeHeaders::parse(&uki).unwrap();
        let cert_dir = h
            .data_directory_offset(pe::DIRECTORY_ENTRY_SECURITY)
            .unwrap();
        let mask = |b: &[u8]| {
            let mut b = b[..uki.len()].to_vec();
            b[h.checksum_offset()..h.checksum_offset() + 4].fill(0);
            b[cert_dir..cert_dir + 8].fill(0);
            b
        };
        assert!(
            mask(&signed_bytes) == mask(&uki),
            "sbsign rewrote more than the headers"
        );
        let cert_table = PeHeaders::parse(&signed_bytes)
            .unwrap()
            .certificate_table(&signed_bytes);
        assert_eq!(
            cert_table.0 as usize,
            uki.len(),
            "certificate table right after the UKI"
        );
        assert_eq!(
            hex::encode(pe::authenticode_sha256_firmware(&signed_bytes).unwrap()),
            embedded
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    // --- determinism ---

    #[test]
    fn output_is_deterministic_and_independent_of_input_order() {
        let stub = read(STUB);
        let mut sections = sections_for(read(KERNEL_6_1));
        let a = assemble(&stub, &sections).unwrap();
        sections.reverse();
        let b = assemble(&stub, &sections).unwrap();
        assert!(a == b);
    }

    // --- errors ---

    fn err_text(stub: &[u8], sections: &[Section]) -> String {
        format!("{:#}", assemble(stub, sections).unwrap_err())
    }

    fn small(name: &str) -> Section {
        Section {
            name: name.to_string(),
            data: b"x".to_vec(),
        }
    }

    #[test]
    fn rejects_bad_section_sets() {
        let stub = read(STUB);
        let kernel = Section {
            name: ".linux".into(),
            data: read(KERNEL_6_1),
        };
        let with = |extra: Vec<Section>| {
            let mut v = vec![kernel.clone()];
            v.extend(extra);
            v
        };
        let e = err_text(&stub, &with(vec![small(".uname")]));
        assert!(e.contains("not known to systemd-stub 252"), "{e}");
        let e = err_text(&stub, &with(vec![small(".cmdline"), small(".cmdline")]));
        assert!(e.contains("given 2 times"), "{e}");
        let e = err_text(
            &stub,
            &with(vec![Section {
                name: ".osrel".into(),
                data: vec![],
            }]),
        );
        assert!(e.contains("empty"), "{e}");
        let e = err_text(&stub, &[small(".cmdline")]);
        assert!(e.contains("no .linux"), "{e}");
        let e = err_text(&stub, &[small(".linux")]);
        assert!(e.contains("not a PE/COFF image"), "{e}");
        // All 8 known names: 8 headers, room for 7.
        let all: Vec<Section> = pe::STUB_252_KNOWN_SECTIONS
            .iter()
            .map(|n| {
                if *n == ".linux" {
                    kernel.clone()
                } else {
                    small(n)
                }
            })
            .collect();
        let e = err_text(&stub, &all);
        assert!(e.contains("room for only 7"), "{e}");
        // Seven fit.
        assert!(assemble(&stub, &all[..7]).is_ok());
    }

    #[test]
    fn rejects_kernel_without_initrd_media_support() {
        let mut kernel = read(KERNEL_6_1);
        let h = PeHeaders::parse(&kernel).unwrap();
        // MajorImageVersion: optional header offset 44 (PE32 and PE32+).
        kernel[h.optional_header_offset + 44..h.optional_header_offset + 46].fill(0);
        let e = err_text(
            &read(STUB),
            &[Section {
                name: ".linux".into(),
                data: kernel,
            }],
        );
        assert!(e.contains("MajorImageVersion 0"), "{e}");
    }

    #[test]
    fn rejects_bad_stubs() {
        let stub = read(STUB);
        let sections = sections_for(read(KERNEL_6_1));
        let e = format!("{:#}", inspect_stub(b"not a PE file at all").unwrap_err());
        assert!(e.contains("not a valid PE image"), "{e}");
        let e = format!("{:#}", inspect_stub(&stub[..0x200]).unwrap_err());
        assert!(e.contains("not a valid PE image"), "{e}");
        let e = err_text(&stub[..0x8000], &sections);
        assert!(e.contains("truncated or corrupt"), "{e}");
        // A PE image without the .sdmagic marker (renamed here) is not a stub.
        let mut renamed = stub.clone();
        let magic_header = 0x2c8 - 40;
        assert_eq!(&renamed[magic_header..magic_header + 8], b".sdmagic");
        renamed[magic_header + 7] = b'X';
        let e = format!("{:#}", inspect_stub(&renamed).unwrap_err());
        assert!(e.contains("not a systemd-stub"), "{e}");
        // The (signed) kernel is refused as a stub too.
        assert!(inspect_stub(&read(KERNEL_6_1)).is_err());
        // A signed stub (sbsign with a throwaway key).
        let dir = scratch_dir("signed-stub");
        let (key, cert, out) = (dir.join("k.pem"), dir.join("c.pem"), dir.join("s.efi"));
        run_ok(
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
                p(&key),
                "-out",
                p(&cert),
            ],
        );
        let stub_path = fixture(STUB);
        run(
            "sbsign",
            &[
                "--key",
                p(&key),
                "--cert",
                p(&cert),
                "--output",
                p(&out),
                p(&stub_path),
            ],
        );
        let e = format!(
            "{:#}",
            inspect_stub(&std::fs::read(&out).unwrap()).unwrap_err()
        );
        assert!(e.contains("Authenticode signature"), "{e}");
        // Non-zero bytes where the new headers would go.
        let mut dirty = stub.clone();
        dirty[0x2c8 + 10] = 0xaa;
        let e = err_text(&dirty, &sections);
        assert!(e.contains("non-zero bytes after its section table"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
