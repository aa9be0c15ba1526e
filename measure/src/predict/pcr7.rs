//! PCR 7: the Secure Boot policy (docs/measured-boot.md §9; edk2 `Tcg2Dxe.c`
//! `MeasureAllSecureVariables`, `MeasureSecureBootPolicy`; `DxeImageVerificationLib.c`
//! `MeasureVariable`).
//!
//! Before BDS, edk2 measures SecureBoot, PK, KEK, db and dbx as EV_EFI_VARIABLE_DRIVER_CONFIG —
//! a missing variable with length 0 — then the PCR 7 separator. The digest covers the whole
//! `UEFI_VARIABLE_DATA` (VendorGuid ‖ UnicodeNameLength u64 ‖ VariableDataLength u64 ‖ UTF-16 name
//! without NUL ‖ data), which is also the event data.
//!
//! `SecureBoot` is not stored: the firmware derives it ([`secure_boot_value`]). With no PK
//! enrolled it is 0 (setup mode): [`secure_boot_events`] predicts that case from a VARS file and
//! refuses a store with a PK, because with a PK, Secure Boot is on, the kernel event of PCR 4
//! disappears and EV_EFI_VARIABLE_AUTHORITY events follow the separator — which that boot
//! prediction does not model.
//!
//! The builder predicts the Secure Boot boot of the store it enrolls with
//! [`enrolled_store_events`]: the same events, then one EV_EFI_VARIABLE_AUTHORITY for the db
//! entry that verified the UKI (it knows which entry that is; checked against a boot in
//! tests/secureboot.rs).

use crate::eventlog::{EventType, ExpectedEvent, HashAlg};

use super::varstore::{self, Variable};
use super::{separator, utf16le, PredictError, Result};

/// The PCR.
pub const PCR: u32 = 7;
/// EFI_GLOBAL_VARIABLE 8be4df61-93ca-11d2-aa0d-00e098032b8c (SecureBoot, PK, KEK), on-disk order.
pub const EFI_GLOBAL_VARIABLE: [u8; 16] = [
    0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c,
];
/// EFI_IMAGE_SECURITY_DATABASE_GUID d719b2cb-3d3a-4596-a3bc-dad00e67656f (db, dbx, dbt).
pub const EFI_IMAGE_SECURITY_DATABASE: [u8; 16] = [
    0xcb, 0xb2, 0x19, 0xd7, 0x3a, 0x3d, 0x96, 0x45, 0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f,
];
/// gEfiSecureBootEnableDisableGuid f0a30bc7-af08-4556-99c4-001009c93a44 (OVMF/edk2
/// `SecureBootConfigDxe`): vendor of [`SECURE_BOOT_ENABLE`].
pub const SECURE_BOOT_ENABLE_DISABLE: [u8; 16] = [
    0xc7, 0x0b, 0xa3, 0xf0, 0x08, 0xaf, 0x56, 0x45, 0x99, 0xc4, 0x00, 0x10, 0x09, 0xc9, 0x3a, 0x44,
];
/// The stored policy variables edk2 measures after SecureBoot, in order (`mVariableType`).
const POLICY_VARIABLES: [(&str, [u8; 16]); 4] = [
    ("PK", EFI_GLOBAL_VARIABLE),
    ("KEK", EFI_GLOBAL_VARIABLE),
    ("db", EFI_IMAGE_SECURITY_DATABASE),
    ("dbx", EFI_IMAGE_SECURITY_DATABASE),
];
/// Variables edk2 measures only when present; not verified here, so their presence is refused.
const UNVERIFIED_OPTIONAL: [(&str, [u8; 16]); 2] = [
    ("dbt", EFI_IMAGE_SECURITY_DATABASE),
    ("dbr", EFI_IMAGE_SECURITY_DATABASE),
];
/// Name of the derived Secure Boot state variable.
pub const SECURE_BOOT: &str = "SecureBoot";
/// Name of OVMF's stored Secure Boot switch (0 turns Secure Boot off even with a PK).
pub const SECURE_BOOT_ENABLE: &str = "SecureBootEnable";
/// Description of the authority event of [`enrolled_store_events`].
const UKI_AUTHORITY: &str = "db authority (UKI signer)";

