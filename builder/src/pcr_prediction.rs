//! A PCR as the build predicts it for `manifest.json`: its value in one bank and the events that
//! extend it. A leaf: the stages that predict (boot, secureboot) and the manifest that records the
//! predictions share it without importing each other.

use anyhow::Context;
use cvm_measure::eventlog::{replay_expected, ExpectedEvent, HashAlg};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PcrPrediction {
    pub bank: String,
    pub value: String,
    pub events: Vec<EventInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventInfo {
    pub description: String,
    pub digest: String,
}

impl PcrPrediction {
    /// The SHA-256 prediction of `pcr` from `events` (the same expected events the golden file is
    /// made of): its events in order, and the value they replay to. One computation for both
    /// files, so the manifest cannot disagree with the golden file.
    pub fn from_events(events: &[ExpectedEvent], pcr: u32) -> anyhow::Result<Self> {
        let bank = HashAlg::SHA256;
        let own: Vec<ExpectedEvent> = events.iter().filter(|e| e.pcr == pcr).cloned().collect();
        let value = replay_expected(&own, bank)?
            .remove(&pcr)
            .with_context(|| format!("no event extends PCR {pcr}"))?;
        let events = own
            .iter()
            .map(|e| {
                Ok(EventInfo {
                    description: e.description.clone(),
                    digest: e
                        .digests
                        .get(&bank)
                        .map(hex::encode)
                        .with_context(|| format!("{:?} has no {bank} digest", e.description))?,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(PcrPrediction {
            bank: bank.name(),
            value: hex::encode(value),
            events,
        })
    }
}
