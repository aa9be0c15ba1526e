//! `OUT/run.json`: what `cvm-image stop` (and scripts) need to find a running VM.
//!
//! Written as soon as both processes run — in the foreground too, so a VM can be stopped from another
//! terminal — and removed when the run ends. Runtime data, not a build output: it holds PIDs and ports.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "run.json";
/// Name prefix of the run directories (the VM runner, `vm.rs`, creates them under the temp directory).
pub const RUN_DIR_PREFIX: &str = "cvm-image-run.";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    pub qemu_pid: u32,
    pub swtpm_pid: u32,
    /// The process group of both (led by swtpm, which starts first).
    pub pgrp: u32,
    /// Temporary directory with the TPM state, the VARS copy and the sockets.
    pub run_dir: PathBuf,
    pub qmp_socket: PathBuf,
    pub console_log: PathBuf,
    /// The guest agent's API (guest port 8000) on the host.
    pub agent_url: String,
    /// The workload (guest port 8080) on the host.
    pub workload_url: String,
    /// File names of the programs, to recognise the processes again (PID reuse).
    pub qemu_program: String,
    pub swtpm_program: String,
    /// The certificates of the local CA that issued the vTPM's EK certificate (`OUT/ek-ca.pem`):
    /// what `cvm-image verify --ek-ca` checks the EK chain against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ek_ca: Option<PathBuf>,
}

pub fn path(out: &Path) -> PathBuf {
    out.join(STATE_FILE)
}

impl RunState {
    pub fn write(&self, out: &Path) -> Result<()> {
        let p = path(out);
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))
    }

    /// The state of the VM started with `--out out`; a clear error when none is recorded.
    pub fn read(out: &Path) -> Result<Self> {
        let p = path(out);
        let text = std::fs::read_to_string(&p).with_context(|| {
            format!(
                "no VM recorded in {}: nothing was started with `cvm-image run --out {}` (or it has \
                 already stopped)",
                p.display(),
                out.display()
            )
        })?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a run state file", p.display()))
    }

    pub fn remove(out: &Path) {
        let _ = std::fs::remove_file(path(out));
    }

    /// Deletes the run directory, but only if it looks like one of ours (absolute, named
    /// `cvm-image-run.*`): the path comes from a file anyone could edit.
    pub fn remove_run_dir(&self) {
        let ours = self.run_dir.is_absolute()
            && self
                .run_dir
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(RUN_DIR_PREFIX));
        if ours {
            let _ = std::fs::remove_dir_all(&self.run_dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_missing_state_is_explained() {
        let dir = std::env::temp_dir().join(format!("cvm-state-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = RunState {
            qemu_pid: 20,
            swtpm_pid: 10,
            pgrp: 10,
            run_dir: "/tmp/r".into(),
            qmp_socket: "/tmp/r/qmp.sock".into(),
            console_log: dir.join("console.log"),
            agent_url: "http://127.0.0.1:1".into(),
            workload_url: "http://127.0.0.1:2".into(),
            qemu_program: "qemu-system-x86_64".into(),
            swtpm_program: "swtpm".into(),
            ek_ca: Some(dir.join("ek-ca.pem")),
        };
        s.write(&dir).unwrap();
        assert_eq!(RunState::read(&dir).unwrap(), s);
        RunState::remove(&dir);
        let err = format!("{:#}", RunState::read(&dir).unwrap_err());
        assert!(err.contains("no VM recorded in"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
