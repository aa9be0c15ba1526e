//! PCR 7: the Secure Boot policy (docs/measured-boot.md §9; edk2 `Tcg2Dxe.c`
//! `MeasureAllSecureVariables`, `MeasureSecureBootPolicy`).
//!
//! Before BDS, edk2 measures SecureBoot, PK, KEK, db and dbx as EV_EFI_VARIABLE_DRIVER_CONFIG —
//! a missing variable with length 0 — then the PCR 7 separator. The digest covers the whole
//! `UEFI_VARIABLE_DATA` (VendorGuid ‖ UnicodeNameLength u64 ‖ VariableDataLength u64 ‖ UTF-16 name
//! without NUL ‖ data), which is also the event data.
//!
//! `SecureBoot` is not stored: the firmware derives it. With no PK enrolled it is 0 (setup mode).
//! Only that case is predicted: with a PK, Secure Boot is on, the kernel event of PCR 4 disappears
//! and EV_EFI_VARIABLE_AUTHORITY events follow the separator — none of which was checked against
//! a boot here.

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
/// SecureBoot's value without a PK.
const SECURE_BOOT_OFF: u8 = 0;

/// PCR 7 events and the Secure Boot state they encode.
#[derive(Debug, Clone)]
pub struct SecureBootEvents {
    /// SecureBoot, PK, KEK, db, dbx, separator.
    pub events: Vec<ExpectedEvent>,
    pub secure_boot: bool,
}

/// PCR 7 for a VM started from `ovmf_vars`.
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
    let mut events = vec![variable_event(
        &EFI_GLOBAL_VARIABLE,
        SECURE_BOOT,
        &[SECURE_BOOT_OFF],
        banks,
    )?];
    for (name, guid) in POLICY_VARIABLES {
        let data = varstore::find(&vars, &guid, name).map_or(&[][..], |v: &Variable| &v.data);
        events.push(variable_event(&guid, name, data, banks)?);
    }
    events.push(separator(PCR, banks)?);
    Ok(SecureBootEvents {
        events,
        secure_boot: false,
    })
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

fn variable_event(
    vendor_guid: &[u8; 16],
    name: &str,
    data: &[u8],
    banks: &[HashAlg],
) -> Result<ExpectedEvent> {
    let description = if data.is_empty() {
        format!("{name}: absent (0 bytes)")
    } else if name == SECURE_BOOT {
        format!("{name}: 0x{:02x}", data[0])
    } else {
        format!("{name}: {} bytes", data.len())
    };
    let measured = uefi_variable_data(vendor_guid, name, data);
    Ok(ExpectedEvent::hashing(
        PCR,
        EventType::EV_EFI_VARIABLE_DRIVER_CONFIG,
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

    #[test]
    fn enrolled_pk_is_refused() {
        let e = secure_boot_events(&fixture(OVMF_VARS_SNAKEOIL), &[HashAlg::SHA256]).unwrap_err();
        assert!(e.to_string().contains("Secure Boot is on"), "{e}");
    }
}
