//! PCR 7 for a boot of OVMF with an enrolled store (docs/measured-boot.md §9; edk2
//! `SecurityPkg/Tcg/Tcg2Dxe/Tcg2Dxe.c` `MeasureAllSecureVariables` and
//! `DxeImageVerificationLib.c` `MeasureVariable`).
//!
//! The events are the measurement library's (`cvm_measure::predict::pcr7`, shared with the
//! setup-mode prediction): SecureBoot, PK, KEK, db, dbx, the separator, then one
//! EV_EFI_VARIABLE_AUTHORITY for the db entry that verified the UKI. What is the builder's is
//! which entry that is: the one holding the certificate it signed the UKI with, found in the
//! store's db signature lists.

use anyhow::{Context, Result};
use cvm_measure::eventlog::{ExpectedEvent, HashAlg};
use cvm_measure::predict::pcr7 as measure7;
use cvm_measure::predict::varstore::{self, Variable};

use super::esl::{self, SignatureData};

/// The db EFI_SIGNATURE_DATA holding `signer_cert_der` (the certificate that verifies the UKI).
pub fn db_entry_for(vars: &[Variable], signer_cert_der: &[u8]) -> Result<SignatureData> {
    let db = varstore::find(vars, &measure7::EFI_IMAGE_SECURITY_DATABASE, "db")
        .context("the variable store has no db: enroll keys before predicting PCR 7")?;
    esl::parse(&db.data)
        .context("parsing db")?
        .into_iter()
        .filter(|l| l.signature_type == esl::EFI_CERT_X509)
        .flat_map(|l| l.entries)
        .find(|e| e.data == signer_cert_der)
        .context("the UKI's signing certificate is not in db: the firmware would refuse the UKI")
}

/// The PCR 7 events of a boot with the OVMF variable store `store` (an `OVMF_VARS*.fd` image,
/// e.g. `out/OVMF_VARS.fd`) of a UKI signed by the db certificate `db_cert_der`, in the
/// measurement library's form with a digest per bank in `banks` (for golden files, the
/// manifest and event-log comparison). The event data is the logged UEFI_VARIABLE_DATA /
/// separator bytes.
pub fn pcr7_expected(
    store: &[u8],
    db_cert_der: &[u8],
    banks: &[HashAlg],
) -> Result<Vec<ExpectedEvent>> {
    let vars = varstore::read_variables(store).context("OVMF variable store")?;
    let entry = db_entry_for(&vars, db_cert_der)?;
    measure7::enrolled_store_events(&vars, &entry.to_bytes(), banks)
        .context("PCR 7 of the enrolled store")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The expected-event form of a store the builder enrolled: the measurement library's
    /// UEFI_VARIABLE_DATA encoding, the same bytes spelled out by hand for SecureBoot = 1, and
    /// the published separator digest.
    #[test]
    fn expected_events_for_an_enrolled_store() {
        use crate::secureboot::keys::load;
        use crate::secureboot::keys::tests::test_keys_dir;
        use crate::secureboot::varstore::{default_enrollment, enroll, tests::template};
        use crate::secureboot::{utf16le, Guid, EFI_GLOBAL_VARIABLE};
        use cvm_measure::eventlog::EventType;

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
        // VendorGuid ‖ UnicodeNameLength 10 ‖ VariableDataLength 1 ‖ "SecureBoot" ‖ 0x01.
        let by_hand = [
            &EFI_GLOBAL_VARIABLE.0[..],
            &10u64.to_le_bytes(),
            &1u64.to_le_bytes(),
            &utf16le("SecureBoot"),
            &[1],
        ]
        .concat();
        assert_eq!(sb_on, by_hand);
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
