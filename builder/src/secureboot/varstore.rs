//! OVMF's non-volatile variable store (`OVMF_VARS*.fd`): parse Debian's template and write a
//! copy with the owner's Secure Boot keys enrolled.
//!
//! Layout (edk2 `MdePkg/Include/Pi/PiFirmwareVolume.h`, `MdeModulePkg/Include/Guid/VariableFormat.h`):
//! EFI_FIRMWARE_VOLUME_HEADER (FileSystemGuid = EFI_SYSTEM_NV_DATA_FV_GUID, "_FVH", 16-bit
//! header checksum) → VARIABLE_STORE_HEADER (Signature = gEfiAuthenticatedVariableGuid, Size,
//! Format 0x5A, State 0xFE) → AUTHENTICATED_VARIABLE_HEADER records, each followed by the
//! UTF-16 name (with NUL) and the data, 4-byte aligned; erased flash (0xFF) after the last one.
//! The fault-tolerant-write areas after the variable store are left untouched.
//!
//! A pre-built store holds the variables directly, without the authentication descriptors a
//! runtime `SetVariable` would need: PK, KEK, db (and dbx) carry NV|BS|RT|TIME_BASED_AUTH and
//! their timestamp. With PK present edk2 starts in user mode; `SecureBootEnable` = 1 and
//! `CustomMode` = 0 are written explicitly, as `virt-fw-vars --secure-boot` does, so the
//! result does not depend on edk2 defaults.

use anyhow::{bail, ensure, Context, Result};

use super::authvar::PolicyVar;
use super::esl;
use super::keys::SecureBootKeys;
use super::{attr, EfiTime, Guid, ENROLL_TIME};

/// EFI_SYSTEM_NV_DATA_FV_GUID: FileSystemGuid of the variable firmware volume.
const EFI_SYSTEM_NV_DATA_FV: Guid = Guid::from_fields(
    0xfff12b8d,
    0x7696,
    0x4c8b,
    [0xa9, 0x85, 0x27, 0x47, 0x07, 0x5b, 0x4f, 0x50],
);
/// gEfiAuthenticatedVariableGuid: VARIABLE_STORE_HEADER.Signature of the authenticated
/// variable format (time-based authenticated variables need this format).
const AUTHENTICATED_VARIABLE_STORE: Guid = Guid::from_fields(
    0xaaf32c78,
    0x947b,
    0x439a,
    [0xa1, 0x80, 0x2e, 0x14, 0x4e, 0xc3, 0x77, 0x92],
);
/// gEfiSecureBootEnableDisableGuid (OVMF/edk2 `SecureBootConfigDxe`): vendor of `SecureBootEnable`.
pub const SECURE_BOOT_ENABLE_DISABLE: Guid = Guid::from_fields(
    0xf0a30bc7,
    0xaf08,
    0x4556,
    [0x99, 0xc4, 0x00, 0x10, 0x09, 0xc9, 0x3a, 0x44],
);
/// gEfiCustomModeEnableGuid: vendor of `CustomMode`.
pub const CUSTOM_MODE_ENABLE: Guid = Guid::from_fields(
    0xc076ec0c,
    0x7028,
    0x4399,
    [0xa0, 0x72, 0x71, 0xee, 0x5c, 0x44, 0x8b, 0x9f],
);

/// EFI_FIRMWARE_VOLUME_HEADER field offsets.
mod fv {
    pub const FILE_SYSTEM_GUID: usize = 0x10;
    pub const FV_LENGTH: usize = 0x20;
    pub const SIGNATURE: usize = 0x28;
    pub const HEADER_LENGTH: usize = 0x30;
    pub const CHECKSUM: usize = 0x32;
    pub const SIGNATURE_VALUE: &[u8; 4] = b"_FVH";
    /// Up to and including the first BlockMap entry.
    pub const MIN_HEADER_LEN: usize = 0x48;
}

