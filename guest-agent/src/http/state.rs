//! What every handler of the API is given: where the data is, the workload, this boot's keys.

use std::path::PathBuf;
use std::sync::Arc;

use crate::boot_keys::Evidence;
use crate::supervisor::Supervisor;
use crate::tpm::TpmSource;

/// Where the API finds its data.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub tpm: TpmSource,
    /// The firmware event log, normally `/sys/kernel/security/tpm0/binary_bios_measurements`.
    pub eventlog: PathBuf,
    /// The init's PCR 23 log, normally `/run/cvm/runtime-eventlog.jsonl`.
    pub runtime_eventlog: PathBuf,
}

/// The workload as the API sees it: running under the supervisor, or failed to load.
pub enum WorkloadView {
    Running(Arc<Supervisor>),
    Failed(String),
}

#[derive(Clone)]
pub struct AppState {
    pub(crate) config: Arc<ApiConfig>,
    pub(crate) workload: Arc<WorkloadView>,
    /// Attestation keys of this boot and the TEE interface.
    pub(crate) evidence: Arc<Evidence>,
}

impl AppState {
    pub fn new(config: ApiConfig, workload: WorkloadView) -> Self {
        AppState {
            config: Arc::new(config),
            workload: Arc::new(workload),
            evidence: Arc::new(Evidence::default()),
        }
    }

    /// Replaces the evidence state (tests point the TEE interfaces elsewhere).
    pub fn with_evidence(mut self, evidence: Evidence) -> Self {
        self.evidence = Arc::new(evidence);
        self
    }
}
