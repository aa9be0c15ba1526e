//! One-line, human-readable descriptions of event data (PFP §10.4 event data structures, UEFI
//! variable and device-path layouts, and the conventions of GRUB, shim, systemd-stub and the Linux
//! EFI stub). Decoding is best effort and total: anything unexpected falls back to a byte count and
//! a hex prefix, never to a panic. Descriptions are for people; verification compares digests.

use super::devpath::{device_path_to_text, file_path};
use super::replay::STARTUP_LOCALITY_SIGNATURE;
use super::text::{ascii_text, guid_to_string, utf16_text};
#[cfg(test)]
use super::HashAlg;
use super::{Event, EventType};

/// Tag of the Linux EFI stub's LoadOptions event (`EFISTUB_EVENT_TAG_ID` for the cmdline,
/// `drivers/firmware/efi/libstub/efistub.h`).
pub const LINUX_TAG_LOAD_OPTIONS: u32 = 0x8F3B_22ED;
/// Tag of the Linux EFI stub's initrd event.
pub const LINUX_TAG_INITRD: u32 = 0x8F3B_22EC;
/// systemd-stub measures UKI sections into PCR 11 (`TPM2_PCR_KERNEL_BOOT`).
const SYSTEMD_STUB_SECTIONS_PCR: u32 = 11;
/// `sizeof(EFI_PARTITION_TABLE_HEADER)` as edk2 logs it.
const GPT_HEADER_LEN: usize = 92;
/// How many bytes of unrecognised data a description shows in hex.
const HEX_PREVIEW_LEN: usize = 16;

const KNOWN_GUIDS: [(&str, &str); 12] = [
    (
        "8be4df61-93ca-11d2-aa0d-00e098032b8c",
        "EFI_GLOBAL_VARIABLE",
    ),
    (
        "d719b2cb-3d3a-4596-a3bc-dad00e67656f",
        "EFI_IMAGE_SECURITY_DATABASE",
    ),
    ("605dab50-e046-4300-abb6-3dd810dd8b23", "SHIM_LOCK"),
    ("a5c059a1-94e4-4aa7-87b5-ab155c2bf072", "EFI_CERT_X509"),
    ("c1c41626-504c-4092-aca9-41f936934328", "EFI_CERT_SHA256"),
    ("eb9d2d31-2d88-11d3-9a16-0090273fc14d", "SMBIOS"),
    ("f2fd1544-9794-4a2c-992e-e5bbcf20e394", "SMBIOS3"),
    ("eb9d2d30-2d88-11d3-9a16-0090273fc14d", "ACPI 1.0"),
    ("8868e871-e4f1-11d3-bc22-0080c73c8881", "ACPI 2.0"),
    (
        "55c5d1f8-04cd-46b5-8a20-e56cbb3052d0",
        "systemd-stub kernel image in memory",
    ),
    (
        "5568e427-68fc-4f3d-ac74-ca555231cc68",
        "LINUX_EFI_INITRD_MEDIA",
    ),
    (
        "77fa9abd-0359-4d32-bd60-28f4e78f784b",
        "Microsoft signature owner",
    ),
];

/// Well-known name of a GUID (as produced by [`guid_to_string`]), if any.
pub fn known_guid_name(guid: &str) -> Option<&'static str> {
    KNOWN_GUIDS
        .iter()
        .find(|(g, _)| *g == guid)
        .map(|(_, n)| *n)
}

/// A string quoted with control characters escaped, safe to print on one terminal line.
fn quote(s: &str) -> String {
    format!("{s:?}")
}

/// "1 byte", "2 bytes".
fn count(n: usize, what: &str) -> String {
    match (n, what) {
        (1, _) => format!("1 {what}"),
        (_, w) if w.ends_with('h') => format!("{n} {w}es"),
        _ => format!("{n} {what}s"),
    }
}

