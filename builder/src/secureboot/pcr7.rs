//! PCR 7 for a boot of OVMF with an enrolled store (docs/measured-boot.md §9; edk2
//! `SecurityPkg/Tcg/Tcg2Dxe/Tcg2Dxe.c` `MeasureAllSecureVariables` and
//! `DxeImageVerificationLib.c` `MeasureVariable`).
//!
//! Events in order: EV_EFI_VARIABLE_DRIVER_CONFIG for SecureBoot, PK, KEK, db, dbx (a missing
//! variable is measured with zero-length data), EV_SEPARATOR, then one
//! EV_EFI_VARIABLE_AUTHORITY for the db entry that verified the UKI. Each digest is SHA-256 of
//! the whole UEFI_VARIABLE_DATA (not of the variable data alone). Assumes no option ROM or
//! other image verified by db before the UKI (QEMU with `-nic none` or without EFI option
//! ROMs; a ROM that verifies adds its own authority event first).

use anyhow::{Context, Result};
use cvm_measure::eventlog::{EventType, ExpectedEvent, HashAlg};
use sha2::{Digest, Sha256};

use super::authvar::PolicyVar;
use super::esl::{self, SignatureData};
use super::varstore::{VarStore, SECURE_BOOT_ENABLE_DISABLE};
use super::{utf16le, Guid, EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE};

/// The PCR these events extend.
pub const PCR: u32 = 7;
/// EV_SEPARATOR.
pub const EV_SEPARATOR: u32 = 0x0000_0004;
/// EV_EFI_VARIABLE_DRIVER_CONFIG.
pub const EV_EFI_VARIABLE_DRIVER_CONFIG: u32 = 0x8000_0001;
/// EV_EFI_VARIABLE_AUTHORITY.
pub const EV_EFI_VARIABLE_AUTHORITY: u32 = 0x8000_00e0;

/// One predicted PCR 7 event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pcr7Event {
    /// Human-readable description ("SecureBoot", "PK", …, "separator", "db authority").
    pub description: String,
    /// TCG event type.
    pub event_type: u32,
    /// The event data as logged.
    pub data: Vec<u8>,
    /// SHA-256 extended into PCR 7.
    pub digest: [u8; 32],
}