/// VARIABLE_STORE_HEADER layout and values.
mod vsh {
    pub const LEN: usize = 28;
    pub const SIZE: usize = 16;
    pub const FORMAT: usize = 20;
    pub const STATE: usize = 21;
    /// VARIABLE_STORE_FORMATTED.
    pub const FORMATTED: u8 = 0x5a;
    /// VARIABLE_STORE_HEALTHY.
    pub const HEALTHY: u8 = 0xfe;
}

/// AUTHENTICATED_VARIABLE_HEADER layout and values.
mod var {
    pub const HEADER_LEN: usize = 60;
    /// VARIABLE_DATA: StartId of every record.
    pub const START_ID: u16 = 0x55aa;
    /// VAR_ADDED state: a live variable.
    pub const ADDED: u8 = 0x3f;
    /// VAR_IN_DELETED_TRANSITION bit cleared: being replaced (still live if no newer copy).
    pub const IN_DELETED_TRANSITION: u8 = 0xfe;
    /// HEADER_ALIGNMENT.
    pub const ALIGN: usize = 4;
}

/// Erased flash.
const ERASED: u8 = 0xff;

/// One variable of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// Variable name (without NUL).
    pub name: String,
    /// VendorGuid.
    pub vendor: Guid,
    /// Attributes.
    pub attributes: u32,
    /// MonotonicCount (count-based authenticated variables; 0 otherwise).
    pub monotonic_count: u64,
    /// TimeStamp (time-based authenticated variables; zero otherwise), raw EFI_TIME.
    pub timestamp: [u8; EfiTime::LEN],
    /// PubKeyIndex (count-based authenticated variables; 0 otherwise).
    pub pubkey_index: u32,
    /// Data.
    pub data: Vec<u8>,
}

impl Variable {
    /// A plain (non-authenticated) variable.
    pub fn plain(name: &str, vendor: Guid, attributes: u32, data: Vec<u8>) -> Self {
        Self {
            name: name.into(),
            vendor,
            attributes,
            monotonic_count: 0,
            timestamp: [0; EfiTime::LEN],
            pubkey_index: 0,
            data,
        }
    }

    /// A time-based authenticated Secure Boot policy variable with `timestamp`.
    pub fn policy(var: PolicyVar, data: Vec<u8>, timestamp: &EfiTime) -> Self {
        Self {
            timestamp: timestamp.to_bytes(),
            ..Self::plain(var.name(), var.vendor(), attr::SECURE_BOOT_POLICY, data)
        }
    }

    fn name_utf16_nul(&self) -> Vec<u8> {
        let mut name = super::utf16le(&self.name);
        name.extend_from_slice(&[0, 0]);
        name
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        let name = self.name_utf16_nul();
        let size = |n: usize| u32::try_from(n).context("variable too large");
        out.extend_from_slice(&var::START_ID.to_le_bytes());
        out.push(var::ADDED);
        out.push(0); // Reserved
        out.extend_from_slice(&self.attributes.to_le_bytes());
        out.extend_from_slice(&self.monotonic_count.to_le_bytes());
        out.extend_from_slice(&self.timestamp);
        out.extend_from_slice(&self.pubkey_index.to_le_bytes());
        out.extend_from_slice(&size(name.len())?.to_le_bytes());
        out.extend_from_slice(&size(self.data.len())?.to_le_bytes());
        out.extend_from_slice(&self.vendor.0);
        out.extend_from_slice(&name);
        out.extend_from_slice(&self.data);
        Ok(())
    }
}

/// A parsed OVMF variable store image: the whole file plus its live variables.
#[derive(Debug, Clone)]
pub struct VarStore {
    image: Vec<u8>,
    /// File offset of VARIABLE_STORE_HEADER.
    store_offset: usize,
    /// VARIABLE_STORE_HEADER.Size (header included).
    store_size: usize,
    variables: Vec<Variable>,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]))
}
fn guid_at(b: &[u8], o: usize) -> Guid {
    let mut g = [0u8; 16];
    g.copy_from_slice(&b[o..o + 16]);
    Guid(g)
}