/// PCR 7 events and the Secure Boot state they encode.
#[derive(Debug, Clone)]
pub struct SecureBootEvents {
    /// SecureBoot, PK, KEK, db, dbx, separator.
    pub events: Vec<ExpectedEvent>,
    pub secure_boot: bool,
}

/// How events are described. Descriptions are not measured; the two predictions present them
/// as their outputs always have (golden files, the manifest's PCR 7 events).
#[derive(Debug, Clone, Copy)]
enum Labels {
    /// With the value, as the event-log decoder shows them: "SecureBoot: 0x00",
    /// "PK: absent (0 bytes)", "db: 1234 bytes".
    Values,
    /// The variable name only: "SecureBoot", "PK".
    Names,
}

/// PCR 7 for a VM started from `ovmf_vars` in setup mode (no PK).
pub fn secure_boot_events(ovmf_vars: &[u8], banks: &[HashAlg]) -> Result<SecureBootEvents> {
    let vars = varstore::read_variables(ovmf_vars)?;
    if varstore::find(&vars, &EFI_GLOBAL_VARIABLE, "PK").is_some() {
        return Err(PredictError::Unsupported(
            "the VARS file enrolls a PK, so Secure Boot is on: PCR 7 authorities and the PCR 4 \
             kernel event of a Secure Boot boot are not predicted yet; boot with the empty \
             OVMF_VARS_4M.fd"
                .into(),
        ));
    }
    if let Some((name, _)) = UNVERIFIED_OPTIONAL
        .iter()
        .find(|(n, g)| varstore::find(&vars, g, n).is_some())
    {
        return Err(PredictError::Unsupported(format!(
            "the VARS file holds {name}, whose PCR 7 measurement was never checked against a boot"
        )));
    }
    Ok(SecureBootEvents {
        events: policy_events(&vars, Labels::Values, banks)?,
        secure_boot: false,
    })
}

/// The PCR 7 events of a boot with the live variables `vars` of an enrolled store of a UKI
/// verified by `db_entry`, the db `EFI_SIGNATURE_DATA` (SignatureOwner ‖ certificate) holding
/// its signer: SecureBoot, PK, KEK, db, dbx, separator, db authority. Assumes no option ROM or
/// other image verified by db before the UKI (QEMU with `-nic none` or without EFI option ROMs;
/// a ROM that verifies adds its own authority event first).
pub fn enrolled_store_events(
    vars: &[Variable],
    db_entry: &[u8],
    banks: &[HashAlg],
) -> Result<Vec<ExpectedEvent>> {
    let mut events = policy_events(vars, Labels::Names, banks)?;
    events.push(variable_data_event(
        EventType::EV_EFI_VARIABLE_AUTHORITY,
        UKI_AUTHORITY.into(),
        &EFI_IMAGE_SECURITY_DATABASE,
        "db",
        db_entry,
        banks,
    )?);
    Ok(events)
}

/// The SecureBoot value edk2 derives at boot (the variable itself is volatile, so not in the
/// store): 1 when PK is enrolled (user mode) and SecureBootEnable is not 0.
pub fn secure_boot_value(vars: &[Variable]) -> u8 {
    let pk = varstore::find(vars, &EFI_GLOBAL_VARIABLE, "PK").is_some();
    let enabled = varstore::find(vars, &SECURE_BOOT_ENABLE_DISABLE, SECURE_BOOT_ENABLE)
        .is_none_or(|v| v.data.first() != Some(&0));
    u8::from(pk && enabled)
}