/// Size and a hex preview.
fn hex_preview(data: &[u8]) -> String {
    let preview = hex::encode(&data[..data.len().min(HEX_PREVIEW_LEN)]);
    let more = if data.len() > HEX_PREVIEW_LEN {
        "…"
    } else {
        ""
    };
    format!("{}: {preview}{more}", count(data.len(), "byte"))
}

/// Minimum length of a NUL-terminated ASCII label worth showing before binary data
/// (e.g. GCE's `"GCE NonHostInfo\0"` followed by its confidential-computing type bytes).
const MIN_LABEL_LEN: usize = 4;

/// Fallback: text if it is text, a leading ASCII label if there is one, else a hex preview.
fn generic(data: &[u8]) -> String {
    if data.is_empty() {
        return "(no data)".into();
    }
    if let Some(t) = ascii_text(data) {
        return quote(&t);
    }
    if data.len() >= 4 {
        if let Some(t) = utf16_text(data).filter(|t| !t.is_empty()) {
            return quote(&t);
        }
    }
    if let Some(nul) = data
        .iter()
        .position(|&b| b == 0)
        .filter(|&n| n >= MIN_LABEL_LEN)
    {
        if let Some(label) = ascii_text(&data[..nul]) {
            return format!("{} + {}", quote(&label), hex_preview(&data[nul + 1..]));
        }
    }
    hex_preview(data)
}

/// Little-endian field readers over event data; `None` past the end.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(b: &'a [u8]) -> Self {
        Cursor { b, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn guid(&mut self) -> Option<String> {
        Some(guid_to_string(self.take(16)?.try_into().ok()?))
    }
    /// A length that must fit in the bytes left (so it can size a read, never an allocation).
    fn len64(&mut self, unit: usize) -> Option<usize> {
        let n = usize::try_from(self.u64()?).ok()?;
        (n.checked_mul(unit)? <= self.rest().len()).then_some(n)
    }
    fn rest(&self) -> &'a [u8] {
        &self.b[self.pos.min(self.b.len())..]
    }
}

/// The description of `event` (see the module documentation).
pub(super) fn describe(event: &Event) -> String {
    let data = &event.data;
    let t = event.event_type;
    let specific = match t {
        EventType::EV_NO_ACTION => Some(no_action(data)),
        EventType::EV_SEPARATOR => separator(data),
        EventType::EV_EFI_ACTION | EventType::EV_ACTION => ascii_text(data).map(|s| quote(&s)),
        EventType::EV_EVENT_TAG => tagged(data),
        EventType::EV_S_CRTM_VERSION => {
            utf16_text(data).map(|s| format!("CRTM version {}", quote(&s)))
        }
        EventType::EV_S_CRTM_CONTENTS | EventType::EV_EFI_PLATFORM_FIRMWARE_BLOB => blob(data),
        EventType::EV_EFI_PLATFORM_FIRMWARE_BLOB2 => blob2(data),
        EventType::EV_POST_CODE | EventType::EV_POST_CODE2 => {
            ascii_text(data).map(|s| quote(&s)).or_else(|| blob(data))
        }
        EventType::EV_EFI_VARIABLE_DRIVER_CONFIG
        | EventType::EV_EFI_VARIABLE_BOOT
        | EventType::EV_EFI_VARIABLE_BOOT2
        | EventType::EV_EFI_VARIABLE_AUTHORITY => variable(t, data),
        EventType::EV_EFI_BOOT_SERVICES_APPLICATION
        | EventType::EV_EFI_BOOT_SERVICES_DRIVER
        | EventType::EV_EFI_RUNTIME_SERVICES_DRIVER => image_load(data),
        EventType::EV_EFI_GPT_EVENT | EventType::EV_EFI_GPT_EVENT2 => gpt(data),
        EventType::EV_EFI_HANDOFF_TABLES => handoff_tables(&mut Cursor::new(data), None),
        EventType::EV_EFI_HANDOFF_TABLES2 => handoff_tables2(data),
        EventType::EV_IPL => ipl(event),
        _ => None,
    };
    specific.unwrap_or_else(|| generic(data))
}

