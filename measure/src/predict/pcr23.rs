//! PCR 23: the init's workload events ([`crate::workload`]) as expected events.
//!
//! They are extended by the init in the SHA-256 bank only and logged in the runtime event log
//! (`/eventlog/runtime`), not in the firmware's TCG log. That log records no TCG event type; EV_IPL
//! is used for them here by convention (the type systemd-stub gives its PCR 11 measurements).

use crate::eventlog::{ExpectedEvent, HashAlg};
use crate::workload::RuntimeEvent;

pub use crate::workload::RUNTIME_EVENT_TYPE;

/// One expected event per runtime event, SHA-256 digest only.
pub fn workload_events(events: &[RuntimeEvent]) -> Vec<ExpectedEvent> {
    events.iter().map(expected).collect()
}

fn expected(e: &RuntimeEvent) -> ExpectedEvent {
    let mut x = ExpectedEvent::new(e.pcr, RUNTIME_EVENT_TYPE, e.description.clone())
        .with_digest(HashAlg::SHA256, e.digest_sha256.to_vec());
    x.data = e.data.as_ref().map(|d| d.as_bytes().to_vec());
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::replay_expected;
    use crate::workload;

    #[test]
    fn replays_to_the_workload_prediction() {
        let root: [u8; 32] = std::array::from_fn(|i| i as u8);
        let runtime = workload::workload_events(&root, "workload.toml", b"name = \"hello\"\n");
        let expected = workload_events(&runtime);
        assert_eq!(expected.len(), 2);
        // The vector of workload.rs (python fold).
        assert_eq!(
            hex::encode(&replay_expected(&expected, HashAlg::SHA256).unwrap()[&23]),
            "8251ac6ea7e0e41865d72b82c8736aefa4714499a6355cae957c3e1314cd593d"
        );
    }
}
