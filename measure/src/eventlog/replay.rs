//! Replay: recompute register values from the digests in the log.

use std::collections::BTreeMap;

use super::{Event, EventLog, EventType, HashAlg, Registers};

/// Number of PCRs of a PC Client TPM (PFP §3.3.4).
pub const PCR_COUNT: u32 = 24;
/// `StartupLocality` EV_NO_ACTION signature (PFP §10.4.5.3), NUL included; one byte follows.
pub const STARTUP_LOCALITY_SIGNATURE: &[u8; 16] = b"StartupLocality\0";
/// PCR 0 reset value (last byte) after an H-CRTM sequence (TPM 2.0 Library Part 1 §34.3).
const HCRTM_LOCALITY: u8 = 4;
/// PCRs 17–22 (dynamic-launch PCRs) reset to all ones (PFP §3.3.4, table 4).
const DRTM_PCRS: std::ops::RangeInclusive<u32> = 17..=22;

/// Replayed register values per bank.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    /// bank → register index → value, for every register that at least one event extends.
    pub banks: BTreeMap<HashAlg, BTreeMap<u32, Vec<u8>>>,
    /// Banks that could not be replayed and why (unknown algorithm, events without that digest).
    pub problems: Vec<String>,
}

impl Replay {
    /// Value of register `index` in `bank`, if the log extends it.
    pub fn value(&self, bank: HashAlg, index: u32) -> Option<&[u8]> {
        self.banks.get(&bank)?.get(&index).map(Vec::as_slice)
    }
}

/// Replay every bank of `log`: extend each event except EV_NO_ACTION into its register.
pub fn replay(log: &EventLog) -> Replay {
    let mut out = Replay::default();
    let pcr0_locality = match log.registers {
        Registers::Pcr => pcr0_initial_locality(&log.events),
        Registers::CcMr => None,
    };
    for bank in log.banks() {
        match replay_bank(log.registers, &log.events, bank, pcr0_locality) {
            Ok(values) => {
                out.banks.insert(bank, values);
            }
            Err(problem) => out
                .problems
                .push(format!("bank {bank} not replayed: {problem}")),
        }
    }
    out
}

/// The reset value of register `index` (see the module documentation).
pub(super) fn initial_value(
    registers: Registers,
    index: u32,
    len: usize,
    pcr0_locality: Option<u8>,
) -> Vec<u8> {
    let mut value = vec![0u8; len];
    if registers == Registers::Pcr {
        if DRTM_PCRS.contains(&index) {
            value.fill(0xFF);
        } else if let (0, Some(locality), Some(last)) = (index, pcr0_locality, value.last_mut()) {
            *last = locality;
        }
    }
    value
}

/// PCR 0's starting locality: from an H-CRTM event, else from a StartupLocality event.
fn pcr0_initial_locality(events: &[Event]) -> Option<u8> {
    let pcr0 = || events.iter().filter(|e| e.pcr == 0);
    if pcr0().any(|e| e.event_type == EventType::EV_EFI_HCRTM_EVENT) {
        return Some(HCRTM_LOCALITY);
    }
    pcr0().find_map(|e| {
        if e.event_type != EventType::EV_NO_ACTION {
            return None;
        }
        let rest = e.data.strip_prefix(STARTUP_LOCALITY_SIGNATURE.as_slice())?;
        rest.first().copied()
    })
}

fn replay_bank(
    registers: Registers,
    events: &[Event],
    bank: HashAlg,
    pcr0_locality: Option<u8>,
) -> Result<BTreeMap<u32, Vec<u8>>, String> {
    let len = bank
        .digest_len()
        .filter(|_| bank.hash(&[]).is_some())
        .ok_or_else(|| format!("{bank} is not implemented"))?;
    let mut values: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    for (i, event) in events.iter().enumerate().filter(|(_, e)| e.is_extended()) {
        let digest = event
            .digest(bank)
            .ok_or_else(|| format!("event {i} ({}) has no {bank} digest", event.event_type))?;
        let old = values
            .remove(&event.pcr)
            .unwrap_or_else(|| initial_value(registers, event.pcr, len, pcr0_locality));
        values.insert(event.pcr, extend(bank, &old, digest)?);
    }
    Ok(values)
}