fn no_action(data: &[u8]) -> String {
    if let Some([locality]) = data.strip_prefix(STARTUP_LOCALITY_SIGNATURE.as_slice()) {
        return format!("StartupLocality {locality}");
    }
    if data.starts_with(b"Spec ID Event") {
        let sig = ascii_text(&data[..data.len().min(16)]).unwrap_or_default();
        return format!("{sig} header");
    }
    if data.starts_with(b"SP800-155 Event3") {
        return sp800_155(data)
            .unwrap_or_else(|| format!("SP800-155 Event3 ({} bytes)", data.len()));
    }
    for sig in ["NvIndexInstance", "NvIndexDynamic"] {
        if data.starts_with(sig.as_bytes()) {
            return format!("{sig} ({} bytes)", data.len());
        }
    }
    generic(data)
}

/// `TCG_Sp800_155_PlatformId_Event3` (PFP §10.4.5.4): platform and firmware identity strings of a
/// reference-integrity-manifest announcement.
fn sp800_155(data: &[u8]) -> Option<String> {
    let mut c = Cursor::new(data);
    c.take(16)?;
    let _vendor_id = c.u32()?;
    let _manifest_guid = c.guid()?;
    let string = |c: &mut Cursor<'_>| -> Option<String> {
        let n = usize::from(c.u8()?);
        ascii_text(c.take(n)?)
    };
    let manufacturer = string(&mut c)?;
    let model = string(&mut c)?;
    let version = string(&mut c)?;
    let fw_manufacturer = string(&mut c)?;
    let _fw_manufacturer_id = c.u32()?;
    let fw_version = string(&mut c)?;
    Some(format!(
        "SP800-155 Event3: platform {} {} {}, firmware {} {}",
        quote(&manufacturer),
        quote(&model),
        quote(&version),
        quote(&fw_manufacturer),
        quote(&fw_version)
    ))
}

fn separator(data: &[u8]) -> Option<String> {
    let value = u32::from_le_bytes(data.try_into().ok()?);
    Some(match value {
        0 => "separator".into(),
        1 => "separator (error: 0x00000001)".into(),
        v => format!("separator 0x{v:08x}"),
    })
}

/// `TCG_PCClientTaggedEvent` {taggedEventID u32, taggedEventDataSize u32, data}.
fn tagged(data: &[u8]) -> Option<String> {
    let mut c = Cursor::new(data);
    let id = c.u32()?;
    let size = usize::try_from(c.u32()?).ok()?;
    let body = c.take(size)?;
    let text = ascii_text(body)
        .map(|s| quote(&s))
        .unwrap_or_else(|| generic(body));
    let who = match id {
        LINUX_TAG_LOAD_OPTIONS | LINUX_TAG_INITRD => "Linux EFI stub: ",
        _ => "",
    };
    Some(format!("{who}{text} (tag 0x{id:08x})"))
}

/// `UEFI_PLATFORM_FIRMWARE_BLOB` {BlobBase u64, BlobLength u64}.
fn blob(data: &[u8]) -> Option<String> {
    let mut c = Cursor::new(data);
    let (base, len) = (c.u64()?, c.u64()?);
    c.rest()
        .is_empty()
        .then(|| format!("firmware blob at 0x{base:x}, 0x{len:x} bytes"))
}

/// `UEFI_PLATFORM_FIRMWARE_BLOB2` {BlobDescriptionSize u8, description, base u64, length u64}.
fn blob2(data: &[u8]) -> Option<String> {
    let mut c = Cursor::new(data);
    let n = usize::from(c.u8()?);
    let desc = c.take(n)?;
    let (base, len) = (c.u64()?, c.u64()?);
    let name = ascii_text(desc).unwrap_or_else(|| hex::encode(desc));
    Some(format!(
        "firmware blob {} at 0x{base:x}, 0x{len:x} bytes",
        quote(&name)
    ))
}

