//! A plain swtpm for the integration tests (fresh state, no EK certificates), killed on drop:
//! the crate's own launcher ([`cvm_tpm::swtpm::TcpSwtpm`]) with a state directory removed after it.
//!
//! Needs `swtpm` (and `tpm2-tools` for the helpers that run it); fails with a message when missing.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use cvm_tpm::swtpm::TcpSwtpm;
use cvm_tpm::Tpm;

/// A swtpm process with its own state directory, killed on drop (before the directory goes).
pub struct Swtpm {
    tpm: TcpSwtpm,
    pub port: u16,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Swtpm {
    pub fn start(name: &str) -> Swtpm {
        let dir = std::env::temp_dir().join(format!("cvm-tpm-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tpm = TcpSwtpm::start(Path::new("swtpm"), &dir)
            .unwrap_or_else(|e| panic!("{e}; install it: apt-get install swtpm"));
        Swtpm {
            port: tpm.port,
            tpm,
            _dir: TempDir(dir),
        }
    }

    /// `TPM2TOOLS_TCTI` value for tpm2-tools (swtpm serves one client at a time: drop any [`Tpm`]
    /// first).
    pub fn tcti(&self) -> String {
        self.tpm.tcti()
    }

    /// A scratch directory next to the TPM state, removed with it.
    pub fn work_dir(&self) -> std::path::PathBuf {
        let dir = self._dir.0.join("work");
        std::fs::create_dir_all(&dir).expect("creating the test work dir");
        dir
    }

    /// Power-cycles the TPM through the control channel (`swtpm_ioctl -i`: CMD_INIT) and sends
    /// TPM2_Startup(CLEAR) with `tpm2_startup -c`: a TPM reset, as at a reboot. Connections made
    /// before are dead afterwards.
    pub fn reset(&self) {
        let out = Command::new("swtpm_ioctl")
            .arg("--tcp")
            .arg(format!("127.0.0.1:{}", self.tpm.ctrl_port()))
            .arg("-i")
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run swtpm_ioctl ({e}); apt-get install swtpm-tools")
            });
        assert!(out.status.success(), "swtpm_ioctl -i: {out:?}");
        let out = Command::new("tpm2_startup")
            .arg("-c")
            .env("TPM2TOOLS_TCTI", self.tcti())
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run tpm2_startup ({e}); apt-get install tpm2-tools")
            });
        assert!(out.status.success(), "tpm2_startup -c: {out:?}");
    }

    pub fn connect(&self) -> Tpm {
        self.tpm.connect().expect("connecting to swtpm")
    }

    /// `tpm2_pcrread <selection>` (swtpm serves one client at a time: drop any [`Tpm`] first) through the swtpm TCTI, parsed into (pcr, digest).
    pub fn tpm2_pcrread(&self, selection: &str) -> Vec<(u32, Vec<u8>)> {
        let out = Command::new("tpm2_pcrread")
            .arg(selection)
            .env("TPM2TOOLS_TCTI", self.tcti())
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run tpm2_pcrread ({e}); install it: apt-get install tpm2-tools")
            });
        assert!(out.status.success(), "tpm2_pcrread: {out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| {
                let (idx, val) = l.split_once(':')?;
                let val = val.trim().strip_prefix("0x")?;
                Some((idx.trim().parse().ok()?, hex::decode(val).ok()?))
            })
            .collect()
    }
}
