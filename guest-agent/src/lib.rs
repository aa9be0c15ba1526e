//! cvm-agent: the guest agent that runs as PID 1 of the verified root filesystem.
//!
//! It has three jobs, kept in separate modules so that everything except the PID-1-only parts
//! ([`pid1`]) runs as an ordinary process in host tests:
//!
//! * supervise the workload's services ([`workload`] parses `workload.toml`, [`supervisor`] runs them);
//! * serve the attestation API over HTTP ([`api`]: PCRs, event logs, workload state, evidence
//!   ([`evidence`]) and, on loopback only, signatures by this boot's PCR-bound key ([`signing`]) and
//!   the attestation of peer VMs ([`peer`]));
//! * bring the machine to a usable state: network by DHCP ([`net`]), orderly power-off on
//!   SIGTERM/SIGINT/SIGPWR or the ACPI power button ([`power_button`], [`pid1`]).
//!
//! Console lines carry a boot-relative timestamp ([`console`]) so that the time from kernel start to
//! "agent healthy" can be read off a serial log.

pub mod api;
pub mod boot_keys;
pub mod console;
pub mod evidence;
pub mod golden;
pub mod http;
pub mod net;
pub mod peer;
pub mod pid1;
pub mod power_button;
pub mod settings;
pub mod signing;
pub mod supervisor;
pub mod tee;
pub mod tpm;
pub mod workload;