/// `UEFI_VARIABLE_DATA` {VariableName GUID, UnicodeNameLength u64, VariableDataLength u64,
/// UnicodeName, VariableData}.
fn variable(t: EventType, data: &[u8]) -> Option<String> {
    let mut c = Cursor::new(data);
    let guid = c.guid()?;
    let name_len = usize::try_from(c.u64()?).ok()?;
    let data_len = usize::try_from(c.u64()?).ok()?;
    let name = utf16_text(c.take(name_len.checked_mul(2)?)?)?;
    let value = c.take(data_len)?;
    let vendor = match known_guid_name(&guid) {
        Some("EFI_GLOBAL_VARIABLE" | "EFI_IMAGE_SECURITY_DATABASE") => String::new(),
        Some(known) => format!(" ({known})"),
        None => format!(" ({guid})"),
    };
    let summary = if t == EventType::EV_EFI_VARIABLE_AUTHORITY {
        signature_data(value)
    } else {
        variable_value(&name, value)
    };
    Some(format!("{name}{vendor}: {summary}"))
}

fn variable_value(name: &str, value: &[u8]) -> String {
    if value.is_empty() {
        return "absent (0 bytes)".into();
    }
    if name == "BootOrder" && value.len().is_multiple_of(2) {
        let list: Vec<String> = value
            .chunks_exact(2)
            .map(|c| format!("{:04X}", u16::from_le_bytes([c[0], c[1]])))
            .collect();
        return list.join(",");
    }
    if is_boot_option(name) {
        if let Some(s) = load_option(value) {
            return s;
        }
    }
    if matches!(
        name,
        "PK" | "KEK" | "db" | "dbx" | "dbt" | "dbr" | "MokList" | "MokListX"
    ) {
        if let Some(s) = signature_lists(value) {
            return s;
        }
    }
    if value.len() <= 8 {
        return format!("0x{}", hex::encode(value));
    }
    count(value.len(), "byte")
}

fn is_boot_option(name: &str) -> bool {
    name.len() == 8 && name.starts_with("Boot") && name[4..].chars().all(|c| c.is_ascii_hexdigit())
}

/// `EFI_LOAD_OPTION` {Attributes u32, FilePathListLength u16, Description (UTF-16, NUL),
/// FilePathList, OptionalData}.
fn load_option(v: &[u8]) -> Option<String> {
    let mut c = Cursor::new(v);
    let _attributes = c.u32()?;
    let path_len = usize::from(u16::from_le_bytes(c.take(2)?.try_into().ok()?));
    let rest = c.rest();
    let nul = rest.chunks_exact(2).position(|u| u == [0, 0])?;
    let desc = utf16_text(&rest[..nul * 2])?;
    let path = rest.get(nul * 2 + 2..nul * 2 + 2 + path_len)?;
    Some(format!("{} {}", quote(&desc), device_path_to_text(path)))
}

/// Size of `EFI_SIGNATURE_LIST`'s fixed header: SignatureType GUID, SignatureListSize u32,
/// SignatureHeaderSize u32, SignatureSize u32.
const SIGNATURE_LIST_HEADER_LEN: usize = 16 + 4 + 4 + 4;
/// `EFI_SIGNATURE_DATA.SignatureOwner`.
const SIGNATURE_OWNER_LEN: usize = 16;

