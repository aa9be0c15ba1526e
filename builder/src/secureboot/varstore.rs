//! OVMF's non-volatile variable store (`OVMF_VARS*.fd`): write a copy of Debian's template with
//! the owner's Secure Boot keys enrolled. Reading the store — its headers and live variables —
//! is the measurement library's (`cvm_measure::predict::varstore`), so the store the builder
//! writes is read back by the same code that predicts PCR 7 from it.
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

use anyhow::{bail, Context, Result};
use cvm_measure::predict::pcr7::{self as measure7, SECURE_BOOT_ENABLE};
use cvm_measure::predict::varstore::layout::{self, fv, store, var, FIRST_VARIABLE};
use cvm_measure::predict::varstore::{self as reader, Variable, VariableStore};

use super::authvar::PolicyVar;
use super::esl;
use super::keys::SecureBootKeys;
use super::{attr, EfiTime, Guid, ENROLL_TIME};

/// gEfiSecureBootEnableDisableGuid (OVMF/edk2 `SecureBootConfigDxe`): vendor of `SecureBootEnable`.
pub const SECURE_BOOT_ENABLE_DISABLE: Guid = Guid(measure7::SECURE_BOOT_ENABLE_DISABLE);
/// gEfiCustomModeEnableGuid: vendor of `CustomMode`.
pub const CUSTOM_MODE_ENABLE: Guid = Guid::from_fields(
    0xc076ec0c,
    0x7028,
    0x4399,
    [0xa0, 0x72, 0x71, 0xee, 0x5c, 0x44, 0x8b, 0x9f],
);

/// A plain (non-authenticated) variable.
pub fn plain_variable(name: &str, vendor: Guid, attributes: u32, data: Vec<u8>) -> Variable {
    Variable {
        vendor_guid: vendor.0,
        name: name.into(),
        attributes,
        monotonic_count: 0,
        timestamp: [0; EfiTime::LEN],
        pubkey_index: 0,
        data,
    }
}

/// A time-based authenticated Secure Boot policy variable with `timestamp`.
pub fn policy_variable(var: PolicyVar, data: Vec<u8>, timestamp: &EfiTime) -> Variable {
    Variable {
        timestamp: timestamp.to_bytes(),
        ..plain_variable(var.name(), var.vendor(), attr::SECURE_BOOT_POLICY, data)
    }
}

/// The AUTHENTICATED_VARIABLE_HEADER record of `v` (state VAR_ADDED), name and data, unpadded.
fn encode(v: &Variable, out: &mut Vec<u8>) -> Result<()> {
    let mut name = super::utf16le(&v.name);
    name.extend_from_slice(&[0, 0]);
    let size = |n: usize| u32::try_from(n).context("variable too large");
    out.extend_from_slice(&var::START_ID.to_le_bytes());
    out.push(var::ADDED);
    out.push(0); // Reserved
    out.extend_from_slice(&v.attributes.to_le_bytes());
    out.extend_from_slice(&v.monotonic_count.to_le_bytes());
    out.extend_from_slice(&v.timestamp);
    out.extend_from_slice(&v.pubkey_index.to_le_bytes());
    out.extend_from_slice(&size(name.len())?.to_le_bytes());
    out.extend_from_slice(&size(v.data.len())?.to_le_bytes());
    out.extend_from_slice(&v.vendor_guid);
    out.extend_from_slice(&name);
    out.extend_from_slice(&v.data);
    Ok(())
}

/// A parsed OVMF variable store image: the whole file plus its variable store.
#[derive(Debug, Clone)]
pub struct VarStore {
    image: Vec<u8>,
    store: VariableStore,
}

impl VarStore {
    /// Parse an OVMF `OVMF_VARS*.fd` image (`what` names it in errors).
    pub fn parse(image: Vec<u8>, what: &str) -> Result<Self> {
        let store = reader::read_store(&image).with_context(|| what.to_string())?;
        Ok(Self { image, store })
    }

    /// The live variables, in store order.
    pub fn variables(&self) -> &[Variable] {
        &self.store.variables
    }

    /// The live variable `name` of `vendor`.
    pub fn get(&self, name: &str, vendor: Guid) -> Option<&Variable> {
        reader::find(&self.store.variables, &vendor.0, name)
    }

    /// Add `variable`, replacing a variable of the same name and vendor.
    pub fn set(&mut self, variable: Variable) {
        self.remove(&variable.name, Guid(variable.vendor_guid));
        self.store.variables.push(variable);
    }

    /// Drop the variable `name` of `vendor`, if present.
    pub fn remove(&mut self, name: &str, vendor: Guid) {
        self.store
            .variables
            .retain(|v| !(v.name == name && v.vendor_guid == vendor.0));
    }

    /// The image with a freshly written variable store: live variables only (deleted and
    /// superseded records dropped), sorted by name then vendor — the order `virt-fw-vars`
    /// writes, so the two tools' stores compare byte for byte — then erased flash. Everything
    /// outside the variable store (FV header, fault-tolerant-write areas) is kept as is.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut sorted: Vec<&Variable> = self.store.variables.iter().collect();
        sorted.sort_by(|a, b| {
            (a.name.as_str(), a.vendor_guid).cmp(&(b.name.as_str(), b.vendor_guid))
        });
        let mut records = Vec::new();
        for v in sorted {
            encode(v, &mut records).with_context(|| format!("encoding variable {}", v.name))?;
            records.resize(records.len().next_multiple_of(var::ALIGN), layout::ERASED);
        }
        let (offset, size) = (self.store.offset, self.store.size);
        let capacity = size - FIRST_VARIABLE;
        if records.len() > capacity {
            bail!(
                "variables need {} bytes but the store holds {capacity}: use the 4 MiB OVMF \
                 (OVMF_VARS_4M.fd)",
                records.len()
            );
        }
        let mut image = self.image.clone();
        let region = &mut image[offset..offset + size];
        region[store::STATE] = store::HEALTHY;
        region[FIRST_VARIABLE..FIRST_VARIABLE + records.len()].copy_from_slice(&records);
        region[FIRST_VARIABLE + records.len()..].fill(layout::ERASED);
        // The FV header is unchanged, but keep its checksum right in case a caller patched it.
        image[fv::CHECKSUM..fv::CHECKSUM + 2].fill(0);
        let sum = layout::fv_header_sum(&image[..offset]);
        image[fv::CHECKSUM..fv::CHECKSUM + 2]
            .copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes());
        Ok(image)
    }
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
        store.set(policy_variable(policy, esl, &enrollment.timestamp));
    }
    match &enrollment.dbx {
        Some(data) => {
            esl::parse(data).context("the given dbx is not a list of EFI_SIGNATURE_LISTs")?;
            store.set(policy_variable(
                PolicyVar::Dbx,
                data.clone(),
                &enrollment.timestamp,
            ));
        }
        None => store.remove(PolicyVar::Dbx.name(), PolicyVar::Dbx.vendor()),
    }
    let nv_bs = attr::NON_VOLATILE | attr::BOOTSERVICE_ACCESS;
    store.set(plain_variable(
        SECURE_BOOT_ENABLE,
        SECURE_BOOT_ENABLE_DISABLE,
        nv_bs,
        vec![1],
    ));
    store.set(plain_variable(
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
