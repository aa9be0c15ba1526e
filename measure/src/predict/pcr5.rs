//! PCR 5: the firmware's separator, the GPT of the boot disk, and ExitBootServices
//! (docs/measured-boot.md §8; edk2 `Tcg2MeasureGptTable`, `Tcg2Dxe.c` `OnExitBootServices`).
//!
//! The GPT event's digest is H(`EFI_GPT_DATA`): primary header (92 bytes) ‖ UINT64 count of used
//! entries ‖ those entries. Building `EFI_GPT_DATA` from a disk is the builder's job
//! (`gpt::gpt_event_data`); this module only turns it into the event. The value holds while the
//! disk keeps its size and partitions (a cloud resize rewrites the header).

use crate::eventlog::{EventType, ExpectedEvent, HashAlg};

use super::{efi_action, separator, PredictError, Result};

/// The PCR.
pub const PCR: u32 = 5;
/// edk2 `EFI_EXIT_BOOT_SERVICES_INVOCATION`.
pub const EXIT_BOOT_SERVICES_INVOCATION: &str = "Exit Boot Services Invocation";
/// edk2 `EFI_EXIT_BOOT_SERVICES_SUCCEEDED`.
pub const EXIT_BOOT_SERVICES_SUCCEEDED: &str = "Exit Boot Services Returned with Success";
/// `sizeof(EFI_PARTITION_TABLE_HEADER)` (UEFI 2.10 §5.3.2) as edk2 copies it.
const GPT_HEADER_LEN: usize = 92;
/// The "EFI PART" signature at the start of the header.
const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";

/// PCR 5 in order: separator, GPT, the two ExitBootServices actions.
pub fn events(gpt_event_data: &[u8], banks: &[HashAlg]) -> Result<Vec<ExpectedEvent>> {
    let mut v = vec![separator(PCR, banks)?, gpt_event(gpt_event_data, banks)?];
    v.extend(exit_boot_services_events(banks)?);
    Ok(v)
}

/// EV_EFI_GPT_EVENT over `EFI_GPT_DATA` (digest and event data are the same bytes).
pub fn gpt_event(gpt_event_data: &[u8], banks: &[HashAlg]) -> Result<ExpectedEvent> {
    let partitions = check_gpt_event_data(gpt_event_data)?;
    Ok(ExpectedEvent::hashing(
        PCR,
        EventType::EV_EFI_GPT_EVENT,
        format!("GPT of the boot disk, {partitions} partitions"),
        gpt_event_data,
        Some(gpt_event_data.to_vec()),
        banks,
    )?)
}

/// The two actions `Tcg2Dxe` logs when the OS loader calls ExitBootServices successfully.
pub fn exit_boot_services_events(banks: &[HashAlg]) -> Result<Vec<ExpectedEvent>> {
    Ok(vec![
        efi_action(PCR, EXIT_BOOT_SERVICES_INVOCATION, banks)?,
        efi_action(PCR, EXIT_BOOT_SERVICES_SUCCEEDED, banks)?,
    ])
}

/// Sanity check of `EFI_GPT_DATA` (signature, entry count consistent with the length); returns the
/// number of partitions. Catches passing a disk or a header instead of the event payload.
fn check_gpt_event_data(data: &[u8]) -> Result<u64> {
    let bad = |why: String| PredictError::Unsupported(format!("GPT event data: {why}"));
    if data.len() < GPT_HEADER_LEN + 8 || &data[..8] != GPT_SIGNATURE {
        return Err(bad(format!(
            "{} bytes without an \"EFI PART\" header: pass EFI_GPT_DATA (gpt::gpt_event_data)",
            data.len()
        )));
    }
    let mut count = [0u8; 8];
    count.copy_from_slice(&data[GPT_HEADER_LEN..GPT_HEADER_LEN + 8]);
    let count = u64::from_le_bytes(count);
    let entries = (data.len() - GPT_HEADER_LEN - 8) as u64;
    if count == 0 || !entries.is_multiple_of(count) {
        return Err(bad(format!(
            "{count} partitions in {entries} bytes of entries"
        )));
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_boot_services_vectors() {
        // docs/measured-boot.md §8.
        let e = exit_boot_services_events(&[HashAlg::SHA256]).unwrap();
        assert_eq!(
            hex::encode(&e[0].digests[&HashAlg::SHA256]),
            "d8043d6b7b85ad358eb3b6ae6a873ab7ef23a26352c5dc4faa5aeedacf5eb41b"
        );
        assert_eq!(
            hex::encode(&e[1].digests[&HashAlg::SHA256]),
            "b54f7542cbd872a81a9d9dea839b2b8d747c7ebd5ea6615c40f42f44a6dbeba0"
        );
    }

    #[test]
    fn gpt_event_hashes_the_payload_and_refuses_garbage() {
        let mut data = b"EFI PART".to_vec();
        data.resize(GPT_HEADER_LEN, 0);
        data.extend_from_slice(&2u64.to_le_bytes());
        data.extend_from_slice(&[0x11; 256]);
        let e = gpt_event(&data, &[HashAlg::SHA256]).unwrap();
        use sha2::Digest;
        assert_eq!(
            e.digests[&HashAlg::SHA256],
            sha2::Sha256::digest(&data).to_vec()
        );
        assert!(e.description.contains("2 partitions"));
        assert!(gpt_event(&data[..50], &[HashAlg::SHA256]).is_err());
        data[0] = b'X';
        assert!(gpt_event(&data, &[HashAlg::SHA256]).is_err());
    }
}