/// The FV header checksum: the 16-bit words of the header sum to zero.
fn fv_header_sum(header: &[u8]) -> u16 {
    header
        .chunks(2)
        .map(|w| u16::from_le_bytes([w[0], *w.get(1).unwrap_or(&0)]))
        .fold(0u16, u16::wrapping_add)
}

impl VarStore {
    /// Parse an OVMF `OVMF_VARS*.fd` image (`what` names it in errors).
    pub fn parse(image: Vec<u8>, what: &str) -> Result<Self> {
        ensure!(
            image.len() >= fv::MIN_HEADER_LEN + vsh::LEN,
            "{what}: {} bytes is too small for an OVMF variable store",
            image.len()
        );
        ensure!(
            &image[fv::SIGNATURE..fv::SIGNATURE + 4] == fv::SIGNATURE_VALUE,
            "{what}: no firmware volume signature `_FVH` at {:#x}: not an OVMF_VARS file",
            fv::SIGNATURE
        );
        ensure!(
            guid_at(&image, fv::FILE_SYSTEM_GUID) == EFI_SYSTEM_NV_DATA_FV,
            "{what}: firmware volume is not an NV variable volume (FileSystemGuid {})",
            guid_at(&image, fv::FILE_SYSTEM_GUID)
        );
        let fv_length = u64_at(&image, fv::FV_LENGTH);
        ensure!(
            fv_length <= image.len() as u64,
            "{what}: FvLength {fv_length:#x} exceeds the {}-byte file: truncated",
            image.len()
        );
        let header_len = usize::from(u16_at(&image, fv::HEADER_LENGTH));
        ensure!(
            (fv::MIN_HEADER_LEN..=image.len() - vsh::LEN).contains(&header_len),
            "{what}: implausible firmware volume HeaderLength {header_len:#x}"
        );
        ensure!(
            fv_header_sum(&image[..header_len]) == 0,
            "{what}: firmware volume header checksum is wrong: corrupt file"
        );
        let store_offset = header_len;
        let signature = guid_at(&image, store_offset);
        ensure!(
            signature == AUTHENTICATED_VARIABLE_STORE,
            "{what}: variable store signature {signature} is not the authenticated-variable \
             format (aaf32c78-947b-439a-a180-2e144ec37792): use an OVMF build with Secure Boot \
             support (Debian: OVMF_VARS_4M.fd)"
        );
        ensure!(
            image[store_offset + vsh::FORMAT] == vsh::FORMATTED
                && image[store_offset + vsh::STATE] == vsh::HEALTHY,
            "{what}: variable store is not formatted and healthy (Format {:#x}, State {:#x})",
            image[store_offset + vsh::FORMAT],
            image[store_offset + vsh::STATE]
        );
        let store_size = u32_at(&image, store_offset + vsh::SIZE) as usize;
        ensure!(
            store_offset + store_size <= fv_length as usize && store_size > vsh::LEN,
            "{what}: variable store size {store_size:#x} does not fit the firmware volume"
        );
        let variables = parse_variables(&image[store_offset..store_offset + store_size], what)?;
        Ok(Self {
            image,
            store_offset,
            store_size,
            variables,
        })
    }

    /// The live variables, in store order.
    pub fn variables(&self) -> &[Variable] {
        &self.variables
    }

    /// The live variable `name` of `vendor`.
    pub fn get(&self, name: &str, vendor: Guid) -> Option<&Variable> {
        self.variables
            .iter()
            .find(|v| v.name == name && v.vendor == vendor)
    }

    /// Add `variable`, replacing a variable of the same name and vendor.
    pub fn set(&mut self, variable: Variable) {
        self.variables
            .retain(|v| !(v.name == variable.name && v.vendor == variable.vendor));
        self.variables.push(variable);
    }