/// Summary of an `EFI_SIGNATURE_LIST` sequence: entries per signature type, and the subject
/// common names of X.509 entries.
fn signature_lists(v: &[u8]) -> Option<String> {
    let mut c = Cursor::new(v);
    let mut kinds: Vec<(&str, usize)> = Vec::new();
    let mut names = Vec::new();
    while !c.rest().is_empty() {
        let kind = c.guid()?;
        let list_size = usize::try_from(c.u32()?).ok()?;
        let header_size = usize::try_from(c.u32()?).ok()?;
        let sig_size = usize::try_from(c.u32()?).ok()?;
        let body_len = list_size
            .checked_sub(SIGNATURE_LIST_HEADER_LEN)?
            .checked_sub(header_size)?;
        c.take(header_size)?;
        let body = c.take(body_len)?;
        let name = match known_guid_name(&kind) {
            Some("EFI_CERT_X509") => "X.509 certificate",
            Some("EFI_CERT_SHA256") => "SHA-256 hash",
            _ => "signature",
        };
        if sig_size > SIGNATURE_OWNER_LEN {
            for entry in body.chunks_exact(sig_size) {
                if let Some(cn) = x509_subject_cn(&entry[SIGNATURE_OWNER_LEN..]) {
                    names.push(quote(&cn));
                }
            }
        }
        let n = body_len.checked_div(sig_size).unwrap_or(0);
        match kinds.iter_mut().find(|(k, _)| *k == name) {
            Some((_, total)) => *total += n,
            None => kinds.push((name, n)),
        }
    }
    if kinds.is_empty() {
        return Some("empty".into());
    }
    let summary: Vec<String> = kinds.iter().map(|(k, n)| count(*n, k)).collect();
    let names = if names.is_empty() {
        String::new()
    } else {
        format!(" ({})", names.join(", "))
    };
    Some(format!("{}{names}", summary.join(", ")))
}

/// Data of an EV_EFI_VARIABLE_AUTHORITY event: an `EFI_SIGNATURE_DATA` {SignatureOwner GUID,
/// SignatureData} from db, or — as shim logs them — a bare certificate or an SBAT text.
fn signature_data(v: &[u8]) -> String {
    if let Some(text) = ascii_text(v).filter(|t| !t.is_empty()) {
        return quote(&text);
    }
    if let Some(cn) = x509_subject_cn(v) {
        return format!("X.509 certificate {}", quote(&cn));
    }
    let mut c = Cursor::new(v);
    match c.guid() {
        Some(owner) => {
            let who = known_guid_name(&owner)
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            let what = match x509_subject_cn(c.rest()) {
                Some(cn) => format!("X.509 certificate {}", quote(&cn)),
                None => count(c.rest().len(), "byte"),
            };
            format!("{what}, owner {owner}{who}")
        }
        None => count(v.len(), "byte"),
    }
}

/// One DER TLV: (tag, contents, rest). Definite lengths up to 4 length bytes.
fn der_tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (len <= rest.len()).then(|| (tag, &rest[..len], &rest[len..]))
}

/// DER tags used to walk to the subject of an X.509 certificate.
const DER_SEQUENCE: u8 = 0x30;
const DER_SET: u8 = 0x31;
const DER_OID: u8 = 0x06;
const DER_EXPLICIT_0: u8 = 0xA0;
/// OID 2.5.4.3 (id-at-commonName), DER-encoded contents.
const OID_COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03];

/// The subject commonName of a DER X.509 certificate (Certificate → TBSCertificate → skip
/// version, serialNumber, signature, issuer, validity → subject).
fn x509_subject_cn(der: &[u8]) -> Option<String> {
    let (tag, cert, _) = der_tlv(der)?;
    if tag != DER_SEQUENCE {
        return None;
    }
    let (tag, mut tbs, _) = der_tlv(cert)?;
    if tag != DER_SEQUENCE {
        return None;
    }
    if tbs.first() == Some(&DER_EXPLICIT_0) {
        tbs = der_tlv(tbs)?.2;
    }
    for _ in 0..4 {
        tbs = der_tlv(tbs)?.2; // serialNumber, signature, issuer, validity
    }
    let (tag, mut subject, _) = der_tlv(tbs)?;
    if tag != DER_SEQUENCE {
        return None;
    }
    let mut cn = None;
    while let Some((tag, rdn, rest)) = der_tlv(subject) {
        subject = rest;
        if tag != DER_SET {
            continue;
        }
        let (_, attribute, _) = der_tlv(rdn)?;
        let (tag, oid, value) = der_tlv(attribute)?;
        if tag == DER_OID && oid == OID_COMMON_NAME {
            let (_, text, _) = der_tlv(value)?;
            cn = Some(String::from_utf8_lossy(text).into_owned());
        }
    }
    cn
}

