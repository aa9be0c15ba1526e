//! What the launch digest needs from an OVMF image: the GUIDed footer table at its end and the SEV
//! metadata ("ASEV") it points to (docs/tee.md §1.3).

use super::error::SnpError;

/// Last entry of the footer table: {u16 table size, this GUID}, ending 32 bytes before the end.
const FOOTER_TABLE: &str = "96b582de-1fb2-45f7-baea-a366c55a082d";
const SEV_ES_RESET_BLOCK: &str = "00f771de-1a7e-4fcb-890e-68c77e2fb44e";
const SEV_HASH_TABLE: &str = "7255371f-3a3b-4b04-927b-1da6efa8d454";
const SEV_METADATA: &str = "dc886566-984a-4798-a75e-5585a7bf67cc";

/// u16 size + GUID after every entry's data.
const ENTRY_TRAILER: usize = 18;

/// A GUID in its textual form to the mixed-endian bytes firmware stores (EFI_GUID layout).
/// Panics on a malformed literal: only called with the constants of this crate.
pub(crate) fn guid_le(s: &str) -> [u8; 16] {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let b: [u8; 16] = hex::decode(hex)
        .ok()
        .and_then(|v| v.try_into().ok())
        .expect("GUID literal");
    let mut out = b;
    out[0..4].copy_from_slice(&[b[3], b[2], b[1], b[0]]);
    out[4..6].copy_from_slice(&[b[5], b[4]]);
    out[6..8].copy_from_slice(&[b[7], b[6]]);
    out
}

/// Type of an SEV metadata section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionType {
    SnpSecMem,
    SnpSecrets,
    Cpuid,
    SvsmCaa,
    SnpKernelHashes,
}

impl SectionType {
    fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => SectionType::SnpSecMem,
            2 => SectionType::SnpSecrets,
            3 => SectionType::Cpuid,
            4 => SectionType::SvsmCaa,
            0x10 => SectionType::SnpKernelHashes,
            _ => return None,
        })
    }
}

/// One item of the ASEV table: a guest-physical range the hypervisor must prepare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    pub gpa: u32,
    pub size: u32,
    pub kind: SectionType,
}

/// A footer-table entry: its GUID (as stored) and its data.
type Entry<'a> = ([u8; 16], &'a [u8]);

/// The parts of an OVMF image the launch digest depends on.
#[derive(Debug, Clone)]
pub struct Ovmf<'a> {
    data: &'a [u8],
    /// (GUID bytes, entry data), walking from the footer towards the start; on a repeated GUID the
    /// entry farthest from the footer counts, as in sev-snp-measure.
    table: Vec<Entry<'a>>,
    sections: Vec<Section>,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

impl<'a> Ovmf<'a> {
    /// Parses the footer table and the SEV metadata. An image without a footer table parses (it
    /// has no entries); a footer table or metadata that is present but malformed is an error.
    pub fn parse(data: &'a [u8]) -> Result<Self, SnpError> {
        let table = parse_footer_table(data)?;
        let mut ovmf = Ovmf {
            data,
            table,
            sections: Vec::new(),
        };
        ovmf.sections = ovmf.parse_metadata()?;
        Ok(ovmf)
    }

    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Guest-physical address of the first byte: the image ends at 4 GiB.
    pub fn gpa(&self) -> u64 {
        (1u64 << 32).wrapping_sub(self.data.len() as u64)
    }