    /// The image with a freshly written variable store: live variables only (deleted and
    /// superseded records dropped), sorted by name then vendor — the order `virt-fw-vars`
    /// writes, so the two tools' stores compare byte for byte — then erased flash. Everything
    /// outside the variable store (FV header, fault-tolerant-write areas) is kept as is.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut sorted: Vec<&Variable> = self.variables.iter().collect();
        sorted.sort_by(|a, b| (a.name.as_str(), a.vendor).cmp(&(b.name.as_str(), b.vendor)));
        let mut records = Vec::new();
        for v in sorted {
            v.encode(&mut records)
                .with_context(|| format!("encoding variable {}", v.name))?;
            records.resize(records.len().next_multiple_of(var::ALIGN), ERASED);
        }
        let start = first_variable_offset();
        let capacity = self.store_size - start;
        if records.len() > capacity {
            bail!(
                "variables need {} bytes but the store holds {capacity}: use the 4 MiB OVMF \
                 (OVMF_VARS_4M.fd)",
                records.len()
            );
        }
        let mut image = self.image.clone();
        let region = &mut image[self.store_offset..self.store_offset + self.store_size];
        region[vsh::STATE] = vsh::HEALTHY;
        region[start..start + records.len()].copy_from_slice(&records);
        region[start + records.len()..].fill(ERASED);
        // The FV header is unchanged, but keep its checksum right in case a caller patched it.
        image[fv::CHECKSUM..fv::CHECKSUM + 2].fill(0);
        let sum = fv_header_sum(&image[..self.store_offset]);
        image[fv::CHECKSUM..fv::CHECKSUM + 2]
            .copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes());
        Ok(image)
    }
}

/// Offset of the first variable record from the VARIABLE_STORE_HEADER.
fn first_variable_offset() -> usize {
    vsh::LEN.next_multiple_of(var::ALIGN)
}

/// Live variables of a store region (header included): VAR_ADDED records, plus records in
/// deleted transition that no VAR_ADDED record of the same name supersedes (edk2's rule after
/// an interrupted update).
fn parse_variables(store: &[u8], what: &str) -> Result<Vec<Variable>> {
    let mut added = Vec::new();
    let mut in_transition = Vec::new();
    let mut offset = first_variable_offset();
    while offset + var::HEADER_LEN <= store.len() && u16_at(store, offset) == var::START_ID {
        let state = store[offset + 2];
        let name_size = u32_at(store, offset + 36) as usize;
        let data_size = u32_at(store, offset + 40) as usize;
        let name_start = offset + var::HEADER_LEN;
        let end = name_start
            .checked_add(name_size)
            .and_then(|e| e.checked_add(data_size))
            .filter(|&e| e <= store.len())
            .with_context(|| {
                format!("{what}: variable record at store offset {offset:#x} runs past the store")
            })?;
        ensure!(
            name_size >= 2 && name_size.is_multiple_of(2),
            "{what}: variable at store offset {offset:#x} has a bad NameSize {name_size}"
        );
        let units: Vec<u16> = store[name_start..name_start + name_size - 2]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let name = String::from_utf16(&units)
            .with_context(|| format!("{what}: variable name at {offset:#x} is not UTF-16"))?;
        let mut timestamp = [0u8; EfiTime::LEN];
        timestamp.copy_from_slice(&store[offset + 16..offset + 32]);
        let variable = Variable {
            name,
            vendor: guid_at(store, offset + 44),
            attributes: u32_at(store, offset + 4),
            monotonic_count: u64_at(store, offset + 8),
            timestamp,
            pubkey_index: u32_at(store, offset + 32),
            data: store[name_start + name_size..end].to_vec(),
        };
        if state == var::ADDED {
            added.push(variable);
        } else if state == var::ADDED & var::IN_DELETED_TRANSITION {
            in_transition.push(variable);
        }
        offset = end.next_multiple_of(var::ALIGN);
    }
    for v in in_transition {
        if !added
            .iter()
            .any(|a| a.name == v.name && a.vendor == v.vendor)
        {
            added.push(v);
        }
    }
    Ok(added)
}

