//! UEFI device paths (UEFI 2.10 §10.3) rendered in the text form of §10.6, enough of it to name
//! what firmware loaded: PCI/ACPI/SCSI/NVMe/virtio hops, `HD(…)` partitions, firmware-volume files
//! and — most useful — file path nodes such as `\EFI\BOOT\BOOTX64.EFI`.

use super::text::{guid_to_string, utf16_text};

/// Node types (`EFI_DEVICE_PATH_PROTOCOL.Type`).
const HARDWARE: u8 = 0x01;
const ACPI: u8 = 0x02;
const MESSAGING: u8 = 0x03;
const MEDIA: u8 = 0x04;
const BBS: u8 = 0x05;
const END: u8 = 0x7F;
/// End sub-types: end of this instance (more follow) / end of the whole path.
const END_INSTANCE: u8 = 0x01;
/// Size of a node header: Type u8, SubType u8, Length u16.
const NODE_HEADER_LEN: usize = 4;
/// EISA id of a PCI root bridge, PNP0A03, as `EFI_PNP_ID(0x0A03)`.
const PNP0A03: u32 = 0x0A03_41D0;
/// EISA id of a PCIe root bridge, PNP0A08.
const PNP0A08: u32 = 0x0A08_41D0;

/// A device path as text, nodes joined by `/`. A malformed node stops decoding and appends
/// `<malformed: …>` so the rest of an event description is still shown.
pub fn device_path_to_text(mut path: &[u8]) -> String {
    let mut parts: Vec<String> = Vec::new();
    while !path.is_empty() {
        if path.len() < NODE_HEADER_LEN {
            parts.push(format!("<malformed: {} stray bytes>", path.len()));
            break;
        }
        let (kind, sub) = (path[0], path[1]);
        let len = usize::from(u16::from_le_bytes([path[2], path[3]]));
        if len < NODE_HEADER_LEN || len > path.len() {
            parts.push(format!(
                "<malformed: node length {len}, {} bytes left>",
                path.len()
            ));
            break;
        }
        let body = &path[NODE_HEADER_LEN..len];
        path = &path[len..];
        if kind == END {
            if sub == END_INSTANCE {
                parts.push(",".into());
                continue;
            }
            break;
        }
        parts.push(node_text(kind, sub, body));
    }
    join(parts)
}

/// Only the file path nodes of a device path, concatenated (`\EFI\BOOT\BOOTX64.EFI`).
pub fn file_path(path: &[u8]) -> Option<String> {
    let mut rest = path;
    let mut out = String::new();
    while rest.len() >= NODE_HEADER_LEN {
        let len = usize::from(u16::from_le_bytes([rest[2], rest[3]]));
        if len < NODE_HEADER_LEN || len > rest.len() {
            break;
        }
        if rest[0] == MEDIA && rest[1] == 0x04 {
            let text = utf16_text(&rest[NODE_HEADER_LEN..len])?;
            if !(out.ends_with('\\') || text.starts_with('\\') || out.is_empty()) {
                out.push('\\');
            }
            out.push_str(&text);
        }
        rest = &rest[len..];
    }
    (!out.is_empty()).then_some(out)
}

fn join(parts: Vec<String>) -> String {
    let mut out = String::new();
    for p in parts {
        if !(out.is_empty() || p == "," || out.ends_with(',')) {
            out.push('/');
        }
        out.push_str(&p);
    }
    out
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}
fn guid_at(b: &[u8], at: usize) -> Option<String> {
    Some(guid_to_string(b.get(at..at + 16)?.try_into().ok()?))
}

fn node_text(kind: u8, sub: u8, body: &[u8]) -> String {
    let known = match kind {
        HARDWARE => hardware(sub, body),
        ACPI => acpi(sub, body),
        MESSAGING => messaging(sub, body),
        MEDIA => media(sub, body),
        BBS => Some(format!("BBS(0x{:x})", le_u16(body, 0).unwrap_or(0))),
        _ => None,
    };
    known.unwrap_or_else(|| format!("Path({kind},{sub},{})", hex::encode(body)))
}

fn hardware(sub: u8, b: &[u8]) -> Option<String> {
    match sub {
        0x01 => Some(format!("Pci(0x{:x},0x{:x})", b.get(1)?, b.first()?)),
        0x03 => Some(format!(
            "MemoryMapped(0x{:x},0x{:x},0x{:x})",
            le_u32(b, 0)?,
            le_u64(b, 4)?,
            le_u64(b, 12)?
        )),
        0x04 => vendor("VenHw", b),
        _ => None,
    }
}

fn acpi(sub: u8, b: &[u8]) -> Option<String> {
    if sub != 0x01 {
        return None;
    }
    let (hid, uid) = (le_u32(b, 0)?, le_u32(b, 4)?);
    Some(match hid {
        PNP0A03 => format!("PciRoot(0x{uid:x})"),
        PNP0A08 => format!("PcieRoot(0x{uid:x})"),
        _ => format!("Acpi(0x{hid:08x},0x{uid:x})"),
    })
}