/// `UEFI_VARIABLE_DATA` for one variable (PFP §10.2.6).
pub fn uefi_variable_data(vendor_guid: &[u8; 16], name: &str, data: &[u8]) -> Vec<u8> {
    let name16 = utf16le(name, false);
    let mut v = Vec::with_capacity(32 + name16.len() + data.len());
    v.extend_from_slice(vendor_guid);
    v.extend_from_slice(&(name.encode_utf16().count() as u64).to_le_bytes());
    v.extend_from_slice(&(data.len() as u64).to_le_bytes());
    v.extend_from_slice(&name16);
    v.extend_from_slice(data);
    v
}

/// SecureBoot (derived), PK, KEK, db, dbx (zero-length when missing), then the separator.
fn policy_events(
    vars: &[Variable],
    labels: Labels,
    banks: &[HashAlg],
) -> Result<Vec<ExpectedEvent>> {
    let secure_boot = [secure_boot_value(vars)];
    let mut events = vec![driver_config_event(
        &EFI_GLOBAL_VARIABLE,
        SECURE_BOOT,
        &secure_boot,
        labels,
        banks,
    )?];
    for (name, guid) in &POLICY_VARIABLES {
        let data = varstore::find(vars, guid, name).map_or(&[][..], |v| &v.data);
        events.push(driver_config_event(guid, name, data, labels, banks)?);
    }
    events.push(separator(PCR, banks)?);
    Ok(events)
}

/// EV_EFI_VARIABLE_DRIVER_CONFIG for one policy variable.
fn driver_config_event(
    vendor_guid: &[u8; 16],
    name: &str,
    data: &[u8],
    labels: Labels,
    banks: &[HashAlg],
) -> Result<ExpectedEvent> {
    let description = match labels {
        Labels::Names => name.to_string(),
        Labels::Values => value_label(name, data),
    };
    variable_data_event(
        EventType::EV_EFI_VARIABLE_DRIVER_CONFIG,
        description,
        vendor_guid,
        name,
        data,
        banks,
    )
}

fn value_label(name: &str, data: &[u8]) -> String {
    if data.is_empty() {
        format!("{name}: absent (0 bytes)")
    } else if name == SECURE_BOOT {
        format!("{name}: 0x{:02x}", data[0])
    } else {
        format!("{name}: {} bytes", data.len())
    }
}

