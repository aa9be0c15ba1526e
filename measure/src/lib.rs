//! The measurement model: one definition of what is measured, shared by the builder (which
//! predicts), the init (which extends) and the agent and verifier (which check).

pub mod boot_config;
pub mod eventlog;
#[cfg(feature = "pe")]
pub mod pe;
#[cfg(feature = "pe")]
pub mod predict;
pub mod snp;
pub mod workload;