/// What to enroll besides the keys.
#[derive(Debug, Clone)]
pub struct Enrollment {
    /// SignatureOwner of the PK, KEK and db entries.
    pub owner: Guid,
    /// dbx data (EFI_SIGNATURE_LISTs); `None` leaves dbx absent ("empty": an authenticated
    /// variable cannot exist with zero bytes), which PCR 7 measures with length 0.
    pub dbx: Option<Vec<u8>>,
    /// Timestamp of the policy variables.
    pub timestamp: EfiTime,
}

/// Derive an enrolled store from `template` (Debian's OVMF_VARS_4M.fd): PK, KEK and db
/// hold one certificate each, dbx as given, SecureBootEnable = 1, CustomMode = 0.
pub fn enroll(
    template: Vec<u8>,
    what: &str,
    keys: &SecureBootKeys,
    enrollment: &Enrollment,
) -> Result<Vec<u8>> {
    let mut store = VarStore::parse(template, what)?;
    let lists = [
        (PolicyVar::Pk, &keys.pk),
        (PolicyVar::Kek, &keys.kek),
        (PolicyVar::Db, &keys.db),
    ];
    for (policy, pair) in lists {
        let esl = esl::x509_list(&pair.cert_der()?, enrollment.owner)
            .with_context(|| format!("signature list for {}", policy.name()))?;
        store.set(Variable::policy(policy, esl, &enrollment.timestamp));
    }
    match &enrollment.dbx {
        Some(data) => {
            esl::parse(data).context("the given dbx is not a list of EFI_SIGNATURE_LISTs")?;
            store.set(Variable::policy(
                PolicyVar::Dbx,
                data.clone(),
                &enrollment.timestamp,
            ));
        }
        None => store
            .variables
            .retain(|v| !(v.name == "dbx" && v.vendor == PolicyVar::Dbx.vendor())),
    }
    let nv_bs = attr::NON_VOLATILE | attr::BOOTSERVICE_ACCESS;
    store.set(Variable::plain(
        "SecureBootEnable",
        SECURE_BOOT_ENABLE_DISABLE,
        nv_bs,
        vec![1],
    ));
    store.set(Variable::plain(
        "CustomMode",
        CUSTOM_MODE_ENABLE,
        nv_bs,
        vec![0],
    ));
    store.to_bytes()
}