fn messaging(sub: u8, b: &[u8]) -> Option<String> {
    match sub {
        0x02 => Some(format!("Scsi(0x{:x},0x{:x})", le_u16(b, 0)?, le_u16(b, 2)?)),
        0x05 => Some(format!("USB(0x{:x},0x{:x})", b.first()?, b.get(1)?)),
        0x0A => vendor("VenMsg", b),
        0x0B => Some(format!("MAC({})", hex::encode(b.get(0..6)?))),
        0x12 => Some(format!(
            "Sata(0x{:x},0x{:x},0x{:x})",
            le_u16(b, 0)?,
            le_u16(b, 2)?,
            le_u16(b, 4)?
        )),
        0x17 => Some(format!(
            "NVMe(0x{:x},{})",
            le_u32(b, 0)?,
            hex::encode(b.get(4..12)?)
        )),
        0x18 => Some(format!("Uri({})", String::from_utf8_lossy(b))),
        _ => None,
    }
}

fn media(sub: u8, b: &[u8]) -> Option<String> {
    match sub {
        0x01 => hard_drive(b),
        0x02 => Some(format!(
            "CDROM(0x{:x},0x{:x},0x{:x})",
            le_u32(b, 0)?,
            le_u64(b, 4)?,
            le_u64(b, 12)?
        )),
        0x03 => vendor("VenMedia", b),
        0x04 => utf16_text(b),
        0x06 => Some(format!("FvFile({})", guid_at(b, 0)?)),
        0x07 => Some(format!("Fv({})", guid_at(b, 0)?)),
        0x08 => Some(format!(
            "Offset(0x{:x},0x{:x})",
            le_u64(b, 4)?,
            le_u64(b, 12)?
        )),
        _ => None,
    }
}

/// `HD(partition, GPT|MBR, signature, start, size)`.
fn hard_drive(b: &[u8]) -> Option<String> {
    let (number, start, size) = (le_u32(b, 0)?, le_u64(b, 4)?, le_u64(b, 12)?);
    let signature = b.get(20..36)?;
    let (format, signature_type) = (*b.get(36)?, *b.get(37)?);
    let sig = match signature_type {
        0x02 => format!("GPT,{}", guid_to_string(signature.try_into().ok()?)),
        0x01 => format!("MBR,0x{:08x}", le_u32(signature, 0)?),
        _ => format!("{format},{signature_type}"),
    };
    Some(format!("HD({number},{sig},0x{start:x},0x{size:x})"))
}

fn vendor(name: &str, b: &[u8]) -> Option<String> {
    let guid = guid_at(b, 0)?;
    let rest = &b[16..];
    Some(if rest.is_empty() {
        format!("{name}({guid})")
    } else {
        format!("{name}({guid},{})", hex::encode(rest))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(kind: u8, sub: u8, body: &[u8]) -> Vec<u8> {
        let mut n = vec![kind, sub];
        n.extend_from_slice(&((body.len() + 4) as u16).to_le_bytes());
        n.extend_from_slice(body);
        n
    }

    fn utf16z(s: &str) -> Vec<u8> {
        s.encode_utf16()
            .chain([0])
            .flat_map(u16::to_le_bytes)
            .collect()
    }

    #[test]
    fn disk_boot_path() {
        let mut p = node(ACPI, 1, &[0xD0, 0x41, 0x03, 0x0A, 0, 0, 0, 0]);
        p.extend(node(HARDWARE, 1, &[0, 3]));
        p.extend(node(MESSAGING, 2, &[1, 0, 0, 0]));
        let mut hd = 1u32.to_le_bytes().to_vec();
        hd.extend(0x800u64.to_le_bytes());
        hd.extend(0x1000u64.to_le_bytes());
        hd.extend([0x11; 16]);
        hd.extend([2, 2]);
        p.extend(node(MEDIA, 1, &hd));
        p.extend(node(MEDIA, 4, &utf16z("\\EFI\\BOOT\\BOOTX64.EFI")));
        p.extend(node(END, 0xFF, &[]));
        assert_eq!(
            device_path_to_text(&p),
            "PciRoot(0x0)/Pci(0x3,0x0)/Scsi(0x1,0x0)/HD(1,GPT,11111111-1111-1111-1111-111111111111,0x800,0x1000)/\\EFI\\BOOT\\BOOTX64.EFI"
        );
        assert_eq!(file_path(&p).as_deref(), Some("\\EFI\\BOOT\\BOOTX64.EFI"));
    }

    #[test]
    fn malformed_nodes_do_not_panic() {
        assert_eq!(
            device_path_to_text(&[4, 4, 2, 0]),
            "<malformed: node length 2, 4 bytes left>"
        );
        assert_eq!(
            device_path_to_text(&[4, 4, 0xFF, 0xFF, 0]),
            "<malformed: node length 65535, 5 bytes left>"
        );
        assert_eq!(device_path_to_text(&[1]), "<malformed: 1 stray bytes>");
        assert_eq!(device_path_to_text(&node(HARDWARE, 1, &[])), "Path(1,1,)");
    }
}