/// `EFI_IMAGE_LOAD_EVENT` {ImageLocationInMemory, ImageLengthInMemory, ImageLinkTimeAddress,
/// LengthOfDevicePath (UINTN, 64-bit), DevicePath}.
fn image_load(data: &[u8]) -> Option<String> {
    let mut c = Cursor::new(data);
    let (_base, length, _link) = (c.u64()?, c.u64()?, c.u64()?);
    let path_len = c.len64(1)?;
    let path = c.take(path_len)?;
    if path.is_empty() {
        return Some(format!("PE image of 0x{length:x} bytes, no device path"));
    }
    let text = device_path_to_text(path);
    Some(match file_path(path) {
        Some(file) => format!("PE image {file} ({text})"),
        None => {
            let note = KNOWN_GUIDS
                .iter()
                .find(|(g, _)| text.contains(g))
                .map(|(_, n)| format!(" [{n}]"))
                .unwrap_or_default();
            format!("PE image {text}{note}")
        }
    })
}

/// `UEFI_GPT_DATA` {EFI_PARTITION_TABLE_HEADER, NumberOfPartitions, Partitions[]}.
fn gpt(data: &[u8]) -> Option<String> {
    let header = data.get(..GPT_HEADER_LEN)?;
    if &header[..8] != b"EFI PART" {
        return None;
    }
    let disk = guid_to_string(header[56..72].try_into().ok()?);
    let entry_size = usize::try_from(u32::from_le_bytes(header[84..88].try_into().ok()?)).ok()?;
    let mut c = Cursor::new(&data[GPT_HEADER_LEN..]);
    let count = c.len64(entry_size.max(1))?;
    let mut names = Vec::new();
    for _ in 0..count {
        let entry = c.take(entry_size)?;
        let name = entry.get(56..128).and_then(utf16_text).unwrap_or_default();
        names.push(if name.is_empty() {
            "(unnamed)".to_string()
        } else {
            name
        });
    }
    Some(format!(
        "GPT disk {disk}, {count} partitions: {}",
        names.join(", ")
    ))
}

/// `UEFI_HANDOFF_TABLE_POINTERS` {NumberOfTables u64, EFI_CONFIGURATION_TABLE[] {GUID, pointer}}.
fn handoff_tables(c: &mut Cursor<'_>, label: Option<String>) -> Option<String> {
    let n = c.len64(24)?;
    let mut tables = Vec::new();
    for _ in 0..n {
        let guid = c.guid()?;
        let ptr = c.u64()?;
        let name = known_guid_name(&guid).map(str::to_string).unwrap_or(guid);
        tables.push(format!("{name} at 0x{ptr:x}"));
    }
    let prefix = label.map(|l| format!("{} ", quote(&l))).unwrap_or_default();
    Some(format!(
        "{prefix}{}: {}",
        count(n, "configuration table"),
        tables.join(", ")
    ))
}

/// `UEFI_HANDOFF_TABLE_POINTERS2` {TableDescriptionSize u8, description, then as above}.
fn handoff_tables2(data: &[u8]) -> Option<String> {
    let mut c = Cursor::new(data);
    let n = usize::from(c.u8()?);
    let desc = ascii_text(c.take(n)?)?;
    handoff_tables(&mut c, Some(desc))
}

/// EV_IPL: systemd-stub section names (UTF-16), systemd-boot/stub command lines (UTF-16), GRUB
/// and shim strings (ASCII).
fn ipl(event: &Event) -> Option<String> {
    let data = &event.data;
    // ASCII first: a NUL-terminated ASCII string of even length also decodes as (CJK) UTF-16,
    // while real UTF-16 text has NUL high bytes that ASCII decoding rejects.
    if let Some(text) = ascii_text(data) {
        return Some(quote(&text));
    }
    if let Some(text) = utf16_text(data).filter(|t| !t.is_empty() && data.len() >= 4) {
        if event.pcr == SYSTEMD_STUB_SECTIONS_PCR && text.starts_with('.') && !text.contains(' ') {
            return Some(uki_section(event, &text));
        }
        return Some(quote(&text));
    }
    None
}

