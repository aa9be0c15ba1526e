//! Command-line flags and environment variables. The defaults are the guest's paths; every one can be
//! pointed elsewhere so the agent runs unprivileged on a host in tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::tpm::TpmSource;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Toggle {
    /// On when running as PID 1, off otherwise.
    Auto,
    On,
    Off,
}

impl Toggle {
    pub fn enabled(self, pid1: bool) -> bool {
        match self {
            Toggle::Auto => pid1,
            Toggle::On => true,
            Toggle::Off => false,
        }
    }
}

/// cvm-agent: PID 1 of the confidential VM's verified root. Supervises the workload's services and
/// serves the attestation API.
#[derive(Debug, Clone, Parser)]
#[command(name = "cvm-agent", version)]
pub struct Settings {
    /// Workload directory holding workload.toml.
    #[arg(long, env = "CVM_WORKLOAD_DIR", default_value = "/workload")]
    pub workload_dir: PathBuf,

    /// TPM: "auto" (/dev/tpmrm0, else /dev/tpm0), a device path, or tcp:HOST:PORT (swtpm).
    #[arg(long, env = "CVM_TPM", default_value = "auto")]
    pub tpm: TpmSource,

    /// Firmware TCG event log served at /eventlog.
    #[arg(
        long,
        env = "CVM_EVENTLOG",
        default_value = "/sys/kernel/security/tpm0/binary_bios_measurements"
    )]
    pub eventlog: PathBuf,

    /// Runtime (PCR 23) event log written by the init, served at /eventlog/runtime.
    #[arg(
        long,
        env = "CVM_RUNTIME_EVENTLOG",
        default_value = "/run/cvm/runtime-eventlog.jsonl"
    )]
    pub runtime_eventlog: PathBuf,

    /// External API address.
    #[arg(long, env = "CVM_LISTEN", default_value = "0.0.0.0:8000")]
    pub listen: SocketAddr,

    /// Loopback API address for the workload (sidecar).
    #[arg(long, env = "CVM_LISTEN_LOCAL", default_value = "127.0.0.1:7999")]
    pub listen_local: SocketAddr,

    /// Configure lo and the first Ethernet interface by DHCP.
    #[arg(long, env = "CVM_NETWORK", value_enum, default_value = "auto")]
    pub network: Toggle,

    /// Watch /dev/input for the ACPI power button.
    #[arg(long, env = "CVM_POWER_BUTTON", value_enum, default_value = "auto")]
    pub power_button: Toggle,

    /// Seconds services get between SIGTERM and SIGKILL at shutdown.
    #[arg(long, env = "CVM_STOP_GRACE", default_value_t = 10)]
    pub stop_grace_secs: u64,
}

impl Settings {
    pub fn stop_grace(&self) -> Duration {
        Duration::from_secs(self.stop_grace_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_guest_paths() {
        let s = Settings::try_parse_from(["cvm-agent"]).unwrap();
        assert_eq!(s.workload_dir, PathBuf::from("/workload"));
        assert_eq!(s.tpm, TpmSource::Auto);
        assert_eq!(s.listen.port(), 8000);
        assert_eq!(s.listen_local.to_string(), "127.0.0.1:7999");
        assert!(s.network.enabled(true) && !s.network.enabled(false));
    }

    #[test]
    fn flags_override() {
        let s = Settings::try_parse_from([
            "cvm-agent",
            "--tpm",
            "tcp:127.0.0.1:1234",
            "--listen",
            "127.0.0.1:0",
            "--network",
            "off",
        ])
        .unwrap();
        assert_eq!(s.tpm, TpmSource::Tcp("127.0.0.1:1234".into()));
        assert!(!s.network.enabled(true));
        assert!(Settings::try_parse_from(["cvm-agent", "--tpm", "bogus"]).is_err());
    }
}
