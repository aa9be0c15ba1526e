//! A PCR as the build predicts it for `manifest.json`: its value in one bank and the events that
//! extend it. A leaf: the stages that predict (boot, secureboot) and the manifest that records the
//! predictions share it without importing each other.

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
