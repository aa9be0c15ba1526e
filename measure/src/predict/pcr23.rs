//! PCR 23: the init's workload events ([`crate::workload`]) as expected events.
//!
//! The init extends them into every active bank of the TPM (each bank with its own hash of the same
//! bytes) and logs them in the runtime event log (`/eventlog/runtime`), not in the firmware's TCG log.
//! That log records no TCG event type; EV_IPL is used for them here by convention (the type
//! systemd-stub gives its PCR 11 measurements).

use crate::eventlog::ExpectedEvent;
use crate::workload::RuntimeEvent;

pub use crate::workload::RUNTIME_EVENT_TYPE;

/// One expected event per runtime event, with the digests of every bank the event carries (the
/// builder forms them for [`crate::workload::HASHABLE_BANKS`]).
pub fn workload_events(events: &[RuntimeEvent]) -> Vec<ExpectedEvent> {
    events.iter().map(expected).collect()
}

fn expected(e: &RuntimeEvent) -> ExpectedEvent {
    let mut x = e.digests.iter().fold(
        ExpectedEvent::new(e.pcr, RUNTIME_EVENT_TYPE, e.description.clone()),
        |x, (bank, d)| x.with_digest(*bank, d.clone()),
    );
    x.data = e.data.as_ref().map(|d| d.as_bytes().to_vec());
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::{replay_expected, HashAlg};
    use crate::workload::{self, HASHABLE_BANKS};

    #[test]
    fn replays_to_the_workload_prediction_in_every_bank() {
        let root: [u8; 32] = std::array::from_fn(|i| i as u8);
        let runtime = workload::workload_events(
            &root,
            "workload.toml",
            b"name = \"hello\"\n",
            &HASHABLE_BANKS,
        );
        let expected = workload_events(&runtime);
        assert_eq!(expected.len(), 2);
        // The vectors of workload.rs (python hashlib fold).
        for (bank, want) in [
            (
                HashAlg::SHA256,
                "8251ac6ea7e0e41865d72b82c8736aefa4714499a6355cae957c3e1314cd593d",
            ),
            (
                HashAlg::SHA384,
                "0d7cf4d67fc9cff08e5ecba4e57a673b498caaeb765edc0bf034fa8b4e5b8bbee5f4c01e3bfc583fe5b643e49291d939",
            ),
        ] {
            assert_eq!(
                hex::encode(&replay_expected(&expected, bank).unwrap()[&23]),
                want,
                "{bank}"
            );
        }
    }
}