    pub fn entry(&self, guid: &str) -> Option<&'a [u8]> {
        let g = guid_le(guid);
        self.table
            .iter()
            .rev()
            .find(|(k, _)| *k == g)
            .map(|(_, v)| *v)
    }

    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    pub fn has_section(&self, kind: SectionType) -> bool {
        self.sections.iter().any(|s| s.kind == kind)
    }

    /// The APs' reset EIP from the SEV-ES reset block.
    pub fn sev_es_reset_eip(&self) -> Result<u32, SnpError> {
        self.entry(SEV_ES_RESET_BLOCK)
            .and_then(|e| u32_at(e, 0))
            .ok_or(SnpError::NoResetBlock)
    }

    /// GPA of the kernel-hashes table, when the image has the SEV hash-table entry.
    pub fn sev_hashes_table_gpa(&self) -> Option<u32> {
        self.entry(SEV_HASH_TABLE).and_then(|e| u32_at(e, 0))
    }

    /// Whether SEV/SEV-ES direct boot can measure kernel hashes: the entry exists with a non-zero
    /// GPA (OvmfPkgX64 builds carry it as 0,0).
    pub fn supports_sev_hashes_table(&self) -> bool {
        self.sev_hashes_table_gpa().is_some_and(|g| g != 0)
    }

    fn parse_metadata(&self) -> Result<Vec<Section>, SnpError> {
        let Some(entry) = self.entry(SEV_METADATA) else {
            return Ok(Vec::new());
        };
        let bad = |why: &'static str| SnpError::BadMetadata(why);
        let from_end = u32_at(entry, 0).ok_or(bad("SEV metadata entry shorter than 4 bytes"))?;
        let start = self
            .data
            .len()
            .checked_sub(from_end as usize)
            .ok_or(bad("SEV metadata offset beyond the start of the image"))?;
        let header = self
            .data
            .get(start..start + 16)
            .ok_or(bad("SEV metadata header beyond the end of the image"))?;
        if &header[0..4] != b"ASEV" {
            return Err(bad("SEV metadata signature is not ASEV"));
        }
        let size = u32_at(header, 4).unwrap_or(0) as usize;
        if u32_at(header, 8) != Some(1) {
            return Err(bad("SEV metadata version is not 1"));
        }
        let count = u32_at(header, 12).unwrap_or(0) as usize;
        let items = self
            .data
            .get(start + 16..start.saturating_add(size).max(start + 16))
            .ok_or(bad("SEV metadata items beyond the end of the image"))?;
        (0..count)
            .map(|i| {
                let it = items
                    .get(i * 12..i * 12 + 12)
                    .ok_or(bad("SEV metadata holds fewer items than it declares"))?;
                let kind = u32_at(it, 8).unwrap_or(0);
                Ok(Section {
                    gpa: u32_at(it, 0).unwrap_or(0),
                    size: u32_at(it, 4).unwrap_or(0),
                    kind: SectionType::from_u32(kind).ok_or(SnpError::UnknownSection(kind))?,
                })
            })
            .collect()
    }
}

/// The footer table's entries, walking backwards from the footer entry.
fn parse_footer_table(data: &[u8]) -> Result<Vec<Entry<'_>>, SnpError> {
    let Some(footer_at) = data.len().checked_sub(32 + ENTRY_TRAILER) else {
        return Ok(Vec::new());
    };
    let footer = &data[footer_at..footer_at + ENTRY_TRAILER];
    if footer[2..18] != guid_le(FOOTER_TABLE) {
        return Ok(Vec::new());
    }
    let total = u16_at(footer, 0).unwrap_or(0) as usize;
    let Some(table_size) = total.checked_sub(ENTRY_TRAILER) else {
        return Ok(Vec::new());
    };
    let start = footer_at
        .checked_sub(table_size)
        .ok_or(SnpError::BadMetadata("footer table larger than the image"))?;
    let mut rest = &data[start..footer_at];
    let mut entries = Vec::new();
    while rest.len() >= ENTRY_TRAILER {
        let trailer = &rest[rest.len() - ENTRY_TRAILER..];
        let size = u16_at(trailer, 0).unwrap_or(0) as usize;
        if size < ENTRY_TRAILER || size > rest.len() {
            return Err(SnpError::BadMetadata(
                "footer table entry with an invalid size",
            ));
        }
        let guid: [u8; 16] = trailer[2..18].try_into().expect("16 bytes");
        entries.push((guid, &rest[rest.len() - size..rest.len() - ENTRY_TRAILER]));
        rest = &rest[..rest.len() - size];
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::{guid_le, Ovmf};

    #[test]
    fn guid_is_mixed_endian() {
        assert_eq!(
            hex::encode(guid_le("9438d606-4f22-4cc9-b479-a793d411fd21")),
            "06d63894224fc94cb479a793d411fd21"
        );
    }

    /// The host chooses the firmware (`--ovmf`): a footer table or SEV metadata with any byte of the
    /// last 4 KiB changed, or the image cut short, parses to entries or an error, never a panic.
    /// Bookworm's OVMF.fd (package ovmf, which scripts/deps.sh installs) carries both.
    #[test]
    fn damaged_firmware_tails_are_errors_not_panics() {
        let path = "/usr/share/ovmf/OVMF.fd";
        let full = std::fs::read(path)
            .unwrap_or_else(|e| panic!("{path}: {e} (apt-get install ovmf: scripts/deps.sh)"));
        let mut tail = full[full.len() - (64 << 10)..].to_vec();
        let ovmf = Ovmf::parse(&tail).expect("the pinned firmware's tail parses");
        assert!(
            ovmf.sev_es_reset_eip().is_ok(),
            "bookworm's OVMF has the SEV-ES reset block"
        );
        let len = tail.len();
        for at in len - 4096..len {
            let original = tail[at];
            for v in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                tail[at] = v;
                if let Ok(o) = Ovmf::parse(&tail) {
                    let _ = o.sev_es_reset_eip();
                    let _ = o.sev_hashes_table_gpa();
                }
            }
            tail[at] = original;
        }
        for cut in [0, 1, 17, 18, 49, 50, 51, 4096, len - 1] {
            let _ = Ovmf::parse(&tail[len - cut..]);
            let _ = Ovmf::parse(&tail[..len - cut]);
        }
    }
}