/// An event whose data, and measured bytes, are the `UEFI_VARIABLE_DATA` of one variable.
fn variable_data_event(
    event_type: EventType,
    description: String,
    vendor_guid: &[u8; 16],
    name: &str,
    data: &[u8],
    banks: &[HashAlg],
) -> Result<ExpectedEvent> {
    let measured = uefi_variable_data(vendor_guid, name, data);
    Ok(ExpectedEvent::hashing(
        PCR,
        event_type,
        description,
        &measured,
        Some(measured.clone()),
        banks,
    )?)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn empty_store_gives_the_documented_vectors() {
        let p = secure_boot_events(&fixture(OVMF_VARS), &[HashAlg::SHA256]).unwrap();
        assert!(!p.secure_boot);
        let d: Vec<String> = p
            .events
            .iter()
            .map(|e| hex::encode(&e.digests[&HashAlg::SHA256]))
            .collect();
        // docs/measured-boot.md §9 vectors (struct-derived; the boot test checks them
        // against a log).
        assert_eq!(
            d[0],
            "115aa827dbccfb44d216ad9ecfda56bdea620b860a94bed5b7a27bba1c4d02d8"
        );
        assert_eq!(
            d[1],
            "dea7b80ab53a3daaa24d5cc46c64e1fa9ffd03739f90aadbd8c0867c4a5b4890"
        );
        assert_eq!(
            d[5],
            "df3f619804a92fdb4057192dc43dd748ea778adc52bc498ce80524c014b81119"
        );
        assert_eq!(p.events.len(), 6);
    }

    /// Descriptions are not measured, but golden files carry them: they stay as they were.
    #[test]
    fn setup_mode_events_describe_their_values() {
        let p = secure_boot_events(&fixture(OVMF_VARS), &[HashAlg::SHA256]).unwrap();
        let names: Vec<&str> = p.events.iter().map(|e| e.description.as_str()).collect();
        assert_eq!(
            names,
            [
                "SecureBoot: 0x00",
                "PK: absent (0 bytes)",
                "KEK: absent (0 bytes)",
                "db: absent (0 bytes)",
                "dbx: absent (0 bytes)",
                "separator"
            ]
        );
    }

    /// Struct-derived vectors from docs/measured-boot.md §9 and §13.
    #[test]
    fn published_vectors() {
        use sha2::{Digest, Sha256};
        let sb0 = uefi_variable_data(&EFI_GLOBAL_VARIABLE, "SecureBoot", &[0]);
        assert_eq!(
            hex::encode(Sha256::digest(&sb0)),
            "115aa827dbccfb44d216ad9ecfda56bdea620b860a94bed5b7a27bba1c4d02d8"
        );
        let pk_absent = uefi_variable_data(&EFI_GLOBAL_VARIABLE, "PK", &[]);
        assert_eq!(
            hex::encode(Sha256::digest(&pk_absent)),
            "dea7b80ab53a3daaa24d5cc46c64e1fa9ffd03739f90aadbd8c0867c4a5b4890"
        );
        let sep = separator(PCR, &[HashAlg::SHA256]).unwrap();
        assert_eq!(
            hex::encode(&sep.digests[&HashAlg::SHA256]),
            "df3f619804a92fdb4057192dc43dd748ea778adc52bc498ce80524c014b81119"
        );
        let pcr = super::super::pcr_values(&[sep], &[PCR], HashAlg::SHA256).unwrap();
        assert_eq!(
            hex::encode(&pcr[&PCR]),
            "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969"
        );
    }

    /// The enrolled-store prediction over Debian's snakeoil store (PK, KEK, db, dbx enrolled):
    /// Secure Boot on, the stored variables measured as they are, the authority last.
    #[test]
    fn enrolled_store_events_of_the_snakeoil_store() {
        let vars = varstore::read_variables(&fixture(OVMF_VARS_SNAKEOIL)).unwrap();
        assert_eq!(secure_boot_value(&vars), 1);
        let entry = [7u8; 48];
        let banks = [HashAlg::SHA256, HashAlg::SHA384];
        let events = enrolled_store_events(&vars, &entry, &banks).unwrap();
        let labels: Vec<&str> = events.iter().map(|e| e.description.as_str()).collect();
        assert_eq!(
            labels.join(", "),
            format!("SecureBoot, PK, KEK, db, dbx, separator, {UKI_AUTHORITY}")
        );
        assert!(events
            .iter()
            .all(|e| e.pcr == PCR && e.digests.keys().eq(banks.iter())));
        let db = varstore::find(&vars, &EFI_IMAGE_SECURITY_DATABASE, "db").unwrap();
        let db_data = uefi_variable_data(&EFI_IMAGE_SECURITY_DATABASE, "db", &db.data);
        assert_eq!(events[3].data.as_deref(), Some(&db_data[..]));
        assert_eq!(events[6].event_type, EventType::EV_EFI_VARIABLE_AUTHORITY);
        let authority = uefi_variable_data(&EFI_IMAGE_SECURITY_DATABASE, "db", &entry);
        assert_eq!(events[6].data.as_deref(), Some(&authority[..]));
        // SecureBootEnable = 0 turns Secure Boot off although a PK is enrolled.
        let mut off = vars.clone();
        off.retain(|v| v.name != SECURE_BOOT_ENABLE);
        off.push(Variable {
            vendor_guid: SECURE_BOOT_ENABLE_DISABLE,
            name: SECURE_BOOT_ENABLE.into(),
            attributes: 3,
            monotonic_count: 0,
            timestamp: [0; 16],
            pubkey_index: 0,
            data: vec![0],
        });
        assert_eq!(secure_boot_value(&off), 0);
    }

    #[test]
    fn enrolled_pk_is_refused() {
        let e = secure_boot_events(&fixture(OVMF_VARS_SNAKEOIL), &[HashAlg::SHA256]).unwrap_err();
        assert!(e.to_string().contains("Secure Boot is on"), "{e}");
    }
}