/// UEFI_VARIABLE_DATA: VariableName GUID ‖ UnicodeNameLength u64 (characters) ‖
/// VariableDataLength u64 ‖ UnicodeName (UTF-16LE, no NUL) ‖ VariableData.
pub fn uefi_variable_data(vendor: Guid, name: &str, data: &[u8]) -> Vec<u8> {
    let name16 = utf16le(name);
    let mut out = Vec::with_capacity(32 + name16.len() + data.len());
    out.extend_from_slice(&vendor.0);
    out.extend_from_slice(&(name.encode_utf16().count() as u64).to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(&name16);
    out.extend_from_slice(data);
    out
}

fn event(description: &str, event_type: u32, data: Vec<u8>) -> Pcr7Event {
    Pcr7Event {
        description: description.into(),
        event_type,
        digest: Sha256::digest(&data).into(),
        data,
    }
}

/// The SecureBoot value edk2 derives at boot (the variable itself is volatile, so not in the
/// store): 1 when PK is enrolled (user mode) and SecureBootEnable is not 0.
pub fn secure_boot_value(store: &VarStore) -> u8 {
    let pk = store
        .get(PolicyVar::Pk.name(), PolicyVar::Pk.vendor())
        .is_some();
    let enabled = store
        .get("SecureBootEnable", SECURE_BOOT_ENABLE_DISABLE)
        .is_none_or(|v| v.data.first() != Some(&0));
    u8::from(pk && enabled)
}

/// The db EFI_SIGNATURE_DATA holding `signer_cert_der` (the certificate that verifies the UKI).
pub fn db_entry_for(store: &VarStore, signer_cert_der: &[u8]) -> Result<SignatureData> {
    let db = store
        .get(PolicyVar::Db.name(), PolicyVar::Db.vendor())
        .context("the variable store has no db: enroll keys before predicting PCR 7")?;
    esl::parse(&db.data)
        .context("parsing db")?
        .into_iter()
        .filter(|l| l.signature_type == esl::EFI_CERT_X509)
        .flat_map(|l| l.entries)
        .find(|e| e.data == signer_cert_der)
        .context("the UKI's signing certificate is not in db: the firmware would refuse the UKI")
}

/// The PCR 7 events of a boot with `store` of a UKI signed by `signer_cert_der`.
pub fn pcr7_events(store: &VarStore, signer_cert_der: &[u8]) -> Result<Vec<Pcr7Event>> {
    let mut events = vec![event(
        "SecureBoot",
        EV_EFI_VARIABLE_DRIVER_CONFIG,
        uefi_variable_data(
            EFI_GLOBAL_VARIABLE,
            "SecureBoot",
            &[secure_boot_value(store)],
        ),
    )];
    for var in PolicyVar::ALL {
        let data = store
            .get(var.name(), var.vendor())
            .map_or(&[][..], |v| v.data.as_slice());
        events.push(event(
            var.name(),
            EV_EFI_VARIABLE_DRIVER_CONFIG,
            uefi_variable_data(var.vendor(), var.name(), data),
        ));
    }
    events.push(event("separator", EV_SEPARATOR, vec![0; 4]));
    let entry = db_entry_for(store, signer_cert_der)?;
    events.push(event(
        "db authority (UKI signer)",
        EV_EFI_VARIABLE_AUTHORITY,
        uefi_variable_data(EFI_IMAGE_SECURITY_DATABASE, "db", &entry.to_bytes()),
    ));
    Ok(events)
}

/// PCR 7 after `events`, from the all-zero reset value.
pub fn replay(events: &[Pcr7Event]) -> [u8; 32] {
    events.iter().fold([0u8; 32], |pcr, e| {
        let mut h = Sha256::new();
        h.update(pcr);
        h.update(e.digest);
        h.finalize().into()
    })
}

/// The PCR 7 events of a boot with the OVMF variable store `store` (an `OVMF_VARS*.fd` image,
/// e.g. `out/OVMF_VARS.fd`) of a UKI signed by the db certificate `db_cert_der`, in the
/// measurement library's form with a digest per bank in `banks` (for golden files and
/// event-log comparison). The event data is the logged UEFI_VARIABLE_DATA / separator bytes.
pub fn pcr7_expected(
    store: &[u8],
    db_cert_der: &[u8],
    banks: &[HashAlg],
) -> Result<Vec<ExpectedEvent>> {
    let store = VarStore::parse(store.to_vec(), "OVMF variable store")?;
    pcr7_events(&store, db_cert_der)?
        .into_iter()
        .map(|e| {
            ExpectedEvent::hashing(
                PCR,
                EventType(e.event_type),
                e.description,
                &e.data,
                Some(e.data.clone()),
                banks,
            )
            .map_err(|err| anyhow::anyhow!("PCR 7 event: {err}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Struct-derived vectors from docs/measured-boot.md §9 and §13.
    #[test]
    fn published_vectors() {
        let sb0 = uefi_variable_data(EFI_GLOBAL_VARIABLE, "SecureBoot", &[0]);
        assert_eq!(
            hex::encode(Sha256::digest(&sb0)),
            "115aa827dbccfb44d216ad9ecfda56bdea620b860a94bed5b7a27bba1c4d02d8"
        );
        let pk_absent = uefi_variable_data(EFI_GLOBAL_VARIABLE, "PK", &[]);
        assert_eq!(
            hex::encode(Sha256::digest(&pk_absent)),
            "dea7b80ab53a3daaa24d5cc46c64e1fa9ffd03739f90aadbd8c0867c4a5b4890"
        );
        let sep = event("separator", EV_SEPARATOR, vec![0; 4]);
        assert_eq!(
            hex::encode(sep.digest),
            "df3f619804a92fdb4057192dc43dd748ea778adc52bc498ce80524c014b81119"
        );
        assert_eq!(
            hex::encode(replay(&[sep])),
            "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969"
        );
    }

    /// The expected-event form against the measurement library's own UEFI_VARIABLE_DATA
    /// encoding (an independent implementation) and the published separator digest.
    #[test]
    fn expected_events_for_an_enrolled_store() {
        use crate::secureboot::keys::load;
        use crate::secureboot::keys::tests::test_keys_dir;
        use crate::secureboot::varstore::{default_enrollment, enroll, tests::template};
        use cvm_measure::predict::pcr7 as measure7;

        let keys = load(&test_keys_dir()).unwrap();
        let vars = enroll(template(), "t", &keys, &default_enrollment(Guid([9; 16]))).unwrap();
        let db = keys.db.cert_der().unwrap();
        let events = pcr7_expected(&vars, &db, &[HashAlg::SHA256, HashAlg::SHA384]).unwrap();
        let names: Vec<&str> = events.iter().map(|e| e.description.as_str()).collect();
        assert_eq!(
            names,
            [
                "SecureBoot",
                "PK",
                "KEK",
                "db",
                "dbx",
                "separator",
                "db authority (UKI signer)"
            ]
        );
        assert!(events.iter().all(|e| e.pcr == 7 && e.digests.len() == 2));
        let sb_on =
            measure7::uefi_variable_data(&measure7::EFI_GLOBAL_VARIABLE, "SecureBoot", &[1]);
        assert_eq!(events[0].data.as_deref(), Some(&sb_on[..]));
        assert_eq!(
            events[0].event_type,
            EventType::EV_EFI_VARIABLE_DRIVER_CONFIG
        );
        let dbx_absent =
            measure7::uefi_variable_data(&measure7::EFI_IMAGE_SECURITY_DATABASE, "dbx", &[]);
        assert_eq!(events[4].data.as_deref(), Some(&dbx_absent[..]));
        assert_eq!(
            hex::encode(&events[5].digests[&HashAlg::SHA256]),
            "df3f619804a92fdb4057192dc43dd748ea778adc52bc498ce80524c014b81119"
        );
        assert_eq!(events[6].event_type, EventType::EV_EFI_VARIABLE_AUTHORITY);
        // The authority event's data ends with the db certificate (EFI_SIGNATURE_DATA = owner
        // GUID ‖ certificate).
        assert!(events[6].data.as_ref().unwrap().ends_with(&db));
        // A UKI signed by a certificate that is not in db cannot be predicted: it would not boot.
        assert!(pcr7_expected(&vars, &keys.kek.cert_der().unwrap(), &[HashAlg::SHA256]).is_err());
    }
}