/// systemd-stub logs each section twice with the same data (its name); the first digest is
/// `H(name ‖ NUL)`, the second the section content. Tell them apart by that digest.
fn uki_section(event: &Event, name: &str) -> String {
    let mut name_z = name.as_bytes().to_vec();
    name_z.push(0);
    let is_name = event.digests.iter().find_map(|d| {
        let h = d.alg.hash(&name_z)?;
        Some(h == d.digest)
    });
    match is_name {
        Some(true) => format!("UKI section name {name}"),
        Some(false) => format!("UKI section {name}"),
        None => format!("UKI section {name} (name or content)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::EventDigest;

    fn event(pcr: u32, t: EventType, data: &[u8]) -> Event {
        Event {
            pcr,
            event_type: t,
            digests: vec![],
            data: data.to_vec(),
        }
    }

    fn utf16z(s: &str) -> Vec<u8> {
        s.encode_utf16()
            .chain([0])
            .flat_map(u16::to_le_bytes)
            .collect()
    }

    #[test]
    fn guid_text_is_mixed_endian() {
        // EFI_GLOBAL_VARIABLE as it appears in event data (docs/measured-boot.md §9).
        let raw = [
            0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03,
            0x2b, 0x8c,
        ];
        assert_eq!(guid_to_string(&raw), "8be4df61-93ca-11d2-aa0d-00e098032b8c");
    }

    #[test]
    fn actions_separators_tags() {
        assert_eq!(
            event(
                4,
                EventType::EV_EFI_ACTION,
                b"Calling EFI Application from Boot Option"
            )
            .description(),
            "\"Calling EFI Application from Boot Option\""
        );
        assert_eq!(
            event(4, EventType::EV_SEPARATOR, &[0; 4]).description(),
            "separator"
        );
        let mut tag = LINUX_TAG_INITRD.to_le_bytes().to_vec();
        tag.extend(13u32.to_le_bytes());
        tag.extend(b"Linux initrd\0");
        assert_eq!(
            event(9, EventType::EV_EVENT_TAG, &tag).description(),
            "Linux EFI stub: \"Linux initrd\" (tag 0x8f3b22ec)"
        );
    }

    #[test]
    fn uki_section_name_vs_content() {
        let name = utf16z(".cmdline");
        let mut e = event(11, EventType::EV_IPL, &name);
        e.digests = vec![EventDigest {
            alg: HashAlg::SHA256,
            digest: HashAlg::SHA256.hash(b".cmdline\0").unwrap(),
        }];
        assert_eq!(e.description(), "UKI section name .cmdline");
        e.digests[0].digest = vec![0; 32];
        assert_eq!(e.description(), "UKI section .cmdline");
    }

    #[test]
    fn secure_boot_variable() {
        let mut v = vec![
            0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03,
            0x2b, 0x8c,
        ];
        v.extend(10u64.to_le_bytes());
        v.extend(1u64.to_le_bytes());
        v.extend("SecureBoot".encode_utf16().flat_map(u16::to_le_bytes));
        v.push(1);
        assert_eq!(
            event(7, EventType::EV_EFI_VARIABLE_DRIVER_CONFIG, &v).description(),
            "SecureBoot: 0x01"
        );
        // Truncated: falls back, does not panic.
        let short = &v[..v.len() - 1];
        assert!(event(7, EventType::EV_EFI_VARIABLE_DRIVER_CONFIG, short)
            .description()
            .contains("bytes"));
    }

    #[test]
    fn unknown_binary_falls_back_to_hex() {
        assert_eq!(
            event(1, EventType(0x4242), &[1, 2, 0xff]).description(),
            "3 bytes: 0102ff"
        );
        assert_eq!(event(1, EventType(0x4242), &[]).description(), "(no data)");
    }
}
