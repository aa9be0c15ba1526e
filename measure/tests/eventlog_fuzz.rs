//! Property tests: the event-log parser, describer, replay, renderer and writer never panic on
//! random or mutated input, and encode/parse are inverse on whatever parses.

use std::path::Path;

use cvm_measure::eventlog::{
    parse, render_json, render_text, replay, Event, EventDigest, EventLog, EventType, HashAlg,
};
use proptest::prelude::*;

const REAL_LOGS: [&str; 4] = [
    "eventlog/gcp-uki-systemd-stub-eventlog.bin",
    "eventlog/gce-debian10-sha1-legacy-eventlog.bin",
    "eventlog/qemu-ovmf-systemd-boot-fedora37-eventlog.bin",
    "eventlog/gce-rhel8-secureboot-eventlog.bin",
];

fn real_log(i: usize) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata")
        .join(REAL_LOGS[i]);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Everything a CLI user can trigger on a file; panics are the failure.
fn exercise(bytes: &[u8]) {
    if let Ok(log) = parse(bytes) {
        let _ = replay(&log);
        let _ = render_text(&log);
        let _ = render_json(&log);
        let encoded = log.encode().expect("a parsed log encodes");
        assert_eq!(encoded, bytes, "encode(parse(bytes)) == bytes");
    }
}

/// A mutation of a real log: (kind, position fraction, value).
fn mutate(mut bytes: Vec<u8>, edits: &[(u8, f64, u32)]) -> Vec<u8> {
    for &(kind, at, value) in edits {
        if bytes.is_empty() {
            break;
        }
        let pos = ((bytes.len() - 1) as f64 * at) as usize;
        match kind % 4 {
            0 => bytes[pos] ^= (value as u8) | 1,
            1 => bytes.truncate(pos),
            2 => bytes.splice(pos..pos, value.to_le_bytes()).for_each(drop),
            _ => {
                // Overwrite a u32 — hits length and count fields often enough.
                let end = (pos + 4).min(bytes.len());
                bytes[pos..end].copy_from_slice(&value.to_le_bytes()[..end - pos]);
            }
        }
    }
    bytes
}

fn arb_event(banks: Vec<HashAlg>) -> impl Strategy<Value = Event> {
    let ty = prop_oneof![
        Just(EventType::EV_SEPARATOR),
        Just(EventType::EV_IPL),
        Just(EventType::EV_EVENT_TAG),
        Just(EventType::EV_EFI_VARIABLE_DRIVER_CONFIG),
        Just(EventType::EV_EFI_BOOT_SERVICES_APPLICATION),
        Just(EventType::EV_EFI_GPT_EVENT),
        Just(EventType::EV_NO_ACTION),
        any::<u32>().prop_map(EventType),
    ];
    (
        0u32..24,
        ty,
        proptest::collection::vec(any::<u8>(), 0..200),
        any::<u8>(),
    )
        .prop_map(move |(pcr, event_type, data, seed)| Event {
            pcr,
            event_type,
            digests: banks
                .iter()
                .map(|&alg| EventDigest {
                    alg,
                    digest: vec![seed; alg.digest_len().unwrap()],
                })
                .collect(),
            data,
        })
}

fn arb_log() -> impl Strategy<Value = EventLog> {
    let banks = prop_oneof![
        Just(vec![HashAlg::SHA256]),
        Just(vec![HashAlg::SHA1, HashAlg::SHA256, HashAlg::SHA384]),
        Just(vec![HashAlg::SHA384, HashAlg::SHA512]),
    ];
    banks.prop_flat_map(|banks| {
        proptest::collection::vec(arb_event(banks.clone()), 0..12).prop_map(move |events| {
            let mut log = EventLog::new(&banks).expect("known banks");
            log.events = events;
            log
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        exercise(&bytes);
    }

    #[test]
    fn random_bytes_after_a_valid_header_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = EventLog::new(&[HashAlg::SHA1, HashAlg::SHA256]).unwrap().encode().unwrap();
        bytes.extend(tail);
        exercise(&bytes);
    }

    #[test]
    fn mutated_real_logs_never_panic(
        which in 0..REAL_LOGS.len(),
        edits in proptest::collection::vec((any::<u8>(), 0.0..1.0f64, any::<u32>()), 1..6),
    ) {
        exercise(&mutate(real_log(which), &edits));
    }

    #[test]
    fn encode_then_parse_is_identity(log in arb_log()) {
        let bytes = log.encode().unwrap();
        let parsed = parse(&bytes).unwrap();
        // A log ending in events made only of zero bytes reads as zero padding; compare bytes.
        prop_assert_eq!(parsed.encode().unwrap(), bytes);
        if parsed.padding.is_none() {
            prop_assert_eq!(parsed, log);
        }
    }
}