/// The default enrollment: no dbx, [`ENROLL_TIME`].
pub fn default_enrollment(owner: Guid) -> Enrollment {
    Enrollment {
        owner,
        dbx: None,
        timestamp: ENROLL_TIME,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::secureboot::keys::load;
    use crate::secureboot::keys::tests::{run, test_keys_dir};
    use crate::testutil::{fixture, TempDir};
    use std::fs;
    use std::path::PathBuf;

    const OWNER: &str = "8c2fd1d9-0a4e-4b6c-9a57-3d8f2d1c6a11";

    pub(crate) fn template_path() -> PathBuf {
        fixture("ovmf/usr/share/OVMF/OVMF_VARS_4M.fd")
    }

    pub(crate) fn template() -> Vec<u8> {
        fs::read(template_path()).expect("read the OVMF_VARS_4M.fd fixture")
    }

    fn scratch() -> TempDir {
        TempDir::new("sb-vars")
    }

    /// virt-fw-vars' dbx placeholder: one SHA-256 entry (the digest of the empty string) with
    /// the owner and 2010-01-01 timestamp it uses, read from its output.
    fn virt_fw_vars_dbx(store: &VarStore) -> (Vec<u8>, [u8; 16]) {
        let dbx = store
            .get("dbx", PolicyVar::Dbx.vendor())
            .expect("virt-fw-vars wrote a dbx");
        (dbx.data.clone(), dbx.timestamp)
    }

    #[test]
    fn template_parses_empty_and_round_trips() {
        let store = VarStore::parse(template(), "OVMF_VARS_4M.fd").unwrap();
        assert!(store.variables().is_empty(), "{:?}", store.variables());
        assert_eq!(store.to_bytes().unwrap(), template());
        let mut bad = template();
        bad[0x40] ^= 1;
        assert!(format!("{:#}", VarStore::parse(bad, "x").unwrap_err()).contains("checksum"));
    }

    /// Same store as `virt-fw-vars --set-pk/--add-kek/--add-db --secure-boot`, byte for byte
    /// once the dbx placeholder virt-fw-vars adds is enrolled too.
    #[test]
    fn byte_identical_to_virt_fw_vars() {
        let dir = scratch();
        let k = test_keys_dir();
        let reference = dir.join("ref.fd");
        let out = run(
            "virt-fw-vars",
            &[
                "-i",
                template_path().to_str().unwrap(),
                "-o",
                reference.to_str().unwrap(),
                "--set-pk",
                OWNER,
                k.join("PK.crt").to_str().unwrap(),
                "--add-kek",
                OWNER,
                k.join("KEK.crt").to_str().unwrap(),
                "--add-db",
                OWNER,
                k.join("db.crt").to_str().unwrap(),
                "--secure-boot",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reference = fs::read(&reference).unwrap();
        let ref_store = VarStore::parse(reference.clone(), "virt-fw-vars output").unwrap();
        let (dbx, dbx_time) = virt_fw_vars_dbx(&ref_store);
        // Its dbx placeholder: one EFI_CERT_SHA256 list holding SHA-256("").
        let lists = esl::parse(&dbx).unwrap();
        assert_eq!(lists[0].signature_type, esl::EFI_CERT_SHA256);
        assert_eq!(
            hex::encode(&lists[0].entries[0].data),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );

        let keys = load(&k).unwrap();
        let enrollment = Enrollment {
            dbx: Some(dbx.clone()),
            ..default_enrollment(Guid::parse(OWNER).unwrap())
        };
        let ours = enroll(template(), "OVMF_VARS_4M.fd", &keys, &enrollment).unwrap();
        // virt-fw-vars dates the placeholder 2010-01-01; patch ours to compare the rest.
        let mut store = VarStore::parse(ours.clone(), "ours").unwrap();
        let mut v = store.get("dbx", PolicyVar::Dbx.vendor()).unwrap().clone();
        v.timestamp = dbx_time;
        store.set(v);
        assert_eq!(store.to_bytes().unwrap(), reference);
        // Deterministic.
        assert_eq!(enroll(template(), "t", &keys, &enrollment).unwrap(), ours);
    }

    /// virt-fw-vars reads our default store (no dbx) back with our certificates.
    #[test]
    fn virt_fw_vars_reads_our_store() {
        let dir = scratch();
        let keys = load(&test_keys_dir()).unwrap();
        let ours = enroll(
            template(),
            "OVMF_VARS_4M.fd",
            &keys,
            &default_enrollment(Guid::parse(OWNER).unwrap()),
        )
        .unwrap();
        let path = dir.join("ours.fd");
        fs::write(&path, &ours).unwrap();
        let out = run(
            "virt-fw-vars",
            &["-i", path.to_str().unwrap(), "--print", "--verbose"],
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        for (name, cn) in [("PK", "PK"), ("KEK", "KEK"), ("db", "db")] {
            let block = text
                .split("\n\n")
                .find(|b| b.contains(&format!("name={name} ")))
                .unwrap_or_else(|| panic!("no {name} in {text}"));
            assert!(block.contains("time=2025-01-01 00:00:00"), "{block}");
            assert!(
                block.contains(&format!("subject CN=cvm-image {cn}")),
                "{block}"
            );
        }
        assert!(text.contains("name=SecureBootEnable"), "{text}");
        assert!(!text.contains("name=dbx"), "{text}");
    }
}