/// `H(old ‖ digest)`.
pub(super) fn extend(bank: HashAlg, old: &[u8], digest: &[u8]) -> Result<Vec<u8>, String> {
    bank.hash_parts(&[old, digest])
        .ok_or_else(|| format!("{bank} is not implemented"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::EventDigest;

    fn ev(pcr: u32, t: EventType, sha256: [u8; 32], data: &[u8]) -> Event {
        Event {
            pcr,
            event_type: t,
            digests: vec![EventDigest {
                alg: HashAlg::SHA256,
                digest: sha256.to_vec(),
            }],
            data: data.to_vec(),
        }
    }

    fn log(events: Vec<Event>) -> EventLog {
        let mut log = EventLog::new(&[HashAlg::SHA256]).unwrap();
        log.events = events;
        log
    }

    #[test]
    fn separator_only_pcr_matches_published_value() {
        let sep: [u8; 32] = HashAlg::SHA256.hash(&[0; 4]).unwrap().try_into().unwrap();
        let r = replay(&log(vec![ev(3, EventType::EV_SEPARATOR, sep, &[0; 4])]));
        // docs/measured-boot.md §13 / SOURCES.md "separator-only".
        assert_eq!(
            hex::encode(r.value(HashAlg::SHA256, 3).unwrap()),
            "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969"
        );
    }

    #[test]
    fn constellation_pcr4_vector() {
        // docs/measured-boot.md §13 (Constellation pcr04_test.go): action, separator, 32×00, 32×01.
        let action = HashAlg::SHA256
            .hash(b"Calling EFI Application from Boot Option")
            .unwrap();
        let sep = HashAlg::SHA256.hash(&[0; 4]).unwrap();
        let events = vec![
            ev(4, EventType::EV_EFI_ACTION, action.try_into().unwrap(), b""),
            ev(4, EventType::EV_SEPARATOR, sep.try_into().unwrap(), &[0; 4]),
            ev(4, EventType::EV_EFI_BOOT_SERVICES_APPLICATION, [0; 32], b""),
            ev(4, EventType::EV_EFI_BOOT_SERVICES_APPLICATION, [1; 32], b""),
        ];
        assert_eq!(
            hex::encode(replay(&log(events)).value(HashAlg::SHA256, 4).unwrap()),
            "22116dee861aa6b44242ac469eab24cead344d52c77131f54ac1cac9d6a2408e"
        );
    }

    #[test]
    fn no_action_is_not_extended_and_startup_locality_sets_pcr0() {
        let mut data = STARTUP_LOCALITY_SIGNATURE.to_vec();
        data.push(3);
        let events = vec![
            ev(0, EventType::EV_NO_ACTION, [0; 32], &data),
            ev(0, EventType::EV_S_CRTM_VERSION, [7; 32], b""),
        ];
        let mut start = [0u8; 32];
        start[31] = 3;
        let expected = HashAlg::SHA256.hash_parts(&[&start, &[7; 32]]).unwrap();
        assert_eq!(
            replay(&log(events)).value(HashAlg::SHA256, 0).unwrap(),
            &expected[..]
        );
    }

    #[test]
    fn drtm_pcrs_start_at_ff() {
        let expected = HashAlg::SHA256
            .hash_parts(&[&[0xFF; 32], &[9; 32]])
            .unwrap();
        let r = replay(&log(vec![ev(17, EventType::EV_IPL, [9; 32], b"")]));
        assert_eq!(r.value(HashAlg::SHA256, 17).unwrap(), &expected[..]);
    }

    #[test]
    fn missing_bank_digest_is_reported_not_guessed() {
        let mut l = log(vec![ev(4, EventType::EV_IPL, [9; 32], b"")]);
        l.spec_id = Some(
            crate::eventlog::SpecIdEvent::for_banks(&[HashAlg::SHA256, HashAlg::SHA1]).unwrap(),
        );
        let r = replay(&l);
        assert!(r.banks.contains_key(&HashAlg::SHA256));
        assert!(!r.banks.contains_key(&HashAlg::SHA1));
        assert!(r.problems[0].contains("no sha1 digest"), "{:?}", r.problems);
    }
}
