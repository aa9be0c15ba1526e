//! PCR 11: systemd-stub's two EV_IPL events per UKI section, in the stub's measurement order
//! (docs/measured-boot.md §5). The SHA-256 values are those of [`crate::pe::pcr11_measurements`]
//! (checked against `systemd-measure`); this module adds the other banks and the event form.

use crate::eventlog::{EventType, ExpectedEvent, HashAlg};
use crate::pe;

use super::{utf16le, PredictError, Result};

/// The PCR.
pub const PCR: u32 = 11;

/// The stub's PCR 11 events for `uki` in every bank: H(name ‖ NUL), then H(section as loaded).
/// The event data of both is the section name in UTF-16 with NUL.
pub fn uki_section_events(uki: &[u8], banks: &[HashAlg]) -> Result<Vec<ExpectedEvent>> {
    let version = pe::stub_version(uki).map_err(PredictError::pe("the UKI's stub"))?;
    let order = pe::stub_sections(&version)
        .map_err(PredictError::pe("the UKI's stub"))?
        .measured_order;
    // Validates every section (inside SizeOfImage, inside the file) and fixes the order.
    let measured =
        pe::pcr11_measurements(uki, order).map_err(PredictError::pe("PCR 11 of the UKI"))?;
    let headers = pe::PeHeaders::parse(uki).map_err(PredictError::pe("the UKI"))?;
    let mut events = Vec::with_capacity(measured.len() * 2);
    for m in &measured {
        let section = pe::stub_252_find_section(&headers.sections, &m.name).ok_or_else(|| {
            PredictError::Unsupported(format!("section {} vanished from the UKI", m.name))
        })?;
        let loaded = pe::section_as_loaded(uki, section)
            .map_err(PredictError::pe(format!("the UKI's {}", m.name)))?;
        let label = utf16le(&m.name, true);
        let mut name_z = m.name.as_bytes().to_vec();
        name_z.push(0);
        events.push(ExpectedEvent::hashing(
            PCR,
            EventType::EV_IPL,
            format!("UKI section name {}", m.name),
            &name_z,
            Some(label.clone()),
            banks,
        )?);
        events.push(ExpectedEvent::hashing(
            PCR,
            EventType::EV_IPL,
            format!("UKI section {}", m.name),
            &loaded,
            Some(label),
            banks,
        )?);
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn name_events_match_the_section_name_vectors() {
        // A bare stub has no UKI sections: no events, but a valid call.
        assert!(uki_section_events(&fixture(STUB), &[HashAlg::SHA256])
            .unwrap()
            .is_empty());
        // docs/measured-boot.md §13: H(".linux\0"). The full chain is checked in the boot test.
        let mut z = b".linux".to_vec();
        z.push(0);
        assert_eq!(
            hex::encode(HashAlg::SHA256.hash(&z).unwrap()),
            "0da293e37ad5511c59be47993769aacb91b243f7d010288e118dc90e95aaef5a"
        );
        assert_eq!(
            hex::encode(pe::section_name_digest(".linux")),
            hex::encode(HashAlg::SHA256.hash(&z).unwrap())
        );
    }
}
